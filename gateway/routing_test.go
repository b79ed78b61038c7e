package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// routingProfiles: three zero-latency profiles routed by tier, and one
// profile routing does not use.
const routingProfiles = `
default_profile: mid
providers:
  sim: {kind: sim, sim: {output_tokens: 40}}
profiles:
  small: {provider: sim, stages: {generator: {model: s}, refiner: {model: s}, validator: {model: s}, curator: {model: s}}}
  mid:   {provider: sim, stages: {generator: {model: m}, refiner: {model: m}, validator: {model: m}, curator: {model: m}}}
  big:   {provider: sim, stages: {generator: {model: b}, refiner: {model: b}, validator: {model: b}, curator: {model: b}}}
  other: {provider: sim, stages: {generator: {model: o}, refiner: {model: o}, validator: {model: o}, curator: {model: o}}}
routing: {simple: small, standard: mid, complex: big}
`

const codeQuestion = "Why does this deadlock?\n```go\nfunc main() {\n\tch := make(chan int)\n\tch <- 1\n}\n```"

// postAuto creates a run with profile "auto" as key (none: "") and
// returns the status, the run and the error body.
func postAuto(t *testing.T, base, key, query string) (int, runView, errBody) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "profile": "auto"})
	var raw json.RawMessage
	code, _ := call(t, "POST", base+"/v1/runs", key, string(body), &raw)
	var v runView
	var e errBody
	if code == http.StatusCreated {
		_ = json.Unmarshal(raw, &v)
	} else if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatalf("error body %s: %v", raw, err)
	}
	return code, v, e
}

func TestAutoRoutingRuns(t *testing.T) {
	base := newTestGateway(t, routingProfiles)
	for _, c := range []struct {
		query, tier, profile, reason string
	}{
		{codeQuestion, "complex", "big", "code block"},
		{"hello!", "simple", "small", "greeting"},
		{"Why is the sky blue?", "standard", "mid", "asks for an explanation"},
	} {
		code, v, e := postAuto(t, base, "", c.query)
		if code != http.StatusCreated {
			t.Fatalf("%q: HTTP %d %+v", c.query, code, e)
		}
		if v.Profile != c.profile || v.Routing == nil || v.Routing.Tier != c.tier || v.Routing.Profile != c.profile {
			t.Fatalf("%q: profile %q routing %+v; want tier %s profile %s", c.query, v.Profile, v.Routing, c.tier, c.profile)
		}
		var done runView
		waitStatus(t, base, v.ID, "completed", &done)
		if done.Routing == nil || done.Routing.Profile != c.profile || !slices.Contains(done.Routing.Reasons, c.reason) {
			t.Errorf("%q: the completed run's routing %+v lacks profile %s or reason %q", c.query, done.Routing, c.profile, c.reason)
		}
		if done.Steps[0].Model != c.profile[:1] {
			t.Errorf("%q: ran model %q, want the %s profile's", c.query, done.Steps[0].Model, c.profile)
		}
	}
	// A run that names its profile has no routing.
	id := createRun(t, base, "mid", "hello")
	var v runView
	waitStatus(t, base, id, "completed", &v)
	if v.Routing != nil {
		t.Errorf("a named profile's run has routing %+v", v.Routing)
	}
	var profiles struct{ Routing map[string]string }
	do(t, "GET", base+"/v1/profiles", "", &profiles)
	if profiles.Routing["complex"] != "big" {
		t.Errorf("/v1/profiles routing = %v", profiles.Routing)
	}
}

func TestAutoRoutingOpenAI(t *testing.T) {
	base := newTestGateway(t, routingProfiles)
	var models struct{ Data []struct{ ID string } }
	do(t, "GET", base+"/v1/models", "", &models)
	var ids []string
	for _, m := range models.Data {
		ids = append(ids, m.ID)
	}
	if !slices.Contains(ids, "qlc-auto") {
		t.Fatalf("/v1/models lacks qlc-auto: %v", ids)
	}
	for _, c := range []struct{ query, profile string }{{codeQuestion, "big"}, {"thanks!", "small"}} {
		body, _ := json.Marshal(map[string]any{"model": "qlc-auto", "messages": []map[string]string{{"role": "user", "content": c.query}}})
		var out struct {
			ID      string
			Model   string
			Choices []struct{ Message struct{ Content string } }
		}
		if code := do(t, "POST", base+"/v1/chat/completions", string(body), &out); code != http.StatusOK {
			t.Fatalf("qlc-auto: HTTP %d", code)
		}
		if out.Model != "qlc-auto" || len(out.Choices) != 1 || out.Choices[0].Message.Content == "" {
			t.Fatalf("qlc-auto answer %+v", out)
		}
		var v runView
		do(t, "GET", base+"/v1/runs/run_"+strings.TrimPrefix(out.ID, "chatcmpl-"), "", &v)
		if v.Profile != c.profile || v.Routing == nil || v.Routing.Profile != c.profile {
			t.Errorf("%q through qlc-auto ran %q, routing %+v; want %s", c.query, v.Profile, v.Routing, c.profile)
		}
	}
}

func TestAutoRoutingTenants(t *testing.T) {
	g := startTenantGatewayProfiles(t, routingProfiles, nil)
	// Not allowed the complex tier's profile: the nearest allowed tier's.
	_, key := newTenant(t, g, "no-big", `{"profiles": ["small", "mid"]}`)
	code, v, e := postAuto(t, g.URL, key, codeQuestion)
	if code != http.StatusCreated {
		t.Fatalf("fallback: HTTP %d %+v", code, e)
	}
	if v.Profile != "mid" || v.Routing == nil || v.Routing.Tier != "complex" ||
		!slices.ContainsFunc(v.Routing.Reasons, func(r string) bool { return strings.Contains(r, "big not allowed") }) {
		t.Errorf("fallback: profile %q routing %+v; want mid, tier complex, a reason naming big", v.Profile, v.Routing)
	}
	// Allowed none of the routed profiles: refused, saying why.
	_, key = newTenant(t, g, "other-only", `{"profiles": ["other"]}`)
	code, _, e = postAuto(t, g.URL, key, "hello")
	if code != http.StatusForbidden || e.Error.Code != "profile_not_allowed" ||
		!strings.Contains(e.Error.Message, `profile "auto"`) || !strings.Contains(e.Error.Message, "allowed: other") {
		t.Errorf("no routed profile allowed: HTTP %d %+v", code, e)
	}
	var models struct{ Data []struct{ ID string } }
	call(t, "GET", g.URL+"/v1/models", key, "", &models)
	for _, m := range models.Data {
		if m.ID == "qlc-auto" {
			t.Error("/v1/models lists qlc-auto to a tenant that may run none of its profiles")
		}
	}
}

func TestAutoRoutingNotConfigured(t *testing.T) {
	base := newTestGateway(t, "") // testProfiles: no routing
	code, _, e := postAuto(t, base, "", "hello")
	if code != http.StatusBadRequest || e.Error.Code != "routing_not_configured" {
		t.Errorf("auto without routing: HTTP %d %+v", code, e)
	}
	body := `{"model":"qlc-auto","messages":[{"role":"user","content":"hi"}]}`
	var eb errBody
	if code := do(t, "POST", base+"/v1/chat/completions", body, &eb); code != http.StatusNotFound || eb.Error.Code != "model_not_found" {
		t.Errorf("qlc-auto without routing: HTTP %d %+v", code, eb)
	}
}

// TestBatchItemsWithAuto: a batch item may ask for profile "auto"; each is
// routed when its run starts, as POST /v1/runs would, and an item a
// tenant cannot route fails the batch's validation naming it.
func TestBatchItemsWithAuto(t *testing.T) {
	g := startTenantGatewayProfiles(t, routingProfiles, nil)
	_, key := newTenant(t, g, "batch-auto", `{"profiles": ["small", "mid", "big"]}`)
	want := []struct{ query, tier, profile string }{
		{codeQuestion, "complex", "big"}, {"hello!", "simple", "small"}, {"Why is the sky blue?", "standard", "mid"},
	}
	var items []map[string]any
	for i, c := range want {
		items = append(items, map[string]any{"custom_id": fmt.Sprint("q", i), "query": c.query, "profile": "auto"})
	}
	items = append(items, map[string]any{"custom_id": "named", "query": "hello!", "profile": "mid"})
	b := postBatch(t, g.URL, key, batchBody(t, items...))
	waitBatch(t, g.URL, key, b.ID, "completed", func(v batchView) bool { return v.Status == "completed" })
	got := allItems(t, g.URL, key, b.ID, 10)
	if len(got) != 4 {
		t.Fatalf("%d items; want 4", len(got))
	}
	for i, it := range got {
		var run runView
		if code, _ := call(t, "GET", g.URL+"/v1/runs/"+it.RunID, key, "", &run); code != 200 || it.Status != "completed" {
			t.Fatalf("item %d: %+v; its run: HTTP %d", i, it, code)
		}
		if i == 3 {
			if run.Profile != "mid" || run.Routing != nil {
				t.Errorf("the named item ran %q with routing %+v", run.Profile, run.Routing)
			}
			continue
		}
		if run.Profile != want[i].profile || run.Routing == nil || run.Routing.Tier != want[i].tier {
			t.Errorf("item %d (%q): ran %q, routing %+v; want tier %s → %s", i, want[i].query, run.Profile, run.Routing, want[i].tier, want[i].profile)
		}
	}

	// A tenant that may run none of the routed profiles: the batch is
	// refused, naming the item.
	_, other := newTenant(t, g, "batch-other", `{"profiles": ["other"]}`)
	var e errBody
	code, _ := call(t, "POST", g.URL+"/v1/runs/batch", other, batchBody(t, map[string]any{"custom_id": "a", "query": "hello", "profile": "auto"}), &e)
	if code != http.StatusBadRequest || e.Error.Code != "profile_not_allowed" || !strings.Contains(e.Error.Message, "items[0]") {
		t.Errorf("auto for a tenant allowed only other: HTTP %d %+v", code, e)
	}
}
