#!/usr/bin/env bash
# Builds a local Debian bookworm base image from Debian packages, for
# machines that cannot pull images (tests, CI, air-gapped builds): debootstrap
# (minbase + CA certificates) from the Debian mirror apt already uses, then
# `docker import`. The result stands in for both BASE_IMAGE and RUNTIME_IMAGE
# of the Dockerfile. Cached by tag: when the image exists nothing is done
# (pass --force to rebuild).
#
#   scripts/build-base-image.sh [--force] [TAG]    (default TAG: skiff-base:bookworm)
set -euo pipefail

force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
tag="${1:-skiff-base:bookworm}"
suite=bookworm

if [ "$force" -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag already present"
    exit 0
fi

sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap from Debian"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq debootstrap >/dev/null
fi

# The mirror apt is configured with (deb822 or one-line sources), so this
# works wherever `apt-get install` does.
mirror="$(grep -rhoE '^(URIs:[[:space:]]*|deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
    | grep -oE 'https?://[^[:space:]]+' | head -n1 || true)"
mirror="${mirror:-http://deb.debian.org/debian}"

root="$(mktemp -d /tmp/skiff-base.XXXXXX)"
cleanup() { $sudo_cmd rm -rf "$root"; }
trap cleanup EXIT

echo "debootstrap $suite from $mirror into $root"
$sudo_cmd debootstrap --variant=minbase --include=ca-certificates,tzdata \
    "$suite" "$root" "$mirror" >"$root.log" 2>&1 || { tail -n 30 "$root.log"; exit 1; }
rm -f "$root.log"

# What a runtime image does not need: package caches, docs, man pages.
$sudo_cmd rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/*

$sudo_cmd tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite from $mirror" - "$tag" >/dev/null
echo "built base image $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
