//! operator/rbac.yaml is a ClusterRole rules list covering what the
//! controllers call.

use k8s_openapi::api::rbac::v1::PolicyRule;

fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str) -> bool {
    rules.iter().any(|r| {
        r.api_groups
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|g| g == group)
            && r.resources
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|x| x == resource)
            && r.verbs.iter().any(|v| v == verb)
    })
}

#[test]
fn rbac_rules_parse_and_cover_the_controllers_calls() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/rbac.yaml"))
        .expect("rbac.yaml");
    let rules: Vec<PolicyRule> = serde_yaml::from_str(&text).expect("a list of PolicyRules");
    let needed = [
        ("skiff.dev", "kafkaclusters", "watch"),
        ("skiff.dev", "topics", "patch"),
        ("skiff.dev", "users/status", "patch"),
        ("skiff.dev", "quotas/status", "patch"),
        ("", "configmaps", "patch"),
        ("", "services", "create"),
        ("", "services", "delete"),
        ("", "services", "list"),
        ("", "serviceaccounts", "patch"),
        ("apps", "statefulsets", "watch"),
        ("policy", "poddisruptionbudgets", "patch"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("", "pods", "delete"),
        ("", "pods", "list"),
        // A removed broker's claim (storage.deleteClaim); a real API server
        // answered 403 without it and the claim stayed.
        ("", "persistentvolumeclaims", "delete"),
        ("", "nodes", "get"),
        ("", "secrets", "patch"),
        ("events.k8s.io", "events", "create"),
        ("coordination.k8s.io", "leases", "update"),
    ];
    for (g, r, v) in needed {
        assert!(allows(&rules, g, r, v), "rbac.yaml lacks {v} on {g}/{r}");
    }
    // Nothing broader than needed.
    assert!(rules.iter().all(|r| !r.verbs.iter().any(|v| v == "*")));
    assert!(!allows(&rules, "", "secrets", "list"));
    // Nodes are read one by one, by name: no list, no watch.
    assert!(!allows(&rules, "", "nodes", "list"));
}
