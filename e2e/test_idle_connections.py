"""connections.max.idle.ms: a client connection with no request in progress
and no byte read or written for that long is closed, as Kafka closes it.

Proves: a silent connection and one that stopped halfway through a request
are closed after the idle time and counted in
skiff_connections_idle_closed_total; a connection that keeps sending
requests is not, nor one whose request (a long-polling Fetch) outlasts it; a real client (librdkafka) whose connection was closed
while idle connects again and loses nothing; DescribeConfigs shows the
setting.
"""

import socket
import struct
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import skiff

from test_malformed import api_versions_v0, frame, header_v1, recv_frame, string

IDLE_MS = 1500
T = 30


def fetch_v4(corr, topic, max_wait_ms):
    """A Fetch of partition 0 from offset 0 that waits up to `max_wait_ms`
    for a byte."""
    body = struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0)
    body += struct.pack(">i", 1) + string(topic)
    body += struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 1 << 20)
    return frame(header_v1(1, 4, corr) + body)


def answer_to(s, corr, timeout):
    """The body of the next response on `s`, which must answer `corr`."""
    body = recv_frame(s, timeout)
    assert body is not None, "the connection was closed"
    assert struct.unpack(">i", body[:4])[0] == corr
    return body


def closed_after(s, limit):
    """Seconds until the broker closed `s` (it sends nothing first); fails
    if it is still open after `limit` seconds."""
    t0 = time.monotonic()
    s.settimeout(limit)
    try:
        data = s.recv(1)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        raise AssertionError(f"connection still open after {limit} s") from None
    assert data == b"", f"unexpected bytes from the broker: {data!r}"
    return time.monotonic() - t0


def idle_closed(b):
    return b.metrics().total("skiff_connections_idle_closed_total")


def test_idle_connections_are_closed_busy_ones_are_not(broker_factory):
    b = broker_factory(args=["--connections-max-idle-ms", str(IDLE_MS)])
    before = idle_closed(b)

    silent = socket.create_connection(("127.0.0.1", b.port))
    half = socket.create_connection(("127.0.0.1", b.port))
    busy = socket.create_connection(("127.0.0.1", b.port))
    # A size header and part of the body, then nothing.
    half.sendall(struct.pack(">i", 100) + b"\x00\x12\x00\x00")

    # The busy connection sends a request every 0.4 s for three idle times,
    # and each is answered.
    deadline = time.monotonic() + 3 * IDLE_MS / 1000
    corr = 0
    while time.monotonic() < deadline:
        corr += 1
        busy.sendall(api_versions_v0(corr))
        answer_to(busy, corr, 5)
        time.sleep(0.4)

    # By now the other two have been idle for longer than IDLE_MS.
    for s in (silent, half):
        closed_after(s, 5)
    assert idle_closed(b) - before == 2
    busy.close()

    # And a fresh silent connection goes after about IDLE_MS, not at once.
    late = socket.create_connection(("127.0.0.1", b.port))
    took = closed_after(late, 10)
    assert IDLE_MS / 1000 * 0.8 <= took <= IDLE_MS / 1000 + 3, took
    assert idle_closed(b) - before == 3


def test_a_request_in_progress_is_not_idle(broker_factory):
    """A consumer's long poll outlasting the idle time is answered, and its
    connection stays open."""
    b = broker_factory(args=["--connections-max-idle-ms", str(IDLE_MS)])
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    skiff.create_topic(skiff.admin_client(b), topic, 1)
    s = socket.create_connection(("127.0.0.1", b.port))
    wait_ms = 3 * IDLE_MS
    t0 = time.monotonic()
    s.sendall(fetch_v4(1, topic, wait_ms))
    answer_to(s, 1, wait_ms / 1000 + 10)
    assert time.monotonic() - t0 >= wait_ms / 1000 * 0.9, "the fetch did not wait"
    s.sendall(api_versions_v0(2))
    answer_to(s, 2, 5)
    s.close()


def test_a_client_whose_idle_connection_was_closed_connects_again(broker_factory):
    b = broker_factory(args=["--connections-max-idle-ms", str(IDLE_MS)])
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    skiff.create_topic(skiff.admin_client(b), topic, 1)
    before = idle_closed(b)

    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    delivered, errors = [], []

    def on_delivery(err, msg):
        (errors if err else delivered).append(err or msg.offset())

    p.produce(topic, b"before", on_delivery=on_delivery)
    assert p.flush(T) == 0
    # Every connection open now (the producer's among them) sits idle past
    # IDLE_MS and is closed.
    open_now = b.metrics().total("skiff_connections_active")
    assert open_now >= 1
    deadline = time.monotonic() + 15
    while idle_closed(b) - before < open_now and time.monotonic() < deadline:
        p.poll(0.2)
    assert idle_closed(b) - before >= open_now, (idle_closed(b) - before, open_now)
    p.produce(topic, b"after", on_delivery=on_delivery)
    assert p.flush(T) == 0
    assert errors == [] and delivered == [0, 1], (errors, delivered)

    c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": f"g-{topic}",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = []
    deadline = time.monotonic() + T
    while len(got) < 2 and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    c.close()
    assert got == [b"before", b"after"]

    value, _ = skiff.broker_config(b, "connections.max.idle.ms")
    assert value == str(IDLE_MS)
