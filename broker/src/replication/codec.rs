//! How Raft entries look in the partition log: each entry is exactly one
//! Kafka v2 record batch, so the log a consumer fetches *is* the Raft log.
//!
//! * A normal entry is the producer's batch, byte for byte, with only the two
//!   fields outside the CRC rewritten: `baseOffset` (assigned from the log end
//!   by every replica, deterministically, since Raft keeps their logs equal)
//!   and `partitionLeaderEpoch` (the entry's Raft term).
//! * Raft's own entries (a new leader's blank entry and membership changes)
//!   are control batches with one control record, like KRaft's LeaderChange
//!   records. Kafka clients skip control batches, and because every replica
//!   builds them from the entry alone (fixed timestamps, no clock), all
//!   replicas store identical bytes.

use bytes::{BufMut, Bytes, BytesMut};
use skiff_log::batch::{self, BatchHeader, HEADER_LEN, LOG_OVERHEAD};

/// Control record type of a Raft blank entry (Kafka uses 0-6; clients skip
/// control batches of any type).
pub const CONTROL_RAFT_BLANK: i16 = 100;
/// Control record type of a Raft membership entry; the value is its JSON.
pub const CONTROL_RAFT_MEMBERSHIP: i16 = 101;

/// What a stored batch stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKind {
    Normal,
    Blank,
    /// The membership JSON.
    Membership(Bytes),
}

const ATTR_CONTROL: i16 = 0x20;

fn put_varint(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    None
}

/// A one-record control batch of `control_type` carrying `value`, with
/// offset 0 and the given epoch; timestamps are -1 (none) so the bytes do not
/// depend on which replica builds them.
pub fn control_batch(control_type: i16, value: &[u8], epoch: i32) -> Vec<u8> {
    let mut record = BytesMut::with_capacity(16 + value.len());
    record.put_i8(0); // attributes
    put_varint(&mut record, 0); // timestamp delta
    put_varint(&mut record, 0); // offset delta
    put_varint(&mut record, 4); // key: version, type
    record.put_i16(0);
    record.put_i16(control_type);
    put_varint(&mut record, value.len() as i64);
    record.put_slice(value);
    put_varint(&mut record, 0); // headers

    let mut b = BytesMut::with_capacity(HEADER_LEN + record.len() + 5);
    b.put_i64(0); // base offset
    b.put_i32(0); // batch length, below
    b.put_i32(epoch);
    b.put_i8(batch::MAGIC_V2);
    b.put_u32(0); // crc, below
    b.put_i16(ATTR_CONTROL);
    b.put_i32(0); // last offset delta
    b.put_i64(-1); // base timestamp
    b.put_i64(-1); // max timestamp
    b.put_i64(-1); // producer id
    b.put_i16(-1); // producer epoch
    b.put_i32(-1); // base sequence
    b.put_i32(1); // records
    put_varint(&mut b, record.len() as i64);
    b.put_slice(&record);
    let mut b = b.to_vec();
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    let crc = batch::compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Classifies a stored batch. A control batch that is not one of Raft's
/// (a transaction marker) is a normal entry: it was proposed as data.
pub fn classify(header: &BatchHeader, raw: &[u8]) -> StoredKind {
    if !header.is_control() {
        return StoredKind::Normal;
    }
    let Some(record) = raw.get(HEADER_LEN..) else {
        return StoredKind::Normal;
    };
    let mut pos = 0;
    let parsed = (|| {
        let _len = get_varint(record, &mut pos)?;
        pos += 1; // attributes
        get_varint(record, &mut pos)?;
        get_varint(record, &mut pos)?;
        let key_len = usize::try_from(get_varint(record, &mut pos)?).ok()?;
        let key = record.get(pos..pos + key_len)?;
        pos += key_len;
        let ty = i16::from_be_bytes([*key.get(2)?, *key.get(3)?]);
        let value_len = usize::try_from(get_varint(record, &mut pos)?).ok()?;
        let value = record.get(pos..pos + value_len)?;
        Some((ty, value))
    })();
    match parsed {
        Some((CONTROL_RAFT_BLANK, _)) => StoredKind::Blank,
        Some((CONTROL_RAFT_MEMBERSHIP, v)) => StoredKind::Membership(Bytes::copy_from_slice(v)),
        _ => StoredKind::Normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_batches_validate_and_classify() {
        let b = control_batch(CONTROL_RAFT_BLANK, &[], 7);
        let h = batch::validate(&b).expect("valid batch");
        assert!(h.is_control());
        assert_eq!((h.partition_leader_epoch, h.records_count), (7, 1));
        assert_eq!(classify(&h, &b), StoredKind::Blank);
        let m = control_batch(CONTROL_RAFT_MEMBERSHIP, b"{\"a\":1}", 2);
        let h = batch::validate(&m).expect("valid batch");
        assert_eq!(
            classify(&h, &m),
            StoredKind::Membership(Bytes::from_static(b"{\"a\":1}"))
        );
    }

    #[test]
    fn varints_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            300,
            -300,
            i64::from(i32::MAX),
            i64::MIN,
        ] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(get_varint(&b, &mut pos), Some(v));
            assert_eq!(pos, b.len());
        }
        let mut pos = 0;
        assert_eq!(get_varint(&[0x80; 20], &mut pos), None);
    }
}
