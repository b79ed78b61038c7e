package tracing

import (
	"context"
	"errors"
	"net"
	"net/http/httptest"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/trace"
	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
)

func envOf(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// With no OTEL variables, tracing is off: no provider is installed, spans
// are OpenTelemetry's no-op ones, and no message carries a trace context.
func TestOffWhenUnset(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"unset":    {},
		"disabled": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_SDK_DISABLED": "true"},
		"none":     {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_TRACES_EXPORTER": "none"},
	} {
		t.Run(name, func(t *testing.T) {
			before := otel.GetTracerProvider()
			tr, err := Setup(context.Background(), Config{ServiceName: "x", Getenv: envOf(env)})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Enabled() || tr.Shutdown(context.Background()) != nil {
				t.Fatal("tracing is on")
			}
			if otel.GetTracerProvider() != before {
				t.Fatal("Setup installed a provider")
			}
			ctx, span := otel.Tracer("t").Start(context.Background(), "s")
			defer span.End()
			if span.IsRecording() || Inject(ctx) != nil || TraceID(ctx) != "" {
				t.Fatal("a span of tracing off records or carries a context")
			}
		})
	}
}

func TestBadEnvironment(t *testing.T) {
	if _, err := Setup(context.Background(), Config{Getenv: envOf(map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"})}); !errors.Is(err, ErrExporter) {
		t.Fatalf("exporter zipkin: %v", err)
	}
	if _, err := Setup(context.Background(), Config{Getenv: envOf(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
		"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})}); !errors.Is(err, ErrProtocol) {
		t.Fatalf("protocol http/json: %v", err)
	}
}

// exportOne starts a trace under a remote parent (as a message's
// trace_context carries it), ends two spans and shuts tracing down, which
// exports them.
func exportOne(t *testing.T, env map[string]string) (parent string, childTrace map[string]string) {
	t.Helper()
	// The exporters read the process's environment themselves.
	for k, v := range env {
		t.Setenv(k, v)
	}
	tr, err := Setup(context.Background(), Config{ServiceName: "qlc-test", InstanceID: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("tracing is off")
	}
	remote := map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	ctx := Extract(context.Background(), remote)
	ctx, root := otel.Tracer("t").Start(ctx, "root", trace.WithSpanKind(trace.SpanKindServer))
	_, child := otel.Tracer("t").Start(ctx, "child")
	childTrace = Inject(ctx)
	child.End()
	root.End()
	ctx2, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tr.Shutdown(ctx2); err != nil {
		t.Fatal(err)
	}
	return root.SpanContext().SpanID().String(), childTrace
}

func checkExported(t *testing.T, r *Receiver, rootID string, tc map[string]string) {
	t.Helper()
	spans := r.Spans()
	if len(spans) != 2 {
		t.Fatalf("got %d spans, want 2: %+v", len(spans), spans)
	}
	const traceID = "0af7651916cd43dd8448eb211c80319c"
	if TraceIDOf(tc) != traceID {
		t.Errorf("Inject wrote %v", tc)
	}
	for _, s := range spans {
		if s.TraceID != traceID || s.Service != "qlc-test" || s.Instance != "node-1" {
			t.Errorf("span %+v", s)
		}
		switch s.Name {
		case "root":
			if s.ParentID != "b7ad6b7169203331" || s.Kind != "server" {
				t.Errorf("root's parent %q kind %q", s.ParentID, s.Kind)
			}
		case "child":
			if s.ParentID != rootID {
				t.Errorf("child's parent %q, want %q", s.ParentID, rootID)
			}
		}
	}
}

// OTLP over HTTP (protobuf): the standard variables point the exporter at
// a receiver; spans keep the remote parent's trace id.
func TestExportOverHTTP(t *testing.T) {
	r := &Receiver{}
	srv := httptest.NewServer(r)
	defer srv.Close()
	rootID, tc := exportOne(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
	checkExported(t, r, rootID, tc)
}

// OTLP over gRPC, to an in-process TraceService.
func TestExportOverGRPC(t *testing.T) {
	r := &Receiver{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(gs, r)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	rootID, tc := exportOne(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + lis.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_INSECURE": "true"})
	checkExported(t, r, rootID, tc)
}

func TestTraceIDOf(t *testing.T) {
	for tc, want := range map[string]string{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01": "0af7651916cd43dd8448eb211c80319c",
		"00-00000000000000000000000000000000-b7ad6b7169203331-01": "",
		"garbage": "",
		"":        "",
	} {
		if got := TraceIDOf(map[string]string{"traceparent": tc}); got != want {
			t.Errorf("TraceIDOf(%q) = %q, want %q", tc, got, want)
		}
	}
}
