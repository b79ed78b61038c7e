package actors

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// slotHarness drives a runSlots and records the order of grants that
// arrive through the grant callbacks.
type slotHarness struct {
	t       *testing.T
	s       *runSlots
	granted []string            // run ids, in the order their grant was called
	tenant  map[string]string   // run id -> tenant
	calls   map[string]int      // run id -> grant calls
	holders map[string][]string // tenant -> run ids holding, oldest first
}

func newSlotHarness(t *testing.T, capacity, headroom int) *slotHarness {
	t.Helper()
	return &slotHarness{t: t, s: newRunSlots(capacity, headroom), tenant: map[string]string{},
		calls: map[string]int{}, holders: map[string][]string{}}
}

// acquire asks for a slot for a new run and reports whether it got one at once.
func (h *slotHarness) acquire(tenant string, weight uint32, run string) bool {
	h.t.Helper()
	h.tenant[run] = tenant
	ok := h.s.acquire(tenant, weight, run, func() {
		h.calls[run]++
		h.granted = append(h.granted, run)
		h.holders[tenant] = append(h.holders[tenant], run)
	})
	if ok {
		h.holders[tenant] = append(h.holders[tenant], run)
	}
	return ok
}

// releaseOldest ends tenant's oldest run holding a slot.
func (h *slotHarness) releaseOldest(tenant string) {
	h.t.Helper()
	runs := h.holders[tenant]
	if len(runs) == 0 {
		h.t.Fatalf("%s holds no slot", tenant)
	}
	h.holders[tenant] = runs[1:]
	h.s.release(tenant, runs[0])
}

// grantNext releases the oldest slot of holder (in the order tests, one
// tenant at a time holds the contended slot) and returns the run that got it.
func (h *slotHarness) grantNext(holder string) string {
	h.t.Helper()
	n := len(h.granted)
	h.releaseOldest(holder)
	if len(h.granted) != n+1 {
		h.t.Fatalf("release granted %d runs, want 1", len(h.granted)-n)
	}
	return h.granted[n]
}

func (h *slotHarness) wantStats(running, waiting int) {
	h.t.Helper()
	if st := h.s.stats(); st.Running != running || st.Waiting != waiting {
		h.t.Fatalf("stats %+v, want %d running and %d waiting", st, running, waiting)
	}
}

func TestRunSlotsHeadroomKeepsSlotsForOthers(t *testing.T) {
	h := newSlotHarness(t, 8, 0) // default headroom: 8/8 = 1
	for i := range 10 {
		got := h.acquire("a", 1, fmt.Sprint("a", i))
		if got != (i < 7) {
			t.Fatalf("a's run %d: granted %v; a may hold 7 of 8 slots", i, got)
		}
	}
	h.wantStats(7, 3)
	if !h.acquire("b", 1, "b0") {
		t.Fatal("b's first run must start at once: a slot is kept for other tenants")
	}
	h.wantStats(8, 3)
	if h.acquire("b", 1, "b1") {
		t.Fatal("b's second run cannot start: every slot is taken")
	}
	// b's run ends: the slot is free again, but a is at its cap, so a's
	// waiting runs stay queued and the slot stays free for others.
	h.releaseOldest("b")
	if len(h.granted) != 1 || h.granted[0] != "b1" {
		t.Fatalf("the slot b freed went to %v, want b's waiting run", h.granted)
	}
	h.releaseOldest("b")
	h.wantStats(7, 3)
	if len(h.granted) != 1 {
		t.Fatalf("a got a slot beyond its cap: %v", h.granted)
	}
	// a's own run ends: its first waiting run takes the slot.
	h.releaseOldest("a")
	if len(h.granted) != 2 || h.granted[1] != "a7" {
		t.Fatalf("grants %v, want a7 after one of a's runs ended", h.granted)
	}
	h.wantStats(7, 2)
}

func TestRunSlotsHeadroomSettings(t *testing.T) {
	for _, c := range []struct{ capacity, headroom, perTenant int }{
		{1, 0, 1}, {1, 5, 1}, {2, 0, 1}, {2, -1, 2}, {8, 0, 7}, {16, 0, 14}, {64, 0, 56}, {8, 3, 5}, {8, 100, 1}, {8, -1, 8},
	} {
		s := newRunSlots(c.capacity, c.headroom)
		granted := 0
		for i := range c.capacity + 2 {
			if s.acquire("a", 1, fmt.Sprint(i), func() {}) {
				granted++
			}
		}
		if granted != c.perTenant {
			t.Errorf("capacity %d headroom %d: one tenant got %d slots, want %d", c.capacity, c.headroom, granted, c.perTenant)
		}
	}
}

func TestRunSlotsWeightedOrder(t *testing.T) {
	h := newSlotHarness(t, 1, 0)
	if !h.acquire("x", 1, "x0") {
		t.Fatal("the first run must start at once")
	}
	for i := range 30 {
		h.acquire("a", 2, fmt.Sprint("a", i))
		h.acquire("b", 1, fmt.Sprint("b", i))
	}
	h.wantStats(1, 60)
	holder := "x"
	counts := map[string]int{}
	for range 30 {
		run := h.grantNext(holder)
		holder = h.tenant[run]
		counts[holder]++
	}
	if counts["a"] != 20 || counts["b"] != 10 {
		t.Fatalf("weights 2:1 gave %v in 30 grants, want a 20 and b 10", counts)
	}
	// Within a tenant, runs go in arrival order.
	var as []string
	for _, r := range h.granted {
		if h.tenant[r] == "a" {
			as = append(as, r)
		}
	}
	for i, r := range as {
		if r != fmt.Sprint("a", i) {
			t.Fatalf("a's runs were granted out of order: %v", as)
		}
	}
}

// A tenant that was away while another used the node comes back level with
// it, not ahead by the time it was away: whether it had nothing on the
// node meanwhile, or a long run that kept holding a slot.
func TestRunSlotsNoBurstFromIdleTime(t *testing.T) {
	for _, longRun := range []bool{false, true} {
		t.Run(fmt.Sprint("long_run=", longRun), func(t *testing.T) {
			h := newSlotHarness(t, 1, 0)
			if longRun {
				h = newSlotHarness(t, 2, -1)
				// Holds its slot throughout (not in the harness: never released).
				if !h.s.acquire("b", 1, "b-long", nil) {
					t.Fatal("b's long run must start at once")
				}
			}
			h.acquire("x", 1, "x0")
			for i := range 200 {
				h.acquire("a", 1, fmt.Sprint("a", i))
			}
			for i := range 5 {
				h.acquire("b", 1, fmt.Sprint("b", i))
			}
			holder := "x"
			for range 100 { // b's 5 runs go early; then a runs alone for a long time
				holder = h.tenant[h.grantNext(holder)]
				if holder == "b" { // b's short runs end at once
					holder = h.tenant[h.grantNext("b")]
				}
			}
			if r, w := h.s.tenantStats("b"); w != 0 || r != map[bool]int{false: 0, true: 1}[longRun] {
				t.Fatalf("b: %d running, %d waiting after 100 grants", r, w)
			}
			for i := 5; i < 25; i++ {
				h.acquire("b", 1, fmt.Sprint("b", i))
			}
			var seq []string
			for range 20 {
				holder = h.tenant[h.grantNext(holder)]
				seq = append(seq, holder)
			}
			n, streak, longest := 0, 0, 0
			for _, who := range seq {
				if who == "b" {
					n++
					streak++
					longest = max(longest, streak)
				} else {
					streak = 0
				}
			}
			if n < 9 || n > 11 || longest > 2 {
				t.Fatalf("the returning tenant got %d of 20 grants (longest streak %d): %v; want an even share, no burst", n, longest, seq)
			}
		})
	}
}

func TestRunSlotsReleaseQueuedRun(t *testing.T) {
	h := newSlotHarness(t, 1, 0)
	h.acquire("a", 1, "a0")
	h.acquire("a", 1, "a1")
	h.acquire("b", 1, "b0")
	h.wantStats(1, 2)
	h.s.release("b", "b0") // cancelled while it waits
	h.wantStats(1, 1)
	if r, _ := h.s.tenantStats("b"); r != 0 || h.s.stats().Tenants != 1 {
		t.Fatalf("b still counted: %+v", h.s.stats())
	}
	if got := h.grantNext("a"); got != "a1" {
		t.Fatalf("the freed slot went to %s, want a1 (b0 left the queue)", got)
	}
	h.wantStats(1, 0)
	if h.calls["b0"] != 0 {
		t.Fatal("a released waiting run was granted")
	}
}

func TestRunSlotsReleaseIsIdempotent(t *testing.T) {
	h := newSlotHarness(t, 2, -1)
	h.acquire("a", 1, "a0")
	h.acquire("a", 1, "a1")
	h.acquire("a", 1, "a2")
	h.wantStats(2, 1)
	h.s.release("a", "a0")
	h.wantStats(2, 0) // a2 took the slot
	for range 3 {
		h.s.release("a", "a0")
		h.s.release("a", "never-acquired")
		h.s.release("nobody", "a1") // a wrong tenant still frees the run's own slot, once
	}
	h.wantStats(1, 0)
	if r, w := h.s.tenantStats("a"); r != 1 || w != 0 {
		t.Fatalf("a: %d running, %d waiting; want 1, 0", r, w)
	}
	// Acquiring a run again does not take a second slot.
	if !h.s.acquire("a", 1, "a2", func() { t.Error("granted twice") }) {
		t.Fatal("a run that holds a slot must be told so")
	}
	h.wantStats(1, 0)
	h.s.release("a", "a2")
	h.wantStats(0, 0)
	if st := h.s.stats(); st.Tenants != 0 {
		t.Fatalf("idle tenants kept: %+v", st)
	}
	var nilSlots *runSlots
	if !nilSlots.acquire("a", 1, "r", nil) {
		t.Fatal("a nil scheduler must admit every run")
	}
	nilSlots.release("a", "r")
}

func TestRunSlotsUnlimited(t *testing.T) {
	s := newRunSlots(0, 0)
	for i := range 1000 {
		if !s.acquire(fmt.Sprint("t", i%3), 1, fmt.Sprint(i), func() { t.Error("capacity 0 must never queue") }) {
			t.Fatalf("run %d was queued with no limit", i)
		}
	}
	if st := s.stats(); st.Running != 1000 || st.Waiting != 0 || st.Tenants != 3 {
		t.Fatalf("stats %+v", st)
	}
	for i := range 1000 {
		s.release(fmt.Sprint("t", i%3), fmt.Sprint(i))
	}
	if st := s.stats(); st != (slotStats{}) {
		t.Fatalf("stats after every release %+v", st)
	}
}

// TestRunSlotsInvariants drives the scheduler with random acquires and
// releases (of running, waiting, already released and unknown runs) and
// checks after every step against a model of what it should hold:
// the counts agree, running <= capacity, no tenant holds more than
// capacity-headroom, no run waits while a slot it could take is free, and
// every waiting run was granted exactly once or not at all.
func TestRunSlotsInvariants(t *testing.T) {
	for seed := range uint64(40) {
		rng := rand.New(rand.NewPCG(seed, 1))
		capacity := rng.IntN(10) + 1
		headroom := rng.IntN(5) - 1
		s := newRunSlots(capacity, headroom)
		perTenant := s.perTenant
		tenants := rng.IntN(5) + 1

		type run struct {
			tenant string
			state  int // 0 waiting, 1 holding, 2 released
			grants int
		}
		runs := map[string]*run{}
		var ids []string
		for step := range 600 {
			if len(ids) == 0 || rng.IntN(100) < 55 {
				id := fmt.Sprintf("r%d", step)
				r := &run{tenant: fmt.Sprint("t", rng.IntN(tenants))}
				runs[id], ids = r, append(ids, id)
				if s.acquire(r.tenant, uint32(rng.IntN(4)), id, func() {
					r.grants++
					if r.state != 0 {
						t.Errorf("seed %d: grant for run %s in state %d", seed, id, r.state)
					}
					r.state = 1
				}) {
					r.state = 1
				}
			} else {
				id := ids[rng.IntN(len(ids))]
				if rng.IntN(20) == 0 {
					id = "unknown"
				}
				if r := runs[id]; r != nil {
					s.release(r.tenant, id)
					r.state = 2
				} else {
					s.release("t0", id)
				}
			}

			running, waiting := 0, 0
			perT := map[string][2]int{}
			for _, r := range runs {
				c := perT[r.tenant]
				switch r.state {
				case 0:
					waiting++
					c[1]++
				case 1:
					running++
					c[0]++
				}
				perT[r.tenant] = c
				if r.grants > 1 {
					t.Fatalf("seed %d step %d: a run was granted %d times", seed, step, r.grants)
				}
			}
			st := s.stats()
			if st.Running != running || st.Waiting != waiting {
				t.Fatalf("seed %d step %d: stats %+v, model %d running %d waiting", seed, step, st, running, waiting)
			}
			if running > capacity {
				t.Fatalf("seed %d step %d: %d running > capacity %d", seed, step, running, capacity)
			}
			for name, c := range perT {
				r, w := s.tenantStats(name)
				if r != c[0] || w != c[1] {
					t.Fatalf("seed %d step %d: tenant %s: %d/%d, model %d/%d", seed, step, name, r, w, c[0], c[1])
				}
				if r > perTenant {
					t.Fatalf("seed %d step %d: tenant %s holds %d > %d", seed, step, name, r, perTenant)
				}
				if w > 0 && running < capacity && r < perTenant {
					t.Fatalf("seed %d step %d: tenant %s waits (%d) with a slot free and %d < %d held", seed, step, name, w, r, perTenant)
				}
			}
		}
	}
}

// Concurrent acquires and releases, grants on the releasing goroutines:
// every run gets a slot once and the scheduler ends empty (run with -race).
func TestRunSlotsConcurrent(t *testing.T) {
	s := newRunSlots(3, 1)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tenant := fmt.Sprint("t", g%3)
			for i := range 200 {
				id := fmt.Sprintf("%d-%d", g, i)
				got := make(chan struct{}, 1)
				if !s.acquire(tenant, uint32(g%2+1), id, func() { got <- struct{}{} }) {
					<-got
				}
				if st := s.stats(); st.Running > 3 {
					t.Errorf("%d running > 3", st.Running)
				}
				s.release(tenant, id)
			}
		}()
	}
	wg.Wait()
	if st := s.stats(); st != (slotStats{}) {
		t.Fatalf("stats after every run ended: %+v", st)
	}
}
