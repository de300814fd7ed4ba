use super::*;

fn acl(
    rt: ResourceType,
    name: &str,
    pt: PatternType,
    who: &str,
    op: Operation,
    perm: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: rt,
        resource_name: name.into(),
        pattern_type: pt,
        principal: who.into(),
        host: "*".into(),
        operation: op,
        permission: perm,
    }
}

use Operation as O;
use PatternType as P;
use Permission as A;
use ResourceType as R;

const ALICE: &str = "User:team-a.alice";
const BOB: &str = "User:team-b.bob";
const HOST: &str = "10.0.0.1";

#[test]
fn prefixed_allow_covers_names_under_the_prefix_only() {
    let idx = AclIndex::new([acl(
        R::Topic,
        "team-a.",
        P::Prefixed,
        ALICE,
        O::Write,
        A::Allow,
    )]);
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Write, R::Topic, "team-a.orders"),
        Decision::Allowed
    );
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Write, R::Topic, "team-b.orders"),
        Decision::NoAcls
    );
    assert_eq!(
        idx.authorize(BOB, HOST, O::Write, R::Topic, "team-a.orders"),
        Decision::NoMatchingAllow
    );
    // Same name, other resource type: not covered.
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Write, R::Group, "team-a.orders"),
        Decision::NoAcls
    );
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "team-a.orders"),
        Decision::NoMatchingAllow
    );
}

#[test]
fn literal_matches_exact_name_and_wildcard_matches_every_name() {
    let idx = AclIndex::new([
        acl(R::Topic, "orders", P::Literal, ALICE, O::Read, A::Allow),
        acl(R::Group, "*", P::Literal, "User:*", O::Read, A::Allow),
    ]);
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "orders"),
        Decision::Allowed
    );
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "orders2"),
        Decision::NoAcls
    );
    assert_eq!(
        idx.authorize(BOB, HOST, O::Read, R::Group, "anything"),
        Decision::Allowed
    );
}

#[test]
fn deny_wins_over_any_allow() {
    let idx = AclIndex::new([
        acl(R::Topic, "*", P::Literal, ALICE, O::All, A::Allow),
        acl(
            R::Topic,
            "team-a.secret",
            P::Prefixed,
            ALICE,
            O::Read,
            A::Deny,
        ),
    ]);
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "team-a.secret.x"),
        Decision::Denied
    );
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Write, R::Topic, "team-a.secret.x"),
        Decision::Allowed
    );
    // A DENY of READ does not deny the DESCRIBE it would imply.
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Describe, R::Topic, "team-a.secret.x"),
        Decision::Allowed
    );
    let all_deny = AclIndex::new([
        acl(R::Topic, "x", P::Literal, ALICE, O::Write, A::Allow),
        acl(R::Topic, "*", P::Literal, "User:*", O::All, A::Deny),
    ]);
    assert_eq!(
        all_deny.authorize(ALICE, HOST, O::Write, R::Topic, "x"),
        Decision::Denied
    );
}

#[test]
fn implied_operations() {
    for op in [O::Read, O::Write, O::Delete, O::Alter] {
        let idx = AclIndex::new([acl(R::Topic, "t", P::Literal, ALICE, op, A::Allow)]);
        assert_eq!(
            idx.authorize(ALICE, HOST, O::Describe, R::Topic, "t"),
            Decision::Allowed,
            "{op}"
        );
        assert_ne!(
            idx.authorize(ALICE, HOST, O::DescribeConfigs, R::Topic, "t"),
            Decision::Allowed
        );
    }
    for op in [
        O::Create,
        O::AlterConfigs,
        O::DescribeConfigs,
        O::ClusterAction,
    ] {
        let idx = AclIndex::new([acl(R::Topic, "t", P::Literal, ALICE, op, A::Allow)]);
        assert_ne!(
            idx.authorize(ALICE, HOST, O::Describe, R::Topic, "t"),
            Decision::Allowed,
            "{op}"
        );
    }
    let idx = AclIndex::new([acl(
        R::Topic,
        "t",
        P::Literal,
        ALICE,
        O::AlterConfigs,
        A::Allow,
    )]);
    assert_eq!(
        idx.authorize(ALICE, HOST, O::DescribeConfigs, R::Topic, "t"),
        Decision::Allowed
    );
    let idx = AclIndex::new([acl(R::Topic, "t", P::Literal, ALICE, O::All, A::Allow)]);
    for op in [
        O::Read,
        O::Write,
        O::Create,
        O::Delete,
        O::Alter,
        O::Describe,
        O::AlterConfigs,
    ] {
        assert_eq!(
            idx.authorize(ALICE, HOST, op, R::Topic, "t"),
            Decision::Allowed
        );
    }
}

#[test]
fn host_must_match_or_be_wildcard() {
    let mut a = acl(R::Topic, "t", P::Literal, ALICE, O::Read, A::Allow);
    a.host = "10.0.0.9".into();
    let idx = AclIndex::new([a]);
    assert_eq!(
        idx.authorize(ALICE, "10.0.0.9", O::Read, R::Topic, "t"),
        Decision::Allowed
    );
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "t"),
        Decision::NoMatchingAllow
    );
}

#[test]
fn insert_and_remove_keep_the_count() {
    let a = acl(R::Topic, "p.", P::Prefixed, ALICE, O::Read, A::Allow);
    let b = acl(R::Topic, "t", P::Literal, ALICE, O::Read, A::Allow);
    let mut idx = AclIndex::default();
    assert!(idx.insert(a.clone()));
    assert!(!idx.insert(a.clone()));
    assert!(idx.insert(b.clone()));
    assert_eq!(idx.len(), 2);
    assert!(idx.remove(&a));
    assert!(!idx.remove(&a));
    assert_eq!(idx.len(), 1);
    assert_eq!(
        idx.authorize(ALICE, HOST, O::Read, R::Topic, "p.x"),
        Decision::NoAcls
    );
}

fn filter(rt: R, name: Option<&str>, pt: P) -> AclFilter {
    AclFilter {
        resource_type: rt,
        resource_name: name.map(str::to_string),
        pattern_type: pt,
        principal: None,
        host: None,
        operation: O::Any,
        permission: A::Any,
    }
}

#[test]
fn filters_any_match_literal_prefixed() {
    let pre = acl(R::Topic, "team-a.", P::Prefixed, ALICE, O::Read, A::Allow);
    let lit = acl(R::Topic, "team-a.x", P::Literal, ALICE, O::Read, A::Allow);
    let wild = acl(R::Topic, "*", P::Literal, BOB, O::Read, A::Deny);
    let grp = acl(R::Group, "team-a.", P::Prefixed, ALICE, O::Read, A::Allow);
    let idx = AclIndex::new([pre.clone(), lit.clone(), wild.clone(), grp.clone()]);
    assert_eq!(idx.matching(&filter(R::Any, None, P::Any)).len(), 4);
    assert_eq!(idx.matching(&filter(R::Topic, None, P::Any)).len(), 3);
    assert_eq!(
        idx.matching(&filter(R::Topic, Some("team-a."), P::Any)),
        vec![pre.clone()]
    );
    let mut m = idx.matching(&filter(R::Topic, Some("team-a.x"), P::Match));
    m.sort();
    let mut want = vec![pre.clone(), lit.clone(), wild.clone()];
    want.sort();
    assert_eq!(m, want);
    assert_eq!(
        idx.matching(&filter(R::Topic, Some("team-a.x"), P::Literal)),
        vec![lit.clone()]
    );
    assert_eq!(idx.matching(&filter(R::Any, None, P::Prefixed)).len(), 2);
    assert!(
        idx.matching(&filter(R::Topic, Some("team-a.x"), P::Prefixed))
            .is_empty()
    );
    let mut f = filter(R::Any, None, P::Any);
    f.permission = A::Deny;
    assert_eq!(idx.matching(&f), vec![wild]);
    f.permission = A::Any;
    f.principal = Some(ALICE.into());
    f.operation = O::Read;
    assert_eq!(idx.matching(&f).len(), 3);
    f.operation = O::Write;
    assert!(idx.matching(&f).is_empty());
}

#[test]
fn invalid_bindings_are_refused_with_a_reason() {
    let ok = AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 3).unwrap();
    assert_eq!(ok.operation, O::Read);
    let bad = [
        AclBinding::from_wire(1, "t", 3, "User:a", "*", 3, 3), // ANY type
        AclBinding::from_wire(0, "t", 3, "User:a", "*", 3, 3), // UNKNOWN type
        AclBinding::from_wire(2, "t", 2, "User:a", "*", 3, 3), // MATCH pattern
        AclBinding::from_wire(2, "t", 1, "User:a", "*", 3, 3), // ANY pattern
        AclBinding::from_wire(2, "", 3, "User:a", "*", 3, 3),  // empty name
        AclBinding::from_wire(2, "t", 3, "alice", "*", 3, 3),  // principal form
        AclBinding::from_wire(2, "t", 3, "User:", "*", 3, 3),  // empty name
        AclBinding::from_wire(2, "t", 3, "User:a", "", 3, 3),  // empty host
        AclBinding::from_wire(2, "t", 3, "User:a", "*", 1, 3), // ANY op
        AclBinding::from_wire(2, "t", 3, "User:a", "*", 99, 3), // unknown op
        AclBinding::from_wire(2, "t", 3, "User:a", "*", 3, 1), // ANY permission
        AclBinding::from_wire(4, "c", 3, "User:a", "*", 7, 3), // cluster name
        AclBinding::from_wire(4, "kafka-cluster", 4, "User:a", "*", 7, 3),
        AclBinding::from_wire(2, "*", 4, "User:a", "*", 3, 3),
        AclBinding::from_wire(6, "t", 3, "User:a", "*", 3, 3), // delegation tokens
    ];
    for (i, b) in bad.into_iter().enumerate() {
        let e = b.expect_err(&format!("case {i}"));
        assert!(!e.0.is_empty());
    }
    assert!(AclFilter::from_wire(0, None, 1, None, None, 1, 1).is_err());
    assert!(AclFilter::from_wire(1, None, 1, Some("nocolon"), None, 1, 1).is_err());
    assert!(AclFilter::from_wire(1, None, 2, None, None, 1, 1).is_ok());
}

#[test]
fn allows_any_is_by_resource_type() {
    let idx = AclIndex::new([acl(
        R::Topic,
        "team-a.",
        P::Prefixed,
        ALICE,
        O::Write,
        A::Allow,
    )]);
    assert!(idx.allows_any(ALICE, HOST, O::Write, R::Topic));
    assert!(!idx.allows_any(BOB, HOST, O::Write, R::Topic));
    assert!(!idx.allows_any(ALICE, HOST, O::Write, R::Group));
    let denied = AclIndex::new([
        acl(R::Topic, "team-a.", P::Prefixed, ALICE, O::Write, A::Allow),
        acl(R::Topic, "*", P::Literal, ALICE, O::All, A::Deny),
    ]);
    assert!(!denied.allows_any(ALICE, HOST, O::Write, R::Topic));
}

#[test]
fn codes_round_trip() {
    for c in 1..=7 {
        assert_eq!(ResourceType::from_code(c).unwrap().code(), c);
    }
    for c in 1..=4 {
        assert_eq!(PatternType::from_code(c).unwrap().code(), c);
    }
    for c in 1..=14 {
        assert_eq!(Operation::from_code(c).unwrap().code(), c);
    }
    for c in 1..=3 {
        assert_eq!(Permission::from_code(c).unwrap().code(), c);
    }
    assert!(Operation::from_code(0).is_none() && Operation::from_code(15).is_none());
}
