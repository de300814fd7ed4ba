# Skiff images: `broker` (skiff-broker) and `operator` (skiff-operator).
#
#   docker build --target broker   -t skiff-broker   .
#   docker build --target operator -t skiff-operator .
#
# The default path compiles in a Rust builder stage and needs BuildKit (the
# default builder since Docker 23), which builds only the stages a target
# uses. Where no image can be pulled, scripts/build-image.sh --prebuilt puts
# host-built binaries on a local base image instead (targets
# `broker-prebuilt` / `operator-prebuilt`, which also work with the legacy
# builder because they come first in this file). `make image` does either.
#
# A RUNTIME_IMAGE must provide glibc (bookworm's or newer), libgcc_s and CA
# certificates: distroless/cc does, and so does scripts/build-base-image.sh.
# BASE_IMAGE only needs a POSIX shell; it prepares the runtime's few files.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG BASE_IMAGE=debian:bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12

# ---- the runtime's own files: an unprivileged user and its data dirs ----
FROM ${BASE_IMAGE} AS rootfs
# uid/gid 10001 is what the operator's pods run as (runAsUser/fsGroup).
RUN set -eu; \
    mkdir -p /out/etc /out/data /out/var/lib/skiff /out/etc/skiff /out/tmp; \
    printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'skiff:x:10001:10001:skiff:/data:/sbin/nologin' > /out/etc/passwd; \
    printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' 'skiff:x:10001:' > /out/etc/group; \
    chown 10001:10001 /out/data /out/var/lib/skiff; \
    chmod 1777 /out/tmp

# ---- the runtime every image starts from ----
FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=rootfs /out/ /
LABEL org.opencontainers.image.vendor="Skiff" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/skiff-dev/skiff" \
      org.opencontainers.image.documentation="https://github.com/skiff-dev/skiff/blob/main/docs/operations.md"
USER 10001:10001

# Each image's fixed metadata comes before its binary and the per-build
# labels, so rebuilding with a new binary redoes one or two steps.

# ---- host-built binaries (scripts/build-image.sh --prebuilt stages them) ----
FROM runtime AS broker-prebuilt
LABEL org.opencontainers.image.title="skiff-broker" \
      org.opencontainers.image.description="Skiff: a Kafka-compatible broker"
VOLUME ["/data"]
WORKDIR /data
# Kafka clients on 9092, /metrics /livez /readyz on 9644. The operator
# replaces CMD with its own flags (listeners, --config, --data-dir); set
# SKIFF_ADVERTISED_LISTENERS to the address clients reach the container at.
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/skiff-broker"]
CMD ["--data-dir", "/data", "--listeners", "PLAINTEXT://0.0.0.0:9092", "--http-addr", "0.0.0.0:9644"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY prebuilt/skiff-broker /usr/local/bin/skiff-broker

FROM runtime AS operator-prebuilt
LABEL org.opencontainers.image.title="skiff-operator" \
      org.opencontainers.image.description="Skiff: the Kubernetes operator for Skiff clusters"
ENTRYPOINT ["/usr/local/bin/skiff-operator"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY prebuilt/skiff-operator /usr/local/bin/skiff-operator

# ---- the public default: compile in a Rust builder ----
FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
COPY . .
# The release profile keeps debug info for profiling; the images keep symbols
# (backtraces) without the debug sections.
RUN cargo build --release --locked -p skiff-broker -p skiff-operator \
 && mkdir -p /out \
 && cp target/release/skiff-broker target/release/skiff-operator /out/ \
 && strip --strip-debug /out/skiff-broker /out/skiff-operator

FROM runtime AS broker
LABEL org.opencontainers.image.title="skiff-broker" \
      org.opencontainers.image.description="Skiff: a Kafka-compatible broker"
VOLUME ["/data"]
WORKDIR /data
EXPOSE 9092 9644
ENTRYPOINT ["/usr/local/bin/skiff-broker"]
CMD ["--data-dir", "/data", "--listeners", "PLAINTEXT://0.0.0.0:9092", "--http-addr", "0.0.0.0:9644"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=builder /out/skiff-broker /usr/local/bin/skiff-broker

FROM runtime AS operator
LABEL org.opencontainers.image.title="skiff-operator" \
      org.opencontainers.image.description="Skiff: the Kubernetes operator for Skiff clusters"
ENTRYPOINT ["/usr/local/bin/skiff-operator"]
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=builder /out/skiff-operator /usr/local/bin/skiff-operator
