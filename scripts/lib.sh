# Process helpers shared by scripts that start QLC processes on loopback
# (scripts/profile.sh, scripts/gateway-capacity.sh). Source it after setting
# $out (the folder of the processes' logs) and $me (the name errors start
# with); started processes go in the pids array, and cleanup stops them.

pids=()

# cleanup stops every started process, the last started first (a gateway
# before its nodes: nodes leaving would move its runs), each with SIGTERM
# and up to 5 s, then SIGKILL whatever is left after 10 s more.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[i]}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.1; done
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# addr FILE KEY: a field of a process's -addr-file (waits up to 30 s for it).
addr() {
  for _ in $(seq 300); do
    if [ -s "$1" ]; then
      v=$(grep -o "\"$2\": *\"[^\"]*\"" "$1" | sed 's/.*"\([^"]*\)"$/\1/')
      [ -n "$v" ] && { echo "$v"; return; }
    fi
    sleep 0.1
  done
  echo "$me: no $2 address in $1 (see $out/*.log)" >&2
  return 1
}

# ready ADDR: waits up to 30 s for http://ADDR/readyz to answer 200.
ready() {
  for _ in $(seq 300); do curl -fs "http://$1/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "$me: $1 not ready (see $out/*.log)" >&2
  return 1
}
