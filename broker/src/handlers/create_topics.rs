//! CreateTopics, with validate-only and the created topic's configs (v5+).

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::config_entries::topic_entries;
use crate::errors::BrokerError;
use crate::quota::QuotaKind;

pub async fn handle(ctx: &RequestContext<'_>, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let broker = ctx.broker;
    // CREATE on the cluster covers every topic; else it is per topic.
    let cluster_create = ctx.authorize_quietly(
        Operation::Create,
        ResourceType::Cluster,
        crate::acl::CLUSTER_NAME,
    );
    let mut seen = std::collections::HashSet::new();
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.to_string();
        let result = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let outcome = (|| {
            if !seen.insert(name.clone()) {
                return Err(BrokerError::InvalidRequest(format!(
                    "topic {name:?} appears more than once in the request"
                )));
            }
            if !cluster_create && !ctx.authorize(Operation::Create, ResourceType::Topic, &name) {
                return Err(BrokerError::TopicAuthorizationFailed);
            }
            let (partitions, rf) = if t.assignments.is_empty() {
                (
                    if t.num_partitions == -1 {
                        broker.config.num_partitions
                    } else {
                        t.num_partitions
                    },
                    if t.replication_factor == -1 {
                        broker.config.default_replication_factor
                    } else {
                        t.replication_factor
                    },
                )
            } else {
                if broker.topics.store().group().is_some() {
                    // Replicas are chosen by cluster::assignment; honouring a
                    // client's choice is not implemented yet.
                    return Err(BrokerError::InvalidRequest(
                        "explicit replica assignments are not supported in a cluster yet; give partitions and replication factor".into(),
                    ));
                }
                if t.num_partitions != -1 || t.replication_factor != -1 {
                    return Err(BrokerError::InvalidRequest(
                        "give either replica assignments or partitions and replication factor, not both".into(),
                    ));
                }
                for (i, a) in t.assignments.iter().enumerate() {
                    if a.partition_index != i as i32 {
                        return Err(BrokerError::InvalidRequest(
                            "replica assignments must cover partitions 0..n in order".into(),
                        ));
                    }
                    if a.broker_ids.iter().any(|b| b.0 != broker.node_id())
                        || a.broker_ids.is_empty()
                    {
                        return Err(BrokerError::InvalidReplicationFactor(format!(
                            "assignment of partition {} names brokers that do not exist (only broker {} does)",
                            a.partition_index,
                            broker.node_id()
                        )));
                    }
                }
                (
                    t.assignments.len() as i32,
                    t.assignments[0].broker_ids.len() as i16,
                )
            };
            let mut configs = BTreeMap::new();
            for c in &t.configs {
                let Some(v) = &c.value else {
                    return Err(BrokerError::InvalidConfig(format!(
                        "config {} has a null value",
                        c.name.as_str()
                    )));
                };
                configs.insert(c.name.to_string(), v.to_string());
            }
            if !req.validate_only {
                ctx.admit_mutation(ctx.version >= 6)?;
            }
            let topic = broker
                .topics
                .create(&name, partitions, rf, configs, req.validate_only)?;
            if !req.validate_only {
                ctx.record_quota(QuotaKind::ControllerMutation, f64::from(partitions));
            }
            Ok((topic, partitions))
        })();
        results.push(match outcome {
            Ok((topic, partitions)) => {
                let configs = topic_entries(broker, &topic.overrides)
                    .into_iter()
                    .map(|e| {
                        CreatableTopicConfigs::default()
                            .with_name(StrBytes::from_string(e.name))
                            .with_value(e.value.map(StrBytes::from_string))
                            .with_read_only(e.read_only)
                            .with_config_source(e.source as i8)
                            .with_is_sensitive(false)
                    })
                    .collect();
                // The created topic's details exist from v5, its id from v7.
                if ctx.version < 5 {
                    result
                } else {
                    let result = result
                        .with_num_partitions(partitions)
                        .with_replication_factor(topic.replication_factor)
                        .with_configs(Some(configs));
                    if ctx.version >= 7 && !req.validate_only {
                        result.with_topic_id(topic.id)
                    } else {
                        result
                    }
                }
            }
            Err(e) => {
                super::count_error(ctx, "CreateTopics", e.label());
                result
                    .with_error_code(e.code())
                    .with_error_message(Some(StrBytes::from_string(e.to_string())))
            }
        });
    }
    CreateTopicsResponse::default().with_topics(results)
}
