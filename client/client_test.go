package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/client/clienttest"
)

func newClient(t *testing.T, url, key string) *client.Client {
	t.Helper()
	cfg := client.DefaultConfig()
	cfg.BaseURL, cfg.APIKey, cfg.MinBackoff = url, key, 10*time.Millisecond
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readAll reads a stream to its end, checking that ids only move forward
// (no event twice, parts in order), and returns the fold and the events.
func readAll(t *testing.T, s *client.Stream) (*client.Fold, []client.Event) {
	t.Helper()
	f := client.NewFold()
	var evs []client.Event
	var lastSeq uint64
	lastEnd := -1
	for {
		ev, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		end := -1
		if ev.Part != nil && ev.Part.End < ev.Part.Size {
			end = ev.Part.End
		}
		switch {
		case ev.Seq > lastSeq:
		case ev.Seq == lastSeq && ev.Part != nil && (end > lastEnd || (end == -1 && lastEnd >= 0)):
		default:
			t.Fatalf("event %s (seq %d) after seq %d:%d: a duplicate or out of order", ev.ID, ev.Seq, lastSeq, lastEnd)
		}
		lastSeq, lastEnd = ev.Seq, end
		f.Add(ev)
		evs = append(evs, ev)
	}
	return f, evs
}

// checkFold compares what the events rebuilt with the run resource.
func checkFold(t *testing.T, c *client.Client, id string, f *client.Fold) *client.Run {
	t.Helper()
	run, err := c.GetRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if f.Status != run.Status {
		t.Fatalf("fold status %q, run %q", f.Status, run.Status)
	}
	if run.Answer == "" || f.Answer() != run.Answer {
		t.Fatalf("fold answer %q\nrun answer %q", f.Answer(), run.Answer)
	}
	for _, s := range run.Steps {
		got := f.Steps[s.ID]
		if got == nil || got.Text.String() != s.Output {
			t.Fatalf("step %s: fold %v, run %q", s.ID, got, s.Output)
		}
		if got.Status == "completed" && got.OutputBytes != len(s.Output) {
			t.Fatalf("step %s: output_bytes %d, text %d bytes", s.ID, got.OutputBytes, len(s.Output))
		}
	}
	return run
}

func TestRunStreamsAndFolds(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	for _, profile := range []string{"instant", "moa"} {
		t.Run(profile, func(t *testing.T) {
			run, err := c.CreateRun(ctx, client.RunRequest{Query: "why is the sky blue?", Profile: profile, Seed: 7})
			if err != nil {
				t.Fatal(err)
			}
			f, evs := readAll(t, c.Events(ctx, run.ID, ""))
			if evs[0].Seq != 1 || evs[len(evs)-1].Type != client.EventRunCompleted {
				t.Fatalf("events %s … %s", evs[0].Type, evs[len(evs)-1].Type)
			}
			if profile == "moa" && (f.Strategy != "moa" || f.FinalStep != "aggregator" || len(f.Order) != 4) {
				t.Fatalf("moa fold: strategy %q final %q steps %v", f.Strategy, f.FinalStep, f.Order)
			}
			checkFold(t, c, run.ID, f)
			// A reader that resumes after event 3 gets the rest, and the
			// same answer from its own fold of the whole.
			rest, _ := readAll(t, c.EventsAfter(ctx, run.ID, client.After(3)))
			if rest.Status != "completed" {
				t.Fatalf("resumed status %q", rest.Status)
			}
		})
	}
}

func TestStreamResumesAfterADroppedConnection(t *testing.T) {
	g := clienttest.Start(t, "")
	p := clienttest.NewCutProxy(t, g.URL, 1500, 2)
	c := newClient(t, p.URL, g.TenantKey)
	ctx := context.Background()
	run, err := c.CreateRun(ctx, client.RunRequest{Query: "what is TCP?", Profile: "slowmoa"})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Events(ctx, run.ID, "")
	f, _ := readAll(t, s)
	if p.Cuts.Load() != 2 || s.Reconnects() < 2 {
		t.Fatalf("cuts %d, reconnects %d; want 2 each", p.Cuts.Load(), s.Reconnects())
	}
	checkFold(t, c, run.ID, f)
}

func TestAPIErrors(t *testing.T) {
	g := clienttest.Start(t, "")
	ctx := context.Background()
	var e *client.APIError
	_, err := newClient(t, g.URL, "qlc_not_a_key").Profiles(ctx)
	if !errors.As(err, &e) || e.Status != 401 || e.Code != "invalid_api_key" || e.Type != "authentication_error" {
		t.Fatalf("bad key: %#v", err)
	}
	c := newClient(t, g.URL, g.TenantKey)
	if _, err := c.GetRun(ctx, "run_nope"); !client.IsCode(err, "run_not_found") {
		t.Fatalf("unknown run: %v", err)
	}
	if _, err := c.Events(ctx, "run_nope", "").Next(); !client.IsCode(err, "run_not_found") {
		t.Fatalf("unknown run's events: %v", err)
	}
	if _, err := c.EventsWS(ctx, "run_nope", "").Next(); !client.IsCode(err, "run_not_found") {
		t.Fatalf("unknown run's WebSocket: %v", err)
	}
	_, err = c.CreateRun(ctx, client.RunRequest{Query: "x", Profile: "nope"})
	if !errors.As(err, &e) || e.Status != 404 || e.Code != "unknown_profile" || !strings.Contains(err.Error(), "unknown_profile") {
		t.Fatalf("unknown profile: %v", err)
	}
	if _, err := c.AdminTenants(ctx); !client.IsCode(err, "admin_key_required") {
		t.Fatalf("admin call with a tenant key: %v", err)
	}
	if _, err := client.New(client.Config{BaseURL: "ftp://x"}); !errors.Is(err, client.ErrBadConfig) {
		t.Fatalf("bad URL: %v", err)
	}
}

func TestCancelUsageProfilesTokenize(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	run, err := c.CreateRun(ctx, client.RunRequest{Query: "a long one", Profile: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	s := c.Events(ctx, run.ID, "")
	if _, err := s.Next(); err != nil { // started
		t.Fatal(err)
	}
	got, err := c.CancelRun(ctx, run.ID)
	if err != nil || got.Status != "cancelled" {
		t.Fatalf("cancel: %v %+v", err, got)
	}
	f, _ := readAll(t, s)
	if f.Status != "cancelled" {
		t.Fatalf("stream after cancel: %q", f.Status)
	}
	if _, err := c.CancelRun(ctx, run.ID); !client.IsCode(err, "run_finished") {
		t.Fatalf("second cancel: %v", err)
	}
	var u *client.UsageReport
	for deadline := time.Now().Add(5 * time.Second); ; {
		if u, err = c.Usage(ctx, client.UsageQuery{}); err != nil {
			t.Fatal(err)
		}
		if len(u.Data) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(u.Data) != 1 || u.Data[0].RunID != run.ID || u.Data[0].Status != "cancelled" || u.Totals.Runs != 1 {
		t.Fatalf("usage %+v", u)
	}
	ps, err := c.Profiles(ctx)
	if err != nil || ps.Default != "instant" || len(ps.Data) != 4 {
		t.Fatalf("profiles %+v %v", ps, err)
	}
	tk, err := c.Tokenize(ctx, client.TokenizeRequest{Encoding: "cl100k_base", Text: "hello world"})
	if err != nil || tk.Count != 2 || tk.Encoding != "cl100k_base" {
		t.Fatalf("tokenize %+v %v", tk, err)
	}
}

func TestAdmin(t *testing.T) {
	g := clienttest.Start(t, "")
	a := newClient(t, g.URL, g.AdminKey)
	ctx := context.Background()
	k, err := a.AdminCreateTenant(ctx, client.NewTenant{Name: "acme", ID: "acme"})
	if err != nil || k.Key == "" || k.KeyID == "" || k.TenantID != "acme" {
		t.Fatalf("create %+v %v", k, err)
	}
	if _, err := newClient(t, g.URL, k.Key).Profiles(ctx); err != nil {
		t.Fatalf("the new key: %v", err)
	}
	k2, err := a.AdminCreateKey(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AdminRevokeKey(ctx, k.KeyID); err != nil {
		t.Fatal(err)
	}
	if _, err := newClient(t, g.URL, k.Key).Profiles(ctx); !client.IsCode(err, "invalid_api_key") {
		t.Fatalf("a revoked key: %v", err)
	}
	rpm := int64(5)
	name := "Acme"
	if _, err := a.AdminUpdateTenant(ctx, "acme", client.TenantPatch{Name: &name, Limits: &client.Limits{RequestsPerMinute: rpm}}); err != nil {
		t.Fatal(err)
	}
	ten, err := a.AdminTenant(ctx, "acme")
	if err != nil || ten.Name != "Acme" || ten.Limits.RequestsPerMinute != 5 || len(ten.Keys) != 2 {
		t.Fatalf("tenant %+v %v", ten, err)
	}
	all, err := a.AdminTenants(ctx)
	if err != nil || len(all) < 2 {
		t.Fatalf("tenants %+v %v", all, err)
	}
	audit, err := a.AdminAudit(ctx, "", "")
	if err != nil || len(audit) < 4 {
		t.Fatalf("audit %+v %v", audit, err)
	}
	_ = k2
}

// splitServer serves one run whose delta 2 is split in three parts, and
// drops the first connection after the first part: the client must resume
// with Last-Event-ID "2:4" and get the rest of the delta once.
func TestSplitDeltaResumesInsideTheDelta(t *testing.T) {
	events := []string{
		"id: 1\nevent: stage_started\ndata: {\"seq\":1,\"type\":\"stage_started\",\"step\":\"curator\",\"stage\":\"curator\",\"final\":true}\n\n",
		"id: 2:4\nevent: token_delta\ndata: {\"seq\":2,\"type\":\"token_delta\",\"step\":\"curator\",\"text\":\"abcd\",\"part\":{\"offset\":0,\"end\":4,\"size\":10}}\n\n",
		"id: 2:8\nevent: token_delta\ndata: {\"seq\":2,\"type\":\"token_delta\",\"step\":\"curator\",\"text\":\"efgh\",\"part\":{\"offset\":4,\"end\":8,\"size\":10}}\n\n",
		"id: 2\nevent: token_delta\ndata: {\"seq\":2,\"type\":\"token_delta\",\"step\":\"curator\",\"text\":\"ij\",\"tokens\":3,\"part\":{\"offset\":8,\"end\":10,\"size\":10}}\n\n",
		"id: 3\nevent: run_completed\ndata: {\"seq\":3,\"type\":\"run_completed\",\"answer_bytes\":10}\n\n",
	}
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.Header.Get("Last-Event-ID"))
		n := len(asked)
		mu.Unlock()
		from := 0
		switch id := r.Header.Get("Last-Event-ID"); id {
		case "":
		case "2:4":
			from = 2
		default:
			t.Errorf("Last-Event-ID %q", id)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := from; i < len(events); i++ {
			if n == 1 && i == 2 {
				io.WriteString(w, events[i][:20]) // cut inside the next part
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			io.WriteString(w, ": ping\n\n"+events[i])
		}
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, "k")
	f, evs := readAll(t, c.Events(context.Background(), "run_x", ""))
	if f.Answer() != "abcdefghij" || len(evs) != 5 || fmt.Sprint(asked) != "[ 2:4]" {
		t.Fatalf("answer %q, %d events, Last-Event-IDs %q", f.Answer(), len(evs), asked)
	}
}

// The stream gives up after MaxReconnects attempts in a row.
func TestStreamGivesUp(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": ping\n\n") // never an event, then EOF
	}))
	defer srv.Close()
	cfg := client.Config{BaseURL: srv.URL, MaxReconnects: 3, MinBackoff: time.Millisecond, MaxBackoff: 2 * time.Millisecond}
	c, _ := client.New(cfg)
	_, err := c.Events(context.Background(), "run_x", "").Next()
	if err == nil || !strings.Contains(err.Error(), "after 3 reconnects") || n != 4 {
		t.Fatalf("err %v after %d connections", err, n)
	}
}

// An event split across reads at any byte parses the same (the SSE
// parser's read boundaries; STYLE.md).
func TestSSEReadBoundaries(t *testing.T) {
	stream := "id: 1\nevent: stage_started\ndata: {\"seq\":1,\"type\":\"stage_started\",\"step\":\"g\"}\n\n" +
		": ping\n\n" +
		"id: 2\r\nevent: token_delta\r\ndata: {\"seq\":2,\"type\":\"token_delta\",\"step\":\"g\",\"text\":\"h\\u00e9\"}\r\n\r\n" +
		"id: 3\nevent: run_completed\ndata: {\"seq\":3,\r\ndata: \"type\":\"run_completed\"}\n\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		rd := iotest.OneByteReader(strings.NewReader(stream))
		b := make([]byte, 1)
		for {
			if _, err := rd.Read(b); err != nil {
				return
			}
			w.Write(b)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, "")
	f, evs := readAll(t, c.Events(context.Background(), "r", ""))
	var ids []string
	for _, e := range evs {
		ids = append(ids, e.ID+"/"+e.Type)
	}
	if strings.Join(ids, ",") != "1/stage_started,2/token_delta,3/run_completed" || f.Steps["g"].Text.String() != "hé" {
		t.Fatalf("events %v text %q", ids, f.Steps["g"].Text.String())
	}
}

// A `lagged` reader reconnects from next_seq; a 503 is retried.
func TestStreamLaggedAndRetryable(t *testing.T) {
	var mu sync.Mutex
	var asked []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked = append(asked, r.URL.Query().Get("from_seq")+"|"+r.Header.Get("Last-Event-ID"))
		n := len(asked)
		mu.Unlock()
		switch n {
		case 1:
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: 1\ndata: {\"seq\":1,\"type\":\"stage_started\",\"step\":\"g\"}\n\nevent: lagged\ndata: {\"type\":\"lagged\",\"next_seq\":2}\n\n")
		case 2:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(503)
			io.WriteString(w, `{"error":{"message":"shutting down","type":"server_error","code":"shutting_down"}}`)
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "id: 2\ndata: {\"seq\":2,\"type\":\"run_completed\"}\n\n")
		}
	}))
	defer srv.Close()
	f, evs := readAll(t, newClient(t, srv.URL, "").Events(context.Background(), "r", ""))
	if len(evs) != 2 || f.Status != "completed" || fmt.Sprint(asked) != "[| 2| 2|]" {
		t.Fatalf("%d events, status %s, asked %q", len(evs), f.Status, asked)
	}
}

func TestChatCompletionAndModels(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	ms, err := c.Models(ctx)
	if err != nil || !slices.Contains(ms, "qlc-moa") || !slices.Contains(ms, "qlc-moa-thinking") {
		t.Fatalf("models %v %v", ms, err)
	}
	cc, err := c.Chat(ctx, client.ChatRequest{Model: "qlc-moa-thinking", Messages: []client.ChatMessage{{Role: "user", Content: "what is TCP?"}}})
	if err != nil || len(cc.Choices) != 1 || cc.Choices[0].Message.Content == "" || cc.Choices[0].Message.ReasoningContent == "" || cc.Usage == nil {
		t.Fatalf("chat %+v %v", cc, err)
	}
	if _, err := c.Chat(ctx, client.ChatRequest{Model: "qlc-nope", Messages: []client.ChatMessage{{Role: "user", Content: "x"}}}); !client.IsCode(err, "model_not_found") {
		t.Fatalf("unknown model: %v", err)
	}
}
