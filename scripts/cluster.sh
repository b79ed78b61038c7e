#!/usr/bin/env bash
# make cluster: three nodes and a gateway as local processes on loopback,
# finding each other with memberlist; the web UI on http://localhost:8080.
# Ctrl-C stops them all. Logs go to .qlc/cluster/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .qlc/cluster bin
go build -o bin/ ./cmd/node ./cmd/gateway
# A fresh cluster key per start unless one is set (QLC_CLUSTER_KEY, or a
# keyring in QLC_CLUSTER_KEY_FILE: docs/keys.md).
if [ -z "${QLC_CLUSTER_KEY:-}" ] && [ -z "${QLC_CLUSTER_KEY_FILE:-}" ]; then
  QLC_CLUSTER_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
  export QLC_CLUSTER_KEY
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; echo; echo "cluster stopped"' EXIT INT TERM
for i in 1 2 3; do
  ./bin/node -gossip-bind 127.0.0.1:$((7945 + i)) -seeds 127.0.0.1:7946 -bind 127.0.0.1:$((8089 + i)) \
    -ops-addr 127.0.0.1:$((9089 + i)) >.qlc/cluster/node$i.log 2>&1 &
  pids+=($!)
done
./bin/gateway -addr "${QLC_ADDR:-127.0.0.1:8080}" -seeds 127.0.0.1:7946 -gossip-bind 127.0.0.1:7950 \
  -bind 127.0.0.1:8095 -ops-addr 127.0.0.1:9093 -log-format text -dev-keys >.qlc/cluster/gateway.log 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fs http://127.0.0.1:8080/readyz >/dev/null 2>&1 && break; sleep 0.1; done
echo "QLC cluster: 3 nodes + gateway — open http://localhost:8080 (metrics: nodes on 127.0.0.1:9090-9092, gateway on 127.0.0.1:9093; logs in .qlc/cluster/; API keys in .qlc/dev-keys.json)."
echo "Ctrl-C stops it."
wait
