package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/client/clienttest"
)

// POST /v1/runs with "stream": true answers with the run's whole log on
// the same connection; every event is stamped with its arrival.
func TestCreateRunStream(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	s, err := c.CreateRunStream(ctx, client.RunRequest{Query: "what is a quorum?", Profile: "moa", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.RunID(), "run_") {
		t.Fatalf("run id %q", s.RunID())
	}
	f, evs := readAll(t, s)
	if evs[0].Seq != 1 || f.Status != "completed" {
		t.Fatalf("first seq %d, status %s", evs[0].Seq, f.Status)
	}
	for i, ev := range evs {
		if ev.Received.IsZero() || (i > 0 && ev.Received.Before(evs[i-1].Received)) {
			t.Fatalf("event %d received at %v (before it %v)", i, ev.Received, evs[max(i-1, 0)].Received)
		}
	}
	checkFold(t, c, s.RunID(), f)

	if _, err := c.CreateRunStream(ctx, client.RunRequest{Query: "x", Profile: "nope"}); !client.IsCode(err, "unknown_profile") {
		t.Fatalf("unknown profile: %v", err)
	}
}

// Drop cuts the connection on purpose; the stream resumes with
// Last-Event-ID (SSE) or from_seq (WebSocket) and loses nothing.
func TestStreamDropResumes(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	for _, ws := range []bool{false, true} {
		run, err := c.CreateRun(ctx, client.RunRequest{Query: "what is TCP?", Profile: "slowmoa"})
		if err != nil {
			t.Fatal(err)
		}
		s := c.Events(ctx, run.ID, "")
		if ws {
			s = c.EventsWS(ctx, run.ID, "")
		}
		f := client.NewFold()
		var last uint64
		for n := 0; ; n++ {
			ev, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if ev.Part == nil && ev.Seq != last+1 && !(ev.FromSeq != 0 && ev.FromSeq == last+1) {
				t.Fatalf("ws=%v: seq %d after %d", ws, ev.Seq, last)
			}
			last = ev.Seq
			f.Add(ev)
			if n == 5 || n == 40 {
				s.Drop()
			}
		}
		if s.Reconnects() != 2 {
			t.Fatalf("ws=%v: %d reconnects, want 2", ws, s.Reconnects())
		}
		checkFold(t, c, run.ID, f)
	}
}

func TestChatStream(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	s, err := c.ChatStream(ctx, client.ChatStreamRequest{Model: "qlc-instant", IncludeUsage: true,
		Messages: []client.ChatMessage{{Role: "user", Content: "What is a CRDT?"}}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.RunID, "run_") {
		t.Fatalf("run id %q", s.RunID)
	}
	var content strings.Builder
	var usage *client.Usage
	var finish string
	done := false
	for {
		ch, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ch.Err != nil {
			t.Fatal(ch.Err)
		}
		if ch.Received.IsZero() && !ch.Done {
			t.Fatal("chunk without arrival time")
		}
		content.WriteString(ch.Content)
		if ch.Usage != nil {
			usage = ch.Usage
		}
		if ch.FinishReason != "" {
			finish = ch.FinishReason
		}
		done = done || ch.Done
	}
	run, err := c.GetRun(ctx, s.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if !done || finish != "stop" || usage == nil || usage.TotalTokens != run.Usage.TotalTokens || content.String() != run.Answer {
		t.Fatalf("done %v finish %q usage %+v (run %+v)\ncontent %q\nanswer  %q", done, finish, usage, run.Usage, content.String(), run.Answer)
	}
	_, err = c.ChatStream(ctx, client.ChatStreamRequest{Model: "qlc-nope", Messages: []client.ChatMessage{{Role: "user", Content: "x"}}})
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("unknown model: %v", err)
	}
}

func TestParseChatChunk(t *testing.T) {
	for _, tc := range []struct {
		event, data string
		want        string
	}{
		{"", `[DONE]`, "done"},
		{"", `{"choices":[{"delta":{"role":"assistant","content":""}}]}`, "role=assistant"},
		{"", `{"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}`, "content=hi"},
		{"", `{"choices":[{"delta":{"reasoning_content":"hm"}}]}`, "reasoning=hm"},
		{"", `{"choices":[{"delta":{"reasoning":"hm"}}]}`, "reasoning=hm"},
		{"", `{"choices":[{"delta":{},"finish_reason":"stop"}]}`, "finish=stop"},
		{"", `{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}`, "usage=2"},
		{"", `{"error":{"message":"boom","type":"server_error","code":"run_failed"}}`, "error=run_failed"},
		{"", `{"error":{"message":"boom","code":500}}`, "error=500"},
		{"error", `{"message":"overloaded"}`, "error=stream_error"},
		{"error", `not json`, "error=stream_error"},
	} {
		c, err := client.ParseChatChunk(tc.event, []byte(tc.data))
		if err != nil {
			t.Fatalf("%s: %v", tc.data, err)
		}
		var got string
		switch {
		case c.Done:
			got = "done"
		case c.Err != nil:
			got = "error=" + c.Err.Code
		case c.Usage != nil:
			got = "usage=" + itoa(c.Usage.CompletionTokens)
		case c.Role != "":
			got = "role=" + c.Role
		case c.Content != "":
			got = "content=" + c.Content
		case c.Reasoning != "":
			got = "reasoning=" + c.Reasoning
		case c.FinishReason != "":
			got = "finish=" + c.FinishReason
		}
		if got != tc.want {
			t.Errorf("%s %s: got %s, want %s", tc.event, tc.data, got, tc.want)
		}
	}
	if _, err := client.ParseChatChunk("", []byte(`{"choices":`)); !errors.Is(err, client.ErrBadChunk) {
		t.Fatalf("truncated chunk: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A chat stream from any OpenAI-compatible server: an error chunk after
// HTTP 200 is the stream's failure, not content.
func TestChatStreamErrorChunk(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		io.WriteString(w, "data: {\"error\":{\"message\":\"boom\",\"type\":\"server_error\",\"code\":\"overloaded\"}}\n\n")
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, "")
	s, err := c.ChatStream(context.Background(), client.ChatStreamRequest{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	ch, _ := s.Next()
	if ch.Content != "a" {
		t.Fatalf("first chunk %+v", ch)
	}
	ch, _ = s.Next()
	if ch.Err == nil || ch.Err.Code != "overloaded" {
		t.Fatalf("error chunk %+v", ch)
	}
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
}
