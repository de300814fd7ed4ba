"""Committed offsets in a cluster: `__consumer_offsets` is replicated.

Proves, with confluent-kafka (librdkafka) consumers: the first
FindCoordinator creates `__consumer_offsets` with replication factor 3;
a group's coordinator is the leader of the group's partition of it; a
commit survives the SIGKILL of that coordinator (the group resumes from it
on the new leader, nothing committed is read again), a restart of every
broker, and a new broker joining the cluster (which used to move groups to
another broker's offsets). A Stable group's metadata (generation, members,
assignments) is stored there too: when its coordinator is SIGKILLed, the
members carry on with the new coordinator under the same member ids and
assignments, with no rebalance.
"""

import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import NewTopic

import skiff

pytestmark = pytest.mark.serial

OFFSETS = "__consumer_offsets"


def produce(bootstrap: str, topic: str, n: int, start: int = 0):
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 5})
    failed = []
    for i in range(start, start + n):
        p.produce(topic, value=str(i).encode(), partition=i % 3,
                  on_delivery=lambda err, _m: err and failed.append(err))
    assert p.flush(60) == 0 and not failed, failed


def consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "auto.offset.reset": "earliest", "enable.auto.commit": False,
                     "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})


def take(c: Consumer, n: int, timeout: float = 90.0) -> list[int]:
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            continue
        got.append(int(m.value()))
    assert len(got) >= n, f"read {len(got)} of {n}"
    return got


def committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    c = consumer(bootstrap, group)
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def coordinator(bootstrap: str, group: str) -> int:
    admin = skiff.admin_client(bootstrap)

    def found():
        try:
            d = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        except KafkaException:
            return False
        return d.coordinator.id
    return skiff.wait_until(found, 60, interval=0.5, what=f"the coordinator of {group}")


def test_commits_survive_the_coordinators_kill_a_full_restart_and_a_new_broker(
        cluster_factory, topic_name):
    c = cluster_factory(4, start=False)
    c.start_first(3)
    admin = skiff.admin_client(c.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=3)],
                        operation_timeout=60)[topic_name].result(timeout=60)
    skiff.wait_until(lambda: len(c.metadata(1)["topics"].get(topic_name, {})) == 3, 60,
                     what="the topic")
    produce(c.bootstrap, topic_name, 600)

    group = f"{topic_name}-g"
    first = consumer(c.bootstrap, group)
    first.subscribe([topic_name])
    seen = take(first, 300)
    first.commit(asynchronous=False)
    positions = {tp.partition: tp.offset for tp in first.position(
        [TopicPartition(topic_name, p) for p in range(3)])}
    first.close()
    assert len(seen) == 300, positions
    assert committed(c.bootstrap, group, topic_name) == positions

    # The first FindCoordinator created the offsets topic, replicated.
    parts = c.metadata(1)["topics"][OFFSETS]
    assert len(parts) == 50 and all(sorted(r) == [1, 2, 3] for _, r, _ in parts.values()), parts

    # The coordinator leads the group's offsets partition; kill it.
    coord = coordinator(c.bootstrap, group)
    c.kill(coord)
    killed_at = time.monotonic()
    rest = consumer(c.bootstrap, group)
    rest.subscribe([topic_name])
    after = take(rest, 300)
    took = time.monotonic() - killed_at
    new_coord = coordinator(c.bootstrap, group)
    print(f"\ncoordinator {coord} SIGKILLed; group resumed on broker {new_coord} after {took:.1f} s")
    assert new_coord != coord
    # Resumed from the commit: nothing committed is read again, nothing
    # is skipped.
    assert set(after) == set(range(600)) - set(seen)
    rest.commit(asynchronous=False)
    rest.close()
    done = committed(c.bootstrap, group, topic_name)
    # Every partition now has a commit, none behind the first consumer's.
    assert all(done[p] >= max(positions[p], 0) and done[p] > 0 for p in range(3)), (done, positions)

    # Every broker killed and restarted: the commits come back from the
    # replicated log.
    c.start_one(coord)
    for b in c.alive():
        b.kill()
    for n in (1, 2, 3):
        c.start_one(n, wait_ready=False)
    for n in (1, 2, 3):
        c[n].wait_ready(60)
    c.wait_converged()
    assert committed(c.bootstrap, group, topic_name) == done

    # A fourth broker joins: the group's offsets stay where they are.
    c.start_one(4)
    c.wait_converged()
    assert committed(c[4].bootstrap, group, topic_name) == done


def describe(bootstrap: str, group: str):
    admin = skiff.admin_client(bootstrap)
    try:
        return admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=8)
    except KafkaException:
        return None


def test_a_stable_group_carries_on_through_its_coordinators_kill(cluster_factory, topic_name):
    c = cluster_factory(3)
    admin = skiff.admin_client(c.bootstrap)
    admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=3)],
                        operation_timeout=60)[topic_name].result(timeout=60)
    skiff.wait_until(lambda: len(c.metadata(1)["topics"].get(topic_name, {})) == 3, 60,
                     what="the topic")
    group = f"{topic_name}-g"
    events = []
    members = []
    for i in range(2):
        m = Consumer({"bootstrap.servers": c.bootstrap, "group.id": group,
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 30000, "heartbeat.interval.ms": 500,
                      "partition.assignment.strategy": "range"})
        m.subscribe([topic_name],
                    on_assign=lambda _c, ps, i=i: events.append((i, "assign", sorted(p.partition for p in ps))),
                    on_revoke=lambda _c, ps, i=i: events.append((i, "revoke", sorted(p.partition for p in ps))))
        members.append(m)

    def poll_all():
        for m in members:
            m.poll(0.1)

    def stable(bootstrap):
        poll_all()
        d = describe(bootstrap, group)
        ok = (d is not None and d.state == ConsumerGroupState.STABLE and len(d.members) == 2
              and all(m.assignment() for m in members))
        return d if ok else None

    try:
        d = skiff.wait_until(lambda: stable(c.bootstrap), 90, interval=0.1,
                             what="a Stable group of two")
        ids = sorted(m.member_id for m in d.members)
        assert ids == sorted(m.memberid() for m in members)
        assignment = {m.memberid(): sorted(tp.partition for tp in m.assignment()) for m in members}
        assert sorted(p for ps in assignment.values() for p in ps) == [0, 1, 2], assignment
        # The group's record is written as it turns Stable; give it a moment.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            poll_all()
        settled = list(events)

        coord = d.coordinator.id
        c.kill(coord)
        killed_at = time.monotonic()
        survivor = next(b for b in c.alive())

        def moved():
            d = stable(survivor.bootstrap)
            return d if d is not None and d.coordinator.id != coord else None
        d = skiff.wait_until(moved, 60, interval=0.1, what="the group on a new coordinator")
        took = time.monotonic() - killed_at
        # Several heartbeats on the new coordinator, then look again.
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            poll_all()
        d = describe(survivor.bootstrap, group)
        print(f"\ncoordinator {coord} SIGKILLed; the group answered from broker "
              f"{d.coordinator.id} after {took:.1f} s with members {ids}")
        assert d.state == ConsumerGroupState.STABLE, d.state
        assert sorted(m.member_id for m in d.members) == ids
        assert events == settled, f"a rebalance after the coordinator moved: {events[len(settled):]}"
        assert {m.memberid(): sorted(tp.partition for tp in m.assignment()) for m in members} == assignment

        # And the members still consume what is written.
        produce(survivor.bootstrap, topic_name, 30)
        got = []
        end = time.monotonic() + 60
        while len(got) < 30 and time.monotonic() < end:
            for m in members:
                msg = m.poll(0.1)
                if msg is not None and not msg.error():
                    got.append(int(msg.value()))
        assert sorted(got) == list(range(30))
    finally:
        for m in members:
            m.close()
