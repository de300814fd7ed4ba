"""Independent clients: kcat (Debian's, librdkafka 2.0) and kafka-python
(pure-Python protocol implementation).

Proves: the broker serves clients other than the one the other tests use --
an older librdkafka with different API-version choices, and a separate
protocol implementation for Produce/Fetch/ListOffsets/Metadata/CreateTopics/
DeleteTopics.
"""

import json
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Producer

import skiff

KCAT = shutil.which("kcat") or "/usr/bin/kcat"


def kcat(broker, *args, stdin=None, timeout=60):
    cmd = [KCAT, "-b", broker.bootstrap, "-X", "socket.timeout.ms=30000", *args]
    r = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    assert r.returncode == 0, (
        f"{' '.join(cmd)} exited {r.returncode}\nstdout: {r.stdout[-2000:]!r}\nstderr: {r.stderr[-2000:]!r}")
    return r.stdout.decode(), r.stderr.decode()


@pytest.fixture(scope="module")
def b(shared_broker):
    if not shutil.which("kcat") and not shutil.which(KCAT):
        pytest.fail("kcat is not installed (scripts/setup-test-env.sh installs it)")
    return shared_broker


def test_kcat_metadata_json(b, topic_name):
    skiff.create_topic(skiff.admin_client(b), topic_name, 3)
    out, _ = kcat(b, "-L", "-J")
    md = json.loads(out)
    assert md["brokers"] == [{"id": 0, "name": b.bootstrap}], md["brokers"]
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics, f"{topic_name} missing from {sorted(topics)}"
    t = topics[topic_name]
    assert "error" not in t, t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2]
    for p in t["partitions"]:
        assert p["leader"] == 0, p
        assert [r["id"] for r in p["replicas"]] == [0], p
        assert [r["id"] for r in p["isrs"]] == [0], p


def test_kcat_produce_then_consume_exactly(b, topic_name):
    skiff.create_topic(skiff.admin_client(b), topic_name, 3)
    lines = [f"key{i % 17}:value number {i} \u00e9\u00e8" for i in range(500)]
    kcat(b, "-P", "-t", topic_name, "-K:", "-z", "gzip", "-H", "origin=kcat",
         stdin=("\n".join(lines) + "\n").encode())
    out, _ = kcat(b, "-C", "-t", topic_name, "-e", "-o", "beginning", "-J",
                  "-X", "check.crcs=true", timeout=120)
    msgs = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(msgs) == len(lines), f"kcat consumed {len(msgs)} of {len(lines)}"
    # kcat -J prints key/payload as strings and headers as a flat [k, v, ...] list.
    per_part = {}
    for m in msgs:
        assert m["headers"] == ["origin", "kcat"], m
        assert m["tstype"] == "create", m
        per_part.setdefault(m["partition"], []).append(m)
    for p, ms in per_part.items():
        assert [m["offset"] for m in ms] == list(range(len(ms))), f"partition {p} offsets"
    # every line once, per-key order preserved (a key lives on one partition)
    got = sorted((m["key"], m["payload"]) for m in msgs)
    want = sorted(tuple(line.split(":", 1)) for line in lines)
    assert got == want
    by_key = {}
    for p in sorted(per_part):
        for m in per_part[p]:
            by_key.setdefault(m["key"], []).append(m["payload"])
    for k, payloads in by_key.items():
        assert payloads == [v for kk, v in (l.split(":", 1) for l in lines) if kk == k], k


def test_kcat_offsets_for_times(b, topic_name):
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    base = int(time.time() * 1000) - 3_600_000
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce(topic_name, value=b"x%d" % i, partition=0, timestamp=base + i * 1000)
        p.flush(30)  # one batch per message
    assert p.flush(30) == 0
    cases = {base - 5000: 0, base: 0, base + 2500: 3, base + 3000: 3, base + 9000: 9,
             base + 9001: -1}
    for ts, want in cases.items():
        out, _ = kcat(b, "-Q", "-t", f"{topic_name}:0:{ts}")
        assert f"{topic_name} [0] offset {want}" in out, f"ts {ts}: want offset {want}, kcat said {out!r}"


# ----------------------------------------------------------------- kafka-python
def test_kafka_python_produce_consume(b, topic_name):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    skiff.create_topic(skiff.admin_client(b), topic_name, 2)
    base = int(time.time() * 1000) - 60_000
    prod = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", compression_type="gzip",
                         linger_ms=5, request_timeout_ms=30000, enable_idempotence=False)
    try:
        futs = []
        for i in range(300):
            futs.append(prod.send(topic_name, key=b"k%d" % (i % 7), value=b"kp-%05d" % i,
                                  headers=[("i", str(i).encode())], timestamp_ms=base + i,
                                  partition=i % 2))
        metas = [f.get(timeout=60) for f in futs]
    finally:
        prod.close(timeout=30)
    for p in (0, 1):
        offs = [m.offset for m in metas if m.partition == p]
        assert offs == list(range(150)), f"partition {p} offsets from kafka-python acks"

    cons = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False, group_id=None,
                         auto_offset_reset="earliest", request_timeout_ms=40000)
    try:
        tps = [TopicPartition(topic_name, p) for p in (0, 1)]
        cons.assign(tps)
        cons.seek_to_beginning()
        got = {0: [], 1: []}
        deadline = time.monotonic() + 90
        while sum(map(len, got.values())) < 300 and time.monotonic() < deadline:
            for tp, recs in cons.poll(timeout_ms=1000).items():
                got[tp.partition].extend(recs)
        assert sum(map(len, got.values())) == 300, {p: len(v) for p, v in got.items()}
        ends = cons.end_offsets(tps)
        assert {tp.partition: o for tp, o in ends.items()} == {0: 150, 1: 150}
        begins = cons.beginning_offsets(tps)
        assert {tp.partition: o for tp, o in begins.items()} == {0: 0, 1: 0}
    finally:
        cons.close()
    for p, recs in got.items():
        for k, r in enumerate(recs):
            i = 2 * k + p
            assert r.offset == k
            assert r.key == b"k%d" % (i % 7)
            assert r.value == b"kp-%05d" % i
            assert r.timestamp == base + i
            assert list(r.headers) == [("i", str(i).encode())]


def test_kafka_python_default_producer(b, topic_name):
    """kafka-python's defaults (like the Java client's since Kafka 3.0) are
    acks=all with idempotence on: InitProducerId + sequence numbers."""
    from kafka import KafkaProducer

    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    prod = KafkaProducer(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    try:
        metas = [prod.send(topic_name, value=b"idem-%d" % i).get(timeout=60) for i in range(20)]
    finally:
        prod.close(timeout=30)
    assert [m.offset for m in metas] == list(range(20))
    msgs, _, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert high == 20 and [m.value() for m in msgs] == [b"idem-%d" % i for i in range(20)]


def test_kafka_python_admin_create_describe_delete(b, topic_name):
    from kafka import KafkaAdminClient
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=b.bootstrap, request_timeout_ms=30000)
    try:
        admin.create_topics({topic_name: {"num_partitions": 4, "replication_factor": 1,
                                          "configs": {"retention.ms": "3600000"}}})
        deadline = time.monotonic() + 30
        while True:
            desc = admin.describe_topics([topic_name])
            if desc and desc[0]["error_code"] == 0 and len(desc[0]["partitions"]) == 4:
                break
            assert time.monotonic() < deadline, f"describe_topics never showed 4 partitions: {desc}"
            time.sleep(0.2)
        assert desc[0]["name"] == topic_name
        assert sorted(p["partition_index"] for p in desc[0]["partitions"]) == [0, 1, 2, 3]
        assert all(p["leader_id"] == 0 for p in desc[0]["partitions"]), desc
        assert topic_name in admin.list_topics()

        with pytest.raises(TopicAlreadyExistsError):
            admin.create_topics({topic_name: {"num_partitions": 1, "replication_factor": 1}})

        admin.delete_topics([topic_name])
        deadline = time.monotonic() + 30
        while topic_name in admin.list_topics():
            assert time.monotonic() < deadline, "topic still listed 30 s after delete_topics"
            time.sleep(0.2)
    finally:
        admin.close()
