//! OffsetCommit: durable in `__consumer_offsets` before it is acknowledged.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::groups::offsets::CommitRequest;

pub async fn handle(ctx: &RequestContext<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let entries: Vec<CommitRequest> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| CommitRequest {
                topic: t.name.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            })
        })
        .collect();
    let result = ctx
        .broker
        .groups
        .commit(
            &ctx.broker.topics,
            &req.group_id,
            req.generation_id_or_member_epoch,
            &req.member_id,
            if ctx.version >= 7 {
                req.group_instance_id.as_deref()
            } else {
                None
            },
            entries,
        )
        .await;
    let mut codes = match result {
        Ok(per) => per
            .into_iter()
            .map(|r| match r {
                Ok(()) => 0,
                Err(e) => {
                    super::count_error(ctx, "OffsetCommit", e.label());
                    e.code()
                }
            })
            .collect::<Vec<_>>()
            .into_iter(),
        Err(e) => {
            super::count_error(ctx, "OffsetCommit", e.label());
            let n = req.topics.iter().map(|t| t.partitions.len()).sum();
            vec![e.code(); n].into_iter()
        }
    };
    OffsetCommitResponse::default().with_topics(
        req.topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(codes.next().unwrap_or(0))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
