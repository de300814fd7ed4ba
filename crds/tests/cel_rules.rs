//! The CEL rules (`x-kubernetes-validations`) compile and fit the API
//! server's cost budget. A real API server (Kubernetes 1.24 with
//! `CustomResourceValidationExpressions`) refused three of the four CRDs:
//! a field named `namespace` selected unescaped (a CEL reserved word: the
//! server only knows it as `__namespace__`), a comparison of two booleans
//! (`has(a) == has(b)`, priced beyond the budget), and uniqueness rules
//! over strings without `maxLength`. These checks stand in for that server.

use serde_json::Value;

/// CEL's reserved words: a property with one of these names is only
/// reachable as `__word__` in a rule.
const CEL_RESERVED: [&str; 21] = [
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// Every schema node with rules: (path, node).
fn nodes_with_rules<'a>(path: &str, v: &'a Value, out: &mut Vec<(String, &'a Value)>) {
    let Some(obj) = v.as_object() else {
        return;
    };
    if obj.contains_key("x-kubernetes-validations") {
        out.push((path.to_string(), v));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, p) in props {
            nodes_with_rules(&format!("{path}.{k}"), p, out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            nodes_with_rules(&format!("{path}[]"), child, out);
        }
    }
}

fn all_rules() -> Vec<(String, Value, String)> {
    let mut out = Vec::new();
    for (kind, crd) in skiff_crds::crds() {
        let crd = serde_json::to_value(&crd).expect("a CRD serializes");
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut nodes = Vec::new();
            nodes_with_rules(kind, schema, &mut nodes);
            for (path, node) in nodes {
                for r in node["x-kubernetes-validations"].as_array().expect("a list") {
                    let rule = r["rule"].as_str().expect("a rule").to_string();
                    out.push((path.clone(), node.clone(), rule));
                }
            }
        }
    }
    out
}

/// The identifiers selected with `.name` in a rule (string literals
/// skipped).
fn selected_fields(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut quote: Option<char> = None;
    let chars: Vec<char> = rule.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '.' => {
                let ident: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                if !ident.is_empty() {
                    out.push(ident);
                }
            }
            None => {}
        }
        i += 1;
    }
    out
}

#[test]
fn no_rule_selects_a_cel_reserved_word_unescaped() {
    let rules = all_rules();
    assert!(rules.len() > 10, "the CRDs have their rules");
    for (path, _, rule) in &rules {
        for f in selected_fields(rule) {
            assert!(
                !CEL_RESERVED.contains(&f.as_str()),
                "{path}: rule {rule:?} selects `.{f}`; CEL needs `.__{f}__`"
            );
        }
    }
    assert_eq!(
        selected_fields(
            "self.all(t, self.exists_one(u, u.__namespace__ == t.namespace)) && 'a.in' != ''"
        ),
        ["all", "exists_one", "__namespace__", "namespace"]
    );
}

#[test]
fn no_rule_compares_two_booleans() {
    for (path, _, rule) in all_rules() {
        assert!(
            !rule.contains(") == has(") && !rule.contains(") != has("),
            "{path}: rule {rule:?} compares booleans, which Kubernetes 1.24 prices beyond the CEL budget; use `a ? b : !b`"
        );
    }
}

#[test]
fn uniqueness_rules_iterate_bounded_lists_of_bounded_values() {
    let mut seen = 0;
    for (path, node, rule) in all_rules() {
        if !rule.contains("exists_one(") {
            continue;
        }
        seen += 1;
        assert!(
            node["maxItems"].as_u64().is_some(),
            "{path}: {rule:?} runs over a list without maxItems"
        );
        let props = &node["items"]["properties"];
        for f in selected_fields(&rule) {
            let name = f.trim_start_matches("__").trim_end_matches("__");
            let Some(p) = props.get(name) else {
                continue;
            };
            if p["type"] == "string" {
                assert!(
                    p["maxLength"].as_u64().is_some(),
                    "{path}: {rule:?} compares `{name}`, a string without maxLength"
                );
            }
        }
    }
    assert!(
        seen >= 3,
        "the listener and tenant uniqueness rules are checked"
    );
}

#[test]
fn what_the_statefulsets_claim_template_takes_is_immutable() {
    // A real API server refuses every apply of a StatefulSet whose claim
    // template changed (422), which wedged the cluster's reconcile: the
    // schema refuses the change instead.
    let storage: Vec<String> = all_rules()
        .into_iter()
        .filter(|(path, _, _)| path == "KafkaCluster.spec.storage")
        .map(|(_, _, rule)| rule)
        .collect();
    for field in ["size", "storageClass"] {
        assert!(
            storage
                .iter()
                .any(|r| r.contains(&format!("self.{field} == oldSelf.{field}"))),
            "spec.storage.{field} has no immutability rule: {storage:?}"
        );
    }
}
