//! Voting after a lost disk. Raft counts on every voter remembering its
//! log: a replica whose disk was lost (wiped, replaced) and that votes at
//! once can elect the one replica lacking an entry whose other copy was on
//! the lost disk, and that committed (acknowledged) entry is gone. openraft
//! does not guard against it (its FAQ: "wiping out a node ... is still
//! possible to cause data loss"), so every group's RPC handler does.
//!
//! A replica that starts with nothing on disk (no vote, no log) may have
//! lost its disk. From the first AppendEntries that shows the group has a
//! history (a commit index past its first entry) until it has applied that
//! commit index, the replica refuses votes and does not stand. Before any
//! leader is heard it refuses only candidates with a history: a new group's
//! first election (logs holding only the initial membership, index 0) goes
//! ahead. A replica that applied entries without hearing a leader led the
//! new group itself, so it forgot nothing. Nothing here waits for the
//! metadata, which a replica with a lost disk is still replaying.
//!
//! The price: while it catches up, the group cannot elect a leader without
//! it if another replica is down too; that is the case where electing one
//! could lose a committed entry.

use openraft::{Raft, RaftTypeConfig};
use parking_lot::Mutex;
use tracing::info;

use super::server::handle_raft;
use super::{GroupId, RpcError, RpcKind, decode};

#[derive(Debug, Default)]
pub struct Recovery {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The replica kept its log, or has caught up.
    #[default]
    Done,
    /// Started empty; no leader heard yet.
    Unknown,
    /// Started empty in a group with a history: catching up to this commit
    /// index.
    CatchingUp(u64),
}

impl Recovery {
    /// For a replica that found `initialized` state (a vote or a log) on
    /// disk at start, or nothing.
    pub fn new(initialized: bool) -> Self {
        let state = if initialized {
            State::Done
        } else {
            State::Unknown
        };
        Self {
            state: Mutex::new(state),
        }
    }

    pub fn is_recovering(&self) -> bool {
        *self.state.lock() != State::Done
    }

    /// Answers a Raft message of `group` (named in logs), holding back the
    /// votes and candidacy of a replica that is recovering.
    ///
    /// # Errors
    /// A refused vote, or as [`handle_raft`].
    pub async fn handle_raft<C: RaftTypeConfig>(
        &self,
        raft: &Raft<C>,
        group: GroupId,
        kind: RpcKind,
        payload: &bytes::Bytes,
    ) -> Result<Vec<u8>, RpcError> {
        if !self.is_recovering() {
            return handle_raft(raft, kind, payload).await;
        }
        let applied = || {
            raft.metrics()
                .borrow()
                .last_applied
                .as_ref()
                .map(|l| l.index)
        };
        match kind {
            RpcKind::Vote => {
                let req: openraft::raft::VoteRequest<C::NodeId> = decode(payload)?;
                if self.refuses_vote(req.last_log_id.map(|l| l.index), applied()) {
                    return Err(RpcError::Handler(
                        "this replica started without its log and votes once it has caught up"
                            .into(),
                    ));
                }
                handle_raft(raft, kind, payload).await
            }
            RpcKind::AppendEntries => {
                let req: openraft::raft::AppendEntriesRequest<C> = decode(payload)?;
                if self.heard(req.leader_commit.map(|c| c.index)) {
                    raft.runtime_config().elect(false);
                    info!(%group, "replica started without its log in a group with a history; it stays out of elections until it has caught up");
                }
                let reply = handle_raft(raft, kind, payload).await;
                if self.caught_up(applied()) {
                    raft.runtime_config().elect(true);
                    info!(%group, "replica caught up after starting without its log; it votes again");
                }
                reply
            }
            _ => handle_raft(raft, kind, payload).await,
        }
    }

    /// Whether to refuse a candidate whose last log entry has `index`,
    /// given this replica's last `applied` index.
    fn refuses_vote(&self, candidate_last_index: Option<u64>, applied: Option<u64>) -> bool {
        let mut state = self.state.lock();
        match *state {
            State::Done => false,
            State::Unknown if applied.is_some_and(|a| a >= 1) => {
                *state = State::Done;
                false
            }
            State::Unknown => candidate_last_index.is_some_and(|i| i >= 1),
            State::CatchingUp(_) => true,
        }
    }

    /// A leader's AppendEntries said it committed `leader_commit`; true
    /// when this starts a catch-up. The first one counts: everything this
    /// replica acknowledged before it lost its log was committed by then,
    /// and a target that moved with new writes might never be reached.
    fn heard(&self, leader_commit: Option<u64>) -> bool {
        let mut state = self.state.lock();
        if *state != State::Unknown {
            return false;
        }
        match leader_commit {
            Some(c) if c >= 1 => {
                *state = State::CatchingUp(c);
                true
            }
            _ => {
                *state = State::Done;
                false
            }
        }
    }

    /// Ends the catch-up once `applied` reaches its commit index; true when
    /// it ended now.
    fn caught_up(&self, applied: Option<u64>) -> bool {
        let mut state = self.state.lock();
        match (*state, applied) {
            (State::CatchingUp(t), Some(a)) if a >= t => {
                *state = State::Done;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Recovery;

    #[test]
    fn a_replica_started_empty_in_a_group_with_a_history_votes_once_caught_up() {
        let r = Recovery::new(false);
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
    fn a_replica_that_led_its_new_group_forgot_nothing() {
        let r = Recovery::new(false);
        assert!(!r.refuses_vote(Some(9), Some(3)));
        assert!(!r.is_recovering());
    }

    #[test]
    fn a_new_group_or_a_kept_log_needs_no_recovery() {
        let r = Recovery::new(false);
        assert!(!r.heard(Some(0)));
        assert!(!r.is_recovering());
        let r = Recovery::new(false);
        assert!(!r.heard(None));
        assert!(!r.is_recovering());
        assert!(!Recovery::new(true).is_recovering());
    }
}
