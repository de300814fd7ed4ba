//! The durable partition log of a Skiff broker.
//!
//! A log is a directory of segments. Each segment is a `.log` file holding
//! Kafka v2 record batches exactly as producers sent them (compression
//! included; nothing is ever decompressed), with only the base offset,
//! partition leader epoch and, for LogAppendTime, the timestamp rewritten.
//! Beside it sit a sparse offset index (`.index`) and time index
//! (`.timeindex`), written when the segment is sealed and kept in memory.
//!
//! * [`batch`]: the 61-byte v2 batch header: parsing, validation, rewrites.
//! * `segment`: one segment file with its indexes; recovery scanning.
//! * `index`: the sparse offset and time indexes.
//! * [`PartitionLog`]: appends, reads, rolling, retention, flushing, recovery.
//!
//! Reads return a [`ReadSlice`], a plan that owns a handle on the segment
//! file, so the bytes can be loaded after the caller has released its lock on
//! the log, even if retention deletes the segment meanwhile.
//!
//! Crash safety: a segment is fsynced before the next one is created, so after
//! a crash only the last segment can hold a torn tail; `open` rescans it with
//! CRC checks and cuts from the first bad batch on.

pub mod batch;
mod config;
mod direct;
mod error;
mod index;
mod partition_log;
mod segment;

pub use config::{LogConfig, TimestampMode};
pub use error::LogError;
pub use partition_log::{
    AppendInfo, DIRECT_MIN_BYTES, PartitionLog, PendingFlush, ReadSlice, RecoveryReport,
    RetentionReport,
};
pub use segment::PageDrop;

#[cfg(test)]
mod tests;

/// The broker shares logs between request handlers behind a lock.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PartitionLog>();
    assert_send_sync::<ReadSlice>();
};
