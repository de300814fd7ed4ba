//! Sparse per-segment indexes, held in memory and persisted when a segment is
//! sealed.
//!
//! * Offset index (`.index`): 8-byte entries `relative base offset u32 | file
//!   position u32`, each pointing at the start of a batch. Both columns grow
//!   strictly, so one binary search answers "where do I start scanning".
//! * Time index (`.timeindex`): 12-byte entries `max timestamp so far i64 |
//!   relative last offset u32 of the batch that reached it`. Timestamps grow
//!   strictly, so every batch up to an entry's offset has a timestamp no
//!   greater than the entry's. The last entry of a sealed segment is the
//!   segment's largest timestamp.

pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

#[derive(Debug, Default)]
pub(crate) struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    pub fn push(&mut self, entry: OffsetEntry) {
        if self
            .entries
            .last()
            .is_none_or(|last| entry.rel_offset > last.rel_offset && entry.position > last.position)
        {
            self.entries.push(entry);
        }
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// The entry with the largest relative offset `<= rel`.
    pub fn floor(&self, rel: u64) -> Option<OffsetEntry> {
        let i = self
            .entries
            .partition_point(|e| u64::from(e.rel_offset) <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry at or before `position` whose offset is below `rel_limit`.
    /// Both conditions are monotonic along the index, so their conjunction is too.
    pub fn last_within(&self, position: u64, rel_limit: u64) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| {
            u64::from(e.position) <= position && u64::from(e.rel_offset) < rel_limit
        });
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.rel_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// Decodes an index file, rejecting anything a correct writer could not
    /// have produced for a segment of `segment_len` bytes spanning `rel_end`
    /// offsets.
    pub fn decode(bytes: &[u8], segment_len: u64, rel_end: u64) -> Result<OffsetIndex, String> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_LEN) {
            return Err(format!(
                "offset index length {} is not a multiple of {OFFSET_ENTRY_LEN}",
                bytes.len()
            ));
        }
        let mut entries: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
            let e = OffsetEntry {
                rel_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if u64::from(e.position) >= segment_len || u64::from(e.rel_offset) >= rel_end {
                return Err(format!("offset index entry {e:?} lies outside the segment"));
            }
            if let Some(last) = entries.last()
                && !(e.rel_offset > last.rel_offset && e.position > last.position)
            {
                return Err(format!("offset index entry {e:?} does not follow {last:?}"));
            }
            entries.push(e);
        }
        Ok(OffsetIndex { entries })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub rel_offset: u32,
}

#[derive(Debug, Default)]
pub(crate) struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// Appends only when the timestamp grows, keeping the column sorted.
    pub fn maybe_push(&mut self, entry: TimeEntry) {
        if self.entries.last().is_none_or(|last| {
            entry.timestamp > last.timestamp && entry.rel_offset >= last.rel_offset
        }) {
            self.entries.push(entry);
        }
    }

    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// The entry with the largest timestamp strictly below `timestamp`: every
    /// batch up to its offset is older than `timestamp`.
    pub fn below(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_LEN);
        for e in &self.entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.rel_offset.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8], rel_end: u64) -> Result<TimeIndex, String> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_LEN) {
            return Err(format!(
                "time index length {} is not a multiple of {TIME_ENTRY_LEN}",
                bytes.len()
            ));
        }
        let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
        for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&chunk[..8]);
            let e = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                rel_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            if u64::from(e.rel_offset) >= rel_end {
                return Err(format!("time index entry {e:?} lies outside the segment"));
            }
            if let Some(last) = entries.last()
                && !(e.timestamp > last.timestamp && e.rel_offset >= last.rel_offset)
            {
                return Err(format!("time index entry {e:?} does not follow {last:?}"));
            }
            entries.push(e);
        }
        Ok(TimeIndex { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_and_last_within_find_the_right_entries() {
        let mut idx = OffsetIndex::default();
        for (o, p) in [(10, 100), (20, 200), (30, 300)] {
            idx.push(OffsetEntry {
                rel_offset: o,
                position: p,
            });
        }
        assert_eq!(idx.floor(5), None);
        assert_eq!(idx.floor(20).map(|e| e.position), Some(200));
        assert_eq!(idx.floor(29).map(|e| e.position), Some(200));
        assert_eq!(idx.last_within(250, 100).map(|e| e.position), Some(200));
        assert_eq!(idx.last_within(1000, 30).map(|e| e.position), Some(200));
        let round = OffsetIndex::decode(&idx.encode(), 301, 31).expect("decodes");
        assert_eq!(round.entries, idx.entries);
        assert!(OffsetIndex::decode(&idx.encode(), 300, 31).is_err());
        assert!(OffsetIndex::decode(&idx.encode()[..7], 301, 31).is_err());
    }

    #[test]
    fn time_index_keeps_growing_timestamps_only() {
        let mut idx = TimeIndex::default();
        for (t, o) in [(5, 0), (5, 3), (4, 4), (9, 6)] {
            idx.maybe_push(TimeEntry {
                timestamp: t,
                rel_offset: o,
            });
        }
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.below(5), None);
        assert_eq!(idx.below(6).map(|e| e.rel_offset), Some(0));
        assert_eq!(idx.below(100).map(|e| e.rel_offset), Some(6));
        let round = TimeIndex::decode(&idx.encode(), 7).expect("decodes");
        assert_eq!(round.entries, idx.entries);
        assert!(TimeIndex::decode(&idx.encode(), 6).is_err());
    }
}
