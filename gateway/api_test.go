package gateway

import (
	"encoding/json"

	"context"
	"fmt"
	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/tokenizer"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
)

// stageTexts rebuilds each stage's text from an event stream, honouring
// restarts and coalesced deltas, and checks seqs have no gap or repeat.
type transcript struct {
	t        *testing.T
	next     uint64
	partEnd  float64 // text bytes of seq next received in parts so far
	texts    map[string]*strings.Builder
	partial  map[string]bool // stages joined mid-way (a resumed stream): their text is a tail
	types    []string
	terminal map[string]any
}

func newTranscript(t *testing.T, from uint64) *transcript {
	return &transcript{t: t, next: from, texts: map[string]*strings.Builder{}, partial: map[string]bool{}}
}

func (tr *transcript) add(d map[string]any) {
	tr.t.Helper()
	seq := uint64(d["seq"].(float64))
	first := seq
	if f, ok := d["from_seq"]; ok {
		first = uint64(f.(float64))
	}
	if part, ok := d["part"].(map[string]any); ok {
		// A part of a split delta: parts of seq next come in order.
		if seq != tr.next || part["offset"] != tr.partEnd || d["type"] != "token_delta" {
			tr.t.Fatalf("part %v of seq %d, want seq %d from byte %v", part, seq, tr.next, tr.partEnd)
		}
		tr.partEnd = part["end"].(float64)
		if tr.partEnd < part["size"].(float64) {
			stage := d["stage"].(string)
			if tr.texts[stage] == nil {
				tr.texts[stage] = &strings.Builder{}
				tr.partial[stage] = true
			}
			tr.texts[stage].WriteString(d["text"].(string))
			return
		}
		tr.partEnd, first = 0, seq // the last part completes the event
	}
	if first != tr.next || tr.partEnd != 0 {
		tr.t.Fatalf("event %s covers seq %d..%d, want it to start at %d (byte %v)", d["type"], first, seq, tr.next, tr.partEnd)
	}
	tr.next = seq + 1
	typ := d["type"].(string)
	tr.types = append(tr.types, typ)
	stage, _ := d["stage"].(string)
	if stage != "" && tr.texts[stage] == nil {
		tr.texts[stage] = &strings.Builder{}
		tr.partial[stage] = typ != "stage_started"
	}
	switch typ {
	case "stage_started", "stage_restarted":
		tr.texts[stage].Reset()
		tr.partial[stage] = false
	case "token_delta":
		tr.texts[stage].WriteString(d["text"].(string))
	case "stage_completed":
		if _, ok := d["output"]; ok {
			tr.t.Fatalf("%s: stage_completed repeats the output", stage)
		}
		if n := tr.texts[stage].Len(); float64(n) != d["output_bytes"] && !tr.partial[stage] {
			tr.t.Fatalf("%s: streamed %d bytes, output_bytes %v", stage, n, d["output_bytes"])
		}
	case "run_completed", "run_failed", "run_cancelled":
		tr.terminal = d
	}
}

func TestRunOverSSE(t *testing.T) {
	base := newTestGateway(t, "")
	id := createRun(t, base, "instant", "How does TCP congestion control work?")
	resp, err := http.Get(base + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for h, want := range map[string]string{"Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no", "Cache-Control": "no-cache"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	tr := newTranscript(t, 1)
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		if ev.ID != strconv.FormatUint(uint64(ev.Data["seq"].(float64)), 10) || ev.Event != ev.Data["type"] {
			t.Fatalf("SSE id/event %q/%q disagree with data %v", ev.ID, ev.Event, ev.Data)
		}
		tr.add(ev.Data)
		return true
	})
	if tr.terminal == nil || tr.terminal["type"] != "run_completed" {
		t.Fatalf("stream ended without run_completed: %v", tr.types)
	}
	var v runView
	if code := do(t, "GET", base+"/v1/runs/"+id, "", &v); code != 200 {
		t.Fatalf("GET run: %d", code)
	}
	if v.Status != "completed" || len(v.Stages) != 4 || v.Answer == "" || v.Answer != tr.texts["curator"].String() ||
		float64(len(v.Answer)) != tr.terminal["answer_bytes"] || v.Usage == nil {
		t.Fatalf("run view: %+v", v)
	}
	for _, s := range v.Stages {
		if s.Status != "completed" || s.Output != tr.texts[s.Stage].String() || s.Usage == nil || s.Tokens != s.Usage.CompletionTokens {
			t.Fatalf("stage %s: %+v", s.Stage, s)
		}
	}
	if v.LastSeq != tr.next-1 {
		t.Fatalf("last_seq %d, stream ended at %d", v.LastSeq, tr.next-1)
	}
}

// TestStreamedCreate: POST /v1/runs with "stream": true answers with the
// run's whole event stream, the same as GET …/events would.
func TestStreamedCreate(t *testing.T) {
	base := newTestGateway(t, "")
	resp, err := http.Post(base+"/v1/runs", "application/json", strings.NewReader(`{"query":"What is a vector clock?","profile":"instant","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := resp.Header.Get("X-QLC-Run-Id")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" || id == "" || resp.Header.Get("Location") != "/v1/runs/"+id {
		t.Fatalf("streamed create: %d %v", resp.StatusCode, resp.Header)
	}
	tr := newTranscript(t, 1)
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		tr.add(ev.Data)
		return true
	})
	if tr.terminal == nil || tr.terminal["type"] != "run_completed" {
		t.Fatalf("streamed create ended without run_completed: %v", tr.types)
	}
	var v runView
	if code := do(t, "GET", base+"/v1/runs/"+id, "", &v); code != 200 || v.Answer != tr.texts["curator"].String() || v.LastSeq != tr.next-1 {
		t.Fatalf("the run behind the stream: %d %+v", code, v)
	}
}

func TestSSEResumesAfterLastEventID(t *testing.T) {
	base := newTestGateway(t, "")
	id := createRun(t, base, "instant", "q")
	var v runView
	waitStatus(t, base, id, "completed", &v)
	for _, from := range []uint64{1, 2, 17, v.LastSeq} {
		req, _ := http.NewRequest("GET", base+"/v1/runs/"+id+"/events", nil)
		req.Header.Set("Last-Event-ID", strconv.FormatUint(from-1, 10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		tr := newTranscript(t, from)
		readSSE(t, resp.Body, func(ev sseEvent) bool { tr.add(ev.Data); return true })
		resp.Body.Close()
		if tr.next != v.LastSeq+1 {
			t.Fatalf("resume after %d ended at %d, want %d", from-1, tr.next, v.LastSeq+1)
		}
	}
	// ?from_seq= works the same way.
	resp, _ := http.Get(base + "/v1/runs/" + id + "/events?from_seq=" + strconv.FormatUint(v.LastSeq, 10))
	n := 0
	readSSE(t, resp.Body, func(ev sseEvent) bool { n++; return ev.Data["type"] != "run_completed" })
	resp.Body.Close()
	if n != 1 {
		t.Fatalf("from_seq=last returned %d events", n)
	}
}

func waitStatus(t *testing.T, base, id, want string, v *runView) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		do(t, "GET", base+"/v1/runs/"+id, "", v)
		if v.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s status %q, want %q", id, v.Status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRunOverWebSocket(t *testing.T) {
	base := newTestGateway(t, "")
	id := createRun(t, base, "instant", "q")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, from := range []uint64{1, 5} {
		c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/runs/"+id+"/ws?from_seq="+strconv.FormatUint(from, 10), nil)
		if err != nil {
			t.Fatal(err)
		}
		tr := newTranscript(t, from)
		for tr.terminal == nil {
			var d map[string]any
			if err := wsjson.Read(ctx, c, &d); err != nil {
				t.Fatalf("ws read after %v: %v", tr.types, err)
			}
			tr.add(d)
		}
		_, _, err = c.Read(ctx)
		if websocket.CloseStatus(err) != websocket.StatusNormalClosure {
			t.Fatalf("want a normal close after the run ended, got %v", err)
		}
		if tr.terminal["type"] != "run_completed" {
			t.Fatalf("ws ended with %v", tr.terminal)
		}
	}
}

func TestCancelRun(t *testing.T) {
	base := newTestGateway(t, "")
	id := createRun(t, base, "slow", "q")
	resp, err := http.Get(base + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	deltas := 0
	tr := newTranscript(t, 1)
	cancelled := false
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		tr.add(ev.Data)
		if ev.Data["type"] == "token_delta" {
			deltas++
			if deltas == 3 && !cancelled {
				cancelled = true
				var v runView
				if code := do(t, "DELETE", base+"/v1/runs/"+id, "", &v); code != 200 || v.Status != "cancelled" {
					t.Errorf("DELETE: %d %q", code, v.Status)
				}
			}
		}
		return true
	})
	if tr.terminal == nil || tr.terminal["type"] != "run_cancelled" {
		t.Fatalf("stream should end with run_cancelled: %v", tr.types)
	}
	var e struct{ Error apiError }
	if code := do(t, "DELETE", base+"/v1/runs/"+id, "", &e); code != http.StatusConflict || e.Error.Code != "run_finished" {
		t.Fatalf("second DELETE: %d %+v", code, e.Error)
	}
}

func TestBadInput(t *testing.T) {
	g := startGateway(t, "", func(c *Config, _ *actors.Config) { c.MaxQueryBytes = 100; c.MaxBodyBytes = 4096 })
	base := g.URL
	long := strings.Repeat("x", 101)
	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		code                            string
	}{
		{"malformed json", "POST", "/v1/runs", `{"query": "x"`, "", 400, "invalid_json"},
		{"not an object", "POST", "/v1/runs", `[1,2]`, "", 400, "invalid_json"},
		{"trailing data", "POST", "/v1/runs", `{"query":"x"} {}`, "", 400, "invalid_json"},
		{"empty body", "POST", "/v1/runs", ``, "", 400, "empty_body"},
		{"unknown field", "POST", "/v1/runs", `{"query":"x","qurey":"y"}`, "", 400, "unknown_field"},
		{"wrong type", "POST", "/v1/runs", `{"query":5}`, "", 400, "invalid_type"},
		{"unknown profile", "POST", "/v1/runs", `{"query":"x","profile":"nope"}`, "", 404, "unknown_profile"},
		{"empty query", "POST", "/v1/runs", `{"query":"  "}`, "", 400, "empty_query"},
		{"oversized query", "POST", "/v1/runs", `{"query":"` + long + `"}`, "", 400, "query_too_long"},
		{"oversized body", "POST", "/v1/runs", `{"query":"x","profile":"` + strings.Repeat("p", 5000) + `"}`, "", 413, "body_too_large"},
		{"bad max_tokens", "POST", "/v1/runs", `{"query":"x","max_tokens":-1}`, "", 400, "invalid_max_tokens"},
		{"wrong content type", "POST", "/v1/runs", `{"query":"x"}`, "text/plain", 415, "unsupported_media_type"},
		{"unknown run", "GET", "/v1/runs/run_nope", "", "", 404, "run_not_found"},
		{"unknown run events", "GET", "/v1/runs/run_nope/events", "", "", 404, "run_not_found"},
		{"unknown run ws", "GET", "/v1/runs/run_nope/ws", "", "", 404, "run_not_found"},
		{"cancel unknown run", "DELETE", "/v1/runs/run_nope", "", "", 404, "run_not_found"},
		{"unknown endpoint", "GET", "/v1/nothing", "", "", 404, "unknown_endpoint"},
		{"chat: unknown model", "POST", "/v1/chat/completions", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`, "", 404, "model_not_found"},
		{"chat: no messages", "POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[]}`, "", 400, "empty_messages"},
		{"chat: last not user", "POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]}`, "", 400, "last_message_not_user"},
		{"chat: bad role", "POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"wizard","content":"hi"}]}`, "", 400, "invalid_role"},
		{"chat: image part", "POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}`, "", 400, "invalid_content"},
		{"chat: n=2", "POST", "/v1/chat/completions", `{"model":"qlc-instant","n":2,"messages":[{"role":"user","content":"hi"}]}`, "", 400, "unsupported_n"},
		{"chat: long conversation", "POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"system","content":"` + long + `"},{"role":"user","content":"hi"}]}`, "", 400, "query_too_long"},
		{"chat: malformed", "POST", "/v1/chat/completions", `{"model":`, "", 400, "invalid_json"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		ct := c.ctype
		if ct == "" && c.body != "" {
			ct = "application/json"
		}
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var e struct{ Error apiError }
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(data, &e); err != nil || resp.StatusCode != c.status || e.Error.Code != c.code || e.Error.Message == "" || e.Error.Type == "" {
			t.Errorf("%s: HTTP %d %s, want %d with code %q", c.name, resp.StatusCode, data, c.status, c.code)
		}
	}
	// The server still serves, and runs are unaffected.
	id := createRun(t, base, "instant", "still here?")
	var v runView
	waitStatus(t, base, id, "completed", &v)
}

func TestProfilesModelsHealthMetrics(t *testing.T) {
	g := startGateway(t, "", nil)
	base := g.URL
	var p struct {
		Default string
		Data    []profileView
	}
	if do(t, "GET", base+"/v1/profiles", "", &p); p.Default != "instant" || len(p.Data) != 2 || len(p.Data[0].Stages) != 4 {
		t.Fatalf("profiles: %+v", p)
	}
	var m struct {
		Object string
		Data   []struct{ ID, Object string }
	}
	if do(t, "GET", base+"/v1/models", "", &m); m.Object != "list" || len(m.Data) != 4 || m.Data[0].ID != "qlc-instant" || m.Data[1].ID != "qlc-slow" {
		t.Fatalf("models: %+v", m)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code := do(t, "GET", base+path, "", nil); code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
	}
	id := createRun(t, base, "instant", "q")
	var v runView
	waitStatus(t, base, id, "completed", &v)
	// Metrics are on the ops handler; the public one has no keys here, so
	// no metrics at all.
	if code := do(t, "GET", base+"/metrics", "", nil); code != http.StatusNotFound {
		t.Fatalf("/metrics on the public handler without tenancy: %d; want 404", code)
	}
	resp, err := http.Get(g.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`qlc_runs_total{outcome="completed",profile="instant"} 1`,
		`qlc_stage_duration_seconds_count{stage="curator"} 1`,
		`qlc_stage_ttft_seconds_count{stage="generator"} 1`,
		fmt.Sprintf(`qlc_tokens_streamed_total{stage="generator"} %d`, v.Stages[0].Tokens),
		"qlc_active_runs 0", "qlc_subscribers 0", "qlc_subscribers_dropped_total 0",
		`qlc_provider_breaker_state{provider="sim"} 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestIdleStreamGetsPings(t *testing.T) {
	g := startGateway(t, `
providers:
  sleepy: {kind: sim, sim: {ttft: 300ms, output_tokens: 3}}
profiles:
  sleepy:
    provider: sleepy
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`, func(c *Config, _ *actors.Config) { c.PingInterval = 20 * time.Millisecond })
	id := createRun(t, g.URL, "sleepy", "q")
	resp, err := http.Get(g.URL + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pings := 0
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		if ev.Comment == "ping" && ev.Data == nil {
			pings++
		}
		return ev.Data["type"] != "run_completed"
	})
	if pings < 2 {
		t.Fatalf("got %d pings while the stages waited for their first tokens", pings)
	}
}

func TestTokenize(t *testing.T) {
	for _, withActors := range []bool{true, false} {
		g := startGateway(t, "", func(_ *Config, e *actors.Config) { e.Tokenizer = withActors })
		var out struct {
			Tokens      []int
			Count       int
			Encoding    string
			Approximate bool
			Label       string
			ServedBy    string `json:"served_by"`
		}
		text := "Hello, 世界! QLC counts tokens exactly."
		if code := do(t, "POST", g.URL+"/v1/tokenize", `{"model":"gpt-4o","text":"`+text+`"}`, &out); code != 200 {
			t.Fatalf("tokenize: %d", code)
		}
		enc, _ := tokenizer.Get(tokenizer.O200kBase)
		want, _ := enc.Encode(text)
		if out.Count != len(want) || len(out.Tokens) != len(want) || out.Encoding != "o200k_base" || out.Approximate {
			t.Fatalf("tokenize gpt-4o: %+v, want %v", out, want)
		}
		for i := range want {
			if out.Tokens[i] != want[i] {
				t.Fatalf("token %d: %d, want %d", i, out.Tokens[i], want[i])
			}
		}
		if wantServed := map[bool]string{true: "nonhost", false: "local-fallback"}[withActors]; out.ServedBy != wantServed {
			t.Fatalf("served by %q, want %q", out.ServedBy, wantServed)
		}
		do(t, "POST", g.URL+"/v1/tokenize", `{"model":"llama-3.1-70b","text":"hi there"}`, &out)
		if !out.Approximate || !strings.Contains(out.Label, "approximate") {
			t.Fatalf("a non-OpenAI model must be labelled approximate: %+v", out)
		}
		var e struct{ Error apiError }
		if code := do(t, "POST", g.URL+"/v1/tokenize", `{"encoding":"p50k","text":"x"}`, &e); code != 400 || e.Error.Code != "tokenize_failed" {
			t.Fatalf("unknown encoding: %d %+v", code, e.Error)
		}
		if code := do(t, "POST", g.URL+"/v1/tokenize", `{"text":"x"}`, &e); code != 400 || e.Error.Code != "missing_model" {
			t.Fatalf("no model: %d %+v", code, e.Error)
		}
		// max_tokens: the text cut at a token boundary (FitToBudget).
		var fit struct {
			Text          string
			Count         int
			Truncated     bool
			OriginalCount int    `json:"original_count"`
			ServedBy      string `json:"served_by"`
		}
		if code := do(t, "POST", g.URL+"/v1/tokenize", `{"model":"gpt-4o","text":"`+text+`","max_tokens":3}`, &fit); code != 200 {
			t.Fatalf("fit: %d", code)
		}
		cut, _ := enc.Decode(want[:3])
		if !fit.Truncated || fit.Count != 3 || fit.OriginalCount != len(want) || fit.Text != string(cut) {
			t.Fatalf("fit to 3 tokens: %+v; want %q", fit, cut)
		}
		if wantServed := map[bool]string{true: "nonhost", false: "local-fallback"}[withActors]; fit.ServedBy != wantServed {
			t.Fatalf("fit served by %q, want %q", fit.ServedBy, wantServed)
		}
		if code := do(t, "POST", g.URL+"/v1/tokenize", `{"model":"gpt-4o","text":"x","max_tokens":-1}`, &e); code != 400 || e.Error.Code != "invalid_max_tokens" {
			t.Fatalf("negative max_tokens: %d %+v", code, e.Error)
		}
	}
}
