"""HTTP health endpoints and Prometheus metrics.

Proves: /livez and /readyz answer 200 while serving; /metrics is valid
Prometheus text whose skiff_* series count produced messages and bytes per
topic exactly (and bytes out after a fetch), requests and request latency
per API, and open connections (up when clients connect, back down when they
leave).
"""

import re
import socket
import struct

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import skiff

N = 500
VALUE = 200

BYTES_IN = r"skiff_.*(bytes_in|in_bytes|bytes_received|produced?_bytes|bytes_produced).*"
MSGS_IN = r"skiff_.*(messages_in|in_messages|records_in|in_records|produced?_(messages|records)|(messages|records)_produced).*"
BYTES_OUT = r"skiff_.*(bytes_out|out_bytes|bytes_sent|fetch(ed)?_bytes|bytes_fetched|consumed_bytes).*"


def topic_value(m: skiff.Metrics, name_re, topic):
    """{metric name: sum over its samples labelled topic=<topic>} for the
    counters/gauges matching name_re (per-partition series of one name add
    up to the topic's figure)."""
    sums = {}
    for n, l, v in m.find(name_re, topic=topic):
        if re.search(r"_(bucket|sum|count)$", n) and not n.endswith("_total"):
            continue
        sums[n] = sums.get(n, 0.0) + v
    return sums


@pytest.fixture
def produced(broker, topic_name):
    skiff.create_topic(skiff.admin_client(broker), topic_name, 2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "compression.type": "none"})
    errs = []
    for i in range(N):
        p.produce(topic_name, value=b"%0*d" % (VALUE, i), on_delivery=lambda e, m: errs.append(e) if e else None)
    assert p.flush(60) == 0 and not errs
    return broker, topic_name


def test_health_endpoints(broker):
    for path in ("/livez", "/readyz"):
        status, _ = broker.http_get(path)
        assert status == 200, f"{path} -> {status}"


def test_metrics_is_prometheus_text(broker):
    status, headers, body = broker.http_get_full("/metrics")
    assert status == 200
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    assert ctype.startswith("text/plain"), ctype
    m = skiff.Metrics.parse(body)
    skiff_names = {n for n in m.names() if n.startswith("skiff_")}
    assert skiff_names, "no skiff_* metrics"
    not_skiff = sorted(n for n in m.types if not n.startswith(("skiff_", "process_")))
    assert not not_skiff, f"metric families outside the skiff_ namespace: {not_skiff[:10]}"


def test_messages_and_bytes_in_per_topic(produced):
    broker, topic = produced
    m = broker.metrics()
    msgs = topic_value(m, MSGS_IN, topic)
    assert msgs, (f"no messages-in metric with topic={topic}; skiff metrics: "
                  f"{sorted(n for n in m.names() if n.startswith('skiff_'))}")
    assert N in msgs.values(), f"messages in for {topic} should be {N}: {msgs}"

    bts = topic_value(m, BYTES_IN, topic)
    assert bts, f"no bytes-in metric with topic={topic}"
    assert any(N * VALUE <= v <= N * VALUE * 3 for v in bts.values()), (
        f"bytes in for {topic} should be about {N * VALUE}: {bts}")


def test_bytes_out_per_topic(produced):
    broker, topic = produced
    before = topic_value(broker.metrics(), BYTES_OUT, topic)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(2)])
        highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in range(2)}
        skiff.consume_all(c, highs, timeout=60)
    finally:
        c.close()
    hits = topic_value(broker.metrics(), BYTES_OUT, topic)
    assert hits, f"no bytes-out metric with topic={topic}"
    grew = {n: v - before.get(n, 0.0) for n, v in hits.items()}
    assert any(g >= N * VALUE for g in grew.values()), (
        f"bytes out grew by {grew} after fetching {N * VALUE} bytes")


def _api_samples(m, api, name_re=r"skiff_.*request.*"):
    return [(n, l, v) for n, l, v in m.with_label_value(api, name_re)]


def test_request_count_and_latency_per_api(produced):
    broker, topic = produced
    m = broker.metrics()
    for api in ("Produce", "Metadata", "ApiVersions"):
        hits = _api_samples(m, api)
        assert hits, f"no skiff_*request* series labelled {api}"
        counters = [(n, v) for n, _, v in hits if n.endswith("_total") or (
            m.types.get(n) == "counter") or (n.endswith("_count") and m.types.get(n[:-6]) == "histogram")]
        assert counters and max(v for _, v in counters) >= 1, f"{api}: no request count >= 1 in {hits[:10]}"
        buckets = [(n, l) for n, l, _ in hits if n.endswith("_bucket")]
        assert buckets, f"{api}: no latency histogram buckets in {hits[:10]}"
        assert any(l.get("le") == "+Inf" for _, l in buckets)

    # the Produce request count rises with another produce
    def produce_count(mm):
        return max(v for n, l, v in _api_samples(mm, "Produce")
                   if n.endswith("_count") or n.endswith("_total"))
    before = produce_count(m)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for i in range(3):
        p.produce(topic, value=b"x", partition=0)
        p.flush(30)
    after = produce_count(broker.metrics())
    assert after >= before + 3, f"Produce request count {before} -> {after} after 3 produce requests"


CONN_RE = r"skiff_.*connection.*"


def _connections(broker):
    m = broker.metrics()
    hits = [(n, l, v) for n, l, v in m.find(CONN_RE)
            if re.search(r"(active|open|current|connections$)", n) and not n.endswith("_total")
            and not n.endswith(("_bucket", "_sum", "_count"))]
    assert hits, f"no active-connections gauge among {sorted(n for n in m.names() if 'conn' in n)}"
    return sum(v for _, _, v in hits)


def test_active_connections_gauge(broker):
    base = _connections(broker)
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            # ApiVersions v0 so each connection is surely accepted and served
            s.sendall(struct.pack(">ihhih", 10, 18, 0, 1, 0))
            head = s.recv(4)
            assert len(head) == 4
            socks.append(s)
        skiff.wait_until(lambda: _connections(broker) == base + 5, 15,
                         what=f"connections gauge {base} + 5")
    finally:
        for s in socks:
            s.close()
    skiff.wait_until(lambda: _connections(broker) == base, 15, what=f"connections gauge back to {base}")
