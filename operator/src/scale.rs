//! What a change of `KafkaCluster.spec.replicas` (by a person, or by an
//! HPA through `/scale`) does next: one pure decision per reconcile, from
//! what is observed now and the phase the status recorded, so an operator
//! restarted in any phase picks up where it was.
//!
//! Up: grow the StatefulSet, wait until every broker is ready and
//! registered, then rebalance onto the new ones. Down: drain the brokers
//! above the new size (their replicas moved in bounded batches), confirm
//! from the committed metadata that they hold none, and only then shrink the
//! StatefulSet and unregister them. Never below the largest replication
//! factor in use; never two operations at once (moves under way are waited
//! for first); nothing is guessed while the brokers cannot be asked.
//!
//! The moves of a scale are throttled ([`throttle_step`], [`ensure_throttle`]):
//! before a batch starts, the cluster-wide dynamic broker config
//! `leader.replication.throttled.rate` is made the spec's rate, and once the
//! scale no longer moves data it is deleted. The status records that the
//! operator set it (before setting it), and only a value so recorded is
//! ever changed or deleted: one found set without the record is a
//! person's.

use std::collections::{BTreeMap, BTreeSet};

/// The phase a scale is in, as the status records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Idle,
    /// New brokers are starting.
    Growing,
    /// Replicas are moving onto the brokers.
    Rebalancing,
    /// Replicas are moving off the brokers being removed.
    Draining,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "Idle",
            Self::Growing => "Growing",
            Self::Rebalancing => "Rebalancing",
            Self::Draining => "Draining",
        }
    }

    pub fn parse(s: &str) -> Self {
        match s {
            "Growing" => Self::Growing,
            "Rebalancing" => Self::Rebalancing,
            "Draining" => Self::Draining,
            _ => Self::Idle,
        }
    }
}

/// What the brokers say (committed cluster metadata).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterView {
    /// Registered brokers, fenced ones included.
    pub registered: BTreeSet<i32>,
    /// Registered brokers the cluster has fenced (stopping, or silent for
    /// its session timeout): still to unregister when they leave, but not
    /// yet back when they stay.
    pub fenced: BTreeSet<i32>,
    /// Replicas each broker holds.
    pub holding: BTreeMap<i32, usize>,
    /// Replicas of single-replica partitions each broker holds: they
    /// cannot move, so such a broker cannot be drained.
    pub pinned: BTreeMap<i32, usize>,
    /// Partition reassignments under way.
    pub moving: usize,
    /// The largest replication factor of any topic.
    pub max_replication_factor: usize,
    /// Moves the balancer plans over the brokers that stay (0: balanced).
    pub planned_moves: usize,
}

/// Everything one decision reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// `spec.replicas`.
    pub desired: i32,
    /// The StatefulSet's replicas now.
    pub running: i32,
    /// Brokers whose pod is ready.
    pub ready: BTreeSet<i32>,
    /// The phase the status recorded.
    pub phase: Phase,
    /// The metadata Raft voters (the lowest ordinals): never removed.
    pub voters: i32,
    /// `None`: the brokers cannot be asked.
    pub cluster: Option<ClusterView>,
}

/// What the controller does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do; the phase goes back to Idle.
    Steady,
    /// Set the StatefulSet's replicas to `to` (new brokers start).
    Grow { to: i32 },
    /// Wait until these brokers are ready and registered; the scale keeps
    /// its phase meanwhile.
    WaitForBrokers { brokers: Vec<i32>, phase: Phase },
    /// Plan over the brokers that stay and start the moves (a batch).
    Rebalance,
    /// Plan these brokers empty and start the moves (a batch).
    Drain { brokers: Vec<i32> },
    /// Reassignments are under way: wait for them.
    WaitForMoves { moving: usize, phase: Phase },
    /// The brokers above `to` hold nothing: shrink the StatefulSet, then
    /// unregister them.
    Shrink { to: i32, unregister: Vec<i32> },
    /// The size asked for cannot be: the StatefulSet keeps its size.
    Refuse {
        reason: &'static str,
        message: String,
    },
    /// The brokers cannot be asked: wait, never guess.
    Unknown,
}

impl Step {
    /// The phase the status records while this step runs.
    pub fn phase(&self, before: Phase) -> Phase {
        match self {
            Self::Steady | Self::Refuse { .. } => Phase::Idle,
            Self::Grow { .. } => Phase::Growing,
            Self::Rebalance => Phase::Rebalancing,
            Self::Drain { .. } | Self::Shrink { .. } => Phase::Draining,
            Self::WaitForMoves { phase, .. } | Self::WaitForBrokers { phase, .. } => *phase,
            Self::Unknown => before,
        }
    }
}

/// The next step.
pub fn decide(f: &Facts) -> Step {
    if f.desired > f.running {
        // Growing needs nothing from the brokers; the refusal below does,
        // but a larger cluster never breaks a replication factor.
        return Step::Grow { to: f.desired };
    }
    if f.desired < f.running && f.desired < f.voters {
        return Step::Refuse {
            reason: "ScaleDownBelowMetadataVoters",
            message: format!(
                "spec.replicas {} would remove metadata voters (brokers 0..{}); the cluster keeps {} brokers",
                f.desired, f.voters, f.running
            ),
        };
    }
    let Some(c) = &f.cluster else {
        return Step::Unknown;
    };
    let desired = usize::try_from(f.desired).unwrap_or(0);
    if f.desired < f.running && desired < c.max_replication_factor.max(1) {
        return Step::Refuse {
            reason: "ScaleDownBelowReplicationFactor",
            message: format!(
                "spec.replicas {} is below the largest replication factor in use ({}); the cluster keeps {} brokers",
                f.desired, c.max_replication_factor, f.running
            ),
        };
    }
    if let Some(b) = (f.desired..f.running).find(|b| c.pinned.get(b).copied().unwrap_or(0) > 0) {
        return Step::Refuse {
            reason: "ScaleDownWouldLoseData",
            message: format!(
                "broker {b} holds partitions with a single replica, which cannot move; the cluster keeps {} brokers",
                f.running
            ),
        };
    }
    if c.moving > 0 {
        let phase = match f.phase {
            Phase::Idle | Phase::Growing => Phase::Rebalancing,
            p => p,
        };
        return Step::WaitForMoves {
            moving: c.moving,
            phase,
        };
    }
    let staying = f.desired.min(f.running);
    let missing: Vec<i32> = (0..staying)
        .filter(|id| !f.ready.contains(id) || !c.registered.contains(id) || c.fenced.contains(id))
        .collect();
    if !missing.is_empty() {
        // A broker that stays may restart during a drain as well as after a
        // grow: that is no reason to call a scale-down Growing.
        let phase = match f.phase {
            Phase::Idle if f.desired < f.running => Phase::Draining,
            Phase::Idle => Phase::Growing,
            p => p,
        };
        return Step::WaitForBrokers {
            brokers: missing,
            phase,
        };
    }
    if f.desired < f.running {
        let leaving: Vec<i32> = (f.desired..f.running).collect();
        let still_holding = leaving
            .iter()
            .any(|id| c.holding.get(id).copied().unwrap_or(0) > 0);
        if still_holding {
            return Step::Drain { brokers: leaving };
        }
        let unregister = leaving
            .into_iter()
            .filter(|id| c.registered.contains(id))
            .collect();
        return Step::Shrink {
            to: f.desired,
            unregister,
        };
    }
    // Brokers removed earlier that are still registered (the operator
    // stopped between the shrink and the unregistering).
    let stale: Vec<i32> = c
        .registered
        .iter()
        .copied()
        .filter(|id| *id >= f.running && c.holding.get(id).copied().unwrap_or(0) == 0)
        .collect();
    if !stale.is_empty() {
        return Step::Shrink {
            to: f.running,
            unregister: stale,
        };
    }
    // Only a scale-up rebalances: a cluster left alone is not reshuffled.
    if matches!(f.phase, Phase::Growing | Phase::Rebalancing) && c.planned_moves > 0 {
        return Step::Rebalance;
    }
    Step::Steady
}

/// What a scale step does about the cluster-wide replication throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttle {
    /// Leave it as it is (nothing asked of the brokers).
    Keep,
    /// Make sure it is `rate` before anything more moves.
    Ensure { rate: u64 },
    /// Delete the value the operator set.
    Remove,
}

/// When to set and clear the throttle. `wanted` is the spec's rate (0: no
/// throttle), `applied` the rate the status records the operator set.
///
/// A step that starts moves needs the throttle first; while the moves run
/// it follows a changed spec; a scale that waits for brokers (or cannot
/// reach them) keeps it for the moves still to come; a scale that is over,
/// refused, or past its last move (the shrink) deletes it. Nothing the
/// operator has not recorded is ever removed, and without a record a
/// waiting step sets nothing: moves under way then are not this scale's
/// throttled ones.
pub fn throttle_step(step: &Step, wanted: u64, applied: Option<u64>) -> Throttle {
    let owned = applied.is_some();
    match step {
        Step::Rebalance | Step::Drain { .. } if wanted > 0 => Throttle::Ensure { rate: wanted },
        Step::WaitForMoves { .. } if owned && wanted > 0 && applied != Some(wanted) => {
            Throttle::Ensure { rate: wanted }
        }
        Step::Steady | Step::Refuse { .. } | Step::Shrink { .. } if owned => Throttle::Remove,
        // Turned off in the spec while a scale runs.
        Step::Rebalance
        | Step::Drain { .. }
        | Step::WaitForMoves { .. }
        | Step::WaitForBrokers { .. }
        | Step::Grow { .. }
            if owned && wanted == 0 =>
        {
            Throttle::Remove
        }
        _ => Throttle::Keep,
    }
}

/// What making sure of the throttle takes, given the cluster-wide value
/// the brokers hold now (`current`) and the rate the status records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnsureThrottle {
    /// It is set at `rate` and the operator's: nothing to send.
    InPlace,
    /// Set it. `record_first`: the operator does not own it yet, so the
    /// status records it before it is set (a restart in between then finds
    /// the record, not an unrecorded value it would take for a person's).
    Set { record_first: bool },
    /// A person set a cluster-wide value: it stays in force, the operator
    /// neither changes nor later deletes it, and the moves go ahead under it.
    HandSet { value: String },
}

/// See [`EnsureThrottle`].
pub fn ensure_throttle(current: Option<&str>, applied: Option<u64>, rate: u64) -> EnsureThrottle {
    match (applied, current) {
        (Some(_), Some(v))
            if v.trim().parse::<u64>().ok() == Some(rate) && applied == Some(rate) =>
        {
            EnsureThrottle::InPlace
        }
        // Owned: made the spec's rate, whatever it holds now (a person
        // changes it through the spec while the operator owns it).
        (Some(_), _) => EnsureThrottle::Set {
            record_first: false,
        },
        (None, None) => EnsureThrottle::Set { record_first: true },
        (None, Some(v)) => EnsureThrottle::HandSet {
            value: v.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(registered: &[i32], holding: &[(i32, usize)]) -> ClusterView {
        ClusterView {
            registered: registered.iter().copied().collect(),
            fenced: BTreeSet::new(),
            holding: holding.iter().copied().collect(),
            pinned: BTreeMap::new(),
            moving: 0,
            max_replication_factor: 3,
            planned_moves: 0,
        }
    }

    fn facts(
        desired: i32,
        running: i32,
        ready: &[i32],
        phase: Phase,
        c: Option<ClusterView>,
    ) -> Facts {
        Facts {
            desired,
            running,
            ready: ready.iter().copied().collect(),
            phase,
            voters: 3,
            cluster: c,
        }
    }

    /// Runs a scale through `decide` the way the controller would, with a
    /// simulated cluster, restarting the "operator" (keeping only the
    /// recorded phase) before every step. Returns the steps taken.
    fn simulate(desired: i32, running: i32, rf: usize) -> (Vec<Step>, i32, BTreeSet<i32>) {
        let mut running = running;
        let mut registered: BTreeSet<i32> = (0..running).collect();
        let mut holding: BTreeMap<i32, usize> = (0..running).map(|b| (b, 4)).collect();
        let mut moving = 0usize;
        let mut phase = Phase::Idle;
        let mut balanced = true;
        let mut steps = Vec::new();
        for _ in 0..50 {
            let c = ClusterView {
                registered: registered.clone(),
                fenced: BTreeSet::new(),
                holding: holding.clone(),
                pinned: BTreeMap::new(),
                moving,
                max_replication_factor: rf,
                planned_moves: usize::from(!balanced),
            };
            let ready: Vec<i32> = (0..running).collect();
            let step = decide(&facts(desired, running, &ready, phase, Some(c)));
            phase = step.phase(phase);
            steps.push(step.clone());
            match step {
                Step::Steady | Step::Refuse { .. } => break,
                Step::Grow { to } => {
                    for b in running..to {
                        registered.insert(b);
                        holding.insert(b, 0);
                    }
                    running = to;
                    balanced = false;
                }
                Step::Rebalance => moving = 3,
                Step::Drain { brokers } => {
                    for b in &brokers {
                        holding.insert(*b, 0);
                    }
                    moving = 2;
                }
                Step::WaitForMoves { .. } => {
                    moving = 0;
                    balanced = true;
                }
                Step::Shrink { to, unregister } => {
                    running = to;
                    for b in unregister {
                        registered.remove(&b);
                        holding.remove(&b);
                    }
                }
                Step::WaitForBrokers { .. } | Step::Unknown => unreachable!("{step:?}"),
            }
        }
        (steps, running, registered)
    }

    #[test]
    fn scaling_up_grows_waits_for_the_brokers_then_rebalances() {
        let (steps, running, registered) = simulate(5, 3, 3);
        assert_eq!(
            steps,
            vec![
                Step::Grow { to: 5 },
                Step::Rebalance,
                Step::WaitForMoves {
                    moving: 3,
                    phase: Phase::Rebalancing
                },
                Step::Steady,
            ]
        );
        assert_eq!(running, 5);
        assert_eq!(registered.len(), 5);
    }

    #[test]
    fn new_brokers_must_be_ready_and_registered_before_anything_moves() {
        let c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4)]);
        let f = facts(5, 5, &[0, 1, 2, 3], Phase::Growing, Some(c.clone()));
        let waiting = Step::WaitForBrokers {
            brokers: vec![4],
            phase: Phase::Growing,
        };
        assert_eq!(decide(&f), waiting);
        let f = facts(5, 5, &[0, 1, 2, 3, 4], Phase::Growing, Some(c));
        assert_eq!(decide(&f), waiting);
    }

    #[test]
    fn a_broker_that_stays_restarting_during_a_drain_keeps_the_phase_draining() {
        let c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4), (3, 4)]);
        for phase in [Phase::Idle, Phase::Draining] {
            let step = decide(&facts(3, 4, &[0, 2, 3], phase, Some(c.clone())));
            assert_eq!(
                step,
                Step::WaitForBrokers {
                    brokers: vec![1],
                    phase: Phase::Draining
                }
            );
            assert_eq!(step.phase(phase), Phase::Draining);
        }
    }

    #[test]
    fn scaling_down_drains_confirms_empty_then_shrinks_and_unregisters() {
        let (steps, running, registered) = simulate(3, 5, 3);
        assert_eq!(
            steps,
            vec![
                Step::Drain {
                    brokers: vec![3, 4]
                },
                Step::WaitForMoves {
                    moving: 2,
                    phase: Phase::Draining
                },
                Step::Shrink {
                    to: 3,
                    unregister: vec![3, 4]
                },
                Step::Steady,
            ]
        );
        assert_eq!(running, 3);
        assert_eq!(registered, (0..3).collect());
    }

    #[test]
    fn a_fenced_broker_is_unregistered_when_it_left_and_waited_for_when_it_stays() {
        // Shrunk from 4 to 3 by an operator that stopped before
        // unregistering: broker 3 has stopped, so Metadata leaves it out
        // (fenced), but it is still registered.
        let mut c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4)]);
        c.fenced = BTreeSet::from([3]);
        let step = decide(&facts(3, 3, &[0, 1, 2], Phase::Idle, Some(c.clone())));
        assert_eq!(
            step,
            Step::Shrink {
                to: 3,
                unregister: vec![3]
            }
        );
        // A broker that stays and is fenced (down) is not back yet.
        c.fenced = BTreeSet::from([1]);
        let step = decide(&facts(4, 4, &[0, 1, 2, 3], Phase::Growing, Some(c)));
        assert!(
            matches!(&step, Step::WaitForBrokers { brokers, .. } if brokers == &vec![1]),
            "{step:?}"
        );
    }

    #[test]
    fn a_broker_still_holding_replicas_is_never_removed() {
        let c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4), (3, 1)]);
        let step = decide(&facts(3, 4, &[0, 1, 2, 3], Phase::Draining, Some(c)));
        assert_eq!(step, Step::Drain { brokers: vec![3] });
    }

    #[test]
    fn below_the_largest_replication_factor_is_refused() {
        let c = view(&[0, 1, 2], &[(0, 4), (1, 4), (2, 4)]);
        let mut f = facts(2, 3, &[0, 1, 2], Phase::Idle, Some(c));
        f.voters = 1;
        let step = decide(&f);
        assert!(
            matches!(
                step,
                Step::Refuse {
                    reason: "ScaleDownBelowReplicationFactor",
                    ..
                }
            ),
            "{step:?}"
        );
        assert_eq!(step.phase(Phase::Draining), Phase::Idle);
    }

    #[test]
    fn the_metadata_voters_are_never_removed() {
        let mut c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4)]);
        c.max_replication_factor = 1;
        let step = decide(&facts(2, 4, &[0, 1, 2, 3], Phase::Idle, Some(c)));
        assert!(
            matches!(
                step,
                Step::Refuse {
                    reason: "ScaleDownBelowMetadataVoters",
                    ..
                }
            ),
            "{step:?}"
        );
    }

    #[test]
    fn a_broker_holding_a_single_replica_partition_is_not_drained() {
        let mut c = view(&[0, 1, 2, 3], &[(0, 4), (1, 4), (2, 4), (3, 4)]);
        c.pinned.insert(3, 1);
        let step = decide(&facts(3, 4, &[0, 1, 2, 3], Phase::Idle, Some(c)));
        assert!(
            matches!(
                step,
                Step::Refuse {
                    reason: "ScaleDownWouldLoseData",
                    ..
                }
            ),
            "{step:?}"
        );
    }

    #[test]
    fn unknown_cluster_state_waits_instead_of_guessing() {
        let step = decide(&facts(3, 5, &[0, 1, 2, 3, 4], Phase::Draining, None));
        assert_eq!(step, Step::Unknown);
        assert_eq!(step.phase(Phase::Draining), Phase::Draining);
        // Growing needs no answer from the brokers.
        assert_eq!(
            decide(&facts(4, 3, &[0, 1, 2], Phase::Idle, None)),
            Step::Grow { to: 4 }
        );
    }

    #[test]
    fn moves_under_way_are_waited_for_whatever_asked_for_them() {
        let mut c = view(&[0, 1, 2], &[(0, 4), (1, 4), (2, 4)]);
        c.moving = 2;
        // Even with nothing to scale (a person's reassignment): no second
        // operation starts meanwhile.
        let step = decide(&facts(3, 3, &[0, 1, 2], Phase::Idle, Some(c)));
        assert_eq!(
            step,
            Step::WaitForMoves {
                moving: 2,
                phase: Phase::Rebalancing
            }
        );
    }

    #[test]
    fn an_operator_restarted_in_any_phase_takes_the_same_step() {
        // The decision reads only observed facts and the recorded phase:
        // two operators (the old and the restarted) agree in every phase.
        for phase in [
            Phase::Idle,
            Phase::Growing,
            Phase::Rebalancing,
            Phase::Draining,
        ] {
            for (desired, running, holding) in [
                (5, 5, vec![(0, 4), (1, 4), (2, 4), (3, 0), (4, 0)]),
                (3, 5, vec![(0, 4), (1, 4), (2, 4), (3, 2), (4, 0)]),
                (3, 5, vec![(0, 4), (1, 4), (2, 4), (3, 0), (4, 0)]),
            ] {
                let mut c = view(&[0, 1, 2, 3, 4], &holding);
                c.planned_moves = 1;
                let f = facts(desired, running, &[0, 1, 2, 3, 4], phase, Some(c));
                assert_eq!(decide(&f), decide(&f.clone()));
            }
        }
        // A restart after the shrink but before the unregistering still
        // unregisters.
        let c = view(&[0, 1, 2, 3, 4], &[(0, 4), (1, 4), (2, 4)]);
        let step = decide(&facts(3, 3, &[0, 1, 2], Phase::Draining, Some(c)));
        assert_eq!(
            step,
            Step::Shrink {
                to: 3,
                unregister: vec![3, 4]
            }
        );
        // A restart after the grow: it waits for the brokers, then
        // rebalances (the phase says a scale-up is under way).
        let mut c = view(&[0, 1, 2, 3, 4], &[(0, 4), (1, 4), (2, 4)]);
        c.planned_moves = 4;
        assert_eq!(
            decide(&facts(
                5,
                5,
                &[0, 1, 2, 3, 4],
                Phase::Growing,
                Some(c.clone())
            )),
            Step::Rebalance
        );
        // Left alone, an unbalanced cluster is not reshuffled.
        assert_eq!(
            decide(&facts(5, 5, &[0, 1, 2, 3, 4], Phase::Idle, Some(c))),
            Step::Steady
        );
    }

    fn every_step() -> Vec<Step> {
        vec![
            Step::Steady,
            Step::Grow { to: 4 },
            Step::WaitForBrokers {
                brokers: vec![3],
                phase: Phase::Growing,
            },
            Step::Rebalance,
            Step::Drain { brokers: vec![3] },
            Step::WaitForMoves {
                moving: 1,
                phase: Phase::Draining,
            },
            Step::Shrink {
                to: 3,
                unregister: vec![3],
            },
            Step::Refuse {
                reason: "ScaleDownWouldLoseData",
                message: String::new(),
            },
            Step::Unknown,
        ]
    }

    #[test]
    fn the_throttle_is_set_before_moves_and_removed_once_the_scale_moves_nothing_more() {
        let rate = 20_000_000;
        for step in [Step::Rebalance, Step::Drain { brokers: vec![3] }] {
            for applied in [None, Some(rate), Some(1)] {
                assert_eq!(
                    throttle_step(&step, rate, applied),
                    Throttle::Ensure { rate },
                    "{step:?} {applied:?}"
                );
            }
        }
        let ending = [
            Step::Steady,
            Step::Shrink {
                to: 3,
                unregister: vec![3],
            },
            Step::Refuse {
                reason: "ScaleDownBelowReplicationFactor",
                message: String::new(),
            },
        ];
        for step in &ending {
            assert_eq!(throttle_step(step, rate, Some(rate)), Throttle::Remove);
            // Nothing recorded: nothing to remove, and the brokers are not
            // even asked.
            assert_eq!(throttle_step(step, rate, None), Throttle::Keep);
        }
        // Waiting keeps it for the moves to come; unreachable brokers
        // could not be told anyway.
        for step in [
            Step::WaitForMoves {
                moving: 2,
                phase: Phase::Rebalancing,
            },
            Step::WaitForBrokers {
                brokers: vec![3],
                phase: Phase::Draining,
            },
            Step::Grow { to: 5 },
            Step::Unknown,
        ] {
            assert_eq!(throttle_step(&step, rate, Some(rate)), Throttle::Keep);
            assert_eq!(throttle_step(&step, rate, None), Throttle::Keep);
        }
    }

    #[test]
    fn a_spec_change_during_the_moves_is_followed_and_zero_turns_the_throttle_off() {
        let waiting = Step::WaitForMoves {
            moving: 2,
            phase: Phase::Draining,
        };
        assert_eq!(
            throttle_step(&waiting, 50, Some(20)),
            Throttle::Ensure { rate: 50 }
        );
        // Not the operator's moves (or unthrottled ones): left alone.
        assert_eq!(throttle_step(&waiting, 50, None), Throttle::Keep);
        for step in every_step() {
            let expected = match step {
                Step::Unknown => Throttle::Keep,
                _ => Throttle::Remove,
            };
            assert_eq!(throttle_step(&step, 0, Some(20)), expected, "{step:?}");
            assert_eq!(throttle_step(&step, 0, None), Throttle::Keep, "{step:?}");
        }
    }

    #[test]
    fn a_throttle_set_by_hand_is_never_taken_over_and_the_operators_own_is_recorded_first() {
        // Nothing set: the record goes first, then the value.
        assert_eq!(
            ensure_throttle(None, None, 20),
            EnsureThrottle::Set { record_first: true }
        );
        // Set before the scale by a person, whatever its value: theirs.
        for v in ["20", "5", "junk"] {
            assert_eq!(
                ensure_throttle(Some(v), None, 20),
                EnsureThrottle::HandSet { value: v.into() }
            );
        }
        // The operator's, at the rate: nothing to send (a restarted
        // operator re-reading the status decides the same).
        assert_eq!(
            ensure_throttle(Some("20"), Some(20), 20),
            EnsureThrottle::InPlace
        );
        // Recorded but not there (the operator stopped between recording
        // and setting), at another rate, or changed behind its back: set.
        for (current, applied) in [(None, 20), (Some("20"), 10), (Some("7"), 20)] {
            assert_eq!(
                ensure_throttle(current, Some(applied), 20),
                EnsureThrottle::Set {
                    record_first: false
                },
                "{current:?} {applied}"
            );
        }
    }

    #[test]
    fn a_scale_throttles_every_batch_and_clears_the_throttle_at_its_end_across_restarts() {
        // The simulated scales, with the throttle state the status would
        // carry from one (restarted) reconcile to the next.
        for (desired, running) in [(5, 3), (3, 5)] {
            let (steps, _, _) = simulate(desired, running, 3);
            let mut applied: Option<u64> = None;
            let mut set_before_moves = true;
            for step in &steps {
                match throttle_step(step, 20, applied) {
                    Throttle::Ensure { rate } => applied = Some(rate),
                    Throttle::Remove => applied = None,
                    Throttle::Keep => {}
                }
                if matches!(step, Step::Rebalance | Step::Drain { .. }) {
                    set_before_moves &= applied == Some(20);
                }
            }
            assert!(set_before_moves, "{steps:?}");
            assert_eq!(applied, None, "left behind after {steps:?}");
        }
    }
}
