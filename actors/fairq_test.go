package actors

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// slotClock is a fake clock for runSlots: time moves only by advance,
// which fires the timers that fall due, in order, on the caller's goroutine.
type slotClock struct {
	mu     sync.Mutex // a leaf lock: now and afterFunc are called under runSlots.mu
	at     time.Time
	timers []*slotTimer
}

type slotTimer struct {
	at      time.Time
	f       func()
	stopped bool
}

func newSlotClock() *slotClock { return &slotClock{at: time.Unix(1_700_000_000, 0)} }

func (c *slotClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *slotClock) afterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &slotTimer{at: c.at.Add(d), f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// pending is how many timers are armed and not yet fired or stopped.
func (c *slotClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// advance moves the clock on by d, firing each timer when its time comes.
func (c *slotClock) advance(d time.Duration) {
	c.mu.Lock()
	end := c.at.Add(d)
	c.mu.Unlock()
	for {
		c.mu.Lock()
		var next *slotTimer
		for _, t := range c.timers {
			if !t.stopped && !t.at.After(end) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next == nil {
			c.at = end
			c.mu.Unlock()
			return
		}
		next.stopped = true
		if next.at.After(c.at) {
			c.at = next.at
		}
		c.mu.Unlock()
		next.f()
	}
}

// newClockedSlots is newRunSlots on clock, with activity window window.
func newClockedSlots(capacity, headroom int, window time.Duration, clock *slotClock) *runSlots {
	s := newRunSlots(capacity, headroom)
	s.window, s.now, s.afterFunc = window, clock.now, clock.afterFunc
	return s
}

// slotHarness drives a runSlots on a fake clock and records the order of
// grants that arrive through the grant callbacks.
type slotHarness struct {
	t       *testing.T
	s       *runSlots
	clock   *slotClock
	granted []string            // run ids, in the order their grant was called
	tenant  map[string]string   // run id -> tenant
	calls   map[string]int      // run id -> grant calls
	holders map[string][]string // tenant -> run ids holding, oldest first
}

func newSlotHarness(t *testing.T, capacity, headroom int) *slotHarness {
	t.Helper()
	clock := newSlotClock()
	return &slotHarness{t: t, s: newClockedSlots(capacity, headroom, defaultRunSlotWindow, clock), clock: clock,
		tenant: map[string]string{}, calls: map[string]int{}, holders: map[string][]string{}}
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

// releaseNoGrant ends tenant's oldest run and checks that its slot stays free.
func (h *slotHarness) releaseNoGrant(tenant string) {
	h.t.Helper()
	n := len(h.granted)
	h.releaseOldest(tenant)
	if len(h.granted) != n {
		h.t.Fatalf("the slot %s freed went to %v, want it left free", tenant, h.granted[n:])
	}
}

func (h *slotHarness) wantStats(running, waiting int) {
	h.t.Helper()
	if st := h.s.stats(); st.Running != running || st.Waiting != waiting {
		h.t.Fatalf("stats %+v, want %d running and %d waiting", st, running, waiting)
	}
}

func (h *slotHarness) wantHeld(tenant string, running, waiting, share int) {
	h.t.Helper()
	r, w := h.s.tenantStats(tenant)
	if sh := h.s.share(tenant); r != running || w != waiting || sh != share {
		h.t.Fatalf("%s: %d running, %d waiting, share %d; want %d, %d, %d", tenant, r, w, sh, running, waiting, share)
	}
}

// The story of the issue on 8 slots: a floods alone and uses 7 (all but the
// headroom slot); b arrives and starts at once; while both are active, the
// slots a's runs free go to b until b has its share, a's new runs wait
// while a holds more than its half, and b's runs start at once while b is
// under its half; after b goes quiet for longer than the window, a gets
// the slots back without any other event (the timer), up to 7 again.
func TestRunSlotsShareCap(t *testing.T) {
	h := newSlotHarness(t, 8, 0) // default headroom: 8/8 = 1
	for i := range 12 {
		if got := h.acquire("a", 1, fmt.Sprint("a", i)); got != (i < 7) {
			t.Fatalf("a's run %d: granted %v; a alone may hold 7 of 8 slots", i, got)
		}
	}
	h.wantHeld("a", 7, 5, 7)
	h.clock.advance(time.Second)

	if !h.acquire("b", 1, "b0") {
		t.Fatal("b's first run must start at once: a slot is kept for other tenants")
	}
	h.wantHeld("a", 7, 5, 4)
	h.wantHeld("b", 1, 0, 4)
	if h.acquire("b", 1, "b1") {
		t.Fatal("b's second run cannot start: every slot is taken")
	}
	// a's run ends: the slot goes to b, though a's runs waited longer.
	if got := h.grantNext("a"); got != "b1" {
		t.Fatalf("the slot a freed went to %s, want b1", got)
	}
	// a is over its share: the slot its run frees stays free for b, and
	// a's new run waits though the slot is free.
	h.releaseNoGrant("a")
	h.wantHeld("a", 5, 5, 4)
	if h.acquire("a", 1, "a12") {
		t.Fatal("a's new run started though a holds more than its share")
	}
	if !h.acquire("b", 1, "b2") {
		t.Fatal("b's run must start at once: b is under its share and a slot is free")
	}
	h.wantStats(8, 6)
	h.acquire("b", 1, "b3")
	if got := h.grantNext("a"); got != "b3" {
		t.Fatalf("the slot a freed went to %s, want b3", got)
	}
	h.wantHeld("b", 4, 0, 4)
	// Both at their shares: the slot a frees is a's again (b4 waits, b
	// being at its share), and goes to a's first waiting run.
	h.acquire("b", 1, "b4")
	if got := h.grantNext("a"); got != "a7" {
		t.Fatalf("the slot a freed went to %s, want a7 (b is at its share)", got)
	}
	h.wantHeld("a", 4, 5, 4)
	h.wantHeld("b", 4, 1, 4)

	// b's runs end one by one; b stays active for the window, and so a
	// keeps to its half: the slots stay free for b's return.
	h.clock.advance(time.Second)
	if got := h.grantNext("b"); got != "b4" {
		t.Fatalf("the slot b freed went to %s, want b4", got)
	}
	for range 4 {
		h.releaseNoGrant("b")
	}
	h.wantHeld("a", 4, 5, 4)
	h.wantStats(4, 5)
	if st := h.s.stats(); st.Active != 2 || st.Tenants != 1 {
		t.Fatalf("stats %+v, want 2 active tenants of which 1 has runs", st)
	}
	n := len(h.granted)
	h.clock.advance(defaultRunSlotWindow - time.Nanosecond) // to 1ns before b4's grant + window
	if len(h.granted) != n {
		t.Fatalf("a got %v while b was still active", h.granted[n:])
	}
	h.clock.advance(time.Nanosecond)
	if got := h.granted[n:]; !slices.Equal(got, []string{"a8", "a9", "a10"}) {
		t.Fatalf("when b's window ended, a got %v, want a8 a9 a10 (up to 7 slots)", got)
	}
	h.wantHeld("a", 7, 2, 7)
	if st := h.s.stats(); st.Active != 1 || st.Tenants != 1 {
		t.Fatalf("stats %+v, want only a active", st)
	}
	// A tenant arriving after the quiet still finds the headroom slot.
	if !h.acquire("c", 1, "c0") {
		t.Fatal("c's first run must start at once")
	}
}

func TestRunSlotsHeadroomKeepsSlotsForOthers(t *testing.T) {
	h := newSlotHarness(t, 8, 0) // default headroom: 8/8 = 1
	for i := range 10 {
		h.acquire("a", 1, fmt.Sprint("a", i))
	}
	h.wantStats(7, 3)
	if !h.acquire("b", 1, "b0") {
		t.Fatal("b's first run must start at once: a slot is kept for other tenants")
	}
	h.acquire("b", 1, "b1")
	if got := h.grantNext("b"); got != "b1" {
		t.Fatalf("the slot b freed went to %s, want b's waiting run", got)
	}
	h.releaseNoGrant("b")
	h.wantStats(7, 3)
	// b is gone for good: a is alone, but at its cap of 7, so the slot
	// stays free for others.
	h.clock.advance(2 * defaultRunSlotWindow)
	h.wantStats(7, 3)
	h.wantHeld("a", 7, 3, 7)
	if len(h.granted) != 1 {
		t.Fatalf("a got a slot beyond its cap: %v", h.granted)
	}
	// a's own run ends: its first waiting run takes the slot.
	if got := h.grantNext("a"); got != "a7" {
		t.Fatalf("the slot went to %s, want a7", got)
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

// With more slots than one, weights 2:1 are shares of 4:2 of 6 slots
// while both tenants are backlogged: whichever tenant's runs end, the
// slots held stay 4:2 (a grant-order queue alone would let the holdings
// drift with the order runs end in).
func TestRunSlotsWeightedShares(t *testing.T) {
	h := newSlotHarness(t, 6, -1)
	for i := range 100 {
		h.acquire("a", 2, fmt.Sprint("a", i))
	}
	h.wantHeld("a", 6, 94, 6) // alone: every slot
	for i := range 100 {
		h.acquire("b", 1, fmt.Sprint("b", i))
	}
	h.wantHeld("a", 6, 94, 4)
	h.wantHeld("b", 0, 100, 2)
	// b's share comes from a's runs as they end.
	for range 2 {
		if got := h.tenant[h.grantNext("a")]; got != "b" {
			t.Fatalf("a's freed slot went to %s, want b (under its share)", got)
		}
	}
	rng := rand.New(rand.NewPCG(7, 7))
	grants := map[string]int{}
	for step := range 60 {
		holder := "a"
		if rng.IntN(3) == 0 {
			holder = "b"
		}
		if got := h.tenant[h.grantNext(holder)]; got != holder {
			t.Fatalf("step %d: the slot %s freed went to %s", step, holder, got)
		}
		grants[holder]++
		ra, _ := h.s.tenantStats("a")
		rb, _ := h.s.tenantStats("b")
		if ra != 4 || rb != 2 {
			t.Fatalf("step %d: a holds %d and b %d, want 4 and 2", step, ra, rb)
		}
	}
	if grants["b"] < 10 || grants["a"] < 10 {
		t.Fatalf("releases %v: the test did not exercise both tenants", grants)
	}
}

// The shares add up to the capacity, so the active tenants can use every
// slot: left-over slots of the rounding go to the tenants furthest below
// their exact shares (first to one with runs waiting), slots a tenant
// cannot take past the headroom rule go to the others, and with more
// tenants than slots each may still hold one.
func TestRunSlotsSharesUseEverySlot(t *testing.T) {
	for _, c := range []struct {
		name               string
		capacity, headroom int
		weights            []uint32
		waiting            []bool // tenants with a run waiting beyond their share
		want               []int
	}{
		{"halves", 8, 0, []uint32{1, 1}, nil, []int{4, 4}},
		{"thirds, odd slots to the waiting", 8, 0, []uint32{1, 1, 1}, []bool{false, true, true}, []int{2, 3, 3}},
		{"weights 2:1", 6, -1, []uint32{2, 1}, nil, []int{4, 2}},
		{"weights 3:1 round", 8, -1, []uint32{3, 1}, nil, []int{6, 2}},
		{"headroom caps the heavy one", 8, 3, []uint32{10, 1}, nil, []int{5, 3}},
		{"at least one each", 2, -1, []uint32{1, 1, 1, 1}, nil, []int{1, 1, 1, 1}},
		{"light one gets 1", 8, 0, []uint32{100, 1}, nil, []int{7, 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			clock := newSlotClock()
			s := newClockedSlots(c.capacity, c.headroom, time.Minute, clock)
			for i, w := range c.weights {
				tenant := fmt.Sprint("t", i)
				// One run each, released: the tenant stays active for the
				// window with all its share free.
				if !s.acquire(tenant, w, tenant+"-0", nil) {
					t.Fatalf("%s's first run must start at once", tenant)
				}
				s.release(tenant, tenant+"-0")
			}
			for i, wait := range c.waiting {
				if !wait {
					continue
				}
				// More runs than there are slots: it holds its share and
				// the rest wait.
				tenant := fmt.Sprint("t", i)
				for j := range c.capacity {
					s.acquire(tenant, c.weights[i], fmt.Sprint(tenant, "-", j+1), func() {})
				}
				if _, w := s.tenantStats(tenant); w == 0 {
					t.Fatalf("%s has no run waiting", tenant)
				}
			}
			var got []int
			for i := range c.weights {
				got = append(got, s.share(fmt.Sprint("t", i)))
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("shares %v, want %v", got, c.want)
			}
		})
	}
}

// A tenant that was away while another used the node comes back level with
// it, not ahead by the time it was away: whether it had nothing on the
// node meanwhile (its virtual time kept within the activity window, or
// forgotten with none), or a long run that kept holding a slot. In the
// last case the node has 3 slots and no window: once x is gone, a and b
// have 1.5 slots each, b's long run holds one of b's, and the odd slot is
// the contended one.
func TestRunSlotsNoBurstFromIdleTime(t *testing.T) {
	for _, c := range []struct {
		name    string
		longRun bool
		window  time.Duration
	}{{"idle_kept", false, defaultRunSlotWindow}, {"idle_forgotten", false, 0}, {"long_run", true, 0}} {
		t.Run(c.name, func(t *testing.T) {
			longRun := c.longRun
			h := newSlotHarness(t, 1, 0)
			h.s.window = c.window
			if longRun {
				h = newSlotHarness(t, 3, -1)
				h.s.window = c.window
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

// TestRunSlotsInvariants drives the scheduler on a fake clock with random
// acquires, releases (of running, waiting, already released and unknown
// runs) and clock steps (which fire its timer), and checks after every
// step against a model of what it should hold: the counts agree, running
// <= capacity, no tenant holds more than capacity-headroom, the active
// tenants are those with runs or a grant within the window, every active
// tenant's share is at least its rounded-down weighted share (at least 1,
// at most capacity-headroom) and the shares add up to the capacity where
// the headroom rule allows, no run waits while its tenant is under its
// share and a slot is free, and every run was granted once or not at all.
// At the end the node drains, and every run that waited got its slot.
func TestRunSlotsInvariants(t *testing.T) {
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, 1))
		capacity := rng.IntN(10) + 1
		headroom := rng.IntN(5) - 1
		window := []time.Duration{0, time.Second, 5 * time.Second}[rng.IntN(3)]
		clock := newSlotClock()
		s := newClockedSlots(capacity, headroom, window, clock)
		perTenant := s.perTenant
		tenants := rng.IntN(5) + 1

		type run struct {
			tenant string
			state  int // 0 waiting, 1 holding, 2 released
			grants int
		}
		runs := map[string]*run{}
		lastGrant := map[string]time.Time{}
		weight := map[string]uint32{}
		var ids []string
		check := func(step int) {
			t.Helper()
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
			now := clock.now()
			var active []string
			var sumW uint64
			for i := range tenants {
				name := fmt.Sprint("t", i)
				c := perT[name]
				if c[0]+c[1] > 0 || (!lastGrant[name].IsZero() && now.Sub(lastGrant[name]) < window) {
					active = append(active, name)
					sumW += uint64(max(weight[name], 1))
				}
			}
			if st.Active != len(active) {
				t.Fatalf("seed %d step %d: %d active tenants, model %v", seed, step, st.Active, active)
			}
			sumShares, sumLower := 0, 0
			for _, name := range active {
				sh := s.share(name)
				lower := min(perTenant, max(1, int(uint64(capacity)*uint64(max(weight[name], 1))/sumW)))
				if sh < lower || sh > perTenant {
					t.Fatalf("seed %d step %d: %s's share %d, want in [%d, %d]", seed, step, name, sh, lower, perTenant)
				}
				sumShares += sh
				sumLower += lower
			}
			if want := max(sumLower, min(capacity, len(active)*perTenant)); len(active) > 0 && sumShares != want {
				t.Fatalf("seed %d step %d: shares add up to %d, want %d", seed, step, sumShares, want)
			}
			for name, c := range perT {
				r, w := s.tenantStats(name)
				if r != c[0] || w != c[1] {
					t.Fatalf("seed %d step %d: tenant %s: %d/%d, model %d/%d", seed, step, name, r, w, c[0], c[1])
				}
				if r > perTenant {
					t.Fatalf("seed %d step %d: tenant %s holds %d > %d", seed, step, name, r, perTenant)
				}
				if sh := s.share(name); w > 0 && running < capacity && r < sh {
					t.Fatalf("seed %d step %d: tenant %s waits (%d) with a slot free and %d < %d held", seed, step, name, w, r, sh)
				}
			}
		}
		release := func(id string) {
			if r := runs[id]; r != nil {
				s.release(r.tenant, id)
				r.state = 2
			} else {
				s.release("t0", id)
			}
		}

		for step := range 600 {
			switch n := rng.IntN(100); {
			case len(ids) == 0 || n < 50:
				id := fmt.Sprintf("r%d", step)
				r := &run{tenant: fmt.Sprint("t", rng.IntN(tenants))}
				runs[id], ids = r, append(ids, id)
				w := uint32(rng.IntN(4))
				weight[r.tenant] = w
				if s.acquire(r.tenant, w, id, func() {
					r.grants++
					if r.state != 0 {
						t.Errorf("seed %d: grant for run %s in state %d", seed, id, r.state)
					}
					r.state = 1
					lastGrant[r.tenant] = clock.now()
				}) {
					r.state = 1
					lastGrant[r.tenant] = clock.now()
				}
			case n < 88:
				id := ids[rng.IntN(len(ids))]
				if rng.IntN(20) == 0 {
					id = "unknown"
				}
				release(id)
			default:
				clock.advance(time.Duration(rng.Int64N(int64(2*window) + int64(time.Second))))
			}
			check(step)
		}

		// Drain: end the runs holding slots, one at a time, until none is
		// left; every waiting run must get its slot on the way.
		for step := 600; ; step++ {
			var holding []string
			for _, id := range ids {
				if runs[id].state == 1 {
					holding = append(holding, id)
				}
			}
			if len(holding) == 0 {
				break
			}
			release(holding[rng.IntN(len(holding))])
			check(step)
		}
		for _, id := range ids {
			if r := runs[id]; r.state == 0 {
				t.Fatalf("seed %d: run %s still waits on an empty node", seed, id)
			}
		}
		clock.advance(window)
		if st := s.stats(); st != (slotStats{}) {
			t.Fatalf("seed %d: stats after the window on an empty node: %+v", seed, st)
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
	if st := s.stats(); st.Running != 0 || st.Waiting != 0 || st.Tenants != 0 || st.Active > 3 {
		t.Fatalf("stats after every run ended: %+v", st)
	}
}
