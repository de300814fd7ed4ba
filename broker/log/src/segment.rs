//! One segment: a `.log` file of whole batches plus its in-memory indexes.
//!
//! Only the active (last) segment is written to. A segment is sealed when the
//! log rolls past it: its data is fsynced and its index files are written,
//! after which it never changes (truncation for Raft reopens it as active).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::Advice;
use rustix::io::Errno;

use crate::batch::{self, BatchHeader, CRC_START, HEADER_LEN};
use crate::direct::{self, DirectWriter};
use crate::error::LogError;
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};

/// Largest segment file, so that index positions fit in a `u32`.
pub(crate) const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;
/// Largest offset span of a segment, so relative offsets fit in a `u32`.
pub(crate) const MAX_RELATIVE_OFFSET: i64 = u32::MAX as i64;

const CRC_CHUNK: usize = 256 * 1024;
/// Written bytes between two page-cache drops (see `pages_to_drop`).
const UNCACHE_STEP: u64 = 16 << 20;

/// Advice to the kernel to drop a segment's cached pages from its start,
/// taken under the log's lock and given without it (see
/// `PartitionLog::pages_to_drop`).
#[derive(Debug)]
pub struct PageDrop {
    file: Arc<File>,
    path: PathBuf,
    len: NonZeroU64,
}

impl PageDrop {
    /// Advice only: dirty pages stay until written back (the kernel starts
    /// that) and a later read loads pages again, so nothing can be lost.
    /// From the segment's start every time, because pages still dirty at
    /// the last call are clean now.
    pub fn run(self) {
        if let Err(e) = rustix::fs::fadvise(&*self.file, 0, Some(self.len), Advice::DontNeed) {
            tracing::debug!(segment = %self.path.display(), error = %e, "fadvise failed");
        }
    }

    /// Bytes from the segment's start the advice covers.
    pub fn covers(&self) -> u64 {
        self.len.get()
    }
}

pub(crate) fn log_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

pub(crate) fn index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

pub(crate) fn time_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` through a synced temp file and a rename, so a
/// crash leaves either the old file or the new one, never a torn one.
/// The caller syncs the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let f = File::create(&tmp)?;
        f.write_all_at(bytes, 0)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// Where a planned read lies within a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Planned {
    pub position: u64,
    pub len: u64,
    pub first_offset: i64,
    pub next_offset: i64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    pub file: Arc<File>,
    /// Bytes of whole, valid batches; readers never look past it.
    pub size: u64,
    /// Offset after the last batch.
    pub next_offset: i64,
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    bytes_since_index: u64,
    /// Largest batch max timestamp and the last offset of the first batch
    /// that carried it.
    pub max_timestamp: Option<(i64, i64)>,
    /// Max timestamp of the first batch: Kafka's basis for `segment.ms`.
    pub first_batch_timestamp: Option<i64>,
    /// Wall clock at creation or load, the `segment.ms` fallback when batches
    /// carry no usable timestamp.
    pub created_ms: i64,
    /// A failed write could not be cut back; retried before the next write.
    tail_dirty: bool,
    /// Where the last [`Self::pages_to_drop`] stopped.
    uncached_below: u64,
    /// Opened at the first write that bypasses the page cache.
    direct: Option<DirectWriter>,
    /// The file system refused direct I/O; every write goes through the cache.
    no_direct: bool,
    /// Test hook: the next write stores this many bytes, then fails.
    #[cfg(test)]
    pub fail_next_write_after: Option<usize>,
}

impl Segment {
    fn blank(dir: &Path, base_offset: i64, file: File) -> Segment {
        Segment {
            base_offset,
            path: log_path(dir, base_offset),
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            max_timestamp: None,
            first_batch_timestamp: None,
            created_ms: now_ms(),
            tail_dirty: false,
            uncached_below: 0,
            direct: None,
            no_direct: false,
            #[cfg(test)]
            fail_next_write_after: None,
        }
    }

    /// Creates an empty active segment. A stale file of the same name can only
    /// hold data past the log end, so it is replaced.
    pub fn create(dir: &Path, base_offset: i64) -> io::Result<Segment> {
        remove_if_exists(&index_path(dir, base_offset))?;
        remove_if_exists(&time_index_path(dir, base_offset))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(log_path(dir, base_offset))?;
        Ok(Segment::blank(dir, base_offset, file))
    }

    /// Opens the last segment after a restart: every batch is re-read and its
    /// CRC checked, and the tail from the first bad batch on is cut.
    /// Returns the segment and the number of bytes cut.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        interval: u64,
    ) -> Result<(Segment, u64), LogError> {
        let file = open_rw(&log_path(dir, base_offset))?;
        let len = file.metadata()?.len();
        let mut seg = Segment::blank(dir, base_offset, file);
        let problem = seg.rebuild(len, true, None, interval)?;
        let cut = seg.cut_tail(len, problem)?;
        // Index files of the active segment would go stale with the next
        // append; they are rebuilt by this scan on every open anyway.
        remove_if_exists(&index_path(dir, base_offset))?;
        remove_if_exists(&time_index_path(dir, base_offset))?;
        Ok((seg, cut))
    }

    /// Opens a sealed segment from its index files, falling back to a full
    /// verifying scan (and rewriting the index files) when they are missing
    /// or inconsistent with the log file.
    pub fn open_sealed(
        dir: &Path,
        base_offset: i64,
        next_base: i64,
        interval: u64,
    ) -> Result<(Segment, u64), LogError> {
        let file = open_rw(&log_path(dir, base_offset))?;
        let len = file.metadata()?.len();
        let mut seg = Segment::blank(dir, base_offset, file);
        seg.size = len;
        let reason = match seg.load_indexes(dir, next_base) {
            Ok(()) => return Ok((seg, 0)),
            Err(reason) => reason,
        };
        tracing::warn!(segment = %seg.path.display(), %reason, "rebuilding segment indexes by scanning");
        let problem = seg.rebuild(len, true, Some(next_base), interval)?;
        let cut = seg.cut_tail(len, problem)?;
        seg.push_time_entry();
        if let Err(e) = seg.write_indexes(dir) {
            tracing::warn!(segment = %seg.path.display(), error = %e, "cannot write rebuilt indexes");
        }
        Ok((seg, cut))
    }

    fn load_indexes(&mut self, dir: &Path, next_base: i64) -> Result<(), String> {
        let rel_end = u64::try_from(next_base.saturating_sub(self.base_offset)).unwrap_or(0);
        let read =
            |p: PathBuf| fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let offset_index = OffsetIndex::decode(
            &read(index_path(dir, self.base_offset))?,
            self.size,
            rel_end,
        )?;
        let time_index =
            TimeIndex::decode(&read(time_index_path(dir, self.base_offset))?, rel_end)?;
        if self.size > 0 && time_index.last().is_none() {
            return Err("time index is empty for a non-empty segment".into());
        }
        // Check that the files describe this log file: the first batch and
        // the last indexed one sit where expected, and the batches after the
        // last index entry end exactly at the end of the file (a short walk,
        // at most about one index interval).
        if self.size > 0 {
            let first = self.header_at(0).map_err(|e| e.to_string())?;
            if first.base_offset < self.base_offset {
                return Err(format!(
                    "first batch has base offset {} below the segment base",
                    first.base_offset
                ));
            }
        }
        let mut pos = 0;
        if let Some(e) = offset_index.last() {
            pos = u64::from(e.position);
            let expected = self.base_offset + i64::from(e.rel_offset);
            let h = self.header_at(pos).map_err(|e| e.to_string())?;
            if h.base_offset != expected {
                return Err(format!(
                    "batch at position {pos} has base offset {} but the index says {expected}",
                    h.base_offset
                ));
            }
        }
        let mut next_offset = self.base_offset;
        while pos < self.size {
            let h = self.header_at(pos).map_err(|e| e.to_string())?;
            next_offset = h.last_offset().saturating_add(1);
            pos += h.size() as u64;
        }
        if next_offset > next_base {
            return Err(format!(
                "segment ends at offset {next_offset}, past the next segment at {next_base}"
            ));
        }
        self.next_offset = next_offset;
        self.max_timestamp = time_index
            .last()
            .map(|e| (e.timestamp, self.base_offset + i64::from(e.rel_offset)));
        self.offset_index = offset_index;
        self.time_index = time_index;
        Ok(())
    }

    fn reset(&mut self) {
        self.size = 0;
        self.next_offset = self.base_offset;
        self.offset_index = OffsetIndex::default();
        self.time_index = TimeIndex::default();
        self.bytes_since_index = 0;
        self.max_timestamp = None;
        self.first_batch_timestamp = None;
    }

    /// Resets the in-memory state and replays the batches in `0..len`,
    /// stopping at the first one that is torn, malformed, out of sequence or,
    /// with `verify_crc`, corrupt. Returns why it stopped early, if it did.
    fn rebuild(
        &mut self,
        len: u64,
        verify_crc: bool,
        next_base: Option<i64>,
        interval: u64,
    ) -> io::Result<Option<String>> {
        self.reset();
        let mut crc_buf = Vec::new();
        let mut header = [0u8; HEADER_LEN];
        while self.size < len {
            let pos = self.size;
            let remaining = len - pos;
            if remaining < HEADER_LEN as u64 {
                return Ok(Some(format!(
                    "{remaining} trailing bytes at position {pos} are too short for a batch header"
                )));
            }
            self.file.read_exact_at(&mut header, pos)?;
            let h = match BatchHeader::parse(&header) {
                Ok(h) => h,
                Err(e) => return Ok(Some(format!("at position {pos}: {e}"))),
            };
            if let Some(problem) = self.out_of_place(&h, remaining, next_base) {
                return Ok(Some(format!("at position {pos}: {problem}")));
            }
            if verify_crc {
                crc_buf.resize(CRC_CHUNK, 0);
                let actual = crc_of(&self.file, pos, h.size() as u64, &mut crc_buf)?;
                if actual != h.crc {
                    return Ok(Some(format!(
                        "at position {pos}: CRC mismatch in batch at base offset {} (header {:#010x}, content {actual:#010x})",
                        h.base_offset, h.crc
                    )));
                }
            }
            self.track_batch(pos, &h, interval);
        }
        Ok(None)
    }

    /// Why `h` cannot be the next batch of this segment, if it cannot.
    fn out_of_place(
        &self,
        h: &BatchHeader,
        remaining: u64,
        next_base: Option<i64>,
    ) -> Option<String> {
        if h.size() as u64 > remaining {
            return Some(format!(
                "torn batch: it claims {} bytes but only {remaining} remain",
                h.size()
            ));
        }
        if let Err(e) = batch::check_fields(h) {
            return Some(e.to_string());
        }
        let expected_ok = if self.size == 0 {
            h.base_offset >= self.base_offset
        } else {
            h.base_offset == self.next_offset
        };
        if !expected_ok {
            return Some(format!(
                "batch base offset {} breaks the sequence (expected {})",
                h.base_offset, self.next_offset
            ));
        }
        if h.last_offset().saturating_sub(self.base_offset) > MAX_RELATIVE_OFFSET {
            return Some(format!(
                "batch last offset {} is too far from the segment base",
                h.last_offset()
            ));
        }
        if let Some(next_base) = next_base
            && h.last_offset() >= next_base
        {
            return Some(format!(
                "batch last offset {} overlaps the next segment at {next_base}",
                h.last_offset()
            ));
        }
        None
    }

    /// Cuts the file back to the valid batches after a scan found
    /// `problem` past them, and returns the bytes cut as torn or corrupt:
    /// none when they are only a direct write's zero padding.
    fn cut_tail(&mut self, len: u64, problem: Option<String>) -> io::Result<u64> {
        let Some(reason) = problem else {
            return Ok(0);
        };
        if direct::is_padding(&self.file, self.size, len)? {
            tracing::debug!(segment = %self.path.display(), bytes = len - self.size, "cutting a direct write's padding");
            self.file.set_len(self.size)?;
            self.file.sync_all()?;
            return Ok(0);
        }
        let cut = len - self.size;
        tracing::warn!(
            segment = %self.path.display(),
            position = self.size,
            truncated_bytes = cut,
            valid_up_to_offset = self.next_offset,
            %reason,
            "truncating torn or corrupt segment tail"
        );
        self.file.set_len(self.size)?;
        self.file.sync_all()?;
        Ok(cut)
    }

    fn rel(&self, offset: i64) -> u32 {
        u32::try_from(offset.saturating_sub(self.base_offset).max(0)).unwrap_or(u32::MAX)
    }

    fn push_time_entry(&mut self) {
        if let Some((timestamp, offset)) = self.max_timestamp {
            let rel_offset = self.rel(offset);
            self.time_index.maybe_push(TimeEntry {
                timestamp,
                rel_offset,
            });
        }
    }

    /// Accounts for a batch written at `pos`: indexes, timestamps, extent.
    fn track_batch(&mut self, pos: u64, h: &BatchHeader, interval: u64) {
        let last = h.last_offset();
        if pos == 0 {
            self.first_batch_timestamp = Some(h.max_timestamp);
        }
        if self.max_timestamp.is_none_or(|(t, _)| h.max_timestamp > t) {
            self.max_timestamp = Some((h.max_timestamp, last));
        }
        if self.bytes_since_index >= interval {
            self.offset_index.push(OffsetEntry {
                rel_offset: self.rel(h.base_offset),
                position: u32::try_from(pos).unwrap_or(u32::MAX),
            });
            self.push_time_entry();
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += h.size() as u64;
        self.size = pos + h.size() as u64;
        self.next_offset = last.saturating_add(1);
    }

    /// Appends validated, offset-assigned batches with one positional write,
    /// past the page cache when `direct` (see [`crate::direct`]). On failure
    /// the file is cut back so no partial batch remains and the in-memory
    /// state is unchanged.
    pub fn append(
        &mut self,
        data: &[u8],
        batches: &[(usize, BatchHeader)],
        interval: u64,
        direct: bool,
    ) -> io::Result<()> {
        let start = self.size;
        if self.tail_dirty {
            self.file.set_len(start)?;
            self.tail_dirty = false;
        }
        if let Err(e) = self.write_at(data, start, direct) {
            if let Err(cut) = self.file.set_len(start) {
                // Readers stop at `size`, and recovery cuts whatever is left.
                tracing::warn!(segment = %self.path.display(), error = %cut, "cannot cut back a failed write");
                self.tail_dirty = true;
            }
            return Err(e);
        }
        for (at, h) in batches {
            self.track_batch(start + *at as u64, h, interval);
        }
        Ok(())
    }

    /// The page-cache drop due for this segment below its last `keep`
    /// bytes, once per [`UNCACHE_STEP`] written.
    pub fn pages_to_drop(&mut self, keep: u64) -> Option<PageDrop> {
        let below = self.size.saturating_sub(keep) / UNCACHE_STEP * UNCACHE_STEP;
        let len = NonZeroU64::new(below).filter(|_| below > self.uncached_below)?;
        self.uncached_below = below;
        Some(PageDrop {
            file: Arc::clone(&self.file),
            path: self.path.clone(),
            len,
        })
    }

    fn write_at(&mut self, data: &[u8], pos: u64, direct: bool) -> io::Result<()> {
        #[cfg(test)]
        if let Some(n) = self.fail_next_write_after.take() {
            self.file.write_all_at(&data[..n.min(data.len())], pos)?;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "injected: no space left on device",
            ));
        }
        if direct
            && self.open_direct()
            && let Some(writer) = &mut self.direct
        {
            match writer.write(&self.file, data, pos) {
                // Opened, but the device wants another alignment (a larger
                // block, some FUSE file systems).
                Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                    tracing::warn!(segment = %self.path.display(), error = %e,
                        "direct write refused; this segment's writes go through the page cache");
                    self.direct = None;
                    self.no_direct = true;
                }
                written => return written,
            }
        }
        if let Some(writer) = &mut self.direct {
            writer.forget_tail();
        }
        self.file.write_all_at(data, pos)
    }

    /// Whether the direct writer is open, opening it on first use.
    fn open_direct(&mut self) -> bool {
        if self.direct.is_none() && !self.no_direct {
            match DirectWriter::open(&self.path) {
                Ok(writer) => self.direct = Some(writer),
                Err(e) => {
                    tracing::info!(segment = %self.path.display(), error = %e,
                        "no direct I/O here; large appends go through the page cache");
                    self.no_direct = true;
                }
            }
        }
        self.direct.is_some()
    }

    /// The header of the batch at `pos`, which must lie within `size`.
    pub fn header_at(&self, pos: u64) -> Result<BatchHeader, LogError> {
        if pos.saturating_add(HEADER_LEN as u64) > self.size {
            return Err(LogError::CorruptBatch(format!(
                "{}: no batch header fits at position {pos} (size {})",
                self.path.display(),
                self.size
            )));
        }
        let mut buf = [0u8; HEADER_LEN];
        self.file.read_exact_at(&mut buf, pos)?;
        let h = BatchHeader::parse(&buf)?;
        if pos + h.size() as u64 > self.size {
            return Err(LogError::CorruptBatch(format!(
                "{}: batch at position {pos} runs past the segment end",
                self.path.display()
            )));
        }
        Ok(h)
    }

    /// The first batch whose last offset is `>= offset`: the one containing
    /// `offset`, or the next one after a gap.
    pub fn find_batch(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let rel = u64::try_from(offset.saturating_sub(self.base_offset)).unwrap_or(0);
        let mut pos = self
            .offset_index
            .floor(rel)
            .map_or(0, |e| u64::from(e.position));
        while pos < self.size {
            let h = self.header_at(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.size() as u64;
        }
        Ok(None)
    }

    /// Plans a read starting at the batch containing `offset`. `None` when this
    /// segment holds nothing at or after `offset`.
    pub fn plan_read(
        &self,
        offset: i64,
        max_bytes: u64,
        upper_bound: i64,
        min_one: bool,
    ) -> Result<Option<Planned>, LogError> {
        let Some((start, first)) = self.find_batch(offset)? else {
            return Ok(None);
        };
        let empty = Planned {
            position: start,
            len: 0,
            first_offset: offset,
            next_offset: offset,
        };
        let first_len = first.size() as u64;
        if first.base_offset >= upper_bound || (first_len > max_bytes && !min_one) {
            return Ok(Some(empty));
        }
        let limit = start.saturating_add(max_bytes.max(first_len));
        let mut end = start + first_len;
        let mut next_offset = first.last_offset().saturating_add(1);
        // Index entries mark batch starts, so every batch before the last
        // entry within both limits belongs to the answer: skip to it.
        let rel_upper = u64::try_from(upper_bound.saturating_sub(self.base_offset)).unwrap_or(0);
        if let Some(e) = self.offset_index.last_within(limit, rel_upper)
            && u64::from(e.position) > end
        {
            end = u64::from(e.position);
            next_offset = self.base_offset + i64::from(e.rel_offset);
        }
        while end < self.size {
            let h = self.header_at(end)?;
            if h.base_offset >= upper_bound || end + h.size() as u64 > limit {
                break;
            }
            end += h.size() as u64;
            next_offset = h.last_offset().saturating_add(1);
        }
        Ok(Some(Planned {
            position: start,
            len: end - start,
            first_offset: first.base_offset,
            next_offset,
        }))
    }

    /// The first batch at or after `min_offset` whose max timestamp is `>= ts`.
    pub fn find_by_timestamp(
        &self,
        ts: i64,
        min_offset: i64,
    ) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let from = self
            .time_index
            .below(ts)
            .map_or(self.base_offset, |e| {
                self.base_offset + i64::from(e.rel_offset)
            })
            .max(min_offset);
        let rel = u64::try_from(from.saturating_sub(self.base_offset)).unwrap_or(0);
        let mut pos = self
            .offset_index
            .floor(rel)
            .map_or(0, |e| u64::from(e.position));
        while pos < self.size {
            let h = self.header_at(pos)?;
            if h.last_offset() >= min_offset && h.max_timestamp >= ts {
                return Ok(Some((pos, h)));
            }
            pos += h.size() as u64;
        }
        Ok(None)
    }

    /// Makes the segment immutable: data synced, index files written.
    pub fn seal(&mut self, dir: &Path) -> io::Result<()> {
        self.push_time_entry();
        self.trim_padding()?;
        // Reopened if a truncation makes the segment active again.
        self.direct = None;
        self.file.sync_data()?;
        self.write_indexes(dir)
    }

    /// Cuts the zero padding direct writes may leave past the log end, so
    /// the file's length is the segment's size again. By the file's length,
    /// not by whether a direct writer is open: one that fell back to the
    /// page cache may have left padding a shorter append did not cover.
    pub fn trim_padding(&mut self) -> io::Result<()> {
        if self.file.metadata()?.len() > self.size {
            self.file.set_len(self.size)?;
        }
        if let Some(writer) = &mut self.direct {
            writer.forget_tail();
        }
        Ok(())
    }

    fn write_indexes(&self, dir: &Path) -> io::Result<()> {
        write_atomic(
            &index_path(dir, self.base_offset),
            &self.offset_index.encode(),
        )?;
        write_atomic(
            &time_index_path(dir, self.base_offset),
            &self.time_index.encode(),
        )
    }

    /// Cuts the file at `pos` (a batch boundary) and makes this the active
    /// segment again.
    pub fn truncate_at(&mut self, dir: &Path, pos: u64, interval: u64) -> Result<(), LogError> {
        remove_if_exists(&index_path(dir, self.base_offset))?;
        remove_if_exists(&time_index_path(dir, self.base_offset))?;
        self.file.set_len(pos)?;
        self.file.sync_all()?;
        self.tail_dirty = false;
        if let Some(writer) = &mut self.direct {
            writer.forget_tail();
        }
        // Bytes written again below the cut are new pages to drop.
        self.uncached_below = self.uncached_below.min(pos / UNCACHE_STEP * UNCACHE_STEP);
        if let Some(problem) = self.rebuild(pos, false, None, interval)? {
            // The bytes were validated when written, so this means the disk
            // changed under us; keep what still parses.
            let len = pos;
            self.cut_tail(len, Some(problem))?;
        }
        Ok(())
    }

    /// Newest timestamp for retention; the file's mtime when batches carry none.
    pub fn retention_timestamp(&self) -> i64 {
        match self.max_timestamp {
            Some((t, _)) if t >= 0 => t,
            _ => self
                .file
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(self.created_ms, |d| {
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
                }),
        }
    }

    pub fn delete_files(&self, dir: &Path) -> io::Result<()> {
        remove_if_exists(&self.path)?;
        remove_if_exists(&index_path(dir, self.base_offset))?;
        remove_if_exists(&time_index_path(dir, self.base_offset))
    }
}

/// CRC-32C of `attributes..end` of the batch at `pos`, read in chunks so a
/// large batch needs no large buffer.
fn crc_of(file: &File, pos: u64, size: u64, buf: &mut [u8]) -> io::Result<u32> {
    let mut crc = 0u32;
    let mut at = pos + CRC_START as u64;
    let end = pos + size;
    while at < end {
        let n = usize::try_from(end - at)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        at += n as u64;
    }
    Ok(crc)
}
