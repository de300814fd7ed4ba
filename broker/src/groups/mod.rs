//! Consumer groups: the classic group coordinator and committed offsets.
//!
//! - [`coordinator`]: the per-group state machine (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup), its timers, and the in-memory committed offsets.
//! - [`offsets`]: writing commits and tombstones durably to
//!   `__consumer_offsets`, expiring offsets of empty groups.
//! - [`log_format`]: the key/value formats of `__consumer_offsets` (Kafka's).
//!
//! - [`ownership`]: which groups this broker coordinates: all of them on a
//!   single broker; in a cluster those whose `__consumer_offsets` partition
//!   it leads, loaded from that partition when it comes to lead it.
//!
//! Committed offsets are durable in the internal topic `__consumer_offsets`
//! (group → partition by Kafka's hash) before a commit is acknowledged. On
//! a single broker it is a local topic, fsynced, replayed at start. In a
//! cluster it is replicated like any topic (a Raft group per partition) and
//! a commit is acknowledged once a quorum holds it, so committed offsets
//! survive the loss of any minority of brokers and a group's coordinator
//! moves with its partition's leadership. The topic keeps its data forever
//! (`retention.ms=-1`): without compaction, retention would delete live
//! offsets, so the log grows with every commit and load time with it.

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
use crate::cluster::topic_table::TopicTable;
use crate::config::BrokerConfig;
use crate::errors::{BrokerError, Result};
use crate::partition::Partition;

pub mod coordinator;
pub mod log_format;
pub mod offsets;
pub mod ownership;

pub use coordinator::{CommittedOffset, Coordinator, GroupConfig, GroupState};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The group coordinator and its durable offset store.
pub struct Groups {
    pub coordinator: Arc<Coordinator>,
    ownership: ownership::Ownership,
    /// Serialize writes per offsets partition (by index modulo their
    /// number): the order of records in the log is the order in which they
    /// reach memory.
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
    /// The coordinator and its offset store. A single broker opens
    /// (creating if missing) its local `__consumer_offsets` and rebuilds
    /// every group from it; in a cluster nothing is loaded here: groups are
    /// loaded per partition as this broker comes to lead them (see
    /// [`ownership`]).
    ///
    /// # Errors
    /// The topic cannot be created, or a partition cannot be read.
    pub fn open(
        config: &BrokerConfig,
        topics: &TopicTable,
        rebalances: IntCounter,
    ) -> anyhow::Result<(Self, ReplayReport)> {
        let alone = topics.store().group().is_none();
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
            ownership: ownership::Ownership::new(config.node_id, alone),
            write_locks: (0..config.offsets_topic_num_partitions.max(1))
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            metadata_max_bytes: config.offset_metadata_max_bytes,
            retention: Duration::from_secs(config.offsets_retention_minutes.saturating_mul(60)),
        };
        if !alone {
            return Ok((groups, ReplayReport::default()));
        }
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
            None => topics
                .create(
                    OFFSETS_TOPIC,
                    config.offsets_topic_num_partitions,
                    1,
                    topic_overrides(config),
                    false,
                )
                .map_err(|e| anyhow::anyhow!("creating {OFFSETS_TOPIC}: {e}"))?,
        };
        let started = Instant::now();
        let mut report = ReplayReport::default();
        for p in &topic.partitions {
            groups.replay(p, &mut report)?;
        }
        report.groups = groups.coordinator.list().len();
        info!(
            records = report.records,
            skipped = report.skipped,
            groups = report.groups,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "replayed {OFFSETS_TOPIC}"
        );
        Ok((groups, report))
    }

    /// Stores the metadata record of each group the coordinator reports as
    /// changed (Stable after a SyncGroup, or Empty), in Kafka's format, so
    /// that the next coordinator of the group restores its members and
    /// their assignments. Runs until `shutdown`. A record is taken from the
    /// group as it is when its turn comes, and one group's records are
    /// written in order, so the last one stored is the latest. SyncGroup
    /// does not wait for it: a coordinator lost before it is stored leaves
    /// the previous record, and members rejoin as they would without one.
    pub async fn store_group_records(
        &self,
        topics: &TopicTable,
        mut changes: tokio::sync::mpsc::UnboundedReceiver<String>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                next = changes.recv() => match next {
                    Some(id) => id,
                    None => return,
                },
            };
            let mut ids = std::collections::BTreeSet::from([first]);
            while let Ok(id) = changes.try_recv() {
                ids.insert(id);
            }
            for id in ids {
                // Taken when the write's turn comes: a group being deleted
                // (Dead) or gone has no record, so none follows its tombstone.
                let build = || {
                    self.coordinator
                        .group_record(&id)
                        .map(|v| {
                            vec![(
                                log_format::group_key(&id),
                                Some(log_format::group_value(&v)),
                            )]
                        })
                        .unwrap_or_default()
                };
                match self.write_built(topics, &id, build).await {
                    Ok(()) => {}
                    // Its coordination moved on: the new coordinator has it.
                    Err(BrokerError::NotCoordinator | BrokerError::CoordinatorLoadInProgress) => {}
                    Err(e) => {
                        warn!(group = %id, error = %e, "group metadata could not be stored; members rejoin if its coordinator moves");
                    }
                }
            }
        }
    }

    /// Appends `records` (key, value or tombstone) for `group` as one batch
    /// to its offsets partition. Returns once the records are durable:
    /// fsynced on a single broker, committed by a quorum in a cluster.
    ///
    /// # Errors
    /// NOT_COORDINATOR (or COORDINATOR_LOAD_IN_PROGRESS) when this broker
    /// does not answer for `group` (any more); storage and replication.
    pub async fn write(
        &self,
        topics: &TopicTable,
        group: &str,
        records: Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.write_built(topics, group, move || records).await
    }

    /// As [`Self::write`], with the records built by `build` once this
    /// write's turn on the partition has come: what it reads from memory
    /// then is not overtaken by a write that was ahead of it.
    async fn write_built(
        &self,
        topics: &TopicTable,
        group: &str,
        build: impl FnOnce() -> Vec<(Bytes, Option<Bytes>)>,
    ) -> Result<()> {
        self.check_coordinator(topics, group)?;
        let (topic, index) = self.ownership.partition_of(topics, group)?;
        let partition = topic
            .partition(index)
            .cloned()
            .ok_or(BrokerError::NotCoordinator)?;
        let lock = usize::try_from(index)
            .ok()
            .and_then(|i| self.write_locks.get(i % self.write_locks.len().max(1)))
            .ok_or_else(|| BrokerError::CoordinatorNotAvailable("no write lock".into()))?;
        let _guard = lock.lock().await;
        let records = build();
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
        if let Some(group) = partition.replicated().and_then(|r| r.group()) {
            let min_insync = usize::try_from(topic.config.min_insync_replicas).unwrap_or(1);
            return match group
                .produce(&mut buf, TimestampMode::CreateTime, -1, min_insync)
                .await
            {
                Ok(_) => Ok(()),
                Err(BrokerError::NotLeaderOrFollower) => Err(BrokerError::NotCoordinator),
                Err(e) => Err(e),
            };
        }
        if partition.replicated().is_some() || partition.is_absent() {
            return Err(BrokerError::NotCoordinator);
        }
        tokio::task::spawn_blocking(move || -> Result<()> {
            partition.append(&mut buf, TimestampMode::CreateTime)?;
            partition.flush()
        })
        .await
        .map_err(|e| BrokerError::Storage(format!("offset write task failed: {e}")))?
    }

    /// Applies the committed records of one offsets partition to the
    /// coordinator, in log order.
    fn replay(&self, p: &Partition, report: &mut ReplayReport) -> anyhow::Result<()> {
        let read = self.replay_records(p, report);
        // Even after a failed read: what was restored gets its timers.
        self.coordinator.finish_restore();
        read
    }

    fn replay_records(&self, p: &Partition, report: &mut ReplayReport) -> anyhow::Result<()> {
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
        Ok(())
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
            log_format::Key::Group { group } => {
                let value = match &record.value {
                    Some(v) => Some(log_format::decode_group_value(v)?),
                    None => None,
                };
                self.coordinator.restore_group(&group, value);
            }
        }
        Ok(())
    }
}

/// The offsets topic's configs: kept forever (see the module docs).
fn topic_overrides(config: &BrokerConfig) -> BTreeMap<String, String> {
    [
        ("retention.ms", "-1".to_string()),
        ("retention.bytes", "-1".to_string()),
        (
            "segment.bytes",
            config.offsets_topic_segment_bytes.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
