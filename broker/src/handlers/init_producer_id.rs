//! InitProducerId: producer ids for idempotent producers.
//!
//! Transactions are not supported. A request with a transactional id gets
//! COORDINATOR_NOT_AVAILABLE — what Kafka answers while no transaction
//! coordinator is available, and what FindCoordinator already answers here
//! for transaction coordinators — so a transactional client fails its
//! `init_transactions` instead of being handed an id that would pretend
//! transactions work. The response has no error message field; the reason
//! is logged.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::broker::now_ms;
use crate::errors::{BrokerError, Result};
use crate::producer_ids::ProducerIdAndEpoch;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let failed = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    match init(ctx, req).await {
        Ok(p) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(p.producer_id))
            .with_producer_epoch(p.epoch),
        Err(e) => {
            super::count_error(ctx, "InitProducerId", e.label());
            tracing::info!(client_id = ?ctx.client_id, peer = %ctx.peer, error = %e, "InitProducerId refused");
            failed.with_error_code(e.code())
        }
    }
}

async fn init(ctx: &RequestContext<'_>, req: InitProducerIdRequest) -> Result<ProducerIdAndEpoch> {
    match &req.transactional_id {
        Some(id)
            if !ctx.authorize(Operation::Write, ResourceType::TransactionalId, id.as_str()) =>
        {
            return Err(BrokerError::TransactionalIdAuthorizationFailed);
        }
        // KIP-679: an idempotent producer needs IDEMPOTENT_WRITE on the
        // cluster or WRITE on some topic.
        None if !ctx.authorize_quietly(
            Operation::IdempotentWrite,
            ResourceType::Cluster,
            crate::acl::CLUSTER_NAME,
        ) && !ctx.authorize_any(Operation::Write, ResourceType::Topic) =>
        {
            return Err(BrokerError::ClusterAuthorizationFailed);
        }
        _ => {}
    }
    if req.transactional_id.is_some() {
        return Err(BrokerError::CoordinatorNotAvailable(
            "transactions are not supported by this broker; InitProducerId serves idempotent producers only".into(),
        ));
    }
    // producer_id / producer_epoch exist from v3 (KIP-360); both -1 means none.
    let current = match (ctx.version >= 3, req.producer_id.0, req.producer_epoch) {
        (false, _, _) | (true, -1, -1) => None,
        (true, id, epoch) if id < 0 || epoch < 0 => {
            return Err(BrokerError::InvalidRequest(format!(
                "producer id {id} and epoch {epoch} must both be set or both be -1"
            )));
        }
        (true, id, epoch) => Some(ProducerIdAndEpoch {
            producer_id: id,
            epoch,
        }),
    };
    let broker = ctx.broker.clone();
    tokio::task::spawn_blocking(move || {
        broker
            .producer_ids
            .init(broker.topics.store(), current, now_ms())
    })
    .await
    .map_err(|e| BrokerError::Storage(format!("producer id task failed: {e}")))?
}
