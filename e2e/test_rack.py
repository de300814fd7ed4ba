"""broker.rack.file: a broker takes its rack from a file it waits for at start
(on Kubernetes the operator writes it from the label of the pod's node), and
that is the rack real clients see (DescribeCluster through confluent-kafka and
kafka-python, Metadata v1 from each broker) and the one replica placement
uses."""

import os
import time

from kafka import KafkaAdminClient

from skiff import admin_client, create_topic, raw_metadata, wait_until

T = 30


def write_atomically(path, text):
    # As the kubelet updates a mounted ConfigMap: the whole file at once.
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_brokers_wait_for_their_rack_file_and_clients_and_placement_see_that_rack(
        cluster_factory, tmp_path, topic_name):
    racks = tmp_path / "racks"
    racks.mkdir()
    c = cluster_factory(3, start=False)
    for b in c.brokers:
        b.args += ["--broker-rack-file", str(racks / f"rack-node{b.node_id}")]
    # A rack given as a setting too: the file wins.
    c[1].args += ["--broker-rack", "stale-zone"]
    write_atomically(racks / "rack-node1", "zone-a\n")
    write_atomically(racks / "rack-node2", "zone-a\n")
    for b in c.brokers:
        b.start(wait_ready=False)
    c[1].wait_ready(60)
    c[2].wait_ready(60)

    # Broker 3 has no rack yet: it waits, binds nothing, is not ready.
    wait_until(lambda: "waiting for this broker's rack" in c[3].log_since_start(), 30,
               what="broker 3 to log that it waits for its rack")
    time.sleep(2)
    assert c[3].alive()
    try:
        status, _ = c[3].http_get("/readyz", timeout=2)
    except OSError:
        status = None
    assert status != 200

    write_atomically(racks / "rack-node3", "zone-b\n")
    c[3].wait_ready(60)
    c.wait_converged(60)

    want = {1: "zone-a", 2: "zone-a", 3: "zone-b"}
    # DescribeCluster (librdkafka).
    admin = admin_client(c.bootstrap)
    res = admin.describe_cluster(request_timeout=T).result(timeout=T)
    assert {n.id: n.rack for n in res.nodes} == want
    # DescribeCluster (kafka-python).
    kp = KafkaAdminClient(bootstrap_servers=c.bootstrap, request_timeout_ms=T * 1000)
    try:
        brokers = kp.describe_cluster()["brokers"]
        assert {b["broker_id"]: b["rack"] for b in brokers} == want
    finally:
        kp.close()
    # Metadata v1 asked of each broker: every one lists every broker's rack.
    for b in c.brokers:
        md = raw_metadata(b.bootstrap)
        assert {i: rack for i, (_, _, rack) in md["brokers"].items()} == want, b.name

    # Placement: with two racks and replication factor 2, no partition has
    # both replicas in zone-a, so every one has a replica on broker 3
    # (without racks, brokers 1 and 2 would share some partitions).
    create_topic(admin, topic_name, partitions=6, replication_factor=2)
    md = admin.list_topics(topic=topic_name, timeout=T).topics[topic_name]
    replicas = {p.id: sorted(p.replicas) for p in md.partitions.values()}
    assert len(replicas) == 6
    assert all(3 in r and len(r) == 2 for r in replicas.values()), replicas
