#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: a Python venv with the
# Kafka clients the tests drive, and Debian's kcat. Idempotent and quick when
# everything is already there.
set -euo pipefail
venv="${1:-.venv}"
here="$(cd "$(dirname "$0")/.." && pwd)"

# kcat is a client the tests drive; iptables cuts broker links in the
# network-partition test (e2e/test_replication.py).
missing=""
command -v kcat >/dev/null 2>&1 || missing="$missing kcat"
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$missing iptables"
if [ -n "$missing" ]; then
    echo "installing from Debian:$missing"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $missing >/dev/null
fi

# The container tests (e2e/test_container.py) need a base image; it is built
# from Debian packages here, at setup, because nothing can be pulled. Cached
# by tag: a no-op once built. Skipped (and so are those tests) without docker.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    "$here/scripts/build-base-image.sh"
fi

stamp="$venv/.requirements-installed"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$here/e2e/requirements.txt" -nt "$stamp" ]; then
    "$venv/bin/pip" install -q -r "$here/e2e/requirements.txt"
    touch "$stamp"
fi
