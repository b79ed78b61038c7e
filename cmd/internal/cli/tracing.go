package cli

import (
	"context"
	"flag"
	"log/slog"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/internal/spanstore"
	"github.com/qlc-project/qlc/internal/tracing"
)

// StartTracing turns OpenTelemetry tracing on when the standard OTEL_*
// variables ask for it (internal/tracing), as service (qlc-node,
// qlc-gateway) with instance as service.instance.id. store, if not nil,
// is the console's in-process span store: it gets every span, and tracing
// is on for it even without an exporter (-trace-store=0 passes nil). The
// returned stop flushes the spans still queued (at most 5 s); with tracing
// off both do nothing.
func StartTracing(service, instance string, logger *slog.Logger, store *spanstore.Store) (stop func(), err error) {
	cfg := tracing.Config{ServiceName: service, InstanceID: instance, Logger: logger}
	if store != nil {
		cfg.Processors = []sdktrace.SpanProcessor{store}
	}
	t, err := tracing.Setup(context.Background(), cfg)
	if err != nil {
		return func() {}, err
	}
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := t.Shutdown(ctx); err != nil {
			logger.Warn("tracing: flush at exit", "error", err)
		}
	}, nil
}

// TraceStoreFlag adds -trace-store (QLC_TRACE_STORE): how many finished
// spans the process keeps in memory for the cluster console's waterfall.
func TraceStoreFlag(fs *flag.FlagSet) *int {
	return fs.Int("trace-store", EnvInt("QLC_TRACE_STORE", 0),
		"finished spans kept in memory for the cluster console's trace waterfall, e.g. 4096 (no collector needed; tracing costs ~15 µs of CPU per span, ~17 spans a run); 0 = none, and tracing stays off unless OTEL_* asks for export (QLC_TRACE_STORE; make run sets 4096)")
}

// NewTraceStore makes the span store -trace-store asks for and hands its
// traces to the engine (actors.Config.TraceSpans); nil for n <= 0.
func NewTraceStore(n int, cfg *actors.Config) *spanstore.Store {
	if n <= 0 {
		return nil
	}
	s := spanstore.New(n)
	cfg.TraceSpans = s.Trace
	return s
}
