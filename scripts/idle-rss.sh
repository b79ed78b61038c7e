#!/usr/bin/env bash
# Idle RSS of `make run`'s process: builds cmd/gateway, starts it in local
# mode on a free loopback port, waits until it is ready and has settled, and
# prints its resident set size.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/qlc-gateway
go build -o "$bin" ./cmd/gateway
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" -local -addr "127.0.0.1:$port" -data-dir "$(dirname "$bin")/data" -log-level warn 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 3
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "idle RSS of cmd/gateway -local: $((rss / 1024)) MiB ($rss kB), $(nproc) cores, $(go version | cut -d' ' -f3)"
