//! Carrying out a partition reassignment (AlterPartitionReassignments) as
//! Raft membership changes, on the partition's leader:
//!
//! 1. the replicas being added join the group as learners (their brokers
//!    started an empty replica when the metadata named them) and catch up
//!    from the leader's log, through the reassignment throttle;
//! 2. once each trails the leader by at most [`CAUGHT_UP_ENTRIES`], one
//!    membership change (openraft's joint consensus: old and new voters
//!    must both agree while it is under way) makes the target the voters,
//!    and the replicas leaving drop out of the group;
//! 3. the leader records the end in the metadata; every broker then follows
//!    it, and a broker no longer holding the partition deletes its data.
//!
//! Every step reads the group's membership first, so a new leader (or this
//! one after an error) resumes wherever the last one stopped. A leader that
//! is itself removed steps down once the change commits; one of the new
//! voters is elected and records the end.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};
use tracing::info;
use uuid::Uuid;

use super::{NodeId, PartitionGroup};
use crate::cluster::meta_state::MetaCommand;
use crate::cluster::metadata_group::MetadataGroup;
use crate::rpc::GroupId;
use crate::rpc::throttle::CatchUpThrottle;

/// How far a new replica may trail the leader when it becomes a voter: the
/// joint configuration then commits as soon as it has caught up this much.
const CAUGHT_UP_ENTRIES: u64 = 8;
const POLL: Duration = Duration::from_millis(200);

/// One reassignment a leader carries out.
#[derive(Debug, Clone)]
pub struct Move {
    pub group: GroupId,
    pub topic: String,
    pub topic_id: Uuid,
    pub partition: i32,
    pub target: Vec<i32>,
}

/// Why a drive ended without recording the end.
#[derive(Debug, PartialEq, Eq)]
pub enum Stopped {
    /// This replica no longer leads: the new leader takes over.
    NotLeader,
    /// The reassignment was cancelled or replaced: the next drive follows
    /// the new target.
    Superseded,
}

/// Converges `group`'s voters to `mv.target` and records the end.
///
/// # Errors
/// Raft refusing a membership change, the metadata write failing: the host
/// retries from where the group is.
pub async fn drive(
    meta: &MetadataGroup,
    group: &PartitionGroup,
    throttle: &CatchUpThrottle,
    mv: &Move,
) -> anyhow::Result<Result<(), Stopped>> {
    let result = converge(meta, group, throttle, mv).await;
    throttle.release(mv.group);
    result
}

fn membership(group: &PartitionGroup) -> (BTreeSet<NodeId>, BTreeSet<NodeId>, bool) {
    let m = group.raft().metrics();
    let m = m.borrow();
    let mem = m.membership_config.membership();
    (
        mem.voter_ids().collect(),
        mem.learner_ids().collect(),
        mem.get_joint_config().len() > 1,
    )
}

/// Whether the metadata still asks for this reassignment.
fn still_wanted(meta: &MetadataGroup, mv: &Move) -> bool {
    meta.state()
        .reassignment(mv.topic_id, mv.partition)
        .is_some_and(|r| r.target == mv.target)
}

async fn converge(
    meta: &MetadataGroup,
    group: &PartitionGroup,
    throttle: &CatchUpThrottle,
    mv: &Move,
) -> anyhow::Result<Result<(), Stopped>> {
    let raft = group.raft();
    let target: BTreeSet<NodeId> = mv
        .target
        .iter()
        .filter_map(|&r| NodeId::try_from(r).ok())
        .collect();
    loop {
        if !group.is_leader() {
            return Ok(Err(Stopped::NotLeader));
        }
        if !still_wanted(meta, mv) {
            return Ok(Err(Stopped::Superseded));
        }
        let (voters, learners, joint) = membership(group);
        if voters == target && !joint {
            if !learners.is_empty() {
                // Learners a cancelled move had added.
                raft.change_membership(ChangeMembers::RemoveNodes(learners), false)
                    .await?;
                continue;
            }
            meta.write(MetaCommand::CompleteReassignment {
                topic_id: mv.topic_id,
                partition: mv.partition,
                target: mv.target.clone(),
            })
            .await?;
            info!(topic = %mv.topic, partition = mv.partition, replicas = ?mv.target, "reassignment complete");
            return Ok(Ok(()));
        }
        let adding: BTreeSet<NodeId> = target.difference(&voters).copied().collect();
        let nodes: Vec<(NodeId, BasicNode)> = {
            let state = meta.state();
            adding
                .iter()
                .filter(|id| !learners.contains(id))
                .map(|&id| {
                    i32::try_from(id)
                        .ok()
                        .and_then(|i| state.brokers.get(&i))
                        .map(|b| (id, BasicNode::new(&b.rpc_addr)))
                        .ok_or_else(|| anyhow::anyhow!("broker {id} is not registered"))
                })
                .collect::<anyhow::Result<_>>()?
        };
        throttle.throttle(mv.group, adding.iter().copied());
        for (id, node) in nodes {
            info!(topic = %mv.topic, partition = mv.partition, replica = id, "adding a replica as a learner");
            raft.add_learner(id, node, false).await?;
        }
        if let Err(stopped) = caught_up(meta, group, mv, &adding).await {
            return Ok(Err(stopped));
        }
        throttle.release(mv.group);
        info!(topic = %mv.topic, partition = mv.partition, voters = ?target, "new replicas caught up; changing the voters");
        raft.change_membership(target.clone(), false).await?;
    }
}

/// Waits until every replica in `adding` trails the leader by at most
/// [`CAUGHT_UP_ENTRIES`]. No deadline: a new replica whose broker is down
/// keeps the reassignment pending, as in Kafka, until it is back or the
/// reassignment is cancelled.
async fn caught_up(
    meta: &MetadataGroup,
    group: &PartitionGroup,
    mv: &Move,
    adding: &BTreeSet<NodeId>,
) -> Result<(), Stopped> {
    loop {
        if !group.is_leader() {
            return Err(Stopped::NotLeader);
        }
        if !still_wanted(meta, mv) {
            return Err(Stopped::Superseded);
        }
        let done = {
            let m = group.raft().metrics();
            let m = m.borrow();
            let last = m.last_log_index.unwrap_or(0);
            m.replication.as_ref().is_some_and(|r| {
                adding.iter().all(|id| {
                    r.get(id)
                        .and_then(|l| l.as_ref())
                        .is_some_and(|l| l.index + CAUGHT_UP_ENTRIES >= last)
                })
            })
        };
        if done {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}
