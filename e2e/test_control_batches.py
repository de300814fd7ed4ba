"""Raft's own entries in the partition log are invisible to Kafka consumers.

With replication the Raft log *is* the partition log: a new leader's blank
entry and membership changes are stored as control batches (one control
record of type 100 or 101, see broker/src/replication/codec.rs), the way
KRaft stores LeaderChange records. This test writes such batches into a
partition's segment between client data, restarts the broker, and checks
that confluent-kafka, kafka-python and kcat read exactly the data records,
at their offsets, skipping the control batches without errors; producers
carry on at the next offset.
"""

import json
import shutil
import struct
import subprocess
import time

import pytest
from confluent_kafka import Producer

import skiff

RAFT_BLANK, RAFT_MEMBERSHIP = 100, 101


def control_batch(base_offset: int, control_type: int, value: bytes, epoch: int) -> bytes:
    """A one-record control batch as the broker's replication codec writes it."""
    rec = bytearray(b"\x00")  # attributes
    rec += skiff._zigzag_varint(0)  # timestamp delta
    rec += skiff._zigzag_varint(0)  # offset delta
    key = struct.pack(">hh", 0, control_type)
    rec += skiff._zigzag_varint(len(key)) + key
    rec += skiff._zigzag_varint(len(value)) + value
    rec += skiff._zigzag_varint(0)  # headers
    body = skiff._zigzag_varint(len(rec)) + bytes(rec)
    after_crc = struct.pack(">hiqqqhii", 0x20, 0, -1, -1, -1, -1, -1, 1) + body
    after_length = struct.pack(">ibI", epoch, 2, skiff.crc32c(after_crc)) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


def produce(b, topic, values):
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all", "linger.ms": 0})
    got = []
    for v in values:
        p.produce(topic, value=v, partition=0, on_delivery=lambda e, m: got.append((e, m.offset())))
        p.flush(30)
    assert p.flush(30) == 0
    assert all(e is None for e, _ in got), got
    return [o for _, o in got]


def test_consumers_skip_raft_control_batches(broker_factory, topic_name):
    b = broker_factory()
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    before = [b"before-%d" % i for i in range(5)]
    assert produce(b, topic_name, before) == list(range(5))
    assert b.stop() == 0

    seg = b.segment_files(topic_name, 0)[-1]
    membership = json.dumps({"configs": [[1, 2, 3]], "nodes": {}}).encode()
    with open(seg, "ab") as f:
        f.write(control_batch(5, RAFT_BLANK, b"", epoch=2))
        f.write(control_batch(6, RAFT_MEMBERSHIP, membership, epoch=2))

    b.start()
    after = [b"after-%d" % i for i in range(5)]
    assert produce(b, topic_name, after) == list(range(7, 12)), "offsets continue after the control batches"
    expected = list(zip(list(range(5)) + list(range(7, 12)), before + after))

    # confluent-kafka (librdkafka 2.x)
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert (low, high) == (0, 12)
    assert [(m.offset(), m.value()) for m in msgs] == expected

    # ... also starting exactly at a control batch's offset
    msgs, _, _ = skiff.read_partition_to_end(b.bootstrap, topic_name, 0, start=5)
    assert [(m.offset(), m.value()) for m in msgs] == expected[5:]

    # kafka-python
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=b.bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    tp = TopicPartition(topic_name, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    seen = []
    deadline = time.monotonic() + 60
    while len(seen) < len(expected) and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=1000).values():
            seen += [(r.offset, r.value) for r in recs]
    c.close()
    assert seen == expected

    # kcat (librdkafka 2.0)
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        pytest.fail("kcat is not installed (scripts/setup-test-env.sh installs it)")
    out = subprocess.run(
        [kcat, "-C", "-b", b.bootstrap, "-t", topic_name, "-p", "0", "-o", "beginning", "-e",
         "-f", "%o %s\\n"],
        capture_output=True, timeout=60, check=True, text=True,
    ).stdout
    assert [tuple(line.split(" ", 1)) for line in out.splitlines()] == [
        (str(o), v.decode()) for o, v in expected
    ]
