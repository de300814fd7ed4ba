//! Broker-to-broker gRPC: one server per broker that multiplexes every Raft
//! group (the metadata group and one group per partition).
//!
//! # Contract
//!
//! - **One call shape**, protobuf messages [`wire::CallRequest`] →
//!   [`wire::CallReply`] (hand-written prost types, no `.proto` compilation
//!   step), on three methods: `/skiff.rpc.Raft/Call` (unary),
//!   `/skiff.rpc.Raft/Batch` (several calls in one request, for heartbeats)
//!   and `/skiff.rpc.Raft/Stream` (one long-lived stream per peer for calls
//!   of up to 64 KiB, see [`stream`]).
//! - **Peers prove they belong** when the brokers share a peer token
//!   (`--rpc-peer-token-file`): every request carries it as
//!   `authorization: Bearer <token>`, and the server refuses a request
//!   without it, or with another, as `UNAUTHENTICATED` before reading it
//!   ([`PeerToken`]). Without a token any peer that reaches the port is
//!   served, as before.
//! - **Every request names its cluster and group.** A request whose
//!   `cluster_id` is not the server's is refused with
//!   [`RpcError::ClusterMismatch`] and logged; a request for a group that is
//!   not registered on the server answers [`RpcError::UnknownGroup`] (the
//!   caller's Raft retries after its backoff: the group may just not have
//!   been created on that broker yet).
//! - **The payload is opaque to the transport**: `kind` says what it is
//!   ([`RpcKind`]) and the group's handler decodes it. For Raft kinds the
//!   payload is the openraft request serialized with [`encode`] (postcard),
//!   and the reply payload is `Result<openraft response, RaftError>` encoded
//!   the same way, so a remote Raft error comes back typed.
//!   [`RpcKind::Forward`] carries an application request the group's leader
//!   should execute (the metadata group uses it to forward writes). Large
//!   byte strings marked for it (a partition's record batches) cross
//!   without copies in the process on either side ([`payload`]); the bytes
//!   on the wire are the same.
//! - **Server side**: [`server::Registry::register`] /
//!   [`server::Registry::unregister`] a [`server::GroupHandler`] per group;
//!   [`server::RaftHandler`] adapts any openraft `Raft<C>` whose types are
//!   serde. [`server::serve`] runs the tonic server on `rpc.listener`.
//! - **Client side**: [`client::PeerPool`] keeps one tonic `Channel` (one
//!   HTTP/2 connection, multiplexed) per peer address, and on it one call
//!   stream for small calls ([`stream::CallStream`]); it applies a per-call
//!   deadline, the message size limit, and a bound on the bytes in flight
//!   per peer: a call waits (until its deadline) for room, so a slow follower
//!   costs at most that much of the leader's memory.
//!   [`client::NetworkFactory`] is an openraft `RaftNetworkFactory` for one
//!   group, generic over the `RaftTypeConfig` (its `Node` must say its RPC
//!   address, see [`client::PeerAddr`]).

pub mod client;
pub mod payload;
pub mod recovery;
pub mod server;
pub mod stream;
pub mod throttle;
pub mod wire;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

/// Which Raft group a message is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupId {
    /// The cluster metadata group.
    Metadata,
    /// One partition's replicas.
    Partition { topic_id: Uuid, partition: i32 },
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Metadata => f.write_str("metadata"),
            Self::Partition {
                topic_id,
                partition,
            } => write!(f, "{topic_id}/{partition}"),
        }
    }
}

/// What a request's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RpcKind {
    AppendEntries = 1,
    Vote = 2,
    InstallSnapshot = 3,
    /// An application request for the group's leader (e.g. a metadata write).
    Forward = 4,
    /// A partition leadership hand-over (`replication::handover`).
    HandOver = 5,
}

impl RpcKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            1 => Self::AppendEntries,
            2 => Self::Vote,
            3 => Self::InstallSnapshot,
            4 => Self::Forward,
            5 => Self::HandOver,
            _ => return None,
        })
    }
}

/// Transport-level failures. A remote Raft error is not one of these: it
/// travels inside a successful reply's payload.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RpcError {
    #[error("peer belongs to cluster {theirs:?}, not {ours:?}")]
    ClusterMismatch { ours: String, theirs: String },
    #[error("group {0} is not hosted by the peer")]
    UnknownGroup(String),
    #[error("request kind {0} is not supported by the group")]
    Unsupported(u32),
    #[error("undecodable message: {0}")]
    Decode(String),
    #[error("handler failed: {0}")]
    Handler(String),
    #[error("peer {0} unreachable: {1}")]
    Unreachable(String, String),
    #[error("call to {0} timed out after {1:?}")]
    Timeout(String, Duration),
    #[error("message of {0} bytes exceeds the limit of {1} bytes")]
    TooLarge(usize, usize),
}

/// Error codes of [`wire::CallReply::error_code`].
pub(crate) mod code {
    pub const CLUSTER_MISMATCH: u32 = 1;
    pub const UNKNOWN_GROUP: u32 = 2;
    pub const UNSUPPORTED: u32 = 3;
    pub const DECODE: u32 = 4;
    pub const HANDLER: u32 = 5;
}

/// Transport settings shared by the server and the clients of one broker.
#[derive(Debug, Clone)]
pub struct RpcConfig {
    pub cluster_id: String,
    /// This broker's node id, sent with every request for the peer's logs.
    pub node_id: u64,
    /// Deadline of one call when the caller gives none shorter.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Largest encoded message sent or accepted.
    pub max_message_bytes: usize,
    /// Bytes of request payloads in flight to one peer at a time.
    pub max_inflight_bytes_per_peer: usize,
    /// How long a peer's `Unimplemented` answer to `Batch` or `Stream` (an
    /// older broker during a rolling upgrade) is believed before the call
    /// is tried again.
    pub ask_again_after: Duration,
    /// The secret every broker of the cluster sends and demands.
    pub peer_token: Option<PeerToken>,
}

/// The header a peer token travels in.
pub const PEER_TOKEN_HEADER: &str = "authorization";

/// A secret shared by the brokers of a cluster, sent with every request to
/// a peer and demanded from every peer. It authenticates, it does not
/// encrypt: anyone who can read the traffic between brokers can read it.
#[derive(Clone)]
pub struct PeerToken {
    /// `Bearer <token>`, as sent.
    header: tonic::metadata::AsciiMetadataValue,
    /// Whether a request without any token is refused (see
    /// [`Self::tolerating_none`]).
    required: bool,
}

/// Shortest token accepted: 16 characters (a 128-bit random token in hex
/// is 32).
pub const PEER_TOKEN_MIN_LEN: usize = 16;

impl PeerToken {
    /// A token from its text (a file's content; surrounding whitespace is
    /// not part of it).
    ///
    /// # Errors
    /// Shorter than [`PEER_TOKEN_MIN_LEN`], or not printable ASCII without
    /// spaces (it travels in an HTTP/2 header).
    pub fn new(text: &str) -> Result<Self, String> {
        let token = text.trim();
        if token.len() < PEER_TOKEN_MIN_LEN {
            return Err(format!(
                "the peer token has {} characters; at least {PEER_TOKEN_MIN_LEN} are needed",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the peer token must be printable ASCII without spaces".into());
        }
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|e| format!("the peer token cannot travel in a header: {e}"))?;
        Ok(Self {
            header,
            required: true,
        })
    }

    /// This token, sent as always, but a request carrying none is served:
    /// while a roll brings the token to brokers that did not send one.
    #[must_use]
    pub fn tolerating_none(mut self) -> Self {
        self.required = false;
        self
    }

    pub(crate) fn header(&self) -> &tonic::metadata::AsciiMetadataValue {
        &self.header
    }

    /// Whether `presented` (the header a request carried) is this token,
    /// compared in constant time.
    pub(crate) fn admits(&self, presented: Option<&[u8]>) -> bool {
        match presented {
            Some(p) => crate::auth::scram::constant_time_eq(p, self.header.as_encoded_bytes()),
            None => !self.required,
        }
    }
}

impl std::fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerToken(..)")
    }
}

impl RpcConfig {
    pub fn new(cluster_id: impl Into<String>, node_id: u64) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_message_bytes: 64 << 20,
            max_inflight_bytes_per_peer: 128 << 20,
            ask_again_after: Duration::from_secs(60),
            peer_token: None,
        }
    }

    #[must_use]
    pub fn with_peer_token(mut self, token: Option<PeerToken>) -> Self {
        self.peer_token = token;
        self
    }
}

/// Serializes a payload (postcard: compact, byte strings stay raw).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, RpcError> {
    postcard::to_stdvec(v).map_err(|e| RpcError::Decode(e.to_string()))
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, RpcError> {
    postcard::from_bytes(b).map_err(|e| RpcError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests;
