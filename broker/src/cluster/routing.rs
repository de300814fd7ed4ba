//! Who leads a partition and who holds it, as clients are told in Metadata,
//! and the one check the data path (Produce, Fetch, ListOffsets) makes.
//!
//! A replicated partition (a Raft group per partition) is led by its Raft
//! leader: the replica that leads knows it first-hand; every other broker
//! reads the leader, epoch (Raft term) and ISR the leader recorded in the
//! cluster metadata. A single-replica partition is led by its assigned
//! replica; on a single broker (no assignment) by this broker.

use crate::broker::Broker;
use crate::cluster::topic_table::Topic;
use crate::config::Listener;
use crate::errors::{BrokerError, Result};

/// A partition's leader, replicas and in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub leader: i32,
    /// The leader epoch: the Raft term of a replicated partition, 0 else.
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas on fenced brokers.
    pub offline: Vec<i32>,
}

/// Whether `topic`'s partitions are Raft groups (in a cluster, RF >= 2).
pub fn is_replicated(broker: &Broker, topic: &Topic) -> bool {
    topic.replication_factor >= 2
        && !topic.assignments.is_empty()
        && broker.topics.store().group().is_some()
}

/// The partition's route as clients are told: a leader on a fenced broker
/// is none (-1: LEADER_NOT_AVAILABLE, clients retry) unless it is this
/// broker leading first-hand, and fenced replicas are offline, out of the
/// ISR.
pub fn route(broker: &Broker, topic: &Topic, partition: i32) -> Route {
    let mut r = route_ignoring_fences(broker, topic, partition);
    if let Some(group) = broker.topics.store().group() {
        let state = group.state();
        let me = broker.node_id();
        if r.leader != me && state.is_fenced(r.leader) {
            r.leader = -1;
        }
        r.isr
            .retain(|&id| !state.is_fenced(id) || (id == me && r.leader == me));
        r.offline = r
            .replicas
            .iter()
            .copied()
            .filter(|&id| state.is_fenced(id))
            .collect();
    }
    r
}

fn route_ignoring_fences(broker: &Broker, topic: &Topic, partition: i32) -> Route {
    let replicas = replicas_of(broker, topic, partition);
    let preferred = replicas[0];
    if !is_replicated(broker, topic) {
        // Single replica: its only copy is in sync.
        return Route {
            leader: preferred,
            leader_epoch: 0,
            isr: vec![preferred],
            replicas,
            offline: Vec::new(),
        };
    }
    let epoch = |term: u64| i32::try_from(term).unwrap_or(i32::MAX);
    let recorded = broker.topics.store().group().and_then(|g| {
        g.state()
            .partition_leaders
            .get(&topic.id)
            .and_then(|ps| ps.get(&partition))
            .cloned()
    });
    // A replica knows its group's leader before the metadata does (the
    // leader records itself a moment after its election).
    if let Some(group) = topic
        .partition(partition)
        .and_then(|p| p.replicated())
        .and_then(|r| r.group())
    {
        let (term, leader) = group.leader_view();
        let newer = recorded.as_ref().is_none_or(|r| r.epoch < term);
        if group.is_leader() && recorded.as_ref().is_none_or(|r| r.epoch <= term) {
            let mut isr: Vec<i32> = group
                .in_sync_ids()
                .into_iter()
                .filter_map(|id| i32::try_from(id).ok())
                .collect();
            isr.sort_unstable();
            return Route {
                leader: broker.node_id(),
                leader_epoch: epoch(term),
                isr,
                replicas,
                offline: Vec::new(),
            };
        }
        if let Some(leader) = leader.and_then(|l| i32::try_from(l).ok())
            && newer
        {
            return Route {
                leader,
                leader_epoch: epoch(term),
                isr: vec![leader],
                replicas,
                offline: Vec::new(),
            };
        }
    }
    match recorded {
        Some(r) => Route {
            leader: r.leader,
            leader_epoch: epoch(r.epoch),
            isr: r.isr,
            replicas,
            offline: Vec::new(),
        },
        // Not led yet (a new partition): its preferred leader is elected
        // first.
        None => Route {
            leader: preferred,
            leader_epoch: 0,
            isr: vec![preferred],
            replicas,
            offline: Vec::new(),
        },
    }
}

/// The partition's replicas: in a cluster as the applied metadata has them
/// (the local topic table follows it a moment later, so a reassignment's
/// end shows in Metadata as soon as ListPartitionReassignments shows it),
/// else as the topic table has them; this broker alone when unassigned.
pub fn replicas_of(broker: &Broker, topic: &Topic, partition: i32) -> Vec<i32> {
    let slot = usize::try_from(partition).ok();
    let applied = broker.topics.store().group().and_then(|g| {
        let state = g.state();
        let t = state
            .topics
            .get(&*topic.name)
            .filter(|t| t.id == topic.id)?;
        slot.and_then(|p| t.assignments.get(p))
            .filter(|r| !r.is_empty())
            .cloned()
    });
    applied
        .or_else(|| {
            slot.and_then(|p| topic.assignments.get(p))
                .filter(|r| !r.is_empty())
                .cloned()
        })
        .unwrap_or_else(|| vec![broker.node_id()])
}

/// The assigned (preferred) leader: the first replica.
pub fn leader_of(broker: &Broker, topic: &Topic, partition: i32) -> i32 {
    replicas_of(broker, topic, partition)[0]
}

/// `NOT_LEADER_OR_FOLLOWER` unless this broker leads `partition` (for a
/// replicated partition: leads its Raft group right now), so the client
/// refreshes its metadata and goes to the leader.
///
/// # Errors
/// [`BrokerError::NotLeaderOrFollower`].
pub fn check_leader(broker: &Broker, topic: &Topic, partition: i32) -> Result<()> {
    let leads = match topic.partition(partition).and_then(|p| p.replicated()) {
        Some(r) => r.is_leader(),
        // A replicated topic this broker holds no replica of has the
        // assigned leader elsewhere, so the static rule answers that too.
        None => leader_of(broker, topic, partition) == broker.node_id(),
    };
    if leads {
        Ok(())
    } else {
        Err(BrokerError::NotLeaderOrFollower)
    }
}

/// A broker as clients of one listener should reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerEndpoint {
    pub id: i32,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub fenced: bool,
}

/// The brokers a client on `listener` is told about: every registered,
/// unfenced broker's endpoint of the same listener name in a cluster, this
/// broker alone otherwise.
pub fn brokers(broker: &Broker, listener: &Listener) -> Vec<BrokerEndpoint> {
    endpoints(broker, listener, false)
}

/// [`brokers`], with the fenced ones too when `include_fenced`
/// (DescribeCluster v2).
pub fn endpoints(
    broker: &Broker,
    listener: &Listener,
    include_fenced: bool,
) -> Vec<BrokerEndpoint> {
    let mut me = BrokerEndpoint {
        id: broker.node_id(),
        host: listener.host.clone(),
        port: listener.port,
        rack: broker.config.broker_rack.clone(),
        fenced: false,
    };
    let Some(group) = broker.topics.store().group() else {
        return vec![me];
    };
    let state = group.state();
    me.fenced = state.is_fenced(me.id);
    let mut out: Vec<BrokerEndpoint> = state
        .brokers
        .values()
        .filter(|b| b.node_id != me.id)
        .filter_map(|b| {
            let ep = b.endpoints.iter().find(|e| e.listener == listener.name)?;
            Some(BrokerEndpoint {
                id: b.node_id,
                host: ep.host.clone(),
                port: ep.port,
                rack: b.rack.clone(),
                fenced: state.is_fenced(b.node_id),
            })
        })
        .collect();
    out.push(me);
    out.retain(|b| include_fenced || !b.fenced);
    out.sort_by_key(|b| b.id);
    out
}

/// The controller clients are told about: the metadata Raft leader in a
/// cluster (-1 while there is none), this broker alone.
pub fn controller_id(broker: &Broker) -> i32 {
    match broker.topics.store().group() {
        None => broker.node_id(),
        Some(g) => g.leader().and_then(|l| i32::try_from(l).ok()).unwrap_or(-1),
    }
}
