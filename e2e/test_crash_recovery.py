"""Durability: SIGKILL mid-produce, torn segment tails, lost indexes.

Proves: with --log-flush-interval-messages 1 every acks=all acknowledged
record survives a SIGKILL, exactly once, at the offset it was acknowledged
with; junk after the last complete batch of a segment (garbage, a truncated
batch, a batch with a bad CRC) is truncated at start-up with a log line, no
committed record is lost, and offsets continue without a gap; index files
are derived data that the broker rebuilds.
"""

import os
import re
import threading
import time

import pytest
from confluent_kafka import Producer

import skiff

PARTITIONS = 3


def truncation_lines(log: str) -> list[str]:
    """Log lines that report a truncation (a line saying it truncated 0
    bytes, like a start-up summary, does not count)."""
    return [line for line in log.splitlines()
            if "truncat" in line.lower() and not re.search(r"truncated?_?bytes\W{0,3}0\b", line)]


class SeqProducer(threading.Thread):
    """Produces value=b"seq:<n>" round-robin over partitions until stopped,
    recording the acknowledged (partition, offset) of every seq."""

    def __init__(self, bootstrap, topic, first_seq=0):
        super().__init__(daemon=True)
        self.first_seq = first_seq
        self.topic = topic
        self.p = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 2,
            # each message goes over the wire at most once: no client
            # retries, so a duplicate in the log can only be the broker's
            "message.send.max.retries": 0,
            "enable.idempotence": False,
            "message.timeout.ms": 10000,
            "request.timeout.ms": 5000,
            "queue.buffering.max.messages": 20000,
            "reconnect.backoff.max.ms": 200,
        })
        self.acked = {}  # seq -> (partition, offset)
        self.failed = 0
        self.sent = 0
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def _cb(self, err, msg):
        seq = int(msg.value().split(b":")[1])
        with self.lock:
            if err is None:
                self.acked[seq] = (msg.partition(), msg.offset())
            else:
                self.failed += 1

    def run(self):
        seq = self.first_seq
        while not self.stop_flag.is_set():
            try:
                self.p.produce(self.topic, value=b"seq:%d" % seq, partition=seq % PARTITIONS,
                               on_delivery=self._cb)
                seq += 1
                self.sent = seq
            except BufferError:
                self.p.poll(0.05)
                continue
            if seq % 50 == 0:
                self.p.poll(0)
                time.sleep(0.002)  # a steady stream, not a flood
        self.p.poll(0)

    def finish(self):
        self.stop_flag.set()
        self.join(30)
        # give in-flight acks that already arrived a chance to be delivered, then
        # drop everything else (it is not acknowledged)
        self.p.flush(2)
        self.p.purge(in_queue=True, in_flight=True)
        self.p.flush(15)
        self.p.poll(0)


def read_all(b, topic, partitions):
    out = {}
    for p in range(partitions):
        msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic, p)
        assert low == 0, f"partition {p} low watermark {low}"
        assert [m.offset() for m in msgs] == list(range(high)), f"partition {p} offsets not dense"
        out[p] = msgs
    return out


@pytest.mark.parametrize("rounds", [3])
def test_sigkill_loses_no_acknowledged_record(broker_factory, topic_name, rounds):
    """Three rounds of produce → SIGKILL mid-stream → restart; then every
    acknowledged record of every round must be there."""
    b = broker_factory(args=["--log-flush-interval-messages", "1"])
    skiff.create_topic(skiff.admin_client(b), topic_name, PARTITIONS)
    acked = {}
    next_seq = 0
    for rnd in range(rounds):
        prod = SeqProducer(b.bootstrap, topic_name, first_seq=next_seq)
        prod.start()
        skiff.wait_until(lambda: len(prod.acked) >= 2000, 120, interval=0.05,
                         what=f"2000 acknowledged messages before crash #{rnd + 1}")
        b.kill()
        killed_at = prod.sent
        time.sleep(1)
        prod.finish()
        assert len(prod.acked) >= 2000
        print(f"round {rnd}: sent {killed_at - next_seq}+ messages, {len(prod.acked)} acknowledged, "
              f"{prod.failed} failed")
        acked.update(prod.acked)
        next_seq = prod.sent + 1
        b.start()

    got = read_all(b, topic_name, PARTITIONS)

    where = {}
    for p, msgs in got.items():
        for m in msgs:
            seq = int(m.value().split(b":")[1])
            assert seq not in where, f"seq {seq} stored twice: {where[seq]} and {(p, m.offset())}"
            where[seq] = (p, m.offset())
    lost = [s for s in acked if s not in where]
    assert not lost, f"{len(lost)} acknowledged messages lost, e.g. seqs {sorted(lost)[:10]}"
    moved = {s: (acked[s], where[s]) for s in acked if acked[s] != where[s]}
    assert not moved, f"{len(moved)} messages not at their acknowledged offset, e.g. {list(moved.items())[:5]}"

    # the log goes on after the recovered tail, without a gap
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    res = []
    for part in range(PARTITIONS):
        p.produce(topic_name, value=b"after", partition=part, on_delivery=lambda e, m: res.append((e, m)))
    assert p.flush(60) == 0
    for e, m in res:
        assert e is None, e
        assert m.offset() == len(got[m.partition()]), (
            f"partition {m.partition()}: new offset {m.offset()} after {len(got[m.partition()])} recovered")


# --------------------------------------------------------------------- torn tails
def _produce_batches(b, topic, batches, per_batch, start=0):
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 100,
                  "batch.num.messages": per_batch})
    res = []
    n = start
    for _ in range(batches):
        for _ in range(per_batch):
            p.produce(topic, key=b"k%d" % n, value=b"committed-%06d" % n, partition=0,
                      on_delivery=lambda e, m: res.append((e, m.offset())))
            n += 1
        p.flush(60)
    assert p.flush(60) == 0
    assert all(e is None for e, _ in res), [e for e, _ in res if e][:3]
    return sorted(o for _, o in res)


def _junk(kind: str, next_offset: int) -> bytes:
    now = int(time.time() * 1000)
    batch = skiff.record_batch(next_offset, [(b"torn", b"x" * 300)] * 3, now)
    if kind == "garbage":
        return os.urandom(777)
    if kind == "truncated-batch":
        return batch[: len(batch) // 2]
    if kind == "bad-crc-batch":
        return skiff.record_batch(next_offset, [(b"torn", b"x" * 300)] * 3, now, corrupt_crc=True)
    if kind == "zeros":  # preallocated-but-unwritten tail
        return b"\x00" * 4096
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["garbage", "truncated-batch", "bad-crc-batch", "zeros"])
def test_torn_tail_is_truncated(broker_factory, topic_name, kind):
    b = broker_factory()
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    offsets = _produce_batches(b, topic_name, batches=10, per_batch=10)
    assert offsets == list(range(100))
    assert b.stop() == 0, "clean shutdown must exit 0"

    seg = b.segment_files(topic_name, 0)[-1]
    size_before = seg.stat().st_size
    with open(seg, "ab") as f:
        f.write(_junk(kind, 100))

    b.start()
    log = b.log_since_start()
    assert truncation_lines(log), (
        f"broker log does not mention truncating the torn tail of {seg.name}:\n{log[-3000:]}")
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert (low, high) == (0, 100), f"watermarks after recovery: {(low, high)}"
    assert [m.value() for m in msgs] == [b"committed-%06d" % i for i in range(100)]

    more = _produce_batches(b, topic_name, batches=2, per_batch=5, start=100)
    assert more == list(range(100, 110)), f"offsets after recovery: {more}"
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert high == 110
    assert [m.value() for m in msgs] == [b"committed-%06d" % i for i in range(110)]
    assert seg.exists() and seg.stat().st_size >= size_before

    # and the repaired log survives another restart unchanged, with nothing
    # left to truncate
    b.restart()
    assert not truncation_lines(b.log_since_start()), b.log_since_start()[-3000:]
    msgs, _, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert high == 110 and [m.offset() for m in msgs] == list(range(110))


def test_indexes_rebuilt_after_restart(broker_factory, topic_name):
    """Offset and time lookups after a restart, with any per-segment index
    files deleted first (they are derived data; a broker that keeps indexes
    only in memory rebuilds them at start anyway)."""
    from confluent_kafka import Consumer, TopicPartition

    b = broker_factory()
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    base = int(time.time() * 1000) - 600_000
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    for i in range(200):
        p.produce(topic_name, value=b"i%d" % i, partition=0, timestamp=base + i * 10)
        if i % 20 == 19:
            p.flush(30)
    assert p.flush(30) == 0
    assert b.stop() == 0
    pdir = b.partition_dir(topic_name, 0)
    # per-segment companions: <20-digit base offset>.<anything but log>
    removed = [f for f in pdir.iterdir()
               if f.is_file() and f.name[:20].isdigit() and f.name[20:21] == "." and f.suffix != ".log"]
    for f in removed:
        f.unlink()
    b.start()
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0, start=150)
    assert (low, high) == (0, 200)
    assert msgs[0].offset() == 150 and msgs[0].value() == b"i150"
    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "g"})
    try:
        r = c.offsets_for_times([TopicPartition(topic_name, 0, base + 1234)], timeout=30)[0]
        assert r.error is None and r.offset == 124, r
    finally:
        c.close()
