"""Partition replication: every partition of an RF 3 topic is a Raft group
whose log is the partition log, hosted by the three brokers.

Proves, with real processes and confluent-kafka:
- an idempotent `acks=all` producer running throughout loses no
  acknowledged message, duplicates none and keeps each partition's order,
  while the broker leading the most partitions is SIGKILLed and restarted,
  another is SIGSTOPped for 10 s, and a third is wiped and catches up from
  the others (failover time measured: SIGKILL until produce to each of the
  killed leader's partitions succeeds again);
- a minority (two of three brokers SIGSTOPped) acknowledges no `acks=all`
  write, and produce recovers once the brokers resume;
- a network partition (one broker's gRPC links cut with iptables on lo,
  the broker still running and reachable by clients): the majority keeps
  serving acks=all writes on every partition, the isolated broker
  acknowledges none, and after healing every replica holds the same log with
  every acknowledged record and without the write sent to the minority;
- Metadata shows each partition's Raft leader, its epoch and a full ISR;
- retention applies to every replica of a replicated partition, and a wiped
  replica catches up to exactly the retained records;
- the brokers share a peer token: one started with another token is refused
  by the others (and refuses them), never joins, and the two others serve a
  replicated topic meanwhile; with the right token it joins.
"""

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

import skiff

pytestmark = pytest.mark.serial

PARTITIONS = 12


def create(bootstrap: str, name: str, partitions: int, rf: int, config=None, timeout: float = 60.0):
    admin = skiff.admin_client(bootstrap)
    fut = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf,
                                        config=config or {})],
                              request_timeout=timeout, operation_timeout=timeout)[name]
    fut.result(timeout=timeout)


def wait_in_sync(c: skiff.Cluster, topic: str, partitions: int, timeout: float = 90.0) -> dict:
    """Until every live broker reports the same leader for every partition,
    a live leader, and the full replica set in sync. Returns the metadata."""
    alive = {b.node_id for b in c.alive()}

    def ok():
        seen = []
        for n in sorted(alive):
            try:
                t = c.metadata(n, [topic])["topics"].get(topic)
            except (OSError, skiff.BrokerError):
                return False
            if not t or len(t) != partitions:
                return False
            for leader, replicas, isr in t.values():
                if leader not in alive or sorted(isr) != sorted(replicas):
                    return False
            seen.append(t)
        return seen[0] if all(s == seen[0] for s in seen) else False
    return skiff.wait_until(ok, timeout, interval=0.2, what=f"{topic}: every replica in sync")


class _EpochBumps(logging.Handler):
    """Keeps librdkafka's idempotence log lines that tell of an epoch bump
    or a producer id reset (both renumber unacknowledged messages)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        line = record.getMessage()
        if "-> DrainBump" in line or "-> DrainReset" in line or "bumped epoch" in line:
            self.lines.append(line)


class Workload:
    """An idempotent acks=all producer sending throughout, recording every
    acknowledgement (partition, offset, sequence number) from its delivery
    callbacks, on its own thread.

    It also records librdkafka's epoch bumps (its "eos" debug log). A bump
    renumbers every unacknowledged message of every partition, so a batch
    stored but not yet acknowledged (its request timed out in a failover)
    is stored again: the broker must never answer what makes librdkafka
    bump (a sequence gap as OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID,
    a permanent error), and `check` asserts it did not."""

    def __init__(self, bootstrap: str, topic: str, partitions: int):
        self.topic = topic
        self.partitions = partitions
        self.bumps = _EpochBumps()
        log = logging.getLogger(f"rdkafka.workload.{topic}")
        log.propagate = False
        log.setLevel(logging.DEBUG)
        log.addHandler(self.bumps)
        self.producer = Producer({
            "bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
            "linger.ms": 5, "message.timeout.ms": 180000, "retry.backoff.ms": 50,
            "retry.backoff.max.ms": 500, "topic.metadata.refresh.interval.ms": 2000,
            "debug": "eos", "logger": log,
        })
        self.lock = threading.Lock()
        self.acked = defaultdict(list)     # partition -> [(offset, seq)]
        self.ack_times = defaultdict(list)  # partition -> [(sent_at, acked_at)]
        self.failed = []
        self.sent = 0
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_delivery(self, sent_at):
        def cb(err, msg):
            # An exception escaping a confluent-kafka callback resurfaces
            # later as a SystemError somewhere unrelated: record it instead.
            try:
                now = time.monotonic()
                with self.lock:
                    if err is not None:
                        self.failed.append(err)
                        return
                    p = msg.partition()
                    self.acked[p].append((msg.offset(), int(msg.key())))
                    self.ack_times[p].append((sent_at, now))
            except Exception as e:  # noqa: BLE001 - reported by the test's assertions
                with self.lock:
                    self.failed.append(f"delivery callback raised {e!r}")
        return cb

    def _run(self):
        seq = 0
        while not self.stop_flag.is_set():
            p = seq % self.partitions
            try:
                self.producer.produce(self.topic, key=str(seq).encode(), value=f"value-{seq}".encode(),
                                      partition=p, on_delivery=self._on_delivery(time.monotonic()))
                seq += 1
                self.sent = seq
            except BufferError:
                pass
            self.producer.poll(0.002)

    def start(self):
        self.thread.start()
        return self

    def finish(self, timeout: float = 120.0):
        self.stop_flag.set()
        self.thread.join(30)
        left = self.producer.flush(timeout)
        assert left == 0, f"{left} messages still unacknowledged after {timeout}s"

    def acked_count(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acked.values())

    def first_ack_sent_after(self, partition: int, t0: float):
        """When the first message sent after t0 to `partition` was acknowledged."""
        with self.lock:
            times = [a for s, a in self.ack_times[partition] if s > t0]
        return min(times) if times else None

    def check(self, got: dict) -> int:
        """Asserts that every acknowledged message is in `got` (read_all's
        partition -> [(offset, seq)]) at the offset it was acknowledged at,
        that none is stored twice and each partition is in order; returns
        how many acknowledgements were checked."""
        assert not self.failed, f"{len(self.failed)} deliveries failed: {self.failed[:3]}"
        assert not self.bumps.lines, f"librdkafka bumped its epoch: {self.bumps.lines[:3]}"
        checked = 0
        for p in range(self.partitions):
            seqs = [seq for _, seq in got.get(p, [])]
            dups = [s for s, n in Counter(seqs).items() if n > 1]
            assert not dups, f"partition {p}: duplicated sequence numbers {dups[:10]}"
            assert seqs == sorted(seqs), f"partition {p}: order broken"
            stored = dict((seq, off) for off, seq in got.get(p, []))
            for off, seq in self.acked.get(p, []):
                assert seq in stored, f"partition {p}: acknowledged seq {seq} (offset {off}) is lost"
                # librdkafka may report an acknowledgement without its offset
                # (-1, or None when it inferred the batch was persisted from a
                # later batch's success after a timed-out request).
                assert off is None or off < 0 or stored[seq] == off, \
                    f"partition {p}: acknowledged seq {seq} at offset {off} is at {stored[seq]} now"
                checked += 1
        return checked

    def wait_progress(self, n: int = 200, timeout: float = 90.0):
        """Until n more messages are acknowledged."""
        target = self.acked_count() + n
        skiff.wait_until(lambda: self.acked_count() >= target, timeout, interval=0.05,
                         what=f"{n} more acknowledged messages")


def read_all(bootstrap: str, topic: str, partitions: int, timeout: float = 120.0) -> dict:
    """Every message of every partition, up to the end (partition EOF; the
    log may end with Raft's control batches, which clients skip)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-check",
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "auto.offset.reset": "earliest", "check.crcs": True})
    got = defaultdict(list)
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        eof = set()
        deadline = time.monotonic() + timeout
        while len(eof) < partitions:
            assert time.monotonic() < deadline, f"reading timed out; at EOF: {sorted(eof)}"
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise AssertionError(f"consumer error: {m.error()}")
                eof.discard(m.partition())
                got[m.partition()].append((m.offset(), int(m.key())))
    finally:
        c.close()
    return got


def stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (SIGSTOP is delivered to each
    thread when it next runs, not at kill())."""
    tasks = os.listdir(f"/proc/{pid}/task")
    for t in tasks:
        with open(f"/proc/{pid}/task/{t}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        if state not in ("T", "t"):
            return False
    return True


def sigstop(pid: int):
    os.kill(pid, signal.SIGSTOP)
    skiff.wait_until(lambda: stopped(pid), 10, interval=0.01, what=f"pid {pid} to stop")


def leader_counts(c: skiff.Cluster, topic: str) -> Counter:
    via = c.alive()[0].node_id
    parts = c.metadata(via, [topic])["topics"][topic]
    return Counter(leader for leader, _, _ in parts.values())


def test_acknowledged_writes_survive_kill_stop_and_wipe(cluster_factory, topic_name):
    started = time.monotonic()
    c = cluster_factory(3)
    create(c[1].bootstrap, topic_name, PARTITIONS, 3, {"min.insync.replicas": "2"})
    md = wait_in_sync(c, topic_name, PARTITIONS)
    print(f"\nleaders at creation: {dict(leader_counts(c, topic_name))}")
    assert set(leader for leader, _, _ in md.values()) == {1, 2, 3}, md

    w = Workload(c.bootstrap, topic_name, PARTITIONS).start()
    faults = []
    try:
        w.wait_progress(500)

        # 1. SIGKILL the broker leading the most partitions, then restart it.
        parts = c.metadata(1, [topic_name])["topics"][topic_name]
        victim = leader_counts(c, topic_name).most_common(1)[0][0]
        led = [p for p, (leader, _, _) in parts.items() if leader == victim]
        t0 = time.monotonic()
        c.kill(victim)
        faults.append(f"SIGKILL broker {victim} (leader of {len(led)} partitions)")

        def failed_over():
            return all(w.first_ack_sent_after(p, t0) is not None for p in led)
        skiff.wait_until(failed_over, 90, interval=0.05, what="produce to the killed leader's partitions")
        failover = sorted(w.first_ack_sent_after(p, t0) - t0 for p in led)
        c.start_one(victim)
        faults.append(f"restart broker {victim}")
        wait_in_sync(c, topic_name, PARTITIONS)
        w.wait_progress(200)

        # 2. SIGSTOP another broker for 10 s, then let it resume.
        paused = next(n for n in (1, 2, 3) if n != victim)
        sigstop(c[paused].pid)
        faults.append(f"SIGSTOP broker {paused} for 10 s")
        try:
            # The fault's length is the point here, not a wait for a state.
            time.sleep(10)
            # The others kept serving meanwhile.
            w.wait_progress(100, timeout=60)
        finally:
            os.kill(c[paused].pid, signal.SIGCONT)
        wait_in_sync(c, topic_name, PARTITIONS)
        w.wait_progress(200)

        # 3. Wipe the third broker's data dir: it must catch up from the others.
        wiped = next(n for n in (1, 2, 3) if n not in (victim, paused))
        c.stop(wiped)
        c.wipe(wiped)
        c.start_one(wiped)
        faults.append(f"wipe broker {wiped} and restart it")
        wait_in_sync(c, topic_name, PARTITIONS)
        w.wait_progress(200)
    finally:
        w.finish()

    # The wiped broker holds what the others hold (commit index = HW).
    def same_hw():
        hws = []
        for b in c.brokers:
            m = b.metrics()
            hws.append({p: m.total(r"skiff_log_end_offset", topic=topic_name, partition=str(p))
                        for p in range(PARTITIONS)})
        return all(h == hws[0] for h in hws)
    skiff.wait_until(same_hw, 60, interval=0.2, what="every replica at the same high watermark")

    checked = w.check(read_all(c.bootstrap, topic_name, PARTITIONS))
    assert checked == w.sent, (checked, w.sent)
    print(f"faults injected: {len(faults)}: " + "; ".join(faults))
    print(f"messages acknowledged and checked: {checked} (no loss, no duplicates, order intact)")
    print(f"failover after SIGKILL of a leader ({len(failover)} partitions): "
          f"p50 {statistics.median(failover):.2f}s, max {max(failover):.2f}s")
    print(f"test time {time.monotonic() - started:.1f}s")
    elections = sum(b.metrics().total(r"skiff_partition_elections_total") for b in c.brokers)
    assert elections >= 1


def test_a_stopping_broker_hands_its_leaderships_over_first(cluster_factory, topic_name):
    """SIGTERM (a pod deleted in a roll): the broker hands each partition it
    leads to an in-sync replica before it stops (controlled shutdown), so
    no write waits out the followers' lease as after a SIGKILL (7-9 s)."""
    c = cluster_factory(3)
    create(c[1].bootstrap, topic_name, PARTITIONS, 3, {"min.insync.replicas": "2"})
    wait_in_sync(c, topic_name, PARTITIONS)
    elected = time.monotonic()
    w = Workload(c.bootstrap, topic_name, PARTITIONS).start()
    try:
        # openraft's leader refuses votes for its lease (4 s) after it was
        # elected, so a hand-over right after creation would wait that
        # out; a roll meets leaders elected long before.
        skiff.wait_until(lambda: time.monotonic() - elected > 5.0 and w.acked_count() > 500, 60,
                         interval=0.1, what="leaders older than their lease, and traffic")
        victim = leader_counts(c, topic_name).most_common(1)[0][0]
        parts = c.metadata(1, [topic_name])["topics"][topic_name]
        led = [p for p, (leader, _, _) in parts.items() if leader == victim]
        t0 = time.monotonic()
        c.stop(victim)
        t1 = time.monotonic()
        w.wait_progress(500)
        assert all(leader != victim for leader, _, _ in
                   c.metadata(c.alive()[0].node_id, [topic_name])["topics"][topic_name].values())
    finally:
        w.finish()
    log = c[victim].log_text()
    m = re.search(r"controlled shutdown: partition leaderships handed over led=(\d+) moved=(\d+) took_ms=(\d+)", log)
    assert m, "no controlled-shutdown line in the broker's log"
    assert int(m[1]) == len(led) and int(m[2]) == len(led), m[0]
    with w.lock:
        waits = [acked - sent for p in led for sent, acked in w.ack_times[p] if t0 <= sent <= t1]
    assert waits, "nothing was sent to the stopping broker's partitions while it stopped"
    print(f"\nstopped broker {victim} leading {len(led)} partitions in {t1 - t0:.2f} s "
          f"(hand-over {m[3]} ms); longest produce wait meanwhile {max(waits):.2f} s")
    # Below the 4 s lease: no partition waited for an election timeout.
    assert max(waits) < 3.0, max(waits)
    checked = w.check(read_all(c.bootstrap, topic_name, PARTITIONS))
    assert checked == w.sent


@pytest.mark.parametrize("in_flight", [5, 1000000])
def test_a_pipelined_producer_keeps_each_partitions_order(cluster_factory, topic_name, in_flight):
    """librdkafka keeps several Produce requests in flight on a connection
    (up to 1000000 by default without idempotence). The broker handles up
    to 64 at once (only their commit waits overlap), and a connection's
    batches must still reach each partition in request order: without
    retries (no faults here) every partition holds exactly what was sent to
    it, in the order sent."""
    c = cluster_factory(3)
    create(c[1].bootstrap, topic_name, 3, 3)
    wait_in_sync(c, topic_name, 3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0,
                  "enable.idempotence": False, "max.in.flight.requests.per.connection": in_flight,
                  "batch.num.messages": 20})
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(err)
    n = 30000
    for i in range(n):
        while True:
            try:
                p.produce(topic_name, key=str(i).encode(), value=b"v", partition=i % 3,
                          on_delivery=cb)
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    assert p.flush(120) == 0
    assert not errors, errors[:3]
    got = read_all(c.bootstrap, topic_name, 3)
    for part in range(3):
        seqs = [s for _, s in got.get(part, [])]
        assert seqs == list(range(part, n, 3)), f"partition {part}: order or content differs"
    pipelined = sum(b.metrics().total("skiff_produce_pipelined_total") for b in c.brokers)
    print(f"{n} messages in order on 3 partitions; {pipelined:.0f} produce requests pipelined")
    assert pipelined > 0


def test_minority_refuses_acks_all_and_recovers(cluster_factory, topic_name):
    c = cluster_factory(3)
    create(c[1].bootstrap, topic_name, 3, 3, {"min.insync.replicas": "2"})
    wait_in_sync(c, topic_name, 3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 0,
                  "message.timeout.ms": 6000})
    results = []

    def cb(err, msg):
        results.append(err)
    for i in range(30):
        p.produce(topic_name, value=b"before", partition=i % 3, on_delivery=cb)
    assert p.flush(30) == 0 and results and not any(results), results

    paused = [2, 3]
    results.clear()
    try:
        for n in paused:
            sigstop(c[n].pid)
        for i in range(30):
            p.produce(topic_name, value=b"minority", partition=i % 3, on_delivery=cb)
        assert p.flush(60) == 0
        acked = [r for r in results if r is None]
        assert len(results) == 30 and not acked, \
            f"{len(acked)} writes acknowledged by a minority: {results}"
        print(f"\nminority: 30 acks=all writes refused: {Counter(str(r.name()) for r in results)}")
    finally:
        for n in paused:
            os.kill(c[n].pid, signal.SIGCONT)
    resumed = time.monotonic()
    results.clear()

    def produced():
        results.clear()
        for i in range(3):
            p.produce(topic_name, value=b"after", partition=i, on_delivery=cb)
        p.flush(10)
        return len(results) == 3 and not any(results)
    skiff.wait_until(produced, 60, interval=0.2, what="acks=all produce after the brokers resumed")
    print(f"produce to every partition succeeded {time.monotonic() - resumed:.2f}s after SIGCONT")


NOBODY = 65534


def _iptables(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["iptables", "-w", *args], capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def rpc_partitioned(isolated: skiff.Broker, isolated_rpc: int, peer_rpcs: list[int]):
    """Cuts the broker-to-broker links of one broker on the loopback
    interface: packets to its gRPC port are dropped, and so are the packets
    its own process (matched by uid) sends to the other brokers' gRPC ports.
    Client traffic is untouched. Dropped, not refused: a real partition."""
    rules = [["-o", "lo", "-p", "tcp", "--dport", str(isolated_rpc), "-j", "DROP"]]
    rules += [["-o", "lo", "-p", "tcp", "--dport", str(p), "-m", "owner", "--uid-owner",
               str(isolated.run_as_uid), "-j", "DROP"] for p in peer_rpcs]
    added = []
    try:
        for r in rules:
            res = _iptables("-I", "OUTPUT", *r)
            assert res.returncode == 0, f"iptables {r}: {res.stderr}"
            added.append(r)
        yield
    finally:
        for r in added:
            _iptables("-D", "OUTPUT", *r)


def raw_produce(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes,
                timeout_ms: int = 5000) -> int:
    """Produce v3 with acks=-1 of one record, straight to one broker; its
    error code (the broker answers after at most timeout_ms)."""
    def s16(v: str) -> bytes:
        return struct.pack(">h", len(v)) + v.encode()
    batch = skiff.record_batch(0, [(key, value)], int(time.time() * 1000))
    body = (struct.pack(">hhi", -1, -1, timeout_ms) + struct.pack(">i", 1) + s16(topic)
            + struct.pack(">ii", 1, partition) + struct.pack(">i", len(batch)) + batch)
    header = struct.pack(">hhi", 0, 3, 77) + s16("raw-minority")
    host, port = bootstrap.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout_ms / 1000 + 30) as sock:
        sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
        size = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))[0]
        resp = sock.recv(size, socket.MSG_WAITALL)
    assert struct.unpack(">i", resp[:4])[0] == 77
    pos = 4 + 4  # correlation id, topics count
    pos += 2 + struct.unpack(">h", resp[pos:pos + 2])[0]  # topic name
    pos += 4 + 4  # partitions count, partition index
    return struct.unpack(">h", resp[pos:pos + 2])[0]


def test_a_partitioned_minority_refuses_acks_all_while_the_majority_serves(
        cluster_factory, topic_name, tmp_path):
    """A network partition, not a paused process: broker 3's gRPC links are
    cut (iptables on lo) while it keeps running and answering clients. The
    majority elects new leaders for broker 3's partitions and keeps taking
    acks=all writes; broker 3, still believing it leads, acknowledges none
    (NOT_ENOUGH_REPLICAS or a timeout). After the links heal nothing
    diverges: every replica holds the same log, every acknowledged record is
    there, and the write sent to the minority is not."""
    if os.geteuid() != 0:
        pytest.skip("needs root for iptables")
    if _iptables("-L", "OUTPUT", "-n").returncode != 0:
        pytest.skip("iptables is not usable here")
    c = cluster_factory(3, start=False)
    iso = c[3]
    iso.run_as_uid = NOBODY
    # pytest's tmp dirs are private to root: the data dir of broker 3 lives
    # in a directory its uid can reach.
    iso.data_dir = Path(tempfile.mkdtemp(prefix="skiff-e2e-nobody-"))
    os.chmod(iso.data_dir, 0o755)
    os.chown(iso.data_dir, NOBODY, NOBODY)
    # And its copy of the cluster's peer token, readable by that uid only.
    token = iso.data_dir / "peer-token"
    shutil.copyfile(c.peer_token_file, token)
    os.chown(token, NOBODY, NOBODY)
    os.chmod(token, 0o400)
    iso.args[iso.args.index("--rpc-peer-token-file") + 1] = str(token)
    try:
        c.start()
        create(c[1].bootstrap, topic_name, 3, 3, {"min.insync.replicas": "2"})
        leaders = {p: v[0] for p, v in wait_in_sync(c, topic_name, 3).items()}
        mine = next(p for p, leader in leaders.items() if leader == 3)
        key = iter(range(10**6))
        acked = set()

        def produce_all(bootstrap: str, timeout: float) -> bool:
            """One acks=all record to each partition; True if all were acknowledged."""
            p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                          "message.timeout.ms": int(timeout * 1000)})
            errs = []
            for part in range(3):
                k = next(key)
                p.produce(topic_name, key=str(k).encode(), value=b"v", partition=part,
                          on_delivery=lambda e, m, k=k: errs.append(e) if e else acked.add(k))
            p.flush(timeout + 10)
            return not errs

        assert produce_all(c.bootstrap, 30)
        majority = f"{c[1].bootstrap},{c[2].bootstrap}"
        with rpc_partitioned(iso, c.rpc_ports[2], c.rpc_ports[:2]):
            cut = time.monotonic()
            skiff.wait_until(lambda: produce_all(majority, 5), 90, interval=0.5,
                             what="the majority to take acks=all writes on every partition")
            failover = time.monotonic() - cut
            # The minority: broker 3 asked directly for the partition it led.
            code = raw_produce(iso.bootstrap, topic_name, mine, b"999999", b"minority")
            assert code in (19, 7, 6), f"the minority answered error code {code}"
            assert iso.alive()
            print(f"\nmajority serving every partition {failover:.1f}s after the cut; "
                  f"the minority answered error {code} to an acks=all write")
        healed = time.monotonic()
        wait_in_sync(c, topic_name, 3, timeout=120)
        skiff.wait_until(lambda: produce_all(c.bootstrap, 5), 60, interval=0.5,
                         what="acks=all writes after the partition healed")
        print(f"in sync and writable {time.monotonic() - healed:.1f}s after the links healed")

        def same_logs():
            ends = [[b.metrics().total(r"skiff_log_end_offset", topic=topic_name,
                                       partition=str(p)) for p in range(3)] for b in c.brokers]
            return all(e == ends[0] for e in ends)
        skiff.wait_until(same_logs, 60, interval=0.5, what="every replica at the same log end")
        got = read_all(c.bootstrap, topic_name, 3)
        keys = [k for part in got.values() for _, k in part]
        assert 999999 not in keys, "the write sent to the minority survived"
        assert len(keys) == len(set(keys)), "duplicates"
        assert acked <= set(keys), f"acknowledged but lost: {sorted(acked - set(keys))[:10]}"
    finally:
        c.close()
        shutil.rmtree(iso.data_dir, ignore_errors=True)


def test_a_broker_without_the_clusters_peer_token_is_refused_by_its_peers(
        cluster_factory, topic_name):
    """Broker-to-broker requests carry the cluster's peer token, and a
    broker refuses any peer that does not send it: broker 3, started with
    another token, neither joins the cluster (its registration and votes
    are refused) nor accepts the others' messages, while brokers 1 and 2
    serve a replicated topic to a real client. With the cluster's token it
    joins and catches up."""
    c = cluster_factory(3, start=False)
    intruder = c.workdir / "another-token"
    intruder.write_text("not-this-clusters-token\n")
    args = c[3].args
    args[args.index("--rpc-peer-token-file") + 1] = str(intruder)
    c.start_first(2)
    c.start_one(3, wait_ready=False)

    line = "refused a broker-to-broker request without this cluster's peer token"

    def refused_both_ways():
        # Broker 3 may never serve HTTP (it cannot join); its log tells.
        m = {n: c[n].metrics().total("skiff_rpc_unauthenticated_total") for n in (1, 2)}
        return m if all(v > 0 for v in m.values()) and line in c[3].log_text() else None
    refused = skiff.wait_until(refused_both_ways, 30, interval=0.3,
                               what="brokers 1 and 2 refusing broker 3, and broker 3 them")
    assert line in c[1].log_text()
    assert sorted(c.metadata(1)["brokers"]) == [1, 2], "broker 3 never registered"

    create(c[1].bootstrap, topic_name, 2, 2, {"min.insync.replicas": "2"})
    p = Producer({"bootstrap.servers": c[1].bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(200):
        p.produce(topic_name, key=str(i).encode(), value=b"v", partition=i % 2)
    assert p.flush(60) == 0
    assert sum(len(v) for v in read_all(c[1].bootstrap, topic_name, 2).values()) == 200

    c[3].stop()
    args[args.index("--rpc-peer-token-file") + 1] = str(c.peer_token_file)
    c.start_one(3)
    c.wait_converged()
    assert sorted(c.metadata(3)["brokers"]) == [1, 2, 3]
    print(f"\nrequests from broker 3 refused by brokers 1 and 2: {refused}")


def test_deleted_topic_stops_its_groups_and_a_new_one_starts_empty(cluster_factory, topic_name):
    c = cluster_factory(3)
    create(c[2].bootstrap, topic_name, 3, 3)
    wait_in_sync(c, topic_name, 3)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(30):
        p.produce(topic_name, key=str(i).encode(), value=b"old", partition=i % 3)
    assert p.flush(60) == 0
    admin = skiff.admin_client(c[3].bootstrap)
    admin.delete_topics([topic_name], operation_timeout=30)[topic_name].result(timeout=30)

    def gone():
        return all(topic_name not in c.metadata(n)["topics"] for n in (1, 2, 3))
    skiff.wait_until(gone, 60, interval=0.2, what="the topic gone from every broker")
    # Same name, new topic id: new groups, no old records.
    create(c[1].bootstrap, topic_name, 3, 3)
    wait_in_sync(c, topic_name, 3)
    for i in range(30):
        p.produce(topic_name, key=str(i).encode(), value=b"new", partition=i % 3)
    assert p.flush(60) == 0
    got = read_all(c.bootstrap, topic_name, 3)
    assert sum(len(v) for v in got.values()) == 30, {k: len(v) for k, v in got.items()}
    for b in c.brokers:
        assert "panicked" not in b.log_text()


def test_retention_applies_to_every_replica_and_a_wiped_one_keeps_what_is_retained(
        cluster_factory, topic_name):
    """retention.bytes on an RF 3 topic: every replica deletes its old
    segments (a snapshot at the retention point, then a Raft purge), the log
    start offset moves on all three, consumers from the beginning read a
    contiguous tail, and a wiped broker catches up to exactly the retained
    records rather than to an empty log at the high watermark."""
    seg, keep = 16384, 4 * 16384
    c = cluster_factory(3, args=["--log-retention-check-interval-ms", "500"])
    create(c[1].bootstrap, topic_name, 1, 3,
           config={"segment.bytes": str(seg), "retention.bytes": str(keep)})
    wait_in_sync(c, topic_name, 1)
    p = Producer({"bootstrap.servers": c.bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": True, "batch.size": 4096})
    errs = []
    n = 3000
    for i in range(n):
        p.produce(topic_name, key=str(i).encode(), value=b"r" * 200, partition=0,
                  on_delivery=lambda e, m: e and errs.append(e))
        if i % 100 == 99:
            p.poll(0)
    assert p.flush(60) == 0 and not errs, errs[:3]

    def starts():
        return [b.metrics().total(r"skiff_partition_log_start_offset", topic=topic_name,
                                  partition="0") for b in c.brokers]
    skiff.wait_until(lambda: all(s > 0 for s in starts()), 60, interval=0.5,
                     what="retention to move the log start on every replica")

    def on_disk(b):
        d = b.data_dir / "logs" / f"{topic_name}-0"
        return sum(f.stat().st_size for f in d.glob("*.log"))
    # Retention runs every 500 ms; writes were still landing at the first pass.
    skiff.wait_until(lambda: all(on_disk(b) <= keep + 2 * seg for b in c.brokers), 60,
                     interval=0.5, what=f"every replica down to retention.bytes={keep}")

    def tail_is_contiguous(bootstrap):
        got = read_all(bootstrap, topic_name, 1)[0]
        keys = [k for _, k in got]
        assert keys and keys[-1] == n - 1, keys[-3:]
        assert keys == list(range(keys[0], n)), "the retained tail has a gap"
        assert keys[0] > 0, "nothing was deleted"
        return keys[0]
    first = tail_is_contiguous(c.bootstrap)

    # Wipe a follower: it catches up to the retained records, not to nothing.
    leader = wait_in_sync(c, topic_name, 1)[0][0]
    follower = next(b.node_id for b in c.brokers if b.node_id != leader)
    c.stop(follower)
    c.wipe(follower)
    c.start_one(follower)
    wait_in_sync(c, topic_name, 1)
    skiff.wait_until(lambda: on_disk(c[follower]) > keep // 2, 60, interval=0.5,
                     what="the wiped follower to hold the retained records")
    s = starts()
    assert s[follower - 1] == s[leader - 1], f"log start offsets per broker: {s}"
    assert abs(on_disk(c[follower]) - on_disk(c[leader])) <= seg, \
        (on_disk(c[follower]), on_disk(c[leader]))
    assert tail_is_contiguous(c.bootstrap) >= first
