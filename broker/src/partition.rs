//! One partition replica on this broker: its log, the state of the
//! idempotent producers writing to it, and the signal that wakes
//! long-polling fetches the moment data arrives.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use skiff_log::batch::BatchHeader;
use skiff_log::{AppendInfo, LogConfig, PartitionLog, ReadSlice, RetentionReport, TimestampMode};
use tokio::sync::Notify;
use tracing::{debug, warn};

use crate::broker::now_ms;
use crate::errors::{BrokerError, Result};
use crate::producer_state::{self, ProducerStateTable, Verdict};

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: RwLock<Guarded>,
    appended: Notify,
}

/// What one lock protects, so a producer's checks and its append are atomic.
struct Guarded {
    log: PartitionLog,
    producers: ProducerStateTable,
}

impl std::ops::Deref for Guarded {
    type Target = PartitionLog;
    fn deref(&self) -> &PartitionLog {
        &self.log
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut PartitionLog {
        &mut self.log
    }
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub info: AppendInfo,
    /// A producer's retry of a batch already stored: nothing was written and
    /// `info` carries the original offsets.
    pub duplicate: bool,
}

/// Rebuilds the producer state of `log`: the snapshot, if there is a usable
/// one, plus the batches after it; otherwise every batch header.
fn rebuild_producers(log: &PartitionLog) -> Result<ProducerStateTable> {
    let dir = log.dir();
    let end = log.log_end_offset();
    let (mut table, from) = match ProducerStateTable::read_snapshot(dir) {
        Ok(Some((offset, table))) if offset <= end => (table, offset),
        Ok(Some((offset, _))) => {
            warn!(dir = %dir.display(), snapshot_offset = offset, log_end_offset = end,
                "producer state snapshot lies past the recovered log end; rebuilding from the whole log");
            (ProducerStateTable::default(), log.log_start_offset())
        }
        Ok(None) => (ProducerStateTable::default(), log.log_start_offset()),
        Err(e) => {
            warn!(dir = %dir.display(), error = %e,
                "unreadable producer state snapshot; rebuilding from the whole log");
            (ProducerStateTable::default(), log.log_start_offset())
        }
    };
    let now = now_ms();
    let mut batches = 0u64;
    log.scan_headers(from, |h| {
        batches += 1;
        // The producer's clock, but never in the future: expiry only ever
        // keeps a producer longer than it should, never drops one early.
        table.record(h, h.max_timestamp.min(now));
    })?;
    debug!(dir = %dir.display(), from, batches, producers = table.len(), "producer state rebuilt");
    Ok(table)
}

/// What a fetch of one partition found.
pub struct PartitionRead {
    pub slice: ReadSlice,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    /// Wraps an opened log, rebuilding its producer state (see the
    /// [`producer_state`] module).
    ///
    /// # Errors
    /// I/O while reading batch headers.
    pub fn open(topic: Arc<str>, index: i32, log: PartitionLog) -> Result<Self> {
        let producers = rebuild_producers(&log)?;
        Ok(Self {
            topic,
            index,
            log: RwLock::new(Guarded { log, producers }),
            appended: Notify::new(),
        })
    }

    /// Appends `records` (validated and offset-assigned by the log), after
    /// checking an idempotent producer's batch against its sequence numbers.
    /// A retried batch is not stored again: its original offsets come back
    /// with `duplicate` set. Blocking: may fsync, so async callers run it on
    /// the blocking pool.
    ///
    /// # Errors
    /// The producer checks' errors (`InvalidProducerEpoch`,
    /// `OutOfOrderSequence`, ...), invalid batches, I/O.
    pub fn append(&self, records: &mut [u8], ts: TimestampMode) -> Result<Appended> {
        let producer = producer_state::producer_batch(records)?;
        let mut g = self.log.write();
        if let Some(h) = &producer
            && let Verdict::Duplicate(dup) = g.producers.check(h)?
        {
            // Kafka validates a batch before looking for duplicates.
            skiff_log::batch::validate_all(records)?;
            let info = AppendInfo {
                base_offset: dup.base_offset,
                last_offset: dup.last_offset,
                log_append_time: match ts {
                    TimestampMode::LogAppendTime(_) => Some(dup.timestamp),
                    TimestampMode::CreateTime => None,
                },
                log_start_offset: g.log.log_start_offset(),
                record_count: 0,
                bytes: 0,
            };
            return Ok(Appended {
                info,
                duplicate: true,
            });
        }
        let segments = g.log.segment_count();
        let info = g.log.append(records, ts)?;
        if let Some(h) = producer {
            // The stored header: offsets assigned, LogAppendTime stamped.
            let stored = BatchHeader::parse(records).unwrap_or(BatchHeader {
                base_offset: info.base_offset,
                ..h
            });
            g.producers.record(&stored, now_ms());
        }
        if g.log.segment_count() > segments {
            // A roll: snapshot the producers so a restart replays only the
            // new active segment.
            self.snapshot_locked(&mut g);
        }
        drop(g);
        self.appended.notify_waiters();
        Ok(Appended {
            info,
            duplicate: false,
        })
    }

    /// Flushes the log, then writes the producer state snapshot at its end.
    /// Failure is logged: a missing snapshot costs a longer scan at start-up.
    fn snapshot_locked(&self, g: &mut Guarded) {
        if let Err(e) = g.log.flush() {
            warn!(topic = %self.topic, partition = self.index, error = %e, "cannot flush before the producer state snapshot");
            return;
        }
        let end = g.log.log_end_offset();
        if let Err(e) = g.producers.write_snapshot(g.log.dir(), end) {
            warn!(topic = %self.topic, partition = self.index, error = %e, "cannot write the producer state snapshot");
        }
    }

    /// Clean shutdown: fsync, then snapshot the producer state.
    pub fn checkpoint(&self) -> Result<()> {
        let mut g = self.log.write();
        g.log.flush()?;
        let end = g.log.log_end_offset();
        g.producers
            .write_snapshot(g.log.dir(), end)
            .map_err(|e| BrokerError::Storage(e.to_string()))
    }

    /// Producers known on this partition.
    pub fn producer_count(&self) -> usize {
        self.log.read().producers.len()
    }

    /// Drops producers idle for `max_idle_ms`; returns how many.
    pub fn expire_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.log.write().producers.expire(now_ms, max_idle_ms)
    }

    /// Plans a read of whole batches from `offset`; the bytes are loaded
    /// later, outside the lock.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<PartitionRead> {
        let log = self.log.read();
        // Single replica: everything appended is committed. With replication
        // this becomes the Raft commit index.
        let high_watermark = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        let slice = log
            .read(offset, max_bytes, high_watermark, min_one)
            .map_err(|e| match e {
                skiff_log::LogError::OffsetOutOfRange { .. } => BrokerError::OffsetOutOfRange {
                    offset,
                    start: log_start_offset,
                    end: high_watermark,
                },
                other => other.into(),
            })?;
        Ok(PartitionRead {
            slice,
            high_watermark,
            log_start_offset,
        })
    }

    /// A future that completes at the next append. Create it *before*
    /// checking for data, so an append in between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.read().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.read().log_start_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
    }

    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<ReadSlice>> {
        Ok(self.log.read().batch_for_timestamp(ts)?)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.log.read().max_timestamp()
    }

    pub fn update_config(&self, config: LogConfig) {
        self.log.write().update_config(config);
    }

    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        Ok(self.log.write().enforce_retention(now_ms)?)
    }

    /// The time-based fsync, run without holding the log: appends and reads
    /// carry on while the disk catches up.
    pub fn flush_if_due(&self, now: Instant) -> Result<bool> {
        let Some(pending) = self.log.write().take_due_flush(now) else {
            return Ok(false);
        };
        if let Err(e) = pending.sync() {
            self.log.write().log.flush_failed(pending);
            return Err(BrokerError::Storage(e.to_string()));
        }
        Ok(true)
    }

    pub fn flush(&self) -> Result<()> {
        Ok(self.log.write().flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::producer_state::test_support::producer_batch;
    use crate::producer_state::{SNAPSHOT_FILE, last_sequence};

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes: 400,
            segment_ms: None,
            retention_ms: None,
            flush_ms: None,
            ..LogConfig::default()
        }
    }

    fn open(dir: &std::path::Path) -> Partition {
        let (log, _) = PartitionLog::open(dir, small_segments()).expect("open log");
        Partition::open(Arc::from("t"), 0, log).expect("open partition")
    }

    fn send(p: &Partition, pid: i64, epoch: i16, seq: i32, records: i32) -> Result<Appended> {
        let mut b = producer_batch(pid, epoch, seq, records);
        p.append(&mut b, TimestampMode::CreateTime)
    }

    #[test]
    fn a_retried_batch_gets_its_original_offsets_and_is_not_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = open(dir.path());
        let first = send(&p, 5, 0, 0, 3).expect("append");
        send(&p, 5, 0, 3, 2).expect("append");
        let again = send(&p, 5, 0, 0, 3).expect("duplicate");
        assert!(again.duplicate);
        assert_eq!(again.info.base_offset, first.info.base_offset);
        assert_eq!(again.info.last_offset, first.info.last_offset);
        assert_eq!(p.high_watermark(), 5);
        assert!(matches!(
            send(&p, 5, 0, 9, 1),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(p.high_watermark(), 5, "a refused batch is not stored");
    }

    /// Writes batches from two producers across several segments, and
    /// returns the (pid, seq, records, base offset) of each.
    fn fill(p: &Partition, n: i32) -> Vec<(i64, i32, i32, i64)> {
        let mut seqs = [0i32, 0i32];
        let mut out = Vec::new();
        for i in 0..n {
            let k = (i % 2) as usize;
            let pid = 10 + k as i64;
            let records = 1 + i % 3;
            let a = send(p, pid, 0, seqs[k], records).expect("append");
            assert!(!a.duplicate);
            out.push((pid, seqs[k], records, a.info.base_offset));
            seqs[k] = last_sequence(seqs[k], records - 1) + 1;
        }
        out
    }

    fn assert_state_survived(p: &Partition, sent: &[(i64, i32, i32, i64)]) {
        // The last five batches of each producer are duplicates with their
        // offsets; the next sequence continues.
        for pid in [10, 11] {
            let mine: Vec<_> = sent.iter().filter(|s| s.0 == pid).collect();
            for &&(_, seq, records, base) in mine.iter().rev().take(5) {
                let a = send(p, pid, 0, seq, records).expect("duplicate");
                assert!(a.duplicate, "pid {pid} seq {seq} should be a duplicate");
                assert_eq!(a.info.base_offset, base);
            }
            let &&(_, seq, records, _) = mine.last().expect("sent some");
            assert!(matches!(
                send(p, pid, 0, seq + records + 1, 1),
                Err(BrokerError::OutOfOrderSequence(_))
            ));
        }
    }

    #[test]
    fn producer_state_is_rebuilt_from_the_log_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sent = {
            let p = open(dir.path());
            let sent = fill(&p, 20);
            p.flush().expect("flush");
            sent
        };
        // No clean shutdown and no snapshot at all: a full scan.
        let _ = std::fs::remove_file(dir.path().join(SNAPSHOT_FILE));
        let p = open(dir.path());
        assert_eq!(p.producer_count(), 2);
        assert_state_survived(&p, &sent);
    }

    #[test]
    fn producer_state_is_rebuilt_from_a_snapshot_and_the_tail_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sent = {
            let p = open(dir.path());
            let mut sent = fill(&p, 10);
            p.checkpoint().expect("snapshot");
            // After the snapshot, without a clean shutdown: replayed.
            let (pid, seq, records, _) = *sent.last().expect("sent");
            let a = send(&p, pid, 0, seq + records, 2).expect("append");
            sent.push((pid, seq + records, 2, a.info.base_offset));
            p.flush().expect("flush");
            sent
        };
        assert!(dir.path().join(SNAPSHOT_FILE).exists());
        let p = open(dir.path());
        assert_state_survived(&p, &sent);
    }

    #[test]
    fn a_snapshot_past_the_log_end_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut bogus = ProducerStateTable::default();
        let mut h = BatchHeader::parse(&producer_batch(99, 0, 0, 1)).expect("header");
        h.base_offset = 500;
        bogus.record(&h, 0);
        std::fs::create_dir_all(dir.path()).expect("dir");
        bogus.write_snapshot(dir.path(), 1_000).expect("write");
        let p = open(dir.path());
        assert_eq!(p.producer_count(), 0);
    }
}
