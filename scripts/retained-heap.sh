#!/usr/bin/env bash
# Heap per retained finished run (issue 17, BENCHMARKS.md "retained finished
# runs"): builds cmd/gateway, starts it in local mode, reads the idle heap,
# sends RUNS non-streaming chat completions of MODEL, CONC at a time, waits
# 5 s, forces a GC (/debug/pprof/heap?gc=1) and reads /metrics again. With
# EVICT_AFTER (a duration, e.g. 20s) the gateway retains finished runs that
# long, and the heap is read once more after they were evicted. PPROF=file
# saves a heap profile after the runs; PPROF_DIR=dir saves idle.pprof and
# evicted.pprof there (GODEBUG=memprofilerate=1 for exact ones).
#   RUNS=2000 CONC=4 MODEL=qlc-instant scripts/retained-heap.sh
#   RUNS=300 MODEL=qlc-long scripts/retained-heap.sh   # 20 000-token runs
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-2000} CONC=${CONC:-4} MODEL=${MODEL:-qlc-instant} EVICT_AFTER=${EVICT_AFTER:-}
dir=$(mktemp -d)
bin=$dir/qlc-gateway
go build -o "$bin" ./cmd/gateway
# The built-in profiles plus "long": four steps of 5 000 tokens (20 000 a run).
python3 - stagework/profiles.yaml "$dir/profiles.yaml" <<'PY'
import sys
s = open(sys.argv[1]).read()
s = s.replace("  sim-instant:\n", "  sim-long:\n    kind: sim\n    sim: {output_tokens: 5000}\n  sim-instant:\n", 1)
s = s.replace("\nprofiles:\n", """\nprofiles:
  long:
    description: Long answers with no latency, for memory benchmarks.
    provider: sim-long
    stages:
      generator: {model: sim-small, max_tokens: 5000}
      refiner:   {model: sim-small, max_tokens: 5000}
      validator: {model: sim-small, max_tokens: 5000}
      curator:   {model: sim-small, max_tokens: 5000}
""", 1)
open(sys.argv[2], "w").write(s)
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ops=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
extra=()
[ -n "$EVICT_AFTER" ] && extra+=(-retain-finished "$EVICT_AFTER")
"$bin" -local -addr "127.0.0.1:$port" -ops-addr "127.0.0.1:$ops" -data-dir "$dir/data" -profiles "$dir/profiles.yaml" \
  -memory-budget none -log-level warn "${extra[@]}" 2>"$dir/log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do
  curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tenant_key"])' "$dir/data/dev-keys.json")
url=http://127.0.0.1:$port/v1/chat/completions
body='{"model":"'"$MODEL"'","messages":[{"role":"user","content":"How do tides work?"}]}'
one() { curl -fsS -o /dev/null -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "$body" "$url"; }
heap() {
  curl -fs -o /dev/null "http://127.0.0.1:$ops/debug/pprof/heap?gc=1"
  curl -fs "http://127.0.0.1:$ops/metrics" | awk '/^go_memstats_heap_alloc_bytes /{a=$2} /^go_memstats_heap_objects /{o=$2} END{printf "%.0f %.0f\n", a, o}'
}
one  # warm-up
sleep 2
read -r idle idleobj < <(heap)
[ -n "${PPROF_DIR:-}" ] && curl -fs -o "$PPROF_DIR/idle.pprof" "http://127.0.0.1:$ops/debug/pprof/heap"
export -f one; export key url body
start=$(date +%s.%N)
seq "$RUNS" | xargs -P "$CONC" -I{} bash -c one
end=$(date +%s.%N)
sleep 5
read -r after afterobj < <(heap)
curl -fs "http://127.0.0.1:$ops/metrics" | grep -E '^qlc_stored_log_(cache_bytes|loads_total) ' | tr '\n' ' '; echo
[ -n "${PPROF:-}" ] && curl -fs -o "$PPROF" "http://127.0.0.1:$ops/debug/pprof/heap"
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
retained=$(( RUNS < 1000 ? RUNS : 1000 ))  # the tenant's cap of finished runs (MaxFinishedPerTenant)
awk -v i="$idle" -v a="$after" -v io="$idleobj" -v ao="$afterobj" -v n="$retained" -v r="$rss" -v s="$start" -v e="$end" -v runs="$RUNS" -v m="$MODEL" 'BEGIN{
  printf "%s: %d runs in %.1f s; idle heap %.1f MB (%d objects); after %.1f MB (%d objects), RSS %d MiB; %d retained: %.1f KB and %.1f objects per run\n",
    m, runs, e-s, i/1e6, io, a/1e6, ao, r/1024, n, (a-i)/n/1000, (ao-io)/n }'
if [ -n "$EVICT_AFTER" ]; then
  secs=$(python3 -c "import re,sys; v='$EVICT_AFTER'; m=re.fullmatch(r'(\d+)(s|m)',v); print(int(m[1])*(60 if m[2]=='m' else 1))")
  sleep $(( secs + 5 ))
  read -r evicted evobj < <(heap)
  [ -n "${PPROF_DIR:-}" ] && curl -fs -o "$PPROF_DIR/evicted.pprof" "http://127.0.0.1:$ops/debug/pprof/heap"
  awk -v i="$idle" -v a="$evicted" -v o="$evobj" 'BEGIN{ printf "after eviction: heap %.1f MB (%d objects), %+.1f %% of idle\n", a/1e6, o, (a-i)/i*100 }'
  # The actor registry's 32 768 small maps (protoactor: 1 024 buckets of 32
  # shards) each keep a 288-byte group once a process id hashed there: a
  # one-time cost of up to ~9.4 MB that the first flood pays. A second flood
  # measures what runs leave behind once that is paid.
  seq "$RUNS" | xargs -P "$CONC" -I{} bash -c one
  sleep 5
  read -r held heldobj < <(heap)
  awk -v i="$evicted" -v a="$held" -v io="$evobj" -v ao="$heldobj" -v n="$retained" 'BEGIN{
    printf "second flood: heap %.1f MB; %d retained: %.1f KB and %.1f objects per run over the first eviction\n", a/1e6, n, (a-i)/n/1000, (ao-io)/n }'
  sleep "$secs"
  read -r again agobj < <(heap)
  awk -v i="$evicted" -v a="$again" -v o="$agobj" 'BEGIN{ printf "after a second flood and its eviction: heap %.1f MB (%d objects), %+.1f %% of the first eviction\n", a/1e6, o, (a-i)/i*100 }'
fi
