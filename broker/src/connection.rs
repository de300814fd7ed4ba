//! One client connection: size-prefixed frames in, responses out in request
//! order.
//!
//! A reader task decodes frames ahead while the handler works on the current
//! request, so socket reads overlap with handling; requests themselves are
//! handled one at a time, as Kafka does, which keeps a connection's produce
//! requests in order. Only an undecodable frame closes the connection, or,
//! on SASL listeners, a request before authentication or a failed one.
//!
//! The byte stream is a plain TCP socket or a TLS stream (the handshake
//! happens in [`crate::server`]); [`serve_tcp`] and [`serve_tls`] split it
//! into halves and run the same loop.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::auth::tls::TlsSource;
use crate::auth::{Principal, Session};
use crate::broker::Broker;
use crate::config::{Listener, SecurityProtocol};
use crate::handlers::{Outcome, dispatch};

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
/// buffering (memory is bounded by this times socket.request.max.bytes).
const READ_AHEAD: usize = 4;

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
}

impl<R: AsyncReadExt + Unpin> FrameReader<R> {
    fn new(inner: R, max: u32) -> Self {
        Self {
            inner,
            buf: BytesMut::with_capacity(64 * 1024),
            max,
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
                Ok(_) => {}
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

    let reader_broker = broker.clone();
    let reader = tokio::spawn(async move {
        let mut r = FrameReader::new(read_half, max);
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

    loop {
        let frame = tokio::select! {
            f = rx.recv() => match f { Some(f) => f, None => break },
            _ = shutdown.changed() => break,
        };
        let outcome = dispatch(&broker, &listener, &session, peer, frame).await;
        let mute = std::mem::take(&mut session.lock().mute_for);
        match outcome {
            Outcome::Respond(out) => {
                if let Err(e) = write_half.write_all(&out).await {
                    debug!(%peer, error = %e, "connection write failed");
                    break;
                }
                let close = session.lock().close_after_response.take();
                if let Some(reason) = close {
                    let _ = write_half.flush().await;
                    info!(%peer, listener = %listener.name, %reason, "closing connection");
                    break;
                }
            }
            Outcome::Refuse(reason) => {
                broker.metrics.unauthenticated_requests.inc();
                warn!(target: "audit", %peer, listener = %listener.name, %reason, "closing connection: not authenticated");
                break;
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                broker.metrics.malformed_frames.inc();
                warn!(%peer, %reason, "closing connection: malformed request");
                break;
            }
        }
        if !mute.is_zero() {
            // KIP-219: the response (with its throttle_time_ms) is out; the
            // next request waits. The reader stops too once its small
            // read-ahead queue is full, so the client sees back-pressure.
            tokio::select! {
                _ = tokio::time::sleep(mute) => {}
                _ = shutdown.changed() => break,
            }
        }
    }
    reader.abort();
    let _ = write_half.shutdown().await;
    broker.metrics.connections_active.dec();
}
