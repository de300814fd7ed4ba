//! Pure renderers: a `KafkaCluster` in, the Kubernetes objects that run it
//! out. Nothing here talks to an API server; a controller applies the result
//! with server-side apply under one field manager.
//!
//! | function | object |
//! |---|---|
//! | [`config::config_map`] | ConfigMap `<name>-config` with `server.properties` (and, per broker, the external addresses of [`external`]; per node, the racks of [`rack`]) |
//! | [`services::headless_service`] | Service `<name>-brokers` (headless; pod DNS names) |
//! | [`services::bootstrap_service`] | Service `<name>-bootstrap` (ClusterIP, every listener) |
//! | [`services::external_services`] | per external listener: `<name>-<listener>-bootstrap` and one `<name>-<id>-<listener>` per broker |
//! | [`stateful_set::stateful_set`] | StatefulSet `<name>` (Parallel, OnDelete): node ids, metadata voters, cluster id |
//! | [`policy::pod_disruption_budget`] | PodDisruptionBudget `<name>` (maxUnavailable 1) |
//! | [`policy::service_account`] | ServiceAccount `<name>-broker` |
//! | [`policy::horizontal_pod_autoscaler`] | HorizontalPodAutoscaler `<name>` targeting the KafkaCluster's `/scale` |
//!
//! With a `tls: true` listener the StatefulSet also mounts the Secret
//! `<name>-broker-certs`, whose content (certificates from the cluster CA)
//! the controller decides with [`tls`].
//!
//! Every object carries the common `app.kubernetes.io/*` labels and a
//! controller owner reference to the KafkaCluster, so deleting the cluster
//! deletes them.

pub mod config;
pub mod external;
pub mod peer_token;
pub mod policy;
pub mod rack;
pub mod services;
pub mod stateful_set;
pub mod tls;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{
    Exposure, HTTP_PORT, Listener, ListenerAddress, ListenerAuthentication, OPERATOR_PORT, RPC_PORT,
};

/// Name of the field manager the operator applies with.
pub const FIELD_MANAGER: &str = "skiff-operator";
/// Pod-template annotation holding a hash of the broker properties: a config
/// change changes the template, so the StatefulSet gets a new revision and
/// the operator's roll sees which pods are out of date.
pub const CONFIG_HASH_ANNOTATION: &str = "skiff.dev/config-hash";
/// Where the broker's volume is mounted.
pub const DATA_MOUNT: &str = "/var/lib/skiff";
/// `--data-dir`: a directory inside the volume, so a filesystem's own entries
/// (`lost+found`) are not in the broker's data directory.
pub const DATA_DIR: &str = "/var/lib/skiff/data";
/// Where the ConfigMap is mounted.
pub const CONFIG_MOUNT: &str = "/etc/skiff";
/// The properties file's key in the ConfigMap.
pub const PROPERTIES_KEY: &str = "server.properties";
/// The Kafka name of the operator's own listener (see [`OPERATOR_PORT`]).
pub const OPERATOR_LISTENER: &str = "OPERATOR";
/// The SCRAM user the operator makes its admin calls as: created on the
/// brokers from the cluster's operator Secret and made a super user.
pub const OPERATOR_USER: &str = "skiff-operator";
/// Where the operator Secret is mounted in broker pods.
pub const OPERATOR_SECRET_MOUNT: &str = "/etc/skiff-operator";
/// The operator Secret's key holding the brokers' bootstrap users file
/// (`skiff-operator:<password>`).
pub const OPERATOR_USERS_KEY: &str = "bootstrap-users";
/// The operator Secret's key holding the password alone.
pub const OPERATOR_PASSWORD_KEY: &str = "password";

/// What the renderers need besides the KafkaCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderContext {
    /// Broker image when the cluster names none.
    pub default_image: String,
    /// The Kubernetes cluster's DNS domain.
    pub cluster_domain: String,
}

impl Default for RenderContext {
    fn default() -> Self {
        Self {
            default_image: format!(
                "ghcr.io/skiff-dev/skiff-broker:{}",
                env!("CARGO_PKG_VERSION")
            ),
            cluster_domain: "cluster.local".to_string(),
        }
    }
}

/// Annotation on the StatefulSet recording how many metadata voters the
/// cluster was created with (see [`Topology`]), so a re-render keeps them.
pub const METADATA_VOTERS_ANNOTATION: &str = "skiff.dev/metadata-voters";
/// How many brokers a new cluster makes metadata Raft voters (at most).
pub const DEFAULT_METADATA_VOTERS: i32 = 3;

/// How many brokers run and which of them vote in the metadata Raft group.
///
/// The voters are the ordinals `0..voters`. Their number is fixed when the
/// cluster is created and must never change afterwards: a broker that finds
/// itself listed as a voter with an empty disk would, after waiting for a
/// leader, initialize a Raft group of its own. So a scale-up keeps the
/// voters and the new brokers join as learners; [`Topology::decide`] reads
/// the recorded count back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Broker pods to run.
    pub brokers: i32,
    /// Metadata voters: the brokers with ordinals `0..voters`.
    pub voters: i32,
}

impl Topology {
    /// The topology of a new cluster of `brokers`: the first
    /// min(3, brokers) are voters.
    pub fn new(brokers: i32) -> Self {
        Self {
            brokers,
            voters: brokers.clamp(1, DEFAULT_METADATA_VOTERS),
        }
    }

    /// The topology of a cluster that may already run: the voter count
    /// recorded on its StatefulSet (annotation [`METADATA_VOTERS_ANNOTATION`])
    /// or, when that is gone (a StatefulSet deleted with `--cascade=orphan`
    /// to change an immutable field), in its status; only a cluster with
    /// neither gets the voters of a new one.
    pub fn decide(
        brokers: i32,
        existing: Option<&StatefulSet>,
        status: Option<&skiff_crds::KafkaClusterStatus>,
    ) -> Self {
        let recorded = existing
            .and_then(|s| s.metadata.annotations.as_ref())
            .and_then(|a| a.get(METADATA_VOTERS_ANNOTATION))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|v| *v >= 1)
            .or_else(|| {
                status
                    .map(|s| s.metadata_voters.len())
                    .filter(|n| *n >= 1)
                    .and_then(|n| i32::try_from(n).ok())
            });
        match recorded {
            Some(voters) => Self { brokers, voters },
            None => Self::new(brokers),
        }
    }

    /// The voters' node ids.
    pub fn voter_ids(&self) -> Vec<i32> {
        (0..self.voters).collect()
    }
}

/// The cluster id every broker of `kc` is started with: derived from the
/// KafkaCluster's namespace and name (not its uid), so it never changes on a
/// re-render and a KafkaCluster re-created under the same name adopts the
/// volumes a deleted one retained (`storage.deleteClaim: false`) instead of
/// the brokers refusing them as another cluster's data.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn cluster_id(kc: &KafkaCluster) -> Result<String, RenderError> {
    let (name, ns) = identity(kc)?;
    // FNV-1a (64 bits): stable across Rust versions; `/` cannot occur in
    // either part, so distinct pairs hash distinct inputs.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ns.bytes().chain([b'/']).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Ok(format!("skiff-{h:016x}"))
}

/// The DNS name of broker pod `ordinal` under the headless Service.
pub fn pod_host(cluster: &str, ns: &str, ordinal: i32, ctx: &RenderContext) -> String {
    format!(
        "{}-{ordinal}.{}.{ns}.svc.{}",
        names::stateful_set(cluster),
        names::headless_service(cluster),
        ctx.cluster_domain
    )
}

/// The brokers' `--controller-quorum-voters`: `id@<pod>.<headless>.<ns>.svc.<domain>:19092`
/// for each voter of `topology`.
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn controller_quorum_voters(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    topology: Topology,
) -> Result<String, RenderError> {
    let (cluster, ns) = identity(kc)?;
    Ok(topology
        .voter_ids()
        .into_iter()
        .map(|id| format!("{id}@{}:{RPC_PORT}", pod_host(cluster, ns, id, ctx)))
        .collect::<Vec<_>>()
        .join(","))
}

/// Why a KafkaCluster cannot be rendered. Each is a `Ready=False` reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the KafkaCluster has no {0}; it must come from the API server")]
    MissingMetadata(&'static str),
    #[error("listener {listener:?}: mtls authentication needs tls: true")]
    MtlsWithoutTls { listener: String },
    #[error("config {key:?}: values are one line; a line break cannot go in a properties file")]
    MultiLineConfig { key: String },
    #[error("config {key:?} is set by the operator; use spec.listeners or spec.storage instead")]
    OperatorOwnedSetting { key: String },
    #[error("listener {listener:?}: port {port} is reserved for the broker's own use")]
    ReservedPort { listener: String, port: i32 },
    #[error("listener {listener:?}: the name is reserved for the operator's own listener")]
    ReservedName { listener: String },
}

impl RenderError {
    /// The condition reason (PascalCase) for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::MtlsWithoutTls { .. } | Self::ReservedPort { .. } | Self::ReservedName { .. } => {
                "InvalidListener"
            }
            Self::MultiLineConfig { .. } | Self::OperatorOwnedSetting { .. } => "InvalidConfig",
        }
    }
}

/// Everything one KafkaCluster renders to.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub config_map: ConfigMap,
    pub headless_service: Service,
    pub bootstrap_service: Service,
    pub external_services: Vec<Service>,
    pub stateful_set: StatefulSet,
    pub pod_disruption_budget: PodDisruptionBudget,
    pub service_account: ServiceAccount,
    pub horizontal_pod_autoscaler: Option<HorizontalPodAutoscaler>,
}

impl Rendered {
    /// Adds each broker's external-addresses file (see [`external`]) to the
    /// ConfigMap. The pod template does not change: the files are not part
    /// of the config hash.
    pub fn add_advertised(&mut self, files: &BTreeMap<i32, String>) {
        let data = self.config_map.data.get_or_insert_with(BTreeMap::new);
        for (id, file) in files {
            data.insert(external::advertised_key(*id), file.clone());
        }
    }

    /// Adds each node's rack (see [`rack`]) to the ConfigMap, outside the
    /// config hash like the external addresses.
    pub fn add_racks(&mut self, files: &BTreeMap<String, String>) {
        let data = self.config_map.data.get_or_insert_with(BTreeMap::new);
        for (node, value) in files {
            if let Some(key) = rack::rack_key(node) {
                data.insert(key, format!("{value}\n"));
            }
        }
    }
}

/// Renders every object of `kc`.
///
/// `topology.brokers` is how many broker pods to run. The scaling logic
/// decides it: `spec.replicas` when growing or steady, the current count
/// while a scale-down drains the highest broker ids (pods are never removed
/// before the brokers are confirmed empty). `topology.voters` is fixed at
/// creation (see [`Topology::decide`]).
///
/// # Errors
/// A KafkaCluster without name, namespace or uid, or with a setting the
/// schema should have refused (see [`RenderError`]).
pub fn render(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    topology: Topology,
) -> Result<Rendered, RenderError> {
    for l in &kc.spec.listeners {
        if [RPC_PORT, HTTP_PORT, OPERATOR_PORT].contains(&l.port) {
            return Err(RenderError::ReservedPort {
                listener: l.name.clone(),
                port: l.port,
            });
        }
        if kafka_listener_name(l) == OPERATOR_LISTENER {
            return Err(RenderError::ReservedName {
                listener: l.name.clone(),
            });
        }
    }
    let config_map = config::config_map(kc)?;
    let hash = config::config_hash(&config_map);
    Ok(Rendered {
        headless_service: services::headless_service(kc)?,
        bootstrap_service: services::bootstrap_service(kc)?,
        external_services: services::external_services(kc, topology.brokers)?,
        stateful_set: stateful_set::stateful_set(kc, ctx, topology, &hash)?,
        pod_disruption_budget: policy::pod_disruption_budget(kc)?,
        service_account: policy::service_account(kc)?,
        horizontal_pod_autoscaler: policy::horizontal_pod_autoscaler(kc)?,
        config_map,
    })
}

/// Names of the objects of a cluster.
pub mod names {
    pub fn stateful_set(cluster: &str) -> String {
        cluster.to_string()
    }
    pub fn headless_service(cluster: &str) -> String {
        format!("{cluster}-brokers")
    }
    pub fn bootstrap_service(cluster: &str) -> String {
        format!("{cluster}-bootstrap")
    }
    pub fn config_map(cluster: &str) -> String {
        format!("{cluster}-config")
    }
    pub fn service_account(cluster: &str) -> String {
        format!("{cluster}-broker")
    }
    /// The Secret holding the operator's SCRAM password for this cluster
    /// (created by the controller, owned by the KafkaCluster).
    pub fn operator_secret(cluster: &str) -> String {
        format!("{cluster}-operator")
    }
    /// The brokers' shared peer token (see [`super::peer_token`]; owned by
    /// the KafkaCluster, made once).
    pub fn peer_token(cluster: &str) -> String {
        format!("{cluster}-peer-token")
    }
    /// The cluster CA's Secret (certificate and key; owned by the
    /// KafkaCluster, made once).
    pub fn cluster_ca(cluster: &str) -> String {
        format!("{cluster}-cluster-ca")
    }
    /// The Secret of the brokers' certificates (see [`super::tls`]).
    pub fn broker_certs(cluster: &str) -> String {
        format!("{cluster}-broker-certs")
    }
    /// Bootstrap Service of an external listener.
    pub fn external_bootstrap_service(cluster: &str, listener: &str) -> String {
        format!("{cluster}-{listener}-bootstrap")
    }
    /// Per-broker Service of an external listener: the pod name followed by
    /// the listener, so a pod finds its own as `$(POD_NAME)-<listener>`.
    pub fn broker_service(cluster: &str, id: i32, listener: &str) -> String {
        format!("{cluster}-{id}-{listener}")
    }
}

/// Labels that select a cluster's broker pods.
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "skiff".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// Labels of every object of a cluster.
pub fn common_labels(cluster: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cluster);
    l.insert(
        "app.kubernetes.io/managed-by".to_string(),
        "skiff-operator".to_string(),
    );
    l.insert("app.kubernetes.io/part-of".to_string(), "skiff".to_string());
    l
}

/// The selector as a string, for `status.selector` (the `/scale` subresource).
pub fn selector_string(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Name and namespace of a KafkaCluster that came from the API server.
pub(crate) fn identity(kc: &KafkaCluster) -> Result<(&str, &str), RenderError> {
    let name = kc
        .metadata
        .name
        .as_deref()
        .ok_or(RenderError::MissingMetadata("name"))?;
    let ns = kc
        .metadata
        .namespace
        .as_deref()
        .ok_or(RenderError::MissingMetadata("namespace"))?;
    Ok((name, ns))
}

/// Metadata of an object owned by `kc`: name, namespace, common labels and a
/// controller owner reference.
pub(crate) fn owned_meta(kc: &KafkaCluster, name: String) -> Result<ObjectMeta, RenderError> {
    let (cluster, ns) = identity(kc)?;
    let owner = kc
        .controller_owner_ref(&())
        .ok_or(RenderError::MissingMetadata("uid"))?;
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(ns.to_string()),
        labels: Some(common_labels(cluster)),
        owner_references: Some(vec![owner]),
        ..ObjectMeta::default()
    })
}

/// The Kafka listener name of a listener (`plaintext` → `PLAINTEXT`).
pub fn kafka_listener_name(l: &Listener) -> String {
    l.name.to_uppercase()
}

/// The Kafka security protocol of a listener.
///
/// # Errors
/// `mtls` without `tls` (the schema refuses it too).
pub fn security_protocol(l: &Listener) -> Result<&'static str, RenderError> {
    Ok(match (l.tls, l.authentication) {
        (false, ListenerAuthentication::None) => "PLAINTEXT",
        (true, ListenerAuthentication::None | ListenerAuthentication::Mtls) => "SSL",
        (false, ListenerAuthentication::Scram) => "SASL_PLAINTEXT",
        (true, ListenerAuthentication::Scram) => "SASL_SSL",
        (false, ListenerAuthentication::Mtls) => {
            return Err(RenderError::MtlsWithoutTls {
                listener: l.name.clone(),
            });
        }
    })
}

/// In-cluster bootstrap address of each internal listener, for
/// `status.bootstrapServers`. External listeners' addresses are known only
/// once their Services have them: see [`external::bootstrap_servers`].
///
/// # Errors
/// A KafkaCluster without name or namespace.
pub fn internal_bootstrap_servers(
    kc: &KafkaCluster,
    ctx: &RenderContext,
) -> Result<Vec<ListenerAddress>, RenderError> {
    let (cluster, ns) = identity(kc)?;
    Ok(kc
        .spec
        .listeners
        .iter()
        .filter(|l| l.exposure == Exposure::Internal)
        .map(|l| ListenerAddress {
            name: l.name.clone(),
            address: format!(
                "{}.{ns}.svc.{}:{}",
                names::bootstrap_service(cluster),
                ctx.cluster_domain,
                l.port
            ),
        })
        .collect())
}
