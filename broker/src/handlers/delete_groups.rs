//! DeleteGroups: removes Empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;

pub async fn handle(ctx: &RequestContext<'_>, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(req.groups_names.len());
    for id in req.groups_names {
        let outcome = if ctx.authorize(Operation::Delete, ResourceType::Group, &id) {
            ctx.broker
                .groups
                .delete_group(&ctx.broker.topics, &id)
                .await
        } else {
            Err(BrokerError::GroupAuthorizationFailed)
        };
        let code = match outcome {
            Ok(()) => 0,
            Err(e) => {
                super::count_error(ctx, "DeleteGroups", e.label());
                e.code()
            }
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
