//! `User`: a principal with credentials and ACLs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterRef;

/// Annotation that rotates a SCRAM password: set it on the User to any new
/// value (a timestamp, say) and the operator generates a new password,
/// stores it in the User's Secret and updates the cluster's credential.
pub const ROTATE_PASSWORD_ANNOTATION: &str = "skiff.dev/rotate-password";

/// A Kafka principal. For `scram-sha-512` the operator generates a strong
/// password into a Secret in the User's namespace (rotated by changing the
/// `skiff.dev/rotate-password` annotation); for `tls` it issues a client
/// certificate from the cluster CA. ACLs are kept as the spec says.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "skiff.dev",
    version = "v1alpha1",
    kind = "User",
    plural = "users",
    shortname = "ku",
    category = "skiff",
    namespaced,
    status = "UserStatus",
    doc = "A Kafka principal in a Skiff cluster (credentials and ACLs), managed by the Skiff operator.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.clusterRef.name"
    ),
    printcolumn(
        name = "Authentication",
        type_ = "string",
        json_path = ".spec.authentication.type"
    ),
    printcolumn(name = "Principal", type_ = "string", json_path = ".status.principal"),
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
pub struct UserSpec {
    /// The KafkaCluster this user belongs to. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: ClusterRef,

    /// How the user proves who it is.
    pub authentication: UserAuthentication,

    /// What the user may do; nothing (deny by default) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
}

/// How a user authenticates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UserAuthentication {
    /// `scram-sha-512` (a generated password in a Secret) or `tls` (a client
    /// certificate from the cluster CA, on a listener with `mtls`).
    #[serde(rename = "type")]
    pub type_: AuthenticationType,
}

/// Kinds of user authentication.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticationType {
    /// SASL SCRAM-SHA-512.
    #[serde(rename = "scram-sha-512")]
    ScramSha512,
    /// Mutual TLS.
    #[serde(rename = "tls")]
    Tls,
}

/// The user's ACLs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Authorization {
    /// ACL rules. In a tenant namespace every topic, group and transactional
    /// id named must lie inside the tenant's prefix, and cluster ACLs are
    /// refused.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub acls: Vec<AclRule>,
}

/// One ACL rule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AclRule {
    /// What the rule is about.
    pub resource: AclResource,
    /// Operations allowed or denied.
    #[schemars(length(min = 1))]
    pub operations: Vec<AclOperation>,
    /// Allow or deny.
    #[serde(default, rename = "type")]
    pub type_: AclType,
    /// Host the rule applies to; `*` for any.
    #[serde(default = "any_host")]
    #[schemars(length(min = 1))]
    pub host: String,
}

fn any_host() -> String {
    "*".to_string()
}

/// The resource an ACL rule is about.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'cluster' || self.name == 'kafka-cluster'").message("the cluster resource's name is kafka-cluster"))]
pub struct AclResource {
    /// Kind of resource.
    #[serde(rename = "type")]
    pub type_: AclResourceType,
    /// Its name, or a prefix of names with `patternType: prefixed`; `*` with
    /// `literal` means every resource of the type. For `cluster`:
    /// `kafka-cluster`.
    #[schemars(length(min = 1, max = 255))]
    pub name: String,
    /// How `name` matches.
    #[serde(default)]
    pub pattern_type: AclPatternType,
}

/// Kinds of ACL resources.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AclResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

/// How an ACL resource name matches.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AclPatternType {
    /// The exact name (or `*`).
    #[default]
    Literal,
    /// Every name starting with `name`.
    Prefixed,
}

/// Kafka ACL operations.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclOperation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

/// Allow or deny.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum AclType {
    #[default]
    Allow,
    Deny,
}

/// What the operator last observed of the user.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// `Ready` (with a reason when False).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Kafka principal, e.g. `User:team-a.alice`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The Secret holding the credentials, in the User's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}
