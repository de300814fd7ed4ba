//! `/skiff.rpc.Raft/Stream`: one long-lived bidirectional stream per peer
//! that carries small calls, each matched to its reply by an id.
//!
//! A unary call is a new HTTP/2 stream with its own request and response
//! headers and trailers; on the stream a call is one DATA frame each way,
//! and calls that are ready together share a frame. Raft's replication
//! round trips are mostly small (a produce request's batches, a commit
//! index), so this is where the brokers' per-message cost goes down. Large
//! calls stay unary ([`STREAM_MAX_PAYLOAD`]): on one stream a big message
//! would hold back every small one behind it.
//!
//! The server answers each call as `Call` would, concurrently, in the order
//! the answers are ready. A peer without the method (an older broker during
//! a rolling upgrade) answers `Unimplemented` and gets unary calls for
//! [`RpcConfig::ask_again_after`](super::RpcConfig::ask_again_after), then
//! the stream is tried again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::codegen::http;
use tracing::debug;

use super::RpcError;
use super::client::{Link, Unimplemented, record_reply};
use super::server::Registry;
use super::wire::{CallReply, CallRequest, StreamCall, StreamReply};

pub const STREAM_PATH: &str = "/skiff.rpc.Raft/Stream";

/// Calls whose encoded request is larger than this go unary.
pub const STREAM_MAX_PAYLOAD: usize = 64 << 10;

/// Calls the server works on at once per stream; the next ones wait in
/// HTTP/2 flow control (unary calls have the server's per-connection limit).
const SERVER_CONCURRENCY: usize = 256;

/// The largest message on the stream: a call whose request fits
/// [`STREAM_MAX_PAYLOAD`], and its id and deadline.
pub(super) const STREAM_MAX_CALL: usize = STREAM_MAX_PAYLOAD + 64;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>;

/// A call waiting to be handed to the transport, with its share of the
/// peer's in-flight byte bound (shared with its caller, so it covers the
/// call until it is answered and also until it leaves the queue): a stalled
/// peer's stream stops taking calls, and the bound then stops new ones from
/// piling up behind those already given up on.
struct Queued {
    call: StreamCall,
    _bytes: Arc<OwnedSemaphorePermit>,
}

/// The open stream to a peer.
#[derive(Clone)]
struct Open {
    calls: mpsc::UnboundedSender<Queued>,
    waiters: Waiters,
}

/// Whether `slot` holds the stream whose waiters are `waiters`.
fn holds(slot: &Option<Open>, waiters: &Waiters) -> bool {
    slot.as_ref()
        .is_some_and(|o| Arc::ptr_eq(&o.waiters, waiters))
}

/// How a call on the stream ended.
pub enum Outcome {
    Answered(Result<Bytes, RpcError>),
    /// The peer has no `Stream`: send the call unary.
    Unsupported,
}

/// The client end: opened at the first call, opened again after it breaks.
pub struct CallStream {
    link: Link,
    open: Mutex<Option<Open>>,
    /// Set while the peer is believed to have no `Stream`.
    no_stream: Unimplemented,
    next_id: AtomicU64,
}

/// Answers every waiter of a stream that ended.
fn fail_all(waiters: &Waiters, outcome: impl Fn() -> Outcome) {
    let drained: Vec<_> = waiters.lock().drain().collect();
    for (_, w) in drained {
        let _ = w.send(outcome());
    }
}

/// Withdraws a call whose caller stopped waiting (its deadline, or the
/// caller's own timeout dropping it): not sent if still queued, and its
/// waiter does not outlive it.
struct Withdraw<'a> {
    waiters: &'a Waiters,
    id: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.id);
    }
}

impl CallStream {
    /// `ask_again_after`: see [`RpcConfig::ask_again_after`](super::RpcConfig::ask_again_after).
    pub(super) fn new(link: Link, ask_again_after: Duration) -> Arc<Self> {
        Arc::new(Self {
            link,
            open: Mutex::new(None),
            no_stream: Unimplemented::new(ask_again_after),
            next_id: AtomicU64::new(1),
        })
    }

    /// Whether a call whose request encodes to `encoded_len` bytes may go
    /// on the stream: small enough, and the peer did not say lately that
    /// it has no `Stream`.
    pub fn takes(&self, encoded_len: usize) -> bool {
        !self.no_stream.holds() && encoded_len <= STREAM_MAX_PAYLOAD
    }

    /// Sends `req` on the stream and waits up to `deadline` for its answer.
    /// `bytes` (the call's share of the peer's in-flight bound) is held
    /// until the call is answered or given up on, and until the transport
    /// took it or dropped it from the queue.
    pub async fn call(
        self: &Arc<Self>,
        req: CallRequest,
        deadline: Duration,
        bytes: Arc<OwnedSemaphorePermit>,
    ) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let open = self.open_or_reuse();
        open.waiters.lock().insert(id, tx);
        let _withdraw = Withdraw {
            waiters: &open.waiters,
            id,
        };
        let call = StreamCall {
            id,
            call: Some(req),
            timeout_ms: u32::try_from(deadline.as_millis()).unwrap_or(u32::MAX),
        };
        let sent = open
            .calls
            .send(Queued {
                call,
                _bytes: bytes.clone(),
            })
            .is_ok();
        // A driver that ended clears the slot before it answers its waiters:
        // a waiter it may have missed is still in the map, and ours to fail.
        if (!sent || !self.is_current(&open)) && open.waiters.lock().remove(&id).is_some() {
            if self.no_stream.holds() {
                return Outcome::Unsupported;
            }
            return Outcome::Answered(Err(RpcError::Unreachable(
                self.link.addr.clone(),
                "call stream closed".into(),
            )));
        }
        let answer = tokio::time::timeout(deadline, rx).await;
        drop(bytes);
        match answer {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Answered(Err(RpcError::Unreachable(
                self.link.addr.clone(),
                "call stream dropped".into(),
            ))),
            Err(_) => Outcome::Answered(Err(RpcError::Timeout(self.link.addr.clone(), deadline))),
        }
    }

    fn is_current(&self, open: &Open) -> bool {
        holds(&self.open.lock(), &open.waiters)
    }

    fn open_or_reuse(self: &Arc<Self>) -> Open {
        let mut slot = self.open.lock();
        if let Some(open) = slot.as_ref()
            && !open.calls.is_closed()
        {
            return open.clone();
        }
        let (calls, queue) = mpsc::unbounded_channel();
        let open = Open {
            calls,
            waiters: Arc::default(),
        };
        *slot = Some(open.clone());
        // The driver holds no sender and no strong reference: once the
        // pool lets go of this peer, the queue closes and the stream ends.
        tokio::spawn(drive(
            Arc::downgrade(self),
            self.link.clone(),
            queue,
            open.waiters.clone(),
        ));
        open
    }
}

/// Runs one stream until it ends, delivering answers to their waiters.
async fn drive(
    owner: std::sync::Weak<CallStream>,
    link: Link,
    queue: mpsc::UnboundedReceiver<Queued>,
    waiters: Waiters,
) {
    let pending = waiters.clone();
    let outbound = futures_util::stream::unfold(queue, move |mut q| {
        let pending = pending.clone();
        async move {
            loop {
                let Queued { call, _bytes } = q.recv().await?;
                // A call its caller gave up on is not sent.
                if pending.lock().contains_key(&call.id) {
                    return Some((call, q));
                }
            }
        }
    });
    let mut grpc = tonic::client::Grpc::new(link.channel.clone())
        .max_decoding_message_size(link.max)
        .max_encoding_message_size(STREAM_MAX_CALL);
    let ended: Result<(), tonic::Status> = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut request = tonic::Request::new(outbound);
        super::client::authenticate(&mut request, link.token.as_ref());
        let mut inbound = grpc
            .streaming(
                request,
                http::uri::PathAndQuery::from_static(STREAM_PATH),
                tonic_prost::ProstCodec::<StreamCall, StreamReply>::default(),
            )
            .await?
            .into_inner();
        while let Some(reply) = inbound.message().await? {
            record_reply(&link.last_reply, &link.addr);
            let waiter = waiters.lock().remove(&reply.id);
            if let Some(w) = waiter {
                let _ = w.send(Outcome::Answered(reply.reply.map_or_else(
                    || Err(RpcError::Decode("a stream reply without its answer".into())),
                    CallReply::into_result,
                )));
            }
        }
        Ok(())
    }
    .await;
    let unsupported = matches!(&ended, Err(s) if s.code() == tonic::Code::Unimplemented);
    // Later calls open a new stream (or go unary); the ones waiting on this
    // one fail now rather than at their deadlines.
    if let Some(owner) = owner.upgrade() {
        if unsupported {
            debug!(peer = %link.addr, "peer has no Stream call; sending unary calls");
            owner.no_stream.record();
        }
        let mut slot = owner.open.lock();
        if holds(&slot, &waiters) {
            *slot = None;
        }
    }
    if unsupported {
        fail_all(&waiters, || Outcome::Unsupported);
        return;
    }
    let why = match ended {
        Err(s) => {
            debug!(peer = %link.addr, status = %s, "call stream ended");
            s.to_string()
        }
        Ok(()) => "call stream ended".into(),
    };
    let e = RpcError::Unreachable(link.addr.clone(), why);
    fail_all(&waiters, || Outcome::Answered(Err(e.clone())));
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<StreamReply, tonic::Status>> + Send>>;

/// The server end: reads calls, answers each as `Call` would.
pub struct StreamSvc(pub Arc<Registry>);

impl tonic::codegen::Service<tonic::Request<tonic::Streaming<StreamCall>>> for StreamSvc {
    type Response = tonic::Response<ReplyStream>;
    type Error = tonic::Status;
    type Future = BoxFuture<'static, Result<Self::Response, tonic::Status>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<tonic::Streaming<StreamCall>>) -> Self::Future {
        let registry = self.0.clone();
        Box::pin(async move {
            let mut inbound = request.into_inner();
            // A permit per call from its arrival until its answer is taken
            // by the response stream: a peer that sends without reading
            // stops being read.
            let room = Arc::new(Semaphore::new(SERVER_CONCURRENCY));
            let (answers, replies) =
                mpsc::unbounded_channel::<(StreamReply, OwnedSemaphorePermit)>();
            registry.streams.fetch_add(1, Ordering::Relaxed);
            let closing = registry.closing();
            let read = async move {
                loop {
                    let Ok(permit) = room.clone().acquire_owned().await else {
                        break;
                    };
                    let call = match inbound.message().await {
                        Ok(Some(call)) => call,
                        Ok(None) => break,
                        Err(s) => {
                            debug!(status = %s, "call stream from a peer ended");
                            break;
                        }
                    };
                    registry.streamed_calls.fetch_add(1, Ordering::Relaxed);
                    let registry = registry.clone();
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        // Past its deadline the caller has given up: the
                        // call is dropped, as a unary one is when its caller
                        // resets the HTTP/2 stream, and its permit is free.
                        let deadline = match call.timeout_ms {
                            0 => registry.config().request_timeout,
                            ms => Duration::from_millis(u64::from(ms)),
                        };
                        let reply = match call.call {
                            Some(req) => tokio::time::timeout(deadline, registry.dispatch(req))
                                .await
                                .unwrap_or_else(|_| {
                                    CallReply::err(&RpcError::Handler(format!(
                                        "not answered within its deadline of {deadline:?}"
                                    )))
                                }),
                            None => CallReply::err(&RpcError::Decode(
                                "a stream call without its request".into(),
                            )),
                        };
                        let _ = answers.send((
                            StreamReply {
                                id: call.id,
                                reply: Some(reply),
                            },
                            permit,
                        ));
                    });
                }
            };
            // The replies end once reading has and every call is answered.
            tokio::spawn(async move {
                tokio::select! {
                    () = read => {}
                    () = closing => {}
                }
            });
            let out: ReplyStream =
                Box::pin(futures_util::stream::unfold(replies, |mut r| async move {
                    r.recv().await.map(|(reply, _permit)| (Ok(reply), r))
                }));
            Ok(tonic::Response::new(out))
        })
    }
}
