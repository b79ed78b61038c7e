package actors

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
)

// The silence rule on its own clock: probes after a third of the bound,
// again every third while silent, and a move once the bound passed with a
// probe unanswered for a third of it; anything heard starts it again.
func TestSilenceRule(t *testing.T) {
	r := newSilenceRule(600 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var s silence
	steps := []struct {
		ms    int
		heard uint64
		want  silenceAction
	}{
		{0, 5, silenceOK},      // first look: the clock starts
		{150, 5, silenceOK},    // quiet 150 ms
		{200, 5, silenceProbe}, // a third: probe
		{250, 5, silenceOK},    // probed 50 ms ago
		{400, 5, silenceProbe}, // probe again
		{450, 6, silenceOK},    // heard (an answer, an event): the clock starts again
		{640, 6, silenceOK},    // quiet 190 ms
		{650, 6, silenceProbe}, // the first probe of this silence
		{849, 6, silenceOK},
		{850, 6, silenceProbe},
		{1049, 6, silenceOK},   // quiet 599 ms
		{1050, 6, silenceMove}, // quiet 600 ms, the first probe out 400 ms
	}
	for i, st := range steps {
		if got := r.step(&s, st.heard, at(st.ms)); got != st.want {
			t.Fatalf("step %d (%d ms, heard %d): %v, want %v", i, st.ms, st.heard, got, st.want)
		}
	}

	// A coordinator first looked at after a long time (the watch's tick
	// came late, or the hub was moving) is probed first, never moved at
	// once.
	var fresh silence
	r.step(&fresh, 1, at(0))
	if got := r.step(&fresh, 1, at(5000)); got != silenceProbe {
		t.Fatalf("first look after 5 s of silence: %v, want a probe first", got)
	}
	if got := r.step(&fresh, 1, at(5199)); got != silenceOK {
		t.Fatalf("moved 199 ms after the first probe: %v", got)
	}
	if got := r.step(&fresh, 1, at(5200)); got != silenceMove {
		t.Fatalf("not moved once the probe went unanswered for 200 ms: %v", got)
	}
	// An answer just before the bound: not moved.
	var answered silence
	r.step(&answered, 1, at(0))
	r.step(&answered, 1, at(200))
	r.step(&answered, 1, at(400))
	if got := r.step(&answered, 2, at(590)); got != silenceOK {
		t.Fatalf("heard at 590 ms: %v", got)
	}
	if got := r.step(&answered, 2, at(600)); got != silenceOK {
		t.Fatalf("moved 10 ms after an answer: %v", got)
	}
}

// stubCoordinator is a run's coordinator as its hub sees it: it records
// the probes it gets and, if answer is set, answers them; streaming sends
// an event every 20 ms.
type stubCoordinator struct {
	mu         sync.Mutex
	probes     int
	superseded uint64
	answer     bool
	epoch      uint64
}

type stubStream struct {
	hub *actor.PID
	seq uint64
}

func (s *stubCoordinator) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.RunProbe:
		s.mu.Lock()
		s.probes++
		answer := s.answer
		s.mu.Unlock()
		if answer {
			ctx.Send(pidOf(m.ReplyTo), &messages.RunHeartbeat{RunId: m.RunId, Epoch: s.epoch})
		}
	case *stubStream:
		m.seq++
		ctx.Send(m.hub, &messages.RunEvent{RunId: "run_s", Seq: m.seq, Epoch: s.epoch,
			Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Text: "x"}}})
		self := ctx.Self()
		root := ctx.ActorSystem().Root
		if m.seq < 60 {
			time.AfterFunc(20*time.Millisecond, func() { root.Send(self, m) })
		}
	case *messages.RunSuperseded:
		s.mu.Lock()
		s.superseded = m.Epoch
		s.mu.Unlock()
	}
}

func (s *stubCoordinator) probed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes
}

// watchedHub is a live run's hub and hub actor on system, its coordinator
// a stub, watched with the rule d by a silence watch ticking on its own
// goroutine until the test ends. moves counts the watch's verdicts.
func watchedHub(t *testing.T, system *actor.ActorSystem, d time.Duration, coord *stubCoordinator) (h *Hub, coordPID *actor.PID, moves func() int) {
	t.Helper()
	h = newHub("run_s", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), testLogger(t))
	h.start = &messages.StartRun{RunId: "run_s"}
	h.onLost = func(*Hub, *actor.PID, string) {}
	hubPID := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: h} }))
	coordPID = system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return coord }))
	h.mu.Lock()
	h.pid, h.coordinator = hubPID, coordPID
	h.mu.Unlock()
	system.Root.Send(hubPID, &messages.WatchRun{Coordinator: refOf(coordPID)})

	var mu sync.Mutex
	n := 0
	rule := newSilenceRule(d)
	w := newSilenceWatch(rule, func(h *Hub, c *actor.PID) {
		system.Root.Send(c, &messages.RunProbe{RunId: h.RunID, ReplyTo: refOf(h.PID())})
	}, func(h *Hub, c *actor.PID, quiet time.Duration) {
		mu.Lock()
		n++
		mu.Unlock()
		if quiet < d {
			t.Errorf("moved after %v of silence, under the bound %v", quiet, d)
		}
	})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(rule.tick())
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case now := <-tk.C:
				w.check([]*Hub{h}, now)
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
	return h, coordPID, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// A coordinator that cannot reach its hub (it gets the probes, its
// answers never arrive: an asymmetric cut) is given up on after the bound;
// one that answers the probes but sends no event (a model slow to its
// first token) and one that streams are never.
func TestSilentCoordinatorIsGivenUpOn(t *testing.T) {
	system := actor.NewActorSystem()
	defer system.Shutdown()
	const d = 150 * time.Millisecond

	muted := &stubCoordinator{}
	_, _, mutedMoves := watchedHub(t, system, d, muted)
	slow := &stubCoordinator{answer: true}
	_, _, slowMoves := watchedHub(t, system, d, slow)
	streaming := &stubCoordinator{}
	sh, spid, streamMoves := watchedHub(t, system, d, streaming)
	system.Root.Send(spid, &stubStream{hub: sh.PID()})

	deadline := time.Now().Add(5 * time.Second)
	for mutedMoves() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if mutedMoves() == 0 {
		t.Fatalf("a coordinator that answered none of %d probes was never given up on", muted.probed())
	}
	if muted.probed() == 0 {
		t.Fatal("given up on without a probe")
	}
	time.Sleep(8 * d) // well past the bound for the other two
	if n := slowMoves(); n != 0 {
		t.Fatalf("a coordinator that answered its %d probes was given up on %d times", slow.probed(), n)
	}
	if slow.probed() < 3 {
		t.Fatalf("a silent but live coordinator was probed %d times in %v", slow.probed(), 9*d)
	}
	if n := streamMoves(); n != 0 {
		t.Fatalf("a streaming coordinator was given up on %d times", n)
	}
	if sh.LastSeq() < 10 {
		t.Fatalf("the streaming stub's events did not arrive (%d)", sh.LastSeq())
	}
}

// A heartbeat from a fenced epoch is not a word from the run's
// coordinator, and one that says the coordinator logged more than the hub
// has makes the hub ask for the rest.
func TestHeartbeatEpochAndGap(t *testing.T) {
	h := newHub("run_h", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), testLogger(t))
	h.append(&messages.RunEvent{RunId: "run_h", Seq: 1, Epoch: 2, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Text: "a"}}})
	_, before, _ := h.silenceView()
	if h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 1, LastSeq: 9}) {
		t.Fatal("a fenced coordinator's heartbeat asked for a resend")
	}
	if _, heard, _ := h.silenceView(); heard != before {
		t.Fatal("a fenced coordinator's heartbeat counted as heard")
	}
	if h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 2, LastSeq: 1}) {
		t.Fatal("a heartbeat at the hub's own seq asked for a resend")
	}
	if !h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 2, LastSeq: 3}) {
		t.Fatal("a heartbeat two events ahead did not ask for them")
	}
	if _, heard, _ := h.silenceView(); heard != before+2 {
		t.Fatalf("heard %d, want %d", heard, before+2)
	}
}

// A model slow to its first token (1.5 s, the bound 150 ms): the run's
// real coordinator answers the probes, and the run is never moved.
func TestSlowModelIsNotSilence(t *testing.T) {
	const profiles = `
default_profile: lazy
providers:
  lazy: {kind: sim, sim: {ttft: 1500ms, output_tokens: 5}}
profiles:
  lazy:
    provider: lazy
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`
	e, reg, _ := newProfileEngine(t, profiles, func(c *Config) { c.CoordinatorSilence = 150 * time.Millisecond })
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "lazy", Query: "q"})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run ended with %v", terminal(evs))
	}
	for _, ev := range evs {
		if ev.GetStageRestarted() != nil {
			t.Fatalf("a stage was restarted: %v", ev)
		}
	}
	if n := testutil.ToFloat64(e.metrics.silentCoordinators); n != 0 {
		t.Fatalf("%v runs moved for silence", n)
	}
	if n := testutil.ToFloat64(e.metrics.silenceProbes); n < 10 {
		t.Fatalf("%v probes in four 1.5 s waits for a first token (want about 40)", n)
	}
	_ = reg
}

// The move itself, on a real coordinator: the run resumes under a higher
// epoch, the old coordinator is told it was superseded and stops (its
// slot and hosting go back), and the transcript stays whole.
func TestSilentMoveSupersedesTheOldCoordinator(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.CoordinatorSilence = -1 })
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "slow", Query: "q", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); h.LastSeq() < 5; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the run streams nothing")
		}
	}
	old := h.Coordinator()
	e.moveSilent(h, old, 700*time.Millisecond)
	for deadline := time.Now().Add(10 * time.Second); h.Coordinator().Equal(old); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the run did not move")
		}
	}
	// The old coordinator stops: one hosted run again.
	for deadline := time.Now().Add(5 * time.Second); e.Hosted() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d coordinators hosted after the move, want 1 (the old one was not stopped)", e.Hosted())
		}
	}
	if !e.hostSilent(old.Address) {
		t.Fatal("the silent coordinator's host is not offered runs last")
	}
	if e.Cancel(h.RunID, "enough") != nil {
		t.Fatal("cancel")
	}
	evs := collect(t, h, 1)
	restarted, epochs := false, map[uint64]bool{}
	for _, ev := range evs {
		epochs[ev.Epoch] = true
		if ev.GetStageRestarted() != nil {
			restarted = true
		}
	}
	if !restarted || len(epochs) != 2 {
		t.Fatalf("want a stage_restarted and two epochs, got restarted=%v epochs=%v", restarted, epochs)
	}
	if terminal(evs).GetRunCancelled() == nil || !strings.Contains(terminal(evs).GetRunCancelled().Reason, "enough") {
		t.Fatalf("ended with %v", terminal(evs))
	}
	checkSeqs(t, evs)
}

func checkSeqs(t *testing.T, evs []*messages.RunEvent) {
	t.Helper()
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
	}
}

// The watch's own stall (a tick 5 s late: the gateway was starved or
// paused) is not its coordinators' silence: every clock starts again.
func TestLateTickIsNotSilence(t *testing.T) {
	h := newHub("run_l", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), testLogger(t))
	h.start, h.coordinator = &messages.StartRun{RunId: "run_l"}, actor.NewPID("node:1", "run/run_l")
	h.onLost = func(*Hub, *actor.PID, string) {}
	var probes, moves int
	w := newSilenceWatch(newSilenceRule(600*time.Millisecond),
		func(*Hub, *actor.PID) { probes++ }, func(*Hub, *actor.PID, time.Duration) { moves++ })
	t0 := time.Unix(1000, 0)
	for ms := 0; ms <= 300; ms += 50 {
		w.check([]*Hub{h}, t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if probes != 1 || moves != 0 {
		t.Fatalf("300 ms of silence: %d probes, %d moves; want 1, 0", probes, moves)
	}
	late := t0.Add(5 * time.Second)
	w.check([]*Hub{h}, late)
	w.check([]*Hub{h}, late.Add(50*time.Millisecond))
	if probes != 1 || moves != 0 {
		t.Fatalf("after a late tick: %d probes, %d moves; want no new ones", probes, moves)
	}
	for ms := 100; ms <= 700; ms += 50 {
		w.check([]*Hub{h}, late.Add(time.Duration(ms)*time.Millisecond))
	}
	if moves != 1 {
		t.Fatalf("700 ms of silence after the late tick, probes unanswered: %d moves", moves)
	}
	// A hub the watch no longer gets (ended, evicted) is forgotten.
	w.check(nil, late.Add(750*time.Millisecond))
	if len(w.states) != 0 {
		t.Fatalf("%d states kept for hubs no longer watched", len(w.states))
	}
}
