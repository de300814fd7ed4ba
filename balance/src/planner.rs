//! The planner: four passes over one mutable assignment.
//!
//! 1. **Constraints**: every replica on a draining or unknown broker, every
//!    duplicate and every replica beyond its rack's share is replaced by the
//!    least loaded broker that keeps the partition spread over racks.
//! 2. **Replicas per broker**: while a broker is outside the tolerance, one
//!    replica goes from the fullest broker to the emptiest that can take it.
//! 3. **Bytes per broker**: while a broker is outside the byte tolerance,
//!    the single move or two-replica swap with the best gain per moved
//!    replica goes from the heaviest broker to the lightest, never pushing
//!    replica counts outside their tolerance.
//! 4. **Preferred leaders**: reorders first (no data moves). While a broker
//!    leads too many or too few partitions, leadership is handed along the
//!    shortest chain "leader → a follower of one of its partitions" to a
//!    broker that leads at least two fewer. A balance without such a chain
//!    is optimal (the semi-matching optimality condition), so reordering
//!    alone reaches the tolerance whenever any reordering can. Only where
//!    it cannot (a broker leading partitions whose followers cannot take
//!    over, such as single-replica partitions) does a leader replica move to
//!    an under-led broker, alone or swapped with a follower replica so that
//!    replica counts stay even, never pushing bytes further out of balance.
//!
//! Passes 2 to 4 repeat until none changes anything.
//!
//! Every pass moves only while something is outside its tolerance and stops
//! when no step improves, so planning the planned assignment again yields
//! no moves. Everything is ordered (brokers by id, partitions by topic and
//! number, ties broken by those), never by hash order, so one input gives
//! one plan.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::model::{
    Balance, BalanceError, Broker, BrokerLoad, Load, Move, Options, Partition, Plan, Summary,
    Tolerance,
};

/// Plans the moves that satisfy the constraints and even out the brokers.
///
/// # Errors
/// Duplicate brokers or partitions, a partition without replicas, or one
/// whose replication factor is larger than the brokers that can hold it.
pub fn plan(
    brokers: &[Broker],
    partitions: &[Partition],
    options: &Options,
) -> Result<Plan, BalanceError> {
    let mut state = State::new(brokers, partitions, options.tolerance)?;
    let before_loads = state.loads();
    let before = state.balance();
    state.fix_constraints();
    // Where racks block the replica pass, a byte move can open a new legal
    // replica move (and the other way round): alternate until neither moves,
    // so that the result is a fixed point and planning it again moves
    // nothing. Leader reorders never change what either pass may do.
    for _ in 0..MAX_ROUNDS {
        let replicas = state.balance_replicas();
        let bytes = state.balance_bytes();
        state.balance_leaders();
        let leaders = state.move_leaders();
        if !replicas && !bytes && !leaders {
            break;
        }
    }
    let after = state.balance();
    state.explain(&after);
    Ok(state.into_plan(partitions, before_loads, before, after))
}

/// Rounds of the replica and byte passes; each round is bounded, and in
/// practice the second round finds nothing.
const MAX_ROUNDS: usize = 16;

/// The partitions after a plan's moves.
pub fn apply(partitions: &[Partition], plan: &Plan) -> Vec<Partition> {
    let moves: BTreeMap<(&str, i32), &Move> = plan
        .moves
        .iter()
        .map(|m| ((m.topic.as_str(), m.partition), m))
        .collect();
    partitions
        .iter()
        .map(|p| {
            let mut p = p.clone();
            if let Some(m) = moves.get(&(p.topic.as_str(), p.partition)) {
                p.replicas = m.to.clone();
            }
            p
        })
        .collect()
}

/// The bounds `[lo, hi]` of "within `tol` of `total / n`", widened to the
/// floor and ceiling of the average so that a balance always exists.
fn count_bounds(total: u64, n: u64, tol: u64) -> (u64, u64) {
    if n == 0 {
        return (0, u64::MAX);
    }
    let floor = total / n;
    let ceil = total.div_ceil(n);
    let lo = if total >= tol * n {
        (total - tol * n).div_ceil(n)
    } else {
        0
    };
    let hi = (total + tol * n) / n;
    (lo.min(floor), hi.max(ceil))
}

struct PartState {
    topic: String,
    partition: i32,
    /// The replication factor to keep: the input's replica count.
    rf: usize,
    size: u64,
    /// Current replicas as broker indexes (no duplicates).
    replicas: Vec<usize>,
}

struct State {
    tol: Tolerance,
    /// Broker ids by index: the input's brokers sorted by id, then brokers
    /// only replicas name (unknown), sorted by id.
    ids: Vec<i32>,
    racks: Vec<Option<String>>,
    draining: Vec<bool>,
    unknown: Vec<bool>,
    /// Rack index of each broker; a broker without a rack has its own.
    rack: Vec<usize>,
    /// Brokers that may hold replicas, by index (ascending id).
    eligible: Vec<usize>,
    /// Distinct racks among the eligible brokers.
    eligible_racks: usize,
    parts: Vec<PartState>,
    /// Partitions with a replica on each broker.
    on: Vec<BTreeSet<usize>>,
    count: Vec<u64>,
    leaders: Vec<u64>,
    bytes: Vec<u64>,
    /// Partitions with one replica on each broker: leaders no reorder can
    /// hand over.
    pinned: Vec<u64>,
    leader_not_preferred: usize,
    warnings: Vec<String>,
}

impl State {
    fn new(
        brokers: &[Broker],
        partitions: &[Partition],
        tol: Tolerance,
    ) -> Result<Self, BalanceError> {
        let mut sorted: Vec<&Broker> = brokers.iter().collect();
        sorted.sort_by_key(|b| b.id);
        for w in sorted.windows(2) {
            if w[0].id == w[1].id {
                return Err(BalanceError::DuplicateBroker(w[0].id));
            }
        }
        let known: BTreeSet<i32> = sorted.iter().map(|b| b.id).collect();
        let unknown_ids: BTreeSet<i32> = partitions
            .iter()
            .flat_map(|p| p.replicas.iter().copied())
            .filter(|id| !known.contains(id))
            .collect();
        let mut ids: Vec<i32> = sorted.iter().map(|b| b.id).collect();
        let mut racks: Vec<Option<String>> = sorted.iter().map(|b| b.rack.clone()).collect();
        let mut draining: Vec<bool> = sorted.iter().map(|b| b.draining).collect();
        let mut unknown = vec![false; ids.len()];
        for id in &unknown_ids {
            ids.push(*id);
            racks.push(None);
            draining.push(true);
            unknown.push(true);
        }
        let n = ids.len();
        let index: BTreeMap<i32, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();

        let named: BTreeSet<&str> = racks.iter().flatten().map(String::as_str).collect();
        let named: Vec<&str> = named.into_iter().collect();
        let rack: Vec<usize> = racks
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(r) => named.binary_search(&r.as_str()).unwrap_or(0),
                None => named.len() + i,
            })
            .collect();
        let eligible: Vec<usize> = (0..n).filter(|&i| !draining[i]).collect();
        let eligible_racks = eligible
            .iter()
            .map(|&i| rack[i])
            .collect::<BTreeSet<_>>()
            .len();

        let mut sorted_parts: Vec<&Partition> = partitions.iter().collect();
        sorted_parts.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        for w in sorted_parts.windows(2) {
            if w[0].topic == w[1].topic && w[0].partition == w[1].partition {
                return Err(BalanceError::DuplicatePartition {
                    topic: w[0].topic.clone(),
                    partition: w[0].partition,
                });
            }
        }
        let mut parts = Vec::with_capacity(sorted_parts.len());
        let mut leader_not_preferred = 0;
        for p in sorted_parts {
            if p.replicas.is_empty() {
                return Err(BalanceError::NoReplicas {
                    topic: p.topic.clone(),
                    partition: p.partition,
                });
            }
            if p.replicas.len() > eligible.len() {
                return Err(BalanceError::NotEnoughBrokers {
                    topic: p.topic.clone(),
                    partition: p.partition,
                    replicas: p.replicas.len(),
                    eligible: eligible.len(),
                });
            }
            if p.leader.is_some_and(|l| Some(&l) != p.replicas.first()) {
                leader_not_preferred += 1;
            }
            // A duplicate keeps its first place; the replica it should have
            // been is added back by the constraint pass.
            let mut replicas = Vec::with_capacity(p.replicas.len());
            for id in &p.replicas {
                let i = index[id];
                if !replicas.contains(&i) {
                    replicas.push(i);
                }
            }
            parts.push(PartState {
                topic: p.topic.clone(),
                partition: p.partition,
                rf: p.replicas.len(),
                size: p.size_bytes,
                replicas,
            });
        }

        let mut s = Self {
            tol,
            ids,
            racks,
            draining,
            unknown,
            rack,
            eligible,
            eligible_racks,
            on: vec![BTreeSet::new(); n],
            count: vec![0; n],
            leaders: vec![0; n],
            bytes: vec![0; n],
            pinned: vec![0; n],
            parts,
            leader_not_preferred,
            warnings: Vec::new(),
        };
        for pi in 0..s.parts.len() {
            for pos in 0..s.parts[pi].replicas.len() {
                let b = s.parts[pi].replicas[pos];
                s.add_load(pi, pos, b);
            }
        }
        Ok(s)
    }

    fn add_load(&mut self, pi: usize, pos: usize, b: usize) {
        self.on[b].insert(pi);
        self.count[b] += 1;
        if self.parts[pi].rf == 1 {
            self.pinned[b] += 1;
        }
        self.bytes[b] += self.parts[pi].size;
        if pos == 0 {
            self.leaders[b] += 1;
        }
    }

    fn remove_load(&mut self, pi: usize, pos: usize, b: usize) {
        self.on[b].remove(&pi);
        self.count[b] -= 1;
        if self.parts[pi].rf == 1 {
            self.pinned[b] -= 1;
        }
        self.bytes[b] -= self.parts[pi].size;
        if pos == 0 {
            self.leaders[b] -= 1;
        }
    }

    /// Puts broker `to` in place of the replica at `pos`.
    fn replace(&mut self, pi: usize, pos: usize, to: usize) {
        let from = self.parts[pi].replicas[pos];
        self.remove_load(pi, pos, from);
        self.parts[pi].replicas[pos] = to;
        self.add_load(pi, pos, to);
    }

    /// Most replicas of a partition with replication factor `rf` one rack
    /// may hold: all on distinct racks when there are enough racks, else
    /// spread as evenly as the racks allow.
    fn rack_cap(&self, rf: usize) -> usize {
        rf.div_ceil(self.eligible_racks.max(1))
    }

    fn rack_count(&self, pi: usize, rack: usize) -> usize {
        self.parts[pi]
            .replicas
            .iter()
            .filter(|&&b| self.rack[b] == rack)
            .count()
    }

    /// The preferred-leader bounds.
    fn leader_bounds(&self) -> (u64, u64) {
        count_bounds(
            self.parts.len() as u64,
            self.eligible.len() as u64,
            u64::from(self.tol.leaders),
        )
    }

    /// Whether the replica of `pi` on `from` may move to `to`. A partition
    /// with one replica takes its leadership along, which no reorder can
    /// hand on: it goes only where it does not make leaders unbalanceable.
    fn can_move(&self, pi: usize, from: usize, to: usize) -> bool {
        (self.parts[pi].rf > 1 || self.pinned[to] < self.leader_bounds().1)
            && self.can_place(pi, from, to)
    }

    /// [`Self::can_move`] without the rule on one-replica partitions (a
    /// swap checks that rule on its net effect).
    fn can_place(&self, pi: usize, from: usize, to: usize) -> bool {
        let p = &self.parts[pi];
        !self.draining[to]
            && !p.replicas.contains(&to)
            && (self.rack[to] == self.rack[from]
                || self.rack_count(pi, self.rack[to]) < self.rack_cap(p.rf))
    }

    fn position(&self, pi: usize, b: usize) -> usize {
        self.parts[pi]
            .replicas
            .iter()
            .position(|&x| x == b)
            .unwrap_or(0)
    }

    /// The least loaded eligible broker that can take a replica of `pi`
    /// (not holding one, its rack below the cap when `rack_safe`).
    /// `leaving`: the replica being replaced, which does not count.
    fn best_target(&self, pi: usize, rack_safe: bool, leaving: Option<usize>) -> Option<usize> {
        let p = &self.parts[pi];
        let cap = self.rack_cap(p.rf);
        let in_rack = |r: usize| {
            p.replicas
                .iter()
                .filter(|&&b| Some(b) != leaving && self.rack[b] == r)
                .count()
        };
        self.eligible
            .iter()
            .copied()
            .filter(|b| !p.replicas.contains(b))
            .filter(|&b| !rack_safe || in_rack(self.rack[b]) < cap)
            .min_by_key(|&b| (in_rack(self.rack[b]), self.count[b], self.bytes[b], b))
    }

    fn name(&self, pi: usize) -> String {
        format!("{}-{}", self.parts[pi].topic, self.parts[pi].partition)
    }

    // ---------------------------------------------------------------- pass 1

    fn fix_constraints(&mut self) {
        for pi in 0..self.parts.len() {
            // Replicas on brokers that must end empty.
            for pos in 0..self.parts[pi].replicas.len() {
                let b = self.parts[pi].replicas[pos];
                if !self.draining[b] {
                    continue;
                }
                let target = self.best_target(pi, true, Some(b)).or_else(|| {
                    let t = self.best_target(pi, false, Some(b));
                    if t.is_some() {
                        self.warnings.push(format!(
                            "{}: no broker in another rack can take the replica leaving broker {}; \
                             two replicas share a rack",
                            self.name(pi),
                            self.ids[b]
                        ));
                    }
                    t
                });
                // new() checked that enough eligible brokers exist.
                if let Some(t) = target {
                    self.replace(pi, pos, t);
                }
            }
            // Replicas lost to duplicates in the input.
            while self.parts[pi].replicas.len() < self.parts[pi].rf {
                let Some(t) = self
                    .best_target(pi, true, None)
                    .or_else(|| self.best_target(pi, false, None))
                else {
                    break;
                };
                let pos = self.parts[pi].replicas.len();
                self.parts[pi].replicas.push(t);
                self.add_load(pi, pos, t);
            }
            // Replicas beyond their rack's share, the later (follower) ones
            // of the most loaded brokers first.
            let cap = self.rack_cap(self.parts[pi].rf);
            let mut stuck = BTreeSet::new();
            loop {
                let over = self.parts[pi]
                    .replicas
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        !stuck.contains(*b) && self.rack_count(pi, self.rack[**b]) > cap
                    })
                    .max_by_key(|&(pos, &b)| (self.count[b], pos))
                    .map(|(pos, &b)| (pos, b));
                let Some((pos, b)) = over else { break };
                match self.best_target(pi, true, Some(b)) {
                    Some(t) => self.replace(pi, pos, t),
                    None => {
                        stuck.insert(b);
                    }
                }
            }
            if !stuck.is_empty() {
                self.warnings.push(format!(
                    "{}: the brokers' racks do not allow spreading its {} replicas further",
                    self.name(pi),
                    self.parts[pi].rf
                ));
            }
        }
    }

    // ---------------------------------------------------------------- pass 2

    fn replica_bounds(&self) -> (u64, u64) {
        let total: u64 = self.eligible.iter().map(|&b| self.count[b]).sum();
        count_bounds(
            total,
            self.eligible.len() as u64,
            u64::from(self.tol.replicas),
        )
    }

    /// Returns whether anything moved.
    fn balance_replicas(&mut self) -> bool {
        let (lo, hi) = self.replica_bounds();
        let limit = 2 * self.parts.iter().map(|p| p.rf).sum::<usize>() + 16;
        let mut moved = false;
        for _ in 0..limit {
            let mut desc = self.eligible.clone();
            desc.sort_by_key(|&b| (Reverse(self.count[b]), b));
            let mut asc = self.eligible.clone();
            asc.sort_by_key(|&b| (self.count[b], b));
            let mut step = None;
            'search: for &a in &desc {
                for &b in &asc {
                    if self.count[a] < self.count[b] + 2 {
                        break;
                    }
                    if self.count[a] <= hi && self.count[b] >= lo {
                        continue;
                    }
                    if let Some(pi) = self.replica_to_move(a, b) {
                        step = Some((pi, a, b));
                        break 'search;
                    }
                }
            }
            let Some((pi, a, b)) = step else { break };
            let pos = self.position(pi, a);
            self.replace(pi, pos, b);
            moved = true;
        }
        moved
    }

    /// The replica on `a` to move to `b`: the one closest to halving their
    /// byte difference, a follower rather than a preferred leader.
    fn replica_to_move(&self, a: usize, b: usize) -> Option<usize> {
        let half = (i128::from(self.bytes[a]) - i128::from(self.bytes[b])) / 2;
        self.on[a]
            .iter()
            .copied()
            .filter(|&pi| self.can_move(pi, a, b))
            .min_by_key(|&pi| {
                let size = i128::from(self.parts[pi].size);
                (
                    (half - size).unsigned_abs(),
                    self.parts[pi].replicas[0] == a,
                    pi,
                )
            })
    }

    // ---------------------------------------------------------------- pass 3

    fn byte_bounds(&self) -> (f64, f64) {
        let total: u64 = self.eligible.iter().map(|&b| self.bytes[b]).sum();
        let avg = total as f64 / self.eligible.len().max(1) as f64;
        let f = self.tol.bytes_fraction.max(0.0);
        (avg * (1.0 - f), avg * (1.0 + f))
    }

    /// Returns whether anything moved.
    fn balance_bytes(&mut self) -> bool {
        let (lo, hi) = self.byte_bounds();
        let (clo, chi) = self.replica_bounds();
        let limit = 2 * self.parts.iter().map(|p| p.rf).sum::<usize>() + 16;
        let mut moved = false;
        for _ in 0..limit {
            let mut desc = self.eligible.clone();
            desc.sort_by_key(|&b| (Reverse(self.bytes[b]), b));
            let mut asc = self.eligible.clone();
            asc.sort_by_key(|&b| (self.bytes[b], b));
            let mut step = None;
            'search: for &a in &desc {
                for &b in &asc {
                    if self.bytes[a] <= self.bytes[b] {
                        break;
                    }
                    if self.bytes[a] as f64 <= hi && self.bytes[b] as f64 >= lo {
                        continue;
                    }
                    if let Some(s) = self.byte_step(a, b, clo, chi) {
                        step = Some(s);
                        break 'search;
                    }
                }
            }
            let Some(step) = step else { break };
            moved = true;
            match step {
                ByteStep::Move { pi, a, b } => {
                    let pos = self.position(pi, a);
                    self.replace(pi, pos, b);
                }
                ByteStep::Swap { p, q, a, b } => {
                    let pos = self.position(p, a);
                    self.replace(p, pos, b);
                    let pos = self.position(q, b);
                    self.replace(q, pos, a);
                }
            }
        }
        moved
    }

    /// The best single move or swap from `a` to `b` that lowers the sum of
    /// squared byte loads, scored by gain per moved replica.
    fn byte_step(&self, a: usize, b: usize, clo: u64, chi: u64) -> Option<ByteStep> {
        let diff = u128::from(self.bytes[a] - self.bytes[b]);
        // Moving d bytes from a to b lowers a² + b² by 2·d·(diff − d).
        let gain = |d: u128| if d > 0 && d < diff { d * (diff - d) } else { 0 };
        let movable: Vec<usize> = self.on[a]
            .iter()
            .copied()
            .filter(|&pi| self.can_place(pi, a, b))
            .collect();
        let lhi = self.leader_bounds().1;
        let mut best: Option<(u128, ByteStep)> = None;
        if self.count[a] > clo && self.count[b] < chi {
            for &pi in movable.iter().filter(|&&pi| self.can_move(pi, a, b)) {
                let g = gain(u128::from(self.parts[pi].size));
                if g > 0 && best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                    best = Some((g, ByteStep::Move { pi, a, b }));
                }
            }
        }
        let mut back: Vec<(u64, usize)> = self.on[b]
            .iter()
            .copied()
            .filter(|&qi| self.can_place(qi, b, a))
            .map(|qi| (self.parts[qi].size, qi))
            .collect();
        back.sort_unstable();
        for &pi in &movable {
            let sp = u128::from(self.parts[pi].size);
            // The ideal partner is diff/2 smaller than p.
            let ideal = sp.saturating_sub(diff / 2);
            let at = back.partition_point(|&(s, _)| u128::from(s) < ideal);
            for k in [at.checked_sub(1), Some(at)].into_iter().flatten() {
                let Some(&(sq, qi)) = back.get(k) else {
                    continue;
                };
                let sq = u128::from(sq);
                if sq >= sp {
                    continue;
                }
                // One-replica partitions carry their leadership: the swap's
                // net change of those must fit the leader bound.
                let pinned_to_b =
                    i64::from(self.parts[pi].rf == 1) - i64::from(self.parts[qi].rf == 1);
                let pins_fit = match pinned_to_b {
                    1 => self.pinned[b] < lhi,
                    -1 => self.pinned[a] < lhi,
                    _ => true,
                };
                if !pins_fit {
                    continue;
                }
                // Two replicas move: half the gain per move.
                let g = gain(sp - sq) / 2;
                if g > 0 && best.as_ref().is_none_or(|(bg, _)| g > *bg) {
                    best = Some((g, ByteStep::Swap { p: pi, q: qi, a, b }));
                }
            }
        }
        best.map(|(_, s)| s)
    }

    // ---------------------------------------------------------------- pass 4

    fn balance_leaders(&mut self) {
        let n = self.ids.len();
        let (lo, hi) = self.leader_bounds();
        // edges[x][y]: partitions led by x with a follower on y.
        let mut edges: Vec<Vec<BTreeSet<usize>>> = vec![vec![BTreeSet::new(); n]; n];
        for (pi, p) in self.parts.iter().enumerate() {
            for &f in &p.replicas[1..] {
                edges[p.replicas[0]][f].insert(pi);
            }
        }
        let limit = 2 * self.parts.len() + 16;
        for _ in 0..limit {
            let mut desc = self.eligible.clone();
            desc.sort_by_key(|&b| (Reverse(self.leaders[b]), b));
            let mut path = None;
            for &a in &desc {
                if let Some(p) = self.leader_path(a, &edges, lo, hi) {
                    path = Some(p);
                    break;
                }
            }
            let Some(path) = path else { return };
            for w in path.windows(2) {
                let (x, y) = (w[0], w[1]);
                let Some(&pi) = edges[x][y].first() else {
                    break;
                };
                for &f in &self.parts[pi].replicas[1..] {
                    edges[x][f].remove(&pi);
                }
                let pos = self.position(pi, y);
                self.parts[pi].replicas.swap(0, pos);
                self.leaders[x] -= 1;
                self.leaders[y] += 1;
                for &f in &self.parts[pi].replicas[1..] {
                    edges[y][f].insert(pi);
                }
            }
        }
    }

    /// Data moves for leader balance, when reorders cannot reach it: a
    /// partition led by an over-led broker `a` moves its leader replica to
    /// an under-led `b` (alone, or swapped with a follower replica of `b`).
    /// Returns whether anything moved.
    fn move_leaders(&mut self) -> bool {
        let (lo, hi) = self.leader_bounds();
        let (clo, chi) = self.replica_bounds();
        let limit = self.parts.len() + 16;
        let mut moved = false;
        for _ in 0..limit {
            let mut desc = self.eligible.clone();
            desc.sort_by_key(|&b| (Reverse(self.leaders[b]), b));
            let mut asc = self.eligible.clone();
            asc.sort_by_key(|&b| (self.leaders[b], b));
            let mut step = None;
            'search: for &a in &desc {
                for &b in &asc {
                    if self.leaders[a] < self.leaders[b] + 2 {
                        break;
                    }
                    if self.leaders[a] <= hi && self.leaders[b] >= lo {
                        continue;
                    }
                    if let Some(s) = self.leader_step(a, b, clo, chi) {
                        step = Some(s);
                        break 'search;
                    }
                }
            }
            let Some(step) = step else { break };
            moved = true;
            match step {
                ByteStep::Move { pi, b, .. } => self.replace(pi, 0, b),
                ByteStep::Swap { p, q, a, b } => {
                    self.replace(p, 0, b);
                    let pos = self.position(q, b);
                    self.replace(q, pos, a);
                }
            }
        }
        moved
    }

    /// How far a byte load is outside the byte tolerance.
    fn byte_excess(&self, v: u64) -> u64 {
        let (lo, hi) = self.byte_bounds();
        let v = v as f64;
        if v > hi {
            (v - hi).ceil() as u64
        } else if v < lo {
            (lo - v).ceil() as u64
        } else {
            0
        }
    }

    /// The move or swap for [`Self::move_leaders`] that leaves bytes the
    /// most even. While bytes are within their tolerance, it must keep them
    /// there; once the byte pass could not even them out, leaders come
    /// first.
    fn leader_step(&self, a: usize, b: usize, clo: u64, chi: u64) -> Option<ByteStep> {
        let bytes_even = self
            .eligible
            .iter()
            .all(|&x| self.byte_excess(self.bytes[x]) == 0);
        let excess = |da: i128| {
            let na = (i128::from(self.bytes[a]) - da).max(0) as u64;
            let nb = (i128::from(self.bytes[b]) + da).max(0) as u64;
            self.byte_excess(na) + self.byte_excess(nb)
        };
        let led: Vec<usize> = self.on[a]
            .iter()
            .copied()
            .filter(|&pi| self.parts[pi].replicas[0] == a && self.can_place(pi, a, b))
            .collect();
        // (bytes out of tolerance after, replicas moved, step)
        let mut best: Option<((u64, usize, usize, usize), ByteStep)> = None;
        let mut consider = |key: (u64, usize, usize, usize), step: ByteStep| {
            if (key.0 == 0 || !bytes_even) && best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, step));
            }
        };
        if self.count[a] > clo && self.count[b] < chi {
            for &pi in &led {
                let d = i128::from(self.parts[pi].size);
                consider((excess(d), 1, pi, 0), ByteStep::Move { pi, a, b });
            }
        }
        let followers: Vec<usize> = self.on[b]
            .iter()
            .copied()
            .filter(|&qi| self.parts[qi].replicas[0] != b && self.can_place(qi, b, a))
            .collect();
        for &pi in &led {
            for &qi in &followers {
                let d = i128::from(self.parts[pi].size) - i128::from(self.parts[qi].size);
                consider(
                    (excess(d), 2, pi, qi),
                    ByteStep::Swap { p: pi, q: qi, a, b },
                );
            }
        }
        best.map(|(_, s)| s)
    }

    /// The shortest chain of leadership hand-overs from `a` to the broker
    /// leading the fewest partitions, when that evens things out.
    fn leader_path(
        &self,
        a: usize,
        edges: &[Vec<BTreeSet<usize>>],
        lo: u64,
        hi: u64,
    ) -> Option<Vec<usize>> {
        let la = self.leaders[a];
        if la < 2 {
            return None;
        }
        let n = self.ids.len();
        let mut parent = vec![usize::MAX; n];
        let mut dist = vec![usize::MAX; n];
        dist[a] = 0;
        let mut queue = VecDeque::from([a]);
        let mut best: Option<(u64, usize, usize)> = None;
        while let Some(x) = queue.pop_front() {
            for &y in &self.eligible {
                if dist[y] != usize::MAX || edges[x][y].is_empty() {
                    continue;
                }
                dist[y] = dist[x] + 1;
                parent[y] = x;
                queue.push_back(y);
                let ly = self.leaders[y];
                if ly + 2 <= la && (la > hi || ly < lo) {
                    let key = (ly, dist[y], y);
                    if best.is_none_or(|b| key < b) {
                        best = Some(key);
                    }
                }
            }
        }
        let (_, _, mut y) = best?;
        let mut path = vec![y];
        while y != a {
            y = parent[y];
            path.push(y);
        }
        path.reverse();
        Some(path)
    }

    // ------------------------------------------------------------- summary

    fn loads(&self) -> Vec<Load> {
        (0..self.ids.len())
            .map(|b| Load {
                replicas: self.count[b],
                leaders: self.leaders[b],
                bytes: self.bytes[b],
            })
            .collect()
    }

    fn balance(&self) -> Balance {
        let (rlo, rhi) = self.replica_bounds();
        let (llo, lhi) = self.leader_bounds();
        let (blo, bhi) = self.byte_bounds();
        let constraints = self.parts.iter().enumerate().all(|(pi, p)| {
            let cap = self.rack_cap(p.rf);
            p.replicas.len() == p.rf
                && p.replicas.iter().all(|&b| !self.draining[b])
                && p.replicas
                    .iter()
                    .all(|&b| self.rack_count(pi, self.rack[b]) <= cap)
        });
        // Loads on brokers that must end empty count against the balance
        // too: the eligible brokers' totals then differ from the sums.
        let stranded = (0..self.ids.len()).any(|b| self.draining[b] && self.count[b] > 0);
        Balance {
            replicas: !stranded
                && self
                    .eligible
                    .iter()
                    .all(|&b| (rlo..=rhi).contains(&self.count[b])),
            leaders: !stranded
                && self
                    .eligible
                    .iter()
                    .all(|&b| (llo..=lhi).contains(&self.leaders[b])),
            bytes: !stranded
                && self.eligible.iter().all(|&b| {
                    let v = self.bytes[b] as f64;
                    v >= blo && v <= bhi
                }),
            constraints,
        }
    }

    fn explain(&mut self, after: &Balance) {
        if !after.replicas {
            self.warnings.push(
                "replicas per broker cannot be evened out within the tolerance: the rack \
                 constraint leaves no legal move"
                    .to_string(),
            );
        }
        if !after.bytes {
            self.warnings.push(
                "bytes per broker cannot be evened out within the tolerance without breaking \
                 the replica balance or the rack constraint (partition sizes too uneven)"
                    .to_string(),
            );
        }
        if !after.leaders {
            self.warnings.push(
                "preferred leaders per broker cannot be evened out by reordering replicas"
                    .to_string(),
            );
        }
    }

    fn into_plan(
        self,
        input: &[Partition],
        before_loads: Vec<Load>,
        before: Balance,
        after: Balance,
    ) -> Plan {
        let by_key: BTreeMap<(&str, i32), &Partition> = input
            .iter()
            .map(|p| ((p.topic.as_str(), p.partition), p))
            .collect();
        let mut moves = Vec::new();
        for p in &self.parts {
            let Some(orig) = by_key.get(&(p.topic.as_str(), p.partition)) else {
                continue;
            };
            let to: Vec<i32> = p.replicas.iter().map(|&b| self.ids[b]).collect();
            if to == orig.replicas {
                continue;
            }
            moves.push(Move {
                topic: p.topic.clone(),
                partition: p.partition,
                from: orig.replicas.clone(),
                added: to
                    .iter()
                    .copied()
                    .filter(|b| !orig.replicas.contains(b))
                    .collect(),
                removed: orig
                    .replicas
                    .iter()
                    .copied()
                    .filter(|b| !to.contains(b))
                    .collect(),
                to,
                size_bytes: p.size,
            });
        }
        let after_loads = self.loads();
        let brokers = (0..self.ids.len())
            .map(|b| BrokerLoad {
                id: self.ids[b],
                rack: self.racks[b].clone(),
                draining: self.draining[b] && !self.unknown[b],
                unknown: self.unknown[b],
                before: before_loads[b],
                after: after_loads[b],
            })
            .collect::<Vec<_>>();
        let mut brokers = brokers;
        brokers.sort_by_key(|b| b.id);
        let summary = Summary {
            brokers,
            partitions_changed: moves.len(),
            replica_moves: moves.iter().map(|m| m.added.len()).sum(),
            leadership_only: moves
                .iter()
                .filter(|m| m.kind() == crate::MoveKind::Reorder)
                .count(),
            bytes_moved: moves.iter().map(Move::bytes_moved).sum(),
            leader_not_preferred_before: self.leader_not_preferred,
            before,
            after,
        };
        let mut warnings: Vec<String> = (0..self.ids.len())
            .filter(|&b| self.unknown[b])
            .map(|b| {
                format!(
                    "broker {} holds replicas but is not a cluster member (offline or removed): \
                     its replicas are moved off it",
                    self.ids[b]
                )
            })
            .collect();
        warnings.extend(self.warnings);
        Plan {
            moves,
            summary,
            warnings,
        }
    }
}

enum ByteStep {
    Move {
        pi: usize,
        a: usize,
        b: usize,
    },
    Swap {
        p: usize,
        q: usize,
        a: usize,
        b: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::count_bounds;

    #[test]
    fn bounds_are_the_tolerance_around_the_average_widened_to_its_rounding() {
        assert_eq!(count_bounds(8, 2, 1), (3, 5));
        assert_eq!(count_bounds(9, 2, 1), (4, 5));
        assert_eq!(count_bounds(9, 2, 0), (4, 5));
        assert_eq!(count_bounds(8, 2, 0), (4, 4));
        assert_eq!(count_bounds(1, 4, 1), (0, 1));
        assert_eq!(count_bounds(0, 3, 1), (0, 1));
    }
}
