package scalesim

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// A small cluster of the shipped configuration converges on a join, a death
// and a load change well within the timeout, and its gossip is counted. The
// protocol's intervals are stretched ×3 (figures are divided back): on a
// shared 2-core machine a stall of 100 ms hits every member at once and,
// at the shipped 50 ms probe timeout, fences some (docs/scale.md).
func TestSimulateMembershipSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 20 memberlist instances (about 30 s)")
	}
	n := 20
	if raceOn {
		n = 8
	}
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := SimulateMembership(ctx, Config{N: n, Reps: 2, Steady: 6 * time.Second, Scale: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Missed != 0 {
		t.Fatalf("%d waits timed out: %+v", res.Missed, res)
	}
	if len(res.Join) != 2 || len(res.Death) != 2 || len(res.Meta) != 2 {
		t.Fatalf("want 2 timings of each, got %+v", res)
	}
	for i := range 2 {
		// A death needs a probe, a suspicion timeout (400+ ms) and gossip:
		// never instant, and with the shipped 100 ms probes never 10 s.
		if d := res.Death[i]; d < 100*time.Millisecond || d > 10*time.Second {
			t.Errorf("death %d took %v", i, d)
		}
		if d := res.Join[i]; d <= 0 || d > 5*time.Second {
			t.Errorf("join %d took %v", i, d)
		}
		if d := res.Meta[i]; d <= 0 || d > 5*time.Second {
			t.Errorf("metadata change %d took %v", i, d)
		}
	}
	// A probe and its ack every 100 ms (the shipped interval, stretched
	// and divided back), gossip every 50 ms, re-joins every 3 s: hundreds
	// of bytes and several packets per second at least, and not megabytes.
	if res.BytesPerMember < 200 || res.BytesPerMember > 1e6 {
		t.Errorf("bytes per member per second %.0f", res.BytesPerMember)
	}
	if res.PacketBytesPerMember <= 0 || res.PacketsPerMember < 5 || res.MaxBytesPerMember < res.BytesPerMember {
		t.Errorf("byte counts %+v", res)
	}
	// A stall of the whole machine (other jobs on these two cores) can still
	// fence a member now and then; the waits above skip fenced members, so
	// fail only if it is not a rare event.
	if res.Fenced > n/4 || res.MinView < n-n/4 {
		t.Errorf("false suspicions in a %d-member cluster: min view %d, fenced %d (timer lag max %v)", n, res.MinView, res.Fenced, res.LagMax)
	} else if res.Fenced > 0 {
		t.Logf("%d members fenced after a stall (timer lag max %v)", res.Fenced, res.LagMax)
	}
	if res.CPU <= 0 || res.Goroutines <= before {
		t.Errorf("CPU %.3f, goroutines %d (before %d)", res.CPU, res.Goroutines, before)
	}
	// Every member's goroutines are gone once it returns.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines: %d before, %d after", before, runtime.NumGoroutine())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{N: 2}, {N: 10, Seeds: 11}, {N: 10, Scale: -1}, {N: 10, Poll: -1}} {
		if err := c.validate(); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	c := Config{N: 10, Scale: 2}
	if err := c.validate(); err != nil || c.Seeds != 3 || c.Reps != 3 || c.Steady != 20*time.Second || c.Timeout != 60*time.Second {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3}
	if quantile(ds, 0.5) != 3 || quantile(ds, 1) != 5 || quantile(ds, 0) != 1 || quantile(nil, 0.5) != 0 {
		t.Fatal("quantile")
	}
}
