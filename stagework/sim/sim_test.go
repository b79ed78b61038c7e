package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// drain streams req to the end and returns the text, the token count and the
// error that ended it (io.EOF on success).
func drain(p stagework.Provider, ctx context.Context, req stagework.Request) (string, int, error) {
	st, err := p.Stream(ctx, req)
	if err != nil {
		return "", 0, err
	}
	defer st.Close()
	var b strings.Builder
	n := 0
	for {
		c, err := st.Recv()
		if err != nil {
			return b.String(), n, err
		}
		b.WriteString(c.Text)
		n += c.Tokens
	}
}

func newSim(t testing.TB, cfg stagework.SimConfig) *Provider {
	t.Helper()
	s, err := New("test", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustDrain(t *testing.T, p stagework.Provider, req stagework.Request) (string, int) {
	t.Helper()
	text, n, err := drain(p, context.Background(), req)
	if err != io.EOF {
		t.Fatalf("stream ended with %v, want io.EOF", err)
	}
	return text, n
}

// waitResult waits for one result from a goroutine, failing after a generous
// deadline rather than hanging the test binary.
func waitResult[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no result within 10s")
		panic("unreachable")
	}
}

var baseReq = stagework.Request{Model: "sim-medium", Stage: stagework.StageGenerator, Query: "What is the CAP theorem?", Seed: 42}

// TestDefaultConfigSimEndpoints builds every sim endpoint of the shipped
// profile file, as actors.BuildProviders does, and checks the settings
// arrive (defaults filled in).
func TestDefaultConfigSimEndpoints(t *testing.T) {
	c := stagework.DefaultConfig()
	n := 0
	for name, pc := range c.Providers {
		if pc.Kind != stagework.KindSim {
			continue
		}
		n++
		p, err := New(name, pc.Sim)
		if err != nil {
			t.Fatalf("provider %s: %v", name, err)
		}
		if p.Name() != stagework.KindSim || p.Config() != pc.Sim || p.Config().OutputTokens == 0 {
			t.Errorf("provider %s: name %q, config %+v, want %+v", name, p.Name(), p.Config(), pc.Sim)
		}
	}
	if n < 2 {
		t.Fatalf("the shipped profile file has %d sim endpoints", n)
	}
	if p, _ := New("sim", c.Providers["sim"].Sim); p.Config().ITL != 12*time.Millisecond {
		t.Errorf("sim endpoint built with the wrong config: %+v", p.Config())
	}
}

// TestDefaultProfilesDemoDuration runs every stage of the shipped profiles on
// their simulators with a clock that only adds up the waits, and checks that
// a whole run lasts what a person watching the demo expects.
func TestDefaultProfilesDemoDuration(t *testing.T) {
	c := stagework.DefaultConfig()
	want := map[string][2]time.Duration{
		"instant":  {0, 0},
		"fast":     {3 * time.Second, 6 * time.Second},
		"balanced": {10 * time.Second, 20 * time.Second},
		"deep":     {20 * time.Second, 60 * time.Second},
	}
	tokens := map[string]int{}
	for name, bounds := range want {
		p, _ := c.Profile(name)
		var total time.Duration
		for _, sp := range p.Stages {
			sim, err := New(sp.Provider, c.Providers[sp.Provider].Sim)
			if err != nil {
				t.Fatal(err)
			}
			sim.sleep = func(_ context.Context, d time.Duration) error { total += d; return nil }
			_, n, err := drain(sim, context.Background(), stagework.Request{Model: sp.Model, Stage: sp.Stage, MaxTokens: sp.MaxTokens, Query: "What is the CAP theorem?"})
			if err != io.EOF {
				t.Fatalf("%s %s: %v", name, sp.Stage, err)
			}
			tokens[name] += n
		}
		t.Logf("profile %-8s %5d tokens, %v simulated", name, tokens[name], total)
		if total < bounds[0] || total > bounds[1] {
			t.Errorf("profile %s: a run takes %v, want %v to %v", name, total, bounds[0], bounds[1])
		}
	}
	if !(tokens["fast"] < tokens["balanced"] && tokens["balanced"] < tokens["deep"]) {
		t.Errorf("token counts do not grow fast < balanced < deep: %v", tokens)
	}
}

func TestSimDeterministic(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{})
	a, _ := mustDrain(t, sim, baseReq)
	b, _ := mustDrain(t, newSim(t, stagework.SimConfig{}), baseReq)
	if a != b {
		t.Fatalf("same request, different text:\n%s\n---\n%s", a, b)
	}
	variants := map[string]func(*stagework.Request){
		"seed":  func(r *stagework.Request) { r.Seed = 43 },
		"query": func(r *stagework.Request) { r.Query = "What is the PACELC theorem?" },
		"stage": func(r *stagework.Request) { r.Stage = stagework.StageRefiner },
		"model": func(r *stagework.Request) { r.Model = "sim-large" },
	}
	for name, change := range variants {
		req := baseReq
		change(&req)
		if c, _ := mustDrain(t, sim, req); c == a {
			t.Errorf("changing the %s did not change the text", name)
		}
	}

	// Seed 0 falls back to the config's seed.
	req := baseReq
	req.Seed = 0
	x, _ := mustDrain(t, newSim(t, stagework.SimConfig{Seed: 1}), req)
	y, _ := mustDrain(t, newSim(t, stagework.SimConfig{Seed: 2}), req)
	z, _ := mustDrain(t, newSim(t, stagework.SimConfig{Seed: 1}), req)
	if x == y || x != z {
		t.Error("Request.Seed 0 does not use SimConfig.Seed")
	}
	req.Seed = 7
	x, _ = mustDrain(t, newSim(t, stagework.SimConfig{Seed: 1}), req)
	y, _ = mustDrain(t, newSim(t, stagework.SimConfig{Seed: 2}), req)
	if x != y {
		t.Error("a request's own seed does not override SimConfig.Seed")
	}
}

func TestSimOutputTokensExact(t *testing.T) {
	for _, n := range []int{1, 2, 3, 17, 60, 220, 1000, 5000, 100_000} {
		for _, stage := range stagework.Stages {
			if n == 100_000 && stage != stagework.StageCurator {
				continue // one long run is enough
			}
			for _, q := range []string{"What is the CAP theorem?", "Write a Go function that parses durations"} {
				sim := newSim(t, stagework.SimConfig{OutputTokens: n})
				req := stagework.Request{Stage: stage, Query: q, Seed: int64(n), Messages: []stagework.Message{{Role: "user", Content: strings.Repeat("x", 400)}}}
				st, err := sim.Stream(context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				if _, ok := st.Usage(); ok {
					t.Error("Usage available before the end")
				}
				var text strings.Builder
				got := 0
				for {
					c, err := st.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if c.Tokens != 1 || c.Text == "" || !utf8.ValidString(c.Text) {
						t.Fatalf("bad chunk %q (tokens %d)", c.Text, c.Tokens)
					}
					text.WriteString(c.Text)
					got++
				}
				if got != n {
					t.Errorf("%s, %d tokens asked, %q: got %d", stage, n, q, got)
				}
				if c := countTokens(text.String()); c != n {
					t.Errorf("%s n=%d: text re-tokenizes to %d tokens", stage, n, c)
				}
				u, ok := st.Usage()
				if !ok || u.CompletionTokens != int64(n) || u.PromptTokens < 100 || u.TotalTokens != u.PromptTokens+u.CompletionTokens || !u.Estimated {
					t.Errorf("%s n=%d: usage %+v, %v", stage, n, u, ok)
				}
				st.Close()
			}
		}
	}
}

func TestSimLongOutputKeepsStructure(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 100_000})
	text, _ := mustDrain(t, sim, stagework.Request{Stage: stagework.StageGenerator, Query: "What is Raft?"})
	if !strings.Contains(text, "\n\n150. **") {
		t.Error("a 100k-token draft has no 150th point")
	}
	if !strings.Contains(text[len(text)-400:], "**In short:**") {
		t.Errorf("a long draft does not end with its summary: %q", text[len(text)-400:])
	}
}

func TestSimMaxTokens(t *testing.T) {
	for _, max := range []int{1, 10, 50, 120, 300} {
		for _, stage := range stagework.Stages {
			req := stagework.Request{Stage: stage, Query: "How do I tune PostgreSQL?", MaxTokens: max, Seed: int64(max)}
			// Default: written to fit, ending a little under the cap.
			text, n := mustDrain(t, newSim(t, stagework.SimConfig{OutputTokens: 800}), req)
			if n > max || n < max-max/10 {
				t.Errorf("%s fit, max %d: %d tokens", stage, max, n)
			}
			if max >= 120 && !strings.HasSuffix(strings.TrimRight(text, "\n"), ".") {
				t.Errorf("%s fit, max %d: the answer does not end with a full sentence: %q", stage, max, text[len(text)-40:])
			}
			// Truncating: the 800-token answer, cut at exactly the cap.
			cut, n := mustDrain(t, newSim(t, stagework.SimConfig{OutputTokens: 800, TruncateAtMax: true}), req)
			if n != max {
				t.Errorf("%s truncate, max %d: %d tokens", stage, max, n)
			}
			full, _ := mustDrain(t, newSim(t, stagework.SimConfig{OutputTokens: 800}), stagework.Request{Stage: stage, Query: req.Query, Seed: req.Seed})
			if !strings.HasPrefix(full, cut) {
				t.Errorf("%s truncate, max %d: not a prefix of the whole answer:\n%s", stage, max, cut)
			}
		}
	}
	// A cap above the natural length changes nothing.
	_, n := mustDrain(t, newSim(t, stagework.SimConfig{OutputTokens: 90}), stagework.Request{Query: "q", MaxTokens: 1000})
	if n != 90 {
		t.Errorf("cap above length: %d tokens", n)
	}
}

func TestSimOutputJitter(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 200, OutputTokensJitter: 20})
	seen := map[int]bool{}
	for seed := range int64(40) {
		_, n := mustDrain(t, sim, stagework.Request{Query: "q", Seed: seed + 1})
		if n < 180 || n > 220 {
			t.Errorf("seed %d: %d tokens, want 200±20", seed, n)
		}
		seen[n] = true
	}
	if len(seen) < 5 {
		t.Errorf("jitter produced only %d distinct lengths", len(seen))
	}
}

func TestSimTextShapesAndTopic(t *testing.T) {
	tests := []struct {
		query string
		topic string
		code  string // fence expected in the refiner's and curator's text, "" for none
	}{
		{"What is the CAP theorem?", "the CAP theorem", ""},
		{"How do I reverse a linked list in Go?", "reversing a linked list in Go", "```go"},
		{"Explain Raft consensus.", "Raft consensus", ""},
		{"Can you write a Python function that merges two sorted lists?", "writing a Python function that merges two sorted lists", "```python"},
		{"how should we structure our SQL migrations", "structuring our SQL migrations", "```sql"},
		{"Tell me about my options for caching in Node.js", "your options for caching in Node.js", "```javascript"},
		{"Why is the sky blue?", "why is the sky blue", ""},
	}
	shapes := map[stagework.Stage][]string{
		stagework.StageGenerator: {"**Draft.**", "\n\n1. **", "\n\n2. **", "\n\n3. **", "**In short:**"},
		stagework.StageRefiner:   {"## Refined answer", "**Corrections to the draft:**", "\n### ", "**Example.**", "**Bottom line:**"},
		stagework.StageValidator: {"## Validation report", "**Facts:**", "**Logic:**", "**Completeness:**", "**Issues found:**\n1. ", "**Verdict:**"},
		stagework.StageCurator:   {"# ", "## Key points", "\n- **", "## Conclusion"},
	}
	sim := newSim(t, stagework.SimConfig{OutputTokens: 400})
	for _, tt := range tests {
		for _, stage := range stagework.Stages {
			text, _ := mustDrain(t, sim, stagework.Request{Stage: stage, Query: tt.query, Model: "m"})
			if !strings.Contains(text, tt.topic) {
				t.Errorf("%s on %q does not mention %q:\n%s", stage, tt.query, tt.topic, text)
			}
			for _, s := range shapes[stage] {
				if !strings.Contains(text, s) {
					t.Errorf("%s on %q lacks %q:\n%s", stage, tt.query, s, text)
				}
			}
			hasFence := strings.Contains(text, "```")
			if stage == stagework.StageRefiner || stage == stagework.StageCurator {
				if tt.code != "" && !strings.Contains(text, tt.code+"\n") {
					t.Errorf("%s on %q lacks a %s block:\n%s", stage, tt.query, tt.code, text)
				}
				if tt.code == "" && hasFence {
					t.Errorf("%s on %q has code but the question is not about code", stage, tt.query)
				}
				if hasFence && strings.Count(text, "```")%2 != 0 {
					t.Errorf("%s on %q: unbalanced code fence", stage, tt.query)
				}
			}
			if stage == stagework.StageValidator && (tt.code != "") != strings.Contains(text, "**Code:**") {
				t.Errorf("validator on %q: Code line present = %v, want %v", tt.query, strings.Contains(text, "**Code:**"), tt.code != "")
			}
			if strings.Contains(text, "{") && tt.code == "" {
				t.Errorf("%s on %q: unexpanded placeholder:\n%s", stage, tt.query, text)
			}
		}
	}
}

func TestSimTextVaries(t *testing.T) {
	// Different questions and seeds should not read the same apart from the topic.
	sim := newSim(t, stagework.SimConfig{OutputTokens: 300})
	intros := map[string]bool{}
	for seed := range int64(12) {
		text, _ := mustDrain(t, sim, stagework.Request{Stage: stagework.StageGenerator, Query: "What is X?", Seed: seed + 1})
		intros[strings.SplitN(text, "\n", 2)[0]] = true
	}
	if len(intros) < 3 {
		t.Errorf("12 seeds gave only %d distinct intros", len(intros))
	}
}

func TestAnalyzeQuery(t *testing.T) {
	tests := []struct {
		q, phrase, lang, ident string
	}{
		{"What is the CAP theorem?", "the CAP theorem", "", "cap"},
		{"How do I reverse a linked list in Go?", "reversing a linked list in Go", "go", "reverseLinkedList"},
		{"please, how can I set up TLS for my server", "setting up TLS for your server", "", "set"},
		{"Implement quicksort in Rust", "implementing quicksort in Rust", "rust", "quicksort"},
		{"I have a flaky test. How do I find the cause?", "finding the cause", "", "find"},
		{"what's new in Python 3.13", "new in Python 3.13", "python", "new"},
		{"", "the question", "", "solve"},
		{"???", "the question", "", "solve"},
		{"Describe " + strings.Repeat("very ", 20) + "long topics", strings.TrimSpace(strings.Repeat("very ", 12)), "", "very"},
	}
	for _, tt := range tests {
		got := analyzeQuery(tt.q)
		if got.phrase != tt.phrase || got.lang != tt.lang || (tt.ident != "" && !strings.HasPrefix(got.ident, tt.ident)) {
			t.Errorf("analyzeQuery(%q) = %+v, want phrase %q lang %q ident %q…", tt.q, got, tt.phrase, tt.lang, tt.ident)
		}
		if got.code != (got.lang != "") {
			t.Errorf("analyzeQuery(%q): code %v but lang %q", tt.q, got.code, got.lang)
		}
	}
	if got := toGerund("write") + toGerund("run") + toGerund("tie") + toGerund("see") + toGerund("deploy"); got != "writingrunningtyingseeingdeploying" {
		t.Errorf("gerunds: %s", got)
	}
}

func TestNextToken(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"Hello, world!", []string{"Hello", ",", " world", "!"}},
		{"**Bold** text", []string{"**", "Bold", "**", " text"}},
		{"\n\n1. **A.**", []string{"\n\n", "1", ".", " **", "A", ".", "**"}},
		{"✓ ok ✓✓", []string{"✓", " ok", " ✓✓"}},
		{"\tif x {", []string{"\tif", " x", " {"}},
		{"a  \nb", []string{"a", "  ", "\n", "b"}},
		{"naïve café", []string{"naïve", " café"}},
		{"snake_case", []string{"snake_case"}},
	}
	for _, tt := range tests {
		var got []string
		for i := 0; i < len(tt.in); {
			j := nextToken(tt.in, i)
			got = append(got, tt.in[i:j])
			i = j
		}
		if fmt.Sprintf("%q", got) != fmt.Sprintf("%q", tt.want) {
			t.Errorf("tokens(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if countTokens(tt.in) != len(tt.want) {
			t.Errorf("countTokens(%q) = %d", tt.in, countTokens(tt.in))
		}
	}
}

// FuzzNextToken checks the tokenizer's invariants: tokens tile the input,
// each is non-empty and whole UTF-8 when the input is.
func FuzzNextToken(f *testing.F) {
	for _, s := range []string{"Hello, world!", "**x**\n\n", "✓ é\t\tz", "  \n ", "\xff\xfe a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var b strings.Builder
		n := 0
		for i := 0; i < len(s); {
			j := nextToken(s, i)
			if j <= i || j > len(s) {
				t.Fatalf("nextToken(%q, %d) = %d", s, i, j)
			}
			if utf8.ValidString(s) && !utf8.ValidString(s[i:j]) {
				t.Fatalf("token %q splits a character", s[i:j])
			}
			b.WriteString(s[i:j])
			i = j
			n++
		}
		if b.String() != s || countTokens(s) != n {
			t.Fatalf("tokens do not tile %q", s)
		}
	})
}

func TestSimErrorKinds(t *testing.T) {
	tests := []struct {
		kind   string
		want   stagework.ErrorKind
		status int
	}{
		{"rate_limited", stagework.ErrRateLimited, 429},
		{"server", stagework.ErrServer, 500},
		{"auth", stagework.ErrAuth, 401},
		{"timeout", stagework.ErrTimeout, 0},
		{"bad_request", stagework.ErrBadRequest, 400},
		{"protocol", stagework.ErrProtocol, 0},
		{"connection", stagework.ErrConnection, 0},
		{"", stagework.ErrServer, 500},
	}
	for _, tt := range tests {
		sim := newSim(t, stagework.SimConfig{ErrorRate: 1, ErrorKind: tt.kind, RetryAfter: 3 * time.Second})
		st, err := sim.Stream(context.Background(), baseReq)
		if st != nil {
			t.Errorf("%s: got a stream with the error", tt.kind)
		}
		pe, ok := stagework.AsProviderError(err)
		if !ok {
			t.Fatalf("%s: err %v is not a *ProviderError", tt.kind, err)
		}
		if pe.Kind != tt.want || pe.Provider != "sim" || pe.Status != tt.status {
			t.Errorf("%s: %+v", tt.kind, pe)
		}
		if (pe.RetryAfter == 3*time.Second) != (tt.want == stagework.ErrRateLimited) {
			t.Errorf("%s: RetryAfter %v", tt.kind, pe.RetryAfter)
		}
		if !strings.Contains(err.Error(), "simulated") {
			t.Errorf("%s: message %q does not say it is simulated", tt.kind, err)
		}
	}
	// The default Retry-After.
	_, err := newSim(t, stagework.SimConfig{ErrorRate: 1, ErrorKind: "rate_limited"}).Stream(context.Background(), baseReq)
	if pe, _ := stagework.AsProviderError(err); pe == nil || pe.RetryAfter != stagework.DefaultSimRetryAfter {
		t.Errorf("default RetryAfter: %v", err)
	}
}

func TestSimErrorMidStream(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{ErrorRate: 1, ErrorKind: "server", ErrorAfter: 5})
	st, err := sim.Stream(context.Background(), baseReq)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := st.Recv(); err != nil {
			t.Fatalf("token %d: %v", i, err)
		}
	}
	_, err = st.Recv()
	pe, ok := stagework.AsProviderError(err)
	if !ok || pe.Kind != stagework.ErrServer || pe.Status != 0 || !strings.Contains(pe.Message, "after 5 tokens") {
		t.Fatalf("mid-stream error = %v", err)
	}
	if _, err2 := st.Recv(); err2 != err {
		t.Errorf("error is not sticky: %v", err2)
	}
	if _, ok := st.Usage(); ok {
		t.Error("usage reported for a failed stream")
	}

	// An error placed after the end replaces the end.
	sim = newSim(t, stagework.SimConfig{OutputTokens: 10, ErrorRate: 1, ErrorAfter: 50})
	_, n, err := drain(sim, context.Background(), baseReq)
	if n != 10 || !errors.As(err, new(*stagework.ProviderError)) {
		t.Errorf("error after the end: %d tokens, %v", n, err)
	}
}

func TestSimErrorRateAndRetries(t *testing.T) {
	cfg := stagework.SimConfig{Seed: 9, ErrorRate: 0.3}
	a, b := newSim(t, cfg), newSim(t, cfg)
	var seqA, seqB []bool
	for range 1000 {
		_, errA := a.Stream(context.Background(), baseReq)
		_, errB := b.Stream(context.Background(), baseReq)
		seqA, seqB = append(seqA, errA != nil), append(seqB, errB != nil)
	}
	fails := 0
	for i := range seqA {
		if seqA[i] != seqB[i] {
			t.Fatal("two Sims with the same seed drew different faults")
		}
		if seqA[i] {
			fails++
		}
	}
	if fails < 230 || fails > 370 {
		t.Errorf("error_rate 0.3: %d of 1000 requests failed", fails)
	}
	// The same request, retried, must be able to succeed.
	if fails == 1000 || fails == 0 {
		t.Error("retries of one request all drew the same outcome")
	}
}

func TestSimCut(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{CutRate: 1, CutAfter: 7})
	text, n, err := drain(sim, context.Background(), baseReq)
	pe, ok := stagework.AsProviderError(err)
	if !ok || pe.Kind != stagework.ErrProtocol || !strings.Contains(pe.Message, "stream cut") || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut: %v", err)
	}
	if n != 7 || text == "" {
		t.Errorf("cut after 7: got %d tokens", n)
	}
	// cut_after 0: cut before the first token.
	_, n, err = drain(newSim(t, stagework.SimConfig{CutRate: 1}), context.Background(), baseReq)
	if n != 0 || !strings.Contains(fmt.Sprint(err), "stream cut after 0 tokens") {
		t.Errorf("cut at 0: %d tokens, %v", n, err)
	}
}

func TestSimHangUntilContextEnds(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{HangRate: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	st, err := sim.Stream(ctx, baseReq)
	if err != nil {
		t.Fatal(err)
	}
	// A token would come at once; only the deadline can end this Recv.
	if _, err := st.Recv(); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hung Recv = %v, want the context's deadline", err)
	}

	// Cancel from another goroutine releases a hung Recv.
	ctx, cancel = context.WithCancel(context.Background())
	st, err = sim.Stream(ctx, baseReq)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := st.Recv(); done <- err }()
	cancel()
	if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled hang: %v", err)
	}
}

func TestSimStall(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{StallRate: 1, StallAfter: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, n, err := drain(sim, ctx, baseReq)
	if n != 3 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stall after 3: %d tokens, %v", n, err)
	}
}

func TestSimCancelMidStreamRealClock(t *testing.T) {
	// The first token is immediate; the second would take an hour.
	sim := newSim(t, stagework.SimConfig{ITL: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sim.Stream(ctx, baseReq)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := st.Recv(); done <- err }()
	cancel()
	if err := waitResult(t, done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv after cancel = %v", err)
	}
	if _, err := st.Recv(); !errors.Is(err, context.Canceled) {
		t.Errorf("later Recv = %v", err)
	}
}

func TestSimRealClockDelivers(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{TTFT: time.Millisecond, ITL: 50 * time.Microsecond, OutputTokens: 20})
	if _, n := mustDrain(t, sim, baseReq); n != 20 {
		t.Errorf("%d tokens", n)
	}
}

func TestSimContextAlreadyDone(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := newSim(t, stagework.SimConfig{}).Stream(ctx, baseReq); !errors.Is(err, context.Canceled) {
		t.Errorf("Stream on a cancelled context = %v", err)
	}
	// Cancelled between Stream and Recv: Recv reports it before any token.
	ctx, cancel = context.WithCancel(context.Background())
	st, err := newSim(t, stagework.SimConfig{}).Stream(ctx, baseReq)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := st.Recv(); !errors.Is(err, context.Canceled) {
		t.Errorf("Recv after cancel = %v", err)
	}
}

func TestSimLatencyWaits(t *testing.T) {
	cfg := stagework.SimConfig{TTFT: 250 * time.Millisecond, ITL: 12 * time.Millisecond, OutputTokens: 30}
	record := func(cfg stagework.SimConfig) []time.Duration {
		sim := newSim(t, cfg)
		var waits []time.Duration
		sim.sleep = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return ctx.Err() }
		mustDrain(t, sim, baseReq)
		return waits
	}
	waits := record(cfg)
	if len(waits) != 30 || waits[0] != 250*time.Millisecond {
		t.Fatalf("waits = %v", waits)
	}
	for _, w := range waits[1:] {
		if w != 12*time.Millisecond {
			t.Fatalf("inter-token wait %v, want 12ms", w)
		}
	}
	cfg.TTFTJitter, cfg.ITLJitter = 100*time.Millisecond, 6*time.Millisecond
	waits = record(cfg)
	if waits[0] < 150*time.Millisecond || waits[0] > 350*time.Millisecond {
		t.Errorf("jittered TTFT %v", waits[0])
	}
	distinct := map[time.Duration]bool{}
	for _, w := range waits[1:] {
		if w < 6*time.Millisecond || w > 18*time.Millisecond {
			t.Errorf("jittered ITL %v outside 12±6ms", w)
		}
		distinct[w] = true
	}
	if len(distinct) < 5 {
		t.Errorf("ITL jitter gave only %d distinct waits", len(distinct))
	}
	if again := record(cfg); fmt.Sprint(again) != fmt.Sprint(waits) {
		t.Error("jitter is not deterministic for a seed")
	}
	// Faults also wait their turn: a cut arrives when its token would have.
	cfg = stagework.SimConfig{TTFT: time.Second, CutRate: 1, CutAfter: 0}
	sim := newSim(t, cfg)
	var got []time.Duration
	sim.sleep = func(ctx context.Context, d time.Duration) error { got = append(got, d); return nil }
	drain(sim, context.Background(), baseReq)
	if len(got) != 1 || got[0] != time.Second {
		t.Errorf("cut waits = %v", got)
	}
}

func TestSimZeroLatencyIsFreeOfTimersAndAllocs(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 100_000})
	sim.sleep = func(context.Context, time.Duration) error {
		t.Fatal("a zero-latency stream waited")
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := sim.Stream(ctx, baseReq)
	if err != nil {
		t.Fatal(err)
	}
	st := s.(*simStream)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Recv allocates %v times per token", allocs)
	}
	if st.timer != nil || st.timed {
		t.Error("a zero-latency stream has a timer")
	}
}

func TestSimClose(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 5})
	st, err := sim.Stream(context.Background(), baseReq)
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := st.Recv(); err == io.EOF {
			break
		}
	}
	if u, ok := st.Usage(); !ok || u.CompletionTokens != 5 {
		t.Errorf("usage after EOF: %+v %v", u, ok)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("Recv after EOF = %v", err)
	}
	if err := st.Close(); err != nil {
		t.Error(err)
	}
	if err := st.Close(); err != nil {
		t.Error("second Close:", err)
	}
	if _, err := st.Recv(); err == nil || err == io.EOF {
		t.Errorf("Recv after Close = %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []stagework.SimConfig{
		{ITL: -1},
		{ErrorRate: 2},
		{ErrorRate: 0.5, CutRate: 0.4, HangRate: 0.2},
		{StallAfter: 4},
		{ErrorRate: 1, ErrorKind: "unknown"},
		{OutputTokens: -1},
	} {
		if _, err := New("bad", cfg); err == nil || !strings.HasPrefix(err.Error(), `sim: endpoint "bad": `) {
			t.Errorf("New(%+v) = %v", cfg, err)
		}
	}
	s := newSim(t, stagework.SimConfig{})
	if s.Name() != "sim" || s.Config().OutputTokens != stagework.DefaultSimOutputTokens || s.Config().ErrorKind != "server" {
		t.Errorf("defaults: name %q, %+v", s.Name(), s.Config())
	}
}

func TestSimConcurrent(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 50, ErrorRate: 0.2, CutRate: 0.2, CutAfter: 10})
	var wg sync.WaitGroup
	var mu sync.Mutex
	outcomes := map[string]int{}
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				_, n, err := drain(sim, context.Background(), stagework.Request{Query: "q", Seed: int64(g*100 + i), Stage: stagework.Stages[i%4]})
				key := "ok"
				if pe, ok := stagework.AsProviderError(err); ok {
					key = pe.Kind.String()
				} else if err != io.EOF || n != 50 {
					key = fmt.Sprintf("unexpected %v after %d", err, n)
				}
				mu.Lock()
				outcomes[key]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if outcomes["ok"] == 0 || outcomes["server"] == 0 || outcomes["protocol"] == 0 || len(outcomes) != 3 {
		t.Errorf("outcomes = %v", outcomes)
	}
}

// BenchmarkSimStream measures the simulator at zero latency: "recv" the cost
// of one token from a long stream (no allocations allowed), "request" a
// whole completion including writing its text.
func BenchmarkSimStream(b *testing.B) {
	b.Run("recv", func(b *testing.B) {
		sim := newSim(b, stagework.SimConfig{OutputTokens: 10_000})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		s, err := sim.Stream(ctx, baseReq)
		if err != nil {
			b.Fatal(err)
		}
		st := s.(*simStream)
		bytes := 0
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c, err := st.Recv()
			if err == io.EOF {
				st.i, st.pos, st.err = 0, 0, nil // rewind rather than write a new text
				continue
			}
			bytes += len(c.Text)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		b.SetBytes(int64(bytes / max(b.N, 1)))
	})
	for _, n := range []int{220, 2000} {
		for _, stage := range []stagework.Stage{stagework.StageGenerator, stagework.StageCurator} {
			b.Run(fmt.Sprintf("request/%s/tokens=%d", stage, n), func(b *testing.B) {
				sim := newSim(b, stagework.SimConfig{OutputTokens: n})
				req := baseReq
				req.Stage = stage
				req.Query = "How do I reverse a linked list in Go?"
				b.ReportAllocs()
				tokens := 0
				for i := 0; b.Loop(); i++ {
					req.Seed = int64(i)
					_, k, err := drain(sim, context.Background(), req)
					if err != io.EOF {
						b.Fatal(err)
					}
					tokens += k
				}
				b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// --- the strategies' roles ---

// stepPrompt builds role's prompt (stagework's default) over inputs.
func stepPrompt(t testing.TB, spec stagework.StageSpec, query string, inputs []string) []stagework.Message {
	t.Helper()
	in := stagework.PromptInput{Query: query}
	for i, text := range inputs {
		in.Inputs = append(in.Inputs, stagework.StepOutput{ID: fmt.Sprintf("x%d", i+1), Model: "sim-medium", Text: text})
	}
	msgs, err := stagework.BuildPrompt(spec, in)
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// sampleTexts are n samples' outputs for query, with seeds from seed on.
func sampleTexts(t *testing.T, sim *Provider, query string, n int, seed int64) []string {
	t.Helper()
	msgs := stepPrompt(t, stagework.StageSpec{Stage: stagework.StageSample}, query, nil)
	out := make([]string, n)
	for i := range out {
		out[i], _ = mustDrain(t, sim, stagework.Request{Model: "sim-medium", Stage: stagework.StageSample, Query: query, Seed: seed + int64(i), Messages: msgs})
	}
	return out
}

func TestSimRankerOutputParses(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 300})
	const q = "Which consensus algorithm should I use?"
	for n := 2; n <= stagework.MaxParallel; n++ {
		answers := sampleTexts(t, sim, q, n, 1)
		msgs := stepPrompt(t, stagework.StageSpec{Stage: stagework.StageRanker, ID: "r1"}, q, answers)
		perms := map[string]bool{}
		for seed := int64(1); seed <= 12; seed++ {
			req := stagework.Request{Model: "sim-medium", Stage: stagework.StageRanker, Query: q, Seed: seed, Messages: msgs}
			text, _ := mustDrain(t, sim, req)
			got, err := stagework.ParseRanking(text, n)
			if err != nil {
				t.Fatalf("n=%d seed %d: %v\n%s", n, seed, err, text)
			}
			perms[fmt.Sprint(got)] = true
			if !strings.Contains(text, "\n\nFINAL RANKING:\n1. Response ") {
				t.Errorf("n=%d seed %d: no FINAL RANKING block:\n%s", n, seed, text)
			}
			lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
			if last := lines[len(lines)-1]; last != fmt.Sprintf("%d. Response %s", n, stagework.Label(got[n-1])) {
				t.Errorf("n=%d seed %d: text after the ranking: %q", n, seed, last)
			}
			if n <= 6 {
				for i := range n {
					if !strings.Contains(text, "**Response "+stagework.Label(i)+".**") {
						t.Errorf("n=%d seed %d: Response %s is not evaluated:\n%s", n, seed, stagework.Label(i), text)
					}
				}
			}
			again, _ := mustDrain(t, sim, req)
			if again != text {
				t.Fatalf("n=%d seed %d: not deterministic", n, seed)
			}
		}
		if len(perms) < min(3, n) {
			t.Errorf("n=%d: 12 seeds gave %d rankings: %v", n, len(perms), perms)
		}
	}
}

func TestSimSampleAnswers(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 200})
	for _, q := range []string{"Which consensus algorithm should I use?", "Should I use Raft or Paxos?", "What is 17 * 23?", "Is Go, Rust or Python best for a CLI tool?"} {
		cands, _ := sampleAnswers(q)
		if cands[0] == cands[1] || cands[1] == cands[2] || cands[0] == cands[2] {
			t.Fatalf("%q: candidates %q are not distinct", q, cands)
		}
		norm := map[string]int{}
		for i, c := range cands {
			a, _ := stagework.FinalAnswer("Final answer: " + c)
			norm[a] = i
		}
		counts := [3]int{}
		const runs = 300
		agree, split := 0, 0
		texts := sampleTexts(t, sim, q, runs, 1)
		for i, text := range texts {
			lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
			if !strings.HasPrefix(lines[len(lines)-1], "Final answer: ") {
				t.Fatalf("%q seed %d: the last line is not the final answer:\n%s", q, i+1, text)
			}
			a, ok := stagework.FinalAnswer(text)
			k, known := norm[a]
			if !ok || !known {
				t.Fatalf("%q seed %d: answer %q (%v) is not a candidate of %q", q, i+1, a, ok, cands)
			}
			counts[k]++
			if i%3 == 2 { // a vote of three samples
				if _, votes, _ := stagework.Majority(texts[i-2 : i+1]); votes >= 2 {
					agree++
				} else {
					split++
				}
			}
		}
		if p := float64(counts[0]) / runs; p < 0.5 || p > 0.7 || counts[1] < runs/10 || counts[2] < runs/10 {
			t.Errorf("%q: answers drawn %v times, want about 60/20/20%%", q, counts)
		}
		if agree < 70 || split < 3 {
			t.Errorf("%q: of 100 three-sample votes %d had a majority and %d did not; want most but not all", q, agree, split)
		}
	}
	// Options a question offers are the answers; a number gets numbers.
	if c, lower := sampleAnswers("Should I use Raft or Paxos?"); lower || !(c[0] == "Raft" && c[1] == "Paxos" || c[0] == "Paxos" && c[1] == "Raft") {
		t.Errorf("Raft or Paxos: %q", c)
	}
	if c, _ := sampleAnswers("Is Go, Rust or Python best?"); fmt.Sprint(c[:]) != "[Go Rust Python]" && fmt.Sprint(c[:]) != "[Rust Python Go]" && fmt.Sprint(c[:]) != "[Python Go Rust]" {
		t.Errorf("Go, Rust or Python: %q", c)
	}
	if c, _ := sampleAnswers("What is 17 * 23?"); strings.Trim(c[0]+c[1]+c[2], "0123456789") != "" {
		t.Errorf("numeric question: %q", c)
	}
}

func TestSimJudgePicksTheMajority(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 250})
	const q = "Should I use Raft or Paxos?"
	for n := 2; n <= 6; n++ {
		for seed := int64(1); seed <= 10; seed++ {
			samples := sampleTexts(t, sim, q, n, seed*100)
			msgs := stepPrompt(t, stagework.StageSpec{Stage: stagework.StageJudge}, q, samples)
			text, _ := mustDrain(t, sim, stagework.Request{Model: "sim-large", Stage: stagework.StageJudge, Query: q, Seed: seed, Messages: msgs})
			got, err := stagework.ParseChoice(text, n)
			if err != nil {
				t.Fatalf("n=%d seed %d: %v\n%s", n, seed, err, text)
			}
			want, _, _ := stagework.Majority(samples)
			if got != want {
				t.Errorf("n=%d seed %d: judge picked %s, the majority is %s:\n%s", n, seed, stagework.Label(got), stagework.Label(want), text)
			}
			if !strings.HasSuffix(strings.TrimRight(text, "\n"), "\n\nMost consistent: Response "+stagework.Label(want)) {
				t.Errorf("n=%d seed %d: does not end with its choice:\n%s", n, seed, text)
			}
			a, _ := stagework.FinalAnswer(samples[0])
			if !strings.Contains(text, "- Response A: “"+a+"”.") {
				t.Errorf("n=%d seed %d: does not report Response A's answer %q:\n%s", n, seed, a, text)
			}
		}
	}
	// Samples without answers: the first response.
	msgs := stepPrompt(t, stagework.StageSpec{Stage: stagework.StageJudge}, q, []string{"", "  "})
	text, _ := mustDrain(t, sim, stagework.Request{Stage: stagework.StageJudge, Query: q, Messages: msgs})
	if got, err := stagework.ParseChoice(text, 2); err != nil || got != 0 || !strings.Contains(text, "no clear final answer") {
		t.Errorf("no answers: %d, %v:\n%s", got, err, text)
	}
}

func TestSimAnswerRoles(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 400})
	const q = "How do I reverse a linked list in Go?"
	inputs := []string{"first answer", "second answer", "third answer"}
	tests := []struct {
		spec    stagework.StageSpec
		inputs  []string
		want    []string
		notWant []string
	}{
		{stagework.StageSpec{Stage: stagework.StageProposer, Layer: 1}, nil, []string{"# Reversing a linked list in Go\n\n", "## Main points\n\n- **", "```go\n", "## Summary\n\n"}, []string{"previous layer", "Response"}},
		{stagework.StageSpec{Stage: stagework.StageProposer, Layer: 2}, inputs, []string{"# Reversing", "previous layer", "3 ", "## Main points\n\n- **", "## Summary\n\n"}, []string{"Response"}},
		{stagework.StageSpec{Stage: stagework.StageAggregator}, inputs, []string{"# Reversing", "## Key points\n\n- **", "## Conclusion\n\n"}, []string{"Response", "previous layer"}},
		{stagework.StageSpec{Stage: stagework.StageMember}, nil, []string{"# Reversing", "## Key points\n\n- **", "## Bottom line\n\n"}, []string{"Response"}},
		{stagework.StageSpec{Stage: stagework.StageChairman}, inputs, []string{"# Reversing", "## What matters most\n\n- **", "## Conclusion\n\n"}, []string{"Response"}},
	}
	for _, tt := range tests {
		req := stagework.Request{Model: "sim-large", Stage: tt.spec.Stage, Query: q, Seed: 3, Messages: stepPrompt(t, tt.spec, q, tt.inputs)}
		text, _ := mustDrain(t, sim, req)
		for _, w := range tt.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s (layer %d) lacks %q:\n%s", tt.spec.Stage, tt.spec.Layer, w, text)
			}
		}
		for _, w := range tt.notWant {
			if strings.Contains(text, w) {
				t.Errorf("%s (layer %d) has %q:\n%s", tt.spec.Stage, tt.spec.Layer, w, text)
			}
		}
		if strings.Count(text, "```")%2 != 0 || strings.Contains(strings.ReplaceAll(text, "{\n", ""), "{T}") {
			t.Errorf("%s: unbalanced fence or unexpanded placeholder:\n%s", tt.spec.Stage, text)
		}
		req.Seed = 4
		if other, _ := mustDrain(t, sim, req); other == text {
			t.Errorf("%s: another seed wrote the same text", tt.spec.Stage)
		}
	}
	// Each role writes its own text for the same request.
	seen := map[string]stagework.Stage{}
	for _, st := range []stagework.Stage{stagework.StageCurator, stagework.StageProposer, stagework.StageAggregator, stagework.StageMember, stagework.StageChairman} {
		text, _ := mustDrain(t, sim, stagework.Request{Stage: st, Query: q, Seed: 9})
		if other, dup := seen[text]; dup {
			t.Errorf("%s and %s wrote the same text", st, other)
		}
		seen[text] = st
	}
}

// strategyRequests are a request of every strategy role, prompts included,
// over n inputs.
func strategyRequests(t *testing.T, sim *Provider, query string, n int) []stagework.Request {
	samples := sampleTexts(t, sim, query, n, 7)
	var reqs []stagework.Request
	for _, spec := range []stagework.StageSpec{
		{Stage: stagework.StageProposer, Layer: 1}, {Stage: stagework.StageProposer, Layer: 2}, {Stage: stagework.StageAggregator},
		{Stage: stagework.StageMember}, {Stage: stagework.StageRanker}, {Stage: stagework.StageChairman},
		{Stage: stagework.StageSample}, {Stage: stagework.StageJudge},
	} {
		var in []string
		if spec.Stage != stagework.StageMember && spec.Stage != stagework.StageSample && spec.Layer != 1 {
			in = samples
		}
		reqs = append(reqs, stagework.Request{Model: "sim-medium", Stage: spec.Stage, Query: query, Messages: stepPrompt(t, spec, query, in)})
	}
	return reqs
}

// programPart is what a program reads from a role's output, or "" for a
// role whose output no program reads.
func programPart(t *testing.T, stage stagework.Stage, text string, n int) string {
	t.Helper()
	switch stage {
	case stagework.StageRanker:
		r, err := stagework.ParseRanking(text, n)
		if err != nil {
			t.Fatalf("ranker: %v\n%s", err, text)
		}
		return fmt.Sprint(r)
	case stagework.StageSample:
		a, ok := stagework.FinalAnswer(text)
		if !ok || !strings.Contains(text, "Final answer: ") {
			t.Fatalf("sample: no final answer:\n%s", text)
		}
		return a
	case stagework.StageJudge:
		c, err := stagework.ParseChoice(text, n)
		if err != nil || !strings.Contains(text, "Most consistent: ") {
			t.Fatalf("judge: %v\n%s", err, text)
		}
		return stagework.Label(c)
	}
	return ""
}

func TestSimStrategyMaxTokens(t *testing.T) {
	sim := newSim(t, stagework.SimConfig{OutputTokens: 800})
	cut := newSim(t, stagework.SimConfig{OutputTokens: 800, TruncateAtMax: true})
	for _, n := range []int{2, 6} {
		for _, req := range strategyRequests(t, sim, "How do I tune PostgreSQL?", n) {
			full, _ := mustDrain(t, sim, req)
			want := programPart(t, req.Stage, full, n)
			for _, max := range []int{1, 10, 50, 120, 300} {
				req.MaxTokens, req.Seed = max, int64(max)
				full, _ := mustDrain(t, sim, stagework.Request{Model: req.Model, Stage: req.Stage, Query: req.Query, Seed: req.Seed, Messages: req.Messages})
				want = programPart(t, req.Stage, full, n)
				// Written to fit: a little under the cap, the end a program reads intact.
				text, got := mustDrain(t, sim, req)
				if got > max || got < max-max/10 {
					t.Errorf("%s n=%d fit, max %d: %d tokens", req.Stage, n, max, got)
				}
				if c := countTokens(text); c != got {
					t.Errorf("%s n=%d fit, max %d: %d tokens re-tokenize to %d", req.Stage, n, max, got, c)
				}
				if max >= 50 {
					if part := programPart(t, req.Stage, text, n); part != want {
						t.Errorf("%s n=%d fit, max %d: reads %q, the whole answer %q:\n%s", req.Stage, n, max, part, want, text)
					}
				}
				// Truncated: exactly the cap, a prefix of the whole answer.
				text, got = mustDrain(t, cut, req)
				if got != max || !strings.HasPrefix(full, text) {
					t.Errorf("%s n=%d truncate, max %d: %d tokens, prefix %v", req.Stage, n, max, got, strings.HasPrefix(full, text))
				}
			}
		}
	}
}

func TestSimStrategyOutputTokensExact(t *testing.T) {
	for _, size := range []int{1, 2, 3, 17, 60, 220, 1000} {
		sim := newSim(t, stagework.SimConfig{OutputTokens: size})
		for _, q := range []string{"What is the CAP theorem?", "Write a Go function that parses durations"} {
			for _, req := range strategyRequests(t, newSim(t, stagework.SimConfig{OutputTokens: 120}), q, 4) {
				req.Seed = int64(size)
				text, n := mustDrain(t, sim, req)
				if n != size || countTokens(text) != size {
					t.Errorf("%s, %d tokens asked, %q: got %d, re-tokenized %d:\n%s", req.Stage, size, q, n, countTokens(text), text)
				}
				if !utf8.ValidString(text) {
					t.Errorf("%s: invalid UTF-8", req.Stage)
				}
				if size >= 220 {
					programPart(t, req.Stage, text, 4)
				}
			}
		}
	}
}

func TestSimReadPrompt(t *testing.T) {
	// The default prompts' tags.
	msgs := stepPrompt(t, stagework.StageSpec{Stage: stagework.StageRanker}, "q", []string{"one\nFinal answer: 1", "two"})
	p := readPrompt(stagework.Request{Query: "q", Messages: msgs})
	if len(p.responses) != 2 || p.responses[0].label != "A" || p.responses[0].text != "one\nFinal answer: 1" || p.responses[1].label != "B" {
		t.Fatalf("tags: %+v", p.responses)
	}
	// A custom template's headings, and a label shown twice.
	custom := "Rank these.\n\n### Response A\nfirst text\n\n**Response B:**\nsecond text\nResponse B\nagain\n\nEnd with FINAL RANKING:"
	p = readPrompt(stagework.Request{Messages: []stagework.Message{{Role: "system", Content: "Response Z"}, {Role: "user", Content: custom}}})
	if len(p.responses) != 2 || p.responses[0].text != "first text" || p.responses[1].label != "B" || p.responses[1].text != "second text" {
		t.Fatalf("headings: %+v", p.responses)
	}
	// No responses: the ranker says so and its ranking is empty.
	sim := newSim(t, stagework.SimConfig{OutputTokens: 100})
	text, _ := mustDrain(t, sim, stagework.Request{Stage: stagework.StageRanker, Query: "q", Messages: []stagework.Message{{Role: "user", Content: "nothing here"}}})
	if !strings.Contains(text, "No labelled responses") || !strings.HasSuffix(strings.TrimRight(text, "\n"), "FINAL RANKING:") {
		t.Errorf("no responses:\n%s", text)
	}
}

func TestSimStrategyDeterministic(t *testing.T) {
	cfg := stagework.SimConfig{OutputTokens: 260}
	for _, req := range strategyRequests(t, newSim(t, cfg), "What is the CAP theorem?", 4) {
		req.Seed = 11
		a, _ := mustDrain(t, newSim(t, cfg), req)
		b, _ := mustDrain(t, newSim(t, cfg), req)
		if a != b {
			t.Errorf("%s: same request, different text", req.Stage)
		}
		distinct := map[string]bool{a: true}
		for seed := int64(12); seed < 16; seed++ {
			req.Seed = seed
			c, _ := mustDrain(t, newSim(t, cfg), req)
			distinct[c] = true
		}
		if len(distinct) < 4 {
			t.Errorf("%s: 5 seeds wrote %d distinct texts", req.Stage, len(distinct))
		}
	}
}
