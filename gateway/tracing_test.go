package gateway

import (
	"context"
	"net/http"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/qlc-project/qlc/internal/tracing"
)

// With tracing on, POST /v1/runs is a server span under the client's W3C
// traceparent, with the admission and placement spans under it, and the
// run resource names the client's trace; with tracing off the resource has
// no trace id.
func TestRunTraceHonoursTraceparent(t *testing.T) {
	base := newTestGateway(t, "")
	_, v := postJSON(t, base+"/v1/runs", "", `{"query":"q","profile":"instant"}`, nil)
	if v.ID == "" || v.TraceID != "" {
		t.Fatalf("tracing off: run %q has trace id %q", v.ID, v.TraceID)
	}

	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	restore := tracing.Use(tp)
	defer func() { restore(); _ = tp.Shutdown(context.Background()) }()
	const clientTrace, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	code, v := postJSON(t, base+"/v1/runs", "", `{"query":"q","profile":"instant"}`,
		http.Header{"Traceparent": {"00-" + clientTrace + "-" + clientSpan + "-01"}})
	if code != http.StatusCreated || v.TraceID != clientTrace {
		t.Fatalf("POST: %d, trace id %q, want the client's %s", code, v.TraceID, clientTrace)
	}
	var server sdktrace.ReadOnlySpan
	waitUntil(t, "the request's server span", func() bool {
		for _, s := range rec.Ended() {
			if s.Name() == "POST /v1/runs" && s.SpanContext().TraceID().String() == clientTrace {
				server = s
				return true
			}
		}
		return false
	})
	if server.Parent().SpanID().String() != clientSpan || server.SpanContext().TraceID().String() != clientTrace {
		t.Fatalf("server span's parent %s in trace %s", server.Parent().SpanID(), server.SpanContext().TraceID())
	}
	children := map[string]bool{}
	for _, s := range rec.Ended() {
		if s.Parent().SpanID() == server.SpanContext().SpanID() {
			children[s.Name()] = true
		}
	}
	if !children["qlc.admission"] || !children["qlc.placement"] {
		t.Fatalf("the server span's children: %v, want qlc.admission and qlc.placement", children)
	}
}
