"""`skiff-operator rebalance`: the balancer's plan of a live cluster, printed
with `--dry-run` and carried out without it.

Proves: the command reads a real 3-broker cluster through the Kafka protocol
(topics created by confluent-kafka while broker 3 was not yet a member, so
the new broker holds nothing) and prints a plan in Kafka's reassignment JSON
that keeps every replication factor, never puts two replicas on one broker
and evens out replicas and preferred leaders per broker; `--drain 3` plans
broker 3 empty; the table names the moves and that single-replica
partitions are left out, with no note of unknown sizes (every broker answers
DescribeLogDirs); a dry run changes nothing. Executed, the plan
fills broker 3 (the brokers' Metadata shows the balanced replicas) and a
drain then empties it, data directories included, while every record
written before stays readable.
"""

import json
import subprocess
from collections import Counter

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import ConfigSource, NewTopic

import skiff
from test_replication import read_all

TOPICS = {"orders": (12, 2), "events": (6, 1), "audit": (4, 2)}
# Replicated topics move; single-replica ones (and __consumer_offsets) stay.
MOVABLE = {t for t, (_, rf) in TOPICS.items() if rf >= 2}


def rebalance(bootstrap: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([skiff.operator_bin(), "rebalance", "--bootstrap-server", bootstrap, *args],
                          capture_output=True, text=True, timeout=120)


def assignment(cluster, node_id: int, only=None) -> dict:
    """{(topic, partition): replicas} as broker `node_id` sees them: every
    topic, or those in `only`. (Each broker lists its own, unreplicated
    `__consumer_offsets` too; the plan covers it as it covers any topic.)"""
    topics = cluster.metadata(node_id)["topics"]
    return {(t, p): list(replicas)
            for t, parts in topics.items() if only is None or t in only
            for p, (_, replicas, _) in parts.items()}


def applied(current: dict, plan: dict) -> dict:
    after = dict(current)
    for e in plan["partitions"]:
        key = (e["topic"], e["partition"])
        assert key in current, f"plan names unknown partition {key}"
        after[key] = e["replicas"]
    return after


def per_broker(assign: dict) -> tuple[Counter, Counter]:
    replicas, leaders = Counter(), Counter()
    for r in assign.values():
        replicas.update(r)
        leaders[r[0]] += 1
    return replicas, leaders


def within_one_of_even(counts: Counter, brokers: list[int]) -> bool:
    avg = sum(counts[b] for b in brokers) / len(brokers)
    return all(abs(counts[b] - avg) <= 1 for b in brokers)


@pytest.fixture
def grown_cluster(cluster_factory):
    """Brokers 1 and 2 hold TOPICS; broker 3 joins afterwards, empty."""
    c = cluster_factory(3, start=False)
    for n in (1, 2):
        c[n].start(wait_ready=False)
    for n in (1, 2):
        c[n].wait_ready(60)

    def two_members():
        return all(sorted(c.metadata(n)["brokers"]) == [1, 2] and c.metadata(n)["controller"] > 0
                   for n in (1, 2))
    skiff.wait_until(two_members, 60, interval=0.2, what="brokers 1 and 2 to form the cluster")

    admin = skiff.admin_client(c[1].bootstrap)
    pending = dict(TOPICS)

    def created():
        # The controller may not have applied broker 2's registration yet
        # (INVALID_REPLICATION_FACTOR): retry what failed.
        futs = admin.create_topics([NewTopic(t, num_partitions=n, replication_factor=rf)
                                    for t, (n, rf) in pending.items()],
                                   request_timeout=60, operation_timeout=60)
        for t, f in futs.items():
            try:
                f.result(timeout=60)
                del pending[t]
            except KafkaException as e:
                code = e.args[0].code()
                if code == KafkaError.TOPIC_ALREADY_EXISTS:
                    del pending[t]
                elif code != KafkaError.INVALID_REPLICATION_FACTOR:
                    raise
        return not pending
    skiff.wait_until(created, 60, interval=0.5, what=f"topics {sorted(TOPICS)} created")
    c[3].start(wait_ready=True)
    c.wait_converged(60)

    want = sum(n for n, _ in TOPICS.values())

    def agreed():
        seen = [assignment(c, n, TOPICS) for n in (1, 2, 3)]
        return len(seen[0]) == want and all(s == seen[0] for s in seen)
    skiff.wait_until(agreed, 60, interval=0.2, what="all brokers to agree on the topics")
    # The CLI reads broker 1's Metadata; so does the test.
    before = assignment(c, 1, MOVABLE)
    replicas, _ = per_broker(before)
    assert replicas[3] == 0, before
    return c, before


def test_plan_fills_the_new_broker_and_a_drain_empties_it(grown_cluster):
    c, before = grown_cluster

    out = rebalance(c[1].bootstrap, "--dry-run", "--json")
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["version"] == 1 and plan["partitions"], plan
    after = applied(before, plan)
    for key, r in after.items():
        assert len(r) == len(before[key]), f"{key}: RF changed {before[key]} -> {r}"
        assert len(set(r)) == len(r), f"{key}: duplicate broker in {r}"
        assert set(r) <= {1, 2, 3}, f"{key}: unknown broker in {r}"
    replicas, leaders = per_broker(after)
    assert replicas[3] > 0, after
    assert within_one_of_even(replicas, [1, 2, 3]), replicas
    assert within_one_of_even(leaders, [1, 2, 3]), leaders
    # The human summary went to stderr, stdout is only the JSON.
    assert "Balanced after:  replicas yes, leaders yes" in out.stderr, out.stderr

    drain = rebalance(c[1].bootstrap, "--dry-run", "--json", "--drain", "3")
    assert drain.returncode == 0, drain.stderr
    plan = json.loads(drain.stdout)
    after = applied(before, plan)
    for key, r in after.items():
        assert len(r) == len(before[key]) and len(set(r)) == len(r), (key, r)
        assert 3 not in r, f"{key}: drained broker 3 still holds a replica: {r}"
    replicas, leaders = per_broker(after)
    assert within_one_of_even(replicas, [1, 2]), replicas
    assert within_one_of_even(leaders, [1, 2]), leaders

    # The plan was only printed: the cluster's assignment is unchanged.
    assert assignment(c, 1, MOVABLE) == before


def test_table_and_bad_drain(grown_cluster):
    c, before = grown_cluster

    table = rebalance(c[1].bootstrap, "--dry-run")
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert f"Rebalance plan for 3 brokers, {len(before)} partitions" in text, text
    # Every broker answered DescribeLogDirs: no note that sizes are unknown.
    assert "DescribeLogDirs" not in text and "sizes are unknown" not in text, text
    assert "6 partitions cannot move" in text, text
    assert "TOPIC" in text and "move " in text, text
    assert "BROKER" in text and "draining" not in text, text
    assert "Dry run: nothing was changed" in table.stderr, table.stderr

    bad = rebalance(c[1].bootstrap, "--dry-run", "--drain", "9")
    assert bad.returncode != 0
    assert "broker 9 is not a member of the cluster" in bad.stderr, bad.stderr

    assert assignment(c, 1, MOVABLE) == before


def test_executing_fills_the_new_broker_then_a_drain_empties_it(grown_cluster):
    c, before = grown_cluster
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all"})
    # Sizes come from DescribeLogDirs: records big enough that the bytes the
    # plan balances are the data, not the few hundred bytes of Raft entries
    # (membership changes) every move adds to a replica's log.
    for i in range(200):
        p.produce("orders", f"m{i}".encode().ljust(10_000, b"."), key=str(i).encode(),
                  partition=i % 12)
    assert p.flush(60) == 0

    run = rebalance(c[1].bootstrap, "--batch-size", "5", "--batch-timeout-seconds", "120")
    assert run.returncode == 0, run.stderr
    assert "Done: every move of the plan is complete." in run.stderr, run.stderr
    after = assignment(c, 1, MOVABLE)
    replicas, leaders = per_broker(after)
    assert replicas[3] > 0, after
    assert within_one_of_even(replicas, [1, 2, 3]), replicas
    assert within_one_of_even(leaders, [1, 2, 3]), leaders
    again = rebalance(c[1].bootstrap, "--dry-run")
    assert "No moves" in again.stdout, again.stdout

    # The drain throttled, as kafka-reassign-partitions --throttle does:
    # the cluster-wide dynamic leader.replication.throttled.rate is set
    # while the moves run, and removed after.
    rate = "300000"
    name = "leader.replication.throttled.rate"
    cluster_wide = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
    proc = subprocess.Popen([skiff.operator_bin(), "rebalance", "--bootstrap-server", c[1].bootstrap,
                             "--drain", "3", "--throttle", rate],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = set()
    while proc.poll() is None:
        try:
            seen.add(skiff.broker_config(c[2], name))
        except KafkaException:
            pass
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert (rate, cluster_wide) in seen, (seen, err)
    # The removal is committed when the command ends; each broker applies
    # the metadata log on its own, a moment later.
    for n in (1, 2, 3):
        def removed(n=n):
            value, source = skiff.broker_config(c[n], name)
            return source != cluster_wide and value == "9223372036854775807"
        skiff.wait_until(removed, 10, interval=0.1,
                         what=f"broker {n} to drop the cluster-wide throttle")
    after = assignment(c, 1, MOVABLE)
    assert all(3 not in r for r in after.values()), after

    def emptied():
        return not any(d.is_dir() for t in MOVABLE for d in c[3].data_dir.rglob(f"{t}-*"))
    skiff.wait_until(emptied, 30, interval=0.2, what="broker 3 to delete its moved replicas")
    got = read_all(c.bootstrap, "orders", 12)
    assert sorted(k for msgs in got.values() for _, k in msgs) == list(range(200))
