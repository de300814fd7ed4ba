//! Properties of every plan, over random clusters.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use skiff_balance::{BalanceError, Broker, Options, Partition, apply, plan};

#[derive(Debug, Clone)]
struct Cluster {
    brokers: Vec<Broker>,
    partitions: Vec<Partition>,
}

/// 1..=8 brokers, racks (none, or 1..=4 racks), up to two draining, up to
/// 40 partitions of RF 1..=3 on random brokers (sometimes one the cluster
/// does not list), sizes from 0 to 1 MB.
fn cluster() -> impl Strategy<Value = Cluster> {
    (
        1usize..=8,
        0usize..=4,
        proptest::collection::vec(any::<bool>(), 8),
    )
        .prop_flat_map(|(n, racks, drain)| {
            let brokers: Vec<Broker> = (1..=n as i32)
                .map(|id| Broker {
                    id,
                    rack: (racks > 0).then(|| format!("r{}", id as usize % racks)),
                    // At most two draining brokers.
                    draining: drain[id as usize - 1] && id as usize > n.saturating_sub(2),
                })
                .collect();
            let partition = (
                1usize..=3,
                proptest::collection::vec(0usize..(n + 1), 3),
                0u64..1_000_000,
            );
            (Just(brokers), proptest::collection::vec(partition, 0..40))
        })
        .prop_map(|(brokers, raw)| {
            let n = brokers.len();
            let partitions = raw
                .into_iter()
                .enumerate()
                .map(|(i, (rf, picks, size))| {
                    let rf = rf.min(n);
                    let mut replicas: Vec<i32> = Vec::new();
                    for (k, pick) in picks.iter().enumerate().take(rf) {
                        // pick == n names broker 99, not in the cluster.
                        let mut id = if *pick == n { 99 } else { *pick as i32 + 1 };
                        // Distinct replicas: walk to the next free broker.
                        let mut step = 0;
                        while replicas.contains(&id) {
                            id = ((k + step) % n) as i32 + 1;
                            step += 1;
                        }
                        replicas.push(id);
                    }
                    Partition::new(&format!("t{}", i % 3), i as i32, &replicas, size)
                })
                .collect();
            Cluster {
                brokers,
                partitions,
            }
        })
}

fn eligible(c: &Cluster) -> Vec<&Broker> {
    c.brokers.iter().filter(|b| !b.draining).collect()
}

fn rack_of(c: &Cluster, id: i32) -> String {
    let b = c.brokers.iter().find(|b| b.id == id).expect("known broker");
    b.rack.clone().unwrap_or_else(|| format!("broker-{id}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn every_plan_is_valid_rack_safe_and_idempotent(c in cluster()) {
        let max_rf = c.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0);
        let result = plan(&c.brokers, &c.partitions, &Options::default());
        let eligible_ids: BTreeSet<i32> = eligible(&c).iter().map(|b| b.id).collect();
        if max_rf > eligible_ids.len() {
            let refused = matches!(result, Err(BalanceError::NotEnoughBrokers { .. }));
            prop_assert!(refused);
            return Ok(());
        }
        let p = result.expect("a plan");
        let after = apply(&c.partitions, &p);
        let racks: BTreeSet<String> = eligible_ids.iter().map(|&b| rack_of(&c, b)).collect();
        for (before, now) in c.partitions.iter().zip(&after) {
            // Replication factor kept, no duplicates, only eligible brokers.
            prop_assert_eq!(before.replicas.len(), now.replicas.len());
            let set: BTreeSet<i32> = now.replicas.iter().copied().collect();
            prop_assert_eq!(set.len(), now.replicas.len(), "duplicate in {:?}", now);
            prop_assert!(set.is_subset(&eligible_ids), "{:?} not on {:?}", now, eligible_ids);
            // Distinct racks whenever there are enough.
            if racks.len() >= now.replicas.len() {
                let used: BTreeSet<String> = now.replicas.iter().map(|&b| rack_of(&c, b)).collect();
                prop_assert_eq!(used.len(), now.replicas.len(), "{:?} shares a rack", now);
            }
        }
        prop_assert!(p.summary.after.constraints);
        // Draining brokers end empty.
        for b in p.summary.brokers.iter().filter(|b| b.draining || b.unknown) {
            prop_assert_eq!(b.after.replicas, 0);
        }
        // Without racks, replicas end within ±1 of even. (Leaders too when
        // bytes do not compete: see the next property. With sizes, the byte
        // tolerance can leave no move that evens leaders in tiny clusters.)
        if c.brokers.iter().all(|b| b.rack.is_none()) {
            prop_assert!(p.summary.after.replicas, "{:?}", p.summary);
        }
        // The summary's figures are those of the moves.
        let moved: usize = p.moves.iter().map(|m| m.added.len()).sum();
        prop_assert_eq!(moved, p.summary.replica_moves);
        // Planning the result again changes nothing.
        let again = plan(&c.brokers, &after, &Options::default()).expect("a plan");
        prop_assert!(again.moves.is_empty(), "second plan moves {:?}", again.moves);
    }

    #[test]
    fn without_racks_or_sizes_replicas_and_leaders_end_within_one_of_even(c in cluster()) {
        let brokers: Vec<Broker> = c.brokers.iter().map(|b| Broker { rack: None, ..b.clone() }).collect();
        let partitions: Vec<Partition> = c.partitions.iter().map(|p| Partition { size_bytes: 0, ..p.clone() }).collect();
        let Ok(p) = plan(&brokers, &partitions, &Options::default()) else { return Ok(()) };
        prop_assert!(p.summary.after.replicas, "{:?}", p.summary);
        prop_assert!(p.summary.after.leaders, "{:?}", p.summary);
        prop_assert!(p.summary.after.bytes && p.summary.after.constraints);
        prop_assert!(p.warnings.iter().all(|w| w.contains("not a cluster member")), "{:?}", p.warnings);
    }

    #[test]
    fn plans_do_not_depend_on_input_order(c in cluster(), seed in any::<u64>()) {
        let a = plan(&c.brokers, &c.partitions, &Options::default());
        let mut brokers = c.brokers.clone();
        let mut partitions = c.partitions.clone();
        // A deterministic shuffle driven by the seed.
        let mut s = seed | 1;
        let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
        for i in (1..brokers.len()).rev() { let j = (next() % (i as u64 + 1)) as usize; brokers.swap(i, j); }
        for i in (1..partitions.len()).rev() { let j = (next() % (i as u64 + 1)) as usize; partitions.swap(i, j); }
        let b = plan(&brokers, &partitions, &Options::default());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn counts_after_the_plan_match_its_summary(c in cluster()) {
        let Ok(p) = plan(&c.brokers, &c.partitions, &Options::default()) else { return Ok(()) };
        let after = apply(&c.partitions, &p);
        let mut replicas: BTreeMap<i32, u64> = BTreeMap::new();
        let mut leaders: BTreeMap<i32, u64> = BTreeMap::new();
        let mut bytes: BTreeMap<i32, u64> = BTreeMap::new();
        for part in &after {
            for b in &part.replicas {
                *replicas.entry(*b).or_default() += 1;
                *bytes.entry(*b).or_default() += part.size_bytes;
            }
            *leaders.entry(part.replicas[0]).or_default() += 1;
        }
        for b in &p.summary.brokers {
            prop_assert_eq!(b.after.replicas, replicas.get(&b.id).copied().unwrap_or(0));
            prop_assert_eq!(b.after.leaders, leaders.get(&b.id).copied().unwrap_or(0));
            prop_assert_eq!(b.after.bytes, bytes.get(&b.id).copied().unwrap_or(0));
        }
    }
}
