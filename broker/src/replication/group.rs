//! One partition replica's Raft group as the data path sees it: produce on
//! the leader (idempotence checked before proposing, acknowledged on commit),
//! reads bounded by the commit index, Kafka errors for everything else.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use openraft::error::ClientWriteError;
use skiff_log::batch::{self, BatchHeader};
use skiff_log::{AppendInfo, ReadSlice, TimestampMode};

use super::{NodeId, PartitionRaftHandle, Proposal, ReplicaStore};
use crate::errors::{BrokerError, Result};
use crate::partition::{Appended, PartitionRead};
use crate::producer_state::{self, Verdict};

/// How stale the last quorum acknowledgement may be before the leader
/// counts its followers as unreachable for `min.insync.replicas`.
pub const QUORUM_ACK_STALE: Duration = Duration::from_millis(1500);
/// A follower this many entries behind the leader is out of sync.
pub const IN_SYNC_LAG: u64 = 1000;

pub struct PartitionGroup {
    pub node_id: NodeId,
    raft: PartitionRaftHandle,
    store: ReplicaStore,
    /// Serializes idempotent produces from check to commit, so a retry
    /// cannot pass the duplicate check while its original is in flight.
    idempotent: Arc<tokio::sync::Mutex<()>>,
    commit_timeout: Duration,
    /// Whether a peer answered lately (see [`Self::with_liveness`]).
    liveness: Option<Liveness>,
    /// Handing leadership over (`handover`): produces are refused.
    stepping_aside: std::sync::atomic::AtomicBool,
}

/// Batches handed to Raft by [`PartitionGroup::submit`], awaiting
/// [`PartitionGroup::finish`].
#[must_use = "finish() answers the producer"]
pub struct Submitted {
    state: SubmitState,
    log_append_time: Option<i64>,
    record_count: u64,
    bytes: u64,
    /// The partition's idempotence lock, for an idempotent producer's batch.
    _serial: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// What `client_write_ff` hands back with the default (oneshot) responder.
type CommitReceiver = <<super::PartitionRaft as openraft::RaftTypeConfig>::Responder as openraft::raft::responder::Responder<super::PartitionRaft>>::Receiver;

enum SubmitState {
    /// A retry (`BatchHeader`) of a batch already in the log.
    Duplicate(crate::producer_state::BatchMeta, BatchHeader),
    /// One commit receiver per batch, in order.
    Proposed(Vec<CommitReceiver>),
}

/// Tells whether a replica (by node id and RPC address) answered lately.
pub type Liveness = Arc<dyn Fn(NodeId, &str) -> bool + Send + Sync>;

impl PartitionGroup {
    pub fn new(
        node_id: NodeId,
        raft: PartitionRaftHandle,
        store: ReplicaStore,
        commit_timeout: Duration,
    ) -> Self {
        Self {
            node_id,
            raft,
            store,
            idempotent: Arc::new(tokio::sync::Mutex::new(())),
            commit_timeout,
            liveness: None,
            stepping_aside: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Starts stepping aside for a hand-over; false when one is under way.
    pub fn begin_stepping_aside(&self) -> bool {
        !self
            .stepping_aside
            .swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    pub fn end_stepping_aside(&self) {
        self.stepping_aside
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_stepping_aside(&self) -> bool {
        self.stepping_aside
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Counts a follower in sync only while `alive` says it answers: an
    /// idle partition's dead follower keeps the matched index it had, so
    /// the lag alone would keep it in sync forever.
    #[must_use]
    pub fn with_liveness(mut self, alive: Liveness) -> Self {
        self.liveness = Some(alive);
        self
    }

    /// The current term and the leader this replica knows of in it.
    pub fn leader_view(&self) -> (u64, Option<NodeId>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        (m.current_term, m.current_leader)
    }

    /// The current Raft term (Kafka's leader epoch).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow().current_term
    }

    pub fn raft(&self) -> &PartitionRaftHandle {
        &self.raft
    }

    pub fn store(&self) -> &ReplicaStore {
        &self.store
    }

    pub fn is_leader(&self) -> bool {
        self.leads(&self.raft.metrics().borrow())
    }

    /// [`Self::is_leader`] from metrics the caller already holds.
    pub fn leads(&self, m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool {
        m.state.is_leader() && m.current_leader == Some(self.node_id)
    }

    /// Replicas that look in sync from the leader: itself, plus followers
    /// within [`IN_SYNC_LAG`] entries while a quorum keeps acknowledging
    /// (and, with a liveness check, that answered lately). Empty off the
    /// leader.
    pub fn in_sync_ids(&self) -> Vec<NodeId> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if !m.state.is_leader() {
            return Vec::new();
        }
        let mut out = vec![self.node_id];
        let fresh = m
            .millis_since_quorum_ack
            .is_some_and(|ms| ms <= QUORUM_ACK_STALE.as_millis() as u64);
        if !fresh {
            // No quorum has answered lately: only the leader is known alive.
            return out;
        }
        let last = m.last_log_index.unwrap_or(0);
        let membership = m.membership_config.membership();
        if let Some(r) = m.replication.as_ref() {
            for (id, matched) in r.iter() {
                if *id == self.node_id
                    || !matched.is_some_and(|l| l.index.saturating_add(IN_SYNC_LAG) >= last)
                {
                    continue;
                }
                let alive = match (&self.liveness, membership.get_node(id)) {
                    (Some(alive), Some(node)) => alive(*id, &node.addr),
                    _ => true,
                };
                if alive {
                    out.push(*id);
                }
            }
        }
        out
    }

    /// How many replicas [`Self::in_sync_ids`] counts.
    pub fn in_sync_replicas(&self) -> usize {
        self.in_sync_ids().len()
    }

    /// Whether this replica leads and has applied its own term's first
    /// entry (see [`Self::await_ready`]), so its log holds every committed
    /// entry as committed.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state.is_leader() && m.current_leader == Some(self.node_id) && applied_own_term(&m)
    }

    /// A new leader serves produces only once it applied its own term's
    /// first entry, hence every entry before it: its producer table then
    /// holds every committed batch, so a producer's retry of a batch the
    /// previous leader wrote is recognised as a duplicate.
    async fn await_ready(&self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if !(m.state.is_leader() && m.current_leader == Some(self.node_id)) {
                    return Err(BrokerError::NotLeaderOrFollower);
                }
                if applied_own_term(&m) {
                    return Ok(());
                }
            }
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(BrokerError::NotLeaderOrFollower);
            }
        }
    }

    /// Waits until the high watermark passes `last_offset`, while this
    /// replica stays the leader.
    async fn await_committed(&self, last_offset: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.commit_timeout;
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if !(m.state.is_leader() && m.current_leader == Some(self.node_id)) {
                    return Err(BrokerError::NotLeaderOrFollower);
                }
            }
            if self.store.high_watermark() > last_offset {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(BrokerError::NotLeaderOrFollower),
                Err(_) => {
                    return Err(BrokerError::RequestTimedOut(format!(
                        "offset {last_offset} not committed within {:?}",
                        self.commit_timeout
                    )));
                }
            }
        }
    }

    /// Waits briefly for `min_insync` replicas to be in sync: a leader
    /// elected a moment ago has no follower acknowledgements yet.
    async fn await_in_sync(&self, min_insync: usize) -> Result<()> {
        let deadline = tokio::time::Instant::now() + QUORUM_ACK_STALE;
        let mut metrics = self.raft.metrics();
        loop {
            let isr = self.in_sync_replicas();
            if isr >= min_insync {
                return Ok(());
            }
            let changed = tokio::time::timeout_at(deadline, metrics.changed()).await;
            if !matches!(changed, Ok(Ok(()))) {
                return Err(BrokerError::NotEnoughReplicas(format!(
                    "{isr} in-sync replicas, min.insync.replicas is {min_insync}"
                )));
            }
        }
    }

    /// Produces `records` (one or more v2 batches) through Raft. Each batch
    /// becomes one entry; the call returns once all are committed (for
    /// `acks=1` too: see the README). An idempotent producer's retry of a
    /// committed batch gets its original offsets back without a proposal.
    ///
    /// # Errors
    /// As [`Self::submit`] and [`Self::finish`].
    pub async fn produce(
        &self,
        records: &mut [u8],
        ts: TimestampMode,
        acks: i16,
        min_insync: usize,
    ) -> Result<Appended> {
        let mut records = BytesMut::from(&records[..]);
        let submitted = self
            .submit(&mut records, ts, acks, min_insync, || Ok(()))
            .await?;
        self.finish(submitted).await
    }

    /// The first half of [`Self::produce`]: checks the batches and hands
    /// them to Raft, in order, without waiting for their commit. Once this
    /// returns, a later `submit` on this partition is ordered after these
    /// batches, which is what lets a connection pipeline its produce
    /// requests. An idempotent producer's batches hold the partition's
    /// idempotence lock until [`Self::finish`], so a retry cannot pass the
    /// duplicate check while its original is in flight.
    ///
    /// An idempotent producer's batch is written only if `may_follow`,
    /// asked once the leader is ready to write it, says so (see
    /// [`crate::refused_batches`]).
    ///
    /// The batches are taken out of `records` (left empty) once proposed;
    /// a lone batch becomes its entry without a copy.
    ///
    /// # Errors
    /// `NotLeaderOrFollower` off the leader; `NotEnoughReplicas` when
    /// `acks=all` and fewer than `min_insync` replicas are in sync; the
    /// producer checks' and validation errors; `may_follow`'s.
    pub async fn submit(
        &self,
        records: &mut BytesMut,
        ts: TimestampMode,
        acks: i16,
        min_insync: usize,
        may_follow: impl FnOnce() -> Result<()>,
    ) -> Result<Submitted> {
        // Stepping aside, a leader takes no new write: each one would keep
        // the followers' lease alive.
        if !self.is_leader() || self.is_stepping_aside() {
            return Err(BrokerError::NotLeaderOrFollower);
        }
        let producer = producer_state::producer_batch(records)?;
        let batches = batch::validate_all(records)?;
        self.await_ready().await?;
        if acks == -1 {
            self.await_in_sync(min_insync).await?;
        }
        let serial = match producer {
            Some(_) => Some(Arc::clone(&self.idempotent).lock_owned().await),
            None => None,
        };
        let log_append_time = match ts {
            TimestampMode::LogAppendTime(now) => Some(now),
            TimestampMode::CreateTime => None,
        };
        if producer.is_some() {
            may_follow()?;
        }
        if let Some(h) = &producer
            && let Verdict::Duplicate(dup) = self.store.check_producer(h)?
        {
            return Ok(Submitted {
                state: SubmitState::Duplicate(dup, *h),
                log_append_time: log_append_time.map(|_| dup.timestamp),
                record_count: 0,
                bytes: 0,
                _serial: serial,
            });
        }
        let mut proposed = Vec::with_capacity(batches.len());
        let mut record_count = 0u64;
        let size = records.len() as u64;
        // A lone batch (what librdkafka sends a partition) takes the buffer
        // itself: its entry's alone, the log rewrites it in place. Several
        // are copied apart, one each, so that no entry shares (and keeps
        // alive in the recent-entries cache) the others' bytes.
        let mut rest = std::mem::take(records);
        let lone = batches.len() == 1;
        for (_, header) in &batches {
            let mut raw = if lone {
                std::mem::take(&mut rest)
            } else {
                BytesMut::from(&rest.split_to(header.size())[..])
            };
            if let Some(now) = log_append_time {
                // Stamped once, by the leader, so every replica stores the
                // same bytes.
                batch::set_log_append_time(&mut raw, now);
            }
            record_count += u64::from(header.records_count.unsigned_abs());
            let rx = self
                .raft
                .client_write_ff(Proposal {
                    batch: raw.freeze(),
                    // validate_all above.
                    checked: true,
                })
                .await
                .map_err(|e| BrokerError::Storage(format!("replication failed: {e}")))?;
            proposed.push(rx);
        }
        Ok(Submitted {
            state: SubmitState::Proposed(proposed),
            log_append_time,
            record_count,
            bytes: size,
            _serial: serial,
        })
    }

    /// The second half of [`Self::produce`]: waits for the submitted
    /// batches to commit (a duplicate: for its original to commit).
    ///
    /// # Errors
    /// `NotLeaderOrFollower` when leadership is lost meanwhile;
    /// `RequestTimedOut` when the commit does not come within the commit
    /// timeout.
    pub async fn finish(&self, submitted: Submitted) -> Result<Appended> {
        let Submitted {
            state,
            log_append_time,
            record_count,
            bytes,
            _serial,
        } = submitted;
        let (base_offset, last_offset, duplicate) = match state {
            SubmitState::Duplicate(dup, retry) => {
                // The original may still await its commit (its first
                // attempt timed out): answer only once it is committed.
                self.await_committed(dup.last_offset).await?;
                if !self.still_holds(&retry, &dup) {
                    return Err(BrokerError::NotLeaderOrFollower);
                }
                (dup.base_offset, dup.last_offset, true)
            }
            SubmitState::Proposed(proposed) => {
                let deadline = tokio::time::Instant::now() + self.commit_timeout;
                let mut first = None;
                let mut last = None;
                for rx in proposed {
                    let applied = match tokio::time::timeout_at(deadline, rx).await {
                        Ok(Ok(Ok(resp))) => resp.data,
                        Ok(Ok(Err(ClientWriteError::ForwardToLeader(_)))) => {
                            return Err(BrokerError::NotLeaderOrFollower);
                        }
                        Ok(Ok(Err(e))) => {
                            return Err(BrokerError::Storage(format!("replication failed: {e}")));
                        }
                        // The group shut down with the entry in flight.
                        Ok(Err(_)) => return Err(BrokerError::NotLeaderOrFollower),
                        Err(_) => {
                            return Err(BrokerError::RequestTimedOut(format!(
                                "not committed within {:?}",
                                self.commit_timeout
                            )));
                        }
                    };
                    first.get_or_insert(applied.base_offset);
                    last = Some(applied.last_offset);
                }
                let (Some(first), Some(last)) = (first, last) else {
                    return Err(BrokerError::CorruptMessage("no record batches".into()));
                };
                (first, last, false)
            }
        };
        Ok(Appended {
            info: AppendInfo {
                base_offset,
                last_offset,
                log_append_time,
                log_start_offset: self.store.with_log(|l| l.log_start_offset()),
                record_count,
                bytes,
            },
            duplicate,
        })
    }

    /// Whether the committed log holds `dup`, the stored copy of `retry`,
    /// where it was when the retry came. The high watermark passing its
    /// offsets does not tell: a leader deposed meanwhile has its uncommitted
    /// tail cut and the next leader's batches committed at those offsets,
    /// and its metrics may show it leading a moment longer. Read from the
    /// log, not the producer table, which may have forgotten the producer
    /// since (expiry) while the batch is there.
    pub(super) fn still_holds(&self, retry: &BatchHeader, dup: &producer_state::BatchMeta) -> bool {
        matches!(
            self.committed_header(dup.base_offset),
            Ok(Some(h)) if h.base_offset == dup.base_offset
                && h.last_offset() == dup.last_offset
                && h.producer_id == retry.producer_id
                && h.producer_epoch == retry.producer_epoch
                && h.base_sequence == retry.base_sequence
        )
    }

    /// Plans a read of committed batches only: never past the high
    /// watermark (the commit index), so an uncommitted tail is never seen.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[log start, high watermark]`; I/O.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<PartitionRead> {
        let high_watermark = self.store.high_watermark();
        self.store.with_log(|log| {
            let log_start_offset = log.log_start_offset();
            if offset > high_watermark || offset < log_start_offset {
                return Err(BrokerError::OffsetOutOfRange {
                    offset,
                    start: log_start_offset,
                    end: high_watermark,
                });
            }
            let slice: ReadSlice = log.read(offset, max_bytes, high_watermark, min_one)?;
            Ok(PartitionRead {
                slice,
                high_watermark,
                log_start_offset,
            })
        })
    }

    /// The header of the first committed batch at or after `offset`.
    pub fn committed_header(&self, offset: i64) -> Result<Option<BatchHeader>> {
        let hw = self.store.high_watermark();
        let mut found = None;
        self.store.with_log(|log| {
            log.scan_headers_while(offset, |h| {
                if h.base_offset < hw {
                    found = Some(*h);
                }
                false
            })
        })?;
        Ok(found)
    }
}

fn applied_own_term(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> bool {
    m.last_applied
        .is_some_and(|l| l.leader_id.term == m.current_term)
}
