package spanstore

import (
	"context"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/messages"
)

// Bounds of one stored span.
const (
	// MaxAttributes is how many of a span's attributes are kept (the first
	// ones recorded).
	MaxAttributes = 24
	// MaxValueBytes cuts each kept attribute value.
	MaxValueBytes = 256
	// MaxTraceSpans bounds one Trace answer (a trace larger than that is
	// cut, oldest spans first kept).
	MaxTraceSpans = 2000
)

// DefaultMax is the spans a Store keeps by default: a few hundred runs of
// a chain profile (a run makes about ten spans per process).
const DefaultMax = 4096

// Store is a bounded ring of finished spans; it implements
// sdktrace.SpanProcessor. Its methods are safe for concurrent use and do
// not block (beyond one short mutex).
type Store struct {
	// mu guards ring, next and full.
	mu   sync.Mutex
	ring []stored
	next int
	full bool
}

type stored struct {
	traceID trace.TraceID
	span    *messages.TraceSpan
}

var _ sdktrace.SpanProcessor = (*Store)(nil)

// New returns a Store keeping the last max spans (max < 1: DefaultMax).
func New(max int) *Store {
	if max < 1 {
		max = DefaultMax
	}
	return &Store{ring: make([]stored, max)}
}

// Cap is the number of spans the store keeps at most.
func (s *Store) Cap() int { return len(s.ring) }

// Len is the number of spans held now.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.full {
		return len(s.ring)
	}
	return s.next
}

// OnStart implements sdktrace.SpanProcessor: nothing (only finished spans
// are kept).
func (s *Store) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd implements sdktrace.SpanProcessor: it keeps a copy of the span,
// dropping the oldest when the ring is full. Unsampled spans are skipped.
func (s *Store) OnEnd(sp sdktrace.ReadOnlySpan) {
	sc := sp.SpanContext()
	if !sc.IsSampled() {
		return
	}
	m := convert(sp)
	s.mu.Lock()
	s.ring[s.next] = stored{traceID: sc.TraceID(), span: m}
	s.next++
	if s.next == len(s.ring) {
		s.next, s.full = 0, true
	}
	s.mu.Unlock()
}

// Shutdown implements sdktrace.SpanProcessor.
func (s *Store) Shutdown(context.Context) error { return nil }

// ForceFlush implements sdktrace.SpanProcessor.
func (s *Store) ForceFlush(context.Context) error { return nil }

// Trace returns the stored spans of the trace with hex id traceID, in the
// order they ended (at most MaxTraceSpans); nil for a malformed id or an
// unknown trace. The spans are shared: callers must not modify them.
func (s *Store) Trace(traceID string) []*messages.TraceSpan {
	id, err := trace.TraceIDFromHex(traceID)
	if err != nil {
		return nil
	}
	var out []*messages.TraceSpan
	s.mu.Lock()
	defer s.mu.Unlock()
	start, n := 0, s.next
	if s.full {
		start, n = s.next, len(s.ring)
	}
	for i := 0; i < n && len(out) < MaxTraceSpans; i++ {
		e := s.ring[(start+i)%len(s.ring)]
		if e.traceID == id {
			out = append(out, e.span)
		}
	}
	return out
}

func convert(sp sdktrace.ReadOnlySpan) *messages.TraceSpan {
	sc := sp.SpanContext()
	m := &messages.TraceSpan{
		TraceId: sc.TraceID().String(),
		SpanId:  sc.SpanID().String(),
		Name:    cut(sp.Name()),
		Kind:    sp.SpanKind().String(),
		Start:   timestamppb.New(sp.StartTime()),
		End:     timestamppb.New(sp.EndTime()),
	}
	if p := sp.Parent(); p.IsValid() {
		m.ParentSpanId = p.SpanID().String()
	}
	switch st := sp.Status(); st.Code {
	case codes.Error:
		m.Status, m.StatusMessage = "error", cut(st.Description)
	case codes.Ok:
		m.Status = "ok"
	}
	if res := sp.Resource(); res != nil {
		if v, ok := res.Set().Value(semconv.ServiceNameKey); ok {
			m.Service = v.Emit()
		}
		if v, ok := res.Set().Value(semconv.ServiceInstanceIDKey); ok {
			m.Instance = v.Emit()
		}
	}
	attrs := sp.Attributes()
	if len(attrs) > 0 {
		m.Attributes = make(map[string]string, min(len(attrs), MaxAttributes))
		for _, kv := range attrs[:min(len(attrs), MaxAttributes)] {
			m.Attributes[string(kv.Key)] = cut(value(kv.Value))
		}
	}
	return m
}

func value(v attribute.Value) string { return v.Emit() }

// cut bounds s to MaxValueBytes without splitting a UTF-8 sequence.
func cut(s string) string {
	if len(s) <= MaxValueBytes {
		return s
	}
	i := MaxValueBytes
	for i > 0 && s[i]&0xC0 == 0x80 {
		i--
	}
	return s[:i]
}
