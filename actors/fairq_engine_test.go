package actors

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// newSlotEngine is newTestEngine for tests and benchmarks alike, with its
// own profiles (testProfiles if empty).
func newSlotEngine(tb testing.TB, profiles string, mutate func(*Config)) *Engine {
	tb.Helper()
	if profiles == "" {
		profiles = testProfiles
	}
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		tb.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	providers, err := BuildProviders(stages, logger)
	if err != nil {
		tb.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Logger, cfg.Stages, cfg.Providers = logger, stages, providers
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// pollUntilTrue waits until cond holds, failing tb after 10 s.
func pollUntilTrue(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// firstStart is the time of a run's first StageStarted; ok false if none yet.
func firstStart(h *Hub) (at time.Time, ok bool) {
	for _, ev := range h.Events(1) {
		if ev.GetStageStarted() != nil {
			return ev.GetTime().AsTime(), true
		}
	}
	return time.Time{}, false
}

func started(h *Hub) bool { _, ok := firstStart(h); return ok }

func startSlow(t *testing.T, e *Engine, tenant string, seed int64) *Hub {
	t.Helper()
	h, err := e.StartRun(RunRequest{Tenant: tenant, Profile: "slow", Query: "q", Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func cancelAndWait(t *testing.T, e *Engine, h *Hub) {
	t.Helper()
	if err := e.Cancel(h.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	if terminal(h.Events(1)).GetRunCancelled() == nil {
		t.Fatalf("run %s did not end cancelled: %v", h.RunID, terminal(h.Events(1)))
	}
	// The run's slot goes back in its end hook, just after the end is
	// logged (a reader may see the end first).
	for holds(e.admission, h.RunID) {
		if ctx.Err() != nil {
			t.Fatalf("run %s ended, its slot was never given back", h.RunID)
		}
		time.Sleep(time.Millisecond)
	}
}

// holds reports whether s counts runID as holding a slot.
func holds(s *runSlots, runID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[runID]
	return ok
}

func wantSlots(t *testing.T, e *Engine, running, waiting int) {
	t.Helper()
	pollUntilTrue(t, fmt.Sprintf("%d runs holding slots and %d waiting", running, waiting), func() bool {
		st := e.deps.slots.stats()
		return st.Running == running && st.Waiting == waiting
	})
}

// With two slots and no headroom, tenant a fills the node and queues more;
// a run of tenant b then starts before a's queued runs (weighted-fair
// order), a cancelled queued run ends at once and frees nothing, and every
// slot is free after all runs end. The "slow" profile never ends by itself
// within the test, so which run holds a slot changes only when a test
// cancels one: the order is deterministic.
func TestRunSlotsOrderRunsAcrossTenants(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots, c.RunSlotHeadroom = 2, -1 })
	var as []*Hub
	for i := range 4 {
		as = append(as, startSlow(t, e, "a", int64(i+1)))
	}
	wantSlots(t, e, 2, 2)
	var running, queued []*Hub
	pollUntilTrue(t, "a's two running runs to start", func() bool {
		running, queued = nil, nil
		for _, h := range as {
			if started(h) {
				running = append(running, h)
			} else {
				queued = append(queued, h)
			}
		}
		return len(running) == 2
	})
	b := startSlow(t, e, "b", 9)
	wantSlots(t, e, 2, 3)
	if got := testutil.ToFloat64(e.metrics.slotsWaiting); got != 3 {
		t.Fatalf("qlc_runs_waiting_for_slot = %v, want 3", got)
	}

	// A queued run's cancel ends it at once, and frees no slot: b still waits.
	cancelAndWait(t, e, queued[0])
	if evs := queued[0].Events(1); len(evs) != 1 {
		t.Fatalf("a run cancelled while it waited logged %d events, want only RunCancelled: %v", len(evs), evs)
	}
	wantSlots(t, e, 2, 2)
	if started(b) {
		t.Fatal("b started though no slot was freed")
	}

	// Subscribe works while a run waits: the subscriber gets its events
	// once it starts.
	got := make(chan *messages.RunEvent, 1024)
	sink := e.System().Root.Spawn(propsFunc(func(m any) {
		switch m := m.(type) {
		case *messages.RunEvent:
			got <- m
		case *messages.RunEventBatch:
			for _, ev := range m.Events {
				got <- ev
			}
		}
	}))
	e.System().Root.Send(queued[1].Coordinator(), &messages.Subscribe{RunId: queued[1].RunID, FromSeq: 1, Subscriber: refOf(sink)})

	// One of a's runs ends: the slot goes to b, which is behind a in
	// virtual time, though a's run has waited longer.
	cancelAndWait(t, e, running[0])
	pollUntilTrue(t, "b to start", func() bool { return started(b) })
	wantSlots(t, e, 2, 1)
	if started(queued[1]) {
		t.Fatal("a's queued run started too")
	}
	// The next freed slot goes to a's queued run.
	cancelAndWait(t, e, running[1])
	pollUntilTrue(t, "a's queued run to start", func() bool { return started(queued[1]) })
	bAt, _ := firstStart(b)
	aAt, _ := firstStart(queued[1])
	if !bAt.Before(aAt) {
		t.Fatalf("b's first stage started at %v, not before a's queued run's at %v", bAt, aAt)
	}
	select {
	case ev := <-got:
		if ev.Seq != 1 || ev.GetStageStarted() == nil {
			t.Fatalf("the subscriber's first event: %v, want StageStarted seq 1", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the run's subscriber, registered while it waited, got nothing")
	}

	cancelAndWait(t, e, b)
	cancelAndWait(t, e, queued[1])
	wantSlots(t, e, 0, 0)
	if st := e.deps.slots.stats(); st.Tenants != 0 {
		t.Fatalf("tenants kept after every run ended: %+v", st)
	}
	if got := testutil.ToFloat64(e.metrics.slotsInUse); got != 0 {
		t.Fatalf("qlc_run_slots_in_use = %v, want 0", got)
	}
}

// With the default headroom, a tenant never holds the last slot: b's run
// starts at once on a node where a's runs wait, and the slot b frees stays
// free for others.
func TestRunSlotsHeadroomThroughEngine(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots = 2 }) // headroom 1
	var as []*Hub
	for i := range 3 {
		as = append(as, startSlow(t, e, "a", int64(i+1)))
	}
	wantSlots(t, e, 1, 2)
	b := startSlow(t, e, "b", 9)
	pollUntilTrue(t, "b to start at once", func() bool { return started(b) })
	wantSlots(t, e, 2, 2)
	cancelAndWait(t, e, b)
	wantSlots(t, e, 1, 2)
	n := 0
	for _, h := range as {
		if started(h) {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of a's runs started; a may hold 1 of 2 slots", n)
	}
	for _, h := range as {
		cancelAndWait(t, e, h)
	}
	wantSlots(t, e, 0, 0)
}

// On 8 slots, tenant a fills 7 alone and queues more; b's first run starts
// at once in the headroom slot. While both are active each may hold 4:
// the slot a's ending run frees goes to b's waiting run, the next one a's
// run frees stays free though a's runs wait (a holds more than its half),
// and b's next run takes it at once.
func TestRunSlotsShareCapThroughEngine(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots = 8 }) // headroom 1
	var as []*Hub
	for i := range 10 {
		as = append(as, startSlow(t, e, "a", int64(i+1)))
	}
	wantSlots(t, e, 7, 3)
	var aRunning, aQueued []*Hub
	pollUntilTrue(t, "a's seven running runs to start", func() bool {
		aRunning, aQueued = nil, nil
		for _, h := range as {
			if started(h) {
				aRunning = append(aRunning, h)
			} else {
				aQueued = append(aQueued, h)
			}
		}
		return len(aRunning) == 7
	})
	b0 := startSlow(t, e, "b", 100)
	pollUntilTrue(t, "b's first run to start at once", func() bool { return started(b0) })
	b1 := startSlow(t, e, "b", 101)
	wantSlots(t, e, 8, 4)

	cancelAndWait(t, e, aRunning[0])
	pollUntilTrue(t, "b's second run to start", func() bool { return started(b1) })
	wantSlots(t, e, 8, 3)
	cancelAndWait(t, e, aRunning[1])
	wantSlots(t, e, 7, 3) // the slot stays free: a holds 5 of its 4
	if r, w := e.deps.slots.tenantStats("a"); r != 5 || w != 3 || e.deps.slots.share("a") != 4 {
		t.Fatalf("a: %d running, %d waiting, share %d; want 5, 3, 4", r, w, e.deps.slots.share("a"))
	}
	b2 := startSlow(t, e, "b", 102)
	pollUntilTrue(t, "b's third run to start at once", func() bool { return started(b2) })
	wantSlots(t, e, 8, 3)
	for _, h := range aQueued {
		if started(h) {
			t.Fatal("a's queued run started while a held more than its share")
		}
	}
	if st := e.deps.slots.stats(); st.Active != 2 || st.Tenants != 2 {
		t.Fatalf("stats %+v, want 2 active tenants", st)
	}
	for _, h := range append(append(aRunning[2:], aQueued...), b0, b1, b2) {
		cancelAndWait(t, e, h)
	}
	wantSlots(t, e, 0, 0)
}

// Runs that complete by themselves give their slots back: many runs of two
// tenants through two slots all complete, and the slots end free.
func TestRunSlotsAllRunsComplete(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots = 2 })
	var hs []*Hub
	for i := range 16 {
		tenant := "a"
		if i%4 == 0 {
			tenant = "b"
		}
		h, err := e.StartRun(RunRequest{Tenant: tenant, Profile: "instant", Query: "q", Seed: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	for _, h := range hs {
		evs := collect(t, h, 1)
		checkTranscript(t, evs, 1)
		if terminal(evs).GetRunCompleted() == nil {
			t.Fatalf("run ended with %v", terminal(evs))
		}
	}
	wantSlots(t, e, 0, 0)
}

// A run's slot is free by the time its end is seen, so a client that
// starts its next run on seeing the end finds the slot free.
func TestRunSlotsFreeBeforeTheEndIsSeen(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots = 1 })
	for i := range 5 {
		h, err := e.StartRun(RunRequest{Tenant: "a", Profile: "instant", Query: "q", Seed: int64(i + 1)})
		if err != nil {
			t.Fatal(err)
		}
		if terminal(collect(t, h, 1)).GetRunCompleted() == nil {
			t.Fatalf("run %d did not complete", i)
		}
		if st := e.deps.slots.stats(); st.Running != 0 || st.Waiting != 0 {
			t.Fatalf("run %d ended, but the slots say %+v", i, st)
		}
	}
}

// A resumed run (failover) takes a slot on its new node too: it waits
// while the node is full, then completes from where it was.
func TestRunSlotsResumedRunWaits(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) { c.RunSlots = 1 })
	h, err := e.StartRun(RunRequest{Tenant: "r", Profile: "instant", Query: "What is a mutex?", Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	full := collect(t, h, 1)
	cut := 0
	for i, ev := range full {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_REFINER {
			cut = i + 3
			break
		}
	}
	prior := full[:cut]
	wantSlots(t, e, 0, 0)
	holder := startSlow(t, e, "x", 1)
	wantSlots(t, e, 1, 0)
	h2, err := e.Resume(&messages.StartRun{RunId: "run_resumed", Tenant: "r", Profile: "instant", Query: "What is a mutex?",
		Epoch: 2, Options: &messages.RunOptions{Seed: 9}, PriorEvents: prior})
	if err != nil {
		t.Fatal(err)
	}
	wantSlots(t, e, 1, 1)
	for _, ev := range h2.Events(uint64(len(prior)) + 1) {
		if ev.GetStageStarted() != nil {
			t.Fatalf("the resumed run started a stage while the node was full: %v", ev)
		}
	}
	cancelAndWait(t, e, holder)
	evs := collect(t, h2, 1)
	checkTranscript(t, evs, 1)
	if terminal(evs).GetRunCompleted().GetAnswer() != terminal(full).GetRunCompleted().GetAnswer() {
		t.Fatalf("the resumed run ended with %v", terminal(evs))
	}
	wantSlots(t, e, 0, 0)
}

func TestRunSlotsConfig(t *testing.T) {
	stages, err := stagework.ParseConfig([]byte(testProfiles))
	if err != nil {
		t.Fatal(err)
	}
	providers, err := BuildProviders(stages, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		slots, headroom int
		ok              bool
	}{{-1, 0, false}, {4, 4, false}, {1, 1, false}, {0, 5, true}, {1, 0, true}, {4, -1, true}, {4, 3, true}} {
		cfg := DefaultConfig()
		cfg.Stages, cfg.Providers = stages, providers
		cfg.RunSlots, cfg.RunSlotHeadroom = c.slots, c.headroom
		if err := cfg.validate(); (err == nil) != c.ok {
			t.Errorf("RunSlots %d, RunSlotHeadroom %d: validate() = %v, want ok %v", c.slots, c.headroom, err, c.ok)
		}
	}
}
