package gateway

// Everything streams (issue 12): runs of the parallel strategies through
// the run API on real HTTP servers — every step's text over SSE and
// WebSocket, keyed by step id while parallel steps interleave, the run
// resource's steps, and the ledger's per-step rows.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/qlc-project/qlc/gateway/store"
)

// strategyGatewayProfiles: a chain, and each parallel strategy on a paced
// simulator (2 ms between tokens, so parallel steps' streams overlap),
// with prices. "council" runs on an OpenAI-compatible upstream whose every
// answer ends with a FINAL RANKING (the simulator's text rarely parses as
// one: "council-sim" shows that as step_note events); "straggler" has a
// proposer that never answers and is left out at its deadline, "crawl"
// streams long enough to cancel.
func strategyGatewayProfiles(t *testing.T) string {
	up := startUpstream(t, nil, []string{"Response B is the most complete; A misses the point. ", "FINAL RANKING:\n", "1. Response B\n", "2. Response C\n", "3. Response A\n"})
	return fmt.Sprintf(strategyProfilesFmt, up.URL)
}

const strategyProfilesFmt = `
default_profile: chain
providers:
  sim:   {kind: sim, sim: {output_tokens: 40}}
  paced: {kind: sim, sim: {itl: 2ms, output_tokens: 60}}
  hang:  {kind: sim, sim: {output_tokens: 40, hang_rate: 1}}
  crawl: {kind: sim, sim: {itl: 15ms, output_tokens: 5000}}
  up:    {kind: openai, base_url: %s/v1}
profiles:
  chain:
    provider: sim
    stages: {generator: {model: sim-small}, refiner: {model: sim-medium}, validator: {model: sim-small}, curator: {model: sim-large}}
  moa:
    strategy: moa
    provider: paced
    proposers: [{model: sim-small}, {model: sim-medium}, {model: sim-large}]
    aggregator: {model: sim-large}
  council:
    strategy: council
    provider: up
    members: [{model: sim-small}, {model: sim-medium}, {model: sim-large}]
    chairman: {model: sim-large}
  council-sim:
    strategy: council
    provider: paced
    members: [{model: sim-small}, {model: sim-medium}, {model: sim-large}]
    chairman: {model: sim-large}
  vote:
    strategy: vote
    provider: paced
    samples: [{model: sim-small}, {model: sim-medium}]
    count: 3
  straggler:
    strategy: moa
    provider: sim
    proposers: [{model: sim-small}, {provider: hang, model: sim-medium}, {model: sim-large}]
    aggregator: {model: sim-large}
    min_proposers: 2
    step_deadline: 300ms
  crawl:
    strategy: moa
    provider: crawl
    proposers: [{model: sim-small}, {model: sim-medium}, {model: sim-large}]
    aggregator: {model: sim-large}
prices:
  sim-small:  {input: 0.15, output: 0.60}
  sim-medium: {input: 1.00, output: 4.00}
  sim-large:  {input: 3.00, output: 15.00}
`

// stepTranscript rebuilds every step's text from an event stream by step
// id, checking seqs have no gap or repeat and every step event names its
// step; it records the seqs of each step's deltas.
type stepTranscript struct {
	t        *testing.T
	next     uint64
	partEnd  float64
	texts    map[string]*strings.Builder
	stage    map[string]string   // step -> role
	deltas   map[string][]uint64 // step -> the seqs of its deltas
	types    []string
	events   []map[string]any
	terminal map[string]any
}

func newStepTranscript(t *testing.T) *stepTranscript {
	return &stepTranscript{t: t, next: 1, texts: map[string]*strings.Builder{}, stage: map[string]string{}, deltas: map[string][]uint64{}}
}

func (tr *stepTranscript) text(step string) string {
	if b := tr.texts[step]; b != nil {
		return b.String()
	}
	return ""
}

func (tr *stepTranscript) add(d map[string]any) {
	tr.t.Helper()
	seq := uint64(d["seq"].(float64))
	first := seq
	if f, ok := d["from_seq"]; ok {
		first = uint64(f.(float64))
	}
	typ, _ := d["type"].(string)
	step, _ := d["step"].(string)
	switch typ {
	case "stage_started", "token_delta", "stage_completed", "stage_restarted", "step_skipped":
		role, _ := d["stage"].(string)
		if step == "" || role == "" {
			tr.t.Fatalf("%s without its step and stage: %v", typ, d)
		}
		if r, ok := tr.stage[step]; ok && r != role {
			tr.t.Fatalf("step %s is a %s and a %s", step, r, role)
		}
		tr.stage[step] = role
		if tr.texts[step] == nil {
			tr.texts[step] = &strings.Builder{}
		}
	}
	if part, ok := d["part"].(map[string]any); ok {
		if seq != tr.next || part["offset"] != tr.partEnd {
			tr.t.Fatalf("part %v of seq %d, want seq %d from byte %v", part, seq, tr.next, tr.partEnd)
		}
		tr.texts[step].WriteString(d["text"].(string))
		tr.partEnd = part["end"].(float64)
		if tr.partEnd < part["size"].(float64) {
			return
		}
		tr.partEnd = 0
		tr.deltas[step] = append(tr.deltas[step], seq)
		tr.next = seq + 1
		tr.types = append(tr.types, typ)
		tr.events = append(tr.events, d)
		return
	}
	if first != tr.next {
		tr.t.Fatalf("event %s covers seq %d..%d, want it to start at %d", typ, first, seq, tr.next)
	}
	tr.next = seq + 1
	tr.types = append(tr.types, typ)
	tr.events = append(tr.events, d)
	switch typ {
	case "stage_started", "stage_restarted":
		tr.texts[step].Reset()
	case "token_delta":
		tr.texts[step].WriteString(d["text"].(string))
		for s := first; s <= seq; s++ {
			tr.deltas[step] = append(tr.deltas[step], s)
		}
	case "stage_completed":
		if n := tr.texts[step].Len(); float64(n) != d["output_bytes"] {
			tr.t.Fatalf("%s: streamed %d bytes, output_bytes %v", step, n, d["output_bytes"])
		}
	case "run_completed", "run_failed", "run_cancelled":
		tr.terminal = d
	}
}

// interleaved reports two steps each of which streamed a delta between
// the other's first and last delta (their streams overlapped in the log).
func (tr *stepTranscript) interleaved(steps []string) (a, b string, ok bool) {
	inside := func(x, y string) bool { // a delta of x strictly inside y's span
		ys := tr.deltas[y]
		if len(ys) == 0 {
			return false
		}
		for _, s := range tr.deltas[x] {
			if s > ys[0] && s < ys[len(ys)-1] {
				return true
			}
		}
		return false
	}
	for i, x := range steps {
		for _, y := range steps[i+1:] {
			if inside(x, y) && inside(y, x) {
				return x, y, true
			}
		}
	}
	return "", "", false
}

// keyed is an HTTP request with the tenant's key.
func keyed(t *testing.T, method, url, key, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// streamRun posts a run with "stream": true and reads its SSE stream
// (bufio.Scanner with its default buffer, as readSSE does) to the end.
func streamRun(t *testing.T, base, key, profile string) (string, *stepTranscript) {
	t.Helper()
	resp := keyed(t, "POST", base+"/v1/runs", key, fmt.Sprintf(`{"query":"Why do parallel models help?","profile":%q,"stream":true,"seed":7}`, profile))
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST %s run: HTTP %d", profile, resp.StatusCode)
	}
	id := resp.Header.Get("X-QLC-Run-Id")
	tr := newStepTranscript(t)
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		if ev.Event != ev.Data["type"] {
			t.Fatalf("SSE event %q, data type %v", ev.Event, ev.Data["type"])
		}
		tr.add(ev.Data)
		return true
	})
	if tr.terminal == nil {
		t.Fatalf("%s: the stream ended without a terminal event: %v", profile, tr.types)
	}
	return id, tr
}

// wsRun reads a run's events over WebSocket from seq 1.
func wsRun(t *testing.T, base, key, id string) *stepTranscript {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/runs/"+id+"/ws?from_seq=1",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + key}}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	tr := newStepTranscript(t)
	for tr.terminal == nil {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("WebSocket read after %d events: %v", len(tr.types), err)
		}
		var d map[string]any
		if err := json.Unmarshal(msg, &d); err != nil {
			t.Fatal(err)
		}
		tr.add(d)
	}
	return tr
}

func keyedRun(t *testing.T, base, key, id string) runView {
	t.Helper()
	var v runView
	if code, _ := call(t, "GET", base+"/v1/runs/"+id, key, "", &v); code != http.StatusOK {
		t.Fatalf("GET run %s: HTTP %d", id, code)
	}
	return v
}

// checkSteps fails the test unless every step's text rebuilt from tr is
// the resource's output of that step, and every streamed step is one of
// the resource's.
func checkSteps(t *testing.T, what string, tr *stepTranscript, v runView) {
	t.Helper()
	known := map[string]bool{}
	for _, s := range v.Steps {
		known[s.ID] = true
		if got := tr.text(s.ID); got != s.Output {
			t.Errorf("%s: step %s: rebuilt %d bytes from the deltas, the resource has %d", what, s.ID, len(got), len(s.Output))
		}
		if role, ok := tr.stage[s.ID]; ok && role != s.Stage {
			t.Errorf("%s: step %s streamed as a %s, the resource says %s", what, s.ID, role, s.Stage)
		}
	}
	for id := range tr.texts {
		if !known[id] {
			t.Errorf("%s: step %s streamed but is not in the resource", what, id)
		}
	}
}

// stepByID returns the resource's step id.
func stepByID(t *testing.T, v runView, id string) stepView {
	t.Helper()
	for _, s := range v.Steps {
		if s.ID == id {
			return s
		}
	}
	t.Fatalf("run %s has no step %s (steps %v)", v.ID, id, v.Steps)
	return stepView{}
}

// usageOf waits for the ledger's record of run id.
func usageOf(t *testing.T, base, key, id string) store.Usage {
	t.Helper()
	var rec store.Usage
	waitUntil(t, "the usage record of "+id, func() bool {
		var out struct{ Data []store.Usage }
		call(t, "GET", base+"/v1/usage", key, "", &out)
		for _, u := range out.Data {
			if u.RunID == id {
				rec = u
				return true
			}
		}
		return false
	})
	return rec
}

// checkUsageRows: the ledger has a row per billed step, named by step,
// each equal to the resource's step usage and cost, adding up to the run.
func checkUsageRows(t *testing.T, v runView, rec store.Usage) {
	t.Helper()
	var prompt, completion int64
	var cost float64
	rows := map[string]store.StageUsage{}
	for _, r := range rec.Stages {
		if r.Step == "" || rows[r.Step].Step != "" {
			t.Fatalf("run %s: a row without a step or twice: %+v", v.ID, rec.Stages)
		}
		rows[r.Step] = r
		prompt, completion, cost = prompt+r.PromptTokens, completion+r.CompletionTokens, cost+r.CostUSD
	}
	if prompt != rec.PromptTokens || completion != rec.CompletionTokens || math.Abs(cost-rec.CostUSD) > 1e-9 {
		t.Errorf("run %s: rows add up to %d+%d tokens, $%v; the record says %d+%d, $%v", v.ID, prompt, completion, cost, rec.PromptTokens, rec.CompletionTokens, rec.CostUSD)
	}
	for _, s := range v.Steps {
		r, ok := rows[s.ID]
		if s.Usage == nil {
			if ok {
				t.Errorf("run %s: step %s has a row %+v but no usage in the resource", v.ID, s.ID, r)
			}
			continue
		}
		if !ok || r.Stage != s.Stage || r.PromptTokens != s.Usage.PromptTokens || r.CompletionTokens != s.Usage.CompletionTokens ||
			r.CostUSD != s.CostUSD || r.Status != s.Status || r.Model != s.Model {
			t.Errorf("run %s: step %s: row %+v, resource usage %+v cost %v status %s model %s", v.ID, s.ID, r, *s.Usage, s.CostUSD, s.Status, s.Model)
		}
	}
}

// TestStrategyRunsStreamEveryStep: a moa, a council and a vote run, each
// posted with "stream": true and read over SSE, then replayed over
// WebSocket: run_planned comes first; every step's text rebuilt from its
// deltas by step id is the resource's output of the step; the moa's
// proposers' deltas interleave; the resource names every step with its
// usage and cost, the council's rankings and the vote's tally; the ledger
// has a row per step.
func TestStrategyRunsStreamEveryStep(t *testing.T) {
	g := startTenantGatewayProfiles(t, strategyGatewayProfiles(t), nil)
	key := g.Dev.TenantKey
	for _, c := range []struct {
		profile string
		steps   []string // planned, in order
		final   string
	}{
		{"moa", []string{"p1.1", "p1.2", "p1.3", "aggregator"}, "aggregator"},
		{"council", []string{"m1", "m2", "m3", "r1", "r2", "r3", "chairman"}, "chairman"},
		{"council-sim", []string{"m1", "m2", "m3", "r1", "r2", "r3", "chairman"}, "chairman"},
		{"vote", []string{"s1", "s2", "s3", "answer"}, "answer"},
	} {
		t.Run(c.profile, func(t *testing.T) {
			id, live := streamRun(t, g.URL, key, c.profile)
			if live.types[0] != "run_planned" {
				t.Fatalf("first event %s, want run_planned", live.types[0])
			}
			plan := live.events[0]
			var planned []string
			for _, s := range plan["steps"].([]any) {
				planned = append(planned, s.(map[string]any)["step"].(string))
			}
			if !strings.HasPrefix(c.profile, plan["strategy"].(string)) || !slices.Equal(planned, c.steps) {
				t.Fatalf("run_planned %v", plan)
			}
			if live.terminal["type"] != "run_completed" {
				t.Fatalf("run ended %v", live.terminal)
			}
			v := keyedRun(t, g.URL, key, id)
			if v.Strategy != plan["strategy"] || len(v.Stages) != 0 || v.Status != "completed" {
				t.Fatalf("resource: strategy %q, %d stages, status %s", v.Strategy, len(v.Stages), v.Status)
			}
			var ids []string
			for _, s := range v.Steps {
				ids = append(ids, s.ID)
			}
			if !slices.Equal(ids, c.steps) {
				t.Fatalf("resource steps %v, want %v", ids, c.steps)
			}
			checkSteps(t, "live SSE", live, v)
			checkSteps(t, "WebSocket", wsRun(t, g.URL, key, id), v)
			final := stepByID(t, v, c.final)
			if !final.Final || final.Output != v.Answer || v.Answer == "" || float64(len(v.Answer)) != live.terminal["answer_bytes"] {
				t.Fatalf("final step %s (final %v, %d bytes), answer %d bytes", final.ID, final.Final, len(final.Output), len(v.Answer))
			}
			// stage_started marks the final step, and only it.
			for _, d := range live.events {
				if d["type"] == "stage_started" && (d["final"] == true) != (d["step"] == c.final) {
					t.Errorf("stage_started %v: final %v", d["step"], d["final"])
				}
			}
			for _, s := range v.Steps {
				if s.Status != "completed" || s.Title == "" || s.Inputs == nil || s.Attempts != 1 {
					t.Errorf("step %+v", s)
				}
				if s.Provider == "qlc" { // a tally: no model call, no bill
					if s.Usage != nil || s.Stage != "tally" {
						t.Errorf("tally step %+v", s)
					}
					continue
				}
				if s.Usage == nil || s.Usage.CompletionTokens == 0 || s.Tokens != s.Usage.CompletionTokens || s.CostUSD <= 0 || s.DurationMs <= 0 {
					t.Errorf("step %s: tokens %d, usage %+v, cost %v, duration %v", s.ID, s.Tokens, s.Usage, s.CostUSD, s.DurationMs)
				}
			}
			switch c.profile {
			case "moa":
				if a, b, ok := live.interleaved([]string{"p1.1", "p1.2", "p1.3"}); !ok {
					t.Errorf("the proposers' deltas did not interleave: %v", live.deltas)
				} else {
					t.Logf("%s and %s streamed into each other's span", a, b)
				}
				if agg := stepByID(t, v, "aggregator"); !slices.Equal(agg.Inputs, []string{"p1.1", "p1.2", "p1.3"}) || agg.MinInputs != 3 {
					t.Errorf("aggregator inputs %v min %d", agg.Inputs, agg.MinInputs)
				}
				if p := stepByID(t, v, "p1.2"); p.Layer != 1 || p.Title != "Proposer 1.2" || p.Model != "sim-medium" {
					t.Errorf("p1.2: %+v", p)
				}
			case "council":
				// Every ranking event is in the resource: the aggregate
				// as the run's, each ranker's on its step.
				var aggregate []any
				rankings := 0
				for _, d := range live.events {
					if d["type"] != "ranking" {
						continue
					}
					got := v.Ranking
					if d["aggregate"] != true {
						got = stepByID(t, v, d["step"].(string)).Ranking
						rankings++
					} else {
						aggregate = d["ranked"].([]any)
					}
					want := d["ranked"].([]any)
					if len(got) != len(want) {
						t.Fatalf("ranking %v; resource %v", d, got)
					}
					for i, w := range want {
						w := w.(map[string]any)
						if got[i].Step != w["step"] || got[i].Label != w["label"] || got[i].AverageRank != w["average_rank"] || float64(got[i].Votes) != w["votes"] {
							t.Fatalf("ranking %v; resource %v", d, got)
						}
					}
				}
				if len(aggregate) != 3 || rankings != 3 {
					t.Errorf("aggregate %v, %d rankers' rankings", aggregate, rankings)
				}
				if best := v.Ranking[0]; best.Label != "B" || best.AverageRank != 1 || best.Votes != 3 {
					t.Errorf("aggregate ranking %+v: every ranker put B first", v.Ranking)
				}
				if r := stepByID(t, v, "r2"); r.Stage != "ranker" || len(r.Inputs) != 3 || r.Title != "Ranker 2" {
					t.Errorf("r2: %+v", r)
				}
			case "council-sim":
				if rankings := len(v.Ranking); rankings == 0 && countNotes(live, "ranking_unparsed") == 0 {
					t.Errorf("no ranking and no ranking_unparsed note")
				}
			case "vote":
				if a := stepByID(t, v, "answer"); a.Provider != "qlc" || a.Title != "Answer" || !strings.HasPrefix(a.Model, "majority:") || a.Note == "" {
					t.Errorf("answer: %+v", a)
				}
			}
			// Every step_note is on its step.
			for _, d := range live.events {
				if d["type"] != "step_note" {
					continue
				}
				s := stepByID(t, v, d["step"].(string))
				if !slices.ContainsFunc(s.Notes, func(n noteView) bool { return n.Kind == d["kind"] && n.Message == d["message"] && n.Raw == d["raw"] }) {
					t.Errorf("step_note %v is not in its step's notes %+v", d, s.Notes)
				}
			}
			rec := usageOf(t, g.URL, key, id)
			checkUsageRows(t, v, rec)
			if done := live.terminal["usage"].(map[string]any); float64(rec.TotalTokens) != done["total_tokens"] {
				t.Errorf("ledger total %d, run_completed usage %v", rec.TotalTokens, done)
			}
		})
	}
}

func countNotes(tr *stepTranscript, kind string) int {
	n := 0
	for _, d := range tr.events {
		if d["type"] == "step_note" && d["kind"] == kind {
			n++
		}
	}
	return n
}

// TestChainRunKeepsItsEvents: a chain run has no run_planned; its stage
// events carry step = the stage's name (and final on the curator's
// start); the resource keeps its stages and has the same four as steps;
// the ledger's rows are per stage, named by step.
func TestChainRunKeepsItsEvents(t *testing.T) {
	g := startTenantGatewayProfiles(t, strategyGatewayProfiles(t), nil)
	key := g.Dev.TenantKey
	id, tr := streamRun(t, g.URL, key, "chain")
	for _, d := range tr.events {
		switch d["type"] {
		case "run_planned", "step_skipped", "ranking", "step_note":
			t.Fatalf("a chain run logged %v", d)
		case "stage_started":
			if (d["final"] == true) != (d["stage"] == "curator") {
				t.Errorf("stage_started %v", d)
			}
		}
		if s, ok := d["step"]; ok && s != d["stage"] {
			t.Errorf("chain event %v: step is not the stage", d)
		}
	}
	v := keyedRun(t, g.URL, key, id)
	if v.Strategy != "chain" || len(v.Stages) != 4 || len(v.Steps) != 4 {
		t.Fatalf("resource: strategy %q, %d stages, %d steps", v.Strategy, len(v.Stages), len(v.Steps))
	}
	checkSteps(t, "chain SSE", tr, v)
	for i, st := range v.Stages {
		s := v.Steps[i]
		if s.ID != st.Stage || s.Stage != st.Stage || s.Output != st.Output || s.Status != st.Status || s.Tokens != st.Tokens ||
			*s.Usage != *st.Usage || s.Model != st.Model || s.Final != (st.Stage == "curator") {
			t.Errorf("step %+v, stage %+v", s, st)
		}
	}
	checkUsageRows(t, v, usageOf(t, g.URL, key, id))
}

// TestSkippedAndCancelledStepsAreBilledPerStep: a proposer left out at its
// deadline has its own row with what its cut-off attempt used; a run
// cancelled while three proposers stream bills each of them (the cancel's
// usage split between them), and the rows add up to the run's total.
func TestSkippedAndCancelledStepsAreBilledPerStep(t *testing.T) {
	g := startTenantGatewayProfiles(t, strategyGatewayProfiles(t), nil)
	key := g.Dev.TenantKey

	id, tr := streamRun(t, g.URL, key, "straggler")
	if tr.terminal["type"] != "run_completed" {
		t.Fatalf("straggler run ended %v", tr.terminal)
	}
	var skipped map[string]any
	for _, d := range tr.events {
		if d["type"] == "step_skipped" {
			skipped = d
		}
	}
	if skipped == nil || skipped["step"] != "p1.2" || skipped["code"] != "deadline" || skipped["stage"] != "proposer" {
		t.Fatalf("step_skipped %v", skipped)
	}
	v := keyedRun(t, g.URL, key, id)
	checkSteps(t, "straggler", tr, v)
	p := stepByID(t, v, "p1.2")
	if p.Status != "skipped" || p.Skipped == nil || p.Skipped.Code != "deadline" || p.Skipped.Reason != skipped["reason"] {
		t.Fatalf("skipped step %+v", p)
	}
	rec := usageOf(t, g.URL, key, id)
	checkUsageRows(t, v, rec)
	if u := skipped["usage"]; u != nil {
		if p.Usage == nil || float64(p.Usage.PromptTokens) != u.(map[string]any)["prompt_tokens"] {
			t.Errorf("skipped step's usage %+v, its event's %v", p.Usage, u)
		}
	}

	// Cancelled while the proposers stream.
	var run runView
	if code, _ := call(t, "POST", g.URL+"/v1/runs", key, `{"query":"q","profile":"crawl"}`, &run); code != http.StatusCreated {
		t.Fatalf("POST: %d", code)
	}
	waitUntil(t, "every proposer streaming", func() bool {
		v := keyedRun(t, g.URL, key, run.ID)
		for _, s := range v.Steps[:3] {
			if s.Tokens < 3 {
				return false
			}
		}
		return true
	})
	if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+run.ID, key, "", &run); code != http.StatusOK {
		t.Fatalf("DELETE: %d", code)
	}
	v = keyedRun(t, g.URL, key, run.ID)
	rec = usageOf(t, g.URL, key, run.ID)
	if v.Status != "cancelled" || rec.Status != "cancelled" {
		t.Fatalf("status %s, record %s", v.Status, rec.Status)
	}
	checkUsageRows(t, v, rec)
	for _, id := range []string{"p1.1", "p1.2", "p1.3"} {
		s := stepByID(t, v, id)
		if s.Status != "cancelled" || s.Usage == nil || s.Usage.PromptTokens == 0 || s.Usage.CompletionTokens == 0 || !s.Usage.Estimated {
			t.Errorf("cancelled proposer %s: %+v usage %+v", id, s, s.Usage)
		}
	}
	if a := stepByID(t, v, "aggregator"); a.Status != "pending" || a.Usage != nil {
		t.Errorf("aggregator %+v", a)
	}
}

// TestProfilesListSteps: /v1/profiles shows each profile's strategy and
// steps; a chain's stages stay as they were.
func TestProfilesListSteps(t *testing.T) {
	g := startGateway(t, strategyGatewayProfiles(t), nil)
	var out struct {
		Data []profileView
	}
	if code := do(t, "GET", g.URL+"/v1/profiles", "", &out); code != http.StatusOK {
		t.Fatal(code)
	}
	by := map[string]profileView{}
	for _, p := range out.Data {
		by[p.Name] = p
	}
	chain, moa, vote := by["chain"], by["moa"], by["vote"]
	if chain.Strategy != "chain" || len(chain.Stages) != 4 || len(chain.Steps) != 4 || chain.Steps[3].ID != "curator" || !chain.Steps[3].Final ||
		!slices.Equal(chain.Steps[1].Inputs, []string{"generator"}) {
		t.Fatalf("chain: %+v", chain)
	}
	if moa.Strategy != "moa" || len(moa.Stages) != 0 || len(moa.Steps) != 4 || moa.Steps[0].Title != "Proposer 1.1" || moa.Steps[0].Layer != 1 ||
		moa.Steps[3].ID != "aggregator" || len(moa.Steps[3].Inputs) != 3 || !moa.Steps[3].Final {
		t.Fatalf("moa: %+v", moa)
	}
	if last := vote.Steps[len(vote.Steps)-1]; last.ID != "answer" || last.Stage != "tally" || last.Method != "majority" {
		t.Fatalf("vote: %+v", vote)
	}
	if s := by["straggler"].Steps[1]; s.DeadlineMs != 300 {
		t.Fatalf("straggler p1.2: %+v", s)
	}
}
