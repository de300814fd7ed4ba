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
//! a rolling upgrade) answers `Unimplemented` and gets unary calls from then
//! on.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::codegen::http;
use tonic::transport::Channel;
use tracing::debug;

use super::RpcError;
use super::server::Registry;
use super::wire::{CallReply, CallRequest, StreamCall, StreamReply};

pub const STREAM_PATH: &str = "/skiff.rpc.Raft/Stream";

/// Calls whose payload is larger than this go unary.
pub const STREAM_MAX_PAYLOAD: usize = 64 << 10;

/// Calls the server works on at once per stream; the next ones wait in
/// HTTP/2 flow control (unary calls have the server's per-connection limit).
const SERVER_CONCURRENCY: usize = 256;

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Outcome>>>>;

/// The open stream to a peer.
#[derive(Clone)]
struct Open {
    calls: mpsc::UnboundedSender<StreamCall>,
    waiters: Waiters,
}

/// How a call on the stream ended.
pub enum Outcome {
    Answered(Result<Bytes, RpcError>),
    /// The peer has no `Stream`: send the call unary.
    Unsupported,
}

/// The client end: opened at the first call, opened again after it breaks.
pub struct CallStream {
    addr: String,
    channel: Channel,
    max: usize,
    open: Mutex<Option<Open>>,
    unsupported: AtomicBool,
    next_id: AtomicU64,
    /// Runs whenever the peer answers anything on the stream.
    on_reply: Box<dyn Fn() + Send + Sync>,
}

/// Answers every waiter of a stream that ended.
fn fail_all(waiters: &Waiters, outcome: impl Fn() -> Outcome) {
    let drained: Vec<_> = waiters.lock().drain().collect();
    for (_, w) in drained {
        let _ = w.send(outcome());
    }
}

impl CallStream {
    pub fn new(
        addr: &str,
        channel: Channel,
        max: usize,
        on_reply: impl Fn() + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr: addr.to_string(),
            channel,
            max,
            open: Mutex::new(None),
            unsupported: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            on_reply: Box::new(on_reply),
        })
    }

    /// Whether calls may go on the stream (false once the peer said it has
    /// no `Stream`).
    pub fn usable(&self) -> bool {
        !self.unsupported.load(Ordering::Relaxed)
    }

    /// Sends `req` on the stream and waits up to `deadline` for its answer.
    pub async fn call(self: &Arc<Self>, req: CallRequest, deadline: Duration) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let open = self.open_or_reuse();
        open.waiters.lock().insert(id, tx);
        let sent = open
            .calls
            .send(StreamCall {
                id,
                call: Some(req),
            })
            .is_ok();
        // A driver that ended clears the slot before it answers its waiters:
        // a waiter it may have missed is still in the map, and ours to fail.
        if (!sent || !self.is_current(&open)) && open.waiters.lock().remove(&id).is_some() {
            return Outcome::Answered(Err(RpcError::Unreachable(
                self.addr.clone(),
                "call stream closed".into(),
            )));
        }
        match tokio::time::timeout(deadline, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Outcome::Answered(Err(RpcError::Unreachable(
                self.addr.clone(),
                "call stream dropped".into(),
            ))),
            Err(_) => {
                open.waiters.lock().remove(&id);
                Outcome::Answered(Err(RpcError::Timeout(self.addr.clone(), deadline)))
            }
        }
    }

    fn is_current(&self, open: &Open) -> bool {
        self.open
            .lock()
            .as_ref()
            .is_some_and(|o| Arc::ptr_eq(&o.waiters, &open.waiters))
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
        tokio::spawn(self.clone().drive(queue, open.clone()));
        open
    }

    /// Runs one stream until it ends, delivering answers to their waiters.
    async fn drive(self: Arc<Self>, queue: mpsc::UnboundedReceiver<StreamCall>, open: Open) {
        let outbound =
            futures_util::stream::unfold(
                queue,
                |mut q| async move { q.recv().await.map(|c| (c, q)) },
            );
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(self.max)
            .max_encoding_message_size(self.max);
        let ended: Result<(), tonic::Status> = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut inbound = grpc
                .streaming(
                    tonic::Request::new(outbound),
                    http::uri::PathAndQuery::from_static(STREAM_PATH),
                    tonic_prost::ProstCodec::<StreamCall, StreamReply>::default(),
                )
                .await?
                .into_inner();
            while let Some(reply) = inbound.message().await? {
                (self.on_reply)();
                let waiter = open.waiters.lock().remove(&reply.id);
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
        // Later calls open a new stream; the ones waiting on this one fail
        // now rather than at their deadlines.
        {
            let mut slot = self.open.lock();
            if slot
                .as_ref()
                .is_some_and(|o| Arc::ptr_eq(&o.waiters, &open.waiters))
            {
                *slot = None;
            }
        }
        match ended {
            Err(s) if s.code() == tonic::Code::Unimplemented => {
                debug!(peer = %self.addr, "peer has no Stream call; sending unary calls");
                self.unsupported.store(true, Ordering::Relaxed);
                fail_all(&open.waiters, || Outcome::Unsupported);
            }
            Err(s) => {
                debug!(peer = %self.addr, status = %s, "call stream ended");
                let e = RpcError::Unreachable(self.addr.clone(), s.to_string());
                fail_all(&open.waiters, || Outcome::Answered(Err(e.clone())));
            }
            Ok(()) => {
                let e = RpcError::Unreachable(self.addr.clone(), "call stream ended".into());
                fail_all(&open.waiters, || Outcome::Answered(Err(e.clone())));
            }
        }
    }
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
                        let reply = match call.call {
                            Some(req) => registry.dispatch(req).await,
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
