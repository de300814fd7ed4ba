//! Kafka record batch v2 headers: parsing, validation and the few in-place
//! rewrites the broker is allowed to make.
//!
//! Layout (big-endian), 61 bytes before the records:
//!
//! | field                | offset | type |
//! |----------------------|-------:|------|
//! | baseOffset           | 0      | i64  |
//! | batchLength          | 8      | i32  |
//! | partitionLeaderEpoch | 12     | i32  |
//! | magic                | 16     | i8   |
//! | crc                  | 17     | u32  |
//! | attributes           | 21     | i16  |
//! | lastOffsetDelta      | 23     | i32  |
//! | baseTimestamp        | 27     | i64  |
//! | maxTimestamp         | 35     | i64  |
//! | producerId           | 43     | i64  |
//! | producerEpoch        | 51     | i16  |
//! | baseSequence         | 53     | i32  |
//! | recordsCount         | 57     | i32  |
//!
//! The CRC-32C covers `attributes..end`, so rewriting `baseOffset` or
//! `partitionLeaderEpoch` keeps it valid while stamping LogAppendTime does not.

use crate::error::LogError;

/// Bytes before the records.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the part of a batch not counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// The only message format this log stores.
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
/// First byte covered by the CRC.
pub const CRC_START: usize = 21;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_FLAG: i16 = 0x08;
const TRANSACTIONAL_FLAG: i16 = 0x10;
const CONTROL_FLAG: i16 = 0x20;

/// Compression codec from attribute bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    /// Codec ids 5-7 are unassigned; [`validate`] rejects them.
    Unknown(u8),
}

/// Timestamp type from attribute bit 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The fixed 61-byte header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

impl BatchHeader {
    /// Parses the header at the start of `buf`, checking only what is needed
    /// to know the batch's extent: the magic byte and a possible length.
    /// Does not require the whole batch to be present and does not check the CRC.
    ///
    /// # Errors
    /// `InvalidBatch` if `buf` is shorter than a header, the magic is not 2,
    /// or `batchLength` is smaller than the rest of the header.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
        if buf.len() < HEADER_LEN {
            return Err(LogError::InvalidBatch(format!(
                "{} bytes are too short for a {HEADER_LEN}-byte batch header",
                buf.len()
            )));
        }
        let b = &buf[..HEADER_LEN];
        let magic = b[MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(LogError::InvalidBatch(format!(
                "unsupported magic {magic}, only v2 batches are accepted"
            )));
        }
        let batch_length = be_i32(b, BATCH_LENGTH);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(LogError::InvalidBatch(format!(
                "batch length {batch_length} is smaller than the header"
            )));
        }
        Ok(BatchHeader {
            base_offset: be_i64(b, BASE_OFFSET),
            batch_length,
            partition_leader_epoch: be_i32(b, PARTITION_LEADER_EPOCH),
            magic,
            crc: u32::from_be_bytes([b[CRC], b[CRC + 1], b[CRC + 2], b[CRC + 3]]),
            attributes: be_i16(b, ATTRIBUTES),
            last_offset_delta: be_i32(b, LAST_OFFSET_DELTA),
            base_timestamp: be_i64(b, BASE_TIMESTAMP),
            max_timestamp: be_i64(b, MAX_TIMESTAMP),
            producer_id: be_i64(b, PRODUCER_ID),
            producer_epoch: be_i16(b, PRODUCER_EPOCH),
            base_sequence: be_i32(b, BASE_SEQUENCE),
            records_count: be_i32(b, RECORDS_COUNT),
        })
    }

    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        // parse() guarantees batch_length >= 49, so the cast is lossless.
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn compression(&self) -> Compression {
        match (self.attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_FLAG != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_FLAG != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_FLAG != 0
    }

    /// Whether the batch comes from an idempotent or transactional producer.
    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }
}

/// Same as [`BatchHeader::parse`].
///
/// # Errors
/// See [`BatchHeader::parse`].
pub fn parse(buf: &[u8]) -> Result<BatchHeader, LogError> {
    BatchHeader::parse(buf)
}

/// CRC-32C of a complete batch, as it belongs in the `crc` field.
/// `batch` must be at least [`CRC_START`] bytes long.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_START..).unwrap_or_default())
}

/// Fully validates `batch`, which must hold exactly one batch: header sanity,
/// exact length, CRC, a known codec, at least one record and a non-negative
/// `lastOffsetDelta`.
///
/// # Errors
/// `CorruptBatch` on a CRC mismatch, `InvalidBatch` for everything else.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, LogError> {
    let header = BatchHeader::parse(batch)?;
    if header.size() != batch.len() {
        return Err(LogError::InvalidBatch(format!(
            "batch length says {} bytes but {} are present",
            header.size(),
            batch.len()
        )));
    }
    let actual = compute_crc(batch);
    if actual != header.crc {
        return Err(LogError::CorruptBatch(format!(
            "CRC mismatch at base offset {}: header says {:#010x}, content has {actual:#010x}",
            header.base_offset, header.crc
        )));
    }
    check_fields(&header)?;
    Ok(header)
}

pub(crate) fn check_fields(header: &BatchHeader) -> Result<(), LogError> {
    if header.records_count < 1 {
        return Err(LogError::InvalidBatch(format!(
            "records count {} is not positive",
            header.records_count
        )));
    }
    if header.last_offset_delta < 0 {
        return Err(LogError::InvalidBatch(format!(
            "last offset delta {} is negative",
            header.last_offset_delta
        )));
    }
    if let Compression::Unknown(codec) = header.compression() {
        return Err(LogError::InvalidBatch(format!(
            "unknown compression codec {codec}"
        )));
    }
    Ok(())
}

/// Validates a Produce request's records field: one or more complete batches
/// back to back, covering `records` exactly. Returns each batch's position in
/// `records` with its header. Nothing is modified.
///
/// # Errors
/// As [`validate`], plus `InvalidBatch` for an empty buffer or trailing bytes
/// that do not form a whole batch.
pub fn validate_all(records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
    walk(records, true)
}

/// As [`validate_all`] without the CRCs, for bytes whose CRCs were checked
/// already: headers that parse and pass [`validate`]'s other checks, and
/// batches that fit back to back.
///
/// # Errors
/// As [`validate_all`], but for a CRC mismatch.
pub fn layout(records: &[u8]) -> Result<Vec<(usize, BatchHeader)>, LogError> {
    walk(records, false)
}

fn walk(records: &[u8], crc: bool) -> Result<Vec<(usize, BatchHeader)>, LogError> {
    if records.is_empty() {
        return Err(LogError::InvalidBatch("no record batches".into()));
    }
    let mut batches = Vec::with_capacity(1);
    let mut pos = 0;
    while pos < records.len() {
        let rest = &records[pos..];
        let header = BatchHeader::parse(rest)?;
        if header.size() > rest.len() {
            return Err(LogError::InvalidBatch(format!(
                "batch at byte {pos} claims {} bytes but only {} remain",
                header.size(),
                rest.len()
            )));
        }
        if crc {
            validate(&rest[..header.size()])?;
        } else {
            check_fields(&header)?;
        }
        batches.push((pos, header));
        pos += header.size();
    }
    Ok(batches)
}

/// Iterates over the headers of back-to-back batches without checking CRCs;
/// stops with an error at the first batch that does not parse or fit.
pub fn headers(
    records: &[u8],
) -> impl Iterator<Item = Result<(usize, BatchHeader), LogError>> + '_ {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= records.len() {
            return None;
        }
        let rest = &records[pos..];
        let item = BatchHeader::parse(rest).and_then(|h| {
            if h.size() > rest.len() {
                Err(LogError::InvalidBatch(format!(
                    "batch at byte {pos} claims {} bytes but only {} remain",
                    h.size(),
                    rest.len()
                )))
            } else {
                Ok((pos, h))
            }
        });
        match &item {
            Ok((_, h)) => pos += h.size(),
            Err(_) => failed = true,
        }
        Some(item)
    })
}

/// Rewrites `baseOffset`. The CRC stays valid. `batch` must hold a header.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    if let Some(field) = batch.get_mut(BASE_OFFSET..BASE_OFFSET + 8) {
        field.copy_from_slice(&base_offset.to_be_bytes());
    }
}

/// Rewrites `partitionLeaderEpoch`. The CRC stays valid.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    if let Some(field) = batch.get_mut(PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4) {
        field.copy_from_slice(&epoch.to_be_bytes());
    }
}

/// Stamps a complete batch with LogAppendTime the way Kafka does: sets the
/// timestamp-type bit and `maxTimestamp`, then recomputes the CRC. Consumers
/// take every record's timestamp from `maxTimestamp` when the bit is set, so
/// `baseTimestamp` and the per-record deltas keep the producer's create time.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    if batch.len() < HEADER_LEN {
        return;
    }
    let attributes = be_i16(batch, ATTRIBUTES) | TIMESTAMP_TYPE_FLAG;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A valid v2 batch of `records` fake records carrying `payload` bytes.
    pub(crate) fn make_batch(records: i32, timestamp: i64, payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + payload];
        let len = b.len() as i32 - LOG_OVERHEAD as i32;
        b[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
        b[MAGIC] = MAGIC_V2 as u8;
        b[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4].copy_from_slice(&(records - 1).to_be_bytes());
        b[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        b[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&timestamp.to_be_bytes());
        b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&(-1i64).to_be_bytes());
        b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&(-1i16).to_be_bytes());
        b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&(-1i32).to_be_bytes());
        b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&records.to_be_bytes());
        for (i, byte) in b[HEADER_LEN..].iter_mut().enumerate() {
            *byte = (i as u64).wrapping_mul(31).wrapping_add(timestamp as u64) as u8;
        }
        let crc = compute_crc(&b);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::make_batch;
    use super::*;

    #[test]
    fn a_built_batch_parses_and_validates() {
        let b = make_batch(3, 1_000, 40);
        let h = validate(&b).expect("valid");
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.size(), b.len());
        assert_eq!(h.compression(), Compression::None);
        assert_eq!(h.timestamp_type(), TimestampType::CreateTime);
        assert!(!h.has_producer_id());
    }

    #[test]
    fn rewriting_base_offset_and_epoch_keeps_the_crc_valid() {
        let mut b = make_batch(2, 5, 10);
        set_base_offset(&mut b, 1234);
        set_partition_leader_epoch(&mut b, 7);
        let h = validate(&b).expect("still valid");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 7));
    }

    #[test]
    fn log_append_time_sets_the_flag_and_a_fresh_crc() {
        let mut b = make_batch(2, 5, 10);
        set_log_append_time(&mut b, 99);
        let h = validate(&b).expect("valid after restamp");
        assert_eq!(h.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn a_flipped_payload_byte_is_a_crc_error() {
        let mut b = make_batch(1, 5, 10);
        b[HEADER_LEN + 3] ^= 1;
        assert!(matches!(validate(&b), Err(LogError::CorruptBatch(_))));
    }

    #[test]
    fn malformed_headers_are_invalid_not_panics() {
        let good = make_batch(1, 5, 10);
        let mut wrong_magic = good.clone();
        wrong_magic[MAGIC] = 1;
        assert!(matches!(
            validate(&wrong_magic),
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(
            validate(&good[..30]),
            Err(LogError::InvalidBatch(_))
        ));
        let mut short_len = good.clone();
        short_len[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&short_len),
            Err(LogError::InvalidBatch(_))
        ));
        assert!(matches!(validate_all(&[]), Err(LogError::InvalidBatch(_))));
        let mut two = good.clone();
        two.extend_from_slice(&good[..20]);
        assert!(matches!(validate_all(&two), Err(LogError::InvalidBatch(_))));
    }

    #[test]
    fn zero_records_is_invalid() {
        let mut b = make_batch(1, 5, 10);
        b[RECORDS_COUNT..RECORDS_COUNT + 4].copy_from_slice(&0i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(validate(&b), Err(LogError::InvalidBatch(_))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for len in 0..400 {
            let mut buf = vec![0u8; len];
            for byte in &mut buf {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            if len > MAGIC {
                buf[MAGIC] = 2;
            }
            let _ = validate_all(&buf);
            let _ = headers(&buf).count();
        }
    }
}
