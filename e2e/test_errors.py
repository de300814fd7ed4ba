"""Error paths real clients depend on, and ListOffsets.

Proves: unknown topics are reported (not auto-created) when auto creation is
off; Metadata auto-creates with --num-partitions when it is on and the client
allows it, and does not when the client says no; max.message.bytes is
enforced per topic; an out-of-range fetch offset is reported; ListOffsets
earliest/latest/by-timestamp are exact, including inside a batch.
"""

import time

import pytest
from confluent_kafka import (
    OFFSET_END, Consumer, KafkaError, Producer, TopicPartition,
)

import skiff


def deliver(bootstrap, topic, messages, **conf):
    """Produce [(value, kwargs)], one batch each; return delivery errors (None = ok)."""
    c = {"bootstrap.servers": bootstrap, "linger.ms": 0, "message.timeout.ms": 30000}
    c.update(conf)
    p = Producer(c)
    results = []
    for value, kw in messages:
        p.produce(topic, value=value, on_delivery=lambda e, m: results.append((e, m)), **kw)
        p.flush(60)
    assert p.flush(60) == 0
    return results


# ------------------------------------------------------------- unknown topics
def test_unknown_topic_auto_create_disabled(broker_factory):
    b = broker_factory(args=["--auto-create-topics-enable", "false"])
    topic = "no-such-topic"
    admin = skiff.admin_client(b)
    md = admin.list_topics(topic=topic, timeout=30)
    assert md.topics[topic].error is not None
    assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, md.topics[topic].error

    res = deliver(b.bootstrap, topic, [(b"x", {})],
                  **{"topic.metadata.propagation.max.ms": 1000, "message.timeout.ms": 15000})
    assert len(res) == 1
    err = res[0][0]
    assert err is not None, "produce to an unknown topic must fail when auto create is off"
    assert err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC), err
    # and it was not created as a side effect
    md = admin.list_topics(timeout=30)
    assert topic not in md.topics


def test_metadata_auto_creates_with_num_partitions(broker_factory):
    b = broker_factory(args=["--auto-create-topics-enable", "true", "--num-partitions", "3"])
    topic = "auto-created"
    res = deliver(b.bootstrap, topic, [(b"hello", {})], **{"allow.auto.create.topics": True})
    assert res[0][0] is None, f"produce to auto-created topic failed: {res[0][0]}"
    admin = skiff.admin_client(b)
    skiff.wait_topic(admin, topic, 3)
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic, res[0][1].partition())
    assert [m.value() for m in msgs] == [b"hello"]


def test_metadata_without_allow_auto_create_does_not_create(broker_factory):
    b = broker_factory(args=["--auto-create-topics-enable", "true", "--num-partitions", "3"])
    topic = "not-auto-created"
    # a consumer's Metadata request carries allow_auto_topic_creation=false
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g",
                  "allow.auto.create.topics": False})
    try:
        md = c.list_topics(topic=topic, timeout=30)
        assert md.topics[topic].error is not None
        assert md.topics[topic].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    finally:
        c.close()
    time.sleep(1)
    assert topic not in skiff.admin_client(b).list_topics(timeout=30).topics


# ---------------------------------------------------------------- size limits
def test_message_larger_than_topic_max_message_bytes(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1, {"max.message.bytes": "10000"})
    res = deliver(shared_broker.bootstrap, topic_name,
                  [(b"s" * 5000, {}), (b"L" * 20000, {}), (b"t" * 5000, {})])
    errs = [e for e, _ in res]
    assert errs[0] is None, f"5000-byte message under the 10000 limit failed: {errs[0]}"
    assert errs[1] is not None, "20000-byte message over max.message.bytes=10000 was accepted"
    assert errs[1].code() == KafkaError.MSG_SIZE_TOO_LARGE, errs[1]
    assert errs[2] is None, errs[2]
    msgs, _, high = skiff.read_partition_to_end(shared_broker.bootstrap, topic_name, 0)
    assert high == 2 and [len(m.value()) for m in msgs] == [5000, 5000]


def test_acks_all_below_min_insync_replicas(shared_broker, topic_name):
    # Partition data lives on its leader alone (no partition replication yet),
    # so acks=all on a topic asking for two in-sync copies must be refused,
    # never acknowledged with one; acks=1 is still accepted.
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1, {"min.insync.replicas": "2"})
    [(err, _)] = deliver(shared_broker.bootstrap, topic_name, [(b"x", {})],
                         acks="all", retries=0, **{"message.timeout.ms": 10000})
    assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, err
    [(err, _)] = deliver(shared_broker.bootstrap, topic_name, [(b"y", {})], acks=1)
    assert err is None, err
    msgs, _, high = skiff.read_partition_to_end(shared_broker.bootstrap, topic_name, 0)
    assert [m.value() for m in msgs] == [b"y"]


def test_broker_message_max_bytes_flag(broker_factory, topic_name):
    b = broker_factory(args=["--message-max-bytes", "20000"])
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    res = deliver(b.bootstrap, topic_name, [(b"a" * 10000, {}), (b"b" * 40000, {})])
    assert res[0][0] is None, res[0][0]
    assert res[1][0] is not None and res[1][0].code() == KafkaError.MSG_SIZE_TOO_LARGE, res[1][0]


# ------------------------------------------------------------ offset handling
def _fill(bootstrap, topic, n, base_ts, per_batch=1):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 1000 if per_batch > 1 else 0,
                  "batch.num.messages": per_batch})
    errs = []
    for i in range(n):
        p.produce(topic, value=b"m%04d" % i, partition=0, timestamp=base_ts + i * 1000,
                  on_delivery=lambda e, m: errs.append(e) if e else None)
        if (i + 1) % per_batch == 0:
            p.flush(60)
    assert p.flush(60) == 0 and not errs, errs


def test_fetch_out_of_range_with_reset_error(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    _fill(shared_broker.bootstrap, topic_name, 10, int(time.time() * 1000) - 60_000)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False, "auto.offset.reset": "error"})
    try:
        c.assign([TopicPartition(topic_name, 0, 1000)])
        deadline = time.monotonic() + 60
        err = None
        while err is None and time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            assert m.error() is not None, f"got a message at {m.offset()} from offset 1000 of 10"
            err = m.error()
        assert err is not None, "no error reported for fetch offset 1000 > high watermark 10"
        assert err.code() in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE), err
    finally:
        c.close()


def test_fetch_out_of_range_resets_to_earliest(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    _fill(shared_broker.bootstrap, topic_name, 10, int(time.time() * 1000) - 60_000)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        c.assign([TopicPartition(topic_name, 0, 1000)])
        got = skiff.consume_all(c, {0: 10}, timeout=60)
        assert [m.offset() for m in got[0]] == list(range(10))
    finally:
        c.close()


@pytest.mark.parametrize("per_batch", [1, 10], ids=["batch-per-message", "one-batch"])
def test_list_offsets(shared_broker, topic_name, per_batch):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False})
    try:
        tp = TopicPartition(topic_name, 0)
        assert c.get_watermark_offsets(tp, timeout=30, cached=False) == (0, 0)
        # an empty partition has no offset for any timestamp
        r = c.offsets_for_times([TopicPartition(topic_name, 0, 0)], timeout=30)
        assert r[0].error is None and r[0].offset == OFFSET_END, r

        base = int(time.time() * 1000) - 3_600_000
        _fill(shared_broker.bootstrap, topic_name, 10, base, per_batch=per_batch)
        assert c.get_watermark_offsets(tp, timeout=30, cached=False) == (0, 10)
        cases = [(base - 10_000, 0), (base, 0), (base + 1, 1), (base + 2500, 3),
                 (base + 3000, 3), (base + 9000, 9), (base + 9001, OFFSET_END)]
        for ts, want in cases:
            r = c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=30)[0]
            assert r.error is None, r.error
            assert r.offset == want, f"offsets_for_times({ts - base:+d} ms from first) = {r.offset}, want {want}"
    finally:
        c.close()


def test_list_offsets_unknown_partition(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "g"})
    try:
        from confluent_kafka import KafkaException
        with pytest.raises(KafkaException) as ei:
            c.get_watermark_offsets(TopicPartition(topic_name, 5), timeout=15, cached=False)
        assert ei.value.args[0].code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_PARTITION), ei.value.args[0]
    finally:
        c.close()


def test_consumer_from_end_sees_only_new(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    _fill(shared_broker.bootstrap, topic_name, 5, int(time.time() * 1000) - 60_000)
    c = Consumer({"bootstrap.servers": shared_broker.bootstrap, "group.id": "g",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        c.assign([TopicPartition(topic_name, 0, OFFSET_END)])
        # END resolves through ListOffsets(latest); EOF at 5 means it resolved
        deadline = time.monotonic() + 60
        eof = None
        while eof is None and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is not None, f"consumer at END got old message {m.offset()}"
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            eof = m.offset()
        assert eof == 5, f"END resolved to {eof}, want 5"
        deliver(shared_broker.bootstrap, topic_name, [(b"new", {"partition": 0})])
        deadline = time.monotonic() + 60
        m = None
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                break
        assert m is not None and m.error() is None, "new message never arrived"
        assert (m.offset(), m.value()) == (5, b"new")
    finally:
        c.close()
