//! The one error type of the crate.

use std::io;

/// Why a log operation failed.
///
/// `CorruptBatch` and `InvalidBatch` are the client's fault (Kafka's
/// CORRUPT_MESSAGE / INVALID_RECORD); `OffsetOutOfRange` maps to
/// OFFSET_OUT_OF_RANGE; `Io` is a storage failure (KAFKA_STORAGE_ERROR).
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A batch's CRC-32C does not match its content.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// A batch is malformed: wrong magic, impossible length, no records, ...
    #[error("invalid record batch: {0}")]
    InvalidBatch(String),
    /// The requested offset is outside `[log_start_offset, log_end_offset]`.
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Offsets would overflow `i64`; only reachable with absurd inputs.
    #[error("offset overflow: {0}")]
    OffsetOverflow(String),
    #[error("log I/O error: {0}")]
    Io(#[from] io::Error),
}

impl LogError {
    /// A stable label per variant, for metrics and structured logs.
    pub fn code(&self) -> &'static str {
        match self {
            LogError::CorruptBatch(_) => "corrupt_batch",
            LogError::InvalidBatch(_) => "invalid_batch",
            LogError::OffsetOutOfRange { .. } => "offset_out_of_range",
            LogError::OffsetOverflow(_) => "offset_overflow",
            LogError::Io(_) => "io",
        }
    }
}
