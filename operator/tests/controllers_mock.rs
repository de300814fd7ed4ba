//! Reconcile flows against a mocked Kubernetes API (tower-test): each test
//! scripts the API server's answers in order and checks the requests the
//! controller makes. Where a flow reaches the brokers, a real skiff-broker
//! process answers (through the bootstrap-override annotation).

// Shared with admin_broker.rs; this crate does not use every helper.
#[allow(dead_code)]
mod support;

use std::sync::Arc;
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
    let sts = &seen[7].body;
    assert_eq!(sts["spec"]["updateStrategy"]["type"], "OnDelete");
    let pod = &sts["spec"]["template"]["spec"];
    assert_eq!(pod["volumes"][1]["secret"]["secretName"], "kafka-operator");
    assert!(
        pod["containers"][0]["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v
                .as_str()
                .is_some_and(|v| v.ends_with(",OPERATOR://0.0.0.0:19093"))))
    );
    assert_eq!(seen[12].body["reason"], "StaleServicesDeleted");
    let st = &seen[17].body["status"];
    assert_eq!(ready(&seen[17].body), ("True", "Ready"));
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
        seen[7].body["metadata"]["annotations"]["skiff.dev/metadata-voters"],
        "3"
    );
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
    assert_eq!(seen[13].body["reason"], "RollingBroker");
    assert_eq!(
        seen[6].body["metadata"]["annotations"]["skiff.dev/metadata-voters"],
        "1"
    );
    let args = seen[6].body["spec"]["template"]["spec"]["containers"][0]["args"]
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
    let st = &seen[14].body["status"];
    assert_eq!(st["metadataVoters"], json!([0]));
    let progressing = st["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Progressing"))
        .expect("Progressing");
    assert_eq!(progressing["status"], "True");
    assert_eq!(progressing["reason"], "Rolling");
    assert_eq!(ready(&seen[14].body), ("False", "Rolling"));
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
