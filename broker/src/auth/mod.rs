//! Authentication: who is on the other end of a connection.
//!
//! - [`scram`]: SCRAM-SHA-256/512 credentials and the server exchange.
//! - [`tls`]: server certificates (reloaded when their files change), client
//!   certificate verification, and the certificate → principal rule.
//! - Here: principals, the per-connection [`Session`], PLAIN's message, the
//!   per-address backoff after failed authentications, and the broker-wide
//!   [`Security`] settings (enabled mechanisms, super users, bootstrap users).
//!
//! Every connection has a principal from the start: `User:ANONYMOUS` on
//! PLAINTEXT (and on SSL without a client certificate), the certificate's
//! subject on SSL with one; on SASL listeners it is set by a successful
//! SaslAuthenticate, and nothing but ApiVersions/SaslHandshake/SaslAuthenticate
//! is served before that.

pub mod scram;
pub mod tls;

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use ring::rand::SecureRandom;

use crate::cluster::meta_store::MetaStore;
use crate::config::{BrokerConfig, ConfigError, SecurityProtocol};
use scram::{ScramCredential, ScramMechanism, ScramServer};

/// Every SASL mechanism this broker implements, as Kafka names them.
pub const MECHANISMS: &[&str] = &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"];

/// Iterations of the credentials `--scram-bootstrap-users-file` creates.
pub const BOOTSTRAP_ITERATIONS: u32 = 8192;

/// A Kafka principal, `User:name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub kind: &'static str,
    pub name: String,
}

impl Principal {
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            kind: "User",
            name: name.into(),
        }
    }

    pub fn anonymous() -> Self {
        Self::user("ANONYMOUS")
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.name)
    }
}

/// Where a SASL exchange is.
#[derive(Debug, Default)]
pub enum SaslState {
    /// Nothing yet: a SaslHandshake is expected.
    #[default]
    Start,
    /// SaslHandshake chose this mechanism; its first SaslAuthenticate is expected.
    Handshaken(&'static str),
    /// SCRAM server-first was sent; client-final is expected.
    ScramFirstSent(Box<ScramServer>),
    /// Authenticated; no further SASL message is valid (no re-authentication).
    Done,
}

/// One connection's security state.
#[derive(Debug)]
pub struct Session {
    pub protocol: SecurityProtocol,
    pub principal: Principal,
    /// False only on SASL listeners before a successful SaslAuthenticate.
    pub authenticated: bool,
    pub sasl: SaslState,
    /// Set by a handler when the connection must close once its response is
    /// written (a failed authentication, a SASL message out of order).
    pub close_after_response: Option<String>,
    /// How long a quota throttles the connection after the last response
    /// (KIP-219): no further request is read until it has passed.
    pub mute_for: std::time::Duration,
}

impl Session {
    /// A fresh connection's state; `tls_principal` is the principal of a
    /// verified client certificate.
    pub fn new(protocol: SecurityProtocol, tls_principal: Option<Principal>) -> Self {
        Self {
            protocol,
            principal: tls_principal.unwrap_or_else(Principal::anonymous),
            authenticated: !protocol.uses_sasl(),
            sasl: SaslState::Start,
            close_after_response: None,
            mute_for: Duration::ZERO,
        }
    }
}

/// Parses a PLAIN message (RFC 4616): `[authzid] NUL authcid NUL passwd`.
/// Returns (user, password). An authzid other than the user is refused, as
/// Kafka does.
pub fn parse_plain(msg: &[u8]) -> Result<(&str, &[u8]), &'static str> {
    let mut parts = msg.splitn(3, |b| *b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("expected authzid NUL user NUL password");
    };
    let user = std::str::from_utf8(user).map_err(|_| "user name is not UTF-8")?;
    if user.is_empty() || password.is_empty() {
        return Err("empty user name or password");
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err("authorization id differs from the user name");
    }
    Ok((user, password))
}

/// Backoff after failed authentications, per source address: the n-th
/// failure within a minute is answered after `base * 2^(n-1)`, at most 5 s.
pub struct FailureTracker {
    base: Duration,
    recent: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

const FAILURE_WINDOW: Duration = Duration::from_secs(60);
const MAX_FAILURE_DELAY: Duration = Duration::from_secs(5);
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl FailureTracker {
    pub fn new(base: Duration) -> Self {
        Self {
            base,
            recent: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `ip`; returns how long to wait before answering.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut recent = self.recent.lock();
        if recent.len() >= MAX_TRACKED_ADDRESSES {
            recent.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_WINDOW);
        }
        let entry = recent.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let shift = (entry.0 - 1).min(16);
        self.base.saturating_mul(1 << shift).min(MAX_FAILURE_DELAY)
    }

    /// A success from `ip` forgets its failures.
    pub fn succeeded(&self, ip: IpAddr) {
        self.recent.lock().remove(&ip);
    }
}

/// Broker-wide authentication settings.
pub struct Security {
    pub mechanisms: Vec<&'static str>,
    pub super_users: Vec<String>,
    pub failures: FailureTracker,
}

impl Security {
    /// # Errors
    /// Settings that do not parse (already checked at config load).
    pub fn from_config(config: &BrokerConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            mechanisms: config.sasl_mechanisms()?,
            super_users: config.super_users()?,
            failures: FailureTracker::new(Duration::from_millis(
                config.connection_failed_authentication_delay_ms,
            )),
        })
    }

    pub fn is_super_user(&self, p: &Principal) -> bool {
        let s = p.to_string();
        self.super_users.contains(&s)
    }

    /// Whether `p` may read and change SCRAM credentials. Until ACLs exist:
    /// everyone when no super user is configured (Kafka without an
    /// authorizer), else only super users.
    pub fn may_manage_credentials(&self, p: &Principal) -> bool {
        self.super_users.is_empty() || self.is_super_user(p)
    }
}

/// Random bytes from the system generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    // The system RNG failing means no secure randomness at all; there is
    // nothing safer to do than stop.
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .expect("the system random number generator failed");
    out
}

/// Creates the SCRAM-SHA-256 and -512 credentials each `user:password` line
/// of `path` lacks, per mechanism: one write per credential, so a write
/// that timed out and committed later, or a crash between the two, may
/// leave a user with one of them, and the next attempt must still add the
/// other (the operator's own user once stayed without SCRAM-SHA-512 for
/// good). A credential that exists is kept, whatever its password. Returns
/// the users given a credential.
///
/// # Errors
/// An unreadable file, a line without `:`, or the store failing.
pub fn bootstrap_users(store: &MetaStore, path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("scram.bootstrap.users.file {}: {e}", path.display()))?;
    let mut created = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((user, password)) = line.split_once(':') else {
            // Never echo the line: it holds a password.
            anyhow::bail!(
                "scram.bootstrap.users.file {}:{}: expected user:password",
                path.display(),
                i + 1
            );
        };
        let user = user.trim();
        if user.is_empty() || password.is_empty() {
            anyhow::bail!(
                "scram.bootstrap.users.file {}:{}: empty user or password",
                path.display(),
                i + 1
            );
        }
        let mut added = false;
        for mech in ScramMechanism::ALL {
            if store.scram_credential(user, mech)?.is_some() {
                continue;
            }
            let salt = random_bytes(32);
            let cred = ScramCredential::from_password(
                mech,
                password.as_bytes(),
                &salt,
                BOOTSTRAP_ITERATIONS,
            );
            store.put_scram_credential(user, mech, &cred)?;
            added = true;
        }
        if added {
            created.push(user.to_string());
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(
            parse_plain(b"\0alice\0secret").unwrap(),
            ("alice", &b"secret"[..])
        );
        assert_eq!(
            parse_plain(b"alice\0alice\0s\0x").unwrap(),
            ("alice", &b"s\0x"[..])
        );
        assert!(parse_plain(b"bob\0alice\0secret").is_err());
        assert!(parse_plain(b"\0alice").is_err());
        assert!(parse_plain(b"\0\0secret").is_err());
        assert!(parse_plain(b"\0alice\0").is_err());
        assert!(parse_plain(b"\0\xff\0x").is_err());
        assert!(parse_plain(b"").is_err());
    }

    #[test]
    fn failure_delay_doubles_per_address_and_resets() {
        let t = FailureTracker::new(Duration::from_millis(100));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.failed(a, now), Duration::from_millis(100));
        assert_eq!(t.failed(a, now), Duration::from_millis(200));
        assert_eq!(t.failed(a, now), Duration::from_millis(400));
        assert_eq!(t.failed(b, now), Duration::from_millis(100));
        for _ in 0..40 {
            t.failed(a, now);
        }
        assert_eq!(t.failed(a, now), MAX_FAILURE_DELAY);
        assert_eq!(
            t.failed(a, now + FAILURE_WINDOW),
            Duration::from_millis(100)
        );
        t.succeeded(a);
        assert_eq!(t.failed(a, now), Duration::from_millis(100));
    }

    #[test]
    fn sessions_on_sasl_listeners_start_unauthenticated() {
        assert!(!Session::new(SecurityProtocol::SaslSsl, None).authenticated);
        let s = Session::new(SecurityProtocol::Ssl, Some(Principal::user("app")));
        assert!(s.authenticated);
        assert_eq!(s.principal.to_string(), "User:app");
        assert_eq!(
            Session::new(SecurityProtocol::Plaintext, None)
                .principal
                .to_string(),
            "User:ANONYMOUS"
        );
    }

    #[test]
    fn bootstrap_creates_missing_users_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(&dir.path().join("meta")).unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "# admins\nadmin:s3cret:with:colons\n").unwrap();
        assert_eq!(bootstrap_users(&store, &file).unwrap(), vec!["admin"]);
        let creds = store.scram_credentials_of("admin").unwrap();
        assert_eq!(creds.len(), 2);
        assert!(
            creds[1]
                .1
                .verify_password(creds[1].0, b"s3cret:with:colons")
        );
        assert!(bootstrap_users(&store, &file).unwrap().is_empty());
        // A user with one mechanism's credential only (the other's write
        // lost): the missing one is added, the existing one kept.
        let (kept_mech, kept) = creds[0].clone();
        let (lost_mech, _) = creds[1].clone();
        assert!(store.delete_scram_credential("admin", lost_mech).unwrap());
        assert_eq!(bootstrap_users(&store, &file).unwrap(), vec!["admin"]);
        let again = store.scram_credentials_of("admin").unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0], (kept_mech, kept));
        assert_eq!(again[1].0, lost_mech);
        assert!(again[1].1.verify_password(lost_mech, b"s3cret:with:colons"));
        std::fs::write(&file, "nocolon\n").unwrap();
        let err = bootstrap_users(&store, &file).unwrap_err().to_string();
        assert!(err.contains(":1:") && !err.contains("nocolon"), "{err}");
    }
}
