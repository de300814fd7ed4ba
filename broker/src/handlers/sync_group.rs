//! SyncGroup: the leader hands in the assignment, everyone gets theirs.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::coordinator::SyncParams;

pub async fn handle(ctx: &RequestContext<'_>, req: SyncGroupRequest) -> SyncGroupResponse {
    let v = ctx.version;
    let params = SyncParams {
        group_id: req.group_id.to_string(),
        generation: req.generation_id,
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        protocol_type: req.protocol_type.as_ref().map(|s| s.to_string()),
        protocol_name: req.protocol_name.as_ref().map(|s| s.to_string()),
        assignments: req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect(),
    };
    let outcome = if params.group_id.is_empty() {
        Err(BrokerError::InvalidGroupId(String::new()))
    } else if !ctx.authorize(Operation::Read, ResourceType::Group, &params.group_id) {
        Err(BrokerError::GroupAuthorizationFailed)
    } else if let Err(e) = ctx.coordinates(&params.group_id) {
        Err(e)
    } else {
        let rx = ctx.broker.groups.coordinator.sync(params);
        // Dropped when the group's coordination moved away meanwhile.
        rx.await.unwrap_or(Err(BrokerError::NotCoordinator))
    };
    match outcome {
        Ok(s) => {
            let resp = SyncGroupResponse::default().with_assignment(s.assignment);
            if v >= 5 {
                resp.with_protocol_type(s.protocol_type.map(StrBytes::from_string))
                    .with_protocol_name(s.protocol_name.map(StrBytes::from_string))
            } else {
                resp
            }
        }
        Err(e) => {
            super::count_error(ctx, "SyncGroup", e.label());
            SyncGroupResponse::default().with_error_code(e.code())
        }
    }
}
