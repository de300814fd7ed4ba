# The verbs a person types. `make run` and `make test` work on a fresh machine.
CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python
BROKER_BIN := target/release/skiff-broker
DATA  ?= ./data
# How many local brokers `make run` starts (scripts/run-cluster.sh).
BROKERS ?= 3

.PHONY: build release release-broker unit-build release-all run test test-env unit e2e lint fmt bench clean crds image base-image chart manifests

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p skiff-broker -p skiff-operator

## CI's builds: the release broker (what the e2e tests judge: they assert rates
## and latencies) and the unit tests, whose build leaves a debug skiff-operator
## in target/debug (cargo builds a package's binaries for its integration
## tests). The e2e tests run that one, so CI does not compile the operator and
## its Kubernetes crates a second time with optimisations.
release-broker:
	$(CARGO) build --release -p skiff-broker

unit-build:
	$(CARGO) test --workspace --no-run

## Start a local $(BROKERS)-broker Skiff cluster on 127.0.0.1:9092.. (HTTP :9644.., gRPC :19092..),
## data under ./data/broker-N; `make run BROKERS=5` for five. Ctrl-C stops all.
run: release
	BROKER_BIN=$(BROKER_BIN) DATA=$(DATA) scripts/run-cluster.sh $(BROKERS)

## Everything CI runs: lints, unit tests, end-to-end tests with real Kafka clients.
## The test environment (apt, pip, debootstrap: mostly network and disk) is
## set up while cargo compiles; its log is printed once both are done.
TEST_ENV_LOG := target/test-env.log
test:
	@mkdir -p target
	@scripts/setup-test-env.sh $(VENV) > $(TEST_ENV_LOG) 2>&1 & env_pid=$$!; \
	$(MAKE) --no-print-directory lint release-broker unit; rust=$$?; \
	wait $$env_pid; env=$$?; \
	echo "----- test environment set-up (scripts/setup-test-env.sh) -----"; cat $(TEST_ENV_LOG); \
	[ $$env -eq 0 ] || { echo "test environment set-up failed (exit $$env)"; exit 1; }; \
	[ $$rust -eq 0 ]
	$(MAKE) --no-print-directory e2e

test-env:
	scripts/setup-test-env.sh $(VENV)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit: unit-build
	$(CARGO) test --workspace

## Most of the e2e time is spent waiting on brokers and clients, so the
## modules not marked `serial` run three at a time (one module per worker),
## then the serial ones run alone. Both runs go ahead; either failing fails.
E2E_ENV := SKIFF_BROKER_BIN=$(abspath $(BROKER_BIN)) \
	SKIFF_OPERATOR_BIN=$(abspath target/debug/skiff-operator)
e2e: release-broker unit-build
	$(PY) -m pyflakes e2e bench
	@$(E2E_ENV) $(PY) -m pytest -q -n 3 --dist loadfile -m "not serial" e2e; side=$$?; \
	$(E2E_ENV) $(PY) -m pytest -q -m serial e2e; alone=$$?; \
	[ $$side -eq 0 ] && [ $$alone -eq 0 ]

## Throughput, latency, CPU and memory benchmarks (see docs/benchmarks.md).
bench: test-env release
	SKIFF_BROKER_BIN=$(abspath $(BROKER_BIN)) $(PY) bench/bench.py

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML (crds/generated/) and docs/crds.md from crds/src/.
crds:
	$(CARGO) run -q -p skiff-crds --bin crdgen

## Container images skiff-broker:$(VERSION) and skiff-operator:$(VERSION) (Dockerfile).
## PREBUILT=1 copies host-built release binaries instead of compiling in a Rust
## image; LOCAL_BASE=1 uses a base built from Debian packages (no image pulls).
PREBUILT ?=
LOCAL_BASE ?=
image: $(if $(PREBUILT),release-all)
	scripts/build-image.sh $(if $(PREBUILT),--prebuilt) $(if $(LOCAL_BASE),--local-base)

release-all:
	$(CARGO) build --release -p skiff-broker -p skiff-operator

## The local base image (debootstrap bookworm, cached by tag).
base-image:
	scripts/build-base-image.sh

## Copy the generated CRDs and operator/rbac.yaml into the Helm chart (tests check they match).
chart: crds
	cp crds/generated/*.yaml charts/skiff-operator/crds/
	if [ -f operator/rbac.yaml ]; then cp operator/rbac.yaml charts/skiff-operator/files/rbac-rules.yaml; fi

## Regenerate manifests/install.yaml from the chart (a test checks it is fresh).
manifests: test-env chart
	$(PY) scripts/gen-manifests.py

clean:
	$(CARGO) clean
	rm -rf $(VENV)
