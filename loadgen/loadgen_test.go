package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/client/clienttest"
)

func testConfig(g *clienttest.Gateway) Config {
	cfg := DefaultConfig()
	cfg.URL, cfg.APIKey = g.URL, g.TenantKey
	cfg.Duration, cfg.Drain = 2*time.Minute, time.Minute
	return cfg
}

func mustRun(t *testing.T, ctx context.Context, cfg Config) *Report {
	t.Helper()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if t.Failed() || testing.Verbose() {
		rep.WriteSummary(testWriter{t})
	}
	return rep
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func newTestClient(t *testing.T, g *clienttest.Gateway) *client.Client {
	cc := client.DefaultConfig()
	cc.BaseURL, cc.APIKey = g.URL, g.TenantKey
	c, err := client.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every target against a real gateway: every request sent is a run that
// completed, and the load's token counts are the server's — its run
// resources' and its Prometheus counters'.
func TestTargetsEndToEnd(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newTestClient(t, g)
	for _, target := range []Target{TargetRuns, TargetRunsStream, TargetWS, TargetChat} {
		t.Run(string(target), func(t *testing.T) {
			cfg := testConfig(g)
			cfg.Target, cfg.Concurrency, cfg.Requests = target, 3, 7
			cfg.Mix = []MixItem{{Profile: "instant", QueryWords: 5, Weight: 2}, {Profile: "moa", Query: "What is Raft?", Weight: 1}}
			cfg.ServerMetrics, cfg.MetricsKey = g.URL+"/metrics", g.AdminKey
			rep := mustRun(t, context.Background(), cfg)
			if rep.Sent != 7 || rep.Outcomes[OutcomeOK] != 7 || len(rep.Results) != 7 || len(rep.Errors) != 0 {
				t.Fatalf("sent %d outcomes %v errors %v", rep.Sent, rep.Outcomes, rep.ErrorSamples)
			}
			mixes := map[string]int{}
			var tokens int64
			for _, r := range rep.Results {
				mixes[r.Mix]++
				run, err := c.GetRun(context.Background(), r.RunID)
				if err != nil {
					t.Fatal(err)
				}
				if run.Status != "completed" || !(r.TTFTAnyMs > 0 && r.TTFTAnyMs <= r.TTFTMs && r.TTFTMs <= r.E2EMs) || r.AnswerTokens < 1 {
					t.Fatalf("run %s: status %s, result %+v", r.RunID, run.Status, r)
				}
				var steps int64
				for _, s := range run.Steps {
					steps += s.Tokens
				}
				if target != TargetChat && r.Tokens != steps {
					t.Fatalf("run %s: %d tokens streamed, the run resource has %d", r.RunID, r.Tokens, steps)
				}
				tokens += r.Tokens
			}
			if len(mixes) != 2 || rep.Tokens != tokens || rep.Latency["itl"].Count == 0 || rep.Latency["e2e"].Count != 7 {
				t.Fatalf("mix %v tokens %d/%d itl %d", mixes, rep.Tokens, tokens, rep.Latency["itl"].Count)
			}
			ag := rep.Agreement
			if ag == nil {
				t.Fatal("no agreement")
			}
			found := 0
			for _, row := range ag.Rows {
				if (row.What == "runs completed" || row.What == "tokens streamed") && row.Client == row.Server {
					found++
				}
			}
			ledger := 0
			for _, row := range ag.Rows {
				if strings.HasPrefix(row.Source, "usage ledger") && row.N == 7 {
					ledger++
				}
			}
			if (target != TargetChat && found != 2) || ledger != 8 {
				t.Fatalf("agreement rows (%d exact counts, %d ledger rows): %+v %v", found, ledger, ag.Rows, ag.Notes)
			}
		})
	}
}

// Cancel probes: every run cancelled, its stream ended, the time measured;
// reconnect probes: streams dropped on purpose resume gap-free.
func TestProbes(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newTestClient(t, g)
	for _, target := range []Target{TargetRuns, TargetRunsStream, TargetWS, TargetChat} {
		t.Run("cancel/"+string(target), func(t *testing.T) {
			cfg := testConfig(g)
			cfg.Target, cfg.Concurrency, cfg.Requests = target, 3, 3
			cfg.Mix = []MixItem{{Profile: "slow", QueryWords: 3, Weight: 1}}
			cfg.CancelProbes, cfg.CancelWithin = 1, 100*time.Millisecond
			rep := mustRun(t, context.Background(), cfg)
			if rep.Outcomes[OutcomeCancelled] != 3 || rep.Probes.CancelEnded != 3 || rep.Latency["cancel_to_end"].Count != 3 {
				t.Fatalf("outcomes %v probes %+v errors %v", rep.Outcomes, rep.Probes, rep.ErrorSamples)
			}
			for _, r := range rep.Results {
				run, err := c.GetRun(context.Background(), r.RunID)
				if err != nil || run.Status != "cancelled" || r.CancelToEndMs <= 0 {
					t.Fatalf("run %s: %v %v, result %+v", r.RunID, run, err, r)
				}
			}
		})
	}
	for _, target := range []Target{TargetRuns, TargetRunsStream, TargetWS} {
		t.Run("reconnect/"+string(target), func(t *testing.T) {
			cfg := testConfig(g)
			cfg.Target, cfg.Concurrency, cfg.Requests = target, 3, 4
			cfg.Mix = []MixItem{{Profile: "slowmoa", QueryWords: 3, Weight: 1}}
			cfg.ReconnectProbes, cfg.ReconnectWithin = 1, 30
			rep := mustRun(t, context.Background(), cfg)
			p := rep.Probes
			if rep.Outcomes[OutcomeOK] != 4 || p.ReconnectTried != 4 || p.Reconnects < 4 || p.ReconnectGapFree != 4 || p.SeqGaps != 0 {
				t.Fatalf("outcomes %v probes %+v errors %v", rep.Outcomes, p, rep.ErrorSamples)
			}
		})
	}
}

// openAIServer streams a chat completion as an OpenAI-compatible server
// does: a role chunk, reasoning, content in chunks of several words, the
// finish and usage chunks, [DONE]. hold, when set, runs before it answers.
func openAIServer(t *testing.T, hold func(i int64), fail func(i int64) bool) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/chat/completions" || r.Header.Get("Authorization") != "Bearer sk-test" {
			http.Error(w, `{"error":{"message":"no","type":"invalid_request_error","code":"bad"}}`, http.StatusUnauthorized)
			return
		}
		i := n.Add(1) - 1
		if hold != nil {
			hold(i)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		chunk := func(delta string) {
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":%s,\"finish_reason\":null}]}\n\n", delta)
			fl.Flush()
		}
		chunk(`{"role":"assistant","content":""}`)
		chunk(`{"reasoning_content":"thinking it over"}`)
		chunk(`{"content":"Hello there"}`)
		if fail != nil && fail(i) {
			io.WriteString(w, "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n")
			return
		}
		chunk(`{"content":", general Kenobi."}`)
		io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n")
		io.WriteString(w, "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9,\"total_tokens\":14}}\n\n")
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv
}

// The chat target measures any OpenAI-compatible server: tokens counted
// by the tokenizer, the answer's TTFT after the reasoning's, an error
// chunk after HTTP 200 counted as an error by its code.
func TestChatAgainstAnOpenAIServer(t *testing.T) {
	srv := openAIServer(t, nil, func(i int64) bool { return i%3 == 2 })
	cfg := DefaultConfig()
	cfg.URL, cfg.APIKey, cfg.Target, cfg.Concurrency, cfg.Requests = srv.URL, "sk-test", TargetChat, 2, 9
	cfg.Mix = []MixItem{{Model: "gpt-test", Query: "Hi", Weight: 1}}
	cfg.CancelProbes = 0.5 // not QLC (no run id): no probe
	rep := mustRun(t, context.Background(), cfg)
	if rep.Outcomes[OutcomeOK] != 6 || rep.Errors["overloaded"] != 3 || rep.Probes.CancelTried != 0 {
		t.Fatalf("outcomes %v errors %v probes %+v", rep.Outcomes, rep.Errors, rep.Probes)
	}
	for _, r := range rep.Results {
		if r.Outcome != OutcomeOK {
			continue
		}
		// o200k_base: "Hello there" 2, ", general Kenobi." 5; "thinking it over" 3.
		if r.AnswerTokens != 7 || r.Tokens != 10 || r.UsageTokens != 9 || !(r.TTFTAnyMs <= r.TTFTMs && r.TTFTMs <= r.E2EMs) {
			t.Fatalf("result %+v", r)
		}
	}
	if rep.Latency["itl"].Count != 6*5 { // the second content chunk: 5 tokens, 5 gaps each
		t.Fatalf("itl count %d", rep.Latency["itl"].Count)
	}
}

// An open loop counts latency from the scheduled send. The server answers
// one request at a time, each after holding it 30 ms, and the load lets
// only one request be in flight: the requests queue, and each one's
// latency includes its wait (lower bounds only: a slow machine only adds).
func TestOpenLoopCountsFromTheScheduledSend(t *testing.T) {
	const hold = 30 * time.Millisecond
	var mu sync.Mutex
	srv := openAIServer(t, func(int64) {
		mu.Lock()
		defer mu.Unlock()
		time.Sleep(hold)
	}, nil)
	cfg := DefaultConfig()
	cfg.URL, cfg.APIKey, cfg.Target, cfg.Tokenizer = srv.URL, "sk-test", TargetChat, "chunks"
	cfg.Rate, cfg.Requests, cfg.MaxInFlight = 1000, 6, 1 // all six scheduled within 5 ms
	rep := mustRun(t, context.Background(), cfg)
	if rep.Outcomes[OutcomeOK] != 6 {
		t.Fatalf("outcomes %v %v", rep.Outcomes, rep.ErrorSamples)
	}
	e2e := []float64{}
	for _, r := range rep.Results {
		if r.ScheduledMs > 5+0.001 {
			t.Fatalf("scheduled at %v ms", r.ScheduledMs)
		}
		if r.E2EMs < r.QueueMs+ms(hold) {
			t.Fatalf("e2e %v ms does not include its %v ms in the queue", r.E2EMs, r.QueueMs)
		}
		e2e = append(e2e, r.E2EMs)
	}
	sort.Float64s(e2e)
	for j, v := range e2e {
		if want := float64(j+1)*ms(hold) - 5; v < want {
			t.Fatalf("the %d-th fastest request took %v ms from its scheduled send, want ≥ %v", j+1, v, want)
		}
	}
	if q := rep.Latency["queue"]; q.Max < 4*ms(hold) {
		t.Fatalf("queue max %v ms: the requests did not wait", q.Max)
	}
}

// Bounds: a closed loop stops sending at Duration even with requests to
// go; Ctrl-C (ctx) stops a load, cancels its runs and still reports.
func TestBoundsAndInterrupt(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newTestClient(t, g)
	cfg := testConfig(g)
	cfg.Concurrency, cfg.Requests, cfg.Duration = 2, 100, 300*time.Millisecond
	cfg.Mix = []MixItem{{Profile: "slowmoa", QueryWords: 3, Weight: 1}} // > 1 s a run
	rep := mustRun(t, context.Background(), cfg)
	if rep.Sent != 2 || rep.Outcomes[OutcomeOK] != 2 || rep.Interrupted {
		t.Fatalf("duration bound: sent %d outcomes %v", rep.Sent, rep.Outcomes)
	}

	cfg = testConfig(g)
	cfg.Rate, cfg.Requests = 20, 3
	cfg.Mix = []MixItem{{Profile: "slow", QueryWords: 3, Weight: 1}}
	ctx, cancel := context.WithCancel(context.Background())
	var started atomic.Int64
	cfg.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		if r.Method == "GET" && strings.HasSuffix(r.URL.Path, "/events") && started.Add(1) == 3 {
			cancel() // Ctrl-C once the three streams are open
		}
		return resp, err
	})}
	rep = mustRun(t, ctx, cfg)
	if !rep.Interrupted || rep.Outcomes[OutcomeInterrupted] != 3 || rep.Sent != 3 {
		t.Fatalf("interrupt: %+v outcomes %v", rep.Interrupted, rep.Outcomes)
	}
	for _, r := range rep.Results {
		if r.RunID == "" {
			continue
		}
		run, err := c.GetRun(context.Background(), r.RunID)
		if err != nil || run.Status != "cancelled" {
			t.Fatalf("interrupted run %s: %v %v", r.RunID, run.Status, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
