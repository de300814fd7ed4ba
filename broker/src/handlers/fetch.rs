//! Fetch: whole batches from each partition's log, long-polling until
//! `min_bytes` are there or `max_wait_ms` has passed. Waiting is on the
//! partitions' append signals, so a fetch wakes the moment data arrives.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use skiff_log::{ReadSlice, batch};
use tokio::time::Instant;

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::cluster::topic_table::Topic;
use crate::errors::BrokerError;
use crate::partition::Partition;
use crate::quota::QuotaKind;

/// Longest a fetch may park, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// A fetch reading at most this many bytes reads them on the async worker.
const INLINE_READ_BYTES: usize = 64 << 10;

/// One requested partition, resolved.
struct Target {
    topic: usize,
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: Result<Arc<Partition>, BrokerError>,
}

pub async fn handle(ctx: &RequestContext<'_>, req: FetchRequest) -> FetchResponse {
    // Fetch sessions (KIP-227) are not kept: session id 0 tells the client
    // to send full requests, which every client supports.
    if req.session_id != 0 {
        super::count_error(ctx, "Fetch", "fetch_session_id_not_found");
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let by_id = ctx.version >= 13;
    let mut topics: Vec<(
        Option<Arc<Topic>>,
        &kafka_protocol::messages::fetch_request::FetchTopic,
    )> = Vec::new();
    let mut targets = Vec::new();
    for (ti, ft) in req.topics.iter().enumerate() {
        let topic = if by_id {
            ctx.broker.topics.get_by_id(ft.topic_id)
        } else {
            ctx.broker.topics.get(ft.topic.as_str())
        };
        // An unknown name is authorized as named, so a denied principal
        // cannot tell missing topics from forbidden ones.
        let authorized = match (&topic, by_id) {
            (Some(t), _) => ctx.authorize(Operation::Read, ResourceType::Topic, &t.name),
            (None, false) => ctx.authorize(Operation::Read, ResourceType::Topic, ft.topic.as_str()),
            (None, true) => true,
        };
        for fp in &ft.partitions {
            let partition = match &topic {
                _ if !authorized => Err(BrokerError::TopicAuthorizationFailed),
                None if by_id => Err(BrokerError::UnknownTopicId),
                None => Err(BrokerError::UnknownTopicOrPartition),
                Some(t) => t
                    .partition(fp.partition)
                    .cloned()
                    .ok_or(BrokerError::UnknownTopicOrPartition)
                    .and_then(|p| {
                        crate::cluster::routing::check_leader(ctx.broker, t, fp.partition)
                            .map(|()| p)
                    }),
            };
            targets.push(Target {
                topic: ti,
                index: fp.partition,
                offset: fp.fetch_offset,
                max_bytes: fp.partition_max_bytes.max(0) as usize,
                partition,
            });
        }
        topics.push((topic, ft));
    }

    let max_bytes = if ctx.version >= 3 {
        req.max_bytes.max(0) as usize
    } else {
        usize::MAX
    };
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = req.min_bytes.max(0) as usize;

    let (reads, planned) = loop {
        // Register interest before looking, so an append in between wakes us.
        let mut signals: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = targets
            .iter()
            .filter_map(|t| t.partition.as_ref().ok())
            .map(|p| {
                let mut n = Box::pin(p.appended());
                n.as_mut().enable();
                n
            })
            .collect();
        let reads = plan(&targets, max_bytes);
        let bytes: usize = reads
            .iter()
            .map(|r| r.slice.as_ref().map_or(0, ReadSlice::len))
            .sum();
        let any_error = reads.iter().any(|r| r.error.is_some());
        if bytes >= min_bytes || any_error || signals.is_empty() || Instant::now() >= deadline {
            break (reads, bytes);
        }
        tokio::select! {
            _ = select_all(signals.iter_mut()) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    };

    // Page-cache reads, but still file I/O: a large one goes off the async
    // workers. A consumer at the log end reads a few small batches, where
    // the hand-over to a blocking thread cost more than the read.
    let load = move || {
        reads
            .into_iter()
            .map(|r| {
                let data = match &r.slice {
                    Some(s) if !s.is_empty() => s.load(),
                    _ => Ok(Bytes::new()),
                };
                (r, data)
            })
            .collect::<Vec<_>>()
    };
    let loaded = if planned <= INLINE_READ_BYTES {
        load()
    } else {
        tokio::task::spawn_blocking(load).await.unwrap_or_default()
    };

    let mut responses: Vec<FetchableTopicResponse> = topics
        .iter()
        .map(|(_, ft)| {
            FetchableTopicResponse::default()
                .with_topic(ft.topic.clone())
                .with_topic_id(ft.topic_id)
        })
        .collect();
    let read_committed = req.isolation_level == 1;
    for (i, (r, data)) in loaded.into_iter().enumerate() {
        let t = &targets[i];
        let mut pd = PartitionData::default()
            .with_partition_index(t.index)
            .with_high_watermark(r.high_watermark)
            .with_last_stable_offset(r.high_watermark)
            .with_log_start_offset(if ctx.version >= 5 {
                r.log_start_offset
            } else {
                -1
            })
            .with_preferred_read_replica((-1).into())
            .with_aborted_transactions(read_committed.then(Vec::new));
        let error = match (r.error, data) {
            (Some(e), _) => Some(e),
            (None, Err(io)) => Some(BrokerError::Storage(io.to_string())),
            (None, Ok(bytes)) => {
                if !bytes.is_empty() {
                    count_out(ctx, t, &bytes);
                }
                pd.records = Some(bytes);
                None
            }
        };
        if let Some(e) = error {
            super::count_error(ctx, "Fetch", e.label());
            pd.error_code = e.code();
            pd.records = Some(Bytes::new());
        }
        responses[t.topic].partitions.push(pd);
    }
    let fetched: usize = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum();
    ctx.record_quota(QuotaKind::Fetch, fetched as f64);
    FetchResponse::default()
        .with_session_id(0)
        .with_responses(responses)
}

struct Read {
    slice: Option<ReadSlice>,
    high_watermark: i64,
    log_start_offset: i64,
    error: Option<BrokerError>,
}

/// Decides what each partition returns, within the response's byte budget.
/// The first partition with data may exceed its limits by one batch (KIP-74)
/// so a batch larger than the limits never blocks a consumer.
fn plan(targets: &[Target], max_bytes: usize) -> Vec<Read> {
    let mut budget = max_bytes;
    let mut first = true;
    targets
        .iter()
        .map(|t| {
            let p = match &t.partition {
                Ok(p) => p,
                Err(e) => {
                    return Read {
                        slice: None,
                        high_watermark: -1,
                        log_start_offset: -1,
                        error: Some(e.clone()),
                    };
                }
            };
            let limit = t.max_bytes.min(budget);
            match p.read(t.offset, limit, first) {
                Ok(r) => {
                    let n = r.slice.len();
                    if n > 0 {
                        first = false;
                    }
                    budget = budget.saturating_sub(n);
                    Read {
                        slice: Some(r.slice),
                        high_watermark: r.high_watermark,
                        log_start_offset: r.log_start_offset,
                        error: None,
                    }
                }
                Err(e) => Read {
                    slice: None,
                    high_watermark: p.high_watermark(),
                    log_start_offset: p.log_start_offset(),
                    error: Some(e),
                },
            }
        })
        .collect()
}

fn count_out(ctx: &RequestContext<'_>, t: &Target, bytes: &Bytes) {
    let Ok(p) = &t.partition else { return };
    let records: u64 = batch::headers(bytes)
        .filter_map(Result::ok)
        .map(|(_, h)| h.records_count.max(0) as u64)
        .sum();
    let m = &ctx.broker.metrics;
    let topic = [p.topic.as_ref()];
    m.bytes_out
        .with_label_values(&topic)
        .inc_by(bytes.len() as u64);
    m.messages_out.with_label_values(&topic).inc_by(records);
}
