//! Running a broker as a cluster member: the gRPC server, the metadata Raft
//! group, registration, and keeping the local topic table and dynamic
//! configs in step with the replicated metadata.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tracing::{info, warn};

use super::meta_state::{BrokerRegistration, Endpoint};
use super::meta_store::MetaStore;
use super::metadata_group::{GroupSettings, MetadataGroup, parse_voters};
use crate::acl::{AclBinding, AclIndex};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::quota::{QuotaConfig, QuotaEntity, QuotaValues};
use crate::replication::host::{HostSettings, ReplicaHost};
use crate::rpc::client::PeerPool;
use crate::rpc::server::{Registry, serve};
use crate::rpc::{PeerToken, RpcConfig};

/// The cluster id of a cluster started without `cluster.id`: derived from
/// the voters so every broker of it agrees without coordination.
pub fn derived_cluster_id(voters: &str) -> String {
    let normalized: Vec<&str> = voters
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    format!(
        "skiff-{:08x}",
        crc32c::crc32c(normalized.join(",").as_bytes())
    )
}

/// The peer token of `--rpc-peer-token-file`, if set.
///
/// # Errors
/// The file unreadable, or its token unusable.
fn peer_token(config: &BrokerConfig) -> anyhow::Result<Option<PeerToken>> {
    let Some(path) = &config.rpc_peer_token_file else {
        warn!("no --rpc-peer-token-file: broker-to-broker requests are not authenticated");
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the peer token file {}", path.display()))?;
    let token = PeerToken::new(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if config.rpc_peer_token_required {
        Ok(Some(token))
    } else {
        warn!("rpc.peer.token.required=false: peers that send no token are served");
        Ok(Some(token.tolerating_none()))
    }
}

/// Starts the gRPC server and the metadata group and attaches the group to
/// `store`. `config.cluster_id` is filled in when it was unset.
///
/// # Errors
/// Bad voters, the RPC address not bindable, Raft storage failing.
pub async fn start(
    config: &mut BrokerConfig,
    store: &MetaStore,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<MetadataGroup>> {
    let voters_s = config.controller_quorum_voters.clone().unwrap_or_default();
    let voters = parse_voters(&voters_s).map_err(|e| anyhow::anyhow!(e))?;
    let cluster_id = config
        .cluster_id
        .clone()
        .unwrap_or_else(|| derived_cluster_id(&voters_s));
    config.cluster_id = Some(cluster_id.clone());
    let node_id = u64::try_from(config.node_id).context("node.id must not be negative")?;
    let rpc = RpcConfig::new(cluster_id.clone(), node_id).with_peer_token(peer_token(config)?);
    let registry = Registry::new(rpc.clone());
    let pool = PeerPool::new(rpc);
    let listener = tokio::net::TcpListener::bind(&config.rpc_listener)
        .await
        .with_context(|| format!("binding the RPC listener {}", config.rpc_listener))?;
    info!(addr = %config.rpc_listener, advertised = %config.rpc_advertised(), "serving broker-to-broker gRPC");
    {
        let registry = registry.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = shutdown.wait_for(|s| *s).await;
            };
            if let Err(e) = serve(listener, registry, stop).await {
                warn!(error = %e, "gRPC server stopped");
            }
        });
    }
    let settings = GroupSettings {
        node_id,
        voters,
        heartbeat_ms: config.metadata_raft_heartbeat_ms,
        election_timeout_min_ms: config.metadata_raft_election_timeout_ms,
        election_timeout_max_ms: config.metadata_raft_election_timeout_ms * 2,
        snapshot_every: config.metadata_snapshot_interval_entries,
        write_timeout: Duration::from_millis(config.metadata_write_timeout_ms.max(100)),
    };
    let group = MetadataGroup::start(store.db(), &cluster_id, settings, &registry, pool).await?;
    store.attach(group.clone());
    Ok(group)
}

/// The background work of a cluster member, once the broker is open;
/// returns the host of this broker's partition replicas (stopped by the
/// caller at shutdown).
///
/// # Errors
/// An invalid partition Raft configuration.
pub fn spawn_background(
    broker: Arc<Broker>,
    group: Arc<MetadataGroup>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Arc<ReplicaHost>> {
    let host = ReplicaHost::new(
        group.clone(),
        &broker.cluster_id,
        HostSettings {
            heartbeat_ms: broker.config.partition_raft_heartbeat_ms,
            election_timeout_min_ms: broker.config.partition_raft_election_timeout_ms,
            election_timeout_max_ms: broker.config.partition_raft_election_timeout_ms * 2,
            auto_leader_rebalance: broker.config.auto_leader_rebalance_enable.then(|| {
                std::time::Duration::from_secs(
                    broker.config.leader_imbalance_check_interval_seconds.max(1),
                )
            }),
        },
        broker.replication_throttle.clone(),
    )?;
    tokio::spawn(host.clone().run(broker.clone(), shutdown.clone()));
    let me = BrokerRegistration {
        node_id: broker.node_id(),
        rpc_addr: broker.config.rpc_advertised(),
        rack: broker.config.broker_rack.clone(),
        endpoints: broker
            .advertised
            .iter()
            .map(|l| Endpoint {
                listener: l.name.clone(),
                host: l.host.clone(),
                port: l.port,
                security_protocol: format!("{:?}", l.protocol),
            })
            .collect(),
    };
    let mut stop = shutdown.clone();
    let g = group.clone();
    let session_timeout =
        std::time::Duration::from_millis(broker.config.broker_session_timeout_ms.max(1));
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = g.clone().run_membership(me) => {}
            _ = super::fencing::run(g, session_timeout) => {}
        }
    });
    tokio::spawn(follow_metadata(
        broker.clone(),
        group.clone(),
        host.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(follow_security(
        broker.clone(),
        group.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(export_metrics(
        broker.clone(),
        group.clone(),
        shutdown.clone(),
    ));
    if let Some(path) = broker.config.scram_bootstrap_users_file.clone() {
        tokio::spawn(apply_bootstrap_users(
            broker.clone(),
            path,
            shutdown.clone(),
        ));
    }
    Ok(host)
}

/// Writes `scram.bootstrap.users.file`'s users into the metadata, retrying
/// until it works: a broker may start long before the metadata group has a
/// leader (pods of a StatefulSet start one by one), and giving up would
/// leave, for example, the operator's own user missing for good.
async fn apply_bootstrap_users(
    broker: Arc<Broker>,
    path: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut wait = std::time::Duration::from_secs(1);
    loop {
        let (b, p) = (broker.clone(), path.clone());
        let res =
            tokio::task::spawn_blocking(move || crate::auth::bootstrap_users(b.topics.store(), &p))
                .await;
        match res {
            Ok(Ok(users)) => {
                for user in users {
                    info!(
                        user,
                        "created SCRAM credentials from scram.bootstrap.users.file"
                    );
                }
                return;
            }
            // The metadata not reachable yet: try again.
            Ok(Err(e)) if e.is::<crate::cluster::meta_store::MetaStoreError>() => {
                warn!(error = %e, retry_in = ?wait, "scram.bootstrap.users.file not applied yet");
            }
            // The file itself is wrong: retrying will not help.
            Ok(Err(e)) => {
                warn!(error = %e, "scram.bootstrap.users.file not applied");
                return;
            }
            Err(e) => {
                warn!(error = %e, "applying scram.bootstrap.users.file panicked");
                return;
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Applies every metadata change to the local topic table and dynamic
/// configs, off the async workers.
async fn follow_metadata(
    broker: Arc<Broker>,
    group: Arc<MetadataGroup>,
    host: Arc<ReplicaHost>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut applied = group.subscribe();
    loop {
        let records: Vec<_> = group.state().topics.values().cloned().collect();
        let b = broker.clone();
        let res = tokio::task::spawn_blocking(move || {
            b.reload_dynamic_config()?;
            b.topics.sync_from(records)
        })
        .await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "applying cluster metadata locally failed"),
            Err(e) => warn!(error = %e, "applying cluster metadata locally panicked"),
        }
        // Partitions may have appeared or gone: start or stop their groups.
        host.kick();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = applied.changed() => if r.is_err() { return },
        }
    }
}

/// Keeps the authorizer and quotas in step with the metadata, in a task of
/// its own: applying topics (file work, off the async workers) must not
/// delay an ACL change reaching the authorizer.
async fn follow_security(
    broker: Arc<Broker>,
    group: Arc<MetadataGroup>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut applied = group.subscribe();
    let mut acls = None;
    let mut quotas = None;
    loop {
        sync_security(&broker, &group, &mut acls, &mut quotas);
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = applied.changed() => if r.is_err() { return },
        }
    }
}

/// Rebuilds the authorizer's ACL index and the quota config when the
/// replicated ACLs or quotas changed (on any broker).
fn sync_security(
    broker: &Broker,
    group: &MetadataGroup,
    acls: &mut Option<BTreeSet<AclBinding>>,
    quotas: &mut Option<BTreeMap<QuotaEntity, QuotaValues>>,
) {
    let state = group.state();
    if acls.as_ref() != Some(&state.acls) {
        broker
            .authorizer
            .replace_index(AclIndex::new(state.acls.iter().cloned()));
        *acls = Some(state.acls.clone());
    }
    if quotas.as_ref() != Some(&state.quotas) {
        broker.quotas.replace_config(QuotaConfig::new(
            state.quotas.iter().map(|(e, v)| (e.clone(), v.clone())),
        ));
        *quotas = Some(state.quotas.clone());
    }
}

async fn export_metrics(
    broker: Arc<Broker>,
    group: Arc<MetadataGroup>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut metrics = group.raft().metrics();
    let mut last_term = 0;
    loop {
        {
            let m = metrics.borrow_and_update();
            let bm = &broker.metrics;
            bm.metadata_raft_term.set(m.current_term as i64);
            bm.metadata_raft_applied_index
                .set(m.last_applied.map_or(0, |l| l.index) as i64);
            bm.metadata_raft_leader
                .set(m.current_leader.map_or(-1, |l| l as i64));
            bm.fenced_brokers.set(group.state().fenced.len() as i64);
            if m.current_term > last_term {
                // A term begins with an election.
                if last_term > 0 {
                    bm.metadata_raft_elections
                        .inc_by(m.current_term - last_term);
                }
                last_term = m.current_term;
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = metrics.changed() => if r.is_err() { return },
        }
    }
}
