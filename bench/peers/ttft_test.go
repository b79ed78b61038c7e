package main

import (
	"bytes"
	"context"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The mock streams min(tokens, max_tokens) content chunks after a role
// chunk, the usage when asked, and [DONE]; through the floor proxy the
// client sees the same stream; the TTFT is the first chunk with content
// (not the role chunk), before the end.
func TestMockProxyAndChatStream(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mock, proxy := mockAndFloor(t, ctx, 20)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, base := range []string{mock, proxy} {
		resp, err := client.Post(base+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"m","stream":true,"max_tokens":7,"stream_options":{"include_usage":true}}`))
		if err != nil {
			t.Fatal(err)
		}
		sr := newSSEReader(resp.Body, defaultReadBuf, defaultMaxLine, defaultMaxEvent)
		var content int
		var sawUsage, sawDone, sawRole bool
		for range 100 {
			ev, err := sr.Next()
			if err != nil {
				break
			}
			switch {
			case bytes.Equal(ev.Data, doneData):
				sawDone = true
			case bytes.Contains(ev.Data, []byte(`"role":"assistant"`)):
				sawRole = true
			case bytes.Contains(ev.Data, []byte(`"completion_tokens":7`)):
				sawUsage = true
			case bytes.Contains(ev.Data, keyContent):
				content++
			}
		}
		resp.Body.Close()
		if content != 7 || !sawUsage || !sawDone || !sawRole {
			t.Fatalf("%s: %d content chunks, usage %v, done %v, role %v", base, content, sawUsage, sawDone, sawRole)
		}
		tm, err := chatStream(ctx, client, base+"/v1/chat/completions", "", "m", 20)
		if err != nil || tm.TTFT <= 0 || tm.E2E < tm.TTFT {
			t.Fatalf("%s: %+v %v", base, tm, err)
		}
	}
	resp, err := client.Post(mock+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":false}`))
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a request that does not stream: %v %v", resp.Status, err)
	}
	resp.Body.Close()
	if _, err := chatStream(ctx, client, mock+"/nothing", "", "m", 5); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("a 404: %v", err)
	}
}

// chatStream refuses streams that carry no token, end without [DONE] or
// carry an error chunk; a role chunk with empty content is no token.
func TestChatStreamRefuses(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for body, want := range map[string]string{
		"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: [DONE]\n\n": "no content",
		"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n":                                       "without [DONE]",
		"data: {\"error\":{\"message\":\"lagged\"}}\n\n":                                                  "error chunk",
	} {
		base, err := serveLoopback(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Write([]byte(body))
		}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := chatStream(ctx, http.DefaultClient, base, "", "m", 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", body, err, want)
		}
	}
}

// An arm of four calls times the answer from the first call's start to the
// last call's first token; rounds put every arm in, in the rounds asked;
// the table pairs QLC-like arms with their floor.
func TestRunTTFT(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int64
	m := &mockUpstream{tokens: 10}
	mock, err := serveLoopback(ctx, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		m.ServeHTTP(w, r)
	}))
	if err != nil {
		t.Fatal(err)
	}
	mu, _ := url.Parse(mock)
	proxy, err := serveLoopback(ctx, newFloorProxy(mu))
	if err != nil {
		t.Fatal(err)
	}
	path := "/v1/chat/completions"
	var arms []ttftArm
	for _, k := range []int{2, 10} {
		arms = append(arms,
			ttftArm{Name: armProxy1, Stages: 1, Calls: 1, Tokens: k, URL: proxy + path, Model: "m"},
			ttftArm{Name: "other", Stages: 1, Calls: 1, Tokens: k, URL: mock + path, Model: "m"},
			ttftArm{Name: armProxy4, Stages: 4, Calls: 4, Tokens: k, URL: proxy + path, Model: "m"})
	}
	client := &http.Client{Timeout: 10 * time.Second}
	four, err := measureArm(ctx, client, arms[5])
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 4 || four.TTFT <= 0 || four.E2E < four.TTFT {
		t.Fatalf("four calls: %d requests, %+v", calls.Load(), four)
	}
	rounds, err := runTTFT(ctx, client, arms, ttftConfig{Requests: 5, Warm: 1, Rounds: 2}, rand.New(rand.NewPCG(1, 1)), time.Now().Add(time.Minute))
	if err != nil || len(rounds) != 12 {
		t.Fatalf("%d rounds: %v", len(rounds), err)
	}
	var rows []ttftRow
	for _, a := range arms {
		row := ttftRow{Arm: a}
		for _, r := range rounds {
			if r.Arm == a.Name && r.Tokens == a.Tokens {
				if len(r.Samples) != 5 || r.TTFT["p99"] < r.TTFT["p50"] || r.E2E < r.TTFT["p50"] {
					t.Fatalf("round %+v", r)
				}
				row.Rounds = append(row.Rounds, r)
			}
		}
		rows = append(rows, row)
	}
	var b strings.Builder
	writeTTFTTable(&b, rows)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	// Header, rule, 6 rows, a blank line, one per-token line ("other"
	// against the one-call floor; the floors have none).
	if len(lines) != 10 || !strings.HasSuffix(lines[2], "| – | – |") || strings.HasSuffix(lines[3], "| – | – |") ||
		!strings.HasPrefix(lines[9], "- other: added per token over the floor (2 → 10 tokens a stage)") {
		t.Fatalf("table:\n%s", b.String())
	}
	// Past the time budget, nothing more is measured.
	if r, err := runTTFT(ctx, client, arms, ttftConfig{Requests: 5, Rounds: 2}, rand.New(rand.NewPCG(1, 1)), time.Now()); err != errBudget || len(r) != 0 {
		t.Fatalf("after the budget: %d rounds, %v", len(r), err)
	}
}

// Through the floor proxy, answers from the zero-latency mock come whole,
// request after request on one connection (forwarding the inbound body as
// it was cut about one answer in a hundred: see newFloorProxy).
func TestFloorProxyKeepsAnswersWhole(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, proxy := mockAndFloor(t, ctx, 10)
	client := &http.Client{Timeout: 10 * time.Second}
	for i := range 400 {
		if _, err := chatStream(ctx, client, proxy+"/v1/chat/completions", "", "m", 10); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
	}
}

// mockAndFloor serves a zero-latency mock streaming tokens a request, and
// the floor proxy in front of it, on loopback until ctx ends.
func mockAndFloor(t *testing.T, ctx context.Context, tokens int) (mock, proxy string) {
	t.Helper()
	mock, err := serveLoopback(ctx, &mockUpstream{tokens: tokens})
	if err != nil {
		t.Fatal(err)
	}
	mu, _ := url.Parse(mock)
	proxy, err = serveLoopback(ctx, newFloorProxy(mu))
	if err != nil {
		t.Fatal(err)
	}
	return mock, proxy
}
