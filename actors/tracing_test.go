package actors

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/qlc-project/qlc/internal/tracing"
)

// recordSpans installs an SDK provider that keeps every ended span, and the
// W3C propagator, as OpenTelemetry's globals until the test ends.
func recordSpans(t *testing.T) *tracetest.SpanRecorder {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	restore := tracing.Use(tp)
	t.Cleanup(func() {
		restore()
		_ = tp.Shutdown(context.Background())
	})
	return rec
}

func attrOf(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// syncBuffer is a log sink safe for the engine's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A run whose generator fails three times on its primary and then runs on
// its fallback is one trace under the caller's span: placement, the run,
// a span per step, and under the generator's step four sibling attempts
// (first, retry, retry, fallback), each with its reason, the failed ones
// with error.type, each with its provider call (a GenAI client span). The
// coordinator's log lines carry the trace id.
func TestRunTraceWithRetriesAndFallback(t *testing.T) {
	rec := recordSpans(t)
	logs := &syncBuffer{}
	e, _ := newTestEngine(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	ctx, root := otel.Tracer("test").Start(context.Background(), "request")
	h, err := e.StartRun(RunRequest{Profile: "fallback", Query: "q", Seed: 1, Ctx: ctx})
	if err != nil {
		t.Fatal(err)
	}
	root.End()
	collect(t, h, 1)
	tid := root.SpanContext().TraceID()
	if h.TraceID != tid.String() {
		t.Fatalf("hub's trace id %q, want %s", h.TraceID, tid)
	}
	var spans []sdktrace.ReadOnlySpan
	waitUntil(t, "the run span", func() bool {
		spans = rec.Ended()
		for _, s := range spans {
			if s.Name() == "qlc.run" {
				return true
			}
		}
		return false
	})
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{root.SpanContext().SpanID(): nil}
	for _, s := range spans {
		byID[s.SpanContext().SpanID()] = s
	}
	var genStep trace.SpanID
	for _, s := range spans {
		if s.SpanContext().TraceID() != tid {
			t.Errorf("span %s is in trace %s, want %s", s.Name(), s.SpanContext().TraceID(), tid)
		}
		if !s.Parent().IsValid() {
			if s.Name() != "request" {
				t.Errorf("span %s is a root, want only the caller's", s.Name())
			}
		} else if _, ok := byID[s.Parent().SpanID()]; !ok {
			t.Errorf("span %s's parent is not in the trace", s.Name())
		}
		if s.Name() == "qlc.step generator" {
			genStep = s.SpanContext().SpanID()
		}
	}
	var kinds, reasons []string
	for _, s := range spans {
		if s.Name() != "qlc.attempt" || s.Parent().SpanID() != genStep {
			continue
		}
		kinds = append(kinds, attrOf(s, "qlc.attempt.kind")+"/"+attrOf(s, "gen_ai.request.model")+"/"+attrOf(s, "error.type"))
		reasons = append(reasons, attrOf(s, "qlc.attempt.reason"))
		chats := 0
		for _, c := range spans {
			if c.Parent().SpanID() == s.SpanContext().SpanID() && strings.HasPrefix(c.Name(), "chat ") {
				chats++
				if attrOf(c, "gen_ai.operation.name") != "chat" || attrOf(c, "gen_ai.provider.name") != "sim" || c.SpanKind() != trace.SpanKindClient {
					t.Errorf("provider span %s: %v", c.Name(), c.Attributes())
				}
			}
		}
		if chats != 1 {
			t.Errorf("attempt %s has %d provider spans, want 1", attrOf(s, "qlc.attempt.number"), chats)
		}
	}
	if got := strings.Join(kinds, " "); got != "first/primary/server retry/primary/server retry/primary/server fallback/backup/" {
		t.Errorf("generator attempts: %s", got)
	}
	if len(reasons) == 4 && (!strings.Contains(reasons[1], "server") || !strings.Contains(reasons[3], "primary failed")) {
		t.Errorf("attempt reasons: %q", reasons)
	}
	if !strings.Contains(logs.String(), `"msg":"run started","run_id":"`+h.RunID+`","trace_id":"`+tid.String()+`"`) {
		t.Errorf("the coordinator's log lines lack the trace id:\n%s", logs.String())
	}
}

// A hedge is a sibling attempt under its step with kind hedge and its
// reason; the primary it beat ends with "lost the hedge race".
func TestHedgeTrace(t *testing.T) {
	rec := recordSpans(t)
	e, _, _ := newProfileEngine(t, `
providers:
  slowstart: {kind: sim, sim: {ttft: 3s, output_tokens: 20}}
  quick:     {kind: sim, sim: {output_tokens: 20}}
profiles:
  hedged:
    provider: quick
    stages:
      generator: {provider: slowstart, model: big, hedge: true, fallback: {provider: quick, model: small}}
      refiner: {model: r}
      validator: {model: v}
      curator: {model: c}
`, func(c *Config) { c.HedgeWait = 50 * time.Millisecond })
	h, err := e.StartRun(RunRequest{Profile: "hedged", Query: "q", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, h, 1)
	var attempts []sdktrace.ReadOnlySpan
	waitUntil(t, "both generator attempts' spans", func() bool {
		attempts = nil
		for _, s := range rec.Ended() {
			if s.Name() == "qlc.attempt" && attrOf(s, "qlc.step") == "generator" {
				attempts = append(attempts, s)
			}
		}
		return len(attempts) == 2
	})
	byKind := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range attempts {
		byKind[attrOf(s, "qlc.attempt.kind")] = s
	}
	first, hedge := byKind["first"], byKind["hedge"]
	if first == nil || hedge == nil || first.Parent().SpanID() != hedge.Parent().SpanID() {
		t.Fatalf("attempts are not a first and a hedge under one step: %v", attempts)
	}
	if attrOf(first, "qlc.outcome") != "lost the hedge race" || attrOf(hedge, "gen_ai.request.model") != "small" ||
		!strings.Contains(attrOf(hedge, "qlc.attempt.reason"), "no first token") {
		t.Errorf("first %v; hedge %v", first.Attributes(), hedge.Attributes())
	}
}
