//! JoinGroup: enter a group's rebalance; the answer comes when the round
//! completes (see `groups::coordinator`).

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::coordinator::JoinParams;

pub async fn handle(ctx: &RequestContext<'_>, req: JoinGroupRequest) -> JoinGroupResponse {
    let v = ctx.version;
    let params = JoinParams {
        group_id: req.group_id.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        client_id: ctx.client_id.unwrap_or_default().to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if v >= 1 { req.rebalance_timeout_ms } else { -1 },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: v >= 4,
        supports_skip_assignment: v >= 9,
    };
    let outcome = if !ctx.authorize(Operation::Read, ResourceType::Group, &params.group_id) {
        Err(BrokerError::GroupAuthorizationFailed)
    } else if let Err(e) = ctx.coordinates(&params.group_id) {
        Err(e)
    } else {
        let rx = ctx.broker.groups.coordinator.join(params);
        // Dropped when the group's coordination moved away meanwhile.
        rx.await.unwrap_or(Err(BrokerError::NotCoordinator))
    };
    match outcome {
        Ok(j) => JoinGroupResponse::default()
            .with_generation_id(j.generation)
            .with_protocol_type(if v >= 7 {
                j.protocol_type.map(StrBytes::from_string)
            } else {
                None
            })
            .with_protocol_name(j.protocol_name.map(StrBytes::from_string).or_else(|| {
                // v0-6 have a non-nullable protocol name.
                (v < 7).then(StrBytes::default)
            }))
            .with_leader(StrBytes::from_string(j.leader))
            .with_skip_assignment(v >= 9 && j.skip_assignment)
            .with_member_id(StrBytes::from_string(j.member_id))
            .with_members(
                j.members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(id))
                            .with_group_instance_id(if v >= 5 {
                                instance.map(StrBytes::from_string)
                            } else {
                                None
                            })
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(e) => {
            super::count_error(ctx, "JoinGroup", e.label());
            let member_id = match &e {
                BrokerError::MemberIdRequired(id) => id.clone(),
                _ => String::new(),
            };
            JoinGroupResponse::default()
                .with_error_code(e.code())
                .with_generation_id(-1)
                .with_protocol_name((v < 7).then(StrBytes::default))
                .with_member_id(StrBytes::from_string(member_id))
        }
    }
}
