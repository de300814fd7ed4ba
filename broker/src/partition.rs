//! One partition replica on this broker: its log, and the signal that wakes
//! long-polling fetches the moment data arrives.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::RwLock;
use skiff_log::{AppendInfo, LogConfig, PartitionLog, ReadSlice, RetentionReport, TimestampMode};
use tokio::sync::Notify;

use crate::errors::{BrokerError, Result};

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    log: RwLock<PartitionLog>,
    appended: Notify,
}

/// What a fetch of one partition found.
pub struct PartitionRead {
    pub slice: ReadSlice,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: PartitionLog) -> Self {
        Self {
            topic,
            index,
            log: RwLock::new(log),
            appended: Notify::new(),
        }
    }

    /// Appends `records` (validated and offset-assigned by the log). Blocking:
    /// may fsync, so async callers run it on the blocking pool.
    pub fn append(&self, records: &mut [u8], ts: TimestampMode) -> Result<AppendInfo> {
        let info = self.log.write().append(records, ts)?;
        self.appended.notify_waiters();
        Ok(info)
    }

    /// Plans a read of whole batches from `offset`; the bytes are loaded
    /// later, outside the lock.
    pub fn read(&self, offset: i64, max_bytes: usize, min_one: bool) -> Result<PartitionRead> {
        let log = self.log.read();
        // Single replica: everything appended is committed. With replication
        // this becomes the Raft commit index.
        let high_watermark = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        let slice = log
            .read(offset, max_bytes, high_watermark, min_one)
            .map_err(|e| match e {
                skiff_log::LogError::OffsetOutOfRange { .. } => BrokerError::OffsetOutOfRange {
                    offset,
                    start: log_start_offset,
                    end: high_watermark,
                },
                other => other.into(),
            })?;
        Ok(PartitionRead {
            slice,
            high_watermark,
            log_start_offset,
        })
    }

    /// A future that completes at the next append. Create it *before*
    /// checking for data, so an append in between is not missed.
    pub fn appended(&self) -> tokio::sync::futures::Notified<'_> {
        self.appended.notified()
    }

    pub fn high_watermark(&self) -> i64 {
        self.log.read().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.read().log_start_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.read().size_bytes()
    }

    pub fn batch_for_timestamp(&self, ts: i64) -> Result<Option<ReadSlice>> {
        Ok(self.log.read().batch_for_timestamp(ts)?)
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.log.read().max_timestamp()
    }

    pub fn update_config(&self, config: LogConfig) {
        self.log.write().update_config(config);
    }

    pub fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        Ok(self.log.write().enforce_retention(now_ms)?)
    }

    /// The time-based fsync, run without holding the log: appends and reads
    /// carry on while the disk catches up.
    pub fn flush_if_due(&self, now: Instant) -> Result<bool> {
        let Some(pending) = self.log.write().take_due_flush(now) else {
            return Ok(false);
        };
        if let Err(e) = pending.sync() {
            self.log.write().flush_failed(pending);
            return Err(BrokerError::Storage(e.to_string()));
        }
        Ok(true)
    }

    pub fn flush(&self) -> Result<()> {
        Ok(self.log.write().flush()?)
    }
}
