//! ListOffsets: earliest, latest, max-timestamp and by-timestamp lookups.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::records::RecordBatchDecoder;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::errors::{BrokerError, Result};
use crate::partition::Partition;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;
const LATEST_TIERED: i64 = -5;

pub async fn handle(ctx: &RequestContext<'_>, req: ListOffsetsRequest) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let authorized = ctx.authorize(Operation::Describe, ResourceType::Topic, t.name.as_str());
        let topic = ctx.broker.topics.get(t.name.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                // Field exists from v4; setting it earlier fails encoding.
                .with_leader_epoch(if ctx.version >= 4 { 0 } else { -1 });
            let found = if !authorized {
                Err(BrokerError::TopicAuthorizationFailed)
            } else {
                topic
                    .as_ref()
                    .ok_or(BrokerError::UnknownTopicOrPartition)
                    .and_then(|t| {
                        let part = t
                            .partition(p.partition_index)
                            .cloned()
                            .ok_or(BrokerError::UnknownTopicOrPartition)?;
                        crate::cluster::routing::check_leader(ctx.broker, t, p.partition_index)?;
                        let epoch =
                            crate::cluster::routing::route(ctx.broker, t, p.partition_index)
                                .leader_epoch;
                        Ok((part, epoch))
                    })
            };
            let resp = match &found {
                Ok((_, epoch)) if ctx.version >= 4 => resp.with_leader_epoch(*epoch),
                _ => resp,
            };
            let result = match found {
                Ok((partition, _)) => {
                    let ts = p.timestamp;
                    tokio::task::spawn_blocking(move || lookup(&partition, ts))
                        .await
                        .unwrap_or_else(|e| Err(BrokerError::Storage(e.to_string())))
                }
                Err(e) => Err(e),
            };
            partitions.push(match result {
                Ok(Some((timestamp, offset))) => resp.with_timestamp(timestamp).with_offset(offset),
                Ok(None) => resp,
                Err(e) => {
                    super::count_error(ctx, "ListOffsets", e.label());
                    resp.with_error_code(e.code())
                }
            });
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (timestamp, offset) for one partition, or None when nothing matches.
fn lookup(p: &Partition, ts: i64) -> Result<Option<(i64, i64)>> {
    let hw = p.high_watermark();
    match ts {
        LATEST => Ok(Some((-1, hw))),
        EARLIEST | EARLIEST_LOCAL => Ok(Some((-1, p.log_start_offset()))),
        // No tiered storage: nothing is tiered.
        LATEST_TIERED => Ok(Some((-1, -1))),
        MAX_TIMESTAMP => Ok(p.max_timestamp().or(Some((-1, -1)))),
        ts if ts < 0 => Err(BrokerError::InvalidRequest(format!(
            "unknown timestamp sentinel {ts}"
        ))),
        ts => by_timestamp(p, ts, hw),
    }
}

/// The first record at or after `ts`: the log finds the batch, decoding it
/// (decompressing if need be) finds the record.
fn by_timestamp(p: &Partition, ts: i64, hw: i64) -> Result<Option<(i64, i64)>> {
    let Some(slice) = p.batch_for_timestamp(ts)? else {
        return Ok(None);
    };
    let mut bytes = slice
        .load()
        .map_err(|e| BrokerError::Storage(e.to_string()))?;
    let set = RecordBatchDecoder::decode(&mut bytes)
        .map_err(|e| BrokerError::CorruptMessage(format!("stored batch does not decode: {e}")))?;
    Ok(set
        .records
        .iter()
        .find(|r| r.timestamp >= ts && r.offset < hw)
        .map(|r| (r.timestamp, r.offset)))
}
