"""Consumer groups with real clients: subscribe()-based consumers in one
group share a topic, fail over when one dies, and resume from committed
offsets, also across a broker crash.

Proves: the classic group protocol (FindCoordinator, JoinGroup with
MEMBER_ID_REQUIRED, SyncGroup, Heartbeat, LeaveGroup) works for librdkafka
2.16 (eager and cooperative-sticky), kafka-python and kcat (librdkafka 2.0);
committed offsets are durable; the admin group APIs answer as Kafka does.
"""

import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions

import skiff

pytestmark = pytest.mark.serial

HERE = Path(__file__).parent
DELAY_MS = 500
FAST_GROUPS = ["--group-initial-rebalance-delay-ms", str(DELAY_MS),
               "--group-min-session-timeout-ms", "1000",
               "--offsets-topic-num-partitions", "8"]


def produce(bootstrap, topic, n, partitions):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, partition=i % partitions)
        if i % 10000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def new_group():
    return f"g-{uuid.uuid4().hex[:10]}"


class Member:
    """One group_consumer.py subprocess."""

    def __init__(self, tmp_path, name, client, bootstrap, topic, group, assignor):
        self.out = tmp_path / f"{name}.txt"
        self.out.touch()
        self.log = open(tmp_path / f"{name}.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "group_consumer.py"), client, bootstrap, topic,
             group, str(self.out), assignor],
            stdout=self.log, stderr=subprocess.STDOUT)

    def records(self):
        out = []
        for line in self.out.read_text().splitlines():
            p, o = line.split()
            out.append((int(p), int(o)))
        return out

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def all_records(members):
    return [r for m in members for r in m.records()]


@pytest.mark.parametrize("client,assignor", [
    ("confluent", "range"),
    ("confluent", "cooperative-sticky"),
    ("kafka-python", "range"),
])
def test_group_shares_partitions_and_fails_over_without_skipping(
        broker_factory, tmp_path, topic_name, client, assignor):
    b = broker_factory(args=FAST_GROUPS)
    partitions, half = 6, 30_000
    skiff.create_topic(skiff.admin_client(b), topic_name, partitions)
    group = new_group()
    produce(b.bootstrap, topic_name, half, partitions)
    members = [Member(tmp_path, f"c{i}", client, b.bootstrap, topic_name, group, assignor)
               for i in range(3)]
    try:
        skiff.wait_until(lambda: len(all_records(members)) >= half, 90, interval=0.5,
                         what=f"{half} records consumed by the group")
        time.sleep(1)  # let a late duplicate show up, if any
        got = Counter(all_records(members))
        dups = [k for k, n in got.items() if n > 1]
        assert not dups, f"{len(dups)} records delivered twice, e.g. {dups[:5]}"
        assert set(got) == {(i % partitions, i // partitions) for i in range(half)}
        owners = {m: {p for p, _ in m.records()} for m in members}
        assert all(owners.values()), f"every member got partitions: {owners}"

        # Kill one member while idle (everything it read is committed);
        # its partitions must move to the others within the session timeout.
        victim = max(members, key=lambda m: len(owners[m]))
        victim.kill()
        killed_at = time.monotonic()
        produce(b.bootstrap, topic_name, half, partitions)
        survivors = [m for m in members if m is not victim]
        orphaned = owners[victim]

        def orphans_served():
            seen = {p for p, o in all_records(survivors) if o >= half // partitions}
            return orphaned <= seen
        skiff.wait_until(orphans_served, 4 + 20, interval=0.2,
                         what=f"partitions {sorted(orphaned)} taken over by survivors")
        took = time.monotonic() - killed_at
        skiff.wait_until(lambda: len(set(all_records(members))) >= 2 * half, 60, interval=0.5,
                         what="all records consumed after fail-over")
        time.sleep(1)
        got = Counter(all_records(members))
        assert set(got) == {(i % partitions, i // partitions) for i in range(2 * half)}, \
            "a record was skipped"
        dups = [k for k, n in got.items() if n > 1]
        assert not dups, f"committed offsets not honoured: {len(dups)} redelivered, e.g. {dups[:5]}"
        assert took < 4 + 15, f"fail-over took {took:.1f}s"
    finally:
        for m in members:
            m.stop()


def test_first_message_of_a_new_group_within_initial_delay(broker_factory, topic_name):
    delay_ms = 1500
    b = broker_factory(args=["--group-initial-rebalance-delay-ms", str(delay_ms),
                             "--offsets-topic-num-partitions", "8"])
    skiff.create_topic(skiff.admin_client(b), topic_name, 2)
    produce(b.bootstrap, topic_name, 10, 2)
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": new_group(),
                  "auto.offset.reset": "earliest"})
    try:
        start = time.monotonic()
        c.subscribe([topic_name])
        m = None
        while m is None and time.monotonic() - start < 30:
            m = c.poll(0.05)
        took = time.monotonic() - start
        assert m is not None and not m.error(), m and m.error()
        assert took < delay_ms / 1000 + 1, f"first message after {took:.2f}s"
        assert took >= delay_ms / 1000 * 0.9, f"initial delay not applied ({took:.2f}s)"
    finally:
        c.close()


def commit(bootstrap, group, offsets, metadata=None):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        extra = {} if metadata is None else {"metadata": metadata}
        tps = [TopicPartition(t, p, o, **extra) for t, p, o in offsets]
        return c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


def committed(bootstrap, group, tps):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        return {(tp.topic, tp.partition): tp.offset
                for tp in c.committed([TopicPartition(t, p) for t, p in tps], timeout=20)}
    finally:
        c.close()


def test_committed_offsets_survive_broker_sigkill(broker_factory, topic_name):
    b = broker_factory(args=FAST_GROUPS)
    skiff.create_topic(skiff.admin_client(b), topic_name, 3)
    groups = [new_group() for _ in range(5)]
    for i, g in enumerate(groups):
        commit(b.bootstrap, g, [(topic_name, p, 100 * i + p) for p in range(3)])
    # Overwrite one, so replay must keep the last value.
    commit(b.bootstrap, groups[0], [(topic_name, 1, 777)])
    b.kill()
    b.start()
    for i, g in enumerate(groups):
        want = {(topic_name, p): 100 * i + p for p in range(3)}
        if i == 0:
            want[(topic_name, 1)] = 777
        assert committed(b.bootstrap, g, [(topic_name, p) for p in range(3)]) == want
    assert "replayed __consumer_offsets" in b.log_since_start()


def test_kcat_balanced_consumer(broker_factory, topic_name, tmp_path):
    kcat = shutil.which("kcat") or "/usr/bin/kcat"
    b = broker_factory(args=FAST_GROUPS)
    skiff.create_topic(skiff.admin_client(b), topic_name, 4)
    produce(b.bootstrap, topic_name, 400, 4)
    group = new_group()
    r = subprocess.run(
        [kcat, "-b", b.bootstrap, "-G", group, "-o", "beginning", "-c", "400",
         "-X", "auto.commit.interval.ms=100", "-f", "%p %o\n", topic_name],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    lines = r.stdout.decode().split()
    got = {(int(lines[i]), int(lines[i + 1])) for i in range(0, len(lines), 2)}
    assert got == {(p, o) for p in range(4) for o in range(100)}
    # kcat commits on close: a second run of the group has nothing left.
    offs = committed(b.bootstrap, group, [(topic_name, p) for p in range(4)])
    assert offs == {(topic_name, p): 100 for p in range(4)}, offs


def test_admin_group_apis_and_errors(broker_factory, topic_name):
    b = broker_factory(args=FAST_GROUPS)
    admin = skiff.admin_client(b)
    skiff.create_topic(admin, topic_name, 2)
    produce(b.bootstrap, topic_name, 100, 2)
    group = new_group()
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False,
                  "client.id": "admin-test"})
    c.subscribe([topic_name])
    n = 0
    deadline = time.monotonic() + 30
    while n < 60 and time.monotonic() < deadline:
        for m in c.consume(60 - n, 0.5):
            assert not m.error(), m.error()
            n += 1
    c.commit(asynchronous=False)
    try:
        listed = {g.group_id: g for g in admin.list_consumer_groups().result(timeout=20).valid}
        assert group in listed
        assert listed[group].state.name == "STABLE"
        d = admin.describe_consumer_groups([group])[group].result(timeout=20)
        assert d.state.name == "STABLE"
        assert len(d.members) == 1 and d.members[0].client_id == "admin-test"
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1]
        with pytest.raises(KafkaException) as e:
            admin.delete_consumer_groups([group])[group].result(timeout=20)
        assert e.value.args[0].code() == KafkaError.NON_EMPTY_GROUP

        # Lag on /metrics: high watermark 50 per partition minus what was committed.
        offs = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)])[group].result(timeout=20)
        by_part = {tp.partition: tp.offset for tp in offs.topic_partitions if tp.topic == topic_name}
        assert sum(by_part.values()) == 60, by_part
        metrics = b.metrics()
        for p, off in by_part.items():
            lag = metrics.total("skiff_consumer_group_lag",
                                group=group, topic=topic_name, partition=str(p))
            assert lag == 50 - off, (p, lag, off)
        assert metrics.total("skiff_groups", state="Stable") >= 1
        assert metrics.total("skiff_group_members", group=group) == 1
        assert metrics.total("skiff_group_rebalances_total") >= 1
    finally:
        c.close()

    # Closed: the group is Empty and can be deleted, offsets with it.
    skiff.wait_until(
        lambda: admin.describe_consumer_groups([group])[group].result(timeout=20).state.name == "EMPTY",
        20, what="group empty after close")
    admin.delete_consumer_groups([group])[group].result(timeout=20)
    listed = [g.group_id for g in admin.list_consumer_groups().result(timeout=20).valid]
    assert group not in listed
    assert committed(b.bootstrap, group, [(topic_name, 0)]) == {(topic_name, 0): -1001}
    with pytest.raises(KafkaException) as e:
        admin.delete_consumer_groups([group])[group].result(timeout=20)
    assert e.value.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND

    # Per-partition commit errors: librdkafka raises the first one; the
    # valid partition of the same request is committed.
    g = new_group()
    with pytest.raises(KafkaException) as e:
        commit(b.bootstrap, g, [(topic_name, 0, 5), ("no-such-topic", 0, 1)])
    assert e.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    assert committed(b.bootstrap, g, [(topic_name, 0)]) == {(topic_name, 0): 5}
    with pytest.raises(KafkaException) as e:
        commit(b.bootstrap, new_group(), [(topic_name, 0, 5)], metadata="x" * 5000)
    assert e.value.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE
    # (confluent-kafka sends the metadata with its terminating NUL byte.)
    commit(b.bootstrap, new_group(), [(topic_name, 0, 5)], metadata="x" * 4000)


def test_static_member_rejoins_without_rebalance(broker_factory, topic_name):
    b = broker_factory(args=FAST_GROUPS)
    skiff.create_topic(skiff.admin_client(b), topic_name, 4)
    group = new_group()

    def member(i):
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": group,
                      "group.instance.id": f"inst-{i}", "session.timeout.ms": 10000,
                      "auto.offset.reset": "earliest"})
        c.subscribe([topic_name])
        return c

    def parts(c):
        return sorted(tp.partition for tp in c.assignment())

    a, bm = member(0), member(1)
    deadline = time.monotonic() + 20
    while not (a.assignment() and bm.assignment()) and time.monotonic() < deadline:
        a.poll(0.1)
        bm.poll(0.1)
    before = (parts(a), parts(bm))
    assert sorted(before[0] + before[1]) == [0, 1, 2, 3], before
    rebalances = b.metrics().total("skiff_group_rebalances_total")
    bm.close()  # a static member sends no LeaveGroup
    again = member(1)
    try:
        deadline = time.monotonic() + 8
        while not again.assignment() and time.monotonic() < deadline:
            again.poll(0.1)
            a.poll(0.1)
        assert (parts(a), parts(again)) == before
        assert b.metrics().total("skiff_group_rebalances_total") == rebalances
        # The replaced member id is fenced: only two members are listed.
        admin = skiff.admin_client(b)
        d = admin.describe_consumer_groups([group])[group].result(timeout=20)
        assert sorted(m.group_instance_id for m in d.members) == ["inst-0", "inst-1"]
    finally:
        again.close()
        a.close()
