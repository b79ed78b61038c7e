package tracing

import (
	"context"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// countingExporter records the sizes of the batches it was given.
type countingExporter struct {
	mu      sync.Mutex
	batches []int
}

func (e *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	e.batches = append(e.batches, len(spans))
	e.mu.Unlock()
	return nil
}

func (e *countingExporter) Shutdown(context.Context) error { return nil }

func (e *countingExporter) total() (n, batches int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, b := range e.batches {
		n += b
	}
	return n, len(e.batches)
}

// A full batch is exported at once (long before the schedule delay), in
// batches of at most the batch size; past the queue's bound spans are
// dropped, never blocking; Shutdown exports the rest.
func TestBatcher(t *testing.T) {
	exp := &countingExporter{}
	b := newBatcher(exp, envOf(map[string]string{"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4",
		"OTEL_BSP_MAX_QUEUE_SIZE": "10"}), nil)
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(b))
	tr := tp.Tracer("t")
	for i := 0; i < 4; i++ {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
	deadline := time.Now().Add(5 * time.Second)
	for n, _ := exp.total(); n < 4; n, _ = exp.total() {
		if time.Now().After(deadline) {
			t.Fatal("a full batch was not exported")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The exporter is idle now: queue 13 more; 3 are dropped at the bound.
	b.mu.Lock()
	held := len(b.items)
	b.mu.Unlock()
	if held != 0 {
		t.Fatalf("%d spans still queued", held)
	}
	for i := 0; i < 13; i++ {
		_, s := tr.Start(context.Background(), "s")
		s.End()
	}
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, _ := exp.total()
	if n+int(b.Dropped()) != 17 || n < 14 {
		t.Fatalf("exported %d, dropped %d, want 17 in all and at least 14 exported", n, b.Dropped())
	}
	for _, size := range exp.batches {
		if size > 4 {
			t.Fatalf("a batch of %d spans, over the batch size 4", size)
		}
	}
	if err := b.Shutdown(context.Background()); err != nil {
		t.Fatal("a second Shutdown:", err)
	}
}
