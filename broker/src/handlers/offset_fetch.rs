//! OffsetFetch: committed offsets of one group (v1–7) or several (v8+).
//! There are no transactions, so offsets are always stable.

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::BrokerError;
use crate::groups::CommittedOffset;
use crate::groups::coordinator::{FetchedOffsets, validate_group_id};

fn fetch(
    ctx: &RequestContext<'_>,
    group: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
) -> Result<(FetchedOffsets, Vec<String>), i16> {
    if let Err(e) = validate_group_id(group) {
        super::count_error(ctx, "OffsetFetch", e.label());
        return Err(e.code());
    }
    if !ctx.authorize(Operation::Describe, ResourceType::Group, group) {
        let e = BrokerError::GroupAuthorizationFailed;
        super::count_error(ctx, "OffsetFetch", e.label());
        return Err(e.code());
    }
    if let Err(e) = ctx.coordinates(group) {
        super::count_error(ctx, "OffsetFetch", e.label());
        return Err(e.code());
    }
    let explicit = wanted.is_some();
    let mut found = ctx
        .broker
        .groups
        .coordinator
        .fetch_offsets(group, wanted.as_deref());
    // Topics the caller may not describe: dropped from "all topics", and
    // answered TOPIC_AUTHORIZATION_FAILED when asked for by name.
    let mut denied = Vec::new();
    found.retain(|(t, _)| {
        if explicit {
            if !ctx.authorize(Operation::Describe, ResourceType::Topic, t) {
                denied.push(t.clone());
            }
            true
        } else {
            ctx.authorize_quietly(Operation::Describe, ResourceType::Topic, t)
        }
    });
    Ok((found, denied))
}

fn topic_code(denied: &[String], topic: &str) -> i16 {
    if denied.iter().any(|d| d == topic) {
        BrokerError::TopicAuthorizationFailed.code()
    } else {
        0
    }
}

fn topic_name(s: String) -> TopicName {
    TopicName(StrBytes::from_string(s))
}

pub async fn handle(ctx: &RequestContext<'_>, req: OffsetFetchRequest) -> OffsetFetchResponse {
    let v = ctx.version;
    if v >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.to_string(), t.partition_indexes))
                        .collect()
                });
                let resp = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                match fetch(ctx, &g.group_id, wanted) {
                    Err(code) => resp.with_error_code(code),
                    Ok((found, denied)) => resp.with_topics(
                        found
                            .into_iter()
                            .map(|(t, parts)| {
                                let code = topic_code(&denied, &t);
                                OffsetFetchResponseTopics::default()
                                    .with_name(topic_name(t))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, o)| {
                                                let (offset, epoch, meta) = split(o);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_error_code(code)
                                                    .with_partition_index(p)
                                                    .with_committed_offset(offset)
                                                    .with_committed_leader_epoch(epoch)
                                                    .with_metadata(Some(meta))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
                }
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    // v1 asks for a list of topics; v2+ may ask for all with null.
    let wanted = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.to_string(), t.partition_indexes))
            .collect()
    });
    let group: GroupId = req.group_id;
    match fetch(ctx, &group, wanted) {
        Err(code) => OffsetFetchResponse::default().with_error_code(if v >= 2 { code } else { 0 }),
        Ok((found, denied)) => OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(t, parts)| {
                    let code = topic_code(&denied, &t);
                    OffsetFetchResponseTopic::default()
                        .with_name(topic_name(t))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, meta) = split(o);
                                    OffsetFetchResponsePartition::default()
                                        .with_error_code(code)
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(if v >= 5 {
                                            epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(meta))
                                })
                                .collect(),
                        )
                })
                .collect(),
        ),
    }
}

/// (offset, leader epoch, metadata); -1, -1, "" when nothing is committed.
fn split(o: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, StrBytes::from_string(o.metadata)),
        None => (-1, -1, StrBytes::default()),
    }
}
