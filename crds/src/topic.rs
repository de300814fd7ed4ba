//! `Topic`: a Kafka topic in a referenced cluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterRef;

/// A Kafka topic. The operator creates it in the referenced cluster with the
/// Kafka Admin API, keeps its partitions and config as the spec says
/// (correcting changes made by hand), and deletes it when the resource goes
/// unless `deletionPolicy` is `Retain`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skiff.dev",
    version = "v1alpha1",
    kind = "Topic",
    plural = "topics",
    shortname = "kt",
    category = "skiff",
    namespaced,
    status = "TopicStatus",
    doc = "A Kafka topic in a Skiff cluster, managed by the Skiff operator.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Topic", type_ = "string", json_path = ".status.topicName"),
    printcolumn(name = "Partitions", type_ = "integer", json_path = ".spec.partitions"),
    printcolumn(name = "RF", type_ = "integer", json_path = ".spec.replicationFactor"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.topicName) ? has(oldSelf.topicName) && self.topicName == oldSelf.topicName : !has(oldSelf.topicName)").message("topicName is immutable"))]
pub struct TopicSpec {
    /// The KafkaCluster this topic lives in. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,

    /// Name of the topic in Kafka; defaults to the resource's name. In a
    /// tenant namespace it must start with the tenant's prefix, and the
    /// default gets the prefix added. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z0-9._-]{1,249}$"), length(max = 249))]
    pub topic_name: Option<String>,

    /// Number of partitions. It can grow (which changes which partition a
    /// key maps to) but never shrink.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 100000))]
    #[x_kube(validation = Rule::new("self >= oldSelf").message("partitions can grow but not shrink"))]
    pub partitions: i32,

    /// Copies of each partition; the broker's `default.replication.factor`
    /// when unset. Must not exceed the cluster's replicas (checked when the
    /// topic is reconciled). Immutable in v1alpha1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32767))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("replicationFactor is immutable"))]
    pub replication_factor: Option<i32>,

    /// Topic configs (`retention.ms`, `max.message.bytes`, ...). Configs not
    /// named here are reset to the broker's defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,

    /// What happens to the topic in Kafka when this resource is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

fn default_partitions() -> i32 {
    1
}

/// What happens in Kafka when the resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Delete the topic and its data.
    #[default]
    Delete,
    /// Keep the topic and its data; only the resource goes.
    Retain,
}

/// What the operator last observed of the topic.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    /// `Ready` (with a reason when False: refused, cluster unreachable, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The topic's name in Kafka, tenancy prefix included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    /// Kafka's topic id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    /// Partitions the topic has in Kafka.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
}
