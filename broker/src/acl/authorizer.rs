//! The broker's authorizer: the settings, the live [`AclIndex`] (changed by
//! CreateAcls/DeleteAcls after the meta store has the change) and the one
//! decision every handler asks for.

use parking_lot::RwLock;

use super::{AclIndex, Decision, Operation, ResourceType};

pub struct Authorizer {
    /// `--authorizer-enabled`: off, everything is allowed.
    pub enabled: bool,
    pub allow_if_no_acl: bool,
    super_users: Vec<String>,
    index: RwLock<AclIndex>,
}

impl Authorizer {
    pub fn new(
        enabled: bool,
        allow_if_no_acl: bool,
        super_users: Vec<String>,
        index: AclIndex,
    ) -> Self {
        Self {
            enabled,
            allow_if_no_acl,
            super_users,
            index: RwLock::new(index),
        }
    }

    pub fn index(&self) -> parking_lot::RwLockReadGuard<'_, AclIndex> {
        self.index.read()
    }

    pub fn index_mut(&self) -> parking_lot::RwLockWriteGuard<'_, AclIndex> {
        self.index.write()
    }

    /// Swaps in the ACLs another broker changed (cluster metadata).
    pub fn replace_index(&self, index: AclIndex) {
        *self.index.write() = index;
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.iter().any(|s| s == principal)
    }

    /// Whether `principal` from `host` may do `op` on (`rt`, `name`).
    pub fn allowed(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
        name: &str,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        match self.index.read().authorize(principal, host, op, rt, name) {
            Decision::Allowed => true,
            Decision::NoAcls => self.allow_if_no_acl,
            Decision::Denied | Decision::NoMatchingAllow => false,
        }
    }

    /// Whether `principal` may do `op` on some resource of type `rt`.
    pub fn allowed_any(
        &self,
        principal: &str,
        host: &str,
        op: Operation,
        rt: ResourceType,
    ) -> bool {
        if !self.enabled || self.is_super_user(principal) {
            return true;
        }
        let idx = self.index.read();
        // With allow.everyone.if.no.acl.found a resource nobody wrote ACLs
        // for may exist; Kafka answers yes there too.
        self.allow_if_no_acl || idx.allows_any(principal, host, op, rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::AclBinding;

    #[test]
    fn off_super_users_and_no_acl_found() {
        let acl = AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 3).unwrap();
        let off = Authorizer::new(false, false, vec![], AclIndex::new([acl.clone()]));
        assert!(off.allowed("User:b", "h", Operation::Read, ResourceType::Topic, "t"));
        let on = Authorizer::new(
            true,
            false,
            vec!["User:root".into()],
            AclIndex::new([acl.clone()]),
        );
        assert!(on.allowed("User:a", "h", Operation::Read, ResourceType::Topic, "t"));
        assert!(!on.allowed("User:b", "h", Operation::Read, ResourceType::Topic, "t"));
        assert!(on.allowed("User:root", "h", Operation::Read, ResourceType::Topic, "t"));
        assert!(!on.allowed("User:a", "h", Operation::Read, ResourceType::Topic, "u"));
        let open = Authorizer::new(true, true, vec![], AclIndex::new([acl]));
        assert!(open.allowed("User:b", "h", Operation::Read, ResourceType::Topic, "u"));
        // ACLs exist for t: no-acl-found does not apply.
        assert!(!open.allowed("User:b", "h", Operation::Read, ResourceType::Topic, "t"));
    }
}
