//! The operator's certificate authority: a cluster CA (self-signed, made
//! once per KafkaCluster) and the certificates it issues, brokers' server
//! certificates and TLS Users' client certificates. Pure functions of the
//! PEM text and the current time, with [`rcgen`] to make certificates and
//! [`x509_parser`] to read back what a Secret holds; nothing here knows
//! Kubernetes.
//!
//! Keys are ECDSA P-256 (PKCS#8 PEM), signatures ECDSA-SHA256: what rustls
//! (the broker) and OpenSSL (librdkafka, Java) all take.
//!
//! | certificate | validity | renewed |
//! |---|---|---|
//! | cluster CA | [`CA_VALIDITY_DAYS`] | never by the operator (see docs/operator.md) |
//! | broker, user | [`LEAF_VALIDITY_DAYS`] | when less than [`RENEW_BEFORE_DAYS`] are left, its names changed, its key is not its own, or the CA that signed it is not the cluster's |

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// How long the cluster CA is valid: ten years.
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long a broker or user certificate is valid.
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// A certificate with less than this left is issued anew.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// How far back `notBefore` is set, for clocks a little behind the operator's.
const BACKDATE: Duration = Duration::hours(1);

/// Something went wrong making or reading a certificate.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PkiError {
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("the cluster CA cannot be used: {0}")]
    BadCa(String),
}

fn generate(e: impl std::fmt::Display) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// A certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never goes into logs.
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A broker's: TLS server authentication.
    Server,
    /// A user's: TLS client authentication.
    Client,
}

/// The certificate a broker or user should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    /// Subject common name (a TLS user's principal comes from it).
    pub common_name: String,
    /// Subject alternative names: DNS names, or IP addresses written as such.
    pub sans: Vec<String>,
    pub usage: Usage,
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Generate("no random numbers".into()))?;
    // A positive INTEGER without a leading zero byte.
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

/// A new self-signed CA named `common_name` (`O=skiff`), valid from `now`
/// for [`CA_VALIDITY_DAYS`].
///
/// # Errors
/// Key or certificate generation failed.
pub fn new_ca(common_name: &str, now: OffsetDateTime) -> Result<KeyedCert, PkiError> {
    let key = KeyPair::generate().map_err(generate)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "skiff");
    dn.push(DnType::CommonName, common_name);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    p.serial_number = Some(random_serial()?);
    let cert = p.self_signed(&key).map_err(generate)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Checks that `ca` is a usable CA (its certificate parses and its key
/// signs); the operator never replaces a CA it cannot use, it reports it.
///
/// # Errors
/// What is wrong with it.
pub fn check_ca(ca: &KeyedCert) -> Result<(), PkiError> {
    issuer(ca).map(|_| ())
}

fn issuer(ca: &KeyedCert) -> Result<Issuer<'static, KeyPair>, PkiError> {
    let key = KeyPair::from_pem(&ca.key_pem).map_err(|e| PkiError::BadCa(format!("key: {e}")))?;
    Issuer::from_ca_cert_pem(&ca.cert_pem, key)
        .map_err(|e| PkiError::BadCa(format!("certificate: {e}")))
}

fn san(s: &str) -> Result<SanType, PkiError> {
    Ok(match s.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(s.try_into().map_err(generate)?),
    })
}

/// A new key and a certificate for `spec` signed by `ca`, valid from `now`
/// for [`LEAF_VALIDITY_DAYS`] (never beyond the CA's own expiry).
///
/// # Errors
/// An unusable CA, or a name that cannot be a SAN.
pub fn issue(ca: &KeyedCert, spec: &LeafSpec, now: OffsetDateTime) -> Result<KeyedCert, PkiError> {
    let issuer = issuer(ca)?;
    let ca_not_after = parse(&ca.cert_pem).map_err(PkiError::BadCa)?.not_after;
    let key = KeyPair::generate().map_err(generate)?;
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, spec.common_name.as_str());
    p.distinguished_name = dn;
    p.subject_alt_names = spec.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![match spec.usage {
        Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    p.use_authority_key_identifier_extension = true;
    p.not_before = now - BACKDATE;
    p.not_after = (now + Duration::days(LEAF_VALIDITY_DAYS)).min(ca_not_after);
    p.serial_number = Some(random_serial()?);
    let cert = p.signed_by(&key, &issuer).map_err(generate)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a PEM certificate says, as far as renewal cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: Option<String>,
    /// DNS names as written, IP addresses in their usual text form.
    pub sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Subject and issuer (RFC 4514), for messages and tests.
    pub subject: String,
    pub issuer: String,
}

fn with_cert<T>(
    pem: &str,
    f: impl FnOnce(&X509Certificate<'_>) -> Result<T, String>,
) -> Result<T, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not a certificate: {e}"))?;
    f(&cert)
}

/// Reads a PEM certificate.
///
/// # Errors
/// Not a PEM X.509 certificate.
pub fn parse(pem: &str) -> Result<CertInfo, String> {
    with_cert(pem, |c| {
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = c.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push((*d).to_string()),
                    GeneralName::IPAddress(b) => {
                        let ip: Option<std::net::IpAddr> = match b.len() {
                            4 => <[u8; 4]>::try_from(*b).ok().map(Into::into),
                            16 => <[u8; 16]>::try_from(*b).ok().map(Into::into),
                            _ => None,
                        };
                        if let Some(ip) = ip {
                            sans.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(CertInfo {
            common_name: c
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(String::from),
            sans,
            not_before: c.validity().not_before.to_datetime(),
            not_after: c.validity().not_after.to_datetime(),
            subject: c.subject().to_string(),
            issuer: c.issuer().to_string(),
        })
    })
}

/// Whether `cert_pem` was signed by `ca_pem`'s key (and names it as issuer).
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    with_cert(ca_pem, |ca| {
        with_cert(cert_pem, |c| {
            Ok(c.issuer() == ca.subject() && c.verify_signature(Some(ca.public_key())).is_ok())
        })
    })
    .unwrap_or(false)
}

/// Whether `key_pem` is the private key of `cert_pem` (a broker refuses to
/// start with a key that does not fit its certificate).
pub fn key_fits(cert_pem: &str, key_pem: &str) -> bool {
    use rcgen::PublicKeyData as _;
    let Ok(key) = KeyPair::from_pem(key_pem) else {
        return false;
    };
    with_cert(cert_pem, |c| {
        Ok(c.public_key().raw == key.subject_public_key_info())
    })
    .unwrap_or(false)
}

/// Why a held certificate must be issued anew, or `None` when it may stay:
/// missing, unreadable, with a key that is not its own, not signed by `ca`, for another name, with other
/// SANs, or with less than [`RENEW_BEFORE_DAYS`] left at `now`.
pub fn renewal_reason(
    ca_pem: &str,
    held: Option<&KeyedCert>,
    spec: &LeafSpec,
    now: OffsetDateTime,
) -> Option<&'static str> {
    let Some(held) = held else {
        return Some("new");
    };
    let Ok(info) = parse(&held.cert_pem) else {
        return Some("unreadable");
    };
    if !key_fits(&held.cert_pem, &held.key_pem) {
        return Some("key-mismatch");
    }
    if !signed_by(&held.cert_pem, ca_pem) {
        return Some("other-ca");
    }
    if info.common_name.as_deref() != Some(spec.common_name.as_str()) {
        return Some("name-changed");
    }
    let mut have = info.sans.clone();
    have.sort();
    have.dedup();
    let mut want = spec.sans.clone();
    want.sort();
    want.dedup();
    if have != want {
        return Some("names-changed");
    }
    if info.not_after - now < Duration::days(RENEW_BEFORE_DAYS) {
        return Some("expiring");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn server(sans: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: "kafka-0".into(),
            sans: sans.iter().map(|s| (*s).to_string()).collect(),
            usage: Usage::Server,
        }
    }

    #[test]
    fn a_ca_is_self_signed_for_ten_years() {
        let t = now();
        let ca = new_ca("skiff kafka/kafka", t).unwrap();
        let info = parse(&ca.cert_pem).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("skiff kafka/kafka"));
        assert_eq!(info.subject, info.issuer);
        assert!(signed_by(&ca.cert_pem, &ca.cert_pem));
        let days = (info.not_after - t).whole_days();
        assert!(
            (CA_VALIDITY_DAYS - 1..=CA_VALIDITY_DAYS).contains(&days),
            "{days}"
        );
        check_ca(&ca).unwrap();
        assert!(ca.key_pem.contains("BEGIN PRIVATE KEY"));
    }

    #[test]
    fn a_leaf_has_its_name_sans_and_validity_and_is_signed_by_the_ca() {
        let t = now();
        let ca = new_ca("ca", t).unwrap();
        let spec = server(&[
            "kafka-0.kafka-brokers.kafka.svc.cluster.local",
            "203.0.113.7",
        ]);
        let leaf = issue(&ca, &spec, t).unwrap();
        let info = parse(&leaf.cert_pem).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("kafka-0"));
        assert_eq!(info.sans, spec.sans);
        assert_eq!(info.issuer, parse(&ca.cert_pem).unwrap().subject);
        assert!(signed_by(&leaf.cert_pem, &ca.cert_pem));
        assert!(info.not_before < t);
        assert_eq!((info.not_after - t).whole_days(), LEAF_VALIDITY_DAYS - 1);
        assert_eq!(renewal_reason(&ca.cert_pem, Some(&leaf), &spec, t), None);
        // Another CA's certificate is not taken for this one's.
        let other = new_ca("ca", t).unwrap();
        assert!(!signed_by(&leaf.cert_pem, &other.cert_pem));
        assert_eq!(
            renewal_reason(&other.cert_pem, Some(&leaf), &spec, t),
            Some("other-ca")
        );
    }

    #[test]
    fn renewal_before_expiry_and_when_names_change() {
        let t = now();
        let ca = new_ca("ca", t).unwrap();
        let spec = server(&["a.example", "b.example"]);
        let leaf = issue(&ca, &spec, t).unwrap();
        assert_eq!(renewal_reason(&ca.cert_pem, None, &spec, t), Some("new"));
        // SANs compare as a set.
        assert_eq!(
            renewal_reason(
                &ca.cert_pem,
                Some(&leaf),
                &server(&["b.example", "a.example"]),
                t
            ),
            None
        );
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&leaf), &server(&["a.example"]), t),
            Some("names-changed")
        );
        let mut renamed = spec.clone();
        renamed.common_name = "kafka-1".into();
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&leaf), &renamed, t),
            Some("name-changed")
        );
        let late = t + Duration::days(LEAF_VALIDITY_DAYS - RENEW_BEFORE_DAYS + 1);
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&leaf), &spec, late),
            Some("expiring")
        );
        let early = t + Duration::days(LEAF_VALIDITY_DAYS - RENEW_BEFORE_DAYS - 1);
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&leaf), &spec, early),
            None
        );
        let broken = KeyedCert {
            cert_pem: "garbage".into(),
            key_pem: leaf.key_pem.clone(),
        };
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&broken), &spec, t),
            Some("unreadable")
        );
        // A key that is not the certificate's (a Secret edited by hand).
        let other = issue(&ca, &spec, t).unwrap();
        assert!(key_fits(&leaf.cert_pem, &leaf.key_pem));
        assert!(!key_fits(&leaf.cert_pem, &other.key_pem));
        let mixed = KeyedCert {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&mixed), &spec, t),
            Some("key-mismatch")
        );
        let no_key = KeyedCert {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: String::new(),
        };
        assert_eq!(
            renewal_reason(&ca.cert_pem, Some(&no_key), &spec, t),
            Some("key-mismatch")
        );
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() {
        let t = now();
        let ca = new_ca("ca", t).unwrap();
        // Issued nine and a half years later: the CA has half a year left.
        let later = t + Duration::days(CA_VALIDITY_DAYS - 180);
        let leaf = issue(&ca, &server(&["x.example"]), later).unwrap();
        let (leaf, ca) = (parse(&leaf.cert_pem).unwrap(), parse(&ca.cert_pem).unwrap());
        assert_eq!(leaf.not_after, ca.not_after);
    }

    #[test]
    fn an_unusable_ca_is_reported_not_replaced() {
        let t = now();
        let ca = new_ca("ca", t).unwrap();
        let other = new_ca("ca", t).unwrap();
        let bad = KeyedCert {
            cert_pem: ca.cert_pem.clone(),
            key_pem: "nope".into(),
        };
        assert!(matches!(check_ca(&bad), Err(PkiError::BadCa(_))));
        assert!(matches!(
            issue(&bad, &server(&["x.example"]), t),
            Err(PkiError::BadCa(_))
        ));
        // A key that is not the certificate's signs nothing a client trusts.
        let mixed = KeyedCert {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem,
        };
        let leaf = issue(&mixed, &server(&["x.example"]), t).unwrap();
        assert!(!signed_by(&leaf.cert_pem, &ca.cert_pem));
    }

    #[test]
    fn a_client_certificate_is_for_client_auth_only() {
        let t = now();
        let ca = new_ca("ca", t).unwrap();
        let leaf = issue(
            &ca,
            &LeafSpec {
                common_name: "team-a.alice".into(),
                sans: vec![],
                usage: Usage::Client,
            },
            t,
        )
        .unwrap();
        let eku = with_cert(&leaf.cert_pem, |c| {
            let e = c.extended_key_usage().unwrap().unwrap().value.clone();
            Ok((e.client_auth, e.server_auth))
        })
        .unwrap();
        assert_eq!(eku, (true, false));
        assert_eq!(
            parse(&leaf.cert_pem).unwrap().common_name.as_deref(),
            Some("team-a.alice")
        );
    }
}
