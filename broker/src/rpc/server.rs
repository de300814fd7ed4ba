//! The server side: a registry of group handlers behind one tonic service.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use openraft::{Raft, RaftTypeConfig};
use parking_lot::RwLock;
use tonic::codegen::{Body, StdError, http};
use tracing::{debug, info, warn};

use super::payload::decode_shared;
use super::stream::{STREAM_MAX_CALL, STREAM_PATH, StreamSvc};
use super::wire::{BatchReply, BatchRequest, CallReply, CallRequest};
use super::{GroupId, RpcConfig, RpcError, RpcKind, decode, encode};

/// Answers the messages of one group.
pub trait GroupHandler: Send + Sync + 'static {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>>;
}

/// Feeds an openraft message to `raft` and encodes its answer
/// (`Result<response, RaftError>`). [`RpcKind::Forward`] is not a Raft
/// message: it answers [`RpcError::Unsupported`].
pub async fn handle_raft<C>(
    raft: &Raft<C>,
    kind: RpcKind,
    payload: &Bytes,
) -> Result<Vec<u8>, RpcError>
where
    C: RaftTypeConfig,
{
    match kind {
        RpcKind::AppendEntries => {
            // Large record batches stay in the received buffer (see
            // `super::payload`).
            let req: openraft::raft::AppendEntriesRequest<C> = decode_shared(payload)?;
            let theirs = req.vote.clone();
            let resp = raft.append_entries(req).await;
            // openraft refuses a leader of an older term; say so, as a
            // deposed leader (a healed partition) is worth a line.
            if let Ok(openraft::raft::AppendEntriesResponse::HigherVote(ours)) = &resp {
                info!(stale_leader = %theirs, current = %ours, "refused AppendEntries from a leader of an older term");
            }
            encode(&resp)
        }
        RpcKind::Vote => encode(&raft.vote(decode(payload)?).await),
        RpcKind::InstallSnapshot => encode(&raft.install_snapshot(decode(payload)?).await),
        RpcKind::Forward | RpcKind::HandOver => Err(RpcError::Unsupported(kind as u32)),
    }
}

/// A [`GroupHandler`] for a plain openraft group.
pub struct RaftHandler<C: RaftTypeConfig> {
    raft: Raft<C>,
}

impl<C: RaftTypeConfig> RaftHandler<C> {
    pub fn new(raft: Raft<C>) -> Self {
        Self { raft }
    }
}

impl<C: RaftTypeConfig> GroupHandler for RaftHandler<C> {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let raft = self.raft.clone();
        Box::pin(async move { handle_raft(&raft, kind, &payload).await })
    }
}

/// The groups this broker hosts.
pub struct Registry {
    config: RpcConfig,
    groups: RwLock<HashMap<GroupId, Arc<dyn GroupHandler>>>,
    /// `Batch` requests served, and the calls they carried.
    batches: std::sync::atomic::AtomicU64,
    batched_calls: std::sync::atomic::AtomicU64,
    /// `Stream` calls opened, and the calls they carried.
    pub(super) streams: std::sync::atomic::AtomicU64,
    pub(super) streamed_calls: std::sync::atomic::AtomicU64,
    /// Set when the server shuts down: open streams end, as unary calls do
    /// once the connection is drained.
    closing: tokio::sync::watch::Sender<bool>,
    /// Requests refused for a missing or wrong peer token.
    unauthenticated: std::sync::atomic::AtomicU64,
    /// When a refusal was last logged (ms since start): a peer with the
    /// wrong token retries at heartbeat pace, the log says so once in a
    /// while.
    unauthenticated_logged: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
}

/// How often refusals of unauthenticated peers are logged at most.
const UNAUTHENTICATED_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Registry {
    pub fn new(config: RpcConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            groups: RwLock::new(HashMap::new()),
            batches: std::sync::atomic::AtomicU64::new(0),
            batched_calls: std::sync::atomic::AtomicU64::new(0),
            streams: std::sync::atomic::AtomicU64::new(0),
            streamed_calls: std::sync::atomic::AtomicU64::new(0),
            closing: tokio::sync::watch::Sender::new(false),
            unauthenticated: std::sync::atomic::AtomicU64::new(0),
            unauthenticated_logged: std::sync::atomic::AtomicU64::new(u64::MAX),
            started: std::time::Instant::now(),
        })
    }

    /// Requests refused for a missing or wrong peer token, since start.
    pub fn unauthenticated_count(&self) -> u64 {
        self.unauthenticated
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a request with these headers may be served: always without
    /// a peer token, else only with that token. A refusal is counted, and
    /// logged at most every [`UNAUTHENTICATED_LOG_EVERY`].
    fn admits(&self, headers: &http::HeaderMap, from: Option<std::net::SocketAddr>) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(token) = &self.config.peer_token else {
            return true;
        };
        let presented = headers.get(super::PEER_TOKEN_HEADER).map(|v| v.as_bytes());
        if token.admits(presented) {
            return true;
        }
        self.unauthenticated.fetch_add(1, Relaxed);
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.unauthenticated_logged.load(Relaxed);
        let due = last == u64::MAX
            || now.saturating_sub(last) >= UNAUTHENTICATED_LOG_EVERY.as_millis() as u64;
        if due
            && self
                .unauthenticated_logged
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
        {
            warn!(
                peer = ?from,
                token = if presented.is_some() { "wrong" } else { "missing" },
                refused = self.unauthenticated_count(),
                "refused a broker-to-broker request without this cluster's peer token"
            );
        }
        false
    }

    /// `Stream` calls opened and the calls they carried, since start.
    pub fn stream_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.streams.load(Relaxed),
            self.streamed_calls.load(Relaxed),
        )
    }

    /// Completes once the server is shutting down.
    pub(super) fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.closing.subscribe();
        async move {
            let _ = closing.wait_for(|c| *c).await;
        }
    }

    /// `Batch` requests served and the calls they carried, since start.
    pub fn batch_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.batches.load(Relaxed), self.batched_calls.load(Relaxed))
    }

    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// Routes `group`'s messages to `handler`, replacing any previous one.
    pub fn register(&self, group: GroupId, handler: Arc<dyn GroupHandler>) {
        self.groups.write().insert(group, handler);
    }

    pub fn unregister(&self, group: &GroupId) -> bool {
        self.groups.write().remove(group).is_some()
    }

    pub fn is_registered(&self, group: &GroupId) -> bool {
        self.groups.read().contains_key(group)
    }

    /// Answers one request; every failure becomes a typed error reply.
    pub async fn dispatch(&self, req: CallRequest) -> CallReply {
        match self.dispatch_inner(req).await {
            Ok(payload) => CallReply::ok(payload),
            Err(e) => CallReply::err(&e),
        }
    }

    async fn dispatch_inner(&self, req: CallRequest) -> Result<Vec<u8>, RpcError> {
        if req.cluster_id != self.config.cluster_id {
            warn!(
                from_node = req.from_node,
                theirs = %req.cluster_id,
                ours = %self.config.cluster_id,
                "refused a peer message from another cluster"
            );
            return Err(RpcError::ClusterMismatch {
                ours: self.config.cluster_id.clone(),
                theirs: req.cluster_id,
            });
        }
        let group = req.group()?;
        let kind = RpcKind::from_u32(req.kind).ok_or(RpcError::Unsupported(req.kind))?;
        let handler = self.groups.read().get(&group).cloned();
        let Some(handler) = handler else {
            debug!(%group, from_node = req.from_node, "message for a group not hosted here");
            return Err(RpcError::UnknownGroup(group.to_string()));
        };
        handler.handle(kind, req.payload).await
    }
}

/// The tonic service (`/skiff.rpc.Raft/Call`), hand-written in the shape
/// tonic's generator produces.
#[derive(Clone)]
pub struct RaftService {
    registry: Arc<Registry>,
}

pub const CALL_PATH: &str = "/skiff.rpc.Raft/Call";
/// Several calls in one request (heartbeats of many groups to one peer),
/// each answered as `Call` would, in order.
pub const BATCH_PATH: &str = "/skiff.rpc.Raft/Batch";

impl RaftService {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

impl tonic::server::NamedService for RaftService {
    const NAME: &'static str = "skiff.rpc.Raft";
}

struct CallSvc(Arc<Registry>);

impl tonic::server::UnaryService<CallRequest> for CallSvc {
    type Response = CallReply;
    type Future = BoxFuture<'static, Result<tonic::Response<CallReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<CallRequest>) -> Self::Future {
        let registry = self.0.clone();
        Box::pin(async move {
            Ok(tonic::Response::new(
                registry.dispatch(request.into_inner()).await,
            ))
        })
    }
}

struct BatchSvc(Arc<Registry>);

impl tonic::server::UnaryService<BatchRequest> for BatchSvc {
    type Response = BatchReply;
    type Future = BoxFuture<'static, Result<tonic::Response<BatchReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<BatchRequest>) -> Self::Future {
        let registry = self.0.clone();
        Box::pin(async move {
            let calls = request.into_inner().calls;
            {
                use std::sync::atomic::Ordering::Relaxed;
                registry.batches.fetch_add(1, Relaxed);
                registry
                    .batched_calls
                    .fetch_add(calls.len() as u64, Relaxed);
            }
            let replies =
                futures_util::future::join_all(calls.into_iter().map(|c| registry.dispatch(c)))
                    .await;
            Ok(tonic::Response::new(BatchReply { replies }))
        })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for RaftService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let from = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr());
        if !self.registry.admits(req.headers(), from) {
            return Box::pin(async {
                Ok(
                    tonic::Status::unauthenticated("this cluster's peer token is required")
                        .into_http(),
                )
            });
        }
        let path = req.uri().path();
        if ![CALL_PATH, BATCH_PATH, STREAM_PATH].contains(&path) {
            return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
        }
        let (batch, stream) = (path == BATCH_PATH, path == STREAM_PATH);
        let registry = self.registry.clone();
        let max = registry.config.max_message_bytes;
        Box::pin(async move {
            // The codec is typed by the messages: one per path.
            Ok(if stream {
                tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .max_decoding_message_size(STREAM_MAX_CALL)
                    .max_encoding_message_size(max)
                    .streaming(StreamSvc(registry), req)
                    .await
            } else if batch {
                tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
                    .unary(BatchSvc(registry), req)
                    .await
            } else {
                tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max)
                    .unary(CallSvc(registry), req)
                    .await
            })
        })
    }
}

/// The connections `listener` accepts, with Nagle's algorithm off. The
/// server builder's `tcp_nodelay` covers only listeners it binds itself.
/// With Nagle on, a reply's frames wait for the peer's delayed ACK (40 ms
/// on Linux) whenever a small frame is still unacknowledged: that held one
/// Raft round trip in a hundred, and produce latency's p99, at 30-40 ms.
pub(crate) fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Requests a peer may have open on one connection (HTTP/2 streams), and
/// how many the server works on at once. One in-flight request per group
/// and kind per peer is what Raft sends, and the client queues the rest;
/// this stops a misbehaving peer from opening streams without end (tonic's
/// default is no limit). A client held at a server's stream limit could
/// hang before h2 0.4.13 (h2#860), hence the workspace's floor.
pub(crate) const MAX_STREAMS: u32 = 256;

/// The broker-to-broker server's HTTP/2 settings. The windows and frame
/// size fit replication's large messages (a produce request's batch, up to
/// 1 MB by default): with HTTP/2's 16 KiB frames and hyper's 1 MiB
/// windows, a 1 MB AppendEntries crossed as 64 frames and waited for window
/// updates on the way, and the three brokers spent 20-30 % more CPU on
/// the same RF 3 produce (`docs/benchmarks.md`, session 18). The windows
/// bound what a peer may send before the server reads it: 8 MiB per
/// connection.
pub(crate) fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(MAX_STREAMS as usize)
        .max_concurrent_streams(MAX_STREAMS)
        .initial_connection_window_size(8 << 20)
        .initial_stream_window_size(4 << 20)
        .max_frame_size(256 << 10)
}

/// Serves `registry` on `listener` until `shutdown` completes.
///
/// # Errors
/// The transport failing.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let closing = registry.clone();
    let shutdown = async move {
        shutdown.await;
        closing.closing.send_replace(true);
    };
    transport()
        .add_service(RaftService::new(registry))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
}
