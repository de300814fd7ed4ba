"""Admin API through confluent-kafka's AdminClient.

Proves: CreateTopics (incl. configs, validate_only and every documented
error), Metadata partition counts, DescribeConfigs values and sources for
topic and broker resources, AlterConfigs (replace semantics) and
IncrementalAlterConfigs (SET/DELETE), CreatePartitions, DeleteTopics,
DescribeCluster.
"""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource, NewPartitions, NewTopic,
    ResourceType,
)

import skiff

T = 60  # seconds for any single admin call


def src(entry):
    s = entry.source
    return s if isinstance(s, ConfigSource) else ConfigSource(s)


@pytest.fixture(scope="module")
def admin(shared_broker):
    return skiff.admin_client(shared_broker)


def create(admin, name, partitions=1, config=None, validate_only=False):
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=T, operation_timeout=T, validate_only=validate_only)[name]
    return fut.result(timeout=T)


def create_error(admin, name, partitions=1, config=None, validate_only=False, replication_factor=1):
    fut = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication_factor,
                  config=config or {})],
        request_timeout=T, operation_timeout=T, validate_only=validate_only)[name]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=T)
    return ei.value.args[0]


def describe(admin, restype, name):
    res = ConfigResource(restype, name)
    return admin.describe_configs([res], request_timeout=T)[res].result(timeout=T)


def topic_partitions(admin, name):
    md = admin.list_topics(topic=name, timeout=T)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        return None
    return len(t.partitions)


def topic_listed(admin, name):
    return name in admin.list_topics(timeout=T).topics


# --------------------------------------------------------------- create / list
def test_create_with_configs_and_list(admin, topic_name):
    create(admin, topic_name, 4, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    skiff.wait_topic(admin, topic_name, 4)
    md = admin.list_topics(timeout=T)
    assert topic_name in md.topics
    t = md.topics[topic_name]
    assert sorted(t.partitions) == [0, 1, 2, 3]
    for p in t.partitions.values():
        assert p.leader == 0 and p.replicas == [0] and p.isrs == [0], p
    assert list(md.brokers) == [0]


def test_describe_configs_sources(admin, topic_name):
    create(admin, topic_name, 1, {"retention.ms": "3600000", "cleanup.policy": "delete"})
    skiff.wait_topic(admin, topic_name, 1)
    cfg = describe(admin, ResourceType.TOPIC, topic_name)
    for key in ("retention.ms", "cleanup.policy", "retention.bytes", "segment.bytes",
                "max.message.bytes"):
        assert key in cfg, f"{key} missing from DescribeConfigs; got {sorted(cfg)}"
    assert cfg["retention.ms"].value == "3600000"
    assert src(cfg["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert not cfg["retention.ms"].is_default
    assert cfg["cleanup.policy"].value == "delete"
    assert src(cfg["cleanup.policy"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    # not set on the topic nor on the broker's command line: Kafka's defaults
    for key, want in (("retention.bytes", "-1"), ("max.message.bytes", "1048588"),
                      ("segment.bytes", "1073741824")):
        e = cfg[key]
        assert e.value == want, f"{key} default {e.value!r}, Kafka's is {want}"
        assert src(e) == ConfigSource.DEFAULT_CONFIG, f"{key} source {src(e)}"
        assert e.is_default


def test_alter_configs_replaces_whole_set(admin, topic_name):
    """Legacy AlterConfigs replaces the resource's dynamic config: keys not in
    the request revert to their defaults."""
    create(admin, topic_name, 1, {"retention.ms": "3600000"})
    skiff.wait_topic(admin, topic_name, 1)
    res = ConfigResource(ResourceType.TOPIC, topic_name, set_config={"retention.bytes": "1048576"})
    admin.alter_configs([res], request_timeout=T)[res].result(timeout=T)

    def applied():
        c = describe(admin, ResourceType.TOPIC, topic_name)
        return c if c["retention.bytes"].value == "1048576" else None
    cfg = skiff.wait_until(applied, 20, what="retention.bytes=1048576 visible")
    assert src(cfg["retention.bytes"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert cfg["retention.ms"].value == "604800000", "retention.ms must revert to the default"
    assert src(cfg["retention.ms"]) == ConfigSource.DEFAULT_CONFIG


def test_incremental_alter_configs_set_and_delete(admin, topic_name):
    create(admin, topic_name, 1, {"retention.ms": "3600000"})
    skiff.wait_topic(admin, topic_name, 1)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.bytes", "2097152", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("max.message.bytes", "500000", incremental_operation=AlterConfigOpType.SET),
    ])
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    cfg = skiff.wait_until(
        lambda: (lambda c: c if c["retention.bytes"].value == "2097152" else None)(
            describe(admin, ResourceType.TOPIC, topic_name)), 20, what="incremental SET visible")
    assert cfg["max.message.bytes"].value == "500000"
    assert cfg["retention.ms"].value == "3600000", "incremental alter must keep other keys"
    assert src(cfg["retention.ms"]) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE)])
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    cfg = skiff.wait_until(
        lambda: (lambda c: c if c["retention.ms"].value == "604800000" else None)(
            describe(admin, ResourceType.TOPIC, topic_name)), 20, what="incremental DELETE visible")
    assert src(cfg["retention.ms"]) == ConfigSource.DEFAULT_CONFIG
    assert cfg["retention.bytes"].value == "2097152"


def test_incremental_alter_invalid_value_rejected(admin, topic_name):
    create(admin, topic_name, 1)
    skiff.wait_topic(admin, topic_name, 1)
    res = ConfigResource(ResourceType.TOPIC, topic_name, incremental_configs=[
        ConfigEntry("retention.ms", "not-a-number", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as ei:
        admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)
    assert ei.value.args[0].code() == KafkaError.INVALID_CONFIG, ei.value.args[0]
    assert describe(admin, ResourceType.TOPIC, topic_name)["retention.ms"].value == "604800000"


def test_create_partitions_grows_3_to_6(admin, topic_name):
    create(admin, topic_name, 3)
    skiff.wait_topic(admin, topic_name, 3)
    admin.create_partitions([NewPartitions(topic_name, 6)], request_timeout=T)[topic_name].result(timeout=T)
    skiff.wait_topic(admin, topic_name, 6)
    assert topic_partitions(admin, topic_name) == 6


@pytest.mark.parametrize("new_total", [2, 3])
def test_create_partitions_not_more_is_invalid(admin, topic_name, new_total):
    create(admin, topic_name, 3)
    skiff.wait_topic(admin, topic_name, 3)
    fut = admin.create_partitions([NewPartitions(topic_name, new_total)], request_timeout=T)[topic_name]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=T)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS, ei.value.args[0]
    assert topic_partitions(admin, topic_name) == 3


def test_delete_topics(admin, shared_broker, topic_name):
    create(admin, topic_name, 2)
    skiff.wait_topic(admin, topic_name, 2)
    admin.delete_topics([topic_name], request_timeout=T, operation_timeout=T)[topic_name].result(timeout=T)
    skiff.wait_until(lambda: not topic_listed(admin, topic_name), 30, what="topic gone from metadata")
    md = admin.list_topics(topic=topic_name, timeout=T)
    assert md.topics[topic_name].error is not None
    assert md.topics[topic_name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    # the partition directories (<topic>-<n>) leave the data dir (renamed or removed)
    skiff.wait_until(
        lambda: not [p for p in shared_broker.data_dir.rglob("*")
                     if p.is_dir() and p.name in (f"{topic_name}-0", f"{topic_name}-1")],
        30, what="partition dirs of the deleted topic gone")
    # the name can be reused, with a fresh log
    create(admin, topic_name, 1)
    skiff.wait_topic(admin, topic_name, 1)


def test_delete_unknown_topic(admin, topic_name):
    fut = admin.delete_topics([topic_name], request_timeout=T, operation_timeout=T)[topic_name]
    with pytest.raises(KafkaException) as ei:
        fut.result(timeout=T)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, ei.value.args[0]


# ---------------------------------------------------------------------- errors
def test_create_existing_topic(admin, topic_name):
    create(admin, topic_name, 1)
    err = create_error(admin, topic_name, 2)
    assert err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err


@pytest.mark.parametrize("name", ["bad/name", "x" * 250, "..", ".", "spaces are bad", "ümlaut"],
                         ids=["slash", "250-chars", "dotdot", "dot", "spaces", "non-ascii"])
def test_create_invalid_topic_name(admin, name):
    err = create_error(admin, name, 1)
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err
    assert not topic_listed(admin, name)


def test_create_max_length_name_ok(admin):
    name = "m" * 249
    create(admin, name, 1)
    skiff.wait_topic(admin, name, 1)


@pytest.mark.parametrize("config", [
    {"retention.ms": "abc"},
    {"segment.bytes": "-5"},
    {"cleanup.policy": "sometimes"},
    {"no.such.config": "1"},
])
def test_create_invalid_config(admin, topic_name, config):
    err = create_error(admin, topic_name, 1, config)
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert not topic_listed(admin, topic_name)


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_compaction_not_supported_yet(admin, topic_name, policy):
    err = create_error(admin, topic_name, 1, {"cleanup.policy": policy})
    assert err.code() == KafkaError.INVALID_CONFIG, err
    msg = err.str().lower()
    assert "compact" in msg and "support" in msg, (
        f"error message should say compaction is not supported yet, got {err.str()!r}")
    assert not topic_listed(admin, topic_name)


@pytest.mark.parametrize("partitions", [0])
def test_create_invalid_partition_count(admin, topic_name, partitions):
    # -1 means "broker default" (CreateTopics v4+); 0 is invalid (librdkafka
    # itself rejects values below -1 before sending)
    fut = admin.create_topics([NewTopic(topic_name, num_partitions=partitions, replication_factor=1)],
                              request_timeout=T)
    with pytest.raises(KafkaException) as ei:
        fut[topic_name].result(timeout=T)
    assert ei.value.args[0].code() == KafkaError.INVALID_PARTITIONS, ei.value.args[0]
    assert not topic_listed(admin, topic_name)


def test_create_replication_factor_above_broker_count(admin, topic_name):
    err = create_error(admin, topic_name, 1, replication_factor=3)
    assert err.code() == KafkaError.INVALID_REPLICATION_FACTOR, err


def test_validate_only_creates_nothing(admin, topic_name):
    create(admin, topic_name, 3, {"retention.ms": "1000"}, validate_only=True)
    time.sleep(1)
    assert not topic_listed(admin, topic_name)
    md = admin.list_topics(topic=topic_name, timeout=T)
    assert md.topics[topic_name].error is not None
    # and validation still reports errors
    err = create_error(admin, topic_name, 1, {"retention.ms": "abc"}, validate_only=True)
    assert err.code() == KafkaError.INVALID_CONFIG, err
    # the real create afterwards works
    create(admin, topic_name, 3)
    skiff.wait_topic(admin, topic_name, 3)


# --------------------------------------------------------------------- cluster
def test_describe_cluster(admin, shared_broker):
    res = admin.describe_cluster(request_timeout=T).result(timeout=T)
    assert [n.id for n in res.nodes] == [0], res.nodes
    node = res.nodes[0]
    assert (node.host, node.port) == ("127.0.0.1", shared_broker.port)
    assert res.controller is not None and res.controller.id == 0, res.controller
    assert res.cluster_id, "cluster id must be set"
    # stable across calls
    again = admin.describe_cluster(request_timeout=T).result(timeout=T)
    assert again.cluster_id == res.cluster_id


def test_broker_configs_listed(admin):
    cfg = describe(admin, ResourceType.BROKER, "0")
    for key in ("log.retention.ms", "log.segment.bytes", "num.partitions",
                "auto.create.topics.enable", "message.max.bytes"):
        assert key in cfg, f"broker config {key} missing; got {sorted(cfg)[:50]}"
    assert cfg["message.max.bytes"].value == "1048588"
    assert cfg["log.segment.bytes"].value == "1073741824"


def test_broker_dynamic_default_reflected(broker_factory, topic_name):
    """IncrementalAlterConfigs on broker 0 changes the broker's value and the
    effective value of topics without an override (and not of those with one)."""
    b = broker_factory()
    admin = skiff.admin_client(b)
    create(admin, topic_name, 1)
    create(admin, topic_name + "-o", 1, {"retention.ms": "3600000"})
    skiff.wait_topic(admin, topic_name, 1)
    res = ConfigResource(ResourceType.BROKER, "0", incremental_configs=[
        ConfigEntry("log.retention.ms", "123456789", incremental_operation=AlterConfigOpType.SET)])
    admin.incremental_alter_configs([res], request_timeout=T)[res].result(timeout=T)

    def broker_value():
        e = describe(admin, ResourceType.BROKER, "0")["log.retention.ms"]
        return e if e.value == "123456789" else None
    e = skiff.wait_until(broker_value, 20, what="broker log.retention.ms=123456789")

    t = describe(admin, ResourceType.TOPIC, topic_name)["retention.ms"]
    assert t.value == "123456789", f"topic without override should inherit, got {t.value}"
    o = describe(admin, ResourceType.TOPIC, topic_name + "-o")["retention.ms"]
    assert o.value == "3600000" and src(o) == ConfigSource.DYNAMIC_TOPIC_CONFIG

    # survives a restart (metadata is durable)
    b.restart()
    admin = skiff.admin_client(b)
    e = describe(admin, ResourceType.BROKER, "0")["log.retention.ms"]
    assert e.value == "123456789"
    t = describe(admin, ResourceType.TOPIC, topic_name)["retention.ms"]
    # Kafka: resource "0" is a per-broker dynamic config (DYNAMIC_BROKER_CONFIG);
    # resource "" would be the cluster-wide default (DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert src(e) == ConfigSource.DYNAMIC_BROKER_CONFIG, f"broker source {src(e)}"
    assert src(t) == ConfigSource.DYNAMIC_BROKER_CONFIG, f"inherited topic source {src(t)}"


def test_static_broker_flag_shows_in_topic_defaults(broker_factory, topic_name):
    b = broker_factory(args=["--message-max-bytes", "50000"])
    admin = skiff.admin_client(b)
    create(admin, topic_name, 1)
    skiff.wait_topic(admin, topic_name, 1)
    e = describe(admin, ResourceType.TOPIC, topic_name)["max.message.bytes"]
    assert e.value == "50000", e.value
    assert src(e) == ConfigSource.STATIC_BROKER_CONFIG, src(e)


def test_create_with_broker_default_partitions(broker_factory, topic_name):
    """num_partitions=-1 (CreateTopics v4+) means the broker's num.partitions."""
    b = broker_factory(args=["--num-partitions", "3"])
    admin = skiff.admin_client(b)
    fut = admin.create_topics([NewTopic(topic_name, num_partitions=-1, replication_factor=-1)],
                              request_timeout=T)[topic_name]
    fut.result(timeout=T)
    skiff.wait_topic(admin, topic_name, 3)
