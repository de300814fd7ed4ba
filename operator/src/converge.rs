//! Converging a broker to a Topic, User or Quota spec through the Admin
//! API. Nothing here knows Kubernetes: the controllers and the
//! `reconcile-once` subcommand both call these functions.

use std::collections::{BTreeMap, BTreeSet};

use skiff_crds::user::{AclOperation, AclPatternType, AclResourceType, AclType, Authorization};

use crate::admin::requests::{
    AclBinding, ConfigChange, QuotaEntityParts, TopicInfo, acl, config_changes,
};
use crate::admin::{AdminClient, AdminError};
use crate::tenancy::QuotaEntity;

/// A topic as the spec wants it in Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTarget {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: Option<i32>,
    pub config: BTreeMap<String, String>,
}

/// What converging a topic did and found.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicOutcome {
    pub info: TopicInfo,
    pub created: bool,
    /// Partitions before a grow.
    pub grown_from: Option<i32>,
    /// The spec asks for fewer partitions than the topic has; refused.
    pub shrink_refused: bool,
    pub config_changes: Vec<ConfigChange>,
}

/// Creates the topic or brings its partitions and configs to the target.
///
/// # Errors
/// Unreachable brokers or Kafka's refusal; the caller turns it into a
/// condition.
pub async fn converge_topic(
    admin: &mut AdminClient,
    target: &TopicTarget,
) -> Result<TopicOutcome, AdminError> {
    let mut created = false;
    let mut grown_from = None;
    let mut shrink_refused = false;
    let mut changes = Vec::new();
    match admin.describe_topic(&target.name).await? {
        None => {
            admin
                .create_topic(
                    &target.name,
                    target.partitions,
                    target.replication_factor,
                    &target.config,
                )
                .await?;
            created = true;
        }
        Some(info) => {
            if info.partitions < target.partitions {
                admin
                    .create_partitions(&target.name, target.partitions)
                    .await?;
                grown_from = Some(info.partitions);
            } else if info.partitions > target.partitions {
                shrink_refused = true;
            }
            let actual = admin.topic_configs(&target.name).await?;
            changes = config_changes(&target.config, &actual);
            if !changes.is_empty() {
                admin.alter_topic_config(&target.name, &changes).await?;
            }
        }
    }
    let info = admin
        .describe_topic(&target.name)
        .await?
        .ok_or_else(|| AdminError::kafka("Metadata", 3, None))?;
    Ok(TopicOutcome {
        info,
        created,
        grown_from,
        shrink_refused,
        config_changes: changes,
    })
}

/// The ACL bindings an `authorization` block means for `principal`.
pub fn acl_bindings(principal: &str, authz: Option<&Authorization>) -> BTreeSet<AclBinding> {
    let mut out = BTreeSet::new();
    for rule in authz.map(|a| a.acls.as_slice()).unwrap_or_default() {
        let resource_type = match rule.resource.type_ {
            AclResourceType::Topic => acl::RESOURCE_TOPIC,
            AclResourceType::Group => acl::RESOURCE_GROUP,
            AclResourceType::Cluster => acl::RESOURCE_CLUSTER,
            AclResourceType::TransactionalId => acl::RESOURCE_TRANSACTIONAL_ID,
        };
        let pattern_type = match rule.resource.pattern_type {
            AclPatternType::Literal => acl::PATTERN_LITERAL,
            AclPatternType::Prefixed => acl::PATTERN_PREFIXED,
        };
        let permission_type = match rule.type_ {
            AclType::Allow => acl::PERMISSION_ALLOW,
            AclType::Deny => acl::PERMISSION_DENY,
        };
        for op in &rule.operations {
            out.insert(AclBinding {
                resource_type,
                resource_name: rule.resource.name.clone(),
                pattern_type,
                principal: principal.to_string(),
                host: rule.host.clone(),
                operation: operation_code(*op),
                permission_type,
            });
        }
    }
    out
}

fn operation_code(op: AclOperation) -> i8 {
    match op {
        AclOperation::All => 2,
        AclOperation::Read => 3,
        AclOperation::Write => 4,
        AclOperation::Create => 5,
        AclOperation::Delete => 6,
        AclOperation::Alter => 7,
        AclOperation::Describe => 8,
        AclOperation::ClusterAction => 9,
        AclOperation::DescribeConfigs => 10,
        AclOperation::AlterConfigs => 11,
        AclOperation::IdempotentWrite => 12,
    }
}

/// What converging a user did.
#[derive(Debug, Default)]
pub struct UserOutcome {
    pub credential_set: bool,
    /// A TLS user's leftover SCRAM credential was deleted.
    pub credential_removed: bool,
    pub acls_added: usize,
    pub acls_removed: usize,
    /// The ACLs could not be converged (e.g. the broker has no ACL API); the
    /// credential part still happened.
    pub acl_error: Option<AdminError>,
}

/// Sets the user's SCRAM-SHA-512 credential when `force` (a new or rotated
/// password) or when the broker has none (deleted by hand), and makes its
/// ACLs exactly `acls`.
///
/// # Errors
/// Unreachable brokers, or the credential could not be set.
pub async fn converge_user(
    admin: &mut AdminClient,
    user: &str,
    password: &str,
    force: bool,
    acls: &BTreeSet<AclBinding>,
) -> Result<UserOutcome, AdminError> {
    let mut out = UserOutcome::default();
    if force || !admin.has_scram_sha512(user).await? {
        admin.upsert_scram_sha512(user, password).await?;
        out.credential_set = true;
    }
    user_acls(admin, user, acls, out).await
}

/// A TLS user: no SCRAM credential (one left from when the User was
/// `scram-sha-512` is deleted, so the old password stops working), and its
/// ACLs exactly `acls`. The certificate is the operator's alone: the
/// brokers trust the cluster CA and need nothing per user.
///
/// # Errors
/// Unreachable brokers, or the credential could not be deleted.
pub async fn converge_tls_user(
    admin: &mut AdminClient,
    user: &str,
    acls: &BTreeSet<AclBinding>,
) -> Result<UserOutcome, AdminError> {
    let mut out = UserOutcome::default();
    if admin.has_scram_sha512(user).await? {
        admin.delete_scram_sha512(user).await?;
        out.credential_removed = true;
    }
    user_acls(admin, user, acls, out).await
}

/// The user's ACLs made exactly `acls`, into `out`: a refusal is recorded
/// there (the credential stands), unreachable brokers fail the whole call.
async fn user_acls(
    admin: &mut AdminClient,
    user: &str,
    acls: &BTreeSet<AclBinding>,
    mut out: UserOutcome,
) -> Result<UserOutcome, AdminError> {
    match converge_acls(admin, &format!("User:{user}"), acls).await {
        Ok((added, removed)) => {
            out.acls_added = added;
            out.acls_removed = removed;
        }
        Err(e) if e.is_unreachable() => return Err(e),
        Err(e) => out.acl_error = Some(e),
    }
    Ok(out)
}

/// Makes `principal`'s ACLs exactly `desired`. A broker without the ACL
/// APIs is fine while nothing is desired.
async fn converge_acls(
    admin: &mut AdminClient,
    principal: &str,
    desired: &BTreeSet<AclBinding>,
) -> Result<(usize, usize), AdminError> {
    use kafka_protocol::messages::DescribeAclsRequest;
    if desired.is_empty() && !admin.supports::<DescribeAclsRequest>() {
        return Ok((0, 0));
    }
    let actual: BTreeSet<AclBinding> = match admin.describe_acls(principal).await {
        Ok(acls) => acls.into_iter().collect(),
        // A broker without an authorizer holds no ACLs: nothing to remove,
        // and only a User that wants ACLs has a problem to report.
        Err(AdminError::Kafka {
            code: crate::admin::codes::SECURITY_DISABLED,
            ..
        }) if desired.is_empty() => {
            return Ok((0, 0));
        }
        Err(e) => return Err(e),
    };
    let add: Vec<AclBinding> = desired.difference(&actual).cloned().collect();
    let remove: Vec<AclBinding> = actual.difference(desired).cloned().collect();
    admin.create_acls(&add).await?;
    admin.delete_acls(&remove).await?;
    Ok((add.len(), remove.len()))
}

/// Removes a user from the cluster: its credential and its ACLs.
///
/// # Errors
/// Unreachable brokers or Kafka's refusal.
pub async fn delete_user(admin: &mut AdminClient, user: &str) -> Result<(), AdminError> {
    admin.delete_scram_sha512(user).await?;
    match converge_acls(admin, &format!("User:{user}"), &BTreeSet::new()).await {
        Err(e) if e.is_unreachable() => Err(e),
        // A broker without ACLs has none to delete.
        Err(AdminError::Unsupported { .. }) | Ok(_) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The quota keys Kafka knows, in the order the spec lists them.
pub const QUOTA_KEYS: [&str; 4] = [
    "producer_byte_rate",
    "consumer_byte_rate",
    "request_percentage",
    "controller_mutation_rate",
];

/// Kafka's entity for a tenancy quota entity. The tenant entity type
/// (`tenant`, named by the prefix) is Skiff's own.
pub fn quota_entity_parts(e: &QuotaEntity) -> QuotaEntityParts {
    match e {
        QuotaEntity::User(u) => vec![("user".into(), Some(u.clone()))],
        QuotaEntity::ClientId(c) => vec![("client-id".into(), Some(c.clone()))],
        QuotaEntity::UserAndClientId(u, c) => vec![
            ("user".into(), Some(u.clone())),
            ("client-id".into(), Some(c.clone())),
        ],
        QuotaEntity::DefaultUser => vec![("user".into(), None)],
        QuotaEntity::Tenant(p) => vec![("tenant".into(), Some(p.clone()))],
    }
}

/// Sets the quota's values and removes the keys the spec leaves unset.
///
/// # Errors
/// Unsupported by the broker, unreachable, or Kafka's refusal.
pub async fn converge_quota(
    admin: &mut AdminClient,
    entity: &QuotaEntity,
    values: &BTreeMap<String, f64>,
) -> Result<(), AdminError> {
    let remove: BTreeSet<String> = QUOTA_KEYS
        .iter()
        .filter(|k| !values.contains_key(**k))
        .map(|k| (*k).to_string())
        .collect();
    admin
        .alter_quotas(&quota_entity_parts(entity), values, &remove)
        .await
}

/// Removes every value of a quota entity.
///
/// # Errors
/// Unsupported by the broker, unreachable, or Kafka's refusal.
pub async fn delete_quota(admin: &mut AdminClient, entity: &QuotaEntity) -> Result<(), AdminError> {
    converge_quota(admin, entity, &BTreeMap::new()).await
}

/// The values a Quota spec sets.
pub fn quota_values(spec: &skiff_crds::QuotaSpec) -> BTreeMap<String, f64> {
    let mut v = BTreeMap::new();
    #[allow(clippy::cast_precision_loss)]
    if let Some(x) = spec.producer_byte_rate {
        v.insert(QUOTA_KEYS[0].to_string(), x as f64);
    }
    #[allow(clippy::cast_precision_loss)]
    if let Some(x) = spec.consumer_byte_rate {
        v.insert(QUOTA_KEYS[1].to_string(), x as f64);
    }
    if let Some(x) = spec.request_percentage {
        v.insert(QUOTA_KEYS[2].to_string(), x);
    }
    if let Some(x) = spec.controller_mutation_rate {
        v.insert(QUOTA_KEYS[3].to_string(), x);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_crds::user::{AclResource, AclRule};

    #[test]
    fn each_operation_of_a_rule_is_one_binding() {
        let authz = Authorization {
            acls: vec![AclRule {
                resource: AclResource {
                    type_: AclResourceType::Topic,
                    name: "team-a.".into(),
                    pattern_type: AclPatternType::Prefixed,
                },
                operations: vec![AclOperation::Read, AclOperation::Describe],
                type_: AclType::Allow,
                host: "*".into(),
            }],
        };
        let b = acl_bindings("User:team-a.alice", Some(&authz));
        assert_eq!(b.len(), 2);
        assert!(b.iter().all(|x| x.pattern_type == acl::PATTERN_PREFIXED
            && x.resource_type == acl::RESOURCE_TOPIC
            && x.permission_type == acl::PERMISSION_ALLOW));
        assert_eq!(
            b.iter().map(|x| x.operation).collect::<Vec<_>>(),
            vec![3, 8]
        );
        assert!(acl_bindings("User:x", None).is_empty());
    }

    #[test]
    fn tenant_quota_entity_is_the_prefix() {
        assert_eq!(
            quota_entity_parts(&QuotaEntity::Tenant("team-a.".into())),
            vec![("tenant".to_string(), Some("team-a.".to_string()))]
        );
        assert_eq!(
            quota_entity_parts(&QuotaEntity::DefaultUser),
            vec![("user".to_string(), None)]
        );
    }
}
