// Package ops holds what a QLC process offers its operators beside
// /healthz, /readyz and /metrics on its ops listener (never on a public
// address): the net/http/pprof profiles (WithPprof), and a flight recorder
// (FlightRecorder) that keeps the last seconds of an execution trace
// (runtime/trace) and writes them to a file when a run is slow.
//
// The flight recorder's life cycle:
//
//  1. NewFlightRecorder(cfg) starts the trace window (only one per process;
//     nothing runs when every threshold is 0).
//  2. The run machinery tells it each run's time to first token
//     (FirstToken) and each completed stage's duration (StageDone); these
//     never block: a value above its threshold wakes the writer goroutine.
//  3. The writer snapshots the window into cfg.Dir (at most one file per
//     cfg.MinInterval, the newest cfg.Keep files kept) and counts it in
//     qlc_flight_recordings_total{reason}.
//  4. Close stops the writer and the trace window; it is idempotent.
package ops
