//! One client connection: size-prefixed frames in, responses out in request
//! order.
//!
//! A reader task decodes frames ahead while the handler works on the current
//! request, so socket reads overlap with handling; requests themselves are
//! handled one at a time, as Kafka does, which keeps a connection's produce
//! requests in order. Only an undecodable frame closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Buf;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::broker::Broker;
use crate::handlers::{Outcome, dispatch};

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

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let metrics = &broker.metrics;
    metrics.connections_active.inc();
    metrics.connections_total.inc();
    let (read_half, mut write_half) = stream.into_split();
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
        match dispatch(&broker, peer, frame).await {
            Outcome::Respond(out) => {
                if let Err(e) = write_half.write_all(&out).await {
                    debug!(%peer, error = %e, "connection write failed");
                    break;
                }
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                broker.metrics.malformed_frames.inc();
                warn!(%peer, %reason, "closing connection: malformed request");
                break;
            }
        }
    }
    reader.abort();
    let _ = write_half.shutdown().await;
    broker.metrics.connections_active.dec();
}
