//! Start-up and shutdown: open the data directory, bind the listeners, serve
//! until SIGINT/SIGTERM, then stop accepting, let connections finish their
//! current request, and flush the logs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::auth::tls::{TlsSource, principal_of_certificate};
use crate::broker::Broker;
use crate::config::BrokerConfig;
use crate::connection::ListenerInfo;

/// How long a client may take to finish its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let listeners = config.listeners()?;
    let advertised = config.advertised_listeners()?;
    // Certificates are loaded before anything else: a TLS listener that
    // cannot serve TLS must stop the broker, not come up half-configured.
    let tls = if listeners.iter().any(|l| l.protocol.uses_tls()) {
        Some(Arc::new(
            TlsSource::from_config(&config).context("TLS configuration")?,
        ))
    } else {
        None
    };
    let http_addr = config.http_addr;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let store = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Broker::open_store(&config))
            .await
            .context("opening the metadata store")??
    };
    let mut config = config;
    let group = if config.controller_quorum_voters.is_some() {
        Some(crate::cluster::node::start(&mut config, &store, shutdown_rx.clone()).await?)
    } else {
        None
    };
    let broker = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Broker::open_with(config, store))
            .await
            .context("opening the broker")??
    };
    let host = match &group {
        Some(group) => Some(crate::cluster::node::spawn_background(
            broker.clone(),
            group.clone(),
            shutdown_rx.clone(),
        )?),
        None => None,
    };

    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::http::serve(
        broker.clone(),
        http,
        shutdown_rx.clone(),
    ));
    for (l, adv) in listeners.iter().zip(advertised) {
        let addr = format!("{}:{}", l.host, l.port);
        let socket = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding listener {} on {addr}", l.name))?;
        info!(listener = %l.name, protocol = ?l.protocol, %addr, advertised = %format!("{}:{}", adv.host, adv.port), "accepting Kafka clients");
        let info = Arc::new(ListenerInfo {
            name: l.name.clone(),
            protocol: l.protocol,
            advertised: adv,
            tls: if l.protocol.uses_tls() {
                tls.clone()
            } else {
                None
            },
        });
        let broker = broker.clone();
        let shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            accept_loop(broker, info, socket, shutdown).await;
            Ok(())
        });
    }
    tokio::spawn(broker.clone().run_maintenance(shutdown_rx.clone()));
    if let Some(changes) = broker.groups.coordinator.take_changes() {
        let b = broker.clone();
        let shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            b.groups
                .store_group_records(&b.topics, changes, shutdown)
                .await;
        });
    }
    broker.set_ready(true);
    info!(node_id = broker.node_id(), cluster_id = %broker.cluster_id, %http_addr, "broker ready");

    wait_for_signal().await;
    info!("shutting down");
    broker.set_ready(false);
    if let Some(host) = host
        .as_ref()
        .filter(|_| broker.config.controlled_shutdown_enable)
    {
        // Connections stay open meanwhile: clients learn of the new leaders
        // through NOT_LEADER_OR_FOLLOWER and a Metadata refresh.
        let started = std::time::Instant::now();
        let (led, moved) = host.hand_over_all(host.handover_window()).await;
        info!(
            led,
            moved,
            took_ms = started.elapsed().as_millis() as u64,
            "controlled shutdown: partition leaderships handed over"
        );
        if let Some(group) = &group {
            crate::cluster::fencing::fence_self(group, Duration::from_secs(2)).await;
        }
    }
    let _ = shutdown_tx.send(true);
    // Connections see the signal between requests; give in-flight ones a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if let Some(host) = &host {
        host.shutdown().await;
    }
    if let Some(group) = &group {
        group.shutdown().await;
    }
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.flush_all()).await?;
    info!("stopped cleanly");
    Ok(())
}

async fn accept_loop(
    broker: Arc<Broker>,
    listener: Arc<ListenerInfo>,
    socket: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (broker, listener, shutdown) = (broker.clone(), listener.clone(), shutdown.clone());
                    match listener.tls.clone() {
                        None => {
                            tokio::spawn(crate::connection::serve_tcp(broker, listener, stream, peer, shutdown));
                        }
                        Some(tls) => {
                            tokio::spawn(async move {
                                let (acceptor, reloaded) = tls.acceptor();
                                if reloaded {
                                    broker.metrics.tls_reloads.inc();
                                }
                                let tls_stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        broker.metrics.tls_handshake_failures.inc();
                                        warn!(target: "audit", %peer, listener = %listener.name, error = %e, "TLS handshake failed");
                                        return;
                                    }
                                    Err(_) => {
                                        broker.metrics.tls_handshake_failures.inc();
                                        warn!(target: "audit", %peer, listener = %listener.name, "TLS handshake timed out");
                                        return;
                                    }
                                };
                                let principal = tls_stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|c| c.first())
                                    .and_then(|c| principal_of_certificate(c, tls.mapping));
                                crate::connection::serve_tls(broker, listener, tls_stream, principal, peer, shutdown).await;
                            });
                        }
                    }
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the broker");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
