//! Produce: validate each partition's batches, append them, answer per partition.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use skiff_log::batch::BatchHeader;
use skiff_log::{AppendInfo, TimestampMode, batch};

use super::RequestContext;
use crate::acl::{Operation, ResourceType};
use crate::broker::{Broker, now_ms};
use crate::cluster::topic_table::{Topic, validate_topic_name};
use crate::errors::{BrokerError, Result};
use crate::partition::Partition;
use crate::producer_state;
use crate::topic_config::TimestampType;

/// One partition's share of the request, ready to append.
struct Work {
    topic: usize,
    slot: usize,
    partition: Arc<Partition>,
    records: BytesMut,
    mode: TimestampMode,
    min_insync: usize,
    idempotent: Option<Idempotent>,
}

/// An idempotent producer's batch, and the partition as the client named
/// it: what a refusal is remembered under (see [`crate::refused_batches`]).
struct Idempotent {
    topic: Arc<str>,
    partition: i32,
    header: BatchHeader,
}

impl Idempotent {
    /// `topic`: the name, if it can be a topic's at all (the memory holds
    /// nothing else, so its size stays bounded); asked for an idempotent
    /// batch only.
    fn of(
        topic: impl FnOnce() -> Option<Arc<str>>,
        partition: i32,
        records: &[u8],
    ) -> Option<Self> {
        // A batch that does not parse is refused by the checks whoever
        // sent it: nothing to remember.
        let header = producer_state::producer_batch(records).ok().flatten()?;
        Some(Self {
            topic: topic()?,
            partition,
            header,
        })
    }

    /// Whether it may go on: not past a batch of its producer refused here
    /// unwritten.
    fn may_follow(&self, broker: &Broker, partition: &Partition) -> Result<()> {
        broker.refused_batches.check(
            &self.topic,
            self.partition,
            &self.header,
            Instant::now(),
            || partition.knows_producer(self.header.producer_id),
        )
    }
}

/// `idempotent` was refused with `e` before its write: remembered, unless
/// `e` finds the batch itself malformed (its header, producer id and
/// sequence, is not to be trusted then).
fn remember_refusal(broker: &Broker, idempotent: Option<&Idempotent>, e: &BrokerError) {
    if let Some(i) = idempotent
        && !matches!(
            e,
            BrokerError::CorruptMessage(_) | BrokerError::InvalidRecord(_)
        )
    {
        broker
            .refused_batches
            .remember(&i.topic, i.partition, &i.header, Instant::now());
    }
}

pub async fn handle(ctx: &RequestContext<'_>, req: ProduceRequest) -> ProduceResponse {
    let broker = ctx.broker;
    let acks_ok = matches!(req.acks, -1..=1);
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(req.topic_data.len());
    let mut work = Vec::new();
    let mut topics: Vec<Option<Arc<Topic>>> = Vec::new();

    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let topic = if td.name.is_empty() {
            broker.topics.get_by_id(td.topic_id)
        } else {
            broker.topics.get(td.name.as_str())
        };
        // Kafka checks WRITE on the topic name as the client gave it.
        let name = topic
            .as_ref()
            .map_or_else(|| td.name.to_string(), |t| t.name.to_string());
        let authorized = ctx.authorize(Operation::Write, ResourceType::Topic, &name);
        let mut parts = Vec::with_capacity(td.partition_data.len());
        // Built once per topic, for an idempotent batch only.
        let name_once = std::cell::OnceCell::new();
        let named = || {
            name_once
                .get_or_init(|| {
                    validate_topic_name(&td.name)
                        .ok()
                        .map(|()| Arc::<str>::from(td.name.as_str()))
                })
                .clone()
        };
        for (slot, pd) in td.partition_data.into_iter().enumerate() {
            let idempotent = pd
                .records
                .as_deref()
                .and_then(|r| Idempotent::of(named, pd.index, r));
            let resp = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let checked = if !authorized {
                Err(BrokerError::TopicAuthorizationFailed)
            } else {
                check(
                    ctx,
                    req.acks,
                    acks_ok,
                    topic.as_deref(),
                    pd.index,
                    pd.records,
                )
            };
            match checked {
                Ok((partition, records, mode)) => {
                    let min_insync = topic.as_ref().map_or(1, |t| {
                        usize::try_from(t.config.min_insync_replicas).unwrap_or(1)
                    });
                    work.push(Work {
                        topic: ti,
                        slot,
                        partition,
                        records,
                        mode,
                        min_insync,
                        idempotent,
                    });
                    parts.push(resp);
                }
                Err(e) => {
                    // An unauthorized client does not get to fill the memory.
                    if authorized {
                        remember_refusal(broker, idempotent.as_ref(), &e);
                    }
                    parts.push(error(ctx, resp, &e));
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(td.name)
                .with_topic_id(td.topic_id)
                .with_partition_responses(parts),
        );
        topics.push(topic);
    }

    // Replicated partitions go through their Raft group (acknowledged on
    // commit); the others append locally. Both in two steps: first every
    // batch is handed to its partition, in the connection's request order
    // (a pipelined request waits for the one before it), then this request
    // lets the next one go and waits for its commits.
    let (replicated, local): (Vec<Work>, Vec<Work>) = work
        .into_iter()
        .partition(|w| w.partition.replicated().is_some());
    let acks = req.acks;
    let mut order = ctx.take_submit_order();
    if let Some(o) = &mut order {
        o.wait_turn().await;
    }
    let submits = futures_util::future::join_all(replicated.into_iter().map(|mut w| async move {
        // Taken before submit takes the batches out.
        let size = w.records.len();
        let group = w.partition.replicated().and_then(|r| r.group());
        let submitted = match &group {
            Some(g) => {
                let may_follow = || match &w.idempotent {
                    Some(i) => i.may_follow(broker, &w.partition),
                    None => Ok(()),
                };
                g.submit(&mut w.records, w.mode, acks, w.min_insync, may_follow)
                    .await
            }
            None => Err(BrokerError::NotLeaderOrFollower),
        };
        // A failed submit proposed nothing. (A proposed batch whose commit
        // then fails may still commit: not a refusal.)
        if let Err(e) = &submitted {
            remember_refusal(broker, w.idempotent.as_ref(), e);
        }
        (w, size, group, submitted)
    }));
    // Appends write files and may fsync: off the async workers, all of this
    // request's local partitions in one hop, in request order.
    let appended = async move {
        if local.is_empty() {
            return Vec::new();
        }
        let broker = Arc::clone(broker);
        // Where each answer goes, should the task fail.
        let slots: Vec<_> = local
            .iter()
            .map(|w| (w.topic, w.slot, w.partition.clone()))
            .collect();
        let done = tokio::task::spawn_blocking(move || {
            local
                .into_iter()
                .map(|mut w| {
                    let r = match &w.idempotent {
                        Some(i) => i.may_follow(&broker, &w.partition),
                        None => Ok(()),
                    }
                    .and_then(|()| w.partition.append(&mut w.records, w.mode));
                    if let Err(e) = &r {
                        remember_refusal(&broker, w.idempotent.as_ref(), e);
                    }
                    (w.topic, w.slot, w.partition, w.records.len(), r)
                })
                .collect::<Vec<_>>()
        })
        .await;
        // A panic in there is a bug, but its partitions must not be
        // answered as written.
        done.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the append task failed");
            slots
                .into_iter()
                .map(|(topic, slot, partition)| {
                    let e = BrokerError::Storage(format!("the append task failed: {e}"));
                    (topic, slot, partition, 0, Err(e))
                })
                .collect()
        })
    };
    let (mut results, submitted) = tokio::join!(appended, submits);
    drop(order);
    let committed = futures_util::future::join_all(submitted.into_iter().map(
        |(w, size, group, submitted)| async move {
            let r = match (group, submitted) {
                (Some(g), Ok(s)) => g.finish(s).await,
                (_, Err(e)) => Err(e),
                (None, Ok(_)) => Err(BrokerError::NotLeaderOrFollower),
            };
            if let (Err(e), Some(i)) = (&r, &w.idempotent) {
                tracing::debug!(topic = %w.partition.topic, partition = w.partition.index, producer_id = i.header.producer_id, epoch = i.header.producer_epoch, base_sequence = i.header.base_sequence, error = %e, "idempotent batch not acknowledged");
            }
            (w.topic, w.slot, w.partition, size, r)
        },
    ))
    .await;
    results.extend(committed);

    for (ti, slot, partition, size, result) in results {
        let resp = &mut responses[ti].partition_responses[slot];
        match result {
            Ok(appended) => {
                let info = appended.info;
                if appended.duplicate {
                    broker.metrics.produce_duplicates.inc();
                    tracing::debug!(topic = %partition.topic, partition = partition.index, base_offset = info.base_offset, "duplicate producer batch answered with its original offsets");
                } else {
                    record_metrics(ctx, &partition, size, &info);
                }
                resp.base_offset = info.base_offset;
                resp.log_append_time_ms = info.log_append_time.unwrap_or(-1);
                if ctx.version >= 5 {
                    resp.log_start_offset = info.log_start_offset;
                }
            }
            Err(e) => {
                match &e {
                    BrokerError::OutOfOrderSequence(_) => {
                        broker.metrics.produce_out_of_order.inc();
                        // Fatal for the producer, and rare: worth a line.
                        tracing::warn!(topic = %partition.topic, partition = partition.index, error = %e, "refused an idempotent batch out of sequence");
                    }
                    // Routine around a leader change; the client resends.
                    BrokerError::SequenceGap(_) => broker.metrics.produce_sequence_gaps.inc(),
                    _ => {}
                }
                if matches!(e, BrokerError::Storage(_)) {
                    broker.metrics.storage_errors.inc();
                    tracing::error!(topic = %partition.topic, partition = partition.index, error = %e, "append failed");
                }
                *resp = error(ctx, std::mem::take(resp), &e);
            }
        }
    }
    ProduceResponse::default().with_responses(responses)
}

fn check(
    ctx: &RequestContext<'_>,
    acks: i16,
    acks_ok: bool,
    topic: Option<&Topic>,
    index: i32,
    records: Option<bytes::Bytes>,
) -> Result<(Arc<Partition>, BytesMut, TimestampMode)> {
    let topic = topic.ok_or(BrokerError::UnknownTopicOrPartition)?;
    let partition = topic
        .partition(index)
        .ok_or(BrokerError::UnknownTopicOrPartition)?
        .clone();
    crate::cluster::routing::check_leader(ctx.broker, topic, index)?;
    if !acks_ok {
        return Err(BrokerError::InvalidRequiredAcks(acks));
    }
    // A single-replica partition has one in-sync copy; a replicated one
    // counts its in-sync replicas in its group (PartitionGroup::produce).
    const IN_SYNC: i64 = 1;
    if partition.replicated().is_none() && acks == -1 && topic.config.min_insync_replicas > IN_SYNC
    {
        return Err(BrokerError::NotEnoughReplicas(format!(
            "min.insync.replicas is {} but this partition has a single replica",
            topic.config.min_insync_replicas
        )));
    }
    let records = records
        .filter(|r| !r.is_empty())
        .ok_or_else(|| BrokerError::InvalidRecord("produce request without records".into()))?;
    let max = topic.config.max_message_bytes;
    for item in batch::headers(&records) {
        let (_, header) = item?;
        if header.size() as i64 > max {
            return Err(BrokerError::MessageTooLarge {
                size: header.size(),
                max,
            });
        }
    }
    let mode = match topic.config.timestamp_type {
        TimestampType::CreateTime => TimestampMode::CreateTime,
        TimestampType::LogAppendTime => TimestampMode::LogAppendTime(now_ms()),
    };
    // The log rewrites offsets in place; copying here is the one copy of
    // the batch bytes between the socket and the file.
    Ok((partition, BytesMut::from(&records[..]), mode))
}

fn error(
    ctx: &RequestContext<'_>,
    resp: PartitionProduceResponse,
    e: &BrokerError,
) -> PartitionProduceResponse {
    super::count_error(ctx, "Produce", e.label());
    // error_message exists from v8; older clients get the code alone.
    let message = (ctx.version >= 8).then(|| StrBytes::from_string(e.to_string()));
    resp.with_error_code(e.code()).with_error_message(message)
}

fn record_metrics(ctx: &RequestContext<'_>, p: &Partition, size: usize, info: &AppendInfo) {
    let m = &ctx.broker.metrics;
    let topic = [p.topic.as_ref()];
    m.bytes_in.with_label_values(&topic).inc_by(size as u64);
    m.messages_in
        .with_label_values(&topic)
        .inc_by(info.record_count);
}
