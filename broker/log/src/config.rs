//! Per-log configuration, mirroring the Kafka topic configs of the same names.

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Settings of one partition log. Field names follow Kafka's topic configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would grow past this.
    /// Capped internally at `u32::MAX` because index positions are 32-bit.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the incoming batch's timestamp is this much
    /// newer than the active segment's first batch (Kafka's rule).
    pub segment_ms: Option<u64>,
    /// `retention.ms`: delete sealed segments whose newest timestamp is older.
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete oldest sealed segments while the log is larger.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fsync after this many unflushed records.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: longest time data may stay unflushed; see `flush_if_due`.
    pub flush_ms: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * DAY_MS),
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: Some(1000),
        }
    }
}

/// How the log treats batch timestamps on append (`message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampMode {
    /// Keep the producer's timestamps.
    CreateTime,
    /// Stamp every batch with this broker time (ms since the epoch).
    LogAppendTime(i64),
}
