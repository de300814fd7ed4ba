# The verbs a person types. `make run` and `make test` work on a fresh machine.
CARGO ?= cargo
VENV  ?= .venv
PY    := $(VENV)/bin/python
BROKER_BIN := target/release/skiff-broker
# How many local brokers `make run` starts (one until replication lands).
DATA  ?= ./data

.PHONY: build release run test test-env unit e2e lint fmt bench clean crds

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release -p skiff-broker

## Start a local Skiff on 127.0.0.1:9092 (metrics/health on :9644), data under ./data.
run: release
	$(BROKER_BIN) --data-dir $(DATA)

## Everything CI runs: lints, unit tests, end-to-end tests with real Kafka clients.
test: test-env lint unit release e2e

test-env:
	scripts/setup-test-env.sh $(VENV)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

e2e: release
	SKIFF_BROKER_BIN=$(abspath $(BROKER_BIN)) $(PY) -m pytest -q e2e

## Throughput, latency, CPU and memory benchmarks (see docs/benchmarks.md).
bench: test-env release
	SKIFF_BROKER_BIN=$(abspath $(BROKER_BIN)) $(PY) bench/bench.py

fmt:
	$(CARGO) fmt --all

## Regenerate the CRD YAML (crds/generated/) and docs/crds.md from crds/src/.
crds:
	$(CARGO) run -q -p skiff-crds --bin crdgen

clean:
	$(CARGO) clean
	rm -rf $(VENV)
