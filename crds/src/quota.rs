//! `Quota`: client quotas.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterRef;

/// Client quotas (Kafka's AlterClientQuotas) for a user, a client id, both,
/// the defaults, or the whole tenant of the Quota's namespace.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skiff.dev",
    version = "v1alpha1",
    kind = "Quota",
    plural = "quotas",
    shortname = "kq",
    category = "skiff",
    namespaced,
    status = "QuotaStatus",
    doc = "Client quotas in a Skiff cluster, managed by the Skiff operator.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.type"),
    printcolumn(
        name = "Produce",
        type_ = "integer",
        json_path = ".spec.producerByteRate"
    ),
    printcolumn(
        name = "Consume",
        type_ = "integer",
        json_path = ".spec.consumerByteRate"
    ),
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
#[x_kube(validation = Rule::new("has(self.producerByteRate) || has(self.consumerByteRate) || has(self.requestPercentage) || has(self.controllerMutationRate)").message("set at least one of producerByteRate, consumerByteRate, requestPercentage, controllerMutationRate"))]
pub struct QuotaSpec {
    /// The KafkaCluster the quota applies in. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,

    /// Whom the quota limits. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("target is immutable"))]
    pub target: QuotaTarget,

    /// Bytes per second a client may produce (per broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub producer_byte_rate: Option<i64>,

    /// Bytes per second a client may fetch (per broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub consumer_byte_rate: Option<i64>,

    /// Percentage of one request-handler thread a client may use (per
    /// broker; can exceed 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub request_percentage: Option<f64>,

    /// Partition mutations (create topics/partitions, delete topics) per
    /// second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.01))]
    pub controller_mutation_rate: Option<f64>,
}

/// Whom a quota limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(self.type == 'user' || self.type == 'userAndClientId') ? has(self.user) : !has(self.user)").message("user is set exactly when type is user or userAndClientId"))]
#[x_kube(validation = Rule::new("(self.type == 'clientId' || self.type == 'userAndClientId') ? has(self.clientId) : !has(self.clientId)").message("clientId is set exactly when type is clientId or userAndClientId"))]
pub struct QuotaTarget {
    /// `user` (a User of this namespace), `clientId`, `userAndClientId`,
    /// `defaults` (every user without a quota of its own; only from the
    /// cluster's namespace) or `tenant` (all principals of this namespace's
    /// tenant together).
    #[serde(rename = "type")]
    pub type_: QuotaTargetType,
    /// Name of a User resource in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub user: Option<String>,
    /// A client id (`client.id` of the clients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub client_id: Option<String>,
}

/// Kinds of quota targets.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum QuotaTargetType {
    User,
    ClientId,
    UserAndClientId,
    Defaults,
    Tenant,
}

/// What the operator last observed of the quota.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QuotaStatus {
    /// `Ready` (with a reason when False).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Kafka quota entity, e.g. `user=team-a.alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
}
