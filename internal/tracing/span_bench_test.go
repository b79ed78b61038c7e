package tracing

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// BenchmarkSpan: one span started and ended with tracing on (sampling 1.0,
// batch export over OTLP/HTTP to a loopback server that discards), the unit
// of tracing's cost on a run's path.
func BenchmarkSpan(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	b.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	tr, err := Setup(context.Background(), Config{ServiceName: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	ctx, root := otel.Tracer("b").Start(context.Background(), "root")
	defer root.End()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_, s := otel.Tracer("b").Start(ctx, "span", trace.WithAttributes(attribute.String("k", "v"), attribute.Int("n", i)))
		s.End()
	}
}
