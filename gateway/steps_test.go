package gateway

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// wireOf encodes ev as the SSE event a reader gets, and its JSON, failing
// the test if the event passes max (framing included) or is not JSON.
func wireOf(t *testing.T, ev *messages.RunEvent, max int) (wire []byte, data map[string]any) {
	t.Helper()
	evs := []*messages.RunEvent{ev}
	sp := spanner{evs: evs, budget: textBudget(max)}
	s, ok := sp.next()
	if !ok {
		t.Fatal("no span")
	}
	wire = appendSSEEvent(nil, evs, s, max)
	if len(wire) > max {
		t.Fatalf("bound %d: a %s event of %d bytes", max, eventType(ev), len(wire))
	}
	js := appendEventJSON(nil, evs, s, textBudget(max))
	if err := json.Unmarshal(js, &data); err != nil {
		t.Fatalf("invalid JSON %q: %v", js, err)
	}
	return wire, data
}

// largestPlan is the largest plan a profile can have: 16 proposers in 4
// layers and an aggregator (65 steps), every model name 128 bytes and
// every provider name 64 (the longest the configuration allows on the
// wire and in a profile file).
func largestPlan(t *testing.T) *messages.RunPlanned {
	t.Helper()
	var y strings.Builder
	prov := strings.Repeat("p", 64)
	fmt.Fprintf(&y, "providers:\n  %s: {kind: sim}\nprofiles:\n  big:\n    strategy: moa\n    provider: %s\n    layers: %d\n    proposers:\n", prov, prov, stagework.MaxLayers)
	for i := 0; i < stagework.MaxParallel; i++ {
		fmt.Fprintf(&y, "      - {model: %s%03d}\n", strings.Repeat("m", 125), i)
	}
	fmt.Fprintf(&y, "    aggregator: {model: %s}\n", strings.Repeat("a", 128))
	cfg, err := stagework.ParseConfig([]byte(y.String()))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Profile("big")
	return planOfProfile(p)
}

// planOfProfile is the RunPlanned a coordinator logs for p (as actors'
// planOf).
func planOfProfile(p *stagework.Profile) *messages.RunPlanned {
	plan := &messages.RunPlanned{Strategy: p.Strategy}
	for _, sp := range p.Stages {
		plan.Steps = append(plan.Steps, &messages.PlannedStep{Step: sp.StepID(), Stage: messages.Stage(sp.Stage), Model: sp.Model,
			Provider: sp.Provider, Inputs: sp.Inputs, MinInputs: int32(sp.MinInputs), Final: sp.Final, Layer: int32(sp.Layer)})
	}
	return plan
}

// TestRunPlannedFitsTheBound: the largest plan is one run_planned within
// every bound. At the default 16 KiB every step is in it (without inputs,
// names cut to 32 bytes); at the smallest bound it is cut and says so. The
// built-in profiles' plans come whole, inputs included.
func TestRunPlannedFitsTheBound(t *testing.T) {
	plan := largestPlan(t)
	if len(plan.Steps) != stagework.MaxParallel*stagework.MaxLayers+1 {
		t.Fatalf("the largest plan has %d steps", len(plan.Steps))
	}
	ev := &messages.RunEvent{Seq: math.MaxUint64, Kind: &messages.RunEvent_RunPlanned{RunPlanned: plan}}
	for _, max := range []int{MinMaxEventBytes, 4096, 8192, DefaultMaxEventBytes, 64 << 10} {
		wire, d := wireOf(t, ev, max)
		steps, _ := d["steps"].([]any)
		t.Logf("bound %d: %d bytes, %d steps, inputs_omitted %v, truncated %v", max, len(wire), len(steps), d["inputs_omitted"], d["truncated"])
		if d["strategy"] != "moa" || len(steps) == 0 {
			t.Fatalf("bound %d: %v", max, d)
		}
		if len(steps) < len(plan.Steps) && (d["truncated"] != true || d["step_count"] != float64(len(plan.Steps))) {
			t.Fatalf("bound %d: %d of %d steps, not marked truncated: %v", max, len(steps), len(plan.Steps), d)
		}
		for i, s := range steps {
			m := s.(map[string]any)
			if p := plan.Steps[i]; m["step"] != p.Step || m["stage"] != "proposer" && m["stage"] != "aggregator" || m["layer"] != float64(p.Layer) || m["min_inputs"] != float64(p.MinInputs) {
				t.Fatalf("bound %d: step %d is %v, planned %v", max, i, m, p)
			}
			if _, ok := m["inputs"]; ok == (d["inputs_omitted"] == true) {
				t.Fatalf("bound %d: step %v, inputs_omitted %v", max, m, d["inputs_omitted"])
			}
		}
		if max >= DefaultMaxEventBytes && len(steps) != len(plan.Steps) {
			t.Errorf("bound %d: the largest plan is cut to %d steps", max, len(steps))
		}
		if max == 64<<10 && d["inputs_omitted"] == true {
			t.Errorf("bound %d: inputs omitted from a %d-byte plan", max, len(wire))
		}
	}
	for _, name := range []string{"moa", "council", "vote"} {
		p, err := stagework.DefaultConfig().Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		_, d := wireOf(t, &messages.RunEvent{Seq: 1, Kind: &messages.RunEvent_RunPlanned{RunPlanned: planOfProfile(p)}}, DefaultMaxEventBytes)
		steps := d["steps"].([]any)
		if len(steps) != len(p.Stages) || d["inputs_omitted"] != nil {
			t.Fatalf("%s: %v", name, d)
		}
		for i, s := range steps {
			got := s.(map[string]any)["inputs"].([]any)
			if len(got) != len(p.Stages[i].Inputs) {
				t.Fatalf("%s: step %v, inputs %v", name, s, p.Stages[i].Inputs)
			}
		}
	}
}

// TestStepEventsFitTheBound: the other new events and the stage events
// with their step, at their largest, stay within every bound; what does
// not fit is cut and marked.
func TestStepEventsFitTheBound(t *testing.T) {
	var ranked []*messages.RankedStep
	for i := 0; i < stagework.MaxParallel; i++ {
		ranked = append(ranked, &messages.RankedStep{Step: fmt.Sprintf("m%d", i+1), Label: stagework.Label(i), AverageRank: 1 + float64(i)/3, Votes: math.MaxInt32})
	}
	worst := strings.Repeat("\x01", 300) // 6 bytes each escaped
	step := strings.Repeat(`"`, 100)
	usage := &messages.Usage{PromptTokens: math.MaxInt64, CompletionTokens: math.MaxInt64, TotalTokens: math.MaxInt64, Estimated: true}
	evs := []*messages.RunEvent{
		{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_AGGREGATOR, Step: step, Model: worst, Provider: worst,
			Attempt: math.MinInt32, Fallback: true, Final: true, PromptTokens: math.MaxInt64, Note: strings.Repeat("n\n", 20000)}}},
		{Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{Stage: messages.Stage_STAGE_AGGREGATOR, Step: step, Model: worst, Usage: usage}}},
		{Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{Stage: messages.Stage_STAGE_MEMBER, Step: step, Reason: worst + worst, Usage: usage}}},
		{Kind: &messages.RunEvent_StepSkipped{StepSkipped: &messages.StepSkipped{Stage: messages.Stage_STAGE_PROPOSER, Step: step, Reason: strings.Repeat(worst, 100), Code: worst, Usage: usage}}},
		{Kind: &messages.RunEvent_Ranking{Ranking: &messages.Ranking{Step: step, Ranked: ranked}}},
		{Kind: &messages.RunEvent_Ranking{Ranking: &messages.Ranking{Aggregate: true, Ranked: ranked}}},
		{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{Step: step, Kind: worst, Message: strings.Repeat("m ", 1000), Raw: strings.Repeat("é\x01", 700)}}},
		{Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Stage: messages.Stage_STAGE_CHAIRMAN, Step: step, Reason: worst + worst, Code: worst, Usage: usage}}},
		{Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: messages.Stage_STAGE_PROPOSER, Step: step, Text: strings.Repeat(worst, 200), Tokens: math.MaxInt32}}},
	}
	for _, max := range []int{MinMaxEventBytes, 2048, DefaultMaxEventBytes} {
		for _, ev := range evs {
			ev.Seq = math.MaxUint64
			// Every span of it (a long delta is split into parts).
			sp := spanner{evs: []*messages.RunEvent{ev}, budget: textBudget(max)}
			for s, ok := sp.next(); ok; s, ok = sp.next() {
				wire := appendSSEEvent(nil, []*messages.RunEvent{ev}, s, max)
				if len(wire) > max {
					t.Fatalf("bound %d: a %s of %d bytes", max, eventType(ev), len(wire))
				}
				var d map[string]any
				if err := json.Unmarshal(appendEventJSON(nil, []*messages.RunEvent{ev}, s, textBudget(max)), &d); err != nil {
					t.Fatalf("bound %d: %s: %v", max, eventType(ev), err)
				}
				if r, ok := d["ranked"].([]any); ok && len(r) < len(ranked) && d["truncated"] != true {
					t.Fatalf("bound %d: %d of %d ranked, not marked truncated", max, len(r), len(ranked))
				}
				if max == DefaultMaxEventBytes && d["truncated"] != nil {
					t.Fatalf("bound %d: %s truncated", max, eventType(ev))
				}
				if _, ok := d["step"]; !ok && d["aggregate"] != true {
					t.Fatalf("%s without a step: %v", eventType(ev), d)
				}
			}
		}
	}
	// The overhead of the fullest stage_started (everything but its note)
	// is within wireOverhead, as textBudget assumes.
	noNote := &messages.RunEvent{Seq: math.MaxUint64, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_AGGREGATOR,
		Step: step, Model: worst, Provider: worst, Attempt: math.MinInt32, Fallback: true, Final: true, PromptTokens: math.MaxInt64}}}
	wire, _ := wireOf(t, noNote, DefaultMaxEventBytes)
	if n := len(wire) + len(`,"note":""`); n > wireOverhead {
		t.Fatalf("stage_started overhead %d bytes, over %d", n, wireOverhead)
	} else {
		t.Logf("stage_started overhead: %d bytes", n)
	}
}

// TestChainStageEventsNameTheirStep: a chain's events carry no step; on
// the wire their step is the stage's name, and final marks the curator.
func TestChainStageEventsNameTheirStep(t *testing.T) {
	ev := &messages.RunEvent{Seq: 3, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_CURATOR, Model: "c", Provider: "sim", Attempt: 1, Final: true}}}
	_, d := wireOf(t, ev, DefaultMaxEventBytes)
	if d["step"] != "curator" || d["stage"] != "curator" || d["final"] != true {
		t.Fatalf("curator started: %v", d)
	}
	ev = &messages.RunEvent{Seq: 4, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_GENERATOR, Model: "g", Attempt: 1}}}
	if _, d = wireOf(t, ev, DefaultMaxEventBytes); d["step"] != "generator" || d["final"] != nil {
		t.Fatalf("generator started: %v", d)
	}
	ev = &messages.RunEvent{Seq: 5, Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Reason: "r", Code: "c"}}}
	if _, d = wireOf(t, ev, DefaultMaxEventBytes); d["step"] != nil || d["stage"] != nil {
		t.Fatalf("a run that failed as a whole names a step: %v", d)
	}
}

func TestSplitAddsUp(t *testing.T) {
	for _, c := range []struct {
		total   int64
		weights []int64
		want    []int64
	}{
		{10, []int64{1, 1}, []int64{5, 5}},
		{10, []int64{0, 0, 0}, []int64{4, 3, 3}},
		{7, []int64{3, 0, 1}, []int64{6, 0, 1}},
		{5, []int64{-1, 2}, []int64{0, 5}},
		{0, []int64{1, 2}, []int64{0, 0}},
		{math.MaxInt64, []int64{math.MaxInt64, math.MaxInt64}, []int64{math.MaxInt64/2 + 1, math.MaxInt64 / 2}},
	} {
		got := split(c.total, c.weights)
		if !slices.Equal(got, c.want) {
			t.Errorf("split(%d, %v) = %v, want %v", c.total, c.weights, got, c.want)
		}
	}
}
