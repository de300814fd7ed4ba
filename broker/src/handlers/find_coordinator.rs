//! FindCoordinator: on a single broker it coordinates every group; in a
//! cluster a group's coordinator is the leader of its partition of
//! `__consumer_offsets` (see `groups::ownership`), and the first
//! FindCoordinator creates that topic. Transactions do not exist here, so a
//! transaction coordinator is never available.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;

use tracing::debug;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::cluster::routing::{self, BrokerEndpoint};
use crate::errors::BrokerError;
use crate::groups::OFFSETS_TOPIC;
use crate::groups::log_format::partition_for;

const GROUP: i8 = 0;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let keys = if ctx.version >= 4 {
        req.coordinator_keys.clone()
    } else {
        vec![req.key.clone()]
    };
    let brokers = routing::brokers(ctx.broker, ctx.endpoint());
    let answers: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let found = match req.key_type {
                GROUP if !ctx.authorize(Operation::Describe, ResourceType::Group, key.as_str()) => {
                    Err(BrokerError::GroupAuthorizationFailed)
                }
                GROUP => Ok(()),
                1 if !ctx.authorize(
                    Operation::Describe,
                    ResourceType::TransactionalId,
                    key.as_str(),
                ) =>
                {
                    Err(BrokerError::TransactionalIdAuthorizationFailed)
                }
                1 => Err(BrokerError::CoordinatorNotAvailable(
                    "transactions are not supported by this broker".into(),
                )),
                other => Err(BrokerError::InvalidRequest(format!(
                    "unknown coordinator key type {other}"
                ))),
            };
            match found.and_then(|()| locate(ctx, key.as_str(), &brokers)) {
                Ok(b) => Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(b.id))
                    .with_host(StrBytes::from_string(b.host.clone()))
                    .with_port(i32::from(b.port)),
                Err(e) => {
                    super::count_error(ctx, "FindCoordinator", e.label());
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                }
            }
        })
        .collect();
    if ctx.version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers);
    }
    let c = answers.into_iter().next().unwrap_or_default();
    FindCoordinatorResponse::default()
        .with_error_code(c.error_code)
        .with_error_message(if ctx.version >= 1 {
            c.error_message
        } else {
            None
        })
        .with_node_id(c.node_id)
        .with_host(c.host)
        .with_port(c.port)
}

/// The broker coordinating `group`: this one alone; in a cluster the leader
/// of the group's `__consumer_offsets` partition, once that topic exists.
fn locate(
    ctx: &RequestContext<'_>,
    group: &str,
    brokers: &[BrokerEndpoint],
) -> Result<BrokerEndpoint, BrokerError> {
    let broker = ctx.broker;
    let me = || {
        brokers
            .iter()
            .find(|b| b.id == broker.node_id())
            .cloned()
            .ok_or_else(|| BrokerError::CoordinatorNotAvailable("no listener".into()))
    };
    if broker.topics.store().group().is_none() {
        return me();
    }
    let Some(topic) = broker.topics.get(OFFSETS_TOPIC) else {
        if broker.groups.begin_creating_topic() {
            let b = Arc::clone(broker);
            tokio::task::spawn_blocking(move || {
                if let Err(e) = b.groups.create_topic(&b.topics, &b.config) {
                    debug!(error = %e, "{OFFSETS_TOPIC} not created yet");
                }
            });
        }
        return Err(BrokerError::CoordinatorNotAvailable(format!(
            "{OFFSETS_TOPIC} is being created"
        )));
    };
    let index = partition_for(group, topic.partitions.len() as i32);
    let leader = routing::route(broker, &topic, index).leader;
    brokers
        .iter()
        .find(|b| b.id == leader)
        .cloned()
        .ok_or_else(|| {
            BrokerError::CoordinatorNotAvailable(format!(
                "the coordinator, broker {leader}, is not known here yet"
            ))
        })
}
