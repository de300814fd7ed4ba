//! The broker's shared state: configuration, the topic table, metrics, and
//! the background maintenance (retention, time-based flushing).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::broker_dynamic;
use crate::cluster::meta_store::MetaStore;
use crate::cluster::topic_table::{Topic, TopicTable};
use crate::config::{BrokerConfig, Listener};
use crate::errors::{BrokerError, Result};
use crate::groups::{GroupState, Groups};
use crate::metrics::Metrics;
use crate::producer_ids::ProducerIds;
use crate::topic_config;

pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub advertised: Vec<Listener>,
    pub topics: TopicTable,
    pub metrics: Metrics,
    pub groups: Groups,
    pub producer_ids: ProducerIds,
    /// Idempotent batches refused unwritten a moment ago.
    pub refused_batches: crate::refused_batches::RefusedBatches,
    /// SASL mechanisms, super users, failed-authentication backoff.
    pub security: crate::auth::Security,
    /// ACLs and the authorization decision.
    pub authorizer: crate::acl::authorizer::Authorizer,
    /// Client and tenant quotas and their rates.
    pub quotas: crate::quota::Quotas,
    /// Dynamic broker-level configs (broker-level names), set by
    /// (Incremental)AlterConfigs on a BROKER resource.
    dynamic: RwLock<DynamicConfig>,
    /// The reassignment throttle (`leader.replication.throttled.rate`,
    /// dynamic), shared with the partition groups this broker leads.
    pub replication_throttle: Arc<crate::rpc::throttle::CatchUpThrottle>,
    ready: AtomicBool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Broker {
    /// Opens the data directory: metadata, then every partition log (with
    /// crash recovery).
    pub fn open(config: BrokerConfig) -> anyhow::Result<Arc<Self>> {
        let store = Self::open_store(&config)?;
        Self::open_with(config, store)
    }

    /// Opens the metadata store of `config`'s data directory.
    pub fn open_store(config: &BrokerConfig) -> anyhow::Result<MetaStore> {
        std::fs::create_dir_all(&config.data_dir)?;
        Ok(MetaStore::open(&config.data_dir.join("meta"))?)
    }

    /// [`Self::open`] with the store already open (and, in a cluster, the
    /// metadata group attached to it).
    pub fn open_with(config: BrokerConfig, store: MetaStore) -> anyhow::Result<Arc<Self>> {
        let cluster_id = store.cluster_id(config.cluster_id.as_deref())?;
        if let Some(wanted) = &config.cluster_id
            && wanted != &cluster_id
        {
            anyhow::bail!(
                "data directory belongs to cluster {cluster_id:?}, not {wanted:?}; refusing to mix clusters"
            );
        }
        let dynamic = DynamicConfig {
            broker: store.broker_config(&config.node_id.to_string())?,
            cluster: store.broker_config(CLUSTER_SCOPE)?,
        };
        let defaults = effective_defaults(&config, &dynamic);
        let started = Instant::now();
        let producer_ids = ProducerIds::open(&store)?;
        // In a cluster the users are created once the metadata group runs
        // (see `cluster::node`).
        if let Some(path) = config
            .scram_bootstrap_users_file
            .as_ref()
            .filter(|_| store.group().is_none())
        {
            for user in crate::auth::bootstrap_users(&store, path)? {
                info!(
                    user,
                    "created SCRAM credentials from scram.bootstrap.users.file"
                );
            }
        }
        let security = crate::auth::Security::from_config(&config)?;
        let authorizer = crate::acl::authorizer::Authorizer::new(
            config.authorizer_enabled,
            config.allow_everyone_if_no_acl_found,
            security.super_users.clone(),
            crate::acl::AclIndex::new(store.acls()?),
        );
        let quotas = crate::quota::Quotas::new(
            crate::quota::QuotaConfig::new(store.quotas()?),
            Duration::from_secs(config.quota_window_size_seconds.max(1)),
            config.quota_window_num.max(2),
        );
        let (topics, report) = TopicTable::open(config.data_dir.join("logs"), store, defaults)?;
        let metrics = Metrics::new();
        metrics
            .recovery_truncated_bytes
            .inc_by(report.truncated_bytes);
        info!(
            partitions = report.partitions,
            truncated_bytes = report.truncated_bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "opened partition logs"
        );
        let (groups, _) = Groups::open(&config, &topics, metrics.group_rebalances.clone())?;
        let advertised = config.advertised_listeners()?;
        Ok(Arc::new(Self {
            cluster_id,
            advertised,
            topics,
            metrics,
            groups,
            producer_ids,
            refused_batches: crate::refused_batches::RefusedBatches::new(Duration::from_millis(
                config.producer_id_expiration_ms,
            )),
            security,
            authorizer,
            quotas,
            replication_throttle: Arc::new(crate::rpc::throttle::CatchUpThrottle::new(
                broker_dynamic::throttle_rate(&config, &dynamic),
            )),
            dynamic: RwLock::new(dynamic),
            ready: AtomicBool::new(false),
            config,
        }))
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn dynamic_config(&self) -> DynamicConfig {
        self.dynamic.read().clone()
    }

    /// Replaces the dynamic broker configs (broker-level names) of this
    /// broker, or the cluster-wide ones, and applies the new defaults to
    /// every topic.
    pub fn set_dynamic_config(
        &self,
        cluster_wide: bool,
        new: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        for (k, v) in &new {
            if let Some(checked) = broker_dynamic::validate(k, v) {
                checked.map_err(|e| BrokerError::InvalidConfig(format!("{k}: {e}")))?;
                continue;
            }
            let def = topic_config::def_by_broker_name(k).ok_or_else(|| {
                BrokerError::InvalidConfig(format!(
                    "broker config {k:?} cannot be changed at run time"
                ))
            })?;
            topic_config::validate(def.name, v)
                .map_err(|e| BrokerError::InvalidConfig(format!("{k}: {e}")))?;
        }
        if validate_only {
            return Ok(());
        }
        let scope = if cluster_wide {
            CLUSTER_SCOPE.to_string()
        } else {
            self.node_id().to_string()
        };
        self.topics
            .store()
            .put_broker_config(&scope, &new)
            .map_err(|e| BrokerError::Storage(e.to_string()))?;
        let mut dynamic = self.dynamic.write();
        if cluster_wide {
            dynamic.cluster = new;
        } else {
            dynamic.broker = new;
        }
        self.replication_throttle
            .set_rate(broker_dynamic::throttle_rate(&self.config, &dynamic));
        self.topics
            .set_defaults(effective_defaults(&self.config, &dynamic))?;
        Ok(())
    }

    /// Re-reads the dynamic broker configs from the (replicated) metadata
    /// and applies them when another broker changed them.
    pub fn reload_dynamic_config(&self) -> Result<()> {
        let store = self.topics.store();
        let storage =
            |e: crate::cluster::meta_store::MetaStoreError| BrokerError::Storage(e.to_string());
        let fresh = DynamicConfig {
            broker: store
                .broker_config(&self.node_id().to_string())
                .map_err(storage)?,
            cluster: store.broker_config(CLUSTER_SCOPE).map_err(storage)?,
        };
        let mut dynamic = self.dynamic.write();
        if dynamic.broker == fresh.broker && dynamic.cluster == fresh.cluster {
            return Ok(());
        }
        *dynamic = fresh;
        self.replication_throttle
            .set_rate(broker_dynamic::throttle_rate(&self.config, &dynamic));
        self.topics
            .set_defaults(effective_defaults(&self.config, &dynamic))
    }

    /// Creates `name` as auto-creation does, when the broker allows it.
    pub fn auto_create(&self, name: &str) -> Result<Arc<Topic>> {
        match self.topics.create(
            name,
            self.config.num_partitions,
            self.config.default_replication_factor,
            BTreeMap::new(),
            false,
        ) {
            // Another request created it in between: that is what we wanted.
            Err(BrokerError::TopicAlreadyExists(_)) => self
                .topics
                .get(name)
                .ok_or(BrokerError::UnknownTopicOrPartition),
            other => other,
        }
    }

    /// Brings the per-partition gauges up to date (called on scrape).
    pub fn refresh_gauges(&self) {
        let m = &self.metrics;
        m.log_size.reset();
        m.log_start_offset.reset();
        m.log_end_offset.reset();
        for p in self.topics.partitions() {
            let idx = p.index.to_string();
            let labels = [p.topic.as_ref(), idx.as_str()];
            m.log_size
                .with_label_values(&labels)
                .set(p.size_bytes() as i64);
            m.log_start_offset
                .with_label_values(&labels)
                .set(p.log_start_offset());
            m.log_end_offset
                .with_label_values(&labels)
                .set(p.high_watermark());
        }
        let producers: usize = self
            .topics
            .partitions()
            .iter()
            .map(|p| p.producer_count())
            .sum();
        m.producer_ids.set(producers as i64);
        if let Some(meta) = self.topics.store().group() {
            // Scrapes may run at once: one catches the counter up at a time.
            static CATCH_UP: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _one = CATCH_UP.lock();
            let refused = meta.registry().unauthenticated_count();
            let counted = m.rpc_unauthenticated.get();
            m.rpc_unauthenticated
                .inc_by(refused.saturating_sub(counted));
        }
        m.groups.reset();
        m.group_members.reset();
        m.consumer_lag.reset();
        let summaries = self.groups.coordinator.list();
        for state in GroupState::ALL {
            let n = summaries.iter().filter(|g| g.state == state).count();
            m.groups.with_label_values(&[state.name()]).set(n as i64);
        }
        for g in &summaries {
            m.group_members
                .with_label_values(&[g.group_id.as_str()])
                .set(g.members as i64);
        }
        for (group, topic, partition, offset) in self.groups.coordinator.all_offsets() {
            let Some(p) = self
                .topics
                .get(&topic)
                .and_then(|t| t.partition(partition).cloned())
            else {
                continue;
            };
            let lag = (p.high_watermark() - offset).max(0);
            m.consumer_lag
                .with_label_values(&[group.as_str(), topic.as_str(), &partition.to_string()])
                .set(lag);
        }
    }

    /// Retention and time-based flushing, until `shutdown` flips.
    pub async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let retention_every =
            Duration::from_millis(self.config.log_retention_check_interval_ms.max(10));
        let mut retention = tokio::time::interval(retention_every);
        let mut flush = tokio::time::interval(Duration::from_millis(100));
        let mut offsets_expiry = tokio::time::interval(Groups::retention_check_every(
            self.config.offsets_retention_check_interval_ms,
        ));
        let mut producer_expiry = tokio::time::interval(Duration::from_millis(
            self.config.producer_id_expiration_check_interval_ms.max(10),
        ));
        // How soon a broker that came to lead an offsets partition starts
        // coordinating its groups (in a cluster: a single broker coordinates
        // every group from the start).
        let mut coordination = tokio::time::interval(Duration::from_millis(100));
        coordination.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        producer_expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        offsets_expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = retention.tick() => {
                    let b = self.clone();
                    if let Ok(purges) = tokio::task::spawn_blocking(move || b.enforce_retention()).await {
                        self.purge_replicated(purges).await;
                    }
                }
                _ = producer_expiry.tick() => {
                    let b = self.clone();
                    let _ = tokio::task::spawn_blocking(move || b.expire_producers()).await;
                }
                _ = coordination.tick(), if self.topics.store().group().is_some() => {
                    let b = self.clone();
                    let _ = tokio::task::spawn_blocking(move || b.groups.follow_leadership(&b.topics)).await;
                }
                _ = offsets_expiry.tick() => {
                    self.groups.expire_offsets(&self.topics).await;
                }
                _ = flush.tick() => {
                    let b = self.clone();
                    let _ = tokio::task::spawn_blocking(move || b.flush_due()).await;
                }
            }
        }
    }

    /// Applies retention to local logs, and returns the replicated
    /// partitions whose retention is due: their log start moves through a
    /// Raft purge ([`Self::purge_replicated`]).
    fn enforce_retention(&self) -> Vec<RetentionPurge> {
        let now = now_ms();
        let mut purges = Vec::new();
        for p in self.topics.partitions() {
            let purged = p.take_purged_segments();
            if purged > 0 {
                info!(topic = %p.topic, partition = p.index, segments = purged, log_start_offset = p.log_start_offset(), "retention purged replicated segments");
                self.metrics
                    .retention_deleted_segments
                    .with_label_values(&[p.topic.as_ref()])
                    .inc_by(purged);
            }
            match p.retention_purge(now) {
                Ok(Some((group, index))) => purges.push(RetentionPurge {
                    topic: p.topic.clone(),
                    partition: p.index,
                    group,
                    index,
                }),
                Ok(None) => {}
                Err(e) => {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
            match p.enforce_retention(now) {
                Ok(r) if r.segments_deleted > 0 => {
                    info!(topic = %p.topic, partition = p.index, segments = r.segments_deleted, bytes = r.bytes_deleted, log_start_offset = r.log_start_offset, "retention removed segments");
                    self.metrics
                        .retention_deleted_segments
                        .with_label_values(&[p.topic.as_ref()])
                        .inc_by(r.segments_deleted as u64);
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
        purges
    }

    /// Snapshots each due replicated partition at its retention point and
    /// asks openraft to purge the log up to it (openraft purges only what a
    /// snapshot covers, and defers while a follower is still being sent
    /// those entries); the store deletes the segments then.
    async fn purge_replicated(&self, purges: Vec<RetentionPurge>) {
        for p in purges {
            let raft = p.group.raft();
            let snapshotted = async {
                raft.trigger().snapshot().await.ok()?;
                raft.wait(Some(Duration::from_secs(10)))
                    .metrics(
                        |m| m.snapshot.is_some_and(|s| s.index >= p.index),
                        "retention snapshot",
                    )
                    .await
                    .ok()
            };
            if snapshotted.await.is_none() {
                warn!(topic = %p.topic, partition = p.partition, index = p.index, "retention: no snapshot at the retention point; retried next time");
                continue;
            }
            if let Err(e) = raft.trigger().purge_log(p.index).await {
                warn!(topic = %p.topic, partition = p.partition, error = %e, "retention purge failed");
            }
        }
    }

    /// Drops idle producers (`producer.id.expiration.ms`) from every
    /// partition, and the epoch bumps remembered for them.
    fn expire_producers(&self) {
        let now = now_ms();
        let max_idle = i64::try_from(self.config.producer_id_expiration_ms).unwrap_or(i64::MAX);
        let mut expired = 0;
        for p in self.topics.partitions() {
            expired += p.expire_producers(now, max_idle);
        }
        self.producer_ids.expire(now, max_idle);
        if expired > 0 {
            info!(expired, "expired idle producer ids");
            self.metrics.producer_ids_expired.inc_by(expired as u64);
        }
    }

    fn flush_due(&self) {
        let now = Instant::now();
        for p in self.topics.partitions() {
            if let Err(e) = p.flush_if_due(now) {
                self.metrics.storage_errors.inc();
                warn!(topic = %p.topic, partition = p.index, error = %e, "flush failed");
            }
        }
    }

    /// fsyncs everything and snapshots producer state (clean shutdown).
    pub fn flush_all(&self) {
        for p in self.topics.partitions() {
            if let Err(e) = p.checkpoint() {
                warn!(topic = %p.topic, partition = p.index, error = %e, "flush at shutdown failed");
            }
        }
    }
}

/// The metadata store's scope for cluster-wide dynamic broker configs.
const CLUSTER_SCOPE: &str = "default";

/// Dynamic broker configs: this broker's own, and the cluster-wide defaults
/// (Kafka's resource names "<id>" and ""). The broker's own win.
#[derive(Debug, Clone, Default)]
pub struct DynamicConfig {
    pub broker: BTreeMap<String, String>,
    pub cluster: BTreeMap<String, String>,
}

/// The broker's defaults for topic configs (topic-level names): built-ins,
/// then static flags, then cluster-wide and per-broker dynamic configs.
pub fn effective_defaults(
    config: &BrokerConfig,
    dynamic: &DynamicConfig,
) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = config
        .topic_defaults()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (k, v) in dynamic.cluster.iter().chain(dynamic.broker.iter()) {
        if let Some(def) = topic_config::def_by_broker_name(k) {
            out.insert(def.name.to_string(), v.clone());
        }
    }
    out
}

/// A replicated partition whose retention is due: purge its Raft log up to
/// `index`.
struct RetentionPurge {
    topic: Arc<str>,
    partition: i32,
    group: Arc<crate::replication::PartitionGroup>,
    index: u64,
}
