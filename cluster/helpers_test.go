package cluster

import (
	"log/slog"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func testLogger() *slog.Logger {
	if os.Getenv("QLC_CLUSTER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testConfig is DefaultConfig with fast re-joins and its own metrics registry.
func testConfig(name string, tr memberlist.NodeAwareTransport, seeds ...string) Config {
	cfg := DefaultConfig()
	cfg.NodeName = name
	cfg.Transport = tr
	cfg.Seeds = seeds
	cfg.ClusterKey = testKey
	cfg.RejoinInterval = 400 * time.Millisecond
	cfg.LoadUpdateInterval = 20 * time.Millisecond
	cfg.Logger = testLogger()
	cfg.Registerer = prometheus.NewRegistry()
	return cfg
}

func mustStart(t *testing.T, cfg Config) *Cluster {
	t.Helper()
	c, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { _ = c.Shutdown() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func names(ms []Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

func hasName(ms []Member, n string) bool {
	for _, m := range ms {
		if m.Name == n {
			return true
		}
	}
	return false
}

func memberNamed(ms []Member, n string) (Member, bool) {
	for _, m := range ms {
		if m.Name == n {
			return m, true
		}
	}
	return Member{}, false
}

// checkGoroutines returns a func that fails t if, within a few seconds, the goroutine count does not
// come back to what it was (memberlist's own goroutines exit asynchronously after its Shutdown).
func checkGoroutines(t *testing.T) func() {
	before := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Fatalf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:n])
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func addrOf(s string) memberlist.Address { return memberlist.Address{Addr: s} }
