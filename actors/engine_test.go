package actors

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// testProfiles exercises every path of the coordinator with the simulator.
const testProfiles = `
default_profile: instant
providers:
  sim:      {kind: sim, sim: {output_tokens: 40}}
  broken:   {kind: sim, sim: {output_tokens: 40, error_rate: 1, error_kind: server}}
  authfail: {kind: sim, sim: {output_tokens: 40, error_rate: 1, error_kind: auth}}
  cutter:   {kind: sim, sim: {output_tokens: 40, cut_rate: 1, cut_after: 5}}
  hang:     {kind: sim, sim: {output_tokens: 40, hang_rate: 1}}
  stall:    {kind: sim, sim: {output_tokens: 40, stall_rate: 1, stall_after: 3}}
  slow:     {kind: sim, sim: {itl: 20ms, output_tokens: 5000}}
profiles:
  instant:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  fallback:
    provider: sim
    stages:
      generator: {provider: broken, model: primary, fallback: {provider: sim, model: backup}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
  doomed:
    provider: sim
    stages:
      generator: {model: g}
      refiner: {provider: broken, model: primary, fallback: {provider: broken, model: backup}}
      validator: {model: v}
      curator: {model: c}
  noretry:
    provider: sim
    stages:
      generator: {provider: authfail, model: primary}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
  cut:
    provider: sim
    stages:
      generator: {provider: cutter, model: primary, fallback: {provider: sim, model: backup}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
  hang:
    provider: sim
    stages:
      generator: {provider: hang, model: primary, fallback: {provider: stall, model: staller}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
  slow:
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestEngine(t *testing.T, mutate func(*Config)) (*Engine, *prometheus.Registry) {
	t.Helper()
	e, reg, _ := newProfileEngine(t, testProfiles, mutate)
	return e, reg
}

// newProfileEngine is newTestEngine running the profiles and providers of
// a stagework config (YAML) instead of testProfiles; it returns the config.
func newProfileEngine(t testing.TB, profiles string, mutate func(*Config)) (*Engine, *prometheus.Registry, *stagework.Config) {
	t.Helper()
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		t.Fatal(err)
	}
	providers, err := BuildProviders(stages, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg := DefaultConfig()
	cfg.Logger, cfg.Stages, cfg.Providers, cfg.Registerer = testLogger(t), stages, providers, reg
	cfg.Retry = stagework.RetryPolicy{AttemptsPerModel: 3, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e, reg, stages
}

// collect reads a run's whole log through a subscription.
func collect(t *testing.T, h *Hub, from uint64) []*messages.RunEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := h.Subscribe(from)
	defer sub.Close()
	var out []*messages.RunEvent
	for {
		evs, err := sub.Next(ctx, nil)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("subscription: %v (after %d events)", err, len(out))
		}
		out = append(out, evs...)
	}
}

// checkTranscript asserts the log's invariants: seqs 1..n without gaps, one
// terminal event at the end, stages in order, and every StageCompleted's
// output equal to the deltas streamed since its attempt started or was
// restarted. It returns the outputs by stage.
func checkTranscript(t *testing.T, evs []*messages.RunEvent, from uint64) map[messages.Stage]string {
	t.Helper()
	outputs := map[messages.Stage]string{}
	partial := map[messages.Stage]*strings.Builder{}
	lastStage := messages.Stage_STAGE_UNSPECIFIED
	for i, ev := range evs {
		if ev.Seq != from+uint64(i) {
			t.Fatalf("event %d has seq %d, want %d", i, ev.Seq, from+uint64(i))
		}
		if ev.Time == nil || ev.RunId == "" {
			t.Fatalf("event %d lacks time or run id: %v", i, ev)
		}
		if isTerminal(ev) != (i == len(evs)-1) {
			t.Fatalf("terminal event at %d of %d: %v", i, len(evs), ev)
		}
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			if k.StageStarted.Stage < lastStage {
				t.Fatalf("stage %v started after %v", k.StageStarted.Stage, lastStage)
			}
			lastStage = k.StageStarted.Stage
			partial[lastStage] = &strings.Builder{}
		case *messages.RunEvent_TokenDelta:
			if k.TokenDelta.Stage != lastStage {
				t.Fatalf("delta for %v while %v runs", k.TokenDelta.Stage, lastStage)
			}
			partial[lastStage].WriteString(k.TokenDelta.Text)
		case *messages.RunEvent_StageRestarted:
			if b := partial[k.StageRestarted.Stage]; b != nil {
				b.Reset()
			}
		case *messages.RunEvent_StageCompleted:
			s := k.StageCompleted.Stage
			if b := partial[s]; b == nil || b.String() != k.StageCompleted.Output {
				t.Fatalf("%v: output differs from its streamed deltas", s)
			}
			if k.StageCompleted.Output == "" || k.StageCompleted.Usage.GetCompletionTokens() <= 0 {
				t.Fatalf("%v completed with no output or usage: %v", s, k.StageCompleted)
			}
			outputs[s] = k.StageCompleted.Output
		}
	}
	return outputs
}

func terminal(evs []*messages.RunEvent) *messages.RunEvent { return evs[len(evs)-1] }

func TestRunCompletesAllStages(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "How do Go channels work?", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	outputs := checkTranscript(t, evs, 1)
	if len(outputs) != 4 {
		t.Fatalf("want 4 stage outputs, got %d", len(outputs))
	}
	done := terminal(evs).GetRunCompleted()
	if done == nil || done.Answer != outputs[messages.Stage_STAGE_CURATOR] {
		t.Fatalf("run should complete with the curator's output as answer: %v", terminal(evs))
	}
	if done.Usage.GetCompletionTokens() < 4 {
		t.Fatalf("run usage too small: %v", done.Usage)
	}
	// Each stage ran once, on its configured model.
	var started []string
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil {
			started = append(started, stageName(s.Stage)+"/"+s.Model)
		}
	}
	if got := strings.Join(started, " "); got != "generator/g refiner/r validator/v curator/c" {
		t.Fatalf("stages started: %s", got)
	}
	// A replay from the middle returns exactly the tail.
	tail := collect(t, h, 10)
	if len(tail) != len(evs)-9 || tail[0] != evs[9] {
		t.Fatalf("replay from seq 10 returned %d events, want %d", len(tail), len(evs)-9)
	}
	if got := testutil.ToFloat64(e.metrics.runsEnded.WithLabelValues("instant", "completed")); got != 1 {
		t.Fatalf("runs completed metric = %v", got)
	}
	_ = reg
}

func TestRunsAreDeterministicForASeed(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	answer := func(seed int64) string {
		h, err := e.StartRun(RunRequest{Profile: "instant", Query: "Why is the sky blue?", Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return terminal(collect(t, h, 1)).GetRunCompleted().GetAnswer()
	}
	a, b, c := answer(42), answer(42), answer(43)
	if a != b {
		t.Fatal("same seed gave different answers")
	}
	if a == c {
		t.Fatal("different seeds gave the same answer")
	}
}

func TestRetryThenFallback(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Profile: "fallback", Query: "q", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run should complete on the fallback: %v", terminal(evs))
	}
	var gen []string
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_GENERATOR {
			gen = append(gen, s.Model)
			if s.Attempt != int32(len(gen)) || s.Fallback != (s.Model == "backup") {
				t.Fatalf("attempt numbering/fallback flag wrong: %v", s)
			}
		}
	}
	if got := strings.Join(gen, ","); got != "primary,primary,primary,backup" {
		t.Fatalf("generator attempts = %s, want three on primary then the fallback", got)
	}
	if got := testutil.ToFloat64(e.metrics.providerErrors.WithLabelValues("broken", "server")); got != 3 {
		t.Fatalf("provider error metric = %v, want 3", got)
	}
	_ = reg
}

func TestRunFailsWithClearReasonWhenFallbackFails(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Profile: "doomed", Query: "q", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	f := terminal(evs).GetRunFailed()
	if f == nil {
		t.Fatalf("want RunFailed, got %v", terminal(evs))
	}
	if f.Stage != messages.Stage_STAGE_REFINER || f.Code != "server" || !strings.Contains(f.Reason, "Refiner failed after 6 attempts") {
		t.Fatalf("unclear failure: %+v", f)
	}
	// The generator's work is in the log; nothing ran after the refiner.
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil && s.Stage > messages.Stage_STAGE_REFINER {
			t.Fatalf("stage %v started after the refiner failed", s.Stage)
		}
	}
}

func TestNonRetryableErrorSkipsRetries(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, _ := e.StartRun(RunRequest{Profile: "noretry", Query: "q", Seed: 1})
	evs := collect(t, h, 1)
	f := terminal(evs).GetRunFailed()
	if f == nil || f.Code != "auth" || !strings.Contains(f.Reason, "after 1 attempts") {
		t.Fatalf("an auth error with no fallback should fail at once: %v", terminal(evs))
	}
}

func TestMidStreamFailureRestartsStage(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, _ := e.StartRun(RunRequest{Profile: "cut", Query: "q", Seed: 1})
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	restarts := 0
	for _, ev := range evs {
		if r := ev.GetStageRestarted(); r != nil {
			restarts++
			if r.Stage != messages.Stage_STAGE_GENERATOR || !strings.Contains(r.Reason, "after 5 tokens") {
				t.Fatalf("restart: %v", r)
			}
		}
	}
	if restarts != 3 || terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("want 3 restarts then completion on the fallback, got %d restarts, end %v", restarts, terminal(evs))
	}
}

func TestHungAndStalledProvidersTimeOut(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) {
		c.Timeouts = Timeouts{FirstToken: 30 * time.Millisecond, Stall: 30 * time.Millisecond}
	})
	h, _ := e.StartRun(RunRequest{Profile: "hang", Query: "q", Seed: 1})
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	f := terminal(evs).GetRunFailed()
	if f == nil || f.Code != "timeout" || !strings.Contains(f.Reason, "stalled") {
		t.Fatalf("want a timeout failure after the stalled fallback, got %v", terminal(evs))
	}
	restarts := 0
	for _, ev := range evs {
		if ev.GetStageRestarted() != nil {
			restarts++
		}
	}
	if restarts != 2 { // the staller streamed 3 tokens on its first two attempts; the last gives up
		t.Fatalf("want 2 restarts from the stalled fallback, got %d", restarts)
	}
}

func TestCancelStopsRun(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, _ := e.StartRun(RunRequest{Profile: "slow", Query: "q", Seed: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := h.Subscribe(1)
	for seen := 0; seen < 5; {
		evs, err := sub.Next(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		seen += len(evs)
	}
	sub.Close()
	if err := e.Cancel(h.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	evs := h.Events(1)
	if c := terminal(evs).GetRunCancelled(); c == nil || c.Reason != "test" {
		t.Fatalf("want RunCancelled, got %v", terminal(evs))
	}
	n := len(evs)
	// Nothing is logged after the cancel, even though the simulator had
	// thousands of tokens left.
	deadline := time.Now().Add(100 * time.Millisecond)
	for time.Now().Before(deadline) {
		if len(h.Events(1)) != n {
			t.Fatal("events arrived after RunCancelled")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := e.Cancel(h.RunID, "again"); !errors.Is(err, ErrRunFinished) {
		t.Fatalf("cancel of an ended run: %v, want ErrRunFinished", err)
	}
	if _, err := e.Hub("run_nope"); !errors.Is(err, ErrUnknownRun) {
		t.Fatalf("unknown run: %v", err)
	}
}

func TestResumeKeepsFinishedStages(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, _ := e.StartRun(RunRequest{Profile: "instant", Query: "What is a mutex?", Seed: 9})
	full := collect(t, h, 1)
	// Cut the log inside the validator: after its StageStarted and 3 deltas.
	cut := 0
	for i, ev := range full {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_VALIDATOR {
			cut = i + 4
			break
		}
	}
	prior := full[:cut]
	start := &messages.StartRun{RunId: "run_resumed", Profile: "instant", Query: "What is a mutex?", Epoch: 2,
		Options: &messages.RunOptions{Seed: 9}, PriorEvents: prior}
	h2, err := e.Resume(start)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h2, 1)
	for i := range prior {
		if evs[i] != prior[i] {
			t.Fatalf("resumed log changed prior event %d", i)
		}
	}
	rest := evs[len(prior):]
	if r := rest[0].GetStageRestarted(); r == nil || r.Stage != messages.Stage_STAGE_VALIDATOR {
		t.Fatalf("resumed run should first restart the validator, got %v", rest[0])
	}
	for _, ev := range rest {
		if ev.Epoch != 2 {
			t.Fatalf("resumed event with epoch %d", ev.Epoch)
		}
		if s := ev.GetStageStarted(); s != nil && s.Stage < messages.Stage_STAGE_VALIDATOR {
			t.Fatalf("finished stage %v was recomputed", s.Stage)
		}
	}
	outputs := checkTranscript(t, evs, 1)
	// Deterministic seed: the resumed run reaches the same answer.
	if terminal(evs).GetRunCompleted().GetAnswer() != terminal(full).GetRunCompleted().GetAnswer() ||
		outputs[messages.Stage_STAGE_GENERATOR] == "" {
		t.Fatal("resumed run's answer differs from the original's")
	}
	if _, err := e.Resume(&messages.StartRun{RunId: "run_x", Profile: "instant", Epoch: 1, PriorEvents: prior}); err == nil {
		t.Fatal("Resume must refuse an epoch that is not above the log's")
	}
}

func TestCoordinatorServesSubscribe(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, _ := e.StartRun(RunRequest{Profile: "slow", Query: "q", Seed: 1})
	got := make(chan *messages.RunEvent, 1<<14)
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
	e.System().Root.Send(h.Coordinator(), &messages.Subscribe{RunId: h.RunID, FromSeq: 1, Subscriber: refOf(sink)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for want := uint64(1); want <= 20; want++ {
		select {
		case ev := <-got:
			if ev.Seq != want {
				t.Fatalf("subscriber got seq %d, want %d", ev.Seq, want)
			}
		case <-ctx.Done():
			t.Fatal("subscriber starved")
		}
	}
	_ = e.Cancel(h.RunID, "done")
}

// A stage whose model's context window cannot hold all earlier outputs gets
// them trimmed (longest first, never the question), and StageStarted says so.
func TestPromptsAreFittedToTheContextWindow(t *testing.T) {
	e, _, _ := newProfileEngine(t, `
providers:
  sim: {kind: sim, sim: {output_tokens: 600}}
profiles:
  narrow:
    provider: sim
    stages:
      generator: {model: gpt-4o, max_tokens: 600}
      refiner: {model: gpt-4o, max_tokens: 600}
      validator: {model: gpt-4o, max_tokens: 600}
      curator: {model: gpt-4o, max_tokens: 600, context_window: 1200}
`, nil)
	h, err := e.StartRun(RunRequest{Profile: "narrow", Query: "Why do distributed systems need consensus?", Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	var curator *messages.StageStarted
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_CURATOR {
			curator = s
		}
	}
	if curator == nil || !strings.Contains(curator.Note, "trimmed the") || curator.PromptTokens > 1200-600 {
		t.Fatalf("the curator's prompt was not fitted: %+v", curator)
	}
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run: %v", terminal(evs))
	}

	// A question that cannot fit even alone fails the run clearly.
	h, _ = e.StartRun(RunRequest{Profile: "narrow", Query: strings.Repeat("consensus ", 700), Seed: 5})
	evs = collect(t, h, 1)
	if f := terminal(evs).GetRunFailed(); f == nil || f.Code != "prompt_too_long" {
		t.Fatalf("want prompt_too_long, got %v", terminal(evs))
	}
}

// A coordinator that disappears mid-run (here: stopped from outside) is
// replaced: the run resumes from the hub's log with a higher epoch and
// completes, without recomputing finished stages.
func TestLostCoordinatorIsReplaced(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Profile: "slow", Query: "q", Seed: 2, MaxTokens: 30})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sub := h.Subscribe(1)
	defer sub.Close()
	old := h.Coordinator()
	stopped := false
	var evs []*messages.RunEvent
	for {
		batch, err := sub.Next(ctx, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, batch...)
		for _, ev := range batch {
			if d := ev.GetTokenDelta(); d != nil && d.Stage == messages.Stage_STAGE_REFINER && !stopped {
				stopped = true
				e.System().Root.Stop(old)
			}
		}
	}
	checkTranscript(t, evs, 1)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run should complete on a new coordinator: %v", terminal(evs))
	}
	restarts, generators := 0, 0
	for _, ev := range evs {
		if r := ev.GetStageRestarted(); r != nil && r.Stage == messages.Stage_STAGE_REFINER {
			restarts++
		}
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_GENERATOR {
			generators++
		}
	}
	if restarts != 1 || generators != 1 || terminal(evs).Epoch != 2 {
		t.Fatalf("restarts %d, generator runs %d, final epoch %d", restarts, generators, terminal(evs).Epoch)
	}
}

// Hedging: a primary with no first token by the hedge delay races the
// fallback; the fallback streams first and becomes the stage's attempt,
// announced by its own StageStarted; the slow primary is stopped.
func TestHedgedStageKeepsTheFirstToStream(t *testing.T) {
	e, _, _ := newProfileEngine(t, `
providers:
  slowstart: {kind: sim, sim: {ttft: 3s, output_tokens: 20}}
  quick:     {kind: sim, sim: {output_tokens: 20}}
profiles:
  hedged:
    provider: quick
    stages:
      generator: {provider: slowstart, model: big, hedge: true, fallback: {provider: quick, model: small}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
`, func(c *Config) {
		c.HedgeWait = 50 * time.Millisecond
	})
	h, err := e.StartRun(RunRequest{Profile: "hedged", Query: "q", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	var gen []*messages.StageStarted
	for _, ev := range evs {
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_GENERATOR {
			gen = append(gen, s)
		}
		if c := ev.GetStageCompleted(); c != nil && c.Stage == messages.Stage_STAGE_GENERATOR && c.Model != "small" {
			t.Fatalf("the generator completed on %s, want the hedge's model", c.Model)
		}
	}
	if len(gen) != 2 || gen[0].Model != "big" || gen[1].Model != "small" || !gen[1].Fallback || !strings.Contains(gen[1].Note, "hedged") {
		t.Fatalf("generator attempts: %v", gen)
	}
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run: %v", terminal(evs))
	}
	if got := testutil.ToFloat64(e.metrics.hedges.WithLabelValues("won")); got != 1 {
		t.Fatalf("hedges won: %v", got)
	}
	// The primary's provider request was stopped: its 3 s first token never came.
	if d := terminal(evs).GetTime().AsTime().Sub(evs[0].GetTime().AsTime()); d > 2*time.Second {
		t.Fatalf("the run waited for the slow primary (%v)", d)
	}
}

// A step with a TTFT budget starts its fallback at once — speculatively —
// when its primary's recent p95 TTFT is over the budget (measured live),
// and keeps whichever streams first; before there are enough samples it
// hedges after HedgeWait as usual.
func TestSpeculativeStartWhenPrimaryIsOverBudget(t *testing.T) {
	e, _, _ := newProfileEngine(t, `
providers:
  slowstart: {kind: sim, sim: {ttft: 150ms, output_tokens: 5}}
  quick:     {kind: sim, sim: {ttft: 1ms, output_tokens: 5}}
profiles:
  budget:
    provider: quick
    stages:
      generator: {provider: slowstart, model: big, hedge: true, ttft_budget: 50ms, fallback: {provider: quick, model: small}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
`, func(c *Config) {
		c.HedgeWait = time.Hour // no hedge while the primary's p95 is unknown
	})
	genModel := func(evs []*messages.RunEvent) string {
		for _, ev := range evs {
			if c := ev.GetStageCompleted(); c != nil && c.Stage == messages.Stage_STAGE_GENERATOR {
				return c.Model
			}
		}
		return ""
	}
	for s := int64(1); s <= hedgeMinSamples; s++ { // the primary's TTFTs: 150 ms, over the budget
		h, err := e.StartRun(RunRequest{Profile: "budget", Query: "q", Seed: s})
		if err != nil {
			t.Fatal(err)
		}
		if m := genModel(collect(t, h, 1)); m != "big" {
			t.Fatalf("warm-up run %d: the generator completed on %q, want the primary (no hedge yet)", s, m)
		}
	}
	if got := testutil.ToFloat64(e.metrics.hedges.WithLabelValues("speculative")); got != 0 {
		t.Fatalf("speculative starts before the p95 was known: %v", got)
	}
	h, err := e.StartRun(RunRequest{Profile: "budget", Query: "q", Seed: 100})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	if m := genModel(evs); m != "small" {
		t.Fatalf("the generator completed on %q, want the fallback started at once", m)
	}
	if got := testutil.ToFloat64(e.metrics.hedges.WithLabelValues("speculative")); got != 1 {
		t.Fatalf("speculative starts: %v, want 1", got)
	}
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run: %v", terminal(evs))
	}
	// The loser (the primary, cancelled) is billed: its prompt, with the
	// step, at its model; the run's usage counts it.
	var sum int64
	var gen *messages.StageCompleted
	for _, ev := range evs {
		if c := ev.GetStageCompleted(); c != nil {
			sum += c.GetUsage().GetTotalTokens() + c.GetHedgeUsage().GetTotalTokens()
			if c.Stage == messages.Stage_STAGE_GENERATOR {
				gen = c
			}
		}
	}
	if hu := gen.GetHedgeUsage(); hu.GetPromptTokens() <= 0 || hu.GetCompletionTokens() != 0 || gen.GetHedgeModel() != "big" {
		t.Fatalf("the generator's hedge usage %v on %q; want the losing primary's prompt, on big", hu, gen.GetHedgeModel())
	}
	if got := terminal(evs).GetRunCompleted().GetUsage().GetTotalTokens(); got != sum {
		t.Fatalf("run usage %d tokens, want the steps' %d (the loser's prompt included)", got, sum)
	}
}
