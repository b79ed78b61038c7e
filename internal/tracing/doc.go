// Package tracing sets up OpenTelemetry tracing for a QLC process from the
// standard environment variables, and carries trace context across the
// actor messages that cross nodes.
//
// Life cycle:
//
//  1. A main package calls Setup once, before it starts serving. With no
//     OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
//     OTEL_TRACES_EXPORTER=otlp in the environment (or with
//     OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none) tracing is off:
//     no exporter, no global provider, OpenTelemetry's no-op tracer, and
//     Inject returns nil, so no message carries a trace context. Exception:
//     Config.Processors (the cluster console's span store) turn tracing on
//     without an exporter, their spans recorded in the process only (not
//     with OTEL_SDK_DISABLED=true).
//  2. Otherwise Setup builds an OTLP exporter (OTEL_EXPORTER_OTLP_PROTOCOL or
//     OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf", the default, or
//     "grpc"), a batch span processor (OTEL_BSP_*; batcher.go, which wakes its goroutine once per batch, not per span), the sampler
//     (OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG; the SDK's default is
//     parentbased_always_on) and the resource (service.name,
//     service.instance.id, OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME), and
//     installs them as OpenTelemetry's globals with the W3C trace-context and
//     baggage propagators. The exporter itself reads the rest of the
//     OTEL_EXPORTER_OTLP_* variables (headers, timeout, TLS, compression).
//     With OTLP over HTTP and nothing else recording spans, the provider
//     is QLC's own (compact.go: compact spans, written to OTLP protobuf by
//     otlp.go) rather than the SDK's, which cost ~3× the CPU a span here;
//     the SDK's stays for gRPC, the span store, TLS certificate and span
//     limit variables, and QLC_TRACING_SDK=true (newCompact).
//  3. Packages start spans from otel.Tracer; Inject and Extract move a span's
//     context through a message's trace_context map (W3C traceparent and
//     tracestate).
//  4. Shutdown flushes the spans still queued and stops the exporter.
//
// GenAI attribute names come from the semantic conventions as the Go module
// go.opentelemetry.io/otel/semconv/v1.41.0 defines them (v1.42.0 dropped the
// GenAI constants). Prompt and answer text are recorded only when
// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true (CaptureContent).
package tracing
