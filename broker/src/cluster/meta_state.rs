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
}

impl MetaState {
    pub fn apply(&mut self, cmd: MetaCommand) -> MetaResponse {
        match cmd {
            MetaCommand::RegisterBroker(b) => {
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
            MetaCommand::UpdateTopic(t) => match self.topics.get_mut(&t.name) {
                Some(old) if old.id == t.id => {
                    *old = t;
                    MetaResponse::Ok
                }
                _ => MetaResponse::NoSuchTopic,
            },
            MetaCommand::DeleteTopic { name } => match self.topics.remove(&name) {
                Some(t) => {
                    self.partition_leaders.remove(&t.id);
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
        }
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
}
