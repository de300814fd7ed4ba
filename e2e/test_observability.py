"""The Grafana dashboard and the PrometheusRule alerts only reference metrics
that Skiff exports.

Broker metrics are checked against a real broker's /metrics after traffic
that makes every labelled family appear (produce, fetch, a consumer group's
commit, a client error, a failed authentication, a throttled principal of a
tenant quota). The operator's metrics are checked against the names its
source defines. A metric that is planned but not exported yet must be listed in
PENDING with the issue that adds it; the test fails when a pending metric
appears (so the list shrinks as features land) and when any other
referenced metric is missing.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

import skiff

promql_parser = pytest.importorskip("promql_parser", reason="promql-parser missing: run scripts/setup-test-env.sh")
helm = pytest.importorskip("helm_python", reason="helm-python-sdk missing: run scripts/setup-test-env.sh")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "skiff-operator"
DASHBOARD = CHART / "dashboards" / "skiff-overview.json"
OPERATIONS = ROOT / "docs" / "operations.md"

# Referenced by the dashboard or the alerts, not exported yet: metric -> the issue that adds it.
PENDING: dict[str, str] = {}
# Series Prometheus itself makes.
PROMETHEUS_OWN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric names of every selector in a PromQL expression, parsed by
    promql-parser (so a syntax error fails the test too). Grafana's
    `$__rate_interval` is replaced by a duration first."""
    try:
        ast = promql_parser.parse(expr.replace("$__rate_interval", "5m"))
    except Exception as e:  # the parser raises a plain ValueError/RuntimeError
        raise AssertionError(f"not valid PromQL: {expr}\n{e}") from None
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)
        return True

    promql_parser.walk(ast, visit)
    return names


def family(name: str, exported: set[str]) -> str:
    """A histogram's _bucket/_sum/_count series belong to its family."""
    for s in HISTOGRAM_SUFFIXES:
        if name.endswith(s) and name[: -len(s)] in exported | set(PENDING):
            return name[: -len(s)]
    return name


def dashboard_exprs() -> list[str]:
    d = json.loads(DASHBOARD.read_text())
    out = []

    def walk(panels):
        for p in panels:
            out.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(d["panels"])
    for v in d["templating"]["list"]:
        q = v.get("query")
        if isinstance(q, dict):
            # Grafana's label_values(<selector>, <label>): the selector is PromQL.
            m = re.fullmatch(r"label_values\((.*),\s*[a-zA-Z_]+\)", q["query"].strip())
            out.append(m.group(1) if m else q["query"])
    return out


def alert_rules() -> list[dict]:
    rendered = helm.Chart.load(str(CHART)).render({"prometheusRule": {"enabled": True}},
                                                  name="skiff-operator", namespace="skiff-system")
    rule = yaml.safe_load(rendered["skiff-operator/templates/prometheusrule.yaml"])
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def broker_metrics(tmp_path_factory):
    """A broker's /metrics after traffic that creates every labelled series."""
    users = tmp_path_factory.mktemp("scram") / "users"
    users.write_text("alice:alice-secret\n")
    b = skiff.Broker(tmp_path_factory.mktemp("obs"), args=["--scram-bootstrap-users-file", str(users)],
                     name="observability")
    sasl_port = skiff.free_port()
    b.listeners = f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}"
    b.start()
    try:
        bootstrap = b.bootstrap
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topic = "observability"
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        # A second create: TOPIC_ALREADY_EXISTS, a client error.
        with pytest.raises(Exception):
            admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        p = Producer({"bootstrap.servers": bootstrap})
        for i in range(200):
            p.produce(topic, value=b"v%d" % i)
        assert p.flush(30) == 0
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "observability",
                      "auto.offset.reset": "earliest", "enable.auto.commit": False})
        c.subscribe([topic])
        got = 0
        deadline = time.time() + 60
        while got < 100 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got += 1
        assert got >= 100
        c.commit(asynchronous=False)
        c.close()
        # A failed authentication.
        bad = Producer({"bootstrap.servers": f"127.0.0.1:{sasl_port}", "security.protocol": "SASL_PLAINTEXT",
                        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "alice",
                        "sasl.password": "wrong", "message.timeout.ms": 3000})
        bad.produce(topic, value=b"x")
        bad.flush(5)
        skiff.wait_until(lambda: b.metrics().total(r"skiff_auth_failures_total") >= 1, timeout=20,
                         what="a counted authentication failure")
        # A principal held back by a tenant quota (tenant "ali" covers User:alice).
        from test_quotas import alter_quotas
        assert alter_quotas(b, [([("tenant", "ali")], [("producer_byte_rate", 1000.0)])]) == \
            [(0, None)]
        slow = Producer({"bootstrap.servers": f"127.0.0.1:{sasl_port}",
                         "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                         "sasl.username": "alice", "sasl.password": "alice-secret",
                         "linger.ms": 0})
        for _ in range(2):
            slow.produce(topic, value=b"x" * 3000)
            assert slow.flush(30) == 0
        skiff.wait_until(lambda: b.metrics().total("skiff_tenant_throttle_seconds_total") > 0,
                         timeout=30, what="a throttled tenant")
        # Lag and group gauges are refreshed periodically.
        skiff.wait_until(lambda: "skiff_consumer_group_lag" in b.metrics().names(), timeout=30,
                         what="consumer lag series")
        return b.metrics().names()
    finally:
        b.close()


def operator_source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "operator" / "src").rglob("*.rs"))


def referenced() -> dict[str, set[str]]:
    refs = {}
    for e in dashboard_exprs():
        for n in metric_names(e):
            refs.setdefault(n, set()).add("dashboard")
    for r in alert_rules():
        for n in metric_names(r["expr"]):
            refs.setdefault(n, set()).add(f"alert {r['alert']}")
    return refs


def test_the_dashboard_covers_what_operators_watch():
    exprs = "\n".join(dashboard_exprs())
    for needed in ("skiff_topic_bytes_in_total", "skiff_request_duration_seconds_bucket",
                   "skiff_under_replicated_partitions", "skiff_offline_partitions",
                   "skiff_principal_throttle_seconds_total",
                   "skiff_tenant_throttle_seconds_total", "skiff_consumer_group_lag",
                   "skiff_operator_reconcile_errors_total"):
        assert needed in exprs, f"the dashboard has no panel on {needed}"
    d = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert d["uid"] and d["title"]


def test_every_referenced_broker_metric_is_exported(broker_metrics):
    exported = broker_metrics
    refs = referenced()
    missing, landed = [], []
    for name, where in sorted(refs.items()):
        if name in PROMETHEUS_OWN or name.startswith("skiff_operator_"):
            continue
        fam = family(name, exported)
        if fam in PENDING:
            if name in exported or fam in exported:
                landed.append(fam)
            continue
        if name not in exported:
            missing.append(f"{name} ({', '.join(sorted(where))})")
    assert not landed, f"now exported, remove from PENDING: {sorted(set(landed))}"
    assert not missing, "referenced but not exported by the broker:\n" + "\n".join(missing)


def test_every_referenced_operator_metric_is_in_its_source():
    src = operator_source()
    refs = referenced()
    missing, landed = [], []
    for name, where in sorted(refs.items()):
        if not name.startswith("skiff_operator_"):
            continue
        # A histogram's series name the family the source defines.
        defined = {name[: -len(x)] for x in HISTOGRAM_SUFFIXES
                   if name.endswith(x) and f'"{name[: -len(x)]}"' in src}
        fam = family(name, defined)
        if fam in PENDING:
            if f'"{fam}"' in src:
                landed.append(fam)
            continue
        if f'"{fam}"' not in src:
            missing.append(f"{name} ({', '.join(sorted(where))})")
    assert not landed, f"the operator now defines these, remove from PENDING: {landed}"
    assert not missing, "referenced but not defined by the operator:\n" + "\n".join(missing)


def test_metric_names_come_from_the_promql_syntax_tree():
    assert metric_names('sum by (le) (rate(skiff_a_bucket{api="x"}[$__rate_interval])) / on() up') == \
        {"skiff_a_bucket", "up"}
    with pytest.raises(AssertionError, match="not valid PromQL"):
        metric_names("sum by (le (rate(skiff_a[5m]))")


def test_pending_metrics_are_all_still_referenced():
    refs = {family(n, set()) for n in referenced()}
    stale = sorted(set(PENDING) - refs)
    assert not stale, f"PENDING lists metrics nothing references: {stale}"


def test_every_alert_has_a_runbook_section_and_severity():
    ops = OPERATIONS.read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", ops, re.M)}
    for r in alert_rules():
        assert r["labels"]["severity"] in ("critical", "warning", "info"), r["alert"]
        assert r["annotations"]["summary"] and r["annotations"]["description"], r["alert"]
        url = r["annotations"]["runbook_url"]
        anchor = url.split("#", 1)[1]
        assert anchor == r["alert"].lower(), url
        assert anchor in anchors, f"docs/operations.md has no section `### {r['alert']}` (runbook of the alert)"
