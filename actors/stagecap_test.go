package actors

import (
	"fmt"
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/qlc-project/qlc/messages"
)

// The adaptation rule: a CPU over the target shrinks the limit to the
// attempts running times target/cpu (at most halving a sample, down to
// Min); a wait for a slot over MaxQueueDelay shrinks it too; with the CPU
// back under the target and the slots in use it grows by √limit up to
// Max; an idle node with its CPU busy elsewhere holds.
func TestStageCapacityRule(t *testing.T) {
	c := NewStageCapacity(StageCapacityConfig{Max: 64, Min: 4, TargetCPU: 0.8, MaxQueueDelay: 50 * time.Millisecond, Smoothing: 1})
	if got := c.Limit(); got != 64 {
		t.Fatalf("initial limit %d, want Max 64", got)
	}
	// Overloaded at 20 running: 20 × 0.8/1.0 = 16.
	if got := c.Observe(CapacitySample{CPU: 1, Running: 20}); got != 16 {
		t.Fatalf("cpu 1.0 with 20 running: limit %d, want 16", got)
	}
	// Still overloaded: at least a 5 % cut each sample, never below Min.
	prev := 16
	for range 40 {
		got := c.Observe(CapacitySample{CPU: 0.82, Running: 16})
		if got > prev || got < 4 {
			t.Fatalf("overloaded: limit went %d → %d (Min 4)", prev, got)
		}
		prev = got
	}
	if prev != 4 {
		t.Fatalf("limit under sustained overload: %d, want Min 4", prev)
	}
	// A cut is at most a halving: cpu far over the target.
	c2 := NewStageCapacity(StageCapacityConfig{Max: 64, Min: 1, TargetCPU: 0.5, Smoothing: 1})
	if got := c2.Observe(CapacitySample{CPU: 1, Running: 64, QueueDelay: time.Second}); got != 32 {
		t.Fatalf("deep overload: %d, want a halving to 32", got)
	}
	// Queueing delay alone: CPU fine, attempts waited 100 ms (2× the bound).
	c3 := NewStageCapacity(StageCapacityConfig{Max: 64, Min: 1, TargetCPU: 0.8, MaxQueueDelay: 50 * time.Millisecond, Smoothing: 1})
	if got := c3.Observe(CapacitySample{CPU: 0.3, Running: 40, Waiting: 5, QueueDelay: 100 * time.Millisecond}); got != 20 {
		t.Fatalf("queue delay 2× the bound with 40 running: %d, want 20", got)
	}
	// An idle node (nothing running) whose CPU is busy with other work
	// holds (not overloaded, not in use, CPU not low).
	c4 := NewStageCapacity(StageCapacityConfig{Max: 64, Min: 1, TargetCPU: 0.8, Smoothing: 1})
	c4.Observe(CapacitySample{CPU: 1, Running: 10}) // 8
	if got := c4.Observe(CapacitySample{CPU: 0.7, Running: 0}); got != 8 {
		t.Fatalf("idle at cpu 0.7: %d, want to hold 8", got)
	}
	// In use (≥ half the limit) under the target: +√limit per sample.
	if got := c4.Observe(CapacitySample{CPU: 0.7, Running: 8}); got != 10 { // 8 + 2.83
		t.Fatalf("in use at cpu 0.7: %d, want 10", got)
	}
	// Attempts waiting count as in use; the growth stops at Max.
	for range 100 {
		c4.Observe(CapacitySample{CPU: 0.5, Running: 1, Waiting: 1})
	}
	if got := c4.Limit(); got != 64 {
		t.Fatalf("after recovery: %d, want Max 64", got)
	}
	// A CPU far under the target grows the limit back even when idle.
	c5 := NewStageCapacity(StageCapacityConfig{Max: 32, Min: 2, TargetCPU: 0.8, Smoothing: 1})
	c5.Observe(CapacitySample{CPU: 1, Running: 2}) // Min
	for range 30 {
		c5.Observe(CapacitySample{CPU: 0.1})
	}
	if got := c5.Limit(); got != 32 {
		t.Fatalf("idle at cpu 0.1: %d, want back at Max 32", got)
	}
}

// The CPU reading is smoothed: one busy interval among quiet ones does not
// cut the limit, two in a row do; an unmeasured sample (-1) leaves the
// average as it was.
func TestStageCapacitySmoothsCPU(t *testing.T) {
	c := NewStageCapacity(StageCapacityConfig{Max: 16, Min: 1, TargetCPU: 0.8}) // Smoothing 0.5
	c.Observe(CapacitySample{CPU: 0.4, Running: 16})
	if got := c.Observe(CapacitySample{CPU: 1, Running: 16}); got != 16 { // avg 0.7
		t.Fatalf("one busy sample: %d, want 16", got)
	}
	if got := c.Observe(CapacitySample{CPU: -1, Running: 16}); got != 16 || math.Abs(c.CPU()-0.7) > 1e-9 {
		t.Fatalf("unmeasured sample: limit %d cpu %v, want 16 and 0.7", got, c.CPU())
	}
	if got := c.Observe(CapacitySample{CPU: 1, Running: 16}); got >= 16 { // avg 0.85
		t.Fatalf("two busy samples: %d, want a cut", got)
	}
}

func TestCPUShare(t *testing.T) {
	for _, c := range []struct {
		cpu, wall time.Duration
		procs     int
		want      float64
	}{
		{time.Second, time.Second, 2, 0.5},
		{3 * time.Second, time.Second, 2, 1}, // clamped
		{0, time.Second, 4, 0},
		{time.Second, 0, 2, -1},
	} {
		if got := cpuShare(c.cpu, c.wall, c.procs); got != c.want {
			t.Errorf("cpuShare(%v, %v, %d) = %v, want %v", c.cpu, c.wall, c.procs, got, c.want)
		}
	}
	m := newCPUMeter(time.Now())
	deadline := time.Now().Add(20 * time.Millisecond)
	for time.Now().Before(deadline) { // burn a little CPU so the share is above 0
	}
	if got := m.sample(time.Now()); got <= 0 || got > 1 {
		t.Fatalf("measured CPU share %v after a busy loop, want in (0, 1]", got)
	}
}

// attemptWaits: the longest wait of the interval, of the attempts granted
// and of the one still waiting; a withdrawn attempt's wait does not count.
func TestAttemptWaits(t *testing.T) {
	w := newAttemptWaits()
	t0 := time.Unix(1000, 0)
	w.wait("a", t0)
	w.wait("b", t0)
	w.wait("c", t0.Add(10*time.Millisecond))
	w.done("a", t0.Add(30*time.Millisecond), true)
	w.done("b", t0.Add(90*time.Millisecond), false)                               // withdrawn
	if got := w.take(t0.Add(50 * time.Millisecond)); got != 40*time.Millisecond { // c waits 40 ms
		t.Fatalf("take: %v, want 40ms (c still waiting)", got)
	}
	w.done("c", t0.Add(60*time.Millisecond), true)
	if got := w.take(t0.Add(100 * time.Millisecond)); got != 50*time.Millisecond {
		t.Fatalf("take: %v, want c's 50ms", got)
	}
	if got := w.take(t0.Add(200 * time.Millisecond)); got != 0 {
		t.Fatalf("take with nothing waiting: %v", got)
	}
	w.start("d", t0)
	w.start("d", t0.Add(time.Second)) // already waiting: keeps t0
	if got := w.take(t0.Add(2 * time.Second)); got != 2*time.Second {
		t.Fatalf("take: %v, want d's 2s", got)
	}
	if got := w.take(t0.Add(time.Minute)); got != 0 || len(w.since) != 0 {
		t.Fatalf("a wait of a minute: %v, %d left; want it forgotten", got, len(w.since))
	}
}

// setCapacity: a shrink stops nothing that runs but grants nothing until
// fewer runs hold slots than the new capacity; a growth grants the
// waiting runs at once.
func TestRunSlotsSetCapacity(t *testing.T) {
	s := newRunSlots(4, -1)
	for _, id := range []string{"1", "2", "3"} {
		if !s.acquire("a", 1, id, func() {}) {
			t.Fatalf("run %s did not get a slot", id)
		}
	}
	s.setCapacity(2, -1)
	granted := map[string]bool{}
	var mu sync.Mutex
	grant := func(id string) func() {
		return func() { mu.Lock(); granted[id] = true; mu.Unlock() }
	}
	if s.acquire("a", 1, "4", grant("4")) {
		t.Fatal("run 4 got a slot with 3 running and capacity 2")
	}
	s.release("a", "1") // 2 running: still at capacity
	if granted["4"] {
		t.Fatal("run 4 granted with 2 running and capacity 2")
	}
	s.setCapacity(3, -1)
	if !granted["4"] {
		t.Fatal("run 4 not granted when the capacity grew to 3")
	}
	if got := s.capacityNow(); got != 3 {
		t.Fatalf("capacity %d, want 3", got)
	}
	// No limit stays no limit.
	u := newRunSlots(0, 0)
	u.setCapacity(5, 0)
	if got := u.capacityNow(); got != 0 {
		t.Fatalf("an unlimited scheduler got capacity %d", got)
	}
}

// A stage host at its adaptive share refuses a new attempt as busy, with
// its load (its attempts and their limit), instead of queueing it; it
// takes one again once the limit grows. The engine announces the same load.
func TestStageHostRefusesBeyondItsShare(t *testing.T) {
	e := newSlotEngine(t, "", func(c *Config) {
		c.StageSlots = 8
		c.AdaptiveStageSlots = true
		c.StageCapacity = StageCapacityConfig{Min: 1, TargetCPU: 0.5, Smoothing: 1, Interval: time.Hour} // the test samples
	})
	// A CPU at twice the target with nothing running: the limit falls to Min.
	for range 5 {
		e.adaptStageSlots(time.Now(), 1)
	}
	if l := e.load(); l.StageLimit != 1 || l.StageActive != 0 {
		t.Fatalf("load %+v, want stage limit 1, 0 running", l)
	}
	// One attempt holds the one slot (as a running worker would).
	if !e.deps.stageSlots.acquire("t", 1, "held", func() {}) {
		t.Fatal("the first attempt did not get the slot")
	}
	if !e.load().StageFull() {
		t.Fatalf("load %+v: want its stage share full", e.load())
	}
	answers := make(chan any, 4)
	probe, err := e.system.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.StepRefused, *messages.StepAccepted:
			answers <- m
		}
	}), "stagecap-probe")
	if err != nil {
		t.Fatal(err)
	}
	offer := func(attempt int32) any {
		e.system.Root.Send(actor.NewPID(e.system.Address(), stageHostName), &messages.StartStep{RunId: "r", Tenant: "t", Weight: 1, Step: "s",
			Attempt: attempt, Coordinator: refOf(probe), Provider: "sim", Model: "m", MaxTokens: 1})
		select {
		case a := <-answers:
			return a
		case <-time.After(5 * time.Second):
			t.Fatal("the stage host did not answer")
		}
		return nil
	}
	r, ok := offer(1).(*messages.StepRefused)
	if !ok || !r.Busy || r.GetLoad().GetStageLimit() != 1 || r.GetLoad().GetStageActive() != 1 {
		t.Fatalf("answer %v, want busy with stage load 1/1", r)
	}
	if st := e.deps.stageSlots.stats(); st.Waiting != 0 {
		t.Fatalf("the refused attempt waits (%d): it must leave for another node", st.Waiting)
	}
	// The CPU falls under half the target: the limit grows and the host
	// takes the next attempt.
	e.adaptStageSlots(time.Now(), 0.1)
	if got := e.deps.stageSlots.capacityNow(); got < 2 {
		t.Fatalf("capacity %d after a quiet sample, want ≥ 2", got)
	}
	if a, ok := offer(2).(*messages.StepAccepted); !ok {
		t.Fatalf("answer %v, want the attempt accepted", a)
	}
}

// stepOrderPlacer offers every parallel step to hosts(), in that order.
type stepOrderPlacer struct {
	StaticTopology
	hosts func() []string
}

func (p *stepOrderPlacer) StepCandidates(string) []string { return p.hosts() }

// A node whose stage share is full gets no new attempt while another has
// room: offered first (its announced load was stale), it refuses each
// attempt as busy and the coordinator places it on the node with room,
// where the run completes; once its full share is announced, it is not
// even asked.
func TestFullStageShareGetsNoAttempts(t *testing.T) {
	skipSecondRemoteUnderRace(t)
	var (
		mu     sync.Mutex
		offers int
	)
	sys := actor.NewActorSystem()
	r, err := startRemote(sys, "127.0.0.1", 0, "", []remote.ConfigOption{
		remote.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false) })
	full := sys.Address()
	if _, err := sys.Root.SpawnNamed(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.StartStep); ok {
			mu.Lock()
			offers++
			mu.Unlock()
			ctx.Send(pidOf(m.Coordinator), &messages.StepRefused{Step: m.Step, Attempt: m.Attempt, Role: m.Role, Busy: true,
				Reason: "node is at its stage attempt capacity", Load: &messages.NodeLoad{StageActive: 4, StageLimit: 4}})
		}
	}), stageHostName); err != nil {
		t.Fatal(err)
	}
	var e *Engine
	announcedFull := false
	placer := &stepOrderPlacer{hosts: func() []string {
		mu.Lock()
		defer mu.Unlock()
		if announcedFull {
			return []string{e.Address(), full}
		}
		return []string{full, e.Address()}
	}}
	e = newSlotEngine(t, `
providers:
  sim: {kind: sim, sim: {output_tokens: 5}}
profiles:
  moa:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: agg}
`, func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", Insecure: true}
		c.Logger = quietLogger
		c.Topology = placer
		c.StageSlots = 8
	})
	placer.Nodes = []string{e.Address()} // coordinators here
	run := func(seed int64) {
		t.Helper()
		h, err := e.StartRun(RunRequest{Tenant: "a", Profile: "moa", Query: "q", Seed: seed, NoCache: true})
		if err != nil {
			t.Fatal(err)
		}
		evs := waitRun(t, h)
		if evs[len(evs)-1].GetRunCompleted() == nil {
			t.Fatalf("run ended with %v", evs[len(evs)-1])
		}
	}
	started := func() float64 { return testutil.ToFloat64(e.metrics.stepOffers.WithLabelValues("started")) }
	run(1)
	mu.Lock()
	stale := offers
	mu.Unlock()
	if stale != 4 || started() != 4 {
		t.Fatalf("stale view: the full node was offered %d attempts (want 4, each refused), the node with room started %v (want 4)", stale, started())
	}
	mu.Lock()
	announcedFull = true
	mu.Unlock()
	run(2)
	mu.Lock()
	defer mu.Unlock()
	if offers != stale || started() != 8 {
		t.Fatalf("announced full: the full node was offered %d more attempts (want 0); started here %v (want 8)", offers-stale, started())
	}
}

// BenchmarkCapacitySample is one tick of the stage capacity loop: the
// process's CPU time (getrusage), the slots' counts, the rule and the new
// capacity — paid 4 times a second per process.
func BenchmarkCapacitySample(b *testing.B) {
	e := newSlotEngine(b, "", func(c *Config) {
		c.StageSlots = 128
		c.AdaptiveStageSlots = true
		c.StageCapacity.Interval = time.Hour // the benchmark ticks
	})
	m := newCPUMeter(time.Now())
	b.ReportAllocs()
	for b.Loop() {
		e.adaptStageSlots(time.Now(), m.sample(time.Now()))
	}
}

// BenchmarkStageCapacityUnderCPU measures the loop end to end with real
// CPU: the engine's own capacity loop (250 ms ticks, getrusage) while
// this process burns every core, then after the burn stops: how long
// until the stage limit is at its floor (8 of 128) and back at 128. With
// 32 attempts' worth of demand waiting throughout (the limit grows only
// while in use), as a busy node has.
func BenchmarkStageCapacityUnderCPU(b *testing.B) {
	for b.Loop() {
		e := newSlotEngine(b, "", func(c *Config) {
			c.StageSlots = 128
			c.AdaptiveStageSlots = true
		})
		for i := range 32 { // demand: 32 attempts hold slots (and keep the limit "in use")
			e.deps.stageSlots.acquire("t", 1, fmt.Sprint("held-", i), func() {})
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range runtime.GOMAXPROCS(0) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					for i := 0; i < 1e5; i++ {
					}
				}
			}()
		}
		t0 := time.Now()
		for e.deps.stageSlots.capacityNow() > 8 && time.Since(t0) < 20*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		down := time.Since(t0)
		close(stop)
		wg.Wait()
		t1 := time.Now()
		for e.deps.stageSlots.capacityNow() < 128 && time.Since(t1) < 20*time.Second {
			time.Sleep(10 * time.Millisecond)
		}
		up := time.Since(t1)
		b.ReportMetric(float64(down.Milliseconds()), "ms-to-floor")
		b.ReportMetric(float64(up.Milliseconds()), "ms-to-max")
	}
}
