package gateway

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
)

type statsList struct {
	Object   string                  `json:"object"`
	Complete bool                    `json:"complete"`
	Data     []actors.ModelStatsView `json:"data"`
}

func (l statsList) find(endpoint, model string) *actors.ModelStatsView {
	for i := range l.Data {
		if l.Data[i].Endpoint == endpoint && l.Data[i].Model == model {
			return &l.Data[i]
		}
	}
	return nil
}

// GET /v1/stats/models: what the runs did, per (endpoint, model), through
// a real OpenAI-compatible upstream that refuses its first call with 429:
// attempts, failures by kind and HTTP status, TTFT and ITL quantiles, tokens
// and cost. A tenant key sees the models of its profiles only (one it has
// not run is listed with zero attempts); the admin key sees every model.
func TestModelStatsEndpoint(t *testing.T) {
	var calls atomic.Int32
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			http.Error(w, `{"error":{"message":"slow down","type":"rate_limit_error"}}`, http.StatusTooManyRequests)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, piece := range []string{"Consensus", " means", " agreement", "."} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", piece)
			fl.Flush()
			time.Sleep(5 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":4,\"total_tokens\":24}}\n\ndata: [DONE]\n\n")
	}))
	defer upstream.Close()
	g := startTenantGatewayProfiles(t, fmt.Sprintf(`
providers:
  up:  {kind: openai, base_url: %s/v1}
  sim: {kind: sim, sim: {ttft: 2ms, itl: 1ms, output_tokens: 20}}
profiles:
  upstream:
    provider: up
    stages: {generator: {model: gpt-x}, refiner: {model: gpt-x}, validator: {model: gpt-x}, curator: {model: gpt-x}}
  simmed:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c, fallback: {model: c2}}}
prices:
  gpt-x: {input: 1000, output: 2000}
`, upstream.URL), nil)
	id := runKey(t, g.URL, g.Dev.TenantKey, "upstream")
	var v runView
	waitStatusKey(t, g.URL, g.Dev.TenantKey, id, "completed", &v)

	var all statsList
	if code, _ := call(t, "GET", g.URL+"/v1/stats/models", g.Dev.AdminKey, "", &all); code != 200 {
		t.Fatalf("admin: HTTP %d", code)
	}
	if !all.Complete {
		t.Fatal("one process: the view must be complete")
	}
	up := all.find("up", "gpt-x")
	if up == nil {
		t.Fatalf("no stats for up/gpt-x: %+v", all.Data)
	}
	// Four stages, the first attempt refused with 429 and retried.
	if up.Attempts != 5 || up.Succeeded != 4 || up.Failed != 1 || up.Errors["rate_limited"] != 1 || up.HTTPStatus["429"] != 1 {
		t.Fatalf("counts: %+v", up)
	}
	if up.TTFTms.Count != 4 || up.TTFTms.P50 == nil || *up.TTFTms.P50 <= 0 {
		t.Fatalf("ttft: %+v", up.TTFTms)
	}
	// Three gaps of ~5 ms per attempt, one token each.
	if up.ITLms.Count != 12 || up.ITLms.P50 == nil || *up.ITLms.P50 < 4 {
		t.Fatalf("itl: %+v (p50 %v)", up.ITLms, up.ITLms.P50)
	}
	if up.InputTokens != 80 || up.OutputTokens != 16 || up.TokensPerSecond == nil || *up.TokensPerSecond <= 0 {
		t.Fatalf("tokens: %+v", up)
	}
	// 80 × $1000/M + 16 × $2000/M.
	if up.CostUSD < 0.1119 || up.CostUSD > 0.1121 || up.Price == nil || up.Price.Input != 1 || up.Price.Output != 2 {
		t.Fatalf("cost %v price %+v", up.CostUSD, up.Price)
	}
	if all.find("sim", "c2") == nil || all.find("sim", "g").Attempts != 0 {
		t.Fatalf("the admin view lists every model, used or not: %+v", all.Data)
	}

	_, key := newTenant(t, g, "simonly", `{"profiles":["simmed"]}`)
	sid := runKey(t, g.URL, key, "simmed")
	waitStatusKey(t, g.URL, key, sid, "completed", &v)
	var mine statsList
	if code, _ := call(t, "GET", g.URL+"/v1/stats/models", key, "", &mine); code != 200 {
		t.Fatalf("tenant: HTTP %d", code)
	}
	if mine.find("up", "gpt-x") != nil {
		t.Fatalf("a tenant sees a model of a profile it may not use: %+v", mine.Data)
	}
	if len(mine.Data) != 5 || mine.find("sim", "g").Attempts != 1 || mine.find("sim", "c2").Attempts != 0 {
		t.Fatalf("tenant view: %+v", mine.Data)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/stats/models", "", "", nil); code != 401 {
		t.Fatalf("without a key: HTTP %d, want 401", code)
	}
}

// runKey starts a run of profile as key's tenant and returns its id.
func runKey(t *testing.T, base, key, profile string) string {
	t.Helper()
	code, _, v, e := postRun(t, base, key, profile)
	if code != http.StatusCreated {
		t.Fatalf("POST /v1/runs %s: HTTP %d %+v", profile, code, e)
	}
	return v.ID
}

// The run resource carries the run's estimate, made at admission: from the
// profiles file before the models have run, from the cluster's telemetry
// once each has run a few attempts.
func TestRunEstimateInRunResource(t *testing.T) {
	g := startGateway(t, `
providers:
  sim: {kind: sim, sim: {ttft: 5ms, itl: 1ms, output_tokens: 20}}
profiles:
  p:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
prices:
  c: {input: 1, output: 1}
`, nil)
	id := createRun(t, g.URL, "p", "How do vector clocks work?")
	var v runView
	waitStatus(t, g.URL, id, "completed", &v)
	e := v.Estimate
	// Four stages of 5 ms + 19 × 1 ms; the answer's first token after three.
	if e == nil || e.Basis != "declared" || e.AnswerTTFTMs != 77 || e.DurationMs != 96 || e.OutputTokens != 80 || e.PromptTokens <= 0 || e.CostUSD <= 0 {
		t.Fatalf("estimate before any telemetry: %+v", e)
	}
	waitUntil(t, "an estimate from telemetry", func() bool {
		id := createRun(t, g.URL, "p", "How do vector clocks work?")
		waitStatus(t, g.URL, id, "completed", &v)
		return v.Estimate != nil && v.Estimate.Basis == "telemetry"
	})
	if v.Estimate.AnswerTTFTMs <= 0 || v.Estimate.DurationMs < v.Estimate.AnswerTTFTMs {
		t.Fatalf("estimate from telemetry: %+v", v.Estimate)
	}
}
