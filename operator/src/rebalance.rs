//! `skiff-operator rebalance`: read the live cluster through the Kafka
//! protocol (Metadata for brokers, racks, replicas and leaders;
//! DescribeLogDirs for partition sizes where the brokers serve it), plan
//! with [`skiff_balance`] and print the plan, as a table for a person or as
//! Kafka's reassignment JSON (`kafka-reassign-partitions` format).
//!
//! Without `--dry-run` it carries the plan out ([`execute`]): the moves go
//! to the brokers in batches through AlterPartitionReassignments, each
//! batch followed through ListPartitionReassignments until it is done.
//!
//! Only replicated partitions move (each is a Raft group that changes its
//! members; `__consumer_offsets` is one too): single-replica partitions
//! are left out of the plan, and the table says how many.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::{
    DescribeClusterRequest, DescribeLogDirsRequest, MetadataRequest, MetadataResponse,
};
use serde_json::json;
use skiff_balance::{Broker, MoveKind, Options as PlanOptions, Partition, Plan, Tolerance};

use crate::admin::reassign::Reassignment;
use crate::admin::requests::{ConfigChange, LEADER_REPLICATION_THROTTLED_RATE, metadata_request};
use crate::admin::{AdminClient, AdminCredentials, codes, error_name};

/// What to plan.
#[derive(Debug, Clone)]
pub struct Options {
    pub bootstrap: String,
    pub credentials: Option<AdminCredentials>,
    /// Brokers to empty.
    pub drain: Vec<i32>,
    pub tolerance: Tolerance,
}

/// The cluster as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub brokers: Vec<Broker>,
    pub partitions: Vec<Partition>,
    /// Brokers' `host:port`, for DescribeLogDirs.
    pub addresses: BTreeMap<i32, String>,
    /// Why partition sizes are unknown (then every size is 0).
    pub sizes_unknown: Option<String>,
    /// Partitions left out because they cannot move: single replicas.
    pub immovable: usize,
    /// Replicas of partitions that cannot move (single replicas), by
    /// broker: a broker holding one cannot be drained.
    pub pinned: BTreeMap<i32, usize>,
    /// Registered brokers the cluster has fenced (stopped, or silent):
    /// Metadata leaves them out, so the planner moves their replicas away
    /// as from any broker it does not know, and places none on them.
    pub fenced: BTreeSet<i32>,
}

/// Brokers and partitions of a Metadata answer, with the `fenced` brokers
/// Metadata leaves out; `drain` marks brokers draining (a fenced one may be
/// drained too: its replicas move as a gone broker's).
///
/// # Errors
/// A drained broker that is not a cluster member, or a topic Metadata
/// answers with an error.
pub fn snapshot_from_metadata(
    md: &MetadataResponse,
    drain: &[i32],
    fenced: BTreeSet<i32>,
) -> anyhow::Result<Snapshot> {
    let ids: BTreeSet<i32> = md
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .chain(fenced.iter().copied())
        .collect();
    for d in drain {
        anyhow::ensure!(
            ids.contains(d),
            "--drain {d}: broker {d} is not a member of the cluster (brokers: {})",
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let brokers = md
        .brokers
        .iter()
        .map(|b| Broker {
            id: b.node_id.0,
            rack: b.rack.as_ref().map(ToString::to_string),
            draining: drain.contains(&b.node_id.0),
        })
        .collect();
    let addresses = md
        .brokers
        .iter()
        .map(|b| (b.node_id.0, format!("{}:{}", b.host, b.port)))
        .collect();
    let mut partitions = Vec::new();
    let mut immovable = 0;
    let mut pinned: BTreeMap<i32, usize> = BTreeMap::new();
    for t in &md.topics {
        let name = t.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        anyhow::ensure!(
            t.error_code == codes::NONE,
            "Metadata of topic {name:?}: {} ({})",
            error_name(t.error_code),
            t.error_code
        );
        for p in &t.partitions {
            if p.replica_nodes.len() < 2 {
                immovable += 1;
                for b in &p.replica_nodes {
                    *pinned.entry(b.0).or_default() += 1;
                }
                continue;
            }
            partitions.push(Partition {
                topic: name.clone(),
                partition: p.partition_index,
                replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                leader: (p.leader_id.0 >= 0).then_some(p.leader_id.0),
                size_bytes: 0,
            });
        }
    }
    Ok(Snapshot {
        brokers,
        partitions,
        addresses,
        sizes_unknown: None,
        immovable,
        pinned,
        fenced,
    })
}

/// The brokers the cluster has fenced, from DescribeCluster v2 (none from
/// brokers that do not serve it).
///
/// # Errors
/// The broker unreachable or answering with an error.
async fn fenced_brokers(admin: &mut AdminClient) -> anyhow::Result<BTreeSet<i32>> {
    if admin.version_of::<DescribeClusterRequest>().unwrap_or(0) < 2 {
        return Ok(BTreeSet::new());
    }
    let (_, resp) = admin
        .send(
            &DescribeClusterRequest::default()
                .with_include_fenced_brokers(true)
                .with_endpoint_type(1),
        )
        .await?;
    anyhow::ensure!(
        resp.error_code == codes::NONE,
        "DescribeCluster: {}",
        error_name(resp.error_code)
    );
    Ok(resp
        .brokers
        .iter()
        .filter(|b| b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect())
}

/// The cluster as one broker's Metadata describes it (no sizes).
///
/// # Errors
/// As [`snapshot_from_metadata`], or the broker unreachable.
pub async fn snapshot(admin: &mut AdminClient, drain: &[i32]) -> anyhow::Result<Snapshot> {
    let v = admin.version_of::<MetadataRequest>()?;
    let (_, md) = admin.send(&metadata_request(None, v)).await?;
    let fenced = fenced_brokers(admin).await?;
    let drain = members_of(&md, &fenced, drain);
    snapshot_from_metadata(&md, &drain, fenced)
}

/// The brokers of `drain` that are cluster members (registered, fenced or
/// not). A scale-down's leaving broker that never registered (its pod never
/// started a broker) or was unregistered already holds nothing, so there is
/// nothing to drain: refusing it, as `rebalance --drain` refuses a typo,
/// left such a scale-down waiting for ever ("the brokers' Admin API cannot
/// be reached").
pub fn members_of(md: &MetadataResponse, fenced: &BTreeSet<i32>, drain: &[i32]) -> Vec<i32> {
    drain
        .iter()
        .copied()
        .filter(|d| fenced.contains(d) || md.brokers.iter().any(|b| b.node_id.0 == *d))
        .collect()
}

/// Reads the cluster: Metadata from the bootstrap brokers, then sizes from
/// every broker's DescribeLogDirs when the brokers serve it.
///
/// # Errors
/// The cluster is unreachable or answers with an error.
pub async fn read_cluster(opts: &Options) -> anyhow::Result<Snapshot> {
    let mut admin = AdminClient::connect_with(&opts.bootstrap, opts.credentials.as_ref()).await?;
    let v = admin.version_of::<MetadataRequest>()?;
    let (_, md) = admin.send(&metadata_request(None, v)).await?;
    let fenced = fenced_brokers(&mut admin).await?;
    let mut snap = snapshot_from_metadata(&md, &opts.drain, fenced)?;
    if !admin.supports::<DescribeLogDirsRequest>() {
        snap.sizes_unknown = Some(
            "the brokers do not serve DescribeLogDirs, so partition sizes are unknown and \
             count as 0 bytes (replica and leader counts are balanced; bytes are not)"
                .to_string(),
        );
        return Ok(snap);
    }
    match partition_sizes(&snap.addresses, opts.credentials.as_ref()).await {
        Ok(sizes) => {
            for p in &mut snap.partitions {
                p.size_bytes = sizes
                    .get(&(p.topic.clone(), p.partition))
                    .copied()
                    .unwrap_or(0);
            }
        }
        Err(e) => {
            snap.sizes_unknown = Some(format!(
                "DescribeLogDirs failed ({e:#}), so partition sizes count as 0 bytes"
            ));
        }
    }
    Ok(snap)
}

/// The size of each partition: the largest replica any broker reports (the
/// leader's, normally; a lagging follower holds less).
async fn partition_sizes(
    addresses: &BTreeMap<i32, String>,
    credentials: Option<&AdminCredentials>,
) -> anyhow::Result<BTreeMap<(String, i32), u64>> {
    let mut sizes: BTreeMap<(String, i32), u64> = BTreeMap::new();
    for (id, addr) in addresses {
        let mut admin = AdminClient::connect_with(addr, credentials).await?;
        let (_, resp) = admin
            .send(&DescribeLogDirsRequest::default().with_topics(None))
            .await?;
        anyhow::ensure!(
            resp.error_code == codes::NONE,
            "broker {id}: {}",
            error_name(resp.error_code)
        );
        for dir in resp.results.iter().filter(|d| d.error_code == codes::NONE) {
            for t in &dir.topics {
                for p in &t.partitions {
                    let e = sizes
                        .entry((t.name.0.to_string(), p.partition_index))
                        .or_default();
                    *e = (*e).max(u64::try_from(p.partition_size).unwrap_or(0));
                }
            }
        }
    }
    Ok(sizes)
}

/// Plans from a snapshot.
///
/// # Errors
/// The planner refuses the input (e.g. a drain that would break a
/// replication factor).
pub fn plan(snap: &Snapshot, tolerance: Tolerance) -> anyhow::Result<Plan> {
    let mut plan =
        skiff_balance::plan(&snap.brokers, &snap.partitions, &PlanOptions { tolerance })?;
    // Said first: a broker merely restarting is a reason not to run this plan.
    let fenced = snap.fenced.iter().map(|id| {
        format!(
            "broker {id} is fenced (down, or stopping): its replicas are planned onto the \
             other brokers; run again once it is back unless that is what you want"
        )
    });
    plan.warnings.splice(0..0, fenced);
    Ok(plan)
}

/// The plan in Kafka's reassignment JSON, which `kafka-reassign-partitions
/// --execute --reassignment-json-file` reads.
pub fn reassignment_json(plan: &Plan) -> serde_json::Value {
    json!({
        "version": 1,
        "partitions": plan.moves.iter().map(|m| json!({
            "topic": m.topic,
            "partition": m.partition,
            "replicas": m.to,
        })).collect::<Vec<_>>(),
    })
}

fn list(ids: &[i32]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Bytes for people: 1536 → "1.5 KiB".
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn yes(b: bool) -> &'static str {
    if b { "yes" } else { "NO" }
}

/// The plan as text: the changes, the per-broker figures before and after,
/// the totals, and every warning.
pub fn render_table(snap: &Snapshot, plan: &Plan, tolerance: &Tolerance) -> String {
    let mut out = String::new();
    let s = &plan.summary;
    let _ = writeln!(
        out,
        "Rebalance plan for {} brokers, {} partitions (tolerance: ±{} replicas, ±{} leaders, ±{}% bytes per broker)",
        snap.brokers.len(),
        snap.partitions.len(),
        tolerance.replicas,
        tolerance.leaders,
        tolerance.bytes_fraction * 100.0
    );
    if let Some(why) = &snap.sizes_unknown {
        let _ = writeln!(out, "note: {why}");
    }
    if snap.immovable > 0 {
        let _ = writeln!(
            out,
            "note: {} partitions cannot move (a single replica) and are left out",
            snap.immovable
        );
    }
    out.push('\n');
    if plan.moves.is_empty() {
        let _ = writeln!(
            out,
            "No moves: the cluster is balanced within the tolerance."
        );
    } else {
        let rows: Vec<[String; 5]> = plan
            .moves
            .iter()
            .map(|m| {
                let change = match m.kind() {
                    MoveKind::Reorder => {
                        format!("leader {} -> {}", m.from[0], m.to[0])
                    }
                    MoveKind::Data => format!(
                        "move {} -> {}",
                        list(&m.removed).replace(',', "+"),
                        list(&m.added).replace(',', "+")
                    ),
                };
                [
                    m.topic.clone(),
                    m.partition.to_string(),
                    list(&m.from),
                    list(&m.to),
                    change,
                ]
            })
            .collect();
        table(
            &mut out,
            ["TOPIC", "PARTITION", "REPLICAS NOW", "PLANNED", "CHANGE"],
            &rows,
        );
    }
    out.push('\n');
    let rows: Vec<[String; 5]> = s
        .brokers
        .iter()
        .map(|b| {
            let state = if b.unknown {
                "unknown"
            } else if b.draining {
                "draining"
            } else {
                "active"
            };
            [
                b.id.to_string(),
                b.rack.clone().unwrap_or_else(|| "-".to_string()),
                state.to_string(),
                format!("{} -> {}", b.before.replicas, b.after.replicas),
                format!(
                    "{} -> {} | {} -> {}",
                    b.before.leaders,
                    b.after.leaders,
                    human_bytes(b.before.bytes),
                    human_bytes(b.after.bytes)
                ),
            ]
        })
        .collect();
    table(
        &mut out,
        ["BROKER", "RACK", "STATE", "REPLICAS", "LEADERS | BYTES"],
        &rows,
    );
    out.push('\n');
    let _ = writeln!(
        out,
        "{} partitions change: {} replica moves ({} copied), {} leadership-only (reorders)",
        s.partitions_changed,
        s.replica_moves,
        human_bytes(s.bytes_moved),
        s.leadership_only
    );
    if s.leader_not_preferred_before > 0 {
        let _ = writeln!(
            out,
            "{} partitions are led by a broker other than their preferred leader today",
            s.leader_not_preferred_before
        );
    }
    let _ = writeln!(
        out,
        "Balanced before: replicas {}, leaders {}, bytes {}, constraints {}",
        yes(s.before.replicas),
        yes(s.before.leaders),
        yes(s.before.bytes),
        yes(s.before.constraints)
    );
    let _ = writeln!(
        out,
        "Balanced after:  replicas {}, leaders {}, bytes {}, constraints {}",
        yes(s.after.replicas),
        yes(s.after.leaders),
        yes(s.after.bytes),
        yes(s.after.constraints)
    );
    for w in &plan.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// The plan's moves as AlterPartitionReassignments asks for them.
pub fn reassignments(plan: &Plan) -> Vec<Reassignment> {
    plan.moves
        .iter()
        .map(|m| Reassignment {
            topic: m.topic.clone(),
            partition: m.partition,
            replicas: m.to.clone(),
        })
        .collect()
}

/// How [`execute`] goes about a plan.
#[derive(Debug, Clone, Copy)]
pub struct Execution {
    /// Partitions moved at once.
    pub batch: usize,
    /// How long one batch may take before the command gives up (the moves
    /// under way carry on in the brokers).
    pub batch_timeout: Duration,
    pub poll: Duration,
    /// Bytes per second each leader may send to the replicas being added
    /// (the cluster-wide `leader.replication.throttled.rate`) while the plan
    /// runs; `None`: unthrottled.
    pub throttle: Option<u64>,
}

/// Carries out `plan`: its moves in batches, each started with
/// AlterPartitionReassignments and followed with ListPartitionReassignments
/// until none of it is under way. `progress` hears (moved, total) after each
/// batch.
///
/// With `how.throttle`, the cluster-wide `leader.replication.throttled.rate`
/// is set before the first batch and put back as it was (deleted, or a
/// value set before restored) after the last, and after a failure, unless
/// moves of the plan are still under way then: they keep it, and the error
/// says how to remove it.
///
/// # Errors
/// A move refused (the reason per partition), a batch past its timeout,
/// the cluster unreachable, the throttle refused (nothing moves then).
/// Moves already under way carry on in the brokers; a new run plans from
/// where they got.
pub async fn execute(
    opts: &Options,
    plan: &Plan,
    how: Execution,
    progress: impl FnMut(usize, usize),
) -> anyhow::Result<()> {
    let moves = reassignments(plan);
    let mut admin = AdminClient::connect_with(&opts.bootstrap, opts.credentials.as_ref()).await?;
    let Some(rate) = how.throttle else {
        return run_batches(&mut admin, &moves, how, progress).await;
    };
    let before = admin
        .cluster_wide_broker_config(LEADER_REPLICATION_THROTTLED_RATE)
        .await?;
    admin
        .alter_cluster_wide_broker_config(&[ConfigChange::Set(
            LEADER_REPLICATION_THROTTLED_RATE.to_string(),
            rate.to_string(),
        )])
        .await
        .map_err(|e| anyhow::anyhow!("the throttle could not be set, so nothing moved: {e}"))?;
    let result = run_batches(&mut admin, &moves, how, progress).await;
    // The connection may be what failed: the clean-up gets its own.
    let restored = async {
        let mut admin =
            AdminClient::connect_with(&opts.bootstrap, opts.credentials.as_ref()).await?;
        let pending = admin.reassignments_in_progress().await?;
        if moves
            .iter()
            .any(|m| pending.contains(&(m.topic.clone(), m.partition)))
        {
            return Ok(false);
        }
        let change = match &before {
            Some(v) => ConfigChange::Set(LEADER_REPLICATION_THROTTLED_RATE.to_string(), v.clone()),
            None => ConfigChange::Delete(LEADER_REPLICATION_THROTTLED_RATE.to_string()),
        };
        admin.alter_cluster_wide_broker_config(&[change]).await?;
        Ok::<_, crate::admin::AdminError>(true)
    }
    .await;
    let undo = match &before {
        Some(v) => format!(
            "--alter --entity-type brokers --entity-default --add-config {LEADER_REPLICATION_THROTTLED_RATE}={v}"
        ),
        None => format!(
            "--alter --entity-type brokers --entity-default --delete-config {LEADER_REPLICATION_THROTTLED_RATE}"
        ),
    };
    let left = match restored {
        Ok(true) => return result,
        Ok(false) => "the throttle stays on for the moves still under way".to_string(),
        Err(e) => format!("the throttle could not be put back ({e})"),
    };
    let note = format!(
        "{left}; once they are done: kafka-configs --bootstrap-server {} {undo}",
        opts.bootstrap
    );
    match result {
        Ok(()) => Err(anyhow::anyhow!("every move is done, but {note}")),
        Err(e) => Err(e.context(note)),
    }
}

async fn run_batches(
    admin: &mut AdminClient,
    moves: &[Reassignment],
    how: Execution,
    mut progress: impl FnMut(usize, usize),
) -> anyhow::Result<()> {
    let mut done = 0;
    for batch in moves.chunks(how.batch.max(1)) {
        let refused = admin.reassign(batch).await?;
        if !refused.is_empty() {
            let why: Vec<String> = refused
                .iter()
                .map(|(m, e)| format!("{}-{}: {e}", m.topic, m.partition))
                .collect();
            anyhow::bail!("the brokers refused moves: {}", why.join("; "));
        }
        let deadline = tokio::time::Instant::now() + how.batch_timeout;
        loop {
            let pending = admin.reassignments_in_progress().await?;
            let left: Vec<String> = batch
                .iter()
                .filter(|m| pending.contains(&(m.topic.clone(), m.partition)))
                .map(|m| format!("{}-{}", m.topic, m.partition))
                .collect();
            if left.is_empty() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "moves still under way after {:?}: {} (they carry on in the brokers; \
                 ListPartitionReassignments shows them)",
                how.batch_timeout,
                left.join(", ")
            );
            tokio::time::sleep(how.poll).await;
        }
        done += batch.len();
        progress(done, moves.len());
    }
    Ok(())
}

fn table<const N: usize>(out: &mut String, header: [&str; N], rows: &[[String; N]]) {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(out, header.to_vec());
    for r in rows {
        line(out, r.iter().map(String::as_str).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};
    use kafka_protocol::protocol::StrBytes;

    fn metadata(
        brokers: &[(i32, Option<&str>)],
        parts: &[(&str, i32, &[i32])],
    ) -> MetadataResponse {
        let mut topics: BTreeMap<&str, Vec<MetadataResponsePartition>> = BTreeMap::new();
        for (t, p, r) in parts {
            topics.entry(t).or_default().push(
                MetadataResponsePartition::default()
                    .with_partition_index(*p)
                    .with_leader_id(BrokerId(r[0]))
                    .with_replica_nodes(r.iter().map(|b| BrokerId(*b)).collect()),
            );
        }
        MetadataResponse::default()
            .with_brokers(
                brokers
                    .iter()
                    .map(|(id, rack)| {
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(*id))
                            .with_host(StrBytes::from_static_str("127.0.0.1"))
                            .with_port(9000 + id)
                            .with_rack(rack.map(|r| StrBytes::from_string(r.to_string())))
                    })
                    .collect(),
            )
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, ps)| {
                        MetadataResponseTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(t.to_string()))))
                            .with_partitions(ps)
                    })
                    .collect(),
            )
    }

    #[test]
    fn metadata_becomes_the_planners_input_with_racks_leaders_and_drains() {
        let md = metadata(
            &[(1, Some("a")), (2, Some("b")), (3, None)],
            &[("t", 0, &[1, 2]), ("t", 1, &[2, 3])],
        );
        let snap = snapshot_from_metadata(&md, &[3], BTreeSet::new()).unwrap();
        assert_eq!(
            snap.brokers,
            vec![
                Broker::new(1).in_rack("a"),
                Broker::new(2).in_rack("b"),
                Broker::new(3).draining()
            ]
        );
        assert_eq!(snap.partitions[1], Partition::new("t", 1, &[2, 3], 0));
        assert_eq!(snap.addresses[&2], "127.0.0.1:9002");
    }

    #[test]
    fn a_scale_down_drains_only_the_leaving_brokers_that_are_members() {
        let md = metadata(&[(0, None), (1, None), (2, None)], &[("t", 0, &[0, 1])]);
        assert_eq!(members_of(&md, &BTreeSet::new(), &[3]), Vec::<i32>::new());
        assert_eq!(members_of(&md, &BTreeSet::new(), &[2, 3]), vec![2]);
        assert_eq!(members_of(&md, &BTreeSet::from([3]), &[2, 3]), vec![2, 3]);
        let drain = members_of(&md, &BTreeSet::new(), &[3]);
        assert!(snapshot_from_metadata(&md, &drain, BTreeSet::new()).is_ok());
    }

    #[test]
    fn draining_a_broker_that_is_not_a_member_is_refused() {
        let md = metadata(&[(1, None)], &[]);
        let err = snapshot_from_metadata(&md, &[7], BTreeSet::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("broker 7 is not a member"), "{err}");
    }

    #[test]
    fn a_fenced_broker_can_be_drained_and_gets_nothing() {
        // Broker 3 is down: Metadata leaves it out, DescribeCluster says fenced.
        let md = metadata(
            &[(1, None), (2, None), (4, None)],
            &[("t", 0, &[1, 3]), ("t", 1, &[3, 2])],
        );
        let snap = snapshot_from_metadata(&md, &[3], BTreeSet::from([3])).unwrap();
        assert_eq!(snap.fenced, BTreeSet::from([3]));
        let p = plan(&snap, Tolerance::default()).unwrap();
        assert!(
            p.warnings[0].starts_with("broker 3 is fenced"),
            "{:?}",
            p.warnings
        );
        let j = reassignment_json(&p);
        for e in j["partitions"].as_array().unwrap() {
            assert!(
                !e["replicas"].as_array().unwrap().contains(&3.into()),
                "{e}"
            );
        }
        assert_eq!(j["partitions"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_json_is_kafkas_reassignment_format() {
        let md = metadata(
            &[(1, None), (2, None), (3, None)],
            &[("t", 0, &[1, 2]), ("t", 1, &[1, 2]), ("t", 2, &[1, 2])],
        );
        let snap = snapshot_from_metadata(&md, &[1], BTreeSet::new()).unwrap();
        let p = plan(&snap, Tolerance::default()).unwrap();
        let j = reassignment_json(&p);
        assert_eq!(j["version"], 1);
        let parts = j["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        for e in parts {
            assert_eq!(e["topic"], "t");
            let r: Vec<i64> = e["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap())
                .collect();
            assert_eq!(r.len(), 2);
            assert!(!r.contains(&1));
        }
    }

    #[test]
    fn the_table_shows_moves_brokers_totals_and_the_unknown_sizes() {
        // Four partitions on brokers 1 and 2 (eight replicas): 8/3 ± 1
        // allows 3, 3 and 2, two moves onto broker 3. Two single-replica
        // partitions cannot move.
        let mut parts: Vec<(&str, i32, &[i32])> = (0..4).map(|p| ("t", p, &[1, 2][..])).collect();
        parts.extend([("one", 0, &[1][..]), ("one", 1, &[2][..])]);
        let md = metadata(&[(1, None), (2, None), (3, None)], &parts);
        let mut snap = snapshot_from_metadata(&md, &[], BTreeSet::new()).unwrap();
        assert_eq!(snap.immovable, 2);
        snap.sizes_unknown = Some("sizes unknown".into());
        let p = plan(&snap, Tolerance::default()).unwrap();
        let text = render_table(&snap, &p, &Tolerance::default());
        assert!(text.contains("note: sizes unknown"), "{text}");
        assert!(text.contains("note: 2 partitions cannot move"), "{text}");
        assert!(text.contains("TOPIC"), "{text}");
        assert!(text.contains(" -> 3"), "{text}");
        assert!(
            text.contains("partitions change: 2 replica moves"),
            "{text}"
        );
        assert!(text.contains("Balanced after:  replicas yes"), "{text}");
        assert!(text.contains("Rebalance plan"), "{text}");
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
