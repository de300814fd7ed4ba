//! Per-partition state of idempotent producers: what makes a retried batch a
//! duplicate rather than a second copy, and a lost batch a gap rather than
//! silent data loss.
//!
//! For every producer id that wrote to the partition the table keeps the
//! epoch and the last [`BATCHES_TO_RETAIN`] batches (first and last sequence
//! number, first and last offset) — the same five Kafka keeps, which is why
//! clients cap `max.in.flight.requests.per.connection` at 5. A batch is
//! checked the way Kafka's `ProducerAppendInfo` checks a client's batch:
//!
//! 1. the same epoch and sequence range as a retained batch: a *duplicate*,
//!    answered with the original offsets and not appended;
//! 2. an epoch older than the known one: `INVALID_PRODUCER_EPOCH`;
//! 3. the current epoch must continue at last sequence + 1 (after `i32::MAX`
//!    comes 0) and a newer epoch must start at 0. A batch *ahead* of that is
//!    a gap: an earlier batch of its producer has not reached this leader
//!    (it went to the previous leader, or was refused unwritten, while this
//!    one was in flight), and is answered `NOT_LEADER_OR_FOLLOWER`, which
//!    every client retries in order, the missing batch first. Not Kafka's
//!    `OUT_OF_ORDER_SEQUENCE_NUMBER`: librdkafka answers that by bumping its
//!    epoch for *every* partition and renumbering all unacknowledged
//!    messages, including a batch another partition stored but did not
//!    acknowledge yet (its request timed out in a failover), which is then
//!    stored twice. A batch *behind* the expected sequence that is not one
//!    of the retained batches cannot be fixed by resending and stays
//!    `OUT_OF_ORDER_SEQUENCE_NUMBER`;
//! 4. an unknown producer id is accepted at any sequence. Kafka does the
//!    same since KIP-360 (2.5): its state may have been removed by
//!    retention or expiry, and the client cannot tell that from a new id.
//!    Unless the broker refused an earlier batch of it unwritten a moment
//!    ago: see [`crate::refused_batches`].
//!
//! The table lives beside the log under the partition's lock, so the check
//! and the append are one step. It is rebuilt at start-up from a snapshot
//! file (written at clean shutdown and when a segment rolls) plus the batch
//! headers after it, or from every batch header when there is no usable
//! snapshot.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use skiff_log::batch::BatchHeader;

use crate::errors::{BrokerError, Result};

/// Batches remembered per producer for duplicate detection (Kafka's
/// `NUM_BATCHES_TO_RETAIN`).
pub const BATCHES_TO_RETAIN: usize = 5;

/// The snapshot file in a partition's directory.
pub const SNAPSHOT_FILE: &str = "producer-state.snapshot";
const SNAPSHOT_MAGIC: &[u8; 4] = b"SKPS";
const SNAPSHOT_VERSION: u16 = 1;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp as stored.
    pub timestamp: i64,
}

/// What the table knows of one producer id on this partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; never empty, at most [`BATCHES_TO_RETAIN`].
    batches: VecDeque<BatchMeta>,
    /// Last write, ms since the epoch: the clock of `producer.id.expiration.ms`.
    pub last_seen_ms: i64,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    pub fn batches(&self) -> impl Iterator<Item = &BatchMeta> {
        self.batches.iter()
    }
}

/// The verdict on an incoming batch that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Append it.
    Append,
    /// A retry of this already stored batch: answer with its offsets.
    Duplicate(BatchMeta),
}

/// The last sequence number of a batch: Kafka's `incrementSequence`, which
/// wraps from `i32::MAX` to 0.
pub fn last_sequence(base_seq: i32, last_offset_delta: i32) -> i32 {
    let last = i64::from(base_seq) + i64::from(last_offset_delta.max(0));
    (last % (i64::from(i32::MAX) + 1)) as i32
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == next_sequence(last_seq)
}

/// The sequence after `seq` (after `i32::MAX` comes 0).
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// Whether `seq` lies ahead of `expected` in the wrapping sequence space
/// (within half of it), not behind.
pub(crate) fn is_ahead(expected: i32, seq: i32) -> bool {
    const SPACE: i64 = i32::MAX as i64 + 1;
    let d = (i64::from(seq) - i64::from(expected)).rem_euclid(SPACE);
    d > 0 && d < SPACE / 2
}

/// Producer state of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether `producer_id` has batches in this log.
    pub fn knows(&self, producer_id: i64) -> bool {
        self.producers.contains_key(&producer_id)
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks a client's batch (which must carry a producer id) against the
    /// producer's state. Changes nothing.
    ///
    /// # Errors
    /// `InvalidProducerEpoch` for a fenced epoch, `SequenceGap` for a batch
    /// ahead of the expected sequence (a new epoch not starting at 0 too),
    /// `OutOfOrderSequence` for one behind it that is not a retained batch.
    pub fn check(&self, h: &BatchHeader) -> Result<Verdict> {
        let first_seq = h.base_sequence;
        let last_seq = last_sequence(first_seq, h.last_offset_delta);
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Ok(Verdict::Append);
        };
        if h.producer_epoch == entry.epoch
            && let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(Verdict::Duplicate(*dup));
        }
        if h.producer_epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                got: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.producer_epoch > entry.epoch {
            if first_seq != 0 {
                return Err(BrokerError::SequenceGap(format!(
                    "producer {} starts epoch {} at sequence {first_seq}: its batch at sequence 0 has not reached this leader; resend in order",
                    h.producer_id, h.producer_epoch
                )));
            }
            return Ok(Verdict::Append);
        }
        match entry.last_seq() {
            Some(last) if !in_sequence(last, first_seq) => {
                let expected = next_sequence(last);
                let e = format!(
                    "producer {} epoch {}: expected sequence {expected}, got {first_seq}",
                    h.producer_id, h.producer_epoch,
                );
                if is_ahead(expected, first_seq) {
                    Err(BrokerError::SequenceGap(format!(
                        "{e}: an earlier batch has not reached this leader; resend in order"
                    )))
                } else {
                    Err(BrokerError::OutOfOrderSequence(e))
                }
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Records a stored batch (offsets assigned). A newer epoch replaces the
    /// producer's batches. Used both after a checked append and to replay
    /// the log at start-up.
    pub fn record(&mut self, h: &BatchHeader, seen_ms: i64) {
        if h.producer_id < 0 || h.is_control() {
            return;
        }
        let meta = BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            timestamp: h.max_timestamp,
        };
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
                last_seen_ms: seen_ms,
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        // A replica records a batch when it reads the log at start-up and
        // again when Raft re-applies it: keep one copy, or the retained
        // window would shrink and a client's retry of a recent batch would
        // look out of order.
        if entry
            .batches
            .iter()
            .any(|b| b.base_offset == meta.base_offset && b.first_seq == meta.first_seq)
        {
            entry.last_seen_ms = entry.last_seen_ms.max(seen_ms);
            return;
        }
        if entry.batches.len() == BATCHES_TO_RETAIN {
            entry.batches.pop_front();
        }
        entry.batches.push_back(meta);
        entry.last_seen_ms = entry.last_seen_ms.max(seen_ms);
    }

    /// Drops producers idle for `max_idle_ms` or longer; returns how many.
    pub fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_seen_ms) < max_idle_ms);
        before - self.producers.len()
    }

    /// The snapshot of the state as of log offset `offset` (the log end
    /// offset it reflects), CRC-protected.
    pub fn encode_snapshot(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.producers.len() * 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let Some(e) = self.producers.get(&id) else {
                continue;
            };
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_seen_ms.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot: the offset it reflects and the table.
    ///
    /// # Errors
    /// A description of what is wrong with the bytes.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(i64, ProducerStateTable), String> {
        let body_len = bytes
            .len()
            .checked_sub(4)
            .ok_or("snapshot is shorter than its checksum")?;
        let (body, crc) = bytes.split_at(body_len);
        let want = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != want {
            return Err("snapshot checksum mismatch".into());
        }
        let mut r = Reader(body);
        if r.take(4)? != SNAPSHOT_MAGIC {
            return Err("not a producer state snapshot".into());
        }
        let version = r.u16()?;
        if version != SNAPSHOT_VERSION {
            return Err(format!("unknown snapshot version {version}"));
        }
        let offset = r.i64()?;
        let count = r.u32()?;
        let mut table = ProducerStateTable::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_seen_ms = r.i64()?;
            let n = r.take(1)?[0] as usize;
            if n == 0 || n > BATCHES_TO_RETAIN {
                return Err(format!("producer {id} has {n} batches"));
            }
            let mut batches = VecDeque::with_capacity(n);
            for _ in 0..n {
                batches.push_back(BatchMeta {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            table.producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_seen_ms,
                },
            );
        }
        if !r.0.is_empty() {
            return Err("trailing bytes after the last producer".into());
        }
        Ok((offset, table))
    }

    /// Writes the snapshot atomically (temporary file, fsync, rename) into
    /// `dir`. A torn write leaves the previous snapshot or a `.tmp` file the
    /// log's `open` removes.
    ///
    /// # Errors
    /// I/O.
    pub fn write_snapshot(&self, dir: &Path, offset: i64) -> io::Result<()> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = dir.join(format!("{SNAPSHOT_FILE}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&self.encode_snapshot(offset))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    }

    /// Reads the snapshot in `dir`: `Ok(None)` when there is none.
    ///
    /// # Errors
    /// I/O, or a description of a damaged file (as `InvalidData`).
    pub fn read_snapshot(dir: &Path) -> io::Result<Option<(i64, ProducerStateTable)>> {
        match fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => Self::decode_snapshot(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("snapshot ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.array()?))
    }
}

/// The producer batch of a Produce request's records, if it has one.
/// Idempotent batches must come alone (Kafka requires exactly one batch per
/// partition from Produce v3 on); transactional and control batches are
/// refused because this broker has no transaction coordinator.
///
/// # Errors
/// `InvalidRecord` for a producer batch among others or with a negative
/// epoch or sequence; `InvalidTxnState` for transactional or control batches;
/// `CorruptMessage` if the headers do not parse.
pub fn producer_batch(records: &[u8]) -> Result<Option<BatchHeader>> {
    let mut found = None;
    let mut count = 0;
    for item in skiff_log::batch::headers(records) {
        let (_, h) = item?;
        count += 1;
        if h.is_transactional() || h.is_control() {
            return Err(BrokerError::InvalidTxnState(
                "transactional and control batches are not accepted: this broker does not support transactions".into(),
            ));
        }
        if h.has_producer_id() {
            if h.producer_epoch < 0 || h.base_sequence < 0 {
                return Err(BrokerError::InvalidRecord(format!(
                    "batch of producer {} has epoch {} and base sequence {}; both must be non-negative",
                    h.producer_id, h.producer_epoch, h.base_sequence
                )));
            }
            found = Some(h);
        }
    }
    if found.is_some() && count > 1 {
        return Err(BrokerError::InvalidRecord(
            "an idempotent produce must carry exactly one record batch per partition".into(),
        ));
    }
    Ok(found)
}

#[cfg(test)]
pub(crate) mod test_support {
    use skiff_log::batch::{self, BatchHeader};

    /// A valid v2 batch of `records` records from producer `pid`.
    pub(crate) fn producer_batch(pid: i64, epoch: i16, base_seq: i32, records: i32) -> Vec<u8> {
        let mut b = vec![0u8; batch::HEADER_LEN + 8];
        let len = (b.len() - batch::LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[16] = batch::MAGIC_V2 as u8;
        b[23..27].copy_from_slice(&(records - 1).to_be_bytes());
        b[27..35].copy_from_slice(&1_000i64.to_be_bytes());
        b[35..43].copy_from_slice(&1_000i64.to_be_bytes());
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&base_seq.to_be_bytes());
        b[57..61].copy_from_slice(&records.to_be_bytes());
        let crc = batch::compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }

    pub(crate) fn header(pid: i64, epoch: i16, base_seq: i32, records: i32) -> BatchHeader {
        BatchHeader::parse(&producer_batch(pid, epoch, base_seq, records)).expect("valid header")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::header;
    use super::*;

    fn stored(mut h: BatchHeader, base_offset: i64) -> BatchHeader {
        h.base_offset = base_offset;
        h
    }

    fn out_of_order(r: Result<Verdict>) -> bool {
        matches!(r, Err(BrokerError::OutOfOrderSequence(_)))
    }

    fn gap(r: Result<Verdict>) -> bool {
        matches!(r, Err(BrokerError::SequenceGap(_)))
    }

    #[test]
    fn an_unknown_producer_is_accepted_at_any_sequence() {
        let t = ProducerStateTable::default();
        assert_eq!(t.check(&header(7, 0, 0, 3)).ok(), Some(Verdict::Append));
        assert_eq!(t.check(&header(7, 0, 42, 3)).ok(), Some(Verdict::Append));
    }

    #[test]
    fn a_retry_of_any_of_the_last_five_batches_is_a_duplicate_with_its_offsets() {
        let mut t = ProducerStateTable::default();
        for i in 0..6 {
            t.record(&stored(header(7, 0, i * 2, 2), 100 + i64::from(i) * 2), 1);
        }
        // Batch 0 (seq 0-1) fell out of the window of five.
        assert!(out_of_order(t.check(&header(7, 0, 0, 2))));
        let Ok(Verdict::Duplicate(meta)) = t.check(&header(7, 0, 2, 2)) else {
            panic!("seq 2-3 is retained");
        };
        assert_eq!((meta.base_offset, meta.last_offset), (102, 103));
        assert!(matches!(
            t.check(&header(7, 0, 10, 2)),
            Ok(Verdict::Duplicate(_))
        ));
        // Same first sequence, different length: not the same batch.
        assert!(out_of_order(t.check(&header(7, 0, 10, 1))));
        assert_eq!(t.check(&header(7, 0, 12, 5)).ok(), Some(Verdict::Append));
    }

    #[test]
    fn a_batch_ahead_is_a_gap_and_one_behind_is_out_of_order() {
        let mut t = ProducerStateTable::default();
        t.record(&stored(header(7, 0, 0, 3), 0), 1);
        assert!(gap(t.check(&header(7, 0, 4, 1))));
        assert!(out_of_order(t.check(&header(7, 0, 1, 1))));
        assert_eq!(t.check(&header(7, 0, 3, 1)).ok(), Some(Verdict::Append));
        // Across the wrap from i32::MAX to 0, ahead and behind keep their
        // meaning.
        let mut t = ProducerStateTable::default();
        t.record(&stored(header(7, 0, i32::MAX - 2, 2), 0), 1);
        assert!(gap(t.check(&header(7, 0, 3, 1))));
        assert!(out_of_order(t.check(&header(7, 0, i32::MAX - 5, 1))));
        assert_eq!(
            t.check(&header(7, 0, i32::MAX, 1)).ok(),
            Some(Verdict::Append)
        );
    }

    #[test]
    fn sequences_wrap_from_i32_max_to_zero() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut t = ProducerStateTable::default();
        t.record(&stored(header(7, 0, i32::MAX - 1, 2), 0), 1);
        assert_eq!(t.get(7).and_then(ProducerEntry::last_seq), Some(i32::MAX));
        assert_eq!(t.check(&header(7, 0, 0, 4)).ok(), Some(Verdict::Append));
        t.record(&stored(header(7, 0, i32::MAX, 3), 2), 1);
        assert_eq!(t.get(7).and_then(ProducerEntry::last_seq), Some(1));
        assert_eq!(t.check(&header(7, 0, 2, 1)).ok(), Some(Verdict::Append));
        assert!(matches!(
            t.check(&header(7, 0, i32::MAX, 3)),
            Ok(Verdict::Duplicate(_))
        ));
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_restarts_at_zero() {
        let mut t = ProducerStateTable::default();
        t.record(&stored(header(7, 3, 0, 5), 0), 1);
        assert!(matches!(
            t.check(&header(7, 2, 5, 1)),
            Err(BrokerError::InvalidProducerEpoch { current: 3, .. })
        ));
        // A newer epoch whose batch at sequence 0 has not come yet.
        assert!(gap(t.check(&header(7, 4, 5, 1))));
        assert_eq!(t.check(&header(7, 4, 0, 1)).ok(), Some(Verdict::Append));
        t.record(&stored(header(7, 4, 0, 1), 5), 2);
        let e = t.get(7).expect("known");
        assert_eq!(
            (e.epoch, e.last_seq(), e.batches().count()),
            (4, Some(0), 1)
        );
        // The old epoch's batches are no longer duplicates: they are fenced.
        assert!(matches!(
            t.check(&header(7, 3, 0, 5)),
            Err(BrokerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn idle_producers_expire() {
        let mut t = ProducerStateTable::default();
        t.record(&stored(header(1, 0, 0, 1), 0), 1_000);
        t.record(&stored(header(2, 0, 0, 1), 1), 5_000);
        assert_eq!(t.expire(6_000, 5_000), 1);
        assert!(t.get(1).is_none() && t.get(2).is_some());
    }

    #[test]
    fn a_snapshot_round_trips_and_damage_is_detected() {
        let mut t = ProducerStateTable::default();
        for i in 0..7 {
            t.record(&stored(header(1, 2, i, 1), i64::from(i)), 10);
        }
        t.record(&stored(header(9, 0, 100, 4), 7), 20);
        let bytes = t.encode_snapshot(11);
        let (offset, back) = ProducerStateTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!((offset, &back), (11, &t));
        for cut in [0, 3, bytes.len() - 1] {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..cut]).is_err());
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert!(ProducerStateTable::decode_snapshot(&flipped).is_err());
    }

    #[test]
    fn producer_batches_must_come_alone_and_never_transactional() {
        use super::test_support::producer_batch as batch;
        let one = batch(1, 0, 0, 1);
        assert!(matches!(producer_batch(&one), Ok(Some(_))));
        let plain = batch(-1, -1, -1, 1);
        assert!(matches!(producer_batch(&plain), Ok(None)));
        let mut two = one.clone();
        two.extend_from_slice(&plain);
        assert!(matches!(
            producer_batch(&two),
            Err(BrokerError::InvalidRecord(_))
        ));
        let mut txn = one.clone();
        txn[22] |= 0x10;
        assert!(matches!(
            producer_batch(&txn),
            Err(BrokerError::InvalidTxnState(_))
        ));
    }
}
