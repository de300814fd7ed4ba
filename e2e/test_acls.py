"""ACLs: two tenants on one SASL_PLAINTEXT listener with SCRAM users.

Proves, with confluent-kafka (librdkafka) as the client: the ACL admin API
(create, describe with a MATCH filter, delete, INVALID_REQUEST for a bad
binding, CLUSTER_AUTHORIZATION_FAILED for a non-admin); team-a and team-b,
each with PREFIXED ACLs on its own topics and groups, work in their own
space; every cross-tenant produce, fetch, describe, group join and commit is
denied with Kafka's error; Metadata never shows the other tenant's topic
names; and each denial is in the broker's audit log with principal,
operation, resource and source address.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

import skiff

USERS = {"admin": "admin-pw", "team-a.alice": "alice-pw", "team-b.bob": "bob-pw"}


@pytest.fixture(scope="module")
def tenants(tmp_path_factory):
    work = tmp_path_factory.mktemp("acls")
    users = work / "users"
    users.write_text("".join(f"{u}:{p}\n" for u, p in USERS.items()))
    b = skiff.Broker(work, name="acls", args=[
        "--authorizer-enabled", "true",
        "--super-users", "User:admin",
        "--scram-bootstrap-users-file", str(users),
        "--group-initial-rebalance-delay-ms", "100",
        "--auto-create-topics-enable", "false",
    ])
    b.listeners = f"SASL_PLAINTEXT://127.0.0.1:{b.port}"
    b.start()
    admin = AdminClient(conf(b, "admin"))
    bindings = []
    for team, user in (("team-a.", "team-a.alice"), ("team-b.", "team-b.bob")):
        for rt in (ResourceType.TOPIC, ResourceType.GROUP):
            bindings.append(AclBinding(rt, team, ResourcePatternType.PREFIXED, f"User:{user}", "*",
                                       AclOperation.ALL, AclPermissionType.ALLOW))
    # team-b lets alice see (not read or write) one topic: her produce and
    # fetch then reach the Produce and Fetch handlers and are refused there.
    bindings.append(AclBinding(ResourceType.TOPIC, "team-b.public", ResourcePatternType.LITERAL,
                               "User:team-a.alice", "*", AclOperation.DESCRIBE,
                               AclPermissionType.ALLOW))
    # Likewise one group: alice finds its coordinator, and JoinGroup and
    # OffsetCommit (READ on the group) refuse her themselves.
    bindings.append(AclBinding(ResourceType.GROUP, "team-b.shared", ResourcePatternType.LITERAL,
                               "User:team-a.alice", "*", AclOperation.DESCRIBE,
                               AclPermissionType.ALLOW))
    for f in admin.create_acls(bindings).values():
        f.result(timeout=30)
    for f in admin.create_topics([NewTopic(t, 1, 1) for t in
                                  ("team-a.orders", "team-b.orders", "team-b.public")]).values():
        f.result(timeout=30)
    # Something to fetch in team-b's topics.
    p = Producer({**conf(b, "team-b.bob"), "linger.ms": 0})
    for t in ("team-b.orders", "team-b.public"):
        p.produce(t, b"secret")
    assert p.flush(30) == 0
    yield b
    b.close()


def conf(b, user, **extra):
    return {"bootstrap.servers": b.bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": user,
            "sasl.password": USERS[user], **extra}


def produce_error(b, user, topic):
    p = Producer({**conf(b, user), "linger.ms": 0, "message.timeout.ms": 10000})
    errs = []
    p.produce(topic, b"x", on_delivery=lambda e, m: errs.append(e))
    p.flush(15)
    assert len(errs) == 1
    return errs[0]


def consume_error(b, user, group, topic=None, assign=None, timeout=15):
    """The first error a consumer sees (subscribe to `topic` or assign)."""
    c = Consumer({**conf(b, user), "group.id": group, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        if assign:
            c.assign(assign)
        else:
            c.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                return m.error().code()
            return ("message", m.value())
        return None
    finally:
        c.close()


def commit_error(b, user, group, tp):
    """The error code of a synchronous commit of `tp` into `group`."""
    c = Consumer({**conf(b, user), "group.id": group, "enable.auto.commit": False})
    try:
        res = c.commit(offsets=[tp], asynchronous=False)
        return res[0].error.code() if res[0].error else None
    except KafkaException as ex:
        return ex.args[0].code()
    finally:
        c.close()


def test_acl_admin_api(tenants):
    admin = AdminClient(conf(tenants, "admin"))
    got = admin.describe_acls(AclBindingFilter(
        ResourceType.TOPIC, "team-a.orders", ResourcePatternType.MATCH, None, None,
        AclOperation.ANY, AclPermissionType.ANY)).result(timeout=30)
    assert [(a.name, a.resource_pattern_type, a.principal) for a in got] == [
        ("team-a.", ResourcePatternType.PREFIXED, "User:team-a.alice")]
    # Create, see, delete one more.
    extra = AclBinding(ResourceType.GROUP, "shared", ResourcePatternType.LITERAL, "User:team-b.bob",
                       "*", AclOperation.READ, AclPermissionType.DENY)
    admin.create_acls([extra])[extra].result(timeout=30)
    f = AclBindingFilter(ResourceType.GROUP, "shared", ResourcePatternType.ANY, None, None,
                         AclOperation.ANY, AclPermissionType.ANY)
    assert len(admin.describe_acls(f).result(timeout=30)) == 1
    deleted = admin.delete_acls([f])[f].result(timeout=30)
    assert [(a.name, a.permission_type) for a in deleted] == [("shared", AclPermissionType.DENY)]
    assert admin.describe_acls(f).result(timeout=30) == []
    # A principal without the Type:name form is INVALID_REQUEST.
    bad = AclBinding(ResourceType.TOPIC, "x", ResourcePatternType.LITERAL, "nocolon", "*",
                     AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        admin.create_acls([bad])[bad].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.INVALID_REQUEST
    # A tenant may not manage ACLs.
    alice = AdminClient(conf(tenants, "team-a.alice"))
    mine = AclBinding(ResourceType.TOPIC, "team-b.", ResourcePatternType.PREFIXED,
                      "User:team-a.alice", "*", AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        alice.create_acls([mine])[mine].result(timeout=30)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # librdkafka 2.16 drops DescribeAcls' top-level error and returns an
    # empty list; what matters is that nothing leaks and the broker refused
    # (its audit line says so).
    try:
        assert alice.describe_acls(f).result(timeout=30) == []
    except KafkaException as ex:
        assert ex.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    skiff.wait_until(lambda: 'api="DescribeAcls"' in tenants.log_text(), 10,
                     what="DescribeAcls denial in the audit log")


def test_each_tenant_works_in_its_own_space(tenants):
    for user, topic in (("team-a.alice", "team-a.orders"), ("team-b.bob", "team-b.orders")):
        team = user.split(".")[0]
        p = Producer({**conf(tenants, user), "linger.ms": 0})
        p.produce(topic, b"mine-" + user.encode())
        assert p.flush(30) == 0
        group = f"{team}.g-{uuid.uuid4().hex[:6]}"
        c = Consumer({**conf(tenants, user), "group.id": group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False})
        c.subscribe([topic])
        got = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and b"mine-" + user.encode() not in got:
            m = c.poll(0.5)
            if m is not None:
                assert not m.error(), m.error()
                got.append(m.value())
        assert b"mine-" + user.encode() in got
        c.commit(asynchronous=False)
        committed = c.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed[0].offset > 0 and committed[0].error is None
        c.close()
        # Metadata lists this tenant's topics and never the other's.
        names = set(AdminClient(conf(tenants, user)).list_topics(timeout=30).topics)
        assert topic in names
        other = "team-b." if team == "team-a" else "team-a."
        assert not [n for n in names if n.startswith(other) and n != "team-b.public"], names


def test_cross_tenant_access_is_denied_and_audited(tenants):
    b = tenants
    mark = len(b.log_text())
    # Produce: refused at Metadata (topic not even visible) and, where alice
    # may see the topic, at Produce itself.
    assert produce_error(b, "team-a.alice", "team-b.orders").code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_error(b, "team-a.alice", "team-b.public").code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Fetch: alice in her own group reading team-b's topic.
    assert consume_error(b, "team-a.alice", "team-a.reader",
                         assign=[TopicPartition("team-b.public", 0, 0)]) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Group join in team-b's group space.
    assert consume_error(b, "team-a.alice", "team-b.g", topic="team-a.orders") == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    # Commit into team-b's group.
    # librdkafka first looks up the group's coordinator, which is refused
    # (DESCRIBE on the group): it reports GROUP_AUTHORIZATION_FAILED and the
    # commit fails without a coordinator, once it has waited session.timeout.ms
    # for one (45 s by default, hence the short one here).
    c = Consumer({**conf(b, "team-a.alice"), "group.id": "team-b.g", "enable.auto.commit": False,
                  "session.timeout.ms": 6000})
    c.assign([TopicPartition("team-a.orders", 0, 0)])
    with pytest.raises(KafkaException) as e:
        c.commit(offsets=[TopicPartition("team-a.orders", 0, 1)], asynchronous=False)
    assert e.value.args[0].code() in (KafkaError.GROUP_AUTHORIZATION_FAILED,
                                      KafkaError._WAIT_COORD)
    seen = []
    deadline = time.monotonic() + 10
    while KafkaError.GROUP_AUTHORIZATION_FAILED not in seen and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and m.error():
            seen.append(m.error().code())
    assert KafkaError.GROUP_AUTHORIZATION_FAILED in seen, seen
    c.close()
    # A group alice may describe but not read: the JoinGroup and
    # OffsetCommit handlers refuse her (the coordinator lookup succeeds).
    assert consume_error(b, "team-a.alice", "team-b.shared", topic="team-a.orders") == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    assert commit_error(b, "team-a.alice", "team-b.shared",
                        TopicPartition("team-a.orders", 0, 1)) == \
        KafkaError.GROUP_AUTHORIZATION_FAILED
    # Commit of team-b's topic offsets into alice's own group.
    assert commit_error(b, "team-a.alice", "team-a.g2", TopicPartition("team-b.public", 0, 1)) == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Describe: topics and groups of the other tenant.
    alice = AdminClient(conf(b, "team-a.alice"))
    md = alice.list_topics(topic="team-b.orders", timeout=30)
    assert md.topics["team-b.orders"].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "team-b.orders" not in alice.list_topics(timeout=30).topics
    fut = alice.describe_consumer_groups(["team-b.g"])["team-b.g"]
    with pytest.raises(KafkaException) as e:
        fut.result(timeout=30)
    assert e.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    # Bob cannot write team-a's topic either.
    assert produce_error(b, "team-b.bob", "team-a.orders").code() == \
        KafkaError.TOPIC_AUTHORIZATION_FAILED

    # The audit log: one line per denial, with who, what, where from.
    skiff.wait_until(lambda: "team-b.g" in b.log_text()[mark:], 10, what="audit lines")
    audit = [line for line in b.log_text()[mark:].splitlines()
             if "authorization denied" in line]
    wanted = [
        ("User:team-a.alice", "operation=Describe", 'resource="team-b.orders"', 'api="Metadata"'),
        ("User:team-a.alice", "operation=Write", 'resource="team-b.public"', 'api="Produce"'),
        ("User:team-a.alice", "operation=Read", 'resource="team-b.public"', 'api="Fetch"'),
        ("User:team-a.alice", "operation=Describe", 'resource="team-b.g"',
         'api="FindCoordinator"'),
        ("User:team-a.alice", "operation=Read", 'resource="team-b.shared"', 'api="JoinGroup"'),
        ("User:team-a.alice", "operation=Read", 'resource="team-b.shared"',
         'api="OffsetCommit"'),
        ("User:team-a.alice", "operation=Read", 'resource="team-b.public"',
         'api="OffsetCommit"'),
        ("User:team-b.bob", "operation=Describe", 'resource="team-a.orders"'),
    ]
    for want in wanted:
        assert any(all(w in line for w in want) and "source=127.0.0.1:" in line
                   and "audit" in line for line in audit), (want, audit)
    assert b.metrics().total("skiff_authorization_denials_total") >= len(wanted)
