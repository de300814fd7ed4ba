//! Committing, deleting and expiring offsets: validate, write to
//! `__consumer_offsets` (fsynced), then make the change visible in memory.

use std::time::Duration;

use bytes::Bytes;
use tracing::{info, warn};

use super::coordinator::CommittedOffset;
use super::{Groups, log_format};
use crate::broker::now_ms;
use crate::cluster::topic_table::TopicTable;
use crate::errors::{BrokerError, Result};

/// One partition of an OffsetCommit.
#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

impl Groups {
    /// Commits offsets for a group member (or a simple, generation-less
    /// commit). Returns one result per request entry, in order.
    ///
    /// # Errors
    /// A group-level error (unknown member, illegal generation, ...) applies
    /// to every partition.
    pub async fn commit(
        &self,
        topics: &TopicTable,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitRequest>,
    ) -> Result<Vec<Result<()>>> {
        self.check_coordinator(topics, group_id)?;
        self.coordinator
            .check_commit(group_id, generation, member_id, instance_id)?;
        let now = now_ms();
        let mut results: Vec<Result<()>> = Vec::with_capacity(entries.len());
        let mut records = Vec::new();
        let mut applied = Vec::new();
        for e in entries {
            let meta = e.metadata.unwrap_or_default();
            let known = topics
                .get(&e.topic)
                .is_some_and(|t| t.partition(e.partition).is_some());
            if !known {
                results.push(Err(BrokerError::UnknownTopicOrPartition));
                continue;
            }
            if meta.len() > self.metadata_max_bytes {
                results.push(Err(BrokerError::OffsetMetadataTooLarge {
                    size: meta.len(),
                    max: self.metadata_max_bytes,
                }));
                continue;
            }
            let value = CommittedOffset {
                offset: e.offset,
                leader_epoch: e.leader_epoch,
                metadata: meta,
                commit_timestamp: now,
            };
            records.push((
                log_format::offset_key(group_id, &e.topic, e.partition),
                Some(log_format::offset_value(&log_format::OffsetValue {
                    offset: value.offset,
                    leader_epoch: value.leader_epoch,
                    metadata: value.metadata.clone(),
                    commit_timestamp: value.commit_timestamp,
                })),
            ));
            applied.push(((e.topic, e.partition), Some(value)));
            results.push(Ok(()));
        }
        if records.is_empty() {
            return Ok(results);
        }
        match self.write(topics, group_id, records).await {
            Ok(()) => {
                self.coordinator.apply_offsets(group_id, applied);
                Ok(results)
            }
            Err(e) => {
                warn!(group = group_id, error = %e, "offset commit could not be written");
                // Kafka's code for the cause (NOT_COORDINATOR, a timeout,
                // ...), so the client retries or looks the coordinator up.
                Ok(results.into_iter().map(|r| r.and(Err(e.clone()))).collect())
            }
        }
    }

    /// Deletes an Empty group and its offsets (tombstones first).
    ///
    /// # Errors
    /// GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP, INVALID_GROUP_ID, or a storage error.
    pub async fn delete_group(&self, topics: &TopicTable, group_id: &str) -> Result<()> {
        super::coordinator::validate_group_id(group_id)?;
        self.check_coordinator(topics, group_id)?;
        let offsets = self.coordinator.begin_delete(group_id)?;
        let mut records: Vec<(Bytes, Option<Bytes>)> = offsets
            .iter()
            .map(|(t, p)| (log_format::offset_key(group_id, t, *p), None))
            .collect();
        records.push((log_format::group_key(group_id), None));
        let written = self.write(topics, group_id, records).await;
        self.coordinator.finish_delete(group_id, written.is_ok());
        if written.is_ok() {
            info!(group = group_id, offsets = offsets.len(), "deleted group");
        }
        written
    }

    /// Deletes committed offsets of `partitions` (OffsetDelete). Partitions
    /// of topics the group is subscribed to are refused while it has members.
    ///
    /// # Errors
    /// A group-level error: GROUP_ID_NOT_FOUND, INVALID_GROUP_ID, storage.
    pub async fn delete_offsets(
        &self,
        topics: &TopicTable,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<()>>> {
        super::coordinator::validate_group_id(group_id)?;
        self.check_coordinator(topics, group_id)?;
        let (state, subscribed) = self.coordinator.subscriptions(group_id)?;
        if state == super::GroupState::Dead {
            return Err(BrokerError::GroupIdNotFound(group_id.to_string()));
        }
        let mut results = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        let mut applied = Vec::new();
        for (t, p) in partitions {
            if state != super::GroupState::Empty && subscribed.contains(t) {
                results.push(Err(BrokerError::GroupSubscribedToTopic));
                continue;
            }
            records.push((log_format::offset_key(group_id, t, *p), None));
            applied.push(((t.clone(), *p), None));
            results.push(Ok(()));
        }
        if !records.is_empty() {
            self.write(topics, group_id, records).await?;
            self.coordinator.apply_offsets(group_id, applied);
        }
        Ok(results)
    }

    /// Expires offsets per `offsets.retention.minutes`: every offset of a
    /// group Empty for that long, and simple-commit offsets older than it.
    pub async fn expire_offsets(&self, topics: &TopicTable) {
        let retention = i64::try_from(self.retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms().saturating_sub(retention);
        for (group, parts) in self.coordinator.expired_offsets(cutoff) {
            let records = parts
                .iter()
                .map(|(t, p)| (log_format::offset_key(&group, t, *p), None))
                .collect();
            match self.write(topics, &group, records).await {
                Ok(()) => {
                    info!(group = %group, offsets = parts.len(), "expired committed offsets");
                    self.coordinator
                        .apply_offsets(&group, parts.into_iter().map(|k| (k, None)));
                }
                Err(e) => warn!(group = %group, error = %e, "could not expire offsets"),
            }
        }
    }

    /// How often to look for expired offsets.
    pub fn retention_check_every(interval_ms: u64) -> Duration {
        Duration::from_millis(interval_ms.max(100))
    }
}
