//! Heartbeat: keeps a member's session alive; tells it when to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::coordinator::validate_group_id;

pub async fn handle(ctx: &RequestContext<'_>, req: HeartbeatRequest) -> HeartbeatResponse {
    let result = validate_group_id(&req.group_id).and_then(|()| {
        if !ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
            return Err(BrokerError::GroupAuthorizationFailed);
        }
        ctx.coordinates(&req.group_id)?;
        ctx.broker.groups.coordinator.heartbeat(
            &req.group_id,
            req.generation_id,
            &req.member_id,
            req.group_instance_id.as_deref(),
        )
    });
    match result {
        Ok(()) => HeartbeatResponse::default(),
        Err(e) => {
            super::count_error(ctx, "Heartbeat", e.label());
            HeartbeatResponse::default().with_error_code(e.code())
        }
    }
}
