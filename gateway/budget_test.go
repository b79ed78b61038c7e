package gateway

import (
	"encoding/json"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// budgetProfiles: "tiered" is a moa whose proposer and aggregator choose
// among big (quality 5, $20/M), mid (3, $5/M) and small (1, $1/M);
// "capped" has a proposer whose output is dear and an optional one that
// crawls (4000 tokens at 15ms), for the mid-run cost cap.
const budgetProfiles = `
default_profile: tiered
providers:
  fast:  {kind: sim, sim: {output_tokens: 40}}
  slow:  {kind: sim, sim: {ttft: 30ms, output_tokens: 40}}
  crawl: {kind: sim, sim: {ttft: 10ms, itl: 15ms, output_tokens: 4000}}
prices:
  big:    {input: 20, output: 20}
  pricey: {input: 0, output: 10000}
profiles:
  tiered:
    strategy: moa
    provider: fast
    min_proposers: 1
    proposers:
      - candidates:
          - {model: big, provider: slow, quality: high}
          - {model: mid, quality: medium, price: {input: 5, output: 5}}
          - {model: small, quality: low, price: {input: 1, output: 1}}
      - {model: extra, optional: true}
    aggregator:
      candidates:
        - {model: big, provider: slow, quality: 5}
        - {model: mid, quality: 3}
  capped:
    strategy: moa
    provider: fast
    min_proposers: 1
    proposers:
      - {model: pricey}
      - {model: dawdle, provider: crawl, optional: true}
    aggregator: {model: agg}
`

// runEvents reads a run's whole log over SSE (it must end).
func budgetRunEvents(t *testing.T, base, id string) []map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		out = append(out, ev.Data)
		switch ev.Data["type"] {
		case "run_completed", "run_failed", "run_cancelled":
			return false
		}
		return true
	})
	return out
}

func ofType(evs []map[string]any, typ string) []map[string]any {
	var out []map[string]any
	for _, ev := range evs {
		if ev["type"] == typ {
			out = append(out, ev)
		}
	}
	return out
}

// postRun posts a run body and decodes the answer (a run or an error).
func postBudgetRun(t *testing.T, base, body string) (int, runView, apiError) {
	t.Helper()
	var raw json.RawMessage
	code := do(t, "POST", base+"/v1/runs", body, &raw)
	var v runView
	var e struct{ Error apiError }
	if code == http.StatusCreated {
		_ = json.Unmarshal(raw, &v)
	} else {
		_ = json.Unmarshal(raw, &e)
	}
	return code, v, e.Error
}

func TestBudgetRunChoosesCandidates(t *testing.T) {
	base := newTestGateway(t, budgetProfiles)
	code, v, e := postBudgetRun(t, base, `{"profile":"tiered","query":"What is 2+2?","min_quality":"medium","max_cost_usd":1}`)
	if code != http.StatusCreated {
		t.Fatalf("HTTP %d %+v", code, e)
	}
	evs := budgetRunEvents(t, base, v.ID)
	chosen := ofType(evs, "model_chosen")
	if len(chosen) != 2 || chosen[0]["step"] != "p1.1" || chosen[0]["model"] != "mid" || chosen[1]["step"] != "aggregator" ||
		chosen[1]["model"] != "mid" || chosen[0]["quality"] != 3.0 || !strings.Contains(chosen[0]["reason"].(string), "cheapest") {
		t.Fatalf("model_chosen events: %v", chosen)
	}
	for _, st := range ofType(evs, "stage_started") {
		if st["step"] != "p1.2" && st["model"] != "mid" {
			t.Fatalf("step %v ran on %v, not the chosen mid", st["step"], st["model"])
		}
	}
	if last := evs[len(evs)-1]; last["type"] != "run_completed" {
		t.Fatalf("run ended %v", last)
	}
	do(t, "GET", base+"/v1/runs/"+v.ID, "", &v)
	if v.Budget == nil || v.Budget.MinQuality != 3 || v.Budget.MaxCostUSD != 1 || v.Budget.OnBudget != "refuse" || len(v.Models) != 2 ||
		v.Models[1].Model != "mid" || v.Estimate == nil || v.Estimate.CostUSD <= 0 || v.Estimate.CostUSD > 0.01 {
		t.Fatalf("run resource: budget %+v models %+v estimate %+v", v.Budget, v.Models, v.Estimate)
	}
	for _, s := range v.Steps {
		if s.ID == "aggregator" && s.Model != "mid" {
			t.Fatalf("aggregator step shows %q", s.Model)
		}
	}
}

func TestBudgetProfilesListCandidates(t *testing.T) {
	base := newTestGateway(t, budgetProfiles)
	var out struct {
		Data []struct {
			Name  string
			Steps []profileStepVw
		}
	}
	do(t, "GET", base+"/v1/profiles", "", &out)
	for _, p := range out.Data {
		if p.Name != "tiered" {
			continue
		}
		c := p.Steps[0].Candidates
		if len(c) != 3 || c[1].Model != "mid" || c[1].Quality != 3 || c[1].InputUSD == nil || *c[1].InputUSD != 5 || !p.Steps[1].Optional {
			t.Fatalf("steps %+v", p.Steps)
		}
		return
	}
	t.Fatal("no tiered profile listed")
}

func TestBudgetRefusedOverCostCap(t *testing.T) {
	base := newTestGateway(t, budgetProfiles)
	code, _, e := postBudgetRun(t, base, `{"profile":"tiered","query":"What is 2+2?","min_quality":"high","max_cost_usd":0.001}`)
	if code != http.StatusUnprocessableEntity || e.Code != "over_cost_cap" || e.Param == nil || *e.Param != "max_cost_usd" ||
		!strings.Contains(e.Message, "over its cap max_cost_usd $0.001000") || !strings.Contains(e.Message, "estimated cost $0.00") {
		t.Fatalf("HTTP %d %+v", code, e)
	}
	// Bad budgets are 400s naming the field.
	for body, param := range map[string]string{
		`{"query":"q","max_cost_usd":-1}`:                       "max_cost_usd",
		`{"query":"q","min_quality":"best"}`:                    "min_quality",
		`{"query":"q","max_cost_usd":1,"on_budget":"whatever"}`: "on_budget",
		`{"query":"q","on_budget":"downgrade"}`:                 "on_budget",
		`{"query":"q","max_latency_ms":0}`:                      "max_latency_ms",
	} {
		code, _, e := postBudgetRun(t, base, body)
		if code != http.StatusBadRequest || e.Code != "invalid_budget" || e.Param == nil || *e.Param != param {
			t.Errorf("%s: HTTP %d %+v", body, code, e)
		}
	}
	// Quality 5 lives only on a slow model: a tight latency cap is refused.
	code, _, e = postBudgetRun(t, base, `{"profile":"tiered","query":"What is 2+2?","min_quality":5,"max_latency_ms":20}`)
	if code != http.StatusUnprocessableEntity || e.Code != "over_latency_cap" || !strings.Contains(e.Message, "max_latency_ms 20") {
		t.Fatalf("latency: HTTP %d %+v", code, e)
	}
}

func TestBudgetDowngradeStepByStep(t *testing.T) {
	base := newTestGateway(t, budgetProfiles)
	code, v, e := postBudgetRun(t, base, `{"profile":"tiered","query":"What is 2+2?","min_quality":"high","max_cost_usd":0.003,"on_budget":"downgrade"}`)
	if code != http.StatusCreated {
		t.Fatalf("HTTP %d %+v", code, e)
	}
	evs := budgetRunEvents(t, base, v.ID)
	chosen := ofType(evs, "model_chosen")
	// First picks big/big, then the aggregator down to mid, then the
	// proposer: each change an event, with the estimate after it.
	if len(chosen) != 4 || chosen[2]["step"] != "aggregator" || chosen[2]["downgraded"] != true || chosen[2]["from_model"] != "big" ||
		chosen[3]["step"] != "p1.1" || chosen[3]["model"] != "mid" || chosen[3]["from_quality"] != 5.0 ||
		chosen[3]["estimate_cost_usd"].(float64) > 0.003 || chosen[2]["estimate_cost_usd"].(float64) <= 0.003 {
		t.Fatalf("model_chosen events: %v", chosen)
	}
	if last := evs[len(evs)-1]; last["type"] != "run_completed" {
		t.Fatalf("run ended %v", last)
	}
	do(t, "GET", base+"/v1/runs/"+v.ID, "", &v)
	if v.Budget.OnBudget != "downgrade" || len(v.Models) != 4 || !v.Models[3].Downgraded || v.Estimate.CostUSD > 0.003 {
		t.Fatalf("run resource: %+v %+v %+v", v.Budget, v.Models, v.Estimate)
	}
}

func TestBudgetOpenAI(t *testing.T) {
	base := newTestGateway(t, budgetProfiles)
	chat := func(extra string) (*http.Response, []byte) {
		body := `{"model":"qlc-tiered","messages":[{"role":"user","content":"What is 2+2?"}]` + extra + `}`
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp, data
	}
	resp, data := chat(`,"min_quality":"low","max_cost_usd":0.5`)
	if resp.StatusCode != 200 || resp.Header.Get("X-QLC-Models") != "p1.1=small,aggregator=mid" || resp.Header.Get("X-QLC-Estimate-Cost-USD") == "" {
		t.Fatalf("HTTP %d %v %s", resp.StatusCode, resp.Header, data)
	}
	var v runView
	do(t, "GET", base+"/v1/runs/"+resp.Header.Get("X-QLC-Run-Id"), "", &v)
	if len(v.Models) != 2 || v.Models[0].Model != "small" || v.Status != "completed" {
		t.Fatalf("run %+v", v)
	}
	resp, data = chat(`,"min_quality":"high","max_cost_usd":0.0001`)
	var e struct{ Error apiError }
	_ = json.Unmarshal(data, &e)
	if resp.StatusCode != http.StatusUnprocessableEntity || e.Error.Code != "over_cost_cap" || !strings.Contains(e.Error.Message, "$0.000100") {
		t.Fatalf("HTTP %d %s", resp.StatusCode, data)
	}
	// The thinking model tells the choices in its reasoning, streamed too.
	for _, stream := range []string{"false", "true"} {
		body := `{"model":"qlc-tiered-thinking","stream":` + stream + `,"messages":[{"role":"user","content":"What is 2+2?"}],"min_quality":"low","max_cost_usd":0.5}`
		resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(data), "p1.1 runs on small: cheapest") || !strings.Contains(string(data), "aggregator runs on mid") {
			t.Fatalf("thinking (stream %s): HTTP %d %s", stream, resp.StatusCode, data)
		}
	}
	// Without budget fields: the defaults, no headers.
	resp, _ = chat(``)
	if resp.StatusCode != 200 || resp.Header.Get("X-QLC-Models") != "" {
		t.Fatalf("HTTP %d %v", resp.StatusCode, resp.Header)
	}
}

func TestBudgetMidRunStopsOptionalSteps(t *testing.T) {
	g := startGateway(t, budgetProfiles, nil)
	base := g.URL
	// Teach the telemetry that the dear model writes 2 tokens (max_tokens
	// 2): the next run's estimate is far under its cap, its real cost (40
	// tokens at $10k/M = $0.40) far over.
	for i := 0; i < 3; i++ {
		code, v, e := postBudgetRun(t, base, `{"profile":"capped","query":"warm up","max_tokens":2,"cache":false}`)
		if code != http.StatusCreated {
			t.Fatalf("HTTP %d %+v", code, e)
		}
		budgetRunEvents(t, base, v.ID)
	}
	waitUntil(t, "estimates from telemetry", func() bool {
		est, err := g.Engine.Estimate("capped", "What is 2+2?", nil, 0)
		return err == nil && est.Basis == "telemetry"
	})
	code, v, e := postBudgetRun(t, base, `{"profile":"capped","query":"What is 2+2?","max_cost_usd":0.1,"cache":false}`)
	if code != http.StatusCreated {
		t.Fatalf("HTTP %d %+v", code, e)
	}
	if v.Estimate == nil || v.Estimate.CostUSD >= 0.1 {
		t.Fatalf("estimate %+v", v.Estimate)
	}
	start := time.Now()
	evs := budgetRunEvents(t, base, v.ID)
	notes, skipped := ofType(evs, "step_note"), ofType(evs, "step_skipped")
	if len(notes) != 1 || notes[0]["kind"] != "cost_cap" || !strings.Contains(notes[0]["message"].(string), "crossed its cap max_cost_usd $0.100000") ||
		!strings.Contains(notes[0]["message"].(string), "p1.2") {
		t.Fatalf("notes %v", notes)
	}
	if len(skipped) != 1 || skipped[0]["step"] != "p1.2" || skipped[0]["code"] != "cost_cap" {
		t.Fatalf("skipped %v", skipped)
	}
	if last := evs[len(evs)-1]; last["type"] != "run_completed" || time.Since(start) > 30*time.Second {
		t.Fatalf("run ended %v after %v", last, time.Since(start))
	}
}

// A step's hedge loser is billed in the ledger: its prompt at its model's
// price, beside the winner's usage at the winner's; the row names the
// winner's model.
func TestUsageBillsHedgeLoser(t *testing.T) {
	prices, err := stagework.ParseConfig([]byte(`
providers:
  sim: {kind: sim}
prices:
  big:   {input: 10, output: 10}
  small: {input: 1, output: 1}
profiles:
  p:
    provider: sim
    stages: {generator: {model: big, hedge: true, fallback: {model: small}}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`))
	if err != nil {
		t.Fatal(err)
	}
	evs := []*messages.RunEvent{
		{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_GENERATOR, Model: "big", Provider: "sim"}}},
		{Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{Stage: messages.Stage_STAGE_GENERATOR, Model: "small",
			Usage:      &messages.Usage{PromptTokens: 1000, CompletionTokens: 1000, TotalTokens: 2000},
			HedgeUsage: &messages.Usage{PromptTokens: 1000, TotalTokens: 1000, Estimated: true}, HedgeModel: "big"}}},
	}
	u := usageFromLog(evs, prices, &admission{profile: "p", runID: "r", tenant: "t"})
	if u.PromptTokens != 2000 || u.CompletionTokens != 1000 || len(u.Stages) != 1 || u.Stages[0].Model != "small" {
		t.Fatalf("usage %+v", u)
	}
	// small: 2000 tokens at $1/M; the loser on big: 1000 at $10/M.
	if want := 0.002 + 0.01; math.Abs(u.CostUSD-want) > 1e-9 {
		t.Fatalf("cost $%v, want $%v", u.CostUSD, want)
	}
}
