//! Consumer groups: the classic group coordinator and committed offsets.
//!
//! - [`coordinator`]: the per-group state machine (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup), its timers, and the in-memory committed offsets.
//! - [`offsets`]: writing commits and tombstones durably to
//!   `__consumer_offsets`, expiring offsets of empty groups.
//! - [`log_format`]: the key/value formats of `__consumer_offsets` (Kafka's).
//!
//! This broker is the coordinator of every group. Committed offsets are
//! durable in the internal topic `__consumer_offsets` (group → partition by
//! Kafka's hash), written through the normal partition append path and
//! fsynced before a commit is acknowledged; at start the broker replays that
//! topic to rebuild them. The topic keeps its data forever
//! (`retention.ms=-1`): without compaction, retention would delete live
//! offsets, so the log grows with every commit and replay time with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use prometheus::IntCounter;
use skiff_log::TimestampMode;
use tracing::{info, warn};

use crate::broker::now_ms;
use crate::cluster::topic_table::{Topic, TopicTable};
use crate::config::BrokerConfig;
use crate::errors::{BrokerError, Result};
use crate::partition::Partition;

pub mod coordinator;
pub mod log_format;
pub mod offsets;

pub use coordinator::{CommittedOffset, Coordinator, GroupConfig, GroupState};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The group coordinator and its durable offset store.
pub struct Groups {
    pub coordinator: Arc<Coordinator>,
    topic: Arc<Topic>,
    /// One per partition of the offsets topic: the order of records in the
    /// log is the order in which they reach memory.
    write_locks: Vec<tokio::sync::Mutex<()>>,
    /// `offset.metadata.max.bytes`.
    pub metadata_max_bytes: usize,
    /// `offsets.retention.minutes`, as a duration.
    pub retention: Duration,
}

/// What replaying the offsets topic found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub records: u64,
    pub skipped: u64,
    pub groups: usize,
}

impl Groups {
    /// Opens (creating if missing) `__consumer_offsets` and rebuilds the
    /// committed offsets from it.
    ///
    /// # Errors
    /// The topic cannot be created, or a partition cannot be read.
    pub fn open(
        config: &BrokerConfig,
        topics: &TopicTable,
        rebalances: IntCounter,
    ) -> anyhow::Result<(Self, ReplayReport)> {
        let topic = match topics.get(OFFSETS_TOPIC) {
            Some(t) => {
                if t.partitions.len() as i32 != config.offsets_topic_num_partitions {
                    warn!(
                        existing = t.partitions.len(),
                        configured = config.offsets_topic_num_partitions,
                        "{OFFSETS_TOPIC} exists with a different partition count; keeping it (groups map by its count)"
                    );
                }
                t
            }
            None => {
                let overrides: BTreeMap<String, String> = [
                    ("retention.ms", "-1".to_string()),
                    ("retention.bytes", "-1".to_string()),
                    (
                        "segment.bytes",
                        config.offsets_topic_segment_bytes.to_string(),
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
                topics
                    .create(
                        OFFSETS_TOPIC,
                        config.offsets_topic_num_partitions,
                        1,
                        overrides,
                        false,
                    )
                    .map_err(|e| anyhow::anyhow!("creating {OFFSETS_TOPIC}: {e}"))?
            }
        };
        let coordinator = Coordinator::new(
            GroupConfig {
                initial_rebalance_delay: Duration::from_millis(
                    config.group_initial_rebalance_delay_ms,
                ),
                min_session_timeout: Duration::from_millis(config.group_min_session_timeout_ms),
                max_session_timeout: Duration::from_millis(config.group_max_session_timeout_ms),
            },
            rebalances,
        );
        let groups = Self {
            coordinator,
            write_locks: topic
                .partitions
                .iter()
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            topic,
            metadata_max_bytes: config.offset_metadata_max_bytes,
            retention: Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60)),
        };
        let started = Instant::now();
        let report = groups.replay()?;
        info!(
            records = report.records,
            skipped = report.skipped,
            groups = report.groups,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed {OFFSETS_TOPIC}"
        );
        Ok((groups, report))
    }

    fn partition_index(&self, group: &str) -> usize {
        log_format::partition_for(group, self.topic.partitions.len() as i32) as usize
    }

    fn partition(&self, group: &str) -> Result<&Arc<Partition>> {
        self.topic
            .partitions
            .get(self.partition_index(group))
            .ok_or_else(|| {
                BrokerError::CoordinatorNotAvailable(format!("{OFFSETS_TOPIC} has no partitions"))
            })
    }

    /// Appends `records` (key, value or tombstone) for `group` as one batch
    /// and fsyncs it. Returns once the records are durable.
    pub async fn write(&self, group: &str, records: Vec<(Bytes, Option<Bytes>)>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let records: Vec<Record> = records
            .into_iter()
            .enumerate()
            .map(|(i, (key, value))| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: -1,
                timestamp: now,
                key: Some(key),
                value,
                headers: Default::default(),
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .map_err(|e| BrokerError::Storage(format!("encoding offset records: {e}")))?;
        let partition = self.partition(group)?.clone();
        let lock = self
            .write_locks
            .get(self.partition_index(group))
            .ok_or_else(|| BrokerError::CoordinatorNotAvailable("no write lock".into()))?;
        let _guard = lock.lock().await;
        tokio::task::spawn_blocking(move || -> Result<()> {
            partition.append(&mut buf, TimestampMode::CreateTime)?;
            partition.flush()
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("offset write task failed: {e}")))?
    }

    fn replay(&self) -> anyhow::Result<ReplayReport> {
        let mut report = ReplayReport::default();
        for p in &self.topic.partitions {
            let mut offset = p.log_start_offset();
            let end = p.high_watermark();
            while offset < end {
                let read = p
                    .read(offset, 8 << 20, true)
                    .map_err(|e| anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {e}", p.index))?;
                if read.slice.is_empty() || read.slice.next_offset <= offset {
                    break;
                }
                offset = read.slice.next_offset;
                let mut data = read
                    .slice
                    .load()
                    .map_err(|e| anyhow::anyhow!("reading {OFFSETS_TOPIC}-{}: {e}", p.index))?;
                let sets = match RecordBatchDecoder::decode_all(&mut data) {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(partition = p.index, error = %e, "skipping undecodable batches in {OFFSETS_TOPIC}");
                        report.skipped += 1;
                        continue;
                    }
                };
                for record in sets.into_iter().flat_map(|s| s.records) {
                    if record.control {
                        continue;
                    }
                    match self.apply_record(&record) {
                        Ok(()) => report.records += 1,
                        Err(e) => {
                            report.skipped += 1;
                            warn!(partition = p.index, offset = record.offset, error = %e, "skipping unreadable record in {OFFSETS_TOPIC}");
                        }
                    }
                }
            }
        }
        report.groups = self.coordinator.list().len();
        Ok(report)
    }

    fn apply_record(&self, record: &Record) -> std::result::Result<(), String> {
        let key = record.key.as_ref().ok_or("record without a key")?;
        match log_format::decode_key(key)? {
            log_format::Key::Offset {
                group,
                topic,
                partition,
            } => {
                let value = match &record.value {
                    Some(v) => {
                        let v = log_format::decode_offset_value(v)?;
                        Some(CommittedOffset {
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata,
                            commit_timestamp: v.commit_timestamp,
                        })
                    }
                    None => None,
                };
                self.coordinator
                    .apply_offsets(&group, [((topic, partition), value)]);
            }
            log_format::Key::Group { group } => match &record.value {
                Some(v) => {
                    let v = log_format::decode_group_value(v)?;
                    self.coordinator
                        .restore_group(&group, Some(v.generation), &v.protocol_type);
                }
                None => self.coordinator.restore_group(&group, None, ""),
            },
        }
        Ok(())
    }
}
