"""The idempotent producer: InitProducerId, duplicate and gap detection,
producer state surviving a crash.

Proves: a retried batch (same producer id, epoch and sequence range) is
answered with the offsets of the stored copy and not stored again; a batch
ahead of the next sequence (a gap) is refused with the retriable
NOT_LEADER_OR_FOLLOWER, and so is a batch that follows one the broker
refused unwritten, until that one is resent, while a batch behind it is
OUT_OF_ORDER_SEQUENCE_NUMBER; a transactional
InitProducerId is refused with COORDINATOR_NOT_AVAILABLE; librdkafka's
idempotent producer, with the broker SIGKILLed and restarted in the middle
of its run, ends with every partition holding its sequence exactly once, in
order, without a gap; the state the broker uses for that is rebuilt from the
log at start-up (a duplicate sent after a restart is still recognised), and
after a clean shutdown from a snapshot.
"""

import socket
import struct
import threading
import time

from confluent_kafka import Producer

import skiff
from test_replication import create, wait_in_sync

PARTITIONS = 3


# ------------------------------------------------------------ raw protocol
def _string(s):
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Conn:
    """Non-flexible requests (header v1) over one socket."""

    def __init__(self, broker):
        self.s = socket.create_connection(("127.0.0.1", broker.port), timeout=30)
        self.corr = 0

    def send(self, api_key, version, body):
        """Sends a request without waiting for its answer; its correlation id."""
        self.corr += 1
        payload = struct.pack(">hhi", api_key, version, self.corr) + _string("e2e-raw") + body
        self.s.sendall(struct.pack(">i", len(payload)) + payload)
        return self.corr

    def recv(self, want):
        """The next answer, which must be the one to request `want`."""
        head = self._exact(4)
        (n,) = struct.unpack(">i", head)
        frame = self._exact(n)
        (corr,) = struct.unpack(">i", frame[:4])
        assert corr == want, (corr, want)
        return frame[4:]

    def call(self, api_key, version, body):
        return self.recv(self.send(api_key, version, body))

    def _exact(self, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            assert chunk, "broker closed the connection"
            buf += chunk
        return bytes(buf)

    def init_producer_id(self, transactional_id=None):
        """InitProducerId v1 -> (error, producer_id, epoch)."""
        body = _string(transactional_id) + struct.pack(">i", 60000)
        resp = self.call(22, 1, body)
        _throttle, err, pid, epoch = struct.unpack(">ihqh", resp[:16])
        return err, pid, epoch

    def produce(self, topic, partition, batch, acks=-1):
        """Produce v7 of one batch -> (error, base_offset)."""
        return self.produced(self.send_produce(topic, partition, batch, acks))

    def send_produce(self, topic, partition, batch, acks=-1):
        """Sends Produce v7 of one batch; its correlation id, for produced()."""
        body = _string(None) + struct.pack(">hi", acks, 30000)
        body += struct.pack(">i", 1) + _string(topic)
        body += struct.pack(">i", 1) + struct.pack(">i", partition)
        body += struct.pack(">i", len(batch)) + batch
        return self.send(0, 7, body)

    def produced(self, corr):
        """The answer to send_produce() -> (error, base_offset)."""
        resp = self.recv(corr)
        p = 4  # topic count
        (n,) = struct.unpack(">h", resp[p:p + 2])
        p += 2 + n + 4  # name, partition count
        _index, err, base, _append_time, _start = struct.unpack(">ihqqq", resp[p:p + 30])
        return err, base

    def close(self):
        self.s.close()


def batch(pid, epoch, seq, n, tag):
    records = [(None, b"%s-%d" % (tag, seq + i)) for i in range(n)]
    return skiff.record_batch(0, records, int(time.time() * 1000), producer_id=pid,
                              producer_epoch=epoch, base_sequence=seq)


def test_a_retried_batch_gets_the_original_offset_and_a_gap_is_refused(broker_factory, topic_name):
    b = broker_factory()
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    c = Conn(b)
    try:
        err, pid, epoch = c.init_producer_id()
        assert (err, epoch) == (0, 0) and pid >= 0
        err2, pid2, _ = c.init_producer_id()
        assert err2 == 0 and pid2 != pid, "every InitProducerId gets a new id"

        first = batch(pid, 0, 0, 3, b"a")
        assert c.produce(topic_name, 0, first) == (0, 0)
        assert c.produce(topic_name, 0, batch(pid, 0, 3, 2, b"a")) == (0, 3)
        # The retry of the first batch: success with its original offset.
        assert c.produce(topic_name, 0, first) == (0, 0)
        # A gap: sequence 6 after 4. Retriable: the client resends in
        # order, so it never renumbers (librdkafka bumps its epoch on
        # OUT_OF_ORDER_SEQUENCE_NUMBER, which can store twice a batch of
        # another partition whose acknowledgement it missed).
        err, _ = c.produce(topic_name, 0, batch(pid, 0, 6, 1, b"a"))
        assert err == 6, f"expected NOT_LEADER_OR_FOLLOWER for a gap, got {err}"
        # Behind the next sequence and not a stored batch: no resend fixes it.
        err, _ = c.produce(topic_name, 0, batch(pid, 0, 1, 1, b"a"))
        assert err == 45, f"expected OUT_OF_ORDER_SEQUENCE_NUMBER, got {err}"
        # Transactions are not supported.
        err, tpid, _ = c.init_producer_id("txn-1")
        assert (err, tpid) == (15, -1), "COORDINATOR_NOT_AVAILABLE for a transactional id"
    finally:
        c.close()

    m = b.metrics()
    assert m.total("skiff_produce_duplicates_total") == 1
    assert m.total("skiff_produce_sequence_gaps_total") == 1
    assert m.total("skiff_produce_out_of_order_total") == 1
    assert m.total("skiff_producer_ids") == 1

    # SIGKILL: no snapshot; the state is rebuilt by scanning the log.
    b.kill()
    b.start()
    c = Conn(b)
    try:
        assert c.produce(topic_name, 0, first) == (0, 0)
        assert c.produce(topic_name, 0, batch(pid, 0, 5, 1, b"a")) == (0, 5)
        err, new_pid, _ = c.init_producer_id()
        assert err == 0 and new_pid > pid2, "producer ids are never reused after a crash"
    finally:
        c.close()

    # A clean stop writes a snapshot; the state comes back from it.
    b.stop()
    assert (b.partition_dir(topic_name, 0) / "producer-state.snapshot").exists()
    b.start()
    c = Conn(b)
    try:
        assert c.produce(topic_name, 0, batch(pid, 0, 5, 1, b"a")) == (0, 5)
        assert c.produce(topic_name, 0, batch(pid, 0, 6, 1, b"a")) == (0, 6)
    finally:
        c.close()
    msgs, _, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert high == 7
    assert [m.value() for m in msgs] == [b"a-%d" % i for i in range(7)]


def test_a_batch_past_one_refused_unwritten_waits_for_its_resend(broker_factory, topic_name):
    """A producer's first batch refused before it was written (here: its
    topic not listed on the broker yet, as when a client learned of a new
    topic from a broker that applied it first), and its next batch a moment
    later: the next one must not be written past the gap. A partition
    accepts a producer it does not know at any sequence, and librdkafka,
    seeing the later batch acknowledged, would count the refused one as
    persisted. A retriable refusal makes it resend in order."""
    b = broker_factory()
    c = Conn(b)
    try:
        err, pid, _ = c.init_producer_id()
        assert err == 0
        err, _ = c.produce(topic_name, 0, batch(pid, 0, 0, 2, b"a"))
        assert err == 3, f"expected UNKNOWN_TOPIC_OR_PARTITION, got {err}"
        skiff.create_topic(skiff.admin_client(b), topic_name, 1)
        err, _ = c.produce(topic_name, 0, batch(pid, 0, 2, 1, b"a"))
        assert err == 6, f"expected NOT_LEADER_OR_FOLLOWER past the refused batch, got {err}"
        # Another producer's batches are not held back.
        err, other, _ = c.init_producer_id()
        assert err == 0
        assert c.produce(topic_name, 0, batch(other, 0, 7, 1, b"b")) == (0, 0)
        # The resend of the refused batch goes, then the one after it.
        assert c.produce(topic_name, 0, batch(pid, 0, 0, 2, b"a")) == (0, 1)
        assert c.produce(topic_name, 0, batch(pid, 0, 2, 1, b"a")) == (0, 3)
    finally:
        c.close()
    msgs, _, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert high == 4
    assert [m.value() for m in msgs] == [b"b-7", b"a-0", b"a-1", b"a-2"]
    assert b.metrics().total("skiff_produce_sequence_gaps_total") == 1
    assert b.metrics().total("skiff_produce_out_of_order_total") == 0


def test_a_batch_past_one_refused_unwritten_waits_on_a_replicated_partition_too(
        cluster_factory, topic_name):
    """The same on replicated partitions, with the requests pipelined as
    librdkafka sends them:
    - a leader refuses the first batch for want of in-sync replicas
      (min.insync.replicas above the replication factor); the next one,
      sent at once with acks=1 (which does not ask for them), waits for the
      resend;
    - both followers refuse the first batch (not the leader), and so the
      next one too; then the leader stops, and whichever follower leads now
      refuses the next batch until the resend."""
    c = cluster_factory(n=3)
    starved = f"{topic_name}-starved"
    create(c.bootstrap, starved, 1, 3, config={"min.insync.replicas": "4"})
    leader = wait_in_sync(c, starved, 1)[0][0]
    conn = Conn(c[leader])
    try:
        err, pid, _ = conn.init_producer_id()
        assert err == 0
        a = conn.send_produce(starved, 0, batch(pid, 0, 0, 2, b"a"))
        b = conn.send_produce(starved, 0, batch(pid, 0, 2, 1, b"a"), acks=1)
        err, _ = conn.produced(a)
        assert err == 19, f"expected NOT_ENOUGH_REPLICAS, got {err}"
        err, _ = conn.produced(b)
        assert err == 6, f"expected NOT_LEADER_OR_FOLLOWER past the refused batch, got {err}"
        err, first = conn.produce(starved, 0, batch(pid, 0, 0, 2, b"a"), acks=1)
        assert err == 0
        assert conn.produce(starved, 0, batch(pid, 0, 2, 1, b"a"), acks=1) == (0, first + 2)
    finally:
        conn.close()

    create(c.bootstrap, topic_name, 1, 3)
    leader = wait_in_sync(c, topic_name, 1)[0][0]
    followers = [n for n in (1, 2, 3) if n != leader]
    conns = {n: Conn(c[n]) for n in followers}
    try:
        err, pid, _ = conns[followers[0]].init_producer_id()
        assert err == 0
        for n in followers:
            a = conns[n].send_produce(topic_name, 0, batch(pid, 0, 0, 2, b"a"))
            b = conns[n].send_produce(topic_name, 0, batch(pid, 0, 2, 1, b"a"))
            # Not OUT_OF_ORDER_SEQUENCE_NUMBER: a client sent off the leader
            # refreshes its metadata and resends, with no epoch to bump.
            assert [conns[n].produced(a)[0], conns[n].produced(b)[0]] == [6, 6], \
                "NOT_LEADER_OR_FOLLOWER off the leader"
        gaps_before = {n: c[n].metrics().total("skiff_produce_sequence_gaps_total") for n in followers}
        c.stop(leader)

        def refused_as_a_gap():
            # Until a follower leads, and has the replicas in sync that a
            # leader elected a moment ago waits for (each refusal until
            # then is remembered as well), and refuses the batch for the
            # gap (the same code as off the leader: the metric tells).
            for n in followers:
                err, _ = conns[n].produce(topic_name, 0, batch(pid, 0, 2, 1, b"a"))
                assert err in (6, 19), f"broker {n} answered {err} past the refused batch"
                if c[n].metrics().total("skiff_produce_sequence_gaps_total") > gaps_before[n]:
                    return n
            return None
        now = skiff.wait_until(refused_as_a_gap, 30, interval=0.2,
                               what="a follower to lead and refuse the gap")
        err, first = conns[now].produce(topic_name, 0, batch(pid, 0, 0, 2, b"a"))
        assert err == 0
        assert conns[now].produce(topic_name, 0, batch(pid, 0, 2, 1, b"a")) == (0, first + 2)
    finally:
        for conn in conns.values():
            conn.close()
    msgs, _, _ = skiff.read_partition_to_end(c[followers[0]].bootstrap, topic_name, 0)
    assert [m.value() for m in msgs] == [b"a-0", b"a-1", b"a-2"]


class SeqProducer(threading.Thread):
    """An idempotent librdkafka producer writing value b"<partition>:<n>"
    with n counting up per partition, until stopped."""

    def __init__(self, bootstrap, topic):
        super().__init__(daemon=True)
        self.topic = topic
        self.p = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 120000,
            "request.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 200,
        })
        self.next = [0] * PARTITIONS
        self.errors = []
        self.acked = 0
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def _cb(self, err, msg):
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked += 1

    def run(self):
        i = 0
        while not self.stop_flag.is_set():
            part = i % PARTITIONS
            i += 1
            value = b"%d:%d" % (part, self.next[part])
            try:
                self.p.produce(self.topic, value=value, partition=part, on_delivery=self._cb)
            except BufferError:
                self.p.poll(0.1)
                i -= 1
                continue
            self.next[part] += 1
            self.p.poll(0)
            if i % 50 == 0:
                time.sleep(0.005)
        left = self.p.flush(150)
        assert left == 0, f"{left} messages never delivered"


def test_idempotent_producer_through_a_broker_crash_writes_each_message_once(
        broker_factory, topic_name):
    b = broker_factory(args=["--log-flush-interval-messages", "1"])
    skiff.create_topic(skiff.admin_client(b), topic_name, PARTITIONS)
    prod = SeqProducer(b.bootstrap, topic_name)
    prod.start()
    skiff.wait_until(lambda: prod.acked >= 3000, 60, what="3000 acks before the crash")
    b.kill()
    time.sleep(1.0)  # the producer sees the broker gone and queues retries
    b.start()
    acked_at_restart = prod.acked
    skiff.wait_until(lambda: prod.acked >= acked_at_restart + 3000, 120,
                     what="3000 more acks after the restart")
    prod.stop_flag.set()
    prod.join(180)
    assert not prod.is_alive()
    assert prod.errors == [], f"delivery errors: {prod.errors[:5]}"

    for part in range(PARTITIONS):
        msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, part)
        want = prod.next[part]
        values = [m.value() for m in msgs]
        expected = [b"%d:%d" % (part, n) for n in range(want)]
        if values != expected:
            seen = [int(v.split(b":")[1]) for v in values]
            dups = len(seen) - len(set(seen))
            missing = sorted(set(range(want)) - set(seen))[:10]
            raise AssertionError(
                f"partition {part}: {len(values)} messages for {want} sent, "
                f"{dups} duplicates, first missing {missing}")
        assert (low, high) == (0, want)
