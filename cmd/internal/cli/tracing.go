package cli

import (
	"context"
	"log/slog"
	"time"

	"github.com/qlc-project/qlc/internal/tracing"
)

// StartTracing turns OpenTelemetry tracing on when the standard OTEL_*
// variables ask for it (internal/tracing), as service (qlc-node,
// qlc-gateway) with instance as service.instance.id. The returned stop
// flushes the spans still queued (at most 5 s); with tracing off both do
// nothing.
func StartTracing(service, instance string, logger *slog.Logger) (stop func(), err error) {
	t, err := tracing.Setup(context.Background(), tracing.Config{ServiceName: service, InstanceID: instance, Logger: logger})
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
