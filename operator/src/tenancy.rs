//! Tenancy rules: which namespaces a KafkaCluster accepts Topics, Users and
//! Quotas from, and what names they get there.
//!
//! - The cluster's own namespace is the *owner*: anything goes, no prefix.
//! - A namespace listed in `spec.tenancy.tenants` is a *tenant* with a
//!   prefix (default `<namespace>.`): its topic, group, transactional-id and
//!   user names live under the prefix, it cannot touch cluster ACLs, the
//!   default quotas, or a bare client-id quota (which would throttle other
//!   tenants' clients using the same id).
//! - Any other namespace is refused.
//!
//! Every refusal is a [`Refusal`] whose [`Refusal::reason`] is the
//! `Ready=False` condition reason and whose message says what to change.

use skiff_crds::kafka_cluster::Tenancy;
use skiff_crds::quota::{QuotaTarget, QuotaTargetType};
use skiff_crds::user::{AclPatternType, AclResourceType, AclRule};

/// Where a resource stands with respect to a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The cluster's own namespace.
    Owner,
    /// A tenant namespace and its prefix.
    Tenant { namespace: String, prefix: String },
}

impl Scope {
    /// The prefix names get; empty for the owner.
    pub fn prefix(&self) -> &str {
        match self {
            Self::Owner => "",
            Self::Tenant { prefix, .. } => prefix,
        }
    }
}

/// Why a resource is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "namespace {namespace:?} may not use KafkaCluster {cluster_namespace}/{cluster}: add it to the cluster's spec.tenancy.tenants"
    )]
    NamespaceNotAllowed {
        namespace: String,
        cluster_namespace: String,
        cluster: String,
    },
    #[error("topic name {name:?} must start with this namespace's prefix {prefix:?}")]
    TopicOutsidePrefix { name: String, prefix: String },
    #[error("topic name {name:?} is not a valid Kafka topic name: {why}")]
    InvalidTopicName { name: String, why: &'static str },
    #[error("ACL on {resource} {name:?}: tenants may only name resources starting with {prefix:?}")]
    AclOutsidePrefix {
        resource: &'static str,
        name: String,
        prefix: String,
    },
    #[error(
        "ACL on the cluster resource: only the cluster's own namespace may grant cluster operations"
    )]
    ClusterAclFromTenant,
    #[error("quota target {target}: {why}")]
    QuotaTargetNotAllowed {
        target: &'static str,
        why: &'static str,
    },
    #[error(
        "tenant prefixes {a:?} ({a_namespace}) and {b:?} ({b_namespace}) overlap: one starts with the other"
    )]
    OverlappingPrefixes {
        a: String,
        a_namespace: String,
        b: String,
        b_namespace: String,
    },
}

impl Refusal {
    /// The condition reason (PascalCase).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceNotAllowed { .. } => "NamespaceNotAllowed",
            Self::TopicOutsidePrefix { .. } => "NameOutsideTenantPrefix",
            Self::InvalidTopicName { .. } => "InvalidTopicName",
            Self::AclOutsidePrefix { .. } => "AclOutsideTenantPrefix",
            Self::ClusterAclFromTenant => "ClusterAclNotAllowed",
            Self::QuotaTargetNotAllowed { .. } => "QuotaTargetNotAllowed",
            Self::OverlappingPrefixes { .. } => "OverlappingTenantPrefixes",
        }
    }
}

fn tenant_prefix(namespace: &str, prefix: Option<&str>) -> String {
    prefix.map_or_else(|| format!("{namespace}."), str::to_string)
}

/// Checks a cluster's tenancy: no tenant's prefix may start with another's
/// (else one tenant could create names inside the other's space), and none
/// may be empty.
///
/// # Errors
/// The first overlapping pair.
pub fn check_tenancy(tenancy: &Tenancy) -> Result<(), Refusal> {
    let prefixes: Vec<(String, &str)> = tenancy
        .tenants
        .iter()
        .map(|t| {
            (
                tenant_prefix(&t.namespace, t.prefix.as_deref()),
                t.namespace.as_str(),
            )
        })
        .collect();
    for (i, (a, a_ns)) in prefixes.iter().enumerate() {
        for (b, b_ns) in &prefixes[i + 1..] {
            if a.starts_with(b.as_str()) || b.starts_with(a.as_str()) {
                return Err(Refusal::OverlappingPrefixes {
                    a: a.clone(),
                    a_namespace: a_ns.to_string(),
                    b: b.clone(),
                    b_namespace: b_ns.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The scope of a resource in `namespace` referring to the cluster
/// `cluster_namespace/cluster`.
///
/// # Errors
/// [`Refusal::NamespaceNotAllowed`] for a namespace that is neither the
/// cluster's nor a listed tenant.
pub fn scope(
    cluster_namespace: &str,
    cluster: &str,
    tenancy: Option<&Tenancy>,
    namespace: &str,
) -> Result<Scope, Refusal> {
    if namespace == cluster_namespace {
        return Ok(Scope::Owner);
    }
    tenancy
        .and_then(|t| t.tenants.iter().find(|t| t.namespace == namespace))
        .map(|t| Scope::Tenant {
            namespace: t.namespace.clone(),
            prefix: tenant_prefix(&t.namespace, t.prefix.as_deref()),
        })
        .ok_or_else(|| Refusal::NamespaceNotAllowed {
            namespace: namespace.to_string(),
            cluster_namespace: cluster_namespace.to_string(),
            cluster: cluster.to_string(),
        })
}

/// Kafka's own topic name rules.
fn check_kafka_topic_name(name: &str) -> Result<(), Refusal> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed")
    } else if name.len() > 249 {
        Some("it is longer than 249 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        Some("only ASCII letters, digits, `.`, `_` and `-` are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(Refusal::InvalidTopicName {
            name: name.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The topic's name in Kafka.
///
/// An explicit `spec.topicName` is used as is and must lie inside the
/// prefix. Without one, the resource name is used, with the prefix added
/// unless it already starts with it (`orders` and `team-a.orders` in
/// namespace `team-a` both name `team-a.orders`). Tenants may not create
/// internal (`__`) topics.
///
/// # Errors
/// A name outside the prefix, or one Kafka would refuse.
pub fn topic_name(
    scope: &Scope,
    resource_name: &str,
    spec_topic_name: Option<&str>,
) -> Result<String, Refusal> {
    let prefix = scope.prefix();
    let name = match spec_topic_name {
        Some(explicit) => {
            if !explicit.starts_with(prefix) {
                return Err(Refusal::TopicOutsidePrefix {
                    name: explicit.to_string(),
                    prefix: prefix.to_string(),
                });
            }
            explicit.to_string()
        }
        None if resource_name.starts_with(prefix) => resource_name.to_string(),
        None => format!("{prefix}{resource_name}"),
    };
    check_kafka_topic_name(&name)?;
    Ok(name)
}

/// The user's name in Kafka (its principal is `User:<name>`): the prefix
/// followed by the resource name, unless the resource name already starts
/// with the prefix.
pub fn user_name(scope: &Scope, resource_name: &str) -> String {
    let prefix = scope.prefix();
    if resource_name.starts_with(prefix) {
        resource_name.to_string()
    } else {
        format!("{prefix}{resource_name}")
    }
}

/// Checks one ACL rule against the scope. The owner may write any rule; a
/// tenant's rules must name topics, groups and transactional ids inside its
/// prefix (a `prefixed` pattern must itself start with the prefix; the
/// literal `*` means every resource and is refused) and may not be about the
/// cluster.
///
/// # Errors
/// The rule's refusal.
pub fn check_acl(scope: &Scope, rule: &AclRule) -> Result<(), Refusal> {
    let Scope::Tenant { prefix, .. } = scope else {
        return Ok(());
    };
    let resource = match rule.resource.type_ {
        AclResourceType::Cluster => return Err(Refusal::ClusterAclFromTenant),
        AclResourceType::Topic => "topic",
        AclResourceType::Group => "group",
        AclResourceType::TransactionalId => "transactional id",
    };
    let name = &rule.resource.name;
    let wildcard = rule.resource.pattern_type == AclPatternType::Literal && name == "*";
    if wildcard || !name.starts_with(prefix.as_str()) {
        return Err(Refusal::AclOutsidePrefix {
            resource,
            name: name.clone(),
            prefix: prefix.clone(),
        });
    }
    Ok(())
}

/// A Kafka client-quota entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuotaEntity {
    User(String),
    ClientId(String),
    UserAndClientId(String, String),
    /// Kafka's `<default>` user entity.
    DefaultUser,
    /// Skiff's tenant quota: every principal under the prefix together.
    Tenant(String),
}

impl std::fmt::Display for QuotaEntity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(u) => write!(f, "user={u}"),
            Self::ClientId(c) => write!(f, "client-id={c}"),
            Self::UserAndClientId(u, c) => write!(f, "user={u},client-id={c}"),
            Self::DefaultUser => write!(f, "user=<default>"),
            Self::Tenant(p) => write!(f, "tenant={p}"),
        }
    }
}

/// The quota entity a Quota's target names, in its scope. `user` names a
/// User resource of the Quota's namespace, so its Kafka name gets the
/// prefix.
///
/// # Errors
/// `defaults` from a tenant, `tenant` from the owner, a bare `clientId` from
/// a tenant, or a target missing the field its type needs.
pub fn quota_entity(scope: &Scope, target: &QuotaTarget) -> Result<QuotaEntity, Refusal> {
    let missing = |target| Refusal::QuotaTargetNotAllowed {
        target,
        why: "the field this type needs is not set",
    };
    match (target.type_, scope) {
        (QuotaTargetType::User, _) => target
            .user
            .as_deref()
            .map(|u| QuotaEntity::User(user_name(scope, u)))
            .ok_or_else(|| missing("user")),
        (QuotaTargetType::UserAndClientId, _) => match (&target.user, &target.client_id) {
            (Some(u), Some(c)) => Ok(QuotaEntity::UserAndClientId(user_name(scope, u), c.clone())),
            _ => Err(missing("userAndClientId")),
        },
        (QuotaTargetType::ClientId, Scope::Owner) => target
            .client_id
            .clone()
            .map(QuotaEntity::ClientId)
            .ok_or_else(|| missing("clientId")),
        (QuotaTargetType::ClientId, Scope::Tenant { .. }) => Err(Refusal::QuotaTargetNotAllowed {
            target: "clientId",
            why: "a client-id quota applies to every tenant's clients with that id; use userAndClientId",
        }),
        (QuotaTargetType::Defaults, Scope::Owner) => Ok(QuotaEntity::DefaultUser),
        (QuotaTargetType::Defaults, Scope::Tenant { .. }) => Err(Refusal::QuotaTargetNotAllowed {
            target: "defaults",
            why: "the default quotas apply to every tenant; only the cluster's namespace may set them",
        }),
        (QuotaTargetType::Tenant, Scope::Tenant { prefix, .. }) => {
            Ok(QuotaEntity::Tenant(prefix.clone()))
        }
        (QuotaTargetType::Tenant, Scope::Owner) => Err(Refusal::QuotaTargetNotAllowed {
            target: "tenant",
            why: "the cluster's own namespace is not a tenant; create the Quota in the tenant's namespace",
        }),
    }
}
