"""Fixtures for the Skiff end-to-end suite.

`broker`            a fresh broker per test (function scope)
`shared_broker`     one broker per test module, for cheap tests that only
                    create uniquely named topics
`broker_factory`    make brokers with extra flags/env: broker_factory(args=[...])
`topic_name`        a unique topic name for the test
"""

from __future__ import annotations

import re
import uuid

import pytest

import skiff


def pytest_configure(config):
    try:
        skiff.broker_bin()
    except skiff.BrokerError as e:
        raise pytest.UsageError(str(e))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        seen = []
        for b in getattr(item, "_skiff_brokers", []) + list(skiff.LIVE_BROKERS):
            if any(b is x for x in seen):
                continue
            seen.append(b)
            tail = b.log_tail(60)
            alive = "alive" if b.alive() else f"exited rc={b.proc.returncode if b.proc else None}"
            rep.sections.append((f"{b.name} ({alive}) log tail: {b.log_path}", tail))


class _Factory:
    def __init__(self, tmp_path, node):
        self.tmp_path = tmp_path
        self.node = node
        self.brokers = []

    def __call__(self, args=None, env=None, name=None, start=True, **kw):
        name = name or f"broker{len(self.brokers)}"
        b = skiff.Broker(self.tmp_path, args=args, env=env, name=name, **kw)
        self.brokers.append(b)
        # keep a reference for the failure report even after the broker stopped
        self.node._skiff_brokers = getattr(self.node, "_skiff_brokers", []) + [b]
        if start:
            b.start()
        return b

    def close(self):
        for b in self.brokers:
            b.close()


@pytest.fixture
def broker_factory(tmp_path, request):
    f = _Factory(tmp_path, request.node)
    yield f
    f.close()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory, request):
    b = skiff.Broker(tmp_path_factory.mktemp("shared"), name=f"shared-{request.module.__name__}")
    b.start()
    yield b
    b.close()


@pytest.fixture
def topic_name(request):
    base = re.sub(r"[^a-zA-Z0-9._-]", "_", request.node.name)[:150]
    return f"{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cluster_factory(tmp_path, request):
    """cluster_factory(n=3, args=..., env=...) -> a started skiff.Cluster."""
    made = []

    def make(n=3, args=None, env=None, start=True, **kw):
        c = skiff.Cluster(tmp_path / f"cluster{len(made)}", n=n, args=args, env=env, **kw)
        made.append(c)
        request.node._skiff_brokers = getattr(request.node, "_skiff_brokers", []) + c.brokers
        if start:
            c.start()
        return c

    yield make
    for c in made:
        c.close()
