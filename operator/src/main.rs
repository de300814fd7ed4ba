//! `skiff-operator`: runs the controllers (in a cluster, or outside one
//! with a kubeconfig), or converges a broker once from manifests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use skiff_crds::{KafkaCluster, Quota, Topic, User};
use skiff_operator::admin::AdminCredentials;
use skiff_operator::controllers::{Context, cluster, error_policy, quota, topic, user};
use skiff_operator::oneshot;
use skiff_operator::render::RenderContext;
use skiff_operator::runtime::leader::Elector;
use skiff_operator::runtime::metrics::Metrics;
use skiff_operator::runtime::{self, Health};

#[derive(Parser)]
#[command(
    name = "skiff-operator",
    version,
    about = "The Skiff Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (the default).
    Run,
    /// Converge a broker to Topic/User/Quota manifests once, without
    /// Kubernetes, and print one JSON line per resource.
    ReconcileOnce {
        /// Bootstrap address of the brokers.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Manifest files (multi-document YAML).
        #[arg(long = "file", short = 'f', required = true)]
        files: Vec<PathBuf>,
        /// A KafkaCluster manifest whose tenancy applies.
        #[arg(long)]
        cluster_file: Option<PathBuf>,
        /// Delete the resources from the broker instead.
        #[arg(long)]
        delete: bool,
        /// Directory of Users' password files (stand-in for their Secrets).
        #[arg(long)]
        password_dir: Option<PathBuf>,
        /// Authenticate as this SCRAM-SHA-512 user (password from
        /// SKIFF_ADMIN_PASSWORD).
        #[arg(long, env = "SKIFF_ADMIN_USERNAME")]
        sasl_username: Option<String>,
        /// Directory with the cluster CA (from `certs`) where TLS Users'
        /// certificates are written (stand-in for their Secrets).
        #[arg(long)]
        cert_dir: Option<PathBuf>,
    },
    /// Write a TLS cluster's CA and broker certificates into a directory,
    /// one file per key of the Secrets the controller keeps
    /// (`<name>-cluster-ca`, `<name>-broker-certs`), and print what was
    /// issued as JSON. An existing CA is kept; a broker certificate is
    /// issued anew only when the controller would renew it.
    Certs {
        /// The KafkaCluster manifest (name, namespace, listeners).
        #[arg(long)]
        cluster_file: PathBuf,
        /// Where the files go.
        #[arg(long)]
        dir: PathBuf,
        /// Brokers 0..N (default: the cluster's spec.replicas).
        #[arg(long)]
        brokers: Option<i32>,
        /// `ID=HOST`: the address broker ID's LoadBalancer Services were
        /// given, standing in for their status (repeatable).
        #[arg(long = "external-address", value_parser = parse_external_address)]
        external_addresses: Vec<(i32, String)>,
        /// The Kubernetes cluster's DNS domain.
        #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", default_value = "cluster.local")]
        cluster_domain: String,
    },
    /// Plan a rebalance (or a drain) of a live cluster, print it and carry
    /// it out: moves that even out replicas, preferred leaders and bytes per
    /// broker, rack-aware. `--dry-run` only prints.
    Rebalance(RebalanceArgs),
}

#[derive(clap::Args)]
struct RebalanceArgs {
    /// Bootstrap address of the brokers.
    #[arg(
        long = "bootstrap-server",
        alias = "bootstrap",
        default_value = "127.0.0.1:9092"
    )]
    bootstrap_server: String,
    /// Only print the plan.
    #[arg(long)]
    dry_run: bool,
    /// Partitions moved at once when executing.
    #[arg(long, default_value_t = 10)]
    batch_size: usize,
    /// Seconds one batch may take before the command gives up (the moves
    /// under way carry on in the brokers).
    #[arg(long, default_value_t = 3600)]
    batch_timeout_seconds: u64,
    /// Brokers to empty (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    drain: Vec<i32>,
    /// Cap, in bytes per second per leading broker, on the data the moves
    /// copy (the cluster-wide `leader.replication.throttled.rate`, as
    /// kafka-reassign-partitions --throttle sets it): set before the first
    /// batch, put back as it was after the last or after a failure.
    #[arg(long, value_name = "BYTES_PER_SEC", value_parser = clap::value_parser!(u64).range(1..=i64::MAX as u64))]
    throttle: Option<u64>,
    /// Print Kafka's reassignment JSON (kafka-reassign-partitions format) on
    /// stdout; the summary goes to stderr.
    #[arg(long)]
    json: bool,
    /// Replicas per broker may differ from the average by this many.
    #[arg(long, default_value_t = 1)]
    replica_tolerance: u32,
    /// Preferred leaders per broker may differ from the average by this many.
    #[arg(long, default_value_t = 1)]
    leader_tolerance: u32,
    /// Bytes per broker may differ from the average by this percentage.
    #[arg(long, default_value_t = 10.0)]
    bytes_tolerance_percent: f64,
    /// Authenticate as this SCRAM-SHA-512 user (password from
    /// SKIFF_ADMIN_PASSWORD).
    #[arg(long, env = "SKIFF_ADMIN_USERNAME")]
    sasl_username: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespaces to watch (comma-separated); all when empty.
    #[arg(long, env = "SKIFF_WATCH_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of /metrics, /livez and /readyz.
    #[arg(long, env = "SKIFF_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Run without leader election (one replica only!).
    #[arg(long, env = "SKIFF_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "SKIFF_LEASE_NAME", default_value = "skiff-operator")]
    lease_name: String,
    /// Namespace of the Lease; the pod's namespace in a cluster.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Broker image of clusters that name none.
    #[arg(long, env = "SKIFF_BROKER_IMAGE")]
    broker_image: Option<String>,
    /// The Kubernetes cluster's DNS domain.
    #[arg(long, env = "SKIFF_CLUSTER_DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// The operator's SCRAM-SHA-512 admin user; its password comes from
    /// SKIFF_ADMIN_PASSWORD (never a flag, so it is not in process lists).
    #[arg(long, env = "SKIFF_ADMIN_USERNAME")]
    admin_username: Option<String>,
    /// Admin bootstrap address of a cluster, `namespace/name=host:port`
    /// (repeatable; or comma-separated in the env variable), e.g. with
    /// `kubectl port-forward` when running outside the cluster.
    #[arg(
        long = "bootstrap-override",
        env = "SKIFF_BOOTSTRAP_OVERRIDES",
        value_delimiter = ','
    )]
    bootstrap_overrides: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::ReconcileOnce {
            bootstrap,
            files,
            cluster_file,
            delete,
            password_dir,
            sasl_username,
            cert_dir,
        }) => {
            let out = oneshot::run(&oneshot::Options {
                bootstrap,
                files,
                cluster_file,
                delete,
                password_dir,
                credentials: admin_credentials(sasl_username)?,
                cert_dir,
            })
            .await?;
            for line in out {
                println!("{line}");
            }
            Ok(())
        }
        Some(Command::Certs {
            cluster_file,
            dir,
            brokers,
            external_addresses,
            cluster_domain,
        }) => {
            let out = oneshot::broker_certs(&oneshot::CertsOptions {
                cluster_file,
                dir,
                brokers,
                external_addresses,
                render: RenderContext {
                    cluster_domain,
                    ..RenderContext::default()
                },
            })?;
            println!("{out}");
            Ok(())
        }
        Some(Command::Rebalance(args)) => rebalance(args).await,
        Some(Command::Run) | None => run(cli.run).await,
    }
}

fn parse_external_address(s: &str) -> Result<(i32, String), String> {
    let (id, host) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=HOST"))?;
    let id = id
        .parse()
        .map_err(|_| format!("{s:?}: {id:?} is not a broker id"))?;
    if host.is_empty() {
        return Err(format!("{s:?}: no host"));
    }
    Ok((id, host.to_string()))
}

async fn rebalance(args: RebalanceArgs) -> anyhow::Result<()> {
    use skiff_operator::rebalance;
    anyhow::ensure!(
        args.bytes_tolerance_percent >= 0.0,
        "--bytes-tolerance-percent must not be negative"
    );
    let tolerance = skiff_balance::Tolerance {
        replicas: args.replica_tolerance,
        leaders: args.leader_tolerance,
        bytes_fraction: args.bytes_tolerance_percent / 100.0,
    };
    let opts = rebalance::Options {
        bootstrap: args.bootstrap_server,
        credentials: admin_credentials(args.sasl_username)?,
        drain: args.drain,
        tolerance,
    };
    let snap = rebalance::read_cluster(&opts).await?;
    let plan = rebalance::plan(&snap, tolerance)?;
    let table = rebalance::render_table(&snap, &plan, &tolerance);
    if args.json {
        eprint!("{table}");
        println!(
            "{}",
            serde_json::to_string(&rebalance::reassignment_json(&plan))?
        );
    } else {
        print!("{table}");
    }
    if args.dry_run {
        eprintln!(
            "Dry run: nothing was changed. --json prints the plan in kafka-reassign-partitions format."
        );
        return Ok(());
    }
    if plan.moves.is_empty() {
        return Ok(());
    }
    let how = rebalance::Execution {
        batch: args.batch_size.max(1),
        batch_timeout: std::time::Duration::from_secs(args.batch_timeout_seconds.max(1)),
        poll: std::time::Duration::from_millis(500),
        throttle: args.throttle,
    };
    if let Some(rate) = args.throttle {
        eprintln!(
            "Throttling the moves to {rate} bytes/s per leading broker (cluster-wide leader.replication.throttled.rate) until they are done."
        );
    }
    rebalance::execute(&opts, &plan, how, |done, total| {
        eprintln!("moved {done}/{total} partitions");
    })
    .await?;
    eprintln!("Done: every move of the plan is complete.");
    Ok(())
}

/// The admin identity: a user name and the SKIFF_ADMIN_PASSWORD variable.
fn admin_credentials(username: Option<String>) -> anyhow::Result<Option<AdminCredentials>> {
    let Some(username) = username else {
        return Ok(None);
    };
    let password = std::env::var("SKIFF_ADMIN_PASSWORD")
        .context("an admin user name is set but SKIFF_ADMIN_PASSWORD is not")?;
    Ok(Some(AdminCredentials { username, password }))
}

fn parse_overrides(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    raw.iter()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let (k, v) = s.split_once('=').with_context(|| {
                format!("--bootstrap-override {s:?}: expected namespace/name=host:port")
            })?;
            anyhow::ensure!(
                k.contains('/'),
                "--bootstrap-override {s:?}: expected namespace/name=host:port"
            );
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let overrides = parse_overrides(&args.bootstrap_overrides)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let http = tokio::spawn(runtime::serve(
        args.http_addr,
        metrics.clone(),
        health.clone(),
    ));

    // In a pod: the service account; outside: $KUBECONFIG or ~/.kube/config.
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    client
        .apiserver_version()
        .await
        .context("the Kubernetes API server does not answer")?;
    health.ready.store(true, Ordering::Relaxed);

    let mut render = RenderContext {
        cluster_domain: args.cluster_domain.clone(),
        ..RenderContext::default()
    };
    if let Some(image) = args.broker_image {
        render.default_image = image;
    }
    let ctx = Arc::new(Context::new(
        client.clone(),
        metrics.clone(),
        render,
        overrides,
    ));

    let elector = (!args.no_leader_election).then(|| {
        let me = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple()));
        Elector::new(client.clone(), &args.lease_namespace, &args.lease_name, &me)
    });
    if let Some(e) = &elector {
        tracing::info!(lease = %args.lease_name, namespace = %args.lease_namespace, "waiting for leadership");
        e.acquire().await;
        tracing::info!("leader: starting controllers");
    }
    metrics.leader.set(1);

    let namespaces: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().map(|n| Some(n.clone())).collect()
    };
    let mut tasks = Vec::new();
    for ns in namespaces {
        tasks.push(tokio::spawn(run_controllers(
            client.clone(),
            ns,
            ctx.clone(),
        )));
    }
    let controllers = futures::future::join_all(tasks);
    tokio::select! {
        _ = controllers => anyhow::bail!("the controllers stopped"),
        r = http => anyhow::bail!("the HTTP server stopped: {r:?}"),
        () = async {
            match &elector {
                Some(e) => e.hold().await,
                None => std::future::pending().await,
            }
        } => {
            metrics.leader.set(0);
            // Exiting is the safe way to stop every controller at once; the
            // Deployment restarts the pod as a follower.
            anyhow::bail!("lost the leader Lease; exiting so another replica leads")
        }
        () = stop_signal() => {
            tracing::info!("stopping");
            metrics.leader.set(0);
            if let Some(e) = &elector {
                e.release().await;
            }
            Ok(())
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn stop_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as kube::Resource>::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(
    kind: &'static str,
) -> impl Fn(Result<T, E>) -> futures::future::Ready<()> {
    move |r| {
        if let Err(e) = r {
            tracing::debug!(kind, error = %e, "controller event");
        }
        futures::future::ready(())
    }
}

async fn run_controllers(client: Client, ns: Option<String>, ctx: Arc<Context>) {
    let ns = ns.as_deref();
    let wc = watcher::Config::default();
    // Only the objects the operator made are watched, not every Service.
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=skiff-operator");
    let kc = Controller::new(api::<KafkaCluster>(&client, ns), wc.clone())
        .owns(api::<StatefulSet>(&client, ns), owned.clone())
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned)
        .run(cluster::reconcile, error_policy, ctx.clone())
        .for_each(log_result("KafkaCluster"));
    let topics = Controller::new(api::<Topic>(&client, ns), wc.clone())
        .run(topic::reconcile, error_policy, ctx.clone())
        .for_each(log_result("Topic"));
    let users = Controller::new(api::<User>(&client, ns), wc.clone())
        .run(user::reconcile, error_policy, ctx.clone())
        .for_each(log_result("User"));
    let quotas = Controller::new(api::<Quota>(&client, ns), wc)
        .run(quota::reconcile, error_policy, ctx.clone())
        .for_each(log_result("Quota"));
    futures::join!(kc, topics, users, quotas);
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "skiff-operator".to_string())
}
