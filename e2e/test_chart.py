"""The Helm chart charts/skiff-operator, rendered offline through the Helm SDK
(helm-python-sdk embeds Helm; no binary, no cluster) with several value sets.
Every object is validated against the Kubernetes API schemas
(kubernetes-validate); the chart's CRDs must equal crds/generated/; a values
file with an unknown or ill-typed key must fail with a message naming it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk missing: run scripts/setup-test-env.sh")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "skiff-operator"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a recent one.
KUBE_VERSIONS = ["1.28", "1.33"]
# Kinds of prometheus-operator, whose schemas kubernetes-validate does not ship.
MONITORING = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

VALUE_SETS = {
    "defaults": {},
    "everything": {
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/skiff-operator", "tag": "1.2.3",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "brokerImage": {"repository": "registry.example.com/skiff-broker", "tag": "1.2.3"},
        "watchNamespaces": ["tenant-a", "tenant-b"],
        "serviceAccount": {"name": "ops", "annotations": {"iam.example.com/role": "skiff"}},
        "metrics": {"port": 9090, "service": {"type": "ClusterIP", "annotations": {"a": "b"}},
                    "serviceMonitor": {"enabled": True, "interval": "15s",
                                       "labels": {"release": "prom"}}},
        "prometheusRule": {"enabled": True, "labels": {"release": "prom"},
                           "consumerLagThreshold": 500, "produceLatencyP99Seconds": 0.25},
        "grafanaDashboard": {"enabled": True},
        "podAnnotations": {"x": "y"},
        "podLabels": {"team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                         "effect": "NoSchedule"}],
        "priorityClassName": "system-cluster-critical",
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": 1}},
    },
    "minimal": {
        "replicaCount": 1,
        "leaderElection": {"enabled": False},
        "serviceAccount": {"create": False, "name": "existing"},
        "rbac": {"create": False},
        "metrics": {"service": {"enabled": False}},
    },
}


def render(values: dict, name: str = "skiff", namespace: str = "skiff-system") -> list[dict]:
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name=name, namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def validate(doc: dict, version: str):
    kind = doc.get("kind")
    if kind in MONITORING:
        assert doc["apiVersion"] == "monitoring.coreos.com/v1"
        assert doc["metadata"]["name"] and doc["metadata"]["namespace"]
        return
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        raise AssertionError(
            f"{kind} {doc['metadata'].get('name')} is invalid for Kubernetes {version}: "
            f"{e.message} at {'/'.join(map(str, e.path))}") from None


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid(value_set, version):
    docs = render(VALUE_SETS[value_set])
    assert docs, "the chart rendered nothing"
    for doc in docs:
        validate(doc, version)
    kinds = sorted(d["kind"] for d in docs)
    if value_set == "everything":
        assert kinds == sorted(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment",
                                "PodMonitor", "PrometheusRule", "Service", "ServiceAccount",
                                "ServiceMonitor"])
    if value_set == "minimal":
        assert kinds == ["Deployment"]


def test_crds_are_valid_and_equal_the_generated_ones():
    generated = sorted(p.name for p in (ROOT / "crds" / "generated").glob("*.yaml"))
    in_chart = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert in_chart == generated, "charts/skiff-operator/crds/ must hold exactly crds/generated/*.yaml"
    for name in generated:
        a = (ROOT / "crds" / "generated" / name).read_bytes()
        b = (CHART / "crds" / name).read_bytes()
        assert a == b, f"charts/skiff-operator/crds/{name} differs from crds/generated/{name}: run `make chart`"
        for version in KUBE_VERSIONS:
            validate(yaml.safe_load(b), version)
    loaded = {c["name"] for c in helm.Chart.load(str(CHART)).crds}
    assert {f"crds/{n}" for n in generated} <= loaded, loaded


def test_deployment_runs_two_replicas_with_leader_election():
    docs = render({})
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2
    c = dep["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
    assert "SKIFF_NO_LEADER_ELECTION" not in env
    assert env["SKIFF_LEASE_NAME"] == "skiff-operator"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    sa = dep["spec"]["template"]["spec"]["serviceAccountName"]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "skiff-system"}]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    leases = [r for r in role["rules"] if "leases" in r["resources"]]
    assert leases and leases[0]["apiGroups"] == ["coordination.k8s.io"]


def test_cluster_role_is_the_operators_own_rule_list():
    """operator/rbac.yaml (written with the operator's controllers) is the
    source of truth for what it needs; the chart carries a copy
    (files/rbac-rules.yaml, refreshed by `make chart`) and renders it as is."""
    copy = CHART / "files" / "rbac-rules.yaml"
    src = ROOT / "operator" / "rbac.yaml"
    wanted = yaml.safe_load(copy.read_text())
    role = next(d for d in render({}) if d["kind"] == "ClusterRole")
    assert role["rules"] == wanted
    if not src.exists():
        pytest.skip("operator/rbac.yaml is not on this branch yet (issue #6, branch operator): "
                    "the chart's copy was taken from that branch")
    assert src.read_bytes() == copy.read_bytes(), \
        "charts/skiff-operator/files/rbac-rules.yaml differs from operator/rbac.yaml: run `make chart`"


def test_standalone_operator_without_leader_election():
    dep = next(d for d in render(VALUE_SETS["minimal"]) if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SKIFF_NO_LEADER_ELECTION"] == "true"
    assert "SKIFF_WATCH_NAMESPACES" not in env
    dep = next(d for d in render(VALUE_SETS["everything"]) if d["kind"] == "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SKIFF_WATCH_NAMESPACES"] == "tenant-a,tenant-b"


@pytest.mark.parametrize("bad, message", [
    ({"replicaCount": "two"}, "at '/replicaCount': got string, want integer"),
    ({"metrics": {"prot": 8080}}, "additional properties 'prot' not allowed"),
    ({"imagePullPolicy": "Always"}, "additional properties 'imagePullPolicy' not allowed"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"watchNamespaces": "tenant-a"}, "at '/watchNamespaces': got string, want array"),
    ({"metrics": {"port": 70000}}, "/metrics/port"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "/metrics/serviceMonitor/interval"),
])
def test_bad_values_fail_with_a_clear_message(bad, message):
    with pytest.raises(helm.HelmValuesError) as e:
        render(bad)
    assert message in str(e.value), str(e.value)


def test_a_servicemonitor_without_its_service_is_refused():
    with pytest.raises(helm.HelmError) as e:
        render({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})
    assert "metrics.serviceMonitor.enabled needs metrics.service.enabled" in str(e.value)


def test_readme_documents_every_value():
    """Every leaf of values.yaml (and every schema key) has a row in the README."""
    readme = (CHART / "README.md").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())

    def leaves(schema_node, prefix=""):
        props = schema_node.get("properties")
        if schema_node.get("type") == "object" and props and schema_node.get("additionalProperties") is False:
            for k, v in props.items():
                yield from leaves(v, f"{prefix}{k}.")
        else:
            yield prefix.rstrip(".")

    keys = [k for k in leaves(schema) if k != "global"]
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert not missing, f"charts/skiff-operator/README.md has no row for: {missing}"
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def value_leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in ("labels", "annotations", "requests", "limits"):
                yield from value_leaves(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    unknown = [k for k in value_leaves(defaults) if k not in keys and not any(k.startswith(p + ".") for p in keys)]
    assert not unknown, f"values.yaml keys missing from values.schema.json: {unknown}"


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_helm_lint_strict_finds_nothing_above_info(value_set):
    report = helm.lint(str(CHART), VALUE_SETS[value_set], strict=True, kube_version="v1.28.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert not serious and not report["errors"], report


def test_notes_render():
    out = helm.Chart.load(str(CHART)).render({}, name="skiff", namespace="skiff-system", is_install=True)
    notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
    assert "Lease skiff-operator" in notes and "docs/operations.md" in notes
