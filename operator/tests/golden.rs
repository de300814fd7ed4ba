//! Renderers and tenancy rules against golden files in `tests/golden/`,
//! reviewed by a person. `UPDATE_GOLDEN=1 cargo test -p skiff-operator`
//! rewrites them; review the diff before committing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;

use serde::Serialize;
use skiff_crds::KafkaCluster;
use skiff_operator::render::{self, RenderContext, RenderError, Rendered, Topology};
use skiff_operator::tenancy::{self, Scope};

fn assert_golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from what the code renders; if the change is intended, run \
         `UPDATE_GOLDEN=1 cargo test -p skiff-operator` and review the diff.\n--- rendered ---\n{actual}",
        path.display()
    );
}

/// A KafkaCluster as a person would write it, plus what the API server adds.
fn cluster(yaml: &str) -> KafkaCluster {
    let mut kc: KafkaCluster = serde_yaml::from_str(yaml).expect("fixture parses");
    kc.metadata
        .namespace
        .get_or_insert_with(|| "kafka".to_string());
    kc.metadata.uid = Some("6a1c2f0e-0000-4000-8000-000000000001".to_string());
    kc
}

fn docs<T: Serialize>(out: &mut String, objects: &[T]) {
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).expect("object serializes"));
    }
}

fn yaml_of(r: &Rendered) -> String {
    let mut out = String::new();
    docs(&mut out, &[&r.service_account]);
    docs(&mut out, &[&r.config_map]);
    docs(&mut out, &[&r.headless_service, &r.bootstrap_service]);
    docs(&mut out, &r.external_services);
    docs(&mut out, &[&r.stateful_set]);
    docs(&mut out, &[&r.pod_disruption_budget]);
    docs(&mut out, r.horizontal_pod_autoscaler.as_slice());
    out
}

const MINIMAL: &str = r#"
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: { name: small }
spec: {}
"#;

const FULL: &str = r#"
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: { name: prod, namespace: streaming }
spec:
  replicas: 3
  image: registry.example.com/skiff-broker:1.2.3
  resources:
    requests: { cpu: "2", memory: 4Gi }
    limits: { memory: 4Gi }
  storage: { size: 500Gi, storageClass: fast-ssd, deleteClaim: true }
  listeners:
    - { name: internal, port: 9092 }
    - { name: secure, port: 9093, tls: true, authentication: scram }
    - { name: external, port: 9094, tls: true, authentication: mtls, exposure: LoadBalancer }
  config:
    log.retention.ms: "86400000"
    num.partitions: "6"
  rack: {}
  podTemplate:
    labels: { team: platform, app.kubernetes.io/name: not-allowed-to-win }
    annotations: { prometheus.io/scrape: "true" }
    tolerations:
      - { key: dedicated, operator: Equal, value: kafka, effect: NoSchedule }
    priorityClassName: streaming-critical
  tenancy:
    tenants:
      - { namespace: team-a }
      - { namespace: team-b, prefix: b- }
  autoscaling: { minReplicas: 3, maxReplicas: 9 }
"#;

#[test]
fn a_minimal_cluster_renders_the_golden_objects() {
    let kc = cluster(MINIMAL);
    let r = render::render(
        &kc,
        &RenderContext::default(),
        Topology::new(kc.spec.replicas),
    )
    .expect("renders");
    assert_golden("minimal.yaml", &yaml_of(&r));
}

#[test]
fn a_full_cluster_renders_the_golden_objects() {
    let kc = cluster(FULL);
    let r = render::render(
        &kc,
        &RenderContext::default(),
        Topology::new(kc.spec.replicas),
    )
    .expect("renders");
    assert_golden("full.yaml", &yaml_of(&r));
}

const EXTERNAL: &str = r#"
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: { name: edge }
spec:
  replicas: 2
  listeners:
    - { name: internal, port: 9092 }
    - { name: lb, port: 9094, exposure: LoadBalancer }
    - { name: np, port: 9095, exposure: NodePort }
"#;

/// A Service of an external listener as the API server holds it once it
/// has a node port and, for a load balancer, these ingress IPs.
fn external_service(
    name: &str,
    type_: &str,
    port: &str,
    node_port: i32,
    ingress: &[&str],
) -> Service {
    let ingress: Vec<serde_json::Value> = ingress
        .iter()
        .map(|ip| serde_json::json!({"ip": ip}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "kafka"},
        "spec": {"type": type_, "ports": [{"name": port, "port": 1, "nodePort": node_port}]},
        "status": {"loadBalancer": {"ingress": ingress}}
    }))
    .expect("service")
}

#[test]
fn external_listeners_render_the_golden_objects_with_each_brokers_addresses() {
    let kc = cluster(EXTERNAL);
    let ctx = RenderContext::default();
    let plain = render::render(&kc, &ctx, Topology::new(2)).expect("renders");
    // Broker 0's Services have their addresses; broker 1's load balancer
    // has none yet, so broker 1 gets no file and waits.
    let services = vec![
        external_service("edge-0-lb", "LoadBalancer", "lb", 30100, &["203.0.113.10"]),
        external_service("edge-0-np", "NodePort", "np", 31000, &[]),
        external_service("edge-1-lb", "LoadBalancer", "lb", 30101, &[]),
        external_service("edge-1-np", "NodePort", "np", 31001, &[]),
    ];
    let now = render::external::broker_addresses(&kc, 2, &services).expect("renders");
    assert_eq!(now.pending, vec!["edge-1-lb"]);
    let files = render::external::files(&kc, 2, &now.files, &BTreeMap::new());
    let mut r = plain.clone();
    r.add_advertised(&files.files);
    assert_golden("external.yaml", &yaml_of(&r));

    let data = r.config_map.data.clone().expect("data");
    assert_eq!(
        data["advertised-0"],
        "LB://203.0.113.10:9094\nNP://:31000\n"
    );
    assert!(!data.contains_key("advertised-1"));
    // The files are not part of the pod template: an address appearing
    // restarts no broker.
    assert_eq!(plain.stateful_set, r.stateful_set);

    let env = pod_spec(&r).containers[0].env.clone().expect("env");
    let pos = |name: &str| env.iter().position(|e| e.name == name).expect(name);
    assert!(pos("SKIFF_NODE_ID") < pos("SKIFF_ADVERTISED_LISTENERS_FILE"));
    assert!(pos("HOST_IP") < pos("SKIFF_ADVERTISED_LISTENERS"));
    assert_eq!(
        env[pos("SKIFF_ADVERTISED_LISTENERS_FILE")].value.as_deref(),
        Some("/etc/skiff/advertised-$(SKIFF_NODE_ID)")
    );
    assert_eq!(
        env[pos("HOST_IP")]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("status.hostIP")
    );
    assert_eq!(
        env[pos("SKIFF_ADVERTISED_LISTENERS")].value.as_deref(),
        Some(
            "INTERNAL://$(POD_NAME).edge-brokers.kafka.svc.cluster.local:9092,\
             LB://$(POD_NAME)-lb.kafka.svc.cluster.local:9094,\
             NP://$(HOST_IP):9095,\
             OPERATOR://$(POD_NAME).edge-brokers.kafka.svc.cluster.local:19093"
        )
    );
    // An internal-only cluster has neither.
    let small = render::render(&cluster(MINIMAL), &ctx, Topology::new(1)).expect("renders");
    let env = pod_spec(&small).containers[0].env.clone().expect("env");
    assert!(
        !env.iter()
            .any(|e| e.name == "HOST_IP" || e.name == "SKIFF_ADVERTISED_LISTENERS_FILE")
    );
}

#[test]
fn node_id_comes_from_the_pod_index_label_and_advertised_listeners_from_the_pod_name() {
    let kc = cluster(FULL);
    let r = render::render(&kc, &RenderContext::default(), Topology::new(3)).expect("renders");
    let pod = r
        .stateful_set
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec");
    let env = pod.containers[0].env.clone().expect("env");
    let node_id = env
        .iter()
        .find(|e| e.name == "SKIFF_NODE_ID")
        .expect("SKIFF_NODE_ID");
    let field = node_id
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref())
        .expect("fieldRef");
    assert_eq!(
        field.field_path,
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    let pos = |name: &str| env.iter().position(|e| e.name == name).expect(name);
    assert!(
        pos("POD_NAME") < pos("SKIFF_ADVERTISED_LISTENERS"),
        "$(POD_NAME) expands only if defined earlier"
    );
    let adv = env[pos("SKIFF_ADVERTISED_LISTENERS")]
        .value
        .clone()
        .expect("value");
    assert_eq!(
        adv,
        "INTERNAL://$(POD_NAME).prod-brokers.streaming.svc.cluster.local:9092,\
         SECURE://$(POD_NAME).prod-brokers.streaming.svc.cluster.local:9093,\
         EXTERNAL://$(POD_NAME)-external.streaming.svc.cluster.local:9094,\
         OPERATOR://$(POD_NAME).prod-brokers.streaming.svc.cluster.local:19093"
    );
    let args = pod.containers[0].args.clone().expect("args");
    assert!(
        !args.iter().any(|a| a == "--node-id"),
        "a flag would win over SKIFF_NODE_ID"
    );
}

fn pod_spec(r: &Rendered) -> k8s_openapi::api::core::v1::PodSpec {
    r.stateful_set
        .spec
        .clone()
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
}

fn arg_after(r: &Rendered, flag: &str) -> String {
    let args = pod_spec(r).containers[0].args.clone().expect("args");
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("{flag} rendered"));
    args[i + 1].clone()
}

#[test]
fn every_broker_gets_the_same_cluster_id_voters_and_its_own_rpc_address() {
    let kc = cluster(FULL);
    let r = render::render(&kc, &RenderContext::default(), Topology::new(5)).expect("renders");
    // The first three ordinals vote; brokers 3 and 4 are learners.
    assert_eq!(
        arg_after(&r, "--controller-quorum-voters"),
        "0@prod-0.prod-brokers.streaming.svc.cluster.local:19092,\
         1@prod-1.prod-brokers.streaming.svc.cluster.local:19092,\
         2@prod-2.prod-brokers.streaming.svc.cluster.local:19092"
    );
    assert_eq!(arg_after(&r, "--rpc-listener"), "0.0.0.0:19092");
    assert_eq!(
        arg_after(&r, "--cluster-id"),
        render::cluster_id(&kc).expect("id")
    );
    let c = &pod_spec(&r).containers[0];
    let env = c.env.clone().expect("env");
    let pos = |name: &str| env.iter().position(|e| e.name == name).expect(name);
    assert!(pos("POD_NAME") < pos("SKIFF_RPC_ADVERTISED_LISTENER"));
    assert_eq!(
        env[pos("SKIFF_RPC_ADVERTISED_LISTENER")].value.as_deref(),
        Some("$(POD_NAME).prod-brokers.streaming.svc.cluster.local:19092")
    );
    let ports = c.ports.clone().expect("ports");
    assert!(
        ports
            .iter()
            .any(|p| p.name.as_deref() == Some("rpc") && p.container_port == 19092)
    );
    let headless = r.headless_service.spec.clone().expect("spec");
    assert!(
        headless
            .ports
            .expect("ports")
            .iter()
            .any(|p| p.name.as_deref() == Some("rpc") && p.port == 19092)
    );
    assert_eq!(headless.publish_not_ready_addresses, Some(true));

    // One broker: it is the only voter. Two: both vote.
    let one = render::render(&kc, &RenderContext::default(), Topology::new(1)).expect("renders");
    assert_eq!(
        arg_after(&one, "--controller-quorum-voters"),
        "0@prod-0.prod-brokers.streaming.svc.cluster.local:19092"
    );
    assert_eq!(Topology::new(2).voter_ids(), vec![0, 1]);
}

#[test]
fn the_cluster_id_depends_on_namespace_and_name_only() {
    let a = cluster(FULL);
    let id = render::cluster_id(&a).expect("id");
    assert!(id.starts_with("skiff-") && id.len() == 22, "{id}");
    // Re-created (new uid), re-configured, re-scaled: same id.
    let mut b = a.clone();
    b.metadata.uid = Some("another-uid".into());
    b.spec.replicas = 7;
    b.spec.config.insert("num.partitions".into(), "1".into());
    assert_eq!(render::cluster_id(&b).expect("id"), id);
    // Another name or namespace: another cluster.
    let mut c = a.clone();
    c.metadata.name = Some("prod2".into());
    assert_ne!(render::cluster_id(&c).expect("id"), id);
    let mut d = a.clone();
    d.metadata.namespace = Some("streaming2".into());
    assert_ne!(render::cluster_id(&d).expect("id"), id);
    // Pinned: a change of the derivation would split running clusters.
    assert_eq!(
        render::cluster_id(&cluster(MINIMAL)).expect("id"),
        "skiff-7a8265a315df4199"
    );
}

#[test]
fn a_scale_up_keeps_the_voters_and_the_pod_template() {
    let kc = cluster(FULL);
    let ctx = RenderContext::default();
    let three = render::render(&kc, &ctx, Topology::new(3)).expect("renders");
    let sts = three.stateful_set.clone();
    assert_eq!(
        sts.metadata.annotations.as_ref().expect("annotations")[render::METADATA_VOTERS_ANNOTATION],
        "3"
    );
    // The operator reads the voters back from the running StatefulSet.
    let grown = Topology::decide(6, Some(&sts), None);
    assert_eq!(
        grown,
        Topology {
            brokers: 6,
            voters: 3
        }
    );
    let six = render::render(&kc, &ctx, grown).expect("renders");
    assert_eq!(
        six.stateful_set.spec.as_ref().and_then(|s| s.replicas),
        Some(6)
    );
    // Same template: growing restarts no running broker.
    assert_eq!(
        three.stateful_set.spec.expect("spec").template,
        six.stateful_set.spec.expect("spec").template
    );

    // A cluster created with one broker keeps its single voter when grown;
    // the status remembers it when the StatefulSet is gone.
    let one = render::render(&kc, &ctx, Topology::new(1)).expect("renders");
    assert_eq!(
        Topology::decide(3, Some(&one.stateful_set), None),
        Topology {
            brokers: 3,
            voters: 1
        }
    );
    let status = skiff_crds::KafkaClusterStatus {
        metadata_voters: vec![0],
        ..Default::default()
    };
    assert_eq!(
        Topology::decide(3, None, Some(&status)),
        Topology {
            brokers: 3,
            voters: 1
        }
    );
    // Nothing recorded: a new cluster.
    assert_eq!(Topology::decide(5, None, None), Topology::new(5));
    assert_eq!(Topology::new(5).voters, 3);
}

#[test]
fn a_listener_on_a_reserved_port_is_refused() {
    let ctx = RenderContext::default();
    for port in [19092, 9644] {
        let mut kc = cluster(MINIMAL);
        kc.spec.listeners[0].port = port;
        let err = render::render(&kc, &ctx, Topology::new(3)).unwrap_err();
        assert_eq!(err.reason(), "InvalidListener", "{port}");
    }
    for key in [
        "controller.quorum.voters",
        "cluster.id",
        "rpc.listener",
        "rpc.advertised.listener",
    ] {
        let mut kc = cluster(MINIMAL);
        kc.spec.config.insert(key.into(), "x".into());
        assert_eq!(
            render::render(&kc, &ctx, Topology::new(3)).unwrap_err(),
            RenderError::OperatorOwnedSetting { key: key.into() }
        );
    }
}

#[test]
fn a_config_change_changes_the_pod_template_so_the_roll_sees_it() {
    let ctx = RenderContext::default();
    let hash = |kc: &KafkaCluster| {
        let r = render::render(kc, &ctx, Topology::new(3)).expect("renders");
        r.stateful_set
            .spec
            .expect("spec")
            .template
            .metadata
            .expect("meta")
            .annotations
            .expect("annotations")[render::CONFIG_HASH_ANNOTATION]
            .clone()
    };
    let a = cluster(FULL);
    let mut b = a.clone();
    assert_eq!(hash(&a), hash(&b));
    b.spec
        .config
        .insert("log.retention.ms".into(), "1000".into());
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn the_scaling_logic_decides_the_pod_count_not_spec_replicas() {
    let kc = cluster(FULL);
    let r = render::render(&kc, &RenderContext::default(), Topology::new(5)).expect("renders");
    assert_eq!(r.stateful_set.spec.and_then(|s| s.replicas), Some(5));
    // one bootstrap + one per broker for the one LoadBalancer listener
    assert_eq!(r.external_services.len(), 6);
}

#[test]
fn a_cluster_without_uid_or_with_bad_config_is_refused_not_rendered() {
    let ctx = RenderContext::default();
    let mut kc = cluster(MINIMAL);
    kc.metadata.uid = None;
    assert_eq!(
        render::render(&kc, &ctx, Topology::new(1)).unwrap_err(),
        RenderError::MissingMetadata("uid")
    );

    let mut kc = cluster(MINIMAL);
    kc.spec
        .config
        .insert("log.retention.ms".into(), "1\nnode.id=7".into());
    let err = render::render(&kc, &ctx, Topology::new(1)).unwrap_err();
    assert_eq!(err.reason(), "InvalidConfig");

    let mut kc = cluster(MINIMAL);
    kc.spec.config.insert("node.id".into(), "7".into());
    assert_eq!(
        render::render(&kc, &ctx, Topology::new(1)).unwrap_err(),
        RenderError::OperatorOwnedSetting {
            key: "node.id".into()
        }
    );
}

#[test]
fn the_protocol_map_names_every_listener_and_the_operators_own() {
    let kc = cluster(MINIMAL);
    assert!(
        render::config::properties(&kc).expect("renders").contains(
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,OPERATOR:SASL_PLAINTEXT\n"
        )
    );
    let kc = cluster(FULL);
    assert!(render::config::properties(&kc).expect("renders").contains(
        "listener.security.protocol.map=INTERNAL:PLAINTEXT,SECURE:SASL_SSL,EXTERNAL:SSL,OPERATOR:SASL_PLAINTEXT\n"
    ));
}

#[test]
fn the_operator_is_a_super_user_next_to_the_specs_and_its_listener_name_and_port_are_reserved() {
    let mut kc = cluster(MINIMAL);
    assert!(
        render::config::properties(&kc)
            .expect("renders")
            .contains("super.users=User:skiff-operator\n")
    );
    kc.spec.config.insert(
        "super.users".into(),
        "User:admin; User:skiff-operator;User:ops".into(),
    );
    assert!(
        render::config::properties(&kc)
            .expect("renders")
            .contains("super.users=User:skiff-operator;User:admin;User:ops\n")
    );
    kc.spec
        .config
        .insert("scram.bootstrap.users.file".into(), "/x".into());
    assert_eq!(
        render::config::properties(&kc).map_err(|e| e.reason()),
        Err("InvalidConfig")
    );
    for (name, port) in [("operator", 9092), ("plain", 19093)] {
        let mut kc = cluster(MINIMAL);
        kc.spec.listeners[0].name = name.into();
        kc.spec.listeners[0].port = port;
        let err = render::render(&kc, &RenderContext::default(), render::Topology::new(3))
            .expect_err("reserved");
        assert_eq!(err.reason(), "InvalidListener", "{err}");
    }
}

/// Every tenancy decision for one cluster, as a table a person can review.
#[test]
fn tenancy_decisions_match_the_golden_table() {
    let kc = cluster(FULL);
    let tenancy = kc.spec.tenancy.as_ref();
    let mut out = String::from("# namespace | input -> outcome (reason: message)\n");
    let mut line = |ns: &str, input: String, outcome: Result<String, tenancy::Refusal>| {
        let o = match outcome {
            Ok(v) => v,
            Err(r) => format!("refused {}: {r}", r.reason()),
        };
        out.push_str(&format!("{ns} | {input} -> {o}\n"));
    };
    for ns in ["streaming", "team-a", "team-b", "team-c"] {
        let scope = tenancy::scope("streaming", "prod", tenancy, ns);
        let scope = match scope {
            Ok(s) => s,
            Err(r) => {
                line(ns, "any resource".into(), Err(r));
                continue;
            }
        };
        for (name, explicit) in [
            ("orders", None),
            ("team-a.orders", None),
            ("orders", Some("team-a.payments")),
            ("orders", Some("payments")),
            ("orders", Some("__internal")),
        ] {
            line(
                ns,
                format!("Topic {name} topicName={explicit:?}"),
                tenancy::topic_name(&scope, name, explicit),
            );
        }
        line(
            ns,
            "User alice".into(),
            Ok(tenancy::user_name(&scope, "alice")),
        );
        for acl in [
            "{resource: {type: topic, name: team-a., patternType: prefixed}, operations: [Read]}",
            "{resource: {type: topic, name: '*'}, operations: [Read]}",
            "{resource: {type: group, name: b-consumers}, operations: [Read]}",
            "{resource: {type: cluster, name: kafka-cluster}, operations: [Describe]}",
        ] {
            let rule: skiff_crds::user::AclRule = serde_yaml::from_str(acl).expect("acl parses");
            line(
                ns,
                format!("ACL {acl}"),
                tenancy::check_acl(&scope, &rule).map(|()| "allowed".to_string()),
            );
        }
        for target in [
            "{type: user, user: alice}",
            "{type: clientId, clientId: app}",
            "{type: userAndClientId, user: alice, clientId: app}",
            "{type: defaults}",
            "{type: tenant}",
        ] {
            let t: skiff_crds::quota::QuotaTarget =
                serde_yaml::from_str(target).expect("target parses");
            line(
                ns,
                format!("Quota {target}"),
                tenancy::quota_entity(&scope, &t).map(|e| e.to_string()),
            );
        }
    }
    assert_golden("tenancy.txt", &out);
}

#[test]
fn overlapping_tenant_prefixes_are_refused() {
    let t: skiff_crds::kafka_cluster::Tenancy = serde_yaml::from_str(
        "tenants: [{namespace: team-a, prefix: team}, {namespace: team-ab, prefix: team-ab.}]",
    )
    .expect("parses");
    let err = tenancy::check_tenancy(&t).unwrap_err();
    assert_eq!(err.reason(), "OverlappingTenantPrefixes");
    let ok: skiff_crds::kafka_cluster::Tenancy =
        serde_yaml::from_str("tenants: [{namespace: team-a}, {namespace: team-ab}]")
            .expect("parses");
    assert_eq!(tenancy::check_tenancy(&ok), Ok(()));
}

#[test]
fn a_topic_from_a_foreign_namespace_is_refused_with_a_reason() {
    let kc = cluster(MINIMAL);
    let err = tenancy::scope("kafka", "small", kc.spec.tenancy.as_ref(), "team-a").unwrap_err();
    assert_eq!(err.reason(), "NamespaceNotAllowed");
    assert_eq!(
        tenancy::scope("kafka", "small", None, "kafka"),
        Ok(Scope::Owner)
    );
}

const RACKED: &str = r#"
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: { name: zoned }
spec:
  replicas: 3
  rack: { topologyKey: topology.kubernetes.io/zone }
"#;

#[test]
fn a_rack_aware_cluster_renders_the_golden_objects_with_each_nodes_rack() {
    let kc = cluster(RACKED);
    let ctx = RenderContext::default();
    let plain = render::render(&kc, &ctx, Topology::new(3)).expect("renders");
    // Brokers 0 and 1 run on labelled nodes; broker 2's node has no label,
    // so it gets no rack and waits.
    let node = |name: &str, zone: Option<&str>| {
        let labels = zone.map(|z| BTreeMap::from([("topology.kubernetes.io/zone", z)]));
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(
            serde_json::json!({"metadata": {"name": name, "labels": labels}}),
        )
        .expect("node");
        (name.to_string(), Some(n))
    };
    let nodes = BTreeMap::from([
        node("node-a1", Some("eu-west-1a")),
        node("node-b1", Some("eu-west-1b")),
        node("node-x", None),
    ]);
    let pods = [
        (0, Some("node-a1".to_string())),
        (1, Some("node-b1".to_string())),
        (2, Some("node-x".to_string())),
    ];
    let racks = render::rack::racks(
        "topology.kubernetes.io/zone",
        &pods,
        &nodes,
        &BTreeMap::new(),
    );
    assert_eq!(racks.waiting(), vec![2]);
    let mut r = plain.clone();
    r.add_racks(&racks.files);
    assert_golden("rack.yaml", &yaml_of(&r));

    let data = r.config_map.data.clone().expect("data");
    assert_eq!(data["rack-node-a1"], "eu-west-1a\n");
    assert_eq!(data["rack-node-b1"], "eu-west-1b\n");
    assert!(!data.contains_key("rack-node-x"));
    // The racks are not part of the pod template: a rack appearing
    // restarts no broker.
    assert_eq!(plain.stateful_set, r.stateful_set);

    let pod = pod_spec(&r);
    let env = pod.containers[0].env.clone().expect("env");
    let pos = |name: &str| env.iter().position(|e| e.name == name).expect(name);
    assert!(
        pos("NODE_NAME") < pos("SKIFF_BROKER_RACK_FILE"),
        "$(NODE_NAME) expands only if defined earlier"
    );
    assert_eq!(
        env[pos("SKIFF_BROKER_RACK_FILE")].value.as_deref(),
        Some("/etc/skiff/rack-$(NODE_NAME)")
    );
    assert_eq!(
        env[pos("NODE_NAME")]
            .value_from
            .as_ref()
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName")
    );
    // Spread over the same label, and never onto a node without it.
    let spread = pod.topology_spread_constraints.expect("spread");
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].when_unsatisfiable, "DoNotSchedule");
    // A cluster without rack has neither variable.
    let small = render::render(&cluster(MINIMAL), &ctx, Topology::new(1)).expect("renders");
    let env = pod_spec(&small).containers[0].env.clone().expect("env");
    assert!(
        !env.iter()
            .any(|e| e.name == "NODE_NAME" || e.name == "SKIFF_BROKER_RACK_FILE")
    );
}
