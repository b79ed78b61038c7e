#!/usr/bin/env bash
# make profile: a gateway and two nodes as local processes (port 0, a fresh
# cluster key and data folder), bounded load against them (PROFILE_CONCURRENCY
# workers each starting a run on PROFILE_RUN and reading its stream to the
# end, for PROFILE_SECONDS), a CPU profile of each process taken from its ops
# listener (/debug/pprof/profile) during the load and a heap profile after
# it, each rendered as an SVG graph (go tool pprof -svg; needs graphviz's
# dot, installed from Debian when missing and possible) and as a text top
# listing, into .qlc/profile/<UTC time>/. Every process is stopped at the end.
#   PROFILE_SECONDS=20 PROFILE_CONCURRENCY=8 PROFILE_RUN=instant ./scripts/profile.sh
# An interactive flame graph of any profile: go tool pprof -http=: bin/node FILE.pprof
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
secs=${PROFILE_SECONDS:-20}
conc=${PROFILE_CONCURRENCY:-8}
prof=${PROFILE_RUN:-instant}
[ "$secs" -ge 5 ] || { echo "PROFILE_SECONDS must be at least 5" >&2; exit 2; }
out=.qlc/profile/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out" bin
echo "make profile: building into bin/ ..."
CGO_ENABLED=0 $GO build -o bin/ ./cmd/node ./cmd/gateway
$GO build -o bin/qlc-profileload ./scripts/profileload

# dot renders the SVGs: install Debian's graphviz when missing and we may.
svg=yes
if ! command -v dot >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "make profile: installing graphviz (dot) from Debian ..."
    { timeout 180 apt-get install -y -q graphviz || { timeout 120 apt-get update -q && timeout 180 apt-get install -y -q graphviz; }; } \
      >"$out/apt.log" 2>&1 || true
  fi
  command -v dot >/dev/null || { svg=no; echo "make profile: no graphviz (dot): writing .pprof files and text top listings only, no SVG (apt-get install graphviz)"; }
fi

export QLC_CLUSTER_KEY=${QLC_CLUSTER_KEY:-$(head -c 32 /dev/urandom | base64 | tr -d '\n')}
me="make profile"
. scripts/lib.sh
trap cleanup EXIT INT TERM

node() { # node NAME [SEEDS]
  ./bin/node -gossip-bind 127.0.0.1:0 -bind 127.0.0.1:0 -ops-addr 127.0.0.1:0 -log-level warn \
    -addr-file "$out/$1.addrs" ${2:+-seeds "$2"} >"$out/$1.log" 2>&1 &
  pids+=($!)
}
node node1
seed=$(addr "$out/node1.addrs" gossip)
node node2 "$seed"
./bin/gateway -addr 127.0.0.1:0 -ops-addr 127.0.0.1:0 -seeds "$seed" -gossip-bind 127.0.0.1:0 -bind 127.0.0.1:0 \
  -data-dir "$out/data" -dev-keys -log-format text -log-level warn -addr-file "$out/gateway.addrs" >"$out/gateway.log" 2>&1 &
pids+=($!)
declare -A ops
for p in node1 node2 gateway; do ops[$p]=$(addr "$out/$p.addrs" ops); ready "${ops[$p]}"; done
api=$(addr "$out/gateway.addrs" http)
ready "$api"
key=$(grep -o '"tenant_key": *"[^"]*"' "$out/data/dev-keys.json" | sed 's/.*"\([^"]*\)"$/\1/')

# Warm up (connections, vocabularies), then load with a CPU profile of each
# process covering all but the load's last second.
./bin/qlc-profileload -base "http://$api" -key "$key" -profile "$prof" -c 2 -d 2s >/dev/null || true
cpu_secs=$((secs - 1))
for p in node1 node2 gateway; do
  curl -fsS --max-time $((secs + 30)) -o "$out/$p.cpu.pprof" "http://${ops[$p]}/debug/pprof/profile?seconds=$cpu_secs" &
  cpids+=($!)
done
./bin/qlc-profileload -base "http://$api" -key "$key" -profile "$prof" -c "$conc" -d "${secs}s" | tee "$out/load.txt"
for c in "${cpids[@]}"; do wait "$c" || echo "make profile: a CPU profile failed" >&2; done
for p in node1 node2 gateway; do
  curl -fsS --max-time 30 -o "$out/$p.heap.pprof" "http://${ops[$p]}/debug/pprof/heap"
  curl -fsS --max-time 30 -o "$out/$p.metrics.txt" "http://${ops[$p]}/metrics"
done
cleanup
trap - EXIT INT TERM

for p in node1 node2 gateway; do
  bin=bin/node
  [ "$p" = gateway ] && bin=bin/gateway
  for kind in cpu heap; do
    f="$out/$p.$kind.pprof"
    [ -s "$f" ] || continue
    $GO tool pprof -top -nodecount 40 "$bin" "$f" >"$out/$p.$kind.top.txt" 2>/dev/null || true
    if [ "$svg" = yes ]; then
      $GO tool pprof -svg -output "$out/$p.$kind.svg" "$bin" "$f" 2>/dev/null || echo "make profile: no SVG for $f" >&2
    fi
  done
done
echo
echo "make profile: profiles in $out/ (CPU over ${cpu_secs}s of load, heap after it):"
ls -1 "$out" | grep -E '\.(svg|pprof|top\.txt)$' | sed 's/^/  /'
echo "  the top of each CPU profile:"
for p in node1 node2 gateway; do
  [ -s "$out/$p.cpu.top.txt" ] && { echo "  -- $p"; awk '/flat%/ {f = 1} f && n < 7 {print "    " $0; n++}' "$out/$p.cpu.top.txt"; }
done
echo "interactive flame graph: go tool pprof -http=: bin/node $out/node1.cpu.pprof"
