package actors

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
)

// The silence rule on its own clock: probes after a third of the bound,
// again every third while silent, peers asked from the second probe on,
// and a move once the bound passed with a probe unanswered for a third of
// it and a peer's answer since peers were asked; anything heard starts it
// again.
func TestSilenceRule(t *testing.T) {
	r := newSilenceRule(600 * time.Millisecond)
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var s silence
	steps := []struct {
		ms             int
		heard, vouched uint64
		want           silenceAction
	}{
		{0, 5, 0, silenceOK},           // first look: the clock starts
		{150, 5, 0, silenceOK},         // quiet 150 ms
		{200, 5, 0, silenceProbe},      // a third: probe
		{250, 5, 0, silenceOK},         // probed 50 ms ago
		{400, 5, 0, silenceProbeRelay}, // probe again, and ask peers
		{450, 6, 1, silenceOK},         // heard (an answer, an event): the clock starts again
		{640, 6, 1, silenceOK},         // quiet 190 ms
		{650, 6, 1, silenceProbe},      // the first probe of this silence
		{849, 6, 1, silenceOK},
		{850, 6, 1, silenceProbeRelay}, // peers asked (their answers so far: 1)
		{900, 6, 2, silenceOK},         // a peer's answer
		{1049, 6, 2, silenceOK},        // quiet 599 ms
		{1050, 6, 2, silenceMove},      // quiet 600 ms, a probe out 400 ms, a peer vouched
	}
	for i, st := range steps {
		if got := r.step(&s, st.heard, st.vouched, at(st.ms)); got != st.want {
			t.Fatalf("step %d (%d ms, heard %d, vouched %d): %v, want %v", i, st.ms, st.heard, st.vouched, got, st.want)
		}
	}

	// No peer's answer (the node answers no one: starved, frozen, cut
	// from all): probed and relayed for ever, never moved by this rule.
	var frozen silence
	for ms := 0; ms <= 5000; ms += 50 {
		if got := r.step(&frozen, 1, 7, at(ms)); got == silenceMove {
			t.Fatalf("moved at %d ms with no peer's answer", ms)
		}
	}
	// A peer's answer that came before peers were asked this time (an
	// earlier silence's) does not count.
	var stale silence
	r.step(&stale, 1, 3, at(0))
	r.step(&stale, 1, 3, at(200))
	r.step(&stale, 1, 4, at(300)) // an old relay's answer, before this silence's relays
	r.step(&stale, 1, 4, at(400)) // peers asked: their count is 4 now
	if got := r.step(&stale, 1, 4, at(600)); got != silenceProbeRelay {
		t.Fatalf("quiet 600 ms, no peer's answer since they were asked: %v, want another probe", got)
	}
	if got := r.step(&stale, 1, 5, at(650)); got != silenceMove {
		t.Fatalf("a peer's answer after they were asked: %v, want a move", got)
	}

	// A coordinator first looked at after a long time (the watch's tick
	// came late, or the hub was moving) is probed first, never moved at
	// once.
	var fresh silence
	r.step(&fresh, 1, 0, at(0))
	if got := r.step(&fresh, 1, 0, at(5000)); got != silenceProbe {
		t.Fatalf("first look after 5 s of silence: %v, want a probe first", got)
	}
	if got := r.step(&fresh, 1, 1, at(5199)); got != silenceOK {
		t.Fatalf("moved 199 ms after the first probe: %v", got)
	}
	if got := r.step(&fresh, 1, 1, at(5200)); got != silenceProbeRelay {
		t.Fatalf("200 ms after the first probe: %v, want the peers asked", got)
	}
	if got := r.step(&fresh, 1, 2, at(5250)); got != silenceMove {
		t.Fatalf("a peer vouched, the first probe unanswered 250 ms: %v", got)
	}
}

// stubCoordinator is a run's coordinator as its hub sees it. It records
// the probes it gets and answers them as its mode says: "live" answers
// all, "cut" answers only peers (its hub hears nothing from it: an
// asymmetric cut), "frozen" answers none; streaming sends an event every
// 20 ms.
type stubCoordinator struct {
	mu         sync.Mutex
	probes     int
	mode       string
	superseded uint64
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
		mode := s.mode
		s.mu.Unlock()
		hb := &messages.RunHeartbeat{RunId: m.RunId, Epoch: s.epoch}
		switch {
		case mode == "live" && m.ReplyTo != nil:
			ctx.Send(pidOf(m.ReplyTo), hb)
		case (mode == "live" || mode == "cut") && m.ReplyTo == nil && ctx.Sender() != nil:
			ctx.Respond(hb) // a peer's probe
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
// goroutine until the test ends; a peer actor relays probes as a run
// starter does. moves counts the watch's verdicts.
func watchedHub(t *testing.T, system *actor.ActorSystem, d time.Duration, coord *stubCoordinator) (h *Hub, coordPID *actor.PID, moves func() int) {
	t.Helper()
	h = newHub("run_s", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), testLogger(t))
	h.start = &messages.StartRun{RunId: "run_s"}
	h.onLost = func(*Hub, *actor.PID, string) {}
	hubPID := system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: h} }))
	coordPID = system.Root.Spawn(actor.PropsFromProducer(func() actor.Actor { return coord }))
	peer := system.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if m, ok := ctx.Message().(*messages.RelayProbe); ok {
			relayProbe(ctx, m)
		}
	}))
	h.mu.Lock()
	h.pid, h.coordinator = hubPID, coordPID
	h.mu.Unlock()
	system.Root.Send(hubPID, &messages.WatchRun{Coordinator: refOf(coordPID)})

	var mu sync.Mutex
	n := 0
	rule := newSilenceRule(d)
	w := newSilenceWatch(rule, func(h *Hub, c *actor.PID, relay bool) {
		system.Root.Send(c, &messages.RunProbe{RunId: h.RunID, ReplyTo: refOf(h.PID())})
		if relay {
			system.Root.Send(peer, &messages.RelayProbe{RunId: h.RunID, Coordinator: refOf(c), Hub: refOf(h.PID())})
		}
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

// A coordinator that cannot reach its hub but answers a peer (an
// asymmetric cut) is given up on after the bound; one that answers its
// hub's probes but sends no event (a model slow to its first token), one
// that answers no one (a frozen or starved node: the membership's call)
// and one that streams are never.
func TestSilentCoordinatorIsGivenUpOn(t *testing.T) {
	system := actor.NewActorSystem()
	defer system.Shutdown()
	const d = 150 * time.Millisecond

	cut := &stubCoordinator{mode: "cut"}
	_, _, cutMoves := watchedHub(t, system, d, cut)
	live := &stubCoordinator{mode: "live"}
	_, _, liveMoves := watchedHub(t, system, d, live)
	frozen := &stubCoordinator{mode: "frozen"}
	_, _, frozenMoves := watchedHub(t, system, d, frozen)
	streaming := &stubCoordinator{mode: "frozen"} // its events are all it says
	sh, spid, streamMoves := watchedHub(t, system, d, streaming)
	system.Root.Send(spid, &stubStream{hub: sh.PID()})

	deadline := time.Now().Add(5 * time.Second)
	for cutMoves() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if cutMoves() == 0 {
		t.Fatalf("a coordinator that answered peers but none of its hub's %d probes was never given up on", cut.probed())
	}
	time.Sleep(8 * d) // well past the bound for the others
	if n := liveMoves(); n != 0 {
		t.Fatalf("a coordinator that answered its %d probes was given up on %d times", live.probed(), n)
	}
	if live.probed() < 3 {
		t.Fatalf("a silent but live coordinator was probed %d times in %v", live.probed(), 9*d)
	}
	if n := frozenMoves(); n != 0 {
		t.Fatalf("a coordinator that answered no one was given up on %d times (the membership's call)", n)
	}
	if frozen.probed() < 6 {
		t.Fatalf("a frozen coordinator was probed %d times (its hub's and the peer's)", frozen.probed())
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
	_, before, _, _ := h.silenceView()
	if h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 1, LastSeq: 9}) {
		t.Fatal("a fenced coordinator's heartbeat asked for a resend")
	}
	if _, heard, _, _ := h.silenceView(); heard != before {
		t.Fatal("a fenced coordinator's heartbeat counted as heard")
	}
	if h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 2, LastSeq: 1}) {
		t.Fatal("a heartbeat at the hub's own seq asked for a resend")
	}
	if !h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 2, LastSeq: 3}) {
		t.Fatal("a heartbeat two events ahead did not ask for them")
	}
	if _, heard, _, _ := h.silenceView(); heard != before+2 {
		t.Fatalf("heard %d, want %d", heard, before+2)
	}
	if h.heartbeat(&messages.RunHeartbeat{RunId: "run_h", Epoch: 2, LastSeq: 5, ViaPeer: true}) {
		t.Fatal("a peer's answer asked for a resend")
	}
	if _, heard, vouched, _ := h.silenceView(); heard != before+2 || vouched != 1 {
		t.Fatalf("a peer's answer: heard %d (want %d), vouched %d (want 1)", heard, before+2, vouched)
	}
}

// A model slow to its first token (1 s, the bound 150 ms): the run's
// real coordinator answers the probes, and the run is never moved.
func TestSlowModelIsNotSilence(t *testing.T) {
	const profiles = `
default_profile: lazy
providers:
  lazy: {kind: sim, sim: {ttft: 1s, output_tokens: 5}}
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
		t.Fatalf("%v probes in four 1 s waits for a first token (want about 70)", n)
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
	w := newSilenceWatch(newSilenceRule(600*time.Millisecond), func(h *Hub, _ *actor.PID, relay bool) {
		probes++
		if relay { // a peer vouches for it at once
			h.mu.Lock()
			h.vouched++
			h.mu.Unlock()
		}
	}, func(*Hub, *actor.PID, time.Duration) { moves++ })
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

// A run whose node still sends this process other runs' events is slow, not
// cut off (an overloaded node's stream to the gateway is queued behind its
// token events, so a peer's relay of its answer can arrive first): it is
// not moved while the node talks; once nothing at all comes from the node
// it is, and another node's talk does not count.
func TestSilentRunOfATalkingNodeIsNotMoved(t *testing.T) {
	mk := func(id, addr string) *Hub { return idleHub(t, id, addr) }
	silent, busy, other := mk("run_s", "node:1"), mk("run_b", "node:1"), mk("run_o", "node:2")
	moved := map[*Hub]int{}
	w := newSilenceWatch(newSilenceRule(600*time.Millisecond), func(h *Hub, _ *actor.PID, relay bool) {
		if relay { // a peer vouches for the silent coordinator at once
			h.mu.Lock()
			h.vouched++
			h.mu.Unlock()
		}
	}, func(h *Hub, _ *actor.PID, _ time.Duration) { moved[h]++ })
	t0 := time.Unix(1000, 0)
	hubs := []*Hub{silent, busy, other}
	ms := 0
	for ; ms <= 3000; ms += 50 { // node 1 talks through its other run
		hearFrom(busy)
		hearFrom(other)
		w.check(hubs, t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if moved[silent] != 0 {
		t.Fatalf("a silent run of a node that talks was moved after 3 s")
	}
	for ; ms <= 4000; ms += 50 { // node 1 falls silent; node 2 talks on
		hearFrom(other)
		w.check(hubs, t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if moved[silent] != 1 || moved[busy] != 1 || moved[other] != 0 {
		t.Fatalf("after node 1's link fell silent for 1 s: moved %d, %d, %d; want 1, 1, 0", moved[silent], moved[busy], moved[other])
	}
}

// A node none of whose runs here has heard anything for linkQuiet, and
// from which nothing came through any run, is reported quiet (a moved run
// is then offered to it last: in a split, the cut-off side's other node is
// not yet declared dead when the first one's runs move); a node that talks
// through any of its runs is not, and one that talks again is dropped.
func TestQuietLinksAreReported(t *testing.T) {
	a1, a2, b := idleHub(t, "run_a1", "node:1"), idleHub(t, "run_a2", "node:1"), idleHub(t, "run_b", "node:2")
	rule := newSilenceRule(600 * time.Millisecond)
	w := newSilenceWatch(rule, func(*Hub, *actor.PID, bool) {}, func(*Hub, *actor.PID, time.Duration) {})
	var reports []map[string]bool
	w.quiet = func(m map[string]bool) { reports = append(reports, m) }
	t0 := time.Unix(1000, 0)
	hubs := []*Hub{a1, a2, b}
	ms := 0
	for ; ms <= 1000; ms += 50 { // both nodes talk (node 1 through one run only)
		hearFrom(a2)
		hearFrom(b)
		w.check(hubs, t0.Add(time.Duration(ms)*time.Millisecond))
	}
	if len(reports) != 0 {
		t.Fatalf("quiet links reported while every node talks: %v", reports)
	}
	var quietAt time.Duration
	for ; ms <= 2000; ms += 50 { // node 1 falls silent
		hearFrom(b)
		w.check(hubs, t0.Add(time.Duration(ms)*time.Millisecond))
		if quietAt == 0 && len(reports) > 0 {
			quietAt = time.Duration(ms-1000) * time.Millisecond
		}
	}
	if len(reports) == 0 {
		t.Fatal("node 1 silent for 1 s was never reported quiet")
	}
	if last := reports[len(reports)-1]; len(last) != 1 || !last["node:1"] {
		t.Fatalf("quiet links %v, want node:1 only", last)
	}
	if quietAt < rule.linkQuiet() {
		t.Fatalf("node 1 reported quiet %v after its last word, before linkQuiet (%v)", quietAt, rule.linkQuiet())
	}
	hearFrom(a1)
	w.check(hubs, t0.Add(time.Duration(ms)*time.Millisecond))
	if last := reports[len(reports)-1]; len(last) != 0 {
		t.Fatalf("node 1 talked again and is still reported quiet: %v", last)
	}
}

// Nodes with a quiet link go last among the candidates, the order kept
// otherwise.
func TestQuietLinksGoLast(t *testing.T) {
	e := &Engine{}
	if got := e.silentLast([]string{"a", "b", "c"}); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("no quiet link: %v", got)
	}
	q := map[string]bool{"a": true}
	e.quietLinks.Store(&q)
	if got := e.silentLast([]string{"a", "b", "c"}); !slices.Equal(got, []string{"b", "c", "a"}) {
		t.Fatalf("a's link quiet: %v, want [b c a]", got)
	}
}

// idleHub is a hub of run id whose coordinator is at addr, as the
// silence watch sees it (no actors: the test counts what it heard).
func idleHub(t *testing.T, id, addr string) *Hub {
	h := newHub(id, "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), testLogger(t))
	h.start, h.coordinator = &messages.StartRun{RunId: id}, actor.NewPID(addr, "run/"+id)
	h.onLost = func(*Hub, *actor.PID, string) {}
	return h
}

// hearFrom counts one message from h's coordinator.
func hearFrom(h *Hub) {
	h.mu.Lock()
	h.heard++
	h.mu.Unlock()
}
