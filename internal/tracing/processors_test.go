package tracing

import (
	"context"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"testing"

	"go.opentelemetry.io/otel"

	"github.com/qlc-project/qlc/internal/spanstore"
)

// With a processor (the console's span store) and no exporter configured,
// tracing is on and spans reach the processor; OTEL_SDK_DISABLED=true
// still turns it off.
func TestProcessorsWithoutExporter(t *testing.T) {
	prev := otel.GetTracerProvider()
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	off, err := Setup(context.Background(), Config{Getenv: envOf(map[string]string{"OTEL_SDK_DISABLED": "true"}), Processors: []sdktrace.SpanProcessor{spanstore.New(8)}})
	if err != nil || off.Enabled() {
		t.Fatalf("OTEL_SDK_DISABLED: enabled %v, err %v", off.Enabled(), err)
	}
	store := spanstore.New(8)
	tr, err := Setup(context.Background(), Config{ServiceName: "qlc-test", Getenv: envOf(nil), Processors: []sdktrace.SpanProcessor{store}})
	if err != nil || !tr.Enabled() || !Enabled() {
		t.Fatalf("enabled %v, err %v", tr.Enabled(), err)
	}
	defer tr.Shutdown(context.Background())
	_, sp := otel.Tracer("t").Start(context.Background(), "x")
	sp.End()
	got := store.Trace(sp.SpanContext().TraceID().String())
	if len(got) != 1 || got[0].Service != "qlc-test" {
		t.Fatalf("store holds %v", got)
	}
}
