//! FindCoordinator: on a single broker it coordinates every group; in a
//! cluster every broker names the same coordinator for a group (see
//! `cluster::routing::group_coordinator`). Transactions do not exist here,
//! so a transaction coordinator is never available.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;

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
    let brokers = crate::cluster::routing::brokers(ctx.broker, ctx.endpoint());
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
            match found {
                Ok(()) => {
                    let b = crate::cluster::routing::group_coordinator(&brokers, key.as_str());
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(b.id))
                        .with_host(StrBytes::from_string(b.host.clone()))
                        .with_port(i32::from(b.port))
                }
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
