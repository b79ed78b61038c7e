// Not in the race-built pass of make test: the race detector slows every member of the test 5-10×, so
// under it all four are starved, not one, and the figure this test checks (a member whose packets
// arrive 250 ms late refutes every suspicion in time) is not the one it runs; it failed 1 run in 4
// there at load average 2-3 (before and after issue 15's re-join change), against about 1 in 10
// without -race. The plain pass of make test runs it.

//go:build !race

package cluster

import (
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestStarvedMemberIsNotDeclaredDead is issue 18's "overload is not failure" at the membership layer.
// One member of four reads its socket late, as a CPU-starved process does (every packet and stream
// it receives is held for starveDelay: longer than ProbeTimeout and than ProbeInterval, so each of
// its acks misses the prober's deadline and it is suspected again and again). It is slow, not dead:
// with the defaults (Lifeguard's confirmation-based suspicion, SuspicionMult 4 and
// SuspicionMaxTimeoutMult 6, probes every 100 ms with an 80 ms ack timeout) it refutes each suspicion before the suspicion times
// out, so no member ever drops it from its view, and it never fences. A member that stops answering at all is still
// declared dead (TestFencingAfterPartition), so starvation and death stay apart.
//
// With the former defaults (100 ms probes, SuspicionMult 2, SuspicionMaxTimeoutMult 2: a fixed 200 ms
// suspicion timeout, no confirmations) the same member was declared dead within a second: run with
// QLC_STARVE_OLD=1 to see it.
func TestStarvedMemberIsNotDeclaredDead(t *testing.T) {
	const starveDelay = 250 * time.Millisecond
	const starveFor = 4 * time.Second
	done := checkGoroutines(t)
	n := NewMemNetwork()
	ta, tb, tc := n.NewTransport(), n.NewTransport(), n.NewTransport()
	mv := n.NewTransport()
	tv := WrapTransport(mv)
	cfg := func(name string, tr *MemTransport, ft *FaultTransport, seeds ...string) Config {
		c := testConfig(name, tr, seeds...)
		// Anti-entropy every 400 ms, as the test's 400 ms seed re-join gave it until issue 15 (the
		// re-join now skips seeds that are members). v's own push/pulls are not delayed (the fault
		// holds what v receives, not the answers to its dials), so they let v learn of a suspicion
		// and refute it early. This test is sensitive to the host's load either way: with the machine
		// at load average 13–21 (2 cores) it failed 4 of 15 runs on main before issue 15's change, 3
		// of 15 after it without this line, 1 of 15 with it.
		c.PushPullInterval = 400 * time.Millisecond
		if ft != nil {
			c.Transport = ft
		}
		if starveOld() {
			c.SuspicionMult, c.SuspicionMaxTimeoutMult = 2, 2
			c.ProbeInterval, c.ProbeTimeout = 100*time.Millisecond, 50*time.Millisecond
		}
		return c
	}
	a := mustStart(t, cfg("a", ta, nil))
	b := mustStart(t, cfg("b", tb, nil, ta.Addr()))
	c := mustStart(t, cfg("c", tc, nil, ta.Addr()))
	v := mustStart(t, cfg("v", mv, tv, ta.Addr()))
	all := []*Cluster{a, b, c, v}
	for _, x := range all {
		waitFor(t, 5*time.Second, x.Name()+" sees 4", func() bool { return len(x.Members()) == 4 })
	}

	tv.SetDelay(starveDelay)
	end := time.Now().Add(starveFor)
	for time.Now().Before(end) {
		for _, x := range []*Cluster{a, b, c} {
			if !hasName(x.Members(), "v") {
				t.Fatalf("%s dropped the starved member v from its view (declared dead under load)", x.Name())
			}
		}
		select {
		case <-v.Fenced():
			t.Fatalf("the starved member fenced itself: %v", v.FenceCause())
		default:
		}
		time.Sleep(5 * time.Millisecond)
	}
	tv.SetDelay(0)
	var suspicions, timeouts float64
	for _, x := range []*Cluster{a, b, c} {
		suspicions += testutil.ToFloat64(x.met.suspicions)
		timeouts += testutil.ToFloat64(x.met.suspectTimeouts)
	}
	t.Logf("while starved: %v suspicions of v, %v suspect timeouts, %v refutations by v",
		suspicions, timeouts, testutil.ToFloat64(v.met.refutations))
	if suspicions == 0 {
		t.Fatal("v was never suspected: the delay does not exercise the failure detector")
	}
	if timeouts != 0 {
		t.Fatalf("%v suspicions of v timed out (v was declared dead)", timeouts)
	}
	for _, x := range all {
		waitFor(t, 5*time.Second, x.Name()+" still sees 4", func() bool { return len(x.Members()) == 4 })
	}
	for _, x := range all {
		if err := x.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	done()
}

func starveOld() bool { return os.Getenv("QLC_STARVE_OLD") != "" }
