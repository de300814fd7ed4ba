//! OffsetCommit: durable in `__consumer_offsets` before it is acknowledged.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::offsets::CommitRequest;

pub async fn handle(ctx: &RequestContext<'_>, req: OffsetCommitRequest) -> OffsetCommitResponse {
    // READ on the group, then READ on each topic; only authorized
    // partitions are committed (Kafka's order).
    let group_ok = ctx.authorize(Operation::Read, ResourceType::Group, &req.group_id);
    let topic_ok: Vec<bool> = req
        .topics
        .iter()
        .map(|t| group_ok && ctx.authorize(Operation::Read, ResourceType::Topic, t.name.as_str()))
        .collect();
    let entries: Vec<CommitRequest> = req
        .topics
        .iter()
        .zip(&topic_ok)
        .filter(|(_, ok)| **ok)
        .flat_map(|(t, _)| {
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
    let result = if entries.is_empty() && !group_ok {
        Err(BrokerError::GroupAuthorizationFailed)
    } else if entries.is_empty() {
        Ok(Vec::new())
    } else {
        ctx.broker
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
            .await
    };
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
            let n = req
                .topics
                .iter()
                .zip(&topic_ok)
                .filter(|(_, ok)| **ok || !group_ok)
                .map(|(t, _)| t.partitions.len())
                .sum();
            vec![e.code(); n].into_iter()
        }
    };
    let denied = if group_ok {
        BrokerError::TopicAuthorizationFailed.code()
    } else {
        BrokerError::GroupAuthorizationFailed.code()
    };
    OffsetCommitResponse::default().with_topics(
        req.topics
            .into_iter()
            .zip(topic_ok)
            .map(|(t, ok)| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let code = if ok || !group_ok {
                            codes.next().unwrap_or(denied)
                        } else {
                            denied
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(code)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
