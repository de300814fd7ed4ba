//! The public partition log: an ordered run of segments, the last one active.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batch::{self, BatchHeader};
use crate::config::{LogConfig, TimestampMode};
use crate::error::LogError;
use crate::segment::{
    self, MAX_RELATIVE_OFFSET, MAX_SEGMENT_BYTES, PageDrop, Planned, Segment, index_path, sync_dir,
    time_index_path, write_atomic,
};

/// Holds the log start offset when DeleteRecords or retention moved it; the
/// segment files alone cannot say that it lies inside the first segment.
const LOG_START_FILE: &str = "log-start-offset";

/// What an append stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The stamped time when the topic uses LogAppendTime.
    pub log_append_time: Option<i64>,
    pub log_start_offset: i64,
    pub record_count: u64,
    pub bytes: u64,
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes cut from torn or corrupt segment tails.
    pub truncated_bytes: u64,
    pub log_end_offset: i64,
}

/// What `enforce_retention` deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

/// Whole batches planned by `read`, loadable without holding the log's lock.
///
/// It owns a handle on the segment file, so it stays readable even if
/// retention deletes the segment meanwhile.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    file: Option<Arc<File>>,
    position: u64,
    len: usize,
    /// Base offset of the first batch, or the requested offset when empty.
    pub first_offset: i64,
    /// Offset after the last batch in the slice (the requested offset when
    /// empty): where a follower or consumer continues.
    pub next_offset: i64,
}

impl ReadSlice {
    fn empty(offset: i64) -> ReadSlice {
        ReadSlice {
            file: None,
            position: 0,
            len: 0,
            first_offset: offset,
            next_offset: offset,
        }
    }

    fn planned(file: &Arc<File>, p: Planned) -> ReadSlice {
        if p.len == 0 {
            return ReadSlice::empty(p.first_offset);
        }
        ReadSlice {
            file: Some(Arc::clone(file)),
            position: p.position,
            len: usize::try_from(p.len).unwrap_or(usize::MAX),
            first_offset: p.first_offset,
            next_offset: p.next_offset,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Position of the slice in its segment file.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads the bytes with positional reads; needs no lock on the log.
    ///
    /// # Errors
    /// I/O errors from the segment file.
    pub fn load(&self) -> io::Result<Bytes> {
        let Some(file) = &self.file else {
            return Ok(Bytes::new());
        };
        let mut buf = vec![0u8; self.len];
        file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// Smallest append written past the page cache (see
/// [`PartitionLog::set_direct_appends`]).
pub const DIRECT_MIN_BYTES: u64 = 64 << 10;

/// The durable log of one partition replica. See the crate docs.
#[derive(Debug)]
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Never empty; the last segment is the active one.
    segments: VecDeque<Segment>,
    log_start_offset: i64,
    size_bytes: u64,
    unflushed_records: u64,
    unflushed_since: Option<Instant>,
    /// See [`Self::set_direct_appends`].
    direct_appends: bool,
}

fn parse_base(stem: &str) -> Option<i64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

fn read_log_start(dir: &Path) -> io::Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => match text.trim().parse::<i64>() {
            Ok(v) if v >= 0 => Ok(Some(v)),
            _ => {
                tracing::warn!(file = %path.display(), "ignoring unreadable log start offset file");
                Ok(None)
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn out_of_range(offset: i64, log_start_offset: i64, log_end_offset: i64) -> LogError {
    LogError::OffsetOutOfRange {
        offset,
        log_start_offset,
        log_end_offset,
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, recovering from a crash.
    ///
    /// Sealed segments are trusted once their index files pass consistency
    /// checks (they were fsynced when sealed); otherwise they are rescanned
    /// with CRC checks and their indexes rewritten. The last segment is always
    /// rescanned with CRC checks, and everything from the first torn, corrupt
    /// or out-of-sequence batch on is cut and reported with `tracing::warn`.
    ///
    /// # Errors
    /// I/O errors only; corruption is repaired, not reported as an error.
    pub fn open(dir: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport), LogError> {
        fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                // An interrupted atomic write; the file it replaced is intact.
                fs::remove_file(entry.path())?;
            } else if let Some(base) = name.strip_suffix(".log").and_then(parse_base) {
                bases.push(base);
            } else if let Some(base) = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"))
                .and_then(parse_base)
            {
                index_files.push((base, entry.path()));
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                fs::remove_file(path)?;
            }
        }

        let persisted_start = read_log_start(dir)?;
        if let Some(start) = persisted_start {
            // A crash between persisting a new start offset and unlinking the
            // segments below it leaves them behind; finish the job.
            while bases.len() > 1 && bases[1] <= start {
                let base = bases.remove(0);
                fs::remove_file(segment::log_path(dir, base))?;
                let _ = fs::remove_file(index_path(dir, base));
                let _ = fs::remove_file(time_index_path(dir, base));
            }
        }

        let interval = u64::from(config.index_interval_bytes);
        let mut segments = VecDeque::with_capacity(bases.len().max(1));
        let mut truncated_bytes = 0;
        for (i, &base) in bases.iter().enumerate() {
            let (seg, cut) = match bases.get(i + 1) {
                Some(&next) => Segment::open_sealed(dir, base, next, interval)?,
                None => Segment::recover(dir, base, interval)?,
            };
            truncated_bytes += cut;
            segments.push_back(seg);
        }
        if segments.is_empty() {
            segments.push_back(Segment::create(dir, persisted_start.unwrap_or(0))?);
        }
        sync_dir(dir)?;

        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let log_end_offset = segments.back().map_or(0, |s| s.next_offset);
        let mut log_start_offset = persisted_start.unwrap_or(first_base).max(first_base);
        if log_start_offset > log_end_offset {
            tracing::warn!(
                dir = %dir.display(),
                log_start_offset,
                log_end_offset,
                "log start offset lies past the recovered log end; clamping it"
            );
            log_start_offset = log_end_offset;
        }
        let size_bytes = segments.iter().map(|s| s.size).sum();
        let log = PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            size_bytes,
            unflushed_records: 0,
            unflushed_since: None,
            direct_appends: false,
        };
        let report = RecoveryReport {
            segments: log.segments.len(),
            truncated_bytes,
            log_end_offset,
        };
        tracing::debug!(dir = %dir.display(), ?report, log_start_offset, "partition log opened");
        Ok((log, report))
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes effect from the next append, roll or retention pass.
    pub fn update_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The next offset to assign.
    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty: open creates one and nothing removes the last.
        &self.segments[self.segments.len() - 1]
    }

    fn active_mut(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }

    /// Appends a Produce request's records: one or more v2 batches back to
    /// back. All batches are validated before anything is written; offsets are
    /// assigned consecutively from the log end by rewriting each `baseOffset`
    /// in place, and LogAppendTime is stamped if asked. The bytes go to disk in
    /// one write.
    ///
    /// # Errors
    /// `CorruptBatch` / `InvalidBatch` with nothing stored; `Io` if the write
    /// or a required fsync fails. After a failed write the segment is cut back
    /// to its previous length, so the log stays consistent and usable.
    pub fn append(
        &mut self,
        records: &mut [u8],
        ts: TimestampMode,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(records, ts, None, batch::validate_all)
    }

    /// As [`append`](Self::append), also stamping `partitionLeaderEpoch` on
    /// every batch (the CRC does not cover it).
    ///
    /// # Errors
    /// As [`append`](Self::append).
    pub fn append_with_leader_epoch(
        &mut self,
        records: &mut [u8],
        ts: TimestampMode,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(records, ts, Some(leader_epoch), batch::validate_all)
    }

    /// As [`Self::append_with_leader_epoch`], for batches whose CRCs the
    /// caller checked after they arrived, changing since only what the CRC
    /// does not cover: a leader's own proposal, checked when its Produce
    /// request came in. Their layout is still checked.
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_checked_with_leader_epoch(
        &mut self,
        records: &mut [u8],
        ts: TimestampMode,
        leader_epoch: i32,
    ) -> Result<AppendInfo, LogError> {
        self.append_inner(records, ts, Some(leader_epoch), batch::layout)
    }

    /// The advice, due once per 16 MiB written, that lets the kernel drop
    /// the page cache of the active segment except its last `keep` bytes;
    /// [`PageDrop::run`] it after releasing the log. For a follower's
    /// replica: consumers fetch from the leader, so its written pages would
    /// only crowd out ones that are read, and in a VM each new page-cache
    /// page costs far more than a reused one (docs/benchmarks.md, session
    /// 11).
    pub fn pages_to_drop(&mut self, keep: u64) -> Option<PageDrop> {
        self.active_mut().pages_to_drop(keep)
    }

    /// Whether appends of at least 64 KiB are written past the page cache,
    /// with direct I/O where the file system has it (off by default). A
    /// buffered write copies every byte into a new page-cache page, and in
    /// a VM whose freed memory goes back to the host each new page costs
    /// far more than the write itself (docs/benchmarks.md, session 12).
    /// Reads then come from the device (or its cache) instead. Small
    /// appends always go through the cache: a direct write waits for the
    /// device, which latency-bound small batches cannot afford.
    pub fn set_direct_appends(&mut self, on: bool) {
        self.direct_appends = on;
    }

    /// Appends batches that already carry their offsets, from the log end
    /// on, and `leader_epoch`: a follower's copy of what its leader stored.
    /// Nothing is rewritten, so the bytes may be shared (a slice of the
    /// message they came in) and need no copy. `Ok(None)`, with nothing
    /// written, when a batch is placed otherwise; the caller then appends
    /// through [`Self::append_with_leader_epoch`].
    ///
    /// # Errors
    /// As [`Self::append`].
    pub fn append_placed(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
    ) -> Result<Option<AppendInfo>, LogError> {
        let batches = batch::layout(records)?;
        let mut next = self.log_end_offset();
        for (_, header) in &batches {
            if header.base_offset != next || header.partition_leader_epoch != leader_epoch {
                return Ok(None);
            }
            next = next_offset(header)?;
        }
        // The CRCs only now: a batch placed otherwise is checked once, by
        // the append the caller falls back to.
        for (at, header) in &batches {
            batch::validate(&records[*at..*at + header.size()])?;
        }
        self.store(records, &batches, None).map(Some)
    }

    fn append_inner(
        &mut self,
        records: &mut [u8],
        ts: TimestampMode,
        leader_epoch: Option<i32>,
        // `batch::validate_all`, or `batch::layout` when the caller checked
        // the CRCs.
        check: fn(&[u8]) -> Result<Batches, LogError>,
    ) -> Result<AppendInfo, LogError> {
        let mut batches = check(records)?;
        let mut next = self.log_end_offset();
        for (at, header) in &mut batches {
            let raw = &mut records[*at..*at + header.size()];
            batch::set_base_offset(raw, next);
            if let Some(epoch) = leader_epoch {
                batch::set_partition_leader_epoch(raw, epoch);
            }
            if let TimestampMode::LogAppendTime(now) = ts {
                batch::set_log_append_time(raw, now);
            }
            *header = BatchHeader::parse(raw)?;
            next = next_offset(header)?;
        }
        let log_append_time = match ts {
            TimestampMode::LogAppendTime(now) => Some(now),
            TimestampMode::CreateTime => None,
        };
        self.store(records, &batches, log_append_time)
    }

    /// Writes validated batches that sit at the log end.
    fn store(
        &mut self,
        records: &[u8],
        batches: &[(usize, BatchHeader)],
        log_append_time: Option<i64>,
    ) -> Result<AppendInfo, LogError> {
        let bytes = records.len() as u64;
        if bytes > MAX_SEGMENT_BYTES {
            return Err(LogError::InvalidBatch(format!(
                "{bytes} bytes of batches exceed the largest segment"
            )));
        }
        let base_offset = self.log_end_offset();
        let mut last_offset = base_offset - 1;
        let mut record_count = 0u64;
        let mut incoming_ts = i64::MIN;
        for (_, header) in batches {
            last_offset = header.last_offset();
            record_count += u64::from(header.records_count.unsigned_abs());
            incoming_ts = incoming_ts.max(header.max_timestamp);
        }

        self.maybe_roll(bytes, last_offset, incoming_ts)?;
        let interval = u64::from(self.config.index_interval_bytes);
        let direct = self.direct_appends && bytes >= DIRECT_MIN_BYTES;
        self.active_mut()
            .append(records, batches, interval, direct)?;
        self.size_bytes += bytes;
        self.unflushed_records += record_count;
        self.unflushed_since.get_or_insert_with(Instant::now);
        if self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_records >= n)
        {
            self.flush()?;
        }
        Ok(AppendInfo {
            base_offset,
            last_offset,
            log_append_time,
            log_start_offset: self.log_start_offset,
            record_count,
            bytes,
        })
    }

    fn maybe_roll(
        &mut self,
        incoming_bytes: u64,
        last_offset: i64,
        incoming_ts: i64,
    ) -> Result<(), LogError> {
        let seg = self.active();
        if seg.size == 0 {
            return Ok(());
        }
        let max_bytes = self.config.segment_bytes.min(MAX_SEGMENT_BYTES);
        let too_big = seg.size + incoming_bytes > max_bytes;
        let too_wide = last_offset.saturating_sub(seg.base_offset) > MAX_RELATIVE_OFFSET;
        let too_old = self.config.segment_ms.is_some_and(|ms| {
            // Kafka's rule: compare the incoming batch's timestamp with the
            // segment's first batch; the wall clock only when either is unset.
            let age = match seg.first_batch_timestamp {
                Some(first) if first >= 0 && incoming_ts >= 0 => incoming_ts.saturating_sub(first),
                _ => segment::now_ms().saturating_sub(seg.created_ms),
            };
            age > i64::try_from(ms).unwrap_or(i64::MAX)
        });
        if too_big || too_wide || too_old {
            self.roll()?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end. A no-op
    /// on an empty active segment, whose name the new one would take.
    pub fn roll(&mut self) -> Result<(), LogError> {
        if self.active().size == 0 {
            return Ok(());
        }
        let base = self.log_end_offset();
        let dir = self.dir.clone();
        // Seal (fsync) before the new file exists: recovery scans only the
        // last segment, so every earlier one must already be durable.
        self.active_mut().seal(&dir)?;
        let seg = Segment::create(&dir, base)?;
        sync_dir(&dir)?;
        self.segments.push_back(seg);
        self.unflushed_records = 0;
        self.unflushed_since = None;
        tracing::debug!(dir = %dir.display(), base_offset = base, "rolled new segment");
        Ok(())
    }

    /// Calls `f` with the header of every batch whose last offset is
    /// `>= from`, in log order, reading only the 61-byte headers (no CRC
    /// checks: `open` already verified what it does not trust). For rebuilding
    /// state derived from the log, such as producer sequence numbers.
    ///
    /// # Errors
    /// I/O, or a header that does not parse.
    pub fn scan_headers(&self, from: i64, mut f: impl FnMut(&BatchHeader)) -> Result<(), LogError> {
        for seg in self.segments.range(self.segment_index_for(from)..) {
            let Some((mut pos, _)) = seg.find_batch(from)? else {
                continue;
            };
            while pos < seg.size {
                let h = seg.header_at(pos)?;
                f(&h);
                pos += h.size() as u64;
            }
        }
        Ok(())
    }

    /// As [`scan_headers`](Self::scan_headers), stopping as soon as `f`
    /// returns `false`; for walking a bounded number of batches (Raft index
    /// lookups) without reading the rest of the log.
    ///
    /// # Errors
    /// I/O, or a header that does not parse.
    pub fn scan_headers_while(
        &self,
        from: i64,
        mut f: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<(), LogError> {
        for seg in self.segments.range(self.segment_index_for(from)..) {
            let Some((mut pos, _)) = seg.find_batch(from)? else {
                continue;
            };
            while pos < seg.size {
                let h = seg.header_at(pos)?;
                if !f(&h) {
                    return Ok(());
                }
                pos += h.size() as u64;
            }
        }
        Ok(())
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    /// Plans a read of whole batches starting with the one containing
    /// `offset`, up to `max_bytes` (but at least one batch when `min_one`,
    /// KIP-74), excluding batches whose base offset is `>= upper_bound` (the
    /// high watermark). Data comes from one segment only, like Kafka.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[log_start_offset, log_end_offset]`; I/O.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<ReadSlice, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(out_of_range(offset, self.log_start_offset, end));
        }
        if offset == end || offset >= upper_bound {
            return Ok(ReadSlice::empty(offset));
        }
        let max_bytes = u64::try_from(max_bytes).unwrap_or(u64::MAX);
        for seg in self.segments.range(self.segment_index_for(offset)..) {
            if let Some(p) = seg.plan_read(offset, max_bytes, upper_bound, min_one)? {
                return Ok(ReadSlice::planned(&seg.file, p));
            }
        }
        Ok(ReadSlice::empty(offset))
    }

    /// The first batch (at or after the log start) whose max timestamp is
    /// `>= ts`, for ListOffsets by timestamp; the caller picks the record.
    /// The caller also checks `first_offset` against its high watermark.
    ///
    /// # Errors
    /// I/O.
    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<ReadSlice>, LogError> {
        for seg in &self.segments {
            if seg.max_timestamp.is_none_or(|(max, _)| max < ts) {
                continue;
            }
            if let Some((pos, h)) = seg.find_by_timestamp(ts, self.log_start_offset)? {
                return Ok(Some(ReadSlice::planned(
                    &seg.file,
                    Planned {
                        position: pos,
                        len: h.size() as u64,
                        first_offset: h.base_offset,
                        next_offset: h.last_offset().saturating_add(1),
                    },
                )));
            }
        }
        Ok(None)
    }

    /// `(max timestamp, last offset of its batch)` over the whole log, the
    /// earliest batch winning ties; for ListOffsets MAX_TIMESTAMP.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for (ts, offset) in self.segments.iter().filter_map(|s| s.max_timestamp) {
            if best.is_none_or(|(b, _)| ts > b) {
                best = Some((ts, offset));
            }
        }
        best
    }

    /// Applies `retention.ms` and `retention.bytes` by deleting whole sealed
    /// segments from the front. An active segment that is entirely expired is
    /// rolled first so it can go, like Kafka.
    ///
    /// # Errors
    /// I/O.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport, LogError> {
        self.enforce_retention_below(now_ms, i64::MAX)
    }

    /// As [`enforce_retention`](Self::enforce_retention), but only deletes
    /// segments whose every offset is below `max_offset` (pass the high
    /// watermark so uncommitted Raft entries are never removed).
    ///
    /// # Errors
    /// I/O.
    pub fn enforce_retention_below(
        &mut self,
        now_ms: i64,
        max_offset: i64,
    ) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport {
            log_start_offset: self.log_start_offset,
            ..RetentionReport::default()
        };
        if let Some(cut) = self.retention_cut(now_ms, max_offset)? {
            let n = self.segments.partition_point(|s| s.base_offset < cut);
            self.delete_oldest(n, &mut report)?;
        }
        report.log_start_offset = self.log_start_offset;
        Ok(report)
    }

    /// The log start offset `retention.ms` and `retention.bytes` call for:
    /// the base offset of the first segment to keep, when whole sealed
    /// segments wholly below `max_offset` are due. Deletes nothing (a
    /// replicated partition's log start moves through a Raft purge), but an
    /// active segment that is entirely expired is rolled so it can go.
    ///
    /// # Errors
    /// I/O while rolling.
    pub fn retention_cut(&mut self, now_ms: i64, max_offset: i64) -> Result<Option<i64>, LogError> {
        let mut by_time = 0;
        if let Some(ms) = self.config.retention_ms {
            let cutoff = now_ms.saturating_sub(i64::try_from(ms).unwrap_or(i64::MAX));
            let expired = |s: &Segment| s.retention_timestamp() < cutoff;
            by_time = self.deletable_prefix(max_offset, |s| expired(s));
            let active = self.active();
            if by_time + 1 == self.segments.len()
                && active.size > 0
                && expired(active)
                && active.next_offset <= max_offset
            {
                self.roll()?;
                by_time += 1;
            }
        }
        // A front segment goes by size when the segments after it still
        // hold `retention.bytes`: a property of its position alone, so the
        // two rules combine as the longer prefix.
        let mut by_size = 0;
        if let Some(limit) = self.config.retention_bytes {
            let mut remaining = self.size_bytes;
            by_size = self.deletable_prefix(max_offset, |s| {
                let keep = remaining - s.size < limit;
                if !keep {
                    remaining -= s.size;
                }
                !keep
            });
        }
        let n = by_time.max(by_size);
        Ok((n > 0 && n < self.segments.len()).then(|| self.segments[n].base_offset))
    }

    /// How many leading sealed segments satisfy `pred` and lie wholly below
    /// `max_offset`.
    fn deletable_prefix(&self, max_offset: i64, mut pred: impl FnMut(&Segment) -> bool) -> usize {
        let mut n = 0;
        while n + 1 < self.segments.len() {
            if self.segments[n + 1].base_offset > max_offset || !pred(&self.segments[n]) {
                break;
            }
            n += 1;
        }
        n
    }

    fn delete_oldest(&mut self, n: usize, report: &mut RetentionReport) -> Result<(), LogError> {
        if n == 0 || n >= self.segments.len() {
            return Ok(());
        }
        let new_start = self.segments[n].base_offset;
        if new_start > self.log_start_offset {
            // Persisted first: a crash before the unlinks is finished by open.
            self.log_start_offset = new_start;
            self.persist_log_start()?;
        }
        for _ in 0..n {
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            self.size_bytes -= seg.size;
            report.segments_deleted += 1;
            report.bytes_deleted += seg.size;
            if let Err(e) = seg.delete_files(&self.dir) {
                tracing::warn!(segment = %seg.path.display(), error = %e, "cannot delete segment files; open will retry");
            }
            tracing::debug!(segment = %seg.path.display(), bytes = seg.size, "deleted segment");
        }
        Ok(())
    }

    fn persist_log_start(&self) -> io::Result<()> {
        write_atomic(
            &self.dir.join(LOG_START_FILE),
            format!("{}\n", self.log_start_offset).as_bytes(),
        )?;
        sync_dir(&self.dir)
    }

    /// DeleteRecords: moves the log start offset forward (never past the log
    /// end) and deletes the segments wholly below it.
    ///
    /// # Errors
    /// `OffsetOutOfRange` past the log end; I/O.
    pub fn advance_log_start(&mut self, offset: i64) -> Result<(), LogError> {
        let end = self.log_end_offset();
        if offset > end || offset < 0 {
            return Err(out_of_range(offset, self.log_start_offset, end));
        }
        if offset <= self.log_start_offset {
            return Ok(());
        }
        self.log_start_offset = offset;
        self.persist_log_start()?;
        let n = self.deletable_prefix(offset, |_| true);
        let mut report = RetentionReport::default();
        self.delete_oldest(n, &mut report)
    }

    /// Removes every batch from the one containing `offset` on (Raft log
    /// conflict resolution). Batches are atomic, so when `offset` lies inside
    /// a batch the log ends at that batch's base offset. Returns the new log
    /// end offset. A `ReadSlice` planned before the truncation over the cut
    /// range may load bytes written after it; callers must not read above the
    /// high watermark, which Raft never truncates.
    ///
    /// # Errors
    /// `OffsetOutOfRange` outside `[log_start_offset, log_end_offset]`; I/O.
    pub fn truncate_to(&mut self, offset: i64) -> Result<i64, LogError> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(out_of_range(offset, self.log_start_offset, end));
        }
        if offset == end {
            return Ok(end);
        }
        let mut cut = None;
        for i in self.segment_index_for(offset)..self.segments.len() {
            if let Some((pos, _)) = self.segments[i].find_batch(offset)? {
                cut = Some((i, pos));
                break;
            }
        }
        let Some((index, pos)) = cut else {
            return Ok(end);
        };
        let dir = self.dir.clone();
        while self.segments.len() > index + 1 {
            let Some(seg) = self.segments.pop_back() else {
                break;
            };
            self.size_bytes -= seg.size;
            seg.delete_files(&dir)?;
        }
        let interval = u64::from(self.config.index_interval_bytes);
        let seg = self.active_mut();
        let before = seg.size;
        seg.truncate_at(&dir, pos, interval)?;
        let after = seg.size;
        self.size_bytes -= before - after;
        sync_dir(&dir)?;
        let new_end = self.log_end_offset();
        if self.log_start_offset > new_end {
            self.log_start_offset = new_end;
            self.persist_log_start()?;
        }
        tracing::info!(dir = %dir.display(), from = end, to = new_end, "truncated log");
        Ok(new_end)
    }

    /// Drops every segment and restarts the log, empty, at `offset` (a Raft
    /// follower installing a snapshot whose entries it does not have, like a
    /// Kafka follower whose log end lies below the leader's log start).
    ///
    /// # Errors
    /// `OffsetOutOfRange` for a negative offset; I/O.
    pub fn reset(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(out_of_range(
                offset,
                self.log_start_offset,
                self.log_end_offset(),
            ));
        }
        // The start offset goes first: a crash part-way leaves segments below
        // it, which open deletes.
        self.log_start_offset = offset;
        self.persist_log_start()?;
        let dir = self.dir.clone();
        while let Some(seg) = self.segments.pop_back() {
            seg.delete_files(&dir)?;
        }
        self.segments.push_back(Segment::create(&dir, offset)?);
        sync_dir(&dir)?;
        self.size_bytes = 0;
        self.unflushed_records = 0;
        self.unflushed_since = None;
        tracing::info!(dir = %dir.display(), offset, "log reset");
        Ok(())
    }

    /// fsyncs when unflushed data is older than `flush.ms`.
    ///
    /// # Errors
    /// I/O.
    pub fn flush_if_due(&mut self, now: Instant) -> Result<bool, LogError> {
        let (Some(ms), Some(since)) = (self.config.flush_ms, self.unflushed_since) else {
            return Ok(false);
        };
        if now.saturating_duration_since(since) < Duration::from_millis(ms) {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Hands out a due time-based flush to run *outside* the caller's lock:
    /// an fsync of a second's worth of data can take long enough that
    /// holding the log meanwhile would stall producers and fetches. The log
    /// counts the data as flushed at once; a failed sync is handed back with
    /// [`flush_failed`](Self::flush_failed) so it is retried.
    pub fn take_due_flush(&mut self, now: Instant) -> Option<PendingFlush> {
        let (Some(ms), Some(since)) = (self.config.flush_ms, self.unflushed_since) else {
            return None;
        };
        if now.saturating_duration_since(since) < Duration::from_millis(ms) {
            return None;
        }
        let pending = PendingFlush {
            file: self.active().file.clone(),
            records: self.unflushed_records,
            since,
        };
        self.unflushed_records = 0;
        self.unflushed_since = None;
        Some(pending)
    }

    /// Marks a [`PendingFlush`] whose sync failed as unflushed again.
    pub fn flush_failed(&mut self, pending: PendingFlush) {
        self.unflushed_records += pending.records;
        let since = self
            .unflushed_since
            .map_or(pending.since, |s| s.min(pending.since));
        self.unflushed_since = Some(since);
    }

    /// fsyncs the active segment (sealed ones were synced when sealed).
    ///
    /// # Errors
    /// I/O.
    pub fn flush(&mut self) -> Result<(), LogError> {
        if self.unflushed_since.is_some() {
            self.active().file.sync_data()?;
            self.unflushed_records = 0;
            self.unflushed_since = None;
        }
        Ok(())
    }

    /// Flushes and closes the log.
    ///
    /// # Errors
    /// I/O.
    pub fn close(mut self) -> Result<(), LogError> {
        self.active_mut().trim_padding()?;
        self.flush()
    }

    /// Closes the log and removes its directory. Outstanding `ReadSlice`s stay
    /// readable.
    ///
    /// # Errors
    /// I/O.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}

/// Batches found in an append's bytes: (position, header).
type Batches = Vec<(usize, BatchHeader)>;

/// The offset after `header`'s batch.
fn next_offset(header: &BatchHeader) -> Result<i64, LogError> {
    header
        .base_offset
        .checked_add(i64::from(header.last_offset_delta))
        .and_then(|last| last.checked_add(1))
        .ok_or_else(|| {
            LogError::OffsetOverflow(format!("batch at {} overflows i64", header.base_offset))
        })
}

#[cfg(test)]
impl PartitionLog {
    pub(crate) fn fail_next_write_after(&mut self, n: usize) {
        self.active_mut().fail_next_write_after = Some(n);
    }
}

/// A time-based flush taken from the log by
/// [`PartitionLog::take_due_flush`], to be synced without the log's lock.
pub struct PendingFlush {
    file: Arc<File>,
    records: u64,
    since: Instant,
}

impl PendingFlush {
    /// fsyncs the segment's data.
    ///
    /// # Errors
    /// I/O; hand the flush back with [`PartitionLog::flush_failed`].
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}
