#!/usr/bin/env bash
# load-agreement.sh (make load-agreement): the figure "qlc-load against
# `make run` agrees with the server's own histograms within 5 %". It starts
# the gateway as `make run` does (one process, -local, the built-in
# simulated profiles) on free loopback ports with its own data directory,
# drives it with qlc-load (by default 40 runs of the chain profile `fast`,
# 4 at a time), and has qlc-load compare its TTFT and end-to-end figures
# with the gateway's Prometheus histograms (ops /metrics) and its usage
# ledger; it fails (exit 3) past AGREE_WITHIN per cent (default 5). Bounded:
# LOAD_ARGS' -n and -d, and a timeout on the whole. Results go to
# .qlc/load-agreement/<UTC time>/ (summary.txt, qlc-load.json, qlc-load.html).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
AGREE_WITHIN=${AGREE_WITHIN:-5}
LOAD_ARGS=${LOAD_ARGS:--profile fast -c 4 -n 40 -d 2m}
out=.qlc/load-agreement/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out" .qlc/bin
CGO_ENABLED=0 $GO build -o .qlc/bin/ ./cmd/gateway ./cmd/qlc-load

.qlc/bin/gateway -local -addr 127.0.0.1:0 -ops-addr 127.0.0.1:0 -addr-file "$out/addrs.json" \
  -data-dir "$out/data" -log-level warn >"$out/gateway.log" 2>&1 &
gw=$!
trap 'kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null || true' EXIT

field() { sed -n 's/.*"'"$2"'": *"\([^"]*\)".*/\1/p' "$1"; }
for _ in $(seq 300); do [ -s "$out/addrs.json" ] && break; sleep 0.1; done
[ -s "$out/addrs.json" ] || { echo "gateway did not start; see $out/gateway.log" >&2; exit 1; }
http=$(field "$out/addrs.json" http)
ops=$(field "$out/addrs.json" ops)
for _ in $(seq 300); do curl -fsS "http://$http/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
key=$(field "$out/data/dev-keys.json" tenant_key)

echo "gateway (as make run) at http://$http, metrics http://$ops/metrics; qlc-load $LOAD_ARGS"
# shellcheck disable=SC2086
timeout 600 .qlc/bin/qlc-load -url "http://$http" -key "$key" $LOAD_ARGS -progress off \
  -server-metrics "http://$ops/metrics" -agree-within "$AGREE_WITHIN" \
  -json "$out/qlc-load.json" -html "$out/qlc-load.html" | tee "$out/summary.txt"
