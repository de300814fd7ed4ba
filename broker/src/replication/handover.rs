//! Moving a partition's leadership to another replica (ElectLeaders with
//! PREFERRED, and the automatic preferred-leader rebalance), which
//! openraft 0.9 cannot do by itself: it has no leadership transfer, and its
//! leader lease makes followers refuse any vote until the leader has been
//! silent for the lease (`partition.raft.election.timeout.ms` × 2).
//!
//! So the leader steps aside: it refuses produces (NOT_LEADER_OR_FOLLOWER:
//! clients retry), waits until the chosen replica holds its whole log, tells
//! each follower (RPC `HandOver`) and stops its heartbeats. The chosen
//! replica asks for votes until it wins: the old leader grants its vote at
//! once (a leader holds no lease against others' candidates, only its
//! followers do), and the other followers do not stand meanwhile, so nobody
//! else wins. A hand-over that has not happened within its window is given
//! up: the leader resumes its heartbeats and produces, the others their
//! elections. Writes to the partition pause for the hand-over, normally a
//! few round trips.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{debug, info};

use super::{NodeId, PartitionGroup};
use crate::rpc::client::PeerPool;
use crate::rpc::server::{GroupHandler, handle_raft};
use crate::rpc::{GroupId, RpcError, RpcKind, decode, encode};

/// The `HandOver` RPC of a partition group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandOver {
    /// To the leader: hand leadership to `to` (ElectLeaders on any broker).
    Request { to: NodeId },
    /// From the leader of `term` to its followers: it is stepping aside
    /// for `to` for at most `window_ms`.
    Notice {
        to: NodeId,
        term: u64,
        window_ms: u64,
    },
}

/// What a hand-over came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// `to` leads now.
    Moved,
    /// `to` leads already.
    NotNeeded,
    /// This replica does not lead the partition.
    NotLeader,
    /// `to` is not a voter of the group, or not caught up.
    NotAvailable(String),
    /// The window passed without `to` winning (or a hand-over was
    /// already under way); the leader carries on.
    TimedOut,
    /// The leader has begun (answer to a [`HandOver::Request`]: a hand-over
    /// takes longer than one RPC may).
    Started,
}

/// How long followers stay out of elections for a hand-over: the lease,
/// the chosen replica's retries, and a margin.
pub fn window(election_timeout_max_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_max_ms * 2 + 1000)
}

const RETRY: Duration = Duration::from_millis(250);
/// How long the leader, refusing writes, waits for the chosen replica to
/// hold its whole log.
const CATCH_UP: Duration = Duration::from_secs(2);

/// Serves a partition group's Raft messages and its hand-overs.
pub struct PartitionHandler {
    pub group: Arc<PartitionGroup>,
    pub pool: Arc<PeerPool>,
    pub gid: GroupId,
    pub window: Duration,
    pub recovery: Arc<Recovery>,
}

/// A replica that starts with nothing on disk (no vote, no log) may have
/// lost its disk: Raft counts on every voter remembering its log, and a
/// vote from a replica that forgot entries it acknowledged could elect the
/// one replica lacking an entry whose other copy was on the lost disk. So,
/// from the first AppendEntries that shows the partition has a history
/// (a commit index past its first entry) until it has applied that commit
/// index, the replica refuses votes and does not stand. A partition with
/// no history yet (a new one) needs no recovery, and before anything is
/// heard the replica only refuses candidates with a history: its empty log
/// would otherwise vote for one lacking what it forgot. Nothing here waits
/// for the metadata, which a replica with a lost disk is still replaying.
#[derive(Debug, Default)]
pub struct Recovery {
    state: parking_lot::Mutex<RecoveryState>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum RecoveryState {
    /// The replica kept its log, or has caught up.
    #[default]
    Done,
    /// Started empty; no leader heard yet.
    Unknown,
    /// Started empty in a partition with a history: catching up to this
    /// commit index.
    CatchingUp(u64),
}

impl Recovery {
    /// For a replica that starts with nothing on disk.
    pub fn started_empty() -> Self {
        Self {
            state: parking_lot::Mutex::new(RecoveryState::Unknown),
        }
    }

    pub fn is_recovering(&self) -> bool {
        *self.state.lock() != RecoveryState::Done
    }

    /// Whether to refuse a candidate whose last log entry has `index`.
    /// `applied` is this replica's: having applied entries without ever
    /// hearing a leader, it led the new partition itself, so it forgot
    /// nothing.
    fn refuses_vote(&self, candidate_last_index: Option<u64>, applied: Option<u64>) -> bool {
        let mut state = self.state.lock();
        match *state {
            RecoveryState::Done => false,
            RecoveryState::Unknown if applied.is_some_and(|a| a >= 1) => {
                *state = RecoveryState::Done;
                false
            }
            RecoveryState::Unknown => candidate_last_index.is_some_and(|i| i >= 1),
            RecoveryState::CatchingUp(_) => true,
        }
    }

    /// A leader's AppendEntries said it committed `leader_commit`; true
    /// when this starts a catch-up (the caller keeps the replica out of
    /// elections). The first one counts: everything this replica
    /// acknowledged before it lost its log was committed by then, and a
    /// target that moved with new writes might never be reached.
    fn heard(&self, leader_commit: Option<u64>) -> bool {
        let mut state = self.state.lock();
        if *state != RecoveryState::Unknown {
            return false;
        }
        match leader_commit {
            Some(c) if c >= 1 => {
                *state = RecoveryState::CatchingUp(c);
                true
            }
            _ => {
                *state = RecoveryState::Done;
                false
            }
        }
    }

    /// Ends the catch-up once `applied` reaches its commit index; true when
    /// it ended now.
    fn caught_up(&self, applied: Option<u64>) -> bool {
        let mut state = self.state.lock();
        match (*state, applied) {
            (RecoveryState::CatchingUp(t), Some(a)) if a >= t => {
                *state = RecoveryState::Done;
                true
            }
            _ => false,
        }
    }
}

impl GroupHandler for PartitionHandler {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let (group, pool, gid, window, recovery) = (
            self.group.clone(),
            self.pool.clone(),
            self.gid,
            self.window,
            self.recovery.clone(),
        );
        Box::pin(async move {
            if recovery.is_recovering() {
                match kind {
                    RpcKind::Vote => {
                        let req: openraft::raft::VoteRequest<NodeId> = decode(&payload)?;
                        let applied = group
                            .raft()
                            .metrics()
                            .borrow()
                            .last_applied
                            .map(|l| l.index);
                        if recovery.refuses_vote(req.last_log_id.map(|l| l.index), applied) {
                            return Err(RpcError::Handler(
                                "this replica started without its log and votes once it has caught up"
                                    .into(),
                            ));
                        }
                    }
                    RpcKind::AppendEntries => {
                        let req: openraft::raft::AppendEntriesRequest<super::PartitionRaft> =
                            decode(&payload)?;
                        if recovery.heard(req.leader_commit.map(|c| c.index)) {
                            group.raft().runtime_config().elect(false);
                            info!(group = %gid, "replica started without its log in a partition with a history; it stays out of elections until it has caught up");
                        }
                        let reply = handle_raft(group.raft(), kind, &payload).await;
                        let applied = group
                            .raft()
                            .metrics()
                            .borrow()
                            .last_applied
                            .map(|l| l.index);
                        if recovery.caught_up(applied) {
                            group.raft().runtime_config().elect(true);
                            info!(group = %gid, "replica caught up after starting without its log; it votes again");
                        }
                        return reply;
                    }
                    _ => {}
                }
            }
            if kind != RpcKind::HandOver {
                return handle_raft(group.raft(), kind, &payload).await;
            }
            let outcome = match decode::<HandOver>(&payload)? {
                HandOver::Request { to } => match check(&group, to) {
                    Err(refused) => refused,
                    Ok(_) => {
                        tokio::spawn(async move {
                            hand_over(&group, &pool, gid, to, window).await;
                        });
                        Outcome::Started
                    }
                },
                HandOver::Notice {
                    to,
                    term,
                    window_ms,
                } => {
                    follow_notice(&group, to, term, Duration::from_millis(window_ms));
                    Outcome::Moved
                }
            };
            encode(&outcome)
        })
    }
}

/// On a follower: the chosen one stands until it wins; the others stay out
/// of elections for the window.
fn follow_notice(group: &Arc<PartitionGroup>, to: NodeId, term: u64, window: Duration) {
    if group.term() != term {
        return;
    }
    let group = group.clone();
    let deadline = Instant::now() + window;
    if to == group.node_id {
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let (now_term, leader) = group.leader_view();
                if leader == Some(group.node_id) || (now_term > term && leader.is_some()) {
                    return;
                }
                // Refused while the old leader's lease lasts; each try is
                // a new term, which is harmless.
                let _ = group.raft().trigger().elect().await;
                tokio::time::sleep(RETRY).await;
            }
        });
    } else {
        group.raft().runtime_config().elect(false);
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let (now_term, leader) = group.leader_view();
                if now_term > term && leader.is_some() {
                    break;
                }
                tokio::time::sleep(RETRY).await;
            }
            group.raft().runtime_config().elect(true);
        });
    }
}

/// Whether this replica can hand leadership to `to` now: the term and the
/// voters to tell (id, RPC address), or why not.
///
/// # Errors
/// The outcome that answers the request instead.
pub fn check(group: &PartitionGroup, to: NodeId) -> Result<(u64, Vec<(NodeId, String)>), Outcome> {
    if to == group.node_id && group.is_leader() {
        return Err(Outcome::NotNeeded);
    }
    if !group.is_leader() {
        return Err(Outcome::NotLeader);
    }
    let (term, followers) = {
        let m = group.raft().metrics();
        let m = m.borrow();
        let mem = m.membership_config.membership();
        if !mem.voter_ids().any(|v| v == to) {
            return Err(Outcome::NotAvailable(format!(
                "replica {to} is not a voter of the group"
            )));
        }
        let followers: Vec<(NodeId, String)> = mem
            .nodes()
            .filter(|(id, _)| **id != group.node_id && mem.voter_ids().any(|v| v == **id))
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        (m.current_term, followers)
    };
    if !group.in_sync_ids().contains(&to) {
        return Err(Outcome::NotAvailable(format!(
            "replica {to} is not in sync"
        )));
    }
    Ok((term, followers))
}

/// On the leader: steps aside for `to` and waits until it leads or the
/// window passes.
pub async fn hand_over(
    group: &PartitionGroup,
    pool: &PeerPool,
    gid: GroupId,
    to: NodeId,
    window: Duration,
) -> Outcome {
    let (term, followers) = match check(group, to) {
        Ok(ok) => ok,
        Err(refused) => return refused,
    };
    if !group.begin_stepping_aside() {
        return Outcome::TimedOut;
    }
    // With writes refused, `to` gets the leader's whole log: a candidate
    // with a shorter log would be refused its votes.
    if !caught_up(group, to).await {
        group.end_stepping_aside();
        return Outcome::NotAvailable(format!("replica {to} did not catch up"));
    }
    let notice = HandOver::Notice {
        to,
        term,
        window_ms: u64::try_from(window.as_millis()).unwrap_or(u64::MAX),
    };
    let outcome = match encode(&notice) {
        Ok(payload) => {
            let mut told = true;
            for (id, addr) in &followers {
                let reply = pool
                    .call(
                        addr,
                        gid,
                        RpcKind::HandOver,
                        payload.clone(),
                        Some(Duration::from_secs(2)),
                    )
                    .await;
                if let Err(e) = reply
                    && *id == to
                {
                    debug!(group = %gid, to, error = %e, "hand-over notice not delivered");
                    told = false;
                }
            }
            if told {
                step_aside(group, to, term, window).await
            } else {
                Outcome::NotAvailable(format!("replica {to} did not answer"))
            }
        }
        Err(_) => Outcome::TimedOut,
    };
    group.end_stepping_aside();
    outcome
}

async fn caught_up(group: &PartitionGroup, to: NodeId) -> bool {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let done = {
            let m = group.raft().metrics();
            let m = m.borrow();
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&to).cloned().flatten());
            matched.map(|l| l.index) == m.last_log_index
        };
        if done {
            return true;
        }
        if Instant::now() >= deadline || !group.is_leader() {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn step_aside(group: &PartitionGroup, to: NodeId, term: u64, window: Duration) -> Outcome {
    let raft = group.raft();
    raft.runtime_config().heartbeat(false);
    let deadline = Instant::now() + window;
    let outcome = loop {
        let (now_term, leader) = group.leader_view();
        // A newer term is the end of this leader's reign, whoever won it
        // (normally `to`: nobody else stands).
        if now_term > term && (leader == Some(to) || !group.is_leader()) {
            break Outcome::Moved;
        }
        if Instant::now() >= deadline {
            break Outcome::TimedOut;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    raft.runtime_config().heartbeat(true);
    info!(to, ?outcome, "partition leadership hand-over");
    outcome
}

/// Asks the leader (at `leader_addr`) to hand `gid` over to `to`: the
/// answer says whether it began ([`Outcome::Started`]) or why not.
///
/// # Errors
/// The leader unreachable, or an older broker without hand-overs.
pub async fn request(
    pool: &PeerPool,
    leader_addr: &str,
    gid: GroupId,
    to: NodeId,
) -> Result<Outcome, RpcError> {
    let payload = encode(&HandOver::Request { to })?;
    let reply = pool
        .call(leader_addr, gid, RpcKind::HandOver, payload, None)
        .await?;
    decode(&reply)
}

#[cfg(test)]
mod tests {
    use super::Recovery;

    #[test]
    fn a_replica_started_empty_in_a_partition_with_a_history_votes_once_caught_up() {
        let r = Recovery::started_empty();
        // Before any leader is heard: a first election (no history) is
        // fine, a candidate with a history is refused.
        assert!(!r.refuses_vote(Some(0), None));
        assert!(!r.refuses_vote(None, None));
        assert!(r.refuses_vote(Some(7), None));
        assert!(r.heard(Some(40)));
        assert!(r.refuses_vote(Some(0), Some(30)));
        // Later commits do not move the target.
        assert!(!r.heard(Some(90)));
        assert!(!r.caught_up(Some(39)));
        assert!(r.is_recovering());
        assert!(r.caught_up(Some(40)));
        assert!(!r.is_recovering());
        assert!(!r.refuses_vote(Some(7), Some(40)));
    }

    #[test]
    fn a_replica_that_led_its_new_partition_forgot_nothing() {
        let r = Recovery::started_empty();
        assert!(!r.refuses_vote(Some(9), Some(3)));
        assert!(!r.is_recovering());
    }

    #[test]
    fn a_new_partition_or_a_kept_log_needs_no_recovery() {
        let r = Recovery::started_empty();
        assert!(!r.heard(Some(0)));
        assert!(!r.is_recovering());
        let r = Recovery::started_empty();
        assert!(!r.heard(None));
        assert!(!r.is_recovering());
        assert!(!Recovery::default().is_recovering());
    }
}
