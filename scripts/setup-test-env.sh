#!/usr/bin/env bash
# Installs what the tests need on a fresh machine: a Python venv with the
# Kafka clients the tests drive, and Debian's kcat. Idempotent and quick when
# everything is already there.
set -euo pipefail
venv="${1:-.venv}"
here="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v kcat >/dev/null 2>&1; then
    echo "installing kcat from Debian"
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq kcat >/dev/null
fi

stamp="$venv/.requirements-installed"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$here/e2e/requirements.txt" -nt "$stamp" ]; then
    "$venv/bin/pip" install -q -r "$here/e2e/requirements.txt"
    touch "$stamp"
fi
