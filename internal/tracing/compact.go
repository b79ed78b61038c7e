package tracing

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
)

// QLC's compact spans: a trace.TracerProvider of its own for the common
// case, OTLP/HTTP export with nothing else recording spans (Setup decides,
// see compactOK). Why not the SDK's: measured in gateway's
// BenchmarkAddedTTFT (BENCHMARKS.md, issue 13), a span through the SDK and
// its OTLP exporter cost ~15 µs of CPU on this project's 2-core machine,
// most of it allocation: a recording span and its attribute slice grown at
// every SetAttributes, a snapshot copy at End, then an OTLP protobuf object
// per span, attribute and value, marshalled by reflection. Here a span is
// one allocation (attributes inline up to compactInline), End hands the
// span itself to the queue (it is immutable from then on), and the queue's
// goroutine encodes the batch straight to OTLP protobuf bytes (otlp.go) —
// off the run's goroutines, once per batch.
//
// Semantics follow the SDK's: W3C trace flags and trace state from the
// parent, the OTEL_TRACES_SAMPLER samplers (sampler.go), attribute keys
// deduplicated (the last value wins), at most 128 attributes, events and
// links per span and 128 attributes per event (the SDK's defaults; the
// OTEL_SPAN_*_LIMIT variables send Setup to the SDK), status Ok > Error >
// Unset, a span that records nothing once ended.

// compactLimit is the SDK's default bound on a span's attributes, events
// and links, and on an event's attributes.
const compactLimit = 128

// compactInline is how many attributes a span holds without a second
// allocation: QLC's spans have at most 10 (a provider call's).
const compactInline = 10

// compactProvider is the TracerProvider of compact spans.
type compactProvider struct {
	embedded.TracerProvider
	sampler sampler
	q       *queue[*cspan]
	stopped atomic.Bool // after Shutdown: spans are no longer recorded

	// mu guards tracers.
	mu      sync.Mutex
	tracers map[scopeKey]*compactTracer
}

// scopeKey is an instrumentation scope: a tracer's name, version and schema.
type scopeKey struct{ name, version, schemaURL string }

func newCompactProvider(s sampler, q *queue[*cspan]) *compactProvider {
	return &compactProvider{sampler: s, q: q, tracers: map[scopeKey]*compactTracer{}}
}

// Tracer returns the tracer of an instrumentation scope (trace.TracerProvider).
func (p *compactProvider) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	c := trace.NewTracerConfig(opts...)
	if name == "" {
		name = "go.opentelemetry.io/otel/sdk/tracer" // as the SDK names it
	}
	k := scopeKey{name, c.InstrumentationVersion(), c.SchemaURL()}
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.tracers[k]
	if t == nil {
		t = &compactTracer{p: p, scope: k}
		p.tracers[k] = t
	}
	return t
}

// Shutdown stops recording, exports what is queued and stops the exporter.
func (p *compactProvider) Shutdown(ctx context.Context) error {
	p.stopped.Store(true)
	return p.q.Shutdown(ctx)
}

// ForceFlush exports what is queued.
func (p *compactProvider) ForceFlush(ctx context.Context) error { return p.q.ForceFlush(ctx) }

// compactTracer starts compact spans of one instrumentation scope.
type compactTracer struct {
	embedded.Tracer
	p     *compactProvider
	scope scopeKey
}

// Start starts a span (trace.Tracer): a child of ctx's span unless
// trace.WithNewRoot, sampled by the provider's sampler.
func (t *compactTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if ctx == nil {
		ctx = context.Background()
	}
	var cfg trace.SpanConfig
	if len(opts) > 0 {
		cfg = trace.NewSpanStartConfig(opts...)
	}
	var parent trace.SpanContext
	if !cfg.NewRoot() {
		parent = trace.SpanContextFromContext(ctx)
	}
	tid := parent.TraceID()
	if !tid.IsValid() {
		tid = newTraceID()
	}
	sampled := t.p.sampler.sample(parent, tid) && !t.p.stopped.Load()
	flags := parent.TraceFlags() &^ trace.FlagsSampled
	if sampled {
		flags |= trace.FlagsSampled
	}
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: newSpanID(), TraceFlags: flags, TraceState: parent.TraceState()})
	if !sampled {
		u := &unsampledSpan{sc: sc, p: t.p}
		return trace.ContextWithSpan(ctx, u), u
	}
	s := &cspan{tracer: t, sc: sc, parent: parent, kind: trace.ValidateSpanKind(cfg.SpanKind()), name: name, start: cfg.Timestamp()}
	if s.start.IsZero() {
		s.start = time.Now()
	}
	s.attrs = s.inline[:0]
	s.addAttrs(cfg.Attributes())
	for _, l := range cfg.Links() {
		s.addLink(l)
	}
	return trace.ContextWithSpan(ctx, s), s
}

// newTraceID and newSpanID are random and never zero (math/rand/v2's
// generator: per thread, no lock; trace ids are not secrets).
func newTraceID() (id trace.TraceID) {
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

func newSpanID() (id trace.SpanID) {
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// cspan is a recording compact span. Its methods are safe for concurrent
// use; once ended it changes no more and belongs to the queue.
type cspan struct {
	embedded.Span
	tracer *compactTracer
	sc     trace.SpanContext
	parent trace.SpanContext
	kind   trace.SpanKind
	ended  atomic.Bool

	// mu guards the fields below until the span ends.
	mu            sync.Mutex
	name          string
	start, end    time.Time
	attrs         []attribute.KeyValue // inline[:0] at first
	inline        [compactInline]attribute.KeyValue
	droppedAttrs  int
	events        []cevent
	droppedEvents int
	links         []clink
	droppedLinks  int
	status        codes.Code
	statusMsg     string
}

type cevent struct {
	name    string
	time    time.Time
	attrs   []attribute.KeyValue
	dropped int
}

type clink struct {
	sc      trace.SpanContext
	attrs   []attribute.KeyValue
	dropped int
}

// addAttrs sets kvs (mu held, or the span not yet shared).
func (s *cspan) addAttrs(kvs []attribute.KeyValue) {
next:
	for _, kv := range kvs {
		if !kv.Valid() {
			s.droppedAttrs++
			continue
		}
		for i := range s.attrs {
			if s.attrs[i].Key == kv.Key {
				s.attrs[i] = kv
				continue next
			}
		}
		if len(s.attrs) >= compactLimit {
			s.droppedAttrs++
			continue
		}
		s.attrs = append(s.attrs, kv)
	}
}

// limitAttrs is kvs without invalid ones, at most compactLimit, and how
// many were dropped (an event's or a link's attributes).
func limitAttrs(kvs []attribute.KeyValue) ([]attribute.KeyValue, int) {
	if len(kvs) <= compactLimit {
		ok := true
		for _, kv := range kvs {
			ok = ok && kv.Valid()
		}
		if ok {
			return kvs, 0 // the option's copy (trace.NewEventConfig), or the caller's Link
		}
	}
	out, dropped := kvs[:0:0], 0
	for _, kv := range kvs {
		if !kv.Valid() || len(out) >= compactLimit {
			dropped++
			continue
		}
		out = append(out, kv)
	}
	return out, dropped
}

func (s *cspan) addLink(l trace.Link) {
	if !l.SpanContext.IsValid() && len(l.Attributes) == 0 {
		return
	}
	if len(s.links) >= compactLimit {
		s.droppedLinks++
		return
	}
	attrs, dropped := limitAttrs(l.Attributes)
	s.links = append(s.links, clink{sc: l.SpanContext, attrs: attrs, dropped: dropped})
}

// End ends the span and queues it for export; later calls do nothing.
func (s *cspan) End(opts ...trace.SpanEndOption) {
	now := time.Now()
	s.mu.Lock()
	if s.ended.Load() {
		s.mu.Unlock()
		return
	}
	s.end = now
	if len(opts) > 0 {
		if cfg := trace.NewSpanEndConfig(opts...); !cfg.Timestamp().IsZero() {
			ts := cfg.Timestamp()
			s.end = ts
		}
	}
	s.ended.Store(true)
	s.mu.Unlock()
	s.tracer.p.q.push(s)
}

// AddEvent records an event (its time now unless trace.WithTimestamp).
func (s *cspan) AddEvent(name string, opts ...trace.EventOption) {
	if s.ended.Load() {
		return
	}
	cfg := trace.NewEventConfig(opts...)
	attrs, dropped := limitAttrs(cfg.Attributes())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.Load() {
		return
	}
	if len(s.events) >= compactLimit {
		s.droppedEvents++
		return
	}
	s.events = append(s.events, cevent{name: name, time: cfg.Timestamp(), attrs: attrs, dropped: dropped})
}

// AddLink records a link to another span.
func (s *cspan) AddLink(l trace.Link) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended.Load() {
		s.addLink(l)
	}
}

// IsRecording is true until the span ends.
func (s *cspan) IsRecording() bool { return !s.ended.Load() }

// RecordError records err as an "exception" event, as the SDK does.
func (s *cspan) RecordError(err error, opts ...trace.EventOption) {
	if err == nil || s.ended.Load() {
		return
	}
	opts = append(opts, trace.WithAttributes(semconv.ExceptionType(typeStr(err)), semconv.ExceptionMessage(err.Error())))
	s.AddEvent(semconv.ExceptionEventName, opts...)
}

// typeStr is an error's type as the SDK's RecordError names it.
func typeStr(i any) string {
	t := reflect.TypeOf(i)
	if t.PkgPath() == "" && t.Name() == "" {
		return t.String()
	}
	return fmt.Sprintf("%s.%s", t.PkgPath(), t.Name())
}

// SpanContext is the span's context (usable after End).
func (s *cspan) SpanContext() trace.SpanContext { return s.sc }

// SetStatus sets the status unless a higher one is set (Ok > Error >
// Unset); the description is kept for an error only.
func (s *cspan) SetStatus(code codes.Code, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended.Load() || s.status > code {
		return
	}
	s.status, s.statusMsg = code, ""
	if code == codes.Error {
		s.statusMsg = description
	}
}

// SetName renames the span.
func (s *cspan) SetName(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended.Load() {
		s.name = name
	}
}

// SetAttributes sets attributes; a key already set takes the new value.
func (s *cspan) SetAttributes(kvs ...attribute.KeyValue) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended.Load() {
		s.addAttrs(kvs)
	}
}

// TracerProvider is the span's provider.
func (s *cspan) TracerProvider() trace.TracerProvider { return s.tracer.p }

// unsampledSpan is a span the sampler dropped: it carries its context
// (for propagation, unsampled) and records nothing.
type unsampledSpan struct {
	embedded.Span
	sc trace.SpanContext
	p  *compactProvider
}

func (s *unsampledSpan) End(...trace.SpanEndOption)              {}
func (s *unsampledSpan) AddEvent(string, ...trace.EventOption)   {}
func (s *unsampledSpan) AddLink(trace.Link)                      {}
func (s *unsampledSpan) IsRecording() bool                       { return false }
func (s *unsampledSpan) RecordError(error, ...trace.EventOption) {}
func (s *unsampledSpan) SpanContext() trace.SpanContext          { return s.sc }
func (s *unsampledSpan) SetStatus(codes.Code, string)            {}
func (s *unsampledSpan) SetName(string)                          {}
func (s *unsampledSpan) SetAttributes(...attribute.KeyValue)     {}
func (s *unsampledSpan) TracerProvider() trace.TracerProvider    { return s.p }

// sampler is OTEL_TRACES_SAMPLER's decision, as the SDK's samplers make
// it: a root span by the root rule; with parentBased, a span with a parent
// as its parent was.
type sampler struct {
	parentBased bool
	root        rootRule
	bound       uint64 // ratio: sampled when the trace id's low 63 bits are below it
}

type rootRule int

const (
	rootOn rootRule = iota
	rootOff
	rootRatio
)

func (s sampler) sample(parent trace.SpanContext, tid trace.TraceID) bool {
	if s.parentBased && parent.IsValid() {
		return parent.IsSampled()
	}
	switch s.root {
	case rootOn:
		return true
	case rootRatio:
		return binary.BigEndian.Uint64(tid[8:16])>>1 < s.bound
	}
	return false
}

// samplerFromEnv reads OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG
// (the SDK's default: parentbased_always_on); ok is false for a sampler
// or argument it does not know (Setup then leaves them to the SDK).
func samplerFromEnv(getenv func(string) string) (s sampler, ok bool) {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	if name == "" {
		name = "parentbased_always_on"
	}
	if rest, pb := strings.CutPrefix(name, "parentbased_"); pb {
		s.parentBased, name = true, rest
	}
	switch name {
	case "always_on":
		s.root = rootOn
	case "always_off":
		s.root = rootOff
	case "traceidratio":
		ratio := 1.0
		if arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); arg != "" {
			r, err := strconv.ParseFloat(arg, 64)
			if err != nil || r < 0 || r > 1 {
				return s, false
			}
			ratio = r
		}
		switch {
		case ratio >= 1:
			s.root = rootOn
		case ratio <= 0:
			s.root = rootOff
		default:
			s.root, s.bound = rootRatio, uint64(ratio*(1<<63))
		}
	default:
		return s, false
	}
	return s, true
}
