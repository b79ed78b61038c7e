package tracing

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// bodies is an OTLP/HTTP receiver that keeps the raw requests.
type bodies struct {
	mu   sync.Mutex
	reqs [][]byte
	code int // the status to answer; 0: 200
	hdr  []http.Header
}

func (b *bodies) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reqs = append(b.reqs, body)
	b.hdr = append(b.hdr, r.Header.Clone())
	if b.code != 0 {
		w.WriteHeader(b.code)
		b.code = 0 // once
	}
}

// everySpanFeature starts and ends spans with every feature the OTLP
// encoding has: a remote parent with a trace state, two scopes (one with a
// version), attributes of every type (a key set twice), links, events (one
// from RecordError), the three statuses, a span kind, a timestamp given.
func everySpanFeature() {
	remote := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "tracestate": "qlc=1,other=x"}
	ctx := Extract(context.Background(), remote)
	a := otel.Tracer("scope-a", trace.WithInstrumentationVersion("1.2.3"))
	ctx, root := a.Start(ctx, "root", trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(
		attribute.String("s", "v"), attribute.String("empty", ""), attribute.Bool("t", true), attribute.Bool("f", false),
		attribute.Int("i", -7), attribute.Int64("zero", 0), attribute.Float64("x", 2.5), attribute.ByteSlice("bytes", []byte{1, 2}),
		attribute.BoolSlice("bs", []bool{true, false}), attribute.IntSlice("is", []int{1, -2}), attribute.Float64Slice("fs", []float64{0.5}),
		attribute.StringSlice("ss", []string{"a", ""}), attribute.Slice("mixed", attribute.StringValue("m"), attribute.IntValue(3)),
		attribute.Map("map", attribute.String("k", "v"), attribute.Int("n", 1))))
	_, child := otel.Tracer("scope-b").Start(ctx, "child", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithLinks(trace.Link{SpanContext: root.SpanContext(), Attributes: []attribute.KeyValue{attribute.String("why", "link")}}))
	child.SetAttributes(attribute.String("k", "first"), attribute.Int("n", 1), attribute.String("k", "last"))
	child.SetAttributes(attribute.Int("n", 2))
	child.AddEvent("ev", trace.WithAttributes(attribute.String("e", "1")), trace.WithTimestamp(time.Unix(1700000000, 5)))
	child.RecordError(errors.New("boom"))
	child.SetStatus(codes.Error, "it failed")
	child.SetStatus(codes.Unset, "ignored: lower than Error")
	child.SetName("child renamed")
	child.End(trace.WithTimestamp(time.Now().Add(time.Millisecond)))
	child.SetAttributes(attribute.String("after", "end")) // ignored
	_, ok := a.Start(ctx, "ok", trace.WithNewRoot())
	ok.SetStatus(codes.Ok, "dropped: only an error keeps its description")
	ok.End()
	root.End()
}

// capture runs everySpanFeature with tracing set up from env, and returns
// the export requests the receiver got, decoded.
func capture(t *testing.T, env map[string]string) (*Tracing, []*collectortrace.ExportTraceServiceRequest) {
	t.Helper()
	rcv := &bodies{}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	for k, v := range env {
		t.Setenv(k, v)
	}
	tr, err := Setup(context.Background(), Config{ServiceName: "qlc-test", InstanceID: "node-1"})
	if err != nil || !tr.Enabled() {
		t.Fatalf("Setup: %v", err)
	}
	everySpanFeature()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var out []*collectortrace.ExportTraceServiceRequest
	for _, b := range rcv.reqs {
		var m collectortrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("the request does not decode: %v", err)
		}
		out = append(out, &m)
	}
	return tr, out
}

// normalize makes two runs' requests comparable: span ids become the
// spans' names, times are checked and zeroed, scopes, spans and resource
// attributes are sorted.
func normalize(t *testing.T, reqs []*collectortrace.ExportTraceServiceRequest) *collectortrace.ExportTraceServiceRequest {
	t.Helper()
	if len(reqs) != 1 || len(reqs[0].ResourceSpans) != 1 {
		t.Fatalf("want one request of one resource, got %d requests: %v", len(reqs), reqs)
	}
	m := proto.Clone(reqs[0]).(*collectortrace.ExportTraceServiceRequest)
	rs := m.ResourceSpans[0]
	names := map[string]string{}
	for _, ss := range rs.ScopeSpans {
		for _, s := range ss.Spans {
			names[string(s.SpanId)] = s.Name
		}
	}
	id := func(b []byte) []byte {
		if n, ok := names[string(b)]; ok {
			return []byte("id:" + n)
		}
		return b
	}
	for _, ss := range rs.ScopeSpans {
		for _, s := range ss.Spans {
			if s.StartTimeUnixNano == 0 || s.EndTimeUnixNano < s.StartTimeUnixNano {
				t.Errorf("span %s: start %d end %d", s.Name, s.StartTimeUnixNano, s.EndTimeUnixNano)
			}
			s.StartTimeUnixNano, s.EndTimeUnixNano = 0, 0
			s.SpanId, s.ParentSpanId = id(s.SpanId), id(s.ParentSpanId)
			if s.Name == "ok" {
				s.TraceId = nil // a new root: a random trace id
			}
			for _, e := range s.Events {
				if e.Name == "exception" {
					e.TimeUnixNano = 0
				}
			}
			for _, l := range s.Links {
				l.SpanId = id(l.SpanId)
			}
		}
		sort.Slice(ss.Spans, func(i, j int) bool { return ss.Spans[i].Name < ss.Spans[j].Name })
	}
	sort.Slice(rs.ScopeSpans, func(i, j int) bool { return rs.ScopeSpans[i].Scope.GetName() < rs.ScopeSpans[j].Scope.GetName() })
	sort.Slice(rs.Resource.Attributes, func(i, j int) bool { return rs.Resource.Attributes[i].Key < rs.Resource.Attributes[j].Key })
	return m
}

// The compact spans' export is the SDK's, field for field: the same
// scenario through both pipelines (QLC_TRACING_SDK=true for the SDK's)
// gives the same OTLP request, up to the random span ids and the clock.
// The SDK's exporter is the reference the hand-written encoding is
// checked against.
func TestCompactExportMatchesSDK(t *testing.T) {
	trC, compact := capture(t, nil)
	trS, sdk := capture(t, map[string]string{"QLC_TRACING_SDK": "true"})
	for _, reqs := range [][]*collectortrace.ExportTraceServiceRequest{compact, sdk} {
		b, _ := proto.Marshal(reqs[0])
		if n, err := CountSpans(b); n != 3 || err != nil {
			t.Errorf("CountSpans: %d, %v; want 3", n, err)
		}
	}
	if !trC.Compact() || trS.Compact() {
		t.Fatalf("compact %v, SDK run compact %v", trC.Compact(), trS.Compact())
	}
	c, s := normalize(t, compact), normalize(t, sdk)
	// The one difference, on purpose: a link's trace_state (in the OTLP
	// Span.Link message), which the SDK's exporter leaves out.
	for _, ss := range c.ResourceSpans[0].ScopeSpans {
		for _, sp := range ss.Spans {
			for _, l := range sp.Links {
				if l.TraceState != "qlc=1,other=x" {
					t.Errorf("link trace_state %q", l.TraceState)
				}
				l.TraceState = ""
			}
		}
	}
	if !proto.Equal(s, c) {
		t.Errorf("the compact export differs from the SDK's:\nSDK:\n%s\ncompact:\n%s", prototext.Format(s), prototext.Format(c))
	}
	var child *tracepb.Span
	for _, ss := range c.ResourceSpans[0].ScopeSpans {
		for _, sp := range ss.Spans {
			if sp.Name == "child renamed" {
				child = sp
			}
		}
	}
	if child == nil || len(child.Attributes) != 2 || child.Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || len(child.Events) != 2 {
		t.Errorf("the scenario did not record what it should (so the comparison proves little): %v", child)
	}
}

// Which pipeline Setup picks: the compact spans for OTLP/HTTP alone; the
// SDK's for gRPC, with the console's span store, with a setting only the
// SDK reads, or when asked.
func TestCompactChosen(t *testing.T) {
	srv := httptest.NewServer(&bodies{})
	defer srv.Close()
	for _, c := range []struct {
		name    string
		env     map[string]string
		store   bool
		compact bool
	}{
		{"http", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL}, false, true},
		{"http with headers, gzip, ratio sampler", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": srv.URL + "/v1/traces",
			"OTEL_EXPORTER_OTLP_HEADERS": "a=b%20c", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
			"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"}, false, true},
		{"grpc", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, false, false},
		{"span store", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL}, true, false},
		{"certificate", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem"}, false, false},
		{"span limit", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "5"}, false, false},
		{"asked", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "QLC_TRACING_SDK": "true"}, false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{Getenv: envOf(c.env)}
			if c.store {
				cfg.Processors = []sdktrace.SpanProcessor{sdktrace.NewSimpleSpanProcessor(nil)}
			}
			tr, err := Setup(context.Background(), cfg)
			if err != nil || !tr.Enabled() {
				t.Fatalf("Setup: %v", err)
			}
			defer tr.Shutdown(context.Background())
			if tr.Compact() != c.compact {
				t.Errorf("compact %v, want %v", tr.Compact(), c.compact)
			}
		})
	}
}

// The samplers decide as the SDK's do: parent-based follows a parent's
// sampled flag; a ratio keeps about that share of new traces; an
// unsampled span records nothing but carries its context (unsampled) on.
func TestCompactSampler(t *testing.T) {
	q := newQueue(func(context.Context, []*cspan) error { return nil }, nil, envOf(nil), nil)
	defer q.Shutdown(context.Background())
	for _, c := range []struct {
		env                   map[string]string
		sampledKid, unsampKid bool
		share                 float64 // of new roots sampled
	}{
		{nil, true, false, 1},
		{map[string]string{"OTEL_TRACES_SAMPLER": "always_on"}, true, true, 1},
		{map[string]string{"OTEL_TRACES_SAMPLER": "always_off"}, false, false, 0},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_off"}, true, false, 0},
		// Not parent-based: a kid by its trace id's ratio, which the
		// parents' (low bits zero) pass.
		{map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, true, true, 0.25},
		{map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.25"}, true, false, 0.25},
	} {
		smp, ok := samplerFromEnv(envOf(c.env))
		if !ok {
			t.Fatalf("%v: not parsed", c.env)
		}
		tp := newCompactProvider(smp, q)
		tr := tp.Tracer("t")
		sampled := 0
		const n = 4000
		for i := 0; i < n; i++ {
			_, s := tr.Start(context.Background(), "root")
			if s.SpanContext().IsSampled() != s.IsRecording() {
				t.Fatalf("%v: sampled %v but recording %v", c.env, s.SpanContext().IsSampled(), s.IsRecording())
			}
			if s.IsRecording() {
				sampled++
			}
		}
		if got := float64(sampled) / n; got < c.share-0.05 || got > c.share+0.05 {
			t.Errorf("%v: %.3f of roots sampled, want %.2f", c.env, got, c.share)
		}
		for _, parentSampled := range []bool{true, false} {
			flags := trace.TraceFlags(0)
			if parentSampled {
				flags = trace.FlagsSampled
			}
			psc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0: 1}, SpanID: newSpanID(), TraceFlags: flags, Remote: true})
			ctx, kid := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), psc), "kid")
			want := c.sampledKid
			if !parentSampled {
				want = c.unsampKid
			}
			if kid.IsRecording() != want || kid.SpanContext().TraceID() != psc.TraceID() {
				t.Errorf("%v: parent sampled %v: kid recording %v, want %v", c.env, parentSampled, kid.IsRecording(), want)
			}
			if got := trace.SpanContextFromContext(ctx); got.SpanID() == psc.SpanID() || !got.IsValid() {
				t.Errorf("%v: the kid's context carries %v", c.env, got)
			}
		}
	}
	for _, bad := range []map[string]string{{"OTEL_TRACES_SAMPLER": "jaeger_remote"}, {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}} {
		if _, ok := samplerFromEnv(envOf(bad)); ok {
			t.Errorf("%v parsed", bad)
		}
	}
}

// OTLP/HTTP settings: headers and gzip reach the receiver; a 503 is
// retried and the spans arrive.
func TestCompactHTTPSettings(t *testing.T) {
	rcv := &bodies{code: http.StatusServiceUnavailable}
	srv := httptest.NewServer(rcv)
	defer srv.Close()
	e, err := newOTLPHTTP(envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL + "/",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS": "x-key=a%3Db,x-other=1", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	e.backoff = time.Millisecond
	tp := newCompactProvider(sampler{}, newQueue(e.export, e.shutdown, envOf(nil), func(err error) { t.Error(err) }))
	_, s := tp.Tracer("t").Start(context.Background(), "s")
	s.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.reqs) != 2 {
		t.Fatalf("%d requests, want 2 (a 503, then the retry)", len(rcv.reqs))
	}
	h := rcv.hdr[1]
	if h.Get("X-Key") != "a=b" || h.Get("X-Other") != "1" || h.Get("Content-Encoding") != "gzip" || h.Get("Content-Type") != "application/x-protobuf" {
		t.Errorf("headers %v", h)
	}
	r := &Receiver{}
	req := httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(rcv.reqs[1]))
	req.Header = h
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	if got := r.Spans(); len(got) != 1 || got[0].Name != "s" {
		t.Errorf("received %v (%d)", got, rec.Code)
	}
	for _, bad := range []map[string]string{{"OTEL_EXPORTER_OTLP_ENDPOINT": "localhost:4318"}, {"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_COMPRESSION": "zstd"},
		{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}} {
		if _, err := newOTLPHTTP(envOf(bad), nil); !errors.Is(err, errOTLPConfig) {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// A span changes no more once ended, keeps at most 128 attributes (a key
// set again replaces its value), and a status goes Unset < Error < Ok.
func TestCompactSpanRules(t *testing.T) {
	var got []*cspan
	q := newQueue(func(_ context.Context, b []*cspan) error { got = append(got, b...); return nil }, nil, envOf(nil), nil)
	tp := newCompactProvider(sampler{}, q)
	_, s := tp.Tracer("t").Start(context.Background(), "s", trace.WithAttributes(attribute.String("k", "a")))
	for i := 0; i < 200; i++ {
		s.SetAttributes(attribute.Int("n"+string(rune('a'+i%26))+string(rune('a'+i/26)), i), attribute.String("k", "b"))
	}
	s.SetStatus(codes.Error, "e")
	s.SetStatus(codes.Ok, "")
	s.SetStatus(codes.Error, "ignored")
	s.End()
	s.SetAttributes(attribute.String("late", "x"))
	s.AddEvent("late")
	s.End()
	if err := tp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%d spans exported, want 1 (End twice)", len(got))
	}
	c := got[0]
	if len(c.attrs) != compactLimit || c.droppedAttrs != 201-compactLimit || c.attrs[0].Value.AsString() != "b" {
		t.Errorf("%d attributes, %d dropped, k=%v", len(c.attrs), c.droppedAttrs, c.attrs[0].Value.Emit())
	}
	if c.status != codes.Ok || c.statusMsg != "" || len(c.events) != 0 {
		t.Errorf("status %v %q, events %v", c.status, c.statusMsg, c.events)
	}
	if _, s := tp.Tracer("t").Start(context.Background(), "after shutdown"); s.IsRecording() {
		t.Error("a span started after Shutdown records")
	}
}
