package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

const testKey = "sk-test-Q1w2E3r4T5y6U7i8"

// testRequest is the request every transcript test sends.
func testRequest() stagework.Request {
	return stagework.Request{
		Model: "test-model",
		Messages: []stagework.Message{
			{Role: "system", Content: "You are the Generator. Use <b>, & and \"quotes\"."},
			{Role: "user", Content: "¿Qué tal? 東京 🌸"},
		},
		Temperature: 0.7,
		MaxTokens:   256,
		Seed:        42,
		Stage:       stagework.StageGenerator,
		Query:       "¿Qué tal? 東京 🌸",
	}
}

// wantBody is testRequest's body, byte for byte.
const wantBody = `{"model":"test-model","messages":[{"role":"system","content":"You are the Generator. Use <b>, & and \"quotes\"."},{"role":"user","content":"¿Qué tal? 東京 🌸"}],"temperature":0.7,"max_tokens":256,"seed":42,"stream":true,"stream_options":{"include_usage":true}}`

// newProvider builds a Provider for a test server.
func newProvider(t testing.TB, baseURL string, mods ...func(*Config)) *Provider {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BaseURL = baseURL
	cfg.APIKey = testKey
	for _, m := range mods {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.CloseIdleConnections)
	return p
}

// checkRequest asserts what every request must look like on the wire and
// returns its body. It fails the test from the server's goroutine, which
// testing allows.
func checkRequest(t testing.TB, r *http.Request, wantBody string) bool {
	t.Helper()
	body, err := io.ReadAll(r.Body)
	ok := true
	fail := func(format string, args ...any) {
		t.Errorf("server: "+format, args...)
		ok = false
	}
	switch {
	case err != nil:
		fail("reading body: %v", err)
	case r.Method != http.MethodPost:
		fail("method %s", r.Method)
	case r.URL.Path != "/v1/chat/completions":
		fail("path %s", r.URL.Path)
	case r.Header.Get("Authorization") != "Bearer "+testKey:
		fail("Authorization %q", r.Header.Get("Authorization"))
	case r.Header.Get("Content-Type") != "application/json":
		fail("Content-Type %q", r.Header.Get("Content-Type"))
	case r.Header.Get("Accept") != "text/event-stream":
		fail("Accept %q", r.Header.Get("Accept"))
	case wantBody != "" && string(body) != wantBody:
		fail("body\n got %s\nwant %s", body, wantBody)
	}
	return ok
}

// writeChunked writes body in pieces whose sizes come from next, flushing
// after each, so the client's reads split events, lines and characters.
func writeChunked(w http.ResponseWriter, body []byte, next func() int) {
	f := w.(http.Flusher)
	for len(body) > 0 {
		n := min(next(), len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		f.Flush()
		body = body[n:]
	}
}

func sseHeaders(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
}

// drain reads a stream to its end and returns the text, the chunk count
// and the final error (io.EOF for a clean end).
func drain(s stagework.Stream) (string, int, error) {
	var b strings.Builder
	n := 0
	for {
		c, err := s.Recv()
		if err != nil {
			return b.String(), n, err
		}
		if c.Tokens != 1 || c.Text == "" {
			return b.String(), n, errors.New("chunk with Tokens != 1 or no text")
		}
		b.WriteString(c.Text)
		n++
	}
}

// waitChan waits for ch to close or deliver, with a deadline.
func waitChan[T any](t testing.TB, what string, d time.Duration, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
		panic("unreachable")
	}
}

// mustKind asserts err is a ProviderError of the given kind.
func mustKind(t testing.TB, err error, kind stagework.ErrorKind) *stagework.ProviderError {
	t.Helper()
	pe, ok := stagework.AsProviderError(err)
	if !ok {
		t.Fatalf("error %v (%T) is not a ProviderError", err, err)
	}
	if pe.Kind != kind {
		t.Fatalf("kind = %s, want %s (error: %v)", pe.Kind, kind, err)
	}
	if pe.Provider != "openai" {
		t.Fatalf("provider = %q", pe.Provider)
	}
	return pe
}

// hold is a handler that records the request and then blocks until the
// client goes away (its request context ends) or the test ends.
type hold struct {
	arrived chan struct{} // closed when the request is in
	gone    chan struct{} // closed when r.Context() is done
	before  func(w http.ResponseWriter)
}

func newHold(before func(w http.ResponseWriter)) *hold {
	return &hold{arrived: make(chan struct{}), gone: make(chan struct{}), before: before}
}

func (h *hold) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body) // lets net/http watch the connection for a close
	if h.before != nil {
		h.before(w)
	}
	close(h.arrived)
	select {
	case <-r.Context().Done():
		close(h.gone)
	case <-time.After(30 * time.Second): // a failed test must not hang the server's Close
	}
}

// startServer starts an HTTP/1.1 test server on 127.0.0.1.
func startServer(t testing.TB, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

var errNotCanceled = errors.New("not context.Canceled")

// isCanceled checks that err is the caller's cancellation, not wrapped in a
// ProviderError.
func isCanceled(err error) error {
	if !errors.Is(err, context.Canceled) {
		return errNotCanceled
	}
	if _, ok := stagework.AsProviderError(err); ok {
		return errors.New("cancellation wrapped in a ProviderError")
	}
	return nil
}
