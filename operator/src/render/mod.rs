//! Pure renderers: a `KafkaCluster` in, the Kubernetes objects that run it
//! out. Nothing here talks to an API server; a controller applies the result
//! with server-side apply under one field manager.
//!
//! | function | object |
//! |---|---|
//! | [`config::config_map`] | ConfigMap `<name>-config` with `server.properties` |
//! | [`services::headless_service`] | Service `<name>-brokers` (headless; pod DNS names) |
//! | [`services::bootstrap_service`] | Service `<name>-bootstrap` (ClusterIP, every listener) |
//! | [`services::external_services`] | per external listener: `<name>-<listener>-bootstrap` and one `<name>-<id>-<listener>` per broker |
//! | [`stateful_set::stateful_set`] | StatefulSet `<name>` (Parallel, OnDelete) |
//! | [`policy::pod_disruption_budget`] | PodDisruptionBudget `<name>` (maxUnavailable 1) |
//! | [`policy::service_account`] | ServiceAccount `<name>-broker` |
//! | [`policy::horizontal_pod_autoscaler`] | HorizontalPodAutoscaler `<name>` targeting the KafkaCluster's `/scale` |
//!
//! Every object carries the common `app.kubernetes.io/*` labels and a
//! controller owner reference to the KafkaCluster, so deleting the cluster
//! deletes them.

pub mod config;
pub mod policy;
pub mod services;
pub mod stateful_set;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use skiff_crds::KafkaCluster;
use skiff_crds::kafka_cluster::{Exposure, Listener, ListenerAddress, ListenerAuthentication};

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
}

impl RenderError {
    /// The condition reason (PascalCase) for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "MissingMetadata",
            Self::MtlsWithoutTls { .. } => "InvalidListener",
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

/// Renders every object of `kc`.
///
/// `brokers` is how many broker pods to run. The scaling logic decides it:
/// `spec.replicas` when growing or steady, the current count while a
/// scale-down drains the highest broker ids (pods are never removed before
/// the brokers are confirmed empty).
///
/// # Errors
/// A KafkaCluster without name, namespace or uid, or with a setting the
/// schema should have refused (see [`RenderError`]).
pub fn render(
    kc: &KafkaCluster,
    ctx: &RenderContext,
    brokers: i32,
) -> Result<Rendered, RenderError> {
    let config_map = config::config_map(kc)?;
    let hash = config::config_hash(&config_map);
    Ok(Rendered {
        headless_service: services::headless_service(kc)?,
        bootstrap_service: services::bootstrap_service(kc)?,
        external_services: services::external_services(kc, brokers)?,
        stateful_set: stateful_set::stateful_set(kc, ctx, brokers, &hash)?,
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
/// once their Services have them, so they are not listed here.
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
