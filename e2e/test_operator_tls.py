"""Operator-managed TLS judged by a real client: `skiff-operator certs`
writes what a TLS cluster's Secrets hold (cluster CA, broker certificates)
through the controller's code, a real `skiff-broker` serves an mtls
listener with the operator's broker certificate and the settings the
operator renders for it, and `reconcile-once --cert-dir` issues a TLS
User's client certificate from that CA, as the User controller does.
confluent-kafka connects with the user's certificate, key and the CA
(host name verified), produces and consumes; the ACLs the operator set for
`User:team-a.alice` are what let it in, so the broker's principal for the
certificate is the one the operator reports.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import skiff

CLUSTER = """
apiVersion: skiff.dev/v1alpha1
kind: KafkaCluster
metadata: {name: kafka, namespace: kafka}
spec:
  replicas: 1
  listeners:
    - {name: internal, port: 9092}
    - {name: mtls, port: 9094, tls: true, authentication: mtls, exposure: LoadBalancer}
  tenancy:
    tenants: [{namespace: team-a}]
"""

USER = """
apiVersion: skiff.dev/v1alpha1
kind: User
metadata: {{name: alice, namespace: team-a{annotations}}}
spec:
  clusterRef: {{name: kafka, namespace: kafka}}
  authentication: {{type: tls}}
  authorization:
    acls:
      - resource: {{type: topic, name: team-a., patternType: prefixed}}
        operations: [Read, Write, Describe]
      - resource: {{type: group, name: team-a., patternType: prefixed}}
        operations: [Read]
"""


def run_operator(*args) -> dict:
    out = subprocess.run([skiff.operator_bin(), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, out.stdout
    return lines[0]


def cert_of(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


@pytest.fixture
def tls_cluster(broker_factory, tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    pki = tmp_path / "pki"
    # The mtls listener's load balancer of broker 0 answers as "localhost".
    r = run_operator("certs", "--cluster-file", str(cluster), "--dir", str(pki),
                     "--external-address", "0=localhost")
    assert r["issued"] == [{"broker": 0, "reason": "new"}] and r["clientAuth"] == "required"

    b = broker_factory(start=False, args=[
        # What the operator renders for this cluster (server.properties and
        # the per-pod SKIFF_SSL_* files), with this directory as the mount.
        "--listener-security-protocol-map", "MTLS:SSL",
        "--ssl-cert-file", str(pki / "broker-0.crt"),
        "--ssl-key-file", str(pki / "broker-0.key"),
        "--ssl-ca-file", str(pki / "ca.crt"),
        "--ssl-client-auth", "required",
        "--ssl-principal-mapping", "CN",
        "--authorizer-enabled", "true",
        # The admin connection (PLAINTEXT, anonymous) stands in for the
        # operator's own super user.
        "--super-users", "User:ANONYMOUS",
        "--advertised-listeners-file", str(tmp_path / "advertised-0"),
    ])
    mtls = skiff.free_port()
    b.listeners = f"PLAINTEXT://127.0.0.1:{b.port},MTLS://127.0.0.1:{mtls}"
    # As the operator writes a LoadBalancer broker's key: its address.
    (tmp_path / "advertised-0").write_text(f"MTLS://localhost:{mtls}\n")
    b.start()
    b.mtls_port = mtls
    b.pki = pki
    b.cluster_file = cluster
    return b


def reconcile_user(b, tmp_path, annotations: str = "", *extra) -> dict:
    f = tmp_path / f"user-{uuid.uuid4().hex[:6]}.yaml"
    f.write_text(USER.format(annotations=annotations))
    return run_operator("reconcile-once", "--bootstrap", b.bootstrap, "-f", str(f),
                        "--cluster-file", str(b.cluster_file), "--cert-dir", str(b.pki), *extra)


def tls_conf(b, user="team-a.alice", **extra):
    c = {"bootstrap.servers": f"localhost:{b.mtls_port}", "security.protocol": "SSL",
         "broker.address.family": "v4",
         "ssl.ca.location": str(b.pki / "ca.crt"),
         # Host name checked against the broker certificate's SANs.
         "ssl.endpoint.identification.algorithm": "https"}
    if user:
        c["ssl.certificate.location"] = str(b.pki / f"{user}.crt")
        c["ssl.key.location"] = str(b.pki / f"{user}.key")
    c.update(extra)
    return c


def test_operator_issued_certificates_serve_mtls_and_name_the_users_principal(tls_cluster, tmp_path):
    b = tls_cluster
    pki = b.pki

    # The broker certificate: signed by the CA, for the pod's and the
    # bootstrap Service's names and the load balancer's address.
    ca = cert_of(pki / "ca.crt")
    broker = cert_of(pki / "broker-0.crt")
    assert broker.issuer == ca.subject
    ca.public_key().verify(broker.signature, broker.tbs_certificate_bytes,
                           ec.ECDSA(broker.signature_hash_algorithm))
    sans = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = sans.get_values_for_type(x509.DNSName)
    assert "kafka-0.kafka-brokers.kafka.svc.cluster.local" in names
    assert "kafka-bootstrap.kafka.svc" in names and "localhost" in names

    r = reconcile_user(b, tmp_path)
    assert r["user"] == "team-a.alice" and r["principal"] == "User:team-a.alice"
    assert r["issued"] == "new" and r["aclsAdded"] == 4 and r["aclError"] is None
    user = cert_of(pki / "team-a.alice.crt")
    assert user.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "team-a.alice"
    assert user.issuer == ca.subject

    admin = AdminClient({"bootstrap.servers": b.bootstrap})
    for t in ("team-a.events", "other.events"):
        admin.create_topics([NewTopic(t, 1, 1)])[t].result(30)

    # A real client with the operator's certificate, key and CA.
    conf = tls_conf(b)
    p = Producer({**conf, "linger.ms": 0})
    errors = []
    for i in range(10):
        p.produce("team-a.events", value=b"m%d" % i, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors, errors
    c = Consumer({**conf, "group.id": "team-a.g", "auto.offset.reset": "earliest"})
    c.subscribe(["team-a.events"])
    got, deadline = [], time.monotonic() + 60
    while len(got) < 10 and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            got.append(m.value())
    c.close()
    assert got == [b"m%d" % i for i in range(10)]

    # Only the ACLs of User:team-a.alice let it in: a topic outside them is
    # refused, so the certificate's principal is the operator's.
    p = Producer({**conf, "linger.ms": 0, "message.timeout.ms": 10000})
    denied = []
    p.produce("other.events", value=b"x", on_delivery=lambda e, m: denied.append(e))
    p.flush(30)
    assert denied and denied[0] is not None
    assert denied[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied[0]

    # A second pass keeps the certificate; the rotation annotation reissues it.
    before = (pki / "team-a.alice.crt").read_text()
    r = reconcile_user(b, tmp_path)
    assert r["issued"] is None and r["aclsAdded"] == 0
    assert (pki / "team-a.alice.crt").read_text() == before
    r = reconcile_user(b, tmp_path, ", annotations: {skiff.dev/rotate-password: '2026-12-04'}")
    assert r["issued"] == "rotated"
    assert (pki / "team-a.alice.crt").read_text() != before
    p = Producer({**conf, "linger.ms": 0})
    p.produce("team-a.events", value=b"after-rotation", on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors, errors

    # Without a client certificate the mtls listener lets nobody in.
    a = AdminClient(tls_conf(b, user=None, **{"socket.timeout.ms": 5000, "log_level": 0}))
    with pytest.raises(KafkaException):
        a.list_topics(timeout=10)

    # Deleting the User removes its ACLs (the certificate itself cannot be
    # revoked; its files, the Secret's stand-in, go).
    r = reconcile_user(b, tmp_path, "", "--delete")
    assert r["deleted"] is True
    assert not (pki / "team-a.alice.crt").exists()
