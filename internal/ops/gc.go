package ops

import (
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// DefaultGCPercent is the garbage collector's target (GOGC) that QLC's
// processes run with unless the operator says otherwise: 400, not Go's 100.
//
// Why: every token is a few small objects (the provider's chunk, the
// logged event, the fan-out to readers), so a process streaming at full
// speed allocates continuously, and on a two-core host each collection's
// mark phase takes one of the two cores (Go gives marking 25 % of
// GOMAXPROCS, rounded: one P of two). At GOGC=100 a collection came every
// few runs and the answer's first token waited behind it: the -thinking
// first chunk's p99 over the first step's TTFT was 1.4–3.2 ms with GOGC=100
// and 1.0–1.1 ms with 400 in the same runs (BENCHMARKS.md, issue 12). The
// live heap of a gateway or node is tens of MiB, so 400 costs memory in
// proportion (the heap may grow to five times what is live before the
// next collection), and the memory budget (-memory-budget, GOMEMLIMIT)
// still bounds it: near the limit the collector runs as often as needed.
const DefaultGCPercent = 400

// ParseGCPercent reads a -gc-percent value: a percentage from 25 to 10000,
// or "default" for DefaultGCPercent ("" too).
func ParseGCPercent(s string) (int, error) {
	switch s = strings.TrimSpace(s); s {
	case "", "default":
		return DefaultGCPercent, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 25 || n > 10000 {
		return 0, fmt.Errorf("gc percent: want 25 to 10000 (Go's default is 100), got %q", s)
	}
	return n, nil
}

// ApplyGCPercent sets the collector's target to percent unless GOGC is set
// in the environment (the operator's word wins; the runtime has read it).
// It returns the target in force and whether it came from GOGC.
func ApplyGCPercent(percent int) (inForce int, fromEnv bool) {
	if v := os.Getenv("GOGC"); v != "" {
		cur := debug.SetGCPercent(100)
		debug.SetGCPercent(cur)
		return cur, true
	}
	debug.SetGCPercent(percent)
	return percent, false
}
