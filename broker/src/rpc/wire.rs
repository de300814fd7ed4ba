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

use uuid::Uuid;

use super::{GroupId, RpcError, code};

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
