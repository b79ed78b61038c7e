// Package spanstore keeps the last spans a process finished in a bounded
// in-process ring, so the cluster console (GET /console) can draw a run's
// trace as a waterfall without any OpenTelemetry collector.
//
// Life cycle:
//
//  1. New(max) makes a Store holding at most max spans (oldest dropped first).
//  2. The tracing setup registers it as an sdktrace.SpanProcessor
//     (internal/tracing Config.Processors): OnEnd copies each finished span's
//     few fields the console draws (ids, name, kind, times, status, at most
//     MaxAttributes attributes cut to MaxValueBytes) into the ring.
//  3. Trace(id) returns a trace's spans as messages.TraceSpan, for a node's
//     answer to TraceSpansQuery and the gateway's own.
//
// Cost: OnEnd takes one mutex and copies one span (no allocation of the
// ring itself after New); spans are per run, step, attempt and request,
// never per token. Memory: about 1 KiB per span at most, so the default
// 4096 spans is a few MiB at worst.
package spanstore
