//! The partition's latest entries, kept in memory as written: replication
//! sends them and `apply` reads them right after the append, and at
//! thousands of entries a second reading them back from the segment files
//! cost a few syscalls each (docs/benchmarks.md, session 9).
//!
//! On the leader an entry is kept past its apply, up to [`RETAIN`] after
//! it was written: the commit needs only the faster follower, so the slower
//! one asks for the entry after it is applied, and with ~1 MB client
//! batches reading it back cost the leader more than the write did
//! (docs/benchmarks.md, session 11). Memory stays bounded per partition
//! ([`PARTITION_BUDGET`]) and per broker ([`Budget`]), and no entry stays
//! past [`RETAIN`], applied or not: a partition without a quorum, whose
//! entries never apply, does not hold the broker's budget, and an idle
//! partition gives its entries up at the next [`RecentEntries::expire`].
//!
//! The cache is always one contiguous run of indexes ending at the last
//! entry written, so a range is either wholly here or read from the log.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Bytes cached per partition; past it the oldest go.
pub const PARTITION_BUDGET: usize = 32 << 20;
/// How long after its write an entry stays at most: the leader keeps an
/// applied one this long for a slower follower (one further behind reads
/// from the log, as it must anyway).
pub const RETAIN: Duration = Duration::from_secs(1);

/// Bytes cached by all partitions of the process together. Past the limit
/// a partition that writes first gives up its own applied entries, then its
/// oldest.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub const fn new(limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// The broker's budget: a few partitions' worth of fast writes.
pub static BROKER_BUDGET: Budget = Budget::new(256 << 20);

#[derive(Debug)]
struct Cached {
    index: u64,
    batch: Bytes,
    /// Kept past its apply for the followers (written as leader).
    for_followers: bool,
    written: Instant,
}

#[derive(Debug)]
pub struct RecentEntries {
    entries: VecDeque<Cached>,
    bytes: usize,
    /// The last applied index.
    applied: Option<u64>,
    budget: &'static Budget,
}

impl Default for RecentEntries {
    fn default() -> Self {
        Self::with_budget(&BROKER_BUDGET)
    }
}

impl Drop for RecentEntries {
    fn drop(&mut self) {
        self.clear();
    }
}

impl RecentEntries {
    pub fn with_budget(budget: &'static Budget) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            applied: None,
            budget,
        }
    }

    /// Entry `index` as stored (offsets assigned); `for_followers` when this
    /// replica wrote it as leader. An entry that does not follow the last
    /// one starts the run afresh; one above the budget empties it.
    pub fn push(&mut self, index: u64, batch: Bytes, for_followers: bool, now: Instant) {
        if self.entries.back().is_some_and(|c| c.index + 1 != index) {
            self.clear();
        }
        if batch.len() > PARTITION_BUDGET {
            self.clear();
            return;
        }
        self.bytes += batch.len();
        self.budget.used.fetch_add(batch.len(), Ordering::Relaxed);
        self.entries.push_back(Cached {
            index,
            batch,
            for_followers,
            written: now,
        });
        self.expire(now);
        while self.bytes > PARTITION_BUDGET || (self.budget.over() && !self.entries.is_empty()) {
            self.pop_front();
        }
    }

    /// Entry `index` is applied: what is not kept for the followers goes.
    pub fn applied(&mut self, index: u64, now: Instant) {
        self.applied = Some(index);
        self.expire(now);
    }

    /// Gives up the entries no longer worth keeping: those written
    /// [`RETAIN`] ago, and applied ones not kept for followers or while the
    /// broker is over its budget.
    pub fn expire(&mut self, now: Instant) {
        let squeezed = self.budget.over();
        while let Some(c) = self.entries.front() {
            let applied = self.applied.is_some_and(|a| c.index <= a);
            let done = now.duration_since(c.written) >= RETAIN
                || (applied && (squeezed || !c.for_followers));
            if !done {
                break;
            }
            self.pop_front();
        }
    }

    /// Forgets entries from `index` on (a truncated tail).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|c| c.index >= index) {
            if let Some(c) = self.entries.pop_back() {
                self.forget(&c);
            }
        }
    }

    /// Forgets entries up to and including `index` (purged).
    pub fn release_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|c| c.index <= index) {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `start..end` when every one of them is here.
    pub fn range(&self, start: u64, end: u64) -> Option<impl Iterator<Item = (u64, &Bytes)>> {
        let first = self.entries.front()?.index;
        let last = self.entries.back()?.index;
        if start < first || end == 0 || end - 1 > last || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..to).map(|c| (c.index, &c.batch)))
    }

    fn pop_front(&mut self) {
        if let Some(c) = self.entries.pop_front() {
            self.forget(&c);
        }
    }

    fn forget(&mut self, c: &Cached) {
        self.bytes -= c.batch.len();
        self.budget.used.fetch_sub(c.batch.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> &'static Budget {
        Box::leak(Box::new(Budget::new(limit)))
    }

    fn indexes(r: &RecentEntries, start: u64, end: u64) -> Option<Vec<u64>> {
        r.range(start, end).map(|it| it.map(|(i, _)| i).collect())
    }

    #[test]
    fn serves_only_wholly_cached_ranges() {
        let mut r = RecentEntries::with_budget(budget(usize::MAX));
        let now = Instant::now();
        for i in 5..10 {
            r.push(i, Bytes::from(vec![0u8; 10]), true, now);
        }
        assert_eq!(indexes(&r, 5, 10), Some((5..10).collect()));
        assert_eq!(indexes(&r, 7, 9), Some(vec![7, 8]));
        assert_eq!(indexes(&r, 4, 9), None);
        assert_eq!(indexes(&r, 6, 11), None);
        assert_eq!(indexes(&r, 6, 6), None);
    }

    #[test]
    fn a_gap_truncation_and_purge_keep_the_run_contiguous() {
        let b = budget(usize::MAX);
        let mut r = RecentEntries::with_budget(b);
        let now = Instant::now();
        for i in 1..6 {
            r.push(i, Bytes::from_static(b"abc"), true, now);
        }
        r.truncate_from(4);
        assert_eq!(indexes(&r, 1, 4), Some(vec![1, 2, 3]));
        // After a truncation the log continues at 4.
        r.push(4, Bytes::from_static(b"new"), true, now);
        assert_eq!(r.range(4, 5).unwrap().next().unwrap().1.as_ref(), b"new");
        r.release_through(2);
        assert_eq!(indexes(&r, 1, 5), None);
        assert_eq!(indexes(&r, 3, 5), Some(vec![3, 4]));
        // Not the next index: start afresh.
        r.push(9, Bytes::from_static(b"x"), true, now);
        assert_eq!(indexes(&r, 3, 5), None);
        assert_eq!(indexes(&r, 9, 10), Some(vec![9]));
        assert_eq!((r.bytes, b.used()), (1, 1));
        drop(r);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn the_partition_budget_drops_the_oldest_and_skips_a_huge_entry() {
        let mut r = RecentEntries::with_budget(budget(usize::MAX));
        let now = Instant::now();
        let half = PARTITION_BUDGET / 2;
        r.push(1, Bytes::from(vec![0u8; half]), true, now);
        r.push(2, Bytes::from(vec![0u8; half]), true, now);
        r.push(3, Bytes::from(vec![0u8; half]), true, now);
        assert_eq!(indexes(&r, 2, 4), Some(vec![2, 3]));
        assert_eq!(indexes(&r, 1, 2), None);
        r.push(4, Bytes::from(vec![0u8; PARTITION_BUDGET + 1]), true, now);
        assert_eq!(indexes(&r, 3, 4), None);
        assert_eq!(r.bytes, 0);
        r.push(5, Bytes::from_static(b"y"), true, now);
        assert_eq!(indexes(&r, 5, 6), Some(vec![5]));
    }

    #[test]
    fn a_leaders_applied_entries_stay_for_a_moment_a_followers_go_at_once() {
        let mut r = RecentEntries::with_budget(budget(usize::MAX));
        let t0 = Instant::now();
        r.push(1, Bytes::from_static(b"a"), true, t0);
        r.push(2, Bytes::from_static(b"b"), true, t0);
        r.applied(2, t0);
        // A slower follower still finds them.
        assert_eq!(indexes(&r, 1, 3), Some(vec![1, 2]));
        r.expire(t0 + RETAIN / 2);
        assert_eq!(indexes(&r, 1, 3), Some(vec![1, 2]));
        // Idle: the periodic expiry lets them go.
        r.expire(t0 + RETAIN);
        assert_eq!(indexes(&r, 2, 3), None);
        assert_eq!(r.bytes, 0);

        // Written as a follower: released on apply.
        r.push(3, Bytes::from_static(b"c"), false, t0);
        r.push(4, Bytes::from_static(b"d"), false, t0);
        r.applied(3, t0);
        assert_eq!(indexes(&r, 3, 4), None);
        assert_eq!(indexes(&r, 4, 5), Some(vec![4]));
    }

    #[test]
    fn entries_that_never_apply_go_after_the_retention_too() {
        // A partition without a quorum must not hold the broker's budget.
        let mut r = RecentEntries::with_budget(budget(usize::MAX));
        let t0 = Instant::now();
        r.push(1, Bytes::from_static(b"a"), true, t0);
        r.push(2, Bytes::from_static(b"b"), false, t0 + RETAIN / 2);
        r.expire(t0 + RETAIN / 2);
        assert_eq!(indexes(&r, 1, 3), Some(vec![1, 2]));
        r.expire(t0 + RETAIN);
        assert_eq!(indexes(&r, 1, 2), None);
        assert_eq!(indexes(&r, 2, 3), Some(vec![2]));
        r.expire(t0 + RETAIN * 2);
        assert_eq!(r.bytes, 0);
    }

    #[test]
    fn over_the_broker_budget_kept_entries_go_first_then_the_oldest() {
        let b = budget(100);
        let now = Instant::now();
        let mut busy = RecentEntries::with_budget(b);
        let mut other = RecentEntries::with_budget(b);
        other.push(1, Bytes::from(vec![0u8; 60]), true, now);
        busy.push(1, Bytes::from(vec![0u8; 30]), true, now);
        busy.applied(1, now);
        assert_eq!(b.used(), 90);
        // Over the limit: busy gives up its applied entry, keeps the new one.
        busy.push(2, Bytes::from(vec![0u8; 30]), true, now);
        assert_eq!(indexes(&busy, 1, 2), None);
        assert_eq!(indexes(&busy, 2, 3), Some(vec![2]));
        assert_eq!(b.used(), 90);
        // Still over with nothing applied to give: the oldest go.
        busy.push(3, Bytes::from(vec![0u8; 30]), true, now);
        assert!(b.used() <= 100, "{}", b.used());
        assert_eq!(indexes(&other, 1, 2), Some(vec![1]));
        drop(busy);
        drop(other);
        assert_eq!(b.used(), 0);
    }
}
