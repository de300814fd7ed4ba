//! A real skiff-broker process on 127.0.0.1 for the admin tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A running broker; killed on drop.
pub struct Broker {
    child: Child,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
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
            _dir: dir,
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
            assert!(Instant::now() < deadline, "broker not ready in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
