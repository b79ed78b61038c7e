package actors

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// strategyProfiles runs every strategy on the simulator, with providers
// that fail, hang or crawl for the straggler and failure paths.
const strategyProfiles = `
providers:
  sim:      {kind: sim, sim: {output_tokens: 40}}
  paced:    {kind: sim, sim: {itl: 2ms, output_tokens: 60}}
  authfail: {kind: sim, sim: {output_tokens: 40, error_rate: 1, error_kind: auth}}
  broken:   {kind: sim, sim: {output_tokens: 40, error_rate: 1, error_kind: server}}
  hang:     {kind: sim, sim: {output_tokens: 40, hang_rate: 1}}
  slow:     {kind: sim, sim: {itl: 20ms, output_tokens: 5000}}
profiles:
  moa:
    strategy: moa
    provider: paced
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
  moa2:
    strategy: moa
    provider: sim
    layers: 2
    proposers: [{model: a}, {model: b}]
    aggregator: {model: d}
  council:
    strategy: council
    provider: sim
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {model: d}
  vote:
    strategy: vote
    provider: sim
    samples: [{model: a}, {model: b}]
    count: 5
  judged:
    strategy: vote
    provider: sim
    samples: [{model: a}]
    count: 3
    method: judge
    judge: {model: j}
  deadmember:
    strategy: council
    provider: sim
    members: [{model: a}, {provider: authfail, model: dead}, {model: c}]
    chairman: {model: d}
    min_members: 2
  deadchair:
    strategy: council
    provider: sim
    members: [{model: a}, {model: b}, {model: c}]
    chairman: {provider: broken, model: chair, fallback: {provider: broken, model: chair2}}
  straggler:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {provider: hang, model: stuck}, {model: c}]
    aggregator: {model: d}
    min_proposers: 2
    step_deadline: 300ms
  toofew:
    strategy: moa
    provider: authfail
    proposers: [{model: a}, {model: b}, {provider: sim, model: c}]
    aggregator: {provider: sim, model: d}
    min_proposers: 2
  slowmoa:
    strategy: moa
    provider: slow
    proposers: [{model: a}, {model: b}, {model: c}]
    aggregator: {model: d}
`

// stepTranscript checks a strategy run's log — seqs without gaps, one
// terminal event, every step's output equal to its streamed deltas, no
// delta for a step that is not under way — and returns the outputs by
// step id and each step's first-delta and completion seqs.
type stepLog struct {
	outputs   map[string]string
	firstSeq  map[string]uint64
	doneSeq   map[string]uint64
	started   []string // step ids in StageStarted order (attempts included)
	skipped   map[string]*messages.StepSkipped
	notes     []*messages.StepNote
	rankings  []*messages.Ranking
	finalStep string
}

func stepTranscript(t *testing.T, evs []*messages.RunEvent) stepLog {
	t.Helper()
	l := stepLog{outputs: map[string]string{}, firstSeq: map[string]uint64{}, doneSeq: map[string]uint64{}, skipped: map[string]*messages.StepSkipped{}}
	partial := map[string]*strings.Builder{}
	for i, ev := range evs {
		if ev.Seq != uint64(i)+1 {
			t.Fatalf("event %d has seq %d", i, ev.Seq)
		}
		if isTerminal(ev) != (i == len(evs)-1) {
			t.Fatalf("terminal event at %d of %d: %v", i, len(evs), ev)
		}
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			id := stepOf(k.StageStarted.Step, k.StageStarted.Stage)
			if _, done := l.outputs[id]; done {
				t.Fatalf("step %s started again after it completed", id)
			}
			partial[id] = &strings.Builder{}
			l.started = append(l.started, id)
			if k.StageStarted.Final {
				l.finalStep = id
			}
		case *messages.RunEvent_TokenDelta:
			id := stepOf(k.TokenDelta.Step, k.TokenDelta.Stage)
			b := partial[id]
			if b == nil {
				t.Fatalf("delta for %s, which is not under way", id)
			}
			if _, ok := l.firstSeq[id]; !ok {
				l.firstSeq[id] = ev.Seq
			}
			b.WriteString(k.TokenDelta.Text)
		case *messages.RunEvent_StageRestarted:
			if b := partial[stepOf(k.StageRestarted.Step, k.StageRestarted.Stage)]; b != nil {
				b.Reset()
			}
		case *messages.RunEvent_StageCompleted:
			id := stepOf(k.StageCompleted.Step, k.StageCompleted.Stage)
			if b := partial[id]; b == nil || b.String() != k.StageCompleted.Output {
				t.Fatalf("%s: output differs from its streamed deltas", id)
			}
			l.outputs[id] = k.StageCompleted.Output
			l.doneSeq[id] = ev.Seq
			delete(partial, id)
		case *messages.RunEvent_StepSkipped:
			l.skipped[k.StepSkipped.Step] = k.StepSkipped
			delete(partial, k.StepSkipped.Step)
		case *messages.RunEvent_StepNote:
			l.notes = append(l.notes, k.StepNote)
		case *messages.RunEvent_Ranking:
			l.rankings = append(l.rankings, k.Ranking)
		}
	}
	return l
}

func runStrategy(t *testing.T, e *Engine, profile string, seed int64) ([]*messages.RunEvent, stepLog) {
	t.Helper()
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: profile, Query: "How do I choose a database index?", Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	return evs, stepTranscript(t, evs)
}

func TestMoARunsProposersAtOnce(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "moa", 3)
	plan := evs[0].GetRunPlanned()
	if plan == nil || plan.Strategy != "moa" || len(plan.Steps) != 4 || !plan.Steps[3].Final || plan.Steps[3].Step != "aggregator" {
		t.Fatalf("first event %v, want the run's plan", evs[0])
	}
	done := terminal(evs).GetRunCompleted()
	if done == nil || done.Answer != l.outputs["aggregator"] || l.finalStep != "aggregator" {
		t.Fatalf("want the aggregator's output as the answer: %v", terminal(evs))
	}
	// The three proposers stream at once: each one's first token comes
	// before any of them completes, and the aggregator starts after all.
	for _, p := range []string{"p1.1", "p1.2", "p1.3"} {
		for _, q := range []string{"p1.1", "p1.2", "p1.3"} {
			if l.firstSeq[p] == 0 || l.firstSeq[p] > l.doneSeq[q] {
				t.Errorf("%s's first token (seq %d) came after %s completed (seq %d): not in parallel", p, l.firstSeq[p], q, l.doneSeq[q])
			}
		}
		if l.firstSeq["aggregator"] < l.doneSeq[p] {
			t.Errorf("aggregator streamed before %s completed", p)
		}
	}
	if !slices.Equal(l.started, []string{"p1.1", "p1.2", "p1.3", "aggregator"}) {
		t.Errorf("steps started %v", l.started)
	}
	// Three different texts: each step has its own seed.
	if l.outputs["p1.1"] == l.outputs["p1.2"] || l.outputs["p1.2"] == l.outputs["p1.3"] {
		t.Error("proposers wrote the same text")
	}
	if done.Usage.GetCompletionTokens() < 4 {
		t.Errorf("usage %v", done.Usage)
	}
}

func TestMoALayersReadThePreviousLayer(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "moa2", 4)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run ended %v", terminal(evs))
	}
	for _, p := range []string{"p2.1", "p2.2"} {
		if l.firstSeq[p] < l.doneSeq["p1.1"] || l.firstSeq[p] < l.doneSeq["p1.2"] {
			t.Errorf("%s streamed before layer 1 finished", p)
		}
	}
}

func TestCouncilRanksThenTheChairmanAnswers(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "council", 5)
	done := terminal(evs).GetRunCompleted()
	if done == nil || done.Answer != l.outputs["chairman"] {
		t.Fatalf("run ended %v", terminal(evs))
	}
	var perRanker, aggregate int
	for _, r := range l.rankings {
		if r.Aggregate {
			aggregate++
			if len(r.Ranked) != 3 || r.Ranked[0].AverageRank > r.Ranked[2].AverageRank || r.Ranked[0].Votes != 3 {
				t.Errorf("aggregate ranking %v", r)
			}
			continue
		}
		perRanker++
		if len(r.Ranked) != 3 {
			t.Errorf("ranking of %s: %v", r.Step, r)
		}
	}
	if perRanker != 3 || aggregate != 1 || len(l.notes) != 0 {
		t.Errorf("%d rankings and %d aggregates, notes %v; want 3 and 1, none", perRanker, aggregate, l.notes)
	}
	for _, r := range []string{"r1", "r2", "r3"} {
		for _, m := range []string{"m1", "m2", "m3"} {
			if l.firstSeq[r] < l.doneSeq[m] {
				t.Errorf("%s ranked before %s answered", r, m)
			}
		}
	}
}

func TestVoteTalliesTheMajorityOrTheJudgesPick(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	for _, profile := range []string{"vote", "judged"} {
		evs, l := runStrategy(t, e, profile, 6)
		done := terminal(evs).GetRunCompleted()
		if done == nil || l.finalStep != "answer" || done.Answer != l.outputs["answer"] {
			t.Fatalf("%s: run ended %v", profile, terminal(evs))
		}
		// The answer is one sample's text, word for word.
		var samples []string
		for id, out := range l.outputs {
			if strings.HasPrefix(id, "s") {
				samples = append(samples, out)
			}
		}
		if !slices.Contains(samples, done.Answer) {
			t.Errorf("%s: the answer is none of the %d samples", profile, len(samples))
		}
		var note string
		for _, ev := range evs {
			if s := ev.GetStageStarted(); s != nil && s.Step == "answer" {
				note = s.Note
			}
		}
		want := "majority:"
		if profile == "judged" {
			want = "the judge picked"
		}
		if !strings.Contains(note, want) {
			t.Errorf("%s: the answer step's note %q does not say %q", profile, note, want)
		}
	}
}

func TestAFailedMemberIsLeftOutNotFatal(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "deadmember", 7)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("one dead member of three failed the run: %v", terminal(evs))
	}
	for _, id := range []string{"m2", "r2"} {
		s := l.skipped[id]
		if s == nil || s.Code != "failed" || !strings.Contains(s.Reason, "dead") && !strings.Contains(s.Reason, "auth") {
			t.Errorf("%s: skipped %v, want a failure naming why", id, s)
		}
	}
	// The rankers saw two answers; the chairman was told who is missing.
	for _, r := range l.rankings {
		if len(r.Ranked) != 2 {
			t.Errorf("ranking %v, want two answers", r)
		}
	}
}

func TestChairmanFailureFallsBackToTheBestRankedAnswer(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "deadchair", 8)
	done := terminal(evs).GetRunCompleted()
	if done == nil {
		t.Fatalf("run ended %v", terminal(evs))
	}
	if l.skipped["chairman"] == nil || l.finalStep != "answer" {
		t.Fatalf("chairman skipped %v, final step %q", l.skipped["chairman"], l.finalStep)
	}
	var agg *messages.Ranking
	for _, r := range l.rankings {
		if r.Aggregate {
			agg = r
		}
	}
	if agg == nil || done.Answer != l.outputs[agg.Ranked[0].Step] {
		t.Fatalf("answer is not the best-ranked member's (%v)", agg)
	}
	if len(l.notes) != 1 || l.notes[0].Kind != "answer_fallback" || !strings.Contains(l.notes[0].Message, "chairman failed") {
		t.Errorf("notes %v", l.notes)
	}
}

func TestAStragglerIsLeftOutAtItsDeadline(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, l := runStrategy(t, e, "straggler", 9)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run ended %v", terminal(evs))
	}
	s := l.skipped["p1.2"]
	if s == nil || s.Code != "deadline" || !strings.Contains(s.Reason, "300ms") {
		t.Fatalf("stalled proposer: %v", s)
	}
	if _, ok := l.outputs["aggregator"]; !ok {
		t.Fatal("the aggregator did not run")
	}
}

func TestTooFewProposersFailTheRunNamingThem(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	evs, _ := runStrategy(t, e, "toofew", 10)
	f := terminal(evs).GetRunFailed()
	if f == nil {
		t.Fatalf("run ended %v", terminal(evs))
	}
	for _, want := range []string{"aggregator needs at least 2 of its 3 inputs", "p1.1 (a)", "p1.2 (b)"} {
		if !strings.Contains(f.Reason, want) {
			t.Errorf("reason %q does not say %q", f.Reason, want)
		}
	}
	if f.Code != "auth" {
		t.Errorf("code %q, want the failures' kind (auth)", f.Code)
	}
}

func TestCancelStopsEveryParallelStep(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	h, err := e.StartRun(RunRequest{Profile: "slowmoa", Query: "q", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := h.Subscribe(1)
	streaming := map[string]bool{}
	for len(streaming) < 3 {
		evs, err := sub.Next(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if d := ev.GetTokenDelta(); d != nil {
				streaming[d.Step] = true
			}
		}
	}
	sub.Close()
	if err := e.Cancel(h.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	evs := h.Events(1)
	c := terminal(evs).GetRunCancelled()
	if c == nil {
		t.Fatalf("want RunCancelled, got %v", terminal(evs))
	}
	// All three streams were billed and nothing is logged after the cancel.
	if c.Usage.GetCompletionTokens() < 3 {
		t.Errorf("cancel billed %v for three streaming steps", c.Usage)
	}
	n := len(evs)
	time.Sleep(100 * time.Millisecond)
	if len(h.Events(1)) != n {
		t.Fatal("events arrived after RunCancelled")
	}
}

func TestResumeKeepsFinishedParallelSteps(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	h, _ := e.StartRun(RunRequest{Profile: "moa", Query: "What is a mutex?", Seed: 11})
	full := collect(t, h, 1)
	l := stepTranscript(t, full)
	// Cut the log just after the first proposer completed: the others are
	// under way.
	first := uint64(len(full))
	for _, p := range []string{"p1.1", "p1.2", "p1.3"} {
		first = min(first, l.doneSeq[p])
	}
	prior := full[:first]
	done := stepTranscript(t, append(slices.Clone(prior), &messages.RunEvent{Seq: first + 1, Kind: &messages.RunEvent_RunCancelled{RunCancelled: &messages.RunCancelled{}}}))
	if len(done.outputs) != 1 {
		t.Fatalf("the cut holds %d finished proposers, want 1", len(done.outputs))
	}
	var finished string
	for id := range done.outputs {
		finished = id
	}
	h2, err := e.Resume(&messages.StartRun{RunId: "run_moa_resumed", Profile: "moa", Query: "What is a mutex?", Epoch: 2,
		Options: &messages.RunOptions{Seed: 11}, PriorEvents: prior})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h2, 1)
	l2 := stepTranscript(t, evs)
	restarted := map[string]bool{}
	for _, ev := range evs[len(prior):] {
		if r := ev.GetStageRestarted(); r != nil {
			restarted[r.Step] = true
		}
		if s := ev.GetStageStarted(); s != nil && s.Step == finished {
			t.Fatalf("finished proposer %s was recomputed", finished)
		}
	}
	if len(restarted) != 2 || restarted[finished] {
		t.Errorf("restarted %v, want the two unfinished proposers", restarted)
	}
	if terminal(evs).GetRunCompleted().GetAnswer() != terminal(full).GetRunCompleted().GetAnswer() || l2.outputs[finished] != l.outputs[finished] {
		t.Error("the resumed run's answer differs (same seed)")
	}
}

func TestStrategyRolesHaveTokenMetrics(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, nil)
	runStrategy(t, e, "vote", 12)
	for _, r := range []stagework.Stage{stagework.StageSample, stagework.StageTally} {
		if got := testutil.ToFloat64(e.metrics.tokensStreamed.WithLabelValues(r.String())); got <= 0 {
			t.Errorf("qlc_tokens_streamed_total{stage=%q} = %v after a vote", r, got)
		}
	}
}

// With two stage slots, a three-proposer run's third proposer waits for a
// slot (one process: no other node to offer it to): never more than two
// steps stream at once, and the run completes.
func TestStageSlotsBoundParallelSteps(t *testing.T) {
	e, _, _ := newProfileEngine(t, strategyProfiles, func(c *Config) { c.StageSlots = 2 })
	evs, l := runStrategy(t, e, "moa", 13)
	if terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("run ended %v", terminal(evs))
	}
	// A step holds its slot from its first delta (at the latest) to its
	// completion.
	open, most := 0, 0
	for _, ev := range evs {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_TokenDelta:
			if l.firstSeq[k.TokenDelta.Step] == ev.Seq {
				open++
				most = max(most, open)
			}
		case *messages.RunEvent_StageCompleted:
			open--
		}
	}
	if most != 2 {
		t.Errorf("%d steps streamed at once with 2 stage slots", most)
	}
	if got := testutil.ToFloat64(e.metrics.stepOffers.WithLabelValues("queued")); got < 1 {
		t.Errorf("no step queued for a slot (queued = %v)", got)
	}
}
