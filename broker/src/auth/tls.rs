//! TLS for SSL and SASL_SSL listeners (rustls with the `ring` provider).
//!
//! [`TlsSource`] builds the server configuration from PEM files and hands
//! out acceptors; at most once per `ssl.reload.interval.ms` it compares the
//! files' modification times and sizes with what it loaded and rebuilds when
//! they changed. New connections get the new certificate; a file that fails
//! to load later keeps the old configuration (with a warning), while one
//! that fails at start stops the broker.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use parking_lot::Mutex;
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use super::Principal;
use crate::config::{BrokerConfig, ClientAuth, PrincipalMapping};

/// The files a TLS configuration is built from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

type Stamp = Vec<Option<(SystemTime, u64)>>;

struct Loaded {
    acceptor: TlsAcceptor,
    stamp: Stamp,
    checked: Instant,
}

pub struct TlsSource {
    files: TlsFiles,
    pub mapping: PrincipalMapping,
    interval: Duration,
    current: Mutex<Loaded>,
}

impl TlsSource {
    /// Loads the certificate, key and CA files named in `config`.
    ///
    /// # Errors
    /// A file that is missing or holds no usable certificate/key, a key that
    /// does not match the certificate, or unusable CA certificates.
    pub fn from_config(config: &BrokerConfig) -> anyhow::Result<Self> {
        let (Some(cert), Some(key)) = (&config.ssl_cert_file, &config.ssl_key_file) else {
            bail!("an SSL/SASL_SSL listener needs ssl.cert.file and ssl.key.file");
        };
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: config.ssl_ca_file.clone(),
            client_auth: config.ssl_client_auth()?,
        };
        let stamp = stamp(&files);
        let acceptor = build_acceptor(&files)?;
        Ok(Self {
            files,
            mapping: config.ssl_principal_mapping()?,
            interval: Duration::from_millis(config.ssl_reload_interval_ms),
            current: Mutex::new(Loaded {
                acceptor,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The acceptor for a new connection, rebuilt first if the files changed.
    /// Returns whether it was reloaded.
    pub fn acceptor(&self) -> (TlsAcceptor, bool) {
        let mut cur = self.current.lock();
        let now = Instant::now();
        if now.duration_since(cur.checked) < self.interval {
            return (cur.acceptor.clone(), false);
        }
        cur.checked = now;
        let stamp = stamp(&self.files);
        if stamp == cur.stamp {
            return (cur.acceptor.clone(), false);
        }
        // Remember the stamp either way: a half-written file is retried when
        // it changes again, not on every connection.
        cur.stamp = stamp;
        match build_acceptor(&self.files) {
            Ok(a) => {
                info!(cert = %self.files.cert.display(), "TLS certificate files changed; new connections use the new ones");
                cur.acceptor = a;
                (cur.acceptor.clone(), true)
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "TLS certificate files changed but cannot be loaded; keeping the previous ones");
                (cur.acceptor.clone(), false)
            }
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [Some(&files.cert), Some(&files.key), files.ca.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())))
        })
        .collect()
}

fn read_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("{what} {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{what} {}: invalid PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{what} {}: no certificate found", path.display());
    }
    Ok(certs)
}

fn build_acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&files.cert, "ssl.cert.file")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "ssl.key.file {}: no usable private key",
            files.key.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (files.client_auth, &files.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => bail!("ssl.client.auth needs ssl.ca.file"),
        (mode, Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in read_certs(ca, "ssl.ca.file")? {
                roots.add(c).with_context(|| {
                    format!("ssl.ca.file {}: unusable CA certificate", ca.display())
                })?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if mode == ClientAuth::Requested {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(v.build().context("client certificate verifier")?)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .context("ssl.cert.file / ssl.key.file: the key does not fit the certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The principal a verified client certificate (DER) stands for, by `mapping`.
/// None when the certificate cannot be parsed or has no common name.
pub fn principal_of_certificate(der: &[u8], mapping: PrincipalMapping) -> Option<Principal> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    match mapping {
        PrincipalMapping::CommonName => {
            let cn = subject.iter_common_name().next()?.as_str().ok()?;
            (!cn.is_empty()).then(|| Principal::user(cn))
        }
        PrincipalMapping::DistinguishedName => {
            // RFC 4514 order (most specific first), as Java's X500Principal
            // prints it: `CN=app,OU=x,O=y,C=US`.
            let registry = x509_parser::objects::oid_registry();
            let mut rdns = Vec::new();
            for rdn in subject.iter_rdn() {
                let mut parts = Vec::new();
                for attr in rdn.iter() {
                    let name = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map(str::to_string)
                        .unwrap_or_else(|_| attr.attr_type().to_id_string());
                    let value = attr.as_str().ok()?;
                    parts.push(format!("{name}={}", escape_dn_value(value)));
                }
                rdns.push(parts.join("+"));
            }
            rdns.reverse();
            let dn = rdns.join(",");
            (!dn.is_empty()).then(|| Principal::user(dn))
        }
    }
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    /// Self-signed, subject `C=US, O=acme\, inc, CN=app` (made with Python's
    /// `cryptography`).
    const CERT: &str = "MIIBSjCB8aADAgECAgEBMAoGCCqGSM49BAMCMC8xCzAJBgNVBAYTAlVTMRIwEAYDVQQKDAlhY21lLCBpbmMxDDAKBgNVBAMMA2FwcDAeFw0yNjAxMDEwMDAwMDBaFw0zNTEyMzAwMDAwMDBaMC8xCzAJBgNVBAYTAlVTMRIwEAYDVQQKDAlhY21lLCBpbmMxDDAKBgNVBAMMA2FwcDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLlgrt//atPJOVoqJBb32OiL1vOWQ4xcR3CmuPIqpwz+6z/Xd8ANqbuSV4Zb8Pg9OrEvEjpYmosw8aLEaGm/99UwCgYIKoZIzj0EAwIDSAAwRQIgbVF5uHT9N9JcqdYyj4mRoZzG8iW6oxbcswreURh9MoECIQCiMqPVU01CJnpadmWfrJxS15wsJWL9ToqnARQyIEL0tA==";

    #[test]
    fn client_certificate_subject_maps_to_a_principal() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(CERT)
            .unwrap();
        let cn = principal_of_certificate(&der, PrincipalMapping::CommonName).unwrap();
        assert_eq!(cn.to_string(), "User:app");
        let dn = principal_of_certificate(&der, PrincipalMapping::DistinguishedName).unwrap();
        assert_eq!(dn.to_string(), "User:CN=app,O=acme\\, inc,C=US");
        assert!(principal_of_certificate(b"not der", PrincipalMapping::CommonName).is_none());
    }

    #[test]
    fn missing_or_invalid_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "hello\n").unwrap();
        let files = TlsFiles {
            cert: junk.clone(),
            key: dir.path().join("absent.key"),
            ca: None,
            client_auth: ClientAuth::None,
        };
        let err = format!("{:#}", build_acceptor(&files).err().unwrap());
        assert!(
            err.contains("ssl.cert.file") && err.contains("no certificate"),
            "{err}"
        );
    }
}
