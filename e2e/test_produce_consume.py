"""Produce/consume round trips with confluent-kafka (librdkafka).

Proves: every codec librdkafka offers is accepted and served back intact;
offsets are dense from 0 per partition and match the delivery reports;
per-partition order, keys, headers (incl. duplicate keys, empty and null
values) and CreateTime timestamps survive exactly; batches pass the client's
CRC check; a fetch that starts inside a batch returns that exact offset.
"""

import os
import random
import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING, TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition,
)

import skiff

N = int(os.environ.get("SKIFF_E2E_MESSAGES", "100000"))
PARTITIONS = 6
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
FILLER = "".join(chr(ord("a") + (i * 7) % 26) for i in range(200))


def expected_message(codec: str, i: int, base_ts: int):
    key = f"key-{i % 997}".encode()
    value = f"{codec}:{i:09d}:{FILLER}".encode()[:100]
    headers = [("seq", str(i).encode()), ("codec", codec.encode()), ("empty", b""),
               ("dup", b"first"), ("dup", b"second")]
    if i % 10 == 0:
        headers.append(("null", None))
    return key, value, headers, base_ts + i


def produce_all(bootstrap, topic, codec, n, base_ts):
    p = Producer({
        "bootstrap.servers": bootstrap,
        "compression.type": codec,
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "batch.num.messages": 100_000,
        "acks": "all",
        "queue.buffering.max.messages": 2 * n + 10,
        "queue.buffering.max.kbytes": 2_000_000,
        "message.timeout.ms": 120_000,
    })
    reports = [None] * n

    def on_delivery(err, msg, i):
        reports[i] = (err, msg.partition(), msg.offset(), msg.timestamp())

    for i in range(n):
        key, value, headers, ts = expected_message(codec, i, base_ts)
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers, timestamp=ts,
                          on_delivery=lambda err, msg, i=i: on_delivery(err, msg, i))
                break
            except BufferError:
                p.poll(0.1)
        if i % 1000 == 0:
            p.poll(0)
    remaining = p.flush(180)
    assert remaining == 0, f"{remaining} messages still undelivered after 180 s"
    missing = [i for i, r in enumerate(reports) if r is None]
    assert not missing, f"{len(missing)} delivery reports never arrived (first {missing[:5]})"
    errors = [(i, r[0]) for i, r in enumerate(reports) if r[0] is not None]
    assert not errors, f"{len(errors)} delivery errors, first: {errors[:5]}"
    return reports


@pytest.fixture(scope="module", params=CODECS)
def produced(request, shared_broker):
    """One topic per codec with N messages; returns (codec, topic, reports, base_ts)."""
    codec = request.param
    topic = f"roundtrip-{codec}-{int(time.time() * 1000) % 10**9}"
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic, PARTITIONS)
    base_ts = int(time.time() * 1000) - 86_400_000  # a day ago: inside every sane window
    t0 = time.monotonic()
    reports = produce_all(shared_broker.bootstrap, topic, codec, N, base_ts)
    print(f"[{codec}] produced {N} messages in {time.monotonic() - t0:.1f}s")
    return codec, topic, reports, base_ts


def by_partition(reports):
    parts = {}
    for i, (_, p, off, _) in enumerate(reports):
        parts.setdefault(p, []).append((off, i))
    for v in parts.values():
        v.sort()
    return parts


def new_consumer(bootstrap, **extra):
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "skiff-e2e-dummy",
        "enable.auto.commit": False,
        "auto.offset.reset": "error",
        "check.crcs": True,
        "fetch.max.bytes": 52428800,
    }
    conf.update(extra)
    return Consumer(conf)


def test_delivery_reports_dense_offsets_in_send_order(produced):
    codec, topic, reports, base_ts = produced
    parts = by_partition(reports)
    assert set(parts) <= set(range(PARTITIONS)), f"reports name unknown partitions {sorted(parts)}"
    assert len(parts) == PARTITIONS, f"keyed messages landed on only {sorted(parts)} of 6 partitions"
    for p, items in parts.items():
        offsets = [o for o, _ in items]
        assert offsets == list(range(len(items))), (
            f"partition {p}: acknowledged offsets are not 0..{len(items) - 1} "
            f"(first mismatch at index {next(k for k, o in enumerate(offsets) if o != k)})")
        seqs = [i for _, i in items]
        assert seqs == sorted(seqs), f"partition {p}: offsets do not follow send order"
    for i, (_, _, _, ts) in enumerate(reports[:1000]):
        assert ts == (TIMESTAMP_CREATE_TIME, base_ts + i), (
            f"delivery report {i} timestamp {ts}; a CreateTime topic must answer "
            f"log_append_time=-1 so the client keeps its CreateTime")


def test_consume_everything_back_exactly(produced, shared_broker):
    codec, topic, reports, base_ts = produced
    parts = by_partition(reports)
    c = new_consumer(shared_broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got = skiff.consume_all(c, {p: len(parts.get(p, [])) for p in range(PARTITIONS)},
                                timeout=240)
        for p in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
            assert (low, high) == (0, len(parts.get(p, []))), f"partition {p} watermarks"
    finally:
        c.close()

    seen_keys = {}
    for p, msgs in got.items():
        want = parts.get(p, [])
        assert [m.offset() for m in msgs] == [o for o, _ in want], (
            f"partition {p}: consumed offsets differ from acknowledged ones")
        for m, (off, i) in zip(msgs, want):
            key, value, headers, ts = expected_message(codec, i, base_ts)
            assert m.topic() == topic
            assert m.key() == key, f"p{p}@{off}: key {m.key()!r} != {key!r}"
            assert m.value() == value, f"p{p}@{off}: value {m.value()[:40]!r} != {value[:40]!r}"
            assert m.headers() == headers, f"p{p}@{off}: headers {m.headers()!r} != {headers!r}"
            assert m.timestamp() == (TIMESTAMP_CREATE_TIME, ts), (
                f"p{p}@{off}: timestamp {m.timestamp()} != CreateTime {ts}")
            seen_keys.setdefault(key, set()).add(p)
    split = {k: v for k, v in seen_keys.items() if len(v) > 1}
    assert not split, f"same key on several partitions: {list(split.items())[:3]}"


def test_fetch_starting_inside_a_batch(produced, shared_broker):
    """A fetch offset in the middle of a (compressed) batch must yield exactly
    that offset first, not the next batch."""
    codec, topic, reports, base_ts = produced
    parts = by_partition(reports)
    rng = random.Random(42)
    # The first fetch reads these small partitions to their end, so the next
    # one waits fetch.wait.max.ms at the broker, and each new assign waits for
    # that fetch to come back: half a second per offset by default.
    c = new_consumer(shared_broker.bootstrap, **{"fetch.wait.max.ms": 20})
    try:
        for p in range(PARTITIONS):
            want = parts[p]
            for off in sorted({1, len(want) // 2 + 3, len(want) - 2, rng.randrange(1, len(want) - 1)}):
                c.assign([TopicPartition(topic, p, off)])
                deadline = time.monotonic() + 60
                msg = None
                while msg is None and time.monotonic() < deadline:
                    msg = c.poll(1.0)
                assert msg is not None, f"nothing fetched from {topic}[{p}]@{off}"
                assert msg.error() is None, f"fetch {topic}[{p}]@{off}: {msg.error()}"
                assert msg.offset() == off, f"fetch at {off} in p{p} returned offset {msg.offset()} first"
                i = want[off][1]
                assert msg.value() == expected_message(codec, i, base_ts)[1]
                c.unassign()
    finally:
        c.close()


@pytest.mark.parametrize("acks", ["0", "1"])
def test_acks_zero_and_one(shared_broker, topic_name, acks):
    """acks=0 (no response expected) and acks=1 produce both land every message."""
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "acks": acks, "linger.ms": 5})
    errs = []
    n = 2000
    for i in range(n):
        p.produce(topic_name, value=f"m{i}".encode(),
                  on_delivery=lambda e, m: errs.append(e) if e else None)
        if i % 500 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not errs, errs[:3]
    msgs, low, high = skiff.read_partition_to_end(shared_broker.bootstrap, topic_name, 0)
    assert (low, high) == (0, n)
    assert [m.value() for m in msgs] == [f"m{i}".encode() for i in range(n)]


def test_empty_and_null_key_value(shared_broker, topic_name):
    admin = skiff.admin_client(shared_broker)
    skiff.create_topic(admin, topic_name, 1)
    p = Producer({"bootstrap.servers": shared_broker.bootstrap, "linger.ms": 0})
    cases = [(None, None), (b"", b""), (b"k", None), (None, b"v"), (b"\x00\xff", b"\x00" * 3)]
    errs = []
    for k, v in cases:
        p.produce(topic_name, key=k, value=v, on_delivery=lambda e, m: errs.append(e) if e else None)
    assert p.flush(60) == 0 and not errs, errs
    msgs, _, high = skiff.read_partition_to_end(shared_broker.bootstrap, topic_name, 0)
    assert high == len(cases)
    assert [(m.key(), m.value()) for m in msgs] == cases
