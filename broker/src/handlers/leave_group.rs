//! LeaveGroup: one member (v0–2) or a batch of members (v3+, by member id
//! or group.instance.id) leave; the group rebalances.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::coordinator::validate_group_id;

pub async fn handle(ctx: &RequestContext<'_>, req: LeaveGroupRequest) -> LeaveGroupResponse {
    let valid = validate_group_id(&req.group_id).and_then(|()| {
        if ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id) {
            ctx.coordinates(&req.group_id)
        } else {
            Err(BrokerError::GroupAuthorizationFailed)
        }
    });
    if let Err(e) = valid {
        super::count_error(ctx, "LeaveGroup", e.label());
        return LeaveGroupResponse::default().with_error_code(e.code());
    }
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let results = ctx.broker.groups.coordinator.leave(&req.group_id, &members);
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        super::count_error(ctx, "LeaveGroup", e.label());
    }
    if ctx.version < 3 {
        let code = results
            .first()
            .and_then(|r| r.as_ref().err())
            .map_or(0, |e| e.code());
        return LeaveGroupResponse::default().with_error_code(code);
    }
    LeaveGroupResponse::default().with_members(
        members
            .into_iter()
            .zip(results)
            .map(|((member_id, instance), r)| {
                MemberResponse::default()
                    .with_member_id(StrBytes::from_string(member_id))
                    .with_group_instance_id(instance.map(StrBytes::from_string))
                    .with_error_code(r.err().map_or(0, |e| e.code()))
            })
            .collect(),
    )
}
