use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::client::PeerPool;
use super::server::{GroupHandler, Registry, serve};
use super::{GroupId, PeerToken, RpcConfig, RpcError, RpcKind};

/// Echoes the payload after an optional delay; `kind` Vote is unsupported.
struct Echo(Duration);

impl GroupHandler for Echo {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        let delay = self.0;
        Box::pin(async move {
            if kind == RpcKind::Vote {
                return Err(RpcError::Unsupported(kind as u32));
            }
            tokio::time::sleep(delay).await;
            Ok(payload.to_vec())
        })
    }
}

/// A metadata-group call that waits the pool's default deadline.
async fn forward(pool: &PeerPool, addr: &str, payload: Vec<u8>) -> Result<Bytes, RpcError> {
    pool.call(addr, GroupId::Metadata, RpcKind::Forward, payload, None)
        .await
}

async fn start(cluster: &str) -> (Arc<Registry>, String, tokio::sync::oneshot::Sender<()>) {
    start_with(RpcConfig::new(cluster, 1)).await
}

async fn start_with(
    config: RpcConfig,
) -> (Arc<Registry>, String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let registry = Registry::new(config);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let r = registry.clone();
    tokio::spawn(async move {
        serve(listener, r, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (registry, addr, tx)
}

#[tokio::test]
async fn a_peer_connection_carries_a_bounded_number_of_streams() {
    let (_registry, addr, _stop) = start("c1").await;
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (send, mut conn) = h2::client::handshake(tcp).await.unwrap();
    // The server's SETTINGS come before its answer to a first request.
    let mut send = send.ready().await.unwrap();
    let req = tonic::codegen::http::Request::post(format!("http://{addr}/skiff.rpc.Raft/None"))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let (answer, _) = send.send_request(req, true).unwrap();
    tokio::select! {
        a = answer => { a.unwrap(); }
        c = &mut conn => panic!("connection ended first: {c:?}"),
    }
    assert_eq!(
        conn.max_concurrent_send_streams(),
        super::server::MAX_STREAMS as usize
    );
}

#[tokio::test]
async fn routes_by_group_and_refuses_strangers() {
    let (registry, addr, _stop) = start("c1").await;
    let part = GroupId::Partition {
        topic_id: Uuid::new_v4(),
        partition: 3,
    };
    registry.register(part, Arc::new(Echo(Duration::ZERO)));
    let pool = PeerPool::new(RpcConfig::new("c1", 2));
    let got = pool
        .call(&addr, part, RpcKind::AppendEntries, b"hello".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello");
    // Same topic, other partition: not hosted.
    let other = GroupId::Partition {
        topic_id: match part {
            GroupId::Partition { topic_id, .. } => topic_id,
            GroupId::Metadata => unreachable!(),
        },
        partition: 4,
    };
    let err = pool
        .call(&addr, other, RpcKind::AppendEntries, vec![1], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::UnknownGroup(_)), "{err:?}");
    let err = pool
        .call(&addr, part, RpcKind::Vote, vec![1], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Unsupported(_)), "{err:?}");
    assert!(registry.unregister(&part));
    let err = pool
        .call(&addr, part, RpcKind::AppendEntries, vec![1], None)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::UnknownGroup(_)), "{err:?}");

    let stranger = PeerPool::new(RpcConfig::new("c2", 2));
    registry.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let err = forward(&stranger, &addr, vec![1]).await.unwrap_err();
    assert!(matches!(err, RpcError::ClusterMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn deadlines_size_limit_and_inflight_bound() {
    let (registry, addr, _stop) = start("c").await;
    registry.register(
        GroupId::Metadata,
        Arc::new(Echo(Duration::from_millis(300))),
    );
    let mut cfg = RpcConfig::new("c", 2);
    cfg.max_message_bytes = 1000;
    cfg.max_inflight_bytes_per_peer = 1000;
    let pool = PeerPool::new(cfg);
    let err = forward(&pool, &addr, vec![0; 1001]).await.unwrap_err();
    assert!(matches!(err, RpcError::TooLarge(1001, 1000)), "{err:?}");
    let err = pool
        .call(
            &addr,
            GroupId::Metadata,
            RpcKind::Forward,
            vec![0; 10],
            Some(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout(..)), "{err:?}");
    // Two 600-byte calls cannot be in flight together under a 1000-byte
    // bound: the second waits for the first, so both take ~2 delays.
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        forward(&pool, &addr, vec![1; 600]),
        forward(&pool, &addr, vec![2; 600]),
    );
    assert_eq!(a.unwrap().len(), 600);
    assert_eq!(b.unwrap().len(), 600);
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );
    // Small calls share the bound and run together.
    let started = std::time::Instant::now();
    let (a, b) = tokio::join!(
        forward(&pool, &addr, vec![1; 400]),
        forward(&pool, &addr, vec![2; 400]),
    );
    a.unwrap();
    b.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unreachable_peer_is_an_error_not_a_hang() {
    let pool = PeerPool::new(RpcConfig::new("c", 2));
    let err = pool
        .call(
            "127.0.0.1:1",
            GroupId::Metadata,
            RpcKind::Vote,
            vec![1],
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Unreachable(..)), "{err:?}");
}

#[tokio::test]
async fn coalesced_calls_to_one_peer_travel_together_and_keep_their_answers() {
    let (registry, addr, _stop) = start("c1").await;
    let topic_id = Uuid::new_v4();
    let groups: Vec<GroupId> = (0..40)
        .map(|partition| GroupId::Partition {
            topic_id,
            partition,
        })
        .collect();
    for g in &groups[..39] {
        registry.register(*g, Arc::new(Echo(Duration::ZERO)));
    }
    let pool = PeerPool::new(RpcConfig::new("c1", 2));
    let calls = groups.iter().enumerate().map(|(i, g)| {
        let pool = pool.clone();
        let addr = addr.clone();
        async move {
            pool.call_coalesced(
                &addr,
                *g,
                RpcKind::AppendEntries,
                format!("group {i}").into_bytes(),
                None,
            )
            .await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    for (i, a) in answers.iter().enumerate().take(39) {
        assert_eq!(
            a.as_deref(),
            Ok(format!("group {i}").as_bytes()),
            "call {i}"
        );
    }
    // The one group not hosted gets its own typed error, not the batch's.
    assert!(
        matches!(answers[39], Err(RpcError::UnknownGroup(_))),
        "{:?}",
        answers[39]
    );
    let (batches, carried) = registry.batch_counts();
    assert_eq!(carried, 40);
    assert!(batches < 5, "{batches} batches for 40 calls issued at once");
    assert!(pool.since_last_reply(&addr).is_some());
}

#[tokio::test]
async fn a_coalesced_call_to_a_dead_peer_fails_within_its_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let pool = PeerPool::new(RpcConfig::new("c1", 2));
    let started = std::time::Instant::now();
    let err = pool
        .call_coalesced(
            &addr,
            GroupId::Metadata,
            RpcKind::AppendEntries,
            vec![1],
            Some(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Unreachable(..) | RpcError::Timeout(..)),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn accepted_connections_have_nagle_off() {
    use futures_util::StreamExt;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut accepted = super::server::incoming(listener);
    let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
    let conn = accepted.next().await.unwrap().unwrap();
    assert!(
        conn.nodelay().unwrap(),
        "a Raft peer's connection keeps Nagle on"
    );
}

/// Answers payload `[i, ..]` after `64 - i` ms: later calls finish first.
struct Reversed;

impl GroupHandler for Reversed {
    fn handle(
        &self,
        _kind: RpcKind,
        payload: Bytes,
    ) -> BoxFuture<'static, Result<Vec<u8>, RpcError>> {
        Box::pin(async move {
            let wait = 64 - u64::from(payload[0].min(64));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(payload.to_vec())
        })
    }
}

#[tokio::test]
async fn small_calls_share_one_stream_and_keep_their_answers() {
    let (registry, addr, _stop) = start("c").await;
    registry.register(GroupId::Metadata, Arc::new(Reversed));
    let pool = PeerPool::new(RpcConfig::new("c", 2));
    let calls = (0..64u8).map(|i| {
        let (pool, addr) = (pool.clone(), addr.clone());
        async move {
            let got = forward(&pool, &addr, vec![i; 100]).await;
            (i, got)
        }
    });
    for (i, got) in futures_util::future::join_all(calls).await {
        assert_eq!(got.as_deref(), Ok(&[i; 100][..]), "call {i}");
    }
    assert_eq!(registry.stream_counts(), (1, 64));
    assert!(pool.since_last_reply(&addr).is_some());

    // A large call goes unary, beside the stream.
    let big = vec![0u8; super::stream::STREAM_MAX_PAYLOAD + 1];
    let got = forward(&pool, &addr, big.clone()).await;
    assert_eq!(got.as_deref(), Ok(&big[..]));
    assert_eq!(registry.stream_counts(), (1, 64));
}

#[tokio::test]
async fn the_stream_is_opened_again_after_the_peer_restarts() {
    let (registry, addr, stop) = start("c").await;
    registry.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let pool = PeerPool::new(RpcConfig::new("c", 2));
    let call = |payload: &'static [u8]| {
        let (pool, addr) = (pool.clone(), addr.clone());
        async move {
            pool.call(
                &addr,
                GroupId::Metadata,
                RpcKind::Forward,
                payload.to_vec(),
                Some(Duration::from_secs(2)),
            )
            .await
        }
    };
    assert_eq!(call(b"before").await.as_deref(), Ok(&b"before"[..]));
    // Shutting down ends the open stream, so the server can drain.
    stop.send(()).unwrap();
    let mut listener = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Ok(l) = tokio::net::TcpListener::bind(&addr).await {
            listener = Some(l);
            break;
        }
    }
    let listener = listener.expect("the old server never let go of its port");
    let again = Registry::new(RpcConfig::new("c", 1));
    again.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let r = again.clone();
    tokio::spawn(async move { serve(listener, r, std::future::pending()).await });
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(got) = call(b"after").await {
            answered = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered.as_deref(), Some(&b"after"[..]));
    assert_eq!(again.stream_counts().0, 1);
}

/// A server as an older broker serves it, without the method at `path`,
/// while `refuse` is set (then as an upgraded one); counts the calls to
/// `path` it refused and those it served.
#[derive(Clone)]
struct WithoutCall {
    path: &'static str,
    inner: super::server::RaftService,
    refuse: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicUsize>,
    served: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long the fallback tests' pools believe a refusal: long enough for
/// the first call's fallback and the second call to come within it on a
/// loaded machine.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(2);

impl WithoutCall {
    /// An echoing metadata group served on a new port, refusing `path`;
    /// its registry, its address, and a pool that asks again after
    /// [`ASK_AGAIN_AFTER`].
    async fn serve(path: &'static str) -> (Self, Arc<Registry>, String, Arc<PeerPool>) {
        let registry = Registry::new(RpcConfig::new("c", 1));
        registry.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let service = Self {
            path,
            inner: super::server::RaftService::new(registry.clone()),
            refuse: Arc::new(true.into()),
            refused: Arc::default(),
            served: Arc::default(),
        };
        tokio::spawn(
            super::server::transport()
                .add_service(service.clone())
                .serve_with_incoming(super::server::incoming(listener)),
        );
        let pool = PeerPool::new(RpcConfig {
            ask_again_after: ASK_AGAIN_AFTER,
            ..RpcConfig::new("c", 2)
        });
        (service, registry, addr, pool)
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.refused.load(Ordering::SeqCst),
            self.served.load(Ordering::SeqCst),
        )
    }
}

impl tonic::server::NamedService for WithoutCall {
    const NAME: &'static str = "skiff.rpc.Raft";
}

impl<B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for WithoutCall
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        if req.uri().path() == self.path {
            if self.refuse.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Box::pin(async { Ok(tonic::Status::unimplemented("").into_http()) });
            }
            self.served.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.call(req)
    }
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_unary_calls_until_it_is_asked_again() {
    let (service, registry, addr, pool) = WithoutCall::serve(super::stream::STREAM_PATH).await;
    let echo = |payload: &'static [u8]| {
        let got = forward(&pool, &addr, payload.to_vec());
        async move { assert_eq!(got.await.as_deref(), Ok(payload)) }
    };
    echo(b"first").await;
    echo(b"second").await;
    // The first call was refused the stream and went unary; the second
    // believed the refusal and went unary at once.
    assert_eq!(service.counts().0, 1);
    assert_eq!(registry.stream_counts(), (0, 0));
    // The peer is upgraded; once the refusal is old, calls use the stream.
    service.refuse.store(false, Ordering::SeqCst);
    tokio::time::sleep(ASK_AGAIN_AFTER).await;
    echo(b"third").await;
    echo(b"fourth").await;
    assert_eq!(service.counts(), (1, 1));
    assert_eq!(registry.stream_counts(), (1, 2));
}

#[tokio::test]
async fn a_peer_without_batch_gets_coalesced_calls_one_by_one_until_it_is_asked_again() {
    let (service, _registry, addr, pool) = WithoutCall::serve(super::server::BATCH_PATH).await;
    let beat = |payload: &'static [u8]| {
        let got = pool.call_coalesced(
            &addr,
            GroupId::Metadata,
            RpcKind::Forward,
            payload.to_vec(),
            None,
        );
        async move { assert_eq!(got.await.as_deref(), Ok(payload)) }
    };
    beat(b"first").await;
    beat(b"second").await;
    // The first batch was refused and its call went alone; the second
    // believed the refusal and went alone at once.
    assert_eq!(service.counts(), (1, 0));
    // The peer is upgraded; once the refusal is old, calls go in batches.
    service.refuse.store(false, Ordering::SeqCst);
    tokio::time::sleep(ASK_AGAIN_AFTER).await;
    beat(b"third").await;
    beat(b"fourth").await;
    assert_eq!(service.counts(), (1, 2));
}

#[tokio::test]
async fn calls_stuck_on_the_stream_give_their_place_back_at_their_deadline() {
    let (registry, addr, _stop) = start("c").await;
    let stuck = GroupId::Partition {
        topic_id: Uuid::new_v4(),
        partition: 0,
    };
    // Answers after an hour: never, for this test.
    registry.register(stuck, Arc::new(Echo(Duration::from_secs(3600))));
    registry.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let pool = PeerPool::new(RpcConfig::new("c", 2));
    // More than the server works on at once per stream.
    let calls = (0..300).map(|_| {
        let (pool, addr) = (pool.clone(), addr.clone());
        async move {
            pool.call(
                &addr,
                stuck,
                RpcKind::AppendEntries,
                vec![1],
                Some(Duration::from_millis(200)),
            )
            .await
        }
    });
    for r in futures_util::future::join_all(calls).await {
        assert!(matches!(r, Err(RpcError::Timeout(..))), "{r:?}");
    }
    let got = pool
        .call(
            &addr,
            GroupId::Metadata,
            RpcKind::Forward,
            b"still served".to_vec(),
            Some(Duration::from_secs(2)),
        )
        .await;
    assert_eq!(got.as_deref(), Ok(&b"still served"[..]));
    assert_eq!(registry.stream_counts().0, 1);
}

#[test]
fn a_peer_token_must_be_long_and_fit_a_header() {
    assert!(PeerToken::new("  0123456789abcdef\n").is_ok());
    assert!(PeerToken::new("short").is_err());
    assert!(PeerToken::new("0123456789 abcdef").is_err());
    assert!(PeerToken::new("0123456789abcdéf").is_err());
    assert_eq!(
        format!("{:?}", PeerToken::new("0123456789abcdef").unwrap()),
        "PeerToken(..)",
        "never logged"
    );
}

/// With a peer token, every way a request travels (a call stream for small
/// calls, a unary call for large ones, a batch for coalesced heartbeats)
/// carries it, and the server answers none of them without it.
#[tokio::test]
async fn a_server_with_a_peer_token_serves_only_peers_that_send_it() {
    let token = |t: &str| Some(PeerToken::new(t).unwrap());
    let (registry, addr, _stop) =
        start_with(RpcConfig::new("c", 1).with_peer_token(token("the-cluster-secret"))).await;
    registry.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let large = vec![7u8; 200 << 10];
    let calls = |pool: Arc<PeerPool>, addr: String, large: Vec<u8>| async move {
        let small = forward(&pool, &addr, b"hi".to_vec()).await;
        let big = forward(&pool, &addr, large).await;
        let batched = pool
            .call_coalesced(
                &addr,
                GroupId::Metadata,
                RpcKind::Forward,
                b"hb".to_vec(),
                None,
            )
            .await;
        [small, big, batched]
    };
    for (name, presented) in [("none", None), ("wrong", token("another-cluster-secret"))] {
        let pool = PeerPool::new(RpcConfig::new("c", 2).with_peer_token(presented));
        for r in calls(pool, addr.clone(), large.clone()).await {
            let err = r.expect_err(name);
            assert!(
                matches!(&err, RpcError::Unreachable(_, m) if m.contains("peer token")),
                "{name}: {err:?}"
            );
        }
    }
    assert_eq!(registry.unauthenticated_count(), 6);
    // While a roll brings the token in: a peer without one is served, a
    // peer with another one still is not.
    let (lenient, tolerant, _stop2) = start_with(
        RpcConfig::new("c", 1).with_peer_token(Some(
            PeerToken::new("the-cluster-secret")
                .unwrap()
                .tolerating_none(),
        )),
    )
    .await;
    lenient.register(GroupId::Metadata, Arc::new(Echo(Duration::ZERO)));
    let none = PeerPool::new(RpcConfig::new("c", 2));
    let [small, big, batched] = calls(none, tolerant.clone(), large.clone()).await;
    assert_eq!(&small.unwrap()[..], b"hi");
    assert_eq!(big.unwrap().len(), large.len());
    assert_eq!(&batched.unwrap()[..], b"hb");
    let wrong =
        PeerPool::new(RpcConfig::new("c", 2).with_peer_token(token("another-cluster-secret")));
    for r in calls(wrong, tolerant, large.clone()).await {
        let err = r.expect_err("another token");
        assert!(
            matches!(&err, RpcError::Unreachable(_, m) if m.contains("peer token")),
            "{err:?}"
        );
    }
    let pool = PeerPool::new(RpcConfig::new("c", 2).with_peer_token(token("the-cluster-secret")));
    let [small, big, batched] = calls(pool, addr.clone(), large.clone()).await;
    assert_eq!(&small.unwrap()[..], b"hi");
    assert_eq!(big.unwrap().len(), large.len());
    assert_eq!(&batched.unwrap()[..], b"hb");
}
