//! Replica assignment for new partitions: a pure function of the brokers,
//! so it is tested without a cluster.
//!
//! Brokers are ordered so that consecutive brokers sit in different racks
//! (racks taken in turn, brokers by id within a rack). Partition `p`'s
//! preferred leader is broker `(start + p) mod n` of that order, so leaders
//! spread evenly; its followers are the next brokers in the order, skipping
//! a broker whose rack already holds a replica of `p` while enough racks
//! remain for every replica to have its own.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSlot {
    pub id: i32,
    pub rack: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "replication factor {rf} is larger than the number of available (registered, unfenced) brokers ({brokers})"
)]
pub struct TooFewBrokers {
    pub rf: usize,
    pub brokers: usize,
}

/// Replicas (preferred leader first) of partitions `first..first + count`.
/// `start` rotates the leader of partition 0 (e.g. a hash of the topic
/// name), so many small topics do not all lead on one broker.
///
/// # Errors
/// [`TooFewBrokers`] when `rf` is 0 or larger than the number of brokers.
pub fn assign(
    brokers: &[BrokerSlot],
    first: i32,
    count: i32,
    rf: usize,
    start: usize,
) -> Result<Vec<Vec<i32>>, TooFewBrokers> {
    let n = brokers.len();
    if rf == 0 || rf > n {
        return Err(TooFewBrokers { rf, brokers: n });
    }
    let order = rack_alternating(brokers);
    let racks: HashSet<&Option<String>> = order.iter().map(|b| &b.rack).collect();
    let rack_aware = racks.len() >= rf && order.iter().all(|b| b.rack.is_some());
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for p in first..first.saturating_add(count.max(0)) {
        let lead = (start + usize::try_from(p).unwrap_or(0)) % n;
        // Vary the distance to the followers with the round, as Kafka does,
        // so the followers of one broker's partitions are not always the
        // same brokers.
        let shift = 1 + (usize::try_from(p).unwrap_or(0) / n) % (n - 1).max(1);
        let mut replicas = vec![order[lead].id];
        let mut used_racks: HashSet<&Option<String>> = HashSet::from([&order[lead].rack]);
        let mut k = 0;
        while replicas.len() < rf && k < n * 2 {
            let b = &order[(lead + shift + k) % n];
            k += 1;
            if replicas.contains(&b.id) || (rack_aware && used_racks.contains(&b.rack)) {
                continue;
            }
            used_racks.insert(&b.rack);
            replicas.push(b.id);
        }
        // Without racks to satisfy, any remaining broker will do.
        let mut k = 0;
        while replicas.len() < rf && k < n {
            let b = &order[(lead + 1 + k) % n];
            k += 1;
            if !replicas.contains(&b.id) {
                replicas.push(b.id);
            }
        }
        out.push(replicas);
    }
    Ok(out)
}

fn rack_alternating(brokers: &[BrokerSlot]) -> Vec<BrokerSlot> {
    let mut by_rack: BTreeMap<Option<String>, Vec<BrokerSlot>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.clone()).or_default().push(b.clone());
    }
    for v in by_rack.values_mut() {
        v.sort_by_key(|b| b.id);
        v.reverse();
    }
    let mut out = Vec::with_capacity(brokers.len());
    while out.len() < brokers.len() {
        for v in by_rack.values_mut() {
            if let Some(b) = v.pop() {
                out.push(b);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(racks: &[Option<&str>]) -> Vec<BrokerSlot> {
        racks
            .iter()
            .enumerate()
            .map(|(i, r)| BrokerSlot {
                id: i as i32 + 1,
                rack: r.map(str::to_string),
            })
            .collect()
    }

    fn leaders(a: &[Vec<i32>]) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for r in a {
            *m.entry(r[0]).or_default() += 1;
        }
        m
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let b = slots(&[None, None, None]);
        let a = assign(&b, 0, 12, 3, 0).unwrap();
        assert_eq!(a.len(), 12);
        assert!(leaders(&a).values().all(|&n| n == 4), "{a:?}");
        for r in &a {
            let set: HashSet<_> = r.iter().collect();
            assert_eq!(set.len(), 3, "{r:?}");
        }
        // Five brokers, RF 2: every broker leads 2 and holds 4 replicas.
        let b = slots(&[None; 5]);
        let a = assign(&b, 0, 10, 2, 3).unwrap();
        assert!(leaders(&a).values().all(|&n| n == 2), "{a:?}");
        let mut held = BTreeMap::new();
        for r in &a {
            assert_ne!(r[0], r[1]);
            for id in r {
                *held.entry(*id).or_insert(0) += 1;
            }
        }
        assert!(held.values().all(|&n| n == 4), "{held:?}");
    }

    #[test]
    fn rack_aware_when_racks_allow() {
        let b = slots(&[
            Some("a"),
            Some("a"),
            Some("b"),
            Some("b"),
            Some("c"),
            Some("c"),
        ]);
        let rack = |id: i32| b[(id - 1) as usize].rack.clone();
        let a = assign(&b, 0, 30, 3, 0).unwrap();
        for r in &a {
            let racks: HashSet<_> = r.iter().map(|id| rack(*id)).collect();
            assert_eq!(racks.len(), 3, "{r:?}");
        }
        assert!(leaders(&a).values().all(|&n| n == 5), "{a:?}");
        // Two racks, RF 3: impossible to separate fully, still 3 brokers.
        let b = slots(&[Some("a"), Some("a"), Some("b")]);
        let a = assign(&b, 0, 6, 3, 0).unwrap();
        for r in &a {
            assert_eq!(r.iter().collect::<HashSet<_>>().len(), 3, "{r:?}");
        }
        // RF 2 over two racks: never both in one rack.
        let b = slots(&[Some("a"), Some("a"), Some("b"), Some("b")]);
        let a = assign(&b, 0, 8, 2, 1).unwrap();
        for r in &a {
            assert_ne!(rack(r[0]), rack(r[1]), "{r:?}");
        }
    }

    #[test]
    fn too_few_brokers_is_an_error() {
        let b = slots(&[None, None]);
        assert_eq!(
            assign(&b, 0, 1, 3, 0),
            Err(TooFewBrokers { rf: 3, brokers: 2 })
        );
        assert!(assign(&b, 0, 1, 0, 0).is_err());
        assert_eq!(assign(&b, 4, 2, 2, 0).unwrap().len(), 2);
    }
}
