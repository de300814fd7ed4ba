#!/usr/bin/env python3
"""Skiff benchmark driver: throughput, CPU cost, end-to-end latency, idle RSS.

Starts its own skiff-broker (SKIFF_BROKER_BIN, default flush policy, data in a
temp dir, free ports) through e2e/skiff.py and drives it with librdkafka
clients (confluent-kafka) running in separate processes, so the Python
client's own CPU is not in the broker's numbers and the GIL is not shared.

  (a) produce throughput   acks=1, linger.ms=5, no compression, 1 KiB values,
                           until --produce-bytes or --produce-seconds
  (b) consume throughput   the data from (a), from the beginning, one consumer
  (c) broker CPU           utime+stime of the broker (/proc/<pid>/stat) per GB
                           produced (and per GB consumed)
  (d) end-to-end latency   a producer process paced at --latency-rate msg/s,
                           a consumer process; p50/p99/max of receive time
                           minus the send timestamp carried in the payload
  (e) idle RSS             a fresh broker: VmRSS before and after creating a
                           100-partition topic and producing a little to each
  (f) group consume        three subscribe()d consumers in one group read (a)'s
                           data; MB/s of the group as a whole
  (g) rebalance time       from a group member's exit (clean close, then
                           SIGKILL) to the group being Stable again without it
  (h) cluster produce      three brokers, RF 3, acks=all, as (a)
  (i) cluster latency      as (d) on three brokers, RF 3, at
                           --cluster-latency-rate msg/s (default 10k)
  (j) idle partitions      three brokers hosting --idle-partitions RF 3
                           partitions each (default 1000): CPU and RSS idle
  (k) scale rebalance      three brokers holding --rebalance-bytes, two join,
                           `skiff-operator rebalance`: time, producer p99
  (l) throttled move       one replica of --throttle-bytes (1 GiB) moved at
                           --throttle-rate (20 MB/s): time, producer p99

Prints a markdown table (and --json FILE writes the numbers).  --quick runs a
short smoke version of everything.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "e2e"))

import skiff  # noqa: E402

MB = 1_000_000
GB = 1_000_000_000
MSG_SIZE = 1024


# ------------------------------------------------------------------ workers
def _producer_worker(bootstrap, topic, max_bytes, seconds, msg_size, worker, out_q, acks="1"):
    from confluent_kafka import Producer

    errors = []

    def on_err(err, msg):
        if err is not None:
            errors.append(str(err))

    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": acks,
        "linger.ms": 5,
        "compression.type": "none",
        "batch.size": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "queue.buffering.max.messages": 1_000_000,
        "delivery.report.only.error": True,
        "on_delivery": on_err,
        "message.timeout.ms": 120_000,
    })
    payload = os.urandom(msg_size)
    n = 0
    sent = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while sent < max_bytes:
        try:
            p.produce(topic, value=payload)
        except BufferError:
            p.poll(0.005)
            continue
        n += 1
        sent += msg_size
        if n % 2000 == 0:
            p.poll(0)
            if time.perf_counter() >= deadline:
                break
    left = p.flush(180)
    t1 = time.perf_counter()
    out_q.put({"worker": worker, "messages": n - left, "bytes": (n - left) * msg_size,
               "seconds": t1 - t0, "errors": len(errors), "first_error": errors[:1],
               "undelivered": left})


def _consumer_worker(bootstrap, topic, partitions, expect_messages, timeout, out_q):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "skiff-bench",
        "enable.auto.commit": False,
        "fetch.max.bytes": 52_428_800,
        "max.partition.fetch.bytes": 10_485_760,
        "queued.max.messages.kbytes": 262_144,
    })
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    n = 0
    nbytes = 0
    errors = 0
    t0 = time.perf_counter()
    deadline = t0 + timeout
    while n < expect_messages and time.perf_counter() < deadline:
        for m in c.consume(num_messages=10000, timeout=0.5):
            if m.error():
                errors += 1
                continue
            n += 1
            nbytes += len(m.value())
    t1 = time.perf_counter()
    c.close()
    out_q.put({"messages": n, "bytes": nbytes, "seconds": t1 - t0, "errors": errors})


def _latency_consumer(bootstrap, topic, partitions, ready, done, warmup_until, out_q, timeout):
    from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "skiff-bench-latency",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    c.assign([TopicPartition(topic, p, OFFSET_END) for p in range(partitions)])
    eofs = set()
    deadline = time.monotonic() + 60
    while len(eofs) < partitions and time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is not None and m.error() and m.error().code() == KafkaError._PARTITION_EOF:
            eofs.add(m.partition())
    ready.set()
    lat_ns = []
    received = 0
    end = time.monotonic() + timeout
    # poll() hands over each message as soon as librdkafka has it (a batch
    # consume() would wait to fill its batch and inflate the numbers)
    idle_after_done = 0
    while time.monotonic() < end:
        m = c.poll(0.1)
        if m is None:
            if done.is_set():
                idle_after_done += 1
                if idle_after_done >= 20:  # 2 s without messages after the producer finished
                    break
            continue
        now = time.monotonic_ns()
        if m.error():
            continue
        received += 1
        sent_ns, = struct.unpack_from(">q", m.value())
        if sent_ns >= warmup_until.value:
            lat_ns.append(now - sent_ns)
    c.close()
    lat_ns.sort()
    res = {"received": received, "measured": len(lat_ns)}
    if lat_ns:
        def pct(q):
            return lat_ns[min(len(lat_ns) - 1, int(q * len(lat_ns)))] / 1e6
        res.update(p50_ms=pct(0.50), p99_ms=pct(0.99), p999_ms=pct(0.999), max_ms=lat_ns[-1] / 1e6)
    out_q.put(res)


def _latency_producer(bootstrap, topic, rate, seconds, warmup, warmup_until, done, out_q, msg_size):
    from confluent_kafka import Producer

    errors = []
    p = Producer({
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "linger.ms": 0,
        "compression.type": "none",
        "delivery.report.only.error": True,
        "on_delivery": lambda e, m: errors.append(str(e)) if e else None,
    })
    pad = os.urandom(msg_size - 8)
    t0 = time.monotonic()
    warmup_until.value = int((t0 + warmup) * 1e9)
    total = int(rate * (seconds + warmup))
    behind_max = 0.0
    for i in range(total):
        target = t0 + i / rate
        now = time.monotonic()
        if target > now:
            time.sleep(target - now)
        else:
            behind_max = max(behind_max, now - target)
        p.produce(topic, value=struct.pack(">q", time.monotonic_ns()) + pad)
        p.poll(0)
    p.flush(60)
    done.set()
    out_q.put({"sent": total, "errors": len(errors), "first_error": errors[:1],
               "seconds": time.monotonic() - t0, "max_behind_s": behind_max})


def _producer_worker_acks_all(bootstrap, topic, max_bytes, seconds, msg_size, worker, out_q):
    _producer_worker(bootstrap, topic, max_bytes, seconds, msg_size, worker, out_q, acks="all")


# ------------------------------------------------------------------ phases
def _group_worker(bootstrap, topic, group, session_ms, stop, counts, index, out_q, leave=None):
    """One subscribe()d member: counts what it receives into counts[index];
    `stop` ends every member, `leave` just this one (a clean close)."""
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group,
        "enable.auto.commit": True, "auto.offset.reset": "earliest",
        "session.timeout.ms": session_ms, "heartbeat.interval.ms": max(100, session_ms // 10),
        "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760,
    })
    c.subscribe([topic])
    n = 0
    while not stop.is_set() and not (leave is not None and leave.is_set()):
        for m in c.consume(num_messages=10000, timeout=0.2):
            if not m.error():
                n += 1
        counts[index] = n
    c.close()
    out_q.put({"index": index, "messages": n})


def _group_state(admin, group):
    """(state name, member count) from DescribeGroups."""
    try:
        d = admin.describe_consumer_groups([group], request_timeout=5)[group].result(timeout=10)
        return str(d.state).split(".")[-1], len(d.members)
    except Exception:
        return "UNKNOWN", -1


def _wait_group(admin, group, members, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state, n = _group_state(admin, group)
        if state == "STABLE" and n == members:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"group {group} not Stable with {members} members in {timeout}s "
                       f"(last: {_group_state(admin, group)})")


def phase_groups(ctx, b, args, out):
    """(f) a 3-member group consumes (a)'s data; (g) rebalance times."""
    topic = "bench-throughput"
    total = out.get("produce", {}).get("messages")
    if not total:
        raise RuntimeError("the groups phase reads the throughput phase's data; run both")
    admin = skiff.admin_client(b)
    q = ctx.Queue()
    stop = ctx.Event()
    counts = ctx.Array("q", 3)
    cpu0 = b.cpu_seconds()
    t0 = time.monotonic()
    procs = [ctx.Process(target=_group_worker, daemon=True,
                         args=(b.bootstrap, topic, "bench-group", 10000, stop, counts, i, q))
             for i in range(3)]
    for p in procs:
        p.start()
    deadline = t0 + max(180.0, args.produce_seconds * 12)
    while sum(counts) < total and time.monotonic() < deadline:
        time.sleep(0.05)
    t1 = time.monotonic()
    cpu1 = b.cpu_seconds()
    got = sum(counts)
    stop.set()
    for p in procs:
        p.join(30)
    out["group_consume"] = {"messages": got, "expected": total, "seconds": t1 - t0,
                            "MB_per_s": got * MSG_SIZE / MB / (t1 - t0),
                            "per_member": list(counts), "complete": got >= total,
                            "broker_cpu_s": cpu1 - cpu0}
    log(f"group consume: {got}/{total} msgs in {t1 - t0:.1f}s (incl. join), per member {list(counts)}")

    session_ms = 6000
    rebalance = {"session_timeout_ms": session_ms}
    for how in ("close", "kill"):
        group = f"bench-rebalance-{how}"
        stop = ctx.Event()
        leave = ctx.Event()
        counts = ctx.Array("q", 3)
        procs = [ctx.Process(target=_group_worker, daemon=True,
                             args=(b.bootstrap, topic, group, session_ms, stop, counts, i, q,
                                   leave if i == 0 else None))
                 for i in range(3)]
        for p in procs:
            p.start()
        _wait_group(admin, group, 3, 60)
        time.sleep(1.0)
        t_exit = time.monotonic()
        if how == "close":
            # A clean close sends LeaveGroup: the broker rebalances at once.
            leave.set()
        else:
            # A crash sends nothing: the member is expelled at its session timeout.
            procs[0].kill()
        t_stable = _wait_group(admin, group, 2, 60)
        rebalance[how + "_s"] = t_stable - t_exit
        log(f"rebalance after {how}: {t_stable - t_exit:.2f}s")
        stop.set()
        for p in procs[1:]:
            p.join(30)
        procs[0].join(5)
    out["rebalance"] = rebalance


def create_topic(b, name, partitions):
    skiff.create_topic(skiff.admin_client(b), name, partitions)


def run_procs(ctx, specs, timeout):
    q = ctx.Queue()
    procs = [ctx.Process(target=fn, args=(*args, q), daemon=True) for fn, args in specs]
    for p in procs:
        p.start()
    results = []
    deadline = time.monotonic() + timeout
    while len(results) < len(procs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            results.append(q.get(timeout=min(remaining, 5)))
        except Exception:
            if not any(p.is_alive() for p in procs) and q.empty():
                break
    for p in procs:
        p.join(10)
        if p.is_alive():
            p.terminate()
    if len(results) < len(procs):
        raise RuntimeError(f"{len(procs) - len(results)} worker(s) produced no result "
                           f"(exit codes {[p.exitcode for p in procs]})")
    return results


def phase_throughput(ctx, b, args, out):
    topic = "bench-throughput"
    create_topic(b, topic, args.partitions)
    cpu0 = b.cpu_seconds()
    per = args.produce_bytes // args.producers
    res = run_procs(ctx, [(_producer_worker, (b.bootstrap, topic, per, args.produce_seconds, MSG_SIZE, i))
                          for i in range(args.producers)], timeout=args.produce_seconds + 300)
    cpu1 = b.cpu_seconds()
    msgs = sum(r["messages"] for r in res)
    nbytes = sum(r["bytes"] for r in res)
    secs = max(r["seconds"] for r in res)
    errs = sum(r["errors"] for r in res)
    out["produce"] = {"messages": msgs, "bytes": nbytes, "seconds": secs, "errors": errs,
                      "MB_per_s": nbytes / MB / secs, "msgs_per_s": msgs / secs,
                      "producers": args.producers, "partitions": args.partitions,
                      "first_error": [e for r in res for e in r["first_error"]][:1],
                      "broker_cpu_s": cpu1 - cpu0,
                      "broker_cpu_s_per_GB": (cpu1 - cpu0) / (nbytes / GB) if nbytes else None}
    log(f"produce: {msgs} msgs, {nbytes / MB:.0f} MB in {secs:.1f}s = {nbytes / MB / secs:.1f} MB/s; "
        f"errors {errs}; broker cpu {cpu1 - cpu0:.1f}s")

    cpu0 = b.cpu_seconds()
    res = run_procs(ctx, [(_consumer_worker, (b.bootstrap, topic, args.partitions, msgs,
                                              max(120.0, args.produce_seconds * 10)))],
                    timeout=max(180.0, args.produce_seconds * 12))
    cpu1 = b.cpu_seconds()
    r = res[0]
    out["consume"] = {"messages": r["messages"], "bytes": r["bytes"], "seconds": r["seconds"],
                      "errors": r["errors"], "complete": r["messages"] == msgs,
                      "MB_per_s": r["bytes"] / MB / r["seconds"] if r["seconds"] else None,
                      "broker_cpu_s": cpu1 - cpu0,
                      "broker_cpu_s_per_GB": (cpu1 - cpu0) / (r["bytes"] / GB) if r["bytes"] else None}
    log(f"consume: {r['messages']}/{msgs} msgs, {r['bytes'] / MB:.0f} MB in {r['seconds']:.1f}s; "
        f"broker cpu {cpu1 - cpu0:.1f}s")


def measure_latency(ctx, bootstrap, topic, partitions, rate, seconds):
    """A paced acks=all producer process and a consumer process on `topic`:
    the consumer's latency percentiles and the producer's counts."""
    q = ctx.Queue()
    ready, done = ctx.Event(), ctx.Event()
    warmup_until = ctx.Value("q", 2**62)
    warmup = 2.0
    cons = ctx.Process(target=_latency_consumer, daemon=True,
                       args=(bootstrap, topic, partitions, ready, done, warmup_until, q,
                             seconds + warmup + 60))
    cons.start()
    if not ready.wait(90):
        raise RuntimeError("latency consumer never became ready")
    prod = ctx.Process(target=_latency_producer, daemon=True,
                       args=(bootstrap, topic, rate, seconds, warmup, warmup_until, done, q, MSG_SIZE))
    prod.start()
    results = [q.get(timeout=seconds + warmup + 180) for _ in range(2)]
    prod.join(10)
    cons.join(30)
    pr = next(r for r in results if "sent" in r)
    cr = next(r for r in results if "received" in r)
    res = {"rate": rate, "duration_s": seconds, "producer_seconds": pr.pop("seconds"), **pr, **cr}
    log(f"latency on {topic}: sent {pr['sent']} received {cr['received']}, p50 {cr.get('p50_ms')} "
        f"p99 {cr.get('p99_ms')} max {cr.get('max_ms')} ms; producer max behind {pr['max_behind_s']:.3f}s")
    return res


def phase_latency(ctx, b, args, out):
    topic = "bench-latency"
    create_topic(b, topic, args.partitions)
    out["latency"] = measure_latency(ctx, b.bootstrap, topic, args.partitions, args.latency_rate,
                                     args.latency_seconds)


def phase_cluster(ctx, workdir, args, out):
    """Three brokers, RF 3: acks=all produce throughput (the issue's target:
    at least 40% of the single broker's acks=1 MB/s) and end-to-end latency
    at --cluster-latency-rate msg/s with acks=all."""
    c = skiff.Cluster(workdir / "cluster", n=3)
    try:
        c.start()
        bootstrap = c.bootstrap
        topic = "bench-cluster"
        skiff.create_topic(skiff.admin_client(c[1]), topic, args.partitions, replication_factor=3)
        cpu0 = [b.cpu_seconds() for b in c.brokers]
        res = run_procs(ctx, [(_producer_worker_acks_all,
                               (bootstrap, topic, args.produce_bytes, args.produce_seconds, MSG_SIZE, 0))],
                        timeout=args.produce_seconds + 300)[0]
        cpu = [b.cpu_seconds() - c0 for b, c0 in zip(c.brokers, cpu0)]
        out["cluster_produce"] = {
            "messages": res["messages"], "bytes": res["bytes"], "seconds": res["seconds"],
            "errors": res["errors"], "first_error": res["first_error"],
            "MB_per_s": res["bytes"] / MB / res["seconds"], "partitions": args.partitions,
            "broker_cpu_s": cpu}
        log(f"cluster produce (RF 3, acks=all): {res['bytes'] / MB / res['seconds']:.1f} MB/s, "
            f"errors {res['errors']}, broker cpu {[round(x, 1) for x in cpu]}")

        lat_topic = "bench-cluster-latency"
        skiff.create_topic(skiff.admin_client(c[1]), lat_topic, args.partitions, replication_factor=3)
        cpu0 = [b.cpu_seconds() for b in c.brokers]
        out["cluster_latency"] = measure_latency(ctx, bootstrap, lat_topic, args.partitions,
                                                 args.cluster_latency_rate, args.latency_seconds)
        out["cluster_latency"]["broker_cpu_s"] = [b.cpu_seconds() - c0 for b, c0 in zip(c.brokers, cpu0)]
    finally:
        c.close()


def _latency_in_thread(ctx, bootstrap, topic, partitions, rate, seconds, into):
    try:
        into["result"] = measure_latency(ctx, bootstrap, topic, partitions, rate, seconds)
    except Exception as e:  # noqa: BLE001 - reported in the results
        into["error"] = repr(e)


def _fill_then_baseline(ctx, c, topic, nbytes, lat_topic, args, what):
    """Fills `topic` with `nbytes` from an acks=all producer, then measures
    the paced producer's latency on `lat_topic` before anything moves."""
    fill = run_procs(ctx, [(_producer_worker_acks_all,
                            (c.bootstrap, topic, nbytes, 3600.0, 100 * 1024, 0))],
                     timeout=3900)[0]
    log(f"{what}: filled {fill['bytes'] / GB:.2f} GB in {fill['seconds']:.0f} s")
    os.sync()
    base = measure_latency(ctx, c.bootstrap, lat_topic, args.partitions,
                           args.rebalance_latency_rate, args.latency_seconds)
    return fill, base


def _probe_during(ctx, c, lat_topic, args):
    """Starts the paced producer's latency measurement in a thread: (thread,
    the dict its result lands in)."""
    import threading
    during = {}
    probe = threading.Thread(target=_latency_in_thread, daemon=True, args=(
        ctx, c.bootstrap, lat_topic, args.partitions, args.rebalance_latency_rate,
        args.latency_seconds, during))
    probe.start()
    return probe, during


def _latencies(base, during):
    return {"p50_before_ms": base.get("p50_ms"), "p99_before_ms": base.get("p99_ms"),
            "p50_during_ms": during.get("result", {}).get("p50_ms"),
            "p99_during_ms": during.get("result", {}).get("p99_ms"),
            "latency_error": during.get("error")}


def phase_rebalance(ctx, workdir, args, out):
    """Three brokers holding --rebalance-bytes on a 12-partition RF 3 topic;
    two brokers join and `skiff-operator rebalance` moves partitions onto
    them (unthrottled). Reports the time the rebalance took and a paced
    acks=all producer's latency before and during it (issue #7)."""
    import subprocess
    c = skiff.Cluster(workdir / "rebalance", n=5)
    try:
        c.start_first(3)
        topic, lat_topic = "bench-rebalance", "bench-rebalance-latency"
        skiff.create_topic(skiff.admin_client(c[1]), topic, 12, replication_factor=3)
        skiff.create_topic(skiff.admin_client(c[1]), lat_topic, args.partitions, replication_factor=3)
        fill, base = _fill_then_baseline(ctx, c, topic, args.rebalance_bytes, lat_topic, args,
                                         "rebalance")
        for b in c.brokers[3:]:
            b.start()
        c.wait_converged()
        operator = Path(skiff.broker_bin()).parent / "skiff-operator"
        probe, during = _probe_during(ctx, c, lat_topic, args)
        t0 = time.monotonic()
        run = subprocess.run([str(operator), "rebalance", "--bootstrap-server", c[1].bootstrap,
                              "--batch-size", "100", "--batch-timeout-seconds", "3600"],
                             capture_output=True, text=True, timeout=3700)
        took = time.monotonic() - t0
        probe.join(args.latency_seconds + 300)
        if run.returncode != 0:
            raise RuntimeError(f"rebalance failed: {run.stderr[-2000:]}")
        moved = sum(1 for line in run.stdout.splitlines() if " move " in line)
        out["scale_rebalance"] = {"bytes": fill["bytes"], "seconds": took, "partitions_moved": moved,
                                  "rate": args.rebalance_latency_rate, **_latencies(base, during)}
        log(f"rebalance 3 -> 5 brokers of {fill['bytes'] / GB:.2f} GB: {took:.1f} s, {moved} partitions "
            f"moved; p99 {base.get('p99_ms')} -> {out['scale_rebalance']['p99_during_ms']} ms")
    finally:
        c.close()


def phase_throttle(ctx, workdir, args, out):
    """One RF 3 partition holding --throttle-bytes moves one replica to a
    fourth broker under `leader.replication.throttled.rate` =
    --throttle-rate: how long the catch-up took against bytes / rate, and a
    paced acks=all producer's latency on another topic before and during
    it (issue #7: within 20 % of the rate, p99 within 2x)."""
    from kafka import TopicPartition as KTopicPartition
    from kafka.admin import KafkaAdminClient
    c = skiff.Cluster(workdir / "throttle", n=4,
                      args=["--leader-replication-throttled-rate", str(args.throttle_rate),
                            "--auto-leader-rebalance-enable", "false"])
    try:
        c.start()
        topic, lat_topic = "bench-throttle", "bench-throttle-latency"
        admin = skiff.admin_client(c[1])
        skiff.create_topic(admin, topic, 1, replication_factor=3)
        skiff.create_topic(admin, lat_topic, args.partitions, replication_factor=3)
        fill, base = _fill_then_baseline(ctx, c, topic, args.throttle_bytes, lat_topic, args,
                                         "throttle")
        kadmin = KafkaAdminClient(bootstrap_servers=c.bootstrap.split(","), request_timeout_ms=30000)
        md = skiff.raw_metadata(c[1].bootstrap, [topic])["topics"][topic]
        _leader, replicas, _isr = md[0]
        (spare,) = {1, 2, 3, 4} - set(replicas)
        target = list(replicas[:2]) + [spare]
        t0 = time.monotonic()
        kadmin.alter_partition_reassignments({KTopicPartition(topic, 0): target})
        probe, during = _probe_during(ctx, c, lat_topic, args)
        while kadmin.list_partition_reassignments():
            if time.monotonic() - t0 > 3600:
                raise RuntimeError("the throttled reassignment did not finish within an hour")
            time.sleep(0.5)
        took = time.monotonic() - t0
        probe.join(args.latency_seconds + 300)
        expected = fill["bytes"] / args.throttle_rate
        out["throttle"] = {"bytes": fill["bytes"], "rate": args.throttle_rate, "seconds": took,
                           "expected_s": expected, "probe_rate": args.rebalance_latency_rate,
                           **_latencies(base, during)}
        log(f"throttle: {fill['bytes'] / GB:.2f} GB moved in {took:.1f} s at a "
            f"{args.throttle_rate / MB:.0f} MB/s throttle (expected {expected:.1f} s); p99 "
            f"{base.get('p99_ms')} -> {out['throttle']['p99_during_ms']} ms")
    finally:
        c.close()


def phase_idle_partitions(ctx, workdir, args, out):
    """Three brokers with --idle-partitions RF 3 partitions (so each broker
    hosts that many replicas, a third of them as leader), idle: CPU per broker
    over --idle-wait seconds after they settle, and RSS."""
    c = skiff.Cluster(workdir / "idle", n=3)
    try:
        c.start()
        rss0 = [b.rss_bytes() for b in c.brokers]
        n = args.idle_partitions
        topics = max(1, n // 100)
        admin = skiff.admin_client(c[1])
        for t in range(topics):
            skiff.create_topic(admin, f"idle-{t}", n // topics, replication_factor=3)
        # Let every group elect and the leaders' first writes settle.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            leaders = sum(b.metrics().total("skiff_partition_leaders") for b in c.brokers)
            if leaders >= n:
                break
            time.sleep(1)
        settled = time.monotonic()
        time.sleep(5)
        cpu0 = [b.cpu_seconds() for b in c.brokers]
        t0 = time.monotonic()
        time.sleep(args.idle_wait * 3)
        secs = time.monotonic() - t0
        cpu = [(b.cpu_seconds() - c0) / secs for b, c0 in zip(c.brokers, cpu0)]
        rss = [b.rss_bytes() for b in c.brokers]
        out["idle_partitions"] = {"partitions": n, "replicas_per_broker": n, "seconds": secs,
                                  "settle_s": settled - (deadline - 300), "leaders": leaders,
                                  "cpu_cores": cpu, "rss_bytes": rss, "rss_empty_bytes": rss0}
        log(f"idle {n} RF 3 partitions: cpu {[f'{x:.3f}' for x in cpu]} cores, "
            f"rss {[f'{x / 2**20:.0f}' for x in rss]} MiB")
    finally:
        c.close()


def phase_rss(ctx, workdir, args, out):
    from confluent_kafka import Producer

    b = skiff.Broker(workdir / "rss", name="bench-rss")
    b.start()
    try:
        time.sleep(args.idle_wait)
        rss_empty = b.rss_bytes()
        create_topic(b, "bench-rss", 100)
        p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 5})
        for part in range(100):
            for i in range(10):
                p.produce("bench-rss", value=os.urandom(MSG_SIZE), partition=part)
        left = p.flush(60)
        time.sleep(args.idle_wait)
        rss = b.rss_bytes()
        out["rss"] = {"empty_bytes": rss_empty, "100_partitions_bytes": rss, "undelivered": left}
        log(f"rss: empty {rss_empty / 2**20:.1f} MiB, 100 partitions {rss / 2**20:.1f} MiB")
    finally:
        b.stop()


# ------------------------------------------------------------------ output
def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def fmt(v, spec=".1f", unit=""):
    return "n/a" if v is None else f"{v:{spec}}{unit}"


def table(out, args):
    rows = []
    pr = out.get("produce")
    if pr:
        rows.append(("(a) produce throughput", f"{pr['MB_per_s']:.1f} MB/s ({pr['msgs_per_s']:,.0f} msg/s)",
                     f"{pr['bytes'] / MB:,.0f} MB in {pr['seconds']:.1f} s; acks=1 linger.ms=5 none; "
                     f"{pr['producers']} producer(s), {pr['partitions']} partitions; "
                     f"delivery errors {pr['errors']}"))
    co = out.get("consume")
    if co:
        rows.append(("(b) consume throughput", f"{fmt(co['MB_per_s'])} MB/s",
                     f"{co['bytes'] / MB:,.0f} MB in {co['seconds']:.1f} s; "
                     f"{'complete' if co['complete'] else 'INCOMPLETE'}; errors {co['errors']}"))
    if pr:
        rows.append(("(c) broker CPU per GB produced", f"{fmt(pr['broker_cpu_s_per_GB'], '.2f')} core-s/GB",
                     f"{pr['broker_cpu_s']:.1f} core-s for {pr['bytes'] / GB:.2f} GB"))
    if co:
        rows.append(("    broker CPU per GB consumed", f"{fmt(co['broker_cpu_s_per_GB'], '.2f')} core-s/GB",
                     f"{co['broker_cpu_s']:.1f} core-s for {co['bytes'] / GB:.2f} GB"))
    la = out.get("latency")
    if la:
        rows.append((f"(d) e2e latency @ {la['rate']:,} msg/s",
                     f"p50 {fmt(la.get('p50_ms'), '.2f')} / p99 {fmt(la.get('p99_ms'), '.2f')} / "
                     f"max {fmt(la.get('max_ms'), '.2f')} ms",
                     f"{la['measured']:,} samples over {la['duration_s']:g} s (after 2 s warm-up); "
                     f"acks=all linger.ms=0; sent {la['sent']:,}, received {la['received']:,}, "
                     f"errors {la['errors']}"))
    gc = out.get("group_consume")
    if gc:
        rows.append(("(f) group consume, 3 members", f"{gc['MB_per_s']:.1f} MB/s",
                     f"{gc['messages']:,}/{gc['expected']:,} msgs in {gc['seconds']:.1f} s including the "
                     f"first join; per member {gc['per_member']}"))
    rb = out.get("rebalance")
    if rb:
        rows.append(("(g) rebalance time", f"close {fmt(rb.get('close_s'), '.2f')} s / "
                     f"kill {fmt(rb.get('kill_s'), '.2f')} s",
                     f"exit of 1 of 3 members to Stable with 2 (DescribeGroups, polled every 20 ms); "
                     f"session.timeout.ms {rb['session_timeout_ms']}"))
    cp = out.get("cluster_produce")
    if cp:
        base = f"; {cp['MB_per_s'] / pr['MB_per_s'] * 100:.0f}% of (a)" if pr else ""
        rows.append(("(h) 3 brokers RF 3 acks=all produce", f"{cp['MB_per_s']:.1f} MB/s",
                     f"{cp['bytes'] / MB:,.0f} MB in {cp['seconds']:.1f} s{base}; {cp['partitions']} "
                     f"partitions; broker CPU {', '.join(f'{x:.1f}' for x in cp['broker_cpu_s'])} core-s; "
                     f"delivery errors {cp['errors']}"))
    cl = out.get("cluster_latency")
    if cl:
        rows.append((f"(i) 3 brokers RF 3 e2e latency @ {cl['rate']:,} msg/s",
                     f"p50 {fmt(cl.get('p50_ms'), '.2f')} / p99 {fmt(cl.get('p99_ms'), '.2f')} / "
                     f"max {fmt(cl.get('max_ms'), '.2f')} ms",
                     f"{cl['measured']:,} samples over {cl['duration_s']:g} s; acks=all linger.ms=0; "
                     f"sent {cl['sent']:,}, received {cl['received']:,}, errors {cl['errors']}; "
                     f"broker CPU {', '.join(f'{x:.1f}' for x in cl['broker_cpu_s'])} core-s"))
    ip = out.get("idle_partitions")
    if ip:
        rows.append((f"(j) {ip['partitions']:,} idle RF 3 partitions per broker",
                     f"CPU {max(ip['cpu_cores']) * 100:.1f}% of a core, RSS "
                     f"{max(ip['rss_bytes']) / 2**20:.0f} MiB (worst broker)",
                     f"per broker CPU {', '.join(f'{x * 100:.1f}%' for x in ip['cpu_cores'])}, RSS "
                     f"{', '.join(f'{x / 2**20:.0f}' for x in ip['rss_bytes'])} MiB over "
                     f"{ip['seconds']:.0f} s; {ip['leaders']:.0f} leaders"))
    rb = out.get("scale_rebalance")
    if rb:
        rows.append(("(k) rebalance 3 -> 5 brokers, 12 partitions RF 3",
                     f"{rb['seconds']:.1f} s for {rb['bytes'] / GB:.2f} GB",
                     f"{rb['partitions_moved']} partitions with data moved; acks=all producer at "
                     f"{rb['rate']:,} msg/s: p50/p99 {fmt(rb['p50_before_ms'], '.1f')}/"
                     f"{fmt(rb['p99_before_ms'], '.1f')} ms before, {fmt(rb['p50_during_ms'], '.1f')}/"
                     f"{fmt(rb['p99_during_ms'], '.1f')} ms during"))
    th = out.get("throttle")
    if th:
        rows.append((f"(l) one replica of {th['bytes'] / GB:.2f} GB moved at a {th['rate'] / MB:.0f} MB/s throttle",
                     f"{th['seconds']:.1f} s ({th['bytes'] / MB / th['seconds']:.1f} MB/s; "
                     f"{th['seconds'] / th['expected_s'] * 100:.0f}% of bytes/rate)",
                     f"acks=all producer at {th['probe_rate']:,} msg/s on another topic: p50/p99 "
                     f"{fmt(th['p50_before_ms'], '.1f')}/{fmt(th['p99_before_ms'], '.1f')} ms before, "
                     f"{fmt(th['p50_during_ms'], '.1f')}/{fmt(th['p99_during_ms'], '.1f')} ms during"))
    rs = out.get("rss")
    if rs:
        rows.append(("(e) broker RSS idle, 100 partitions", f"{rs['100_partitions_bytes'] / 2**20:.1f} MiB",
                     f"{rs['empty_bytes'] / 2**20:.1f} MiB before creating the topic; 10 msgs/partition"))
    lines = [f"Skiff benchmark{' (--quick)' if args.quick else ''}: {os.cpu_count()} CPUs, "
             f"1 KiB messages, MB = 10^6 bytes", "",
             "| metric | result | details |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke run of every phase")
    ap.add_argument("--produce-bytes", type=int, default=2 * GB)
    ap.add_argument("--produce-seconds", type=float, default=20.0)
    ap.add_argument("--producers", type=int, default=1)
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--latency-rate", type=int, default=5000)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    ap.add_argument("--idle-wait", type=float, default=10.0)
    ap.add_argument("--cluster-latency-rate", type=int, default=10000)
    ap.add_argument("--idle-partitions", type=int, default=1000)
    ap.add_argument("--rebalance-bytes", type=int, default=5 * GB)
    ap.add_argument("--rebalance-latency-rate", type=int, default=1000)
    ap.add_argument("--throttle-bytes", type=int, default=2**30)
    ap.add_argument("--throttle-rate", type=int, default=20 * MB)
    ap.add_argument("--phases", default="throughput,groups,latency,rss,cluster,idle,rebalance,throttle")
    ap.add_argument("--json", help="also write the results to this file")
    ap.add_argument("--workdir", help="keep broker data and logs here (default: a temp dir, removed)")
    args = ap.parse_args(argv)
    if args.quick:
        args.produce_bytes = min(args.produce_bytes, 200 * MB)
        args.produce_seconds = min(args.produce_seconds, 5.0)
        args.latency_seconds = min(args.latency_seconds, 5.0)
        args.idle_wait = min(args.idle_wait, 2.0)
        args.idle_partitions = min(args.idle_partitions, 60)
        args.rebalance_bytes = min(args.rebalance_bytes, 200 * MB)
        args.throttle_bytes = min(args.throttle_bytes, 100 * MB)

    try:
        skiff.broker_bin()
    except skiff.BrokerError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="skiff-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    if free < args.produce_bytes * 1.5:
        log(f"only {free / GB:.1f} GB free in {workdir}; capping produce bytes")
        args.produce_bytes = int(free / 2)

    ctx = mp.get_context("spawn")
    out = {"args": vars(args)}
    phases = set(args.phases.split(","))
    failed = None
    b = skiff.Broker(workdir / "main", name="bench")
    try:
        b.start()
        log(f"broker {b.bootstrap} pid {b.pid}, data {b.data_dir}")
        if "throughput" in phases:
            phase_throughput(ctx, b, args, out)
        if "groups" in phases:
            phase_groups(ctx, b, args, out)
        if "latency" in phases:
            phase_latency(ctx, b, args, out)
        b.stop()
        if "rss" in phases:
            phase_rss(ctx, workdir, args, out)
        if "cluster" in phases:
            # The disk is shared: write back what earlier phases left dirty
            # in the page cache, or it slows this phase's writes (RF 3 on one
            # machine writes every byte three times).
            os.sync()
            phase_cluster(ctx, workdir, args, out)
        if "idle" in phases:
            phase_idle_partitions(ctx, workdir, args, out)
        if "rebalance" in phases:
            os.sync()
            phase_rebalance(ctx, workdir, args, out)
        if "throttle" in phases:
            os.sync()
            phase_throttle(ctx, workdir, args, out)
    except Exception as e:  # report what we have, then fail
        failed = e
        log(f"FAILED: {e!r}\n--- broker log tail ---\n{b.log_tail(40)}")
    finally:
        b.close()
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)

    print(table(out, args))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    if failed is not None:
        return 1
    if out.get("produce", {}).get("errors") or out.get("cluster_produce", {}).get("errors") or (out.get("consume") and not out["consume"]["complete"]) \
            or (out.get("group_consume") and not out["group_consume"]["complete"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
