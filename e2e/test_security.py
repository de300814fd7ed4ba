"""Authentication: TLS listeners, mutual TLS, SASL PLAIN and SCRAM.

Proves: one broker serves PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL
listeners at once, each advertising its own port; confluent-kafka works over
SASL_SSL with SCRAM-SHA-512 for a user a super user created with
AlterUserScramCredentials, over SSL with a client certificate (whose CN is
the principal: CN=admin may manage credentials, CN=app may not), and over
SASL_PLAINTEXT with SCRAM-SHA-256; kcat works over SASL_PLAINTEXT with PLAIN
and SCRAM; a wrong password is an authentication error that is counted and
logged without the password while the broker keeps serving; a request
before authentication closes the connection; an unknown mechanism and SASL
messages out of order get their Kafka error and a closed connection; an
untrusted client certificate fails the TLS handshake (counted); replaced certificate files are used by
new connections.

Every certificate is generated here, at run time (a throwaway CA).
"""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import socket
import ssl
import struct
import subprocess
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import skiff

ADMIN_PASSWORD = "admin-secret-1"


# ------------------------------------------------------------------ certificates
def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path, cert, key=None):
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                           critical=True)
            .sign(key, hashes.SHA256()))
    return cert, key


def make_leaf(ca, cn, server):
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(days=1))
         .not_valid_after(now + datetime.timedelta(days=30))
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.ExtendedKeyUsage(
             [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
             critical=False))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = make_ca("skiff-test-ca")
    _write(d / "ca.pem", ca[0])
    _write(d / "server.pem", *make_leaf(ca, "skiff-broker", server=True))
    _write(d / "server2.pem", *make_leaf(ca, "skiff-broker-rotated", server=True))
    _write(d / "admin.pem", *make_leaf(ca, "admin", server=False))
    _write(d / "app.pem", *make_leaf(ca, "app", server=False))
    rogue = make_ca("rogue-ca")
    _write(d / "rogue.pem", *make_leaf(rogue, "admin", server=False))
    return d


# ----------------------------------------------------------------------- broker
class SecureBroker:
    def __init__(self, b, ports, pki):
        self.b = b
        self.plain, self.ssl, self.sasl_plain, self.sasl_ssl = ports
        self.pki = pki

    def conf(self, listener, user=None, password=None, mechanism="SCRAM-SHA-512", cert=None,
             **extra):
        port = getattr(self, listener)
        c = {"bootstrap.servers": f"127.0.0.1:{port}",
             "security.protocol": {"plain": "PLAINTEXT", "ssl": "SSL", "sasl_plain": "SASL_PLAINTEXT",
                                   "sasl_ssl": "SASL_SSL"}[listener]}
        if listener in ("ssl", "sasl_ssl"):
            c["ssl.ca.location"] = str(self.pki / "ca.pem")
        if cert:
            c["ssl.certificate.location"] = str(self.pki / f"{cert}.pem")
            c["ssl.key.location"] = str(self.pki / f"{cert}.key")
        if user:
            c.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
        c.update(extra)
        return c


@pytest.fixture
def secure(broker_factory, pki, tmp_path):
    users = tmp_path / "bootstrap-users"
    users.write_text(f"# the first super user\nadmin:{ADMIN_PASSWORD}\n")
    # Certificates the broker serves live in their own files so a test can replace them.
    live = tmp_path / "live"
    live.mkdir()
    shutil.copy(pki / "server.pem", live / "server.pem")
    shutil.copy(pki / "server.key", live / "server.key")
    b = broker_factory(start=False, args=[
        "--ssl-cert-file", str(live / "server.pem"),
        "--ssl-key-file", str(live / "server.key"),
        "--ssl-ca-file", str(pki / "ca.pem"),
        "--ssl-client-auth", "requested",
        "--ssl-reload-interval-ms", "100",
        "--super-users", "User:admin",
        "--scram-bootstrap-users-file", str(users),
        "--connection-failed-authentication-delay-ms", "50",
    ])
    ports = [b.port] + skiff.free_ports(3)
    b.listeners = ",".join(f"{proto}://127.0.0.1:{p}" for proto, p in
                           zip(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"], ports))
    b.start()
    s = SecureBroker(b, ports, pki)
    s.live = live
    return s


def roundtrip(conf, topic, n=20):
    """Produce n records and read them back with one configuration."""
    p = Producer({**conf, "linger.ms": 0})
    errors = []
    for i in range(n):
        p.produce(topic, value=b"v%d" % i, on_delivery=lambda e, m: e and errors.append(e))
    assert p.flush(60) == 0 and not errors, errors
    c = Consumer({**conf, "group.id": f"g-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    while len(got) < n and time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        assert not m.error(), m.error()
        got.append(m.value())
    c.close()
    assert got == [b"v%d" % i for i in range(n)]


def create_user(admin_conf, user, password, mechanism, iterations=8192):
    a = AdminClient(admin_conf)
    fs = a.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations),
                                      password.encode())])
    for f in fs.values():
        f.result(timeout=30)
    return a


# ------------------------------------------------------------------------ tests
def test_scram_sha512_over_sasl_ssl_user_created_by_super_user(secure, topic_name):
    admin_conf = secure.conf("sasl_ssl", "admin", ADMIN_PASSWORD)
    a = create_user(admin_conf, "alice", "alice-pw", ScramMechanism.SCRAM_SHA_512)
    desc = a.describe_user_scram_credentials(["alice"])["alice"].result(timeout=30)
    infos = [(i.mechanism, i.iterations) for i in desc.scram_credential_infos]
    assert infos == [(ScramMechanism.SCRAM_SHA_512, 8192)]
    roundtrip(secure.conf("sasl_ssl", "alice", "alice-pw"), topic_name)
    # Metadata over this listener advertises this listener's port.
    md = AdminClient(secure.conf("sasl_ssl", "alice", "alice-pw")).list_topics(timeout=30)
    assert [b.port for b in md.brokers.values()] == [secure.sasl_ssl]


def test_scram_sha256_over_sasl_plaintext(secure, topic_name):
    create_user(secure.conf("sasl_plain", "admin", ADMIN_PASSWORD, "SCRAM-SHA-256"),
                "bob", "bob-pw", ScramMechanism.SCRAM_SHA_256)
    roundtrip(secure.conf("sasl_plain", "bob", "bob-pw", "SCRAM-SHA-256"), topic_name)


def test_mtls_client_certificate_names_the_principal(secure, topic_name):
    roundtrip(secure.conf("ssl", cert="app"), topic_name)
    # CN=admin is a super user: it may read SCRAM credentials; CN=app may not.
    as_admin = AdminClient(secure.conf("ssl", cert="admin"))
    users = as_admin.describe_user_scram_credentials().result(timeout=30)
    assert "admin" in users
    # CN=app may not manage credentials. (Checked through Alter: confluent-kafka
    # 2.16 crashes the Python process on an errored DescribeUserScramCredentials
    # response, even one shaped exactly as Kafka's.)
    as_app = AdminClient(secure.conf("ssl", cert="app"))
    fs = as_app.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("eve", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                      b"eve-pw")])
    with pytest.raises(KafkaException) as e:
        fs["eve"].result(timeout=30)
    assert "CLUSTER_AUTHORIZATION_FAILED" in str(e.value), e.value


def kcat(*args, input=None):
    r = subprocess.run(["kcat", *args], input=input, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


# Debian's kcat links librdkafka 2.0, whose SCRAM client-final repeats the
# client nonce (librdkafka#4895): this is the test that the broker accepts it.
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_kcat_over_sasl_plaintext(secure, topic_name, mechanism):
    common = ["-b", f"127.0.0.1:{secure.sasl_plain}", "-X", "security.protocol=SASL_PLAINTEXT",
              "-X", f"sasl.mechanisms={mechanism}", "-X", "sasl.username=admin",
              "-X", f"sasl.password={ADMIN_PASSWORD}"]
    kcat(*common, "-P", "-t", topic_name, "-p", "0", input=b"one\ntwo\nthree\n")
    out = kcat(*common, "-C", "-t", topic_name, "-p", "0", "-o", "beginning", "-e", "-q")
    assert out.split() == [b"one", b"two", b"three"]


def auth_failures(b):
    text = b.b.http_get("/metrics")[1]
    text = text.decode() if isinstance(text, bytes) else text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("skiff_auth_failures_total"))


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password_is_an_authentication_error_and_the_broker_keeps_serving(
        secure, topic_name, mechanism):
    before = auth_failures(secure)
    errors = []
    p = Producer({**secure.conf("sasl_plain", "admin", "not-the-password", mechanism),
                  "error_cb": errors.append, "message.timeout.ms": 5000})
    p.produce(topic_name, b"x")

    def refused():
        p.poll(0.1)
        return any(e.code() == -169 or "uthentication" in e.str() for e in errors)  # _AUTHENTICATION
    skiff.wait_until(refused, 10, what="an authentication error")
    assert auth_failures(secure) > before
    log = secure.b.log_since_start()
    assert "authentication failed" in log
    assert "not-the-password" not in log and ADMIN_PASSWORD not in log
    assert secure.b.alive()
    roundtrip(secure.conf("sasl_plain", "admin", ADMIN_PASSWORD, mechanism), topic_name)


def _frame(api_key, version, correlation_id, body=b""):
    client = b"raw"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client)) + client
    return struct.pack(">i", len(header) + len(body)) + header + body


def _read_frame(s):
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    return s.recv(size, socket.MSG_WAITALL)


def test_request_before_sasl_authentication_closes_the_connection(secure):
    with socket.create_connection(("127.0.0.1", secure.sasl_plain), timeout=10) as s:
        s.sendall(_frame(18, 0, 1))  # ApiVersions v0 is allowed
        assert struct.unpack(">ih", _read_frame(s)[:6]) == (1, 0)
        s.sendall(_frame(3, 1, 2, struct.pack(">i", -1)))  # Metadata v1, all topics
        assert s.recv(4) == b"", "broker answered Metadata before authentication"
    log = secure.b.log_since_start()
    assert "before SASL authentication" in log
    assert secure.b.alive()


def _str(v: str) -> bytes:
    return struct.pack(">h", len(v)) + v.encode()


def _sasl_exchange(port, requests):
    """Sends raw frames one at a time on one connection; returns each answer
    (None once the broker has closed the connection)."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for corr, (api, version, body) in enumerate(requests, start=1):
            try:
                s.sendall(_frame(api, version, corr, body))
                head = s.recv(4, socket.MSG_WAITALL)
            except ConnectionError:
                head = b""
            if len(head) < 4:
                answers.append(None)
                continue
            size = struct.unpack(">i", head)[0]
            frame = s.recv(size, socket.MSG_WAITALL)
            assert struct.unpack(">i", frame[:4])[0] == corr
            answers.append(frame[4:])
    return answers


def _handshake_mechanisms(body):
    n = struct.unpack(">i", body[2:6])[0]
    out, pos = [], 6
    for _ in range(n):
        ln = struct.unpack(">h", body[pos:pos + 2])[0]
        out.append(body[pos + 2:pos + 2 + ln].decode())
        pos += 2 + ln
    return out


UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE = 33, 34


def test_unknown_mechanism_and_out_of_order_sasl_are_refused_and_closed(secure):
    # An unknown mechanism: the error, the enabled list, then the close.
    first, after = _sasl_exchange(secure.sasl_plain, [(17, 1, _str("GSSAPI")), (18, 0, b"")])
    assert struct.unpack(">h", first[:2])[0] == UNSUPPORTED_SASL_MECHANISM
    assert set(_handshake_mechanisms(first)) == {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
    assert after is None, "connection kept open after an unknown mechanism"
    # SaslAuthenticate with no handshake before it.
    first, after = _sasl_exchange(secure.sasl_plain,
                                  [(36, 0, struct.pack(">i", 3) + b"abc"), (18, 0, b"")])
    assert struct.unpack(">h", first[:2])[0] == ILLEGAL_SASL_STATE
    assert after is None
    # A second handshake after the first.
    ok, second, after = _sasl_exchange(
        secure.sasl_plain, [(17, 1, _str("PLAIN")), (17, 1, _str("PLAIN")), (18, 0, b"")])
    assert struct.unpack(">h", ok[:2])[0] == 0
    assert struct.unpack(">h", second[:2])[0] == ILLEGAL_SASL_STATE
    assert after is None
    # A handshake on a listener without SASL.
    first, after = _sasl_exchange(secure.plain, [(17, 1, _str("PLAIN")), (18, 0, b"")])
    assert struct.unpack(">h", first[:2])[0] == ILLEGAL_SASL_STATE
    assert after is None
    assert secure.b.alive()
    roundtrip(secure.conf("sasl_plain", "admin", ADMIN_PASSWORD, "PLAIN"),
              f"after-bad-sasl-{uuid.uuid4().hex[:6]}", n=3)


def _tls_client(pki, cert=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def test_untrusted_client_certificate_fails_the_handshake(secure):
    ctx = _tls_client(secure.pki, cert="rogue")
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection(("127.0.0.1", secure.ssl), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                # TLS 1.3: the server's verdict on the client certificate
                # arrives after the client's handshake completes.
                s.sendall(_frame(18, 0, 1))
                if not s.recv(4):
                    raise ConnectionError("closed")
    # The broker logs the failure as it closes the connection: the client
    # may see the close first.
    skiff.wait_until(lambda: "TLS handshake failed" in secure.b.log_since_start(), 10,
                     interval=0.1, what="the handshake failure in the broker's log")
    assert secure.b.metrics().total("skiff_tls_handshake_failures_total") >= 1
    roundtrip(secure.conf("ssl", cert="app"), f"after-rogue-{uuid.uuid4().hex[:6]}", n=3)


def _server_cert(secure):
    ctx = _tls_client(secure.pki)
    with socket.create_connection(("127.0.0.1", secure.ssl), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            der = s.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


def test_replaced_certificate_files_are_used_by_new_connections(secure):
    assert _server_cert(secure) == "CN=skiff-broker"
    shutil.copy(secure.pki / "server2.key", secure.live / "server.key.new")
    shutil.copy(secure.pki / "server2.pem", secure.live / "server.pem.new")
    (secure.live / "server.key.new").rename(secure.live / "server.key")
    (secure.live / "server.pem.new").rename(secure.live / "server.pem")
    skiff.wait_until(lambda: _server_cert(secure) == "CN=skiff-broker-rotated", timeout=10,
                     what="the rotated certificate")
    roundtrip(secure.conf("sasl_ssl", "admin", ADMIN_PASSWORD), f"rotated-{uuid.uuid4().hex[:6]}",
              n=3)
