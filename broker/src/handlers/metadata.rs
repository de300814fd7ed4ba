//! Metadata: brokers, topics and partition leaders, with auto-creation.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::RequestContext;
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
    let topic_ops = if req.include_topic_authorized_operations {
        ALL_TOPIC_OPS
    } else {
        OPS_NOT_REQUESTED
    };

    let mut topics = Vec::new();
    match wanted {
        None => {
            for t in broker.topics.all() {
                topics.push(describe(ctx, &t, topic_ops));
            }
        }
        Some(list) => {
            for item in list {
                let found = match &item.name {
                    Some(name) => lookup(ctx, name.as_str(), may_auto_create),
                    None if item.topic_id != Uuid::nil() => broker
                        .topics
                        .get_by_id(item.topic_id)
                        .ok_or(BrokerError::UnknownTopicId),
                    None => Err(BrokerError::InvalidRequest(
                        "topic without name or id".into(),
                    )),
                };
                topics.push(match found {
                    Ok(t) => describe(ctx, &t, topic_ops),
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
                            .with_topic_authorized_operations(topic_ops)
                    }
                });
            }
        }
    }

    let ep = ctx.endpoint();
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.node_id()))
                .with_host(StrBytes::from_string(ep.host.clone()))
                .with_port(i32::from(ep.port))
                .with_rack(
                    broker
                        .config
                        .broker_rack
                        .clone()
                        .filter(|_| version >= 1)
                        .map(StrBytes::from_string),
                ),
        ])
        .with_cluster_id((version >= 2).then(|| StrBytes::from_string(broker.cluster_id.clone())))
        .with_controller_id(BrokerId(if version >= 1 { broker.node_id() } else { -1 }))
        .with_topics(topics)
        .with_cluster_authorized_operations(
            if req.include_cluster_authorized_operations && (8..=10).contains(&version) {
                ALL_CLUSTER_OPS
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
    if let Some(t) = ctx.broker.topics.get(name) {
        return Ok(t);
    }
    validate_topic_name(name)?;
    if may_auto_create {
        ctx.broker.auto_create(name)
    } else {
        Err(BrokerError::UnknownTopicOrPartition)
    }
}

fn describe(ctx: &RequestContext<'_>, t: &Topic, topic_ops: i32) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
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
                    MetadataResponsePartition::default()
                        .with_error_code(0)
                        .with_partition_index(p.index)
                        .with_leader_id(node)
                        .with_leader_epoch(if ctx.version >= 7 { 0 } else { -1 })
                        .with_replica_nodes(vec![node])
                        .with_isr_nodes(vec![node])
                        .with_offline_replicas(vec![])
                })
                .collect(),
        )
}
