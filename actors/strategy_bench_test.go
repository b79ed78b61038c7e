package actors

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// stepTimes are a step's times as its events record them (RunEvent.time,
// set by the coordinator as each event enters the log).
type stepTimes struct{ start, first, done time.Time }

func timesOf(evs []*messages.RunEvent) map[string]*stepTimes {
	out := map[string]*stepTimes{}
	get := func(id string) *stepTimes {
		if out[id] == nil {
			out[id] = &stepTimes{}
		}
		return out[id]
	}
	for _, ev := range evs {
		at := ev.GetTime().AsTime()
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			get(stepOf(k.StageStarted.Step, k.StageStarted.Stage)).start = at
		case *messages.RunEvent_TokenDelta:
			if s := get(stepOf(k.TokenDelta.Step, k.TokenDelta.Stage)); s.first.IsZero() {
				s.first = at
			}
		case *messages.RunEvent_StageCompleted:
			get(stepOf(k.StageCompleted.Step, k.StageCompleted.Stage)).done = at
		}
	}
	return out
}

// benchEngine starts an engine on stages' profiles and providers, shut
// down when the benchmark ends.
func benchEngine(b *testing.B, stages *stagework.Config) *Engine {
	b.Helper()
	providers, err := BuildProviders(stages, testLogger(b))
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Stages, cfg.Providers, cfg.Logger, cfg.Registerer = stages, providers, testLogger(b), prometheus.NewRegistry()
	e, err := NewEngine(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Shutdown(context.Background()) })
	return e
}

// BenchmarkMoAWallTime runs the built-in `moa` profile (three proposers on
// three simulated models of different speeds, then an aggregator; the
// latencies `make run` shows) and compares each run's wall time (first
// event to RunCompleted) with the slowest proposer's own duration plus the
// aggregator's: the goal is ≤ 5 % above, the proposers running fully in
// parallel. Reported: overhead_% (worst run), overlap_ms (the time all
// three proposers streamed at once, least over runs), wall_s.
func BenchmarkMoAWallTime(b *testing.B) {
	cfg := DefaultConfig()
	e := benchEngine(b, cfg.Stages)
	p, _ := cfg.Stages.Profile("moa")
	var proposers []string
	for _, sp := range p.Stages {
		if sp.Stage == stagework.StageProposer {
			proposers = append(proposers, sp.StepID())
		}
	}
	var overheads, overlaps, walls []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "moa", Query: "How do I choose a database index?", Seed: int64(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := h.WaitDone(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		evs := h.Events(1)
		if terminal(evs).GetRunCompleted() == nil {
			b.Fatalf("run ended %v", terminal(evs))
		}
		ts := timesOf(evs)
		wall := terminal(evs).GetTime().AsTime().Sub(evs[0].GetTime().AsTime())
		var slowest time.Duration
		lastFirst, firstDone := time.Time{}, time.Time{}
		for _, id := range proposers {
			t := ts[id]
			slowest = max(slowest, t.done.Sub(t.start))
			if t.first.After(lastFirst) {
				lastFirst = t.first
			}
			if firstDone.IsZero() || t.done.Before(firstDone) {
				firstDone = t.done
			}
		}
		agg := ts["aggregator"]
		ideal := slowest + agg.done.Sub(agg.start)
		overheads = append(overheads, 100*(wall.Seconds()-ideal.Seconds())/ideal.Seconds())
		overlaps = append(overlaps, float64(firstDone.Sub(lastFirst).Milliseconds()))
		walls = append(walls, wall.Seconds())
	}
	b.StopTimer()
	b.ReportMetric(slices.Max(overheads), "overhead_%")
	b.ReportMetric(slices.Min(overlaps), "overlap_ms")
	b.ReportMetric(slices.Max(walls), "wall_s")
}

// BenchmarkStragglerDeadline: a moa run with min_proposers 2 of 3, one
// proposer stalled for good (the simulator's hang) and a step deadline of
// 500 ms: the aggregator must start once the deadline has passed and the
// two others have finished, and the run complete. Reported: late_ms, how
// long after the later of (the stalled proposer's deadline, the second
// answer) the aggregator started (worst run).
func BenchmarkStragglerDeadline(b *testing.B) {
	stages, err := stagework.ParseConfig([]byte(`
providers:
  quick: {kind: sim, sim: {itl: 1ms, output_tokens: 100}}
  hang:  {kind: sim, sim: {output_tokens: 100, hang_rate: 1}}
profiles:
  straggler:
    strategy: moa
    provider: quick
    proposers: [{model: a}, {provider: hang, model: stuck}, {model: c}]
    aggregator: {model: d}
    min_proposers: 2
    step_deadline: 500ms
`))
	if err != nil {
		b.Fatal(err)
	}
	e := benchEngine(b, stages)
	var late []float64
	for i := 0; i < b.N; i++ {
		h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "straggler", Query: "q", Seed: int64(i + 1)})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := h.WaitDone(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		evs := h.Events(1)
		if terminal(evs).GetRunCompleted() == nil {
			b.Fatalf("run ended %v", terminal(evs))
		}
		ts := timesOf(evs)
		due := ts["p1.2"].start.Add(500 * time.Millisecond)
		for _, id := range []string{"p1.1", "p1.3"} {
			if ts[id].done.After(due) {
				due = ts[id].done
			}
		}
		late = append(late, float64(ts["aggregator"].start.Sub(due).Microseconds())/1000)
	}
	b.ReportMetric(slices.Max(late), "late_ms")
}
