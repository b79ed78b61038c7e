package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// ErrProtocol is returned by Setup for an OTLP protocol it does not speak.
var ErrProtocol = errors.New("tracing: unsupported OTLP protocol (want http/protobuf or grpc)")

// ErrExporter is returned by Setup for an OTEL_TRACES_EXPORTER other than
// otlp or none.
var ErrExporter = errors.New("tracing: unsupported OTEL_TRACES_EXPORTER (want otlp or none)")

// Config says who the process is. Every field is optional.
type Config struct {
	// ServiceName is the resource's service.name ("qlc-node",
	// "qlc-gateway"); OTEL_SERVICE_NAME wins over it.
	ServiceName string
	// InstanceID is the resource's service.instance.id: the node's name or
	// actor address, so a trace shows which process did what.
	InstanceID string
	// Logger receives the SDK's errors (an exporter that cannot reach its
	// receiver); nil: slog.Default().
	Logger *slog.Logger
	// Getenv reads the environment for Setup's own decisions (on or off,
	// which protocol); nil: os.Getenv. The exporter and the SDK read the
	// process's environment themselves.
	Getenv func(string) string
	// Processors are span processors to register besides the exporter's
	// (the console's in-process span store, internal/spanstore). With
	// some, tracing is on even when the environment asks for no export:
	// spans are recorded for them alone. OTEL_SDK_DISABLED=true still
	// turns everything off.
	Processors []sdktrace.SpanProcessor
}

// Tracing is a process's tracing: on (an exporter and an SDK provider,
// installed as OpenTelemetry's globals) or off. Its methods are safe for
// concurrent use; Shutdown is idempotent.
type Tracing struct {
	provider provider // nil when off
	protocol string
	compact  bool
}

// provider is what Setup installs: the SDK's, or QLC's compact spans'.
type provider interface {
	trace.TracerProvider
	Shutdown(context.Context) error
	ForceFlush(context.Context) error
}

// captureContent is CaptureContent's answer, set by Setup; on says
// whether Setup installed a provider (Enabled).
var captureContent, on atomic.Bool

// Enabled reports whether Setup turned tracing on in this process: one
// atomic load, for code that does work only to feed spans (a server span's
// header parsing) to skip it when tracing is off.
func Enabled() bool { return on.Load() }

// CaptureContent reports whether spans may record prompt and answer text
// (OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true with tracing on).
func CaptureContent() bool { return captureContent.Load() }

// enabled reports whether the environment asks for trace export.
func enabled(getenv func(string) string) (bool, error) {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false, nil
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "none":
		return false, nil
	case "otlp":
		return true, nil
	case "":
	default:
		return false, fmt.Errorf("%w: %q", ErrExporter, exp)
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "", nil
}

// protocolOf is the OTLP protocol the environment names (the spec's
// default: http/protobuf).
func protocolOf(getenv func(string) string) string {
	p := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if p == "" {
		p = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	if p == "" {
		p = "http/protobuf"
	}
	return strings.ToLower(strings.TrimSpace(p))
}

// Setup reads the environment and, if it asks for traces, installs an OTLP
// exporter and SDK provider as OpenTelemetry's globals (see the package
// doc). Off, it changes nothing and returns a Tracing whose Enabled is
// false. It does not block on the receiver: export happens in the
// background.
func Setup(ctx context.Context, cfg Config) (*Tracing, error) {
	getenv := cfg.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	want, err := enabled(getenv)
	if err != nil {
		captureContent.Store(false)
		return &Tracing{}, err
	}
	if !want && (len(cfg.Processors) == 0 || strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true")) {
		captureContent.Store(false)
		return &Tracing{}, nil
	}
	protocol := protocolOf(getenv)
	var exp sdktrace.SpanExporter
	switch {
	case !want:
		protocol = "" // processors only: nothing exported
	case protocol == "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case protocol == "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return &Tracing{}, fmt.Errorf("%w: %q", ErrProtocol, protocol)
	}
	if err != nil {
		return &Tracing{}, fmt.Errorf("tracing: exporter: %w", err)
	}
	var attrs []attribute.KeyValue
	if cfg.ServiceName != "" {
		attrs = append(attrs, semconv.ServiceName(cfg.ServiceName))
	}
	if cfg.InstanceID != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(cfg.InstanceID))
	}
	// The environment (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME) is
	// merged last, so it wins.
	res, err := resource.New(ctx, resource.WithSchemaURL(semconv.SchemaURL), resource.WithAttributes(attrs...),
		resource.WithTelemetrySDK(), resource.WithFromEnv())
	if err != nil && res == nil {
		if exp != nil {
			_ = exp.Shutdown(ctx)
		}
		return &Tracing{}, fmt.Errorf("tracing: resource: %w", err)
	}
	onError := func(err error) { logger.Warn("tracing: export", "error", err) }
	var tp provider
	compact := false
	if cp, ok := newCompact(getenv, cfg, protocol, res, onError); ok {
		// QLC's compact spans (compact.go): the SDK's exporter is not
		// needed.
		_ = exp.Shutdown(ctx)
		tp, compact = cp, true
	} else {
		// NewTracerProvider reads OTEL_TRACES_SAMPLER(_ARG); the batcher
		// reads OTEL_BSP_*.
		opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
		if exp != nil {
			opts = append(opts, sdktrace.WithSpanProcessor(newBatcher(exp, getenv, onError)))
		}
		for _, p := range cfg.Processors {
			opts = append(opts, sdktrace.WithSpanProcessor(p))
		}
		tp = sdktrace.NewTracerProvider(opts...)
	}
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	otel.SetErrorHandler(otel.ErrorHandlerFunc(onError))
	captureContent.Store(strings.EqualFold(getenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"), "true"))
	on.Store(true)
	if exp == nil {
		logger.Info("tracing on, spans kept in this process only (no OTLP export configured)", "service", cfg.ServiceName, "instance", cfg.InstanceID)
	} else {
		logger.Info("tracing on", "protocol", protocol, "compact", compact, "service", cfg.ServiceName, "instance", cfg.InstanceID)
	}
	return &Tracing{provider: tp, protocol: protocol, compact: compact}, nil
}

// sdkOnly are the variables that only the SDK's pipeline reads: with any
// of them set, Setup uses it rather than the compact spans.
var sdkOnly = []string{
	"OTEL_EXPORTER_OTLP_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_CLIENT_KEY",
	"OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
	"OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
	"OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
	"OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT", "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
}

// newCompact builds the compact spans' provider (compact.go) when they
// can serve the configuration: OTLP over HTTP (protobuf), no in-process
// span processors (the console's store takes the SDK's spans), a sampler
// and OTLP settings it parses, none of sdkOnly, and QLC_TRACING_SDK not
// true (the SDK's pipeline on demand: to compare, or to rule the compact
// one out).
func newCompact(getenv func(string) string, cfg Config, protocol string, res *resource.Resource, onError func(error)) (*compactProvider, bool) {
	if protocol != "http/protobuf" || len(cfg.Processors) > 0 || strings.EqualFold(getenv("QLC_TRACING_SDK"), "true") {
		return nil, false
	}
	for _, k := range sdkOnly {
		if getenv(k) != "" {
			return nil, false
		}
	}
	smp, ok := samplerFromEnv(getenv)
	if !ok {
		return nil, false
	}
	exp, err := newOTLPHTTP(getenv, res)
	if err != nil {
		return nil, false
	}
	return newCompactProvider(smp, newQueue(exp.export, exp.shutdown, getenv, onError)), true
}

// Compact reports whether spans are QLC's compact ones (compact.go)
// rather than the SDK's.
func (t *Tracing) Compact() bool { return t != nil && t.compact }

// Enabled reports whether spans are exported.
func (t *Tracing) Enabled() bool { return t != nil && t.provider != nil }

// Protocol is the OTLP protocol in use ("" when off).
func (t *Tracing) Protocol() string {
	if t == nil {
		return ""
	}
	return t.protocol
}

// Shutdown exports the spans still queued (within ctx) and stops the
// exporter. Off, it does nothing.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if !t.Enabled() {
		return nil
	}
	on.Store(false)
	captureContent.Store(false)
	return t.provider.Shutdown(ctx)
}

// Inject returns ctx's span context as a message's trace_context (W3C
// traceparent, and tracestate and baggage when there are any); nil when ctx
// has no valid span (always, with tracing off).
func Inject(ctx context.Context) map[string]string {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return nil
	}
	c := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, c)
	if len(c) == 0 {
		return nil
	}
	return c
}

// Extract returns ctx with the remote span context a message's
// trace_context carries, for the receiver's spans to be its children; ctx
// itself when tc is empty.
func Extract(ctx context.Context, tc map[string]string) context.Context {
	if len(tc) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(tc))
}

// TraceID is ctx's trace id in hex, "" when it has none.
func TraceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		return sc.TraceID().String()
	}
	return ""
}

// TraceIDOf is the trace id a message's trace_context names (its W3C
// traceparent, "00-<trace id>-<span id>-<flags>"), "" when none.
func TraceIDOf(tc map[string]string) string {
	tp := tc["traceparent"]
	if len(tp) < 35 || tp[2] != '-' {
		return ""
	}
	id := tp[3:35]
	if id == "00000000000000000000000000000000" {
		return ""
	}
	return id
}

// Detach returns a context that carries ctx's span and nothing else: no
// deadline, no cancellation, no values (context.Background() for a nil
// ctx). Work that outlives a request (or must not end with it) keeps its
// place in the request's trace.
func Detach(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return trace.ContextWithSpan(context.Background(), trace.SpanFromContext(ctx))
}

// Tracer is a named tracer of OpenTelemetry's global provider, looked up
// again only when the global provider changes: a trace.Tracer kept from
// the global stays bound to the first provider ever installed (tests and
// benchmarks install one after another), and asking the SDK's provider for
// a tracer at every span costs a lock and a map lookup. Safe for
// concurrent use; the zero value is not usable (NewTracer).
type Tracer struct {
	name string
	c    atomic.Pointer[tracerEntry]
}

type tracerEntry struct {
	tp trace.TracerProvider
	t  trace.Tracer
}

// NewTracer returns the tracer of instrumentation scope name.
func NewTracer(name string) *Tracer { return &Tracer{name: name} }

// noSpan is what Start returns with tracing off: OpenTelemetry's no-op span.
var noSpan = trace.SpanFromContext(context.Background())

// Start starts a span, as trace.Tracer's Start does. With tracing off
// (Enabled false) it returns ctx itself and a no-op span at the cost of
// one atomic load: no context is derived, nothing is allocated.
func (t *Tracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if !on.Load() {
		return ctx, noSpan
	}
	tp := otel.GetTracerProvider()
	e := t.c.Load()
	if e == nil || e.tp != tp {
		e = &tracerEntry{tp: tp, t: tp.Tracer(t.name)}
		t.c.Store(e)
	}
	return e.t.Start(ctx, name, opts...)
}

// Use installs tp as OpenTelemetry's global provider, with the W3C
// trace-context propagator, and turns tracing on, as Setup does with the
// provider it builds; the returned function turns tracing off again and
// puts a no-op provider back. For tests that record spans in memory
// (go.opentelemetry.io/otel/sdk/trace/tracetest).
func Use(tp trace.TracerProvider) (restore func()) {
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	on.Store(true)
	return func() {
		on.Store(false)
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
	}
}
