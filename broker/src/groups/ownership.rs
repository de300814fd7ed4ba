//! Which groups this broker coordinates.
//!
//! Alone, a broker coordinates every group: its `__consumer_offsets` is a
//! local topic, replayed at start. In a cluster the topic is replicated
//! like any other (created at the first FindCoordinator, see
//! [`Groups::create_topic`]) and, as in Kafka, a group's coordinator is the
//! leader of the group's partition of it. A broker that comes to lead a
//! partition loads that partition's groups from its committed log before it
//! answers for them (COORDINATOR_LOAD_IN_PROGRESS meanwhile); one that
//! stops leading it forgets them (NOT_COORDINATOR), and clients look the
//! coordinator up again.
//!
//! Loading waits until the new leader has applied an entry of its own term:
//! every entry of earlier terms is then committed and applied, so the load
//! sees every commit any earlier coordinator acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, info, warn};

use super::{Groups, OFFSETS_TOPIC, ReplayReport, log_format, topic_overrides};
use crate::cluster::topic_table::{Topic, TopicTable};
use crate::config::BrokerConfig;
use crate::errors::{BrokerError, Result};

pub(super) struct Ownership {
    node_id: i32,
    /// A single broker: every group is here, loaded at start.
    alone: bool,
    /// Offsets partitions whose groups are loaded, with the term (leader
    /// epoch) they were loaded in.
    loaded: Mutex<HashMap<i32, u64>>,
    /// A creation of the offsets topic is under way.
    creating: AtomicBool,
    /// Offsets partitions whose load failed: not tried again before the
    /// backoff has passed (in the same term).
    failed: Mutex<HashMap<i32, Backoff>>,
}

/// When a failed load of one offsets partition may be tried again.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    term: u64,
    wait: Duration,
    not_before: Instant,
}

/// The first and the longest wait after a failed load: a broken log is
/// retried (and warned about) at most this often, not at every tick.
const LOAD_RETRY_FIRST: Duration = Duration::from_secs(1);
const LOAD_RETRY_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    /// The backoff after one more failure in `term` (a new term starts over).
    fn after_failure(prev: Option<Backoff>, term: u64, now: Instant) -> Backoff {
        let wait = match prev {
            Some(b) if b.term == term => (b.wait * 2).min(LOAD_RETRY_MAX),
            _ => LOAD_RETRY_FIRST,
        };
        Backoff {
            term,
            wait,
            not_before: now + wait,
        }
    }

    fn allows(&self, term: u64, now: Instant) -> bool {
        self.term != term || now >= self.not_before
    }
}

/// This broker's part in one offsets partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It leads the partition in `term`; `ready` once it has applied an
    /// entry of that term.
    Leads {
        term: u64,
        ready: bool,
    },
    Follows,
}

fn role(node_id: i32, topic: &Topic, index: i32) -> Role {
    let Some(p) = topic.partition(index) else {
        return Role::Follows;
    };
    if let Some(r) = p.replicated() {
        return match r.group() {
            Some(g) if g.is_leader() => Role::Leads {
                term: g.term(),
                ready: g.is_ready(),
            },
            _ => Role::Follows,
        };
    }
    if p.is_absent() {
        return Role::Follows;
    }
    // A single-replica partition (a single broker, or replication factor
    // 1 in a cluster): its assigned replica leads, with nothing to wait for.
    let assigned = usize::try_from(index)
        .ok()
        .and_then(|i| topic.assignments.get(i))
        .and_then(|r| r.first().copied());
    if assigned.is_none_or(|a| a == node_id) {
        Role::Leads {
            term: 0,
            ready: true,
        }
    } else {
        Role::Follows
    }
}

impl Ownership {
    pub(super) fn new(node_id: i32, alone: bool) -> Self {
        Self {
            node_id,
            alone,
            loaded: Mutex::new(HashMap::new()),
            creating: AtomicBool::new(false),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The offsets topic and the partition of it holding `group`.
    ///
    /// # Errors
    /// COORDINATOR_NOT_AVAILABLE while the topic does not exist here.
    pub(super) fn partition_of(
        &self,
        topics: &TopicTable,
        group: &str,
    ) -> Result<(Arc<Topic>, i32)> {
        let topic = topics.get(OFFSETS_TOPIC).ok_or_else(|| {
            BrokerError::CoordinatorNotAvailable(format!("{OFFSETS_TOPIC} does not exist yet"))
        })?;
        let index = log_format::partition_for(group, topic.partitions.len() as i32);
        Ok((topic, index))
    }
}

impl Groups {
    /// Whether this broker answers for `group` now.
    ///
    /// # Errors
    /// NOT_COORDINATOR when another broker leads the group's offsets
    /// partition; COORDINATOR_LOAD_IN_PROGRESS while this one loads it;
    /// COORDINATOR_NOT_AVAILABLE before the offsets topic exists.
    pub fn check_coordinator(&self, topics: &TopicTable, group: &str) -> Result<()> {
        let o = &self.ownership;
        if o.alone {
            return Ok(());
        }
        let (topic, index) = o.partition_of(topics, group)?;
        match role(o.node_id, &topic, index) {
            Role::Leads { term, .. } if o.loaded.lock().get(&index) == Some(&term) => Ok(()),
            Role::Leads { .. } => Err(BrokerError::CoordinatorLoadInProgress),
            Role::Follows => Err(BrokerError::NotCoordinator),
        }
    }

    /// Loads the groups of the offsets partitions this broker has come to
    /// lead, and forgets those of the partitions it no longer leads. Called
    /// periodically; each load happens once its leader is ready.
    pub fn follow_leadership(&self, topics: &TopicTable) {
        let o = &self.ownership;
        if o.alone {
            return;
        }
        let Some(topic) = topics.get(OFFSETS_TOPIC) else {
            let gone: Vec<i32> = o.loaded.lock().drain().map(|(i, _)| i).collect();
            for index in gone {
                self.forget(index, None);
            }
            return;
        };
        let count = topic.partitions.len() as i32;
        for index in 0..count {
            let had = o.loaded.lock().get(&index).copied();
            match role(o.node_id, &topic, index) {
                Role::Leads { term, ready: true } if had != Some(term) => {
                    let now = Instant::now();
                    let due = o
                        .failed
                        .lock()
                        .get(&index)
                        .is_none_or(|b| b.allows(term, now));
                    if due {
                        self.load(&topic, index, term);
                    }
                }
                Role::Follows if had.is_some() => {
                    o.loaded.lock().remove(&index);
                    self.forget(index, Some(count));
                    info!(
                        partition = index,
                        "no longer coordinating the groups of {OFFSETS_TOPIC}-{index}"
                    );
                }
                _ => {}
            }
        }
    }

    /// Replaces the groups of one offsets partition with what its committed
    /// log says.
    fn load(&self, topic: &Topic, index: i32, term: u64) {
        let Some(p) = topic.partition(index) else {
            return;
        };
        let started = Instant::now();
        self.forget(index, Some(topic.partitions.len() as i32));
        let mut report = ReplayReport::default();
        match self.replay(p, &mut report) {
            Ok(()) => {
                self.ownership.failed.lock().remove(&index);
                self.ownership.loaded.lock().insert(index, term);
                let elapsed_ms = started.elapsed().as_millis() as u64;
                // A new topic's fifty empty partitions are not news.
                if report.records > 0 || report.skipped > 0 {
                    info!(
                        partition = index,
                        term,
                        records = report.records,
                        skipped = report.skipped,
                        elapsed_ms,
                        "loaded the groups of {OFFSETS_TOPIC}-{index}; coordinating them"
                    );
                } else {
                    debug!(
                        partition = index,
                        term, "coordinating the groups of {OFFSETS_TOPIC}-{index} (empty)"
                    );
                }
            }
            // Tried again after a backoff; the groups stay unavailable
            // (COORDINATOR_LOAD_IN_PROGRESS) meanwhile.
            Err(e) => {
                let mut failed = self.ownership.failed.lock();
                let b = Backoff::after_failure(failed.get(&index).copied(), term, Instant::now());
                failed.insert(index, b);
                warn!(
                    partition = index,
                    error = %e,
                    retry_in_ms = b.wait.as_millis() as u64,
                    "could not load {OFFSETS_TOPIC}-{index}"
                );
            }
        }
    }

    /// Drops the groups of partition `index` (of `count`; all loaded groups
    /// when the topic is gone) from memory. Their members' pending joins
    /// and syncs end, and their next request finds the new coordinator.
    fn forget(&self, index: i32, count: Option<i32>) {
        self.coordinator.forget_groups(|group| {
            count.is_none_or(|n| log_format::partition_for(group, n) == index)
        });
    }

    /// Starts creating the replicated offsets topic, unless a creation is
    /// already under way; false then.
    pub fn begin_creating_topic(&self) -> bool {
        !self.ownership.creating.swap(true, Ordering::SeqCst)
    }

    /// Creates the replicated offsets topic (blocking on the metadata
    /// group), with `offsets.topic.replication.factor` replicas capped at
    /// the metadata voters; ends what [`Self::begin_creating_topic`] began.
    ///
    /// # Errors
    /// COORDINATOR_NOT_AVAILABLE while fewer brokers than that have
    /// registered, or the metadata write fails.
    pub fn create_topic(&self, topics: &TopicTable, config: &BrokerConfig) -> Result<()> {
        let created = (|| {
            let voters = config
                .controller_quorum_voters
                .as_deref()
                .and_then(|v| crate::cluster::metadata_group::parse_voters(v).ok())
                .map_or(1, |v| v.len().max(1));
            let rf = usize::try_from(config.offsets_topic_replication_factor)
                .unwrap_or(1)
                .min(voters);
            let registered = topics
                .store()
                .group()
                .map_or(1, |g| g.state().unfenced_brokers().count());
            if registered < rf {
                return Err(BrokerError::CoordinatorNotAvailable(format!(
                    "{OFFSETS_TOPIC} needs {rf} brokers; {registered} have registered"
                )));
            }
            let overrides: BTreeMap<String, String> = topic_overrides(config);
            match topics.create(
                OFFSETS_TOPIC,
                config.offsets_topic_num_partitions,
                i16::try_from(rf).unwrap_or(1),
                overrides,
                false,
            ) {
                Ok(_) => {
                    info!(
                        partitions = config.offsets_topic_num_partitions,
                        replication_factor = rf,
                        "created {OFFSETS_TOPIC}"
                    );
                    Ok(())
                }
                Err(BrokerError::TopicAlreadyExists(_)) => Ok(()),
                Err(e) => Err(BrokerError::CoordinatorNotAvailable(format!(
                    "creating {OFFSETS_TOPIC}: {e}"
                ))),
            }
        })();
        self.ownership.creating.store(false, Ordering::SeqCst);
        created
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_load_backs_off_doubling_and_a_new_term_starts_over() {
        let t0 = Instant::now();
        let b = Backoff::after_failure(None, 3, t0);
        assert_eq!(b.wait, LOAD_RETRY_FIRST);
        assert!(!b.allows(3, t0));
        assert!(b.allows(3, t0 + LOAD_RETRY_FIRST));
        // A new leadership term tries at once.
        assert!(b.allows(4, t0));
        let mut b = b;
        for _ in 0..10 {
            b = Backoff::after_failure(Some(b), 3, t0);
        }
        assert_eq!(b.wait, LOAD_RETRY_MAX);
        assert_eq!(
            Backoff::after_failure(Some(b), 4, t0).wait,
            LOAD_RETRY_FIRST
        );
    }
}
