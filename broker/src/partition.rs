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
use crate::replication::{PartitionGroup, ReplicaStore};
use crate::rpc::GroupId;

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    backing: Backing,
    appended: Notify,
}

/// Where a partition's data lives on this broker.
enum Backing {
    /// The single-replica fast path (replication factor 1, local topics):
    /// the leader appends to its log directly.
    Local(RwLock<Guarded>),
    /// A replica of a partition Raft group: the log is owned by the Raft
    /// storage, reads stop at the commit index, writes go through Raft.
    Replicated(Replicated),
    /// A replicated partition with no replica on this broker: no log, no
    /// directory; every request is for another broker.
    Absent,
}

/// A replicated partition's Raft storage and, once started, its group.
pub struct Replicated {
    pub store: ReplicaStore,
    pub group_id: GroupId,
    /// The assigned replicas, preferred leader first (during a
    /// reassignment: the target first, then the replicas leaving).
    replicas: RwLock<Vec<i32>>,
    group: RwLock<Option<Arc<PartitionGroup>>>,
}

impl Replicated {
    pub fn replicas(&self) -> Vec<i32> {
        self.replicas.read().clone()
    }

    /// A reassignment changed who holds the partition; this broker still does.
    pub fn set_replicas(&self, replicas: Vec<i32>) {
        *self.replicas.write() = replicas;
    }

    /// The running Raft group, once the replica host started it.
    pub fn group(&self) -> Option<Arc<PartitionGroup>> {
        self.group.read().clone()
    }

    pub fn set_group(&self, group: Option<Arc<PartitionGroup>>) {
        *self.group.write() = group;
    }

    /// Detaches the running group, to stop it.
    pub fn take_group(&self) -> Option<Arc<PartitionGroup>> {
        self.group.write().take()
    }

    /// Whether this replica currently leads its group.
    pub fn is_leader(&self) -> bool {
        self.group.read().as_ref().is_some_and(|g| g.is_leader())
    }
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
            backing: Backing::Local(RwLock::new(Guarded { log, producers })),
            appended: Notify::new(),
        })
    }

    /// Wraps an opened log as a Raft replica's storage (the group itself is
    /// started later, by the replica host).
    ///
    /// # Errors
    /// I/O, an unreadable Raft state file.
    pub fn open_replicated(
        topic: Arc<str>,
        index: i32,
        log: PartitionLog,
        group_id: GroupId,
        replicas: Vec<i32>,
    ) -> Result<Self> {
        let store = ReplicaStore::open(log).map_err(|e| BrokerError::Storage(e.to_string()))?;
        Ok(Self {
            topic,
            index,
            backing: Backing::Replicated(Replicated {
                store,
                group_id,
                replicas: RwLock::new(replicas),
                group: RwLock::new(None),
            }),
            appended: Notify::new(),
        })
    }

    /// A replicated partition this broker holds no replica of.
    pub fn absent(topic: Arc<str>, index: i32) -> Self {
        Self {
            topic,
            index,
            backing: Backing::Absent,
            appended: Notify::new(),
        }
    }

    /// The Raft side of a replicated partition; `None` on the local path.
    pub fn replicated(&self) -> Option<&Replicated> {
        match &self.backing {
            Backing::Replicated(r) => Some(r),
            Backing::Local(_) | Backing::Absent => None,
        }
    }

    /// Whether this replica's log holds batches of `producer_id` (never
    /// where it holds no log).
    pub fn knows_producer(&self, producer_id: i64) -> bool {
        match &self.backing {
            Backing::Local(l) => l.read().producers.knows(producer_id),
            Backing::Replicated(r) => r.store.knows_producer(producer_id),
            Backing::Absent => false,
        }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self.backing, Backing::Absent)
    }

    /// Stops a replica's Raft group (the partition is being deleted); the
    /// replica host unregisters it from the RPC server.
    pub fn close(&self) {
        let Some(group) = self.replicated().and_then(Replicated::take_group) else {
            return;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = group.raft().shutdown().await {
                    warn!(error = %e, "stopping a deleted partition's Raft group");
                }
            });
        }
    }

    fn local(&self) -> Result<&RwLock<Guarded>> {
        match &self.backing {
            Backing::Local(l) => Ok(l),
            // Writes to a replicated partition go through its group.
            Backing::Replicated(_) | Backing::Absent => Err(BrokerError::NotLeaderOrFollower),
        }
    }

    /// Appends `records` (validated and offset-assigned by the log), after
    /// checking an idempotent producer's batch against its sequence numbers.
    /// A retried batch is not stored again: its original offsets come back
    /// with `duplicate` set. Blocking: may fsync, so async callers run it on
    /// the blocking pool.
    ///
    /// # Errors
    /// The producer checks' errors (`InvalidProducerEpoch`,
    /// `SequenceGap`, `OutOfOrderSequence`), invalid batches, I/O.
    pub fn append(&self, records: &mut [u8], ts: TimestampMode) -> Result<Appended> {
        let producer = producer_state::producer_batch(records)?;
        let mut g = self.local()?.write();
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

    /// Clean shutdown: fsync, then snapshot the producer state (a replica
    /// saves its applied position instead).
    pub fn checkpoint(&self) -> Result<()> {
        let l = match &self.backing {
            Backing::Local(l) => l,
            Backing::Replicated(r) => {
                return r
                    .store
                    .checkpoint()
                    .map_err(|e| BrokerError::Storage(e.to_string()));
            }
            Backing::Absent => return Ok(()),
        };
        let mut g = l.write();
        g.log.flush()?;
        let end = g.log.log_end_offset();
        g.producers
            .write_snapshot(g.log.dir(), end)
            .map_err(|e| BrokerError::Storage(e.to_string()))
    }

    /// Producers known on this partition.
    pub fn producer_count(&self) -> usize {
        match &self.backing {
            Backing::Local(l) => l.read().producers.len(),
            Backing::Replicated(r) => r.store.producer_count(),
            Backing::Absent => 0,
        }
    }

    /// Drops producers idle for `max_idle_ms`; returns how many.
    pub fn expire_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        match &self.backing {
            Backing::Local(l) => l.write().producers.expire(now_ms, max_idle_ms),
            Backing::Replicated(r) => r.store.expire_producers(now_ms, max_idle_ms),
            Backing::Absent => 0,
        }
    }

    /// Runs `f` on the log (read-only); `None` without a replica here.
    fn with_log<T>(&self, f: impl FnOnce(&PartitionLog) -> T) -> Option<T> {
        match &self.backing {
            Backing::Local(l) => Some(f(&l.read().log)),
            Backing::Replicated(r) => Some(r.store.with_log(f)),
            Backing::Absent => None,
        }
    }

    /// Plans a read of whole batches from `offset`; the bytes are loaded
    /// later, outside the lock. Never past the high watermark: for a
    /// replica that is the Raft commit index, so an uncommitted tail is
    /// never exposed.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<PartitionRead> {
        let high_watermark = self.high_watermark();
        self.with_log(|log| {
            // Single replica: everything appended is committed.
            let high_watermark = match &self.backing {
                Backing::Local(_) => log.log_end_offset(),
                Backing::Replicated(_) | Backing::Absent => high_watermark,
            };
            let log_start_offset = log.log_start_offset();
            let out_of_range = || BrokerError::OffsetOutOfRange {
                offset,
                start: log_start_offset,
                end: high_watermark,
            };
            // Out of range is judged against the log end, as Kafka does: a
            // new leader's commit index may briefly trail the offsets its
            // predecessor acknowledged, and a consumer there must get an
            // empty read, not a reset.
            let slice = log
                .read(offset, max_bytes, high_watermark, min_one)
                .map_err(|e| match e {
                    skiff_log::LogError::OffsetOutOfRange { .. } => out_of_range(),
                    other => other.into(),
                })?;
            Ok(PartitionRead {
                slice,
                high_watermark,
                log_start_offset,
            })
        })
        .unwrap_or(Err(BrokerError::NotLeaderOrFollower))
    }

    /// A future that completes at the next append (for a replica: the next
    /// commit). Create it *before* checking for data, so an append in
    /// between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        match &self.backing {
            Backing::Local(_) | Backing::Absent => self.appended.notified(),
            Backing::Replicated(r) => r.store.applied(),
        }
    }

    pub fn high_watermark(&self) -> i64 {
        match &self.backing {
            Backing::Local(l) => l.read().log_end_offset(),
            Backing::Replicated(r) => r.store.high_watermark(),
            Backing::Absent => 0,
        }
    }

    pub fn log_start_offset(&self) -> i64 {
        self.with_log(|l| l.log_start_offset()).unwrap_or(0)
    }

    pub fn size_bytes(&self) -> u64 {
        self.with_log(|l| l.size_bytes()).unwrap_or(0)
    }

    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<ReadSlice>> {
        match self.with_log(|l| l.batch_for_timestamp(ts)) {
            Some(r) => Ok(r?),
            None => Err(BrokerError::NotLeaderOrFollower),
        }
    }

    /// The largest timestamp and its offset, among committed records.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let hw = self.high_watermark();
        self.with_log(|l| l.max_timestamp())
            .flatten()
            .filter(|&(_, offset)| offset < hw)
    }

    pub fn update_config(&self, config: LogConfig) {
        match &self.backing {
            Backing::Local(l) => l.write().update_config(config),
            Backing::Replicated(r) => r.store.update_config(config),
            Backing::Absent => {}
        }
    }

    /// Time and size retention of a local log. A replicated partition's log
    /// start moves only through its Raft group: see [`Self::retention_purge`].
    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        match &self.backing {
            Backing::Local(l) => Ok(l.write().enforce_retention(now_ms)?),
            Backing::Replicated(_) | Backing::Absent => Ok(RetentionReport::default()),
        }
    }

    /// For a replicated partition whose group runs here and whose retention
    /// is due: the group and the Raft index to purge up to (each replica
    /// applies retention to its own log, as Kafka's do).
    pub fn retention_purge(&self, now_ms: i64) -> Result<Option<(Arc<PartitionGroup>, u64)>> {
        let Backing::Replicated(r) = &self.backing else {
            return Ok(None);
        };
        let Some(group) = r.group() else {
            return Ok(None);
        };
        let index = r
            .store
            .retention_point(now_ms)
            .map_err(|e| BrokerError::Storage(e.to_string()))?;
        Ok(index.map(|i| (group, i)))
    }

    /// Segments a replicated partition's purges deleted since the last call.
    pub fn take_purged_segments(&self) -> u64 {
        match &self.backing {
            Backing::Local(_) | Backing::Absent => 0,
            Backing::Replicated(r) => r.store.take_purged_segments(),
        }
    }

    /// The time-based fsync, run without holding the log: appends and reads
    /// carry on while the disk catches up.
    pub fn flush_if_due(&self, now: Instant) -> Result<bool> {
        let l = match &self.backing {
            Backing::Local(l) => l,
            Backing::Replicated(r) => {
                return r
                    .store
                    .flush_if_due(now)
                    .map_err(|e| BrokerError::Storage(e.to_string()));
            }
            Backing::Absent => return Ok(false),
        };
        let Some(pending) = l.write().take_due_flush(now) else {
            return Ok(false);
        };
        if let Err(e) = pending.sync() {
            l.write().log.flush_failed(pending);
            return Err(BrokerError::Storage(e.to_string()));
        }
        Ok(true)
    }

    pub fn flush(&self) -> Result<()> {
        match &self.backing {
            Backing::Local(l) => Ok(l.write().flush()?),
            Backing::Replicated(r) => r
                .store
                .checkpoint()
                .map_err(|e| BrokerError::Storage(e.to_string())),
            Backing::Absent => Ok(()),
        }
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
            Err(BrokerError::SequenceGap(_))
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
                Err(BrokerError::SequenceGap(_))
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
