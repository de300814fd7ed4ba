//! Metadata: brokers, topics and partition leaders, with auto-creation.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::cluster::topic_table::{Topic, validate_topic_name};
use crate::errors::BrokerError;

/// Kafka's "not requested" marker for authorized operations.
const OPS_NOT_REQUESTED: i32 = i32::MIN;
/// Without an authorizer every principal may do everything: READ, WRITE,
/// CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const ALL_TOPIC_OPS: i32 =
    (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 10) | (1 << 11);
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub const ALL_CLUSTER_OPS: i32 =
    (1 << 5) | (1 << 7) | (1 << 8) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12);

pub async fn handle(ctx: &RequestContext<'_>, req: MetadataRequest) -> MetadataResponse {
    let broker = ctx.broker;
    let version = ctx.version;
    // v0 asks for all topics with an empty list; later versions with null.
    let wanted = match &req.topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list),
    };
    let may_auto_create =
        broker.config.auto_create_topics_enable && (version < 4 || req.allow_auto_topic_creation);
    let want_topic_ops = req.include_topic_authorized_operations;

    let mut topics = Vec::new();
    match wanted {
        None => {
            // Only what the caller may describe; a listing is not audited.
            for t in broker.topics.all() {
                if ctx.authorize_quietly(Operation::Describe, ResourceType::Topic, &t.name) {
                    topics.push(describe(ctx, &t, want_topic_ops));
                }
            }
        }
        Some(list) => {
            for item in list {
                let found = match &item.name {
                    Some(name) => lookup(ctx, name.as_str(), may_auto_create),
                    None if item.topic_id != Uuid::nil() => broker
                        .topics
                        .get_by_id(item.topic_id)
                        .ok_or(BrokerError::UnknownTopicId)
                        .and_then(|t| {
                            if ctx.authorize(Operation::Describe, ResourceType::Topic, &t.name) {
                                Ok(t)
                            } else {
                                Err(BrokerError::TopicAuthorizationFailed)
                            }
                        }),
                    None => Err(BrokerError::InvalidRequest(
                        "topic without name or id".into(),
                    )),
                };
                topics.push(match found {
                    Ok(t) => describe(ctx, &t, want_topic_ops),
                    Err(e) => {
                        super::count_error(ctx, "Metadata", e.label());
                        MetadataResponseTopic::default()
                            .with_error_code(e.code())
                            .with_name(item.name.clone())
                            .with_topic_id(if version >= 10 {
                                item.topic_id
                            } else {
                                Uuid::nil()
                            })
                            .with_topic_authorized_operations(if want_topic_ops {
                                0
                            } else {
                                OPS_NOT_REQUESTED
                            })
                    }
                });
            }
        }
    }

    let brokers = crate::cluster::routing::brokers(broker, ctx.endpoint())
        .into_iter()
        .map(|b| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id))
                .with_host(StrBytes::from_string(b.host))
                .with_port(i32::from(b.port))
                .with_rack(b.rack.filter(|_| version >= 1).map(StrBytes::from_string))
        })
        .collect();
    let controller = crate::cluster::routing::controller_id(broker);
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id((version >= 2).then(|| StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(if version >= 1 { controller } else { -1 }))
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
                authorized_ops(
                    ctx,
                    ResourceType::Cluster,
                    crate::acl::CLUSTER_NAME,
                    ALL_CLUSTER_OPS,
                )
            } else {
                OPS_NOT_REQUESTED
            },
        )
}

fn lookup(
    ctx: &RequestContext<'_>,
    name: &str,
    may_auto_create: bool,
) -> Result<Arc<Topic>, BrokerError> {
    if !ctx.authorize(Operation::Describe, ResourceType::Topic, name) {
        return Err(BrokerError::TopicAuthorizationFailed);
    }
    if let Some(t) = ctx.broker.topics.get(name) {
        return Ok(t);
    }
    validate_topic_name(name)?;
    if let Some(meta) = ctx.broker.topics.store().group() {
        // Replaying the metadata (a broker just started or added), or the
        // local topics not yet following it: the topic may well exist, so
        // a retriable error, not UNKNOWN_TOPIC_OR_PARTITION, which a
        // subscribed consumer reports as an error to the application.
        if !meta.caught_up() || meta.state().topics.contains_key(name) {
            return Err(BrokerError::LeaderNotAvailable(format!(
                "this broker is catching up on the cluster metadata; topic {name:?}"
            )));
        }
    }
    if may_auto_create {
        // Auto-creation needs CREATE on the cluster or on the topic.
        if !ctx.authorize_quietly(
            Operation::Create,
            ResourceType::Cluster,
            crate::acl::CLUSTER_NAME,
        ) && !ctx.authorize(Operation::Create, ResourceType::Topic, name)
        {
            return Err(BrokerError::TopicAuthorizationFailed);
        }
        ctx.broker.auto_create(name)
    } else {
        Err(BrokerError::UnknownTopicOrPartition)
    }
}

/// The operations of `all` (a bit per ACL operation code) the caller may do
/// on a resource; everything without an authorizer. On the cluster, Kafka
/// reports nothing to a principal that may not DESCRIBE it.
pub fn authorized_ops(ctx: &RequestContext<'_>, rt: ResourceType, name: &str, all: i32) -> i32 {
    if !ctx.broker.authorizer.enabled {
        return all;
    }
    if rt == ResourceType::Cluster && !ctx.authorize_quietly(Operation::Describe, rt, name) {
        return 0;
    }
    (0..31)
        .filter(|bit| all & (1 << bit) != 0)
        .filter(|bit| {
            Operation::from_code(*bit as i8).is_some_and(|op| ctx.authorize_quietly(op, rt, name))
        })
        .fold(0, |acc, bit| acc | (1 << bit))
}

fn describe(ctx: &RequestContext<'_>, t: &Topic, want_ops: bool) -> MetadataResponseTopic {
    let topic_ops = if want_ops {
        authorized_ops(ctx, ResourceType::Topic, &t.name, ALL_TOPIC_OPS)
    } else {
        OPS_NOT_REQUESTED
    };
    MetadataResponseTopic::default()
        .with_error_code(0)
        .with_name(Some(TopicName(StrBytes::from_string(t.name.to_string()))))
        .with_topic_id(if ctx.version >= 10 { t.id } else { Uuid::nil() })
        .with_is_internal(t.is_internal() && ctx.version >= 1)
        .with_topic_authorized_operations(topic_ops)
        .with_partitions(
            t.partitions
                .iter()
                .map(|p| {
                    let r = crate::cluster::routing::route(ctx.broker, t, p.index);
                    // No leader (its broker is fenced): retriable.
                    let error = if r.leader < 0 {
                        BrokerError::LeaderNotAvailable(String::new()).code()
                    } else {
                        0
                    };
                    MetadataResponsePartition::default()
                        .with_error_code(error)
                        .with_partition_index(p.index)
                        .with_leader_id(BrokerId(r.leader))
                        .with_leader_epoch(if ctx.version >= 7 { r.leader_epoch } else { -1 })
                        .with_replica_nodes(r.replicas.into_iter().map(BrokerId).collect())
                        .with_isr_nodes(r.isr.into_iter().map(BrokerId).collect())
                        .with_offline_replicas(if ctx.version >= 5 {
                            r.offline.into_iter().map(BrokerId).collect()
                        } else {
                            Vec::new()
                        })
                })
                .collect(),
        )
}
