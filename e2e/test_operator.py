"""The operator's Topic/User/Quota convergence against a real broker, judged
by real clients (confluent-kafka, kcat): `skiff-operator reconcile-once`
runs the same code the controllers run, without Kubernetes.

The operator's admin connection is the PLAINTEXT listener, whose anonymous
principal the broker makes a super user here (as the operator's identity);
tenants' clients use SASL_PLAINTEXT with the SCRAM-SHA-512 credentials the
operator generated.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                  NewTopic)

import skiff

CLUSTER = """
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: {name: kafka, namespace: kafka}
spec:
  replicas: 1
  tenancy:
    tenants: [{namespace: team-a}]
"""


@pytest.fixture
def sasl_broker(broker_factory):
    b = broker_factory(start=False, args=["--super-users", "User:ANONYMOUS"])
    sasl = skiff.free_port()
    b.listeners = f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{sasl}"
    b.start()
    b.sasl_port = sasl
    return b


def reconcile(broker, tmp_path, manifest: str, *extra) -> list[dict]:
    f = tmp_path / f"m-{uuid.uuid4().hex[:6]}.yaml"
    f.write_text(manifest)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    out = subprocess.run(
        [skiff.operator_bin(), "reconcile-once", "--bootstrap", broker.bootstrap, "-f", str(f),
         "--cluster-file", str(cluster), *extra],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def topic_manifest(partitions: int, retention: str = "3600000") -> str:
    return f"""
apiVersion: skiff.dev/v1alpha1
kind: Topic
metadata: {{name: orders, namespace: team-a}}
spec:
  clusterRef: {{name: kafka, namespace: kafka}}
  partitions: {partitions}
  config: {{retention.ms: "{retention}"}}
"""


def topic_config(admin, name, key):
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    cfg = admin.describe_configs([res])[res].result(timeout=30)
    return cfg[key].value


def test_topic_created_with_prefix_grown_drift_corrected_shrink_refused_deleted(sasl_broker, tmp_path):
    admin = AdminClient({"bootstrap.servers": sasl_broker.bootstrap})
    [r] = reconcile(sasl_broker, tmp_path, topic_manifest(2))
    assert r["topic"] == "team-a.orders" and r["created"] is True
    md = admin.list_topics(timeout=30)
    assert len(md.topics["team-a.orders"].partitions) == 2
    assert topic_config(admin, "team-a.orders", "retention.ms") == "3600000"

    # Drift made by hand with a real client is put back.
    res = ConfigResource(ConfigResource.Type.TOPIC, "team-a.orders", incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    assert topic_config(admin, "team-a.orders", "retention.ms") == "1000"
    [r] = reconcile(sasl_broker, tmp_path, topic_manifest(4))
    assert r["configChanges"] == 1 and r["grownFrom"] == 2 and r["partitions"] == 4
    assert topic_config(admin, "team-a.orders", "retention.ms") == "3600000"
    assert len(admin.list_topics(timeout=30).topics["team-a.orders"].partitions) == 4

    # kcat sees the same topic.
    out = subprocess.run(["kcat", "-b", sasl_broker.bootstrap, "-L", "-t", "team-a.orders", "-J"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["topics"][0]["partitions"]) == 4

    [r] = reconcile(sasl_broker, tmp_path, topic_manifest(1))
    assert r["shrinkRefused"] is True and r["partitions"] == 4

    [r] = reconcile(sasl_broker, tmp_path, topic_manifest(4), "--delete")
    assert r["deleted"] is True
    skiff.wait_until(lambda: "team-a.orders" not in admin.list_topics(timeout=30).topics, 30,
                     what="topic deleted")


def test_topic_outside_the_tenant_prefix_is_refused(sasl_broker, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(topic_manifest(1).replace("partitions: 1", "partitions: 1\n  topicName: team-b.x"))
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    out = subprocess.run([skiff.operator_bin(), "reconcile-once", "--bootstrap", sasl_broker.bootstrap,
                          "-f", str(f), "--cluster-file", str(cluster)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "must start with this namespace's prefix" in out.stderr
    md = AdminClient({"bootstrap.servers": sasl_broker.bootstrap}).list_topics(timeout=30)
    assert "team-b.x" not in md.topics


USER = """
apiVersion: skiff.dev/v1alpha1
kind: User
metadata: {name: alice, namespace: team-a}
spec:
  clusterRef: {name: kafka, namespace: kafka}
  authentication: {type: scram-sha-512}
"""


def sasl_conf(broker, user, password):
    return {"bootstrap.servers": f"127.0.0.1:{broker.sasl_port}", "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user, "sasl.password": password}


def test_user_credentials_work_with_a_real_client_and_deletion_revokes_them(sasl_broker, tmp_path):
    pw_dir = tmp_path / "secrets"
    pw_dir.mkdir()
    [r] = reconcile(sasl_broker, tmp_path, USER, "--password-dir", str(pw_dir))
    assert r["user"] == "team-a.alice" and r["credentialSet"] is True and r["aclError"] is None
    password = (pw_dir / "team-a.alice.password").read_text()
    assert len(password) >= 40

    topic = "team-a.events"
    admin = AdminClient({"bootstrap.servers": sasl_broker.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    conf = sasl_conf(sasl_broker, "team-a.alice", password)
    p = Producer({**conf, "linger.ms": 0})
    errors = []
    for i in range(10):
        p.produce(topic, value=b"m%d" % i, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors, errors
    c = Consumer({**conf, "group.id": "team-a.g", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got, deadline = [], time.monotonic() + 60
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"m%d" % i for i in range(10)]

    # A second pass keeps the credential (no new password).
    [r] = reconcile(sasl_broker, tmp_path, USER, "--password-dir", str(pw_dir))
    assert r["credentialSet"] is False

    # Deleting the User revokes the credential: the same password now fails.
    [r] = reconcile(sasl_broker, tmp_path, USER, "--delete")
    assert r["deleted"] is True
    a = AdminClient({**conf, "socket.timeout.ms": 5000})
    with pytest.raises(KafkaException):
        a.list_topics(timeout=10)


def test_tenant_quota_reports_the_brokers_answer(sasl_broker, tmp_path):
    quota = """
apiVersion: skiff.dev/v1alpha1
kind: Quota
metadata: {name: q, namespace: team-a}
spec:
  clusterRef: {name: kafka, namespace: kafka}
  target: {type: tenant}
  producerByteRate: 1048576
"""
    [r] = reconcile(sasl_broker, tmp_path, quota)
    assert r["entity"] == "tenant=team-a."
    assert r["error"] is None


USER_WITH_ACLS = USER + """  authorization:
    acls:
      - resource: {type: topic, name: team-a., patternType: prefixed}
        operations: [Read, Write, Describe]
      - resource: {type: group, name: team-a., patternType: prefixed}
        operations: [Read, Describe]
"""


def test_user_acls_are_set_on_the_broker_and_enforced(broker_factory, tmp_path):
    b = broker_factory(start=False, args=["--super-users", "User:ANONYMOUS",
                                          "--authorizer-enabled", "true"])
    b.sasl_port = skiff.free_port()
    b.listeners = f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{b.sasl_port}"
    b.start()
    pw_dir = tmp_path / "secrets"
    pw_dir.mkdir()
    [r] = reconcile(b, tmp_path, USER_WITH_ACLS, "--password-dir", str(pw_dir))
    assert r["aclError"] is None and r["aclsAdded"] == 5, r
    # A second pass finds the broker already matching the spec.
    [r] = reconcile(b, tmp_path, USER_WITH_ACLS, "--password-dir", str(pw_dir))
    assert r["aclError"] is None and r["aclsAdded"] == 0, r
    password = (pw_dir / "team-a.alice.password").read_text()

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for t in ("team-a.events", "team-b.secret"):
        admin.create_topics([NewTopic(t, 1, 1)])[t].result(30)
    results = {}
    p = Producer({**sasl_conf(b, "team-a.alice", password), "linger.ms": 0,
                  "message.timeout.ms": 15000})
    for t in ("team-a.events", "team-b.secret"):
        p.produce(t, b"x", on_delivery=lambda e, m: results.__setitem__(m.topic(), e))
    p.flush(30)
    assert results["team-a.events"] is None, results
    err = results["team-b.secret"]
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
