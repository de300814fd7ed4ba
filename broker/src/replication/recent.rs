//! The partition's latest entries, kept in memory as written until they are
//! applied: replication sends them and `apply` reads them right after the
//! append, and at thousands of entries a second reading them back from the
//! segment files cost a few syscalls each (docs/benchmarks.md, session 9).
//!
//! The cache is always one contiguous run of indexes ending at the last
//! entry written, so a range is either wholly here or read from the log.

use std::collections::VecDeque;

use bytes::Bytes;

/// Bytes of unapplied entries kept per partition. Unapplied entries are the
/// ones in flight, so this is rarely reached; past it the oldest go.
pub const BUDGET: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct RecentEntries {
    entries: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

impl RecentEntries {
    /// Entry `index` as stored (offsets assigned). An entry that does not
    /// follow the last one starts the run afresh; one above the budget
    /// empties it.
    pub fn push(&mut self, index: u64, batch: Bytes) {
        if self.entries.back().is_some_and(|(i, _)| i + 1 != index) {
            self.clear();
        }
        if batch.len() > BUDGET {
            self.clear();
            return;
        }
        self.bytes += batch.len();
        self.entries.push_back((index, batch));
        while self.bytes > BUDGET {
            self.pop_front();
        }
    }

    /// Forgets entries from `index` on (a truncated tail).
    pub fn truncate_from(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(i, _)| *i >= index) {
            if let Some((_, b)) = self.entries.pop_back() {
                self.bytes -= b.len();
            }
        }
    }

    /// Forgets entries up to and including `index` (applied or purged).
    pub fn release_through(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(i, _)| *i <= index) {
            self.pop_front();
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// Entries `start..end` when every one of them is here.
    pub fn range(&self, start: u64, end: u64) -> Option<impl Iterator<Item = (u64, &Bytes)>> {
        let first = self.entries.front()?.0;
        let last = self.entries.back()?.0;
        if start < first || end == 0 || end - 1 > last || start >= end {
            return None;
        }
        let from = (start - first) as usize;
        let to = (end - first) as usize;
        Some(self.entries.range(from..to).map(|(i, b)| (*i, b)))
    }

    fn pop_front(&mut self) {
        if let Some((_, b)) = self.entries.pop_front() {
            self.bytes -= b.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexes(r: &RecentEntries, start: u64, end: u64) -> Option<Vec<u64>> {
        r.range(start, end).map(|it| it.map(|(i, _)| i).collect())
    }

    #[test]
    fn serves_only_wholly_cached_ranges() {
        let mut r = RecentEntries::default();
        for i in 5..10 {
            r.push(i, Bytes::from(vec![0u8; 10]));
        }
        assert_eq!(indexes(&r, 5, 10), Some((5..10).collect()));
        assert_eq!(indexes(&r, 7, 9), Some(vec![7, 8]));
        assert_eq!(indexes(&r, 4, 9), None);
        assert_eq!(indexes(&r, 6, 11), None);
        assert_eq!(indexes(&r, 6, 6), None);
    }

    #[test]
    fn a_gap_truncation_and_release_keep_the_run_contiguous() {
        let mut r = RecentEntries::default();
        for i in 1..6 {
            r.push(i, Bytes::from_static(b"abc"));
        }
        r.truncate_from(4);
        assert_eq!(indexes(&r, 1, 4), Some(vec![1, 2, 3]));
        // After a truncation the log continues at 4.
        r.push(4, Bytes::from_static(b"new"));
        assert_eq!(r.range(4, 5).unwrap().next().unwrap().1.as_ref(), b"new");
        r.release_through(2);
        assert_eq!(indexes(&r, 1, 5), None);
        assert_eq!(indexes(&r, 3, 5), Some(vec![3, 4]));
        // Not the next index: start afresh.
        r.push(9, Bytes::from_static(b"x"));
        assert_eq!(indexes(&r, 3, 5), None);
        assert_eq!(indexes(&r, 9, 10), Some(vec![9]));
        assert_eq!(r.bytes, 1);
    }

    #[test]
    fn the_budget_drops_the_oldest_and_skips_a_huge_entry() {
        let mut r = RecentEntries::default();
        let half = BUDGET / 2;
        r.push(1, Bytes::from(vec![0u8; half]));
        r.push(2, Bytes::from(vec![0u8; half]));
        r.push(3, Bytes::from(vec![0u8; half]));
        assert_eq!(indexes(&r, 2, 4), Some(vec![2, 3]));
        assert_eq!(indexes(&r, 1, 2), None);
        r.push(4, Bytes::from(vec![0u8; BUDGET + 1]));
        assert_eq!(indexes(&r, 3, 4), None);
        assert_eq!(r.bytes, 0);
        r.push(5, Bytes::from_static(b"y"));
        assert_eq!(indexes(&r, 5, 6), Some(vec![5]));
    }
}
