//! The protobuf messages of `/skiff.rpc.Raft/Call`, written as prost types
//! so the build needs no `protoc`. Equivalent `.proto`:
//!
//! ```proto
//! message CallRequest {
//!   string cluster_id = 1;
//!   uint64 from_node = 2;
//!   uint32 group_kind = 3;   // 0 metadata, 1 partition
//!   bytes topic_id = 4;      // 16 bytes when group_kind = 1
//!   int32 partition = 5;
//!   uint32 kind = 6;         // RpcKind
//!   bytes payload = 7;
//! }
//! message CallReply {
//!   uint32 error_code = 1;   // 0: ok, payload is the answer
//!   string error = 2;
//!   bytes payload = 3;
//! }
//! // /skiff.rpc.Raft/Batch: several calls in one request, answered in order.
//! message BatchRequest { repeated CallRequest calls = 1; }
//! message BatchReply { repeated CallReply replies = 1; }
//! // /skiff.rpc.Raft/Stream (bidirectional): calls and their replies,
//! // matched by id; replies come in the order they are ready.
//! message StreamCall { uint64 id = 1; CallRequest call = 2; uint32 timeout_ms = 3; }
//! message StreamReply { uint64 id = 1; CallReply reply = 2; }
//! ```

use bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::codec::{Codec, EncodeBuf, Encoder};
use uuid::Uuid;

use super::payload::Payload;
use super::{GroupId, RpcError, code};

/// `CallRequest`'s payload field.
const PAYLOAD_TAG: u32 = 7;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallRequest {
    #[prost(string, tag = "1")]
    pub cluster_id: String,
    #[prost(uint64, tag = "2")]
    pub from_node: u64,
    #[prost(uint32, tag = "3")]
    pub group_kind: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub topic_id: Vec<u8>,
    #[prost(int32, tag = "5")]
    pub partition: i32,
    #[prost(uint32, tag = "6")]
    pub kind: u32,
    #[prost(bytes = "bytes", tag = "7")]
    pub payload: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CallReply {
    #[prost(uint32, tag = "1")]
    pub error_code: u32,
    #[prost(string, tag = "2")]
    pub error: String,
    #[prost(bytes = "bytes", tag = "3")]
    pub payload: bytes::Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchRequest {
    #[prost(message, repeated, tag = "1")]
    pub calls: Vec<CallRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchReply {
    #[prost(message, repeated, tag = "1")]
    pub replies: Vec<CallReply>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamCall {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, optional, tag = "2")]
    pub call: Option<CallRequest>,
    /// How long the caller waits for the answer (0: the server's default).
    #[prost(uint32, tag = "3")]
    pub timeout_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamReply {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, optional, tag = "2")]
    pub reply: Option<CallReply>,
}

/// A [`CallRequest`] on its way out with its payload in parts (see
/// [`super::payload`]): encoded as the very same protobuf message, each
/// part copied once, straight into the frame.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// Everything but the payload, which it leaves empty.
    pub head: CallRequest,
    pub payload: Payload,
}

impl OutgoingCall {
    pub fn encoded_len(&self) -> usize {
        let n = self.payload.len();
        prost::Message::encoded_len(&self.head)
            + if n == 0 {
                0
            } else {
                key_len(PAYLOAD_TAG) + encoded_len_varint(n as u64) + n
            }
    }

    /// The whole request in one message, for the paths that take a
    /// [`CallRequest`] (small calls: a copy of the payload when in parts).
    pub fn into_request(self) -> CallRequest {
        CallRequest {
            payload: self.payload.to_bytes(),
            ..self.head
        }
    }

    fn encode(&self, buf: &mut impl BufMut) {
        debug_assert!(self.head.payload.is_empty());
        // Fields may come in any order in protobuf; an empty payload is
        // left out, as prost leaves it out.
        prost::Message::encode(&self.head, buf).expect("an EncodeBuf grows as needed");
        if !self.payload.is_empty() {
            encode_key(PAYLOAD_TAG, WireType::LengthDelimited, buf);
            encode_varint(self.payload.len() as u64, buf);
            for part in self.payload.parts() {
                buf.put_slice(part);
            }
        }
    }
}

/// The codec of a unary `Call` sent as an [`OutgoingCall`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OutgoingCallCodec;

#[derive(Debug, Clone, Copy, Default)]
pub struct OutgoingCallEncoder;

impl Encoder for OutgoingCallEncoder {
    type Item = OutgoingCall;
    type Error = tonic::Status;

    fn encode(&mut self, item: OutgoingCall, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buf.reserve(item.encoded_len());
        item.encode(buf);
        Ok(())
    }
}

impl Codec for OutgoingCallCodec {
    type Encode = OutgoingCall;
    type Decode = CallReply;
    type Encoder = OutgoingCallEncoder;
    type Decoder = tonic_prost::ProstDecoder<CallReply>;

    fn encoder(&mut self) -> Self::Encoder {
        OutgoingCallEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

impl CallRequest {
    pub fn set_group(&mut self, group: GroupId) {
        match group {
            GroupId::Metadata => {
                self.group_kind = 0;
                self.topic_id.clear();
                self.partition = 0;
            }
            GroupId::Partition {
                topic_id,
                partition,
            } => {
                self.group_kind = 1;
                self.topic_id = topic_id.as_bytes().to_vec();
                self.partition = partition;
            }
        }
    }

    pub fn group(&self) -> Result<GroupId, RpcError> {
        match self.group_kind {
            0 => Ok(GroupId::Metadata),
            1 => {
                let topic_id = Uuid::from_slice(&self.topic_id)
                    .map_err(|e| RpcError::Decode(format!("topic id: {e}")))?;
                Ok(GroupId::Partition {
                    topic_id,
                    partition: self.partition,
                })
            }
            k => Err(RpcError::Decode(format!("unknown group kind {k}"))),
        }
    }
}

impl CallReply {
    pub fn ok(payload: Vec<u8>) -> Self {
        Self {
            error_code: 0,
            error: String::new(),
            payload: payload.into(),
        }
    }

    pub fn err(e: &RpcError) -> Self {
        let error_code = match e {
            RpcError::ClusterMismatch { .. } => code::CLUSTER_MISMATCH,
            RpcError::UnknownGroup(_) => code::UNKNOWN_GROUP,
            RpcError::Unsupported(_) => code::UNSUPPORTED,
            RpcError::Decode(_) | RpcError::TooLarge(..) => code::DECODE,
            _ => code::HANDLER,
        };
        Self {
            error_code,
            error: e.to_string(),
            payload: bytes::Bytes::new(),
        }
    }

    /// The payload, or the typed error the server answered.
    pub fn into_result(self) -> Result<bytes::Bytes, RpcError> {
        match self.error_code {
            0 => Ok(self.payload),
            code::CLUSTER_MISMATCH => Err(RpcError::ClusterMismatch {
                ours: String::new(),
                theirs: self.error,
            }),
            code::UNKNOWN_GROUP => Err(RpcError::UnknownGroup(self.error)),
            code::UNSUPPORTED => Err(RpcError::Unsupported(0)),
            code::DECODE => Err(RpcError::Decode(self.error)),
            _ => Err(RpcError::Handler(self.error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::payload::{SHARED_MIN, encode_parts};
    use bytes::Bytes;

    fn head() -> CallRequest {
        let mut head = CallRequest {
            cluster_id: "c".into(),
            from_node: 7,
            kind: 2,
            ..Default::default()
        };
        head.set_group(GroupId::Partition {
            topic_id: Uuid::from_u128(42),
            partition: 3,
        });
        head
    }

    /// The receiver decodes a plain `CallRequest`: a payload sent in parts
    /// must be the same message, byte for byte.
    #[test]
    fn a_call_in_parts_encodes_as_the_plain_message() {
        #[derive(serde::Serialize)]
        struct Big(#[serde(with = "crate::rpc::payload")] Bytes, u8);
        for payload in [
            Payload::default(),
            Payload::from(vec![1, 2, 3]),
            encode_parts(&Big(Bytes::from(vec![9; SHARED_MIN * 2]), 5)).expect("encode"),
        ] {
            let out = OutgoingCall {
                head: head(),
                payload: payload.clone(),
            };
            let mut got = Vec::new();
            out.encode(&mut got);
            assert_eq!(got.len(), out.encoded_len());
            let plain = out.clone().into_request();
            assert_eq!(got, prost::Message::encode_to_vec(&plain));
            let back: CallRequest = prost::Message::decode(&got[..]).expect("decode");
            assert_eq!(back.payload, payload.to_bytes());
            assert_eq!(back.group().expect("group"), plain.group().expect("group"));
        }
    }
}
