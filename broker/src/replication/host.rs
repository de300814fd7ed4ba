//! Hosting partition Raft groups on a broker: one group for every replica
//! the committed metadata assigns to this broker (replicated topics only,
//! see `cluster::topic_table::wrap_log`), started when the assignment
//! appears (or at start-up from the data directory), stopped when the topic
//! is deleted.
//!
//! The host also reports leadership: while this broker leads a partition
//! group it records `leader, epoch (= Raft term), isr` in the metadata group
//! ([`MetaCommand::SetPartitionLeaders`], older epochs ignored), so every
//! broker, hosting a replica or not, routes clients to the real leader. And
//! it exports the partition Raft metrics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, SnapshotPolicy};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};
use uuid::Uuid;

use super::handover::{self, PartitionHandler};
use super::reassign::{self, Move};
use super::{NodeId, PartitionGroup, PartitionRaft};
use crate::broker::Broker;
use crate::cluster::meta_state::{MetaCommand, PartitionLeader, PartitionLeaderUpdate};
use crate::cluster::metadata_group::MetadataGroup;
use crate::partition::Partition;
use crate::rpc::GroupId;
use crate::rpc::client::NetworkFactory;
use crate::rpc::recovery::Recovery;
use crate::rpc::throttle::CatchUpThrottle;

/// How long a produce waits for its entries to commit before
/// REQUEST_TIMED_OUT (the client retries).
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the host looks at its groups (leadership reports, metrics,
/// groups to start or stop); metadata changes wake it sooner.
const TICK: Duration = Duration::from_millis(250);

/// Partition group timing.
#[derive(Debug, Clone, Copy)]
pub struct HostSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// `auto.leader.rebalance.enable` and its check interval.
    pub auto_leader_rebalance: Option<Duration>,
}

struct Hosted {
    group_id: GroupId,
    group: Arc<PartitionGroup>,
    partition: Arc<Partition>,
    topic_id: Uuid,
    last_term: u64,
    /// This replica's `skiff_partition_raft_term` and `_commit_lag`, looked
    /// up once: every tick sets them for every hosted group.
    term_gauge: prometheus::IntGauge,
    lag_gauge: prometheus::IntGauge,
}

pub struct ReplicaHost {
    node_id: NodeId,
    meta: Arc<MetadataGroup>,
    config: Arc<openraft::Config>,
    settings: HostSettings,
    hosted: tokio::sync::Mutex<HashMap<GroupId, Hosted>>,
    kick: Notify,
    reporting: Arc<AtomicBool>,
    throttle: Arc<CatchUpThrottle>,
    /// Groups whose reassignment this broker is carrying out.
    driving: Arc<parking_lot::Mutex<HashSet<GroupId>>>,
    /// When the preferred leaders were last looked at.
    leaders_checked: parking_lot::Mutex<Instant>,
}

impl ReplicaHost {
    /// # Errors
    /// An invalid Raft configuration.
    pub fn new(
        meta: Arc<MetadataGroup>,
        cluster_id: &str,
        settings: HostSettings,
        throttle: Arc<CatchUpThrottle>,
    ) -> anyhow::Result<Arc<Self>> {
        let config = openraft::Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            // A purge moves the partition's log start (deletes data): only
            // retention asks for one (a snapshot at the retention point,
            // then purge_log), never openraft on its own, so a lagging
            // replica catches up from the log of everything retained.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: u64::MAX,
            // Entries are whole record batches (up to message.max.bytes
            // each): keep one AppendEntries well under the RPC size limit.
            max_payload_entries: 32,
            ..Default::default()
        }
        .validate()?;
        Ok(Arc::new(Self {
            node_id: meta.node_id(),
            meta,
            config: Arc::new(config),
            settings,
            hosted: tokio::sync::Mutex::new(HashMap::new()),
            kick: Notify::new(),
            reporting: Arc::new(AtomicBool::new(false)),
            throttle,
            driving: Arc::new(parking_lot::Mutex::new(HashSet::new())),
            leaders_checked: parking_lot::Mutex::new(Instant::now()),
        }))
    }

    /// Wakes the host (the local topic table changed).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Starts and stops groups as the topic table says, reports leadership
    /// and exports metrics, until `shutdown`.
    pub async fn run(self: Arc<Self>, broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tick.tick() => {}
                _ = self.kick.notified() => {}
            }
            self.reconcile(&broker).await;
            let (updates, moves) = self.observe(&broker).await;
            for (mv, group) in moves {
                self.start_move(mv, group);
            }
            self.rebalance_leaders().await;
            if !updates.is_empty() && !self.reporting.swap(true, Ordering::SeqCst) {
                // In its own task: without a metadata quorum the write waits
                // for the write timeout, and hosting must go on meanwhile.
                let meta = self.meta.clone();
                let reporting = self.reporting.clone();
                tokio::spawn(async move {
                    let n = updates.len();
                    match meta.write(MetaCommand::SetPartitionLeaders(updates)).await {
                        Ok(_) => debug!(partitions = n, "recorded partition leadership"),
                        Err(e) => {
                            warn!(error = %e, "recording partition leadership failed; retrying")
                        }
                    }
                    reporting.store(false, Ordering::SeqCst);
                });
            }
        }
    }

    /// Stops every hosted group (clean shutdown).
    pub async fn shutdown(&self) {
        let mut hosted = self.hosted.lock().await;
        for (gid, h) in hosted.drain() {
            self.meta.registry().unregister(&gid);
            if let Some(r) = h.partition.replicated() {
                r.set_group(None);
            }
            if let Err(e) = h.group.raft().shutdown().await {
                warn!(group = %gid, error = %e, "partition raft shutdown");
            }
        }
    }

    async fn reconcile(&self, broker: &Broker) {
        let mut want: HashMap<GroupId, (Uuid, Arc<Partition>)> = HashMap::new();
        for t in broker.topics.all() {
            for p in &t.partitions {
                if let Some(r) = p.replicated() {
                    want.insert(r.group_id, (t.id, p.clone()));
                }
            }
        }
        let mut hosted = self.hosted.lock().await;
        // A replica moved away and back again is a new partition object: the
        // old one's group is stopped and a new one started.
        let gone: Vec<GroupId> = hosted
            .iter()
            .filter(|(g, h)| {
                want.get(g)
                    .is_none_or(|(_, p)| !Arc::ptr_eq(p, &h.partition))
            })
            .map(|(g, _)| *g)
            .collect();
        for gid in gone {
            let Some(h) = hosted.remove(&gid) else {
                continue;
            };
            self.meta.registry().unregister(&gid);
            let m = &broker.metrics;
            let labels = [h.partition.topic.as_ref(), &h.partition.index.to_string()];
            let _ = m.partition_raft_term.remove_label_values(&labels);
            let _ = m.partition_raft_commit_lag.remove_label_values(&labels);
            info!(group = %gid, topic = %h.partition.topic, partition = h.partition.index, "stopped partition replica");
            tokio::spawn(async move {
                // Already stopped when the topic was deleted; harmless then.
                let _ = h.group.raft().shutdown().await;
            });
        }
        for (gid, (topic_id, p)) in want {
            if hosted.contains_key(&gid) {
                continue;
            }
            match self.start(gid, topic_id, &p).await {
                Ok(group) => {
                    if let Some(r) = p.replicated() {
                        r.set_group(Some(group.clone()));
                    }
                    info!(group = %gid, topic = %p.topic, partition = p.index, "started partition replica");
                    let index = p.index.to_string();
                    let labels = [p.topic.as_ref(), index.as_str()];
                    let m = &broker.metrics;
                    hosted.insert(
                        gid,
                        Hosted {
                            group_id: gid,
                            group,
                            topic_id,
                            last_term: 0,
                            term_gauge: m.partition_raft_term.with_label_values(&labels),
                            lag_gauge: m.partition_raft_commit_lag.with_label_values(&labels),
                            partition: p,
                        },
                    );
                }
                Err(e) => {
                    debug!(group = %gid, error = %e, "partition replica not started yet; retrying")
                }
            }
        }
    }

    async fn start(
        &self,
        gid: GroupId,
        topic_id: Uuid,
        p: &Arc<Partition>,
    ) -> anyhow::Result<Arc<PartitionGroup>> {
        let r = p
            .replicated()
            .ok_or_else(|| anyhow::anyhow!("not a replicated partition"))?;
        let (members, first, known_leader) = {
            let state = self.meta.state();
            // During a reassignment the group's first members are the
            // original replicas; a replica being added never initializes.
            let pending = state
                .reassignment(topic_id, p.index)
                .map(|r| r.original.clone());
            let me = i32::try_from(self.node_id).unwrap_or(-1);
            let adding = pending.as_ref().is_some_and(|o| !o.contains(&me));
            let initial = pending.unwrap_or_else(|| r.replicas());
            let mut members = BTreeMap::new();
            for id in &initial {
                let b = state
                    .brokers
                    .get(id)
                    .ok_or_else(|| anyhow::anyhow!("replica {id} is not a registered broker"))?;
                members.insert(u64::try_from(*id)?, BasicNode::new(&b.rpc_addr));
            }
            let known = adding
                || state
                    .partition_leaders
                    .get(&topic_id)
                    .is_some_and(|m| m.contains_key(&p.index));
            (members, initial.first().copied(), known)
        };
        r.store.serve_as(self.node_id);
        let raft = Raft::new(
            self.node_id,
            self.config.clone(),
            NetworkFactory::<PartitionRaft>::new(self.meta.pool().clone(), gid)
                .with_throttle(self.throttle.clone())
                .with_log_tail(r.store.log_tail()),
            r.store.log_store(),
            r.store.state_machine(),
        )
        .await?;
        let pool = self.meta.pool().clone();
        let window = Duration::from_millis((self.settings.heartbeat_ms * 3).max(1500));
        let group = Arc::new(
            PartitionGroup::new(self.node_id, raft.clone(), r.store.clone(), COMMIT_TIMEOUT)
                .with_liveness(Arc::new(move |_, addr| {
                    pool.since_last_reply(addr).is_some_and(|d| d <= window)
                })),
        );
        // Nothing on disk (no vote, no log): a new replica, or one whose
        // disk was lost.
        let recovery = Recovery::new(raft.is_initialized().await?);
        self.meta.registry().register(
            gid,
            Arc::new(PartitionHandler {
                group: group.clone(),
                pool: self.meta.pool().clone(),
                gid,
                window: self.handover_window(),
                recovery: Arc::new(recovery),
            }),
        );
        if !known_leader && !raft.is_initialized().await? {
            // A new partition: every replica may initialize it with the same
            // membership (safe in Raft), but the preferred leader does it at
            // once and so is elected first, which spreads leaders as the
            // assignment does. The others wait to be reached first. A
            // partition that ever had a leader is never initialized again
            // (a replica with a wiped disk must catch up, not start a log).
            let preferred = first.and_then(|f| u64::try_from(f).ok()) == Some(self.node_id);
            let wait = if preferred {
                // A moment for the other replicas' brokers to apply the
                // same metadata and register the group, so the first vote
                // reaches them.
                Duration::from_millis(300)
            } else {
                Duration::from_millis(self.settings.election_timeout_max_ms.saturating_mul(2))
            };
            tokio::spawn(async move {
                let deadline = Instant::now() + wait;
                while Instant::now() < deadline {
                    if raft.is_initialized().await.unwrap_or(true) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if raft.is_initialized().await.unwrap_or(true) {
                    return;
                }
                if let Err(e) = raft.initialize(members).await {
                    debug!(group = %gid, error = %e, "partition group already initialized");
                }
            });
        }
        Ok(group)
    }

    /// The hand-over window of this broker's partition groups.
    pub fn handover_window(&self) -> Duration {
        handover::window(self.settings.election_timeout_max_ms)
    }

    /// A hand-over of `h`'s leadership to `to`, to run as a task.
    fn hand_over(
        &self,
        h: &Hosted,
        to: NodeId,
    ) -> impl std::future::Future<Output = handover::Outcome> + Send + 'static {
        let (group, pool, gid, window) = (
            h.group.clone(),
            self.meta.pool().clone(),
            h.group_id,
            self.handover_window(),
        );
        async move { handover::hand_over(&group, &pool, gid, to, window).await }
    }

    /// Controlled shutdown: this broker stops standing in elections and
    /// hands every partition it leads to an in-sync voter (the first in
    /// assignment order), all at once, waiting at most `timeout`. Returns
    /// how many it led and how many moved.
    pub async fn hand_over_all(&self, timeout: Duration) -> (usize, usize) {
        let mut moves = tokio::task::JoinSet::new();
        let mut led = 0;
        {
            let hosted = self.hosted.lock().await;
            for h in hosted.values() {
                h.group.raft().runtime_config().elect(false);
                if !h.group.is_leader() {
                    continue;
                }
                led += 1;
                let in_sync = h.group.in_sync_ids();
                let voters: Vec<NodeId> = h
                    .group
                    .raft()
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .collect();
                let assigned = h
                    .partition
                    .replicated()
                    .map(|r| r.replicas())
                    .unwrap_or_default();
                let to = assigned
                    .iter()
                    .filter_map(|r| NodeId::try_from(*r).ok())
                    .chain(voters.iter().copied())
                    .find(|r| *r != self.node_id && voters.contains(r) && in_sync.contains(r));
                let Some(to) = to else {
                    warn!(topic = %h.partition.topic, partition = h.partition.index, "no in-sync replica to hand leadership to before stopping");
                    continue;
                };
                moves.spawn(self.hand_over(h, to));
            }
        }
        let mut moved = 0;
        let _ = tokio::time::timeout(timeout, async {
            while let Some(outcome) = moves.join_next().await {
                if matches!(outcome, Ok(handover::Outcome::Moved)) {
                    moved += 1;
                }
            }
        })
        .await;
        (led, moved)
    }

    /// Every check interval (`auto.leader.rebalance.enable`): hands each
    /// partition this broker leads back to its preferred replica when that
    /// one is in sync and no reassignment is under way. All at once: each
    /// partition pauses its writes for the same lease.
    async fn rebalance_leaders(&self) {
        let Some(interval) = self.settings.auto_leader_rebalance else {
            return;
        };
        {
            let mut checked = self.leaders_checked.lock();
            if checked.elapsed() < interval {
                return;
            }
            *checked = Instant::now();
        }
        let hosted = self.hosted.lock().await;
        let state = self.meta.state();
        for h in hosted.values() {
            let Some(preferred) = h
                .partition
                .replicated()
                .and_then(|r| r.replicas().first().copied())
                .and_then(|p| NodeId::try_from(p).ok())
            else {
                continue;
            };
            if preferred == self.node_id
                || !h.group.is_leader()
                || h.group.is_stepping_aside()
                || state.reassignment(h.topic_id, h.partition.index).is_some()
                || !h.group.in_sync_ids().contains(&preferred)
            {
                continue;
            }
            info!(topic = %h.partition.topic, partition = h.partition.index, to = preferred, "handing leadership back to the preferred replica");
            tokio::spawn(self.hand_over(h, preferred));
        }
    }

    /// Carries out a reassignment this broker's replica leads, unless it
    /// already does; after an error the next tick starts it again, from
    /// wherever the group is.
    fn start_move(&self, mv: Move, group: Arc<PartitionGroup>) {
        if !self.driving.lock().insert(mv.group) {
            return;
        }
        let (meta, throttle, driving) = (
            self.meta.clone(),
            self.throttle.clone(),
            self.driving.clone(),
        );
        tokio::spawn(async move {
            match reassign::drive(&meta, &group, &throttle, &mv).await {
                Ok(Ok(())) => {}
                Ok(Err(stopped)) => {
                    debug!(topic = %mv.topic, partition = mv.partition, ?stopped, "reassignment handed over");
                }
                Err(e) => {
                    warn!(topic = %mv.topic, partition = mv.partition, error = %e, "reassignment step failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            driving.lock().remove(&mv.group);
        });
    }

    /// Exports the partition metrics and returns the leadership records
    /// that differ from what the metadata holds, and the reassignments of
    /// the groups this broker leads.
    async fn observe(
        &self,
        broker: &Broker,
    ) -> (Vec<PartitionLeaderUpdate>, Vec<(Move, Arc<PartitionGroup>)>) {
        let me = i32::try_from(self.node_id).unwrap_or(-1);
        let m = &broker.metrics;
        let mut hosted = self.hosted.lock().await;
        let mut updates = Vec::new();
        let mut moves = Vec::new();
        let (mut led, mut under, mut offline) = (0i64, 0i64, 0i64);
        let mut replicas_held = i64::try_from(hosted.len()).unwrap_or(i64::MAX);
        let state = self.meta.state();
        for h in hosted.values_mut() {
            let (term, leader, lag, leading) = {
                let rm = h.group.raft().metrics();
                let rm = rm.borrow();
                let applied = rm.last_applied.map_or(0, |l| l.index);
                let last = rm.last_log_index.unwrap_or(0);
                (
                    rm.current_term,
                    rm.current_leader,
                    last.saturating_sub(applied),
                    h.group.leads(&rm),
                )
            };
            if term > h.last_term {
                if h.last_term > 0 {
                    m.partition_elections.inc_by(term - h.last_term);
                }
                h.last_term = term;
            }
            h.term_gauge.set(i64::try_from(term).unwrap_or(i64::MAX));
            h.lag_gauge.set(i64::try_from(lag).unwrap_or(i64::MAX));
            if leader.is_none() {
                offline += 1;
            }
            if !leading {
                continue;
            }
            led += 1;
            if let Some(r) = state.reassignment(h.topic_id, h.partition.index) {
                moves.push((
                    Move {
                        group: h.group_id,
                        topic: h.partition.topic.to_string(),
                        topic_id: h.topic_id,
                        partition: h.partition.index,
                        target: r.target.clone(),
                    },
                    h.group.clone(),
                ));
            }
            let mut isr: Vec<i32> = h
                .group
                .in_sync_ids()
                .into_iter()
                .filter_map(|id| i32::try_from(id).ok())
                .collect();
            isr.sort_unstable();
            let replicas = h.partition.replicated().map_or(0, |r| r.replicas().len());
            if isr.len() < replicas {
                under += 1;
            }
            let want = PartitionLeader {
                leader: me,
                epoch: term,
                isr,
            };
            let held = state
                .partition_leaders
                .get(&h.topic_id)
                .and_then(|ps| ps.get(&h.partition.index));
            if held != Some(&want) {
                updates.push(PartitionLeaderUpdate {
                    topic_id: h.topic_id,
                    partition: h.partition.index,
                    leader: want,
                });
            }
        }
        drop(state);
        // Single-replica partitions are led by their assigned leader.
        for t in broker.topics.all() {
            if t.is_internal() {
                continue;
            }
            for p in &t.partitions {
                if p.replicated().is_none()
                    && crate::cluster::routing::leader_of(broker, &t, p.index) == me
                    && !crate::cluster::routing::is_replicated(broker, &t)
                {
                    led += 1;
                    replicas_held += 1;
                }
            }
        }
        m.partition_leaders.set(led);
        m.partition_replicas.set(replicas_held);
        m.replica_cache_bytes
            .set(i64::try_from(super::recent::BROKER_BUDGET.used()).unwrap_or(i64::MAX));
        m.under_replicated_partitions.set(under);
        m.offline_partitions.set(offline);
        m.reassignments_in_progress
            .set(i64::try_from(self.driving.lock().len()).unwrap_or(i64::MAX));
        (updates, moves)
    }
}
