package actors

import (
	"context"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// estimateProfiles: every strategy on simulated models with jitter in
// their latencies and lengths (as real models vary), fast enough for a
// benchmark.
const estimateProfiles = `
providers:
  sim:  {kind: sim, sim: {ttft: 30ms, ttft_jitter: 10ms, itl: 1ms, itl_jitter: 500us, output_tokens: 80, output_tokens_jitter: 20}}
  slow: {kind: sim, sim: {ttft: 60ms, ttft_jitter: 20ms, itl: 2ms, itl_jitter: 1ms, output_tokens: 60, output_tokens_jitter: 20}}
profiles:
  chain:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {provider: slow, model: c}}
  moa:
    strategy: moa
    provider: sim
    proposers: [{model: a}, {model: b}, {provider: slow, model: s}]
    aggregator: {model: agg}
  council:
    strategy: council
    provider: sim
    members: [{model: a}, {model: b}, {provider: slow, model: s}]
    chairman: {model: agg}
  vote:
    strategy: vote
    provider: sim
    samples: [{model: a}, {model: b}, {provider: slow, model: s}]
    method: majority
`

// BenchmarkEstimateError measures the run estimate against what happens:
// for each strategy, runs warm the telemetry up, then each run's estimate
// (made at admission, as the run resource shows it) is compared with its
// answer's first token and its end, measured from StartRun. It reports the
// median and p90 absolute percentage error (goal: median ≤ 15 %). Run it
// once: go test ./actors -run '^$' -bench BenchmarkEstimateError -benchtime 1x
func BenchmarkEstimateError(b *testing.B) {
	for _, strategy := range []string{"chain", "moa", "council", "vote"} {
		b.Run(strategy, func(b *testing.B) {
			e, _, _ := newProfileEngine(b, estimateProfiles, nil)
			run := func(seed int64) (est stagework.RunEstimate, ttft, total time.Duration) {
				t0 := time.Now()
				h, err := e.StartRun(RunRequest{Tenant: "t", Profile: strategy, Query: "How do vector clocks order events in a distributed system?", Seed: seed})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				sub := h.Subscribe(1)
				defer sub.Close()
				final := finalStep(e, strategy)
				for total == 0 {
					evs, err := sub.Next(ctx, nil)
					if err != nil {
						b.Fatal(err)
					}
					for _, ev := range evs {
						if d := ev.GetTokenDelta(); d != nil && ttft == 0 && (d.Step == final || (d.Step == "" && stageName(d.Stage) == final)) {
							ttft = time.Since(t0)
						}
						if ev.GetRunCompleted() != nil {
							total = time.Since(t0)
						}
						if ev.GetRunFailed() != nil {
							b.Fatalf("run failed: %v", ev.GetRunFailed())
						}
					}
				}
				pe := h.Estimate()
				return stagework.RunEstimate{AnswerTTFT: pe.GetAnswerTtft().AsDuration(), Duration: pe.GetDuration().AsDuration(), Basis: pe.GetBasis()}, ttft, total
			}
			for s := int64(1); s <= 6; s++ { // warm-up: 6 attempts of each model
				run(s)
			}
			time.Sleep(statsMaxAge + 100*time.Millisecond)
			e.cachedModelStats() // starts the refresh
			for deadline := time.Now().Add(5 * time.Second); time.Since(e.statsAt()) > statsMaxAge && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
			var ttftErr, totalErr []float64
			for s := int64(100); s < 120; s++ {
				est, ttft, total := run(s)
				if est.Basis != "telemetry" {
					b.Fatalf("seed %d: estimate from %q, want telemetry after the warm-up", s, est.Basis)
				}
				ttftErr = append(ttftErr, ape(est.AnswerTTFT, ttft))
				totalErr = append(totalErr, ape(est.Duration, total))
			}
			b.ReportMetric(quantile(ttftErr, 0.5), "ttft-median-ape-%")
			b.ReportMetric(quantile(ttftErr, 0.9), "ttft-p90-ape-%")
			b.ReportMetric(quantile(totalErr, 0.5), "total-median-ape-%")
			b.ReportMetric(quantile(totalErr, 0.9), "total-p90-ape-%")
		})
	}
}

// finalStep is the id of the step whose output is the profile's answer.
func finalStep(e *Engine, profile string) string {
	p, _ := e.Stages().Profile(profile)
	for _, sp := range p.Stages {
		if sp.Final {
			return sp.StepID()
		}
	}
	return p.Stages[len(p.Stages)-1].StepID()
}

func ape(predicted, actual time.Duration) float64 {
	return 100 * math.Abs(float64(predicted-actual)) / float64(actual)
}

func quantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}
