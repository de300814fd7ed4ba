"""Helpers shared by the end-to-end tests and the benchmark driver.

`Broker` runs one `skiff-broker` process on free ports of 127.0.0.1 with its
own data directory, captures its stderr/stdout to a file, and waits until
`GET /readyz` answers 200.  Everything else here is small glue around real
Kafka clients (confluent-kafka) plus a Prometheus text parser and a CRC-32C.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

BIN_ENV = "SKIFF_BROKER_BIN"

# Every Broker that is currently running; conftest prints their log tails
# when a test fails.
LIVE_BROKERS: list["Broker"] = []


class BrokerError(RuntimeError):
    pass


def broker_bin() -> str:
    path = os.environ.get(BIN_ENV)
    if not path:
        raise BrokerError(
            f"{BIN_ENV} is not set: point it at the skiff-broker binary, e.g. "
            f"{BIN_ENV}=$PWD/target/release/skiff-broker (make e2e does this)"
        )
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        raise BrokerError(f"{BIN_ENV}={path} is not an executable file (did `make release` run?)")
    return path


def operator_bin() -> str:
    """`$SKIFF_OPERATOR_BIN`, else the skiff-operator next to the broker binary.
    `make e2e` points it at the debug build the unit tests leave in
    target/debug, so CI compiles the operator once, not twice."""
    path = os.environ.get("SKIFF_OPERATOR_BIN") or str(Path(broker_bin()).parent / "skiff-operator")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise BrokerError(f"{path} is not an executable skiff-operator "
                          "(make release or make unit-build builds it; or set SKIFF_OPERATOR_BIN)")
    return path


# Brokers' ports come from below the kernel's ephemeral range (32768 and up
# by default), where clients' outgoing connections get theirs: a stopped
# broker's ports stay free for its restart. Each pytest-xdist worker draws
# from its own slice, and a process never hands a port out twice, so no two
# brokers of a run share one even while one of them is stopped.
_PORTS = range(20000, 32000)
_handed_out: set[int] = set()


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = len(_PORTS) // max(workers, 1)
    start = _PORTS.start + index * width
    return range(start, start + width)


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> list[int]:
    """n distinct free ports of this process's slice, never handed out before."""
    candidates = [p for p in _port_slice() if p not in _handed_out]
    random.shuffle(candidates)
    socks = []
    try:
        for port in candidates:
            if len(socks) == n:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        if len(socks) < n:
            raise BrokerError(f"fewer than {n} free ports left in {_port_slice()}")
        ports = [s.getsockname()[1] for s in socks]
        _handed_out.update(ports)
        return ports
    finally:
        for s in socks:
            s.close()


def wait_until(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll pred() until it returns a truthy value; return it, or raise
    AssertionError after `timeout` seconds (the last exception, if any, is
    chained)."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - we re-raise below
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.0f}s waiting for {what}"
            if last_exc is not None:
                raise AssertionError(f"{msg}; last error: {last_exc!r}") from last_exc
            raise AssertionError(msg)
        time.sleep(interval)


class Broker:
    """One skiff-broker process.

    args: extra command line arguments (list of str), appended after the
    mandatory ones.  env: extra environment variables.  The data dir and ports
    survive stop()/kill()/start() so restart() brings the same broker back.
    """

    def __init__(self, workdir, args=None, env=None, node_id: int = 0, name: str = "broker",
                 ready_timeout: float = 30.0):
        self.bin = broker_bin()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.node_id = node_id
        self.data_dir = self.workdir / f"{name}-data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / f"{name}.log"
        self.port, self.http_port = free_ports(2)
        self.args = list(args or [])
        self.env = dict(env or {})
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.start_count = 0
        # Byte offset of the log file at the most recent start(): log_since_start()
        self._log_mark = 0
        # Override of --listeners / --advertised-listeners (e.g. several
        # listeners with security protocols); the default is one PLAINTEXT.
        self.listeners: str | None = None
        # Run the broker as this uid (setpriv), so firewall rules can match
        # its own connections; its data dir must be writable by it.
        self.run_as_uid: int | None = None

    # ----------------------------------------------------------------- basics
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "broker not started"
        return self.proc.pid

    def command(self) -> list[str]:
        listener = self.listeners or f"PLAINTEXT://127.0.0.1:{self.port}"
        as_uid = [] if self.run_as_uid is None else [
            "setpriv", f"--reuid={self.run_as_uid}", f"--regid={self.run_as_uid}", "--clear-groups"]
        return [
            *as_uid,
            self.bin,
            "--node-id", str(self.node_id),
            "--listeners", listener,
            "--advertised-listeners", listener,
            "--data-dir", str(self.data_dir),
            "--http-addr", self.http_addr,
            *self.args,
        ]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -------------------------------------------------------------- lifecycle
    def start(self, wait_ready: bool = True):
        if self.alive():
            raise BrokerError("broker already running")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("NO_COLOR", "1")
        env.setdefault("RUST_BACKTRACE", "1")
        env.update(self.env)
        self._log_file = open(self.log_path, "ab")
        self._log_mark = self._log_file.tell()
        header = f"\n===== start #{self.start_count + 1}: {' '.join(self.command())}\n"
        self._log_file.write(header.encode())
        self._log_file.flush()
        self._log_mark = self._log_file.tell()
        self.proc = subprocess.Popen(
            self.command(), stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env,
        )
        self.start_count += 1
        if self not in LIVE_BROKERS:
            LIVE_BROKERS.append(self)
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float | None = None):
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(
                    f"{self.name} exited with code {self.proc.returncode} before becoming ready\n"
                    f"--- log tail ---\n{self.log_tail()}"
                )
            try:
                status, _ = self.http_get("/readyz", timeout=2)
                if status == 200:
                    return
                last = f"/readyz answered {status}"
            except OSError as e:
                last = repr(e)
            time.sleep(0.1)
        raise BrokerError(
            f"{self.name} not ready after {timeout:.0f}s (last: {last})\n"
            f"--- log tail ---\n{self.log_tail()}"
        )

    def _reap(self, timeout: float):
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is not None:
                if self._log_file:
                    self._log_file.close()
                    self._log_file = None
                if self in LIVE_BROKERS:
                    LIVE_BROKERS.remove(self)

    def stop(self, timeout: float = 30.0, sig=signal.SIGTERM) -> int:
        """Clean shutdown (SIGTERM by default). Returns the exit code; if the
        broker does not exit within `timeout`, it is SIGKILLed and BrokerError
        raised."""
        if self.proc is None or self.proc.poll() is not None:
            if self in LIVE_BROKERS:
                LIVE_BROKERS.remove(self)
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self._reap(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self._reap(30)
            raise BrokerError(
                f"{self.name} did not exit within {timeout:.0f}s of {signal.Signals(sig).name}; killed\n"
                f"--- log tail ---\n{self.log_tail()}"
            )

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self._reap(30)

    def restart(self, wait_ready: bool = True):
        self.stop()
        return self.start(wait_ready=wait_ready)

    def close(self):
        """Teardown: stop quietly, whatever state the broker is in."""
        try:
            self.stop(timeout=20)
        except BrokerError:
            pass

    # -------------------------------------------------------------------- logs
    def log_text(self) -> str:
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_since_start(self) -> str:
        """Log output of the current (latest) run only."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_mark)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 80) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -------------------------------------------------------------------- http
    def http_get(self, path: str, timeout: float = 10.0):
        url = f"http://{self.http_addr}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def http_get_full(self, path: str, timeout: float = 10.0):
        """(status, headers, body)"""
        url = f"http://{self.http_addr}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read().decode("utf-8", "replace")

    def metrics(self) -> "Metrics":
        status, body = self.http_get("/metrics")
        if status != 200:
            raise BrokerError(f"/metrics answered {status}: {body[:500]}")
        return Metrics.parse(body)

    # ---------------------------------------------------------------- process
    def proc_status(self) -> dict:
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
        return out

    def rss_bytes(self) -> int:
        v = self.proc_status()["VmRSS"]  # "12345 kB"
        return int(v.split()[0]) * 1024

    def cpu_seconds(self) -> float:
        """utime+stime of the broker process so far, in seconds."""
        with open(f"/proc/{self.pid}/stat") as f:
            stat = f.read()
        # comm may contain spaces; fields after the closing paren
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    # ------------------------------------------------------------------ files
    def partition_dir(self, topic: str, partition: int) -> Path:
        """The directory `<topic>-<partition>` somewhere under the data dir."""
        name = f"{topic}-{partition}"
        hits = [p for p in self.data_dir.rglob(name) if p.is_dir()]
        if not hits:
            raise AssertionError(
                f"no partition dir {name!r} under {self.data_dir}; tree:\n" + tree(self.data_dir)
            )
        assert len(hits) == 1, f"several dirs named {name}: {hits}"
        return hits[0]

    def segment_files(self, topic: str, partition: int) -> list[Path]:
        """`*.log` segment files of a partition, sorted by base offset."""
        d = self.partition_dir(topic, partition)
        return sorted(d.glob("*.log"), key=lambda p: segment_base(p))

    def __repr__(self):
        return f"<Broker {self.name} {self.bootstrap} http={self.http_addr}>"


SEGMENT_RE = re.compile(r"^(\d{20})\.log$")


def segment_base(path: Path) -> int:
    m = SEGMENT_RE.match(path.name)
    assert m, f"segment file name {path.name!r} is not <20-digit base offset>.log"
    return int(m.group(1))


def tree(root: Path, limit: int = 200) -> str:
    lines = []
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root)
        size = p.stat().st_size if p.is_file() else ""
        lines.append(f"  {rel}{'/' if p.is_dir() else ''} {size}")
        if len(lines) >= limit:
            lines.append("  ...")
            break
    return "\n".join(lines)


# --------------------------------------------------------------------- metrics
_SAMPLE_RE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$'
)
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape(v: str) -> str:
    return v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


class Metrics:
    """Parsed Prometheus text exposition: samples and # TYPE lines."""

    def __init__(self, samples, types, text):
        self.samples: list[tuple[str, dict, float]] = samples
        self.types: dict[str, str] = types
        self.text = text

    @classmethod
    def parse(cls, text: str) -> "Metrics":
        samples, types = [], {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    types[parts[2]] = parts[3].strip()
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                raise ValueError(f"unparseable metrics line: {raw!r}")
            labels = {}
            if m.group("labels"):
                pos, s = 0, m.group("labels")
                while pos < len(s):
                    lm = _LABEL_RE.match(s, pos)
                    if not lm:
                        raise ValueError(f"bad labels in metrics line: {raw!r}")
                    labels[lm.group(1)] = _unescape(lm.group(2))
                    pos = lm.end()
            v = m.group("value")
            value = float({"+Inf": "inf", "-Inf": "-inf", "NaN": "nan"}.get(v, v))
            samples.append((m.group("name"), labels, value))
        return cls(samples, types, text)

    def names(self) -> set[str]:
        return {n for n, _, _ in self.samples}

    def find(self, name_re: str, **labels) -> list[tuple[str, dict, float]]:
        """Samples whose name fully matches name_re and whose labels include
        all of `labels` (values compared exactly)."""
        rx = re.compile(name_re)
        return [
            (n, l, v) for n, l, v in self.samples
            if rx.fullmatch(n) and all(l.get(k) == want for k, want in labels.items())
        ]

    def with_label_value(self, value: str, name_re: str = r".*", ci: bool = True):
        """Samples having any label whose value equals `value`."""
        rx = re.compile(name_re)
        norm = (lambda s: s.lower()) if ci else (lambda s: s)
        return [
            (n, l, v) for n, l, v in self.samples
            if rx.fullmatch(n) and any(norm(x) == norm(value) for x in l.values())
        ]

    def total(self, name_re: str, **labels) -> float:
        return sum(v for _, _, v in self.find(name_re, **labels))


# --------------------------------------------------------------------- CRC-32C
def _crc32c_table():
    poly = 0x82F63B78
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ------------------------------------------------------- kafka record batches
def _zigzag_varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(base_offset: int, records: list[tuple[bytes | None, bytes | None]],
                 base_timestamp: int, corrupt_crc: bool = False, producer_id: int = -1,
                 producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """An uncompressed magic-2 record batch (Kafka on-disk/wire format); with
    a producer id, epoch and base sequence it is an idempotent producer's."""
    body = bytearray()
    for i, (key, value) in enumerate(records):
        rec = bytearray()
        rec += b"\x00"  # attributes
        rec += _zigzag_varint(0)  # timestamp delta
        rec += _zigzag_varint(i)  # offset delta
        for part in (key, value):
            if part is None:
                rec += _zigzag_varint(-1)
            else:
                rec += _zigzag_varint(len(part)) + part
        rec += _zigzag_varint(0)  # headers
        body += _zigzag_varint(len(rec)) + rec
    after_crc = struct.pack(
        ">hiqqqhii", 0, len(records) - 1, base_timestamp, base_timestamp, producer_id,
        producer_epoch, base_sequence, len(records)
    ) + bytes(body)
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", base_offset, len(after_length)) + after_length


# ------------------------------------------------------ confluent-kafka glue
def admin_client(broker, **extra):
    from confluent_kafka.admin import AdminClient
    # The admin client is a producer-type handle inside librdkafka; keep its
    # Metadata requests from auto-creating the topics the tests look up.
    conf = {"bootstrap.servers": broker.bootstrap if isinstance(broker, Broker) else broker,
            "allow.auto.create.topics": False}
    conf.update(extra)
    return AdminClient(conf)


def broker_config(broker, name: str) -> tuple[str, int]:
    """One config of a broker as DescribeConfigs (librdkafka) reports it:
    (value, source), the source as Kafka's ConfigSource code."""
    from confluent_kafka.admin import ConfigResource, ResourceType
    admin = admin_client(broker)
    res = ConfigResource(ResourceType.BROKER, str(broker.node_id))
    e = admin.describe_configs([res], request_timeout=30)[res].result(timeout=30)[name]
    return e.value, e.source


def create_topic(admin, name: str, partitions: int = 1, config: dict | None = None,
                 timeout: float = 60.0, wait_metadata: bool = True, replication_factor: int = 1):
    """CreateTopics and wait until Metadata shows all partitions with a leader."""
    from confluent_kafka.admin import NewTopic
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                  config=config or {})],
        request_timeout=timeout, operation_timeout=timeout,
    )[name]
    fut.result(timeout=timeout)
    if wait_metadata:
        wait_topic(admin, name, partitions, timeout=timeout)


def wait_topic(client, name: str, partitions: int, timeout: float = 60.0):
    def ready():
        md = client.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is None or t.error is not None:
            return False
        if len(t.partitions) != partitions:
            return False
        return all(p.leader >= 0 and p.error is None for p in t.partitions.values())
    wait_until(ready, timeout, interval=0.2, what=f"topic {name} with {partitions} led partitions")


def consume_all(consumer, expected_counts: dict[int, int], timeout: float = 120.0,
                batch: int = 10000):
    """Read until `expected_counts[partition]` messages per partition were
    received (from the assigned start). Fails on any message error. Returns
    {partition: [msg, ...]} in arrival order."""
    got: dict[int, list] = {p: [] for p in expected_counts}
    remaining = sum(expected_counts.values())
    deadline = time.monotonic() + timeout
    while remaining > 0:
        if time.monotonic() > deadline:
            have = {p: len(v) for p, v in got.items()}
            raise AssertionError(f"timed out consuming: have {have}, want {expected_counts}")
        for m in consumer.consume(num_messages=batch, timeout=1.0):
            if m.error():
                raise AssertionError(f"consumer error: {m.error()}")
            got.setdefault(m.partition(), []).append(m)
            remaining -= 1
    return got


def read_partition_to_end(bootstrap: str, topic: str, partition: int, start=None,
                          timeout: float = 120.0, extra: dict | None = None):
    """All messages of one partition from `start` (default OFFSET_BEGINNING)
    up to the high watermark at call time."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    conf = {
        "bootstrap.servers": bootstrap, "group.id": "skiff-e2e-reader",
        "enable.auto.commit": False, "enable.partition.eof": False,
        "auto.offset.reset": "error", "check.crcs": True,
    }
    conf.update(extra or {})
    c = Consumer(conf)
    try:
        low, high = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=30, cached=False)
        begin = low if start is None else start
        out = []
        if high <= begin:
            return out, low, high
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING if start is None else start)])
        deadline = time.monotonic() + timeout
        while True:
            if out and out[-1].offset() >= high - 1:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out reading {topic}[{partition}] to {high}: last "
                    f"{out[-1].offset() if out else None}")
            for m in c.consume(num_messages=10000, timeout=1.0):
                if m.error():
                    raise AssertionError(f"consumer error: {m.error()}")
                out.append(m)
        return out, low, high
    finally:
        c.close()


# ------------------------------------------------------------------ clusters
def raw_call(bootstrap: str, api_key: int, version: int, body: bytes, flexible: bool,
             timeout: float = 10.0) -> bytes:
    """One request of any API to exactly one broker, for the APIs no client
    library sends; returns the response body (after its header)."""
    host, port = bootstrap.rsplit(":", 1)
    client = b"skiff-e2e"
    header = struct.pack(">hhih", api_key, version, 11, len(client)) + client
    if flexible:
        header += b"\x00"  # no tagged fields
    frame = header + body
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(frame)) + frame)
        buf = b""
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">i", buf[:4])[0]:
            chunk = sock.recv(65536)
            if not chunk:
                raise BrokerError(f"connection closed during API {api_key}")
            buf += chunk
    data = buf[4:]
    return data[5:] if flexible else data[4:]


def raw_metadata(bootstrap: str, topics: list[str] | None = None, timeout: float = 5.0) -> dict:
    """Metadata v1 asked of exactly one broker (clients pick any broker, so
    they cannot show what one broker believes). Returns
    {"controller": id, "brokers": {id: (host, port, rack)},
     "topics": {name: {partition: (leader, replicas, isr)}}}."""
    host, port = bootstrap.rsplit(":", 1)

    def s16(s: str) -> bytes:
        b = s.encode()
        return struct.pack(">h", len(b)) + b

    body = struct.pack(">hhi", 3, 1, 7) + s16("skiff-e2e")
    if topics is None:
        body += struct.pack(">i", -1)
    else:
        body += struct.pack(">i", len(topics)) + b"".join(s16(t) for t in topics)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)

        def read(n):
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    raise BrokerError("connection closed during Metadata")
                buf += chunk
            return buf

        (size,) = struct.unpack(">i", read(4))
        data = read(size)
    pos = 4  # correlation id

    def take(fmt):
        nonlocal pos
        v = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return v[0]

    def string():
        nonlocal pos
        n = take(">h")
        if n < 0:
            return None
        v = data[pos:pos + n].decode()
        pos += n
        return v

    brokers = {}
    for _ in range(take(">i")):
        node = take(">i")
        h = string()
        p = take(">i")
        rack = string()
        brokers[node] = (h, p, rack)
    controller = take(">i")
    out_topics = {}
    for _ in range(take(">i")):
        take(">h")
        name = string()
        take(">b")
        parts = {}
        for _ in range(take(">i")):
            take(">h")
            idx = take(">i")
            leader = take(">i")
            replicas = [take(">i") for _ in range(take(">i"))]
            isr = [take(">i") for _ in range(take(">i"))]
            parts[idx] = (leader, replicas, isr)
        out_topics[name] = parts
    return {"controller": controller, "brokers": brokers, "topics": out_topics}


class Cluster:
    """N skiff-broker processes forming one cluster: node ids 1..N, the first
    three (or all, when fewer) are the metadata Raft voters. Each broker has
    its own ports and data dir; stop/kill/start/wipe address one by node id.
    The brokers share a peer token (`--rpc-peer-token-file`), as the
    operator's do."""

    def __init__(self, workdir, n: int = 3, args=None, env=None, voters: int = 3):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.peer_token_file = self.workdir / "peer-token"
        self.peer_token_file.write_text(f"{random.getrandbits(128):032x}\n")
        # Every port of the cluster from one call, so none is handed out twice.
        ports = free_ports(3 * n)
        self.rpc_ports = ports[:n]
        nv = min(voters, n)
        self.voters = ",".join(f"{i + 1}@127.0.0.1:{self.rpc_ports[i]}" for i in range(nv))
        self.cluster_id = f"e2e-{os.getpid()}-{free_port()}"
        self.brokers: list[Broker] = []
        for i in range(n):
            b = Broker(self.workdir, env={"RUST_LOG": os.environ.get("SKIFF_E2E_CLUSTER_LOG", "info,openraft=warn"), **(env or {})}, node_id=i + 1, name=f"node{i + 1}", args=[
                "--controller-quorum-voters", self.voters,
                "--rpc-listener", f"127.0.0.1:{self.rpc_ports[i]}",
                "--cluster-id", self.cluster_id,
                "--rpc-peer-token-file", str(self.peer_token_file),
                *(args or []),
            ])
            b.port, b.http_port = ports[n + 2 * i], ports[n + 2 * i + 1]
            self.brokers.append(b)

    def __getitem__(self, node_id: int) -> Broker:
        return self.brokers[node_id - 1]

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers if b.alive())

    def alive(self) -> list[Broker]:
        return [b for b in self.brokers if b.alive()]

    def start(self, timeout: float = 60.0):
        for b in self.brokers:
            b.start(wait_ready=False)
        for b in self.brokers:
            b.wait_ready(timeout)
        self.wait_converged(timeout)
        return self

    def start_first(self, n: int, timeout: float = 60.0):
        """Starts brokers 1..n only (the others join later, as in a scale-up)."""
        for b in self.brokers[:n]:
            b.start(wait_ready=False)
        for b in self.brokers[:n]:
            b.wait_ready(timeout)
        self.wait_converged(timeout)
        return self

    def metadata(self, node_id: int, topics=None) -> dict:
        return raw_metadata(self[node_id].bootstrap, topics)

    def wait_converged(self, timeout: float = 60.0):
        """Until every live broker lists every live broker and one controller."""
        want = {b.node_id for b in self.alive()}

        def ok():
            ctl = set()
            for b in self.alive():
                md = raw_metadata(b.bootstrap)
                if not want <= set(md["brokers"]) or md["controller"] < 0:
                    return False
                ctl.add(md["controller"])
            return len(ctl) == 1
        wait_until(ok, timeout, interval=0.2, what=f"brokers {sorted(want)} to see each other")

    def controller(self, via: int | None = None) -> int:
        b = self[via] if via else self.alive()[0]
        return raw_metadata(b.bootstrap)["controller"]

    def kill(self, node_id: int):
        self[node_id].kill()

    def stop(self, node_id: int):
        self[node_id].stop()

    def start_one(self, node_id: int, wait_ready: bool = True):
        self[node_id].start(wait_ready=wait_ready)

    def wipe(self, node_id: int):
        """Deletes a stopped broker's data dir (a replaced disk)."""
        b = self[node_id]
        assert not b.alive(), "stop the broker before wiping it"
        import shutil
        shutil.rmtree(b.data_dir)
        b.data_dir.mkdir(parents=True)

    def close(self):
        """Teardown: the data goes with the test, so the brokers are killed,
        not stopped: each one's controlled shutdown would hand its
        leaderships to brokers about to stop as well."""
        for b in self.brokers:
            b.kill()
            b.close()
