package spanstore

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
)

func provider(s *Store, sampler sdktrace.Sampler) *sdktrace.TracerProvider {
	res := resource.NewSchemaless(semconv.ServiceName("qlc-node"), semconv.ServiceInstanceID("127.0.0.1:7000"))
	return sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s), sdktrace.WithResource(res), sdktrace.WithSampler(sampler))
}

// A trace's spans come back with their parents, process and bounded
// attributes; other traces' spans do not.
func TestStoreTrace(t *testing.T) {
	s := New(100)
	tr := provider(s, sdktrace.AlwaysSample()).Tracer("test")
	ctx, root := tr.Start(context.Background(), "qlc.run")
	_, child := tr.Start(ctx, "qlc.step", trace.WithAttributes(attribute.String("long", strings.Repeat("é", 300)), attribute.Int("n", 3)))
	child.SetStatus(codes.Error, "boom")
	child.End()
	root.End()
	_, other := tr.Start(context.Background(), "other")
	other.End()

	id := root.SpanContext().TraceID().String()
	got := s.Trace(id)
	if len(got) != 2 {
		t.Fatalf("Trace = %d spans, want 2", len(got))
	}
	c, r := got[0], got[1] // in the order they ended
	if c.Name != "qlc.step" || r.Name != "qlc.run" || c.ParentSpanId != r.SpanId || r.ParentSpanId != "" {
		t.Fatalf("spans %q (parent %q), %q (parent %q)", c.Name, c.ParentSpanId, r.Name, r.ParentSpanId)
	}
	if c.Service != "qlc-node" || c.Instance != "127.0.0.1:7000" || c.Status != "error" || c.StatusMessage != "boom" {
		t.Fatalf("process or status: %+v", c)
	}
	if v := c.Attributes["long"]; len(v) > MaxValueBytes || !strings.HasPrefix(v, "éé") || strings.ContainsRune(v, '\uFFFD') {
		t.Fatalf("long attribute cut badly: %d bytes", len(v))
	}
	if c.Attributes["n"] != "3" {
		t.Fatalf("n = %q", c.Attributes["n"])
	}
	if !c.End.AsTime().After(c.Start.AsTime()) && !c.End.AsTime().Equal(c.Start.AsTime()) {
		t.Fatal("end before start")
	}
	if s.Trace("nothex") != nil || s.Trace(strings.Repeat("0", 31)+"1") != nil {
		t.Fatal("a bad or unknown id found spans")
	}
}

// The ring keeps the last max spans and drops the oldest; unsampled spans
// are not kept.
func TestStoreBounds(t *testing.T) {
	s := New(10)
	tr := provider(s, sdktrace.AlwaysSample()).Tracer("test")
	ctx, root := tr.Start(context.Background(), "root")
	for i := 0; i < 25; i++ {
		_, sp := tr.Start(ctx, "child", trace.WithAttributes(attribute.Int("i", i)))
		sp.End()
	}
	if s.Len() != 10 || s.Cap() != 10 {
		t.Fatalf("Len %d Cap %d, want 10 10", s.Len(), s.Cap())
	}
	got := s.Trace(root.SpanContext().TraceID().String())
	if len(got) != 10 || got[0].Attributes["i"] != "15" || got[9].Attributes["i"] != "24" {
		t.Fatalf("kept %d spans, first i=%s", len(got), got[0].Attributes["i"])
	}
	root.End()
	if got := s.Trace(root.SpanContext().TraceID().String()); len(got) != 10 || got[9].Name != "root" {
		t.Fatalf("after root ended: %d spans", len(got))
	}

	u := New(10)
	tr = provider(u, sdktrace.NeverSample()).Tracer("test")
	_, sp := tr.Start(context.Background(), "x")
	sp.End()
	if u.Len() != 0 {
		t.Fatal("an unsampled span was kept")
	}
	if New(0).Cap() != DefaultMax {
		t.Fatal("New(0) is not DefaultMax")
	}
}

// Many attributes: only MaxAttributes are kept.
func TestStoreAttributeBound(t *testing.T) {
	s := New(4)
	tr := provider(s, sdktrace.AlwaysSample()).Tracer("test")
	var kv []attribute.KeyValue
	for i := 0; i < 40; i++ {
		kv = append(kv, attribute.Int(strings.Repeat("k", i+1), i))
	}
	_, sp := tr.Start(context.Background(), "x", trace.WithAttributes(kv...))
	sp.End()
	got := s.Trace(sp.SpanContext().TraceID().String())
	if len(got) != 1 || len(got[0].Attributes) != MaxAttributes {
		t.Fatalf("attributes kept: %d", len(got[0].Attributes))
	}
}
