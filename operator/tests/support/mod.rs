//! A real skiff-broker process on 127.0.0.1 for the admin tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The broker binary: `$SKIFF_BROKER_BIN`, else the workspace's release or
/// debug build; when none exists it is built (`cargo build --release -p
/// skiff-broker`), so `cargo test` never silently skips these tests.
pub fn broker_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SKIFF_BROKER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "SKIFF_BROKER_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join("skiff-broker");
        if p.exists() {
            return p;
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "skiff-broker"])
        .current_dir(&root)
        .status()
        .expect("run cargo to build skiff-broker");
    assert!(status.success(), "building skiff-broker failed");
    target.join("release").join("skiff-broker")
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// Ports that are free now, for brokers that bind them a moment later.
/// They come from below the kernel's ephemeral range (32768 and up), where
/// the tests' client connections get theirs, so none of those takes a port
/// before its broker binds it; and a process never hands one out twice.
fn free_ports(n: usize) -> Vec<u16> {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id() % COUNT;
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let drawn = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(drawn < COUNT, "no free port left below the ephemeral range");
        let port = u16::try_from(FIRST + (start + drawn) % COUNT).expect("below 32000");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

/// The last 30 lines of a broker's log (empty if there is none yet).
fn tail(log: &std::path::Path) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A running broker; killed on drop.
pub struct Broker {
    child: Child,
    pub bootstrap: String,
    dir: tempfile::TempDir,
}

impl Broker {
    /// Starts a single broker with a PLAINTEXT listener whose anonymous
    /// principal is a super user (the operator's admin identity in tests).
    pub async fn start() -> Self {
        Self::start_as(None).await
    }

    /// Starts a broker whose only listener is SASL_PLAINTEXT and whose super
    /// user `admin` (password `admin_password`) is the operator's identity.
    pub async fn start_scram(admin_password: &str) -> Self {
        Self::start_as(Some(admin_password)).await
    }

    async fn start_as(admin_password: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let http = free_port();
        let proto = if admin_password.is_some() {
            "SASL_PLAINTEXT"
        } else {
            "PLAINTEXT"
        };
        let listener = format!("{proto}://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("broker.log")).expect("log file");
        let mut cmd = Command::new(broker_bin());
        cmd.args(["--node-id", "0", "--listeners", &listener])
            .args(["--advertised-listeners", &listener])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--http-addr", &format!("127.0.0.1:{http}")]);
        let credentials = match admin_password {
            Some(pw) => {
                let users = dir.path().join("users");
                std::fs::write(&users, format!("admin:{pw}\n")).expect("users file");
                cmd.args([
                    "--super-users",
                    "User:admin",
                    "--scram-bootstrap-users-file",
                ])
                .arg(users);
                Some(skiff_operator::admin::AdminCredentials {
                    username: "admin".into(),
                    password: pw.into(),
                })
            }
            None => {
                cmd.args(["--super-users", "User:ANONYMOUS"]);
                None
            }
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff-broker");
        let b = Self {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let admin = skiff_operator::admin::AdminClient::connect_with(
                &b.bootstrap,
                credentials.as_ref(),
            )
            .await;
            if let Ok(mut a) = admin
                && a.cluster_info().await.is_ok_and(|i| !i.brokers.is_empty())
            {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "broker not ready in 30 s; its log:\n{}",
                b.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last lines of the broker's log, for a failure message.
    fn log_tail(&self) -> String {
        tail(&self.dir.path().join("broker.log"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    port: u16,
    http: u16,
    rpc: u16,
    child: Option<Child>,
}

/// Brokers 0..n of one replicated cluster on 127.0.0.1, numbered as the
/// operator numbers them (the StatefulSet ordinals). The first `voters` are
/// the metadata Raft voters; the others join as learners, as the brokers a
/// scale-up adds do. Only brokers that were started run (a broker not yet
/// started is a pod the StatefulSet has not made yet); all are killed on
/// drop.
pub struct Cluster {
    voters: String,
    cluster_id: String,
    nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A cluster of `n` brokers of which `started` run, once every running
    /// broker is a registered member with a metadata leader.
    pub async fn start(n: usize, voters: usize, started: usize) -> Self {
        let ports = free_ports(3 * n);
        let nodes: Vec<Node> = ports
            .chunks(3)
            .map(|p| Node {
                port: p[0],
                http: p[1],
                rpc: p[2],
                child: None,
            })
            .collect();
        let voters = nodes
            .iter()
            .take(voters.min(n))
            .enumerate()
            .map(|(id, node)| format!("{id}@127.0.0.1:{}", node.rpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Self {
            voters,
            cluster_id: format!("operator-test-{}-{}", std::process::id(), ports[0]),
            nodes,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for id in 0..started {
            c.start_broker(id as i32);
        }
        let ids: Vec<i32> = (0..started as i32).collect();
        c.wait_registered(&ids).await;
        c
    }

    /// Starts broker `id` (again, with the data it had).
    pub fn start_broker(&mut self, id: i32) {
        let dir = self.dir.path().join(format!("node{id}"));
        std::fs::create_dir_all(&dir).expect("broker dir");
        let node = &mut self.nodes[usize::try_from(id).expect("an ordinal")];
        assert!(node.child.is_none(), "broker {id} already runs");
        let listener = format!("PLAINTEXT://127.0.0.1:{}", node.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("broker.log"))
            .expect("log file");
        let child = Command::new(broker_bin())
            .args(["--node-id", &id.to_string(), "--listeners", &listener])
            .args(["--advertised-listeners", &listener])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--http-addr", &format!("127.0.0.1:{}", node.http)])
            .args(["--super-users", "User:ANONYMOUS"])
            .args(["--controller-quorum-voters", &self.voters])
            .args(["--rpc-listener", &format!("127.0.0.1:{}", node.rpc)])
            .args(["--cluster-id", &self.cluster_id])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start skiff-broker");
        node.child = Some(child);
    }

    /// Kills broker `id` (its pod is gone).
    pub fn kill(&mut self, id: i32) {
        if let Some(mut child) = self.nodes[usize::try_from(id).expect("an ordinal")]
            .child
            .take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The Kafka address of broker `id`.
    pub fn bootstrap(&self, id: i32) -> String {
        format!(
            "127.0.0.1:{}",
            self.nodes[usize::try_from(id).expect("an ordinal")].port
        )
    }

    /// The end of broker `id`'s log, for a failure message.
    pub fn log_tail(&self, id: i32) -> String {
        tail(&self.dir.path().join(format!("node{id}/broker.log")))
    }

    /// The cluster as broker `via` describes it; `None` while it cannot
    /// answer.
    pub async fn info(&self, via: i32) -> Option<skiff_operator::admin::requests::ClusterInfo> {
        let mut admin = skiff_operator::admin::AdminClient::connect(&self.bootstrap(via))
            .await
            .ok()?;
        admin.cluster_info().await.ok()
    }

    /// Whether broker 0 lists `id` as registered now.
    pub async fn is_registered(&self, id: i32) -> bool {
        self.info(0).await.expect("metadata").brokers.contains(&id)
    }

    /// Waits until broker 0 lists every one of `ids` as registered and
    /// knows the metadata leader.
    pub async fn wait_registered(&self, ids: &[i32]) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(info) = self.info(0).await
                && info.controller_id >= 0
                && ids.iter().all(|id| info.brokers.contains(id))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "brokers {ids:?} not registered in 60 s; broker 0's log:\n{}",
                self.log_tail(0)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
