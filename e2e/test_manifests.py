"""manifests/: install.yaml must be what `make manifests` generates from the
chart today, every object in it valid for Kubernetes; every example must
validate against the CRD schemas (crds/generated/, openAPIV3Schema) and hang
together (clusterRefs resolve, tenants are accepted and stay in their
prefix)."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
pytest.importorskip("helm_python", reason="helm-python-sdk missing: run scripts/setup-test-env.sh")

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
KUBE_VERSION = "1.33"


def load_gen():
    spec = importlib.util.spec_from_file_location("gen_manifests", ROOT / "scripts" / "gen-manifests.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def strict(node):
    """Kubernetes prunes fields a structural schema does not declare, and
    `kubectl apply` (strict field validation, the default since 1.27) refuses
    them: the same here, by closing every object that lists its properties."""
    if isinstance(node, dict):
        node = {k: strict(v) for k, v in node.items()}
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def crd_schemas() -> dict[tuple[str, str], dict]:
    out = {}
    for path in (ROOT / "crds" / "generated").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"{group}/{v['name']}", kind)] = strict(v["schema"]["openAPIV3Schema"])
    return out


SCHEMAS = crd_schemas()


def check_custom(doc: dict):
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    # metadata is the API server's (ObjectMeta), not the CRD schema's.
    schema = {**schema, "properties": {k: v for k, v in schema["properties"].items() if k != "metadata"}}
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(body), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {e.message} at "
                             f"{'.'.join(map(str, e.absolute_path))}")


def check(doc: dict):
    if (doc["apiVersion"], doc["kind"]) in SCHEMAS:
        check_custom(doc)
    else:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise AssertionError(f"{doc['kind']} {doc['metadata'].get('name')}: {e.message}") from None


def test_install_yaml_is_fresh_and_valid():
    gen = load_gen()
    text = (ROOT / "manifests" / "install.yaml").read_text()
    assert text == gen.render(), "manifests/install.yaml is stale: run `make manifests`"
    docs = [d for d in yaml.safe_load_all(text) if d]
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 4
    assert {"Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
            "Service"} <= set(kinds)
    for d in docs:
        check(d)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_valid(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for d in docs:
        check(d)


def test_examples_hang_together():
    docs = [d for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d]
    kinds = {d["kind"] for d in docs}
    assert {"KafkaCluster", "Topic", "User", "Quota"} <= kinds
    clusters = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                for d in docs if d["kind"] == "KafkaCluster"}
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert sum(1 for c in clusters.values() if c["spec"].get("replicas") == 3) >= 1
    assert any("autoscaling" in c["spec"] for c in clusters.values())
    users = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs if d["kind"] == "User"}
    for d in docs:
        ns = d["metadata"].get("namespace")
        if ns:
            assert ns in namespaces, f"{d['kind']} {d['metadata']['name']}: namespace {ns} is not created"
        if d["kind"] not in ("Topic", "User", "Quota"):
            continue
        ref = d["spec"]["clusterRef"]
        key = (ref.get("namespace", ns), ref["name"])
        assert key in clusters, f"{d['kind']} {d['metadata']['name']}: no KafkaCluster {key}"
        if key[0] == ns:
            continue
        tenants = clusters[key]["spec"].get("tenancy", {}).get("tenants", [])
        tenant = next((t for t in tenants if t["namespace"] == ns), None)
        assert tenant, f"KafkaCluster {key} does not accept namespace {ns}"
        prefix = tenant.get("prefix", f"{ns}.")
        if d["kind"] == "User":
            for acl in d["spec"].get("authorization", {}).get("acls", []):
                r = acl["resource"]
                assert r["type"] != "cluster"
                assert r["name"].startswith(prefix), f"ACL on {r['name']} outside tenant prefix {prefix}"
        if d["kind"] == "Topic" and "topicName" in d["spec"]:
            assert d["spec"]["topicName"].startswith(prefix)
        if d["kind"] == "Quota" and d["spec"]["target"].get("user"):
            assert (ns, d["spec"]["target"]["user"]) in users


@pytest.mark.parametrize("mutate, message", [
    (lambda kc: kc["spec"].__setitem__("replicas", "three"), "'three' is not of type 'integer'"),
    (lambda kc: kc["spec"].__setitem__("replicaz", 3), "'replicaz' was unexpected"),
    (lambda kc: kc["spec"]["listeners"][0].__setitem__("authentication", "kerberos"), "'kerberos' is not one of"),
    (lambda kc: kc["spec"]["listeners"][0].__setitem__("port", 80), "80 is less than the minimum of 1024"),
])
def test_the_schema_check_catches_a_broken_cluster(mutate, message):
    """The validation above can fail: a broken copy of the example is refused."""
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests/examples/kafkacluster-3-brokers.yaml").read_text()) if d]
    kc = copy.deepcopy(next(d for d in docs if d["kind"] == "KafkaCluster"))
    mutate(kc)
    with pytest.raises(AssertionError) as e:
        check(kc)
    assert message in str(e.value)
