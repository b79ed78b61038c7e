package actors

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// healthProfiles: a chain whose generator chooses among three models of
// quality 3: flaky (cheapest, on an endpoint that always fails, breaker
// after one failure), mid (then) and dear.
const healthProfiles = `
providers:
  sim:   {kind: sim, sim: {output_tokens: 20}}
  flaky: {kind: sim, sim: {output_tokens: 20, error_rate: 1}, breaker: {failures: 1, open_for: 1m}}
prices:
  flaky: {input: 1, output: 1}
  mid:   {input: 2, output: 2}
  dear:  {input: 9, output: 9}
profiles:
  pick:
    provider: sim
    stages:
      generator:
        candidates: [{model: dear, quality: 3}, {model: flaky, provider: flaky, quality: 3}, {model: mid, quality: 3}]
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
`

func chosen(req RunRequest, step string) stagework.Choice {
	var last stagework.Choice
	for _, c := range req.Plan.Choices {
		if c.Step == step {
			last = c
		}
	}
	return last
}

// The optimiser reads live health: a model whose endpoint's breaker is
// open, then one whose p95 TTFT blew up, is passed over for the next
// cheapest; the coordinator runs the pick and logs it.
func TestPlanRunAvoidsUnhealthyModels(t *testing.T) {
	e, _, _ := newProfileEngine(t, healthProfiles, nil)
	plan := func() RunRequest {
		t.Helper()
		req := RunRequest{Profile: "pick", Query: "What is 2+2?", Budget: stagework.Budget{MinQuality: 3}}
		if err := e.PlanRun(&req); err != nil {
			t.Fatal(err)
		}
		return req
	}
	if c := chosen(plan(), "generator"); c.Model != "flaky" {
		t.Fatalf("healthy: chose %+v", c)
	}
	// One failure opens flaky's breaker.
	if _, err := e.cfg.Providers["flaky"].Stream(context.Background(), stagework.Request{Model: "flaky", Query: "q",
		Messages: []stagework.Message{{Role: "user", Content: "q"}}}); err == nil {
		t.Fatal("the flaky endpoint answered")
	}
	if c := chosen(plan(), "generator"); c.Model != "mid" || !strings.Contains(c.Reason, "flaky (circuit breaker open)") {
		t.Fatalf("breaker open: chose %+v", c)
	}
	// mid's first tokens now take 5s (its declared TTFT is 0: the assumed
	// 800ms counts, ×4): it is avoided once the statistics are refreshed.
	for i := 0; i < 5; i++ {
		e.deps.telemetry.AttemptDone("sim", "mid", 5*time.Second, 6*time.Second, nil, 100, 20, 0)
	}
	waitFor(t, "mid avoided", func() bool { return chosen(plan(), "generator").Model == "dear" })
	if c := chosen(plan(), "generator"); !strings.Contains(c.Reason, "mid (p95 TTFT") {
		t.Fatalf("blown: %+v", c)
	}
	// The run itself runs the choice and logs it.
	req := plan()
	h, err := e.StartRun(req)
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	var picks []*messages.StepModel
	for _, ev := range evs {
		if m := ev.GetModelChosen(); m != nil {
			picks = append(picks, m)
		}
		if s := ev.GetStageStarted(); s != nil && s.Stage == messages.Stage_STAGE_GENERATOR && s.Model != "dear" {
			t.Fatalf("generator ran on %s", s.Model)
		}
	}
	if len(picks) != 1 || picks[0].Model != "dear" || evs[len(evs)-1].GetRunCompleted() == nil {
		t.Fatalf("picks %v; last %v", picks, evs[len(evs)-1])
	}
	if h.Budget().GetMinQuality() != 3 || len(h.StepModels()) != 1 {
		t.Fatalf("start: %v %v", h.Budget(), h.StepModels())
	}
}

// StartRun plans a request with a budget itself, and refuses it over its
// cap with a BudgetError.
func TestStartRunRefusesOverBudget(t *testing.T) {
	e, _, _ := newProfileEngine(t, healthProfiles, nil)
	_, err := e.StartRun(RunRequest{Profile: "pick", Query: "q", Budget: stagework.Budget{MinQuality: 3, MaxCostUSD: 1e-9}})
	var be *stagework.BudgetError
	if !errors.As(err, &be) || be.Code != "over_cost_cap" || be.EstimateUSD <= 0 {
		t.Fatalf("err = %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The nodes' breakers, merged per endpoint, mark a model unhealthy when
// open on at least half the nodes that call its endpoint; half-open and
// closed ones do not, nor one open node of three.
func TestModelHealthFromNodesBreakers(t *testing.T) {
	e, _, _ := newProfileEngine(t, healthProfiles, nil)
	reply := func(state string) *messages.ModelStatsReply {
		return &messages.ModelStatsReply{Breakers: map[string]string{"flaky": state, "sim": "closed"}}
	}
	m := stagework.ModelRef{Provider: "flaky", Model: "flaky"}
	for _, c := range []struct {
		states []string
		want   string
	}{
		{[]string{"open"}, "circuit breaker open on 1 of the 1 nodes that call flaky"},
		{[]string{"open", "closed"}, "circuit breaker open on 1 of the 2 nodes that call flaky"},
		{[]string{"open", "closed", "half-open"}, ""},
		{[]string{"half-open", "closed"}, ""},
		{nil, ""},
	} {
		var rs []*messages.ModelStatsReply
		for _, s := range c.states {
			rs = append(rs, reply(s))
		}
		b := MergeBreakers(rs)
		if got := e.modelHealth(nil, b, m); got != c.want {
			t.Errorf("breakers %v: health %q, want %q", c.states, got, c.want)
		}
		if got := e.modelHealth(nil, b, stagework.ModelRef{Provider: "sim", Model: "mid"}); got != "" {
			t.Errorf("breakers %v: sim unhealthy: %q", c.states, got)
		}
	}
	if b := MergeBreakers([]*messages.ModelStatsReply{reply("open"), reply("half-open"), reply("closed")})["flaky"]; b != (BreakerCount{Open: 1, HalfOpen: 1, Nodes: 3}) {
		t.Fatalf("merged: %+v", b)
	}
}
