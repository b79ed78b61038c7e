package actors

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fairBenchProfiles: a short run, 4 stages of 2 ms (±1) to the first token
// and 5 tokens 1 ms (±0.5) apart: about 25 ms. The jitter keeps a flood's
// runs from ending in lockstep.
const fairBenchProfiles = `
default_profile: short
providers:
  sim: {kind: sim, sim: {ttft: 2ms, ttft_jitter: 1ms, itl: 1ms, itl_jitter: 500us, output_tokens: 5}}
profiles:
  short:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

const (
	fairSlots      = 8
	fairTrickle    = 50                    // runs of the quiet tenant b per phase
	fairEvery      = 20 * time.Millisecond // b's pace
	fairFlood      = 4 * fairSlots         // runs a keeps outstanding: 8x the 4 slots of its half
	fairPhaseLimit = 20 * time.Second      // bound on one phase, should the engine wedge
)

// BenchmarkFairSharing: time to first token of a quiet tenant b on a node
// with 8 run slots, alone and while tenant a keeps 32 runs outstanding
// (8x the 4 slots of its half, most of them queued), resubmitting each as
// it ends. b's TTFT is from StartRun to the first TokenDelta reaching the
// run's hub. b runs 50 runs in each of two paces:
//
//   - seq: one at a time, each 20 ms after the previous started or when it
//     ended, whichever is later (b never holds more than one slot);
//   - open: one every 20 ms whatever is running (runs overlap: b needs
//     about 1.5 slots, at times 2 or 3).
//
// With share caps, a holds 7 slots (all but the headroom) until b comes,
// then at most 4 while b is active (b sends a run at least every 5 s, the
// activity window): b's runs find a free slot at once in both paces,
// instead of waiting in the open pace for one of a's runs to end. The cost
// is a's throughput: slots of b's share that b does not use stay free.
//
// Reported per pace: b's p50/p99 TTFT alone and loaded, the ratio of the
// p99s (the goal: at most 2), and a's completed runs/s while loaded (the
// node stayed busy). With 50 runs, p99 is the slowest run.
func BenchmarkFairSharing(b *testing.B) {
	type phase struct {
		alone, loaded []time.Duration
		aRate         float64
	}
	paces := []struct {
		name string
		open bool
	}{{"seq", false}, {"open", true}}
	res := make([]phase, len(paces))
	for range b.N {
		e := newSlotEngine(b, fairBenchProfiles, func(c *Config) { c.RunSlots = fairSlots })
		fairWarmUp(b, e) // the first run loads the tokenizer's vocabulary
		for i, p := range paces {
			alone, _ := runTrickle(b, e, false, p.open)
			loaded, rate := runTrickle(b, e, true, p.open)
			res[i].alone = append(res[i].alone, alone...)
			res[i].loaded = append(res[i].loaded, loaded...)
			res[i].aRate += rate / float64(b.N)
		}
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	for i, p := range paces {
		r := res[i]
		b.ReportMetric(ms(fairPercentile(r.alone, 50)), p.name+"_b_p50_alone_ms")
		b.ReportMetric(ms(fairPercentile(r.alone, 99)), p.name+"_b_p99_alone_ms")
		b.ReportMetric(ms(fairPercentile(r.loaded, 50)), p.name+"_b_p50_loaded_ms")
		b.ReportMetric(ms(fairPercentile(r.loaded, 99)), p.name+"_b_p99_loaded_ms")
		b.ReportMetric(float64(fairPercentile(r.loaded, 99))/float64(fairPercentile(r.alone, 99)), p.name+"_p99_loaded/alone")
		b.ReportMetric(r.aRate, p.name+"_a_runs/s")
	}
}

// runTrickle runs b's runs and returns their TTFTs; with flood, tenant a
// fills the node meanwhile, and aRate is a's completed runs/s.
func runTrickle(b *testing.B, e *Engine, flood, open bool) (ttfts []time.Duration, aRate float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fairPhaseLimit)
	defer cancel()
	stop := make(chan struct{})
	var floods sync.WaitGroup
	var aDone atomic.Int64
	if flood {
		for range fairFlood {
			floods.Add(1)
			go func() {
				defer floods.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					h, err := e.StartRun(RunRequest{Tenant: "a", Profile: "short", Query: "q"})
					if err != nil {
						b.Error(err)
						return
					}
					if h.WaitDone(ctx) != nil {
						return
					}
					aDone.Add(1)
				}
			}()
		}
		// Let a fill the node and its queue before b comes.
		pollUntilTrue(b, "a to fill the node", func() bool { st := e.deps.slots.stats(); return st.Running+st.Waiting >= fairFlood })
	}

	began := time.Now()
	a0 := aDone.Load()
	ttfts = make([]time.Duration, fairTrickle)
	var bRuns sync.WaitGroup
	tick := time.NewTicker(fairEvery)
	for i := range fairTrickle {
		if i > 0 {
			<-tick.C
		}
		bRuns.Add(1)
		run := func() {
			defer bRuns.Done()
			t0 := time.Now()
			h, err := e.StartRun(RunRequest{Tenant: "b", Profile: "short", Query: "q"})
			if err != nil {
				b.Error(err)
				return
			}
			sub := h.Subscribe(1)
			defer sub.Close()
			for ttfts[i] == 0 {
				evs, err := sub.Next(ctx, nil)
				if err != nil {
					b.Errorf("b's run %d: no first token: %v", i, err)
					return
				}
				for _, ev := range evs {
					if ev.GetTokenDelta() != nil {
						ttfts[i] = time.Since(t0)
						break
					}
				}
			}
			if err := h.WaitDone(ctx); err != nil {
				b.Errorf("b's run %d did not end: %v", i, err)
			}
		}
		if open {
			go run()
		} else {
			run()
		}
	}
	tick.Stop()
	bRuns.Wait()
	if flood {
		aRate = float64(aDone.Load()-a0) / time.Since(began).Seconds()
	}
	close(stop)
	floods.Wait()
	return ttfts, aRate
}

// fairWarmUp runs one run of b to its end. It is b's, not a third
// tenant's, so no third tenant takes a share of the slots in the phases
// that follow within the activity window.
func fairWarmUp(b *testing.B, e *Engine) {
	b.Helper()
	h, err := e.StartRun(RunRequest{Tenant: "b", Profile: "short", Query: "q"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fairPhaseLimit)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		b.Fatal(err)
	}
}

// fairPercentile is the nearest-rank p-th percentile of ds.
func fairPercentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max((len(s)*p+99)/100-1, 0)]
}
