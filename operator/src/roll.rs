//! Which broker a roll restarts next.
//!
//! The StatefulSet's `updateStrategy` is `OnDelete`, so a new pod template
//! changes nothing by itself; the controller calls [`next_step`] and, for a
//! [`RollStep::Restart`], deletes the broker's pod. (Its partition
//! leaderships are not handed over first: the broker has no leadership
//! transfer yet, so its partitions elect new leaders after it stops.) The
//! rules:
//!
//! 1. nothing happens while any broker is not ready, while any partition is
//!    under-replicated, or while the cluster's health is unknown (a roll is
//!    never forced: an unreachable cluster waits);
//! 2. a broker whose restart would take some partition below
//!    `min.insync.replicas` is skipped;
//! 3. the lowest out-of-date broker id goes first, and the broker holding
//!    the metadata Raft leadership goes last (one leader election instead
//!    of one per restart).

use std::collections::BTreeSet;

/// One broker pod as the controller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerPod {
    pub id: i32,
    pub ready: bool,
    /// Runs the StatefulSet's current template (its `controller-revision-hash`
    /// label is the StatefulSet's `updateRevision`).
    pub up_to_date: bool,
}

/// What the brokers report about the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterHealth {
    pub under_replicated_partitions: u64,
    /// The broker leading the metadata Raft group.
    pub metadata_leader: Option<i32>,
    /// Brokers whose restart would leave some partition with fewer in-sync
    /// replicas than its `min.insync.replicas`.
    pub below_min_isr_if_restarted: BTreeSet<i32>,
}

/// What the roll does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Every broker runs the current template.
    Done,
    /// Delete this broker's pod.
    Restart { broker: i32 },
    /// Wait and look again; the reason goes into the `Progressing` condition.
    Wait(WaitReason),
}

/// Why a roll waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitReason {
    BrokerNotReady(i32),
    UnderReplicatedPartitions(u64),
    HealthUnknown,
    /// Every out-of-date broker would take a partition below
    /// `min.insync.replicas`.
    MinInSyncReplicas,
}

/// The next step of a roll over `pods`, given the cluster's `health`
/// (`None` when the brokers could not be asked).
pub fn next_step(pods: &[BrokerPod], health: Option<&ClusterHealth>) -> RollStep {
    let mut outdated: Vec<i32> = pods
        .iter()
        .filter(|p| !p.up_to_date)
        .map(|p| p.id)
        .collect();
    if outdated.is_empty() {
        return RollStep::Done;
    }
    if let Some(p) = pods.iter().filter(|p| !p.ready).min_by_key(|p| p.id) {
        return RollStep::Wait(WaitReason::BrokerNotReady(p.id));
    }
    let Some(health) = health else {
        return RollStep::Wait(WaitReason::HealthUnknown);
    };
    if health.under_replicated_partitions > 0 {
        return RollStep::Wait(WaitReason::UnderReplicatedPartitions(
            health.under_replicated_partitions,
        ));
    }
    // Lowest id first; the metadata leader sorts after every other broker.
    outdated.sort_by_key(|id| (Some(*id) == health.metadata_leader, *id));
    outdated
        .into_iter()
        .find(|id| !health.below_min_isr_if_restarted.contains(id))
        .map_or(RollStep::Wait(WaitReason::MinInSyncReplicas), |broker| {
            RollStep::Restart { broker }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(spec: &[(i32, bool, bool)]) -> Vec<BrokerPod> {
        spec.iter()
            .map(|&(id, ready, up_to_date)| BrokerPod {
                id,
                ready,
                up_to_date,
            })
            .collect()
    }

    fn healthy(leader: i32) -> ClusterHealth {
        ClusterHealth {
            metadata_leader: Some(leader),
            ..ClusterHealth::default()
        }
    }

    #[test]
    fn a_roll_with_every_broker_up_to_date_is_done() {
        let p = pods(&[(0, true, true), (1, true, true)]);
        assert_eq!(next_step(&p, None), RollStep::Done);
    }

    #[test]
    fn the_lowest_outdated_broker_goes_first_and_the_metadata_leader_last() {
        let p = pods(&[(0, true, false), (1, true, false), (2, true, false)]);
        assert_eq!(
            next_step(&p, Some(&healthy(0))),
            RollStep::Restart { broker: 1 }
        );
        let p = pods(&[(0, true, false), (1, true, true), (2, true, true)]);
        assert_eq!(
            next_step(&p, Some(&healthy(0))),
            RollStep::Restart { broker: 0 }
        );
    }

    #[test]
    fn a_roll_waits_for_a_not_ready_broker_even_an_up_to_date_one() {
        let p = pods(&[(0, true, true), (1, false, true), (2, true, false)]);
        assert_eq!(
            next_step(&p, Some(&healthy(0))),
            RollStep::Wait(WaitReason::BrokerNotReady(1))
        );
    }

    #[test]
    fn a_roll_waits_for_under_replicated_partitions_and_unknown_health() {
        let p = pods(&[(0, true, false), (1, true, true)]);
        let h = ClusterHealth {
            under_replicated_partitions: 3,
            ..healthy(1)
        };
        assert_eq!(
            next_step(&p, Some(&h)),
            RollStep::Wait(WaitReason::UnderReplicatedPartitions(3))
        );
        assert_eq!(
            next_step(&p, None),
            RollStep::Wait(WaitReason::HealthUnknown)
        );
    }

    #[test]
    fn a_broker_whose_restart_breaks_min_insync_is_skipped_and_if_all_are_the_roll_waits() {
        let p = pods(&[(0, true, false), (1, true, false), (2, true, true)]);
        let mut h = healthy(2);
        h.below_min_isr_if_restarted.insert(0);
        assert_eq!(next_step(&p, Some(&h)), RollStep::Restart { broker: 1 });
        h.below_min_isr_if_restarted.insert(1);
        assert_eq!(
            next_step(&p, Some(&h)),
            RollStep::Wait(WaitReason::MinInSyncReplicas)
        );
    }
}
