"""Raw-socket protocol tests with a tiny hand-rolled Kafka encoder.

Proves: ApiVersions v0/v3 and Metadata v1/v12 replies are byte-correct
(correlation ids echoed, error codes, broker list); an unsupported version
gets error 35 (ApiVersions answers v0 with its supported list) instead of a
dropped connection; frames split or pipelined are handled in order;
malformed frames (negative or oversized length, garbage, random bytes,
unknown API keys) close only their own connection -- never hang it, never
allocate the announced size, never take the broker down -- and real clients
keep working afterwards.
"""

import random
import socket
import struct
import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import skiff

MAX_REQ = 1_048_576
UNSUPPORTED_VERSION = 35
UNKNOWN_TOPIC_OR_PARTITION = 3
NEEDED_APIS = {
    0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions",
    19: "CreateTopics", 20: "DeleteTopics", 32: "DescribeConfigs", 33: "AlterConfigs",
    37: "CreatePartitions", 44: "IncrementalAlterConfigs", 60: "DescribeCluster",
}


# ------------------------------------------------------------------- encoding
def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def compact_string(s) -> bytes:
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def header_v1(api_key, version, corr, client_id="skiff-e2e"):
    return struct.pack(">hhi", api_key, version, corr) + string(client_id)


def header_v2(api_key, version, corr, client_id="skiff-e2e"):
    return header_v1(api_key, version, corr, client_id) + uvarint(0)  # no tagged fields


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def api_versions_v0(corr):
    return frame(header_v1(18, 0, corr))


def api_versions_v3(corr, version=3):
    return frame(header_v2(18, version, corr) + compact_string("skiff-e2e") +
                 compact_string("1.0") + uvarint(0))


def metadata_v1(corr, topics):
    body = struct.pack(">i", len(topics)) + b"".join(string(t) for t in topics)
    return frame(header_v1(3, 1, corr) + body)


def metadata_v12(corr, topics, allow_auto_create=False):
    body = uvarint(len(topics) + 1)
    for t in topics:
        body += b"\x00" * 16 + compact_string(t) + uvarint(0)
    body += struct.pack(">??", allow_auto_create, False) + uvarint(0)
    return frame(header_v2(3, 12, corr) + body)


# ------------------------------------------------------------------- decoding
class Reader:
    def __init__(self, data: bytes):
        self.d, self.p = data, 0

    def take(self, n):
        assert self.p + n <= len(self.d), f"response truncated at {self.p}+{n} of {len(self.d)}"
        v = self.d[self.p:self.p + n]
        self.p += n
        return v

    def i8(self): return struct.unpack(">b", self.take(1))[0]
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]

    def uvarint(self):
        shift = n = 0
        while True:
            b = self.take(1)[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def compact_string(self):
        n = self.uvarint()
        return None if n == 0 else self.take(n - 1).decode()

    def compact_array_len(self):
        n = self.uvarint()
        return -1 if n == 0 else n - 1

    def tagged(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def done(self):
        return self.p == len(self.d)


def connect(b, timeout=30.0):
    s = socket.create_connection(("127.0.0.1", b.port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(s, timeout=30.0):
    """The next response frame's payload, or None if the broker closed the
    connection. socket.timeout propagates (the broker neither answered nor
    closed)."""
    s.settimeout(timeout)
    try:
        head = recv_exact(s, 4)
        if head is None:
            return None
        (n,) = struct.unpack(">i", head)
        assert 4 <= n <= 100_000_000, f"implausible response size {n}"
        return recv_exact(s, n)
    except (ConnectionResetError, BrokenPipeError):
        return None


def closed_or_answered(s, timeout=15.0):
    """After a malformed request the broker must close the connection or
    answer; hanging is a bug. Returns None (closed) or a frame."""
    try:
        return recv_frame(s, timeout)
    except socket.timeout:
        raise AssertionError(f"broker neither answered nor closed the connection within {timeout}s")


def parse_api_versions(payload, flexible: bool):
    r = Reader(payload)
    corr = r.i32()
    err = r.i16()
    n = r.compact_array_len() if flexible else r.i32()
    apis = {}
    for _ in range(max(n, 0)):
        k, lo, hi = r.i16(), r.i16(), r.i16()
        if flexible:
            r.tagged()
        apis[k] = (lo, hi)
    return corr, err, apis, r


def api_versions(b):
    with connect(b) as s:
        s.sendall(api_versions_v0(1))
        payload = recv_frame(s)
    assert payload is not None, "ApiVersions v0: connection closed"
    corr, err, apis, _ = parse_api_versions(payload, flexible=False)
    assert (corr, err) == (1, 0)
    return apis


def assert_serving(b):
    assert b.alive(), f"broker died (rc={b.proc.returncode})"
    apis = api_versions(b)
    assert 18 in apis


# ------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def mb(tmp_path_factory):
    b = skiff.Broker(tmp_path_factory.mktemp("malformed"), name="malformed",
                     args=["--auto-create-topics-enable", "false",
                           "--socket-request-max-bytes", str(MAX_REQ)])
    b.start()
    yield b
    b.close()


@pytest.fixture(autouse=True)
def _revive(mb):
    """If an earlier test killed the broker, bring it back so each test is
    judged on its own; test_real_clients_still_work_after_abuse reports it."""
    if not mb.alive():
        mb.start()
    yield


@pytest.fixture(scope="module")
def topic3(mb):
    name = "raw-" + uuid.uuid4().hex[:8]
    skiff.create_topic(skiff.admin_client(mb), name, 3)
    return name


# ------------------------------------------------------------- well-formed
def test_api_versions_v0(mb):
    with connect(mb) as s:
        s.sendall(api_versions_v0(0x12345678))
        payload = recv_frame(s)
    assert payload is not None
    corr, err, apis, r = parse_api_versions(payload, flexible=False)
    assert corr == 0x12345678
    assert err == 0
    assert r.done(), f"{len(payload) - r.p} trailing bytes in ApiVersions v0 response"
    missing = {k: v for k, v in NEEDED_APIS.items() if k not in apis}
    assert not missing, f"ApiVersions lacks {missing}"
    for k, (lo, hi) in apis.items():
        assert 0 <= lo <= hi, f"api {k}: bad range {lo}..{hi}"
    assert apis[18][0] == 0 and apis[18][1] >= 3, apis[18]


def test_api_versions_v3(mb):
    v0 = api_versions(mb)
    with connect(mb) as s:
        s.sendall(api_versions_v3(-7))
        payload = recv_frame(s)
    assert payload is not None
    # the ApiVersions response header stays v0 (no tagged fields) even for v3
    corr, err, apis, r = parse_api_versions(payload, flexible=True)
    assert (corr, err) == (-7, 0)
    r.i32()  # throttle_time_ms
    r.tagged()
    assert r.done(), "trailing bytes after ApiVersions v3 response"
    assert apis == v0


@pytest.mark.parametrize("version", [127, 32000])
def test_api_versions_unsupported_version_answers_v0(mb, version):
    with connect(mb) as s:
        s.sendall(api_versions_v3(4242, version=version))
        payload = recv_frame(s)
    assert payload is not None, "connection dropped instead of UNSUPPORTED_VERSION"
    corr, err, apis, r = parse_api_versions(payload, flexible=False)
    assert corr == 4242
    assert err == UNSUPPORTED_VERSION, err
    assert 18 in apis and apis[18][0] == 0, f"v0 error response must list supported versions: {apis}"
    assert 3 in apis


def _metadata_range(mb):
    apis = api_versions(mb)
    return apis[3]


def test_metadata_v1_handrolled(mb, topic3):
    lo, hi = _metadata_range(mb)
    assert lo <= 1 <= hi, f"Metadata v1 unsupported (broker: {lo}..{hi}); Kafka 4.x serves 0..13"
    with connect(mb) as s:
        s.sendall(metadata_v1(77, [topic3, "raw-missing"]))
        payload = recv_frame(s)
    assert payload is not None
    r = Reader(payload)
    assert r.i32() == 77
    brokers = [(r.i32(), r.string(), r.i32(), r.string()) for _ in range(r.i32())]
    assert [(n, h, p) for n, h, p, _ in brokers] == [(0, "127.0.0.1", mb.port)], brokers
    assert r.i32() == 0, "controller id"
    topics = {}
    for _ in range(r.i32()):
        err, name, internal = r.i16(), r.string(), r.i8()
        parts = []
        for _ in range(r.i32()):
            perr, idx, leader = r.i16(), r.i32(), r.i32()
            replicas = [r.i32() for _ in range(r.i32())]
            isr = [r.i32() for _ in range(r.i32())]
            parts.append((perr, idx, leader, replicas, isr))
        topics[name] = (err, internal, sorted(parts, key=lambda x: x[1]))
    assert r.done(), "trailing bytes in Metadata v1 response"
    assert set(topics) == {topic3, "raw-missing"}, topics
    assert topics[topic3][0] == 0 and topics[topic3][1] == 0
    assert topics[topic3][2] == [(0, i, 0, [0], [0]) for i in range(3)]
    assert topics["raw-missing"][0] == UNKNOWN_TOPIC_OR_PARTITION


def test_metadata_v12_handrolled(mb, topic3):
    lo, hi = _metadata_range(mb)
    assert lo <= 12 <= hi, f"Metadata v12 unsupported (broker: {lo}..{hi}); librdkafka uses it"
    with connect(mb) as s:
        s.sendall(metadata_v12(78, [topic3, "raw-missing-12"], allow_auto_create=False))
        payload = recv_frame(s)
    assert payload is not None
    r = Reader(payload)
    assert r.i32() == 78
    r.tagged()  # response header v1
    r.i32()  # throttle
    brokers = []
    for _ in range(r.compact_array_len()):
        brokers.append((r.i32(), r.compact_string(), r.i32(), r.compact_string()))
        r.tagged()
    assert [(n, h, p) for n, h, p, _ in brokers] == [(0, "127.0.0.1", mb.port)], brokers
    cluster_id = r.compact_string()
    assert cluster_id, "cluster id"
    assert r.i32() == 0, "controller id"
    topics = {}
    for _ in range(r.compact_array_len()):
        err, name, tid = r.i16(), r.compact_string(), r.take(16)
        r.i8()  # is_internal
        parts = []
        for _ in range(r.compact_array_len()):
            perr, idx, leader, epoch = r.i16(), r.i32(), r.i32(), r.i32()
            replicas = [r.i32() for _ in range(r.compact_array_len())]
            isr = [r.i32() for _ in range(r.compact_array_len())]
            offline = [r.i32() for _ in range(r.compact_array_len())]
            r.tagged()
            parts.append((perr, idx, leader, replicas, isr, offline, epoch))
        r.i32()  # topic authorized operations
        r.tagged()
        topics[name] = (err, tid, sorted(parts, key=lambda x: x[1]))
    r.tagged()
    assert r.done(), "trailing bytes in Metadata v12 response"
    err, tid, parts = topics[topic3]
    assert err == 0 and tid != b"\x00" * 16, "existing topic needs a non-zero topic id"
    assert [p[:6] for p in parts] == [(0, i, 0, [0], [0], []) for i in range(3)]
    assert all(p[6] >= 0 for p in parts), "leader epochs"
    assert topics["raw-missing-12"][0] == UNKNOWN_TOPIC_OR_PARTITION


def test_unsupported_version_of_known_api_gets_error_35(mb):
    lo, hi = _metadata_range(mb)
    with connect(mb) as s:
        s.sendall(frame(header_v2(3, hi + 1, 991) + uvarint(1) + b"\x00\x00\x00"))
        payload = closed_or_answered(s)
        assert payload is not None, (
            f"Metadata v{hi + 1} (unsupported): connection dropped; want a response with error 35")
        assert struct.unpack(">i", payload[:4])[0] == 991, "correlation id not echoed"
        assert struct.pack(">h", UNSUPPORTED_VERSION) in payload[4:], (
            f"no UNSUPPORTED_VERSION (35) in the response body {payload[4:64].hex()}")


def test_connection_usable_after_unsupported_version(mb):
    lo, hi = _metadata_range(mb)
    with connect(mb) as s:
        s.sendall(frame(header_v2(3, hi + 1, 5) + uvarint(1) + b"\x00\x00\x00"))
        assert closed_or_answered(s) is not None
        s.sendall(api_versions_v0(6))
        payload = recv_frame(s)
        assert payload is not None, "connection closed after an UNSUPPORTED_VERSION response"
        assert struct.unpack(">ih", payload[:6]) == (6, 0)


def test_request_split_into_single_bytes(mb):
    data = api_versions_v0(31337)
    with connect(mb) as s:
        for i in range(len(data)):
            s.sendall(data[i:i + 1])
            time.sleep(0.01)
        payload = recv_frame(s)
    assert payload is not None
    assert parse_api_versions(payload, False)[:2] == (31337, 0)


def test_pipelined_requests_answered_in_order(mb, topic3):
    with connect(mb) as s:
        s.sendall(api_versions_v0(1) + metadata_v12(2, [topic3]) + api_versions_v3(3) +
                  metadata_v1(4, [topic3]) + api_versions_v0(5))
        corrs = []
        for _ in range(5):
            payload = recv_frame(s)
            assert payload is not None, f"connection closed after {corrs}"
            corrs.append(struct.unpack(">i", payload[:4])[0])
    assert corrs == [1, 2, 3, 4, 5]


# ------------------------------------------------------------------ malformed
@pytest.mark.parametrize("length", [-1, -2147483648, MAX_REQ + 1, 0x7FFFFFFF],
                         ids=["minus1", "int-min", "max-plus-1", "int-max"])
def test_bad_length_prefix_closes_connection(mb, length):
    rss_before = mb.rss_bytes()
    with connect(mb) as s:
        s.sendall(struct.pack(">i", length))
        # the broker must decide from the prefix alone, not wait for the body
        assert closed_or_answered(s, timeout=10) is None, "answered a frame with a bad length"
    assert mb.rss_bytes() - rss_before < 64 << 20, "broker allocated the announced frame size"
    assert_serving(mb)


def test_zero_length_and_short_frames(mb):
    for payload in (b"", b"\x00", b"\x00\x12\x00", b"\x00\x12\x00\x00\x00\x00\x00"):
        with connect(mb) as s:
            s.sendall(frame(payload))
            assert closed_or_answered(s, timeout=10) is None, f"answered header-less frame {payload!r}"
    assert_serving(mb)


def test_garbage_bodies(mb):
    rng = random.Random(1234)
    bodies = [
        # ApiVersions v0 with a client id longer than the frame
        struct.pack(">hhih", 18, 0, 9, 30000) + b"abc",
        # Metadata v1 announcing a million topics and carrying none
        header_v1(3, 1, 10) + struct.pack(">i", 1_000_000),
        # Metadata v1 with a negative string length inside the topic array
        header_v1(3, 1, 11) + struct.pack(">ih", 1, -5),
        # Metadata v12 with a compact array length far beyond the frame
        header_v2(3, 12, 12) + uvarint(2 ** 31),
        # CreateTopics v5 with random bytes
        header_v2(19, 5, 13) + rng.randbytes(64),
        # Metadata v1 with random bytes
        header_v1(3, 1, 14) + rng.randbytes(200),
    ]
    for body in bodies:
        with connect(mb) as s:
            s.sendall(frame(body))
            resp = closed_or_answered(s)
            if resp is not None:
                corr = struct.unpack(">i", body[4:8])[0]
                assert struct.unpack(">i", resp[:4])[0] == corr, "answer with a foreign correlation id"
    assert_serving(mb)


@pytest.mark.parametrize("api_key", [1000, 32767, -1])
def test_unknown_api_key(mb, api_key):
    with connect(mb) as s:
        s.sendall(frame(header_v1(api_key, 0, 4321)))
        resp = closed_or_answered(s)
        if resp is not None:
            assert struct.unpack(">i", resp[:4])[0] == 4321
    assert_serving(mb)


def test_random_bytes_many_connections(mb):
    rng = random.Random(20240601)
    socks = []
    for i in range(300):
        s = connect(mb)
        kind = i % 3
        if kind == 0:
            data = rng.randbytes(rng.randrange(1, 4096))
        elif kind == 1:  # plausible length prefix, random payload
            payload = rng.randbytes(rng.randrange(8, 2048))
            data = frame(payload)
        else:  # plausible header of a known API, random body
            key = rng.choice([3, 18, 19, 20, 32, 33, 37, 44, 60])
            data = frame(header_v1(key, rng.randrange(0, 12), i) + rng.randbytes(rng.randrange(0, 512)))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        socks.append(s)
        if len(socks) >= 50:
            for t in socks:
                t.close()
            socks = []
    for t in socks:
        t.close()
    assert_serving(mb)


def test_many_idle_connections_do_not_block_others(mb):
    socks = [connect(mb) for _ in range(200)]
    try:
        # half of them send half a frame and stall
        for s in socks[::2]:
            s.sendall(api_versions_v0(1)[:7])
        t0 = time.monotonic()
        assert_serving(mb)
        assert time.monotonic() - t0 < 10
    finally:
        for s in socks:
            s.close()


def test_real_clients_still_work_after_abuse(mb):
    """Runs last in this module: the same broker process that received all of
    the above still serves librdkafka on fresh connections."""
    assert mb.alive()
    name = "after-abuse-" + uuid.uuid4().hex[:8]
    skiff.create_topic(skiff.admin_client(mb), name, 2)
    p = Producer({"bootstrap.servers": mb.bootstrap, "linger.ms": 5})
    errs = []
    for i in range(1000):
        p.produce(name, key=b"%d" % i, value=b"v%d" % i, on_delivery=lambda e, m: errs.append(e) if e else None)
    assert p.flush(60) == 0 and not errs, errs[:3]
    c = Consumer({"bootstrap.servers": mb.bootstrap, "group.id": "g", "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(name, i, OFFSET_BEGINNING) for i in range(2)])
        lows_highs = [c.get_watermark_offsets(TopicPartition(name, i), timeout=30) for i in range(2)]
        got = skiff.consume_all(c, {i: lows_highs[i][1] for i in range(2)}, timeout=60)
        assert sum(len(v) for v in got.values()) == 1000
        assert sorted(m.value() for v in got.values() for m in v) == sorted(b"v%d" % i for i in range(1000))
    finally:
        c.close()
    assert mb.alive()
    status, _ = mb.http_get("/readyz")
    assert status == 200
    assert mb.start_count == 1, (
        f"the broker died and was restarted {mb.start_count - 1} time(s) during this module; "
        f"see the earlier failures and {mb.log_path}")
