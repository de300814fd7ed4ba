//! Readable scenarios: what a person expects of a rebalance.

use std::collections::BTreeMap;

use skiff_balance::{
    BalanceError, Broker, MoveKind, Options, Partition, Plan, Tolerance, apply, plan,
};

/// `count` partitions of `topic` with `rf` replicas placed round-robin on
/// `brokers` (the way topic creation spreads them), `size` bytes each.
fn round_robin(topic: &str, count: i32, rf: usize, brokers: &[i32], size: u64) -> Vec<Partition> {
    (0..count)
        .map(|p| {
            let replicas: Vec<i32> = (0..rf)
                .map(|k| brokers[(p as usize + k) % brokers.len()])
                .collect();
            Partition::new(topic, p, &replicas, size)
        })
        .collect()
}

fn per_broker(parts: &[Partition]) -> (BTreeMap<i32, usize>, BTreeMap<i32, usize>) {
    let mut replicas = BTreeMap::new();
    let mut leaders = BTreeMap::new();
    for p in parts {
        for b in &p.replicas {
            *replicas.entry(*b).or_default() += 1;
        }
        *leaders.entry(p.replicas[0]).or_default() += 1;
    }
    (replicas, leaders)
}

fn spread(m: &BTreeMap<i32, usize>) -> usize {
    m.values().max().unwrap_or(&0) - m.values().min().unwrap_or(&0)
}

fn run(brokers: &[Broker], parts: &[Partition]) -> (Plan, Vec<Partition>) {
    let plan = plan(brokers, parts, &Options::default()).expect("a plan");
    let after = apply(parts, &plan);
    (plan, after)
}

#[test]
fn growing_from_three_to_five_brokers_fills_the_new_ones_with_few_moves() {
    let parts = round_robin("orders", 30, 3, &[1, 2, 3], 1000);
    let brokers: Vec<Broker> = (1..=5).map(Broker::new).collect();
    let (plan, after) = run(&brokers, &parts);

    let (replicas, leaders) = per_broker(&after);
    assert_eq!(
        replicas.len(),
        5,
        "every broker holds replicas: {replicas:?}"
    );
    // 90 replicas over 5 brokers: 18 ± 1 each; 30 leaders: 6 ± 1 each.
    assert!(
        replicas.values().all(|&c| (17..=19).contains(&c)),
        "{replicas:?}"
    );
    assert!(
        leaders.values().all(|&c| (5..=7).contains(&c)),
        "{leaders:?}"
    );
    // The new brokers need 17 replicas each at least; nothing beyond that
    // is copied.
    assert_eq!(plan.summary.replica_moves, 34);
    assert_eq!(plan.summary.bytes_moved, 34 * 1000);
    assert!(plan.summary.after.replicas && plan.summary.after.leaders);
    assert!(plan.summary.after.bytes && plan.summary.after.constraints);
    assert!(!plan.summary.before.replicas);
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    for m in &plan.moves {
        assert_eq!(m.to.len(), 3);
        assert!(m.removed.iter().all(|b| [1, 2, 3].contains(b)));
        assert!(m.added.iter().all(|b| [4, 5].contains(b)), "{m:?}");
    }
}

#[test]
fn draining_broker_five_moves_only_its_replicas_and_empties_it() {
    let parts = round_robin("events", 20, 2, &[1, 2, 3, 4, 5], 500);
    let brokers: Vec<Broker> = (1..=5)
        .map(|id| {
            if id == 5 {
                Broker::new(id).draining()
            } else {
                Broker::new(id)
            }
        })
        .collect();
    let (plan, after) = run(&brokers, &parts);

    assert!(after.iter().all(|p| !p.replicas.contains(&5)));
    let (replicas, leaders) = per_broker(&after);
    assert_eq!(
        replicas.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(spread(&replicas) <= 1, "{replicas:?}");
    assert!(spread(&leaders) <= 2, "{leaders:?}");
    // Broker 5 held 8 replicas: exactly those are copied elsewhere.
    assert_eq!(plan.summary.replica_moves, 8);
    for m in plan.moves.iter().filter(|m| m.kind() == MoveKind::Data) {
        assert_eq!(m.removed, vec![5], "{m:?}");
    }
    let five = plan.summary.brokers.iter().find(|b| b.id == 5).unwrap();
    assert!(five.draining && five.before.replicas == 8 && five.after.replicas == 0);
    assert!(!plan.summary.before.constraints && plan.summary.after.constraints);
}

#[test]
fn replicas_are_spread_over_racks() {
    // Racks a: 1 2, b: 3 4, c: 5 6; every partition starts on brokers 1 2 3,
    // two replicas in rack a.
    let brokers: Vec<Broker> = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")]
        .into_iter()
        .map(|(id, r)| Broker::new(id).in_rack(r))
        .collect();
    let parts: Vec<Partition> = (0..12)
        .map(|p| Partition::new("t", p, &[1, 2, 3], 10))
        .collect();
    let (plan, after) = run(&brokers, &parts);
    let rack = |b: i32| brokers.iter().find(|x| x.id == b).unwrap().rack.clone();
    for p in &after {
        let mut racks: Vec<_> = p.replicas.iter().map(|&b| rack(b)).collect();
        racks.sort();
        racks.dedup();
        assert_eq!(racks.len(), 3, "{p:?} spans racks {racks:?}");
    }
    let (replicas, leaders) = per_broker(&after);
    assert!(
        replicas.values().all(|&c| (5..=7).contains(&c)),
        "{replicas:?}"
    );
    assert!(
        leaders.values().all(|&c| (1..=3).contains(&c)),
        "{leaders:?}"
    );
    assert!(plan.summary.after.constraints && plan.summary.after.replicas);
}

#[test]
fn rack_with_too_few_brokers_is_used_as_far_as_it_goes() {
    // Two racks, RF 3: each rack holds at most two replicas of a partition.
    let brokers: Vec<Broker> = [(1, "a"), (2, "a"), (3, "a"), (4, "b")]
        .into_iter()
        .map(|(id, r)| Broker::new(id).in_rack(r))
        .collect();
    let parts: Vec<Partition> = (0..4)
        .map(|p| Partition::new("t", p, &[1, 2, 3], 0))
        .collect();
    let (plan, after) = run(&brokers, &parts);
    for p in &after {
        assert!(p.replicas.contains(&4), "{p:?}");
    }
    assert!(plan.summary.after.constraints);
}

#[test]
fn leaders_are_balanced_by_reordering_without_copying_data() {
    // Every partition prefers broker 1.
    let parts: Vec<Partition> = (0..9)
        .map(|p| Partition::new("t", p, &[1, 2, 3], 1 << 20))
        .collect();
    let brokers: Vec<Broker> = (1..=3).map(Broker::new).collect();
    let (plan, after) = run(&brokers, &parts);
    assert!(!plan.moves.is_empty());
    assert!(plan.moves.iter().all(|m| m.kind() == MoveKind::Reorder));
    assert_eq!(plan.summary.bytes_moved, 0);
    assert_eq!(plan.summary.leadership_only, plan.moves.len());
    let (_, leaders) = per_broker(&after);
    // 3 ± 1 each, with the fewest reorders: broker 1 hands over five.
    assert!(
        leaders.values().all(|&c| (2..=4).contains(&c)),
        "{leaders:?}"
    );
    assert_eq!(plan.moves.len(), 5);

    // A tolerance of 0 asks for the exact floor/ceiling: six reorders.
    let exact = Options {
        tolerance: Tolerance {
            leaders: 0,
            ..Tolerance::default()
        },
    };
    let plan = skiff_balance::plan(&brokers, &parts, &exact).unwrap();
    let (_, leaders) = per_broker(&apply(&parts, &plan));
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
    assert_eq!(plan.moves.len(), 6);
}

#[test]
fn uneven_partition_sizes_are_evened_out_by_swaps() {
    // Two brokers, same replica counts, all the big partitions on broker 1.
    let mut parts = Vec::new();
    for p in 0..4 {
        parts.push(Partition::new("big", p, &[1], 1000));
        parts.push(Partition::new("small", p, &[2], 10));
    }
    let brokers = vec![Broker::new(1), Broker::new(2)];
    let (plan, after) = run(&brokers, &parts);
    let bytes = |b: i32| -> u64 {
        after
            .iter()
            .filter(|p| p.replicas.contains(&b))
            .map(|p| p.size_bytes)
            .sum()
    };
    // 4040 bytes: 2020 ± 10% each. One big partition moves (1 → 2), then
    // a big/small swap keeps the replica counts within ±1: three moves, where
    // an exact split would need four.
    assert_eq!((bytes(1), bytes(2)), (2010, 2030));
    assert!(plan.summary.after.bytes && plan.summary.after.replicas);
    assert_eq!(plan.summary.replica_moves, 3);
    assert!(!plan.summary.before.bytes);
}

#[test]
fn a_balanced_cluster_needs_no_moves() {
    let parts = round_robin("t", 12, 3, &[1, 2, 3, 4], 100);
    let brokers: Vec<Broker> = (1..=4).map(Broker::new).collect();
    let (plan, _) = run(&brokers, &parts);
    assert!(plan.moves.is_empty(), "{:?}", plan.moves);
    assert_eq!(plan.summary.before, plan.summary.after);
}

#[test]
fn a_drain_that_cannot_keep_the_replication_factor_is_refused() {
    let parts = round_robin("t", 3, 3, &[1, 2, 3], 0);
    let brokers = vec![Broker::new(1), Broker::new(2), Broker::new(3).draining()];
    let err = plan(&brokers, &parts, &Options::default()).unwrap_err();
    assert_eq!(
        err,
        BalanceError::NotEnoughBrokers {
            topic: "t".into(),
            partition: 0,
            replicas: 3,
            eligible: 2
        }
    );
    assert!(
        err.to_string()
            .contains("replication factor cannot be kept")
    );
}

#[test]
fn replicas_on_a_broker_the_cluster_does_not_list_are_moved_with_a_warning() {
    let parts = vec![Partition::new("t", 0, &[7, 1], 0)];
    let brokers = vec![Broker::new(1), Broker::new(2)];
    let (plan, after) = run(&brokers, &parts);
    assert_eq!(after[0].replicas.len(), 2);
    assert!(!after[0].replicas.contains(&7));
    assert!(plan.warnings[0].contains("broker 7"), "{:?}", plan.warnings);
    let seven = plan.summary.brokers.iter().find(|b| b.id == 7).unwrap();
    assert!(seven.unknown && seven.after.replicas == 0);
}

#[test]
fn duplicate_replicas_in_the_input_are_repaired() {
    let parts = vec![Partition::new("t", 0, &[1, 1, 2], 0)];
    let brokers: Vec<Broker> = (1..=3).map(Broker::new).collect();
    let (_, after) = run(&brokers, &parts);
    let mut r = after[0].replicas.clone();
    r.sort();
    assert_eq!(r, vec![1, 2, 3]);
}

#[test]
fn a_looser_tolerance_moves_less() {
    let parts = round_robin("t", 30, 3, &[1, 2, 3], 0);
    let brokers: Vec<Broker> = (1..=5).map(Broker::new).collect();
    let strict = plan(&brokers, &parts, &Options::default()).unwrap();
    let loose = plan(
        &brokers,
        &parts,
        &Options {
            tolerance: Tolerance {
                replicas: 6,
                leaders: 3,
                bytes_fraction: 0.5,
            },
        },
    )
    .unwrap();
    assert!(loose.summary.replica_moves < strict.summary.replica_moves);
    assert!(loose.summary.after.replicas);
}

#[test]
fn ten_thousand_partitions_on_a_hundred_brokers_are_planned() {
    // 90 → 100 brokers plus a drain of broker 1, uneven sizes.
    let old: Vec<i32> = (1..=90).collect();
    let mut parts = round_robin("big", 10_000, 3, &old, 0);
    for (i, p) in parts.iter_mut().enumerate() {
        p.size_bytes = (i as u64 * 7919) % 10_000 * 1000;
    }
    let brokers: Vec<Broker> = (1..=100)
        .map(|id| {
            if id == 1 {
                Broker::new(id).draining()
            } else {
                Broker::new(id)
            }
        })
        .collect();
    let started = std::time::Instant::now();
    let (plan, after) = run(&brokers, &parts);
    eprintln!(
        "10k partitions x 100 brokers: {:?}, {} replica moves, {} reorders",
        started.elapsed(),
        plan.summary.replica_moves,
        plan.summary.leadership_only
    );
    assert!(after.iter().all(|p| !p.replicas.contains(&1)));
    assert!(plan.summary.after.replicas && plan.summary.after.leaders);
    assert!(plan.summary.after.constraints);
}
