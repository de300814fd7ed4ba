//! The classic group coordinator: one state machine per group, as Kafka's
//! `GroupCoordinator` runs it.
//!
//! ```text
//!            join                      all joined / rebalance timeout
//!   Empty ──────────► PreparingRebalance ─────────────────► CompletingRebalance
//!     ▲                 ▲          ▲  (no members left: Empty)       │
//!     │   last member   │          └──── join / leave / expiry ──────┤ leader's SyncGroup
//!     └─── leaves ──────┴────────────── join / leave / expiry ◄── Stable ◄┘
//! ```
//!
//! A JoinGroup or SyncGroup that must wait parks a oneshot sender in its
//! member; the transition that completes the round answers all of them.
//! Timers are tokio tasks that sleep to a deadline and then check, under the
//! lock, that the state they were armed for still holds (an *epoch* that
//! every state change bumps), so a stale timer does nothing:
//!
//! - a member's session: expires it unless a heartbeat (or a parked
//!   join/sync) moved its deadline;
//! - the join round: `group.initial.rebalance.delay.ms` when the group was
//!   Empty (extended while new members keep arriving, bounded by the
//!   rebalance timeout), else the largest rebalance timeout of the members;
//!   then members that did not rejoin are removed;
//! - the sync round: members that did not SyncGroup within the rebalance
//!   timeout are removed, which starts a new round;
//! - a member id handed out with MEMBER_ID_REQUIRED is forgotten after the
//!   session timeout if it never comes back.
//!
//! The coordinator knows nothing of assignors: it picks a protocol every
//! member supports (by votes, ties broken by the leader's preference), hands
//! the leader every member's metadata for it, and distributes what the
//! leader sends back. Committed offsets live in the group too, so that
//! listing, deleting and retention see one truth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

use super::log_format::{GroupValue, MemberValue};
use crate::errors::BrokerError;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub initial_rebalance_delay: Duration,
    pub min_session_timeout: Duration,
    pub max_session_timeout: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka uses (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// What a JoinGroup carries.
#[derive(Debug, Clone)]
pub struct JoinParams {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an empty member id first gets MEMBER_ID_REQUIRED.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader that rejoins may be told to skip the
    /// assignment (KIP-814).
    pub supports_skip_assignment: bool,
}

/// A successful JoinGroup answer.
#[derive(Debug, Clone)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's metadata for the chosen protocol; only for the leader.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// The leader need not compute an assignment (v9+, static leader rejoin).
    pub skip_assignment: bool,
}

pub type JoinOutcome = Result<Joined, BrokerError>;

/// A successful SyncGroup answer.
#[derive(Debug, Clone)]
pub struct Synced {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

pub type SyncOutcome = Result<Synced, BrokerError>;

/// Committed offsets per topic: (topic, [(partition, offset if any)]).
pub type FetchedOffsets = Vec<(String, Vec<(i32, Option<CommittedOffset>)>)>;

/// What a SyncGroup carries.
#[derive(Debug, Clone)]
pub struct SyncParams {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A summary for ListGroups and metrics.
#[derive(Debug, Clone)]
pub struct GroupSummary {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
    pub members: usize,
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    join_waiter: Option<oneshot::Sender<JoinOutcome>>,
    sync_waiter: Option<oneshot::Sender<SyncOutcome>>,
    deadline: Instant,
    /// Restored from the group's stored record and not heard from since.
    restored: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    /// The first of this member's protocols that is among `candidates`.
    fn vote(&self, candidates: &HashSet<&str>) -> Option<&str> {
        self.protocols
            .iter()
            .map(|(n, _)| n.as_str())
            .find(|n| candidates.contains(n))
    }
}

struct Group {
    state: GroupState,
    /// Wall-clock ms of the last state change (offset retention of Empty groups).
    state_since_ms: i64,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: IndexMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not yet back.
    pending: HashSet<String>,
    /// group.instance.id → member id.
    statics: HashMap<String, String>,
    /// The join round is the initial delayed one (the group was Empty).
    initial_delay: bool,
    new_member_added: bool,
    /// Bumped by every state change; timers check it.
    epoch: u64,
    /// The highest generation a member claimed that this group does not
    /// have: a restored record can be older than the last generation handed
    /// out, and the next generation must not reuse that number.
    claimed_generation: i32,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
}

impl Group {
    fn new(now_ms: i64) -> Self {
        Self {
            state: GroupState::Empty,
            state_since_ms: now_ms,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashSet::new(),
            statics: HashMap::new(),
            initial_delay: false,
            new_member_added: false,
            epoch: 0,
            claimed_generation: 0,
            offsets: BTreeMap::new(),
        }
    }

    fn set_state(&mut self, state: GroupState) {
        self.state = state;
        self.state_since_ms = crate::broker::now_ms();
        self.epoch += 1;
    }

    /// Protocols every member supports.
    fn candidates(&self) -> HashSet<&str> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return HashSet::new();
        };
        let mut set: HashSet<&str> = first.protocols.iter().map(|(n, _)| n.as_str()).collect();
        for m in it {
            let theirs: HashSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            set.retain(|n| theirs.contains(n));
        }
        set
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let candidates = self.candidates();
        protocols
            .iter()
            .any(|(n, _)| candidates.contains(n.as_str()))
    }

    /// Kafka's rule: each member votes for its first protocol every member
    /// supports; the most votes win; ties go to the leader's preference.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidates();
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for m in self.members.values() {
            if let Some(v) = m.vote(&candidates) {
                *votes.entry(v).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        let order: Vec<&str> = self
            .leader
            .as_ref()
            .and_then(|l| self.members.get(l))
            .or_else(|| self.members.values().next())
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect())
            .unwrap_or_default();
        order
            .into_iter()
            .find(|n| votes.get(n) == Some(&best))
            .or_else(|| votes.iter().find(|(_, c)| **c == best).map(|(n, _)| *n))
            .map(str::to_string)
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.join_waiter.is_some())
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO)
    }

    fn joined_for(&self, member_id: &str) -> Joined {
        let is_leader = self.leader.as_deref() == Some(member_id);
        let protocol = self.protocol.clone().unwrap_or_default();
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader: self.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                self.members
                    .iter()
                    .map(|(id, m)| (id.clone(), m.instance_id.clone(), m.metadata_for(&protocol)))
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment: false,
        }
    }

    fn synced_for(&self, member_id: &str) -> Synced {
        Synced {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            assignment: self
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    /// A request's generation against the group's, remembering a higher
    /// one (see `claimed_generation`).
    fn check_generation(&mut self, got: i32) -> Result<(), BrokerError> {
        if got == self.generation {
            return Ok(());
        }
        self.claimed_generation = self.claimed_generation.max(got);
        Err(BrokerError::IllegalGeneration {
            got,
            current: self.generation,
        })
    }

    /// A member's own request arrived: it is no longer only restored.
    fn seen(&mut self, member_id: &str) {
        if let Some(m) = self.members.get_mut(member_id) {
            m.restored = false;
        }
    }

    /// Checks a (member id, instance id) pair of a request on a known group.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), BrokerError> {
        if let Some(instance) = instance_id
            && let Some(owner) = self.statics.get(instance)
            && owner != member_id
        {
            if self.members.get(owner).is_some_and(|m| m.restored) {
                // The stored record names an older id of this instance (the
                // coordinator moved before the newer one was stored): the
                // member rejoins rather than being fenced for good.
                return Err(BrokerError::UnknownMemberId);
            }
            return Err(BrokerError::FencedInstanceId);
        }
        if !self.members.contains_key(member_id) {
            return Err(BrokerError::UnknownMemberId);
        }
        Ok(())
    }
}

/// All groups this broker coordinates.
pub struct Coordinator {
    config: GroupConfig,
    groups: Mutex<HashMap<String, Group>>,
    rebalances: IntCounter,
    /// Groups whose metadata (generation, members, assignments) changed in
    /// a way worth storing: they became Stable or Empty.
    changes: mpsc::UnboundedSender<String>,
    changes_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    /// Members restored during a replay, whose session timers start when
    /// it ends ([`Coordinator::finish_restore`]).
    restoring: Mutex<HashMap<String, HashSet<String>>>,
    /// Lets timer tasks reach the coordinator without keeping it alive.
    me: Weak<Coordinator>,
}

/// Kafka's rule for group ids in group APIs: not empty.
pub fn validate_group_id(group_id: &str) -> Result<(), BrokerError> {
    if group_id.is_empty() {
        return Err(BrokerError::InvalidGroupId(group_id.to_string()));
    }
    Ok(())
}

fn send<T>(waiter: Option<oneshot::Sender<T>>, value: T) {
    if let Some(w) = waiter {
        // The client may have gone; nothing to do then.
        let _ = w.send(value);
    }
}

fn member_id_for(client_id: &str) -> String {
    format!("{client_id}-{}", uuid::Uuid::new_v4())
}

fn ms(d: i32) -> Duration {
    Duration::from_millis(u64::try_from(d).unwrap_or(0))
}

/// A member's rebalance timeout; without one (JoinGroup v0, old group
/// records) Kafka uses the session timeout.
fn rebalance_timeout(rebalance_ms: i32, session: Duration) -> Duration {
    if rebalance_ms > 0 {
        ms(rebalance_ms)
    } else {
        session
    }
}

impl Coordinator {
    pub fn new(config: GroupConfig, rebalances: IntCounter) -> Arc<Self> {
        let (changes, changes_rx) = mpsc::unbounded_channel();
        Arc::new_cyclic(|me| Self {
            config,
            groups: Mutex::new(HashMap::new()),
            rebalances,
            changes,
            changes_rx: Mutex::new(Some(changes_rx)),
            restoring: Mutex::new(HashMap::new()),
            me: me.clone(),
        })
    }

    // ------------------------------------------------------------- JoinGroup

    /// Handles a JoinGroup; the answer arrives on the receiver (at once, or
    /// when the round completes).
    pub fn join(&self, p: JoinParams) -> oneshot::Receiver<JoinOutcome> {
        let (tx, rx) = oneshot::channel();
        self.join_inner(p, tx);
        rx
    }

    fn join_inner(&self, p: JoinParams, tx: oneshot::Sender<JoinOutcome>) {
        if let Err(e) = validate_group_id(&p.group_id) {
            let _ = tx.send(Err(e));
            return;
        }
        let session = ms(p.session_timeout_ms);
        if p.session_timeout_ms < 0
            || session < self.config.min_session_timeout
            || session > self.config.max_session_timeout
        {
            let _ = tx.send(Err(BrokerError::InvalidSessionTimeout {
                got: p.session_timeout_ms,
                min: self.config.min_session_timeout.as_millis() as u64,
                max: self.config.max_session_timeout.as_millis() as u64,
            }));
            return;
        }
        let group_id = p.group_id.clone();
        let mut groups = self.groups.lock();
        if !groups.contains_key(&group_id) {
            if !p.member_id.is_empty() {
                let _ = tx.send(Err(BrokerError::UnknownMemberId));
                return;
            }
            groups.insert(p.group_id.clone(), Group::new(crate::broker::now_ms()));
        }
        let Some(group) = groups.get_mut(&group_id) else {
            return;
        };
        if group.state == GroupState::Dead {
            let _ = tx.send(Err(BrokerError::CoordinatorNotAvailable(
                "the group is being deleted".into(),
            )));
            return;
        }
        if !group.supports(&p.protocol_type, &p.protocols) {
            let _ = tx.send(Err(BrokerError::InconsistentGroupProtocol(
                "the member's protocols are incompatible with the group's".into(),
            )));
            return;
        }
        if p.member_id.is_empty() {
            self.join_unknown(group, &group_id, p, tx);
        } else {
            self.join_known(group, &group_id, p, tx);
        }
    }

    fn join_unknown(
        &self,
        group: &mut Group,
        group_id: &str,
        p: JoinParams,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        let new_id = member_id_for(&p.client_id);
        if let Some(instance) = p.instance_id.clone() {
            if let Some(old_id) = group.statics.get(&instance).cloned() {
                self.replace_static(group, group_id, &old_id, new_id, p, tx);
                return;
            }
            self.add_member(group, group_id, new_id, p, tx);
            return;
        }
        if p.require_known_member_id {
            group.pending.insert(new_id.clone());
            self.arm_pending_expiry(group_id, &new_id, ms(p.session_timeout_ms));
            let _ = tx.send(Err(BrokerError::MemberIdRequired(new_id)));
            return;
        }
        self.add_member(group, group_id, new_id, p, tx);
    }

    fn join_known(
        &self,
        group: &mut Group,
        group_id: &str,
        p: JoinParams,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        if group.pending.remove(&p.member_id) {
            let id = p.member_id.clone();
            self.add_member(group, group_id, id, p, tx);
            return;
        }
        if let Err(e) = group.check_member(&p.member_id, p.instance_id.as_deref()) {
            let _ = tx.send(Err(e));
            return;
        }
        let id = p.member_id.clone();
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(Err(BrokerError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                self.update_member(group, &id, p, tx);
                self.maybe_complete_join(group, group_id);
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                let unchanged = group
                    .members
                    .get(&id)
                    .is_some_and(|m| m.protocols == p.protocols);
                let is_leader = group.leader.as_deref() == Some(id.as_str());
                if unchanged && (group.state == GroupState::CompletingRebalance || !is_leader) {
                    // Nothing changed: the member lost our answer; repeat it.
                    let _ = tx.send(Ok(group.joined_for(&id)));
                } else {
                    self.update_member(group, &id, p, tx);
                    self.prepare_rebalance(group, group_id, "a member rejoined with new metadata");
                }
            }
        }
    }

    fn replace_static(
        &self,
        group: &mut Group,
        group_id: &str,
        old_id: &str,
        new_id: String,
        p: JoinParams,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        let Some(mut old) = group.members.shift_remove(old_id) else {
            group
                .statics
                .remove(p.instance_id.as_deref().unwrap_or_default());
            self.add_member(group, group_id, new_id, p, tx);
            return;
        };
        send(old.join_waiter.take(), Err(BrokerError::FencedInstanceId));
        send(old.sync_waiter.take(), Err(BrokerError::FencedInstanceId));
        let unchanged = old.protocols == p.protocols;
        if let Some(instance) = &p.instance_id {
            group.statics.insert(instance.clone(), new_id.clone());
        }
        let was_leader = group.leader.as_deref() == Some(old_id);
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        info!(group = group_id, old = old_id, new = %new_id, "static member rejoined under a new member id");
        group.members.insert(
            new_id.clone(),
            Member {
                instance_id: p.instance_id.clone(),
                client_id: p.client_id.clone(),
                client_host: p.client_host.clone(),
                session_timeout: ms(p.session_timeout_ms),
                rebalance_timeout: ms(p.rebalance_timeout_ms),
                protocol_type: p.protocol_type.clone(),
                protocols: p.protocols.clone(),
                assignment: old.assignment,
                join_waiter: None,
                sync_waiter: None,
                deadline: Instant::now() + ms(p.session_timeout_ms),
                restored: false,
            },
        );
        self.arm_session(group_id, &new_id, ms(p.session_timeout_ms));
        match group.state {
            GroupState::Stable if unchanged => {
                // The static member is back with the same subscription: it
                // keeps its assignment, nobody else is disturbed. A leader
                // learns it leads; from v9 it gets the members and is told to
                // skip the assignment, before that it gets none, and its
                // SyncGroup (in Stable) returns the current assignment.
                self.changed(group_id);
                let mut answer = group.joined_for(&new_id);
                if was_leader {
                    if p.supports_skip_assignment {
                        answer.skip_assignment = true;
                    } else {
                        answer.members.clear();
                    }
                }
                let _ = tx.send(Ok(answer));
            }
            GroupState::PreparingRebalance => {
                if let Some(m) = group.members.get_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.maybe_complete_join(group, group_id);
            }
            _ => {
                if let Some(m) = group.members.get_mut(&new_id) {
                    m.join_waiter = Some(tx);
                }
                self.prepare_rebalance(group, group_id, "a static member rejoined");
            }
        }
    }

    fn add_member(
        &self,
        group: &mut Group,
        group_id: &str,
        id: String,
        p: JoinParams,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        if group.members.is_empty() {
            group.protocol_type = Some(p.protocol_type.clone());
        }
        if let Some(instance) = &p.instance_id {
            group.statics.insert(instance.clone(), id.clone());
        }
        let session = ms(p.session_timeout_ms);
        group.members.insert(
            id.clone(),
            Member {
                instance_id: p.instance_id,
                client_id: p.client_id,
                client_host: p.client_host,
                session_timeout: session,
                // v0 has no rebalance timeout.
                rebalance_timeout: rebalance_timeout(p.rebalance_timeout_ms, session),
                protocol_type: p.protocol_type,
                protocols: p.protocols,
                assignment: Bytes::new(),
                join_waiter: Some(tx),
                sync_waiter: None,
                deadline: Instant::now() + session,
                restored: false,
            },
        );
        self.arm_session(group_id, &id, session);
        debug!(group = group_id, member = %id, "member added");
        if group.state == GroupState::PreparingRebalance {
            if group.initial_delay {
                group.new_member_added = true;
            }
            self.maybe_complete_join(group, group_id);
        } else {
            self.prepare_rebalance(group, group_id, "a new member joined");
        }
    }

    fn update_member(
        &self,
        group: &mut Group,
        id: &str,
        p: JoinParams,
        tx: oneshot::Sender<JoinOutcome>,
    ) {
        if let Some(m) = group.members.get_mut(id) {
            m.restored = false;
            m.protocols = p.protocols;
            m.protocol_type = p.protocol_type;
            m.session_timeout = ms(p.session_timeout_ms);
            if p.rebalance_timeout_ms > 0 {
                m.rebalance_timeout = ms(p.rebalance_timeout_ms);
            }
            m.client_id = p.client_id;
            m.client_host = p.client_host;
            // A second JoinGroup from the same member replaces the first;
            // the first's connection gets a retriable error.
            send(
                m.join_waiter.replace(tx),
                Err(BrokerError::RebalanceInProgress),
            );
        }
    }

    fn prepare_rebalance(&self, group: &mut Group, group_id: &str, reason: &str) {
        if group.state == GroupState::CompletingRebalance {
            for m in group.members.values_mut() {
                m.assignment = Bytes::new();
                send(m.sync_waiter.take(), Err(BrokerError::RebalanceInProgress));
            }
        }
        let initial = group.state == GroupState::Empty;
        group.set_state(GroupState::PreparingRebalance);
        group.initial_delay = initial;
        group.new_member_added = false;
        self.rebalances.inc();
        info!(
            group = group_id,
            generation = group.generation,
            reason,
            "preparing rebalance"
        );
        let max = group.max_rebalance_timeout();
        if initial {
            let delay = self.config.initial_rebalance_delay.min(max);
            self.arm_join(group_id, group.epoch, delay, max.saturating_sub(delay));
        } else {
            self.arm_join(group_id, group.epoch, max, Duration::ZERO);
            self.maybe_complete_join(group, group_id);
        }
    }

    fn maybe_complete_join(&self, group: &mut Group, group_id: &str) {
        if group.state == GroupState::PreparingRebalance
            && !group.initial_delay
            && group.all_joined()
        {
            self.complete_join(group, group_id);
        }
    }

    fn complete_join(&self, group: &mut Group, group_id: &str) {
        let gone: Vec<String> = group
            .members
            .iter()
            .filter(|(_, m)| m.join_waiter.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            info!(group = group_id, member = %id, "removing member that did not rejoin in time");
            self.drop_member(group, &id);
        }
        group.generation = group
            .generation
            .max(group.claimed_generation)
            .wrapping_add(1)
            .max(1);
        group.initial_delay = false;
        if group.members.is_empty() {
            group.protocol = None;
            group.protocol_type = None;
            group.leader = None;
            group.set_state(GroupState::Empty);
            info!(
                group = group_id,
                generation = group.generation,
                "group is empty"
            );
            self.changed(group_id);
            return;
        }
        if group
            .leader
            .as_ref()
            .is_none_or(|l| !group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.protocol_type = group
            .members
            .values()
            .next()
            .map(|m| m.protocol_type.clone());
        group.protocol = group.select_protocol();
        group.set_state(GroupState::CompletingRebalance);
        info!(
            group = group_id,
            generation = group.generation,
            protocol = group.protocol.as_deref().unwrap_or(""),
            members = group.members.len(),
            "join round complete"
        );
        let now = Instant::now();
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let answer = group.joined_for(&id);
            if let Some(m) = group.members.get_mut(&id) {
                m.deadline = now + m.session_timeout;
                send(m.join_waiter.take(), Ok(answer));
            }
        }
        self.arm_sync(group_id, group.epoch, group.max_rebalance_timeout());
    }

    /// Removes a member without starting a rebalance.
    fn drop_member(&self, group: &mut Group, id: &str) {
        if let Some(mut m) = group.members.shift_remove(id) {
            send(m.join_waiter.take(), Err(BrokerError::UnknownMemberId));
            send(m.sync_waiter.take(), Err(BrokerError::UnknownMemberId));
            if let Some(instance) = &m.instance_id
                && group.statics.get(instance).map(String::as_str) == Some(id)
            {
                group.statics.remove(instance);
            }
        }
        if group.leader.as_deref() == Some(id) {
            group.leader = None;
        }
    }

    /// Removes a member (leave or expiry) and lets the group react.
    fn remove_member(&self, group: &mut Group, group_id: &str, id: &str, why: &str) {
        info!(
            group = group_id,
            member = id,
            why,
            "member leaves the group"
        );
        self.drop_member(group, id);
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(group, group_id, why)
            }
            GroupState::PreparingRebalance => self.maybe_complete_join(group, group_id),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    // ------------------------------------------------------------- SyncGroup

    pub fn sync(&self, p: SyncParams) -> oneshot::Receiver<SyncOutcome> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(&p.group_id) else {
            let _ = tx.send(Err(BrokerError::UnknownMemberId));
            return rx;
        };
        if let Err(e) = group.check_member(&p.member_id, p.instance_id.as_deref()) {
            let _ = tx.send(Err(e));
            return rx;
        }
        if let Err(e) = group.check_generation(p.generation) {
            let _ = tx.send(Err(e));
            return rx;
        }
        group.seen(&p.member_id);
        let mismatch = |mine: &Option<String>, theirs: &Option<String>| {
            theirs.is_some() && mine.is_some() && mine != theirs
        };
        if mismatch(&group.protocol_type, &p.protocol_type)
            || mismatch(&group.protocol, &p.protocol_name)
        {
            let _ = tx.send(Err(BrokerError::InconsistentGroupProtocol(
                "protocol type or name differs from the group's".into(),
            )));
            return rx;
        }
        match group.state {
            GroupState::Empty | GroupState::Dead => {
                let _ = tx.send(Err(BrokerError::UnknownMemberId));
            }
            GroupState::PreparingRebalance => {
                let _ = tx.send(Err(BrokerError::RebalanceInProgress));
            }
            GroupState::Stable => {
                let _ = tx.send(Ok(group.synced_for(&p.member_id)));
            }
            GroupState::CompletingRebalance => {
                let now = Instant::now();
                if let Some(m) = group.members.get_mut(&p.member_id) {
                    m.deadline = now + m.session_timeout;
                    send(
                        m.sync_waiter.replace(tx),
                        Err(BrokerError::RebalanceInProgress),
                    );
                }
                if group.leader.as_deref() == Some(p.member_id.as_str()) {
                    let mut assignments: HashMap<String, Bytes> =
                        p.assignments.into_iter().collect();
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    group.set_state(GroupState::Stable);
                    info!(group = %p.group_id, generation = group.generation, "group is stable");
                    self.changed(&p.group_id);
                    let ids: Vec<String> = group.members.keys().cloned().collect();
                    for id in ids {
                        let answer = group.synced_for(&id);
                        if let Some(m) = group.members.get_mut(&id) {
                            send(m.sync_waiter.take(), Ok(answer));
                        }
                    }
                }
            }
        }
        rx
    }

    // ------------------------------------------------------------- Heartbeat

    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        group.check_member(member_id, instance_id)?;
        group.check_generation(generation)?;
        group.seen(member_id);
        let state = group.state;
        if let Some(m) = group.members.get_mut(member_id) {
            m.deadline = Instant::now() + m.session_timeout;
        }
        match state {
            GroupState::Empty | GroupState::Dead => Err(BrokerError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(BrokerError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    // ------------------------------------------------------------ LeaveGroup

    /// Removes the given (member id, instance id) pairs; one result each.
    pub fn leave(
        &self,
        group_id: &str,
        members: &[(String, Option<String>)],
    ) -> Vec<Result<(), BrokerError>> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return members
                .iter()
                .map(|_| Err(BrokerError::UnknownMemberId))
                .collect();
        };
        let mut out = Vec::with_capacity(members.len());
        for (member_id, instance_id) in members {
            let id = match instance_id {
                Some(instance) => match group.statics.get(instance) {
                    Some(owner) if member_id.is_empty() || owner == member_id => owner.clone(),
                    Some(_) => {
                        out.push(Err(BrokerError::FencedInstanceId));
                        continue;
                    }
                    None => {
                        out.push(Err(BrokerError::UnknownMemberId));
                        continue;
                    }
                },
                None => member_id.clone(),
            };
            if group.pending.remove(&id) {
                self.maybe_complete_join(group, group_id);
                out.push(Ok(()));
            } else if group.members.contains_key(&id) {
                self.remove_member(group, group_id, &id, "LeaveGroup");
                out.push(Ok(()));
            } else {
                out.push(Err(BrokerError::UnknownMemberId));
            }
        }
        out
    }

    // --------------------------------------------------------------- offsets

    /// Checks that a member may commit now. A commit with a negative
    /// generation and no member id is a "simple" commit (assign()-based
    /// consumers), allowed while the group has no members; it creates the
    /// group if needed.
    pub fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), BrokerError> {
        validate_group_id(group_id)?;
        let mut groups = self.groups.lock();
        if generation < 0 && member_id.is_empty() {
            let group = groups
                .entry(group_id.to_string())
                .or_insert_with(|| Group::new(crate::broker::now_ms()));
            return match group.state {
                GroupState::Empty => Ok(()),
                GroupState::Dead => Err(BrokerError::CoordinatorNotAvailable(
                    "the group is being deleted".into(),
                )),
                _ => Err(BrokerError::UnknownMemberId),
            };
        }
        let group = groups
            .get_mut(group_id)
            .ok_or(BrokerError::UnknownMemberId)?;
        if group.state == GroupState::Dead {
            return Err(BrokerError::CoordinatorNotAvailable(
                "the group is being deleted".into(),
            ));
        }
        group.check_member(member_id, instance_id)?;
        if generation != group.generation {
            return Err(BrokerError::IllegalGeneration {
                got: generation,
                current: group.generation,
            });
        }
        match group.state {
            GroupState::CompletingRebalance => Err(BrokerError::RebalanceInProgress),
            _ => {
                if let Some(m) = group.members.get_mut(member_id) {
                    m.deadline = Instant::now() + m.session_timeout;
                }
                Ok(())
            }
        }
    }

    /// Records offsets that are durable in the log (or replayed from it).
    pub fn apply_offsets(
        &self,
        group_id: &str,
        offsets: impl IntoIterator<Item = ((String, i32), Option<CommittedOffset>)>,
    ) {
        let mut groups = self.groups.lock();
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(crate::broker::now_ms()));
        for (tp, o) in offsets {
            match o {
                Some(o) => {
                    group.offsets.insert(tp, o);
                }
                None => {
                    group.offsets.remove(&tp);
                }
            }
        }
        if group.state == GroupState::Empty && group.offsets.is_empty() && group.members.is_empty()
        {
            groups.remove(group_id);
        }
    }

    /// Restores what a group metadata record says (replay when this broker
    /// comes to coordinate the group, or starts alone): the generation, and
    /// a Stable group's members with their assignments, so members that
    /// keep heartbeating carry on without a rebalance. Each restored member
    /// has a full session timeout from now to show up. `None` is a
    /// tombstone: the group is gone.
    pub fn restore_group(&self, group_id: &str, value: Option<GroupValue>) {
        let mut groups = self.groups.lock();
        let Some(v) = value else {
            groups.remove(group_id);
            return;
        };
        let group = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(crate::broker::now_ms()));
        for (_, mut m) in group.members.drain(..) {
            send(m.join_waiter.take(), Err(BrokerError::NotCoordinator));
            send(m.sync_waiter.take(), Err(BrokerError::NotCoordinator));
        }
        group.pending.clear();
        group.statics.clear();
        group.generation = v.generation;
        group.protocol_type = (!v.protocol_type.is_empty()).then_some(v.protocol_type);
        let protocol = v.protocol.filter(|_| !v.members.is_empty());
        group.leader = v.leader.filter(|_| protocol.is_some());
        let now = Instant::now();
        let mut restoring = self.restoring.lock();
        let restored = restoring.entry(group_id.to_string()).or_default();
        restored.clear();
        if let Some(protocol) = &protocol {
            for m in v.members {
                let session = ms(m.session_timeout_ms);
                if let Some(instance) = &m.instance_id {
                    group.statics.insert(instance.clone(), m.member_id.clone());
                }
                restored.insert(m.member_id.clone());
                group.members.insert(
                    m.member_id,
                    Member {
                        instance_id: m.instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        session_timeout: session,
                        // Records before value version 1 have none (-1).
                        rebalance_timeout: rebalance_timeout(m.rebalance_timeout_ms, session),
                        protocol_type: group.protocol_type.clone().unwrap_or_default(),
                        protocols: vec![(protocol.clone(), m.subscription)],
                        assignment: m.assignment,
                        join_waiter: None,
                        sync_waiter: None,
                        deadline: now + session,
                        restored: true,
                    },
                );
            }
        }
        group.protocol = protocol;
        group.set_state(if group.members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        });
        if v.state_timestamp > 0 {
            // Offset retention of an Empty group counts from here.
            group.state_since_ms = v.state_timestamp;
        }
    }

    /// Ends a replay: restored members' session timers start (once each,
    /// however many records named them), and Empty groups left with no
    /// offsets are dropped, as Kafka's cleanup drops them.
    pub fn finish_restore(&self) {
        let restored = std::mem::take(&mut *self.restoring.lock());
        let mut groups = self.groups.lock();
        let now = Instant::now();
        for (group_id, members) in restored {
            let Some(g) = groups.get_mut(&group_id) else {
                continue;
            };
            if g.state == GroupState::Empty
                && g.members.is_empty()
                && g.pending.is_empty()
                && g.offsets.is_empty()
            {
                groups.remove(&group_id);
                continue;
            }
            for id in members {
                if let Some(m) = g.members.get_mut(&id).filter(|m| m.restored) {
                    m.deadline = now + m.session_timeout;
                    self.arm_session(&group_id, &id, m.session_timeout);
                }
            }
        }
    }

    /// The metadata record of a group that is Stable or Empty (the states
    /// worth storing; a group in a rebalance stores the outcome).
    pub fn group_record(&self, group_id: &str) -> Option<GroupValue> {
        let groups = self.groups.lock();
        let group = groups.get(group_id)?;
        if !matches!(group.state, GroupState::Stable | GroupState::Empty) {
            return None;
        }
        let protocol = group.protocol.clone().unwrap_or_default();
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        Some(GroupValue {
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            generation: group.generation,
            protocol: group.protocol.clone(),
            leader: group.leader.clone(),
            state_timestamp: group.state_since_ms,
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberValue {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: ms(m.rebalance_timeout),
                    session_timeout_ms: ms(m.session_timeout),
                    subscription: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// The ids of groups whose record is worth storing again, as they
    /// change (see [`Self::group_record`]). There is one receiver: the
    /// first call takes it.
    pub fn take_changes(&self) -> Option<mpsc::UnboundedReceiver<String>> {
        self.changes_rx.lock().take()
    }

    fn changed(&self, group_id: &str) {
        // Nobody stores them when the receiver is gone (tests, shutdown).
        let _ = self.changes.send(group_id.to_string());
    }

    /// Drops the groups `which` selects (their coordination moved to
    /// another broker). Pending joins and syncs end; timers find nothing.
    pub fn forget_groups(&self, which: impl Fn(&str) -> bool) {
        self.groups.lock().retain(|id, _| !which(id));
    }

    /// Committed offsets of a group; `None` lists all of them.
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        wanted: Option<&[(String, Vec<i32>)]>,
    ) -> FetchedOffsets {
        let groups = self.groups.lock();
        let group = groups.get(group_id);
        match wanted {
            Some(list) => list
                .iter()
                .map(|(t, parts)| {
                    let got = parts
                        .iter()
                        .map(|p| {
                            (
                                *p,
                                group.and_then(|g| g.offsets.get(&(t.clone(), *p)).cloned()),
                            )
                        })
                        .collect();
                    (t.clone(), got)
                })
                .collect(),
            None => {
                let mut out: FetchedOffsets = Vec::new();
                for ((t, p), o) in group.map(|g| g.offsets.iter()).into_iter().flatten() {
                    match out.last_mut() {
                        Some((last, v)) if last == t => v.push((*p, Some(o.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(o.clone()))])),
                    }
                }
                out
            }
        }
    }

    /// Every (group, topic, partition, offset), for lag metrics.
    pub fn all_offsets(&self) -> Vec<(String, String, i32, i64)> {
        let groups = self.groups.lock();
        groups
            .iter()
            .flat_map(|(g, group)| {
                group
                    .offsets
                    .iter()
                    .map(move |((t, p), o)| (g.clone(), t.clone(), *p, o.offset))
            })
            .collect()
    }

    /// For OffsetDelete: the group's state and the topics its members
    /// subscribe to. Errors if the group does not exist.
    pub fn subscriptions(
        &self,
        group_id: &str,
    ) -> Result<(GroupState, HashSet<String>), BrokerError> {
        let groups = self.groups.lock();
        let group = groups
            .get(group_id)
            .ok_or_else(|| BrokerError::GroupIdNotFound(group_id.to_string()))?;
        let mut topics = HashSet::new();
        if group.protocol_type.as_deref() == Some("consumer") {
            let protocol = group.protocol.clone().unwrap_or_default();
            for m in group.members.values() {
                topics.extend(super::log_format::subscribed_topics(
                    &m.metadata_for(&protocol),
                ));
            }
        }
        Ok((group.state, topics))
    }

    // ------------------------------------------------------------ admin APIs

    pub fn list(&self) -> Vec<GroupSummary> {
        let groups = self.groups.lock();
        let mut out: Vec<GroupSummary> = groups
            .iter()
            .map(|(id, g)| GroupSummary {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
                members: g.members.len(),
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    pub fn describe(&self, group_id: &str) -> Option<GroupDescription> {
        let groups = self.groups.lock();
        let g = groups.get(group_id)?;
        let protocol = g.protocol.clone().unwrap_or_default();
        Some(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if g.state == GroupState::Stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// Marks an Empty group Dead and returns its offsets' keys so the caller
    /// can write tombstones, then [`Self::forget`] it.
    pub fn begin_delete(&self, group_id: &str) -> Result<Vec<(String, i32)>, BrokerError> {
        validate_group_id(group_id)?;
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or_else(|| BrokerError::GroupIdNotFound(group_id.to_string()))?;
        match group.state {
            GroupState::Empty => {
                group.set_state(GroupState::Dead);
                Ok(group.offsets.keys().cloned().collect())
            }
            GroupState::Dead => Err(BrokerError::GroupIdNotFound(group_id.to_string())),
            _ => Err(BrokerError::NonEmptyGroup(group_id.to_string())),
        }
    }

    /// Ends a delete: `done` drops the group, otherwise it is Empty again.
    pub fn finish_delete(&self, group_id: &str, done: bool) {
        let mut groups = self.groups.lock();
        if done {
            groups.remove(group_id);
        } else if let Some(g) = groups.get_mut(group_id) {
            g.set_state(GroupState::Empty);
        }
    }

    /// Offsets to expire: of groups Empty since before `cutoff_ms` (all their
    /// offsets), and of groups without a protocol (simple commits) the ones
    /// committed before `cutoff_ms`.
    pub fn expired_offsets(&self, cutoff_ms: i64) -> Vec<(String, Vec<(String, i32)>)> {
        let groups = self.groups.lock();
        let mut out = Vec::new();
        for (id, g) in groups.iter() {
            if g.state != GroupState::Empty {
                continue;
            }
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, o)| match g.protocol_type {
                    Some(_) => g.state_since_ms < cutoff_ms,
                    None => o.commit_timestamp < cutoff_ms,
                })
                .map(|(k, _)| k.clone())
                .collect();
            if !expired.is_empty() {
                out.push((id.clone(), expired));
            }
        }
        out
    }

    // ----------------------------------------------------------------- timers

    fn arm_session(&self, group_id: &str, member_id: &str, first: Duration) {
        let me = self.me.clone();
        let (g, m) = (group_id.to_string(), member_id.to_string());
        let mut wake = Instant::now() + first;
        spawn(async move {
            loop {
                tokio::time::sleep_until(wake).await;
                let Some(c) = me.upgrade() else { return };
                let mut groups = c.groups.lock();
                let Some(group) = groups.get_mut(&g) else {
                    return;
                };
                let Some(member) = group.members.get_mut(&m) else {
                    return;
                };
                let now = Instant::now();
                if member.join_waiter.is_some() || member.sync_waiter.is_some() {
                    // A parked request is a sign of life.
                    member.deadline = now + member.session_timeout;
                }
                if now < member.deadline {
                    wake = member.deadline;
                    continue;
                }
                c.remove_member(group, &g, &m, "session timeout expired");
                return;
            }
        });
    }

    fn arm_pending_expiry(&self, group_id: &str, member_id: &str, after: Duration) {
        let me = self.me.clone();
        let (g, m) = (group_id.to_string(), member_id.to_string());
        spawn(async move {
            tokio::time::sleep(after).await;
            let Some(c) = me.upgrade() else { return };
            let mut groups = c.groups.lock();
            let Some(group) = groups.get_mut(&g) else {
                return;
            };
            if group.pending.remove(&m) {
                debug!(group = %g, member = %m, "pending member never rejoined");
                c.maybe_complete_join(group, &g);
                if group.state == GroupState::Empty
                    && group.members.is_empty()
                    && group.offsets.is_empty()
                    && group.pending.is_empty()
                {
                    groups.remove(&g);
                }
            }
        });
    }

    fn arm_join(&self, group_id: &str, epoch: u64, delay: Duration, remaining: Duration) {
        let me = self.me.clone();
        let g = group_id.to_string();
        spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(c) = me.upgrade() else { return };
            let mut groups = c.groups.lock();
            let Some(group) = groups.get_mut(&g) else {
                return;
            };
            if group.epoch != epoch || group.state != GroupState::PreparingRebalance {
                return;
            }
            if group.initial_delay && group.new_member_added && !remaining.is_zero() {
                group.new_member_added = false;
                let next = c.config.initial_rebalance_delay.min(remaining);
                c.arm_join(&g, epoch, next, remaining.saturating_sub(next));
                return;
            }
            c.complete_join(group, &g);
        });
    }

    fn arm_sync(&self, group_id: &str, epoch: u64, after: Duration) {
        let me = self.me.clone();
        let g = group_id.to_string();
        spawn(async move {
            tokio::time::sleep(after).await;
            let Some(c) = me.upgrade() else { return };
            let mut groups = c.groups.lock();
            let Some(group) = groups.get_mut(&g) else {
                return;
            };
            if group.epoch != epoch || group.state != GroupState::CompletingRebalance {
                return;
            }
            let late: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.sync_waiter.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in &late {
                info!(group = %g, member = %id, "removing member that did not sync in time");
                c.drop_member(group, id);
            }
            c.prepare_rebalance(
                group,
                &g,
                "members did not sync within the rebalance timeout",
            );
        });
    }

    #[cfg(test)]
    fn state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.lock().get(group_id).map(|g| g.state)
    }
}

/// Spawns on the current runtime; outside one (nothing to time) it does nothing.
fn spawn(f: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(f);
    }
}

#[cfg(test)]
mod tests;
