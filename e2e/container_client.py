"""A Kafka client for e2e/test_container.py, run by it as a subprocess in a
private mount namespace whose /etc/hosts maps the brokers' Kubernetes DNS
names (what they advertise) to the loopback addresses their container ports
are published on. confluent-kafka (librdkafka) throughout.

    container_client.py create  BOOTSTRAP TOPIC PARTITIONS [REPLICATION_FACTOR]
    container_client.py produce BOOTSTRAP TOPIC FIRST COUNT ACKFILE
        acks=all, idempotent; every acknowledged value is appended to
        ACKFILE (one per line, flushed) the moment its ack arrives.
    container_client.py metadata BOOTSTRAP -
        prints {"cluster_id": ..., "controller_id": ..., "brokers": [ids]}.
    container_client.py operator-metadata BOOTSTRAP USER:PASSWORD
        the same over SASL_PLAINTEXT with SCRAM-SHA-512 (the operator's
        listener and user).
    container_client.py consume BOOTSTRAP TOPIC COUNT TIMEOUT
        reads from the beginning until COUNT records or TIMEOUT seconds;
        prints {"values": [...], "by_partition": {p: [offsets...]}}.
"""

from __future__ import annotations

import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic


def create(bootstrap: str, topic: str, partitions: int, replication_factor: int):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    fut = admin.create_topics([NewTopic(topic, partitions, replication_factor)], request_timeout=30)[topic]
    fut.result(timeout=60)
    print(json.dumps({"created": topic}))


def produce(bootstrap: str, topic: str, first: int, count: int, ackfile: str):
    failed = []
    with open(ackfile, "a", buffering=1) as acks:
        def on_delivery(err, msg):
            if err is None:
                acks.write(msg.value().decode() + "\n")
            else:
                failed.append(str(err))

        p = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            # Long enough to ride out a broker restart.
            "message.timeout.ms": 90000,
            "reconnect.backoff.max.ms": 500,
        })
        for i in range(first, first + count):
            while True:
                try:
                    p.produce(topic, key=str(i % 97).encode(), value=str(i).encode(),
                              on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            time.sleep(0.001)
        left = p.flush(120)
    print(json.dumps({"unflushed": left, "failed": len(failed), "errors": failed[:5]}))


def consume(bootstrap: str, topic: str, count: int, timeout: float):
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"verify-{time.time_ns()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    c.subscribe([topic])
    values, by_partition = [], {}
    deadline = time.time() + timeout
    while len(values) < count and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise KafkaException(msg.error())
        values.append(int(msg.value()))
        by_partition.setdefault(str(msg.partition()), []).append(msg.offset())
    c.close()
    print(json.dumps({"values": values, "by_partition": by_partition}))


def metadata(bootstrap: str, sasl: str | None = None):
    conf = {"bootstrap.servers": bootstrap}
    if sasl:
        user, password = sasl.split(":", 1)
        conf.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
                     "sasl.username": user, "sasl.password": password})
    admin = AdminClient(conf)
    md = admin.list_topics(timeout=30)
    print(json.dumps({"cluster_id": md.cluster_id, "controller_id": md.controller_id,
                      "brokers": sorted(md.brokers)}))


def main(argv):
    cmd, bootstrap, topic, *rest = argv
    if cmd == "create":
        create(bootstrap, topic, int(rest[0]), int(rest[1]) if len(rest) > 1 else 1)
    elif cmd == "produce":
        produce(bootstrap, topic, int(rest[0]), int(rest[1]), rest[2])
    elif cmd == "metadata":
        metadata(bootstrap)
    elif cmd == "operator-metadata":
        metadata(bootstrap, sasl=topic)
    elif cmd == "consume":
        consume(bootstrap, topic, int(rest[0]), float(rest[1]))
    else:
        raise SystemExit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
