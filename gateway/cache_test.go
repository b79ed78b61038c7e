package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
)

// upstreamCounting is a real OpenAI-compatible server that streams a short
// answer slowly enough for identical requests to overlap, and counts the
// chat completions it was asked for.
func upstreamCounting(t *testing.T) (*httptest.Server, *atomic.Int32) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for _, piece := range []string{"Light", " scatters", " off", " air."} {
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":null}]}\n\n", piece)
			fl.Flush()
			time.Sleep(20 * time.Millisecond)
		}
		fmt.Fprint(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":4,\"total_tokens\":14}}\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

const cacheTestProfiles = `
providers:
  up: {kind: openai, base_url: %s/v1}
profiles:
  chain:
    provider: up
    stages: {generator: {model: m}, refiner: {model: m}, validator: {model: m}, curator: {model: m}}
prices:
  m: {input: 1000, output: 1000}
`

func postJSON(t *testing.T, url, key, body string, header http.Header) (int, runView) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	var v runView
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusCreated {
		if err := json.Unmarshal(data, &v); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, v
}

// 100 identical seeded requests at once through POST /v1/runs cost one
// upstream run (four chat completions: one per stage): every run completes
// with the same answer, all but one marked cached. Later, the same request
// is answered from the cache (no upstream call), and opting out ("cache":
// false, or Cache-Control: no-cache) or leaving out the seed calls the
// models again.
func TestIdenticalRequestsCostOneUpstreamRun(t *testing.T) {
	up, calls := upstreamCounting(t)
	g := startGateway(t, fmt.Sprintf(cacheTestProfiles, up.URL), func(_ *Config, e *actors.Config) { e.MaxActiveRuns = 400 })
	body := `{"query":"Why is the sky blue?","profile":"chain","seed":42}`
	const n = 100
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, v := postJSON(t, g.URL+"/v1/runs", "", body, nil)
			if code != http.StatusCreated {
				t.Errorf("POST %d: HTTP %d", i, code)
				return
			}
			ids[i] = v.ID
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	var answer string
	cached := 0
	for _, id := range ids {
		var v runView
		waitStatus(t, g.URL, id, "completed", &v)
		if answer == "" {
			answer = v.Answer
		}
		if v.Answer != answer || v.Answer == "" {
			t.Fatalf("run %s answered %q, another %q", id, v.Answer, answer)
		}
		if v.Cached {
			cached++
		}
	}
	if got := calls.Load(); got != 4 {
		t.Fatalf("%d identical requests made %d upstream calls, want 4 (one run of four stages)", n, got)
	}
	if cached != n-1 {
		t.Fatalf("%d runs marked cached, want %d", cached, n-1)
	}

	code, v := postJSON(t, g.URL+"/v1/runs", "", body, nil)
	if code != http.StatusCreated {
		t.Fatalf("HTTP %d", code)
	}
	waitStatus(t, g.URL, v.ID, "completed", &v)
	if !v.Cached || v.Answer != answer || calls.Load() != 4 {
		t.Fatalf("a later identical request: cached %v, %d upstream calls", v.Cached, calls.Load())
	}
	for name, req := range map[string]struct {
		body   string
		header http.Header
	}{
		"cache false":            {`{"query":"Why is the sky blue?","profile":"chain","seed":42,"cache":false}`, nil},
		"Cache-Control no-cache": {body, http.Header{"Cache-Control": {"no-cache"}}},
		"no seed":                {`{"query":"Why is the sky blue?","profile":"chain"}`, nil},
	} {
		before := calls.Load()
		code, v := postJSON(t, g.URL+"/v1/runs", "", req.body, req.header)
		if code != http.StatusCreated {
			t.Fatalf("%s: HTTP %d", name, code)
		}
		waitStatus(t, g.URL, v.ID, "completed", &v)
		if v.Cached || calls.Load() != before+4 {
			t.Fatalf("%s: cached %v, %d upstream calls (want 4 more)", name, v.Cached, calls.Load()-before)
		}
	}
}

// A cached run is billed nothing by default, its ledger rows marked
// "cached"; another tenant's identical request is not served from the
// first tenant's run.
func TestCachedRunBillingAndTenants(t *testing.T) {
	up, calls := upstreamCounting(t)
	g := startTenantGatewayProfiles(t, fmt.Sprintf(cacheTestProfiles, up.URL), nil)
	body := `{"query":"Why is the sky blue?","profile":"chain","seed":42}`
	var v runView
	_, first := postJSON(t, g.URL+"/v1/runs", g.Dev.TenantKey, body, nil)
	waitStatusKey(t, g.URL, g.Dev.TenantKey, first.ID, "completed", &v)
	_, second := postJSON(t, g.URL+"/v1/runs", g.Dev.TenantKey, body, nil)
	waitStatusKey(t, g.URL, g.Dev.TenantKey, second.ID, "completed", &v)
	if !v.Cached || v.CachedFrom != first.ID || calls.Load() != 4 {
		t.Fatalf("second run: cached %v from %q, %d calls", v.Cached, v.CachedFrom, calls.Load())
	}
	var usage struct {
		Data []struct {
			RunID       string  `json:"run_id"`
			TotalTokens int64   `json:"total_tokens"`
			CostUSD     float64 `json:"cost_usd"`
			Stages      []struct {
				Status string `json:"status"`
			} `json:"stages"`
		} `json:"data"`
	}
	waitUntil(t, "both runs in the ledger", func() bool {
		call(t, "GET", g.URL+"/v1/usage", g.Dev.TenantKey, "", &usage)
		return len(usage.Data) == 2
	})
	for _, u := range usage.Data {
		switch u.RunID {
		case first.ID:
			if u.TotalTokens != 56 || u.CostUSD <= 0 {
				t.Fatalf("the run that called the models: %+v", u)
			}
		case second.ID:
			if u.TotalTokens != 0 || u.CostUSD != 0 || len(u.Stages) != 4 || u.Stages[0].Status != "cached" {
				t.Fatalf("the cached run: %+v", u)
			}
		default:
			t.Fatalf("unknown run %s", u.RunID)
		}
	}
	_, key := newTenant(t, g, "other", "")
	_, third := postJSON(t, g.URL+"/v1/runs", key, body, nil)
	var w runView // fresh: decoding leaves absent fields as they were
	waitStatusKey(t, g.URL, key, third.ID, "completed", &w)
	if w.Cached || calls.Load() != 8 {
		t.Fatalf("another tenant's identical request: cached %v, %d calls", w.Cached, calls.Load())
	}
}

// Through the OpenAI endpoint: a repeated seeded chat completion is
// answered from the cache (the same content, no upstream call), streamed
// or not; Cache-Control: no-cache calls the models again.
func TestChatCompletionFromTheCache(t *testing.T) {
	up, calls := upstreamCounting(t)
	g := startGateway(t, fmt.Sprintf(cacheTestProfiles, up.URL), nil)
	chat := func(stream bool, header http.Header) string {
		t.Helper()
		body := fmt.Sprintf(`{"model":"qlc-chain","seed":9,"stream":%v,"messages":[{"role":"user","content":"Why is the sky blue?"}]}`, stream)
		req, _ := http.NewRequest("POST", g.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		for k, vs := range header {
			req.Header[k] = vs
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HTTP %d: %s", resp.StatusCode, data)
		}
		if !stream {
			var v struct {
				Choices []struct{ Message struct{ Content string } }
			}
			if err := json.Unmarshal(data, &v); err != nil || len(v.Choices) != 1 {
				t.Fatalf("%s: %v", data, err)
			}
			return v.Choices[0].Message.Content
		}
		var text strings.Builder
		for _, line := range strings.Split(string(data), "\n") {
			payload, ok := strings.CutPrefix(line, "data: ")
			if !ok || payload == "[DONE]" {
				continue
			}
			var c struct {
				Choices []struct{ Delta struct{ Content string } }
			}
			if json.Unmarshal([]byte(payload), &c) == nil && len(c.Choices) > 0 {
				text.WriteString(c.Choices[0].Delta.Content)
			}
		}
		return text.String()
	}
	first := chat(false, nil)
	if first == "" || calls.Load() != 4 {
		t.Fatalf("first: %q, %d upstream calls", first, calls.Load())
	}
	if again := chat(false, nil); again != first || calls.Load() != 4 {
		t.Fatalf("repeated: %q, %d upstream calls; want %q from the cache", again, calls.Load(), first)
	}
	if streamed := chat(true, nil); streamed != first || calls.Load() != 4 {
		t.Fatalf("streamed: %q, %d upstream calls; want %q from the cache", streamed, calls.Load(), first)
	}
	if fresh := chat(false, http.Header{"Cache-Control": {"no-cache"}}); fresh != first || calls.Load() != 8 {
		t.Fatalf("no-cache: %q, %d upstream calls; want the models called again", fresh, calls.Load())
	}
}
