package actors

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/stagework"
)

// tracer starts this package's spans: a run's coordinator ("qlc.run"), its
// steps ("qlc.step"), each attempt of a step after the first
// ("qlc.attempt": retries, fallbacks and hedges are siblings under their
// step, with the reason; a first attempt is its provider call alone),
// each provider call ("chat {model}", the GenAI client span), the
// placement of a run, and limiter and tokenizer requests. Through
// OpenTelemetry's global provider: a no-op until internal/tracing's Setup
// installs one. No span is ever started per token.
var tracer = tracing.NewTracer("github.com/qlc-project/qlc/actors")

// QLC's own span attributes (the GenAI ones come from semconv).
const (
	attrRunID         = attribute.Key("qlc.run.id")
	attrTenant        = attribute.Key("qlc.tenant")
	attrProfile       = attribute.Key("qlc.profile")
	attrStrategy      = attribute.Key("qlc.strategy")
	attrEpoch         = attribute.Key("qlc.run.epoch")
	attrStep          = attribute.Key("qlc.step")
	attrStage         = attribute.Key("qlc.stage")
	attrAttempt       = attribute.Key("qlc.attempt.number")
	attrAttemptKind   = attribute.Key("qlc.attempt.kind")   // first, retry, fallback, hedge
	attrAttemptReason = attribute.Key("qlc.attempt.reason") // why this attempt was made
	attrNode          = attribute.Key("qlc.node")
	attrOutcome       = attribute.Key("qlc.outcome")
)

// attempt kinds (attrAttemptKind).
const (
	attemptFirst    = "first"
	attemptRetry    = "retry"
	attemptFallback = "fallback"
	attemptHedge    = "hedge"
)

// genAIRequest are the GenAI request attributes of a chat call.
func genAIRequest(provider string, req stagework.Request) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.GenAIOperationNameChat,
		semconv.GenAIProviderNameKey.String(provider),
		semconv.GenAIRequestModel(req.Model),
	}
	if req.MaxTokens > 0 {
		attrs = append(attrs, semconv.GenAIRequestMaxTokens(req.MaxTokens))
	}
	if req.Temperature != 0 {
		attrs = append(attrs, semconv.GenAIRequestTemperature(req.Temperature))
	}
	return attrs
}

// endSpan ends *sp, if open, and forgets it: errType "" is a success (an
// outcome, if any, is recorded as qlc.outcome), else error.type is set
// and the status is an error with msg.
func endSpan(sp *trace.Span, errType, msg string) {
	s := *sp
	if s == nil {
		return
	}
	*sp = nil
	if !s.IsRecording() {
		s.End()
		return
	}
	switch {
	case errType != "":
		s.SetAttributes(semconv.ErrorTypeKey.String(errType))
		s.SetStatus(codes.Error, msg)
	case msg != "":
		s.SetAttributes(attrOutcome.String(msg))
	}
	s.End()
}

// noSpan stands for every span with tracing off: OpenTelemetry's no-op span.
var noSpan = trace.SpanFromContext(context.Background())

// spanOn reports whether tracing is on: a call site with attributes to
// build skips building them when it is not (one atomic load), so tracing
// off costs no allocation.
func spanOn() bool { return tracing.Enabled() }

// startSpan starts a span under parent (context.Background() when nil).
func startSpan(parent context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	if parent == nil {
		parent = context.Background()
	}
	return tracer.Start(parent, name, opts...)
}
