#!/usr/bin/env bash
# make gateway-capacity: what one gateway carries per CPU (BENCHMARKS.md,
# issue 18 item 3). Two nodes and GATEWAYS gateways as local processes (port
# 0, a fresh cluster key and data folder); each gateway pinned with taskset
# to the CPU GATEWAY_CPUS names for it, with GOMAXPROCS=1; the nodes and the
# load generator (qlc-load, closed loop of CONCURRENCY run streams on the
# profile PROFILE: POST /v1/runs and its SSE stream to the end) on LOAD_CPU.
# With two gateways the load goes through `gateway balance` (on LOAD_CPU).
# No admission limit stands in the way (nodes -run-slots 0, gateways
# QLC_ADAPTIVE_ACTIVE_RUNS=false): the load is what the processes carry.
# For LOAD_SECONDS of load it reads every process's CPU time (/proc/PID/stat) and
# the tokens streamed (qlc-load's count of token_delta tokens), and prints runs/s,
# tokens/s, each process's CPU, and CPU per 1000 tokens: the gateway's and
# the nodes'. With PPROF=1, a CPU profile of the (first) gateway during the
# load into $OUT/gateway.cpu.pprof and its top listing.
#   GATEWAYS=1 GATEWAY_CPUS=1 LOAD_CPU=0 LOAD_SECONDS=15 CONCURRENCY=16 PROFILE=instant ./scripts/gateway-capacity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
n_gw=${GATEWAYS:-1}
gw_cpus=(${GATEWAY_CPUS:-1 1})
load_cpu=${LOAD_CPU:-0}
secs=${LOAD_SECONDS:-15} # not SECONDS: bash's own (seconds since the shell started)
conc=${CONCURRENCY:-16}
prof=${PROFILE:-instant}
out=${OUT:-.qlc/gateway-capacity/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out" bin
CGO_ENABLED=0 $GO build -o bin/ ./cmd/node ./cmd/gateway ./cmd/qlc-load

export QLC_CLUSTER_KEY=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
me="gateway-capacity"
. scripts/lib.sh
trap cleanup EXIT INT TERM
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, clock ticks
hz=$(getconf CLK_TCK)

declare -A pid ops
node() { # node NAME [SEEDS]
  taskset -c "$load_cpu" ./bin/node -run-slots 0 -gossip-bind 127.0.0.1:0 -bind 127.0.0.1:0 -ops-addr 127.0.0.1:0 -log-level warn \
    -addr-file "$out/$1.addrs" ${2:+-seeds "$2"} >"$out/$1.log" 2>&1 &
  pids+=($!); pid[$1]=$!
}
node node1
seed=$(addr "$out/node1.addrs" gossip)
node node2 "$seed"
gws=()
for i in $(seq "$n_gw"); do
  g=gateway$i
  QLC_ADAPTIVE_ACTIVE_RUNS=false GOMAXPROCS=1 taskset -c "${gw_cpus[$((i - 1))]}" ./bin/gateway -addr 127.0.0.1:0 -ops-addr 127.0.0.1:0 -seeds "$seed" \
    -gossip-bind 127.0.0.1:0 -bind 127.0.0.1:0 -data-dir "$out/data$i" -dev-keys -default-concurrent-runs 0 \
    -log-format text -log-level warn -addr-file "$out/$g.addrs" >"$out/$g.log" 2>&1 &
  pids+=($!); pid[$g]=$!; gws+=("$g")
done
for p in node1 node2 "${gws[@]}"; do ops[$p]=$(addr "$out/$p.addrs" ops); ready "${ops[$p]}"; done
api=$(addr "$out/gateway1.addrs" http)
ready "$api"
if [ "$n_gw" -gt 1 ]; then
  backends=()
  for g in "${gws[@]}"; do backends+=("$(addr "$out/$g.addrs" http)"); done
  taskset -c "$load_cpu" ./bin/gateway balance -addr 127.0.0.1:0 -addr-file "$out/balancer.addrs" \
    -backends "$(IFS=,; echo "${backends[*]}")" -log-level warn >"$out/balancer.log" 2>&1 &
  pids+=($!); pid[balancer]=$!
  api=$(addr "$out/balancer.addrs" http)
  ready "$api"
fi
key=$(grep -o '"tenant_key": *"[^"]*"' "$out/data1/dev-keys.json" | sed 's/.*"\([^"]*\)"$/\1/')
# Every gateway knows the key (the registry replicates): wait for the others.
for g in "${gws[@]}"; do
  a=$(addr "$out/$g.addrs" http)
  for _ in $(seq 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "http://$a/v1/models")" = 200 ] && break
    sleep 0.1
  done
done

procs=(node1 node2 "${gws[@]}")
[ "$n_gw" -gt 1 ] && procs+=(balancer)
# Warm up, then measure.
taskset -c "$load_cpu" ./bin/qlc-load -url "http://$api" -key "$key" -profile "$prof" -c 2 -n 20 -d 5s -json "" -html "" -progress off >/dev/null 2>&1 || true
declare -A c0
for p in "${procs[@]}"; do c0[$p]=$(cpu "${pid[$p]}"); done
s0=$(date +%s.%N)
if [ "${PPROF:-0}" = 1 ]; then
  curl -fsS --max-time $((secs + 30)) -o "$out/gateway.cpu.pprof" "http://${ops[gateway1]}/debug/pprof/profile?seconds=$((secs - 2))" &
  ppid=$!
fi
taskset -c "$load_cpu" ./bin/qlc-load -url "http://$api" -key "$key" -profile "$prof" -c "$conc" -n 1000000 -d "${secs}s" -drain 10s \
  -json "$out/load.json" -html "" -progress off >"$out/load.txt" 2>&1 || true
s1=$(date +%s.%N)
t0=0
t1=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["tokens"]))' "$out/load.json" 2>/dev/null || echo 0)
declare -A c1
for p in "${procs[@]}"; do c1[$p]=$(cpu "${pid[$p]}"); done
[ "${PPROF:-0}" = 1 ] && { wait "$ppid" || true; $GO tool pprof -top -nodecount 35 bin/gateway "$out/gateway.cpu.pprof" >"$out/gateway.cpu.top.txt" 2>/dev/null || true; }
runs=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["outcomes"].get("ok", 0)))' "$out/load.json" 2>/dev/null || echo 0)
cleanup
trap - EXIT INT TERM

python3 - "$hz" "$s0" "$s1" "$t0" "$t1" "$runs" "$n_gw" "$conc" "$prof" "${gw_cpus[*]}" "$load_cpu" "$(cat /proc/loadavg)" \
  "$(for p in "${procs[@]}"; do echo -n "$p=${c0[$p]}:${c1[$p]} "; done)" <<'EOF' | tee "$out/summary.txt"
import sys
hz, s0, s1, t0, t1, runs, ngw, conc, prof, gwcpus, loadcpu, loadavg, cpus = sys.argv[1:]
hz, wall, tok = float(hz), float(s1) - float(s0), int(t1) - int(t0)
runs = int(runs)
cpu = {}
for item in cpus.split():
    name, v = item.split("=")
    a, b = v.split(":")
    cpu[name] = (int(b) - int(a)) / hz
gw = sum(v for k, v in cpu.items() if k.startswith("gateway"))
nodes = cpu["node1"] + cpu["node2"]
print(f"{ngw} gateway(s) on CPU {gwcpus} (GOMAXPROCS=1), nodes and qlc-load on CPU {loadcpu}; profile {prof}, {conc} streams; load average at the end {loadavg.split()[0:3]}")
print(f"wall {wall:.1f} s: {runs} runs completed = {runs / wall:.1f} runs/s; {tok} tokens = {tok / wall:.0f} tokens/s")
for k, v in sorted(cpu.items()):
    print(f"  {k}: {v:.2f} CPU-s = {100 * v / wall:.0f} % of a core")
if tok:
    print(f"gateway CPU per 1000 tokens: {1000 * gw / tok * 1000:.1f} ms; nodes': {1000 * nodes / tok * 1000:.1f} ms (both nodes together)")
    if gw > 0:
        print(f"one gateway CPU carries: {tok / gw:.0f} tokens/s, {runs / gw:.1f} runs/s")
EOF
echo "gateway-capacity: files in $out"
