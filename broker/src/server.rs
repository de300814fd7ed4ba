//! Start-up and shutdown: open the data directory, bind the listeners, serve
//! until SIGINT/SIGTERM, then stop accepting, let connections finish their
//! current request, and flush the logs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::broker::Broker;
use crate::config::BrokerConfig;

pub async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let listeners = config.listeners()?;
    let http_addr = config.http_addr;
    let broker = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Broker::open(config))
            .await
            .context("opening the broker")??
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let http = TcpListener::bind(http_addr)
        .await
        .with_context(|| format!("binding HTTP on {http_addr}"))?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::http::serve(
        broker.clone(),
        http,
        shutdown_rx.clone(),
    ));
    for l in &listeners {
        let addr = format!("{}:{}", l.host, l.port);
        let socket = TcpListener::bind(&addr)
            .await
            .with_context(|| format!("binding listener {} on {addr}", l.name))?;
        info!(listener = %l.name, %addr, "accepting Kafka clients");
        let broker = broker.clone();
        let shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            accept_loop(broker, socket, shutdown).await;
            Ok(())
        });
    }
    tokio::spawn(broker.clone().run_maintenance(shutdown_rx.clone()));
    broker.set_ready(true);
    info!(node_id = broker.node_id(), cluster_id = %broker.cluster_id, %http_addr, "broker ready");

    wait_for_signal().await;
    info!("shutting down");
    broker.set_ready(false);
    let _ = shutdown_tx.send(true);
    // Connections see the signal between requests; give in-flight ones a moment.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.flush_all()).await?;
    info!("stopped cleanly");
    Ok(())
}

async fn accept_loop(
    broker: Arc<Broker>,
    socket: TcpListener,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(crate::connection::serve(broker.clone(), stream, peer, shutdown.clone()));
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
