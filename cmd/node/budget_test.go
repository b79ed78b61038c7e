package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// budgetProfiles adds "tiered": a chain whose generator, refiner and
// curator choose between big (quality 5, $20/M) and mid (3, $5/M).
const budgetProfiles = profiles + `
  tiered:
    provider: medium
    stages:
      generator: {candidates: [{model: big, quality: high, price: {input: 20, output: 20}}, {model: mid, quality: medium, price: {input: 5, output: 5}}]}
      refiner:   {candidates: [{model: big, quality: high}, {model: mid, quality: medium}]}
      validator: {model: v}
      curator:   {candidates: [{model: big, quality: high}, {model: mid, quality: medium}]}
`

// postBudget posts a run of "tiered" with a quality floor and a cost cap.
func postBudget(t *testing.T, base, body string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(base+"/v1/runs", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, v
}

// The cost/quality optimiser's choice, made on the gateway, is what the
// coordinator on a node process runs; kill -9 of that node mid-run moves
// the run to the other node, which keeps the choice (the redone stage runs
// on the chosen model, no choice is logged twice). A run over its cap is
// refused at the gateway.
func TestBudgetChoiceReachesNodeAndSurvivesFailover(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(budgetProfiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	c.addNode()
	c.addNode()
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf)
	c.waitMembers(3)

	code, v := postBudget(t, c.gw, `{"query":"How do vector clocks work?","profile":"tiered","min_quality":"high","max_cost_usd":0.000001}`)
	if errv, _ := v["error"].(map[string]any); code != http.StatusUnprocessableEntity || errv["code"] != "over_cost_cap" {
		t.Fatalf("over the cap: %d %v", code, v)
	}

	victim := c.nodes[0]
	var id string
	for i := 0; i < 20 && id == ""; i++ {
		before := c.hosted(victim)
		code, v := postBudget(t, c.gw, `{"query":"How do vector clocks work?","profile":"tiered","min_quality":"medium","max_cost_usd":1}`)
		if code != http.StatusCreated {
			t.Fatalf("POST: %d %v", code, v)
		}
		if c.hosted(victim) > before {
			id = v["id"].(string)
		}
	}
	if id == "" {
		t.Fatal("no run landed on the victim node")
	}
	killed := false
	chosen := 0
	var afterKill []map[string]any
	last := streamEvents(t, c.gw, id, func(d map[string]any) {
		if d["type"] == "model_chosen" {
			chosen++
			if d["model"] != "mid" {
				t.Errorf("chose %v", d)
			}
		}
		if d["type"] == "stage_started" && d["stage"] != "validator" && d["model"] != "mid" {
			t.Errorf("stage %v ran on %v, not the chosen mid", d["stage"], d["model"])
		}
		if killed {
			afterKill = append(afterKill, d)
			return
		}
		if d["type"] == "token_delta" && d["stage"] == "refiner" {
			killed = true
			_ = victim.cmd.Process.Kill()
		}
	})
	if last["type"] != "run_completed" || chosen != 3 {
		t.Fatalf("the run ended with %v after %d model_chosen events (want 3)", last, chosen)
	}
	redone := false
	for _, d := range afterKill {
		if d["type"] == "stage_started" && d["stage"] == "refiner" && d["model"] == "mid" {
			redone = true
		}
	}
	if !redone {
		t.Fatalf("the refiner was not redone on mid after the kill: %v", afterKill)
	}
	if got := metric(t, c.gw+"/metrics", "qlc_failovers_total"); got != "1" {
		t.Fatalf("failovers: %q", got)
	}
	if got := metric(t, c.gw+"/metrics", "qlc_coordinators_started_total"); got != "0" {
		t.Fatalf("the gateway started %q coordinators itself, want 0", got)
	}
}

// A node's circuit breaker reaches the gateway's optimiser: the node runs
// the stages, so its breaker of the "flaky" endpoint opens while the
// gateway's own stays closed (it calls no model); the cluster's model
// statistics carry each node's breakers, GET /v1/stats/models shows it open
// on 1 of 1 nodes, and a budgeted run passes over the cheaper flaky
// candidate for mid, saying why.
func TestNodeBreakerMarksCandidateUnhealthy(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	body := strings.Replace(profiles, "providers:\n",
		"providers:\n  flaky: {kind: sim, sim: {output_tokens: 20, error_rate: 1}, breaker: {failures: 1, open_for: 10m}}\n", 1) + `
  flakyrun:
    provider: flaky
    stages: {generator: {model: cheap}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  breaky:
    provider: quick
    stages:
      generator: {candidates: [{model: cheap, provider: flaky, quality: medium, price: {input: 1, output: 1}}, {model: mid, quality: medium, price: {input: 5, output: 5}}]}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
`
	if err := os.WriteFile(pf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	c.addNode()
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf)
	c.waitMembers(2)

	// A run on the flaky endpoint fails on the node and opens its breaker.
	code, v := postBudget(t, c.gw, `{"query":"q","profile":"flakyrun"}`)
	if code != http.StatusCreated {
		t.Fatalf("POST: %d %v", code, v)
	}
	if last := streamEvents(t, c.gw, v["id"].(string), nil); last["type"] != "run_failed" {
		t.Fatalf("the flaky run ended with %v", last)
	}
	resp, err := http.Get(c.gw + "/v1/stats/models")
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Data []struct {
			Endpoint     string
			Model        string
			Open         int `json:"breaker_open_nodes"`
			BreakerNodes int `json:"breaker_nodes"`
		}
	}
	err = json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	for _, m := range stats.Data {
		if m.Endpoint == "flaky" { // every model of the endpoint, "cheap" (attempts) and the others (none)
			seen = true
			if m.Open != 1 || m.BreakerNodes != 1 {
				t.Fatalf("flaky's breakers: open on %d of %d nodes, want 1 of 1: %+v", m.Open, m.BreakerNodes, stats.Data)
			}
		}
	}
	if !seen {
		t.Fatalf("no flaky endpoint in the model statistics: %+v", stats.Data)
	}
	// The optimiser reads the statistics through a cache (at most 2 s old,
	// refreshed in the background): the first plans may predate the failure.
	var why string
	for i := 0; i < 20; i++ {
		code, v := postBudget(t, c.gw, `{"query":"q","profile":"breaky","min_quality":"medium","max_cost_usd":1}`)
		if code != http.StatusCreated {
			t.Fatalf("POST: %d %v", code, v)
		}
		streamEvents(t, c.gw, v["id"].(string), nil)
		models, _ := v["models"].([]any)
		if len(models) == 1 {
			m := models[0].(map[string]any)
			if m["model"] == "mid" {
				why = m["reason"].(string)
				break
			}
		}
		time.Sleep(300 * time.Millisecond)
	}
	if !strings.Contains(why, "circuit breaker open on 1 of the 1 nodes") {
		t.Fatalf("the budgeted run's generator: reason %q, want mid chosen for flaky's breaker open on the node", why)
	}
}
