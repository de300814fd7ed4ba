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
use crate::rpc::recovery::Recovery;
use crate::rpc::server::GroupHandler;
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
    /// Holds back votes after a lost disk.
    pub recovery: Arc<Recovery>,
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
            if kind != RpcKind::HandOver {
                return recovery
                    .handle_raft(group.raft(), gid, kind, &payload)
                    .await;
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
