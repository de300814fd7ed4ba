//! ACLs with Kafka's semantics, as a pure module: the records ([`AclBinding`]),
//! the filters CreateAcls/DescribeAcls/DeleteAcls use ([`AclFilter`]), and
//! the decision ([`AclIndex::authorize`]).
//!
//! The rules are Kafka's (`StandardAuthorizer`):
//! - an ACL applies to a resource when its type matches and its pattern does:
//!   LITERAL equal to the name, LITERAL `*` (every resource of the type), or
//!   PREFIXED a prefix of the name;
//! - it applies to a request when its principal is the caller or `User:*`
//!   and its host is the caller's address or `*`;
//! - any applicable DENY for the operation (or for ALL) refuses, whatever
//!   else allows it;
//! - else an applicable ALLOW for the operation, for ALL, or for an operation
//!   that implies it (READ, WRITE, DELETE, ALTER imply DESCRIBE; ALTER_CONFIGS
//!   implies DESCRIBE_CONFIGS) allows;
//! - a resource that no ACL applies to at all (any principal, any operation)
//!   is allowed only with `allow.everyone.if.no.acl.found`.
//!
//! Super users never reach this module (the caller bypasses it).

pub mod authorizer;

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Kafka's resource types (wire codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum ResourceType {
    Any,
    Topic,
    Group,
    Cluster,
    TransactionalId,
    DelegationToken,
    User,
}

impl ResourceType {
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            1 => Self::Any,
            2 => Self::Topic,
            3 => Self::Group,
            4 => Self::Cluster,
            5 => Self::TransactionalId,
            6 => Self::DelegationToken,
            7 => Self::User,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Any => 1,
            Self::Topic => 2,
            Self::Group => 3,
            Self::Cluster => 4,
            Self::TransactionalId => 5,
            Self::DelegationToken => 6,
            Self::User => 7,
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Any => "Any",
            Self::Topic => "Topic",
            Self::Group => "Group",
            Self::Cluster => "Cluster",
            Self::TransactionalId => "TransactionalId",
            Self::DelegationToken => "DelegationToken",
            Self::User => "User",
        })
    }
}

/// Kafka's pattern types. ANY and MATCH exist only in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum PatternType {
    Any,
    Match,
    Literal,
    Prefixed,
}

impl PatternType {
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            1 => Self::Any,
            2 => Self::Match,
            3 => Self::Literal,
            4 => Self::Prefixed,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Any => 1,
            Self::Match => 2,
            Self::Literal => 3,
            Self::Prefixed => 4,
        }
    }
}

/// Kafka's ACL operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Operation {
    Any,
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
    CreateTokens,
    DescribeTokens,
}

impl Operation {
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            1 => Self::Any,
            2 => Self::All,
            3 => Self::Read,
            4 => Self::Write,
            5 => Self::Create,
            6 => Self::Delete,
            7 => Self::Alter,
            8 => Self::Describe,
            9 => Self::ClusterAction,
            10 => Self::DescribeConfigs,
            11 => Self::AlterConfigs,
            12 => Self::IdempotentWrite,
            13 => Self::CreateTokens,
            14 => Self::DescribeTokens,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Any => 1,
            Self::All => 2,
            Self::Read => 3,
            Self::Write => 4,
            Self::Create => 5,
            Self::Delete => 6,
            Self::Alter => 7,
            Self::Describe => 8,
            Self::ClusterAction => 9,
            Self::DescribeConfigs => 10,
            Self::AlterConfigs => 11,
            Self::IdempotentWrite => 12,
            Self::CreateTokens => 13,
            Self::DescribeTokens => 14,
        }
    }

    /// Whether an ALLOW for `self` grants `wanted`.
    fn grants(self, wanted: Operation) -> bool {
        self == wanted
            || self == Self::All
            || (wanted == Self::Describe
                && matches!(self, Self::Read | Self::Write | Self::Delete | Self::Alter))
            || (wanted == Self::DescribeConfigs && self == Self::AlterConfigs)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Permission {
    Any,
    Deny,
    Allow,
}

impl Permission {
    pub fn from_code(c: i8) -> Option<Self> {
        Some(match c {
            1 => Self::Any,
            2 => Self::Deny,
            3 => Self::Allow,
            _ => return None,
        })
    }

    pub fn code(self) -> i8 {
        match self {
            Self::Any => 1,
            Self::Deny => 2,
            Self::Allow => 3,
        }
    }
}

/// The one resource name a CLUSTER ACL may have.
pub const CLUSTER_NAME: &str = "kafka-cluster";
pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// One stored ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why an ACL or filter was refused (answered as INVALID_REQUEST).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidAcl(pub String);

fn invalid<T>(msg: impl Into<String>) -> Result<T, InvalidAcl> {
    Err(InvalidAcl(msg.into()))
}

/// Checks a principal has Kafka's `Type:name` form.
fn check_principal(p: &str) -> Result<(), InvalidAcl> {
    match p.split_once(':') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(()),
        _ => invalid(format!(
            "principal {p:?} is not of the form Type:name (e.g. User:alice)"
        )),
    }
}

impl AclBinding {
    /// Builds an ACL from CreateAcls' codes, refusing what Kafka refuses.
    ///
    /// # Errors
    /// Unknown or filter-only codes, an empty name, a malformed principal or
    /// host, a CLUSTER resource not named `kafka-cluster`.
    pub fn from_wire(
        resource_type: i8,
        resource_name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<Self, InvalidAcl> {
        let rt = match ResourceType::from_code(resource_type) {
            Some(ResourceType::Any) | None => {
                return invalid(format!("invalid resource type {resource_type}"));
            }
            Some(
                t @ (ResourceType::Topic
                | ResourceType::Group
                | ResourceType::Cluster
                | ResourceType::TransactionalId),
            ) => t,
            Some(t) => return invalid(format!("resource type {t} is not supported")),
        };
        let pt = match PatternType::from_code(pattern_type) {
            Some(p @ (PatternType::Literal | PatternType::Prefixed)) => p,
            _ => {
                return invalid(format!(
                    "invalid pattern type {pattern_type}: ACLs are LITERAL or PREFIXED"
                ));
            }
        };
        if resource_name.is_empty() {
            return invalid("resource name must not be empty");
        }
        if rt == ResourceType::Cluster
            && (resource_name != CLUSTER_NAME || pt != PatternType::Literal)
        {
            return invalid(format!("a CLUSTER ACL must be LITERAL on {CLUSTER_NAME:?}"));
        }
        if pt == PatternType::Prefixed && resource_name == WILDCARD {
            return invalid("a PREFIXED ACL cannot use the wildcard name '*'");
        }
        check_principal(principal)?;
        if host.is_empty() {
            return invalid("host must not be empty (use '*' for any host)");
        }
        let op = match Operation::from_code(operation) {
            Some(Operation::Any) | None => {
                return invalid(format!("invalid operation {operation}"));
            }
            Some(o) => o,
        };
        let perm = match Permission::from_code(permission) {
            Some(Permission::Any) | None => {
                return invalid(format!("invalid permission type {permission}"));
            }
            Some(p) => p,
        };
        Ok(Self {
            resource_type: rt,
            resource_name: resource_name.to_string(),
            pattern_type: pt,
            principal: principal.to_string(),
            host: host.to_string(),
            operation: op,
            permission: perm,
        })
    }

    /// Whether this ACL's pattern covers the resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.resource_name == name || self.resource_name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.resource_name),
            PatternType::Any | PatternType::Match => false,
        }
    }

    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// A DescribeAcls/DeleteAcls filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Operation,
    pub permission: Permission,
}

impl AclFilter {
    /// # Errors
    /// Unknown codes (UNKNOWN is never a valid filter), a malformed principal.
    pub fn from_wire(
        resource_type: i8,
        resource_name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Result<Self, InvalidAcl> {
        let f = Self {
            resource_type: ResourceType::from_code(resource_type)
                .ok_or_else(|| InvalidAcl(format!("invalid resource type {resource_type}")))?,
            resource_name: resource_name.map(str::to_string),
            pattern_type: PatternType::from_code(pattern_type)
                .ok_or_else(|| InvalidAcl(format!("invalid pattern type {pattern_type}")))?,
            principal: principal.map(str::to_string),
            host: host.map(str::to_string),
            operation: Operation::from_code(operation)
                .ok_or_else(|| InvalidAcl(format!("invalid operation {operation}")))?,
            permission: Permission::from_code(permission)
                .ok_or_else(|| InvalidAcl(format!("invalid permission type {permission}")))?,
        };
        if let Some(p) = &f.principal {
            check_principal(p)?;
        }
        Ok(f)
    }

    /// Kafka's `AclBindingFilter.matches`.
    pub fn matches(&self, acl: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != acl.resource_type {
            return false;
        }
        let pattern_ok = match (self.pattern_type, &self.resource_name) {
            (PatternType::Any, None) | (PatternType::Match, None) => true,
            (PatternType::Any, Some(n)) => &acl.resource_name == n,
            (PatternType::Match, Some(n)) => acl.covers(n),
            (p, name) => {
                p == acl.pattern_type && name.as_ref().is_none_or(|n| n == &acl.resource_name)
            }
        };
        pattern_ok
            && self.principal.as_ref().is_none_or(|p| p == &acl.principal)
            && self.host.as_ref().is_none_or(|h| h == &acl.host)
            && (self.operation == Operation::Any || self.operation == acl.operation)
            && (self.permission == Permission::Any || self.permission == acl.permission)
    }
}

/// Every ACL, indexed for the hot path: literal ACLs by (type, name), the
/// few prefixed ones in a list per type.
#[derive(Debug, Default, Clone)]
pub struct AclIndex {
    literal: HashMap<(ResourceType, String), Vec<AclBinding>>,
    prefixed: HashMap<ResourceType, Vec<AclBinding>>,
    count: usize,
}

/// The outcome of [`AclIndex::authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// An applicable DENY.
    Denied,
    /// ACLs exist for the resource, none allows.
    NoMatchingAllow,
    /// No ACL applies to the resource at all.
    NoAcls,
}

impl AclIndex {
    pub fn new(acls: impl IntoIterator<Item = AclBinding>) -> Self {
        let mut idx = Self::default();
        for a in acls {
            idx.insert(a);
        }
        idx
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds `acl`; false when it was already there.
    pub fn insert(&mut self, acl: AclBinding) -> bool {
        let list = match acl.pattern_type {
            PatternType::Prefixed => self.prefixed.entry(acl.resource_type).or_default(),
            _ => self
                .literal
                .entry((acl.resource_type, acl.resource_name.clone()))
                .or_default(),
        };
        if list.contains(&acl) {
            return false;
        }
        list.push(acl);
        self.count += 1;
        true
    }

    pub fn remove(&mut self, acl: &AclBinding) -> bool {
        let list = match acl.pattern_type {
            PatternType::Prefixed => self.prefixed.get_mut(&acl.resource_type),
            _ => self
                .literal
                .get_mut(&(acl.resource_type, acl.resource_name.clone())),
        };
        let Some(list) = list else { return false };
        let before = list.len();
        list.retain(|a| a != acl);
        let removed = list.len() < before;
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Every ACL matching `filter`, sorted.
    pub fn matching(&self, filter: &AclFilter) -> Vec<AclBinding> {
        let mut out: Vec<AclBinding> = self
            .literal
            .values()
            .chain(self.prefixed.values())
            .flatten()
            .filter(|a| filter.matches(a))
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The ACLs whose pattern covers (`rt`, `name`).
    fn covering<'a>(
        &'a self,
        rt: ResourceType,
        name: &'a str,
    ) -> impl Iterator<Item = &'a AclBinding> {
        let exact = self.literal.get(&(rt, name.to_string()));
        let wildcard = if name == WILDCARD {
            None
        } else {
            self.literal.get(&(rt, WILDCARD.to_string()))
        };
        let prefixed = self
            .prefixed
            .get(&rt)
            .into_iter()
            .flatten()
            .filter(move |a| a.covers(name));
        exact
            .into_iter()
            .flatten()
            .chain(wildcard.into_iter().flatten())
            .chain(prefixed)
    }

    /// Decides whether `principal` (`User:name`) from `host` may do `op` on
    /// the resource (`rt`, `name`).
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> Decision {
        let mut any = false;
        let mut allowed = false;
        for acl in self.covering(rt, name) {
            any = true;
            if !acl.applies_to(principal, host) {
                continue;
            }
            match acl.permission {
                Permission::Deny if acl.operation == op || acl.operation == Operation::All => {
                    return Decision::Denied;
                }
                Permission::Allow if acl.operation.grants(op) => allowed = true,
                _ => {}
            }
        }
        if allowed {
            Decision::Allowed
        } else if any {
            Decision::NoMatchingAllow
        } else {
            Decision::NoAcls
        }
    }

    /// Whether any ACL of type `rt` could allow `principal` `op` on some
    /// resource (Kafka's `authorizeByResourceType`, used for an idempotent
    /// producer's "WRITE on any topic"): an applicable ALLOW exists and no
    /// applicable DENY on the wildcard literal blocks every resource.
    pub fn allows_any(&self, principal: &str, host: &str, op: Operation, rt: ResourceType) -> bool {
        let all = self
            .literal
            .iter()
            .filter(|((t, _), _)| *t == rt)
            .flat_map(|(_, v)| v)
            .chain(self.prefixed.get(&rt).into_iter().flatten());
        let mut allowed = false;
        for acl in all {
            if !acl.applies_to(principal, host) {
                continue;
            }
            match acl.permission {
                Permission::Deny
                    if acl.resource_name == WILDCARD
                        && acl.pattern_type == PatternType::Literal
                        && (acl.operation == op || acl.operation == Operation::All) =>
                {
                    return false;
                }
                Permission::Allow if acl.operation.grants(op) => allowed = true,
                _ => {}
            }
        }
        allowed
    }
}

#[cfg(test)]
mod tests;
