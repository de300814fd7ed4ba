"""Retention by size and by time, with small segments.

Proves: segments roll at segment.bytes; the retention checker deletes whole
old segments (never the active one) once retention.bytes / retention.ms are
exceeded; the log start offset (ListOffsets earliest) moves to the first
remaining segment's base offset; consumers starting at the beginning (or at a
now-deleted offset with auto.offset.reset=earliest) start there; segment
files are deleted from disk; recent data under retention.ms is kept.
"""

import time

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition,
)
from confluent_kafka.admin import NewTopic

import skiff

CANDIDATE_SEGMENT_BYTES = [1024, 16384, 65536, 1048576]


@pytest.fixture(scope="module")
def rb(tmp_path_factory):
    b = skiff.Broker(tmp_path_factory.mktemp("retention"), name="retention",
                     args=["--log-retention-check-interval-ms", "500"])
    b.start()
    yield b
    b.close()


def create_small_segment_topic(admin, name, extra_config):
    """Create `name` with the smallest segment.bytes the broker accepts.
    Returns segment.bytes."""
    rejected = []
    for seg in CANDIDATE_SEGMENT_BYTES:
        cfg = {"segment.bytes": str(seg)}
        cfg.update({k: (v(seg) if callable(v) else v) for k, v in extra_config.items()})
        fut = admin.create_topics([NewTopic(name, 1, 1, config=cfg)], request_timeout=60)[name]
        try:
            fut.result(timeout=60)
        except KafkaException as e:
            err = e.args[0]
            assert err.code() == KafkaError.INVALID_CONFIG, f"segment.bytes={seg}: unexpected {err}"
            rejected.append(f"{seg}: {err.str()}")
            continue
        skiff.wait_topic(admin, name, 1)
        print(f"segment.bytes={seg} accepted; rejected: {rejected}")
        return seg
    pytest.fail(f"no small segment.bytes accepted: {rejected}")


def produce_segments(bootstrap, topic, seg, n_segments, timestamp=None, start=0):
    """~n_segments segments' worth of messages, several batches per segment."""
    value_size = max(50, seg // 20)
    per_segment = max(1, seg // (value_size + 70))
    n = per_segment * n_segments + 1
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2, "acks": "all",
                  "batch.size": max(200, seg // 4), "message.max.bytes": max(seg * 2, 10000)})
    errs = []
    for i in range(start, start + n):
        kw = {"timestamp": timestamp} if timestamp is not None else {}
        p.produce(topic, value=(b"%08d" % i).ljust(value_size, b"r"), partition=0,
                  on_delivery=lambda e, m: errs.append(e) if e else None, **kw)
        if i % 5 == 4:
            p.poll(0)
    assert p.flush(60) == 0 and not errs, errs[:3]
    return n


def watermarks(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm"})
    try:
        return c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30, cached=False)
    finally:
        c.close()


def first_offset_from(bootstrap, topic, offset, reset="earliest"):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "first", "enable.auto.commit": False,
                  "auto.offset.reset": reset})
    try:
        c.assign([TopicPartition(topic, 0, offset)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = c.poll(1.0)
            if m is None:
                continue
            return m
        raise AssertionError(f"nothing consumed from {topic}@{offset}")
    finally:
        c.close()


def test_retention_bytes(rb, topic_name):
    admin = skiff.admin_client(rb)
    seg = create_small_segment_topic(admin, topic_name, {"retention.bytes": lambda s: str(3 * s)})
    n = produce_segments(rb.bootstrap, topic_name, seg, 15)
    files_after_produce = rb.segment_files(topic_name, 0)

    def settled():
        low, high = watermarks(rb.bootstrap, topic_name)
        files = rb.segment_files(topic_name, 0)
        bases = [skiff.segment_base(f) for f in files]
        size = sum(f.stat().st_size for f in files)
        ok = low > 0 and size <= 4 * seg + 1024 and bases and bases[0] == low and high == n
        return (low, high, bases, size) if ok else None

    try:
        low, high, bases, size = skiff.wait_until(settled, 30, interval=0.25,
                                                  what="size retention to settle")
    except AssertionError:
        files = rb.segment_files(topic_name, 0)
        raise AssertionError(
            f"after 30 s: watermarks {watermarks(rb.bootstrap, topic_name)}, n={n}, "
            f"segment.bytes={seg}, retention.bytes={3 * seg}, files "
            f"{[(f.name, f.stat().st_size) for f in files]}; right after producing there were "
            f"{len(files_after_produce)} segment files")
    assert len(files_after_produce) >= 5, (
        f"segments did not roll at segment.bytes={seg}: {len(files_after_produce)} files for ~15 segments of data")
    assert not (rb.partition_dir(topic_name, 0) / ("0" * 20 + ".log")).exists()

    assert first_offset_from(rb.bootstrap, topic_name, OFFSET_BEGINNING).offset() == low
    assert first_offset_from(rb.bootstrap, topic_name, 0, reset="earliest").offset() == low
    m = first_offset_from(rb.bootstrap, topic_name, 0, reset="error")
    assert m.error() is not None, f"fetch at deleted offset 0 returned offset {m.offset()}"
    # the remaining data is intact up to the end
    msgs, low2, high2 = skiff.read_partition_to_end(rb.bootstrap, topic_name, 0)
    assert (low2, high2) == (low, n)
    assert [int(m.value()[:8]) for m in msgs] == list(range(low, n))


def test_retention_ms_tiny(rb, topic_name):
    admin = skiff.admin_client(rb)
    seg = create_small_segment_topic(admin, topic_name, {"retention.ms": "1000"})
    n = produce_segments(rb.bootstrap, topic_name, seg, 10)

    def expired():
        low, high = watermarks(rb.bootstrap, topic_name)
        files = rb.segment_files(topic_name, 0)
        return (low, high, files) if low > 0 and len(files) <= 2 else None

    low, high, files = skiff.wait_until(expired, 30, interval=0.25,
                                        what="closed segments older than retention.ms=1000 to go")
    assert high == n
    assert skiff.segment_base(files[0]) <= low
    # (Kafka also rolls and deletes an expired active segment, so low may be n.)
    # The log goes on at n, and a consumer from the beginning starts at low.
    p = Producer({"bootstrap.servers": rb.bootstrap})
    res = []
    p.produce(topic_name, value=b"%08d" % n, partition=0, on_delivery=lambda e, m: res.append((e, m.offset())))
    assert p.flush(30) == 0 and res == [(None, n)], res
    low, _ = watermarks(rb.bootstrap, topic_name)
    first = first_offset_from(rb.bootstrap, topic_name, OFFSET_BEGINNING)
    assert first.error() is None and first.offset() == low, (first.error(), first.offset(), low)


def test_retention_ms_keeps_recent_data(rb, topic_name):
    """Old-timestamped segments go; segments holding recent records stay."""
    admin = skiff.admin_client(rb)
    seg = create_small_segment_topic(admin, topic_name, {"retention.ms": "3600000"})
    old_ts = int(time.time() * 1000) - 2 * 3_600_000
    n_old = produce_segments(rb.bootstrap, topic_name, seg, 6, timestamp=old_ts)
    n_new = produce_segments(rb.bootstrap, topic_name, seg, 4, start=n_old)

    low, high = skiff.wait_until(
        lambda: (lambda lh: lh if lh[0] > 0 else None)(watermarks(rb.bootstrap, topic_name)),
        30, interval=0.25, what="segments with 2-hour-old records to be deleted")
    time.sleep(2)  # a few more checker rounds: nothing recent may go
    low, high = watermarks(rb.bootstrap, topic_name)
    assert high == n_old + n_new
    assert low <= n_old, f"recent records deleted: log start {low} > first recent offset {n_old}"
    assert n_old - low < n_old / 2, f"only {low} of {n_old} old records deleted"
    msgs, _, _ = skiff.read_partition_to_end(rb.bootstrap, topic_name, 0, start=n_old)
    assert [int(m.value()[:8]) for m in msgs] == list(range(n_old, n_old + n_new))
