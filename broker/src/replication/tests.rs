//! Three in-process replicas over an in-memory network: real openraft, real
//! segment files.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft};
use parking_lot::Mutex;
use skiff_log::batch::{self, BatchHeader};
use skiff_log::{LogConfig, PartitionLog};

use super::group::QUORUM_ACK_STALE;
use super::*;
use crate::producer_state::test_support::producer_batch;

#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<BTreeMap<NodeId, PartitionRaftHandle>>>,
    /// Nodes cut off from everyone.
    isolated: Arc<Mutex<BTreeSet<NodeId>>>,
}

struct Factory {
    router: Router,
    source: NodeId,
}

struct Conn {
    router: Router,
    source: NodeId,
    target: NodeId,
}

impl Conn {
    #[allow(clippy::result_large_err)] // openraft's RPCError, as the trait returns it
    fn peer<E: std::error::Error>(
        &self,
    ) -> Result<PartitionRaftHandle, RPCError<NodeId, BasicNode, E>> {
        let isolated = self.router.isolated.lock();
        let raft = if isolated.contains(&self.source) || isolated.contains(&self.target) {
            None
        } else {
            self.router.nodes.lock().get(&self.target).cloned()
        };
        raft.ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "peer down",
            )))
        })
    }
}

impl RaftNetworkFactory<PartitionRaft> for Factory {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Conn {
        Conn {
            router: self.router.clone(),
            source: self.source,
            target,
        }
    }
}

impl RaftNetwork<PartitionRaft> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.peer()?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<PartitionRaft>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self.peer()?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let raft = self.peer()?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

struct Cluster {
    router: Router,
    root: tempfile::TempDir,
    stores: BTreeMap<NodeId, ReplicaStore>,
    config: Arc<Config>,
    log: LogConfig,
}

fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        segment_ms: None,
        retention_ms: None,
        flush_ms: None,
        ..LogConfig::default()
    }
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster::with_log(log_config()).await
    }

    async fn with_log(log: LogConfig) -> Cluster {
        let config = Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            // As the replica host runs them: only retention purges.
            max_in_snapshot_log_to_keep: u64::MAX,
            ..Config::default()
        };
        let mut c = Cluster {
            router: Router::default(),
            root: tempfile::tempdir().expect("tempdir"),
            stores: BTreeMap::new(),
            config: Arc::new(config.validate().expect("config")),
            log,
        };
        for id in 1..=3 {
            c.start(id).await;
        }
        let members: BTreeMap<NodeId, BasicNode> =
            (1..=3).map(|id| (id, BasicNode::default())).collect();
        c.raft(1).initialize(members).await.expect("initialize");
        c
    }

    fn dir(&self, id: NodeId) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    async fn start(&mut self, id: NodeId) {
        let (log, _) = PartitionLog::open(&self.dir(id), self.log.clone()).expect("open log");
        let store = ReplicaStore::open(log).expect("open store");
        store.serve_as(id);
        let raft = Raft::new(
            id,
            Arc::clone(&self.config),
            Factory {
                router: self.router.clone(),
                source: id,
            },
            store.log_store(),
            store.state_machine(),
        )
        .await
        .expect("raft");
        self.router.nodes.lock().insert(id, raft);
        self.stores.insert(id, store);
    }

    async fn kill(&mut self, id: NodeId) {
        let raft = self.router.nodes.lock().remove(&id).expect("running");
        raft.shutdown().await.expect("shutdown");
        self.stores.remove(&id);
    }

    fn raft(&self, id: NodeId) -> PartitionRaftHandle {
        self.router.nodes.lock().get(&id).cloned().expect("running")
    }

    async fn leader(&self, among: &[NodeId]) -> NodeId {
        for _ in 0..200 {
            for &id in among {
                let m = self.raft(id).metrics().borrow().clone();
                if m.current_leader == Some(id) && m.state.is_leader() {
                    return id;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no leader among {among:?}");
    }

    async fn write(&self, leader: NodeId, n: i32) -> Vec<Applied> {
        let raft = self.raft(leader);
        let mut out = Vec::new();
        for i in 0..n {
            let batch = producer_batch(-1, -1, -1, 1 + i % 3);
            let resp = raft
                .client_write(Proposal::new(batch))
                .await
                .expect("committed write");
            out.push(resp.data);
        }
        out
    }

    /// Waits until every running replica has applied as far as `leader`.
    async fn settle(&self, leader: NodeId) {
        // The store, not the metrics: those are published asynchronously.
        let want = self.stores[&leader].last_log_index();
        for id in self.stores.keys() {
            self.raft(*id)
                .wait(Some(Duration::from_secs(10)))
                .applied_index_at_least(want, "catch up")
                .await
                .expect("replica caught up");
        }
    }
}

/// Every batch of a log, as stored: (header, bytes).
pub(super) fn dump(dir: &Path) -> Vec<(BatchHeader, Vec<u8>)> {
    let (log, _) = PartitionLog::open(dir, log_config()).expect("open");
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    loop {
        let slice = log.read(offset, usize::MAX, i64::MAX, true).expect("read");
        if slice.is_empty() {
            break;
        }
        let bytes = slice.load().expect("load");
        for item in batch::headers(&bytes) {
            let (at, h) = item.expect("whole batches");
            let raw = &bytes[at..at + h.size()];
            batch::validate(raw).expect("stored batches keep valid CRCs");
            out.push((h, raw.to_vec()));
        }
        offset = slice.next_offset;
    }
    out
}

fn data_batches(dump: &[(BatchHeader, Vec<u8>)]) -> usize {
    dump.iter().filter(|(h, _)| !h.is_control()).count()
}

fn assert_identical(c: &Cluster, ids: &[NodeId]) -> Vec<(BatchHeader, Vec<u8>)> {
    let first = dump(&c.dir(ids[0]));
    for &id in &ids[1..] {
        let other = dump(&c.dir(id));
        assert_eq!(
            first.len(),
            other.len(),
            "node {id} holds as many batches as node {}",
            ids[0]
        );
        assert!(
            first == other,
            "node {id} stores the same bytes as node {}",
            ids[0]
        );
    }
    // Offsets are dense: each batch starts where the previous one ended.
    for w in first.windows(2) {
        assert_eq!(w[1].0.base_offset, w[0].0.last_offset() + 1);
    }
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_replicate_as_identical_batches_with_dense_offsets() {
    let c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    let applied = c.write(leader, 30).await;
    c.settle(leader).await;
    // Offsets come back dense for the data, skipping the control batches.
    for w in applied.windows(2) {
        assert!(w[1].base_offset > w[0].last_offset);
    }
    let log = assert_identical(&c, &[1, 2, 3]);
    assert_eq!(data_batches(&log), 30);
    let controls = log.iter().filter(|(h, _)| h.is_control()).count();
    assert!(
        controls >= 2,
        "the initial membership and the leader's blank entry"
    );
    let hw = c.stores[&leader].high_watermark();
    assert_eq!(hw, log.last().expect("batches").0.last_offset() + 1);
    for s in c.stores.values() {
        assert_eq!(s.high_watermark(), hw);
    }
    // Terms are stamped as the leader epoch.
    let term = c.raft(leader).metrics().borrow().current_term;
    assert_eq!(
        log.last().expect("batches").0.partition_leader_epoch as u64,
        term
    );
}

/// A batch of `size` bytes (zero-padded records area).
pub(super) fn batch_of_size(size: usize) -> Vec<u8> {
    let mut b = producer_batch(-1, -1, -1, 1);
    b.resize(size, 0);
    let len = i32::try_from(size - batch::LOG_OVERHEAD).expect("small");
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_append_entries_carries_a_few_mib_from_memory_or_from_the_log() {
    use openraft::RaftLogReader;
    use openraft::storage::RaftLogStorage;

    let c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    let raft = c.raft(leader);
    for _ in 0..6 {
        raft.client_write(Proposal::new(batch_of_size((1 << 20) + 1024)))
            .await
            .expect("committed write");
    }
    let last = c.stores[&leader].last_log_index().expect("entries");
    let first = last - 5;
    assert!(
        c.stores[&leader].holds_in_memory(first, last + 1),
        "the leader keeps what it wrote"
    );
    c.settle(leader).await;
    let follower = *c.stores.keys().find(|&&id| id != leader).expect("follower");
    assert!(!c.stores[&follower].holds_in_memory(first, last + 1));
    // The leader still holds them in memory (kept for slower followers), a
    // follower released them on apply and reads its segment files: the
    // limit is the same either way, and a plain read is not limited.
    for id in [leader, follower] {
        let mut reader = c.stores[&id].log_store().get_log_reader().await;
        let limited = reader
            .limited_get_log_entries(first, last + 1)
            .await
            .expect("read");
        let indexes: Vec<u64> = limited.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, vec![first, first + 1, first + 2], "node {id}");
        let all = reader
            .try_get_log_entries(first..=last)
            .await
            .expect("read");
        assert_eq!(all.len(), 6, "node {id}");
    }
    // One entry over the limit still goes, alone.
    raft.client_write(Proposal::new(batch_of_size(5 << 20)))
        .await
        .expect("committed write");
    let big = last + 1;
    let mut reader = c.stores[&leader].log_store().get_log_reader().await;
    let one = reader
        .limited_get_log_entries(big, big + 1)
        .await
        .expect("read");
    assert_eq!(one.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_restarts_from_its_files_and_catches_up() {
    let mut c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    c.write(leader, 10).await;
    c.settle(leader).await;
    let victim = (1..=3).find(|&id| id != leader).expect("a follower");
    c.kill(victim).await;
    c.write(leader, 20).await;
    c.start(victim).await;
    c.write(leader, 5).await;
    c.settle(leader).await;
    let log = assert_identical(&c, &[1, 2, 3]);
    assert_eq!(data_batches(&log), 35);

    // The leader itself: kill, re-elect among the rest, restart, continue.
    c.kill(leader).await;
    let rest: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    let new_leader = c.leader(&rest).await;
    c.write(new_leader, 7).await;
    c.start(leader).await;
    c.settle(new_leader).await;
    let log = assert_identical(&c, &[1, 2, 3]);
    assert_eq!(data_batches(&log), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_uncommitted_tail_is_truncated_and_never_committed() {
    let c = Cluster::new().await;
    let old = c.leader(&[1, 2, 3]).await;
    c.write(old, 5).await;
    c.settle(old).await;
    let before = c.stores[&old].high_watermark();

    // Cut the leader off; what it appends now can never commit.
    c.router.isolated.lock().insert(old);
    let stranded = {
        let raft = c.raft(old);
        tokio::spawn(async move {
            let mut results = Vec::new();
            for _ in 0..4 {
                let r = raft
                    .client_write(Proposal::new(producer_batch(-1, -1, -1, 5)))
                    .await;
                results.push(r.is_ok());
            }
            results
        })
    };
    let rest: Vec<NodeId> = (1..=3).filter(|&id| id != old).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let uncommitted = dump(&c.dir(old));
    assert!(
        data_batches(&uncommitted) > 5,
        "the isolated leader appended locally"
    );
    assert_eq!(
        c.stores[&old].high_watermark(),
        before,
        "but never committed"
    );

    let new_leader = c.leader(&rest).await;
    c.write(new_leader, 3).await;
    c.router.isolated.lock().clear();
    c.settle(new_leader).await;
    let log = assert_identical(&c, &[1, 2, 3]);
    assert_eq!(
        data_batches(&log),
        8,
        "the stranded tail is gone everywhere"
    );
    assert!(
        log.iter().all(|(h, _)| h.records_count != 5),
        "no stranded batch survives"
    );
    let results = tokio::time::timeout(Duration::from_secs(10), stranded)
        .await
        .expect("stranded writes finish")
        .expect("task");
    assert!(
        results.iter().all(|ok| !ok),
        "no stranded write was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_far_behind_catches_up_by_log_and_by_snapshot() {
    let mut c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    let (far, snapped) = (followers[0], followers[1]);

    // Far behind, logs still there: plain replication over many segments.
    c.kill(far).await;
    c.write(leader, 400).await;
    c.start(far).await;
    c.settle(leader).await;
    let log = assert_identical(&c, &[1, 2, 3]);
    assert_eq!(data_batches(&log), 400);

    // Behind a purge: only a snapshot can help; the follower's log restarts
    // at the leader's offset.
    c.kill(snapped).await;
    let applied = c.write(leader, 100).await;
    let raft = c.raft(leader);
    raft.trigger().snapshot().await.expect("snapshot");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index > 400),
            "snapshot built",
        )
        .await
        .expect("snapshot");
    let snap = raft.metrics().borrow().snapshot.expect("snapshot");
    raft.trigger().purge_log(snap.index).await.expect("purge");
    raft.wait(Some(Duration::from_secs(5)))
        .purged(Some(snap), "purged")
        .await
        .expect("purged");
    let leader_start = c.stores[&leader].with_log(|l| l.log_start_offset());
    assert!(leader_start > 0, "the purge deleted segments");
    c.start(snapped).await;
    c.write(leader, 5).await;
    c.settle(leader).await;
    let end = applied.last().expect("writes").last_offset;
    let snapped_log = dump(&c.dir(snapped));
    assert!(
        snapped_log.first().expect("data").0.base_offset > end,
        "the lagging follower restarted its log after the snapshot"
    );
    assert_eq!(data_batches(&snapped_log), 5);
    let hw = c.stores[&leader].high_watermark();
    for s in c.stores.values() {
        assert_eq!(s.high_watermark(), hw);
    }
    // The others still agree byte for byte from the snapshot point on.
    let leader_log = dump(&c.dir(leader));
    let tail: Vec<_> = leader_log
        .iter()
        .filter(|(h, _)| h.base_offset >= snapped_log[0].0.base_offset)
        .cloned()
        .collect();
    assert!(tail == snapped_log);
}

/// What the broker's retention pass does for one replica.
async fn purge_for_retention(c: &Cluster, id: NodeId) -> Option<u64> {
    let index = c.stores[&id]
        .retention_point(i64::MAX)
        .expect("retention")?;
    let raft = c.raft(id);
    raft.trigger().snapshot().await.expect("snapshot");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(
            |m| m.snapshot.is_some_and(|s| s.index >= index),
            "retention snapshot",
        )
        .await
        .expect("snapshot at the retention point");
    raft.trigger().purge_log(index).await.expect("purge");
    raft.wait(Some(Duration::from_secs(5)))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= index), "purged")
        .await
        .expect("purged");
    Some(index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_each_replica_and_a_lagging_follower_keeps_what_is_retained() {
    let mut c = Cluster::with_log(LogConfig {
        retention_bytes: Some(16 * 1024),
        ..log_config()
    })
    .await;
    let leader = c.leader(&[1, 2, 3]).await;
    let lagging = (1..=3).find(|&id| id != leader).expect("a follower");
    c.kill(lagging).await;
    c.write(leader, 400).await;
    let running: Vec<NodeId> = c.stores.keys().copied().collect();
    c.settle(leader).await;
    let before = dump(&c.dir(leader));
    for &id in &running {
        assert!(purge_for_retention(&c, id).await.is_some(), "node {id}");
        let (start, size) = c.stores[&id].with_log(|l| (l.log_start_offset(), l.size_bytes()));
        assert!(start > 0, "node {id}: retention moved the log start");
        assert!(
            (16 * 1024..16 * 1024 + 4096 + 512).contains(&size),
            "node {id} keeps retention.bytes plus at most a segment: {size}"
        );
        // Nothing more is due once purged.
        assert_eq!(
            c.stores[&id].retention_point(i64::MAX).expect("retention"),
            None
        );
    }
    let kept = dump(&c.dir(leader));
    assert!(kept.len() < before.len());
    assert_eq!(kept[..], before[before.len() - kept.len()..]);

    // The lagging follower's entries are purged on the leader: it installs
    // the snapshot taken at the retention point, so it holds exactly what
    // the leader retains, not an empty log at the high watermark.
    c.start(lagging).await;
    c.write(leader, 3).await;
    c.settle(leader).await;
    let leader_log = dump(&c.dir(leader));
    assert_eq!(dump(&c.dir(lagging)), leader_log);
    assert_eq!(
        c.stores[&lagging].with_log(|l| l.log_start_offset()),
        c.stores[&leader].with_log(|l| l.log_start_offset())
    );
    assert_eq!(data_batches(&leader_log), data_batches(&kept) + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_through_the_group_keeps_kafka_semantics() {
    use crate::errors::BrokerError;
    use crate::producer_state::Verdict;
    use skiff_log::TimestampMode;

    let mut c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    fn group(c: &Cluster, id: NodeId) -> PartitionGroup {
        PartitionGroup::new(
            id,
            c.raft(id),
            c.stores[&id].clone(),
            Duration::from_secs(2),
        )
    }
    let follower = (1..=3).find(|&id| id != leader).expect("follower");
    let mut b = producer_batch(7, 0, 0, 3);
    assert!(matches!(
        group(&c, follower)
            .produce(&mut b, TimestampMode::CreateTime, -1, 2)
            .await,
        Err(BrokerError::NotLeaderOrFollower)
    ));

    let g = group(&c, leader);
    let first = g
        .produce(
            &mut producer_batch(7, 0, 0, 3),
            TimestampMode::CreateTime,
            -1,
            2,
        )
        .await
        .expect("committed");
    assert!(!first.duplicate);
    assert_eq!(first.info.last_offset - first.info.base_offset, 2);
    let retry = g
        .produce(
            &mut producer_batch(7, 0, 0, 3),
            TimestampMode::CreateTime,
            -1,
            2,
        )
        .await
        .expect("duplicate");
    assert!(retry.duplicate);
    assert_eq!(retry.info.base_offset, first.info.base_offset);
    assert!(matches!(
        g.produce(
            &mut producer_batch(7, 0, 9, 1),
            TimestampMode::CreateTime,
            -1,
            2
        )
        .await,
        Err(BrokerError::SequenceGap(_))
    ));
    let read = g.read(0, usize::MAX, true).expect("read");
    assert_eq!(read.high_watermark, first.info.last_offset + 1);
    assert!(matches!(
        g.read(read.high_watermark + 1, 100, true),
        Err(BrokerError::OffsetOutOfRange { .. })
    ));

    // Every replica rebuilt the producer state from the log it applied.
    c.settle(leader).await;
    let h = BatchHeader::parse(&producer_batch(7, 0, 0, 3)).expect("header");
    for s in c.stores.values() {
        let v = s.check_producer(&h);
        assert!(matches!(v, Ok(Verdict::Duplicate(_))), "{v:?}");
    }

    // Both followers gone: acks=all is refused up front, acks=1 times out.
    for id in (1..=3).filter(|&id| id != leader) {
        c.kill(id).await;
    }
    tokio::time::sleep(QUORUM_ACK_STALE + Duration::from_millis(500)).await;
    let g = group(&c, leader);
    assert_eq!(g.in_sync_replicas(), 1);
    assert!(matches!(
        g.produce(
            &mut producer_batch(8, 0, 0, 1),
            TimestampMode::CreateTime,
            -1,
            2
        )
        .await,
        Err(BrokerError::NotEnoughReplicas(_))
    ));
    let hw = c.stores[&leader].high_watermark();
    let lonely = g
        .produce(
            &mut producer_batch(-1, -1, -1, 1),
            TimestampMode::CreateTime,
            1,
            2,
        )
        .await;
    assert!(
        matches!(
            lonely,
            Err(BrokerError::RequestTimedOut(_)) | Err(BrokerError::NotLeaderOrFollower)
        ),
        "{lonely:?}"
    );
    assert_eq!(
        c.stores[&leader].high_watermark(),
        hw,
        "nothing uncommitted is exposed"
    );
    assert_eq!(g.read(hw, usize::MAX, true).expect("read").slice.len(), 0);
}

fn process_cpu_and_rss() -> (f64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    (cpu, rss_kib * 1024)
}

/// Idle cost: `SKIFF_IDLE_GROUPS` partition groups (default 300) of three
/// in-process replicas each, with the given heartbeat interval; prints CPU
/// and RSS of the whole process (all three "brokers"). Run by hand:
/// `cargo test --release -p skiff-broker idle_groups -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn idle_groups_cost() {
    let groups: usize = std::env::var("SKIFF_IDLE_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for heartbeat in [100u64, 1000] {
        let config = Arc::new(
            Config {
                heartbeat_interval: heartbeat,
                election_timeout_min: heartbeat * 4,
                election_timeout_max: heartbeat * 8,
                ..Config::default()
            }
            .validate()
            .expect("config"),
        );
        let root = tempfile::tempdir().expect("tmp");
        let (_, rss_before) = process_cpu_and_rss();
        let mut all = Vec::new();
        for g in 0..groups {
            let router = Router::default();
            for id in 1..=3u64 {
                let dir = root.path().join(format!("{g}-{id}"));
                let (log, _) = PartitionLog::open(&dir, log_config()).expect("log");
                let store = ReplicaStore::open(log).expect("store");
                store.serve_as(id);
                let raft = Raft::new(
                    id,
                    Arc::clone(&config),
                    Factory {
                        router: router.clone(),
                        source: id,
                    },
                    store.log_store(),
                    store.state_machine(),
                )
                .await
                .expect("raft");
                router.nodes.lock().insert(id, raft);
            }
            let first = router.nodes.lock()[&1].clone();
            let members: BTreeMap<NodeId, BasicNode> =
                (1..=3).map(|id| (id, BasicNode::default())).collect();
            first.initialize(members).await.expect("init");
            all.push(router);
        }
        tokio::time::sleep(Duration::from_secs(5)).await; // elections settle
        let (cpu0, _) = process_cpu_and_rss();
        let window = 10.0;
        tokio::time::sleep(Duration::from_secs_f64(window)).await;
        let (cpu1, rss) = process_cpu_and_rss();
        println!(
            "{groups} idle groups x 3 replicas, heartbeat {heartbeat} ms: {:.1}% of a core, RSS +{} MiB (all three replicas in one process)",
            (cpu1 - cpu0) / window * 100.0,
            rss.saturating_sub(rss_before) >> 20
        );
        for router in all {
            let nodes: Vec<_> = router.nodes.lock().values().cloned().collect();
            for raft in nodes {
                let _ = raft.shutdown().await;
            }
        }
    }
}

/// A batch whose commit timed out is still in the leader's log: the
/// producer's next batch continues after it (no OUT_OF_ORDER_SEQUENCE), and
/// once the quorum is back, retries of both end with each batch exactly once
/// in the log, in order. librdkafka treats an out-of-order answer here as
/// fatal, which is how a failover used to stop an idempotent producer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_idempotent_batch_stays_in_sequence_and_commits_once() {
    use crate::errors::BrokerError;
    use skiff_log::TimestampMode;

    let mut c = Cluster::new().await;
    let leader = c.leader(&[1, 2, 3]).await;
    let group = |c: &Cluster, id: NodeId| {
        PartitionGroup::new(
            id,
            c.raft(id),
            c.stores[&id].clone(),
            Duration::from_secs(1),
        )
    };
    let g = group(&c, leader);
    g.produce(
        &mut producer_batch(11, 0, 0, 3),
        TimestampMode::CreateTime,
        1,
        1,
    )
    .await
    .expect("first batch committed");
    let followers: Vec<NodeId> = (1..=3).filter(|&id| id != leader).collect();
    for &id in &followers {
        c.kill(id).await;
    }
    let lost_quorum = [(3, 2), (5, 4)];
    for (seq, n) in lost_quorum {
        let r = g
            .produce(
                &mut producer_batch(11, 0, seq, n),
                TimestampMode::CreateTime,
                1,
                1,
            )
            .await;
        assert!(
            matches!(
                r,
                Err(BrokerError::RequestTimedOut(_)) | Err(BrokerError::NotLeaderOrFollower)
            ),
            "batch at sequence {seq}: {r:?}"
        );
    }
    for &id in &followers {
        c.start(id).await;
    }
    // The client retries both batches, in order, wherever the leader is now.
    for (seq, n) in lost_quorum {
        let mut done = false;
        for _ in 0..40 {
            let now = c.leader(&[1, 2, 3]).await;
            let r = group(&c, now)
                .produce(
                    &mut producer_batch(11, 0, seq, n),
                    TimestampMode::CreateTime,
                    -1,
                    2,
                )
                .await;
            match r {
                Ok(_) => {
                    done = true;
                    break;
                }
                Err(BrokerError::RequestTimedOut(_))
                | Err(BrokerError::NotLeaderOrFollower)
                | Err(BrokerError::NotEnoughReplicas(_)) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("retry of sequence {seq}: {e:?}"),
            }
        }
        assert!(done, "retry of sequence {seq} never succeeded");
    }
    let now = c.leader(&[1, 2, 3]).await;
    c.settle(now).await;
    let hw = c.stores[&now].high_watermark();
    for id in 1..=3 {
        let seqs: Vec<i32> = dump(&c.dir(id))
            .iter()
            .filter(|(h, _)| h.producer_id == 11 && h.base_offset < hw)
            .map(|(h, _)| h.base_sequence)
            .collect();
        assert_eq!(seqs, vec![0, 3, 5], "replica {id}'s committed batches");
    }
}

/// A retry of a batch that a leader holds uncommitted is a duplicate there,
/// answered once the high watermark passes the batch. If the leader is
/// deposed meanwhile, its tail is cut and the next leader's batches are
/// committed at the same offsets: the high watermark passes them, yet the
/// batch is gone, and acknowledging the retry would lose it. The group
/// checks that the log still holds the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_is_acknowledged_only_while_the_log_still_holds_its_batch() {
    use crate::producer_state::Verdict;
    use skiff_log::TimestampMode;

    let c = Cluster::new().await;
    let old = c.leader(&[1, 2, 3]).await;
    let g = PartitionGroup::new(
        old,
        c.raft(old),
        c.stores[&old].clone(),
        Duration::from_secs(2),
    );
    g.produce(
        &mut producer_batch(12, 0, 0, 3),
        TimestampMode::CreateTime,
        1,
        1,
    )
    .await
    .expect("first batch committed");
    c.settle(old).await;
    let committed = BatchHeader::parse(&producer_batch(12, 0, 0, 3)).expect("header");
    let Ok(Verdict::Duplicate(first_dup)) = c.stores[&old].check_producer(&committed) else {
        panic!("a retry of the first batch is a duplicate");
    };
    assert!(
        g.still_holds(&committed, &first_dup),
        "a committed batch is held"
    );

    c.router.isolated.lock().insert(old);
    let mut stranded = bytes::BytesMut::from(&producer_batch(12, 0, 3, 2)[..]);
    let first = g
        .submit(&mut stranded, TimestampMode::CreateTime, 1, 1, || Ok(()))
        .await
        .expect("proposed");
    // Its answer is never awaited (the client's request timed out), which
    // lets the retry in.
    drop(first);
    let retry = BatchHeader::parse(&producer_batch(12, 0, 3, 2)).expect("header");
    // Raft appends it a moment after the proposal.
    let mut dup = None;
    for _ in 0..200 {
        if let Ok(Verdict::Duplicate(d)) = c.stores[&old].check_producer(&retry) {
            dup = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dup = dup.expect("the retry is a duplicate of the uncommitted batch");
    assert!(!g.still_holds(&retry, &dup), "not committed yet");
    let mut again = bytes::BytesMut::from(&producer_batch(12, 0, 3, 2)[..]);
    let pending = g
        .submit(&mut again, TimestampMode::CreateTime, 1, 1, || Ok(()))
        .await
        .expect("a duplicate, awaiting its original's commit");

    let rest: Vec<NodeId> = (1..=3).filter(|&id| id != old).collect();
    let new_leader = c.leader(&rest).await;
    c.write(new_leader, 3).await;
    c.router.isolated.lock().clear();
    c.settle(new_leader).await;
    assert!(
        c.stores[&old].high_watermark() > dup.last_offset,
        "the high watermark passed the batch's offsets"
    );
    assert!(
        !g.still_holds(&retry, &dup),
        "but the batch is no longer there"
    );
    assert!(
        g.finish(pending).await.is_err(),
        "the retry is not acknowledged"
    );
}
