// Package sim is QLC's built-in simulated model: a stagework.Provider that
// streams a plausible, stage-shaped answer about the question (a draft, a
// refinement, a validation report, a curated answer), deterministically for a
// seed, with configurable latency and injected faults (errors of every kind,
// cut streams, hangs and stalls). It needs no network, so `make run`, the
// tests, the benchmarks and the chaos suite work without any model.
//
// Its configuration, stagework.SimConfig, is part of the profile file's
// schema and lives in stagework; this package imports stagework, never the
// other way round. Package actors builds one Provider per endpoint of kind
// "sim" (stagework.KindSim).
package sim
