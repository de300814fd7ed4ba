//! Partition groups over the real broker-to-broker gRPC transport
//! (`crate::rpc`): three registries on 127.0.0.1, one partition group each.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Config, Raft};
use skiff_log::{LogConfig, PartitionLog, TimestampMode};
use uuid::Uuid;

use super::*;
use crate::producer_state::test_support::producer_batch;
use crate::rpc::client::{NetworkFactory, PeerPool};
use crate::rpc::server::{RaftHandler, Registry, serve};
use crate::rpc::{GroupId, RpcConfig};

struct Node {
    raft: PartitionRaftHandle,
    store: ReplicaStore,
    registry: Arc<Registry>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn node(
    id: NodeId,
    listener: tokio::net::TcpListener,
    dir: &std::path::Path,
    group: GroupId,
    config: Arc<Config>,
) -> Node {
    let registry = Registry::new(RpcConfig::new("test-cluster", id));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let r = registry.clone();
    tokio::spawn(async move {
        let _ = serve(listener, r, async {
            let _ = rx.await;
        })
        .await;
    });
    let log_config = LogConfig {
        segment_ms: None,
        retention_ms: None,
        flush_ms: None,
        ..LogConfig::default()
    };
    let (log, _) = PartitionLog::open(dir, log_config).expect("open log");
    let store = ReplicaStore::open(log).expect("store");
    store.serve_as(id);
    let pool = PeerPool::new(RpcConfig::new("test-cluster", id));
    let raft = Raft::new(
        id,
        config,
        NetworkFactory::<PartitionRaft>::new(pool, group).with_log_tail(store.log_tail()),
        store.log_store(),
        store.state_machine(),
    )
    .await
    .expect("raft");
    registry.register(group, Arc::new(RaftHandler::new(raft.clone())));
    Node {
        raft,
        store,
        registry,
        _stop: tx,
    }
}

/// Three nodes of one partition group on 127.0.0.1, and its leader.
async fn cluster(root: &std::path::Path) -> (GroupId, BTreeMap<NodeId, Node>, NodeId) {
    let group = GroupId::Partition {
        topic_id: Uuid::new_v4(),
        partition: 0,
    };
    let config = Arc::new(
        Config {
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..Config::default()
        }
        .validate()
        .expect("config"),
    );
    let mut listeners = Vec::new();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        members.insert(
            id,
            BasicNode {
                addr: l.local_addr().expect("addr").to_string(),
            },
        );
        listeners.push((id, l));
    }
    let mut nodes = BTreeMap::new();
    for (id, l) in listeners {
        let dir = root.join(format!("n{id}"));
        nodes.insert(id, node(id, l, &dir, group, Arc::clone(&config)).await);
    }
    nodes[&1].raft.initialize(members).await.expect("init");
    let leader = nodes[&1]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "leader")
        .await
        .expect("leader")
        .current_leader
        .expect("leader");
    (group, nodes, leader)
}

/// Waits until every node has applied the leader's last entry.
async fn settle(nodes: &BTreeMap<NodeId, Node>, leader: NodeId) {
    let want = nodes[&leader].store.last_log_index();
    for nd in nodes.values() {
        nd.raft
            .wait(Some(Duration::from_secs(10)))
            .applied_index_at_least(want, "applied")
            .await
            .expect("applied");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_group_replicates_over_grpc_and_fails_over() {
    let root = tempfile::tempdir().expect("tmp");
    let (group, mut nodes, leader) = cluster(root.path()).await;

    // Throughput of acks=all over gRPC, 1 KiB batches, 32 in flight.
    let n = 2000usize;
    let started = Instant::now();
    let raft = nodes[&leader].raft.clone();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    for _ in 0..n {
        let raft = raft.clone();
        let permit = sem.clone().acquire_owned().await.expect("permit");
        tasks.spawn(async move {
            let mut b = producer_batch(-1, -1, -1, 1);
            b.resize(b.len(), 0);
            let r = raft.client_write(Proposal::new(b)).await;
            drop(permit);
            r.is_ok()
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.expect("task"));
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RF=3 over gRPC: {ok} committed batches in {secs:.2}s = {:.0} entries/s",
        ok as f64 / secs
    );
    assert_eq!(ok, n);

    // Fail the leader over and keep writing.
    let old = nodes.remove(&leader).expect("leader node");
    old.registry.unregister(&group);
    old.raft.shutdown().await.expect("shutdown");
    drop(old);
    let killed = Instant::now();
    let survivor = *nodes.keys().next().expect("survivor");
    let new_leader = nodes[&survivor]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader),
            "new leader",
        )
        .await
        .expect("new leader")
        .current_leader
        .expect("leader");
    let g = PartitionGroup::new(
        new_leader,
        nodes[&new_leader].raft.clone(),
        nodes[&new_leader].store.clone(),
        Duration::from_secs(5),
    );
    let a = g
        .produce(
            &mut producer_batch(-1, -1, -1, 1),
            TimestampMode::CreateTime,
            -1,
            2,
        )
        .await
        .expect("produce after failover");
    println!(
        "failover: produce succeeded {:?} after the leader stopped",
        killed.elapsed()
    );
    // The last write's commit reaches the follower too, although the empty
    // AppendEntries that carries it first waits for entries that never come.
    settle(&nodes, new_leader).await;
    let hws: Vec<i64> = nodes.values().map(|nd| nd.store.high_watermark()).collect();
    assert!(hws.iter().all(|&h| h == a.info.last_offset + 1), "{hws:?}");
}

/// Large batches travel without copies in the process (a follower writes
/// a slice of the message they came in, see `crate::rpc::payload`); every
/// replica must still store exactly the leader's bytes at the leader's
/// offsets, small and large batches, several per request, LogAppendTime
/// stamps included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_reach_every_replica_as_the_leader_stored_them() {
    use super::tests::{batch_of_size, dump};

    let root = tempfile::tempdir().expect("tmp");
    let (_, nodes, leader) = cluster(root.path()).await;
    let g = PartitionGroup::new(
        leader,
        nodes[&leader].raft.clone(),
        nodes[&leader].store.clone(),
        Duration::from_secs(5),
    );
    let big = crate::rpc::payload::SHARED_MIN + 1000;
    let requests: Vec<(Vec<usize>, TimestampMode)> = vec![
        (vec![big], TimestampMode::CreateTime),
        (vec![300], TimestampMode::CreateTime),
        (vec![big, 2 * big, 500], TimestampMode::CreateTime),
        (
            vec![1 << 20],
            TimestampMode::LogAppendTime(1_700_000_000_000),
        ),
        (
            vec![700, big],
            TimestampMode::LogAppendTime(1_700_000_000_001),
        ),
    ];
    let mut expected_offset = None;
    for (sizes, ts) in requests {
        let mut records: Vec<u8> = sizes.iter().flat_map(|&n| batch_of_size(n)).collect();
        let a = g.produce(&mut records, ts, -1, 3).await.expect("produce");
        if let Some(want) = expected_offset {
            assert_eq!(a.info.base_offset, want, "offsets follow on");
        }
        expected_offset = Some(a.info.last_offset + 1);
    }
    settle(&nodes, leader).await;
    let logs: BTreeMap<NodeId, _> = nodes
        .keys()
        .map(|id| (*id, dump(&root.path().join(format!("n{id}")))))
        .collect();
    let ours = &logs[&leader];
    let sizes: Vec<usize> = ours
        .iter()
        .filter(|(h, _)| !h.is_control())
        .map(|(_, b)| b.len())
        .collect();
    assert_eq!(sizes.len(), 8, "{sizes:?}");
    assert_eq!(sizes.iter().filter(|&&n| n >= big).count(), 5, "{sizes:?}");
    let stamped = ours
        .iter()
        .filter(|(h, _)| h.max_timestamp >= 1_700_000_000_000)
        .count();
    assert_eq!(
        stamped, 3,
        "LogAppendTime stamped on every batch of those requests"
    );
    for (id, log) in &logs {
        assert_eq!(log.len(), ours.len(), "node {id}");
        for ((h, b), (oh, ob)) in log.iter().zip(ours) {
            assert_eq!(
                (h.base_offset, h.partition_leader_epoch),
                (oh.base_offset, oh.partition_leader_epoch),
                "node {id}"
            );
            assert!(b == ob, "node {id}: the batch at {} differs", h.base_offset);
        }
    }
}
