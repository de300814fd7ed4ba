"""The operator on a real Kubernetes cluster. Runs only when
SKIFF_E2E_KUBECONFIG points at a cluster's kubeconfig; skipped otherwise.

What it does: installs the CRDs, runs the operator (the local binary,
outside the cluster, with that kubeconfig: the development mode the README
describes), creates a 3-broker KafkaCluster, a tenant Topic/User/Quota,
produces and consumes with the User's credentials from a kcat pod inside
the cluster, changes the config and watches the roll, and deletes
everything.

Settings: SKIFF_E2E_BROKER_IMAGE (the broker image the cluster can pull),
SKIFF_E2E_KCAT_IMAGE (default edenhill/kcat:1.7.1), SKIFF_OPERATOR_BIN.
The operator's admin connection goes through `kubectl port-forward` of the
bootstrap Service and the `skiff.dev/operator-bootstrap` annotation.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

KUBECONFIG = os.environ.get("SKIFF_E2E_KUBECONFIG")
pytestmark = pytest.mark.skipif(not KUBECONFIG, reason="SKIFF_E2E_KUBECONFIG is not set: no cluster to run on")

ROOT = Path(__file__).resolve().parents[2]


def kubectl(*args, input=None, check=True, timeout=120):
    out = subprocess.run(["kubectl", "--kubeconfig", KUBECONFIG, *args], input=input,
                         capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        # The kcat commands carry the User's password: keep it out of reports.
        shown = re.sub(r"(sasl\.password=)\S+", r"\1***", " ".join(args))
        raise AssertionError(f"kubectl {shown}: {out.stderr}")
    return out.stdout


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except AssertionError:
            pass
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def condition(kind, name, ns, type_="Ready"):
    obj = json.loads(kubectl("get", kind, name, "-n", ns, "-o", "json"))
    for c in obj.get("status", {}).get("conditions", []):
        if c["type"] == type_:
            return c
    return {}


@pytest.fixture(scope="module")
def env():
    run = uuid.uuid4().hex[:6]
    ns, tenant = f"skiff-{run}", f"team-{run}"
    for n in (ns, tenant):
        kubectl("create", "namespace", n)
    kubectl("apply", "-f", str(ROOT / "crds" / "generated"))
    op_bin = os.environ.get("SKIFF_OPERATOR_BIN", str(ROOT / "target" / "release" / "skiff-operator"))
    log = open(Path(os.environ.get("TMPDIR", "/tmp")) / f"operator-{run}.log", "w")
    image = os.environ.get("SKIFF_E2E_BROKER_IMAGE")
    pf_port = 19092
    operator = subprocess.Popen(
        [op_bin, "--http-addr", "127.0.0.1:0", "--no-leader-election",
         *(["--broker-image", image] if image else []),
         "--bootstrap-override", f"{ns}/kafka=127.0.0.1:{pf_port}"],
        env={**os.environ, "KUBECONFIG": KUBECONFIG}, stdout=log, stderr=log)
    try:
        yield {"ns": ns, "tenant": tenant, "pf_port": pf_port, "start_pf": lambda: subprocess.Popen(
            ["kubectl", "--kubeconfig", KUBECONFIG, "-n", ns, "port-forward", "svc/kafka-bootstrap",
             f"{pf_port}:9092"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
    finally:
        # The tenant's resources carry finalizers only the running operator
        # removes: deleted after it stops, they would keep the namespace
        # Terminating for good (seen on a real API server).
        kubectl("delete", "topics,users,quotas", "--all", "-n", tenant, "--timeout=120s",
                check=False, timeout=150)
        for n in (tenant, ns):
            kubectl("delete", "namespace", n, "--wait=false", check=False)
        operator.terminate()
        operator.wait(30)


def test_cluster_topic_user_roll_and_cleanup(env):
    ns, tenant = env["ns"], env["tenant"]
    kubectl("apply", "-n", ns, "-f", "-", input=f"""
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: {{name: kafka}}
spec:
  replicas: 3
  storage: {{size: 1Gi, deleteClaim: true}}
  listeners:
    - {{name: plaintext, port: 9092}}
    - {{name: scram, port: 9093, authentication: scram}}
  tenancy:
    tenants: [{{namespace: {tenant}}}]
""")
    wait_for(lambda: condition("kafkacluster", "kafka", ns).get("status") == "True", 600, "cluster Ready")
    pf = env["start_pf"]()
    try:
        kubectl("apply", "-n", tenant, "-f", "-", input="""
apiVersion: skiff.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {clusterRef: {name: kafka, namespace: NS}, partitions: 3, replicationFactor: 3}
---
apiVersion: skiff.dev/v1alpha1
kind: User
metadata: {name: app}
spec: {clusterRef: {name: kafka, namespace: NS}, authentication: {type: scram-sha-512}}
---
apiVersion: skiff.dev/v1alpha1
kind: Quota
metadata: {name: tenant}
spec: {clusterRef: {name: kafka, namespace: NS}, target: {type: tenant}, producerByteRate: 10485760}
""".replace("NS", ns))
        for kind, name in (("topic", "orders"), ("user", "app")):
            wait_for(lambda: condition(kind, name, tenant).get("status") == "True", 180, f"{kind} Ready")
        secret = json.loads(kubectl("get", "secret", "app-kafka", "-n", tenant, "-o", "json"))
        user = base64.b64decode(secret["data"]["username"]).decode()
        password = base64.b64decode(secret["data"]["password"]).decode()
        kcat = os.environ.get("SKIFF_E2E_KCAT_IMAGE", "edenhill/kcat:1.7.1")
        common = ["-b", f"kafka-bootstrap.{ns}.svc:9093", "-X", "security.protocol=SASL_PLAINTEXT",
                  "-X", "sasl.mechanisms=SCRAM-SHA-512", "-X", f"sasl.username={user}",
                  "-X", f"sasl.password={password}", "-t", f"{tenant}.orders"]
        kubectl("run", "produce", "-n", tenant, "--rm", "-i", "--restart=Never", f"--image={kcat}",
                "--", *common, "-P", input="one\ntwo\nthree\n", timeout=180)
        out = kubectl("run", "consume", "-n", tenant, "--rm", "-i", "--restart=Never", f"--image={kcat}",
                      "--", *common, "-C", "-o", "beginning", "-c", "3", "-e", timeout=180)
        assert [line for line in out.splitlines() if line in ("one", "two", "three")] == ["one", "two", "three"]

        # A config change rolls the brokers one at a time.
        kubectl("patch", "kafkacluster", "kafka", "-n", ns, "--type=merge",
                "-p", '{"spec":{"config":{"log.retention.ms":"3600000"}}}')
        wait_for(lambda: condition("kafkacluster", "kafka", ns, "Progressing").get("reason") == "Rolling",
                 300, "roll started")
        wait_for(lambda: condition("kafkacluster", "kafka", ns).get("status") == "True", 1200, "roll finished")
    finally:
        pf.terminate()

    # Delete everything; finalizers let go once the brokers forgot the topic and user.
    kubectl("delete", "-n", tenant, "topic/orders", "user/app", "quota/tenant", timeout=300)
    kubectl("delete", "kafkacluster", "kafka", "-n", ns, timeout=300)
    wait_for(lambda: not kubectl("get", "statefulset", "-n", ns, "-o", "name"), 300, "StatefulSet gone")
