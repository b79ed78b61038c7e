package actors

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// startUntilBusy starts slow runs of tenant until the engine refuses one,
// failing after limit runs; it returns the runs started and the refusal.
func startUntilBusy(t *testing.T, e *Engine, tenant string, limit int) ([]*Hub, error) {
	t.Helper()
	var hubs []*Hub
	for i := 0; i <= limit; i++ {
		h, err := e.StartRun(RunRequest{Tenant: tenant, Profile: "slow", Query: "q", Seed: int64(i + 1)})
		if err != nil {
			return hubs, err
		}
		hubs = append(hubs, h)
	}
	t.Fatalf("tenant %s started %d runs and was never refused", tenant, len(hubs))
	return nil, nil
}

// A tenant that floods the engine is refused at its share of MaxActiveRuns
// (alone: all but the headroom), and another tenant's run is still
// admitted; while both are active, each is held to its weighted share, and
// a flooder over its share gets no run back from the runs it ends.
// On the old engine (first come, first served) the flooder took all 8 and
// b was refused.
func TestActiveRunsAreSharedAmongTenants(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxActiveRuns = 8 }) // headroom 1
	a, err := startUntilBusy(t, e, "a", 8)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("flooding tenant: got %v, want ErrBusy", err)
	}
	if len(a) != 7 {
		t.Fatalf("flooding tenant alone got %d runs, want 7 (8 minus 1 of headroom)", len(a))
	}
	b1, err := e.StartRun(RunRequest{Tenant: "b", Profile: "slow", Query: "q", Seed: 1})
	if err != nil {
		t.Fatalf("tenant b refused while a floods: %v", err)
	}
	// All 8 are taken: b is refused too now (the total), and a (its share).
	if _, err := e.StartRun(RunRequest{Tenant: "b", Profile: "slow", Query: "q", Seed: 2}); !errors.Is(err, ErrBusy) {
		t.Fatalf("b beyond the total: got %v, want ErrBusy", err)
	}
	// a ends two runs: it holds 5, over its share of 4, so the freed
	// places go to b.
	cancelAndWait(t, e, a[0])
	cancelAndWait(t, e, a[1])
	if _, err := e.StartRun(RunRequest{Tenant: "a", Profile: "slow", Query: "q", Seed: 99}); !errors.Is(err, ErrBusy) {
		t.Fatalf("a over its share: got %v, want ErrBusy", err)
	}
	b2, err := e.StartRun(RunRequest{Tenant: "b", Profile: "slow", Query: "q", Seed: 3})
	if err != nil {
		t.Fatalf("b below its share: %v", err)
	}
	if total, ofB := e.ActiveRuns("b"); total != 7 || ofB != 2 {
		t.Fatalf("active runs: total %d, b %d; want 7 and 2", total, ofB)
	}
	for _, h := range append(a[2:], b1, b2) {
		cancelAndWait(t, e, h)
	}
	if total, _ := e.ActiveRuns("a"); total != 0 {
		t.Fatalf("every run ended, %d still counted active", total)
	}
}

// Weights set the shares: with weights 3 and 1 and 8 places (no headroom),
// a may hold 6 and b 2.
func TestActiveRunsShareIsWeighted(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxActiveRuns, c.ActiveRunHeadroom = 8, -1 })
	start := func(tenant string, w uint32, seed int64) (*Hub, error) {
		return e.StartRun(RunRequest{Tenant: tenant, Weight: w, Profile: "slow", Query: "q", Seed: seed})
	}
	var hubs []*Hub
	hb, err := start("b", 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	hubs = append(hubs, hb)
	n := 0
	for ; n < 8; n++ {
		h, err := start("a", 3, int64(n+2))
		if err != nil {
			if !errors.Is(err, ErrBusy) {
				t.Fatal(err)
			}
			break
		}
		hubs = append(hubs, h)
	}
	if n != 6 {
		t.Fatalf("tenant of weight 3 beside one of weight 1 got %d of 8, want 6", n)
	}
	if _, err := start("b", 1, 50); err != nil {
		t.Fatalf("b's second run (its share is 2): %v", err)
	}
	if _, err := start("b", 1, 51); !errors.Is(err, ErrBusy) {
		t.Fatalf("b's third run: got %v, want ErrBusy", err)
	}
	for _, h := range hubs {
		cancelAndWait(t, e, h)
	}
}

// A run's place among MaxActiveRuns goes back when its log ends, not at the
// next eviction: a tenant at its share starts its next run at once.
func TestActiveRunPlaceFreedAtTheEnd(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxActiveRuns, c.ActiveRunHeadroom = 1, -1 })
	h := startSlow(t, e, "a", 1)
	if _, err := e.StartRun(RunRequest{Tenant: "a", Profile: "slow", Query: "q", Seed: 2}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second run: got %v, want ErrBusy", err)
	}
	cancelAndWait(t, e, h)
	cancelAndWait(t, e, startSlow(t, e, "a", 3))
}

// restoreFinished puts a finished run of tenant into e that ended at.
func restoreFinished(tb testing.TB, e *Engine, id, tenant string, at time.Time) *Hub {
	tb.Helper()
	log := []*messages.RunEvent{{RunId: id, Seq: 1, Epoch: 1,
		Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{}}}}
	h, err := e.Restore(id, tenant, "instant", "q", at, log)
	if err != nil {
		tb.Fatal(err)
	}
	h.mu.Lock()
	h.endedAt = at
	h.mu.Unlock()
	return h
}

// One tenant's many finished runs cannot push another's out of memory:
// each tenant keeps its newest MaxFinishedPerTenant, and the total its
// newest MaxFinished.
func TestEvictCapsFinishedRunsPerTenant(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxFinished, c.MaxFinishedPerTenant = 6, 3 })
	t0 := time.Now()
	for i := range 10 { // a's runs are the newest
		restoreFinished(t, e, fmt.Sprintf("run_a%d", i), "a", t0.Add(time.Duration(i)*time.Millisecond))
	}
	for i := range 2 {
		restoreFinished(t, e, fmt.Sprintf("run_b%d", i), "b", t0.Add(-time.Second+time.Duration(i)*time.Millisecond))
	}
	for i := range 3 {
		restoreFinished(t, e, fmt.Sprintf("run_c%d", i), "c", t0.Add(-2*time.Second+time.Duration(i)*time.Millisecond))
	}
	e.evict(t0.Add(time.Second))
	want := map[string]bool{"run_a7": true, "run_a8": true, "run_a9": true, "run_b0": true, "run_b1": true, "run_c2": true}
	e.mu.Lock()
	defer e.mu.Unlock()
	for id := range e.hubs {
		if !want[id] {
			t.Errorf("run %s kept", id)
		}
	}
	for id := range want {
		if e.hubs[id] == nil {
			t.Errorf("run %s evicted", id)
		}
	}
}

// Finished runs are bounded by the memory their logs hold, too: with room
// for about three runs of 10 KB answers, the newest three stay.
func TestEvictBoundsFinishedRunsByBytes(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxFinishedBytes = 3*(10<<10+eventOverheadBytes) + 100 })
	t0 := time.Now()
	big := strings.Repeat("x", 10<<10)
	for i := range 6 {
		id := fmt.Sprintf("run_%d", i)
		log := []*messages.RunEvent{{RunId: id, Seq: 1, Epoch: 1,
			Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{Answer: big}}}}
		h, err := e.Restore(id, "t", "instant", "q", t0, log)
		if err != nil {
			t.Fatal(err)
		}
		h.mu.Lock()
		h.endedAt = t0.Add(time.Duration(i) * time.Millisecond)
		h.mu.Unlock()
	}
	e.evict(t0.Add(time.Second))
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range 6 {
		_, kept := e.hubs[fmt.Sprintf("run_%d", i)]
		if kept != (i >= 3) {
			t.Errorf("run_%d kept %v, want only the newest three", i, kept)
		}
	}
}

// A run chosen for eviction while the lock was released, and put back in
// between (Restore after a Hub miss), is not dropped: evict deletes only
// the hub it chose.
func TestEvictKeepsAHubPutBackMeanwhile(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MaxFinished = 1 })
	t0 := time.Now()
	old := restoreFinished(t, e, "run_x", "a", t0.Add(-time.Hour))
	newer := restoreFinished(t, e, "run_y", "a", t0)
	drop := e.chooseEvictions([]finishedRun{{old, t0.Add(-time.Hour), 0}, {newer, t0, 0}}, t0)
	if len(drop) != 1 || drop[0] != old {
		t.Fatalf("chose %v, want run_x", drop)
	}
	e.mu.Lock()
	delete(e.hubs, "run_x") // evicted by someone else, then restored
	e.mu.Unlock()
	back := restoreFinished(t, e, "run_x", "a", t0)
	e.drop(drop)
	if h, err := e.Hub("run_x"); err != nil || h != back {
		t.Fatalf("the hub put back was dropped: %v", err)
	}
}

// Near its memory budget a process drops its finished runs from memory
// (the newest kept) and refuses new runs; back under it, it takes them.
func TestMemoryBudgetShedsThenRefuses(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.MemoryBudget = 100 << 20 })
	t0 := time.Now()
	for i := range 4 {
		restoreFinished(t, e, fmt.Sprintf("run_m%d", i), "t", t0.Add(time.Duration(i)*time.Millisecond))
	}
	e.checkMemory(50 << 20) // 50 %: nothing happens
	if n := len(e.hubsSnapshot()); n != 4 {
		t.Fatalf("%d runs kept at half the budget, want 4", n)
	}
	e.checkMemory(85 << 20) // past 80 %: finished runs leave memory
	if hubs := e.hubsSnapshot(); len(hubs) != 1 || hubs[0] != "run_m3" {
		t.Fatalf("kept %v past 80 %%, want only the newest", hubs)
	}
	if _, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "q"}); err != nil {
		t.Fatalf("a run refused at 85 %%: %v", err)
	}
	e.checkMemory(97 << 20) // past 95 %: new runs are refused
	_, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "q"})
	if !errors.Is(err, ErrBusy) || !errors.Is(err, ErrMemoryBudget) {
		t.Fatalf("StartRun past 95 %%: %v, want ErrBusy and ErrMemoryBudget", err)
	}
	e.checkMemory(92 << 20) // between 90 and 95 %: still refused (hysteresis)
	if _, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "q"}); !errors.Is(err, ErrMemoryBudget) {
		t.Fatalf("StartRun at 92 %% after 97 %%: %v", err)
	}
	e.checkMemory(60 << 20)
	if _, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "q"}); err != nil {
		t.Fatalf("a run refused back under the budget: %v", err)
	}
}

// hubsSnapshot lists the runs the engine holds, sorted.
func (e *Engine) hubsSnapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	ids := make([]string, 0, len(e.hubs))
	for id := range e.hubs {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
