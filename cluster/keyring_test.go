package cluster

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// A cluster key is rotated in three rolling phases (docs/keys.md), one member
// replaced at a time: [old] → [old,+new] (new accepted everywhere) →
// [new,+old] (new encrypts everywhere) → [new] (old dropped). After every
// replacement the members that live side by side — rings of two adjacent
// phases — form one cluster and gossip (a load announcement crosses both
// ways). At the end a member holding only the old key cannot join.
func TestKeyringRollingRotation(t *testing.T) {
	done := checkGoroutines(t)
	old := bytes.Repeat([]byte{0x11}, 32)
	next := bytes.Repeat([]byte{0x22}, 32)
	n := NewMemNetwork()
	gen := 0
	startWith := func(primary []byte, secondary [][]byte, seeds ...string) *Cluster {
		gen++
		cfg := testConfig(fmt.Sprintf("m%d", gen), n.NewTransport(), seeds...)
		cfg.ClusterKey, cfg.SecondaryKeys = primary, secondary
		return mustStart(t, cfg)
	}
	live := []*Cluster{startWith(old, nil)}
	for len(live) < 3 {
		live = append(live, startWith(old, nil, live[0].Self().GossipAddr))
	}
	waitAll := func(what string) {
		t.Helper()
		for _, c := range live {
			waitFor(t, 10*time.Second, c.Name()+" sees 3 members "+what, func() bool { return len(c.Members()) == 3 })
		}
	}
	waitAll("at start")
	load := 0
	gossips := func(what string) {
		t.Helper()
		for _, from := range live {
			load++
			from.SetLoad(load)
			want := load
			for _, to := range live {
				waitFor(t, 10*time.Second, fmt.Sprintf("%s sees %s's load %s", to.Name(), from.Name(), what), func() bool {
					m, ok := memberNamed(to.Members(), from.Name())
					return ok && m.Load == want
				})
			}
		}
	}
	for _, phase := range []struct {
		name      string
		primary   []byte
		secondary [][]byte
	}{
		{"phase 1 [old,+new]", old, [][]byte{next}},
		{"phase 2 [new,+old]", next, [][]byte{old}},
		{"phase 3 [new]", next, nil},
	} {
		for i := range live {
			var seeds []string
			for j, c := range live {
				if j != i {
					seeds = append(seeds, c.Self().GossipAddr)
				}
			}
			if err := live[i].Leave(time.Second); err != nil {
				t.Fatalf("%s: leave: %v", phase.name, err)
			}
			if err := live[i].Shutdown(); err != nil {
				t.Fatal(err)
			}
			live[i] = startWith(phase.primary, phase.secondary, seeds...)
			waitAll(fmt.Sprintf("(%s, member %d replaced)", phase.name, i+1))
			gossips(fmt.Sprintf("(%s, member %d replaced)", phase.name, i+1))
		}
	}
	stale := startWith(old, nil, live[0].Self().GossipAddr)
	waitFor(t, 10*time.Second, "a member with only the old key fails to join", func() bool { return stale.joinFailures.Load() >= 2 })
	if ms := stale.Members(); len(ms) != 1 {
		t.Fatalf("the stale member sees %v", names(ms))
	}
	for _, c := range live {
		if ms := c.Members(); len(ms) != 3 {
			t.Fatalf("%s sees %v", c.Name(), names(ms))
		}
	}
	for _, c := range append(live, stale) {
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	done()
}

// Disjoint rings never form a cluster; a secondary key needs a primary and
// every key is checked.
func TestKeyringDisjointAndValidation(t *testing.T) {
	n := NewMemNetwork()
	a := testConfig("a", n.NewTransport())
	a.ClusterKey, a.SecondaryKeys = bytes.Repeat([]byte{1}, 32), [][]byte{bytes.Repeat([]byte{2}, 32)}
	ca := mustStart(t, a)
	b := testConfig("b", n.NewTransport(), ca.Self().GossipAddr)
	b.ClusterKey, b.SecondaryKeys = bytes.Repeat([]byte{3}, 32), [][]byte{bytes.Repeat([]byte{4}, 16)}
	cb := mustStart(t, b)
	waitFor(t, 10*time.Second, "joins across disjoint rings fail", func() bool { return cb.joinFailures.Load() >= 2 })
	if len(ca.Members()) != 1 || len(cb.Members()) != 1 {
		t.Fatalf("disjoint rings merged: %v / %v", names(ca.Members()), names(cb.Members()))
	}
	bad := testConfig("c", n.NewTransport())
	bad.SecondaryKeys = [][]byte{bytes.Repeat([]byte{5}, 20)}
	if _, err := bad.validate(); err == nil {
		t.Fatal("a 20-byte secondary key was accepted")
	}
	bad.ClusterKey = nil
	bad.SecondaryKeys = [][]byte{bytes.Repeat([]byte{5}, 32)}
	if _, err := bad.validate(); err == nil {
		t.Fatal("secondary keys without a primary were accepted")
	}
}
