//! Types shared by several resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Which KafkaCluster a Topic, User or Quota belongs to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClusterRef {
    /// Name of the KafkaCluster.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Namespace of the KafkaCluster; defaults to this resource's namespace.
    /// A cluster in another namespace accepts the resource only if its
    /// `tenancy` lists this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// The value of a condition's `status`, as the API conventions spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

impl ConditionStatus {
    /// `"True"`, `"False"` or `"Unknown"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Finds the condition of type `type_` in a status' conditions.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// JSONPath of the Ready condition's status, for printer columns.
pub const READY_JSONPATH: &str = r#".status.conditions[?(@.type=="Ready")].status"#;

/// Condition types used by every Skiff resource.
pub mod condition_types {
    /// The resource is what its spec asks for.
    pub const READY: &str = "Ready";
    /// The operator is changing something (a roll, a scale, a reassignment).
    pub const PROGRESSING: &str = "Progressing";
    /// Something is wrong that the operator cannot fix on its own.
    pub const DEGRADED: &str = "Degraded";
}
