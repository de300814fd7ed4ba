//! `KafkaCluster`: a cluster of Skiff brokers.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::MetricSpec;
use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings the operator sets itself on every broker; `spec.config` may not
/// name them.
pub const OPERATOR_OWNED_SETTINGS: &[&str] = &[
    "node.id",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "data.dir",
    "http.addr",
    "broker.rack",
    "config",
    "cluster.id",
    "controller.quorum.voters",
    "rpc.listener",
    "rpc.advertised.listener",
    "scram.bootstrap.users.file",
];

/// The port of the broker's HTTP server (`/metrics`, `/livez`, `/readyz`);
/// listeners may not use it.
pub const HTTP_PORT: i32 = 9644;

/// The port of the brokers' broker-to-broker gRPC server (metadata Raft and
/// replication), the `rpc` container port; listeners may not use it.
pub const RPC_PORT: i32 = 19092;

/// The port of the operator's own listener (`OPERATOR`, SASL_PLAINTEXT with
/// SCRAM), where the operator makes its admin calls as the super user
/// `skiff-operator`; listeners may not use it.
pub const OPERATOR_PORT: i32 = 19093;

/// A cluster of Skiff brokers run as a StatefulSet. The operator creates its
/// ConfigMap, Services, StatefulSet, PodDisruptionBudget, ServiceAccount and
/// (with `autoscaling`) HorizontalPodAutoscaler, and rolls brokers one at a
/// time when the image or config changes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skiff.dev",
    version = "v1alpha1",
    kind = "KafkaCluster",
    plural = "kafkaclusters",
    shortname = "kc",
    category = "skiff",
    namespaced,
    status = "KafkaClusterStatus",
    doc = "A cluster of Skiff brokers (Kafka wire protocol) run by the Skiff operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#
    ),
    printcolumn(
        name = "Bootstrap",
        type_ = "string",
        priority = 1,
        json_path = ".status.bootstrapServers[0].address"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 40").message(
        "the name of a KafkaCluster is at most 40 characters, so the names of its pods and Services fit in a DNS label"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterSpec {
    /// Number of brokers. Brokers get node ids 0..replicas-1 from their pod
    /// ordinals. A decrease drains the highest ids first and removes a broker
    /// only once the cluster's metadata shows it holds no partition.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,

    /// Broker image; defaults to the broker image released with the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub image: Option<String>,

    /// CPU and memory requests and limits of each broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Each broker's persistent volume.
    #[serde(default)]
    pub storage: Storage,

    /// Where brokers accept clients. Names and ports are unique. The
    /// operator adds a listener of its own, `OPERATOR` on port 19093
    /// (SASL_PLAINTEXT, SCRAM), for its admin calls: the name `operator` and
    /// the ports 9644, 19092 and 19093 are reserved.
    #[serde(default = "default_listeners")]
    #[schemars(length(min = 1, max = 8))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.name == l.name))").message("listener names must be unique"))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m.port == l.port))").message("listener ports must be unique"))]
    pub listeners: Vec<Listener>,

    /// Broker settings (`key: value`, the keys of `skiff-broker --help` with
    /// dots, e.g. `log.retention.ms`), written to the brokers' properties
    /// file. A change rolls the brokers one at a time. The settings the
    /// operator owns (node.id, listeners, advertised.listeners,
    /// listener.security.protocol.map, data.dir, http.addr, broker.rack,
    /// config, cluster.id, controller.quorum.voters, rpc.listener,
    /// rpc.advertised.listener, scram.bootstrap.users.file) are refused.
    /// `super.users` may be set; the operator's own user is added to it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("!('node.id' in self) && !('listeners' in self) && !('advertised.listeners' in self) && !('listener.security.protocol.map' in self) && !('data.dir' in self) && !('http.addr' in self) && !('broker.rack' in self) && !('config' in self) && !('cluster.id' in self) && !('controller.quorum.voters' in self) && !('rpc.listener' in self) && !('rpc.advertised.listener' in self) && !('scram.bootstrap.users.file' in self)").message("node.id, listeners, advertised.listeners, listener.security.protocol.map, data.dir, http.addr, broker.rack, config, cluster.id, controller.quorum.voters, rpc.listener, rpc.advertised.listener and scram.bootstrap.users.file are set by the operator; use spec.listeners and spec.storage instead"))]
    pub config: BTreeMap<String, String>,

    /// Rack awareness: brokers are spread over the values of a node label and
    /// replicas of a partition are placed in different racks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<Rack>,

    /// Additions to the broker pods: labels, annotations, affinity,
    /// tolerations, priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template: Option<PodTemplateOverrides>,

    /// Which namespaces may create Topics, Users and Quotas against this
    /// cluster, and the name prefix each gets. Without it only resources in
    /// the cluster's own namespace are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenancy: Option<Tenancy>,

    /// A HorizontalPodAutoscaler that drives `replicas` through the `/scale`
    /// subresource. Every change it makes goes through the operator's safe
    /// add/drain sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,

    /// How the operator moves data when `replicas` changes.
    #[serde(default)]
    pub scaling: Scaling,
}

fn default_replicas() -> i32 {
    3
}

fn default_listeners() -> Vec<Listener> {
    vec![Listener {
        name: "plaintext".to_string(),
        port: 9092,
        tls: false,
        authentication: ListenerAuthentication::None,
        exposure: Exposure::Internal,
    }]
}

/// Each broker's persistent volume.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.storageClass) ? has(oldSelf.storageClass) && self.storageClass == oldSelf.storageClass : !has(oldSelf.storageClass)").message("storageClass is immutable"))]
#[x_kube(validation = Rule::new("!has(self.size) || !has(oldSelf.size) || self.size == oldSelf.size").message("size is immutable: the StatefulSet's volume claim template cannot change and volumes are not resized yet"))]
pub struct Storage {
    /// Size of each broker's volume, e.g. `100Gi`. Cannot be changed once
    /// set: the claim template of a StatefulSet is immutable.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,

    /// StorageClass of the volumes; the cluster's default class when unset.
    /// Cannot be changed once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,

    /// Delete the volumes when the KafkaCluster is deleted. Volumes of a
    /// broker removed by a scale-down are always kept until the operator has
    /// confirmed that broker empty.
    #[serde(default)]
    pub delete_claim: bool,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class: None,
            delete_claim: false,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("10Gi".to_string())
}

/// How the operator moves data when `replicas` changes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Scaling {
    /// Bytes per second each partition leader may send to the replicas a
    /// scale is adding while they catch up (the rebalance after a scale-up,
    /// the drain before a scale-down), as a quantity: `20M` is 20,000,000,
    /// `50Mi` is 52,428,800, a plain integer is bytes. `0` moves unthrottled.
    /// The operator sets it as the cluster-wide dynamic broker config
    /// `leader.replication.throttled.rate` for the moves of its scales only,
    /// and removes it when the scale ends; a cluster-wide value set by hand
    /// before a scale is left alone. The default, 20M, left a producer's p99
    /// unchanged while a 1 GiB replica moved on two shared cores
    /// (docs/benchmarks.md); unthrottled moves held it at 32 s.
    #[serde(default = "default_replication_throttle")]
    pub replication_throttle: Quantity,
}

impl Default for Scaling {
    fn default() -> Self {
        Self {
            replication_throttle: default_replication_throttle(),
        }
    }
}

fn default_replication_throttle() -> Quantity {
    Quantity("20M".to_string())
}

impl Scaling {
    /// `replication_throttle` in bytes per second; 0 is no throttle.
    ///
    /// # Errors
    /// Not a non-negative quantity that fits Kafka's 64-bit rate.
    pub fn replication_throttle_bytes(&self) -> Result<u64, QuantityError> {
        bytes_of_quantity(&self.replication_throttle.0)
    }
}

/// A quantity the operator cannot use as a byte count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a byte quantity: {reason}")]
pub struct QuantityError {
    pub value: String,
    pub reason: &'static str,
}

/// A Kubernetes quantity as a whole number of bytes: decimal (`k`, `M`,
/// `G`, `T`, `P`, `E`), binary (`Ki` .. `Ei`) and exponent (`5e6`) forms,
/// with a fraction (`1.5Gi`) rounded down. Negative values, fractions of a
/// byte above zero (`500m`) and values beyond `i64::MAX` (Kafka's rates are
/// signed 64-bit) are refused.
///
/// # Errors
/// Anything else.
pub fn bytes_of_quantity(raw: &str) -> Result<u64, QuantityError> {
    let err = |reason| QuantityError {
        value: raw.to_string(),
        reason,
    };
    let s = raw.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let number_end = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(err("no number"));
    }
    if fraction.contains('.') {
        return Err(err("more than one decimal point"));
    }
    // value = digits / 10^scale * multiplier, in integers.
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| err("too many digits"))?;
    let scale = u32::try_from(fraction.len()).map_err(|_| err("too many digits"))?;
    let (num, den): (u128, u128) = match suffix {
        "" => (1, 1),
        "m" => (1, 1000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err("unknown suffix"))?;
            let pow = 10u128
                .checked_pow(exp.unsigned_abs())
                .ok_or(err("too large"))?;
            if exp >= 0 { (pow, 1) } else { (1, pow) }
        }
        _ => return Err(err("unknown suffix")),
    };
    let den = den
        .checked_mul(10u128.checked_pow(scale).ok_or(err("too many digits"))?)
        .ok_or(err("too many digits"))?;
    let bytes = digits.checked_mul(num).ok_or(err("too large"))? / den;
    if bytes == 0 && digits != 0 {
        return Err(err("more than 0 but less than one byte"));
    }
    u64::try_from(bytes)
        .ok()
        .filter(|b| i64::try_from(*b).is_ok())
        .ok_or(err("too large"))
}

/// A listener: a port where brokers accept Kafka clients.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.authentication != 'mtls' || self.tls").message("mtls authentication needs tls: true"))]
pub struct Listener {
    /// Name of the listener: lower-case letters and digits, starting with a
    /// letter. It names the Service port and, upper-cased, the Kafka
    /// listener (`plaintext` → `PLAINTEXT`).
    #[schemars(regex(pattern = r"^[a-z][a-z0-9]{0,14}$"), length(max = 15))]
    pub name: String,

    /// Container port of the listener (1024-65535; brokers do not run as
    /// root). 9644 is the broker's HTTP port and 19092 its broker-to-broker
    /// RPC port.
    #[schemars(range(min = 1024, max = 65535))]
    #[x_kube(validation = Rule::new("self != 9644").message("port 9644 is the broker's HTTP port"))]
    #[x_kube(validation = Rule::new("self != 19092").message("port 19092 is the brokers' broker-to-broker RPC port"))]
    pub port: i32,

    /// Encrypt connections with TLS.
    #[serde(default)]
    pub tls: bool,

    /// How clients authenticate.
    #[serde(default)]
    pub authentication: ListenerAuthentication,

    /// How the listener is reachable: `internal` (cluster DNS only),
    /// `NodePort` or `LoadBalancer` (a bootstrap Service plus one Service per
    /// broker; each broker advertises its own Service's address, and waits
    /// at start until that Service has one).
    #[serde(default)]
    pub exposure: Exposure,
}

/// How clients authenticate on a listener.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerAuthentication {
    /// No authentication.
    #[default]
    None,
    /// SASL SCRAM-SHA-512 with the credentials of `User` resources.
    Scram,
    /// TLS client certificates (needs `tls: true`).
    Mtls,
}

/// How a listener is reachable.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Exposure {
    /// Inside the Kubernetes cluster, through the cluster DNS.
    #[default]
    #[serde(rename = "internal")]
    Internal,
    /// On every node's IP, through NodePort Services.
    NodePort,
    /// Through LoadBalancer Services.
    LoadBalancer,
}

/// Rack awareness.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rack {
    /// Node label whose value is a broker's rack.
    #[serde(default = "default_topology_key")]
    #[schemars(length(min = 1))]
    pub topology_key: String,
}

fn default_topology_key() -> String {
    "topology.kubernetes.io/zone".to_string()
}

/// Additions to the broker pods. Labels and annotations are added to the
/// operator's (which win on a clash); affinity replaces the operator's
/// default anti-affinity.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    /// Extra labels of the broker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations of the broker pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Affinity of the broker pods; replaces the default preferred
    /// anti-affinity between brokers of this cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations of the broker pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// PriorityClass of the broker pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Which namespaces may use this cluster, and the prefix each one's topic,
/// group and user names get.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Tenancy {
    /// Tenant namespaces. Resources in the cluster's own namespace are always
    /// accepted, without a prefix.
    #[serde(default)]
    #[schemars(length(max = 200))]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.__namespace__ == t.__namespace__))").message("each namespace is listed once"))]
    pub tenants: Vec<Tenant>,
}

/// A namespace allowed to use the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// The namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// Prefix of the tenant's topic, consumer group and user names; defaults
    /// to the namespace followed by a dot (`team-a` → `team-a.`). No prefix
    /// may be the start of another tenant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9._-]{1,100}$"))]
    pub prefix: Option<String>,
}

/// A HorizontalPodAutoscaler for the cluster.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
pub struct Autoscaling {
    /// Fewest brokers.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Most brokers.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// Target metrics (autoscaling/v2 `MetricSpec`); 70% average CPU
    /// utilization when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
}

/// What the operator last observed of the cluster.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KafkaClusterStatus {
    /// `Ready`, `Progressing` and `Degraded`, with reasons; with an external
    /// listener also `ExternalAddresses` (`Pending` while a Service waits
    /// for its address, which is normal for a while, `Assigned` after).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Brokers that exist (the `/scale` subresource's status.replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Brokers that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the broker pods, for the `/scale` subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Bootstrap address of each listener: internal listeners first, then
    /// each external listener once its bootstrap Service has an address
    /// (LoadBalancer: the ingress IP or hostname and the listener port;
    /// NodePort: the node port on each node a broker runs on).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bootstrap_servers: Vec<ListenerAddress>,
    /// State of each broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<BrokerStatus>,
    /// Node ids of the metadata Raft group's voters. Chosen when the cluster
    /// is created (the first three brokers, or all when fewer) and never
    /// changed by a re-render or a scale-up: brokers added later join as
    /// learners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metadata_voters: Vec<i32>,
    /// A change of `spec.replicas` under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<ScaleStatus>,
}

/// Where a change of `spec.replicas` is: `Growing` (new brokers starting),
/// `Rebalancing` (replicas moving onto them), `Draining` (replicas moving
/// off the brokers being removed), or `Idle`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ScaleStatus {
    /// `Idle`, `Growing`, `Rebalancing` or `Draining`.
    pub phase: String,
    /// The number of brokers the scale heads for.
    pub target_replicas: i32,
    /// What it is doing or waiting for.
    #[serde(default)]
    pub message: String,
    /// The cluster-wide `leader.replication.throttled.rate` (bytes per
    /// second) the operator set for this scale's moves. Present while the
    /// operator owns that value (recorded before it is set, so a restart
    /// never leaves one behind unrecorded); removed once the operator has
    /// deleted it. A value the operator finds set without this record is a
    /// person's and is never touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_replication_throttle: Option<i64>,
}

/// Where clients of one listener bootstrap.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ListenerAddress {
    /// Listener name.
    pub name: String,
    /// `host:port` for `bootstrap.servers`.
    pub address: String,
}

/// One broker as the operator sees it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// Broker (node) id.
    pub id: i32,
    /// Pod running it.
    pub pod: String,
    /// Where it is in its life.
    pub state: BrokerState,
    /// Rack it reported, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack: Option<String>,
}

/// Where a broker is in its life.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerState {
    /// Pod not yet running.
    Pending,
    /// Running and ready.
    Ready,
    /// Running, not ready.
    NotReady,
    /// Being restarted by a roll.
    Rolling,
    /// Its partitions are being moved away before removal.
    Draining,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities_read_as_kubernetes_writes_them() {
        for (q, bytes) in [
            ("0", 0),
            ("20M", 20_000_000),
            ("50Mi", 52_428_800),
            ("1.5Gi", 1_610_612_736),
            ("100k", 100_000),
            ("20971520", 20_971_520),
            ("+7", 7),
            ("5e6", 5_000_000),
            ("2500m", 2),
            (" 1Ki ", 1024),
        ] {
            assert_eq!(bytes_of_quantity(q), Ok(bytes), "{q}");
        }
        for q in ["", "-1", "20MB", "1.2.3", "500m", "8Ei", "1e30", "abc", "M"] {
            assert!(bytes_of_quantity(q).is_err(), "{q}");
        }
    }

    #[test]
    fn the_throttle_defaults_to_what_the_benchmark_found_harmless_and_zero_turns_it_off() {
        let spec: KafkaClusterSpec = serde_json::from_value(serde_json::json!({})).expect("spec");
        assert_eq!(spec.scaling.replication_throttle_bytes(), Ok(20_000_000));
        let spec: KafkaClusterSpec =
            serde_json::from_value(serde_json::json!({"scaling": {"replicationThrottle": 0}}))
                .expect("spec");
        assert_eq!(spec.scaling.replication_throttle_bytes(), Ok(0));
        let spec: KafkaClusterSpec =
            serde_json::from_value(serde_json::json!({"scaling": {"replicationThrottle": "50Mi"}}))
                .expect("spec");
        assert_eq!(spec.scaling.replication_throttle_bytes(), Ok(52_428_800));
    }
}
