//! The metadata Raft group on this broker: starts the replica, joins the
//! cluster (voters initialize from `controller.quorum.voters`, every other
//! broker is added as a learner by the leader once it registered), and
//! executes writes — locally on the leader, forwarded to it over gRPC from
//! any other broker, so a client may send an admin request to any broker.
//!
//! Reads come from the local replica ([`MetadataGroup::state`]) and never
//! wait for Raft; only a write waits for its commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft, SnapshotPolicy};
use parking_lot::{RwLock, RwLockReadGuard};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{info, warn};

use super::meta_state::{BrokerRegistration, MetaCommand, MetaResponse, MetaState};
use super::raft_store::{LogStore, MetaTypes, StateMachine};
use crate::rpc::client::{NetworkFactory, PeerPool};
use crate::rpc::recovery::Recovery;
use crate::rpc::server::{GroupHandler, Registry};
use crate::rpc::{GroupId, RpcError, RpcKind, decode, encode};

#[derive(Debug, Clone, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetaWriteError {
    #[error("no metadata leader reachable within {0:?}")]
    NoLeader(Duration),
    #[error("metadata write failed: {0}")]
    Failed(String),
}

/// The metadata group's settings.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub node_id: u64,
    /// Voters by node id: their RPC addresses.
    pub voters: BTreeMap<u64, String>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Log entries since the last snapshot that trigger a new one.
    pub snapshot_every: u64,
    /// How long a write waits for a leader and its commit.
    pub write_timeout: Duration,
}

pub struct MetadataGroup {
    raft: Raft<MetaTypes>,
    sm: StateMachine,
    state: Arc<RwLock<MetaState>>,
    pool: Arc<PeerPool>,
    registry: Arc<Registry>,
    settings: GroupSettings,
    handle: tokio::runtime::Handle,
    /// See [`Self::caught_up`].
    caught_up: std::sync::atomic::AtomicBool,
}

/// A write forwarded to another broker.
#[derive(Serialize, Deserialize)]
struct Forwarded {
    hops: u8,
    cmd: MetaCommand,
}

type ForwardReply = Result<(u64, MetaResponse), MetaWriteError>;

impl MetadataGroup {
    /// Opens the replica in `db`, serves it on `registry`, and initializes
    /// the group when this broker is a voter of a new cluster.
    ///
    /// # Errors
    /// Storage or an invalid Raft configuration.
    pub async fn start(
        db: &sled::Db,
        cluster_id: &str,
        settings: GroupSettings,
        registry: &Arc<Registry>,
        pool: Arc<PeerPool>,
    ) -> anyhow::Result<Arc<Self>> {
        let config = openraft::Config {
            cluster_name: cluster_id.to_string(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            install_snapshot_timeout: 5_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_every.max(1)),
            max_in_snapshot_log_to_keep: settings.snapshot_every.min(100),
            purge_batch_size: 1,
            ..Default::default()
        }
        .validate()?;
        let log = LogStore::open(db)?;
        let sm = StateMachine::open(db)?;
        let network = NetworkFactory::<MetaTypes>::new(pool.clone(), GroupId::Metadata);
        let raft = Raft::new(settings.node_id, Arc::new(config), network, log, sm.clone()).await?;
        let group = Arc::new(Self {
            state: sm.state(),
            raft,
            sm,
            pool,
            registry: registry.clone(),
            settings,
            handle: tokio::runtime::Handle::current(),
            caught_up: std::sync::atomic::AtomicBool::new(false),
        });
        // Nothing on disk: a new voter, or one whose disk was lost.
        let recovery = Recovery::new(group.raft.is_initialized().await?);
        registry.register(
            GroupId::Metadata,
            Arc::new(Handler {
                group: Arc::downgrade(&group),
                recovery: Arc::new(recovery),
            }),
        );
        if group.settings.voters.contains_key(&group.settings.node_id)
            && !group.raft.is_initialized().await?
        {
            let members: BTreeMap<u64, BasicNode> = group
                .settings
                .voters
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            let g = group.clone();
            tokio::spawn(async move {
                // A voter with an empty disk in a running cluster must not
                // start a log of its own: wait for a leader to reach it
                // first. Only when none does (a new cluster) do the voters
                // initialize, all with the same membership, which is safe.
                let deadline = Instant::now()
                    + Duration::from_millis(g.settings.election_timeout_max_ms.saturating_mul(2));
                while Instant::now() < deadline {
                    if g.raft.is_initialized().await.unwrap_or(true) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if let Err(e) = g.raft.initialize(members).await {
                    info!(error = %e, "metadata group already initialized");
                }
            });
        }
        Ok(group)
    }

    /// The local replica's state. Never waits on Raft.
    pub fn state(&self) -> RwLockReadGuard<'_, MetaState> {
        self.state.read()
    }

    /// Fires after every applied batch, with the last applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sm.subscribe()
    }

    /// This broker's gRPC server registry: other Raft groups (partitions)
    /// register their handlers here.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The pooled channels to the other brokers, shared by every group.
    pub fn pool(&self) -> &Arc<PeerPool> {
        &self.pool
    }

    pub fn raft(&self) -> &Raft<MetaTypes> {
        &self.raft
    }

    pub fn node_id(&self) -> u64 {
        self.settings.node_id
    }

    /// The current metadata leader, as this replica knows it.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    /// Executes `cmd` through the leader and waits until this replica has
    /// applied it too (bounded by the write timeout), so a read that follows
    /// on this broker sees it.
    ///
    /// # Errors
    /// No leader within the write timeout, or the leader refusing.
    pub async fn write(&self, cmd: MetaCommand) -> Result<MetaResponse, MetaWriteError> {
        let deadline = Instant::now() + self.settings.write_timeout;
        let (index, resp) = self.write_via_leader(cmd, 0, deadline).await?;
        let mut applied = self.subscribe();
        let _ = tokio::time::timeout_at(deadline.into(), applied.wait_for(|&i| i >= index)).await;
        Ok(resp)
    }

    /// [`Self::write`] for synchronous callers (admin paths that already
    /// run off the async workers or may block one briefly).
    ///
    /// # Errors
    /// As [`Self::write`].
    pub fn write_blocking(&self, cmd: MetaCommand) -> Result<MetaResponse, MetaWriteError> {
        let fut = self.write(cmd);
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| h.block_on(fut))
            }
            Ok(_) => Err(MetaWriteError::Failed(
                "metadata writes need the multi-threaded runtime".into(),
            )),
            Err(_) => self.handle.block_on(fut),
        }
    }

    async fn write_via_leader(
        &self,
        cmd: MetaCommand,
        hops: u8,
        deadline: Instant,
    ) -> ForwardReply {
        let mut voter_turn = 0usize;
        loop {
            let leader = self.leader();
            if leader == Some(self.settings.node_id) {
                match self.raft.client_write(cmd.clone()).await {
                    Ok(r) => return Ok((r.log_id.index, r.data)),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                    Err(e) => return Err(MetaWriteError::Failed(e.to_string())),
                }
            } else if hops < 3 {
                let addr = match leader {
                    Some(l) => self
                        .raft
                        .metrics()
                        .borrow()
                        .membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone()),
                    // Not yet a member (a new learner): ask the voters.
                    None => {
                        let others: Vec<&String> = self
                            .settings
                            .voters
                            .iter()
                            .filter(|(id, _)| **id != self.settings.node_id)
                            .map(|(_, a)| a)
                            .collect();
                        voter_turn += 1;
                        (!others.is_empty()).then(|| others[voter_turn % others.len()].clone())
                    }
                };
                if let Some(addr) = addr {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let payload = encode(&Forwarded {
                        hops: hops + 1,
                        cmd: cmd.clone(),
                    })
                    .map_err(|e| MetaWriteError::Failed(e.to_string()))?;
                    match self
                        .pool
                        .call(
                            &addr,
                            GroupId::Metadata,
                            RpcKind::Forward,
                            payload,
                            Some(left),
                        )
                        .await
                    {
                        Ok(b) => match decode::<ForwardReply>(&b) {
                            Ok(Ok(r)) => return Ok(r),
                            Ok(Err(MetaWriteError::Failed(e))) => {
                                return Err(MetaWriteError::Failed(e));
                            }
                            Ok(Err(MetaWriteError::NoLeader(_))) => {}
                            Err(e) => warn!(%addr, error = %e, "bad forward reply"),
                        },
                        Err(e) => {
                            tracing::debug!(%addr, error = %e, "forwarding a metadata write failed")
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(MetaWriteError::NoLeader(self.settings.write_timeout));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether this replica has applied this run's registration of its
    /// broker, hence every record committed before it: until then a topic
    /// missing here may exist (a new or restarted broker replaying).
    pub fn caught_up(&self) -> bool {
        self.caught_up.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Registers this broker until it succeeds, then, while this broker
    /// leads, adds registered brokers that are not members as learners.
    pub async fn run_membership(self: Arc<Self>, me: BrokerRegistration) {
        let index = loop {
            let deadline = Instant::now() + self.settings.write_timeout;
            match self
                .write_via_leader(MetaCommand::RegisterBroker(me.clone()), 0, deadline)
                .await
            {
                Ok((index, _)) => {
                    info!(node_id = me.node_id, "registered in the cluster metadata");
                    break index;
                }
                Err(e) => warn!(error = %e, "registering in the cluster metadata; retrying"),
            }
        };
        // A new broker is added as a learner only now, then replays; the
        // loop below must not wait for that (this broker may be the one
        // that adds learners).
        let me_too = self.clone();
        tokio::spawn(async move {
            let mut applied = me_too.subscribe();
            if applied.wait_for(|&i| i >= index).await.is_ok() {
                me_too
                    .caught_up
                    .store(true, std::sync::atomic::Ordering::Release);
                info!(
                    index,
                    "the cluster metadata is caught up to this broker's registration"
                );
            }
        });
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            if self.leader() != Some(self.settings.node_id) {
                continue;
            }
            let members: Vec<u64> = self
                .raft
                .metrics()
                .borrow()
                .membership_config
                .nodes()
                .map(|(id, _)| *id)
                .collect();
            let missing: Vec<(u64, String)> = self
                .state()
                .brokers
                .values()
                .filter_map(|b| {
                    let id = u64::try_from(b.node_id).ok()?;
                    (!members.contains(&id)).then(|| (id, b.rpc_addr.clone()))
                })
                .collect();
            for (id, addr) in missing {
                match self
                    .raft
                    .add_learner(id, BasicNode::new(&addr), false)
                    .await
                {
                    Ok(_) => {
                        info!(node_id = id, %addr, "added broker to the metadata group as a learner")
                    }
                    Err(e) => warn!(node_id = id, error = %e, "adding a learner failed"),
                }
            }
        }
    }

    /// Stops the replica.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "metadata raft shutdown");
        }
    }
}

/// The metadata group's RPC handler: Raft messages, and forwarded writes.
struct Handler {
    group: std::sync::Weak<MetadataGroup>,
    /// Holds back votes after a lost disk.
    recovery: Arc<Recovery>,
}

impl GroupHandler for Handler {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let (group, recovery) = (self.group.upgrade(), self.recovery.clone());
        Box::pin(async move {
            let group = group.ok_or_else(|| RpcError::UnknownGroup("metadata".into()))?;
            if kind != RpcKind::Forward {
                return recovery
                    .handle_raft(&group.raft, GroupId::Metadata, kind, &payload)
                    .await;
            }
            let f: Forwarded = decode(&payload)?;
            let deadline = Instant::now() + group.settings.write_timeout;
            let reply = group.write_via_leader(f.cmd, f.hops, deadline).await;
            encode(&reply)
        })
    }
}

/// Parses `controller.quorum.voters`: `id@host:port,...`.
///
/// # Errors
/// A malformed entry, named in the message.
pub fn parse_voters(s: &str) -> Result<BTreeMap<u64, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('@')
            .ok_or_else(|| format!("voter {part:?} is not id@host:port"))?;
        let id: u64 = id
            .parse()
            .map_err(|_| format!("voter {part:?}: {id:?} is not a node id"))?;
        if addr
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(format!("voter {part:?}: {addr:?} is not host:port"));
        }
        if out.insert(id, addr.to_string()).is_some() {
            return Err(format!("voter id {id} appears twice"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::meta_store::TopicRecord;
    use crate::rpc::RpcConfig;
    use crate::rpc::server::serve;

    async fn node(
        id: u64,
        listener: tokio::net::TcpListener,
        voters: &BTreeMap<u64, String>,
        dir: &std::path::Path,
    ) -> Arc<MetadataGroup> {
        let db = sled::Config::new().path(dir).open().unwrap();
        let registry = Registry::new(RpcConfig::new("t", id));
        let r = registry.clone();
        tokio::spawn(async move { serve(listener, r, std::future::pending()).await });
        let settings = GroupSettings {
            node_id: id,
            voters: voters.clone(),
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every: 3,
            write_timeout: Duration::from_secs(10),
        };
        let pool = PeerPool::new(RpcConfig::new("t", id));
        MetadataGroup::start(&db, "t", settings, &registry, pool)
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_agree_and_followers_forward_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        let mut voters = BTreeMap::new();
        for id in 1..=3u64 {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            voters.insert(id, l.local_addr().unwrap().to_string());
            listeners.push((id, l));
        }
        let mut groups = Vec::new();
        for (id, l) in listeners {
            groups.push(node(id, l, &voters, &dir.path().join(id.to_string())).await);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            let ls: Vec<_> = groups.iter().map(|g| g.leader()).collect();
            if ls[0].is_some() && ls.iter().all(|l| *l == ls[0]) {
                break ls[0].unwrap();
            }
            assert!(Instant::now() < deadline, "no leader: {ls:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let follower = groups.iter().find(|g| g.node_id() != leader).unwrap();
        let rec = TopicRecord {
            name: "t1".into(),
            id: uuid::Uuid::new_v4(),
            partitions: 3,
            replication_factor: 3,
            configs: BTreeMap::new(),
            assignments: vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]],
        };
        assert_eq!(
            follower.write(MetaCommand::CreateTopic(rec.clone())).await,
            Ok(MetaResponse::Ok)
        );
        // Read-your-writes on the broker that asked.
        assert_eq!(follower.state().topics["t1"], rec);
        assert_eq!(
            follower.write(MetaCommand::CreateTopic(rec.clone())).await,
            Ok(MetaResponse::TopicExists)
        );
        let mut blocks = Vec::new();
        for g in &groups {
            for _ in 0..3 {
                match g
                    .write(MetaCommand::AllocateProducerIds { size: 10 })
                    .await
                    .unwrap()
                {
                    MetaResponse::ProducerIdBlock { start, end } => blocks.push((start, end)),
                    other => panic!("{other:?}"),
                }
            }
        }
        blocks.sort_unstable();
        for w in blocks.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlapping blocks {blocks:?}");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while groups.iter().any(|g| *g.state() != *groups[0].state()) {
            assert!(Instant::now() < deadline, "replicas did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for g in &groups {
            g.shutdown().await;
        }
    }

    #[test]
    fn voters_parse() {
        let v = parse_voters("1@127.0.0.1:19092, 2@b:19093").unwrap();
        assert_eq!(v[&1], "127.0.0.1:19092");
        assert_eq!(v[&2], "b:19093");
        assert!(parse_voters("x@a:1").is_err());
        assert!(parse_voters("1@a").is_err());
        assert!(parse_voters("1@a:1,1@b:2").is_err());
        assert!(parse_voters("").unwrap().is_empty());
    }
}
