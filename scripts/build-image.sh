#!/usr/bin/env bash
# Builds the Skiff images: skiff-broker:TAG and skiff-operator:TAG.
#
#   scripts/build-image.sh [--prebuilt [--bin-dir DIR]] [--local-base] [--tag TAG] [--only broker|operator]
#
# Default: the Dockerfile's multi-stage build (Rust builder image, distroless
# runtime), which needs BuildKit and pulls the public images.
# --prebuilt: copy host-built release binaries into the runtime instead of
#   compiling in a builder image (from $CARGO_TARGET_DIR or target/: run
#   `cargo build --release -p skiff-broker -p skiff-operator` first), or
#   from --bin-dir.
# --local-base: use the base image scripts/build-base-image.sh builds from
#   Debian packages (cached by tag) as BASE_IMAGE and RUNTIME_IMAGE, for
#   machines that cannot pull images.
# BUILDER_IMAGE, BASE_IMAGE, RUNTIME_IMAGE in the environment override the
# Dockerfile's defaults.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

prebuilt=0
local_base=0
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -n1)"
tag="${VERSION:-$version}"
only=""
bin_dir="${CARGO_TARGET_DIR:-$here/target}/release"
while [ $# -gt 0 ]; do
    case "$1" in
        --prebuilt) prebuilt=1 ;;
        --local-base) local_base=1 ;;
        --tag) tag="$2"; shift ;;
        --only) only="$2"; shift ;;
        --bin-dir) bin_dir="$2"; shift ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
targets="broker operator"
if [ -n "$only" ]; then targets="$only"; fi

args=(--build-arg "VERSION=$version"
      --build-arg "REVISION=$(git -C "$here" rev-parse HEAD 2>/dev/null || echo unknown)"
      --build-arg "CREATED=$(git -C "$here" log -1 --format=%cI 2>/dev/null || echo unknown)")
if [ "$local_base" -eq 1 ]; then
    base_tag="${LOCAL_BASE_TAG:-skiff-base:bookworm}"
    "$here/scripts/build-base-image.sh" "$base_tag"
    BASE_IMAGE="${BASE_IMAGE:-$base_tag}"
    RUNTIME_IMAGE="${RUNTIME_IMAGE:-$base_tag}"
fi
for v in BUILDER_IMAGE BASE_IMAGE RUNTIME_IMAGE; do
    if [ -n "${!v:-}" ]; then args+=(--build-arg "$v=${!v}"); fi
done

# Without the buildx plugin the docker CLI has only the legacy builder,
# which can build the prebuilt targets (they come first in the Dockerfile).
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

if [ "$prebuilt" -eq 1 ]; then
    ctx="$(mktemp -d /tmp/skiff-image-ctx.XXXXXX)"
    trap 'rm -rf "$ctx"' EXIT
    mkdir -p "$ctx/prebuilt"
    cp "$here/Dockerfile" "$ctx/"
    for t in $targets; do
        bin="$bin_dir/skiff-$t"
        if [ ! -x "$bin" ]; then
            echo "no $bin: run cargo build --release -p skiff-$t first" >&2
            exit 1
        fi
        cp "$bin" "$ctx/prebuilt/"
        # The release profile keeps debug info for profiling (100 MB); the
        # image keeps symbols (backtraces) but not the debug sections.
        if command -v strip >/dev/null 2>&1; then strip --strip-debug "$ctx/prebuilt/skiff-$t"; fi
    done
    for t in $targets; do
        docker build "${args[@]}" --target "$t-prebuilt" -t "skiff-$t:$tag" "$ctx" >/dev/null
        echo "built skiff-$t:$tag (prebuilt binary)"
    done
else
    for t in $targets; do
        docker build "${args[@]}" --target "$t" -t "skiff-$t:$tag" "$here"
        echo "built skiff-$t:$tag"
    done
fi
