//! ListGroups: every group, optionally filtered by state (v4+) and type (v5+).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};

pub async fn handle(ctx: &RequestContext<'_>, req: ListGroupsRequest) -> ListGroupsResponse {
    let v = ctx.version;
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if !types.is_empty() && !types.iter().any(|t| t == "classic") {
        return ListGroupsResponse::default();
    }
    let cluster_describe = ctx.authorize_quietly(
        Operation::Describe,
        ResourceType::Cluster,
        crate::acl::CLUSTER_NAME,
    );
    let groups = ctx
        .broker
        .groups
        .coordinator
        .list()
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.name().to_ascii_lowercase()))
        // DESCRIBE on the cluster lists every group; else those the caller
        // may describe (Kafka's rule, not audited: it is a listing).
        .filter(|g| {
            cluster_describe
                || ctx.authorize_quietly(Operation::Describe, ResourceType::Group, &g.group_id)
        })
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type))
                .with_group_state(if v >= 4 {
                    StrBytes::from_static_str(g.state.name())
                } else {
                    StrBytes::default()
                })
                .with_group_type(if v >= 5 {
                    StrBytes::from_static_str("classic")
                } else {
                    StrBytes::default()
                })
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}
