//! Reconcile flows against a mocked Kubernetes API (tower-test): each test
//! scripts the API server's answers in order and checks the requests the
//! controller makes. Where a flow reaches the brokers, a real skiff-broker
//! process answers (through the bootstrap-override annotation).

// Shared with admin_broker.rs; this crate does not use every helper.
#[allow(dead_code)]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::{Client, Resource};
use serde_json::{Value, json};
use skiff_crds::{KafkaCluster, Topic, User};
use skiff_operator::controllers::{self, Context, error_policy};
use skiff_operator::render::RenderContext;
use skiff_operator::runtime::metrics::Metrics;
use tower_test::mock::{self, Handle};

/// One scripted answer: the request must have this method and its path
/// must contain `path`.
struct Step {
    method: &'static str,
    path: &'static str,
    status: u16,
    body: Value,
}

fn step(method: &'static str, path: &'static str, status: u16, body: Value) -> Step {
    Step {
        method,
        path,
        status,
        body,
    }
}

/// A request the controller made.
#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    body: Value,
}

fn mock_client() -> (Client, Handle<Request<Body>, Response<Body>>) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(svc, "default"), handle)
}

/// Answers the script in order and returns what was asked.
fn serve(
    mut handle: Handle<Request<Body>, Response<Body>>,
    steps: Vec<Step>,
) -> tokio::task::JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        for s in steps {
            let (req, send) = tokio::time::timeout(Duration::from_secs(30), handle.next_request())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no request for step {} {}; seen {seen:#?}",
                        s.method, s.path
                    )
                })
                .expect("service alive");
            let method = req.method().to_string();
            let path = req.uri().to_string();
            let bytes = req.into_body().collect_bytes().await.expect("body");
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert_eq!(method, s.method, "request {path}; seen so far {seen:#?}");
            assert!(
                path.contains(s.path),
                "expected {} {}, got {path}",
                s.method,
                s.path
            );
            seen.push(Seen { method, path, body });
            send.send_response(
                Response::builder()
                    .status(s.status)
                    .body(Body::from(serde_json::to_vec(&s.body).expect("json")))
                    .expect("response"),
            );
        }
        seen
    })
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        Arc::new(Metrics::new()),
        RenderContext::default(),
        Default::default(),
    ))
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"})
}

/// A Service of the cluster `kafka`, controlled by the KafkaCluster `uid`.
fn owned_service(name: &str, uid: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "kafka",
        "ownerReferences": [{"apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
            "name": "kafka", "uid": uid, "controller": true}]}})
}

fn event_ok() -> Value {
    json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "team-a"}, "eventTime": "2026-01-01T00:00:00.000000Z"})
}

fn topic(finalizer: bool, deleting: bool, extra_spec: Value) -> Topic {
    let mut spec = json!({"clusterRef": {"name": "kafka", "namespace": "kafka"}, "partitions": 3});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra_spec.as_object()) {
        s.extend(e.clone());
    }
    let mut meta = json!({"name": "orders", "namespace": "team-a", "uid": "u-1", "generation": 2, "resourceVersion": "7"});
    if finalizer {
        meta["finalizers"] = json!(["skiff.dev/cleanup"]);
    }
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(json!({"apiVersion": "skiff.dev/v1alpha1", "kind": "Topic", "metadata": meta, "spec": spec}))
        .expect("topic")
}

fn cluster(bootstrap: &str, tenants: Value) -> Value {
    json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1",
                     "annotations": {"skiff.dev/operator-bootstrap": bootstrap}},
        "spec": {"replicas": 3, "tenancy": {"tenants": tenants}}
    })
}

fn ready(status_patch: &Value) -> (&str, &str) {
    let c = status_patch["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .expect("a Ready condition");
    (
        c["status"].as_str().unwrap_or(""),
        c["reason"].as_str().unwrap_or(""),
    )
}

#[tokio::test]
async fn a_new_topic_first_gets_the_finalizer() {
    let (client, handle) = mock_client();
    let mut with_fin = serde_json::to_value(topic(true, false, json!({}))).expect("json");
    with_fin["metadata"]["resourceVersion"] = json!("8");
    let server = serve(
        handle,
        vec![step(
            "PATCH",
            "/apis/skiff.dev/v1alpha1/namespaces/team-a/topics/orders",
            200,
            with_fin,
        )],
    );
    let action =
        controllers::topic::reconcile(Arc::new(topic(false, false, json!({}))), context(client))
            .await
            .expect("reconcile");
    assert_eq!(action, Action::await_change());
    let seen = server.await.expect("server");
    let ops = seen[0].body.as_array().expect("a JSON patch");
    assert!(
        ops.iter().any(|op| op["op"] == "add"
            && op["path"]
                .as_str()
                .unwrap_or("")
                .starts_with("/metadata/finalizers")),
        "{ops:?}"
    );
}

#[tokio::test]
async fn a_topic_of_a_missing_cluster_is_not_ready_with_an_event() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/apis/skiff.dev/v1alpha1/namespaces/kafka/kafkaclusters/kafka",
                404,
                not_found(),
            ),
            step(
                "PATCH",
                "/namespaces/team-a/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
            step(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/team-a/events",
                201,
                event_ok(),
            ),
        ],
    );
    let action =
        controllers::topic::reconcile(Arc::new(topic(true, false, json!({}))), context(client))
            .await
            .expect("reconcile");
    assert_eq!(action, Action::requeue(controllers::RESYNC));
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[1].body), ("False", "ClusterNotFound"));
    assert_eq!(seen[1].body["status"]["observedGeneration"], 2);
    assert_eq!(seen[2].body["reason"], "ClusterNotFound");
    assert_eq!(seen[2].body["type"], "Warning");
}

#[tokio::test]
async fn a_topic_from_a_namespace_the_cluster_does_not_accept_is_refused() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster("127.0.0.1:1", json!([{"namespace": "team-b"}])),
            ),
            step(
                "PATCH",
                "/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
            step("POST", "/events", 201, event_ok()),
        ],
    );
    controllers::topic::reconcile(Arc::new(topic(true, false, json!({}))), context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[1].body), ("False", "NamespaceNotAllowed"));
    assert!(
        seen[2].body["note"]
            .as_str()
            .unwrap_or("")
            .contains("spec.tenancy.tenants")
    );
}

#[tokio::test]
async fn a_topic_outside_the_tenant_prefix_is_refused() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster("127.0.0.1:1", json!([{"namespace": "team-a"}])),
            ),
            step(
                "PATCH",
                "/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
            step("POST", "/events", 201, event_ok()),
        ],
    );
    controllers::topic::reconcile(
        Arc::new(topic(true, false, json!({"topicName": "team-b.orders"}))),
        context(client),
    )
    .await
    .expect("reconcile");
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[1].body), ("False", "NameOutsideTenantPrefix"));
}

#[tokio::test]
async fn an_unreachable_cluster_leaves_the_topic_not_ready_and_backs_off() {
    let (client, handle) = mock_client();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(
                    &format!("127.0.0.1:{port}"),
                    json!([{"namespace": "team-a"}]),
                ),
            ),
            step(
                "PATCH",
                "/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
        ],
    );
    let ctx = context(client);
    let t = Arc::new(topic(true, false, json!({})));
    let err = controllers::topic::reconcile(t.clone(), ctx.clone())
        .await
        .expect_err("unreachable");
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[1].body), ("False", "ClusterUnreachable"));
    // The retry backs off: 5 s, then 10 s, never a hot loop.
    assert_eq!(
        error_policy(t.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(t, &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert!(ctx.metrics.render().contains(
        r#"skiff_operator_reconcile_errors_total{controller="topic",reason="ClusterUnreachable"} 1"#
    ));
}

#[tokio::test]
async fn a_topic_is_created_in_a_real_broker_and_its_status_set() {
    let broker = support::Broker::start().await;
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
        ],
    );
    let action = controllers::topic::reconcile(
        Arc::new(topic(
            true,
            false,
            json!({"config": {"retention.ms": "60000"}}),
        )),
        context(client),
    )
    .await
    .expect("reconcile");
    assert_eq!(action, Action::requeue(controllers::RESYNC));
    let seen = server.await.expect("server");
    assert_eq!(seen[1].body["reason"], "Created");
    let st = &seen[2].body["status"];
    assert_eq!(ready(&seen[2].body), ("True", "Ready"));
    assert_eq!(st["topicName"], "team-a.orders");
    assert_eq!(st["partitions"], 3);
    assert!(st["topicId"].as_str().is_some_and(|s| s.len() == 36));
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    assert_eq!(
        admin
            .describe_topic("team-a.orders")
            .await
            .expect("md")
            .expect("exists")
            .partitions,
        3
    );
}

#[tokio::test]
async fn deleting_a_topic_deletes_it_from_the_broker_then_drops_the_finalizer() {
    let broker = support::Broker::start().await;
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    admin
        .create_topic("team-a.orders", 1, None, &Default::default())
        .await
        .expect("create");
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/topics/orders",
                200,
                serde_json::to_value(topic(false, true, json!({}))).expect("json"),
            ),
        ],
    );
    controllers::topic::reconcile(Arc::new(topic(true, true, json!({}))), context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    assert_eq!(seen[1].body["reason"], "Deleted");
    let ops = seen[2].body.as_array().expect("json patch");
    assert!(ops.iter().any(|op| op["op"] == "remove"), "{ops:?}");
    assert!(
        admin
            .describe_topic("team-a.orders")
            .await
            .expect("md")
            .is_none()
    );
}

#[tokio::test]
async fn a_retained_topic_only_loses_its_finalizer() {
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![step(
            "PATCH",
            "/topics/orders",
            200,
            serde_json::to_value(topic(false, true, json!({}))).expect("json"),
        )],
    );
    controllers::topic::reconcile(
        Arc::new(topic(true, true, json!({"deletionPolicy": "Retain"}))),
        context(client),
    )
    .await
    .expect("reconcile");
    let seen = server.await.expect("server");
    assert_eq!(seen.len(), 1, "no cluster lookup, no broker call");
}

#[tokio::test]
async fn a_status_conflict_fails_the_reconcile_and_the_retry_succeeds() {
    let (client, handle) = mock_client();
    let t = Arc::new(topic(true, false, json!({})));
    let server = serve(
        handle,
        vec![
            step("GET", "/kafkaclusters/kafka", 404, not_found()),
            step("PATCH", "/topics/orders/status", 409, conflict()),
            // The retry.
            step("GET", "/kafkaclusters/kafka", 404, not_found()),
            step(
                "PATCH",
                "/topics/orders/status",
                200,
                serde_json::to_value(topic(true, false, json!({}))).expect("json"),
            ),
            step("POST", "/events", 201, event_ok()),
        ],
    );
    let ctx = context(client);
    let err = controllers::topic::reconcile(t.clone(), ctx.clone())
        .await
        .expect_err("409");
    assert!(
        err.to_string().contains("409") || format!("{err:?}").contains("409"),
        "{err:?}"
    );
    assert_eq!(
        error_policy(t.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    controllers::topic::reconcile(t.clone(), ctx.clone())
        .await
        .expect("retry");
    // Success resets the backoff.
    assert_eq!(
        error_policy(t, &err, ctx),
        Action::requeue(Duration::from_secs(5))
    );
    server.await.expect("server");
}

fn user(bootstrap_rotation: Option<&str>) -> User {
    let mut meta = json!({"name": "alice", "namespace": "team-a", "uid": "u-2", "generation": 1, "finalizers": ["skiff.dev/cleanup"]});
    if let Some(r) = bootstrap_rotation {
        meta["annotations"] = json!({"skiff.dev/rotate-password": r});
    }
    serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "User", "metadata": meta,
        "spec": {"clusterRef": {"name": "kafka", "namespace": "kafka"}, "authentication": {"type": "scram-sha-512"}}
    }))
    .expect("user")
}

#[tokio::test]
async fn a_user_gets_a_secret_and_a_real_credential_and_rotation_replaces_both() {
    let broker = support::Broker::start().await;
    let (client, handle) = mock_client();
    let u = Arc::new(user(None));
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step(
                "GET",
                "/api/v1/namespaces/team-a/secrets/alice-kafka",
                404,
                not_found(),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/team-a/secrets/alice-kafka",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-kafka"}}),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/team-a/secrets/alice-kafka",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-kafka"}}),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/users/alice/status",
                200,
                serde_json::to_value(user(None)).expect("json"),
            ),
        ],
    );
    controllers::user::reconcile(u, context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    let first = &seen[2];
    assert!(
        first.path.contains("fieldManager=skiff-operator"),
        "{}",
        first.path
    );
    assert_eq!(
        first.body["metadata"]["annotations"]["skiff.dev/credential-applied"],
        "false"
    );
    assert_eq!(first.body["metadata"]["ownerReferences"][0]["kind"], "User");
    let applied = &seen[3];
    assert_eq!(
        applied.body["metadata"]["annotations"]["skiff.dev/credential-applied"],
        "true"
    );
    assert_eq!(
        first.body["data"]["password"],
        applied.body["data"]["password"]
    );
    assert_eq!(seen[4].body["reason"], "CredentialSet");
    assert_eq!(ready(&seen[5].body), ("True", "Ready"));
    assert_eq!(seen[5].body["status"]["principal"], "User:team-a.alice");
    assert_eq!(seen[5].body["status"]["secretName"], "alice-kafka");
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    assert!(
        admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );

    // Rotation: the annotation changes, the Secret (recorded for the old
    // value) is replaced with a new password.
    let old_secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "alice-kafka", "annotations": {"skiff.dev/rotation": "", "skiff.dev/credential-applied": "true"}},
        "data": applied.body["data"].clone()});
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step("GET", "/secrets/alice-kafka", 200, old_secret),
            step(
                "PATCH",
                "/secrets/alice-kafka",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-kafka"}}),
            ),
            step(
                "PATCH",
                "/secrets/alice-kafka",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-kafka"}}),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/users/alice/status",
                200,
                serde_json::to_value(user(None)).expect("json"),
            ),
        ],
    );
    controllers::user::reconcile(Arc::new(user(Some("2026-01-02"))), context(client))
        .await
        .expect("rotate");
    let seen = server.await.expect("server");
    assert_ne!(
        seen[2].body["data"]["password"],
        applied.body["data"]["password"]
    );
    assert_eq!(
        seen[2].body["metadata"]["annotations"]["skiff.dev/rotation"],
        "2026-01-02"
    );
    assert_eq!(seen[4].body["reason"], "PasswordRotated");
}

#[tokio::test]
async fn a_kafka_cluster_is_applied_with_one_field_manager_and_reports_status() {
    let (client, handle) = mock_client();
    let kc: KafkaCluster = serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1", "generation": 4},
        "spec": {"replicas": 3}
    }))
    .expect("kc");
    let ok = |kind: &str| {
        let api = if kind == "PodDisruptionBudget" {
            "policy/v1"
        } else {
            "v1"
        };
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}})
    };
    let sts_status = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "kafka"},
        "spec": {"replicas": 3, "selector": {}, "serviceName": "kafka-brokers", "template": {}},
        "status": {"replicas": 3, "updateRevision": "r2"}});
    let pod = |i: i32, rev: &str| {
        json!({"metadata": {"name": format!("kafka-{i}"), "labels": {"controller-revision-hash": rev}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                404,
                not_found(),
            ),
            // A new cluster: the operator's credentials are created first.
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-operator",
                404,
                not_found(),
            ),
            step(
                "POST",
                "/api/v1/namespaces/kafka/secrets",
                201,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-operator"}}),
            ),
            // And the brokers' peer token.
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-peer-token",
                404,
                not_found(),
            ),
            step(
                "POST",
                "/api/v1/namespaces/kafka/secrets",
                201,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-peer-token"}}),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/serviceaccounts/kafka-broker",
                200,
                ok("ServiceAccount"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/configmaps/kafka-config",
                200,
                ok("ConfigMap"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/services/kafka-brokers",
                200,
                ok("Service"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/services/kafka-bootstrap",
                200,
                ok("Service"),
            ),
            step(
                "PATCH",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                200,
                sts_status.clone(),
            ),
            step(
                "PATCH",
                "/apis/policy/v1/namespaces/kafka/poddisruptionbudgets/kafka",
                200,
                ok("PodDisruptionBudget"),
            ),
            // The cluster's Services: the external ones of a listener that
            // is gone are deleted, a Service the operator does not control
            // is left alone.
            step(
                "GET",
                "/api/v1/namespaces/kafka/services?",
                200,
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": [
                    owned_service("kafka-brokers", "c-1"),
                    owned_service("kafka-bootstrap", "c-1"),
                    owned_service("kafka-external-bootstrap", "c-1"),
                    owned_service("kafka-0-external", "c-1"),
                    owned_service("kafka-1-external", "other-uid"),
                ]}),
            ),
            step(
                "DELETE",
                "/api/v1/namespaces/kafka/services/kafka-external-bootstrap",
                200,
                owned_service("kafka-external-bootstrap", "c-1"),
            ),
            step(
                "DELETE",
                "/api/v1/namespaces/kafka/services/kafka-0-external",
                404,
                not_found(),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "DELETE",
                "/apis/autoscaling/v2/namespaces/kafka/horizontalpodautoscalers/kafka",
                404,
                not_found(),
            ),
            step(
                "GET",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                200,
                sts_status,
            ),
            step(
                "GET",
                "/api/v1/namespaces/kafka/pods?",
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod(0, "r2"), pod(1, "r2"), pod(2, "r2")]}),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/kafkaclusters/kafka/status",
                200,
                serde_json::to_value(&kc).expect("json"),
            ),
        ],
    );
    let action = controllers::cluster::reconcile(Arc::new(kc), context(client))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(controllers::RESYNC));
    let seen = server.await.expect("server");
    for s in seen
        .iter()
        .filter(|s| s.method == "PATCH" && !s.path.contains("/status"))
    {
        assert!(
            s.path.contains("fieldManager=skiff-operator") && s.path.contains("force=true"),
            "{}",
            s.path
        );
        assert_eq!(
            s.body["metadata"]["ownerReferences"][0]["kind"], "KafkaCluster",
            "{}",
            s.path
        );
    }
    let secret = &seen[2].body;
    assert_eq!(secret["metadata"]["name"], "kafka-operator");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["kind"],
        "KafkaCluster"
    );
    let users = secret["stringData"]["bootstrap-users"]
        .as_str()
        .unwrap_or("");
    let password = secret["stringData"]["password"].as_str().unwrap_or("");
    assert!(password.len() >= 32, "a strong password");
    assert_eq!(users, format!("skiff-operator:{password}\n"));
    let token = &seen[4].body;
    assert_eq!(token["metadata"]["name"], "kafka-peer-token");
    assert_eq!(
        token["metadata"]["ownerReferences"][0]["kind"],
        "KafkaCluster"
    );
    let token = token["stringData"]["token"].as_str().unwrap_or("");
    assert!(token.len() >= 32, "a strong token: {token:?}");
    let sts = &seen[9].body;
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "kafka-operator");
    // A new cluster's brokers demand the token from the start.
    let env = &pod["containers"][0]["env"];
    let var = |name: &str| {
        env.as_array()
            .and_then(|e| e.iter().find(|v| v["name"] == name))
            .map(|v| v["value"].clone())
    };
    assert_eq!(
        var("SKIFF_RPC_PEER_TOKEN_FILE"),
        Some(json!("/etc/skiff-peer/token"))
    );
    assert_eq!(var("SKIFF_RPC_PEER_TOKEN_REQUIRED"), Some(json!("true")));
    assert!(pod["volumes"].as_array().is_some_and(|v| {
        v.iter()
            .any(|v| v["secret"]["secretName"] == "kafka-peer-token")
    }));
    assert!(
        pod["containers"][0]["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v
                .as_str()
                .is_some_and(|v| v.ends_with(",OPERATOR://0.0.0.0:19093"))))
    );
    assert_eq!(seen[14].body["reason"], "StaleServicesDeleted");
    let st = &seen[19].body["status"];
    assert_eq!(ready(&seen[19].body), ("True", "Ready"));
    assert_eq!(st["observedGeneration"], 4);
    assert_eq!(st["readyReplicas"], 3);
    assert_eq!(st["replicas"], 3);
    assert!(
        st["selector"]
            .as_str()
            .unwrap_or("")
            .contains("app.kubernetes.io/instance=kafka")
    );
    assert_eq!(
        st["bootstrapServers"][0]["address"],
        "kafka-bootstrap.kafka.svc.cluster.local:9092"
    );
    assert_eq!(st["brokers"].as_array().map(Vec::len), Some(3));
    // A new cluster: the first three brokers are the metadata voters,
    // recorded on the StatefulSet and in status.
    assert_eq!(st["metadataVoters"], json!([0, 1, 2]));
    assert_eq!(
        seen[9].body["metadata"]["annotations"]["skiff.dev/metadata-voters"],
        "3"
    );
}

/// The peer token Secret deleted while the brokers run: not made again
/// (a broker restarted with a new token could not rejoin its peers), the
/// cluster reports it and nothing is applied.
#[tokio::test]
async fn a_peer_token_lost_while_the_cluster_runs_is_reported_not_replaced() {
    let (client, handle) = mock_client();
    let kc: KafkaCluster = serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1", "generation": 2},
        "spec": {"replicas": 3}
    }))
    .expect("kc");
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "kafka", "annotations": {"skiff.dev/metadata-voters": "3"}},
        "spec": {"replicas": 3, "selector": {}, "serviceName": "kafka-brokers", "template": {}},
        "status": {"replicas": 3, "updateRevision": "r1"}});
    let server = serve(
        handle,
        vec![
            step("GET", "/statefulsets/kafka", 200, sts),
            step(
                "GET",
                "/secrets/kafka-operator",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-operator"}}),
            ),
            step("GET", "/secrets/kafka-peer-token", 404, not_found()),
            step(
                "PATCH",
                "/kafkaclusters/kafka/status",
                200,
                serde_json::to_value(&kc).expect("json"),
            ),
            step("POST", "/events", 201, event_ok()),
        ],
    );
    let action = controllers::cluster::reconcile(Arc::new(kc), context(client))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(controllers::RESYNC));
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[3].body), ("False", "PeerTokenLost"));
    assert_eq!(seen[4].body["reason"], "PeerTokenLost");
    assert_eq!(seen[4].body["type"], "Warning");
}

#[tokio::test]
async fn a_stale_broker_pod_is_deleted_one_at_a_time_only_when_the_cluster_is_healthy() {
    let broker = support::Broker::start().await;
    let (client, handle) = mock_client();
    let kc: KafkaCluster = serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1", "generation": 5,
                     "annotations": {"skiff.dev/operator-bootstrap": broker.bootstrap}},
        "spec": {"replicas": 3}
    }))
    .expect("kc");
    let ok = |kind: &str| {
        let api = if kind == "PodDisruptionBudget" {
            "policy/v1"
        } else {
            "v1"
        };
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}})
    };
    // Created as a one-broker cluster and grown since: broker 0 stays the
    // only metadata voter.
    let sts_status = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "kafka", "annotations": {"skiff.dev/metadata-voters": "1"}},
        "spec": {"replicas": 3, "selector": {}, "serviceName": "kafka-brokers", "template": {}},
        "status": {"replicas": 3, "updateRevision": "r3"}});
    let pod = |i: i32, rev: &str| {
        json!({"metadata": {"name": format!("kafka-{i}"), "labels": {"controller-revision-hash": rev}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let server = serve(
        handle,
        vec![
            step("GET", "/statefulsets/kafka", 200, sts_status.clone()),
            step(
                "GET",
                "/secrets/kafka-operator",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-operator"}}),
            ),
            step(
                "GET",
                "/secrets/kafka-peer-token",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-peer-token"}}),
            ),
            step("PATCH", "/serviceaccounts/", 200, ok("ServiceAccount")),
            step("PATCH", "/configmaps/", 200, ok("ConfigMap")),
            step("PATCH", "/services/kafka-brokers", 200, ok("Service")),
            step("PATCH", "/services/kafka-bootstrap", 200, ok("Service")),
            step("PATCH", "/statefulsets/kafka", 200, sts_status.clone()),
            step(
                "PATCH",
                "/poddisruptionbudgets/kafka",
                200,
                ok("PodDisruptionBudget"),
            ),
            step(
                "GET",
                "/services?",
                200,
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": [
                    owned_service("kafka-brokers", "c-1"),
                    owned_service("kafka-bootstrap", "c-1"),
                ]}),
            ),
            step(
                "DELETE",
                "/horizontalpodautoscalers/kafka",
                404,
                not_found(),
            ),
            step("GET", "/statefulsets/kafka", 200, sts_status),
            step(
                "GET",
                "/pods?",
                200,
                json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
            "items": [pod(0, "r2"), pod(1, "r2"), pod(2, "r3")]}),
            ),
            // The single broker (id 0) leads the metadata; broker 1 goes first.
            step(
                "DELETE",
                "/api/v1/namespaces/kafka/pods/kafka-1",
                200,
                pod(1, "r2"),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/kafkaclusters/kafka/status",
                200,
                serde_json::to_value(&kc).expect("json"),
            ),
        ],
    );
    let action = controllers::cluster::reconcile(Arc::new(kc), context(client))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::requeue(controllers::cluster::ROLL_POLL));
    let seen = server.await.expect("server");
    assert_eq!(seen[14].body["reason"], "RollingBroker");
    assert_eq!(
        seen[7].body["metadata"]["annotations"]["skiff.dev/metadata-voters"],
        "1"
    );
    let args = seen[7].body["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let voters = args
        .iter()
        .position(|a| a == "--controller-quorum-voters")
        .and_then(|i| args.get(i + 1))
        .expect("voters");
    assert_eq!(
        voters,
        "0@kafka-0.kafka-brokers.kafka.svc.cluster.local:19092"
    );
    // Its brokers ran without a peer token: the new template sends it
    // without demanding it yet (skiff_operator::render::peer_token).
    let required = seen[7].body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .and_then(|e| {
            e.iter()
                .find(|v| v["name"] == "SKIFF_RPC_PEER_TOKEN_REQUIRED")
        })
        .map(|v| v["value"].clone());
    assert_eq!(required, Some(json!("false")));
    let st = &seen[15].body["status"];
    assert_eq!(st["metadataVoters"], json!([0]));
    let progressing = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
        .expect("Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(progressing["reason"], "Rolling");
    assert_eq!(ready(&seen[15].body), ("False", "Rolling"));
    assert_eq!(st["brokers"][1]["state"], "Rolling");
}

#[test]
fn owner_reference_of_a_user_secret_points_at_the_user() {
    let u = user(None);
    let s = skiff_operator::controllers::user::credentials_secret(
        &u,
        "team-a.alice",
        "pw",
        "",
        true,
        Some("b:9092"),
    )
    .expect("secret");
    let owner = &s.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(owner.kind, User::kind(&()));
    assert_eq!(owner.controller, Some(true));
    let data = s.data.expect("data");
    assert_eq!(data["username"].0, b"team-a.alice");
    assert!(String::from_utf8_lossy(&data["sasl.jaas.config"].0).contains("ScramLoginModule"));
    assert_eq!(data["bootstrap.servers"].0, b"b:9092");
}

#[tokio::test]
async fn leader_election_creates_the_lease_and_loses_a_race_on_conflict() {
    use skiff_operator::runtime::leader::Elector;
    let lease = |holder: &str, renewed: &str| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "skiff-operator", "namespace": "ops", "resourceVersion": "5"},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed}})
    };
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            // No Lease yet: create it.
            step(
                "GET",
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/skiff-operator",
                404,
                not_found(),
            ),
            step(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases",
                201,
                lease("a", "2026-01-01T00:00:00.000000Z"),
            ),
            // Held by someone else, fresh: follow without writing.
            step(
                "GET",
                "/leases/skiff-operator",
                200,
                lease("b", "2999-01-01T00:00:00.000000Z"),
            ),
            // Held by someone else, expired: take over, but another replica
            // wrote first (409): not the leader.
            step(
                "GET",
                "/leases/skiff-operator",
                200,
                lease("b", "2020-01-01T00:00:00.000000Z"),
            ),
            step("PUT", "/leases/skiff-operator", 409, conflict()),
        ],
    );
    let e = Elector::new(client, "ops", "skiff-operator", "a");
    assert!(e.try_once().await.expect("create"));
    assert!(!e.try_once().await.expect("follow"));
    assert!(!e.try_once().await.expect("lost race"));
    let seen = server.await.expect("server");
    assert_eq!(seen[1].body["spec"]["holderIdentity"], "a");
    assert_eq!(seen[1].body["spec"]["leaseDurationSeconds"], 15);
    // The takeover carried the resourceVersion it read, which is what makes
    // the API server refuse one of two racing writers.
    assert_eq!(seen[4].body["metadata"]["resourceVersion"], "5");
    assert_eq!(seen[4].body["spec"]["leaseTransitions"], 1);
}

#[tokio::test]
async fn a_tenant_quota_is_set_on_the_broker_and_ready() {
    let broker = support::Broker::start().await;
    let (client, handle) = mock_client();
    let q: skiff_crds::Quota = serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "Quota",
        "metadata": {"name": "q", "namespace": "team-a", "uid": "q-1", "generation": 1, "finalizers": ["skiff.dev/cleanup"]},
        "spec": {"clusterRef": {"name": "kafka", "namespace": "kafka"}, "target": {"type": "tenant"}, "producerByteRate": 1024}
    }))
    .expect("quota");
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step(
                "PATCH",
                "/quotas/q/status",
                200,
                serde_json::to_value(&q).expect("json"),
            ),
        ],
    );
    let result = controllers::quota::reconcile(Arc::new(q), context(client)).await;
    let seen = server.await.expect("server");
    result.expect("the broker accepts the tenant quota");
    assert_eq!(ready(&seen[1].body), ("True", "Ready"));
    assert_eq!(seen[1].body["status"]["entity"], "tenant=team-a.");
}

fn user_quota(spec_values: Value, deleting: bool) -> skiff_crds::Quota {
    let mut spec = json!({"clusterRef": {"name": "kafka", "namespace": "kafka"},
        "target": {"type": "user", "user": "alice"}});
    if let (Some(s), Some(v)) = (spec.as_object_mut(), spec_values.as_object()) {
        s.extend(v.clone());
    }
    let mut meta = json!({"name": "q", "namespace": "team-a", "uid": "q-2", "generation": 2,
        "resourceVersion": "3", "finalizers": ["skiff.dev/cleanup"]});
    if deleting {
        meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(json!({"apiVersion": "skiff.dev/v1alpha1", "kind": "Quota",
        "metadata": meta, "spec": spec}))
    .expect("quota")
}

#[tokio::test]
async fn a_quota_spec_change_converges_and_deletion_removes_every_value() {
    let broker = support::Broker::start().await;
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    let alice = vec![("user".to_string(), Some("team-a.alice".to_string()))];
    let reconcile = |q: skiff_crds::Quota, then: Vec<Step>| {
        let (client, handle) = mock_client();
        let mut steps = vec![step(
            "GET",
            "/kafkaclusters/kafka",
            200,
            cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
        )];
        steps.extend(then);
        let server = serve(handle, steps);
        async move {
            let r = controllers::quota::reconcile(Arc::new(q), context(client)).await;
            (r, server.await.expect("server"))
        }
    };
    let status_ok = |q: &skiff_crds::Quota| {
        step(
            "PATCH",
            "/quotas/q/status",
            200,
            serde_json::to_value(q).expect("json"),
        )
    };

    let v1 = user_quota(
        json!({"producerByteRate": 1024, "requestPercentage": 50.0}),
        false,
    );
    let (r, seen) = reconcile(v1.clone(), vec![status_ok(&v1)]).await;
    r.expect("set");
    assert_eq!(ready(&seen[1].body), ("True", "Ready"));
    let got = admin.describe_quotas(&alice).await.expect("describe");
    assert_eq!(
        got,
        [
            ("producer_byte_rate".to_string(), 1024.0),
            ("request_percentage".to_string(), 50.0)
        ]
        .into()
    );

    // An edited spec: a new rate, a key dropped, a key added.
    let v2 = user_quota(
        json!({"producerByteRate": 2048, "consumerByteRate": 4096}),
        false,
    );
    let (r, _) = reconcile(v2.clone(), vec![status_ok(&v2)]).await;
    r.expect("converged");
    let got = admin.describe_quotas(&alice).await.expect("describe");
    assert_eq!(
        got,
        [
            ("consumer_byte_rate".to_string(), 4096.0),
            ("producer_byte_rate".to_string(), 2048.0)
        ]
        .into()
    );

    // Deleted: the finalizer removes every value, then lets go.
    let gone = user_quota(json!({"producerByteRate": 2048}), true);
    let (r, seen) = reconcile(
        gone.clone(),
        vec![step(
            "PATCH",
            "/quotas/q",
            200,
            serde_json::to_value(&gone).expect("json"),
        )],
    )
    .await;
    r.expect("cleaned up");
    let ops = seen[1].body.as_array().expect("json patch");
    assert!(ops.iter().any(|op| op["op"] == "remove"), "{ops:?}");
    assert!(
        admin
            .describe_quotas(&alice)
            .await
            .expect("describe")
            .is_empty()
    );
}

#[tokio::test]
async fn deleting_a_user_revokes_its_credential_then_drops_the_finalizer() {
    let broker = support::Broker::start().await;
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    admin
        .upsert_scram_sha512("team-a.alice", "old-password")
        .await
        .expect("credential");
    assert!(
        admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );
    let mut u = user(None);
    u.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-01-01T00:00:00Z".parse().expect("time"),
    ));
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                cluster(&broker.bootstrap, json!([{"namespace": "team-a"}])),
            ),
            step(
                "PATCH",
                "/users/alice",
                200,
                serde_json::to_value(&u).expect("json"),
            ),
        ],
    );
    controllers::user::reconcile(Arc::new(u), context(client))
        .await
        .expect("cleaned up");
    let seen = server.await.expect("server");
    let ops = seen[1].body.as_array().expect("json patch");
    assert!(ops.iter().any(|op| op["op"] == "remove"), "{ops:?}");
    assert!(
        !admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe")
    );
}

#[tokio::test]
async fn a_scale_down_that_would_remove_a_metadata_voter_is_refused_and_no_broker_goes() {
    let (client, handle) = mock_client();
    // Three brokers, all metadata voters; spec asks for two. The brokers
    // are unreachable (nothing listens on the override), which must not
    // matter: the refusal needs no answer from them.
    let kc: KafkaCluster = serde_json::from_value(json!({
        "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
        "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1", "generation": 5,
                     "annotations": {"skiff.dev/operator-bootstrap": "127.0.0.1:1"}},
        "spec": {"replicas": 2},
        "status": {"metadataVoters": [0, 1, 2], "replicas": 3}
    }))
    .expect("kc");
    let ok = |kind: &str| {
        let api = if kind == "PodDisruptionBudget" {
            "policy/v1"
        } else {
            "v1"
        };
        json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}})
    };
    let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "kafka", "annotations": {"skiff.dev/metadata-voters": "3"}},
        "spec": {"replicas": 3, "selector": {}, "serviceName": "kafka-brokers", "template": {}},
        "status": {"replicas": 3, "updateRevision": "r2"}});
    let pods = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": (0..3).map(|i| json!(
        {"metadata": {"name": format!("kafka-{i}"), "labels": {"controller-revision-hash": "r2"}},
         "status": {"conditions": [{"type": "Ready", "status": "True"}]}})).collect::<Vec<_>>()});
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                200,
                sts.clone(),
            ),
            step("GET", "/api/v1/namespaces/kafka/pods?", 200, pods.clone()),
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-operator",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-operator"},
                       "data": {"password": "cHc=", "bootstrap-users": "eA=="}}),
            ),
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-peer-token",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-peer-token"}}),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/serviceaccounts/kafka-broker",
                200,
                ok("ServiceAccount"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/configmaps/kafka-config",
                200,
                ok("ConfigMap"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/services/kafka-brokers",
                200,
                ok("Service"),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/services/kafka-bootstrap",
                200,
                ok("Service"),
            ),
            step(
                "PATCH",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                200,
                sts.clone(),
            ),
            step(
                "PATCH",
                "/apis/policy/v1/namespaces/kafka/poddisruptionbudgets/kafka",
                200,
                ok("PodDisruptionBudget"),
            ),
            step(
                "GET",
                "/api/v1/namespaces/kafka/services?",
                200,
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": []}),
            ),
            step(
                "DELETE",
                "/apis/autoscaling/v2/namespaces/kafka/horizontalpodautoscalers/kafka",
                404,
                not_found(),
            ),
            step("POST", "/events", 201, event_ok()),
            step(
                "GET",
                "/apis/apps/v1/namespaces/kafka/statefulsets/kafka",
                200,
                sts,
            ),
            step("GET", "/api/v1/namespaces/kafka/pods?", 200, pods),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/kafkaclusters/kafka/status",
                200,
                serde_json::to_value(&kc).expect("json"),
            ),
        ],
    );
    controllers::cluster::reconcile(Arc::new(kc), context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    // The StatefulSet keeps its three brokers.
    let applied = seen
        .iter()
        .find(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
        .expect("the StatefulSet is applied");
    assert_eq!(applied.body["spec"]["replicas"], 3);
    let event = seen
        .iter()
        .find(|s| s.path.contains("/events"))
        .expect("an Event");
    assert_eq!(event.body["reason"], "ScaleDownBelowMetadataVoters");
    let status = &seen.last().expect("a status patch").body["status"];
    let degraded = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Degraded"))
        .expect("a Degraded condition");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "ScaleDownBelowMetadataVoters");
    assert_eq!(status["scale"]["phase"], "Idle");
    assert_eq!(status["scale"]["targetReplicas"], 2);
}

// A whole scale against a stateful stand-in for the API server: one
// reconcile per step, each by a freshly started operator (a new Context,
// nothing remembered), reading the KafkaCluster as the previous reconcile's
// status patch left it. Every step is therefore also a restart test.

/// The API server's side of a scale: the StatefulSet's size (its pods exist
/// up to it, as the StatefulSet controller would make them), which pods are
/// Ready, the brokers' volume claims, and the KafkaCluster's stored status.
struct World {
    /// `spec` and `metadata` of the KafkaCluster.
    cluster: Value,
    /// Its status as stored: each status patch is applied to it as the API
    /// server applies a JSON merge patch.
    status: Value,
    replicas: i32,
    /// `skiff.dev/metadata-voters` of the StatefulSet.
    voters: i32,
    ready: BTreeSet<i32>,
    claims: BTreeSet<i32>,
    requests: Vec<Seen>,
    /// Requests the stand-in has no answer for (answered 500).
    unexpected: Vec<String>,
    /// A broker to ask, when a StatefulSet patch removes brokers, what those
    /// brokers hold at that moment.
    probe: Option<String>,
    /// (broker, replicas it held) at each such patch.
    held_at_shrink: Vec<(i32, usize)>,
    /// The cluster's Services as a list answers them.
    services: Vec<Value>,
    /// The ConfigMap as last applied.
    config_map: Option<Value>,
    /// Annotations patched onto each broker pod.
    pod_annotations: BTreeMap<i32, Value>,
    /// The node each broker pod is scheduled on (`spec.nodeName`).
    pod_nodes: BTreeMap<i32, String>,
    /// The Nodes (name → labels) a GET finds.
    nodes: BTreeMap<String, Value>,
}

type Shared = Arc<std::sync::Mutex<World>>;

impl World {
    fn new(spec: Value, bootstrap: &str, replicas: i32, voters: i32, status: Value) -> Shared {
        Arc::new(std::sync::Mutex::new(Self {
            cluster: json!({
                "apiVersion": "skiff.dev/v1alpha1", "kind": "KafkaCluster",
                "metadata": {"name": "kafka", "namespace": "kafka", "uid": "c-1", "generation": 6,
                             "annotations": {"skiff.dev/operator-bootstrap": bootstrap}},
                "spec": spec
            }),
            status,
            replicas,
            voters,
            ready: (0..replicas).collect(),
            claims: (0..replicas).collect(),
            requests: Vec::new(),
            unexpected: Vec::new(),
            probe: None,
            held_at_shrink: Vec::new(),
            services: Vec::new(),
            config_map: None,
            pod_annotations: BTreeMap::new(),
            pod_nodes: BTreeMap::new(),
            nodes: BTreeMap::new(),
        }))
    }

    fn kafka_cluster(&self) -> Value {
        let mut kc = self.cluster.clone();
        kc["status"] = self.status.clone();
        kc
    }

    fn stateful_set(&self) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "kafka", "namespace": "kafka",
                         "annotations": {"skiff.dev/metadata-voters": self.voters.to_string()}},
            "spec": {"replicas": self.replicas, "selector": {}, "serviceName": "kafka-brokers", "template": {}},
            "status": {"replicas": self.replicas, "updateRevision": "r1"}})
    }

    fn pods(&self) -> Value {
        let items: Vec<Value> = (0..self.replicas)
            .map(|i| {
                let ready = if self.ready.contains(&i) {
                    "True"
                } else {
                    "False"
                };
                let annotations = self.pod_annotations.get(&i).cloned().unwrap_or(json!({}));
                let mut pod = json!({"metadata": {"name": format!("kafka-{i}"), "labels": {"controller-revision-hash": "r1"},
                                    "annotations": annotations},
                       "status": {"conditions": [{"type": "Ready", "status": ready}],
                                  "hostIP": format!("10.0.0.{}", i + 1)}});
                if let Some(node) = self.pod_nodes.get(&i) {
                    pod["spec"] = json!({"nodeName": node, "containers": []});
                }
                pod
            })
            .collect();
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
    }

    /// The answer to one request; a StatefulSet patch that removes brokers
    /// also returns them, for the probe.
    fn answer(&mut self, method: &str, path: &str, body: &Value) -> (u16, Value, Vec<i32>) {
        let ok = |kind: &str, api: &str| json!({"apiVersion": api, "kind": kind, "metadata": {"name": "x"}});
        let mut removed = Vec::new();
        let path_only = path.split('?').next().unwrap_or(path);
        let (status, answer) = match (method, path_only) {
            ("PATCH", p) if p.ends_with("/kafkaclusters/kafka/status") => {
                merge_patch(&mut self.status, &body["status"]);
                (200, self.kafka_cluster())
            }
            ("GET", p) if p.ends_with("/statefulsets/kafka") => (200, self.stateful_set()),
            ("PATCH", p) if p.ends_with("/statefulsets/kafka") => {
                let to = body["spec"]["replicas"]
                    .as_i64()
                    .and_then(|r| i32::try_from(r).ok())
                    .unwrap_or(self.replicas);
                removed = (to..self.replicas).collect();
                // The StatefulSet controller's part: pods above the size go.
                self.ready.retain(|id| *id < to);
                self.replicas = to;
                (200, self.stateful_set())
            }
            ("GET", p) if p.ends_with("/pods") => (200, self.pods()),
            ("GET", p) if p.starts_with("/api/v1/nodes/") => {
                let name = p.rsplit('/').next().unwrap_or("");
                match self.nodes.get(name) {
                    Some(labels) => (
                        200,
                        json!({"apiVersion": "v1", "kind": "Node",
                               "metadata": {"name": name, "labels": labels}}),
                    ),
                    None => (404, not_found()),
                }
            }
            ("GET", p) if p.ends_with("/secrets/kafka-peer-token") => (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-peer-token"}}),
            ),
            ("GET", p) if p.ends_with("/secrets/kafka-operator") => (
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-operator"},
                       "data": {"password": "cHc=", "bootstrap-users": "eA=="}}),
            ),
            ("PATCH", p) if p.contains("/serviceaccounts/") => (200, ok("ServiceAccount", "v1")),
            ("PATCH", p) if p.contains("/configmaps/") => {
                self.config_map = Some(body.clone());
                (200, body.clone())
            }
            ("GET", p) if p.ends_with("/configmaps/kafka-config") => match &self.config_map {
                Some(cm) => (200, cm.clone()),
                None => (404, not_found()),
            },
            ("PATCH", p) if p.contains("/pods/kafka-") => {
                let id = p.rsplit('-').next().and_then(|id| id.parse::<i32>().ok());
                match id {
                    Some(id) if id < self.replicas => {
                        let a = self.pod_annotations.entry(id).or_insert(json!({}));
                        merge_patch(a, &body["metadata"]["annotations"]);
                        (
                            200,
                            json!({"apiVersion": "v1", "kind": "Pod",
                                     "metadata": {"name": format!("kafka-{id}")}}),
                        )
                    }
                    _ => (404, not_found()),
                }
            }
            ("PATCH", p) if p.contains("/services/") => (200, ok("Service", "v1")),
            ("PATCH", p) if p.contains("/poddisruptionbudgets/") => {
                (200, ok("PodDisruptionBudget", "policy/v1"))
            }
            ("GET", p) if p.ends_with("/services") => (
                200,
                json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {}, "items": self.services}),
            ),
            ("DELETE", p) if p.contains("/horizontalpodautoscalers/") => (404, not_found()),
            ("POST", p) if p.ends_with("/events") => (201, event_ok()),
            ("DELETE", p) if p.contains("/persistentvolumeclaims/data-kafka-") => {
                let id = p.rsplit('-').next().and_then(|id| id.parse::<i32>().ok());
                match id {
                    Some(id) if self.claims.remove(&id) => (
                        200,
                        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                               "metadata": {"name": format!("data-kafka-{id}")}}),
                    ),
                    _ => (404, not_found()),
                }
            }
            _ => {
                self.unexpected.push(format!("{method} {path}"));
                (
                    500,
                    json!({"kind": "Status", "code": 500, "message": "unexpected"}),
                )
            }
        };
        (status, answer, removed)
    }
}

/// RFC 7386, as the API server applies a `Patch::Merge`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in fields {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Replicas each broker holds in the brokers' committed metadata, of the
/// partitions a scale can move (a broker's own `__consumer_offsets` is not
/// one).
async fn holding(via: &str) -> Option<BTreeMap<i32, usize>> {
    let mut admin = skiff_operator::admin::AdminClient::connect(via)
        .await
        .ok()?;
    let info = admin.cluster_info().await.ok()?;
    let mut out = BTreeMap::new();
    for p in info
        .partitions
        .iter()
        .filter(|p| p.topic != "__consumer_offsets")
    {
        for b in &p.replicas {
            *out.entry(*b).or_insert(0) += 1;
        }
    }
    Some(out)
}

/// What one reconcile did.
struct Turn {
    seen: Vec<Seen>,
    /// The KafkaCluster's status as stored after it.
    status: Value,
}

impl Turn {
    fn phase(&self) -> String {
        // No scale recorded is no scale under way.
        self.status["scale"]["phase"]
            .as_str()
            .unwrap_or("Idle")
            .to_string()
    }

    fn message(&self) -> String {
        self.status["scale"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn condition(&self, type_: &str) -> (String, String, String) {
        let c = self.status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .cloned()
            .unwrap_or(Value::Null);
        let s = |k: &str| c[k].as_str().unwrap_or("").to_string();
        (s("status"), s("reason"), s("message"))
    }

    /// `spec.replicas` of every StatefulSet the reconcile applied.
    fn sizes_applied(&self) -> Vec<i64> {
        self.seen
            .iter()
            .filter(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
            .map(|s| s.body["spec"]["replicas"].as_i64().unwrap_or(-1))
            .collect()
    }

    fn event_reasons(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|s| s.method == "POST" && s.path.contains("/events"))
            .map(|s| s.body["reason"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Index (in this reconcile's requests) of each volume claim deletion.
    fn claims_deleted(&self) -> Vec<(usize, String)> {
        self.seen
            .iter()
            .enumerate()
            .filter(|(_, s)| s.method == "DELETE" && s.path.contains("/persistentvolumeclaims/"))
            .map(|(i, s)| {
                let path = s.path.split('?').next().unwrap_or("");
                (i, path.rsplit('/').next().unwrap_or("").to_string())
            })
            .collect()
    }
}

/// One reconcile by a freshly started operator of the KafkaCluster as the
/// stand-in stores it now.
async fn turn(world: &Shared) -> Turn {
    let (client, mut handle) = mock_client();
    let (kc, first) = {
        let w = world.lock().expect("world");
        (w.kafka_cluster(), w.requests.len())
    };
    let kc: KafkaCluster = serde_json::from_value(kc).expect("a KafkaCluster");
    let server = {
        let world = world.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let method = req.method().to_string();
                let path = req.uri().to_string();
                let merge = req
                    .headers()
                    .get(http::header::CONTENT_TYPE)
                    .is_some_and(|v| v == "application/merge-patch+json");
                let bytes = req.into_body().collect_bytes().await.expect("body");
                let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let (status, answer, removed, probe) = {
                    let mut w = world.lock().expect("world");
                    let (status, answer, removed) = if path.contains("/status") && !merge {
                        // The stand-in's merge would misread any other kind.
                        w.unexpected
                            .push(format!("{method} {path} not a merge patch"));
                        (500, Value::Null, Vec::new())
                    } else {
                        w.answer(&method, &path, &body)
                    };
                    w.requests.push(Seen { method, path, body });
                    (status, answer, removed, w.probe.clone())
                };
                if let (false, Some(via)) = (removed.is_empty(), probe) {
                    let held = holding(&via).await.expect("the probe's broker answers");
                    let mut w = world.lock().expect("world");
                    for id in removed {
                        w.held_at_shrink
                            .push((id, held.get(&id).copied().unwrap_or(0)));
                    }
                }
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                        .expect("response"),
                );
            }
        })
    };
    let result = controllers::cluster::reconcile(Arc::new(kc), context(client)).await;
    server.abort();
    let mut w = world.lock().expect("world");
    assert!(
        w.unexpected.is_empty(),
        "unexpected requests: {:?}",
        w.unexpected
    );
    let action = result.expect("reconcile");
    let t = Turn {
        seen: w.requests.split_off(first),
        status: w.status.clone(),
    };
    // Nothing in the API changes while moves run or a broker starts: only
    // the requeue brings the operator back to a scale under way.
    if t.phase() != "Idle" {
        assert_eq!(
            action,
            Action::requeue(controllers::cluster::ROLL_POLL),
            "a scale in {} waits for the resync",
            t.phase()
        );
    }
    t
}

/// A TCP gate in front of a broker. The operator opens one connection to
/// look and another to act, so the gate can fail the act alone: it closes
/// connections once its allowance is spent, and it can hold one connection
/// back until the test has changed the cluster under the operator's feet.
struct Gate {
    addr: String,
    allowance: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    /// The number (from 1) of the connection to hold.
    hold_at: Arc<AtomicUsize>,
    held: Arc<tokio::sync::Notify>,
    released: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn to(broker: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let allowance = Arc::new(AtomicUsize::new(usize::MAX));
        let accepted = Arc::new(AtomicUsize::new(0));
        let hold_at = Arc::new(AtomicUsize::new(0));
        let held = Arc::new(tokio::sync::Notify::new());
        let released = Arc::new(tokio::sync::Notify::new());
        let broker = broker.to_string();
        let task = {
            let (allowance, accepted, hold_at) =
                (allowance.clone(), accepted.clone(), hold_at.clone());
            let (held, released) = (held.clone(), released.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    let n = accepted.fetch_add(1, SeqCst) + 1;
                    let pass = allowance
                        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if !pass {
                        continue;
                    }
                    let hold = n == hold_at.load(SeqCst);
                    let (broker, held, released) = (broker.clone(), held.clone(), released.clone());
                    tokio::spawn(async move {
                        if hold {
                            held.notify_one();
                            released.notified().await;
                        }
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&broker).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            })
        };
        Self {
            addr,
            allowance,
            accepted,
            hold_at,
            held,
            released,
            task,
        }
    }

    /// Passes the next `n` connections, then closes every other.
    fn allow(&self, n: usize) {
        self.allowance.store(n, SeqCst);
    }

    fn open(&self) {
        self.allow(usize::MAX);
    }

    /// Connections the operator opened so far.
    fn accepted(&self) -> usize {
        self.accepted.load(SeqCst)
    }

    /// Holds the `k`th connection from now before it reaches the broker.
    fn hold(&self, k: usize) {
        self.hold_at.store(self.accepted() + k, SeqCst);
    }

    /// Until the held connection is waiting.
    async fn holding(&self) {
        self.held.notified().await;
    }

    /// Lets the held connection through.
    fn release(&self) {
        self.released.notify_one();
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The brokers' dynamic BROKER configs, kept by the test: a proxy in front
/// of a broker that answers DescribeConfigs and IncrementalAlterConfigs on
/// BROKER resources itself and forwards every other request, so the scale
/// tests see what the operator does with the replication throttle whether
/// or not the broker under test serves it. It logs every API key it sees,
/// in order, with the throttle operations spelled out.
struct BrokerConfigs {
    addr: String,
    state: Arc<std::sync::Mutex<ConfigState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ConfigState {
    /// The cluster-wide `leader.replication.throttled.rate`.
    throttle: Option<String>,
    /// Answer INVALID_CONFIG to every change, as a broker that does not take
    /// the throttle at run time does.
    refuse: bool,
    /// What the operator asked, in order: `SET <v>`, `DELETE`, `Describe`,
    /// or the API key of a forwarded request.
    log: Vec<String>,
}

/// AlterPartitionReassignments in [`ConfigState::log`].
const REASSIGN: &str = "45";

impl BrokerConfigs {
    async fn to(broker: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(std::sync::Mutex::new(ConfigState::default()));
        let broker = broker.to_string();
        let task = {
            let state = state.clone();
            tokio::spawn(async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    let (broker, state) = (broker.clone(), state.clone());
                    tokio::spawn(async move {
                        let _ = serve_configs(inbound, &broker, &state).await;
                    });
                }
            })
        };
        Self { addr, state, task }
    }

    fn throttle(&self) -> Option<String> {
        self.state.lock().expect("state").throttle.clone()
    }

    fn set_throttle(&self, v: Option<&str>) {
        self.state.lock().expect("state").throttle = v.map(String::from);
    }

    fn refuse(&self, refuse: bool) {
        self.state.lock().expect("state").refuse = refuse;
    }

    fn log(&self) -> Vec<String> {
        self.state.lock().expect("state").log.clone()
    }
}

impl Drop for BrokerConfigs {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn read_frame(s: &mut tokio::net::TcpStream) -> std::io::Result<bytes::Bytes> {
    use tokio::io::AsyncReadExt;
    let len = usize::try_from(s.read_i32().await?).map_err(std::io::Error::other)?;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf.into())
}

async fn write_frame(s: &mut tokio::net::TcpStream, body: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let len = i32::try_from(body.len()).map_err(std::io::Error::other)?;
    s.write_all(&len.to_be_bytes()).await?;
    s.write_all(body).await
}

/// One client connection: each request answered here or by the broker.
async fn serve_configs(
    mut inbound: tokio::net::TcpStream,
    broker: &str,
    state: &std::sync::Mutex<ConfigState>,
) -> std::io::Result<()> {
    use kafka_protocol::messages::{
        ApiKey, DescribeConfigsRequest, IncrementalAlterConfigsRequest, RequestHeader,
    };
    use kafka_protocol::protocol::{Decodable, HeaderVersion};
    let mut outbound = tokio::net::TcpStream::connect(broker).await?;
    loop {
        let frame = read_frame(&mut inbound).await?;
        let key = i16::from_be_bytes([frame[0], frame[1]]);
        let version = i16::from_be_bytes([frame[2], frame[3]]);
        let answer = if key == ApiKey::IncrementalAlterConfigs as i16 {
            let mut buf = frame.clone();
            let h = RequestHeader::decode(
                &mut buf,
                IncrementalAlterConfigsRequest::header_version(version),
            )
            .map_err(std::io::Error::other)?;
            let req = IncrementalAlterConfigsRequest::decode(&mut buf, version)
                .map_err(std::io::Error::other)?;
            alter_configs(&req, state).map(|r| encode_answer(&h, &r, version))
        } else if key == ApiKey::DescribeConfigs as i16 {
            let mut buf = frame.clone();
            let h =
                RequestHeader::decode(&mut buf, DescribeConfigsRequest::header_version(version))
                    .map_err(std::io::Error::other)?;
            let req =
                DescribeConfigsRequest::decode(&mut buf, version).map_err(std::io::Error::other)?;
            describe_configs(&req, state).map(|r| encode_answer(&h, &r, version))
        } else {
            None
        };
        match answer {
            Some(body) => write_frame(&mut inbound, &body).await?,
            None => {
                state.lock().expect("state").log.push(key.to_string());
                write_frame(&mut outbound, &frame).await?;
                let reply = read_frame(&mut outbound).await?;
                write_frame(&mut inbound, &reply).await?;
            }
        }
    }
}

fn encode_answer<R>(h: &kafka_protocol::messages::RequestHeader, r: &R, version: i16) -> Vec<u8>
where
    R: kafka_protocol::protocol::Encodable + kafka_protocol::protocol::HeaderVersion,
{
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Encodable;
    let mut b = bytes::BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(h.correlation_id)
        .encode(&mut b, R::header_version(version))
        .expect("header");
    r.encode(&mut b, version).expect("response");
    b.to_vec()
}

const THROTTLE_KEY: &str = "leader.replication.throttled.rate";

/// The answer to a change of cluster-wide configs; `None` (forwarded) for
/// anything else.
fn alter_configs(
    req: &kafka_protocol::messages::IncrementalAlterConfigsRequest,
    state: &std::sync::Mutex<ConfigState>,
) -> Option<kafka_protocol::messages::IncrementalAlterConfigsResponse> {
    use kafka_protocol::messages::IncrementalAlterConfigsResponse;
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    use kafka_protocol::protocol::StrBytes;
    let [r] = req.resources.as_slice() else {
        return None;
    };
    if r.resource_type != 4 || !r.resource_name.is_empty() {
        return None;
    }
    let mut st = state.lock().expect("state");
    let mut answer = AlterConfigsResourceResponse::default()
        .with_resource_type(4)
        .with_resource_name(r.resource_name.clone());
    if st.refuse {
        st.log.push("refused".into());
        answer = answer
            .with_error_code(40)
            .with_error_message(Some(StrBytes::from_static_str(
                "broker config \"leader.replication.throttled.rate\" cannot be changed at run time",
            )));
    } else {
        for c in &r.configs {
            assert_eq!(c.name.as_str(), THROTTLE_KEY, "only the throttle is set");
            match c.config_operation {
                0 => {
                    let v = c.value.as_ref().map(ToString::to_string);
                    st.log
                        .push(format!("SET {}", v.clone().unwrap_or_default()));
                    st.throttle = v;
                }
                1 => {
                    st.log.push("DELETE".into());
                    st.throttle = None;
                }
                op => panic!("operation {op}"),
            }
        }
    }
    Some(IncrementalAlterConfigsResponse::default().with_responses(vec![answer]))
}

/// The answer to a description of cluster-wide configs, as Kafka gives it
/// for the `""` resource; `None` (forwarded) for anything else.
fn describe_configs(
    req: &kafka_protocol::messages::DescribeConfigsRequest,
    state: &std::sync::Mutex<ConfigState>,
) -> Option<kafka_protocol::messages::DescribeConfigsResponse> {
    use kafka_protocol::messages::DescribeConfigsResponse;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::protocol::StrBytes;
    let [r] = req.resources.as_slice() else {
        return None;
    };
    if r.resource_type != 4 || !r.resource_name.is_empty() {
        return None;
    }
    let mut st = state.lock().expect("state");
    st.log.push("Describe".into());
    let configs = st
        .throttle
        .iter()
        .map(|v| {
            DescribeConfigsResourceResult::default()
                .with_name(StrBytes::from_static_str(THROTTLE_KEY))
                .with_value(Some(StrBytes::from_string(v.clone())))
                .with_config_source(3)
        })
        .collect();
    Some(DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_resource_type(4)
                .with_resource_name(r.resource_name.clone())
                .with_configs(configs),
        ]))
}

/// The log entries that change the throttle, with the index of each.
fn throttle_changes(log: &[String]) -> Vec<(usize, String)> {
    log.iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("SET ") || l.as_str() == "DELETE")
        .map(|(i, l)| (i, l.clone()))
        .collect()
}

/// Polls `f` until it answers `Some`, for at most `secs`.
async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates `topic` and waits until every partition has all its replicas in
/// sync.
async fn replicated_topic(via: &str, topic: &str, partitions: i32, rf: i32) {
    // Just after start a broker can list its peers in Metadata and still
    // refuse a replicated topic as if it were alone: asked again until it
    // takes it.
    eventually(60, "the topic created", || async {
        let mut admin = skiff_operator::admin::AdminClient::connect(via)
            .await
            .ok()?;
        admin
            .create_topic(topic, partitions, Some(rf), &Default::default())
            .await
            .ok()
    })
    .await;
    eventually(60, "the topic's replicas in sync", || async {
        let mut admin = skiff_operator::admin::AdminClient::connect(via)
            .await
            .ok()?;
        let info = admin.cluster_info().await.ok()?;
        let ps: Vec<_> = info
            .partitions
            .iter()
            .filter(|p| p.topic == topic)
            .collect();
        (ps.len() == usize::try_from(partitions).unwrap_or(0)
            && ps.iter().all(|p| {
                p.replicas.len() == usize::try_from(rf).unwrap_or(0)
                    && p.isr.len() == p.replicas.len()
            }))
        .then_some(())
    })
    .await;
}

/// The partitions whose reassignment is under way.
async fn in_flight(via: &str) -> BTreeSet<(String, i32)> {
    let mut admin = skiff_operator::admin::AdminClient::connect(via)
        .await
        .expect("admin");
    admin
        .reassignments_in_progress()
        .await
        .expect("ListPartitionReassignments")
}

/// A reconcile, and whether some move was under way all through it (the
/// same partition in flight before and after: a move does not restart).
async fn turn_watching_moves(world: &Shared, via: &str) -> (Turn, bool) {
    let before = in_flight(via).await;
    let t = turn(world).await;
    let after = in_flight(via).await;
    (t, !before.is_disjoint(&after))
}

/// Phases in the order they were recorded, repeats folded.
fn phases(turns: &[Turn]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in turns {
        let p = t.phase();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn scaling_up_grows_the_stateful_set_waits_for_the_ready_broker_then_moves_replicas_onto_it()
{
    // Brokers 0-2 run (the metadata voters); broker 3 is the pod a scale-up
    // adds, started only once the StatefulSet asks for it.
    let mut cluster = support::Cluster::start(4, 3, 3).await;
    let b0 = cluster.bootstrap(0);
    replicated_topic(&b0, "orders", 6, 3).await;
    let configs = BrokerConfigs::to(&b0).await;
    let gate = Gate::to(&configs.addr).await;
    let world = World::new(
        json!({"replicas": 4}),
        &gate.addr,
        3,
        3,
        json!({"metadataVoters": [0, 1, 2], "replicas": 3}),
    );
    let held_by = |id: i32| {
        let b0 = b0.clone();
        async move {
            holding(&b0)
                .await
                .expect("metadata")
                .get(&id)
                .copied()
                .unwrap_or(0)
        }
    };
    let mut turns = Vec::new();

    // Growing asks nothing of the brokers: the StatefulSet grows.
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![4]);
    assert_eq!(t.phase(), "Growing");
    assert_eq!(t.status["scale"]["targetReplicas"], 4);
    assert_eq!(t.message(), "starting brokers up to 4");
    assert!(
        t.event_reasons().contains(&"Growing".to_string()),
        "{:?}",
        t.event_reasons()
    );
    assert_eq!(gate.accepted(), 0, "the brokers were asked while growing");
    turns.push(t);

    // The new pod exists but its broker has not started.
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![4]);
    assert_eq!(t.phase(), "Growing");
    assert_eq!(
        t.message(),
        "waiting for brokers [3] to be ready and registered"
    );
    turns.push(t);

    // The broker registers, but its pod is not Ready yet: still waiting.
    cluster.start_broker(3);
    cluster.wait_registered(&[0, 1, 2, 3]).await;
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Growing");
    assert_eq!(
        t.message(),
        "waiting for brokers [3] to be ready and registered"
    );
    assert!(in_flight(&b0).await.is_empty());
    assert_eq!(held_by(3).await, 0);
    turns.push(t);

    // Ready. Between the operator's look and its moves, broker 3 leaves the
    // metadata (as a replaced pod would before it registers again): the
    // brokers refuse every move onto it, and the scale stalls where it was.
    world.lock().expect("world").ready.insert(3);
    gate.hold(2);
    let (t, ()) = tokio::join!(turn(&world), async {
        gate.holding().await;
        let mut admin = skiff_operator::admin::AdminClient::connect(&b0)
            .await
            .expect("admin");
        admin
            .unregister_broker(3)
            .await
            .expect("unregister broker 3");
        gate.release();
    });
    assert_eq!(t.phase(), "Growing", "a failed step counted as progress");
    let (status, reason, message) = t.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ScaleStalled"));
    assert!(
        message.starts_with("rebalancing onto the brokers: the brokers refused moves: ")
            && message.contains("INVALID_REPLICA_ASSIGNMENT"),
        "{message}"
    );
    assert!(t.event_reasons().contains(&"ScaleStalled".to_string()));
    assert!(!t.event_reasons().contains(&"Rebalancing".to_string()));
    assert!(in_flight(&b0).await.is_empty());
    assert_eq!(held_by(3).await, 0);
    // The throttle went on before the moves were asked for (the default
    // rate), and the status says the operator owns it.
    assert_eq!(configs.throttle().as_deref(), Some("20000000"));
    assert_eq!(t.status["scale"]["appliedReplicationThrottle"], 20_000_000);
    assert!(
        t.event_reasons()
            .contains(&"ReplicationThrottleSet".to_string())
    );
    turns.push(t);

    // The broker starts again and registers; the next operator waits for it
    // and then starts the moves onto it.
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Growing");
    assert_eq!(
        t.message(),
        "waiting for brokers [3] to be ready and registered"
    );
    turns.push(t);
    cluster.kill(3);
    cluster.start_broker(3);
    cluster.wait_registered(&[0, 1, 2, 3]).await;

    // The next operator starts the moves onto broker 3.
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Rebalancing");
    assert!(
        t.message()
            .starts_with("rebalancing onto the brokers: moving "),
        "{}",
        t.message()
    );
    assert_eq!(
        t.condition("Degraded").1,
        "AsExpected",
        "the stall is cleared"
    );
    assert!(t.event_reasons().contains(&"Rebalancing".to_string()));
    // Already in force: not set again.
    let changes: Vec<String> = throttle_changes(&configs.log())
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(changes, ["SET 20000000"]);
    assert_eq!(configs.throttle().as_deref(), Some("20000000"));
    turns.push(t);
    eventually(60, "replicas on broker 3", || async {
        (held_by(3).await > 0).then_some(())
    })
    .await;

    // Until the moves are done (and the planner wants no more) the phase
    // stays Rebalancing; then the scale is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let (t, moving) = turn_watching_moves(&world, &b0).await;
        assert_eq!(t.sizes_applied(), vec![4]);
        let phase = t.phase();
        if moving {
            assert!(t.message().starts_with("waiting for "), "{}", t.message());
        }
        turns.push(t);
        if phase == "Idle" {
            break;
        }
        assert_eq!(phase, "Rebalancing");
        assert!(
            std::time::Instant::now() < deadline,
            "the scale did not finish in 90 s: {:?}; broker 0's log:\n{}",
            phases(&turns),
            cluster.log_tail(0)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(in_flight(&b0).await.is_empty(), "Idle with moves under way");
    assert_eq!(phases(&turns), ["Growing", "Rebalancing", "Idle"]);
    // Set once before the first move, deleted after the last one.
    let log = configs.log();
    let changes = throttle_changes(&log);
    let moves: Vec<usize> = (0..log.len()).filter(|i| log[*i] == REASSIGN).collect();
    assert_eq!(
        changes.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["SET 20000000", "DELETE"],
        "{log:?}"
    );
    assert!(changes[0].0 < moves[0] && changes[1].0 > moves[moves.len() - 1]);
    assert_eq!(configs.throttle(), None);
    let last = turns.last().expect("turns");
    assert_eq!(last.status.get("scale"), None, "{}", last.status);
    assert!(
        last.event_reasons()
            .contains(&"ReplicationThrottleRemoved".to_string())
    );

    // Balanced over four brokers, every partition still with 3 replicas.
    let held = holding(&b0).await.expect("metadata");
    assert_eq!(held.values().sum::<usize>(), 18);
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3]);
    let (lo, hi) = (
        held.values().min().copied().unwrap_or(0),
        held.values().max().copied().unwrap_or(0),
    );
    assert!(hi - lo <= 1, "{held:?}");

    // Left alone afterwards, the cluster is not asked or reshuffled.
    let asked = gate.accepted();
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Idle");
    assert_eq!(gate.accepted(), asked);
    assert!(turns.iter().all(|t| t.claims_deleted().is_empty()));
}

#[tokio::test]
async fn scaling_down_drains_the_highest_broker_before_the_stateful_set_shrinks_then_unregisters_it_and_deletes_its_claim()
 {
    let mut cluster = support::Cluster::start(4, 3, 4).await;
    let b0 = cluster.bootstrap(0);
    replicated_topic(&b0, "orders", 8, 3).await;
    let before = holding(&b0).await.expect("metadata");
    assert!(
        before.get(&3).copied().unwrap_or(0) > 0,
        "broker 3 must hold replicas for the drain to mean anything: {before:?}"
    );
    let configs = BrokerConfigs::to(&b0).await;
    let world = World::new(
        json!({"replicas": 3, "storage": {"deleteClaim": true},
               "scaling": {"replicationThrottle": "50Mi"}}),
        &configs.addr,
        4,
        3,
        json!({"metadataVoters": [0, 1, 2], "replicas": 4}),
    );
    world.lock().expect("world").probe = Some(b0.clone());

    // The brokers refuse the throttle: nothing moves unthrottled, and the
    // refusal is reported.
    configs.refuse(true);
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![4]);
    let (status, reason, message) = t.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ReplicationThrottleNotSet")
    );
    assert!(
        message.starts_with(
            "draining brokers [3]: the replication throttle could not be set, so nothing moves: "
        ) && message.contains("INVALID_CONFIG"),
        "{message}"
    );
    assert!(
        t.event_reasons()
            .contains(&"ReplicationThrottleNotSet".to_string())
    );
    assert!(!t.event_reasons().contains(&"Draining".to_string()));
    assert!(in_flight(&b0).await.is_empty(), "moved unthrottled");
    assert_eq!(holding(&b0).await.expect("metadata"), before);
    assert!(!configs.log().iter().any(|l| l == REASSIGN));
    // Recorded before it was tried, so a later removal is the operator's.
    assert_eq!(t.status["scale"]["appliedReplicationThrottle"], 52_428_800);
    configs.refuse(false);

    // The drain starts; the StatefulSet keeps its four brokers.
    let t = turn(&world).await;
    assert_eq!(configs.throttle().as_deref(), Some("52428800"));
    assert_eq!(t.condition("Degraded").1, "AsExpected");
    assert_eq!(t.sizes_applied(), vec![4]);
    assert_eq!(t.phase(), "Draining");
    assert_eq!(t.status["scale"]["targetReplicas"], 3);
    assert!(
        t.message().starts_with("draining brokers [3]: moving "),
        "{}",
        t.message()
    );
    assert!(t.event_reasons().contains(&"Draining".to_string()));
    assert!(t.claims_deleted().is_empty());
    assert!(cluster.is_registered(3).await);
    let mut turns = vec![t];

    // Each later operator waits for the moves, then shrinks once the
    // metadata shows broker 3 empty.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let shrunk = loop {
        let (t, moving) = turn_watching_moves(&world, &b0).await;
        let sizes = t.sizes_applied();
        let done = sizes == [3];
        assert!(done || sizes == [4], "{sizes:?}");
        assert_eq!(t.phase(), "Draining", "{}", t.status);
        if done {
            break t;
        }
        // Moves under way are waited for, whatever they list.
        let message = t.message();
        assert!(
            message.starts_with("waiting for ")
                || message.starts_with("draining brokers [3]: moving "),
            "{message}"
        );
        if moving {
            assert!(message.starts_with("waiting for "), "{message}");
        }
        assert!(t.claims_deleted().is_empty());
        assert!(
            cluster.is_registered(3).await,
            "unregistered before the shrink"
        );
        turns.push(t);
        assert!(
            std::time::Instant::now() < deadline,
            "broker 3 not drained in 90 s; broker 0's log:\n{}",
            cluster.log_tail(0)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // What broker 3 held when the StatefulSet was told to drop it.
    assert_eq!(world.lock().expect("world").held_at_shrink, [(3, 0)]);
    // The throttle was on for every move and went with the shrink.
    let log = configs.log();
    let changes = throttle_changes(&log);
    let moves: Vec<usize> = (0..log.len()).filter(|i| log[*i] == REASSIGN).collect();
    assert_eq!(
        changes.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["SET 52428800", "DELETE"],
        "{log:?}"
    );
    assert!(changes[0].0 < moves[0] && changes[1].0 > moves[moves.len() - 1]);
    assert_eq!(configs.throttle(), None);
    assert_eq!(
        shrunk.status["scale"].get("appliedReplicationThrottle"),
        None
    );
    // The same reconcile unregistered it and deleted its volume claim,
    // after the StatefulSet shrank.
    assert!(!cluster.is_registered(3).await, "broker 3 still registered");
    let shrink_at = shrunk
        .seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
        .expect("the StatefulSet patch");
    let deleted = shrunk.claims_deleted();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(deleted[0].0 > shrink_at);
    assert_eq!(deleted[0].1, "data-kafka-3");
    assert_eq!(shrunk.message(), "removed brokers [3]");
    assert!(
        shrunk
            .event_reasons()
            .contains(&"BrokersRemoved".to_string())
    );
    turns.push(shrunk);
    // The pod goes, as the StatefulSet controller deletes it.
    cluster.kill(3);

    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![3]);
    assert!(t.claims_deleted().is_empty());
    turns.push(t);
    assert_eq!(phases(&turns), ["Draining", "Idle"]);
    {
        let w = world.lock().expect("world");
        assert_eq!(w.claims, BTreeSet::from([0, 1, 2]));
        assert_eq!(w.replicas, 3);
    }
    let held = holding(&b0).await.expect("metadata");
    assert_eq!(held.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(held.values().sum::<usize>(), 24);
}

#[tokio::test]
async fn a_throttle_set_by_hand_before_a_scale_stays_in_force_and_is_not_removed_after_it() {
    // Broker 0 is the only metadata voter; broker 2 leaves.
    let mut cluster = support::Cluster::start(3, 1, 3).await;
    let b0 = cluster.bootstrap(0);
    replicated_topic(&b0, "orders", 6, 2).await;
    let configs = BrokerConfigs::to(&b0).await;
    configs.set_throttle(Some("5000000"));
    let world = World::new(
        json!({"replicas": 2}),
        &configs.addr,
        3,
        1,
        json!({"metadataVoters": [0], "replicas": 3}),
    );
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Draining");
    assert!(
        t.message().starts_with("draining brokers [2]: moving ")
            && t.message().contains(
                "under the cluster-wide leader.replication.throttled.rate 5000000 set outside the operator"
            ),
        "{}",
        t.message()
    );
    assert_eq!(t.status["scale"].get("appliedReplicationThrottle"), None);
    let mut turns = vec![t];
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let t = turn(&world).await;
        let shrunk = t.sizes_applied() == [2];
        turns.push(t);
        if shrunk {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "broker 2 not drained in 90 s: {:?}",
            phases(&turns)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.kill(2);
    turns.push(turn(&world).await);
    assert_eq!(phases(&turns), ["Draining", "Idle"]);
    // Never set, changed or deleted by the operator.
    assert!(
        throttle_changes(&configs.log()).is_empty(),
        "{:?}",
        configs.log()
    );
    assert_eq!(configs.throttle().as_deref(), Some("5000000"));
    assert!(turns.iter().all(|t| {
        !t.event_reasons()
            .iter()
            .any(|r| r.starts_with("ReplicationThrottle"))
    }));
}

// Not a controller, but the same stand-in: `skiff-operator rebalance
// --throttle`.
#[tokio::test]
async fn the_rebalance_command_throttles_its_moves_and_puts_back_the_throttle_it_found() {
    use skiff_operator::rebalance;
    let cluster = support::Cluster::start(3, 1, 3).await;
    let b0 = cluster.bootstrap(0);
    replicated_topic(&b0, "orders", 6, 2).await;
    let configs = BrokerConfigs::to(&b0).await;
    configs.set_throttle(Some("5000000"));
    let opts = rebalance::Options {
        bootstrap: configs.addr.clone(),
        credentials: None,
        drain: vec![2],
        tolerance: skiff_balance::Tolerance::default(),
    };
    let snap = rebalance::read_cluster(&opts).await.expect("the cluster");
    let plan = rebalance::plan(&snap, opts.tolerance).expect("a plan");
    assert!(!plan.moves.is_empty());
    let how = rebalance::Execution {
        batch: 2,
        batch_timeout: Duration::from_secs(60),
        poll: Duration::from_millis(200),
        throttle: Some(8_000_000),
    };
    rebalance::execute(&opts, &plan, how, |_, _| {})
        .await
        .expect("the plan carried out");
    let log = configs.log();
    let changes = throttle_changes(&log);
    let moves: Vec<usize> = (0..log.len()).filter(|i| log[*i] == REASSIGN).collect();
    assert_eq!(moves.len(), plan.moves.len().div_ceil(2), "{log:?}");
    assert_eq!(
        changes.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>(),
        ["SET 8000000", "SET 5000000"],
        "{log:?}"
    );
    assert!(changes[0].0 < moves[0] && changes[1].0 > moves[moves.len() - 1]);
    assert_eq!(configs.throttle().as_deref(), Some("5000000"));

    // Refused: nothing moves, and the error says why.
    configs.refuse(true);
    let err = rebalance::execute(&opts, &plan, how, |_, _| {})
        .await
        .expect_err("refused");
    assert!(
        err.to_string()
            .starts_with("the throttle could not be set, so nothing moved: ")
            && err.to_string().contains("INVALID_CONFIG"),
        "{err:#}"
    );
    assert!(in_flight(&b0).await.is_empty());
    assert_eq!(
        configs.log().iter().filter(|l| *l == REASSIGN).count(),
        moves.len()
    );
}

#[tokio::test]
async fn an_operator_restarted_after_the_shrink_still_unregisters_the_broker_and_keeps_its_claim_when_told_to()
 {
    // Created as one broker and grown to two: broker 0 is the only metadata
    // voter. The StatefulSet already shrank to one and broker 1's pod is
    // gone, but the operator stopped before unregistering it.
    let mut cluster = support::Cluster::start(2, 1, 2).await;
    let b0 = cluster.bootstrap(0);
    cluster.kill(1);
    let gate = Gate::to(&b0).await;
    let world = World::new(
        json!({"replicas": 1}),
        &gate.addr,
        1,
        1,
        json!({"metadataVoters": [0], "replicas": 1,
               "scale": {"phase": "Draining", "targetReplicas": 1, "message": "draining brokers [1]"}}),
    );
    world.lock().expect("world").claims = BTreeSet::from([0, 1]);
    assert!(cluster.is_registered(1).await);

    // Broker 0's pod restarts meanwhile: the scale waits for it, and is
    // still a scale-down.
    world.lock().expect("world").ready.remove(&0);
    let t = turn(&world).await;
    assert_eq!(t.phase(), "Draining");
    assert_eq!(
        t.message(),
        "waiting for brokers [0] to be ready and registered"
    );
    assert!(!t.event_reasons().contains(&"Growing".to_string()));
    assert!(cluster.is_registered(1).await);
    world.lock().expect("world").ready.insert(0);
    let mut turns = vec![t];

    // It looks, but cannot unregister: stalled, still Draining.
    gate.allow(1);
    let t = turn(&world).await;
    gate.open();
    assert_eq!(t.phase(), "Draining");
    let (status, reason, message) = t.condition("Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "ScaleStalled"));
    assert!(message.starts_with("removing brokers [1]: "), "{message}");
    assert!(t.event_reasons().contains(&"ScaleStalled".to_string()));
    assert!(!t.event_reasons().contains(&"BrokersRemoved".to_string()));
    assert!(cluster.is_registered(1).await);
    turns.push(t);

    // The next one unregisters it; its claim stays (deleteClaim is off).
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![1]);
    assert_eq!(t.phase(), "Draining");
    assert_eq!(t.message(), "removed brokers [1]");
    assert_eq!(t.condition("Degraded").1, "AsExpected");
    assert!(t.event_reasons().contains(&"BrokersRemoved".to_string()));
    assert!(!cluster.is_registered(1).await);
    turns.push(t);

    let t = turn(&world).await;
    turns.push(t);
    assert_eq!(phases(&turns), ["Draining", "Idle"]);
    assert!(turns.iter().all(|t| t.claims_deleted().is_empty()));
    assert_eq!(world.lock().expect("world").claims, BTreeSet::from([0, 1]));
}

#[tokio::test]
async fn unreachable_brokers_leave_every_phase_where_it_was_across_restarts() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    // (phase, spec.replicas, StatefulSet replicas)
    for (phase, desired, running) in [("Growing", 4, 4), ("Rebalancing", 4, 4), ("Draining", 3, 4)]
    {
        let world = World::new(
            json!({"replicas": desired, "storage": {"deleteClaim": true}}),
            &closed,
            running,
            3,
            json!({"metadataVoters": [0, 1, 2], "replicas": running,
                   "scale": {"phase": phase, "targetReplicas": desired, "message": "under way"}}),
        );
        for _ in 0..2 {
            let t = turn(&world).await;
            assert_eq!(t.phase(), phase);
            assert_eq!(t.status["scale"]["targetReplicas"], desired);
            assert_eq!(
                t.message(),
                "the brokers' Admin API cannot be reached; the scale waits"
            );
            assert_eq!(t.sizes_applied(), vec![i64::from(running)], "{phase}");
            assert!(t.claims_deleted().is_empty());
            // Waiting is not a new phase: no Event says one began.
            assert!(
                !t.event_reasons().iter().any(|r| r == phase),
                "{phase}: {:?}",
                t.event_reasons()
            );
        }
    }
}

#[tokio::test]
async fn a_refused_scale_that_is_withdrawn_leaves_no_scale_in_the_status() {
    // Nothing listens on the override: neither step needs the brokers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let world = World::new(
        json!({"replicas": 2}),
        &closed,
        3,
        3,
        json!({"metadataVoters": [0, 1, 2], "replicas": 3}),
    );
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![3]);
    assert_eq!(t.condition("Degraded").1, "ScaleDownBelowMetadataVoters");
    assert_eq!(t.status["scale"]["targetReplicas"], 2);

    // The person puts spec.replicas back.
    world.lock().expect("world").cluster["spec"]["replicas"] = json!(3);
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![3]);
    assert_eq!(t.condition("Degraded").1, "AsExpected");
    assert_eq!(
        t.status.get("scale"),
        None,
        "the refusal of a size no longer asked for is still reported"
    );
}

#[tokio::test]
async fn a_scale_down_below_the_replication_factor_in_use_is_refused_not_taken_for_unreachable_brokers()
 {
    // Broker 0 is the only metadata voter, so only the topic's two replicas
    // stand in the way of one broker.
    let cluster = support::Cluster::start(2, 1, 2).await;
    let b0 = cluster.bootstrap(0);
    replicated_topic(&b0, "orders", 2, 2).await;
    let world = World::new(
        json!({"replicas": 1, "storage": {"deleteClaim": true}}),
        &b0,
        2,
        1,
        json!({"metadataVoters": [0], "replicas": 2}),
    );
    let t = turn(&world).await;
    assert_eq!(t.sizes_applied(), vec![2]);
    assert_eq!(t.phase(), "Idle");
    assert_eq!(
        t.message(),
        "spec.replicas 1 is below the largest replication factor in use (2); the cluster keeps 2 brokers"
    );
    let (status, reason, _) = t.condition("Degraded");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "ScaleDownBelowReplicationFactor")
    );
    assert!(
        t.event_reasons()
            .contains(&"ScaleDownBelowReplicationFactor".to_string())
    );
    assert!(t.claims_deleted().is_empty());
    assert!(
        in_flight(&b0).await.is_empty(),
        "a refused scale moved replicas"
    );
    assert_eq!(holding(&b0).await.expect("metadata").get(&1), Some(&2));
}

/// A LoadBalancer Service of the cluster `kafka` (uid `c-1`) with these
/// ingress IPs.
fn load_balancer(name: &str, port_name: &str, ingress: &[&str]) -> Value {
    let mut svc = owned_service(name, "c-1");
    svc["spec"] = json!({"type": "LoadBalancer",
        "ports": [{"name": port_name, "port": 9094, "nodePort": 30000, "protocol": "TCP"}]});
    let ingress: Vec<Value> = ingress.iter().map(|ip| json!({"ip": ip})).collect();
    svc["status"] = json!({"loadBalancer": {"ingress": ingress}});
    svc
}

#[tokio::test]
async fn a_load_balancer_address_reaches_the_status_and_its_broker_and_a_change_restarts_only_that_broker()
 {
    // Nothing listens there: the roll cannot ask the brokers and waits.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let world = World::new(
        json!({"replicas": 2, "listeners": [
            {"name": "plain", "port": 9092},
            {"name": "lb", "port": 9094, "exposure": "LoadBalancer"}
        ]}),
        &unreachable,
        2,
        2,
        json!({"metadataVoters": [0, 1]}),
    );
    let advertised = |w: &Shared, id: i32| -> Option<String> {
        w.lock().expect("world").config_map.as_ref().and_then(|cm| {
            cm["data"][format!("advertised-{id}")]
                .as_str()
                .map(String::from)
        })
    };
    let config_hash = |t: &Turn| -> String {
        t.seen
            .iter()
            .find(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
            .map(|s| {
                s.body["spec"]["template"]["metadata"]["annotations"]["skiff.dev/config-hash"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .expect("the StatefulSet is applied")
    };

    // The Services are new: no load balancer has an address. The brokers
    // wait at start for theirs (not ready), and nothing is Degraded.
    {
        let mut w = world.lock().expect("world");
        w.ready.clear();
        w.services = vec![
            load_balancer("kafka-lb-bootstrap", "lb", &[]),
            load_balancer("kafka-0-lb", "lb", &[]),
            load_balancer("kafka-1-lb", "lb", &[]),
        ];
    }
    let first = turn(&world).await;
    let (status, reason, message) = first.condition("ExternalAddresses");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "Pending"));
    assert!(
        message.contains("kafka-lb-bootstrap") && message.contains("kafka-1-lb"),
        "{message}"
    );
    assert_eq!(
        first.condition("Ready").1,
        "ExternalAddressPending",
        "{:?}",
        first.condition("Ready")
    );
    assert_ne!(first.condition("Degraded").0, "True");
    assert_eq!(advertised(&world, 0), None);
    assert_eq!(
        first.status["bootstrapServers"],
        json!([{"name": "plain", "address": "kafka-bootstrap.kafka.svc.cluster.local:9092"}])
    );
    let env = first
        .seen
        .iter()
        .find(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
        .map(|s| s.body["spec"]["template"]["spec"]["containers"][0]["env"].clone())
        .expect("the StatefulSet is applied");
    assert!(
        env.as_array().is_some_and(|e| e
            .iter()
            .any(|v| v["name"] == "SKIFF_ADVERTISED_LISTENERS_FILE"
                && v["value"] == "/etc/skiff/advertised-$(SKIFF_NODE_ID)")),
        "{env}"
    );

    // The load balancers get their addresses: every broker's file is
    // written, the status lists the external bootstrap address, and the
    // pod template is the same (no roll for a first address).
    {
        let mut w = world.lock().expect("world");
        w.services = vec![
            load_balancer("kafka-lb-bootstrap", "lb", &["203.0.113.1"]),
            load_balancer("kafka-0-lb", "lb", &["203.0.113.10"]),
            load_balancer("kafka-1-lb", "lb", &["203.0.113.11"]),
        ];
        w.ready = BTreeSet::from([0, 1]);
    }
    let second = turn(&world).await;
    assert_eq!(second.condition("ExternalAddresses").0, "True");
    assert_eq!(
        advertised(&world, 0).as_deref(),
        Some("LB://203.0.113.10:9094\n")
    );
    assert_eq!(
        advertised(&world, 1).as_deref(),
        Some("LB://203.0.113.11:9094\n")
    );
    assert_eq!(
        second.status["bootstrapServers"][1],
        json!({"name": "lb", "address": "203.0.113.1:9094"})
    );
    assert_eq!(config_hash(&first), config_hash(&second));
    assert_eq!(second.condition("Ready").0, "True");
    assert!(world.lock().expect("world").pod_annotations.is_empty());

    // Broker 1's load balancer is re-created with another address: its file
    // follows and its pod (only) is marked for the roll, which waits here
    // because the brokers cannot be asked.
    world.lock().expect("world").services[2] = load_balancer("kafka-1-lb", "lb", &["203.0.113.99"]);
    let third = turn(&world).await;
    assert_eq!(
        advertised(&world, 1).as_deref(),
        Some("LB://203.0.113.99:9094\n")
    );
    assert_eq!(
        advertised(&world, 0).as_deref(),
        Some("LB://203.0.113.10:9094\n")
    );
    {
        let w = world.lock().expect("world");
        assert_eq!(
            w.pod_annotations.keys().copied().collect::<Vec<_>>(),
            vec![1]
        );
        assert_eq!(
            w.pod_annotations[&1]["skiff.dev/restart"],
            "advertised-address-changed"
        );
    }
    assert_eq!(third.event_reasons(), vec!["ExternalAddressChanged"]);
    let (progressing, why, _) = third.condition("Progressing");
    assert_eq!(
        (progressing.as_str(), why.as_str()),
        ("True", "ClusterUnreachable")
    );
    assert_eq!(config_hash(&third), config_hash(&first));

    // The load balancer loses its status for a while: the broker keeps its
    // last address, the status says the address is pending again, and the
    // pod is not marked twice.
    world.lock().expect("world").services[2] = load_balancer("kafka-1-lb", "lb", &[]);
    let fourth = turn(&world).await;
    assert_eq!(
        advertised(&world, 1).as_deref(),
        Some("LB://203.0.113.99:9094\n")
    );
    assert_eq!(fourth.condition("ExternalAddresses").1, "Pending");
    assert!(
        !fourth
            .seen
            .iter()
            .any(|s| s.method == "PATCH" && s.path.contains("/pods/")),
        "the pod is already marked"
    );
}

#[tokio::test]
async fn each_broker_gets_its_nodes_rack_a_missing_label_is_reported_and_a_relabelled_node_restarts_its_broker()
 {
    // Nothing listens there: the roll cannot ask the brokers and waits.
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let world = World::new(
        json!({"replicas": 2, "rack": {"topologyKey": "topology.kubernetes.io/zone"}}),
        &unreachable,
        2,
        2,
        json!({"metadataVoters": [0, 1]}),
    );
    let zone = |z: &str| json!({"topology.kubernetes.io/zone": z, "kubernetes.io/os": "linux"});
    let rack_key = |w: &Shared, node: &str| -> Option<String> {
        w.lock().expect("world").config_map.as_ref().and_then(|cm| {
            cm["data"][format!("rack-{node}")]
                .as_str()
                .map(String::from)
        })
    };
    let config_hash = |t: &Turn| -> String {
        t.seen
            .iter()
            .find(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
            .map(|s| {
                s.body["spec"]["template"]["metadata"]["annotations"]["skiff.dev/config-hash"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .expect("the StatefulSet is applied")
    };
    let racks = |t: &Turn| -> Vec<Value> {
        t.status["brokers"]
            .as_array()
            .map(|b| b.iter().map(|b| b["rack"].clone()).collect())
            .unwrap_or_default()
    };

    // Broker 0's node is in zone-a; broker 1's node lacks the label: broker
    // 1 gets no rack, waits at start (not ready), and the status says why.
    {
        let mut w = world.lock().expect("world");
        w.nodes = BTreeMap::from([
            ("node-a".to_string(), zone("zone-a")),
            ("node-b".to_string(), json!({"kubernetes.io/os": "linux"})),
        ]);
        w.pod_nodes = BTreeMap::from([(0, "node-a".to_string()), (1, "node-b".to_string())]);
        w.ready = BTreeSet::from([0]);
    }
    let first = turn(&world).await;
    assert_eq!(rack_key(&world, "node-a").as_deref(), Some("zone-a\n"));
    assert_eq!(rack_key(&world, "node-b"), None);
    let (status, reason, message) = first.condition("Racks");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "NodeLabelMissing")
    );
    assert!(
        message.contains("node node-b has no label topology.kubernetes.io/zone"),
        "{message}"
    );
    assert_eq!(first.condition("Ready").1, "RackPending");
    assert_eq!(first.event_reasons(), vec!["NodeLabelMissing"]);
    assert_eq!(racks(&first), vec![json!("zone-a"), Value::Null]);
    // Only the Nodes it needs, by name (RBAC: get on nodes).
    let node_gets: Vec<&str> = first
        .seen
        .iter()
        .filter(|s| s.path.starts_with("/api/v1/nodes"))
        .map(|s| {
            assert_eq!(s.method, "GET");
            s.path.as_str()
        })
        .collect();
    assert_eq!(node_gets.len(), 2, "{node_gets:?}");
    let env = first
        .seen
        .iter()
        .find(|s| s.method == "PATCH" && s.path.contains("/statefulsets/kafka"))
        .map(|s| s.body["spec"]["template"]["spec"]["containers"][0]["env"].clone())
        .expect("the StatefulSet is applied");
    assert!(
        env.as_array()
            .is_some_and(|e| e.iter().any(|v| v["name"] == "SKIFF_BROKER_RACK_FILE"
                && v["value"] == "/etc/skiff/rack-$(NODE_NAME)")),
        "{env}"
    );
    // Reported once, not at every reconcile.
    let again = turn(&world).await;
    assert!(
        again.event_reasons().is_empty(),
        "{:?}",
        again.event_reasons()
    );

    // The node gets its label: broker 1's rack is written, every broker is
    // ready, and the pod template is the same (no roll for a first rack).
    {
        let mut w = world.lock().expect("world");
        w.nodes.insert("node-b".to_string(), zone("zone-b"));
        w.ready = BTreeSet::from([0, 1]);
    }
    let second = turn(&world).await;
    assert_eq!(rack_key(&world, "node-b").as_deref(), Some("zone-b\n"));
    assert_eq!(second.condition("Racks").0, "True");
    assert_eq!(second.condition("Ready").0, "True");
    assert_eq!(racks(&second), vec![json!("zone-a"), json!("zone-b")]);
    assert_eq!(config_hash(&first), config_hash(&second));
    assert!(world.lock().expect("world").pod_annotations.is_empty());

    // Node a is relabelled: its key follows, and the broker on it (only) is
    // marked for the roll, which waits here as the brokers cannot be asked.
    world
        .lock()
        .expect("world")
        .nodes
        .insert("node-a".to_string(), zone("zone-c"));
    let third = turn(&world).await;
    assert_eq!(rack_key(&world, "node-a").as_deref(), Some("zone-c\n"));
    {
        let w = world.lock().expect("world");
        assert_eq!(
            w.pod_annotations.keys().copied().collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!(w.pod_annotations[&0]["skiff.dev/restart"], "rack-changed");
    }
    assert_eq!(third.event_reasons(), vec!["RackChanged"]);
    assert_eq!(third.condition("Progressing").1, "ClusterUnreachable");
    assert_eq!(config_hash(&third), config_hash(&first));

    // Broker 1's pod is rescheduled onto a node in another zone: it reads
    // that node's key, so nothing is marked, and node b keeps its key for
    // a pod that comes back.
    {
        let mut w = world.lock().expect("world");
        w.nodes.insert("node-d".to_string(), zone("zone-d"));
        w.pod_nodes.insert(1, "node-d".to_string());
    }
    let fourth = turn(&world).await;
    assert_eq!(rack_key(&world, "node-d").as_deref(), Some("zone-d\n"));
    assert_eq!(rack_key(&world, "node-b").as_deref(), Some("zone-b\n"));
    assert_eq!(racks(&fourth), vec![json!("zone-c"), json!("zone-d")]);
    assert!(
        !world
            .lock()
            .expect("world")
            .pod_annotations
            .contains_key(&1),
        "a rescheduled pod reads its new node's rack at start"
    );
}

// ---------------------------------------------------------------- TLS (#6)

fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn unb64(v: &Value) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 string"))
            .expect("base64"),
    )
    .expect("utf-8")
}

/// A cluster like [`cluster`] with an mtls listener (and a plain one).
fn tls_cluster_value(bootstrap: &str) -> Value {
    let mut c = cluster(bootstrap, json!([{"namespace": "team-a"}]));
    c["spec"]["listeners"] = json!([
        {"name": "plain", "port": 9092},
        {"name": "mtls", "port": 9094, "tls": true, "authentication": "mtls"}
    ]);
    c["status"] = json!({"bootstrapServers": [
        {"name": "plain", "address": "kafka-bootstrap.kafka.svc.cluster.local:9092"},
        {"name": "mtls", "address": "kafka-bootstrap.kafka.svc.cluster.local:9094"}]});
    c
}

fn ca_secret(ca: &skiff_operator::pki::KeyedCert) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "kafka-cluster-ca", "namespace": "kafka"},
        "data": {"ca.crt": b64(&ca.cert_pem), "ca.key": b64(&ca.key_pem)}})
}

fn tls_user(rotation: Option<&str>) -> User {
    let mut u = serde_json::to_value(user(rotation)).expect("json");
    // No ACLs: the test broker has no authorizer (ACLs are the SCRAM
    // users' code, and e2e/test_operator_tls.py applies them for real).
    u["spec"]["authentication"]["type"] = json!("tls");
    serde_json::from_value(u).expect("user")
}

#[tokio::test]
async fn a_tls_user_gets_a_certificate_from_the_cluster_ca_and_rotation_reissues_it() {
    let broker = support::Broker::start().await;
    let now = time::OffsetDateTime::now_utc();
    let ca = skiff_operator::pki::new_ca("skiff cluster CA kafka/kafka", now).expect("ca");
    // A SCRAM credential left from when the User was scram-sha-512.
    let mut admin = skiff_operator::admin::AdminClient::connect(&broker.bootstrap)
        .await
        .expect("admin");
    admin
        .upsert_scram_sha512("team-a.alice", "old-password")
        .await
        .expect("credential");
    let secret_ok =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alice-kafka"}});
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                tls_cluster_value(&broker.bootstrap),
            ),
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-cluster-ca",
                200,
                ca_secret(&ca),
            ),
            step(
                "GET",
                "/api/v1/namespaces/team-a/secrets/alice-kafka",
                404,
                not_found(),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/team-a/secrets/alice-kafka",
                200,
                secret_ok.clone(),
            ),
            step("POST", "/events", 201, event_ok()),
            step("POST", "/events", 201, event_ok()),
            step(
                "PATCH",
                "/users/alice/status",
                200,
                serde_json::to_value(tls_user(None)).expect("json"),
            ),
        ],
    );
    controllers::user::reconcile(Arc::new(tls_user(None)), context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    let secret = &seen[3];
    assert!(secret.path.contains("fieldManager=skiff-operator"));
    assert_eq!(
        secret.body["metadata"]["ownerReferences"][0]["kind"],
        "User"
    );
    assert_eq!(
        secret.body["metadata"]["annotations"]["skiff.dev/rotation"],
        ""
    );
    let data = &secret.body["data"];
    assert_eq!(unb64(&data["ca.crt"]), ca.cert_pem);
    assert_eq!(unb64(&data["username"]), "team-a.alice");
    assert_eq!(unb64(&data["security.protocol"]), "SSL");
    assert_eq!(
        unb64(&data["bootstrap.servers"]),
        "kafka-bootstrap.kafka.svc.cluster.local:9094"
    );
    assert!(data.get("password").is_none());
    let cert = unb64(&data["user.crt"]);
    assert!(unb64(&data["user.key"]).contains("PRIVATE KEY"));
    let info = skiff_operator::pki::parse(&cert).expect("certificate");
    // The broker's ssl.principal.mapping=CN turns this into the principal.
    assert_eq!(info.common_name.as_deref(), Some("team-a.alice"));
    assert!(skiff_operator::pki::signed_by(&cert, &ca.cert_pem));
    assert_eq!(seen[4].body["reason"], "CertificateIssued");
    assert_eq!(seen[5].body["reason"], "CredentialDeleted");
    assert_eq!(ready(&seen[6].body), ("True", "Ready"));
    assert_eq!(seen[6].body["status"]["principal"], "User:team-a.alice");
    assert_eq!(seen[6].body["status"]["secretName"], "alice-kafka");
    assert!(
        !admin
            .has_scram_sha512("team-a.alice")
            .await
            .expect("describe"),
        "the old password no longer works"
    );

    // Held and valid: kept. A new rotation value: issued again.
    let held = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "alice-kafka", "annotations": {"skiff.dev/rotation": ""}},
        "data": data.clone()});
    for (rotation, reissued) in [(None, false), (Some("2026-12-04"), true)] {
        let (client, handle) = mock_client();
        let mut steps = vec![
            step(
                "GET",
                "/kafkaclusters/kafka",
                200,
                tls_cluster_value(&broker.bootstrap),
            ),
            step("GET", "/secrets/kafka-cluster-ca", 200, ca_secret(&ca)),
            step("GET", "/secrets/alice-kafka", 200, held.clone()),
        ];
        if reissued {
            steps.push(step(
                "PATCH",
                "/secrets/alice-kafka",
                200,
                secret_ok.clone(),
            ));
            steps.push(step("POST", "/events", 201, event_ok()));
        }
        steps.push(step(
            "PATCH",
            "/users/alice/status",
            200,
            serde_json::to_value(tls_user(None)).expect("json"),
        ));
        let server = serve(handle, steps);
        controllers::user::reconcile(Arc::new(tls_user(rotation)), context(client))
            .await
            .expect("reconcile");
        let seen = server.await.expect("server");
        if reissued {
            let new = unb64(&seen[3].body["data"]["user.crt"]);
            assert_ne!(new, cert);
            assert_eq!(
                seen[3].body["metadata"]["annotations"]["skiff.dev/rotation"],
                "2026-12-04"
            );
            assert!(
                seen[4].body["note"]
                    .as_str()
                    .unwrap_or("")
                    .contains("rotated")
            );
        }
        assert_eq!(ready(&seen.last().expect("status").body), ("True", "Ready"));
    }
}

#[tokio::test]
async fn a_tls_user_of_a_cluster_without_an_mtls_listener_is_refused_with_an_event() {
    let (client, handle) = mock_client();
    let mut kc = tls_cluster_value("127.0.0.1:1");
    kc["spec"]["listeners"] = json!([{"name": "tls", "port": 9093, "tls": true}]);
    let server = serve(
        handle,
        vec![
            step("GET", "/kafkaclusters/kafka", 200, kc),
            step(
                "PATCH",
                "/users/alice/status",
                200,
                serde_json::to_value(tls_user(None)).expect("json"),
            ),
            step("POST", "/events", 201, event_ok()),
        ],
    );
    controllers::user::reconcile(Arc::new(tls_user(None)), context(client))
        .await
        .expect("reconcile");
    let seen = server.await.expect("server");
    assert_eq!(ready(&seen[1].body), ("False", "NoMtlsListener"));
    assert_eq!(seen[1].body["status"]["principal"], "User:team-a.alice");
    assert_eq!(seen[2].body["reason"], "NoMtlsListener");
    assert_eq!(seen[2].body["type"], "Warning");
}

#[tokio::test]
async fn a_tls_cluster_gets_its_ca_once_and_a_certificate_per_broker() {
    let mut kc: KafkaCluster =
        serde_json::from_value(tls_cluster_value("127.0.0.1:1")).expect("cluster");
    kc.spec.replicas = 2;
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-cluster-ca",
                404,
                not_found(),
            ),
            step(
                "POST",
                "/api/v1/namespaces/kafka/secrets",
                201,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-cluster-ca"}}),
            ),
            step(
                "GET",
                "/api/v1/namespaces/kafka/secrets/kafka-broker-certs",
                404,
                not_found(),
            ),
            step(
                "PATCH",
                "/api/v1/namespaces/kafka/secrets/kafka-broker-certs",
                200,
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kafka-broker-certs"}}),
            ),
        ],
    );
    let ctx = context(client);
    let issued = controllers::cluster::ensure_broker_certs(&ctx, "kafka", &kc, 2, &[])
        .await
        .expect("certificates");
    assert_eq!(issued, vec![(0, "new"), (1, "new")]);
    let seen = server.await.expect("server");
    let ca_body = &seen[1].body;
    assert_eq!(ca_body["metadata"]["name"], "kafka-cluster-ca");
    assert_eq!(ca_body["metadata"]["ownerReferences"][0]["uid"], "c-1");
    let ca = skiff_operator::pki::KeyedCert {
        cert_pem: unb64(&ca_body["data"]["ca.crt"]),
        key_pem: unb64(&ca_body["data"]["ca.key"]),
    };
    let certs = &seen[3].body;
    assert!(seen[3].path.contains("fieldManager=skiff-operator"));
    assert_eq!(
        certs["metadata"]["ownerReferences"][0]["kind"],
        "KafkaCluster"
    );
    assert_eq!(unb64(&certs["data"]["ca.crt"]), ca.cert_pem);
    for id in 0..2 {
        let pem = unb64(&certs["data"][format!("broker-{id}.crt")]);
        assert!(skiff_operator::pki::signed_by(&pem, &ca.cert_pem));
        let info = skiff_operator::pki::parse(&pem).expect("certificate");
        assert!(
            info.sans
                .contains(&format!("kafka-{id}.kafka-brokers.kafka.svc.cluster.local")),
            "{:?}",
            info.sans
        );
        assert!(
            info.sans
                .contains(&"kafka-bootstrap.kafka.svc.cluster.local".to_string())
        );
    }

    // The next reconcile reads both Secrets and writes nothing: the CA is
    // never made again and valid certificates are kept.
    let held = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "kafka-broker-certs"}, "data": certs["data"].clone()});
    let (client, handle) = mock_client();
    let server = serve(
        handle,
        vec![
            step("GET", "/secrets/kafka-cluster-ca", 200, ca_secret(&ca)),
            step("GET", "/secrets/kafka-broker-certs", 200, held),
        ],
    );
    let issued = controllers::cluster::ensure_broker_certs(&context(client), "kafka", &kc, 2, &[])
        .await
        .expect("certificates");
    assert!(issued.is_empty());
    assert_eq!(server.await.expect("server").len(), 2);
}
