package openai

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/internal/testnet"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/sse"
)

const okStream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n" +
	"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n" +
	"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n" +
	"data: [DONE]\n\n"

func serveOK(w http.ResponseWriter) {
	sseHeaders(w)
	io.WriteString(w, okStream)
}

func TestRequestOnTheWire(t *testing.T) {
	type seen struct {
		header http.Header
		body   string
	}
	got := make(chan seen, 1)
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Header.Clone(), string(b)}
		serveOK(w)
	}))
	run := func(p *Provider, req stagework.Request) seen {
		t.Helper()
		s, err := p.Stream(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if text, _, err := drain(s); text != "hi" || err != io.EOF {
			t.Fatalf("got %q, %v", text, err)
		}
		return waitChan(t, "request", 5*time.Second, got)
	}

	t.Run("exact body and headers", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1/", func(c *Config) {
			c.Headers = map[string]string{"HTTP-Referer": "https://qlc.example", "X-Title": "QLC"}
		})
		r := run(p, testRequest())
		if r.body != wantBody {
			t.Fatalf("body\n got %s\nwant %s", r.body, wantBody)
		}
		for k, v := range map[string]string{
			"Authorization": "Bearer " + testKey,
			"Content-Type":  "application/json",
			"Accept":        "text/event-stream",
			"User-Agent":    DefaultUserAgent,
			"HTTP-Referer":  "https://qlc.example",
			"X-Title":       "QLC",
		} {
			if r.header.Get(k) != v {
				t.Errorf("header %s = %q, want %q", k, r.header.Get(k), v)
			}
		}
		if r.header.Get("Accept-Encoding") != "" {
			t.Errorf("Accept-Encoding %q: a compressed event stream could hold tokens back", r.header.Get("Accept-Encoding"))
		}
	})
	t.Run("zero max_tokens and seed omitted, zero temperature kept", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1")
		req := testRequest()
		req.MaxTokens, req.Seed, req.Temperature = 0, 0, 0
		r := run(p, req)
		want := `{"model":"test-model","messages":[{"role":"system","content":"You are the Generator. Use <b>, & and \"quotes\"."},{"role":"user","content":"¿Qué tal? 東京 🌸"}],"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`
		if r.body != want {
			t.Fatalf("body\n got %s\nwant %s", r.body, want)
		}
	})
	t.Run("max_completion_tokens", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.UseMaxCompletionTokens = true })
		r := run(p, testRequest())
		if !strings.Contains(r.body, `"max_completion_tokens":256`) || strings.Contains(r.body, `"max_tokens"`) {
			t.Fatalf("body %s", r.body)
		}
	})
	t.Run("no key, no Authorization", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.APIKey = "" })
		r := run(p, testRequest())
		if _, ok := r.header["Authorization"]; ok {
			t.Fatalf("Authorization sent without a key: %q", r.header.Get("Authorization"))
		}
	})
}

func TestBadRequestsRejectedLocally(t *testing.T) {
	p := newProvider(t, "http://127.0.0.1:9/v1") // never dialled
	for _, req := range []stagework.Request{
		{Messages: testRequest().Messages},
		{Model: "m"},
	} {
		_, err := p.Stream(context.Background(), req)
		mustKind(t, err, stagework.ErrBadRequest)
	}
}

func TestHTTPErrors(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name    string
		status  int
		header  map[string]string
		body    string
		kind    stagework.ErrorKind
		code    string
		message string
		retry   time.Duration
	}{
		{name: "401 OpenAI", status: 401,
			body: `{"error":{"message":"Incorrect API key provided: sk-test-****U7i8.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
			kind: stagework.ErrAuth, code: "invalid_api_key", message: "Incorrect API key provided: sk-test-****U7i8."},
		{name: "403", status: 403, body: `{"error":{"message":"Project does not have access to model","type":"invalid_request_error","code":"model_not_found"}}`,
			kind: stagework.ErrAuth, code: "model_not_found", message: "Project does not have access to model"},
		{name: "402 OpenRouter credits", status: 402, body: `{"error":{"code":402,"message":"Insufficient credits"}}`,
			kind: stagework.ErrAuth, code: "402", message: "Insufficient credits"},
		{name: "400", status: 400,
			body: `{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`,
			kind: stagework.ErrBadRequest, code: "context_length_exceeded", message: "This model's maximum context length is 128000 tokens."},
		{name: "404 type only", status: 404, body: `{"error":{"message":"model \"x\" not found","type":"not_found_error","param":null,"code":null}}`,
			kind: stagework.ErrBadRequest, code: "not_found_error", message: `model "x" not found`},
		{name: "413 plain text", status: 413, body: "request entity too large\n",
			kind: stagework.ErrBadRequest, message: "request entity too large"},
		{name: "422 FastAPI", status: 422, body: `{"detail":"Field required: messages"}`,
			kind: stagework.ErrBadRequest, message: "Field required: messages"},
		{name: "400 vLLM object error", status: 400, body: `{"object":"error","message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}`,
			kind: stagework.ErrBadRequest, code: "400", message: "max_tokens too large"},
		{name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "7"},
			body: `{"error":{"message":"Rate limit reached for gpt-4o-mini","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			kind: stagework.ErrRateLimited, code: "rate_limit_exceeded", message: "Rate limit reached for gpt-4o-mini", retry: 7 * time.Second},
		{name: "429 http-date", status: 429, header: map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)},
			body: `{"error":{"code":429,"message":"Rate limit exceeded"}}`,
			kind: stagework.ErrRateLimited, code: "429", message: "Rate limit exceeded", retry: 90 * time.Second},
		{name: "429 retry-after-ms wins", status: 429, header: map[string]string{"Retry-After-Ms": "1500.5", "Retry-After": "9"},
			kind: stagework.ErrRateLimited, message: "Too Many Requests", retry: 1500*time.Millisecond + 500*time.Microsecond},
		{name: "429 date in the past", status: 429, header: map[string]string{"Retry-After": now.Add(-time.Hour).Format(http.TimeFormat)},
			kind: stagework.ErrRateLimited, message: "Too Many Requests"},
		{name: "429 garbage header", status: 429, header: map[string]string{"Retry-After": "soon"},
			kind: stagework.ErrRateLimited, message: "Too Many Requests"},
		{name: "408", status: 408, kind: stagework.ErrTimeout, message: "Request Timeout"},
		{name: "500", status: 500, body: `{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`,
			kind: stagework.ErrServer, code: "server_error", message: "The server had an error"},
		{name: "502 HTML page", status: 502, body: "<html><body><h1>502 Bad Gateway</h1></body></html>",
			kind: stagework.ErrServer, message: "Bad Gateway"},
		{name: "503 with Retry-After", status: 503, header: map[string]string{"Retry-After": "30"},
			body: `{"error":{"code":503,"message":"No available model provider"}}`,
			kind: stagework.ErrServer, code: "503", message: "No available model provider", retry: 30 * time.Second},
		{name: "307 redirect not followed", status: 307, header: map[string]string{"Location": "https://elsewhere.example/v1/chat/completions"},
			kind: stagework.ErrProtocol, message: `redirected to "https://elsewhere.example/v1/chat/completions"; check BaseURL`},
		{name: "key echoed is redacted", status: 401, body: `{"error":{"message":"bad key ` + testKey + `"}}`,
			kind: stagework.ErrAuth, message: "bad key [redacted]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				checkRequest(t, r, wantBody)
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				if strings.HasPrefix(tc.body, "{") {
					w.Header().Set("Content-Type", "application/json")
				}
				w.WriteHeader(tc.status)
				io.WriteString(w, tc.body)
			}))
			p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.Now = func() time.Time { return now } })
			s, err := p.Stream(context.Background(), testRequest())
			if s != nil {
				t.Fatal("stream returned with an error status")
			}
			pe := mustKind(t, err, tc.kind)
			if pe.Status != tc.status || pe.Code != tc.code || pe.Message != tc.message || pe.RetryAfter != tc.retry {
				t.Fatalf("got status %d code %q message %q retry %v\nwant status %d code %q message %q retry %v",
					pe.Status, pe.Code, pe.Message, pe.RetryAfter, tc.status, tc.code, tc.message, tc.retry)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("API key in error text: %v", err)
			}
		})
	}
}

func TestRetryableKinds(t *testing.T) {
	for status, want := range map[int]bool{401: false, 403: false, 400: false, 404: false, 429: true, 500: true, 502: true, 503: true, 408: true} {
		e := &stagework.ProviderError{Kind: kindForStatus(status)}
		if e.Retryable() != want {
			t.Errorf("HTTP %d -> %s: retryable %v, want %v", status, e.Kind, e.Retryable(), want)
		}
	}
}

func TestKindForCode(t *testing.T) {
	for _, tc := range []struct {
		code, typ string
		want      stagework.ErrorKind
	}{
		{"rate_limit_exceeded", "requests", stagework.ErrRateLimited},
		{"", "rate_limit_error", stagework.ErrRateLimited},
		{"insufficient_quota", "insufficient_quota", stagework.ErrRateLimited},
		{"429", "", stagework.ErrRateLimited},
		{"invalid_api_key", "invalid_request_error", stagework.ErrAuth},
		{"", "authentication_error", stagework.ErrAuth},
		{"context_length_exceeded", "invalid_request_error", stagework.ErrBadRequest},
		{"400", "BadRequestError", stagework.ErrBadRequest},
		{"", "timeout", stagework.ErrTimeout},
		{"server_error", "", stagework.ErrServer},
		{"500", "InternalServerError", stagework.ErrServer},
		{"", "", stagework.ErrServer},
		{"200", "", stagework.ErrServer},
	} {
		if got := kindForCode(tc.code, tc.typ); got != tc.want {
			t.Errorf("kindForCode(%q, %q) = %s, want %s", tc.code, tc.typ, got, tc.want)
		}
	}
}

func TestJSONInsteadOfStream(t *testing.T) {
	for _, tc := range []struct {
		body string
		kind stagework.ErrorKind
	}{
		{`{"error":{"message":"Rate limit exceeded","type":"rate_limit_error","code":"rate_limit_exceeded"}}`, stagework.ErrRateLimited},
		{`{"error":{"message":"upstream failed","type":"server_error"}}`, stagework.ErrServer},
		{`{"id":"chatcmpl-1","object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}]}`, stagework.ErrProtocol},
	} {
		srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			io.WriteString(w, tc.body)
		}))
		_, err := newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
		mustKind(t, err, tc.kind)
	}
}

func TestErrorEvent(t *testing.T) {
	// "event: error" with a JSON body, and with plain text.
	for _, tc := range []struct{ data, msg string }{
		{`{"error":{"message":"overloaded","type":"server_error"}}`, "overloaded"},
		{`upstream went away`, "upstream went away"},
	} {
		srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sseHeaders(w)
			io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\nevent: error\ndata: "+tc.data+"\n\n")
		}))
		s, err := newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
		if err != nil {
			t.Fatal(err)
		}
		text, n, err := drain(s)
		pe := mustKind(t, err, stagework.ErrServer)
		if text != "a" || n != 1 || pe.Message != tc.msg {
			t.Fatalf("got %q/%d, message %q", text, n, pe.Message)
		}
		s.Close()
	}
}

func TestOversizeLine(t *testing.T) {
	big := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("é", 40<<10) + "\"}}]}\n\n"
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n"+big+okStream)
	}))
	t.Run("over the limit", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.SSE.MaxLineSize = 32 << 10 })
		s, err := p.Stream(context.Background(), testRequest())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		text, _, err := drain(s)
		mustKind(t, err, stagework.ErrProtocol)
		if !errors.Is(err, sse.ErrLineTooLong) || text != "a" {
			t.Fatalf("err %v, text %q", err, text)
		}
	})
	t.Run("within the limit", func(t *testing.T) {
		p := newProvider(t, srv.URL+"/v1")
		s, err := p.Stream(context.Background(), testRequest())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		text, n, err := drain(s)
		if err != io.EOF || n != 3 || text != "a"+strings.Repeat("é", 40<<10)+"hi" {
			t.Fatalf("n %d, err %v", n, err)
		}
	})
}

func TestConnectionRefused(t *testing.T) {
	addr := testnet.RefusedAddr(t)
	_, err := newProvider(t, "http://"+addr+"/v1").Stream(context.Background(), testRequest())
	pe := mustKind(t, err, stagework.ErrConnection)
	if !strings.Contains(pe.Message, "connection refused") || !pe.Retryable() {
		t.Fatalf("message %q", pe.Message)
	}
}

func TestConnectionBrokenMidStream(t *testing.T) {
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")
		w.(http.Flusher).Flush()
		// Drop the connection without ending the chunked body.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	s, err := newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	text, _, err := drain(s)
	mustKind(t, err, stagework.ErrConnection)
	if text != "a" {
		t.Fatalf("text %q", text)
	}
}

func TestAlreadyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := newProvider(t, "http://127.0.0.1:9/v1").Stream(ctx, testRequest())
	if e := isCanceled(err); e != nil {
		t.Fatalf("%v: %v", e, err)
	}
}

func TestCloseAndRecvAfterEnd(t *testing.T) {
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveOK(w) }))
	s, err := newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := drain(s); err != io.EOF {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != io.EOF {
		t.Fatalf("Recv after EOF: %v", err)
	}
	if u, ok := s.Usage(); !ok || u.TotalTokens != 4 {
		t.Fatalf("usage %+v %v", u, ok)
	}
	for range 2 {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Close before the end: Recv reports the stream closed.
	s, err = newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Recv(); !errors.Is(err, errStreamClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
}

func TestConfig(t *testing.T) {
	bad := []Config{
		{},
		{BaseURL: "ftp://x/v1"},
		{BaseURL: "http:///v1"},
		{BaseURL: "http://user:pw@host/v1"},
		{BaseURL: "http://h/v1", APIKey: "a\nb"},
		{BaseURL: "http://h/v1", Headers: map[string]string{"X-Bad\r\n": "v"}},
		{BaseURL: "http://h/v1", MaxIdleConns: -1},
		{BaseURL: "http://h/v1", SSE: sse.Config{MaxLineSize: -1}},
	}
	for _, c := range bad {
		if _, err := New(c); err == nil || !strings.HasPrefix(err.Error(), "openai: ") {
			t.Errorf("New(%+v) = %v, want an openai: error", c, err)
		}
	}
	c := Config{BaseURL: "http://h/v1", IdleTimeout: -1}
	if err := c.validate(); err != nil {
		t.Fatal(err)
	}
	d := DefaultConfig()
	if c.Name != "openai" || c.ConnectTimeout != d.ConnectTimeout || c.MaxIdleConnsPerHost != d.MaxIdleConnsPerHost ||
		c.IdleTimeout != 0 || c.FirstTokenTimeout != 0 || c.Logger == nil || c.Now == nil {
		t.Fatalf("defaults not filled: %+v", c)
	}
	p, err := New(Config{BaseURL: "http://h/v1", Name: "openrouter"})
	if err != nil || p.Name() != "openrouter" {
		t.Fatalf("%v %v", p, err)
	}
}

// TestKeyNeverLogged runs failing and succeeding streams with a debug
// logger and checks the key appears in no log line and no error.
func TestKeyNeverLogged(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	var n atomic.Int32
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":{"message":"invalid key %s"}}`, testKey)
			return
		}
		serveOK(w)
	}))
	p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.Logger = logger })
	_, err := p.Stream(context.Background(), testRequest())
	mustKind(t, err, stagework.ErrAuth)
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	drain(s)
	s.Close()
	if logs.Len() == 0 {
		t.Fatal("nothing logged at debug level")
	}
	if strings.Contains(logs.String(), testKey) || strings.Contains(logs.String(), "Q1w2E3r4") {
		t.Fatalf("API key in logs:\n%s", logs.String())
	}
}
