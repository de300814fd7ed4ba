"""Partition reassignment (issue #7): AlterPartitionReassignments and
ListPartitionReassignments carried out as Raft membership changes, driven by
kafka-python's admin client against real broker processes.

Proves:
- growing a cluster from 3 to 5 brokers and moving replicas onto the new
  ones, then draining the two new brokers again, while an idempotent
  `acks=all` producer and a consumer group run: every reassignment
  completes, replicas end within one of even per broker, a broker no longer
  holding a partition has deleted its data, UnregisterBroker removes a
  drained broker (and refuses one that still holds replicas), and not one
  acknowledged record is lost or duplicated, in order per partition;
- bad reassignments get Kafka's errors: an unknown broker or a repeated one
  (INVALID_REPLICA_ASSIGNMENT), an unknown partition, a second reassignment
  of a partition whose first is under way (REASSIGNMENT_IN_PROGRESS), a
  cancellation with none under way (NO_REASSIGNMENT_IN_PROGRESS); a pending
  one is listed with its adding and removing replicas, and a cancelled one
  returns the partition to its original replicas;
- ElectLeaders (PREFERRED, through confluent-kafka) hands each
  partition's leadership to its first replica, so leaders end as even as
  the preferred replicas; with `auto.leader.rebalance.enable` a broker that
  comes back gets its preferred leaderships back on its own;
- `leader.replication.throttled.rate` holds a new replica's catch-up to the
  configured rate (within 20 %);
- a broker dying mid-reassignment: a killed leader's successor completes
  the move; a killed new replica leaves the partition serving and the move
  listed, a cancel returns the partition to its replicas without it, and it
  deletes its partial copy once back; nothing acknowledged is lost.
"""

import struct
import threading
import time
from collections import Counter

import pytest
from kafka import TopicPartition as KTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import (
    InvalidReplicationAssignmentError,
    KafkaConnectionError,
    NodeNotReadyError,
    NoReassignmentInProgressError,
    ReassignmentInProgressError,
    UnknownTopicOrPartitionError,
)

from confluent_kafka import Consumer, ElectionType, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    ResourceType,
)

import skiff
from test_replication import Workload, create, read_all

pytestmark = pytest.mark.serial

PARTITIONS = 12


def kadmin(c: skiff.Cluster) -> KafkaAdminClient:
    # Running brokers only: kafka-python may fail a call outright on a
    # bootstrap address that refuses connections.
    return KafkaAdminClient(bootstrap_servers=[b.bootstrap for b in c.alive()],
                            request_timeout_ms=30000)


def retrying(c: skiff.Cluster, admin: KafkaAdminClient, call):
    """call(admin), asked again through a new client when it fails to
    connect: kafka-python keeps sending to the controller it learned, which
    may be a broker just stopped (a new one is elected within seconds), and
    a stopped broker stays listed in Metadata (Skiff does not fence brokers
    yet)."""
    for attempt in range(30):
        try:
            return call(admin)
        except KafkaConnectionError:
            if attempt == 29:
                raise
            time.sleep(0.5)
            admin = kadmin(c)


def reassign(c: skiff.Cluster, admin: KafkaAdminClient, topic: str, targets: dict) -> dict:
    res = retrying(c, admin, lambda a: a.alter_partition_reassignments(
        {KTopicPartition(topic, p): r for p, r in targets.items()}))
    return {tp.partition: err for tp, err in res.items()}


def wait_reassigned(c: skiff.Cluster, admin: KafkaAdminClient, timeout: float = 180.0):
    """Until no reassignment is listed. A client stuck on a stopped broker
    (kafka-python keeps the controller it learned, and a stopped broker
    stays listed in Metadata) is replaced by a new one."""
    clients = [admin]

    def done():
        try:
            return not clients[-1].list_partition_reassignments()
        except (KafkaConnectionError, NodeNotReadyError):
            clients.append(kadmin(c))
            return False
    skiff.wait_until(done, timeout, interval=0.5, what="every reassignment to complete")


def settled(c: skiff.Cluster, topic: str, ok, timeout: float = 15.0) -> dict:
    """Replicas once `ok(replicas)` holds. A broker's Metadata follows a
    completed reassignment a moment after ListPartitionReassignments stops
    listing it (the metadata is applied, then its topic table follows)."""
    seen = {}

    def check():
        seen["reps"] = replicas_of(c, topic)
        return ok(seen["reps"])
    try:
        skiff.wait_until(check, timeout, interval=0.1,
                         what=f"{topic}: Metadata to show the reassigned replicas")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {seen.get('reps')}") from None
    return seen["reps"]


def partitions_of(c: skiff.Cluster, topic: str) -> dict:
    """partition -> (leader, replicas, isr), from the metadata of a live
    broker; waits while that broker does not list the topic yet (a topic
    just created reaches each broker's topic table a moment later: until
    then it answers LEADER_NOT_AVAILABLE, with no partitions)."""
    def read():
        return c.metadata(c.alive()[0].node_id, [topic])["topics"].get(topic)
    return skiff.wait_until(read, 10, interval=0.1, what=f"a live broker to list {topic}")


def replicas_of(c: skiff.Cluster, topic: str) -> dict:
    """partition -> replicas, from the metadata of a live broker."""
    return {p: list(replicas) for p, (_leader, replicas, _isr) in partitions_of(c, topic).items()}


def leaders_of(c: skiff.Cluster, topic: str) -> dict:
    return {p: leader for p, (leader, _replicas, _isr) in partitions_of(c, topic).items()}


def elect_preferred(c: skiff.Cluster, topic: str, timeout: float = 60.0):
    """ElectLeaders PREFERRED for every partition not led by its first
    replica, until each is (a hand-over may find the replica not yet in
    sync right after a move: PREFERRED_LEADER_NOT_AVAILABLE, retried)."""
    admin = skiff.admin_client(c.bootstrap)

    def elected():
        reps = replicas_of(c, topic)
        off = [p for p, leader in leaders_of(c, topic).items() if leader != reps[p][0]]
        if not off:
            return True
        fut = admin.elect_leaders(ElectionType.PREFERRED,
                                  [TopicPartition(topic, p) for p in off])
        results = fut.result(timeout=60)
        for tp, err in results.items():
            assert err is None or err.code() in (
                KafkaError.ELECTION_NOT_NEEDED, KafkaError.PREFERRED_LEADER_NOT_AVAILABLE), (tp, err)
        return False
    skiff.wait_until(elected, timeout, interval=1.0, what=f"{topic}: preferred replicas to lead")


def holds_data(b: skiff.Broker, topic: str, partition: int) -> bool:
    return any(p.is_dir() for p in b.data_dir.rglob(f"{topic}-{partition}"))


def unregister(bootstrap: str, broker_id: int) -> int:
    """UnregisterBroker v0 (no client library sends it); the error code."""
    body = struct.pack(">i", broker_id) + b"\x00"  # broker id, no tagged fields
    reply = skiff.raw_call(bootstrap, api_key=64, version=0, body=body, flexible=True)
    return struct.unpack_from(">h", reply, 4)[0]  # after throttle_time_ms


class GroupReader:
    """A consumer group member reading the topic throughout (it must keep
    working while partitions move), counting what it sees."""

    def __init__(self, bootstrap: str, topic: str):
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"{topic}-readers",
            "auto.offset.reset": "earliest", "enable.auto.commit": True,
            "topic.metadata.refresh.interval.ms": 2000,
        })
        self.consumer.subscribe([topic])
        self.seen = 0
        self.errors = []
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_flag.is_set():
            for m in self.consumer.consume(num_messages=1000, timeout=0.5):
                if m.error():
                    self.errors.append(str(m.error()))
                else:
                    self.seen += 1

    def close(self):
        self.stop_flag.set()
        self.thread.join(30)
        self.consumer.close()


def spread(partitions: int, brokers: list[int], rf: int = 3) -> dict:
    """Replicas and preferred leaders even within one per broker: each
    partition takes the brokers holding the fewest replicas so far, led by
    the one among them leading the fewest."""
    replicas, leaders = Counter(), Counter()
    out = {}
    for p in range(partitions):
        chosen = sorted(brokers, key=lambda b: (replicas[b], leaders[b], b))[:rf]
        chosen.sort(key=lambda b: (leaders[b], b))
        for b in chosen:
            replicas[b] += 1
        leaders[chosen[0]] += 1
        out[p] = chosen
    return out


def within_one(counts: Counter, brokers: list[int]) -> bool:
    values = [counts.get(b, 0) for b in brokers]
    return max(values) - min(values) <= 1


def test_grow_3_to_5_then_drain_back_under_traffic_loses_nothing(tmp_path):
    # Leaders move only when asked (ElectLeaders), not on their own.
    c = skiff.Cluster(tmp_path, n=5, args=["--auto-leader-rebalance-enable", "false"])
    try:
        c.start_first(3)
        topic = "moving"
        create(c.bootstrap, topic, PARTITIONS, 3)
        work = Workload(c.bootstrap, topic, PARTITIONS).start()
        reader = GroupReader(c.bootstrap, topic)
        work.wait_progress(500)

        # Grow: two new brokers, then replicas spread over all five.
        for b in c.brokers[3:]:
            b.start()
        c.wait_converged()
        admin = kadmin(c)
        all5 = [1, 2, 3, 4, 5]
        errors = reassign(c, admin, topic, spread(PARTITIONS, all5))
        assert errors == {p: None for p in range(PARTITIONS)}, errors
        wait_reassigned(c, admin)
        reps = settled(c, topic, lambda r: r == spread(PARTITIONS, all5))
        counts = Counter(r for rs in reps.values() for r in rs)
        assert within_one(counts, all5), counts
        work.wait_progress(500)
        # ElectLeaders (PREFERRED) through confluent-kafka: each partition's
        # first replica leads, so leaders are as even as the replicas.
        elect_preferred(c, topic)
        leaders = Counter(leaders_of(c, topic).values())
        assert within_one(leaders, all5), leaders
        work.wait_progress(500)
        print(f"grown to 5: replicas per broker {dict(counts)}, leaders {dict(leaders)}")

        # A broker holding replicas cannot be unregistered.
        assert unregister(c[1].bootstrap, 5) != 0

        # Drain brokers 4 and 5: every replica back onto 1-3.
        errors = reassign(c, admin, topic, spread(PARTITIONS, [1, 2, 3]))
        assert errors == {p: None for p in range(PARTITIONS)}, errors
        wait_reassigned(c, admin)
        settled(c, topic, lambda reps: all(sorted(r) == [1, 2, 3] for r in reps.values()))
        work.wait_progress(500)

        # The drained brokers hold no data and can go.
        def drained():
            return not any(holds_data(c[n], topic, p) for n in (4, 5) for p in range(PARTITIONS))
        skiff.wait_until(drained, 30, interval=0.2, what="brokers 4 and 5 to delete their replicas")
        # The drain's progress as a metric: the replicas each broker holds.
        skiff.wait_until(lambda: all(c[n].metrics().total(r"skiff_partition_replicas") == 0
                                     for n in (4, 5)), 10, interval=0.3,
                         what="skiff_partition_replicas of brokers 4 and 5 to reach 0")
        held = sum(c[n].metrics().total(r"skiff_partition_replicas") for n in (1, 2, 3))
        # The consumer group's offsets topic, replicated on 1-3, counts too.
        offsets = sum(len(r) for _, r, _ in
                      c.metadata(1)["topics"].get("__consumer_offsets", {}).values())
        assert held == PARTITIONS * 3 + offsets, (held, offsets)
        for n in (4, 5):
            assert unregister(c[1].bootstrap, n) == 0
        for n in (4, 5):
            c[n].stop()
        skiff.wait_until(lambda: 4 not in c.metadata(1)["brokers"] and 5 not in c.metadata(1)["brokers"],
                         30, what="brokers 4 and 5 to leave the metadata")
        work.wait_progress(500)

        work.finish()
        reader.close()
        assert reader.seen > 0 and not reader.errors, reader.errors[:5]
        checked = work.check(read_all(c.bootstrap, topic, PARTITIONS))
        print(f"checked {checked} acknowledged messages through 3 -> 5 -> 3 brokers")
    finally:
        c.close()


def test_bad_reassignments_get_kafkas_errors_and_a_cancel_restores_the_replicas(tmp_path):
    c = skiff.Cluster(tmp_path, n=4)
    try:
        c.start()
        topic = "strict"
        create(c.bootstrap, topic, 2, 3)
        admin = kadmin(c)
        before = replicas_of(c, topic)
        assert reassign(c, admin, topic, {0: [1, 2, 9]})[0] is InvalidReplicationAssignmentError
        assert reassign(c, admin, topic, {0: [1, 1, 2]})[0] is InvalidReplicationAssignmentError
        assert reassign(c, admin, topic, {7: [1, 2, 3]})[7] is UnknownTopicOrPartitionError
        assert reassign(c, admin, topic, {0: None})[0] is NoReassignmentInProgressError

        # The broker without a replica is down: a move onto it cannot finish,
        # so it stays listed.
        (spare,) = {1, 2, 3, 4} - set(before[0])
        c.stop(spare)
        # kafka-python sends to the controller it knew: if that was the
        # spare, a new client learns the new one.
        def new_controller():
            seen = {skiff.raw_metadata(b.bootstrap)["controller"] for b in c.alive()}
            return len(seen) == 1 and not seen & {spare, -1}
        skiff.wait_until(new_controller, 30, interval=0.2,
                         what="every running broker to name a running controller")
        admin = kadmin(c)
        target = before[0][:2] + [spare]
        assert reassign(c, admin, topic, {0: target})[0] is None
        entry = retrying(c, admin, lambda a: a.list_partition_reassignments())[KTopicPartition(topic, 0)]
        assert entry["adding_replicas"] == [spare], entry
        assert entry["removing_replicas"] == [before[0][2]], entry
        assert entry["replicas"] == target + [before[0][2]], entry
        assert reassign(c, admin, topic, {0: before[0]})[0] is ReassignmentInProgressError

        # Cancel: back to the original replicas; the spare never joined.
        assert reassign(c, admin, topic, {0: None})[0] is None
        wait_reassigned(c, admin, timeout=60)
        settled(c, topic, lambda r: r[0] == before[0])
        # Still serving with the original replicas.
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
        p.produce(topic, b"after-cancel", partition=0)
        assert p.flush(30) == 0
    finally:
        c.close()


def set_cluster_throttle(bootstrap: str, rate: int | None):
    """Sets (or, with None, deletes) the cluster-wide dynamic
    `leader.replication.throttled.rate` as Kafka's `kafka-configs
    --entity-default` and the operator do: IncrementalAlterConfigs v0 on the
    BROKER resource "". Raw, because librdkafka and kafka-python both refuse
    a BROKER resource without a broker id."""
    def s16(v: str) -> bytes:
        return struct.pack(">h", len(v)) + v.encode()
    name = "leader.replication.throttled.rate"
    entry = s16(name) + (struct.pack(">b", 0) + s16(str(rate)) if rate is not None
                         else struct.pack(">bh", 1, -1))
    body = (struct.pack(">i", 1) + struct.pack(">b", 4) + s16("")
            + struct.pack(">i", 1) + entry + struct.pack(">b", 0))
    resp = skiff.raw_call(bootstrap, 44, 0, body, flexible=False, timeout=30)
    # throttle_time_ms, one response: error_code first.
    (n,) = struct.unpack_from(">i", resp, 4)
    (code,) = struct.unpack_from(">h", resp, 8)
    assert n == 1 and code == 0, (n, code, resp)


def set_broker_throttle(broker, rate: int):
    """The same for one broker (BROKER resource "<id>"), through librdkafka."""
    admin = skiff.admin_client(broker.bootstrap)
    res = ConfigResource(ResourceType.BROKER, str(broker.node_id), incremental_configs=[
        ConfigEntry("leader.replication.throttled.rate", str(rate),
                    incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], request_timeout=30)[res].result(timeout=30)


def throttle_seen_by(broker) -> tuple[str, int]:
    return skiff.broker_config(broker, "leader.replication.throttled.rate")


def test_the_catch_up_of_a_new_replica_keeps_to_the_throttle(tmp_path):
    """The throttle is a dynamic config, as in Kafka: set cluster-wide
    through one broker, it applies on every broker (the partition's leader
    may be any of them), and deleting it lifts it."""
    rate = 8_000_000  # bytes per second
    c = skiff.Cluster(tmp_path, n=4)
    try:
        c.start()
        topic = "heavy"
        create(c.bootstrap, topic, 1, 3)
        before = replicas_of(c, topic)[0]
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 20,
                      "batch.size": 1_000_000, "compression.type": "none"})
        value = bytes(100_000)
        total = 0
        while total < 80_000_000:
            try:
                p.produce(topic, value, partition=0)
                total += len(value)
            except BufferError:
                p.poll(0.1)
        assert p.flush(120) == 0
        # Cluster-wide through broker 1, then the partition's leader's own
        # value (which wins) through librdkafka: the leader sends the catch-up.
        set_cluster_throttle(c[1].bootstrap, 4 * rate)
        dynamic_default = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
        for b in c.brokers:
            skiff.wait_until(lambda: throttle_seen_by(b) == (str(4 * rate), dynamic_default), 30,
                             interval=0.2, what=f"broker {b.node_id} to apply the throttle")
        leader = c[leaders_of(c, topic)[0]]
        set_broker_throttle(leader, rate)
        assert throttle_seen_by(leader) == (str(rate), ConfigSource.DYNAMIC_BROKER_CONFIG.value)
        admin = kadmin(c)
        (spare,) = {1, 2, 3, 4} - set(before)
        target = before[:2] + [spare]
        started = time.monotonic()
        assert reassign(c, admin, topic, {0: target})[0] is None
        wait_reassigned(c, admin, timeout=120)
        took = time.monotonic() - started
        expected = total / rate
        print(f"moved {total / 1e6:.0f} MB in {took:.1f} s at a {rate / 1e6:.0f} MB/s throttle "
              f"(expected {expected:.1f} s)")
        assert 0.8 * expected <= took <= 1.2 * expected + 2.0, (took, expected)
        settled(c, topic, lambda r: sorted(r[0]) == sorted(target))

        # Deleted, the throttle is lifted: the same move back is fast.
        set_broker_throttle(leader, 2**63 - 1)
        set_cluster_throttle(c[2].bootstrap, None)
        for b in c.brokers:
            skiff.wait_until(lambda: throttle_seen_by(b)[0] == "9223372036854775807", 30,
                             interval=0.2, what=f"broker {b.node_id} to lift the throttle")
        started = time.monotonic()
        assert reassign(c, admin, topic, {0: before})[0] is None
        wait_reassigned(c, admin, timeout=120)
        back = time.monotonic() - started
        print(f"moved back unthrottled in {back:.1f} s")
        assert back < 0.5 * expected, (back, expected)
        settled(c, topic, lambda r: sorted(r[0]) == sorted(before))
    finally:
        c.close()


def test_leadership_follows_a_new_preferred_replica_on_its_own(tmp_path):
    c = skiff.Cluster(tmp_path, n=3, args=["--leader-imbalance-check-interval-seconds", "2"])
    try:
        c.start()
        topic = "rotate"
        create(c.bootstrap, topic, 6, 3)
        def preferred_lead():
            reps = replicas_of(c, topic)
            return len(reps) == 6 and all(leaders_of(c, topic)[p] == r[0] for p, r in reps.items())
        skiff.wait_until(preferred_lead, 60, interval=0.5, what="every preferred replica to lead")
        # Same replicas, another first one: only the preferred leader
        # changes, at once, and the leader hands over at the next check.
        rotated = {p: r[1:] + r[:1] for p, r in replicas_of(c, topic).items()}
        admin = kadmin(c)
        assert reassign(c, admin, topic, rotated) == {p: None for p in rotated}
        settled(c, topic, lambda r: r == rotated)
        work = Workload(c.bootstrap, topic, 6).start()
        want = {p: r[0] for p, r in rotated.items()}
        skiff.wait_until(lambda: leaders_of(c, topic) == want, 60, interval=0.5,
                         what="leadership to follow the new preferred replicas")
        work.wait_progress(300)
        work.finish()
        assert not work.failed, work.failed[:5]
        assert sum(len(v) for v in work.acked.values()) == work.sent
    finally:
        c.close()


def test_a_broker_dying_mid_reassignment_neither_stalls_nor_loses_anything(tmp_path):
    """The throttle keeps each move in its catch-up long enough to strike:
    1. SIGKILL the partition's leader (which drives the move): a new leader
       takes the move over and completes it;
    2. SIGKILL the replica being added: the partition keeps its quorum and
       its writes, the move stays listed, and a cancellation returns the
       partition to its replicas without the dead one's help; back up, it
       deletes the copy it had begun.
    An idempotent acks=all producer runs throughout: nothing acknowledged is
    lost or duplicated."""
    rate = 4_000_000
    c = skiff.Cluster(tmp_path, n=4, args=["--leader-replication-throttled-rate", str(rate),
                                           "--auto-leader-rebalance-enable", "false"])
    try:
        c.start()
        topic = "fragile"
        create(c.bootstrap, topic, 1, 3, {"min.insync.replicas": "2"})
        # About 6 s of catch-up at the throttle for each move.
        p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 20,
                      "batch.size": 1_000_000, "compression.type": "none"})
        for _ in range(240):
            while True:
                try:
                    p.produce(topic, bytes(100_000), key=b"-1", partition=0)
                    break
                except BufferError:
                    p.poll(0.1)
        assert p.flush(120) == 0
        work = Workload(c.bootstrap, topic, 1).start()
        work.wait_progress(200)
        admin = kadmin(c)

        def adding():
            entry = retrying(c, admin, lambda a: a.list_partition_reassignments()).get(KTopicPartition(topic, 0))
            return entry["adding_replicas"] if entry else []

        # 1. The leader dies while the new replica catches up.
        before = replicas_of(c, topic)[0]
        leader = leaders_of(c, topic)[0]
        (spare,) = {1, 2, 3, 4} - set(before)
        gone = next(r for r in before if r != leader)
        target = [spare if r == gone else r for r in before]
        assert reassign(c, admin, topic, {0: target})[0] is None
        skiff.wait_until(lambda: holds_data(c[spare], topic, 0), 30, interval=0.1,
                         what="the new replica to begin its catch-up")
        assert adding() == [spare], "the move ended before the fault"
        c.kill(leader)
        work.wait_progress(200)
        c.start_one(leader)
        wait_reassigned(c, admin, timeout=120)
        settled(c, topic, lambda r: sorted(r[0]) == sorted(target))
        skiff.wait_until(lambda: not holds_data(c[gone], topic, 0), 30, interval=0.2,
                         what=f"broker {gone} to delete the replica it no longer holds")
        work.wait_progress(200)

        # 2. The replica being added dies: writes go on, the move waits,
        # and a cancel undoes it without the dead broker.
        current = replicas_of(c, topic)[0]
        leader = leaders_of(c, topic)[0]
        out = next(r for r in current if r != leader)
        target = [gone if r == out else r for r in current]
        assert reassign(c, admin, topic, {0: target})[0] is None
        skiff.wait_until(lambda: holds_data(c[gone], topic, 0), 30, interval=0.1,
                         what="the new replica to begin its catch-up")
        c.kill(gone)
        work.wait_progress(300)
        assert adding() == [gone], "a move onto a dead broker completed"
        assert reassign(c, admin, topic, {0: None})[0] is None
        wait_reassigned(c, admin, timeout=60)
        settled(c, topic, lambda r: r[0] == current)
        c.start_one(gone)
        skiff.wait_until(lambda: not holds_data(c[gone], topic, 0), 30, interval=0.2,
                         what=f"broker {gone} to delete the copy it had begun")
        work.wait_progress(200)

        work.finish()
        got = read_all(c.bootstrap, topic, 1)
        got = {0: [(o, k) for o, k in got[0] if k >= 0]}  # without the preload
        checked = work.check(got)
        print(f"checked {checked} acknowledged messages through a leader and a new replica "
              f"killed mid-reassignment")
    finally:
        c.close()
