package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// FuzzDecodeRunRequest: any body either decodes into a request or yields a
// clear 4xx error; nothing panics.
func FuzzDecodeRunRequest(f *testing.F) {
	for _, s := range []string{
		`{"query":"What is Raft?","profile":"fast"}`, `{"query":"x","seed":-1,"max_tokens":5}`,
		`{"query":"x"} {}`, `{"query":5}`, `[]`, `null`, `{"query":"\ud800"}`, `{"qu`, "", "  ", `{"query":"a","extra":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req createRunRequest
		if e := decodeBody(body, &req, true); e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" || e.Type != "invalid_request_error" {
				t.Fatalf("unclear error for %q: %+v", body, e)
			}
			return
		}
		// Accepted: the body was one JSON object with known fields.
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", body, err)
		}
	})
}

// FuzzChatRequest: any chat completion body is either a valid run request
// or a clear error naming what is wrong.
func FuzzChatRequest(f *testing.F) {
	for _, s := range []string{
		`{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"qlc-instant","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],"stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"qlc-instant","messages":[{"role":"user","content":null}]}`,
		`{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}],"max_tokens":0}`,
		`{"model":"gpt-4","messages":[]}`, `{"model":"qlc-","messages":[{"role":"user","content":"x"}],"n":3}`,
	} {
		f.Add([]byte(s))
	}
	stages, err := stagework.ParseConfig([]byte(testProfiles))
	if err != nil {
		f.Fatal(err)
	}
	providers, _ := actors.BuildProviders(stages, nil)
	cfg := actors.DefaultConfig()
	cfg.Stages, cfg.Providers = stages, providers
	engine, err := actors.NewEngine(cfg)
	if err != nil {
		f.Fatal(err)
	}
	s, err := New(Config{Engine: engine, MaxQueryBytes: 1000})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { // goleak (main_test.go) holds every test to this
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		engine.Shutdown(ctx)
		_ = s.Close(ctx)
	})
	f.Fuzz(func(t *testing.T, body []byte) {
		var req chatRequest
		if e := decodeBody(body, &req, false); e != nil {
			if e.Status != 400 || e.Code == "" {
				t.Fatalf("unclear decode error: %+v", e)
			}
			return
		}
		p, e := s.parseChat(principal{}, &req)
		if e != nil {
			if e.Status < 400 || e.Status > 499 || e.Code == "" || e.Message == "" {
				t.Fatalf("unclear error: %+v", e)
			}
			return
		}
		if strings.TrimSpace(p.query) == "" || len(p.query) > 1000 || p.profile == "" {
			t.Fatalf("accepted a request with no usable question: %+v", p)
		}
		if _, err := stages.Profile(p.profile); err != nil {
			t.Fatalf("accepted an unknown profile %q", p.profile)
		}
	})
}

// FuzzEventJSON: every wire event the gateway writes is valid JSON no
// longer than the bound (framing included), and the texts of the wire
// events of a batch — deltas coalesced up to the bound (only a run of one
// step's deltas: parallel steps' deltas interleave), a long delta split
// into parts — decode to the deltas' texts (each delta sanitised on its own:
// invalid UTF-8 becomes U+FFFD), whether read whole or resumed after any
// part; a long reason is cut, never overflows; a plan or a ranking that
// does not fit is cut and says so. Inputs are repeated (rep) so that they
// pass the smallest bound.
func FuzzEventJSON(f *testing.F) {
	for _, s := range []string{"hello", "", "\"quote\" \\ back\n\t\r\x00\x1f", "日本語 🎉", "\u2028\u2029", "\xff\xfe broken \xe6\x97", "</script>"} {
		f.Add(s, "second", uint16(0))
		f.Add(s, "\x01", uint16(700))
	}
	f.Fuzz(func(t *testing.T, a, b string, rep uint16) {
		long := strings.Repeat(a, 1+int(rep)%512)
		proposer := messages.Stage_STAGE_PROPOSER
		model := a + long
		planned := func(n int) []*messages.PlannedStep { // a moa's plan with a fuzzed model name, n per layer
			var out []*messages.PlannedStep
			for l := 1; l <= 2; l++ {
				for i := 1; i <= n; i++ {
					out = append(out, &messages.PlannedStep{Step: fmt.Sprintf("p%d.%d", l, i), Stage: proposer, Model: model, Provider: b,
						Inputs: []string{"p1.1", b}, MinInputs: 1, Layer: int32(l)})
				}
			}
			return out
		}
		var ranked []*messages.RankedStep
		for i := 0; i < 16; i++ {
			ranked = append(ranked, &messages.RankedStep{Step: fmt.Sprintf("m%d", i+1), Label: stagework.Label(i), AverageRank: float64(i) + 1.0/3, Votes: int32(i)})
		}
		evs := []*messages.RunEvent{
			{Seq: 1, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 1, Text: a, Tokens: 1}}},
			{Seq: 2, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 1, Text: b, Tokens: 2}}},
			{Seq: 3, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 1, Text: long, Tokens: 3}}},
			{Seq: 4, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: 2, Text: b + long, Tokens: 4}}},
			// Parallel steps of one role: interleaved, never coalesced together.
			{Seq: 5, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: proposer, Step: "p1.1", Text: a, Tokens: 5}}},
			{Seq: 6, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: proposer, Step: "p1.2", Text: b, Tokens: 6}}},
			{Seq: 7, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: proposer, Step: "p1.2", Text: long, Tokens: 7}}},
			{Seq: 8, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: proposer, Step: "p1.1", Text: a, Tokens: 8}}},
			{Seq: 9, Kind: &messages.RunEvent_RunPlanned{RunPlanned: &messages.RunPlanned{Strategy: b, Steps: planned(1 + int(rep)%16)}}},
			{Seq: 10, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: proposer, Step: a, Model: model, Provider: b + long, Note: long + b, Final: true}}},
			{Seq: 11, Kind: &messages.RunEvent_StepSkipped{StepSkipped: &messages.StepSkipped{Step: a, Stage: proposer, Reason: a + b + long, Code: b,
				Usage: &messages.Usage{PromptTokens: 1}}}},
			{Seq: 12, Kind: &messages.RunEvent_Ranking{Ranking: &messages.Ranking{Step: a, Ranked: ranked[:1+int(rep)%16]}}},
			{Seq: 13, Kind: &messages.RunEvent_Ranking{Ranking: &messages.Ranking{Aggregate: true, Ranked: ranked}}},
			{Seq: 14, Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{Step: b, Kind: a, Message: a + long, Raw: b + long}}},
			{Seq: 15, Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{Stage: proposer, Step: b, Reason: long}}},
			{Seq: 16, Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{Stage: proposer, Step: b, Model: a, Output: long,
				Usage: &messages.Usage{PromptTokens: 1}, HedgeModel: model, HedgeUsage: &messages.Usage{PromptTokens: 2, TotalTokens: 2}}}},
			{Seq: 17, Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Reason: a + b + long, Code: b, Step: a, Stage: proposer}}},
		}
		const deltas, tokensAll = 8, 36
		want := map[uint64]string{}
		for _, ev := range evs[:deltas] {
			want[ev.Seq] = replaceInvalid(ev.GetTokenDelta().Text)
		}
		for _, max := range []int{MinMaxEventBytes, 4096, DefaultMaxEventBytes} {
			// read decodes the wire events of evs from off bytes into
			// evs[0]: the text and tokens read per seq, and the resume
			// points of the parts.
			type resume struct {
				seq uint64
				at  int
			}
			read := func(evs []*messages.RunEvent, off int) (text map[uint64]string, tokens map[uint64]int64, resumes []resume) {
				text, tokens = map[uint64]string{}, map[uint64]int64{}
				sp := spanner{evs: evs, off: off, budget: textBudget(max)}
				for s, ok := sp.next(); ok; s, ok = sp.next() {
					wire := appendSSEEvent(nil, evs, s, max)
					if len(wire) > max {
						t.Fatalf("bound %d: an SSE event of %d bytes", max, len(wire))
					}
					out := appendEventJSON(nil, evs, s, textBudget(max))
					var d struct {
						Seq     uint64
						Type    string
						FromSeq uint64 `json:"from_seq"`
						Step    *string
						Text    *string
						Tokens  int64
						Reason  string
						Part    *struct{ Offset, End, Size int }
						Steps   []map[string]any
						Ranked  []map[string]any
						Count   int  `json:"step_count"`
						Cut     bool `json:"truncated"`
					}
					if err := json.Unmarshal(out, &d); err != nil {
						t.Fatalf("invalid JSON %q: %v", out, err)
					}
					if !bytes.Contains(wire, out) {
						t.Fatalf("the SSE event does not carry the JSON")
					}
					if d.Type != eventType(evs[s.hi-1]) {
						t.Fatalf("type %q for a %T", d.Type, evs[s.hi-1].Kind)
					}
					switch d.Type {
					case evRunFailed, evStepSkipped:
						full := replaceInvalid(a + b + long)
						if d.Reason != full && !(strings.HasSuffix(d.Reason, "…") && strings.HasPrefix(full, strings.TrimSuffix(d.Reason, "…"))) {
							t.Fatalf("reason %q is not %q nor a prefix of it", d.Reason, full)
						}
						if d.Step == nil {
							t.Fatalf("%s without its step", d.Type)
						}
						continue
					case evRunPlanned:
						// Whole, or cut, and says so.
						n := len(evs[s.hi-1].GetRunPlanned().Steps)
						if len(d.Steps) != n && (!d.Cut || d.Count != n || len(d.Steps) > n) {
							t.Fatalf("bound %d: a plan of %d steps came with %d (truncated %v, step_count %d)", max, n, len(d.Steps), d.Cut, d.Count)
						}
						continue
					case evRanking:
						n := len(evs[s.hi-1].GetRanking().Ranked)
						if len(d.Ranked) != n && !d.Cut {
							t.Fatalf("bound %d: a ranking of %d came with %d, not marked truncated", max, n, len(d.Ranked))
						}
						continue
					case evTokenDelta:
						// A coalesced span is one step's deltas.
						for _, ev := range evs[s.lo:s.hi] {
							td := ev.GetTokenDelta()
							if d.Step == nil || *d.Step != stepOf(td.Step, td.Stage) {
								t.Fatalf("a token_delta of step %v covers seq %d of step %q", d.Step, ev.Seq, stepOf(td.Step, td.Stage))
							}
						}
					default:
						continue
					}
					if d.Part != nil {
						if !s.isPart() || d.Part.Offset != s.from || d.Part.End != s.to || d.Part.Size != len(evs[s.lo].GetTokenDelta().Text) {
							t.Fatalf("part %+v for span %+v", *d.Part, s)
						}
						if d.Part.End < d.Part.Size {
							resumes = append(resumes, resume{d.Seq, d.Part.End})
						}
					}
					text[d.Seq] += *d.Text
					tokens[d.Seq] += d.Tokens
				}
				return text, tokens, resumes
			}
			text, tokens, resumes := read(evs, 0)
			// Coalesced spans put their text under their last seq.
			var got, all strings.Builder
			for seq := uint64(1); seq <= deltas; seq++ {
				got.WriteString(text[seq])
				all.WriteString(want[seq])
			}
			if got.String() != all.String() {
				t.Fatalf("bound %d: text %q came back as %q", max, all.String(), got.String())
			}
			var n int64
			for _, v := range tokens {
				n += v
			}
			if n != tokensAll {
				t.Fatalf("bound %d: %d tokens, want %d", max, n, tokensAll)
			}
			// A reader resumed after a part gets exactly the rest of that
			// delta, then the events after it.
			if len(resumes) > 3 { // the first, one in the middle, the last
				resumes = []resume{resumes[0], resumes[len(resumes)/2], resumes[len(resumes)-1]}
			}
			for _, r := range resumes {
				for i, ev := range evs {
					if ev.Seq != r.seq {
						continue
					}
					rest, _, _ := read(evs[i:], r.at)
					if w := replaceInvalid(ev.GetTokenDelta().Text[r.at:]); rest[r.seq] != w {
						t.Fatalf("bound %d: resumed at %d:%d, read %q, want %q", max, r.seq, r.at, rest[r.seq], w)
					}
				}
			}
		}
	})
}

// replaceInvalid turns each invalid byte into U+FFFD, as encoding/json does.
func replaceInvalid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		b.WriteRune(r)
		i += n
	}
	return b.String()
}

// rawHTTP writes a request as it goes on the wire, with its Content-Length.
func rawHTTP(method, target, body string, headers ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: qlc\r\n", method, target)
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	if body != "" {
		fmt.Fprintf(&b, "Content-Length: %d\r\n", len(body))
	}
	b.WriteString("\r\n" + body)
	return []byte(b.String())
}

// fuzzProfiles has one profile, "instant": every run a fuzz input starts
// ends within milliseconds, so none piles up.
const fuzzProfiles = `
default_profile: instant
providers:
  sim: {kind: sim, sim: {output_tokens: 20}}
profiles:
  instant:
    description: zero latency
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// FuzzHTTPRequest: any bytes that parse as an HTTP request are served by a
// gateway with tenancy on without a panic and without a 5xx other than 503
// (a refusal to retry); every error answer under /v1/ is OpenAI's JSON
// error. An input with no Authorization header gets the dev tenant's key
// (the admin key under /v1/admin/) when its length is even, so half the
// inputs get past authentication. The gateway has only fuzzProfiles, so the
// runs inputs start end at once.
func FuzzHTTPRequest(f *testing.F) {
	js := "Content-Type: application/json"
	for _, seed := range [][]byte{
		rawHTTP("GET", "/healthz", ""),
		rawHTTP("GET", "/v1/models", ""),
		rawHTTP("GET", "/v1/profiles", ""),
		rawHTTP("POST", "/v1/runs", `{"query":"why is the sky blue?","profile":"instant","seed":3,"max_tokens":20}`, js),
		rawHTTP("POST", "/v1/runs", `{"query":`, js),
		rawHTTP("POST", "/v1/runs", `{"query":"q","profile":"slow"}`, "Content-Type: text/plain"),
		rawHTTP("POST", "/v1/runs", `{"query":"q","profile":"slow"}`, js),
		rawHTTP("POST", "/v1/chat/completions", `{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}]}`, js),
		rawHTTP("POST", "/v1/chat/completions", `{"model":"qlc-instant","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}]}`, js),
		rawHTTP("POST", "/v1/tokenize", `{"model":"gpt-4o","text":"hello world"}`, js),
		rawHTTP("GET", "/v1/usage?from=2026-01-01T00:00:00Z&to=1893456000&limit=5", ""),
		rawHTTP("POST", "/v1/admin/tenants", `{"name":"fuzz","limits":{"requests_per_minute":5,"profiles":["instant"]}}`, js),
		rawHTTP("PATCH", "/v1/admin/tenants/nope", `{"limits":{"max_streams":1}}`, js),
		rawHTTP("GET", "/v1/admin/audit?from=0", ""),
		rawHTTP("GET", "/v1/runs/run_nope/events?from_seq=2", "", "Last-Event-ID: 1"),
		rawHTTP("GET", "/v1/runs/run_nope/ws", "", "Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="),
		rawHTTP("DELETE", "/v1/runs/run_nope", ""),
		rawHTTP("GET", "/v1/models", "", "Authorization: Bearer qlc_notakey"),
		rawHTTP("OPTIONS", "/v1/runs", ""),
		rawHTTP("GET", "/ui/session", "", "X-Forwarded-For: 203.0.113.9"),
		[]byte("POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"que\r\n8\r\nry\":\"q\"}\r\n0\r\n\r\n"),
	} {
		// The same request with both parities of length: trailing bytes
		// after a request are not read.
		f.Add(seed)
		f.Add(append(seed, '\n'))
	}
	p := newTenancyServer(f, fuzzProfiles, func(c *Config, e *actors.Config) {
		c.MaxBodyBytes, c.CancelWait = 64<<10, 50*time.Millisecond
		// Fuzzing starts thousands of runs: keep few finished ones.
		e.RetainFinished, e.MaxFinished = time.Second, 64
	})
	h := p.gw.Handler()
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		if req.Header.Get("Authorization") == "" && len(data)%2 == 0 {
			key := p.dev.TenantKey
			if strings.HasPrefix(req.URL.Path, "/v1/admin/") {
				key = p.dev.AdminKey
			}
			req.Header.Set("Authorization", "Bearer "+key)
		}
		req.RemoteAddr = "127.0.0.1:40000"
		// A server's request context ends with its connection; this one
		// ends with the input, so nothing it started outlives it for long.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req.WithContext(ctx))
		status := rec.Code
		if status >= 500 && status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s: HTTP %d %s", req.Method, req.URL, status, rec.Body.Bytes())
		}
		if status < 400 || !strings.HasPrefix(req.URL.Path, "/v1/") {
			return
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("%s %s: HTTP %d with Content-Type %q: %q", req.Method, req.URL, status, ct, rec.Body.Bytes())
		}
		var e apiErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error == nil || e.Error.Code == "" || e.Error.Message == "" || e.Error.Type == "" {
			t.Fatalf("%s %s: HTTP %d without an OpenAI-style error (%v): %q", req.Method, req.URL, status, err, rec.Body.Bytes())
		}
	})
}

// FuzzParseResume: a resume position ("seq" or "seq:bytes", as in
// Last-Event-ID and from_seq) parses only when it is one, and the ids the
// gateway writes parse back to what they say.
func FuzzParseResume(f *testing.F) {
	for _, s := range []string{"0", "1", "42", "18446744073709551615", "7:0", "7:123", "7:", ":7", "7:-1", "+7", "7:2147483648", "7:1:2", " 7", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		seq, skip, ok := parseResume(s)
		if !ok {
			return
		}
		// Only digits, with at most one colon between two numbers.
		head, tail, split := strings.Cut(s, ":")
		digits := func(x string) bool { return x != "" && strings.Trim(x, "0123456789") == "" }
		if skip < 0 || !digits(head) || (split && !digits(tail)) || (!split && skip != 0) {
			t.Fatalf("%q parsed as %d, %d", s, seq, skip)
		}
		canon := strconv.FormatUint(seq, 10)
		if split {
			canon += ":" + strconv.Itoa(skip)
		}
		if s2, k2, _ := parseResume(canon); s2 != seq || k2 != skip {
			t.Fatalf("%q parsed as %d, %d; its canonical form %q as %d, %d", s, seq, skip, canon, s2, k2)
		}
		// What appendEventID writes for a part parses back to it.
		evs := []*messages.RunEvent{{Seq: seq, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Text: strings.Repeat("x", min(skip, 1<<16)+1)}}}}
		id := string(appendEventID(nil, evs, span{lo: 0, hi: 1, from: 0, to: min(skip, 1<<16)}))
		if s2, k2, ok := parseResume(id); !ok || s2 != seq || (min(skip, 1<<16) > 0 && k2 != min(skip, 1<<16)) {
			t.Fatalf("id %q parsed as %d, %d, %v", id, s2, k2, ok)
		}
	})
}

// FuzzBatchItemBudget: a batch item's budget fields, over the batch's,
// either validate (and what is stored decodes back to the same budget) or
// give a clear 400 naming the field; nothing panics.
func FuzzBatchItemBudget(f *testing.F) {
	for _, s := range []string{
		`{"custom_id":"a","query":"q","max_cost_usd":0.5,"min_quality":"high"}`, `{"custom_id":"a","query":"q","min_quality":3,"max_latency_ms":900}`,
		`{"custom_id":"a","query":"q","on_budget":"downgrade"}`, `{"custom_id":"a","query":"q","max_cost_usd":-1}`, `{"min_quality":null}`,
		`{"min_quality":"best"}`, `{"max_latency_ms":1e30}`, `{"on_budget":5}`,
	} {
		f.Add([]byte(s), []byte(`{"max_cost_usd":2,"on_budget":"downgrade"}`))
		f.Add([]byte(s), []byte(`{}`))
	}
	f.Fuzz(func(t *testing.T, item, batch []byte) {
		var it batchItemRequest
		var b createBatchRequest
		if decodeBody(item, &it, true) != nil || decodeBody(batch, &b, true) != nil {
			return
		}
		bf := it.budgetFields.over(b.budgetFields)
		budget, e := bf.budget()
		if e != nil {
			if e.Status != 400 || e.Code == "" || e.Message == "" {
				t.Fatalf("unclear error for %s over %s: %+v", item, batch, e)
			}
			return
		}
		stored, err := json.Marshal(bf)
		if err != nil {
			t.Fatal(err)
		}
		back, e := itemBudget(string(stored))
		if e != nil || back != budget {
			t.Fatalf("stored %s decodes to %+v (%v), want %+v", stored, back, e, budget)
		}
	})
}
