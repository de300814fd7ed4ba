//! Request payloads whose large byte strings cross the transport without
//! being copied in the process: a partition's record batches.
//!
//! Each replicated byte used to be copied twice on the leader per follower
//! (postcard's output, then the gRPC frame) and once more on the follower
//! (postcard's `Bytes` out of the frame), besides the copies the kernel
//! makes; with three brokers on two cores those copies were the largest cost
//! of `acks=all` replication (docs/benchmarks.md, session 17). The wire
//! format does not change: a field marked `#[serde(with =
//! "crate::rpc::payload")]` is a postcard byte string as before.
//!
//! - **Out**: [`encode_parts`] serializes with a postcard flavor that keeps
//!   each large marked field as the `Bytes` it already is, so a [`Payload`]
//!   is a list of parts and the gRPC encoder copies each part once, into
//!   the frame.
//! - **In**: [`decode_shared`] decodes so that a large marked field is a
//!   slice of the received payload (which owns its own buffer for a unary
//!   call) rather than a copy.
//!
//! Both sides find the `Bytes` behind a borrowed slice through a
//! thread-local set only for the duration of one synchronous postcard run.
//! Small fields are copied as before: a slice would keep its whole receive
//! buffer alive, which for a call on the shared stream is worth far more
//! than the field.

use std::cell::RefCell;
use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::de::{DeserializeOwned, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use super::RpcError;
use super::stream::STREAM_MAX_CALL;

/// Byte strings at least this long travel as shared parts: longer than any
/// call on the shared stream, so a received one always lies in a unary
/// call's own buffer.
pub const SHARED_MIN: usize = STREAM_MAX_CALL + 1;

/// A serialized payload: the bytes of its parts, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    parts: Vec<Bytes>,
    len: usize,
}

impl Payload {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The payload in one piece: free for a single part, a copy otherwise
    /// (for the small calls that travel in a `Batch` or on the stream).
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        let mut p = Payload::default();
        p.push(Bytes::from(v));
        p
    }
}

thread_local! {
    /// While [`encode_parts`] runs: the large marked fields serialized so
    /// far, for its flavor to recognise. While [`decode_shared`] runs: the
    /// payload being decoded.
    static OFFERED: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
    static SOURCE: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Puts a thread-local back as it was, even if serde panics.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    was: Option<T>,
}

impl<T: 'static> Restore<T> {
    fn set(key: &'static std::thread::LocalKey<RefCell<Option<T>>>, value: T) -> Self {
        let was = key.replace(Some(value));
        Self { key, was }
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        self.key.set(self.was.take());
    }
}

/// Serializes `v` as [`super::encode`] does, byte for byte, keeping its
/// large marked fields as shared parts.
///
/// # Errors
/// As [`super::encode`].
pub fn encode_parts<T: Serialize>(v: &T) -> Result<Payload, RpcError> {
    let _offers = Restore::set(&OFFERED, Vec::new());
    postcard::serialize_with_flavor(v, Parts::default())
        .map_err(|e| RpcError::Decode(e.to_string()))
}

/// Decodes `payload` as [`super::decode`] does, with large marked fields
/// as slices of it.
///
/// # Errors
/// As [`super::decode`].
pub fn decode_shared<T: DeserializeOwned>(payload: &Bytes) -> Result<T, RpcError> {
    let _source = Restore::set(&SOURCE, payload.clone());
    super::decode(payload)
}

/// The postcard flavor of [`encode_parts`].
#[derive(Default)]
struct Parts {
    done: Payload,
    current: Vec<u8>,
}

impl Parts {
    fn offered(data: &[u8]) -> Option<Bytes> {
        OFFERED.with_borrow(|o| {
            o.as_ref()?
                .iter()
                .rev()
                .find(|b| b.as_ptr() == data.as_ptr() && b.len() == data.len())
                .cloned()
        })
    }
}

impl postcard::ser_flavors::Flavor for Parts {
    type Output = Payload;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.current.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        match (data.len() >= SHARED_MIN)
            .then(|| Self::offered(data))
            .flatten()
        {
            Some(shared) => {
                let head = std::mem::take(&mut self.current);
                self.done.push(Bytes::from(head));
                self.done.push(shared);
            }
            None => self.current.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<Payload> {
        self.done.push(Bytes::from(self.current));
        Ok(self.done)
    }
}

/// Serializes a marked field: a byte string, offered to [`encode_parts`].
///
/// # Errors
/// The serializer's.
pub fn serialize<S: Serializer>(bytes: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    if bytes.len() >= SHARED_MIN {
        OFFERED.with_borrow_mut(|o| {
            if let Some(o) = o {
                o.push(bytes.clone());
            }
        });
    }
    s.serialize_bytes(bytes)
}

/// Deserializes a marked field: a slice of the payload under
/// [`decode_shared`] when large, a copy otherwise.
///
/// # Errors
/// The deserializer's.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    d.deserialize_bytes(SharedVisitor)
}

struct SharedVisitor;

impl<'de> Visitor<'de> for SharedVisitor {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: serde::de::Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        let shared = (v.len() >= SHARED_MIN)
            .then(|| SOURCE.with_borrow(|s| s.as_ref().and_then(|s| slice_of(s, v))))
            .flatten();
        Ok(shared.unwrap_or_else(|| Bytes::copy_from_slice(v)))
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

/// `inner` as a slice of `outer`, when it lies within it.
fn slice_of(outer: &Bytes, inner: &[u8]) -> Option<Bytes> {
    let start = outer.as_ptr() as usize;
    let at = (inner.as_ptr() as usize).checked_sub(start)?;
    let end = at.checked_add(inner.len())?;
    (end <= outer.len()).then(|| outer.slice(at..end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Marked {
        id: u32,
        #[serde(with = "crate::rpc::payload")]
        data: Bytes,
        tail: String,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        id: u32,
        data: Bytes,
        tail: String,
    }

    fn big(n: usize) -> Bytes {
        Bytes::from((0..n).map(|i| (i % 251) as u8).collect::<Vec<_>>())
    }

    #[test]
    fn a_large_field_travels_as_its_own_part_with_the_bytes_of_plain_postcard() {
        let data = big(SHARED_MIN + 10);
        let marked = vec![
            Marked {
                id: 1,
                data: data.clone(),
                tail: "a".into(),
            },
            Marked {
                id: 2,
                data: Bytes::from_static(b"small"),
                tail: "b".into(),
            },
        ];
        let plain: Vec<Plain> = marked
            .iter()
            .map(|m| Plain {
                id: m.id,
                data: m.data.clone(),
                tail: m.tail.clone(),
            })
            .collect();
        let p = encode_parts(&marked).expect("encode");
        assert_eq!(
            p.to_bytes(),
            Bytes::from(super::super::encode(&plain).expect("encode"))
        );
        assert_eq!(p.parts().len(), 3, "head, the shared field, the rest");
        assert_eq!(p.parts()[1].as_ptr(), data.as_ptr(), "not copied");
        assert_eq!(p.len(), p.to_bytes().len());

        let wire = p.to_bytes();
        let back: Vec<Marked> = decode_shared(&wire).expect("decode");
        assert_eq!(back, marked);
        let inside = wire.as_ptr() as usize..wire.as_ptr() as usize + wire.len();
        assert!(
            inside.contains(&(back[0].data.as_ptr() as usize)),
            "a slice of the payload"
        );
        assert!(
            !inside.contains(&(back[1].data.as_ptr() as usize)),
            "a small field is copied"
        );
        let copied: Vec<Marked> = super::super::decode(&wire).expect("decode");
        assert!(
            !inside.contains(&(copied[0].data.as_ptr() as usize)),
            "only under decode_shared"
        );
    }

    #[test]
    fn equal_bytes_elsewhere_are_not_taken_for_an_offered_field() {
        // Same length, same content, different memory: must be copied in
        // from where the serializer says it is, not swapped for the offer.
        let offered = big(SHARED_MIN);
        let twin = Bytes::copy_from_slice(&offered);
        let _offers = Restore::set(&OFFERED, vec![offered]);
        let mut parts = Parts::default();
        postcard::ser_flavors::Flavor::try_extend(&mut parts, &twin).expect("extend");
        let p = postcard::ser_flavors::Flavor::finalize(parts).expect("finalize");
        assert_eq!(p.parts().len(), 1);
        assert_ne!(p.parts()[0].as_ptr(), twin.as_ptr());
        assert_eq!(p.to_bytes(), twin);
    }

    #[test]
    fn a_field_outside_the_payload_is_copied() {
        let source = big(16);
        let elsewhere = big(SHARED_MIN);
        assert!(slice_of(&source, &elsewhere).is_none());
        assert_eq!(slice_of(&source, &source[3..9]), Some(source.slice(3..9)));
        assert!(slice_of(&source, &source[..0]).is_some());
    }

    /// A peer's AppendEntries as the follower decodes it: every mutation
    /// of a valid one decodes or is refused, never panics, and a batch it
    /// yields lies within the payload or is a copy.
    #[test]
    fn mutated_append_entries_decode_or_fail_without_panicking() {
        use crate::replication::{PartitionRaft, Proposal};
        use openraft::raft::AppendEntriesRequest;
        use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

        let entry = |index: u64, batch: Bytes| Entry::<PartitionRaft> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), index),
            payload: EntryPayload::Normal(Proposal::new(batch)),
        };
        let req = AppendEntriesRequest::<PartitionRaft> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 9)),
            entries: vec![
                entry(10, big(SHARED_MIN + 7)),
                entry(11, Bytes::from_static(b"small")),
                entry(12, big(2 * SHARED_MIN)),
            ],
            leader_commit: Some(LogId::new(CommittedLeaderId::new(3, 1), 10)),
        };
        let valid = encode_parts(&req).expect("encode").to_bytes();
        let back: AppendEntriesRequest<PartitionRaft> = decode_shared(&valid).expect("decode");
        assert_eq!(back.entries.len(), 3);

        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut m = valid.to_vec();
            match round % 3 {
                // A byte of the head or the framing between batches.
                0 => {
                    let at = (next() as usize) % 64.min(m.len());
                    m[at] = next() as u8;
                }
                1 => {
                    let at = (next() as usize) % m.len();
                    m[at] ^= 1 << (next() % 8);
                }
                _ => m.truncate((next() as usize) % m.len()),
            }
            let m = Bytes::from(m);
            let inside = m.as_ptr() as usize..m.as_ptr() as usize + m.len();
            if let Ok(r) = decode_shared::<AppendEntriesRequest<PartitionRaft>>(&m) {
                for e in &r.entries {
                    if let EntryPayload::Normal(p) = &e.payload
                        && inside.contains(&(p.batch.as_ptr() as usize))
                    {
                        let end = p.batch.as_ptr() as usize + p.batch.len();
                        assert!(end <= inside.end, "a slice past the payload");
                    }
                }
            }
        }
    }

    #[test]
    fn thread_locals_are_restored_after_a_run() {
        let _ = encode_parts(&1u32);
        assert!(OFFERED.with_borrow(Option::is_none));
        let _: Result<u32, _> = decode_shared(&Bytes::from_static(&[1]));
        assert!(SOURCE.with_borrow(Option::is_none));
    }
}
