//! DescribeGroups: state, protocol and members (with their subscription and
//! assignment) of each group.

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::coordinator::validate_group_id;

/// Without an authorizer: READ, DESCRIBE, DELETE on a group.
const ALL_GROUP_OPS: i32 = (1 << 3) | (1 << 6) | (1 << 8);
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub async fn handle(
    ctx: &RequestContext<'_>,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let v = ctx.version;
    let want_ops = req.include_authorized_operations && v >= 3;
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(if want_ops {
                    super::metadata::authorized_ops(ctx, ResourceType::Group, &id, ALL_GROUP_OPS)
                } else {
                    OPS_NOT_REQUESTED
                });
            if let Err(e) = validate_group_id(&id) {
                super::count_error(ctx, "DescribeGroups", e.label());
                return base.with_error_code(e.code());
            }
            if !ctx.authorize(Operation::Describe, ResourceType::Group, &id) {
                let e = BrokerError::GroupAuthorizationFailed;
                super::count_error(ctx, "DescribeGroups", e.label());
                return base.with_error_code(e.code());
            }
            if let Err(e) = ctx.coordinates(&id) {
                super::count_error(ctx, "DescribeGroups", e.label());
                return base.with_error_code(e.code());
            }
            let Some(d) = ctx.broker.groups.coordinator.describe(&id) else {
                if v >= 6 {
                    let e = BrokerError::GroupIdNotFound(id.to_string());
                    return base
                        .with_error_code(e.code())
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                        .with_group_state(StrBytes::from_static_str("Dead"));
                }
                return base.with_group_state(StrBytes::from_static_str("Dead"));
            };
            base.with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(StrBytes::from_string(d.protocol_type))
                .with_protocol_data(StrBytes::from_string(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_group_instance_id(if v >= 4 {
                                    m.instance_id.map(StrBytes::from_string)
                                } else {
                                    None
                                })
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                )
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
