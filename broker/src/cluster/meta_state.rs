//! The replicated metadata: what every broker's metadata Raft replica holds,
//! and the commands that change it. [`MetaState::apply`] is deterministic
//! (no clock, no randomness, no I/O), so every replica that applies the same
//! log reaches the same state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::meta_store::TopicRecord;
use crate::acl::AclBinding;
use crate::auth::scram::ScramCredential;
use crate::quota::{QuotaEntity, QuotaValues};

/// A Kafka endpoint a broker advertises.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub listener: String,
    pub host: String,
    pub port: u16,
    pub security_protocol: String,
}

/// A broker as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub node_id: i32,
    pub rpc_addr: String,
    pub rack: Option<String>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicRecord>,
    /// Dynamic broker configs by scope: a broker id, or `default`.
    pub broker_configs: BTreeMap<String, BTreeMap<String, String>>,
    pub producer_id_block_end: i64,
    /// SCRAM credentials by user, then mechanism name.
    pub scram: BTreeMap<String, BTreeMap<String, ScramCredential>>,
    #[serde(default)]
    pub acls: BTreeSet<AclBinding>,
    /// Client and tenant quotas; an entity without values is absent.
    #[serde(default)]
    pub quotas: BTreeMap<QuotaEntity, QuotaValues>,
    /// Each replicated partition's leader as its Raft group last reported
    /// it, by topic id then partition (KRaft's partition records): lets
    /// every broker route clients, including those not hosting a replica.
    #[serde(default)]
    pub partition_leaders: BTreeMap<Uuid, BTreeMap<i32, PartitionLeader>>,
    /// Reassignments under way, by topic id then partition. Not in the
    /// encoding of this struct: stored after it (see [`StateExtensions`]),
    /// so states written before reassignments existed still decode.
    #[serde(skip)]
    pub reassignments: BTreeMap<Uuid, BTreeMap<i32, Reassignment>>,
    /// Fenced brokers and why (stored after [`StateExtensions`], see
    /// [`FencingExtension`]).
    #[serde(skip)]
    pub fenced: BTreeMap<i32, Fence>,
}

/// Why a registered broker is fenced (KRaft's fenced brokers): clients
/// are not told about it, it leads nothing in Metadata, and new replicas
/// are not placed on it, so clients do not wait on a broker that is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fence {
    /// The metadata leader has heard nothing from it for the session
    /// timeout; lifted when it answers again.
    Unresponsive,
    /// It is stopping (controlled shutdown); lifted when it registers
    /// again at its next start.
    ShuttingDown,
}

/// The parts of [`MetaState`] added after its encoding was first fixed: a
/// stored state is the state's encoding followed by this one's (absent in
/// states written before), so older and newer states both decode.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateExtensions {
    pub reassignments: BTreeMap<Uuid, BTreeMap<i32, Reassignment>>,
}

/// The part of [`MetaState`] added after [`StateExtensions`]: stored after
/// it, absent in states written before.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FencingExtension {
    pub fenced: BTreeMap<i32, Fence>,
}

impl MetaState {
    pub fn extensions(&self) -> StateExtensions {
        StateExtensions {
            reassignments: self.reassignments.clone(),
        }
    }

    pub fn set_extensions(&mut self, ext: StateExtensions) {
        self.reassignments = ext.reassignments;
    }

    pub fn fencing(&self) -> FencingExtension {
        FencingExtension {
            fenced: self.fenced.clone(),
        }
    }

    pub fn set_fencing(&mut self, ext: FencingExtension) {
        self.fenced = ext.fenced;
    }

    pub fn is_fenced(&self, node_id: i32) -> bool {
        self.fenced.contains_key(&node_id)
    }

    /// The registered brokers that are not fenced.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !self.is_fenced(b.node_id))
    }

    /// The reassignment of a partition under way, if any.
    pub fn reassignment(&self, topic_id: Uuid, partition: i32) -> Option<&Reassignment> {
        self.reassignments.get(&topic_id)?.get(&partition)
    }
}

/// A partition reassignment under way (Kafka's adding and removing
/// replicas). While it runs, every replica in `original` or `target` holds
/// the partition; the partition's Raft leader converges the group's voters
/// to `target`, then records the end (`MetaCommand::CompleteReassignment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    /// The replicas before it started: what a cancellation returns to.
    pub original: Vec<i32>,
    /// The replicas it converges to.
    pub target: Vec<i32>,
    /// Replicas a cancelled reassignment had added: they hold the partition
    /// until the group is back to `original`, since they may be voters.
    #[serde(default)]
    pub abandoned: Vec<i32>,
}

impl Reassignment {
    pub fn adding(&self) -> Vec<i32> {
        self.target
            .iter()
            .filter(|r| !self.original.contains(r))
            .copied()
            .collect()
    }

    pub fn removing(&self) -> Vec<i32> {
        let mut out: Vec<i32> = Vec::new();
        for r in self.original.iter().chain(&self.abandoned) {
            if !self.target.contains(r) && !out.contains(r) {
                out.push(*r);
            }
        }
        out
    }

    /// Every replica holding the partition meanwhile: the target first (its
    /// first replica is the preferred leader), then the ones leaving.
    pub fn replicas(&self) -> Vec<i32> {
        let mut all = self.target.clone();
        all.extend(self.removing());
        all
    }
}

/// A partition group's leader, as the leader itself recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLeader {
    pub leader: i32,
    /// The Raft term, which is the Kafka leader epoch.
    pub epoch: u64,
    /// In-sync replicas as the leader saw them.
    pub isr: Vec<i32>,
}

/// One partition's entry of [`MetaCommand::SetPartitionLeaders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLeaderUpdate {
    pub topic_id: Uuid,
    pub partition: i32,
    pub leader: PartitionLeader,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetaCommand {
    RegisterBroker(BrokerRegistration),
    /// Fails when the name is taken.
    CreateTopic(TopicRecord),
    /// Replaces an existing topic (partitions, configs); fails when the topic
    /// is gone or its id changed.
    UpdateTopic(TopicRecord),
    DeleteTopic {
        name: String,
    },
    SetBrokerConfig {
        scope: String,
        configs: BTreeMap<String, String>,
    },
    /// Reserves `size` producer ids; answers the block's start.
    AllocateProducerIds {
        size: i64,
    },
    PutScram {
        user: String,
        mechanism: String,
        credential: ScramCredential,
    },
    DeleteScram {
        user: String,
        mechanism: String,
    },
    PutAcls(Vec<AclBinding>),
    DeleteAcls(Vec<AclBinding>),
    /// Replaces each entity's quotas; empty values remove the entity.
    PutQuotas(Vec<(QuotaEntity, QuotaValues)>),
    /// Partition leaders reporting themselves. An entry older than the one
    /// held (lower epoch, or the same epoch from another leader) and one for
    /// a topic that no longer exists are ignored.
    SetPartitionLeaders(Vec<PartitionLeaderUpdate>),
    /// Starts a partition's reassignment to `target`, or cancels the one
    /// under way (`None`): see [`Reassignment`].
    Reassign {
        topic: String,
        partition: i32,
        target: Option<Vec<i32>>,
    },
    /// The partition's group has exactly `target` as voters: the
    /// reassignment is over. Ignored unless `target` is still the one under
    /// way (it was cancelled or replaced meanwhile).
    CompleteReassignment {
        topic_id: Uuid,
        partition: i32,
        target: Vec<i32>,
    },
    /// Removes a broker that holds no replica (after a drain).
    UnregisterBroker {
        node_id: i32,
    },
    /// Fences brokers (`Some`) or lifts their fence (`None`); entries for
    /// brokers that are not registered are ignored. Lifting an
    /// [`Fence::Unresponsive`] fence leaves a [`Fence::ShuttingDown`] one,
    /// which only the broker's next registration lifts.
    SetFences(Vec<(i32, Option<Fence>)>),
}

/// Why a reassignment was refused (each has its Kafka error code).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReassignError {
    #[error("unknown topic or partition")]
    UnknownPartition,
    #[error("{0}")]
    InvalidReplicas(String),
    #[error("a reassignment of this partition is already in progress")]
    InProgress,
    #[error("no reassignment of this partition is in progress")]
    NoneInProgress,
}

/// The outcome of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaResponse {
    #[default]
    Ok,
    /// Whether a removal found something.
    Removed(bool),
    ProducerIdBlock {
        start: i64,
        end: i64,
    },
    TopicExists,
    NoSuchTopic,
    Refused(String),
    ReassignRefused(ReassignError),
}

impl MetaState {
    pub fn apply(&mut self, cmd: MetaCommand) -> MetaResponse {
        match cmd {
            MetaCommand::RegisterBroker(b) => {
                // A broker registers at each start: it is back.
                self.fenced.remove(&b.node_id);
                self.brokers.insert(b.node_id, b);
                MetaResponse::Ok
            }
            MetaCommand::CreateTopic(t) => {
                if self.topics.contains_key(&t.name) {
                    return MetaResponse::TopicExists;
                }
                self.topics.insert(t.name.clone(), t);
                MetaResponse::Ok
            }
            MetaCommand::UpdateTopic(mut t) => match self.topics.get_mut(&t.name) {
                Some(old) if old.id == t.id => {
                    // Replicas of existing partitions change only through
                    // reassignments: a broker's stale copy of the topic must
                    // not undo one.
                    for (i, a) in old.assignments.iter().enumerate() {
                        if let Some(slot) = t.assignments.get_mut(i) {
                            slot.clone_from(a);
                        }
                    }
                    *old = t;
                    MetaResponse::Ok
                }
                _ => MetaResponse::NoSuchTopic,
            },
            MetaCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(t) => {
                    self.partition_leaders.remove(&t.id);
                    self.reassignments.remove(&t.id);
                    MetaResponse::Removed(true)
                }
                None => MetaResponse::Removed(false),
            },
            MetaCommand::SetBrokerConfig { scope, configs } => {
                if configs.is_empty() {
                    self.broker_configs.remove(&scope);
                } else {
                    self.broker_configs.insert(scope, configs);
                }
                MetaResponse::Ok
            }
            MetaCommand::AllocateProducerIds { size } => {
                let start = self.producer_id_block_end;
                match start.checked_add(size.max(1)) {
                    Some(end) => {
                        self.producer_id_block_end = end;
                        MetaResponse::ProducerIdBlock { start, end }
                    }
                    None => MetaResponse::Refused("producer ids are exhausted".into()),
                }
            }
            MetaCommand::PutScram {
                user,
                mechanism,
                credential,
            } => {
                self.scram
                    .entry(user)
                    .or_default()
                    .insert(mechanism, credential);
                MetaResponse::Ok
            }
            MetaCommand::DeleteScram { user, mechanism } => {
                let Some(m) = self.scram.get_mut(&user) else {
                    return MetaResponse::Removed(false);
                };
                let removed = m.remove(&mechanism).is_some();
                if m.is_empty() {
                    self.scram.remove(&user);
                }
                MetaResponse::Removed(removed)
            }
            MetaCommand::PutAcls(acls) => {
                self.acls.extend(acls);
                MetaResponse::Ok
            }
            MetaCommand::DeleteAcls(acls) => {
                let before = self.acls.len();
                for a in &acls {
                    self.acls.remove(a);
                }
                MetaResponse::Removed(self.acls.len() < before)
            }
            MetaCommand::PutQuotas(entries) => {
                for (entity, values) in entries {
                    if values.is_empty() {
                        self.quotas.remove(&entity);
                    } else {
                        self.quotas.insert(entity, values);
                    }
                }
                MetaResponse::Ok
            }
            MetaCommand::SetPartitionLeaders(updates) => {
                let mut applied = 0usize;
                for u in updates {
                    let exists = self
                        .topics
                        .values()
                        .any(|t| t.id == u.topic_id && u.partition < t.partitions);
                    if !exists {
                        continue;
                    }
                    let slot = self
                        .partition_leaders
                        .entry(u.topic_id)
                        .or_default()
                        .entry(u.partition);
                    match slot {
                        std::collections::btree_map::Entry::Vacant(v) => {
                            v.insert(u.leader);
                        }
                        std::collections::btree_map::Entry::Occupied(mut o) => {
                            let cur = o.get();
                            let newer = u.leader.epoch > cur.epoch
                                || (u.leader.epoch == cur.epoch && u.leader.leader == cur.leader);
                            if !newer {
                                continue;
                            }
                            o.insert(u.leader);
                        }
                    }
                    applied += 1;
                }
                MetaResponse::Removed(applied > 0)
            }
            MetaCommand::Reassign {
                topic,
                partition,
                target,
            } => {
                let result = self.reassign(&topic, partition, target);
                self.reassignments.retain(|_, moves| !moves.is_empty());
                match result {
                    Ok(()) => MetaResponse::Ok,
                    Err(e) => MetaResponse::ReassignRefused(e),
                }
            }
            MetaCommand::CompleteReassignment {
                topic_id,
                partition,
                target,
            } => {
                let Some(t) = self.topics.values_mut().find(|t| t.id == topic_id) else {
                    return MetaResponse::Removed(false);
                };
                let Some(moves) = self.reassignments.get_mut(&topic_id) else {
                    return MetaResponse::Removed(false);
                };
                if moves.get(&partition).map(|r| &r.target) != Some(&target) {
                    return MetaResponse::Removed(false);
                }
                moves.remove(&partition);
                if moves.is_empty() {
                    self.reassignments.remove(&topic_id);
                }
                if let Some(slot) = usize::try_from(partition)
                    .ok()
                    .and_then(|p| t.assignments.get_mut(p))
                {
                    *slot = target;
                }
                MetaResponse::Removed(true)
            }
            MetaCommand::UnregisterBroker { node_id } => {
                // Assignments include every replica of a reassignment.
                let holding = self
                    .topics
                    .values()
                    .find(|t| t.assignments.iter().any(|a| a.contains(&node_id)));
                if let Some(t) = holding {
                    return MetaResponse::Refused(format!(
                        "broker {node_id} still holds replicas of topic {:?}: drain it first",
                        t.name
                    ));
                }
                self.fenced.remove(&node_id);
                MetaResponse::Removed(self.brokers.remove(&node_id).is_some())
            }
            MetaCommand::SetFences(changes) => {
                for (node_id, fence) in changes {
                    if !self.brokers.contains_key(&node_id) {
                        continue;
                    }
                    match fence {
                        Some(f) => {
                            // Stopping is the stronger fact: a late
                            // "unresponsive" does not overwrite it.
                            let slot = self.fenced.entry(node_id).or_insert(f);
                            if f == Fence::ShuttingDown {
                                *slot = f;
                            }
                        }
                        None => {
                            if self.fenced.get(&node_id) == Some(&Fence::Unresponsive) {
                                self.fenced.remove(&node_id);
                            }
                        }
                    }
                }
                MetaResponse::Ok
            }
        }
    }

    fn reassign(
        &mut self,
        topic: &str,
        partition: i32,
        target: Option<Vec<i32>>,
    ) -> Result<(), ReassignError> {
        let t = self
            .topics
            .get_mut(topic)
            .ok_or(ReassignError::UnknownPartition)?;
        let slot = usize::try_from(partition)
            .ok()
            .filter(|&p| partition < t.partitions && p < t.assignments.len())
            .ok_or(ReassignError::UnknownPartition)?;
        let moves = self.reassignments.entry(t.id).or_default();
        let Some(target) = target else {
            let r = moves
                .get_mut(&partition)
                .filter(|r| r.target != r.original)
                .ok_or(ReassignError::NoneInProgress)?;
            r.abandoned = r.adding();
            r.target = r.original.clone();
            t.assignments[slot] = r.replicas();
            return Ok(());
        };
        if t.replication_factor < 2 {
            return Err(ReassignError::InvalidReplicas(format!(
                "topic {topic:?} has replication factor {}: only replicated (Raft) partitions can be reassigned",
                t.replication_factor
            )));
        }
        if target.is_empty() {
            return Err(ReassignError::InvalidReplicas(
                "the target replica list is empty".into(),
            ));
        }
        let mut seen = BTreeSet::new();
        for r in &target {
            if !seen.insert(r) {
                return Err(ReassignError::InvalidReplicas(format!(
                    "broker {r} appears twice in the target replicas"
                )));
            }
            if !self.brokers.contains_key(r) {
                return Err(ReassignError::InvalidReplicas(format!(
                    "broker {r} is not a registered broker"
                )));
            }
        }
        if moves.contains_key(&partition) {
            return Err(ReassignError::InProgress);
        }
        let current = &t.assignments[slot];
        let same_set = current.len() == target.len() && target.iter().all(|r| current.contains(r));
        if same_set {
            // Only the order (the preferred leader) changes: no data moves.
            t.assignments[slot] = target;
            return Ok(());
        }
        let r = Reassignment {
            original: current.clone(),
            target,
            abandoned: Vec::new(),
        };
        t.assignments[slot] = r.replicas();
        moves.insert(partition, r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn topic(name: &str, id: Uuid, partitions: i32) -> TopicRecord {
        TopicRecord {
            name: name.into(),
            id,
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignments: Vec::new(),
        }
    }

    #[test]
    fn commands_apply_deterministically() {
        let id = Uuid::new_v4();
        let cmds = vec![
            MetaCommand::CreateTopic(topic("a", id, 1)),
            MetaCommand::CreateTopic(topic("a", Uuid::new_v4(), 5)),
            MetaCommand::UpdateTopic(topic("a", id, 3)),
            MetaCommand::UpdateTopic(topic("a", Uuid::new_v4(), 9)),
            MetaCommand::AllocateProducerIds { size: 1000 },
            MetaCommand::AllocateProducerIds { size: 1000 },
            MetaCommand::DeleteTopic { name: "b".into() },
            MetaCommand::DeleteScram {
                user: "u".into(),
                mechanism: "SCRAM-SHA-256".into(),
            },
        ];
        let mut a = MetaState::default();
        let mut b = MetaState::default();
        let ra: Vec<_> = cmds.iter().cloned().map(|c| a.apply(c)).collect();
        let rb: Vec<_> = cmds.into_iter().map(|c| b.apply(c)).collect();
        assert_eq!(a, b);
        assert_eq!(ra, rb);
        assert_eq!(
            ra,
            vec![
                MetaResponse::Ok,
                MetaResponse::TopicExists,
                MetaResponse::Ok,
                MetaResponse::NoSuchTopic,
                MetaResponse::ProducerIdBlock {
                    start: 0,
                    end: 1000
                },
                MetaResponse::ProducerIdBlock {
                    start: 1000,
                    end: 2000
                },
                MetaResponse::Removed(false),
                MetaResponse::Removed(false),
            ]
        );
        assert_eq!(a.topics["a"].partitions, 3);
        assert_eq!(a.topics["a"].id, id);
    }

    #[test]
    fn fences_follow_liveness_shutdown_and_registration() {
        let mut st = cluster_with(&[1, 2, 3], vec![vec![1, 2, 3]]);
        let reg = st.brokers[&2].clone();
        st.apply(MetaCommand::SetFences(vec![
            (2, Some(Fence::Unresponsive)),
            (3, Some(Fence::ShuttingDown)),
            (9, Some(Fence::Unresponsive)),
        ]));
        assert_eq!(st.fenced.keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(
            st.unfenced_brokers().map(|b| b.node_id).collect::<Vec<_>>(),
            vec![1]
        );
        // A late "unresponsive" does not weaken a shutdown, and liveness
        // does not lift it: only the next registration does.
        st.apply(MetaCommand::SetFences(vec![
            (3, Some(Fence::Unresponsive)),
            (3, None),
            (2, None),
        ]));
        assert!(!st.is_fenced(2));
        assert_eq!(st.fenced.get(&3), Some(&Fence::ShuttingDown));
        st.apply(MetaCommand::SetFences(vec![(2, Some(Fence::Unresponsive))]));
        st.apply(MetaCommand::RegisterBroker(reg));
        assert!(!st.is_fenced(2));
        let mut three = st.brokers[&3].clone();
        three.rack = Some("r".into());
        st.apply(MetaCommand::RegisterBroker(three));
        assert!(st.fenced.is_empty());
    }

    fn cluster_with(brokers: &[i32], replicas: Vec<Vec<i32>>) -> MetaState {
        let mut st = MetaState::default();
        for &b in brokers {
            st.apply(MetaCommand::RegisterBroker(BrokerRegistration {
                node_id: b,
                rpc_addr: format!("127.0.0.1:{b}"),
                rack: None,
                endpoints: Vec::new(),
            }));
        }
        let mut t = topic("t", Uuid::nil(), replicas.len() as i32);
        t.replication_factor = 3;
        t.assignments = replicas;
        st.apply(MetaCommand::CreateTopic(t));
        st
    }

    fn reassign(st: &mut MetaState, p: i32, target: Option<Vec<i32>>) -> MetaResponse {
        st.apply(MetaCommand::Reassign {
            topic: "t".into(),
            partition: p,
            target,
        })
    }

    #[test]
    fn a_reassignment_holds_both_sets_until_the_leader_records_the_end() {
        let mut st = cluster_with(&[1, 2, 3, 4, 5], vec![vec![1, 2, 3]]);
        assert_eq!(reassign(&mut st, 0, Some(vec![4, 2, 5])), MetaResponse::Ok);
        let t = &st.topics["t"];
        assert_eq!(t.assignments[0], vec![4, 2, 5, 1, 3]);
        let r = st.reassignment(Uuid::nil(), 0).unwrap();
        assert_eq!((r.adding(), r.removing()), (vec![4, 5], vec![1, 3]));
        // A second one is refused while this one runs.
        assert_eq!(
            reassign(&mut st, 0, Some(vec![1, 2, 4])),
            MetaResponse::ReassignRefused(ReassignError::InProgress)
        );
        // A stale completion (another target) changes nothing.
        let stale = MetaCommand::CompleteReassignment {
            topic_id: Uuid::nil(),
            partition: 0,
            target: vec![1, 2, 4],
        };
        assert_eq!(st.apply(stale), MetaResponse::Removed(false));
        let done = MetaCommand::CompleteReassignment {
            topic_id: Uuid::nil(),
            partition: 0,
            target: vec![4, 2, 5],
        };
        assert_eq!(st.apply(done), MetaResponse::Removed(true));
        assert_eq!(st.topics["t"].assignments[0], vec![4, 2, 5]);
        assert!(st.reassignments.is_empty());
    }

    #[test]
    fn a_cancelled_reassignment_keeps_the_replicas_it_added_until_the_group_is_back() {
        let mut st = cluster_with(&[1, 2, 3, 4], vec![vec![1, 2, 3]]);
        assert_eq!(
            reassign(&mut st, 0, None),
            MetaResponse::ReassignRefused(ReassignError::NoneInProgress)
        );
        assert_eq!(reassign(&mut st, 0, Some(vec![1, 2, 4])), MetaResponse::Ok);
        assert_eq!(reassign(&mut st, 0, None), MetaResponse::Ok);
        let r = st.reassignment(Uuid::nil(), 0).unwrap();
        assert_eq!(r.target, vec![1, 2, 3]);
        assert_eq!((r.adding(), r.removing()), (vec![], vec![4]));
        assert_eq!(st.topics["t"].assignments[0], vec![1, 2, 3, 4]);
        // Cancelling twice: nothing left to cancel.
        assert_eq!(
            reassign(&mut st, 0, None),
            MetaResponse::ReassignRefused(ReassignError::NoneInProgress)
        );
        let back = MetaCommand::CompleteReassignment {
            topic_id: Uuid::nil(),
            partition: 0,
            target: vec![1, 2, 3],
        };
        assert_eq!(st.apply(back), MetaResponse::Removed(true));
        assert_eq!(st.topics["t"].assignments[0], vec![1, 2, 3]);
    }

    #[test]
    fn bad_targets_are_refused_with_their_reason() {
        let mut st = cluster_with(&[1, 2, 3, 4], vec![vec![1, 2, 3]]);
        let invalid = |r: MetaResponse| {
            matches!(
                r,
                MetaResponse::ReassignRefused(ReassignError::InvalidReplicas(_))
            )
        };
        assert!(invalid(reassign(&mut st, 0, Some(vec![1, 2, 9]))));
        assert!(invalid(reassign(&mut st, 0, Some(vec![1, 2, 2]))));
        assert!(invalid(reassign(&mut st, 0, Some(vec![]))));
        assert_eq!(
            reassign(&mut st, 1, Some(vec![1, 2, 4])),
            MetaResponse::ReassignRefused(ReassignError::UnknownPartition)
        );
        // The same replicas in another order: only the preferred leader
        // changes, at once.
        assert_eq!(reassign(&mut st, 0, Some(vec![3, 1, 2])), MetaResponse::Ok);
        assert_eq!(st.topics["t"].assignments[0], vec![3, 1, 2]);
        assert!(st.reassignments.is_empty());
    }

    #[test]
    fn a_stale_topic_update_does_not_undo_a_reassignment() {
        let mut st = cluster_with(&[1, 2, 3, 4], vec![vec![1, 2, 3]]);
        let stale = st.topics["t"].clone();
        assert_eq!(reassign(&mut st, 0, Some(vec![1, 2, 4])), MetaResponse::Ok);
        let mut grown = stale;
        grown.partitions = 2;
        grown.assignments.push(vec![2, 3, 4]);
        assert_eq!(st.apply(MetaCommand::UpdateTopic(grown)), MetaResponse::Ok);
        assert_eq!(
            st.topics["t"].assignments,
            vec![vec![1, 2, 4, 3], vec![2, 3, 4]]
        );
        assert_eq!(
            st.reassignment(Uuid::nil(), 0).unwrap().target,
            vec![1, 2, 4]
        );
    }

    #[test]
    fn a_broker_holding_replicas_cannot_be_unregistered() {
        let mut st = cluster_with(&[1, 2, 3, 4], vec![vec![1, 2, 3]]);
        assert!(matches!(
            st.apply(MetaCommand::UnregisterBroker { node_id: 3 }),
            MetaResponse::Refused(_)
        ));
        assert_eq!(
            st.apply(MetaCommand::UnregisterBroker { node_id: 4 }),
            MetaResponse::Removed(true)
        );
        assert_eq!(
            st.apply(MetaCommand::UnregisterBroker { node_id: 4 }),
            MetaResponse::Removed(false)
        );
    }
}
