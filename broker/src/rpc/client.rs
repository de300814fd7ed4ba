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
use openraft::{BasicNode, EntryPayload, RaftLogId, RaftTypeConfig};
use parking_lot::Mutex;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tonic::codegen::http;
use tonic::transport::{Channel, Endpoint};
use tracing::debug;

use super::payload::{Payload, encode_parts};
use super::server::{BATCH_PATH, CALL_PATH};
use super::stream::{CallStream, Outcome};
use super::throttle::CatchUpThrottle;
use super::wire::{
    BatchReply, BatchRequest, CallReply, CallRequest, OutgoingCall, OutgoingCallCodec,
};
use super::{GroupId, PEER_TOKEN_HEADER, PeerToken, RpcConfig, RpcError, RpcKind, decode};

#[derive(Clone)]
struct Peer {
    channel: Channel,
    /// Permits are payload bytes in flight to this peer.
    inflight: Arc<Semaphore>,
    /// Calls that may wait a moment to travel with others (see
    /// [`PeerPool::call_coalesced`]).
    coalesce: mpsc::UnboundedSender<Queued>,
    /// Small calls' long-lived stream (see [`super::stream`]).
    stream: Arc<CallStream>,
}

/// How long a coalesced call waits for others to the same peer, and how
/// many travel in one batch. Heartbeats are what coalesce: a 20 ms delay is
/// nothing against an election timeout of seconds, and idle groups'
/// heartbeats to one peer then cost one RPC per window instead of one each.
const COALESCE_WINDOW: Duration = Duration::from_millis(20);
const COALESCE_MAX: usize = 512;
/// How long after its last write or commit a group's heartbeats still go
/// at once (see [`Pace`]).
const ACTIVE_FOR: Duration = Duration::from_secs(2);

/// Which of a partition group's AppendEntries to one peer may wait to
/// travel with other groups' ([`COALESCE_WINDOW`]): only the heartbeats of
/// a group with nothing to say. openraft's replication stream to a peer
/// sends one message at a time, and it sends an empty AppendEntries right
/// after each commit to carry the new commit index: delaying that one
/// delays the next write's entries by up to the window (it held produce
/// latency at 20 ms and more at 50 msg/s). A heartbeat of a group written
/// to a moment ago would do the same to the next write.
#[derive(Debug, Default)]
struct Pace {
    last_commit: Option<u64>,
    last_busy: Option<std::time::Instant>,
}

impl Pace {
    /// Whether `commit` is one this group has not told the peer yet.
    fn is_news(&self, commit: Option<u64>) -> bool {
        commit != self.last_commit
    }

    fn may_wait(&mut self, entries: usize, commit: Option<u64>, now: std::time::Instant) -> bool {
        if entries > 0 || commit != self.last_commit {
            self.last_commit = commit;
            self.last_busy = Some(now);
            return false;
        }
        self.last_busy
            .is_none_or(|t| now.saturating_duration_since(t) >= ACTIVE_FOR)
    }
}

/// How long an empty AppendEntries that only carries a new commit index
/// waits for the group's next entries. openraft sends one right after each
/// commit; when the leader appends again within this time the message is
/// dropped, because the entries' AppendEntries carries the commit index too
/// and follows at once. Under steady writes that saves one message per
/// write and follower; after the last write of a burst the follower learns
/// the commit this much later, which nobody waits for (clients read from
/// the leader). The answer openraft gets for a message left out is a
/// success: the follower answered the message before it and is sent the
/// entries next.
const COMMIT_NOTICE_HOLD: Duration = Duration::from_millis(5);

/// Whether an empty AppendEntries to a follower that holds the log up to
/// (not including) `follower_next` can be left out because the leader's log
/// already reaches past it, or does within `hold` (`tail` follows the index
/// after the leader's last entry): the stream's next message then carries
/// those entries with the commit index.
async fn superseded(tail: &mut watch::Receiver<u64>, follower_next: u64, hold: Duration) -> bool {
    if *tail.borrow_and_update() > follower_next {
        return true;
    }
    if hold.is_zero() {
        return false;
    }
    matches!(
        tokio::time::timeout(hold, tail.wait_for(|&next| next > follower_next)).await,
        Ok(Ok(_))
    )
}

/// A call waiting for its batch.
struct Queued {
    req: CallRequest,
    deadline: tokio::time::Instant,
    reply: oneshot::Sender<Result<Bytes, RpcError>>,
}

pub(super) type LastReply = Arc<Mutex<HashMap<String, std::time::Instant>>>;

/// One lazily connected channel per peer address, shared by every group.
pub struct PeerPool {
    config: RpcConfig,
    peers: Mutex<HashMap<String, Peer>>,
    /// When each peer last answered anything: a liveness signal for
    /// in-sync replica sets (openraft 0.9 reports no heartbeat times).
    last_reply: LastReply,
}

impl PeerPool {
    pub fn new(config: RpcConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            peers: Mutex::new(HashMap::new()),
            last_reply: Arc::new(Mutex::new(HashMap::new())),
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
        let channel = endpoint.connect_lazy();
        let link = Link {
            addr: addr.to_string(),
            channel: channel.clone(),
            token: self.config.peer_token.clone(),
            max: self.config.max_message_bytes,
            last_reply: self.last_reply.clone(),
            no_batch: Unimplemented::new(self.config.ask_again_after),
        };
        let (coalesce, queue) = mpsc::unbounded_channel();
        // Ends when the pool (every sender) is gone.
        tokio::spawn(coalescer(link.clone(), queue));
        let peer = Peer {
            stream: CallStream::new(link, self.config.ask_again_after),
            channel,
            inflight: Arc::new(Semaphore::new(self.config.max_inflight_bytes_per_peer)),
            coalesce,
        };
        peers.insert(addr.to_string(), peer.clone());
        Ok(peer)
    }

    /// The peer and the call's deadline, once the payload fits the limit.
    fn prepare(
        &self,
        addr: &str,
        payload_len: usize,
        timeout: Option<Duration>,
    ) -> Result<(Peer, Duration), RpcError> {
        let max = self.config.max_message_bytes;
        if payload_len > max {
            return Err(RpcError::TooLarge(payload_len, max));
        }
        let deadline = timeout
            .map_or(self.config.request_timeout, |t| {
                t.min(self.config.request_timeout)
            })
            .max(Duration::from_millis(1));
        Ok((self.peer(addr)?, deadline))
    }

    fn request(&self, group: GroupId, kind: RpcKind, payload: Payload) -> OutgoingCall {
        let mut head = CallRequest {
            cluster_id: self.config.cluster_id.clone(),
            from_node: self.config.node_id,
            kind: kind as u32,
            ..Default::default()
        };
        head.set_group(group);
        OutgoingCall { head, payload }
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
        payload: impl Into<Payload>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, RpcError> {
        let payload = payload.into();
        let (peer, deadline) = self.prepare(addr, payload.len(), timeout)?;
        let max = self.config.max_message_bytes;
        let permits = u32::try_from(
            payload
                .len()
                .clamp(1, self.config.max_inflight_bytes_per_peer.max(1)),
        )
        .unwrap_or(u32::MAX);
        let req = self.request(group, kind, payload);
        let room = || async {
            peer.inflight
                .clone()
                .acquire_many_owned(permits)
                .await
                .map_err(|e| RpcError::Unreachable(addr.to_string(), e.to_string()))
        };
        let fut = async {
            if peer.stream.takes(req.encoded_len()) {
                let bytes = Arc::new(room().await?);
                match peer
                    .stream
                    .call(req.clone().into_request(), deadline, bytes)
                    .await
                {
                    Outcome::Answered(r) => return r,
                    Outcome::Unsupported => {}
                }
            }
            // Held until the reply arrives: the bound covers the whole call.
            let _permit = room().await?;
            let reply = unary(
                &peer.channel,
                self.config.peer_token.as_ref(),
                CALL_PATH,
                req,
                OutgoingCallCodec,
                deadline,
                max,
            )
            .await
            .map_err(|s| status_error(addr, deadline, &s))?;
            record_reply(&self.last_reply, addr);
            reply.into_result()
        };
        match tokio::time::timeout(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(RpcError::Timeout(addr.to_string(), deadline)),
        }
    }

    /// As [`Self::call`], for a small message that may wait up to
    /// [`COALESCE_WINDOW`] and travel in one `Batch` request with the other
    /// such calls to the same peer (a peer without `Batch` gets them one by
    /// one). It skips the in-flight byte bound: it is for heartbeats.
    ///
    /// # Errors
    /// As [`Self::call`].
    pub async fn call_coalesced(
        &self,
        addr: &str,
        group: GroupId,
        kind: RpcKind,
        payload: impl Into<Payload>,
        timeout: Option<Duration>,
    ) -> Result<Bytes, RpcError> {
        let payload = payload.into();
        let (peer, deadline) = self.prepare(addr, payload.len(), timeout)?;
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            req: self.request(group, kind, payload).into_request(),
            deadline: tokio::time::Instant::now() + deadline,
            reply,
        };
        peer.coalesce
            .send(queued)
            .map_err(|_| RpcError::Unreachable(addr.to_string(), "peer pool closed".into()))?;
        match tokio::time::timeout(deadline, answer).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcError::Unreachable(
                addr.to_string(),
                "batch dropped".into(),
            )),
            Err(_) => Err(RpcError::Timeout(addr.to_string(), deadline)),
        }
    }
}

pub(super) fn record_reply(last_reply: &LastReply, addr: &str) {
    let now = std::time::Instant::now();
    let mut last = last_reply.lock();
    match last.get_mut(addr) {
        Some(t) => *t = now,
        None => {
            last.insert(addr.to_string(), now);
        }
    }
}

fn status_error(addr: &str, deadline: Duration, s: &tonic::Status) -> RpcError {
    match s.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            RpcError::Timeout(addr.to_string(), deadline)
        }
        _ => RpcError::Unreachable(addr.to_string(), s.to_string()),
    }
}

/// Sends this broker's peer token, if it has one, with `request`.
pub(super) fn authenticate<T>(request: &mut tonic::Request<T>, token: Option<&PeerToken>) {
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert(PEER_TOKEN_HEADER, t.header().clone());
    }
}

/// One unary call on `path`.
async fn unary<Cd>(
    channel: &Channel,
    token: Option<&PeerToken>,
    path: &'static str,
    req: Cd::Encode,
    codec: Cd,
    deadline: Duration,
    max: usize,
) -> Result<Cd::Decode, tonic::Status>
where
    Cd: tonic::codec::Codec + Send + 'static,
    Cd::Encode: Send + Sync + 'static,
    Cd::Decode: Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    request.set_timeout(deadline);
    authenticate(&mut request, token);
    let reply = grpc
        .unary(request, http::uri::PathAndQuery::from_static(path), codec)
        .await?;
    Ok(reply.into_inner())
}

/// A peer's connection and what its coalescer and call stream share.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) addr: String,
    pub(super) channel: Channel,
    pub(super) token: Option<PeerToken>,
    pub(super) max: usize,
    pub(super) last_reply: LastReply,
    /// Set while the peer is believed to have no `Batch`.
    no_batch: Unimplemented,
}

/// A peer's `Unimplemented` answer to one of the newer calls (`Batch`,
/// `Stream`): an older broker during a rolling upgrade. It is believed for
/// [`RpcConfig::ask_again_after`] only: the brokers upgraded first would
/// otherwise take the slower way to the ones upgraded after them until their
/// own next restart, which a roll does not bring.
#[derive(Clone)]
pub(super) struct Unimplemented {
    since: Arc<Mutex<Option<tokio::time::Instant>>>,
    believed_for: Duration,
}

impl Unimplemented {
    pub(super) fn new(believed_for: Duration) -> Self {
        Self {
            since: Arc::default(),
            believed_for,
        }
    }

    /// The peer just answered `Unimplemented`.
    pub(super) fn record(&self) {
        *self.since.lock() = Some(tokio::time::Instant::now());
    }

    /// Whether the peer answered so less than `believed_for` ago.
    pub(super) fn holds(&self) -> bool {
        self.since
            .lock()
            .is_some_and(|at| at.elapsed() < self.believed_for)
    }
}

/// Gathers a peer's coalesced calls for [`COALESCE_WINDOW`] after the first
/// one, then sends them together and starts the next window at once.
async fn coalescer(link: Link, mut queue: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        let window = tokio::time::sleep(COALESCE_WINDOW);
        tokio::pin!(window);
        while batch.len() < COALESCE_MAX {
            tokio::select! {
                () = &mut window => break,
                next = queue.recv() => match next {
                    Some(q) => batch.push(q),
                    None => break,
                },
            }
        }
        tokio::spawn(send_batch(link.clone(), batch));
    }
}

async fn send_batch(link: Link, batch: Vec<Queued>) {
    let now = tokio::time::Instant::now();
    let deadline = batch
        .iter()
        .map(|q| q.deadline.saturating_duration_since(now))
        .min()
        .unwrap_or_default()
        .max(Duration::from_millis(1));
    if !link.no_batch.holds() {
        let req = BatchRequest {
            calls: batch.iter().map(|q| q.req.clone()).collect(),
        };
        match unary(
            &link.channel,
            link.token.as_ref(),
            BATCH_PATH,
            req,
            tonic_prost::ProstCodec::<_, BatchReply>::default(),
            deadline,
            link.max,
        )
        .await
        {
            Ok(reply) if reply.replies.len() == batch.len() => {
                record_reply(&link.last_reply, &link.addr);
                for (q, r) in batch.into_iter().zip(reply.replies) {
                    let _ = q.reply.send(r.into_result());
                }
                return;
            }
            Ok(reply) => {
                let e = RpcError::Decode(format!(
                    "{} replies to a batch of {}",
                    reply.replies.len(),
                    batch.len()
                ));
                for q in batch {
                    let _ = q.reply.send(Err(e.clone()));
                }
                return;
            }
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                debug!(peer = %link.addr, "peer has no Batch call; sending one by one");
                link.no_batch.record();
            }
            Err(s) => {
                let e = status_error(&link.addr, deadline, &s);
                for q in batch {
                    let _ = q.reply.send(Err(e.clone()));
                }
                return;
            }
        }
    }
    futures_util::future::join_all(batch.into_iter().map(|q| {
        let link = link.clone();
        async move {
            let deadline = q
                .deadline
                .saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(1));
            let r = match unary(
                &link.channel,
                link.token.as_ref(),
                CALL_PATH,
                q.req,
                tonic_prost::ProstCodec::<_, CallReply>::default(),
                deadline,
                link.max,
            )
            .await
            {
                Ok(reply) => {
                    record_reply(&link.last_reply, &link.addr);
                    reply.into_result()
                }
                Err(s) => Err(status_error(&link.addr, deadline, &s)),
            };
            let _ = q.reply.send(r);
        }
    }))
    .await;
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
    throttle: Option<Arc<CatchUpThrottle>>,
    tail: Option<watch::Receiver<u64>>,
    _types: PhantomData<fn() -> C>,
}

impl<C> NetworkFactory<C> {
    pub fn new(pool: Arc<PeerPool>, group: GroupId) -> Self {
        Self {
            pool,
            group,
            throttle: None,
            tail: None,
            _types: PhantomData,
        }
    }

    /// Empty AppendEntries that only carry a commit index are left out when
    /// the log (whose tail `tail` follows) has entries for the follower
    /// (see [`COMMIT_NOTICE_HOLD`]).
    #[must_use]
    pub fn with_log_tail(mut self, tail: watch::Receiver<u64>) -> Self {
        self.tail = Some(tail);
        self
    }

    /// Entries sent to replicas a reassignment is adding go through
    /// `throttle`.
    #[must_use]
    pub fn with_throttle(mut self, throttle: Arc<CatchUpThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }
}

impl<C> RaftNetworkFactory<C> for NetworkFactory<C>
where
    C: RaftTypeConfig,
    C::Node: PeerAddr,
    C::NodeId: Into<u64>,
    C::Entry: EntrySize,
{
    type Network = Network<C>;

    async fn new_client(&mut self, target: C::NodeId, node: &C::Node) -> Self::Network {
        Network {
            pool: self.pool.clone(),
            group: self.group,
            throttle: self.throttle.clone(),
            tail: self.tail.clone(),
            reached: false,
            target,
            addr: node.rpc_addr().to_string(),
            pace: Pace::default(),
            _types: PhantomData,
        }
    }
}

/// The connection of one group to one peer.
pub struct Network<C: RaftTypeConfig> {
    pool: Arc<PeerPool>,
    group: GroupId,
    throttle: Option<Arc<CatchUpThrottle>>,
    tail: Option<watch::Receiver<u64>>,
    /// Whether the last AppendEntries sent reached the follower.
    reached: bool,
    target: C::NodeId,
    addr: String,
    pace: Pace,
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
    /// An AppendEntries on the wire: coalesced with other groups' when it is
    /// an idle group's heartbeat, paced when it feeds a replica catching up.
    async fn send_append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<C, AppendEntriesResponse<C::NodeId>, openraft::error::Infallible>
    where
        C::NodeId: Into<u64>,
        C::Entry: EntrySize,
    {
        // An idle partition group's heartbeat may wait a moment and travel
        // with the other groups' to this peer (see `Pace`). The metadata
        // group is alone in its kind and has the tightest timing, so it
        // never waits.
        let may_wait = matches!(self.group, GroupId::Partition { .. })
            && self.pace.may_wait(
                rpc.entries.len(),
                rpc.leader_commit.as_ref().map(|c| c.index),
                std::time::Instant::now(),
            );
        let throttle = self.throttle.clone().filter(|t| {
            !rpc.entries.is_empty() && t.applies(self.group, self.target.clone().into())
        });
        let Some(throttle) = throttle else {
            return self
                .raft_call(RpcKind::AppendEntries, &rpc, &option, may_wait)
                .await;
        };
        // A replica catching up gets what the throttle's credit covers now;
        // Raft sends the rest next (a partial success, not an error). With
        // no credit within a third of the deadline it gets no entry, but the
        // call still checks that the replica holds `prev_log_id`.
        let mut rpc = rpc;
        let sizes: Vec<usize> = rpc.entries.iter().map(EntrySize::data_size).collect();
        let n = throttle.admit(&sizes, option.hard_ttl() / 3).await;
        if n == rpc.entries.len() {
            return self
                .raft_call(RpcKind::AppendEntries, &rpc, &option, false)
                .await;
        }
        let matching = match n {
            0 => rpc.prev_log_id.clone(),
            n => Some(rpc.entries[n - 1].get_log_id().clone()),
        };
        rpc.entries.truncate(n);
        let reply: AppendEntriesResponse<C::NodeId> = self
            .raft_call(RpcKind::AppendEntries, &rpc, &option, false)
            .await?;
        Ok(match reply {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(matching),
            other => other,
        })
    }

    async fn raft_call<Req, Resp, E>(
        &self,
        kind: RpcKind,
        req: &Req,
        option: &RPCOption,
        coalesce: bool,
    ) -> RpcResult<C, Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode_parts(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let timeout = Some(option.hard_ttl());
        let reply = if coalesce {
            self.pool
                .call_coalesced(&self.addr, self.group, kind, payload, timeout)
                .await
        } else {
            self.pool
                .call(&self.addr, self.group, kind, payload, timeout)
                .await
        };
        let reply = reply.map_err(|e| match e {
            // Worth an immediate retry; everything else backs off.
            RpcError::Timeout(..) => RPCError::Network(NetworkError::new(&e)),
            _ => RPCError::Unreachable(Unreachable::new(&e)),
        })?;
        let answer: Result<Resp, RaftError<C::NodeId, E>> =
            decode(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target.clone(), e)))
    }
}

/// The bytes of a Raft entry's data, for the reassignment throttle.
pub trait PayloadSize {
    fn payload_size(&self) -> usize;
}

/// The bytes of a Raft entry, for the reassignment throttle.
pub trait EntrySize {
    fn data_size(&self) -> usize;
}

impl<C: RaftTypeConfig> EntrySize for openraft::Entry<C>
where
    C::D: PayloadSize,
{
    fn data_size(&self) -> usize {
        match &self.payload {
            EntryPayload::Normal(d) => d.payload_size(),
            _ => 0,
        }
    }
}

impl<C> RaftNetwork<C> for Network<C>
where
    C: RaftTypeConfig,
    C::NodeId: Into<u64>,
    C::Entry: EntrySize,
{
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> RpcResult<C, AppendEntriesResponse<C::NodeId>, openraft::error::Infallible> {
        if rpc.entries.is_empty()
            && self.reached
            && let Some(tail) = self.tail.as_mut()
        {
            let follower_next = rpc.prev_log_id.as_ref().map_or(0, |l| l.index + 1);
            let commit = rpc.leader_commit.as_ref().map(|c| c.index);
            let hold = if self.pace.is_news(commit) {
                COMMIT_NOTICE_HOLD
            } else {
                Duration::ZERO
            };
            if superseded(tail, follower_next, hold).await {
                return Ok(AppendEntriesResponse::Success);
            }
        }
        // Only a follower that answered the last message has its empty
        // messages left out: one that does not is told everything, as
        // openraft asks. Cleared first: openraft's own timeout may drop
        // this call before it ends.
        self.reached = false;
        let reply = self.send_append_entries(rpc, option).await;
        self.reached = reply.is_ok();
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<C>,
        option: RPCOption,
    ) -> RpcResult<C, InstallSnapshotResponse<C::NodeId>, openraft::error::InstallSnapshotError>
    {
        self.raft_call(RpcKind::InstallSnapshot, &rpc, &option, false)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C::NodeId>,
        option: RPCOption,
    ) -> RpcResult<C, VoteResponse<C::NodeId>, openraft::error::Infallible> {
        self.raft_call(RpcKind::Vote, &rpc, &option, false).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Short enough that a restarted peer is found quickly, long enough
        // that a dead one does not cost a connect attempt per heartbeat.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

#[cfg(test)]
mod pace_tests {
    use std::time::{Duration, Instant};

    use tokio::sync::watch;

    use super::{ACTIVE_FOR, Pace, superseded};

    #[tokio::test]
    async fn an_empty_append_is_superseded_only_by_entries_the_follower_lacks() {
        let (tx, mut tail) = watch::channel(5u64);
        // The leader's log already reaches past what the follower holds.
        assert!(superseded(&mut tail, 4, Duration::ZERO).await);
        // The follower holds it all: no hold, no skip.
        assert!(!superseded(&mut tail, 5, Duration::ZERO).await);
        // Nothing appended within the hold: the message goes.
        let t0 = Instant::now();
        assert!(!superseded(&mut tail, 5, Duration::from_millis(20)).await);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        // An append during the hold supersedes it at once.
        let append = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send_replace(6);
            tx
        });
        assert!(superseded(&mut tail, 5, Duration::from_secs(30)).await);
        // A truncation (the tail moving back) does not.
        let tx = append.await.unwrap();
        tx.send_replace(3);
        assert!(!superseded(&mut tail, 5, Duration::from_millis(10)).await);
    }

    #[test]
    fn only_an_idle_groups_heartbeats_wait_for_company() {
        let t0 = Instant::now();
        let mut pace = Pace::default();
        // A group never written to: its heartbeats may wait.
        assert!(pace.may_wait(0, None, t0));
        // Entries, and the empty AppendEntries carrying their commit, go
        // at once; so do heartbeats for a while after.
        assert!(!pace.may_wait(3, None, t0));
        assert!(!pace.may_wait(0, Some(7), t0 + Duration::from_millis(1)));
        assert!(!pace.may_wait(0, Some(7), t0 + Duration::from_millis(500)));
        // Idle long enough: heartbeats wait again.
        assert!(pace.may_wait(0, Some(7), t0 + ACTIVE_FOR + Duration::from_millis(1)));
        // A commit learned later (a follower catching up) is news again.
        assert!(!pace.may_wait(0, Some(9), t0 + ACTIVE_FOR * 2));
    }
}
