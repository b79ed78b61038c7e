package cluster

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestFencingAfterPartition cuts one member off (its transport drops everything) for longer than the
// suspicion timeout, then heals it. Both sides declare the other dead; on healing, the lone member
// (the minority) must fence, the others must refuse its old identity, and a restart under a new name
// must be accepted.
func TestFencingAfterPartition(t *testing.T) {
	done := checkGoroutines(t)
	n := NewMemNetwork()
	ta, tb := n.NewTransport(), n.NewTransport()
	mc := n.NewTransport()
	tc := WrapTransport(mc)
	a := mustStart(t, testConfig("a", ta, mc.Addr()))
	b := mustStart(t, testConfig("b", tb, ta.Addr()))
	c := mustStart(t, testConfig("c", tc, ta.Addr(), tb.Addr()))
	for _, x := range []*Cluster{a, b, c} {
		waitFor(t, 5*time.Second, x.Name()+" sees 3", func() bool { return len(x.Members()) == 3 })
	}

	tc.Pause()
	waitFor(t, 5*time.Second, "a and b declare c dead", func() bool {
		return !hasName(a.Members(), "c") && !hasName(b.Members(), "c")
	})
	waitFor(t, 5*time.Second, "c declares a and b dead", func() bool { return len(c.Members()) == 1 })
	select {
	case <-c.Fenced():
		t.Fatal("fenced while still cut off (nobody could tell it)")
	default:
	}
	tc.Resume()

	select {
	case <-c.Fenced():
	case <-time.After(10 * time.Second):
		t.Fatal("c was not fenced after the partition healed")
	}
	if err := c.FenceCause(); !errors.Is(err, ErrFenced) || !strings.Contains(err.Error(), "partition") {
		t.Fatalf("fence cause: %v", err)
	}
	if len(c.Members()) != 0 {
		t.Fatalf("fenced member still lists %v", names(c.Members()))
	}
	if err := c.Leave(time.Second); !errors.Is(err, ErrFenced) {
		t.Fatalf("Leave after fencing: %v", err)
	}
	// The majority refused c's come-back (alive messages for a tombstoned name) and stayed unfenced.
	waitFor(t, 5*time.Second, "a or b refused c's old identity", func() bool {
		return testutil.ToFloat64(a.met.refusedAlive)+testutil.ToFloat64(b.met.refusedAlive) > 0
	})
	for _, x := range []*Cluster{a, b} {
		select {
		case <-x.Fenced():
			t.Fatalf("%s (majority side) fenced: %v", x.Name(), x.FenceCause())
		default:
		}
		if hasName(x.Members(), "c") {
			t.Fatalf("%s resurrected c: %v", x.Name(), names(x.Members()))
		}
	}
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}

	// The process rejoins under a new name and is welcome.
	c2 := mustStart(t, testConfig("c-2", n.NewTransport(), ta.Addr()))
	for _, x := range []*Cluster{a, b, c2} {
		waitFor(t, 5*time.Second, x.Name()+" sees a, b, c-2", func() bool {
			ms := x.Members()
			return len(ms) == 3 && hasName(ms, "c-2") && !hasName(ms, "c")
		})
	}
	// An old identity restarting under its old name is refused for good (tombstone), and told so.
	old := mustStart(t, testConfig("c", n.NewTransport(), ta.Addr()))
	select {
	case <-old.Fenced():
	case <-time.After(10 * time.Second):
		t.Fatal("a reused dead name was not fenced")
	}
	if hasName(a.Members(), "c") || hasName(b.Members(), "c") {
		t.Fatal("reused dead name accepted")
	}
	for _, x := range []*Cluster{old, c2, b, a} {
		if err := x.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	done()
}
