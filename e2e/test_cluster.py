"""A cluster of brokers sharing metadata through the metadata Raft group.

Proves: every broker reports the same brokers, topics, assignments and
controller; topic creation through any broker spreads replicas and leaders;
clients produce and consume across leaders (a non-leader answers
NOT_LEADER_OR_FOLLOWER and clients follow Metadata); the metadata group
survives a SIGKILLed leader and elects a new one; a broker restarted with an
empty disk catches up; kcat lists every broker; ACLs, SCRAM users and
client quotas set through one broker apply on every broker; a silent broker
is fenced (left out of Metadata, ISRs and new placements) until it answers
again, and a stopping one fences itself.

Partition data replication itself (failover, no loss) is e2e/test_replication.py.
"""

import shutil
import subprocess
import time
from collections import Counter

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic
from kafka import KafkaAdminClient

import skiff

pytestmark = pytest.mark.serial

KCAT = shutil.which("kcat") or "/usr/bin/kcat"


def create(bootstrap: str, name: str, partitions: int, rf: int, timeout: float = 60.0):
    admin = skiff.admin_client(bootstrap)
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                              request_timeout=timeout, operation_timeout=timeout)[name]
    fut.result(timeout=timeout)


def wait_same_topic(cluster, name: str, partitions: int, nodes=None, timeout: float = 60.0):
    """Until every given broker reports `name` with the same assignment."""
    nodes = nodes or [b.node_id for b in cluster.alive()]

    def same():
        seen = []
        for n in nodes:
            t = cluster.metadata(n)["topics"].get(name)
            if t is None or len(t) != partitions:
                return False
            seen.append(t)
        return seen[0] if all(s == seen[0] for s in seen) else False
    return skiff.wait_until(same, timeout, interval=0.2, what=f"all brokers to agree on {name}")


def test_brokers_agree_and_leaders_spread(cluster_factory, topic_name):
    c = cluster_factory(3)
    for n in (1, 2, 3):
        md = c.metadata(n)
        assert sorted(md["brokers"]) == [1, 2, 3], md
    assert len({c.controller(n) for n in (1, 2, 3)}) == 1

    # Created through broker 2 only; brokers 1 and 3 learn it from the log.
    create(c[2].bootstrap, topic_name, 12, 3)
    wait_same_topic(c, topic_name, 12)

    # Each partition is a Raft group: its preferred replica (the first) is
    # elected first, so leaders spread as the assignment does, and once the
    # followers caught up every replica is in sync.
    def settled():
        seen = [c.metadata(n)["topics"].get(topic_name) for n in (1, 2, 3)]
        if any(t is None or len(t) != 12 or t != seen[0] for t in seen):
            return False
        parts = seen[0]
        done = all(sorted(isr) == [1, 2, 3] and replicas[0] == leader
                   for leader, replicas, isr in parts.values())
        return parts if done else False
    parts = skiff.wait_until(settled, 60, interval=0.2, what="preferred leaders elected, full ISRs")
    leaders = Counter(leader for leader, _, _ in parts.values())
    assert leaders == {1: 4, 2: 4, 3: 4}, parts
    for leader, replicas, isr in parts.values():
        assert sorted(replicas) == [1, 2, 3] and replicas[0] == leader

    # Auto-creation through a broker that does not lead the metadata group
    # (the write is forwarded to the leader) is seen by all.
    ctl = c.controller()
    other = next(n for n in (1, 2, 3) if n != ctl)
    skiff.raw_metadata(c[other].bootstrap, [topic_name + "-auto"])
    wait_same_topic(c, topic_name + "-auto", 1)

    # RF larger than the cluster is refused.
    admin = skiff.admin_client(c[1].bootstrap)
    fut = admin.create_topics([NewTopic(topic_name + "-rf4", num_partitions=1, replication_factor=4)],
                              request_timeout=30)[topic_name + "-rf4"]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=30)
    assert "REPLICATION_FACTOR" in str(e.value).upper(), e.value

    # kcat (librdkafka 2.0) lists the three brokers.
    r = subprocess.run([KCAT, "-b", c[3].bootstrap, "-L", "-m", "20"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert " 3 brokers:" in out, out
    for b in c.brokers:
        assert f"at 127.0.0.1:{b.port}" in out, out


def test_produce_and_consume_across_leaders(cluster_factory, topic_name):
    c = cluster_factory(3)
    create(c[1].bootstrap, topic_name, 12, 3)
    wait_same_topic(c, topic_name, 12)
    # Only broker 3 as bootstrap: the client must learn the others and route
    # each partition to its leader.
    p = Producer({"bootstrap.servers": c[3].bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    failed = []
    n = 1200
    for i in range(n):
        p.produce(topic_name, key=str(i).encode(), value=f"v{i}".encode(), partition=i % 12,
                  on_delivery=lambda err, m: err and failed.append(err))
        p.poll(0)
    assert p.flush(60) == 0
    assert not failed, failed[:3]

    consumer = Consumer({"bootstrap.servers": c[2].bootstrap, "group.id": topic_name,
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic_name, i, OFFSET_BEGINNING) for i in range(12)])
        got = skiff.consume_all(consumer, {i: n // 12 for i in range(12)}, timeout=120)
    finally:
        consumer.close()
    for part, msgs in got.items():
        assert [int(m.key()) for m in msgs] == list(range(part, n, 12))

    # A broker that does not lead a partition refuses to serve it.
    parts = c.metadata(1)["topics"][topic_name]
    follower = next(i for i, (leader, _, _) in parts.items() if leader != 1)
    assert list_offsets_error(c[1].bootstrap, topic_name, follower) == 6  # NOT_LEADER_OR_FOLLOWER
    assert list_offsets_error(c[parts[follower][0]].bootstrap, topic_name, follower) == 0


def list_offsets_error(bootstrap: str, topic: str, partition: int) -> int:
    """The error code of a raw ListOffsets v1 (latest) for one partition,
    asked of exactly one broker."""
    import socket
    import struct
    host, port = bootstrap.rsplit(":", 1)
    name = topic.encode()
    body = (struct.pack(">hhi", 2, 1, 9) + struct.pack(">h", 3) + b"e2e"
            + struct.pack(">i", -1) + struct.pack(">i", 1) + struct.pack(">h", len(name)) + name
            + struct.pack(">i", 1) + struct.pack(">iq", partition, -1))
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(65536)
            assert chunk, "connection closed"
            buf += chunk
    pos = 4 + 4 + 4  # size, correlation id, topics count
    (n,) = struct.unpack_from(">h", buf, pos)
    pos += 2 + n + 4  # name, partitions count
    _, err = struct.unpack_from(">ih", buf, pos)
    return err

def test_metadata_leader_failover(cluster_factory, topic_name):
    c = cluster_factory(3)
    old = c.controller()
    assert old in (1, 2, 3)
    killed_at = time.monotonic()
    c.kill(old)
    survivors = [n for n in (1, 2, 3) if n != old]

    def new_leader():
        ids = {c.controller(n) for n in survivors}
        return len(ids) == 1 and ids.pop() not in (old, -1)
    skiff.wait_until(new_leader, 30, interval=0.05, what="a new metadata leader")
    elapsed = time.monotonic() - killed_at
    print(f"\nmetadata leader {old} SIGKILLed; new leader {c.controller(survivors[0])} "
          f"reported after {elapsed:.2f}s")
    elections = c[survivors[0]].metrics().total(r"skiff_metadata_raft_elections_total")
    assert elections >= 1

    # Admin writes through a survivor work (RF 2: the dead broker is still
    # registered, so RF 3 would place replicas on it).
    create(c[survivors[1]].bootstrap, topic_name, 4, 2)
    wait_same_topic(c, topic_name, 4, nodes=survivors)

    # The old leader comes back as a follower and learns the topic.
    c.start_one(old)
    wait_same_topic(c, topic_name, 4)
    c.wait_converged()


def test_wiped_broker_catches_up(cluster_factory, topic_name):
    # Snapshot every few entries so the log the wiped broker needs is gone
    # and it must be sent a snapshot.
    c = cluster_factory(3, args=["--metadata-snapshot-interval-entries", "5"])
    victim = next(n for n in (1, 2, 3) if n != c.controller())
    c.stop(victim)
    c.wipe(victim)
    names = [f"{topic_name}-{i}" for i in range(8)]
    others = [n for n in (1, 2, 3) if n != victim]
    for i, name in enumerate(names):
        create(c[others[i % 2]].bootstrap, name, 2, 2)
    for name in names:
        wait_same_topic(c, name, 2, nodes=others)
    started = time.monotonic()
    c.start_one(victim)
    for name in names:
        wait_same_topic(c, name, 2)
    print(f"\nwiped broker {victim} caught up {len(names)} topics in {time.monotonic() - started:.2f}s")
    md = c.metadata(victim)
    assert sorted(md["brokers"]) == [1, 2, 3]


def test_acls_are_cluster_metadata(cluster_factory):
    """An ACL created through one broker is enforced by every broker, and
    removing it through another lifts it everywhere (ACLs live in the
    metadata Raft group)."""
    from confluent_kafka import KafkaError
    from confluent_kafka.admin import (
        AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
        ResourcePatternType, ResourceType,
    )

    c = cluster_factory(3, args=["--authorizer-enabled", "true",
                                 "--allow-everyone-if-no-acl-found", "true"])
    topic = "guarded"
    create(c[1].bootstrap, topic, 3, 3)
    wait_same_topic(c, topic, 3)
    deny = AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:ANONYMOUS",
                      "*", AclOperation.WRITE, AclPermissionType.DENY)
    admins = {n: skiff.admin_client(c[n].bootstrap) for n in (1, 2, 3)}
    for f in admins[1].create_acls([deny]).values():
        f.result(timeout=30)
    match = AclBindingFilter(ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None,
                             AclOperation.ANY, AclPermissionType.ANY)
    # The AdminClient sends DescribeAcls to a broker of its choosing, so this
    # shows the ACL is committed, not that every broker applies it yet.
    assert admins[2].describe_acls(match).result(timeout=30) == [deny]

    def produce_codes():
        """Error code per partition (None = written). Codes, not KafkaError
        objects: confluent-kafka's KafkaError == None leaves a pending
        TypeError behind (a SystemError later in unrelated code)."""
        errs = []
        p = Producer({"bootstrap.servers": c.bootstrap, "linger.ms": 0, "retries": 0,
                      "acks": "all", "message.timeout.ms": 15000})
        for part in range(3):  # one partition led by each broker
            p.produce(topic, b"x", partition=part,
                      on_delivery=lambda e, m: errs.append(None if e is None else e.code()))
        assert p.flush(30) == 0
        return errs

    # ACLs reach each broker's authorizer asynchronously (as in Kafka), so
    # both directions are awaited, each through writes led by all three.
    denied = [KafkaError.TOPIC_AUTHORIZATION_FAILED] * 3
    skiff.wait_until(lambda: produce_codes() == denied, 30,
                     what="writes denied on every broker")
    for f in admins[3].delete_acls([match]).values():
        assert f.result(timeout=30) == [deny]
    skiff.wait_until(lambda: produce_codes() == [None, None, None], 30,
                     what="writes allowed on every broker once the ACL is gone")


def test_scram_users_and_quotas_are_cluster_metadata(cluster_factory, tmp_path):
    """A SCRAM user created through one broker logs in on every broker, and a
    client quota set through one broker is read back and enforced by another
    (credentials and quotas live in the metadata Raft group)."""
    from confluent_kafka.admin import (
        AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion,
    )
    from test_quotas import alter_quotas, describe_quotas

    users = tmp_path / "bootstrap-users"
    users.write_text("admin:admin-secret\n")
    c = cluster_factory(3, start=False, args=["--super-users", "User:admin",
                                              "--scram-bootstrap-users-file", str(users)])
    sasl = dict(zip((1, 2, 3), skiff.free_ports(3)))
    for n in (1, 2, 3):
        c[n].listeners = (f"PLAINTEXT://127.0.0.1:{c[n].port},"
                          f"SASL_PLAINTEXT://127.0.0.1:{sasl[n]}")
    c.start()

    def conf(n, user, password):
        return {"bootstrap.servers": f"127.0.0.1:{sasl[n]}", "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": user,
                "sasl.password": password}

    admin = AdminClient(conf(1, "admin", "admin-secret"))
    for f in admin.alter_user_scram_credentials([UserScramCredentialUpsertion(
            "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
            b"alice-pw")]).values():
        f.result(timeout=30)
    topic = "scram-everywhere"
    create(c[1].bootstrap, topic, 3, 3)
    wait_same_topic(c, topic, 3)

    def produce_as_alice(bootstrap_node, throttles=None):
        """Writes one record to each partition (led by the three brokers) as
        alice, bootstrapping from one broker; True when all were written."""
        errs = []
        pconf = {**conf(bootstrap_node, "alice", "alice-pw"), "linger.ms": 0, "acks": "all",
                 "message.timeout.ms": 10000, "retries": 0,
                 "error_cb": lambda e: errs.append(e.code())}
        if throttles is not None:
            pconf["throttle_cb"] = lambda e: throttles.append(e.throttle_time)
        p = Producer(pconf)
        for part in range(3):
            p.produce(topic, b"x" * 1000, partition=part,
                      on_delivery=lambda e, m: e is not None and errs.append(e.code()))
        p.flush(30)
        return not errs

    # Credentials reach each broker asynchronously: await logins through each.
    for n in (1, 2, 3):
        skiff.wait_until(lambda: produce_as_alice(n), 30, interval=0.5,
                         what=f"alice to log in through broker {n}")

    # A quota set through broker 2 is described by broker 3 and throttles
    # alice's writes on every broker.
    alice = [("user", "alice")]
    assert alter_quotas(c[2], [(alice, [("producer_byte_rate", 1000.0)])]) == [(0, None)]
    skiff.wait_until(
        lambda: describe_quotas(c[3], [("user", 0, "alice")])[1]
        == {(("user", "alice"),): {"producer_byte_rate": 1000.0}},
        30, what="broker 3 to describe the quota set through broker 2")
    throttles = []
    skiff.wait_until(lambda: produce_as_alice(3, throttles) and throttles, 30, interval=0.5,
                     what="alice to be throttled")
    assert max(throttles) > 0


def test_a_silent_broker_is_fenced_and_a_stopping_one_fences_itself(cluster_factory, topic_name):
    """Kafka lists only unfenced brokers: a broker the metadata leader has
    not heard from for broker.session.timeout.ms disappears from Metadata
    (and DescribeCluster), leads nothing, is out of every ISR and gets no new
    replicas, until it answers again; a broker stopped with SIGTERM fences
    itself at once."""
    c = cluster_factory(3, args=["--broker-session-timeout-ms", "3000"])
    create(c[1].bootstrap, topic_name, 6, 3)
    wait_same_topic(c, topic_name, 6)
    victim = next(n for n in (1, 2, 3) if n != c.controller())
    others = [n for n in (1, 2, 3) if n != victim]

    def listed_by(n):
        return set(skiff.raw_metadata(c[n].bootstrap)["brokers"])

    killed = time.monotonic()
    c.kill(victim)
    skiff.wait_until(lambda: all(victim not in listed_by(n) for n in others), 30, interval=0.1,
                     what=f"broker {victim} to be fenced")
    fenced_after = time.monotonic() - killed
    print(f"\nbroker {victim} SIGKILLed: fenced after {fenced_after:.2f}s (session timeout 3 s)")
    # Not before the session timeout (its last heartbeat answer was < 0.2 s
    # before the kill).
    assert fenced_after >= 2.5
    for n in others:
        assert listed_by(n) == set(others)
        assert c[n].metrics().total(r"skiff_fenced_brokers") == 1

    # librdkafka: the brokers, and every partition led by a live broker with
    # the victim out of its ISR.
    admin = skiff.admin_client(c.bootstrap)

    def led_by_others():
        md = admin.list_topics(topic_name, timeout=10)
        parts = md.topics[topic_name].partitions.values()
        return set(md.brokers) == set(others) and all(
            p.leader in others and victim not in p.isrs and victim in p.replicas for p in parts)
    skiff.wait_until(led_by_others, 30, interval=0.2, what="partitions led by live brokers")

    # kafka-python's DescribeCluster v2 asks for fenced brokers too: marked.
    ka = KafkaAdminClient(bootstrap_servers=c.bootstrap.split(","), request_timeout_ms=30000)
    try:
        described = {b["broker_id"]: b["is_fenced"] for b in ka.describe_cluster()["brokers"]}
    finally:
        ka.close()
    assert described == {others[0]: False, others[1]: False, victim: True}

    # New replicas avoid the fenced broker; more than the live brokers is refused.
    create(c[others[0]].bootstrap, f"{topic_name}-rf2", 6, 2)
    wait_same_topic(c, f"{topic_name}-rf2", 6, nodes=others)
    md = admin.list_topics(f"{topic_name}-rf2", timeout=10)
    placed = {r for p in md.topics[f"{topic_name}-rf2"].partitions.values() for r in p.replicas}
    assert placed == set(others)
    with pytest.raises(KafkaException) as refused:
        create(c[others[0]].bootstrap, f"{topic_name}-rf3", 1, 3)
    assert refused.value.args[0].name() == "INVALID_REPLICATION_FACTOR"

    # Back: listed again once it registers.
    c.start_one(victim)
    skiff.wait_until(lambda: all(listed_by(n) == {1, 2, 3} for n in (1, 2, 3)), 30, interval=0.1,
                     what=f"broker {victim} to be unfenced")
    assert c[others[0]].metrics().total(r"skiff_fenced_brokers") == 0

    # SIGTERM: the broker fences itself before it exits, so the others stop
    # naming it well before the session timeout would.
    stopping = others[1]
    c.stop(stopping)
    stopped = time.monotonic()
    rest = [n for n in (1, 2, 3) if n != stopping]
    skiff.wait_until(lambda: all(stopping not in listed_by(n) for n in rest), 1.5, interval=0.05,
                     what=f"broker {stopping} to fence itself")
    print(f"broker {stopping} stopped (SIGTERM): unlisted {time.monotonic() - stopped:.2f}s after exit")
