//! Operator-managed TLS: what a cluster with `tls: true` listeners gets.
//!
//! - **Cluster CA**: the Secret `<name>-cluster-ca` (keys [`CA_CERT_KEY`],
//!   [`CA_KEY_KEY`]), owned by the KafkaCluster, made once and never
//!   replaced by the operator while it exists (see [`crate::pki`]).
//! - **Broker certificates**: the Secret `<name>-broker-certs` holding, per
//!   broker id, `broker-<id>.crt` and `broker-<id>.key` signed by the CA
//!   (SANs: [`broker_sans`]), and `ca.crt`. Every pod mounts the whole
//!   Secret at [`TLS_MOUNT`] and picks its own files through Kubernetes'
//!   `$(SKIFF_NODE_ID)` expansion in `SKIFF_SSL_CERT_FILE` and
//!   `SKIFF_SSL_KEY_FILE`, as it picks its advertised-addresses file: no
//!   broker change, and a new broker's key is in the Secret before its pod
//!   exists. [`broker_secret_data`] decides what the Secret holds next: a
//!   certificate is kept until it must be renewed. The broker reloads the
//!   PEM files for new connections when they change, so a renewal restarts
//!   nothing.
//! - **Client authentication** is one broker-wide setting
//!   (`ssl.client.auth`, one certificate for every TLS listener):
//!   [`client_auth`] is `required` when every TLS listener is `mtls`,
//!   `requested` when `mtls` listeners share the brokers with other TLS
//!   listeners (a `required` would refuse their clients without
//!   certificates), `none` without `mtls`. The CA is the trust anchor, and
//!   `ssl.principal.mapping=CN`, so a TLS User's certificate (CN = its Kafka
//!   name) is the principal `User:<name>`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, ListenerAuthentication};
use time::OffsetDateTime;

use super::{RenderContext, RenderError, external, identity, names, pod_host};
use crate::pki::{self, KeyedCert, LeafSpec, PkiError, Usage};

/// Where the broker-certificates Secret is mounted in broker pods.
pub const TLS_MOUNT: &str = "/etc/skiff-tls";
/// The CA certificate's key (in both Secrets, and in Users' Secrets).
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA private key's key in the cluster-CA Secret.
pub const CA_KEY_KEY: &str = "ca.key";
/// Settings the operator renders for a cluster with TLS listeners;
/// `spec.config` may not set them there.
pub const TLS_OWNED_SETTINGS: &[&str] = &[
    "ssl.cert.file",
    "ssl.key.file",
    "ssl.ca.file",
    "ssl.client.auth",
    "ssl.principal.mapping",
];

/// Whether any listener uses TLS (the operator then manages certificates).
pub fn has_tls(kc: &KafkaCluster) -> bool {
    kc.spec.listeners.iter().any(|l| l.tls)
}

/// Whether any listener authenticates clients by certificate.
pub fn has_mtls(kc: &KafkaCluster) -> bool {
    kc.spec
        .listeners
        .iter()
        .any(|l| l.tls && l.authentication == ListenerAuthentication::Mtls)
}

/// The brokers' `ssl.client.auth` (see the module documentation).
pub fn client_auth(kc: &KafkaCluster) -> &'static str {
    let tls: Vec<_> = kc.spec.listeners.iter().filter(|l| l.tls).collect();
    let mtls = tls
        .iter()
        .filter(|l| l.authentication == ListenerAuthentication::Mtls)
        .count();
    match mtls {
        0 => "none",
        n if n == tls.len() => "required",
        _ => "requested",
    }
}

/// The properties a TLS cluster's brokers get in `server.properties` (the
/// certificate and key paths are per pod: environment, see the
/// StatefulSet).
pub fn properties(kc: &KafkaCluster) -> Vec<(&'static str, String)> {
    vec![
        ("ssl.ca.file", format!("{TLS_MOUNT}/{CA_CERT_KEY}")),
        ("ssl.client.auth", client_auth(kc).to_string()),
        ("ssl.principal.mapping", "CN".to_string()),
    ]
}

/// The Secret key of broker `id`'s certificate.
pub fn broker_cert_key(id: i32) -> String {
    format!("broker-{id}.crt")
}

/// The Secret key of broker `id`'s private key.
pub fn broker_key_key(id: i32) -> String {
    format!("broker-{id}.key")
}

/// The CA's subject common name for a cluster.
pub fn ca_common_name(kc: &KafkaCluster) -> Result<String, RenderError> {
    let (cluster, ns) = identity(kc)?;
    Ok(format!("skiff cluster CA {ns}/{cluster}"))
}

/// The names a client may reach broker `id` by, which its certificate
/// covers: its pod under the headless Service (FQDN, `.svc` and `<ns>`
/// forms), the bootstrap Service (short, `<ns>`, `.svc`, FQDN), and the
/// addresses its external listeners were given so far: each LoadBalancer
/// listener's per-broker and bootstrap ingress (IP or hostname) from
/// `services`. A NodePort listener's node address is not covered (it is the
/// node's, and changes with the pod's node).
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn broker_sans(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    id: i32,
    services: &[Service],
) -> Result<Vec<String>, RenderError> {
    let (cluster, ns) = identity(kc)?;
    let fqdn = pod_host(cluster, ns, id, ctx);
    let short_pod = format!(
        "{}-{id}.{}.{ns}",
        names::stateful_set(cluster),
        names::headless_service(cluster)
    );
    let bootstrap = names::bootstrap_service(cluster);
    let mut out = vec![
        fqdn,
        format!("{short_pod}.svc"),
        short_pod,
        format!("{bootstrap}.{ns}.svc.{}", ctx.cluster_domain),
        format!("{bootstrap}.{ns}.svc"),
        format!("{bootstrap}.{ns}"),
        bootstrap,
    ];
    for l in kc
        .spec
        .listeners
        .iter()
        .filter(|l| l.exposure == Exposure::LoadBalancer)
    {
        for svc in [
            names::broker_service(cluster, id, &l.name),
            names::external_bootstrap_service(cluster, &l.name),
        ] {
            let found = services
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(svc.as_str()));
            if let Some(external::Assigned::LoadBalancer { host, .. }) =
                found.and_then(|s| external::assigned(s, l))
                && !out.contains(&host)
            {
                out.push(host);
            }
        }
    }
    Ok(out)
}

/// The certificate broker `id` should hold.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn broker_leaf(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    id: i32,
    services: &[Service],
) -> Result<LeafSpec, RenderError> {
    let (cluster, _) = identity(kc)?;
    Ok(LeafSpec {
        common_name: format!("{}-{id}", names::stateful_set(cluster)),
        sans: broker_sans(kc, ctx, id, services)?,
        usage: Usage::Server,
    })
}

/// What the broker-certificates Secret holds next.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerCerts {
    /// The Secret's data.
    pub data: BTreeMap<String, String>,
    /// Brokers whose certificate was issued now, with why
    /// ([`pki::renewal_reason`]).
    pub issued: Vec<(i32, &'static str)>,
}

impl BrokerCerts {
    /// Whether the Secret must be written (something issued, the CA or the
    /// set of brokers changed).
    pub fn differs_from(&self, held: &BTreeMap<String, String>) -> bool {
        &self.data != held
    }
}

/// The broker-certificates Secret's data for brokers `0..brokers`, from
/// what it holds (`held`): each broker keeps its certificate and key until
/// [`pki::renewal_reason`] says otherwise; keys of brokers that are gone
/// are dropped; `ca.crt` is the CA's.
///
/// # Errors
/// The CA cannot sign, or a name cannot be a SAN.
pub fn broker_secret_data(
    ca: &KeyedCert,
    wanted: &BTreeMap<i32, LeafSpec>,
    held: &BTreeMap<String, String>,
    now: OffsetDateTime,
) -> Result<BrokerCerts, PkiError> {
    let mut out = BrokerCerts::default();
    out.data
        .insert(CA_CERT_KEY.to_string(), ca.cert_pem.clone());
    for (id, spec) in wanted {
        let (ck, kk) = (broker_cert_key(*id), broker_key_key(*id));
        let current = match (held.get(&ck), held.get(&kk)) {
            (Some(c), Some(k)) => Some(KeyedCert {
                cert_pem: c.clone(),
                key_pem: k.clone(),
            }),
            _ => None,
        };
        let cert = match pki::renewal_reason(&ca.cert_pem, current.as_ref(), spec, now) {
            None => current.unwrap_or_else(|| unreachable!("kept only when held")),
            Some(reason) => {
                out.issued.push((*id, reason));
                pki::issue(ca, spec, now)?
            }
        };
        out.data.insert(ck, cert.cert_pem);
        out.data.insert(kk, cert.key_pem);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServiceSpec, ServiceStatus,
    };

    fn kc(listeners: &str) -> KafkaCluster {
        let mut kc: KafkaCluster = serde_yaml::from_str(&format!(
            "apiVersion: skiff.dev/v1alpha1\nkind: KafkaCluster\nmetadata: {{name: kafka, namespace: data}}\nspec:\n  replicas: 2\n  listeners: {listeners}\n"
        ))
        .unwrap();
        kc.metadata.uid = Some("u".into());
        kc
    }

    #[test]
    fn client_auth_is_required_only_when_every_tls_listener_is_mtls() {
        assert_eq!(
            client_auth(&kc(
                "[{name: plain, port: 9092}, {name: tls, port: 9093, tls: true}]"
            )),
            "none"
        );
        let only_mtls = kc(
            "[{name: plain, port: 9092}, {name: m, port: 9093, tls: true, authentication: mtls}]",
        );
        assert_eq!(client_auth(&only_mtls), "required");
        assert!(has_mtls(&only_mtls) && has_tls(&only_mtls));
        assert_eq!(
            client_auth(&kc(
                "[{name: s, port: 9092, tls: true, authentication: scram}, {name: m, port: 9093, tls: true, authentication: mtls}]"
            )),
            "requested"
        );
        let plain = kc("[{name: plain, port: 9092}]");
        assert!(!has_tls(&plain) && !has_mtls(&plain));
    }

    #[test]
    fn a_tls_cluster_owns_the_ssl_settings() {
        let mut k = kc("[{name: m, port: 9093, tls: true, authentication: mtls}]");
        let props = crate::render::config::properties(&k).unwrap();
        assert!(props.contains(
            "ssl.ca.file=/etc/skiff-tls/ca.crt\nssl.client.auth=required\nssl.principal.mapping=CN\n"
        ));
        k.spec
            .config
            .insert("ssl.principal.mapping".into(), "DN".into());
        assert_eq!(
            crate::render::config::properties(&k),
            Err(RenderError::OperatorOwnedSetting {
                key: "ssl.principal.mapping".into()
            })
        );
        // Without a TLS listener nothing is the operator's.
        let mut plain = kc("[{name: p, port: 9092}]");
        plain
            .spec
            .config
            .insert("ssl.client.auth".into(), "none".into());
        let props = crate::render::config::properties(&plain).unwrap();
        assert!(!props.contains("ssl.ca.file"));
    }

    fn lb_service(name: &str, ip: &str) -> Service {
        Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some(ip.into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn broker_sans_cover_the_pod_the_bootstrap_and_known_external_addresses() {
        let k = kc(
            "[{name: m, port: 9093, tls: true, authentication: mtls}, {name: lb, port: 9094, tls: true, exposure: LoadBalancer}]",
        );
        let ctx = RenderContext::default();
        let sans = broker_sans(&k, &ctx, 1, &[]).unwrap();
        assert_eq!(
            sans,
            [
                "kafka-1.kafka-brokers.data.svc.cluster.local",
                "kafka-1.kafka-brokers.data.svc",
                "kafka-1.kafka-brokers.data",
                "kafka-bootstrap.data.svc.cluster.local",
                "kafka-bootstrap.data.svc",
                "kafka-bootstrap.data",
                "kafka-bootstrap",
            ]
        );
        let services = [
            lb_service("kafka-1-lb", "203.0.113.11"),
            lb_service("kafka-lb-bootstrap", "203.0.113.100"),
            lb_service("kafka-0-lb", "203.0.113.10"),
        ];
        let sans = broker_sans(&k, &ctx, 1, &services).unwrap();
        assert_eq!(&sans[7..], ["203.0.113.11", "203.0.113.100"]);
    }

    #[test]
    fn the_secret_keeps_good_certificates_and_issues_the_rest() {
        let now = OffsetDateTime::now_utc();
        let k = kc("[{name: m, port: 9093, tls: true, authentication: mtls}]");
        let ctx = RenderContext::default();
        let ca = pki::new_ca("ca", now).unwrap();
        let wanted: BTreeMap<i32, LeafSpec> = (0..2)
            .map(|id| (id, broker_leaf(&k, &ctx, id, &[]).unwrap()))
            .collect();
        let first = broker_secret_data(&ca, &wanted, &BTreeMap::new(), now).unwrap();
        assert_eq!(first.issued, vec![(0, "new"), (1, "new")]);
        assert_eq!(
            first.data.keys().collect::<Vec<_>>(),
            [
                "broker-0.crt",
                "broker-0.key",
                "broker-1.crt",
                "broker-1.key",
                "ca.crt"
            ]
        );
        assert!(pki::signed_by(&first.data["broker-1.crt"], &ca.cert_pem));
        assert_eq!(
            pki::parse(&first.data["broker-1.crt"])
                .unwrap()
                .common_name
                .as_deref(),
            Some("kafka-1")
        );
        // Nothing to do a moment later.
        let again = broker_secret_data(&ca, &wanted, &first.data, now).unwrap();
        assert!(again.issued.is_empty() && !again.differs_from(&first.data));
        // A new address for broker 1 reissues broker 1 only; a scale-down
        // drops the removed broker's keys.
        let mut grown = wanted.clone();
        grown.get_mut(&1).unwrap().sans.push("203.0.113.11".into());
        let next = broker_secret_data(&ca, &grown, &first.data, now).unwrap();
        assert_eq!(next.issued, vec![(1, "names-changed")]);
        assert_eq!(next.data["broker-0.crt"], first.data["broker-0.crt"]);
        assert_ne!(next.data["broker-1.key"], first.data["broker-1.key"]);
        let shrunk: BTreeMap<i32, LeafSpec> = wanted.into_iter().take(1).collect();
        let small = broker_secret_data(&ca, &shrunk, &first.data, now).unwrap();
        assert!(small.issued.is_empty() && small.differs_from(&first.data));
        assert!(!small.data.contains_key("broker-1.crt"));
        // Renewed before expiry.
        let late = now + time::Duration::days(pki::LEAF_VALIDITY_DAYS - 10);
        let renewed = broker_secret_data(&ca, &shrunk, &small.data, late).unwrap();
        assert_eq!(renewed.issued, vec![(0, "expiring")]);
    }
}
