#!/usr/bin/env bash
# Starts N brokers (default 3) on one machine: broker i (1..N) serves Kafka on
# 127.0.0.1:(9091+i), gRPC on 127.0.0.1:(19091+i), HTTP on 127.0.0.1:(9643+i),
# data under $DATA/broker-i. The first three are the metadata Raft voters,
# the others join as learners. They share the peer token in $DATA/peer-token
# (made on first use). Ctrl-C stops them all.
#
#   scripts/run-cluster.sh [N]        BROKER_BIN=... DATA=./data
set -euo pipefail
n="${1:-3}"
bin="${BROKER_BIN:-./target/release/skiff-broker}"
data="${DATA:-./data}"
if ! [[ "$n" =~ ^[0-9]+$ ]] || (( n < 1 || n > 50 )); then
  echo "usage: $0 [N]   (1..50 brokers)" >&2
  exit 2
fi
voters=""
for i in $(seq 1 $(( n < 3 ? n : 3 ))); do
  voters+="${voters:+,}$i@127.0.0.1:$((19091 + i))"
done
mkdir -p "$data"
token="$data/peer-token"
if [[ ! -s "$token" ]]; then
  (umask 077; od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > "$token")
fi
pids=()
stop() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT
for i in $(seq 1 "$n"); do
  mkdir -p "$data/broker-$i"
  "$bin" --node-id "$i" \
    --listeners "PLAINTEXT://127.0.0.1:$((9091 + i))" \
    --rpc-listener "127.0.0.1:$((19091 + i))" \
    --http-addr "127.0.0.1:$((9643 + i))" \
    --controller-quorum-voters "$voters" \
    --rpc-peer-token-file "$token" \
    --data-dir "$data/broker-$i" &
  pids+=("$!")
done
echo "started $n brokers (bootstrap 127.0.0.1:9092); Ctrl-C stops them" >&2
wait
