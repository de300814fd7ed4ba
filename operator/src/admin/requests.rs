//! The admin calls: pure request builders (unit-tested) and the
//! [`AdminClient`] methods that send them and read the answers.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use kafka_protocol::messages::{
    self, CreateAclsRequest, CreatePartitionsRequest, CreateTopicsRequest, DeleteAclsRequest,
    DeleteTopicsRequest, DescribeAclsRequest, DescribeClientQuotasRequest, DescribeConfigsRequest,
    DescribeUserScramCredentialsRequest, IncrementalAlterConfigsRequest, MetadataRequest,
    TopicName,
};
use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterUserScramCredentialsRequest, alter_client_quotas_request,
    create_acls_request::AclCreation,
    create_partitions_request::CreatePartitionsTopic,
    create_topics_request::{CreatableTopic, CreatableTopicConfig},
    delete_acls_request::DeleteAclsFilter,
    delete_topics_request::DeleteTopicState,
    describe_client_quotas_request::ComponentData,
    describe_configs_request::DescribeConfigsResource,
    describe_user_scram_credentials_request::UserName,
    incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;

use super::{AdminClient, AdminError, codes};

/// Config resource type of a topic.
pub const RESOURCE_TOPIC: i8 = 2;
/// Config resource type of a broker: resource name `"<id>"` for one
/// broker, `""` for the cluster-wide default of every broker.
pub const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs source of a value set on the topic itself.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
/// DescribeConfigs source of a cluster-wide dynamic broker value.
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
/// The dynamic broker config capping, per leader, the bytes per second sent
/// to replicas a reassignment is adding (Kafka's name).
pub const LEADER_REPLICATION_THROTTLED_RATE: &str = "leader.replication.throttled.rate";
/// IncrementalAlterConfigs operations.
pub const OP_SET: i8 = 0;
pub const OP_DELETE: i8 = 1;
/// SCRAM mechanism id of SCRAM-SHA-512.
pub const SCRAM_SHA_512: i8 = 2;
/// Request timeout the brokers get for topic operations.
const TIMEOUT_MS: i32 = 30_000;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn topic(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub topic_id: String,
    pub partitions: i32,
    /// Partitions whose ISR is smaller than their replica list.
    pub under_replicated: u64,
}

/// The cluster as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterInfo {
    pub controller_id: i32,
    pub brokers: Vec<i32>,
    pub under_replicated_partitions: u64,
    /// Every partition's topic, replicas and in-sync replicas.
    pub partitions: Vec<PartitionReplicas>,
}

/// One partition's replica set, for the roll's safety check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub topic: String,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

/// Brokers whose restart would leave some partition with fewer in-sync
/// replicas than its topic's `min.insync.replicas`. Partitions with one
/// replica are left out: they are unavailable during any restart of their
/// broker, and counting them would block every roll of a cluster that has
/// one.
pub fn below_min_isr_if_restarted(
    partitions: &[PartitionReplicas],
    min_isr: &BTreeMap<String, i32>,
) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for p in partitions.iter().filter(|p| p.replicas.len() > 1) {
        let min = min_isr.get(&p.topic).copied().unwrap_or(1);
        if (p.isr.len() as i64) - 1 < i64::from(min) {
            out.extend(p.isr.iter().copied());
        }
    }
    out
}

/// DescribeConfigs of one key on many topics.
pub fn describe_topics_key_request(topics: &[String], key: &str) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(
        topics
            .iter()
            .map(|t| {
                DescribeConfigsResource::default()
                    .with_resource_type(RESOURCE_TOPIC)
                    .with_resource_name(s(t))
                    .with_configuration_keys(Some(vec![s(key)]))
            })
            .collect(),
    )
}

/// Metadata for some topics (`None`: every topic), never creating one.
pub fn metadata_request(topics: Option<&[&str]>, version: i16) -> MetadataRequest {
    let mut req = MetadataRequest::default().with_topics(topics.map(|t| {
        t.iter()
            .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
            .collect()
    }));
    // allow_auto_topic_creation exists from v4; earlier versions never create.
    if version >= 4 {
        req.allow_auto_topic_creation = false;
    }
    req
}

/// CreateTopics for one topic; `replication_factor` -1 takes the broker's
/// default.
pub fn create_topic_request(
    name: &str,
    partitions: i32,
    replication_factor: Option<i32>,
    config: &BTreeMap<String, String>,
) -> CreateTopicsRequest {
    let rf = replication_factor
        .and_then(|r| i16::try_from(r).ok())
        .unwrap_or(-1);
    CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(partitions)
                .with_replication_factor(rf)
                .with_configs(
                    config
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(s(k))
                                .with_value(Some(s(v)))
                        })
                        .collect(),
                ),
        ])
        .with_timeout_ms(TIMEOUT_MS)
}

/// CreatePartitions growing `name` to `count` partitions.
pub fn create_partitions_request(name: &str, count: i32) -> CreatePartitionsRequest {
    CreatePartitionsRequest::default()
        .with_topics(vec![
            CreatePartitionsTopic::default()
                .with_name(topic(name))
                .with_count(count),
        ])
        .with_timeout_ms(TIMEOUT_MS)
}

/// DeleteTopics by name: v6 moved names into `topics`.
pub fn delete_topic_request(name: &str, version: i16) -> DeleteTopicsRequest {
    let req = DeleteTopicsRequest::default().with_timeout_ms(TIMEOUT_MS);
    if version >= 6 {
        req.with_topics(vec![
            DeleteTopicState::default().with_name(Some(topic(name))),
        ])
    } else {
        req.with_topic_names(vec![topic(name)])
    }
}

/// DescribeConfigs of one topic, every key.
pub fn describe_topic_config_request(name: &str) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(RESOURCE_TOPIC)
            .with_resource_name(s(name))
            .with_configuration_keys(None),
    ])
}

/// A change of one topic config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// What to change so the topic's own configs (`actual`: the values whose
/// source is the topic) equal `desired`: set what differs, delete what the
/// spec does not name.
pub fn config_changes(
    desired: &BTreeMap<String, String>,
    actual: &BTreeMap<String, String>,
) -> Vec<ConfigChange> {
    let mut out: Vec<ConfigChange> = desired
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .map(|(k, v)| ConfigChange::Set(k.clone(), v.clone()))
        .collect();
    out.extend(
        actual
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .map(|k| ConfigChange::Delete(k.clone())),
    );
    out
}

/// IncrementalAlterConfigs applying `changes` to a topic.
pub fn alter_topic_config_request(
    name: &str,
    changes: &[ConfigChange],
) -> IncrementalAlterConfigsRequest {
    alter_config_request(RESOURCE_TOPIC, name, changes)
}

/// The resource name of a broker's configs: its id, or `""` for the
/// cluster-wide default.
fn broker_resource(broker: Option<i32>) -> String {
    broker.map(|b| b.to_string()).unwrap_or_default()
}

/// IncrementalAlterConfigs applying `changes` to one broker's dynamic
/// configs, or (`None`) to the cluster-wide ones every broker inherits.
pub fn alter_broker_config_request(
    broker: Option<i32>,
    changes: &[ConfigChange],
) -> IncrementalAlterConfigsRequest {
    alter_config_request(RESOURCE_BROKER, &broker_resource(broker), changes)
}

/// DescribeConfigs of one key of a broker (or, `None`, of the cluster-wide
/// default), with synonyms: a broker reports where each value comes from,
/// so the cluster-wide one is found whichever level wins.
pub fn describe_broker_config_request(broker: Option<i32>, key: &str) -> DescribeConfigsRequest {
    DescribeConfigsRequest::default()
        .with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_BROKER)
                .with_resource_name(s(&broker_resource(broker)))
                .with_configuration_keys(Some(vec![s(key)])),
        ])
        .with_include_synonyms(true)
}

/// The cluster-wide dynamic value of `key` in a DescribeConfigs answer:
/// the entry itself when that is where it comes from (Kafka describes the
/// `""` resource so), else its synonym of that source (a broker describing
/// itself lists every level). `None`: not set cluster-wide.
pub fn cluster_wide_value(
    result: &messages::describe_configs_response::DescribeConfigsResult,
    key: &str,
) -> Option<String> {
    result
        .configs
        .iter()
        .filter(|c| c.name.as_str() == key)
        .find_map(|c| {
            if c.config_source == SOURCE_DYNAMIC_DEFAULT_BROKER {
                return c.value.as_ref().map(ToString::to_string);
            }
            c.synonyms
                .iter()
                .find(|s| s.source == SOURCE_DYNAMIC_DEFAULT_BROKER)
                .and_then(|s| s.value.as_ref().map(ToString::to_string))
        })
}

fn alter_config_request(
    resource_type: i8,
    name: &str,
    changes: &[ConfigChange],
) -> IncrementalAlterConfigsRequest {
    IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(resource_type)
            .with_resource_name(s(name))
            .with_configs(
                changes
                    .iter()
                    .map(|c| match c {
                        ConfigChange::Set(k, v) => AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(OP_SET)
                            .with_value(Some(s(v))),
                        ConfigChange::Delete(k) => AlterableConfig::default()
                            .with_name(s(k))
                            .with_config_operation(OP_DELETE)
                            .with_value(None),
                    })
                    .collect(),
            ),
    ])
}

/// DescribeUserScramCredentials of one user.
pub fn describe_scram_request(user: &str) -> DescribeUserScramCredentialsRequest {
    DescribeUserScramCredentialsRequest::default()
        .with_users(Some(vec![UserName::default().with_name(s(user))]))
}

/// AlterUserScramCredentials: upsert a SCRAM-SHA-512 credential computed
/// from the salt and salted password (the password never leaves the
/// operator).
pub fn upsert_scram_request(
    user: &str,
    salt: &[u8],
    salted_password: &[u8],
    iterations: i32,
) -> AlterUserScramCredentialsRequest {
    AlterUserScramCredentialsRequest::default().with_upsertions(vec![
        messages::alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
            .with_name(s(user))
            .with_mechanism(SCRAM_SHA_512)
            .with_iterations(iterations)
            .with_salt(Bytes::copy_from_slice(salt))
            .with_salted_password(Bytes::copy_from_slice(salted_password)),
    ])
}

/// AlterUserScramCredentials: delete the user's SCRAM-SHA-512 credential.
pub fn delete_scram_request(user: &str) -> AlterUserScramCredentialsRequest {
    AlterUserScramCredentialsRequest::default().with_deletions(vec![
        messages::alter_user_scram_credentials_request::ScramCredentialDeletion::default()
            .with_name(s(user))
            .with_mechanism(SCRAM_SHA_512),
    ])
}

/// Kafka's ACL enum values.
pub mod acl {
    pub const RESOURCE_ANY: i8 = 1;
    pub const RESOURCE_TOPIC: i8 = 2;
    pub const RESOURCE_GROUP: i8 = 3;
    pub const RESOURCE_CLUSTER: i8 = 4;
    pub const RESOURCE_TRANSACTIONAL_ID: i8 = 5;
    pub const PATTERN_ANY: i8 = 1;
    pub const PATTERN_LITERAL: i8 = 3;
    pub const PATTERN_PREFIXED: i8 = 4;
    pub const OPERATION_ANY: i8 = 1;
    pub const PERMISSION_ANY: i8 = 1;
    pub const PERMISSION_DENY: i8 = 2;
    pub const PERMISSION_ALLOW: i8 = 3;
}

/// One ACL binding in Kafka's terms.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: i8,
    pub resource_name: String,
    pub pattern_type: i8,
    pub principal: String,
    pub host: String,
    pub operation: i8,
    pub permission_type: i8,
}

/// The pattern type field exists from v1 of the ACL APIs; v0 (which this
/// client never negotiates: the codec starts at v1) only knows literal names.
fn check_pattern(version: i16, pattern: i8) -> Result<(), AdminError> {
    if version == 0 && pattern != acl::PATTERN_LITERAL && pattern != acl::PATTERN_ANY {
        return Err(AdminError::Unsupported {
            api: "prefixed ACLs (ACL APIs v1+)",
            ours: "1..".to_string(),
        });
    }
    Ok(())
}

/// CreateAcls for `bindings`.
///
/// # Errors
/// A prefixed binding at v0.
pub fn create_acls_request(
    bindings: &[AclBinding],
    version: i16,
) -> Result<CreateAclsRequest, AdminError> {
    let mut creations = Vec::with_capacity(bindings.len());
    for b in bindings {
        check_pattern(version, b.pattern_type)?;
        let mut c = AclCreation::default()
            .with_resource_type(b.resource_type)
            .with_resource_name(s(&b.resource_name))
            .with_principal(s(&b.principal))
            .with_host(s(&b.host))
            .with_operation(b.operation)
            .with_permission_type(b.permission_type);
        if version >= 1 {
            c.resource_pattern_type = b.pattern_type;
        }
        creations.push(c);
    }
    Ok(CreateAclsRequest::default().with_creations(creations))
}

/// DeleteAcls removing exactly `bindings`.
///
/// # Errors
/// A prefixed binding at v0.
pub fn delete_acls_request(
    bindings: &[AclBinding],
    version: i16,
) -> Result<DeleteAclsRequest, AdminError> {
    let mut filters = Vec::with_capacity(bindings.len());
    for b in bindings {
        check_pattern(version, b.pattern_type)?;
        let mut f = DeleteAclsFilter::default()
            .with_resource_type_filter(b.resource_type)
            .with_resource_name_filter(Some(s(&b.resource_name)))
            .with_principal_filter(Some(s(&b.principal)))
            .with_host_filter(Some(s(&b.host)))
            .with_operation(b.operation)
            .with_permission_type(b.permission_type);
        if version >= 1 {
            f.pattern_type_filter = b.pattern_type;
        }
        filters.push(f);
    }
    Ok(DeleteAclsRequest::default().with_filters(filters))
}

/// DescribeAcls of every binding of one principal.
pub fn describe_acls_request(principal: &str, version: i16) -> DescribeAclsRequest {
    let mut req = DescribeAclsRequest::default()
        .with_resource_type_filter(acl::RESOURCE_ANY)
        .with_resource_name_filter(None)
        .with_principal_filter(Some(s(principal)))
        .with_host_filter(None)
        .with_operation(acl::OPERATION_ANY)
        .with_permission_type(acl::PERMISSION_ANY);
    if version >= 1 {
        req.pattern_type_filter = acl::PATTERN_ANY;
    }
    req
}

/// A client-quota entity as (type, name) pairs; a `None` name is the
/// default entity of that type.
pub type QuotaEntityParts = Vec<(String, Option<String>)>;

/// AlterClientQuotas setting `values` and removing `remove` on one entity.
pub fn alter_quotas_request(
    entity: &QuotaEntityParts,
    values: &BTreeMap<String, f64>,
    remove: &BTreeSet<String>,
) -> AlterClientQuotasRequest {
    use alter_client_quotas_request::{EntityData, EntryData, OpData};
    let mut ops: Vec<OpData> = values
        .iter()
        .map(|(k, v)| OpData::default().with_key(s(k)).with_value(*v))
        .collect();
    ops.extend(
        remove
            .iter()
            .map(|k| OpData::default().with_key(s(k)).with_remove(true)),
    );
    AlterClientQuotasRequest::default().with_entries(vec![
        EntryData::default()
            .with_entity(
                entity
                    .iter()
                    .map(|(t, n)| {
                        EntityData::default()
                            .with_entity_type(s(t))
                            .with_entity_name(n.as_deref().map(s))
                    })
                    .collect(),
            )
            .with_ops(ops),
    ])
}

/// DescribeClientQuotas matching exactly one entity.
pub fn describe_quotas_request(entity: &QuotaEntityParts) -> DescribeClientQuotasRequest {
    // match_type 0: exact name, 1: the default entity.
    DescribeClientQuotasRequest::default()
        .with_components(
            entity
                .iter()
                .map(|(t, n)| match n {
                    Some(n) => ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(0)
                        .with_match(Some(s(n))),
                    None => ComponentData::default()
                        .with_entity_type(s(t))
                        .with_match_type(1)
                        .with_match(None),
                })
                .collect(),
        )
        .with_strict(true)
}

fn kafka_err(api: &'static str, code: i16, msg: Option<&StrBytes>) -> Result<(), AdminError> {
    if code == codes::NONE {
        Ok(())
    } else {
        Err(AdminError::kafka(api, code, msg))
    }
}

impl AdminClient {
    /// The cluster's brokers, controller and under-replicated partitions.
    ///
    /// # Errors
    /// I/O or protocol errors.
    pub async fn cluster_info(&mut self) -> Result<ClusterInfo, AdminError> {
        let v = self.version_of::<MetadataRequest>()?;
        let (_, resp) = self.send(&metadata_request(None, v)).await?;
        Ok(ClusterInfo {
            controller_id: resp.controller_id.0,
            brokers: resp.brokers.iter().map(|b| b.node_id.0).collect(),
            under_replicated_partitions: resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .filter(|p| p.isr_nodes.len() < p.replica_nodes.len())
                .count() as u64,
            partitions: resp
                .topics
                .iter()
                .flat_map(|t| {
                    let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
                    t.partitions.iter().map(move |p| PartitionReplicas {
                        topic: name.clone(),
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    })
                })
                .collect(),
        })
    }

    /// `min.insync.replicas` of each topic (those the broker answers for).
    ///
    /// # Errors
    /// I/O or protocol errors.
    pub async fn min_insync_replicas(
        &mut self,
        topics: &[String],
    ) -> Result<BTreeMap<String, i32>, AdminError> {
        if topics.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (_, resp) = self
            .send(&describe_topics_key_request(topics, "min.insync.replicas"))
            .await?;
        Ok(resp
            .results
            .iter()
            .filter(|r| r.error_code == codes::NONE)
            .filter_map(|r| {
                let v = r
                    .configs
                    .iter()
                    .find(|c| c.name.as_str() == "min.insync.replicas")?;
                let n = v.value.as_ref()?.as_str().parse().ok()?;
                Some((r.resource_name.to_string(), n))
            })
            .collect())
    }

    /// One topic's metadata; `None` when it does not exist.
    ///
    /// # Errors
    /// I/O, protocol or Kafka errors other than an unknown topic.
    pub async fn describe_topic(&mut self, name: &str) -> Result<Option<TopicInfo>, AdminError> {
        let v = self.version_of::<MetadataRequest>()?;
        let (_, resp) = self.send(&metadata_request(Some(&[name]), v)).await?;
        let Some(t) = resp
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == name))
        else {
            return Ok(None);
        };
        if t.error_code == codes::UNKNOWN_TOPIC_OR_PARTITION {
            return Ok(None);
        }
        kafka_err("Metadata", t.error_code, None)?;
        Ok(Some(TopicInfo {
            name: name.to_string(),
            topic_id: t.topic_id.to_string(),
            partitions: i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
            under_replicated: t
                .partitions
                .iter()
                .filter(|p| p.isr_nodes.len() < p.replica_nodes.len())
                .count() as u64,
        }))
    }

    /// Creates a topic; an existing one is not an error.
    ///
    /// # Errors
    /// Kafka's refusal (invalid config, replication factor, ...).
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: Option<i32>,
        config: &BTreeMap<String, String>,
    ) -> Result<(), AdminError> {
        let (_, resp) = self
            .send(&create_topic_request(
                name,
                partitions,
                replication_factor,
                config,
            ))
            .await?;
        for t in &resp.topics {
            if t.error_code != codes::TOPIC_ALREADY_EXISTS {
                kafka_err("CreateTopics", t.error_code, t.error_message.as_ref())?;
            }
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    ///
    /// # Errors
    /// Kafka's refusal.
    pub async fn create_partitions(&mut self, name: &str, count: i32) -> Result<(), AdminError> {
        let (_, resp) = self.send(&create_partitions_request(name, count)).await?;
        for r in &resp.results {
            kafka_err("CreatePartitions", r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// Deletes a topic; a missing one is not an error.
    ///
    /// # Errors
    /// Kafka's refusal.
    pub async fn delete_topic(&mut self, name: &str) -> Result<(), AdminError> {
        let v = self.version_of::<DeleteTopicsRequest>()?;
        let (_, resp) = self.send(&delete_topic_request(name, v)).await?;
        for r in &resp.responses {
            if r.error_code != codes::UNKNOWN_TOPIC_OR_PARTITION {
                kafka_err("DeleteTopics", r.error_code, r.error_message.as_ref())?;
            }
        }
        Ok(())
    }

    /// The configs set on the topic itself (not broker defaults).
    ///
    /// # Errors
    /// Kafka's refusal.
    pub async fn topic_configs(
        &mut self,
        name: &str,
    ) -> Result<BTreeMap<String, String>, AdminError> {
        let (_, resp) = self.send(&describe_topic_config_request(name)).await?;
        let mut out = BTreeMap::new();
        for r in &resp.results {
            kafka_err("DescribeConfigs", r.error_code, r.error_message.as_ref())?;
            for c in &r.configs {
                if c.config_source == SOURCE_DYNAMIC_TOPIC
                    && let Some(v) = &c.value
                {
                    out.insert(c.name.to_string(), v.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Applies config changes to a topic.
    ///
    /// # Errors
    /// Kafka's refusal (unknown or invalid config).
    pub async fn alter_topic_config(
        &mut self,
        name: &str,
        changes: &[ConfigChange],
    ) -> Result<(), AdminError> {
        self.alter_configs(&alter_topic_config_request(name, changes))
            .await
    }

    /// Sends an IncrementalAlterConfigs; an error for any resource fails it.
    async fn alter_configs(
        &mut self,
        req: &IncrementalAlterConfigsRequest,
    ) -> Result<(), AdminError> {
        let (_, resp) = self.send(req).await?;
        for r in &resp.responses {
            kafka_err(
                "IncrementalAlterConfigs",
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// The cluster-wide dynamic value of a broker config (`None`: not set
    /// cluster-wide; a per-broker or static value does not count).
    ///
    /// # Errors
    /// I/O, or the brokers' refusal.
    pub async fn cluster_wide_broker_config(
        &mut self,
        key: &str,
    ) -> Result<Option<String>, AdminError> {
        let (_, resp) = self
            .send(&describe_broker_config_request(None, key))
            .await?;
        let mut value = None;
        for r in &resp.results {
            kafka_err("DescribeConfigs", r.error_code, r.error_message.as_ref())?;
            value = value.or_else(|| cluster_wide_value(r, key));
        }
        Ok(value)
    }

    /// Applies config changes to every broker at once (the cluster-wide
    /// dynamic configs; a broker's own value still wins on that broker).
    ///
    /// # Errors
    /// I/O, or the brokers' refusal (INVALID_CONFIG for a key they do not
    /// take at run time).
    pub async fn alter_cluster_wide_broker_config(
        &mut self,
        changes: &[ConfigChange],
    ) -> Result<(), AdminError> {
        self.alter_configs(&alter_broker_config_request(None, changes))
            .await
    }

    /// Whether the user has a SCRAM-SHA-512 credential.
    ///
    /// # Errors
    /// Kafka's refusal other than "no such user".
    pub async fn has_scram_sha512(&mut self, user: &str) -> Result<bool, AdminError> {
        let (_, resp) = self.send(&describe_scram_request(user)).await?;
        kafka_err(
            "DescribeUserScramCredentials",
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        for r in &resp.results {
            if r.error_code == codes::RESOURCE_NOT_FOUND {
                return Ok(false);
            }
            kafka_err(
                "DescribeUserScramCredentials",
                r.error_code,
                r.error_message.as_ref(),
            )?;
            if r.credential_infos
                .iter()
                .any(|c| c.mechanism == SCRAM_SHA_512)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Sets the user's SCRAM-SHA-512 credential to `password` (salted here
    /// with a fresh random salt).
    ///
    /// # Errors
    /// Kafka's refusal.
    pub async fn upsert_scram_sha512(
        &mut self,
        user: &str,
        password: &str,
    ) -> Result<(), AdminError> {
        let cred = super::scram::Credential::new(password, super::scram::ITERATIONS);
        let (_, resp) = self
            .send(&upsert_scram_request(
                user,
                &cred.salt,
                &cred.salted_password,
                cred.iterations,
            ))
            .await?;
        for r in &resp.results {
            kafka_err(
                "AlterUserScramCredentials",
                r.error_code,
                r.error_message.as_ref(),
            )?;
        }
        Ok(())
    }

    /// Deletes the user's SCRAM-SHA-512 credential; a missing one is fine.
    ///
    /// # Errors
    /// Kafka's refusal.
    pub async fn delete_scram_sha512(&mut self, user: &str) -> Result<(), AdminError> {
        let (_, resp) = self.send(&delete_scram_request(user)).await?;
        for r in &resp.results {
            if r.error_code != codes::RESOURCE_NOT_FOUND {
                kafka_err(
                    "AlterUserScramCredentials",
                    r.error_code,
                    r.error_message.as_ref(),
                )?;
            }
        }
        Ok(())
    }

    /// Every ACL binding of `principal`.
    ///
    /// # Errors
    /// Unsupported by the broker, or Kafka's refusal.
    pub async fn describe_acls(&mut self, principal: &str) -> Result<Vec<AclBinding>, AdminError> {
        let v = self.version_of::<DescribeAclsRequest>()?;
        let (_, resp) = self.send(&describe_acls_request(principal, v)).await?;
        kafka_err("DescribeAcls", resp.error_code, resp.error_message.as_ref())?;
        Ok(resp
            .resources
            .iter()
            .flat_map(|r| {
                r.acls.iter().map(move |a| AclBinding {
                    resource_type: r.resource_type,
                    resource_name: r.resource_name.to_string(),
                    pattern_type: if v >= 1 {
                        r.pattern_type
                    } else {
                        acl::PATTERN_LITERAL
                    },
                    principal: a.principal.to_string(),
                    host: a.host.to_string(),
                    operation: a.operation,
                    permission_type: a.permission_type,
                })
            })
            .collect())
    }

    /// Creates ACL bindings.
    ///
    /// # Errors
    /// Unsupported by the broker, or Kafka's refusal.
    pub async fn create_acls(&mut self, bindings: &[AclBinding]) -> Result<(), AdminError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let v = self.version_of::<CreateAclsRequest>()?;
        let (_, resp) = self.send(&create_acls_request(bindings, v)?).await?;
        for r in &resp.results {
            kafka_err("CreateAcls", r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// Deletes ACL bindings.
    ///
    /// # Errors
    /// Unsupported by the broker, or Kafka's refusal.
    pub async fn delete_acls(&mut self, bindings: &[AclBinding]) -> Result<(), AdminError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let v = self.version_of::<DeleteAclsRequest>()?;
        let (_, resp) = self.send(&delete_acls_request(bindings, v)?).await?;
        for r in &resp.filter_results {
            kafka_err("DeleteAcls", r.error_code, r.error_message.as_ref())?;
        }
        Ok(())
    }

    /// The quota values of exactly `entity`.
    ///
    /// # Errors
    /// Unsupported by the broker, or Kafka's refusal.
    pub async fn describe_quotas(
        &mut self,
        entity: &QuotaEntityParts,
    ) -> Result<BTreeMap<String, f64>, AdminError> {
        let (_, resp) = self.send(&describe_quotas_request(entity)).await?;
        kafka_err(
            "DescribeClientQuotas",
            resp.error_code,
            resp.error_message.as_ref(),
        )?;
        Ok(resp
            .entries
            .iter()
            .flatten()
            .flat_map(|e| e.values.iter())
            .map(|v| (v.key.to_string(), v.value))
            .collect())
    }

    /// Sets `values` and removes `remove` on one quota entity.
    ///
    /// # Errors
    /// Unsupported by the broker, or Kafka's refusal.
    pub async fn alter_quotas(
        &mut self,
        entity: &QuotaEntityParts,
        values: &BTreeMap<String, f64>,
        remove: &BTreeSet<String>,
    ) -> Result<(), AdminError> {
        let (_, resp) = self
            .send(&alter_quotas_request(entity, values, remove))
            .await?;
        for e in &resp.entries {
            kafka_err("AlterClientQuotas", e.error_code, e.error_message.as_ref())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Encodable;

    fn encodes<R: Encodable>(r: &R, v: i16) {
        let mut b = bytes::BytesMut::new();
        r.encode(&mut b, v).expect("encodes");
    }

    fn binding(pattern: i8) -> AclBinding {
        AclBinding {
            resource_type: acl::RESOURCE_TOPIC,
            resource_name: "team-a.".into(),
            pattern_type: pattern,
            principal: "User:team-a.alice".into(),
            host: "*".into(),
            operation: 3,
            permission_type: acl::PERMISSION_ALLOW,
        }
    }

    #[test]
    fn config_changes_set_what_differs_and_delete_what_the_spec_drops() {
        let desired = BTreeMap::from([
            ("retention.ms".to_string(), "1000".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
        ]);
        let actual = BTreeMap::from([
            ("retention.ms".to_string(), "5000".to_string()),
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("max.message.bytes".to_string(), "10".to_string()),
        ]);
        assert_eq!(
            config_changes(&desired, &actual),
            vec![
                ConfigChange::Set("retention.ms".into(), "1000".into()),
                ConfigChange::Delete("max.message.bytes".into()),
            ]
        );
        assert!(config_changes(&desired, &desired).is_empty());
    }

    #[test]
    fn delete_topics_puts_the_name_where_the_version_wants_it() {
        let old = delete_topic_request("t", 5);
        assert_eq!(old.topic_names, vec![topic("t")]);
        assert!(old.topics.is_empty());
        encodes(&old, 5);
        let new = delete_topic_request("t", 6);
        assert!(new.topic_names.is_empty());
        assert_eq!(new.topics[0].name, Some(topic("t")));
        encodes(&new, 6);
    }

    #[test]
    fn metadata_never_auto_creates_and_encodes_before_v4() {
        assert!(!metadata_request(Some(&["t"]), 12).allow_auto_topic_creation);
        encodes(&metadata_request(Some(&["t"]), 1), 1);
        encodes(&metadata_request(None, 12), 12);
    }

    #[test]
    fn create_topic_uses_the_broker_default_replication_factor_when_unset() {
        let cfg = BTreeMap::from([("retention.ms".to_string(), "1".to_string())]);
        let r = create_topic_request("t", 3, None, &cfg);
        assert_eq!(r.topics[0].replication_factor, -1);
        assert_eq!(r.topics[0].num_partitions, 3);
        assert_eq!(r.topics[0].configs[0].name.as_str(), "retention.ms");
        let r = create_topic_request("t", 3, Some(2), &cfg);
        assert_eq!(r.topics[0].replication_factor, 2);
        encodes(&r, 7);
    }

    #[test]
    fn acl_requests_carry_the_pattern_type_from_v1_and_refuse_prefixed_at_v0() {
        let b = vec![binding(acl::PATTERN_PREFIXED)];
        let r = create_acls_request(&b, 3).expect("v3");
        assert_eq!(r.creations[0].resource_pattern_type, acl::PATTERN_PREFIXED);
        assert_eq!(r.creations[0].principal.as_str(), "User:team-a.alice");
        encodes(&r, 3);
        assert!(create_acls_request(&b, 0).is_err());
        let d = delete_acls_request(&b, 3).expect("v3");
        assert_eq!(d.filters[0].pattern_type_filter, acl::PATTERN_PREFIXED);
        assert_eq!(
            d.filters[0].resource_name_filter.as_deref(),
            Some("team-a.")
        );
        encodes(&d, 3);
        let q = describe_acls_request("User:x", 3);
        assert_eq!(q.pattern_type_filter, acl::PATTERN_ANY);
        assert_eq!(q.principal_filter.as_deref(), Some("User:x"));
        encodes(&q, 3);
    }

    #[test]
    fn quota_requests_name_the_entity_and_remove_unset_keys() {
        let entity = vec![("tenant".to_string(), Some("team-a.".to_string()))];
        let values = BTreeMap::from([("producer_byte_rate".to_string(), 1024.0)]);
        let remove = BTreeSet::from(["consumer_byte_rate".to_string()]);
        let r = alter_quotas_request(&entity, &values, &remove);
        let e = &r.entries[0];
        assert_eq!(e.entity[0].entity_type.as_str(), "tenant");
        assert_eq!(e.entity[0].entity_name.as_deref(), Some("team-a."));
        assert_eq!(e.ops.len(), 2);
        assert!(!e.ops[0].remove);
        assert_eq!(e.ops[0].value, 1024.0);
        assert!(e.ops[1].remove);
        encodes(&r, 1);
        let d = describe_quotas_request(&vec![("user".to_string(), None)]);
        assert_eq!(d.components[0].match_type, 1);
        assert!(d.strict);
        encodes(&d, 1);
    }

    #[test]
    fn scram_upsert_carries_salt_and_salted_password_only() {
        let r = upsert_scram_request("alice", b"salt", b"salted", 4096);
        let u = &r.upsertions[0];
        assert_eq!(u.mechanism, SCRAM_SHA_512);
        assert_eq!(u.iterations, 4096);
        assert_eq!(&u.salt[..], b"salt");
        assert_eq!(&u.salted_password[..], b"salted");
        encodes(&r, 0);
        encodes(&delete_scram_request("alice"), 0);
        encodes(&describe_scram_request("alice"), 0);
    }

    #[test]
    fn a_broker_is_unsafe_to_restart_when_a_partition_would_drop_below_min_isr() {
        let p = |topic: &str, replicas: &[i32], isr: &[i32]| PartitionReplicas {
            topic: topic.into(),
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
        };
        let min = BTreeMap::from([("strict".to_string(), 3), ("normal".to_string(), 2)]);
        // RF 3, min 2, full ISR: any one broker may go.
        assert!(
            below_min_isr_if_restarted(&[p("normal", &[0, 1, 2], &[0, 1, 2])], &min).is_empty()
        );
        // RF 3, min 3: none may go.
        assert_eq!(
            below_min_isr_if_restarted(&[p("strict", &[0, 1, 2], &[0, 1, 2])], &min),
            BTreeSet::from([0, 1, 2])
        );
        // ISR already at the minimum: its members may not go, the lagging one may.
        assert_eq!(
            below_min_isr_if_restarted(&[p("normal", &[0, 1, 2], &[0, 1])], &min),
            BTreeSet::from([0, 1])
        );
        // One replica: not counted; unknown topic: min 1.
        assert!(
            below_min_isr_if_restarted(
                &[p("strict", &[0], &[0]), p("other", &[0, 1], &[0, 1])],
                &min
            )
            .is_empty()
        );
        encodes(
            &describe_topics_key_request(&["a".into(), "b".into()], "min.insync.replicas"),
            4,
        );
    }

    #[test]
    fn broker_config_requests_name_the_broker_or_the_cluster_wide_default() {
        let set = alter_broker_config_request(
            None,
            &[ConfigChange::Set(
                LEADER_REPLICATION_THROTTLED_RATE.into(),
                "20000000".into(),
            )],
        );
        let r = &set.resources[0];
        assert_eq!(r.resource_type, 4);
        assert_eq!(r.resource_name.as_str(), "");
        assert_eq!(
            r.configs[0].name.as_str(),
            "leader.replication.throttled.rate"
        );
        assert_eq!(r.configs[0].config_operation, OP_SET);
        assert_eq!(r.configs[0].value.as_deref(), Some("20000000"));
        let delete = alter_broker_config_request(
            Some(3),
            &[ConfigChange::Delete(
                LEADER_REPLICATION_THROTTLED_RATE.into(),
            )],
        );
        let r = &delete.resources[0];
        assert_eq!(r.resource_name.as_str(), "3");
        assert_eq!(r.configs[0].config_operation, OP_DELETE);
        assert_eq!(r.configs[0].value, None);
        for v in 0..=1 {
            encodes(&set, v);
            encodes(&delete, v);
        }
        // The bytes Kafka reads at v0: one resource of type 4, name "",
        // one config SET with its value, validate_only false.
        let mut b = bytes::BytesMut::new();
        set.encode(&mut b, 0).expect("encodes");
        let mut want = vec![0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 1, 0, 33];
        want.extend_from_slice(b"leader.replication.throttled.rate");
        want.extend_from_slice(&[0, 0, 8]);
        want.extend_from_slice(b"20000000");
        want.push(0);
        assert_eq!(&b[..], &want[..]);

        let d = describe_broker_config_request(None, LEADER_REPLICATION_THROTTLED_RATE);
        assert_eq!(d.resources[0].resource_type, RESOURCE_BROKER);
        assert_eq!(d.resources[0].resource_name.as_str(), "");
        assert!(d.include_synonyms);
        for v in 1..=4 {
            encodes(&d, v);
        }
    }

    #[test]
    fn the_cluster_wide_value_is_found_as_the_entry_or_as_its_synonym() {
        use messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
        };
        let key = LEADER_REPLICATION_THROTTLED_RATE;
        let syn = |v: &str, source: i8| {
            DescribeConfigsSynonym::default()
                .with_name(s(key))
                .with_value(Some(s(v)))
                .with_source(source)
        };
        let result = |value: &str, source: i8, synonyms: Vec<DescribeConfigsSynonym>| {
            DescribeConfigsResult::default().with_configs(vec![
                DescribeConfigsResourceResult::default()
                    .with_name(s(key))
                    .with_value(Some(s(value)))
                    .with_config_source(source)
                    .with_synonyms(synonyms),
            ])
        };
        // Kafka describing the "" resource.
        assert_eq!(
            cluster_wide_value(&result("5", 3, vec![]), key).as_deref(),
            Some("5")
        );
        // A broker whose own value wins over the cluster-wide one.
        let r = result("9", 2, vec![syn("9", 2), syn("5", 3), syn("1", 5)]);
        assert_eq!(cluster_wide_value(&r, key).as_deref(), Some("5"));
        // Only the static or built-in default: nothing cluster-wide.
        let r = result("7", 4, vec![syn("7", 4), syn("1", 5)]);
        assert_eq!(cluster_wide_value(&r, key), None);
        assert_eq!(
            cluster_wide_value(&DescribeConfigsResult::default(), key),
            None
        );
    }

    #[test]
    fn partitions_and_configs_requests_encode() {
        encodes(&create_partitions_request("t", 4), 3);
        encodes(&describe_topic_config_request("t"), 4);
        encodes(
            &alter_topic_config_request(
                "t",
                &[
                    ConfigChange::Set("a".into(), "b".into()),
                    ConfigChange::Delete("c".into()),
                ],
            ),
            1,
        );
    }
}
