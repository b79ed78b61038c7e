#!/usr/bin/env bash
# make bench-peers: QLC side by side with Centrifugo and a plain
# httputil.ReverseProxy (bench/peers; BENCHMARKS.md, issue 11).
#
# Builds cmd/gateway and, once, Centrifugo v6.9.1 from the Go module proxy
# into .qlc/bin (git-ignored; not in go.mod), then runs the benchmark under
# flock /tmp/qlc-bench.lock so that benchmarks on this shared machine do not
# overlap. Extra flags: BENCH_PEERS_ARGS="-rounds 1 -readers 100" (see
# go run ./bench/peers -h). The table goes to stdout and .qlc/bench-peers.md,
# the raw figures to .qlc/bench-peers.json.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
CENTRIFUGO_VERSION=${CENTRIFUGO_VERSION:-v6.9.1}
bin=$PWD/.qlc/bin
mkdir -p "$bin"
if [ ! -x "$bin/centrifugo-$CENTRIFUGO_VERSION" ]; then
  echo "bench-peers: building Centrifugo $CENTRIFUGO_VERSION into $bin (once; a few minutes)" >&2
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  # Outside this module: its go.mod stays as it is.
  (cd "$tmp" && GOBIN="$tmp" "$GO" install "github.com/centrifugal/centrifugo/v6@$CENTRIFUGO_VERSION")
  mv "$tmp/centrifugo" "$bin/centrifugo-$CENTRIFUGO_VERSION"
  rm -rf "$tmp"
  trap - EXIT
fi
"$GO" build -o "$bin/qlc-gateway" ./cmd/gateway
"$GO" build -o "$bin/bench-peers" ./bench/peers
# Bounded: the program's own budget (default 9 min) plus a margin.
exec flock -w 1200 /tmp/qlc-bench.lock timeout 15m "$bin/bench-peers" \
  -gateway "$bin/qlc-gateway" -centrifugo "$bin/centrifugo-$CENTRIFUGO_VERSION" \
  -centrifugo-version "$CENTRIFUGO_VERSION" \
  -command "make bench-peers${BENCH_PEERS_ARGS:+ BENCH_PEERS_ARGS=\"$BENCH_PEERS_ARGS\"}" \
  ${BENCH_PEERS_ARGS:-}
