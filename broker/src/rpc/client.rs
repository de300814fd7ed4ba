//! The client side: pooled channels per peer and openraft's network traits.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftTypeConfig};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Semaphore;
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};

use super::server::CALL_PATH;
use super::wire::{CallReply, CallRequest};
use super::{GroupId, RpcConfig, RpcError, RpcKind, decode, encode};

#[derive(Clone)]
struct Peer {
    channel: Channel,
    /// Permits are payload bytes in flight to this peer.
    inflight: Arc<Semaphore>,
}

/// One lazily connected channel per peer address, shared by every group.
pub struct PeerPool {
    config: RpcConfig,
    peers: Mutex<HashMap<String, Peer>>,
    /// When each peer last answered anything: a liveness signal for
    /// in-sync replica sets (openraft 0.9 reports no heartbeat times).
    last_reply: Mutex<HashMap<String, std::time::Instant>>,
}

impl PeerPool {
    pub fn new(config: RpcConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            peers: Mutex::new(HashMap::new()),
            last_reply: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &RpcConfig {
        &self.config
    }

    /// How long ago `addr` last answered a call, if it ever did.
    pub fn since_last_reply(&self, addr: &str) -> Option<Duration> {
        self.last_reply.lock().get(addr).map(|t| t.elapsed())
    }

    fn peer(&self, addr: &str) -> Result<Peer, RpcError> {
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(addr) {
            return Ok(p.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| RpcError::Unreachable(addr.to_string(), e.to_string()))?
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let peer = Peer {
            channel: endpoint.connect_lazy(),
            inflight: Arc::new(Semaphore::new(self.config.max_inflight_bytes_per_peer)),
        };
        peers.insert(addr.to_string(), peer.clone());
        Ok(peer)
    }

    /// Sends one request to `addr` and returns the reply payload. The call
    /// (waiting for in-flight room included) ends by `timeout` or the
    /// configured request timeout, whichever is shorter.
    ///
    /// # Errors
    /// Transport failures, the deadline, or the typed error the peer answered.
    pub async fn call(
        &self,
        addr: &str,
        group: GroupId,
        kind: RpcKind,
        payload: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, RpcError> {
        let max = self.config.max_message_bytes;
        if payload.len() > max {
            return Err(RpcError::TooLarge(payload.len(), max));
        }
        let deadline = timeout
            .map_or(self.config.request_timeout, |t| {
                t.min(self.config.request_timeout)
            })
            .max(Duration::from_millis(1));
        let peer = self.peer(addr)?;
        let permits = u32::try_from(
            payload
                .len()
                .clamp(1, self.config.max_inflight_bytes_per_peer.max(1)),
        )
        .unwrap_or(u32::MAX);
        let mut req = CallRequest {
            cluster_id: self.config.cluster_id.clone(),
            from_node: self.config.node_id,
            kind: kind as u32,
            payload: payload.into(),
            ..Default::default()
        };
        req.set_group(group);
        let fut = async {
            // Held until the reply arrives: the bound covers the whole call.
            let _permit = peer
                .inflight
                .acquire_many(permits)
                .await
                .map_err(|e| RpcError::Unreachable(addr.to_string(), e.to_string()))?;
            let mut grpc = tonic::client::Grpc::new(peer.channel.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            grpc.ready()
                .await
                .map_err(|e| RpcError::Unreachable(addr.to_string(), e.to_string()))?;
            let mut request = tonic::Request::new(req);
            request.set_timeout(deadline);
            let reply: tonic::Response<CallReply> = grpc
                .unary(
                    request,
                    http::uri::PathAndQuery::from_static(CALL_PATH),
                    tonic_prost::ProstCodec::default(),
                )
                .await
                .map_err(|s| match s.code() {
                    tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                        RpcError::Timeout(addr.to_string(), deadline)
                    }
                    _ => RpcError::Unreachable(addr.to_string(), s.to_string()),
                })?;
            {
                let now = std::time::Instant::now();
                let mut last = self.last_reply.lock();
                match last.get_mut(addr) {
                    Some(t) => *t = now,
                    None => {
                        last.insert(addr.to_string(), now);
                    }
                }
            }
            reply.into_inner().into_result()
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(addr.to_string(), deadline)),
        }
    }
}

/// A Raft node type that knows its broker's RPC address.
pub trait PeerAddr {
    fn rpc_addr(&self) -> &str;
}

impl PeerAddr for BasicNode {
    fn rpc_addr(&self) -> &str {
        &self.addr
    }
}

/// openraft's network factory for one group over a shared [`PeerPool`].
pub struct NetworkFactory<C> {
    pool: Arc<PeerPool>,
    group: GroupId,
    _types: PhantomData<fn() -> C>,
}

impl<C> NetworkFactory<C> {
    pub fn new(pool: Arc<PeerPool>, group: GroupId) -> Self {
        Self {
            pool,
            group,
            _types: PhantomData,
        }
    }
}

impl<C> RaftNetworkFactory<C> for NetworkFactory<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
{
    type Network = Network<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> Self::Network {
        Network {
            pool: self.pool.clone(),
            group: self.group,
            target,
            addr: node.rpc_addr().to_string(),
            _types: PhantomData,
        }
    }
}

/// The connection of one group to one peer.
pub struct Network<C: RaftTypeConfig> {
    pool: Arc<PeerPool>,
    group: GroupId,
    target: C::NodeId,
    addr: String,
    _types: PhantomData<fn() -> C>,
}

type RpcResult<C, T, E> = Result<
    T,
    RPCError<
        <C as RaftTypeConfig>::NodeId,
        <C as RaftTypeConfig>::Node,
        RaftError<<C as RaftTypeConfig>::NodeId, E>,
    >,
>;

impl<C: RaftTypeConfig> Network<C> {
    async fn raft_call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<C, Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let reply = self
            .pool
            .call(
                &self.addr,
                self.group,
                kind,
                payload,
                Some(option.hard_ttl()),
            )
            .await
            .map_err(|e| match e {
                // Worth an immediate retry; everything else backs off.
                RpcError::Timeout(..) => RPCError::Network(NetworkError::new(&e)),
                _ => RPCError::Unreachable(Unreachable::new(&e)),
            })?;
        let answer: Result<Resp, RaftError<C::NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target.clone(), e)))
    }
}

impl<C> RaftNetwork<C> for Network<C>
where
    C: RaftTypeConfig,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<C, AppendEntriesResponse<C::NodeId>, openraft::error::Infallible> {
        self.raft_call(RpcKind::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<C, InstallSnapshotResponse<C::NodeId>, openraft::error::InstallSnapshotError>
    {
        self.raft_call(RpcKind::InstallSnapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C::NodeId>,
        option: RPCOption,
    ) -> RpcResult<C, VoteResponse<C::NodeId>, openraft::error::Infallible> {
        self.raft_call(RpcKind::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Short enough that a restarted peer is found quickly, long enough
        // that a dead one does not cost a connect attempt per heartbeat.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
