//! OffsetDelete: removes committed offsets of a group, except for topics
//! the group's members are subscribed to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;

pub async fn handle(ctx: &RequestContext<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    if !ctx.authorize(Operation::Delete, ResourceType::Group, &req.group_id) {
        let e = BrokerError::GroupAuthorizationFailed;
        super::count_error(ctx, "OffsetDelete", e.label());
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    let denied: Vec<String> = req
        .topics
        .iter()
        .map(|t| t.name.to_string())
        .filter(|t| !ctx.authorize(Operation::Read, ResourceType::Topic, t))
        .collect();
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .filter(|t| !denied.iter().any(|d| d == t.name.as_str()))
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let results = match ctx
        .broker
        .groups
        .delete_offsets(&ctx.broker.topics, &req.group_id, &wanted)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            super::count_error(ctx, "OffsetDelete", e.label());
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
    };
    let mut codes = results.into_iter().map(|r| match r {
        Ok(()) => 0,
        Err(e) => {
            super::count_error(ctx, "OffsetDelete", e.label());
            e.code()
        }
    });
    OffsetDeleteResponse::default().with_topics(
        req.topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let code = if denied.iter().any(|d| d == t.name.as_str()) {
                            BrokerError::TopicAuthorizationFailed.code()
                        } else {
                            codes.next().unwrap_or(0)
                        };
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
