"""A group consumer run as a subprocess by test_groups.py, so a test can
SIGKILL it like a crashed application.

    group_consumer.py CLIENT BOOTSTRAP TOPIC GROUP OUT_FILE [ASSIGNOR]

CLIENT is `confluent` or `kafka-python`. It subscribe()s, and for every
polled batch appends one line `partition offset` per message to OUT_FILE
(flushed), then commits synchronously: what is in the file is processed, and
anything committed is in the file. It exits on SIGTERM after closing.
"""

import signal
import sys

SESSION_MS = 4000
HEARTBEAT_MS = 500

stop = False


def _stop(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, _stop)


def run_confluent(bootstrap, topic, group, out, assignor):
    from confluent_kafka import Consumer

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group,
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": HEARTBEAT_MS,
        "partition.assignment.strategy": assignor,
    })
    c.subscribe([topic])
    while not stop:
        msgs = c.consume(num_messages=2000, timeout=0.5)
        good = [m for m in msgs if not m.error()]
        for m in msgs:
            if m.error():
                print(f"consumer error: {m.error()}", file=sys.stderr, flush=True)
        if good:
            out.write("".join(f"{m.partition()} {m.offset()}\n" for m in good))
            out.flush()
            c.commit(asynchronous=False)
    c.close()


def run_kafka_python(bootstrap, topic, group, out, assignor):
    from kafka import KafkaConsumer

    c = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
        session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
    )
    while not stop:
        batch = c.poll(timeout_ms=500, max_records=2000)
        lines = [f"{r.partition} {r.offset}\n" for recs in batch.values() for r in recs]
        if lines:
            out.write("".join(lines))
            out.flush()
            c.commit()
    c.close()


def main():
    client, bootstrap, topic, group, path = sys.argv[1:6]
    assignor = sys.argv[6] if len(sys.argv) > 6 else "range"
    with open(path, "a") as out:
        if client == "confluent":
            run_confluent(bootstrap, topic, group, out, assignor)
        else:
            run_kafka_python(bootstrap, topic, group, out, assignor)


if __name__ == "__main__":
    main()
