"""The command line contract: flags, SKIFF_* environment, --config files,
bad configuration, signals.

Proves: every way of setting a config reaches the broker (flag, env var,
Kafka-style properties file); bad configuration stops the broker at start
with a nonzero exit code and a message; SIGTERM and SIGINT shut down
cleanly (exit 0) and data survives a clean restart; a second broker on the
same data dir or port refuses to start; security settings it cannot honour
(an SSL listener without a usable certificate, a SASL listener without
mechanisms, a Java keystore setting) stop it at start.
"""

import signal
import socket
import time

import pytest
from confluent_kafka import Producer

import skiff


def auto_create_partitions(b, topic="auto-probe"):
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0})
    res = []
    p.produce(topic, value=b"x", on_delivery=lambda e, m: res.append(e))
    assert p.flush(60) == 0 and res == [None], res
    md = skiff.admin_client(b).list_topics(topic=topic, timeout=30)
    return len(md.topics[topic].partitions)


def expect_startup_failure(broker_factory, args=None, env=None, timeout=30):
    b = broker_factory(args=args, env=env, start=False)
    b.start(wait_ready=False)
    try:
        rc = b.proc.wait(timeout=timeout)
    except Exception:
        b.kill()
        raise AssertionError(f"broker with {args or env} kept running; want a nonzero exit\n{b.log_tail()}")
    assert rc != 0, f"broker with {args or env} exited 0; want nonzero\n{b.log_tail()}"
    assert b.log_since_start().strip(), "no message on stderr explaining the failure"
    return b


def test_num_partitions_flag(broker_factory):
    b = broker_factory(args=["--auto-create-topics-enable", "true", "--num-partitions", "2"])
    assert auto_create_partitions(b) == 2


def test_num_partitions_env(broker_factory):
    b = broker_factory(env={"SKIFF_NUM_PARTITIONS": "4", "SKIFF_AUTO_CREATE_TOPICS_ENABLE": "true"})
    assert auto_create_partitions(b) == 4


def test_config_file(broker_factory, tmp_path):
    cfg = tmp_path / "server.properties"
    cfg.write_text("# Kafka-style properties\n\nauto.create.topics.enable=true\nnum.partitions=5\n"
                   "log.retention.check.interval.ms=500\n")
    b = broker_factory(args=["--config", str(cfg)])
    assert auto_create_partitions(b) == 5


@pytest.mark.parametrize("args", [
    ["--num-partitions", "abc"],
    ["--num-partitions", "0"],
    ["--log-segment-bytes", "-1"],
    ["--no-such-flag", "1"],
    ["--auto-create-topics-enable", "maybe"],
], ids=["nan", "zero-partitions", "negative-segment", "unknown-flag", "bad-bool"])
def test_bad_flags_exit_nonzero(broker_factory, args):
    expect_startup_failure(broker_factory, args=args)


def test_bad_env_exits_nonzero(broker_factory):
    expect_startup_failure(broker_factory, env={"SKIFF_NUM_PARTITIONS": "lots"})


def test_bad_config_file_exits_nonzero(broker_factory, tmp_path):
    cfg = tmp_path / "bad.properties"
    cfg.write_text("num.partitions=notanumber\n")
    expect_startup_failure(broker_factory, args=["--config", str(cfg)])


def test_missing_config_file_exits_nonzero(broker_factory, tmp_path):
    expect_startup_failure(broker_factory, args=["--config", str(tmp_path / "absent.properties")])


def test_port_in_use_exits_nonzero(broker_factory):
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        b = broker_factory(start=False)
        b.port = holder.getsockname()[1]
        b.start(wait_ready=False)
        try:
            rc = b.proc.wait(timeout=30)
        except Exception:
            b.kill()
            raise AssertionError("broker started although its Kafka port was taken")
        assert rc != 0
    finally:
        holder.close()


def test_second_broker_on_same_data_dir_refuses(broker_factory):
    a = broker_factory()
    b = broker_factory(start=False)
    b.data_dir = a.data_dir
    b.start(wait_ready=False)
    try:
        rc = b.proc.wait(timeout=30)
    except Exception:
        b.kill()
        raise AssertionError("a second broker started on a data dir that is in use")
    assert rc != 0
    assert a.alive()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_clean_shutdown_keeps_data(broker_factory, topic_name, sig):
    b = broker_factory()
    skiff.create_topic(skiff.admin_client(b), topic_name, 1)
    p = Producer({"bootstrap.servers": b.bootstrap, "acks": "all"})
    for i in range(100):
        p.produce(topic_name, value=b"%d" % i, partition=0)
    assert p.flush(60) == 0
    t0 = time.monotonic()
    rc = b.stop(timeout=30, sig=sig)
    assert rc == 0, f"exit code {rc} after {sig.name}\n{b.log_tail()}"
    print(f"shutdown took {time.monotonic() - t0:.2f}s")
    b.start()
    msgs, low, high = skiff.read_partition_to_end(b.bootstrap, topic_name, 0)
    assert (low, high) == (0, 100)
    assert [m.value() for m in msgs] == [b"%d" % i for i in range(100)]


def _refuses_to_start(tmp_path, listeners, *extra):
    import subprocess

    port, hport = skiff.free_ports(2)
    cmd = [skiff.broker_bin(), "--node-id", "0", "--listeners", listeners.format(port=port),
           "--data-dir", str(tmp_path / "data"), "--http-addr", f"127.0.0.1:{hport}", *extra]
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"broker kept running with {listeners} {extra}")
    assert r.returncode != 0
    out = (r.stderr + r.stdout).decode()
    assert out.strip(), "no explanation printed"
    return out


@pytest.mark.parametrize("scheme", ["SSL", "SASL_SSL"])
def test_tls_listener_without_certificate_refuses_to_start(tmp_path, scheme):
    """Security settings that cannot be honoured stop the broker at start
    (never a silently plaintext listener)."""
    out = _refuses_to_start(tmp_path, scheme + "://127.0.0.1:{port}")
    assert "ssl.cert.file" in out, out


def test_tls_listener_with_unreadable_certificate_refuses_to_start(tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    out = _refuses_to_start(tmp_path, "SSL://127.0.0.1:{port}", "--ssl-cert-file", str(bad),
                            "--ssl-key-file", str(tmp_path / "missing.key"))
    assert "ssl.cert.file" in out or "ssl.key.file" in out, out


def test_sasl_listener_without_mechanisms_refuses_to_start(tmp_path):
    out = _refuses_to_start(tmp_path, "SASL_PLAINTEXT://127.0.0.1:{port}",
                            "--sasl-enabled-mechanisms", "")
    assert "mechanisms" in out, out


def test_listener_with_unknown_protocol_refuses_to_start(tmp_path):
    out = _refuses_to_start(tmp_path, "INTERNAL://127.0.0.1:{port}")
    assert "listener.security.protocol.map" in out, out


def test_tls_setting_in_config_file_refuses_to_start(broker_factory, tmp_path):
    cfg = tmp_path / "tls.properties"
    cfg.write_text("ssl.keystore.location=/nonexistent/keystore.jks\n")
    expect_startup_failure(broker_factory, args=["--config", str(cfg)])
