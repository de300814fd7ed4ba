//! openraft storage over one partition's segment files.
//!
//! [`ReplicaStore`] owns the partition's [`PartitionLog`] and everything Raft
//! needs around it. Raft entry *i* is the *i*-th batch of the log counted
//! from an anchor (the first entry after the last purge), so the index of a
//! batch is found by counting batch headers; a sparse map (every
//! [`SPARSE_EVERY`]th entry) bounds the walk, and the entries not yet applied
//! are kept exactly, because replication and `apply` read them right after
//! they are written.
//!
//! Small durable state (vote, last purged log id, anchor, the leader of each
//! term, and the last applied id saved at checkpoints) lives in one JSON file
//! replaced atomically. It changes only on elections, term changes,
//! truncations and purges, never per entry.
//!
//! The state machine is the log itself: applying an entry moves the high
//! watermark past it. A snapshot is therefore tiny: the last applied id, the
//! membership and the Kafka offset after it. A follower that installs one
//! without holding its entries restarts its log empty at that offset, as a
//! Kafka follower does when its log end lies below the leader's log start.

// The helpers return openraft's `StorageError`, which is what the storage
// traits must return; boxing it only to unbox it at every trait method buys
// nothing.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Cursor};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, CommittedLeaderId, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId,
    LogState, Membership, OptionalSend, RaftLogReader, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, Vote,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use skiff_log::batch::{self, BatchHeader};
use skiff_log::{AppendInfo, LogError, PageDrop, PartitionLog, TimestampMode};
use tokio::sync::{Notify, watch};

use super::codec::{self, StoredKind};
use super::recent::RecentEntries;
use super::{Applied, NodeId, PartitionRaft, Proposal};
use crate::broker::now_ms;
use crate::producer_state::{ProducerStateTable, Verdict};

/// File of the small durable Raft state, beside the segments.
pub const STATE_FILE: &str = "raft-state.json";
/// A sparse map point every this many entries bounds an index lookup walk.
pub const SPARSE_EVERY: u64 = 64;
/// Bytes read per step when loading entries.
const READ_CHUNK: usize = 1 << 20;
/// What a follower still writes through the page cache (small appends, or
/// all of them without direct I/O) stays there for the last this many bytes
/// of its active segment: what a new leader's tailing consumers read next.
/// Older pages are dropped (see `PartitionLog::pages_to_drop`).
const FOLLOWER_CACHED_BYTES: u64 = 64 << 20;
/// Entry bytes in one AppendEntries (one entry more when a single entry is
/// larger).
const APPEND_BYTES: usize = 4 << 20;

type SErr = StorageError<NodeId>;

fn io_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> SErr {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn log_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> SErr {
    io_err(ErrorSubject::Logs, verb, e)
}

fn other(msg: String) -> SErr {
    StorageIOError::new(ErrorSubject::Store, ErrorVerb::Read, AnyError::error(msg)).into()
}

/// A term's leader and the first index it wrote (Kafka's leader-epoch
/// checkpoint, with the leader added because openraft's log ids carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct TermStart {
    term: u64,
    leader: NodeId,
    first_index: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct DurableState {
    vote: Option<Vote<NodeId>>,
    last_purged: Option<LogId<NodeId>>,
    /// Raft index and Kafka offset of the first entry in the log.
    anchor: Option<(u64, i64)>,
    terms: Vec<TermStart>,
    /// Saved at checkpoints only; a stale value just replays more entries.
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Kafka offset after `applied`.
    applied_end: i64,
}

/// One entry's place in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placed {
    log_id: LogId<NodeId>,
    base_offset: i64,
    next_offset: i64,
}

struct Inner {
    log: PartitionLog,
    state_path: PathBuf,
    durable: DurableState,
    /// `(index, base offset)` of the anchor and every SPARSE_EVERY-th entry.
    sparse: Vec<(u64, i64)>,
    /// Entries after the last applied one (plus the last one ever written),
    /// exactly placed.
    tail: VecDeque<Placed>,
    last: Option<LogId<NodeId>>,
    applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    /// Kafka offset after the last applied entry: the high watermark.
    high_watermark: i64,
    snapshot: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
    /// Where retention wants the log cut: the last entry to drop and the
    /// Kafka offset after it. The next snapshot is taken there, so a replica
    /// that receives it keeps every entry after the cut.
    retention_point: Option<(LogId<NodeId>, i64)>,
    /// Segments deleted by purges since the broker last collected them.
    purged_segments: u64,
    applied_since_save: u64,
    /// Idempotent producers' recent batches, from the log (see
    /// `producer_state`); checked by the leader before it proposes.
    producers: ProducerStateTable,
    /// The latest entries as written, so replication and `apply` need not
    /// read them back.
    recent: RecentEntries,
    /// This replica's node, once its group runs: entries it wrote as leader
    /// are kept a moment past their apply for the followers.
    local: Option<NodeId>,
}

/// Applied entries between saves of the applied position, which bound the
/// replay (and the exactly-placed tail) after an unclean restart.
const SAVE_APPLIED_EVERY: u64 = 10_000;

/// The shared state behind a partition's [`LogStore`] and [`StateMachine`].
#[derive(Clone)]
pub struct ReplicaStore {
    inner: Arc<Mutex<Inner>>,
    applied: Arc<Notify>,
    /// The index after the log's last entry, for the leader's replication
    /// streams (see [`Self::log_tail`]).
    tail: Arc<watch::Sender<u64>>,
}

/// openraft's log storage handle.
#[derive(Clone)]
pub struct LogStore(ReplicaStore);

/// openraft's state machine handle.
#[derive(Clone)]
pub struct StateMachine(ReplicaStore);

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    next_offset: i64,
}

fn read_state(path: &Path) -> io::Result<Option<DurableState>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_state(path: &Path, state: &DurableState) -> io::Result<()> {
    let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Inner {
    fn leader_of(&self, term: u64) -> NodeId {
        match self.durable.terms.iter().rev().find(|t| t.term == term) {
            Some(t) => t.leader,
            None => {
                tracing::warn!(dir = %self.log.dir().display(), term, "no recorded leader for a term in the log");
                0
            }
        }
    }

    fn log_id(&self, term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, self.leader_of(term)), index)
    }

    fn anchor(&self) -> (u64, i64) {
        self.durable.anchor.unwrap_or((
            self.durable.last_purged.map_or(0, |l| l.index + 1),
            self.log.log_start_offset(),
        ))
    }

    fn next_index(&self) -> u64 {
        self.last.map_or(self.anchor().0, |l| l.index + 1)
    }

    fn persist(&self) -> Result<(), SErr> {
        write_state(&self.state_path, &self.durable)
            .map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    /// Kafka base offset of entry `index`, if the log holds it.
    fn offset_of(&self, index: u64) -> Result<Option<i64>, SErr> {
        let (first, first_offset) = self.anchor();
        if index < first || self.last.is_none_or(|l| index > l.index) {
            return Ok(None);
        }
        if let Some(front) = self.tail.front()
            && index >= front.log_id.index
        {
            let at = (index - front.log_id.index) as usize;
            return Ok(self.tail.get(at).map(|p| p.base_offset));
        }
        let k = self.sparse.partition_point(|&(i, _)| i <= index);
        let (mut i, from) = if k == 0 {
            (first, first_offset)
        } else {
            self.sparse[k - 1]
        };
        let mut found = None;
        self.log
            .scan_headers_while(from, |h| {
                if i == index {
                    found = Some(h.base_offset);
                    return false;
                }
                i += 1;
                true
            })
            .map_err(|e| log_err(ErrorVerb::Read, e))?;
        Ok(found)
    }

    /// Header of the batch at `offset`.
    fn header_at(&self, offset: i64) -> Result<Option<BatchHeader>, SErr> {
        let mut found = None;
        self.log
            .scan_headers_while(offset, |h| {
                found = Some(*h);
                false
            })
            .map_err(|e| log_err(ErrorVerb::Read, e))?;
        Ok(found)
    }

    fn placed(&self, index: u64) -> Result<Option<Placed>, SErr> {
        if let Some(front) = self.tail.front()
            && index >= front.log_id.index
        {
            return Ok(self
                .tail
                .get((index - front.log_id.index) as usize)
                .copied());
        }
        let Some(offset) = self.offset_of(index)? else {
            return Ok(None);
        };
        let Some(h) = self.header_at(offset)? else {
            return Ok(None);
        };
        let term = u64::try_from(h.partition_leader_epoch).unwrap_or(0);
        Ok(Some(Placed {
            log_id: self.log_id(term, index),
            base_offset: h.base_offset,
            next_offset: h.last_offset() + 1,
        }))
    }

    fn decode(
        &self,
        index: u64,
        h: &BatchHeader,
        raw: Bytes,
    ) -> Result<Entry<PartitionRaft>, SErr> {
        let term = u64::try_from(h.partition_leader_epoch).unwrap_or(0);
        let payload = match codec::classify(h, &raw) {
            StoredKind::Normal => EntryPayload::Normal(Proposal::new(raw)),
            StoredKind::Blank => EntryPayload::Blank,
            StoredKind::Membership(json) => {
                let m: Membership<NodeId, BasicNode> =
                    serde_json::from_slice(&json).map_err(|e| log_err(ErrorVerb::Read, e))?;
                EntryPayload::Membership(m)
            }
        };
        Ok(Entry {
            log_id: self.log_id(term, index),
            payload,
        })
    }

    /// Entries `start..end`, or fewer (at least one) once `max_bytes` are
    /// taken.
    fn entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry<PartitionRaft>>, SErr> {
        let end = end.min(self.next_index());
        if start >= end {
            return Ok(Vec::new());
        }
        let mut taken = 0usize;
        let mut room = |len: usize| {
            let fits = taken == 0 || taken + len <= max_bytes;
            taken += len;
            fits
        };
        if let Some(cached) = self.recent.range(start, end) {
            return cached
                .take_while(|(_, raw)| room(raw.len()))
                .map(|(index, raw)| {
                    let h = BatchHeader::parse(raw).map_err(|e| log_err(ErrorVerb::Read, e))?;
                    self.decode(index, &h, raw.clone())
                })
                .collect();
        }
        let Some(mut offset) = self.offset_of(start)? else {
            return Err(other(format!("log entry {start} is not in the log")));
        };
        let mut out = Vec::with_capacity((end - start).min(1024) as usize);
        let mut index = start;
        while index < end {
            let slice = self
                .log
                .read(offset, READ_CHUNK, i64::MAX, true)
                .map_err(|e| log_err(ErrorVerb::Read, e))?;
            if slice.is_empty() {
                return Err(other(format!("log ends before entry {index}")));
            }
            let bytes = slice.load().map_err(|e| log_err(ErrorVerb::Read, e))?;
            for item in batch::headers(&bytes) {
                let (at, h) = item.map_err(|e| log_err(ErrorVerb::Read, e))?;
                if !room(h.size()) {
                    return Ok(out);
                }
                out.push(self.decode(index, &h, bytes.slice(at..at + h.size()))?);
                index += 1;
                if index == end {
                    break;
                }
            }
            offset = slice.next_offset;
        }
        Ok(out)
    }

    fn append_entry(&mut self, entry: Entry<PartitionRaft>) -> Result<(), SErr> {
        let index = entry.log_id.index;
        let term = entry.log_id.leader_id.term;
        if index != self.next_index() {
            return Err(other(format!(
                "append of entry {index} but the log continues at {}",
                self.next_index()
            )));
        }
        if self.durable.terms.last().is_none_or(|t| t.term != term) {
            self.durable.terms.push(TermStart {
                term,
                leader: entry.log_id.leader_id.node_id,
                first_index: index,
            });
            // Before the entry: a term in the log must always have a leader.
            self.persist()?;
        }
        let epoch = i32::try_from(term).unwrap_or(i32::MAX);
        let normal = matches!(entry.payload, EntryPayload::Normal(_));
        let mut checked = false;
        let bytes = match entry.payload {
            EntryPayload::Normal(p) => {
                checked = p.checked;
                p.batch
            }
            EntryPayload::Blank => {
                Bytes::from(codec::control_batch(codec::CONTROL_RAFT_BLANK, &[], epoch))
            }
            EntryPayload::Membership(m) => {
                let json = serde_json::to_vec(&m).map_err(|e| log_err(ErrorVerb::Write, e))?;
                Bytes::from(codec::control_batch(
                    codec::CONTROL_RAFT_MEMBERSHIP,
                    &json,
                    epoch,
                ))
            }
        };
        if batch::headers(&bytes).count() != 1 {
            return Err(other(format!(
                "entry {index} is not exactly one record batch"
            )));
        }
        let (info, stored) = self
            .place(bytes, epoch, checked)
            .map_err(|e| log_err(ErrorVerb::Write, e))?;
        if self.last.is_none() || index.is_multiple_of(SPARSE_EVERY) {
            self.sparse.push((index, info.base_offset));
        }
        if normal && let Ok(mut h) = BatchHeader::parse(&stored) {
            // The table follows the log, not the commit index, as Kafka's
            // does: a batch whose commit timed out is still in the log, so
            // the producer's next batch continues after it and a retry of
            // it is a duplicate (answered once committed).
            h.base_offset = info.base_offset;
            self.producers.record(&h, now_ms());
        }
        self.tail.push_back(Placed {
            log_id: entry.log_id,
            base_offset: info.base_offset,
            next_offset: info.last_offset + 1,
        });
        let mine = self.local == Some(entry.log_id.leader_id.node_id);
        self.recent.push(index, stored, mine, Instant::now());
        self.last = Some(entry.log_id);
        Ok(())
    }

    /// Appends one entry's batch at the log end and returns it as stored.
    /// A batch this entry holds alone (the leader's own, or a small one
    /// decoded from a peer) gets its offset and epoch written in place; a
    /// shared one (a large batch left in the message it came in) is written
    /// as it is when the leader already placed it where it goes here, as it
    /// does, and copied to be rewritten otherwise. `checked`: this broker
    /// checked the batch's CRC already (see [`Proposal::checked`]).
    fn place(
        &mut self,
        bytes: Bytes,
        epoch: i32,
        checked: bool,
    ) -> Result<(AppendInfo, Bytes), LogError> {
        let shared = match bytes.try_into_mut() {
            Ok(mut owned) => {
                let ts = TimestampMode::CreateTime;
                let info = if checked {
                    self.log
                        .append_checked_with_leader_epoch(&mut owned, ts, epoch)?
                } else {
                    self.log.append_with_leader_epoch(&mut owned, ts, epoch)?
                };
                return Ok((info, owned.freeze()));
            }
            Err(shared) => shared,
        };
        if let Some(info) = self.log.append_placed(&shared, epoch)? {
            return Ok((info, shared));
        }
        let mut owned = BytesMut::from(&shared[..]);
        let info =
            self.log
                .append_with_leader_epoch(&mut owned, TimestampMode::CreateTime, epoch)?;
        Ok((info, owned.freeze()))
    }

    /// The page-cache advice due after appending as a follower (the last
    /// entry's leader is another node), to give once the lock is released.
    fn follower_page_drop(&mut self) -> Option<PageDrop> {
        let follower = self
            .last
            .is_some_and(|l| self.local != Some(l.leader_id.node_id));
        if follower {
            self.log.pages_to_drop(FOLLOWER_CACHED_BYTES)
        } else {
            None
        }
    }

    fn truncate(&mut self, index: u64) -> Result<(), SErr> {
        let Some(offset) = self.offset_of(index)? else {
            return Ok(());
        };
        let prev = if index > self.anchor().0 {
            self.placed(index - 1)?
        } else {
            None
        };
        self.log
            .truncate_to(offset)
            .map_err(|e| log_err(ErrorVerb::Delete, e))?;
        self.sparse.retain(|&(i, _)| i < index);
        while self.tail.back().is_some_and(|p| p.log_id.index >= index) {
            self.tail.pop_back();
        }
        self.recent.truncate_from(index);
        self.last = prev.map(|p| p.log_id);
        if let Some(p) = prev
            && self.tail.is_empty()
        {
            self.tail.push_back(p);
        }
        // The table may hold batches of the cut tail (it is rebuilt from the
        // whole log at start-up); truncation is rare, so rebuild it.
        self.producers = self.scan_producers()?;
        let before = self.durable.terms.len();
        self.durable.terms.retain(|t| t.first_index < index);
        if self.durable.terms.len() != before {
            self.persist()?;
        }
        Ok(())
    }

    fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let next = log_id.index + 1;
        let next_offset = match self.offset_of(next)? {
            Some(o) => o,
            None => self.log.log_end_offset(),
        };
        self.durable.last_purged = Some(log_id);
        self.durable.anchor = Some((next, next_offset));
        self.persist()?;
        let segments = self.log.segment_count();
        self.log
            .advance_log_start(next_offset)
            .map_err(|e| log_err(ErrorVerb::Delete, e))?;
        self.purged_segments += (segments - self.log.segment_count()) as u64;
        self.sparse.retain(|&(i, _)| i > next);
        self.sparse.insert(0, (next, next_offset));
        self.recent.release_through(log_id.index);
        while self.tail.len() > 1 && self.tail.front().is_some_and(|p| p.log_id.index < next) {
            self.tail.pop_front();
        }
        if self.last.is_none_or(|l| l.index < log_id.index) {
            self.last = None;
            self.tail.clear();
        }
        Ok(())
    }

    fn apply(&mut self, entry: &Entry<PartitionRaft>) -> Result<Applied, SErr> {
        let index = entry.log_id.index;
        let Some(p) = self.placed(index)? else {
            return Err(other(format!("applied entry {index} is not in the log")));
        };
        // Keep the last entry placed even once applied; drop older ones.
        while self.tail.len() > 1 && self.tail.front().is_some_and(|t| t.log_id.index <= index) {
            self.tail.pop_front();
        }
        self.recent.applied(index, Instant::now());
        match &entry.payload {
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            EntryPayload::Normal(_) | EntryPayload::Blank => {}
        }
        self.applied = Some(entry.log_id);
        self.high_watermark = p.next_offset;
        self.applied_since_save += 1;
        if self.applied_since_save >= SAVE_APPLIED_EVERY {
            self.save_applied()?;
        }
        Ok(Applied {
            base_offset: p.base_offset,
            last_offset: p.next_offset - 1,
        })
    }

    /// The state machine at a point: the Kafka offset after it. The point is
    /// where retention cuts the log (or the last purge), not the last
    /// applied entry, because a replica that installs a snapshot restarts
    /// its log at that offset: a snapshot at the high watermark would hand a
    /// lagging follower an empty log where the leader still holds records.
    fn build_snapshot(&mut self) -> Result<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>), SErr> {
        let membership_index = self.membership.log_id().map(|l| l.index);
        // The membership in a snapshot must be the one in force at its
        // point; reassignment does not change membership yet, so a change
        // after the point only happens if that lands: then fall back to the
        // applied point, as if no retention were due.
        let covers_membership =
            |point: LogId<NodeId>| membership_index.is_none_or(|m| m <= point.index);
        let (last_log_id, next_offset) = match (self.retention_point, self.durable.last_purged) {
            (Some((point, offset)), _) if covers_membership(point) => (Some(point), offset),
            (None, Some(purged)) if covers_membership(purged) => (Some(purged), self.anchor().1),
            _ => (self.applied, self.high_watermark),
        };
        let data = serde_json::to_vec(&SnapshotData { next_offset })
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        let meta = SnapshotMeta {
            last_log_id,
            last_membership: self.membership.clone(),
            snapshot_id: match last_log_id {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.leader_id.node_id, l.index),
                None => "empty".into(),
            },
        };
        self.snapshot = Some((meta.clone(), data.clone()));
        Ok((meta, data))
    }

    fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        data: &[u8],
    ) -> Result<(), SErr> {
        let snap: SnapshotData = serde_json::from_slice(data)
            .map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let keeps_log = match meta.last_log_id {
            Some(l) => self.placed(l.index)?.is_some_and(|p| p.log_id == l),
            None => true,
        };
        if !keeps_log {
            let next = meta.last_log_id.map_or(0, |l| l.index + 1);
            self.durable.last_purged = meta.last_log_id;
            self.durable.anchor = Some((next, snap.next_offset));
            self.durable.terms.clear();
            self.persist()?;
            self.log
                .reset(snap.next_offset)
                .map_err(|e| log_err(ErrorVerb::Delete, e))?;
            self.sparse = vec![(next, snap.next_offset)];
            self.producers = ProducerStateTable::default();
            self.tail.clear();
            self.recent.clear();
            self.last = None;
        }
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.high_watermark = snap.next_offset;
        self.snapshot = Some((meta.clone(), data.to_vec()));
        self.save_applied()
    }

    /// Where `retention.ms`/`retention.bytes` cut the log: the last applied
    /// entry wholly below the retention cut (a segment boundary), with the
    /// offset after it. Remembered for the next snapshot.
    fn retention_point(&mut self, now_ms: i64) -> Result<Option<(LogId<NodeId>, i64)>, SErr> {
        let Some(cut) = self
            .log
            .retention_cut(now_ms, self.high_watermark)
            .map_err(|e| log_err(ErrorVerb::Write, e))?
        else {
            return Ok(None);
        };
        let (first, first_offset) = self.anchor();
        if cut <= first_offset {
            return Ok(None);
        }
        // Count the entries below the cut from the last sparse point before it.
        let k = self.sparse.partition_point(|&(_, o)| o < cut);
        let (from_index, from_offset) = if k == 0 {
            (first, first_offset)
        } else {
            self.sparse[k - 1]
        };
        let mut below = 0;
        self.log
            .scan_headers_while(from_offset, |h| {
                if h.base_offset >= cut {
                    return false;
                }
                below += 1;
                true
            })
            .map_err(|e| log_err(ErrorVerb::Read, e))?;
        if below == 0 {
            return Ok(None);
        }
        let index = from_index + below - 1;
        if self.applied.is_none_or(|a| a.index < index) {
            return Ok(None);
        }
        let Some(p) = self.placed(index)? else {
            return Ok(None);
        };
        if p.next_offset != cut {
            tracing::warn!(dir = %self.log.dir().display(), cut, entry_end = p.next_offset, "retention cut is not at an entry boundary; skipped");
            return Ok(None);
        }
        self.retention_point = Some((p.log_id, cut));
        Ok(Some((p.log_id, cut)))
    }

    fn scan_producers(&self) -> Result<ProducerStateTable, SErr> {
        let mut table = ProducerStateTable::default();
        let now = now_ms();
        self.log
            .scan_headers(self.anchor().1, |h| {
                table.record(h, h.max_timestamp.min(now))
            })
            .map_err(|e| log_err(ErrorVerb::Read, e))?;
        Ok(table)
    }

    fn save_applied(&mut self) -> Result<(), SErr> {
        self.applied_since_save = 0;
        self.durable.applied = self.applied;
        self.durable.membership = self.membership.clone();
        self.durable.applied_end = self.high_watermark;
        self.persist()
    }
}

impl ReplicaStore {
    /// Opens the Raft view of `log`: reads the state file and walks the batch
    /// headers from the anchor to rebuild the index map.
    ///
    /// # Errors
    /// I/O; an unreadable state file (refused rather than guessed: it holds
    /// the vote).
    pub fn open(mut log: PartitionLog) -> io::Result<ReplicaStore> {
        // Large appends skip the page cache on every replica (see
        // `PartitionLog::set_direct_appends`): entries are replicated from
        // the recent-entries cache, and fetches of large batches read the
        // disk off the async workers.
        log.set_direct_appends(true);
        let state_path = log.dir().join(STATE_FILE);
        let durable = read_state(&state_path)?.unwrap_or_default();
        let mut inner = Inner {
            log,
            state_path,
            applied: durable.applied,
            membership: durable.membership.clone(),
            high_watermark: durable.applied_end,
            durable,
            sparse: Vec::new(),
            tail: VecDeque::new(),
            last: None,
            snapshot: None,
            retention_point: None,
            purged_segments: 0,
            applied_since_save: 0,
            producers: ProducerStateTable::default(),
            recent: RecentEntries::default(),
            local: None,
        };
        let (first, first_offset) = inner.anchor();
        if inner.log.log_start_offset() > first_offset {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "log starts at {} past the Raft anchor offset {first_offset}",
                    inner.log.log_start_offset()
                ),
            ));
        }
        let applied_index = inner.applied.map(|l| l.index);
        let mut index = first;
        let mut placed = Vec::new();
        let mut sparse = Vec::new();
        let mut last_term = None;
        let mut producers = ProducerStateTable::default();
        let now = now_ms();
        inner
            .log
            .scan_headers_while(first_offset, |h| {
                if index == first || index.is_multiple_of(SPARSE_EVERY) {
                    sparse.push((index, h.base_offset));
                }
                let term = u64::try_from(h.partition_leader_epoch).unwrap_or(0);
                if applied_index.is_none_or(|a| index >= a) {
                    placed.push((term, index, h.base_offset, h.last_offset() + 1));
                }
                last_term = Some(term);
                producers.record(h, h.max_timestamp.min(now));
                index += 1;
                true
            })
            .map_err(|e| io::Error::other(e.to_string()))?;
        inner.sparse = sparse;
        inner.producers = producers;
        inner.tail = placed
            .into_iter()
            .map(|(term, i, base, next)| Placed {
                log_id: inner.log_id(term, i),
                base_offset: base,
                next_offset: next,
            })
            .collect();
        inner.last = last_term.map(|t| inner.log_id(t, index - 1));
        if inner
            .applied
            .is_some_and(|a| inner.last.is_none_or(|l| l.index < a.index))
        {
            tracing::warn!(dir = %inner.log.dir().display(), "saved applied index lies past the log; replaying from the log start");
            inner.applied = None;
            inner.high_watermark = first_offset;
        }
        if inner.applied.is_none() {
            inner.high_watermark = inner.high_watermark.max(first_offset);
        }
        let tail = inner
            .last
            .or(inner.durable.last_purged)
            .map_or(0, |l| l.index + 1);
        Ok(ReplicaStore {
            inner: Arc::new(Mutex::new(inner)),
            applied: Arc::new(Notify::new()),
            tail: Arc::new(watch::Sender::new(tail)),
        })
    }

    pub fn log_store(&self) -> LogStore {
        LogStore(self.clone())
    }

    pub fn state_machine(&self) -> StateMachine {
        StateMachine(self.clone())
    }

    /// Follows the index after the log's last entry: a replication stream
    /// that sees entries past what a follower holds knows its next message
    /// carries them (and the commit index with them).
    pub fn log_tail(&self) -> watch::Receiver<u64> {
        self.tail.subscribe()
    }

    /// Whether entries `start..end` are all in the recent-entries cache.
    #[cfg(test)]
    pub fn holds_in_memory(&self, start: u64, end: u64) -> bool {
        self.inner.lock().recent.range(start, end).is_some()
    }

    /// Names the node this replica runs on, before its group starts.
    pub fn serve_as(&self, node: NodeId) {
        self.inner.lock().local = Some(node);
    }

    /// Kafka offset after the last applied (hence committed) entry.
    pub fn high_watermark(&self) -> i64 {
        self.inner.lock().high_watermark
    }

    /// Index of the last entry in the log.
    pub fn last_log_index(&self) -> Option<u64> {
        let g = self.inner.lock();
        g.last.or(g.durable.last_purged).map(|l| l.index)
    }

    /// Runs `f` on the log, for reads (Fetch never reads past
    /// [`high_watermark`](Self::high_watermark)).
    pub fn with_log<T>(&self, f: impl FnOnce(&PartitionLog) -> T) -> T {
        f(&self.inner.lock().log)
    }

    /// Checks an idempotent producer's batch against what the log holds.
    ///
    /// # Errors
    /// As [`ProducerStateTable::check`].
    pub fn check_producer(&self, h: &BatchHeader) -> crate::errors::Result<Verdict> {
        self.inner.lock().producers.check(h)
    }

    /// Completes when an entry is applied. Create it before checking.
    pub fn applied(&self) -> tokio::sync::futures::Notified<'_> {
        self.applied.notified()
    }

    /// Idempotent producers known on this replica.
    pub fn producer_count(&self) -> usize {
        self.inner.lock().producers.len()
    }

    /// Whether the log holds batches of `producer_id`.
    pub fn knows_producer(&self, producer_id: i64) -> bool {
        self.inner.lock().producers.knows(producer_id)
    }

    /// Drops producers idle for `max_idle_ms`; returns how many.
    pub fn expire_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.inner.lock().producers.expire(now_ms, max_idle_ms)
    }

    /// New topic configs (segment size, flush policy, ...) for the log.
    pub fn update_config(&self, config: skiff_log::LogConfig) {
        self.inner.lock().log.update_config(config);
    }

    /// The time-based fsync (`flush.ms`), the sync itself outside the lock
    /// so Raft appends carry on meanwhile.
    ///
    /// # Errors
    /// I/O.
    pub fn flush_if_due(&self, now: Instant) -> io::Result<bool> {
        let due = {
            let mut g = self.inner.lock();
            // The same periodic visit lets an idle partition's kept entries go.
            g.recent.expire(now);
            g.log.take_due_flush(now)
        };
        let Some(pending) = due else {
            return Ok(false);
        };
        if let Err(e) = pending.sync() {
            self.inner.lock().log.flush_failed(pending);
            return Err(e);
        }
        Ok(true)
    }

    /// The Raft index up to which retention wants the log purged (the
    /// caller snapshots there and asks openraft to purge), if any is due.
    ///
    /// # Errors
    /// I/O.
    pub fn retention_point(&self, now_ms: i64) -> io::Result<Option<u64>> {
        self.inner
            .lock()
            .retention_point(now_ms)
            .map(|p| p.map(|(log_id, _)| log_id.index))
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Segments deleted by purges since the last call.
    pub fn take_purged_segments(&self) -> u64 {
        std::mem::take(&mut self.inner.lock().purged_segments)
    }

    /// Saves the applied position (clean shutdown), so a restart replays
    /// only what came after it.
    ///
    /// # Errors
    /// I/O.
    pub fn checkpoint(&self) -> io::Result<()> {
        let mut g = self.inner.lock();
        g.log.flush().map_err(|e| io::Error::other(e.to_string()))?;
        g.save_applied()
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl RaftLogReader<PartitionRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<PartitionRaft>>, SErr> {
        let (start, end) = bounds(&range);
        self.0.inner.lock().entries(start, end, usize::MAX)
    }

    /// What replication sends in one AppendEntries: a few MiB at most, so
    /// that a message of whole ~1 MB client batches crosses in well under
    /// the heartbeat interval openraft gives it (a timed-out one is sent
    /// again whole).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<PartitionRaft>>, SErr> {
        self.0.inner.lock().entries(start, end, APPEND_BYTES)
    }
}

impl RaftLogStorage<PartitionRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, SErr> {
        let g = self.0.inner.lock();
        Ok(LogState {
            last_purged_log_id: g.durable.last_purged,
            last_log_id: g.last.or(g.durable.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let mut g = self.0.inner.lock();
        g.durable.vote = Some(*vote);
        g.persist()
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        Ok(self.0.inner.lock().durable.vote)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<PartitionRaft>,
    ) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<PartitionRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let bytes: usize = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(p) => p.batch.len(),
                _ => 0,
            })
            .sum();
        let write = {
            let inner = self.0.inner.clone();
            let tail = self.0.tail.clone();
            move || {
                let (end, page_drop) = {
                    let mut g = inner.lock();
                    for entry in entries {
                        g.append_entry(entry)?;
                    }
                    (g.last.map_or(0, |l| l.index + 1), g.follower_page_drop())
                };
                tail.send_replace(end);
                if let Some(drop) = page_drop {
                    drop.run();
                }
                Ok::<_, SErr>(())
            }
        };
        // The log writes an entry of 64 KiB or more past the page cache (see
        // `ReplicaStore::open`), and such a write waits for the device. An
        // append that large in all (whether one entry or many) runs on the
        // blocking pool, so that the async worker is not held meanwhile
        // (docs/benchmarks.md, session 13); the partition's lock still is.
        if bytes as u64 >= skiff_log::DIRECT_MIN_BYTES {
            tokio::task::spawn_blocking(write)
                .await
                .map_err(|e| log_err(ErrorVerb::Write, e))??;
        } else {
            write()?;
        }
        // Written (to the page cache, like Kafka, or past it), not synced:
        // a replica that crashes with the machine is repaired by the others
        // (the log's flush.ms / flush.messages still bound what any single
        // replica can lose).
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.0.inner.lock().truncate(log_id.index)?;
        self.0.tail.send_replace(log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        self.0.inner.lock().purge(log_id)
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<PartitionRaft>, SErr> {
        let (meta, data) = self.0.inner.lock().build_snapshot()?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<PartitionRaft> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), SErr> {
        let g = self.0.inner.lock();
        Ok((g.applied, g.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, SErr>
    where
        I: IntoIterator<Item = Entry<PartitionRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let out = {
            let mut g = self.0.inner.lock();
            let mut out = Vec::new();
            for entry in entries {
                out.push(g.apply(&entry)?);
            }
            out
        };
        self.0.applied.notify_waiters();
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let tail = {
            let mut g = self.0.inner.lock();
            g.install_snapshot(meta, snapshot.get_ref())?;
            g.last.or(g.durable.last_purged).map_or(0, |l| l.index + 1)
        };
        self.0.tail.send_replace(tail);
        self.0.applied.notify_waiters();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<PartitionRaft>>, SErr> {
        let g = self.0.inner.lock();
        Ok(g.snapshot.clone().map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
