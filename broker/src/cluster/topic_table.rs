//! The topics this broker hosts: the in-memory table every request reads,
//! kept in step with the metadata store and the partition directories.
//!
//! A [`Topic`] is an immutable snapshot; a change (new partitions, new
//! configs) swaps in a new snapshot that shares the unchanged partitions, so
//! readers never lock the table for longer than a map lookup.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use skiff_log::PartitionLog;
use tracing::{info, warn};
use uuid::Uuid;

use super::assignment::{BrokerSlot, assign};
use super::meta_store::{MetaStore, MetaStoreError, TopicRecord};
use crate::errors::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic_config::{self, TopicConfig};

pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    pub replication_factor: i16,
    pub partitions: Vec<Arc<Partition>>,
    /// Topic-level overrides, as the client set them.
    pub overrides: BTreeMap<String, String>,
    pub config: TopicConfig,
    /// Replicas of each partition, preferred leader first (empty on a
    /// single broker).
    pub assignments: Vec<Vec<i32>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }

    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    fn record(&self) -> TopicRecord {
        TopicRecord {
            name: self.name.to_string(),
            id: self.id,
            partitions: self.partitions.len() as i32,
            replication_factor: self.replication_factor,
            configs: self.overrides.clone(),
            assignments: self.assignments.clone(),
        }
    }
}

/// What opening the table found on disk.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub partitions: usize,
    pub truncated_bytes: u64,
}

pub struct TopicTable {
    logs_dir: PathBuf,
    store: MetaStore,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Broker-wide defaults of topic configs (topic-level names).
    defaults: RwLock<BTreeMap<String, String>>,
    /// Serializes changes so two admin requests cannot interleave.
    admin: Mutex<()>,
}

/// Kafka's rule for topic names.
pub fn validate_topic_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(BrokerError::InvalidTopic("topic name is empty".into()));
    }
    if name == "." || name == ".." {
        return Err(BrokerError::InvalidTopic(format!(
            "topic name cannot be {name:?}"
        )));
    }
    if name.len() > 249 {
        return Err(BrokerError::InvalidTopic(format!(
            "topic name is {} characters long; the limit is 249",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(BrokerError::InvalidTopic(format!(
            "topic name {name:?} contains {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    Ok(())
}

fn store_error(e: MetaStoreError) -> BrokerError {
    match e {
        MetaStoreError::TopicExists(name) => BrokerError::TopicAlreadyExists(name),
        MetaStoreError::NoSuchTopic(_) => BrokerError::UnknownTopicOrPartition,
        MetaStoreError::Replication(e) => BrokerError::MetadataUnavailable(e),
        e => BrokerError::Storage(e.to_string()),
    }
}

fn partition_dir(logs_dir: &Path, topic: &str, index: i32) -> PathBuf {
    logs_dir.join(format!("{topic}-{index}"))
}

/// Where one partition lives on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Placement {
    /// The single-replica path: a single broker, replication factor 1, or
    /// a local-only topic. RF 1 keeps it on purpose: there is nobody to
    /// agree with, and it is the fast path `make bench` measures.
    Local,
    /// A Raft replica (a cluster, replication factor 2 or more, this broker
    /// among the partition's replicas), with the replicas.
    Replica(Vec<i32>),
    /// Replicated, but not here: no log, no directory.
    Absent,
}

fn placement(store: &MetaStore, rf: i16, assignments: &[Vec<i32>], index: i32) -> Placement {
    let Some(me) = store.group().map(|g| g.node_id()) else {
        return Placement::Local;
    };
    if rf < 2 || assignments.is_empty() {
        return Placement::Local;
    }
    let replicas = usize::try_from(index)
        .ok()
        .and_then(|i| assignments.get(i))
        .cloned()
        .unwrap_or_default();
    if replicas.iter().any(|&r| u64::try_from(r).ok() == Some(me)) {
        Placement::Replica(replicas)
    } else {
        Placement::Absent
    }
}

/// Opens (recovering) a partition's log as `placement` says; `None` when it
/// has no replica here.
fn open_log(
    dir: &Path,
    config: &TopicConfig,
    placement: &Placement,
) -> Result<Option<(PartitionLog, u64)>> {
    if *placement == Placement::Absent {
        return Ok(None);
    }
    let (log, recovery) = PartitionLog::open(dir, config.log_config())?;
    Ok(Some((log, recovery.truncated_bytes)))
}

fn wrap_log(
    name: &Arc<str>,
    id: Uuid,
    index: i32,
    placement: Placement,
    log: Option<PartitionLog>,
) -> Result<Partition> {
    match (placement, log) {
        (Placement::Replica(replicas), Some(log)) => {
            let group_id = crate::rpc::GroupId::Partition {
                topic_id: id,
                partition: index,
            };
            Partition::open_replicated(name.clone(), index, log, group_id, replicas)
        }
        (_, Some(log)) => Partition::open(name.clone(), index, log),
        (_, None) => Ok(Partition::absent(name.clone(), index)),
    }
}

impl TopicTable {
    /// Loads every topic from the store and opens (recovering) its logs.
    /// Partition directories no topic owns (left by a delete cut short by a
    /// crash) are removed.
    pub fn open(
        logs_dir: PathBuf,
        store: MetaStore,
        defaults: BTreeMap<String, String>,
    ) -> anyhow::Result<(Self, OpenReport)> {
        std::fs::create_dir_all(&logs_dir)?;
        let mut report = OpenReport::default();
        let mut topics = HashMap::new();
        let mut owned = std::collections::HashSet::new();
        for rec in store.topics()? {
            let config = TopicConfig::resolve(&defaults, &rec.configs)
                .map_err(|e| anyhow::anyhow!("topic {}: {e}", rec.name))?;
            let name: Arc<str> = Arc::from(rec.name.as_str());
            let mut partitions = Vec::new();
            for index in 0..rec.partitions {
                let dir = partition_dir(&logs_dir, &rec.name, index);
                let place = placement(&store, rec.replication_factor, &rec.assignments, index);
                let opened = open_log(&dir, &config, &place)
                    .map_err(|e| anyhow::anyhow!("opening {}: {e}", dir.display()))?;
                let log = opened.map(|(log, truncated)| {
                    if truncated > 0 {
                        warn!(
                            partition = %dir.display(),
                            truncated_bytes = truncated,
                            "recovered partition by truncating a torn or corrupt tail"
                        );
                    }
                    report.truncated_bytes += truncated;
                    report.partitions += 1;
                    owned.insert(dir.clone());
                    log
                });
                let partition = wrap_log(&name, rec.id, index, place, log).map_err(|e| {
                    anyhow::anyhow!("opening the partition state of {}: {e}", dir.display())
                })?;
                partitions.push(Arc::new(partition));
            }
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name,
                    id: rec.id,
                    replication_factor: rec.replication_factor,
                    partitions,
                    overrides: rec.configs,
                    config,
                    assignments: rec.assignments,
                }),
            );
        }
        // Also the directories of replicas moved away while this broker was
        // down.
        for entry in std::fs::read_dir(&logs_dir)? {
            let path = entry?.path();
            if path.is_dir() && !owned.contains(&path) {
                warn!(dir = %path.display(), "removing a partition directory no topic owns");
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    warn!(dir = %path.display(), error = %e, "could not remove orphan directory");
                }
            }
        }
        Ok((
            Self {
                logs_dir,
                store,
                topics: RwLock::new(topics),
                defaults: RwLock::new(defaults),
                admin: Mutex::new(()),
            },
            report,
        ))
    }

    pub fn store(&self) -> &MetaStore {
        &self.store
    }

    /// The directory holding every partition's directory (Kafka's log dir).
    pub fn logs_dir(&self) -> &Path {
        &self.logs_dir
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// Every topic, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self.topics.read().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn defaults(&self) -> BTreeMap<String, String> {
        self.defaults.read().clone()
    }

    /// Creates a topic. With `validate_only`, checks everything and creates nothing.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        if partitions < 1 {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be at least 1, got {partitions}"
            )));
        }
        if partitions > 100_000 {
            return Err(BrokerError::InvalidPartitions(format!(
                "{partitions} partitions is more than this broker allows per topic (100000)"
            )));
        }
        if replication_factor < 1 {
            return Err(BrokerError::InvalidReplicationFactor(format!(
                "replication factor must be at least 1, got {replication_factor}"
            )));
        }
        let assignments = self.assign(name, 0, partitions, replication_factor)?;
        for (k, v) in &overrides {
            topic_config::validate(k, v).map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        }
        let config = TopicConfig::resolve(&self.defaults.read(), &overrides)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;

        let _guard = self.admin.lock();
        {
            let topics = self.topics.read();
            if topics.contains_key(name) {
                return Err(BrokerError::TopicAlreadyExists(name.to_string()));
            }
            // '.' and '_' collide in metric names, so Kafka refuses both.
            let canon = name.replace('.', "_");
            if let Some(other) = topics.keys().find(|t| t.replace('.', "_") == canon) {
                return Err(BrokerError::InvalidTopic(format!(
                    "topic {name:?} collides with existing topic {other:?} ('.' and '_' are treated alike)"
                )));
            }
        }
        let topic_name: Arc<str> = Arc::from(name);
        let mut topic = Topic {
            name: topic_name.clone(),
            id: Uuid::new_v4(),
            replication_factor,
            partitions: Vec::new(),
            overrides,
            config,
            assignments,
        };
        if validate_only {
            return Ok(Arc::new(topic));
        }
        topic.partitions = self.open_partitions(
            &topic_name,
            0..partitions,
            &topic.config,
            (topic.id, replication_factor, &topic.assignments),
        )?;
        self.store
            .create_topic(&topic.record())
            .map_err(store_error)?;
        let topic = Arc::new(topic);
        self.topics.write().insert(topic_name, topic.clone());
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    fn open_partitions(
        &self,
        name: &Arc<str>,
        range: std::ops::Range<i32>,
        config: &TopicConfig,
        (id, rf, assignments): (Uuid, i16, &[Vec<i32>]),
    ) -> Result<Vec<Arc<Partition>>> {
        range
            .map(|index| {
                self.open_fresh(name, index, config, (id, rf, assignments))
                    .map(Arc::new)
            })
            .collect()
    }

    /// Opens a partition this broker has not held so far: whatever
    /// directory is in its place belongs to nobody (a topic of the same
    /// name was deleted, a replica moved away); starting from it would
    /// resurrect old records.
    fn open_fresh(
        &self,
        name: &Arc<str>,
        index: i32,
        config: &TopicConfig,
        (id, rf, assignments): (Uuid, i16, &[Vec<i32>]),
    ) -> Result<Partition> {
        let dir = partition_dir(&self.logs_dir, name, index);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| BrokerError::Storage(e.to_string()))?;
        }
        let place = placement(&self.store, rf, assignments, index);
        let log = open_log(&dir, config, &place)?.map(|(log, _)| log);
        wrap_log(name, id, index, place, log)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<Uuid> {
        let _guard = self.admin.lock();
        let topic = self.get(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        self.store.delete_topic(name).map_err(store_error)?;
        self.topics.write().remove(name);
        for p in &topic.partitions {
            p.close();
            let dir = partition_dir(&self.logs_dir, name, p.index);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not remove deleted partition's directory; it is removed at next start");
            }
        }
        info!(topic = name, "deleted topic");
        Ok(topic.id)
    }

    /// Grows a topic to `total` partitions.
    pub fn add_partitions(&self, name: &str, total: i32, validate_only: bool) -> Result<()> {
        let _guard = self.admin.lock();
        let topic = self.get(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        let current = topic.partitions.len() as i32;
        if total <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic {name:?} has {current} partitions; the new count must be larger, got {total}"
            )));
        }
        if total > 100_000 {
            return Err(BrokerError::InvalidPartitions(format!(
                "{total} partitions is more than this broker allows per topic (100000)"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let mut assignments = topic.assignments.clone();
        if !assignments.is_empty() {
            assignments.extend(self.assign(
                name,
                current,
                total - current,
                topic.replication_factor,
            )?);
        }
        let mut partitions = topic.partitions.clone();
        partitions.extend(self.open_partitions(
            &topic.name,
            current..total,
            &topic.config,
            (topic.id, topic.replication_factor, &assignments),
        )?);
        self.replace(
            &topic,
            partitions,
            topic.overrides.clone(),
            topic.config.clone(),
            assignments,
        )?;
        info!(topic = name, from = current, to = total, "added partitions");
        Ok(())
    }

    /// Replaces a topic's overrides (AlterConfigs semantics; the caller
    /// computes incremental changes).
    pub fn set_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        for (k, v) in &overrides {
            topic_config::validate(k, v).map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        }
        let config = TopicConfig::resolve(&self.defaults.read(), &overrides)
            .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
        let _guard = self.admin.lock();
        let topic = self.get(name).ok_or(BrokerError::UnknownTopicOrPartition)?;
        if validate_only {
            return Ok(());
        }
        for p in &topic.partitions {
            p.update_config(config.log_config());
        }
        self.replace(
            &topic,
            topic.partitions.clone(),
            overrides,
            config,
            topic.assignments.clone(),
        )
    }

    /// Installs new broker-wide defaults and re-resolves every topic.
    pub fn set_defaults(&self, defaults: BTreeMap<String, String>) -> Result<()> {
        let _guard = self.admin.lock();
        let mut resolved = Vec::new();
        for topic in self.all() {
            let config = TopicConfig::resolve(&defaults, &topic.overrides)
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            resolved.push((topic, config));
        }
        *self.defaults.write() = defaults;
        for (topic, config) in resolved {
            for p in &topic.partitions {
                p.update_config(config.log_config());
            }
            let new = Arc::new(Topic {
                name: topic.name.clone(),
                id: topic.id,
                replication_factor: topic.replication_factor,
                partitions: topic.partitions.clone(),
                overrides: topic.overrides.clone(),
                config,
                assignments: topic.assignments.clone(),
            });
            self.topics.write().insert(topic.name.clone(), new);
        }
        Ok(())
    }

    fn replace(
        &self,
        old: &Topic,
        partitions: Vec<Arc<Partition>>,
        overrides: BTreeMap<String, String>,
        config: TopicConfig,
        assignments: Vec<Vec<i32>>,
    ) -> Result<()> {
        let new = Arc::new(Topic {
            name: old.name.clone(),
            id: old.id,
            replication_factor: old.replication_factor,
            partitions,
            overrides,
            config,
            assignments,
        });
        self.store.put_topic(&new.record()).map_err(store_error)?;
        self.topics.write().insert(new.name.clone(), new);
        Ok(())
    }

    /// Replicas for partitions `first..first + count` of a topic: over the
    /// registered brokers in a cluster; none (this broker holds all) alone.
    fn assign(&self, name: &str, first: i32, count: i32, rf: i16) -> Result<Vec<Vec<i32>>> {
        let Some(group) = self.store.group() else {
            if rf > 1 {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {rf} is larger than the number of brokers (1)"
                )));
            }
            return Ok(Vec::new());
        };
        // Not on fenced brokers (gone, or stopping), as in Kafka.
        let slots: Vec<BrokerSlot> = group
            .state()
            .unfenced_brokers()
            .map(|b| BrokerSlot {
                id: b.node_id,
                rack: b.rack.clone(),
            })
            .collect();
        // Rotate by the name so many small topics do not all lead on the
        // lowest broker id.
        let start = name.bytes().fold(0usize, |h, b| {
            h.wrapping_mul(31).wrapping_add(usize::from(b))
        });
        assign(
            &slots,
            first,
            count,
            usize::try_from(rf).unwrap_or(0),
            start % slots.len().max(1),
        )
        .map_err(|e| BrokerError::InvalidReplicationFactor(e.to_string()))
    }

    /// Brings the local table in line with the replicated topic records
    /// (topics created, grown, reconfigured or deleted through another
    /// broker). Partition logs are opened for every partition; only the
    /// leader serves them (see `cluster::routing`).
    pub fn sync_from(&self, records: Vec<TopicRecord>) -> Result<()> {
        let _guard = self.admin.lock();
        let wanted: std::collections::HashSet<String> =
            records.iter().map(|r| r.name.clone()).collect();
        for stale in self
            .all()
            .into_iter()
            .filter(|t| !wanted.contains(t.name.as_ref()))
        {
            self.drop_local(&stale);
        }
        for rec in records {
            let current = self.get(&rec.name);
            if let Some(cur) = &current
                && cur.id != rec.id
            {
                self.drop_local(cur);
            }
            let current = current.filter(|c| c.id == rec.id);
            if let Some(cur) = &current
                && cur.record() == rec
            {
                continue;
            }
            let config = TopicConfig::resolve(&self.defaults.read(), &rec.configs)
                .map_err(|e| BrokerError::InvalidConfig(e.to_string()))?;
            let name: Arc<str> = Arc::from(rec.name.as_str());
            let mut partitions = current
                .as_ref()
                .map(|c| c.partitions.clone())
                .unwrap_or_default();
            for p in &partitions {
                p.update_config(config.log_config());
            }
            for slot in &mut partitions {
                self.follow_replicas(slot, &config, &rec)?;
            }
            let have = partitions.len() as i32;
            if rec.partitions > have {
                partitions.extend(self.open_partitions(
                    &name,
                    have..rec.partitions,
                    &config,
                    (rec.id, rec.replication_factor, &rec.assignments),
                )?);
            }
            info!(topic = %rec.name, partitions = rec.partitions, "applied topic from cluster metadata");
            self.topics.write().insert(
                name.clone(),
                Arc::new(Topic {
                    name,
                    id: rec.id,
                    replication_factor: rec.replication_factor,
                    partitions,
                    overrides: rec.configs,
                    config,
                    assignments: rec.assignments,
                }),
            );
        }
        Ok(())
    }

    /// A reassignment changed who holds a partition: this broker starts
    /// holding it (a fresh, empty replica that catches up through Raft),
    /// stops (its group stops, its data goes), or keeps it with new peers.
    fn follow_replicas(
        &self,
        slot: &mut Arc<Partition>,
        config: &TopicConfig,
        rec: &TopicRecord,
    ) -> Result<()> {
        let name: Arc<str> = slot.topic.clone();
        let index = slot.index;
        let place = placement(&self.store, rec.replication_factor, &rec.assignments, index);
        match (&place, slot.replicated(), slot.is_absent()) {
            (Placement::Replica(replicas), Some(r), _) if r.replicas() != *replicas => {
                r.set_replicas(replicas.clone());
            }
            (Placement::Replica(_), None, true) => {
                let fresh = self.open_fresh(
                    &name,
                    index,
                    config,
                    (rec.id, rec.replication_factor, &rec.assignments),
                )?;
                info!(topic = %name, partition = index, "this broker now holds a replica (reassignment)");
                *slot = Arc::new(fresh);
            }
            (Placement::Absent, Some(_), _) => {
                let old = std::mem::replace(slot, Arc::new(Partition::absent(name.clone(), index)));
                self.retire(old);
                info!(topic = %name, partition = index, "this broker no longer holds a replica (reassignment); its data is removed");
            }
            _ => {}
        }
        Ok(())
    }

    /// Stops a replica moved away and deletes its data. The directory is
    /// renamed at once (a replica placed here again starts clean), and
    /// removed once the group has stopped writing to it; a crash in between
    /// leaves a directory no topic owns, removed at the next start.
    fn retire(&self, partition: Arc<Partition>) {
        let dir = partition_dir(&self.logs_dir, &partition.topic, partition.index);
        let grave = self.logs_dir.join(format!(
            "{}.removed-{}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("partition"),
            Uuid::new_v4().simple()
        ));
        if let Err(e) = std::fs::rename(&dir, &grave) {
            warn!(dir = %dir.display(), error = %e, "could not move a removed replica's directory aside");
        }
        let group = partition.replicated().and_then(|r| r.take_group());
        let bury = move || {
            drop(partition);
            if grave.exists()
                && let Err(e) = std::fs::remove_dir_all(&grave)
            {
                warn!(dir = %grave.display(), error = %e, "could not remove a removed replica's data; it is removed at next start");
            }
        };
        match (tokio::runtime::Handle::try_current(), group) {
            (Ok(rt), Some(group)) => {
                rt.spawn(async move {
                    if let Err(e) = group.raft().shutdown().await {
                        warn!(error = %e, "stopping a removed replica's Raft group");
                    }
                    drop(group);
                    let _ = tokio::task::spawn_blocking(bury).await;
                });
            }
            _ => bury(),
        }
    }

    fn drop_local(&self, topic: &Topic) {
        self.topics.write().remove(&topic.name);
        for p in &topic.partitions {
            p.close();
            let dir = partition_dir(&self.logs_dir, &topic.name, p.index);
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                warn!(dir = %dir.display(), error = %e, "could not remove deleted partition's directory");
            }
        }
        info!(topic = %topic.name, "removed topic deleted in cluster metadata");
    }

    /// Every partition of every topic.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &Path) -> TopicTable {
        let store = MetaStore::open(&dir.join("meta")).unwrap();
        TopicTable::open(dir.join("logs"), store, BTreeMap::new())
            .unwrap()
            .0
    }

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn created_topics_survive_reopen_and_deleted_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let t = table(dir.path());
            t.create("a", 3, 1, BTreeMap::new(), false).unwrap();
            t.create("b", 1, 1, BTreeMap::new(), false).unwrap();
            t.delete("b").unwrap();
            t.add_partitions("a", 5, false).unwrap();
        }
        let t = table(dir.path());
        assert_eq!(t.get("a").unwrap().partitions.len(), 5);
        assert!(t.get("b").is_none());
        assert!(!dir.path().join("logs/b-0").exists());
    }

    #[test]
    fn collisions_and_duplicates_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = table(dir.path());
        t.create("a.b", 1, 1, BTreeMap::new(), false).unwrap();
        assert!(matches!(
            t.create("a.b", 1, 1, BTreeMap::new(), false),
            Err(BrokerError::TopicAlreadyExists(_))
        ));
        assert!(matches!(
            t.create("a_b", 1, 1, BTreeMap::new(), false),
            Err(BrokerError::InvalidTopic(_))
        ));
        assert!(matches!(
            t.create("c", 1, 3, BTreeMap::new(), false),
            Err(BrokerError::InvalidReplicationFactor(_))
        ));
        assert!(t.create("v", 1, 1, BTreeMap::new(), true).is_ok());
        assert!(t.get("v").is_none());
    }
}
