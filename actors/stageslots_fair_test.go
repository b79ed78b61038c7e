package actors

import (
	"sync"
	"testing"
)

// A tenant that floods a node with parallel steps does not starve another:
// with 8 stage slots, tenant a's 10 runs (30 proposer steps) hold at most
// 7 (an eighth is kept for others), and once b asks, the slots that free
// go to b until it has its weighted share — b's one run ends while most of
// a's are still going (first come, first served would end it last).
func TestStageSlotsAreFairAcrossTenants(t *testing.T) {
	e, _, _ := newProfileEngine(t, `
providers:
  sim: {kind: sim, sim: {itl: 3ms, output_tokens: 60}}
profiles:
  moa:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: agg, max_tokens: 5}
`, func(c *Config) { c.StageSlots = 8; c.RunSlots = 64; c.MaxActiveRuns = 64 })
	var (
		mu    sync.Mutex
		order []string
		wg    sync.WaitGroup
	)
	start := func(tenant string, seed int64) {
		h, err := e.StartRun(RunRequest{Tenant: tenant, Profile: "moa", Query: "q", Seed: seed, NoCache: true})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			evs := waitRun(t, h)
			if evs[len(evs)-1].GetRunCompleted() == nil {
				t.Errorf("%s's run ended with %v", tenant, evs[len(evs)-1])
			}
			mu.Lock()
			order = append(order, tenant)
			mu.Unlock()
		}()
	}
	for s := int64(1); s <= 10; s++ {
		start("a", s)
	}
	pollUntilTrue(t, "a's steps to fill its share and queue", func() bool {
		st := e.deps.stageSlots.stats()
		return st.Running == 7 && st.Waiting > 0
	})
	start("b", 100)
	wg.Wait()
	bAt := -1
	for i, who := range order {
		if who == "b" {
			bAt = i
		}
	}
	t.Logf("runs ended in order %v", order)
	if bAt < 0 || bAt > 4 {
		t.Fatalf("b's run ended %dth of 11, want among the first five", bAt+1)
	}
}
