//! The records of `__consumer_offsets`, in Kafka's own key/value formats so
//! Kafka tooling (`kafka-console-consumer --formatter
//! ...OffsetsMessageFormatter`) can read them:
//!
//! - offset commit: key version 1 `(group, topic, partition)`, value version 3
//!   `(offset, leader epoch, metadata, commit timestamp)`;
//! - group metadata: key version 2 `(group)`, value version 3 (protocol type,
//!   generation, protocol, leader, state timestamp, members);
//! - a null value is a tombstone: the offset, or the group, is gone.
//!
//! All integers are big-endian; strings are an `i16` length and UTF-8 bytes
//! (`-1` for null); byte arrays an `i32` length.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A decoded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group {
        group: String,
    },
}

/// A committed offset as stored (value version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One member in a group metadata value (version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Group metadata as stored (value version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

fn put_str(buf: &mut BytesMut, s: &str) {
    // Kafka strings are at most i16::MAX bytes; group ids, topics and
    // metadata are validated far below that before they get here.
    let len = s.len().min(i16::MAX as usize);
    buf.put_i16(len as i16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn put_nullable_str(buf: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(buf, s),
        None => buf.put_i16(-1),
    }
}

fn put_bytes(buf: &mut BytesMut, b: &[u8]) {
    buf.put_i32(b.len() as i32);
    buf.put_slice(b);
}

pub fn offset_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(1);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn group_key(group: &str) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(2);
    put_str(&mut b, group);
    b.freeze()
}

pub fn offset_value(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

pub fn group_value(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_nullable_str(&mut b, v.protocol.as_deref());
    put_nullable_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_nullable_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        put_bytes(&mut b, &m.subscription);
        put_bytes(&mut b, &m.assignment);
    }
    b.freeze()
}

/// A reader that fails instead of panicking on short input.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), String> {
        if self.0.remaining() < n {
            return Err(format!(
                "record ends early: {n} bytes wanted, {} left",
                self.0.remaining()
            ));
        }
        Ok(())
    }
    fn i16(&mut self) -> Result<i16, String> {
        self.need(2)?;
        Ok(self.0.get_i16())
    }
    fn i32(&mut self) -> Result<i32, String> {
        self.need(4)?;
        Ok(self.0.get_i32())
    }
    fn i64(&mut self) -> Result<i64, String> {
        self.need(8)?;
        Ok(self.0.get_i64())
    }
    fn nullable_str(&mut self) -> Result<Option<String>, String> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let len = len as usize;
        self.need(len)?;
        let raw = self.0.split_to(len);
        String::from_utf8(raw.to_vec())
            .map(Some)
            .map_err(|_| "string is not UTF-8".to_string())
    }
    fn str(&mut self) -> Result<String, String> {
        self.nullable_str()?
            .ok_or_else(|| "null where a string is required".to_string())
    }
    fn bytes(&mut self) -> Result<Bytes, String> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        let len = len as usize;
        self.need(len)?;
        Ok(self.0.split_to(len))
    }
}

pub fn decode_key(raw: &Bytes) -> Result<Key, String> {
    let mut r = Reader(raw.clone());
    match r.i16()? {
        0 | 1 => Ok(Key::Offset {
            group: r.str()?,
            topic: r.str()?,
            partition: r.i32()?,
        }),
        2 => Ok(Key::Group { group: r.str()? }),
        v => Err(format!("unknown key version {v}")),
    }
}

pub fn decode_offset_value(raw: &Bytes) -> Result<OffsetValue, String> {
    let mut r = Reader(raw.clone());
    let version = r.i16()?;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.str()?;
    let commit_timestamp = r.i64()?;
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata,
        commit_timestamp,
    })
}

pub fn decode_group_value(raw: &Bytes) -> Result<GroupValue, String> {
    let mut r = Reader(raw.clone());
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(format!("unknown group metadata version {version}"));
    }
    let protocol_type = r.str()?;
    let generation = r.i32()?;
    let protocol = r.nullable_str()?;
    let leader = r.nullable_str()?;
    let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?.max(0);
    let mut members = Vec::new();
    for _ in 0..count {
        let member_id = r.str()?;
        let instance_id = if version >= 3 {
            r.nullable_str()?
        } else {
            None
        };
        let client_id = r.str()?;
        let client_host = r.str()?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        members.push(MemberValue {
            member_id,
            instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            subscription: r.bytes()?,
            assignment: r.bytes()?,
        });
    }
    Ok(GroupValue {
        protocol_type,
        generation,
        protocol,
        leader,
        state_timestamp,
        members,
    })
}

/// Kafka's `Utils.abs(groupId.hashCode()) % partitions`: the Java string
/// hash over UTF-16 code units.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The topics a consumer-protocol subscription (versions 0–3) names; empty
/// if it cannot be parsed.
pub fn subscribed_topics(subscription: &Bytes) -> Vec<String> {
    let mut r = Reader(subscription.clone());
    let parse = |r: &mut Reader| -> Result<Vec<String>, String> {
        let version = r.i16()?;
        if !(0..=3).contains(&version) {
            return Err("flexible subscription".into());
        }
        let n = r.i32()?.max(0);
        (0..n).map(|_| r.str()).collect()
    };
    parse(&mut r).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitioning_matches_kafka() {
        // Values computed with Java's "...".hashCode().
        assert_eq!(partition_for("", 50), 0);
        // "a".hashCode() = 97
        assert_eq!(partition_for("a", 50), 47);
        // "my-group".hashCode() = -1906497762 → abs % 50 = 12
        assert_eq!(partition_for("my-group", 50), 12);
    }

    #[test]
    fn offset_records_round_trip() {
        let key = offset_key("g", "t", 3);
        assert_eq!(
            decode_key(&key).unwrap(),
            Key::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 3
            }
        );
        let v = OffsetValue {
            offset: 42,
            leader_epoch: -1,
            metadata: "m".into(),
            commit_timestamp: 7,
        };
        assert_eq!(decode_offset_value(&offset_value(&v)).unwrap(), v);
    }

    #[test]
    fn group_records_round_trip_and_garbage_is_an_error() {
        let v = GroupValue {
            protocol_type: "consumer".into(),
            generation: 3,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 1,
                session_timeout_ms: 2,
                subscription: Bytes::from_static(b"s"),
                assignment: Bytes::from_static(b"a"),
            }],
        };
        assert_eq!(decode_group_value(&group_value(&v)).unwrap(), v);
        assert_eq!(
            decode_key(&group_key("g")).unwrap(),
            Key::Group { group: "g".into() }
        );
        for junk in [&b""[..], b"\x00", b"\x00\x01\x00\x09ab", b"\x00\x07"] {
            assert!(decode_key(&Bytes::copy_from_slice(junk)).is_err());
            assert!(decode_offset_value(&Bytes::copy_from_slice(junk)).is_err());
        }
    }
}
