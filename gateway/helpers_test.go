package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
)

// testProfiles: "instant" streams at full speed, "slow" long enough to cancel.
const testProfiles = `
default_profile: instant
providers:
  sim:  {kind: sim, sim: {output_tokens: 60}}
  slow: {kind: sim, sim: {ttft: 10ms, itl: 15ms, output_tokens: 4000}}
profiles:
  instant:
    description: zero latency
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  slow:
    description: slow enough to cancel
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

type testGateway struct {
	URL    string
	OpsURL string // Server.OpsHandler: /healthz, /readyz, /metrics without a key
	Engine *actors.Engine
	Reg    *prometheus.Registry
	Server *Server
}

// newTestGateway starts a real QLC gateway (engine + HTTP server on
// 127.0.0.1) with the given profile file: "" means testProfiles, "default"
// the built-in profiles, anything else is parsed as a profile file.
func newTestGateway(t testing.TB, configYAML string) (baseURL string) {
	return startGateway(t, configYAML, nil).URL
}

func startGateway(t testing.TB, configYAML string, mutate func(*Config, *actors.Config)) *testGateway {
	t.Helper()
	var stages *stagework.Config
	var err error
	switch configYAML {
	case "":
		stages, err = stagework.ParseConfig([]byte(testProfiles))
	case "default":
		stages = stagework.DefaultConfig()
	default:
		stages, err = stagework.ParseConfig([]byte(configYAML))
	}
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(testLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	providers, err := actors.BuildProviders(stages, logger)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ecfg := actors.DefaultConfig()
	ecfg.Logger, ecfg.Stages, ecfg.Providers, ecfg.Registerer = logger, stages, providers, reg
	ecfg.Retry = stagework.RetryPolicy{AttemptsPerModel: 2, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	gcfg := DefaultConfig()
	gcfg.Logger, gcfg.Gatherer, gcfg.Registerer = logger, reg, reg
	if mutate != nil {
		mutate(&gcfg, &ecfg)
	}
	engine, err := actors.NewEngine(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	gcfg.Engine = engine
	gw, err := New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	ops := httptest.NewServer(gw.OpsHandler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		engine.Shutdown(ctx)
		if err := gw.Close(ctx); err != nil {
			t.Logf("gateway close: %v", err)
		}
		srv.CloseClientConnections()
		srv.Close()
		ops.Close()
	})
	return &testGateway{URL: srv.URL, OpsURL: ops.URL, Engine: engine, Reg: reg, Server: gw}
}

type testLogWriter struct{ t testing.TB }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// do sends a request with an optional JSON body and decodes a JSON answer into out.
func do(t *testing.T, method, url, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode
}

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID, Event string
	Data      map[string]any
	Comment   string
	Size      int // bytes on the wire, framing included
}

// readSSE parses an event stream until EOF, calling each(ev); each returns
// false to stop reading. It reads as many SSE clients do, with Go's
// bufio.Scanner and its default 64 KiB line limit, and fails the test on
// an event (framing included) longer than DefaultMaxEventBytes.
func readSSE(t *testing.T, body io.Reader, each func(sseEvent) bool) {
	t.Helper()
	sc := bufio.NewScanner(body)
	var ev sseEvent
	var data strings.Builder
	size := 0
	for sc.Scan() {
		line := sc.Text()
		size += len(line) + 1
		if line == "" && size > DefaultMaxEventBytes {
			t.Fatalf("an SSE event of %d bytes (id %q, event %q), over the %d-byte bound", size, ev.ID, ev.Event, DefaultMaxEventBytes)
		}
		switch {
		case line == "":
			ev.Size, size = size, 0
			if data.Len() > 0 || ev.Comment != "" {
				if data.Len() > 0 {
					if err := json.Unmarshal([]byte(data.String()), &ev.Data); err != nil {
						t.Fatalf("bad event data %q: %v", data.String(), err)
					}
				}
				if !each(ev) {
					return
				}
			}
			ev, data = sseEvent{}, strings.Builder{}
		case strings.HasPrefix(line, ":"):
			ev.Comment = strings.TrimSpace(line[1:])
		case strings.HasPrefix(line, "id: "):
			ev.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			ev.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data.WriteString(line[6:])
		}
	}
	if errors.Is(sc.Err(), bufio.ErrTooLong) {
		t.Fatalf("an SSE line passed bufio.Scanner's default limit (%d bytes)", bufio.MaxScanTokenSize)
	}
}

// createRun posts a run and returns its id.
func createRun(t *testing.T, base, profile, query string) string {
	t.Helper()
	var v runView
	body, _ := json.Marshal(map[string]any{"query": query, "profile": profile})
	if code := do(t, "POST", base+"/v1/runs", string(body), &v); code != http.StatusCreated {
		t.Fatalf("create run: HTTP %d", code)
	}
	return v.ID
}

// waitUntil polls cond every few milliseconds until it is true, or fails
// the test after a minute.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still not so after a minute", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
