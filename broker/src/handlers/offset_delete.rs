//! OffsetDelete: removes committed offsets of a group, except for topics
//! the group's members are subscribed to.

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::RequestContext;

pub async fn handle(ctx: &RequestContext<'_>, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    let results = match ctx
        .broker
        .groups
        .delete_offsets(&req.group_id, &wanted)
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
                        OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(0))
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
