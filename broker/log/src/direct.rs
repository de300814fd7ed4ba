//! Appends that bypass the page cache (`O_DIRECT`): a replicated log's
//! large appends, whose pages nothing needs (followers are sent entries
//! from memory; a Fetch of large batches reads the device off the async
//! workers).
//!
//! A buffered write copies every byte into a page-cache page, and in a VM
//! whose freed memory goes back to the host (virtio-balloon free page
//! reporting) each new page costs a host fault: that copy was the largest
//! single cost of three-broker replication (docs/benchmarks.md, session 12).
//! A direct write hands an aligned buffer to the device instead.
//!
//! Direct I/O moves whole, aligned blocks, and a log appends at any byte. So
//! each write starts at the block the log end falls in: that block's bytes
//! below the log end are kept from the previous write (or read back once),
//! the new data follows, and zeros pad the last block. The file is not cut
//! back after every write (a truncation to a partial block makes the file
//! system read and rewrite that block): it may end in fewer than [`ALIGN`]
//! zero bytes past the log end, which readers never look at (they stop at
//! the segment's size), sealing cuts, and recovery cuts without counting
//! them as a torn tail ([`is_padding`]).

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of offsets, lengths and the buffer: the largest logical block
/// size of common devices, so one value serves them all.
pub(crate) const ALIGN: usize = 4096;
const ALIGN64: u64 = ALIGN as u64;
/// A thread's scratch buffer larger than this is freed after its write
/// rather than kept for the next one.
const SCRATCH_KEEP: usize = 8 << 20;

thread_local! {
    /// Where a write is assembled, aligned; one per thread, shared by every
    /// segment, so a broker with many partitions holds no buffer per
    /// partition.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

#[derive(Debug)]
pub(crate) struct DirectWriter {
    file: File,
    /// The bytes below the log end `tail_for` of the block it falls in.
    tail: Vec<u8>,
    tail_for: Option<u64>,
}

impl DirectWriter {
    /// Opens `path` for direct writes. Fails where the file system has no
    /// direct I/O (tmpfs); the caller then writes through the page cache.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)?;
        Ok(Self {
            file,
            tail: Vec::with_capacity(ALIGN),
            tail_for: None,
        })
    }

    /// The file changed other than through [`Self::write`] (a truncation or
    /// a buffered write): the kept block may be stale.
    pub fn forget_tail(&mut self) {
        self.tail_for = None;
    }

    /// Writes `data` at `pos`, the log end; `cached` is the same file opened
    /// for buffered I/O, to read the partial block from when it is not kept.
    pub fn write(&mut self, cached: &File, data: &[u8], pos: u64) -> io::Result<()> {
        let block = pos - pos % ALIGN64;
        let head = (pos - block) as usize;
        if self.tail_for != Some(pos) {
            self.tail_for = None;
            self.tail.resize(head, 0);
            cached.read_exact_at(&mut self.tail, block)?;
            self.tail_for = Some(pos);
        }
        // A failed write keeps the tail: the caller cuts the file back to
        // `pos`, and re-reading the block after a device error could take
        // damaged bytes for acknowledged ones.
        let total = head + data.len();
        let padded = total.div_ceil(ALIGN) * ALIGN;
        SCRATCH.with_borrow_mut(|buf| {
            if buf.len() < padded + ALIGN {
                *buf = vec![0; (padded + ALIGN).next_power_of_two()];
            }
            let skip = (ALIGN - buf.as_ptr() as usize % ALIGN) % ALIGN;
            let window = &mut buf[skip..skip + padded];
            window[..head].copy_from_slice(&self.tail);
            window[head..total].copy_from_slice(data);
            window[total..].fill(0);
            let written = self.file.write_all_at(window, block);
            if written.is_ok() {
                let end = pos + data.len() as u64;
                let last_block = (end - end % ALIGN64 - block) as usize;
                self.tail.clear();
                self.tail.extend_from_slice(&window[last_block..total]);
                self.tail_for = Some(end);
            }
            if buf.len() > SCRATCH_KEEP {
                *buf = Vec::new();
            }
            written
        })
    }
}

/// Whether the bytes of `file` from `size` to its length `len` can only be
/// the zero padding of a direct write: fewer than [`ALIGN`], all zero.
pub(crate) fn is_padding(file: &File, size: u64, len: u64) -> io::Result<bool> {
    let Some(extra) = len.checked_sub(size).filter(|&n| n > 0 && n < ALIGN64) else {
        return Ok(false);
    };
    let mut bytes = vec![0u8; extra as usize];
    file.read_exact_at(&mut bytes, size)?;
    Ok(bytes.iter().all(|&b| b == 0))
}
