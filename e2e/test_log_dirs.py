"""DescribeLogDirs: each broker's partitions and their bytes on disk.

Proves, with kafka-python's `KafkaAdminClient.describe_log_dirs()` as the
client: a single broker reports one log dir (`<data dir>/logs`, absolute)
whose partitions' sizes are the bytes of their segment files (at least the
payload written), null topics asking for all and a topic/partition filter
for only those (an unknown partition is left out); on three brokers each
broker, asked alone, reports its own replica of every partition of an RF 3
topic, sized once it caught up, and only the partitions it holds of an RF 2
and an RF 1 topic; without DESCRIBE on the cluster a caller gets no log dirs
(and CLUSTER_AUTHORIZATION_FAILED in v3+, read with a raw request), with it
the same caller sees them.
"""

from __future__ import annotations

import struct
from collections import defaultdict

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)
from kafka.admin import KafkaAdminClient

import skiff
from test_replication import create, wait_in_sync

DESCRIBE_LOG_DIRS = 35
CLUSTER_AUTHORIZATION_FAILED = 31
RECORD = 1000  # value bytes per record


def kadmin(bootstrap: str, **extra) -> KafkaAdminClient:
    return KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=30000,
                            **extra)


def produce(bootstrap: str, topic: str, counts: dict[int, int]) -> dict[int, int]:
    """`counts[p]` records of RECORD bytes to partition p, acks=all,
    uncompressed; returns the payload bytes per partition."""
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "compression.type": "none",
                  "linger.ms": 5})
    for part, n in counts.items():
        for i in range(n):
            p.produce(topic, bytes([i % 251]) * RECORD, partition=part)
    assert p.flush(60) == 0
    return {part: n * RECORD for part, n in counts.items()}


def sizes(admin: KafkaAdminClient, node_id: int, topic_partitions=None) -> tuple[list, dict]:
    """One broker's answer: its log dirs, and {(topic, partition): size}."""
    [answer] = admin.describe_log_dirs(topic_partitions=topic_partitions, brokers=[node_id])
    assert answer["broker"] == node_id, answer
    dirs = answer["log_dirs"]
    got = {}
    for d in dirs:
        assert d["error_code"] == 0, d
        for t in d["topics"]:
            for p in t["partitions"]:
                key = (t["name"], p["partition_index"])
                assert key not in got, f"{key} listed twice: {dirs}"
                assert p["offset_lag"] == 0 and p["is_future_key"] is False, p
                got[key] = p["partition_size"]
    return dirs, got


def test_single_broker_reports_segment_bytes(broker, topic_name):
    create(broker.bootstrap, topic_name, 3, 1)
    skiff.wait_topic(skiff.admin_client(broker), topic_name, 3)
    payload = produce(broker.bootstrap, topic_name, {0: 300, 1: 20})
    admin = kadmin(broker.bootstrap)
    try:
        dirs, got = sizes(admin, broker.node_id)
        assert len(dirs) == 1, dirs
        d = dirs[0]
        assert d["log_dir"] == str((broker.data_dir / "logs").absolute()), d
        # v4: the volume's size is not measured.
        assert d["total_bytes"] == -1 and d["usable_bytes"] == -1, d
        for p in range(3):
            on_disk = sum(f.stat().st_size for f in broker.segment_files(topic_name, p))
            assert got[(topic_name, p)] == on_disk, (p, got, on_disk)
            assert on_disk >= payload.get(p, 0), (p, on_disk, payload)
        print(f"\nsizes: {[got[(topic_name, p)] for p in range(3)]} for payloads {payload}")
        # The brokers' own offsets topic is a partition held here too.
        assert any(t == "__consumer_offsets" for t, _ in got), sorted(got)

        # Null topics (what the operator sends) and every version agree.
        name = str((broker.data_dir / "logs").absolute())
        assert raw_describe_log_dirs(broker.bootstrap, 4) == (0, [(name, got, -1)])
        assert raw_describe_log_dirs(broker.bootstrap, 3) == (0, [(name, got, None)])
        assert raw_describe_log_dirs(broker.bootstrap, 2) == (None, [(name, got, None)])
        assert raw_describe_log_dirs(broker.bootstrap, 1) == (None, [None])

        _, only = sizes(admin, broker.node_id, {topic_name: [1, 7]})
        assert only == {(topic_name, 1): got[(topic_name, 1)]}, only
        _, none = sizes(admin, broker.node_id, {"no-such-topic": [0]})
        assert none == {}, none
    finally:
        admin.close()


def test_each_broker_reports_only_its_own_replicas(cluster_factory, topic_name):
    c = cluster_factory(3)
    rf = {f"{topic_name}-rf3": 3, f"{topic_name}-rf2": 2, f"{topic_name}-rf1": 1}
    for t, r in rf.items():
        create(c[1].bootstrap, t, 3, r)
    for t, r in rf.items():
        if r > 1:
            wait_in_sync(c, t, 3)
        else:
            skiff.wait_topic(skiff.admin_client(c.bootstrap), t, 3)
    replicated = f"{topic_name}-rf3"
    payload = produce(c.bootstrap, replicated, {0: 200, 1: 100, 2: 50})
    replicas = {(t, p): set(r) for t in rf
                for p, (_, r, _) in c.metadata(1, [t])["topics"][t].items()}
    admin = kadmin(c.bootstrap)
    try:
        seen = {}

        def caught_up():
            for n in (1, 2, 3):
                seen[n] = sizes(admin, n)[1]
            return all(seen[n].get((replicated, p), -1) >= payload[p]
                       for n in (1, 2, 3) for p in payload)
        skiff.wait_until(caught_up, 60, interval=0.5,
                         what=f"every broker to report every replica of {replicated} caught up")
        print(f"\nsizes of {replicated} by broker: "
              f"{ {n: [seen[n][(replicated, p)] for p in range(3)] for n in (1, 2, 3)} }")

        listed_by = defaultdict(set)
        for n in (1, 2, 3):
            for key in seen[n]:
                listed_by[key].add(n)
        for key, holders in replicas.items():
            assert listed_by[key] == holders, (
                f"{key}: held by {sorted(holders)} but listed by {sorted(listed_by[key])}")
        # The RF 2 topic leaves out one broker for some partition, which
        # must not list it.
        assert any(len(replicas[(f"{topic_name}-rf2", p)]) == 2 for p in range(3))

        # Asked for one partition it does not hold, a broker lists nothing.
        t1 = f"{topic_name}-rf1"
        p, holders = next((p, replicas[(t1, p)]) for p in range(3))
        other = next(n for n in (1, 2, 3) if n not in holders)
        assert sizes(admin, other, {t1: [p]})[1] == {}
        assert set(sizes(admin, next(iter(holders)), {t1: [p]})[1]) == {(t1, p)}
    finally:
        admin.close()


USERS = {"admin": "admin-pw", "alice": "alice-pw"}


@pytest.fixture
def secured(broker_factory, tmp_path):
    users = tmp_path / "users"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    b = broker_factory(start=False, args=[
        "--authorizer-enabled", "true",
        "--super-users", "User:admin",
        "--scram-bootstrap-users-file", str(users),
    ])
    b.sasl_port = skiff.free_port()
    # The plaintext listener's ANONYMOUS caller has no ACL at all.
    b.listeners = f"PLAINTEXT://127.0.0.1:{b.port},SASL_PLAINTEXT://127.0.0.1:{b.sasl_port}"
    b.start()
    return b


def sasl(b, user: str) -> dict:
    return {"bootstrap_servers": [f"127.0.0.1:{b.sasl_port}"], "request_timeout_ms": 30000,
            "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_plain_username": user, "sasl_plain_password": USERS[user]}


def raw_describe_log_dirs(bootstrap: str, version: int) -> tuple[int | None, list]:
    """(top-level error code, or None before v3; the log dirs) of a
    DescribeLogDirs with null topics (kafka-python always names the topics
    it found in Metadata). From v2 on each dir is (name, {(topic, partition):
    size}, total_bytes or None); before, only the number of dirs is read."""
    flexible = version >= 2
    body = b"\x00\x00" if flexible else struct.pack(">i", -1)
    resp = skiff.raw_call(bootstrap, DESCRIBE_LOG_DIRS, version, body, flexible=flexible)
    pos = 4  # throttle_time_ms

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, resp, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def uvarint():
        nonlocal pos
        n = shift = 0
        while True:
            b = resp[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    def string():
        nonlocal pos
        n = uvarint() - 1
        pos += n
        return resp[pos - n:pos].decode()

    def tags():
        nonlocal pos
        for _ in range(uvarint()):
            uvarint()
            pos += uvarint()

    error = take(">h") if version >= 3 else None
    if not flexible:
        return error, [None] * take(">i")
    dirs = []
    for _ in range(uvarint() - 1):
        assert take(">h") == 0
        name = string()
        parts = {}
        for _ in range(uvarint() - 1):
            topic = string()
            for _ in range(uvarint() - 1):
                index, size, lag, future = take(">i"), take(">q"), take(">q"), take(">?")
                assert lag == 0 and not future
                parts[(topic, index)] = size
                tags()
            tags()
        total = (take(">q"), take(">q"))[0] if version >= 4 else None
        tags()
        dirs.append((name, parts, total))
    return error, dirs


def test_needs_describe_on_the_cluster(secured, topic_name):
    b = secured
    admin_conf = {"bootstrap.servers": f"127.0.0.1:{b.sasl_port}",
                  "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
                  "sasl.username": "admin", "sasl.password": USERS["admin"]}
    ca = AdminClient(admin_conf)
    ca.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)

    for v in (3, 4):
        assert raw_describe_log_dirs(b.bootstrap, v) == (CLUSTER_AUTHORIZATION_FAILED, []), v
    for v in (1, 2):
        assert raw_describe_log_dirs(b.bootstrap, v) == (None, []), v

    su = KafkaAdminClient(**sasl(b, "admin"))
    alice = KafkaAdminClient(**sasl(b, "alice"))
    try:
        _, got = sizes(su, b.node_id)
        assert (topic_name, 0) in got, got
        # kafka-python names the topics Metadata shows the caller (none to
        # alice); name hers.
        mine = {topic_name: [0]}
        [answer] = alice.describe_log_dirs(topic_partitions=mine, brokers=[b.node_id])
        assert answer["log_dirs"] == [], answer
        grant = AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL,
                           "User:alice", "*", AclOperation.DESCRIBE, AclPermissionType.ALLOW)
        for f in ca.create_acls([grant]).values():
            f.result(timeout=30)

        def allowed():
            return (topic_name, 0) in sizes(alice, b.node_id, mine)[1]
        skiff.wait_until(allowed, 30, interval=0.2, what="alice's DESCRIBE on the cluster to apply")
    finally:
        su.close()
        alice.close()
