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
// a span per step, and under the generator's step its four attempts as
// siblings: the first is its provider call (a GenAI client span) alone, its
// failure also an event of the step; the retries and the fallback are
// qlc.attempt spans, each with its reason, the failed ones with
// error.type, each with its provider call beneath it. The coordinator's
// log lines carry the trace id.
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
	var genStep sdktrace.ReadOnlySpan
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
			genStep = s
		}
	}
	if genStep == nil {
		t.Fatal("no generator step span")
	}
	isChat := func(s sdktrace.ReadOnlySpan) bool {
		ok := strings.HasPrefix(s.Name(), "chat ")
		if ok && (attrOf(s, "gen_ai.operation.name") != "chat" || attrOf(s, "gen_ai.provider.name") != "sim" || s.SpanKind() != trace.SpanKindClient) {
			t.Errorf("provider span %s: %v", s.Name(), s.Attributes())
		}
		return ok
	}
	var kinds, reasons []string
	for _, s := range spans { // in the order they ended
		if s.Parent().SpanID() != genStep.SpanContext().SpanID() {
			continue
		}
		switch {
		case isChat(s): // the first attempt
			kinds = append(kinds, "first/"+attrOf(s, "gen_ai.request.model")+"/"+attrOf(s, "error.type"))
		case s.Name() == "qlc.attempt":
			kinds = append(kinds, attrOf(s, "qlc.attempt.kind")+"/"+attrOf(s, "gen_ai.request.model")+"/"+attrOf(s, "error.type"))
			reasons = append(reasons, attrOf(s, "qlc.attempt.reason"))
			chats := 0
			for _, c := range spans {
				if c.Parent().SpanID() == s.SpanContext().SpanID() && isChat(c) {
					chats++
				}
			}
			if chats != 1 {
				t.Errorf("attempt %s has %d provider spans, want 1", attrOf(s, "qlc.attempt.number"), chats)
			}
		}
	}
	if got := strings.Join(kinds, " "); got != "first/primary/server retry/primary/server retry/primary/server fallback/backup/" {
		t.Errorf("generator attempts: %s", got)
	}
	if len(reasons) == 3 && (!strings.Contains(reasons[0], "server") || !strings.Contains(reasons[2], "primary failed")) {
		t.Errorf("attempt reasons: %q", reasons)
	}
	var ends []string
	for _, ev := range genStep.Events() {
		if ev.Name == "qlc.attempt.end" {
			m := map[string]string{}
			for _, kv := range ev.Attributes {
				m[string(kv.Key)] = kv.Value.Emit()
			}
			ends = append(ends, m["qlc.attempt.number"]+"/"+m["error.type"])
		}
	}
	if got := strings.Join(ends, " "); got != "1/server" {
		t.Errorf("the step's qlc.attempt.end events: %q, want the first attempt's failure", got)
	}
	if !strings.Contains(logs.String(), `"msg":"run started","run_id":"`+h.RunID+`","trace_id":"`+tid.String()+`"`) {
		t.Errorf("the coordinator's log lines lack the trace id:\n%s", logs.String())
	}
}

// A hedge is an attempt span under its step with kind hedge and its
// reason, beside the primary's provider call; the primary it beat ends
// with "lost the hedge race" (an event of the step: a first attempt has no
// span of its own).
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
	var hedge, primary, step sdktrace.ReadOnlySpan
	waitUntil(t, "the generator's spans", func() bool {
		hedge, primary, step = nil, nil, nil
		for _, s := range rec.Ended() {
			switch {
			case s.Name() == "qlc.attempt" && attrOf(s, "qlc.step") == "generator":
				hedge = s
			case s.Name() == "chat big":
				primary = s
			case s.Name() == "qlc.step generator":
				step = s
			}
		}
		return hedge != nil && primary != nil && step != nil
	})
	if attrOf(hedge, "qlc.attempt.kind") != "hedge" || hedge.Parent().SpanID() != step.SpanContext().SpanID() ||
		primary.Parent().SpanID() != step.SpanContext().SpanID() {
		t.Fatalf("the hedge (%v) and the primary's call are not siblings under the step", hedge.Attributes())
	}
	if attrOf(hedge, "gen_ai.request.model") != "small" || !strings.Contains(attrOf(hedge, "qlc.attempt.reason"), "no first token") {
		t.Errorf("hedge %v", hedge.Attributes())
	}
	lost := false
	for _, ev := range step.Events() {
		for _, kv := range ev.Attributes {
			lost = lost || (ev.Name == "qlc.attempt.end" && kv.Key == "qlc.outcome" && kv.Value.AsString() == "lost the hedge race")
		}
	}
	if !lost {
		t.Errorf("the step has no qlc.attempt.end event saying the primary lost the hedge race: %v", step.Events())
	}
}
