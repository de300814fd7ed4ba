//! One client connection: size-prefixed frames in, responses out in request
//! order.
//!
//! A reader task decodes frames ahead while the handler works on the current
//! request, so socket reads overlap with handling. Up to [`PIPELINE`]
//! Produce requests are handled at once: each hands its batches to its
//! partitions only after the request before it did, so a connection's
//! batches stay in order, and only the waits for Raft commits overlap. Any
//! other request waits until those are answered and runs alone, as Kafka
//! runs every request. Responses go out in request order. Only an
//! undecodable frame closes the connection, or, on SASL listeners, a
//! request before authentication or a failed one, or, with no request in
//! progress, `connections.max.idle.ms` without a byte read or written.
//!
//! The byte stream is a plain TCP socket or a TLS stream (the handshake
//! happens in [`crate::server`]); [`serve_tcp`] and [`serve_tls`] split it
//! into halves and run the same loop.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::auth::tls::TlsSource;
use crate::auth::{Principal, Session};
use crate::broker::Broker;
use crate::config::{Listener, SecurityProtocol};
use crate::handlers::{Outcome, SubmitOrder, dispatch};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;

/// A bound listener as connections see it.
pub struct ListenerInfo {
    pub name: String,
    pub protocol: SecurityProtocol,
    /// What Metadata, FindCoordinator and DescribeCluster tell clients of
    /// this listener.
    pub advertised: Listener,
    /// Certificates, on SSL and SASL_SSL listeners.
    pub tls: Option<Arc<TlsSource>>,
}

/// Frames decoded ahead of the handler. Small: the point is overlap, not
/// buffering (memory is bounded by this times socket.request.max.bytes plus
/// [`PIPELINE_BYTES`] and one more request).
const READ_AHEAD: usize = 4;

/// When a connection last read or wrote a byte (`connections.max.idle.ms`),
/// shared by its reader task and its serving loop.
struct Activity {
    since: tokio::time::Instant,
    /// Milliseconds after `since`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: tokio::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> tokio::time::Instant {
        self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Why a frame could not be read.
enum FrameError {
    Closed,
    Io(std::io::Error),
    Size(i32, u32),
}

/// Reads size-prefixed frames into one growing buffer that is reused once
/// the frames handed out earlier are dropped: a fresh allocation per large
/// Produce request would page-fault on every byte the socket copies in.
struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: u32,
    activity: Arc<Activity>,
}

impl<R: AsyncReadExt + Unpin> FrameReader<R> {
    fn new(inner: R, max: u32, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(64 * 1024),
            max,
            activity,
        }
    }

    /// Makes sure `n` bytes are buffered.
    async fn fill(&mut self, n: usize) -> Result<(), FrameError> {
        if self.buf.capacity() < n {
            self.buf.reserve(n - self.buf.len());
        }
        while self.buf.len() < n {
            match self.inner.read_buf(&mut self.buf).await {
                Ok(0) => return Err(FrameError::Closed),
                Ok(_) => self.activity.touch(),
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(())
    }

    async fn next(&mut self) -> Result<Bytes, FrameError> {
        self.fill(4).await?;
        let size = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if size < 0 || size as u32 > self.max {
            return Err(FrameError::Size(size, self.max));
        }
        let size = size as usize;
        self.fill(4 + size).await?;
        self.buf.advance(4);
        Ok(self.buf.split_to(size).freeze())
    }
}

/// Serves a plaintext connection (PLAINTEXT or SASL_PLAINTEXT).
pub async fn serve_tcp(
    broker: Arc<Broker>,
    listener: Arc<ListenerInfo>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) {
    let (r, w) = stream.into_split();
    let session = Session::new(listener.protocol, None);
    serve(broker, listener, session, r, w, peer, shutdown).await;
}

/// Serves a connection whose TLS handshake is done; `tls_principal` comes
/// from a verified client certificate.
pub async fn serve_tls<S>(
    broker: Arc<Broker>,
    listener: Arc<ListenerInfo>,
    stream: S,
    tls_principal: Option<Principal>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, w) = tokio::io::split(stream);
    let session = Session::new(listener.protocol, tls_principal);
    serve(broker, listener, session, r, w, peer, shutdown).await;
}

async fn serve<R, W>(
    broker: Arc<Broker>,
    listener: Arc<ListenerInfo>,
    session: Session,
    read_half: R,
    mut write_half: W,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin,
{
    let session = parking_lot::Mutex::new(session);
    let metrics = &broker.metrics;
    metrics.connections_active.inc();
    metrics.connections_total.inc();
    let max = broker.config.socket_request_max_bytes;
    let (tx, mut rx) = mpsc::channel::<Bytes>(READ_AHEAD);
    let idle =
        Some(Duration::from_millis(broker.config.connections_max_idle_ms)).filter(|d| !d.is_zero());
    let activity = Arc::new(Activity::new());

    let reader_broker = broker.clone();
    let reader_activity = activity.clone();
    let reader = tokio::spawn(async move {
        let mut r = FrameReader::new(read_half, max, reader_activity);
        loop {
            match r.next().await {
                Ok(frame) => {
                    if tx.send(frame).await.is_err() {
                        return;
                    }
                }
                Err(FrameError::Closed) => return,
                Err(FrameError::Io(e)) => {
                    debug!(%peer, error = %e, "connection read failed");
                    return;
                }
                Err(FrameError::Size(size, max)) => {
                    reader_broker.metrics.malformed_frames.inc();
                    warn!(%peer, size, max, "closing connection: frame size is negative or above socket.request.max.bytes");
                    return;
                }
            }
        }
    });

    // Produce requests in flight, answered in request order; anything else
    // waits until they are all answered and then runs alone.
    let mut inflight: FuturesOrdered<Pin<Box<dyn Future<Output = Outcome> + Send + '_>>> =
        FuturesOrdered::new();
    // The frame size of each request in `inflight`, in the same order.
    let mut inflight_sizes: std::collections::VecDeque<usize> = Default::default();
    let mut inflight_bytes = 0usize;
    // Resolves once the last pipelined Produce handed over its batches.
    let mut last_submitted: Option<oneshot::Receiver<()>> = None;
    let mut muted_until: Option<tokio::time::Instant> = None;
    let answer = |outcome: Outcome| AnswerOf {
        outcome,
        mute: std::mem::take(&mut session.lock().mute_for),
    };
    loop {
        // A throttle due for a request in flight holds the next one back.
        let reading = inflight.len() < PIPELINE
            && inflight_bytes < PIPELINE_BYTES
            && muted_until.is_none()
            && session.lock().mute_for.is_zero();
        // Only a connection waiting for its client's next request can be
        // idle: a request being handled, in flight or throttled is not.
        let idle_at = idle
            .filter(|_| reading && inflight.is_empty())
            .and_then(|d| activity.last().checked_add(d));
        let answered = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            Some(outcome) = inflight.next(), if !inflight.is_empty() => {
                inflight_bytes -= inflight_sizes.pop_front().unwrap_or(0);
                answer(outcome)
            }
            () = sleep_until_some(muted_until), if muted_until.is_some() => {
                muted_until = None;
                // A throttled client waits its throttle out before it sends
                // again (KIP-219): idleness counts from now.
                activity.touch();
                continue;
            }
            f = rx.recv(), if reading => {
                let Some(frame) = f else { break };
                if is_produce(&frame) && session.lock().authenticated {
                    if !inflight.is_empty() {
                        broker.metrics.produce_pipelined.inc();
                    }
                    let (done, next) = oneshot::channel();
                    let order = SubmitOrder::new(last_submitted.replace(next), done);
                    inflight_sizes.push_back(frame.len());
                    inflight_bytes += frame.len();
                    inflight.push_back(Box::pin(dispatch(
                        &broker, &listener, &session, peer, frame, Some(order),
                    )));
                    continue;
                }
                // Not a Produce: the ones in flight are answered first.
                let mut closed = false;
                inflight_sizes.clear();
                inflight_bytes = 0;
                while let Some(outcome) = inflight.next().await {
                    let a = answer(outcome);
                    if !write_answer(&broker, &listener, &session, &mut write_half, peer, &a).await {
                        closed = true;
                        break;
                    }
                    muted_until = later(muted_until, a.mute);
                }
                if closed {
                    break;
                }
                last_submitted = None;
                if let Some(until) = muted_until.take() {
                    // KIP-219: a throttle from those answers holds this one too.
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => activity.touch(),
                        _ = shutdown.changed() => break,
                    }
                }
                answer(dispatch(&broker, &listener, &session, peer, frame, None).await)
            }
            () = sleep_until_some(idle_at), if idle_at.is_some() => {
                // The reader may have read since the deadline was set.
                let due = idle.and_then(|d| activity.last().checked_add(d));
                if due.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    broker.metrics.connections_idle_closed.inc();
                    debug!(%peer, idle_ms = broker.config.connections_max_idle_ms, "closing idle connection (connections.max.idle.ms)");
                    break;
                }
                continue;
            }
        };
        if !write_answer(
            &broker,
            &listener,
            &session,
            &mut write_half,
            peer,
            &answered,
        )
        .await
        {
            break;
        }
        activity.touch();
        // KIP-219: the response (with its throttle_time_ms) is out; the next
        // request waits. The reader stops too once its small read-ahead
        // queue is full, so the client sees back-pressure.
        muted_until = later(muted_until, answered.mute);
    }
    reader.abort();
    let _ = write_half.shutdown().await;
    broker.metrics.connections_active.dec();
}

/// Produce requests of one connection handled at once. Their batches reach
/// each partition in request order; only the waits for commits overlap, so
/// a producer with several requests in flight (librdkafka's default) lets
/// Raft carry them in one round instead of one round each. At 5 (the
/// idempotent producer's limit) a non-idempotent librdkafka producer at
/// 10k msg/s outran the brokers: each request held one message, a Raft
/// round carried at most five, and its requests queued in the socket
/// (docs/benchmarks.md, session 9).
const PIPELINE: usize = 64;

/// Request bytes of one connection's pipelined Produce requests: no new one
/// is read while they reach this, so a connection holds at most this plus
/// one request.
const PIPELINE_BYTES: usize = 16 << 20;

/// A handled request and the throttle it asked for.
struct AnswerOf {
    outcome: Outcome,
    mute: Duration,
}

fn is_produce(frame: &[u8]) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == 0
}

fn later(until: Option<tokio::time::Instant>, mute: Duration) -> Option<tokio::time::Instant> {
    if mute.is_zero() {
        return until;
    }
    let end = tokio::time::Instant::now() + mute;
    Some(until.map_or(end, |u| u.max(end)))
}

async fn sleep_until_some(until: Option<tokio::time::Instant>) {
    match until {
        Some(u) => tokio::time::sleep_until(u).await,
        None => std::future::pending().await,
    }
}

/// Writes one answer; false when the connection must close.
async fn write_answer<W: AsyncWrite + Unpin>(
    broker: &Broker,
    listener: &ListenerInfo,
    session: &parking_lot::Mutex<Session>,
    write_half: &mut W,
    peer: SocketAddr,
    answer: &AnswerOf,
) -> bool {
    match &answer.outcome {
        Outcome::Respond(out) => {
            if let Err(e) = write_half.write_all(out).await {
                debug!(%peer, error = %e, "connection write failed");
                return false;
            }
            let close = session.lock().close_after_response.take();
            if let Some(reason) = close {
                let _ = write_half.flush().await;
                info!(%peer, listener = %listener.name, %reason, "closing connection");
                return false;
            }
            true
        }
        Outcome::Refuse(reason) => {
            broker.metrics.unauthenticated_requests.inc();
            warn!(target: "audit", %peer, listener = %listener.name, %reason, "closing connection: not authenticated");
            false
        }
        Outcome::Silent => true,
        Outcome::Close(reason) => {
            broker.metrics.malformed_frames.inc();
            warn!(%peer, %reason, "closing connection: malformed request");
            false
        }
    }
}
