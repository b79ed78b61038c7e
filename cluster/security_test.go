package cluster

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEncryptionKeepsStrangersOut runs on real loopback UDP/TCP: members with the cluster key form a
// cluster; a process with another key, and one with no key at all, can neither join nor see members,
// and their traffic (including a forged fence notice) is refused.
func TestEncryptionKeepsStrangersOut(t *testing.T) {
	done := checkGoroutines(t)
	loop := func(name string, key []byte, seeds ...string) Config {
		cfg := testConfig(name, nil, seeds...)
		cfg.BindAddr = "127.0.0.1:0"
		cfg.ClusterKey = key
		if key == nil {
			cfg.Insecure = true
		}
		return cfg
	}
	a := mustStart(t, loop("a", testKey))
	seed := a.Self().GossipAddr
	if seed == "" {
		t.Fatal("no gossip address")
	}
	b := mustStart(t, loop("b", testKey, seed))
	waitFor(t, 5*time.Second, "a and b joined", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })

	otherKey := []byte("fedcba9876543210fedcba9876543210")
	wrong := mustStart(t, loop("wrong-key", otherKey, seed))
	none := mustStart(t, loop("no-key", nil, seed))
	waitFor(t, 10*time.Second, "strangers' joins fail repeatedly", func() bool {
		return wrong.joinFailures.Load() >= 2 && none.joinFailures.Load() >= 2
	})
	// Forged fence notice aimed at a, sent by the keyless process.
	if err := none.ml.SendToAddress(addrOf(seed), fenceNotice{Target: "a", accusation: accusation{Accuser: "no-key", AccuserCount: 99, AccuserMin: "0"}}.encode()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a refuses undecryptable traffic", func() bool {
		return testutil.ToFloat64(a.met.rejected) >= 2
	})
	for _, s := range []*Cluster{wrong, none} {
		if ms := s.Members(); len(ms) != 1 || ms[0].Name != s.Name() {
			t.Fatalf("%s sees %v", s.Name(), names(ms))
		}
	}
	for _, m := range []*Cluster{a, b} {
		if ms := m.Members(); len(ms) != 2 {
			t.Fatalf("%s sees %v", m.Name(), names(ms))
		}
		if j := testutil.ToFloat64(m.met.joins); j != 2 {
			t.Fatalf("%s saw %v joins, want 2 (self and its peer)", m.Name(), j)
		}
	}
	select {
	case <-a.Fenced():
		t.Fatal("a forged notice fenced a")
	default:
	}
	for _, c := range []*Cluster{none, wrong, b, a} {
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	done()
}
