package stagework

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func parseEstimateConfig(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func declaredEstimate(t *testing.T, c *Config, profile string, queryTokens int) RunEstimate {
	t.Helper()
	p, err := c.Profile(profile)
	if err != nil {
		t.Fatal(err)
	}
	return EstimateRun(p, queryTokens, c.DeclaredPerf, c.Price)
}

func near(got, want time.Duration) bool {
	return math.Abs(float64(got-want)) <= float64(time.Microsecond)
}

// A chain's answer starts after three whole stages and its first token's
// wait; the cost adds each stage's prompt (the question, the framing, the
// earlier outputs) and output at the file's prices.
func TestEstimateChain(t *testing.T) {
	c := parseEstimateConfig(t, `
providers:
  sim: {kind: sim, sim: {ttft: 10ms, itl: 1ms, output_tokens: 50}}
profiles:
  chain:
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
prices:
  g: {input: 1, output: 2}
`)
	est := declaredEstimate(t, c, "chain", 30)
	stage := 10*time.Millisecond + 49*time.Millisecond
	if !near(est.AnswerTTFT, 3*stage+10*time.Millisecond) || !near(est.Duration, 4*stage) {
		t.Fatalf("chain: answer TTFT %v, duration %v; want %v, %v", est.AnswerTTFT, est.Duration, 3*stage+10*time.Millisecond, 4*stage)
	}
	if est.OutputTokens != 200 || est.Basis != "declared" {
		t.Fatalf("chain: %+v", est)
	}
	// Prompts: 30+120, then +50, +100, +150 of earlier outputs.
	if est.PromptTokens != 4*150+300 {
		t.Fatalf("prompt tokens %d, want %d", est.PromptTokens, 4*150+300)
	}
	if want := (150*1.0 + 50*2.0) / 1e6; math.Abs(est.CostUSD-want) > 1e-12 {
		t.Fatalf("cost %v, want %v (only g has a price)", est.CostUSD, want)
	}
}

// Parallel steps overlap: a Mixture-of-Agents' aggregator starts when its
// slowest proposer ends — unless that one has a deadline and enough
// others finished (then at the deadline) — and the max_tokens cap applies.
func TestEstimateParallel(t *testing.T) {
	const file = `
providers:
  fast: {kind: sim, sim: {ttft: 10ms, itl: 1ms, output_tokens: 100}}
  slow: {kind: sim, sim: {ttft: 200ms, itl: 10ms, output_tokens: 100}}
profiles:
  moa:
    strategy: moa
    provider: fast
    proposers: [{model: a}, {model: b}, {provider: slow, model: s}]
    aggregator: {model: agg, max_tokens: 21}
    %s
`
	c := parseEstimateConfig(t, fmt.Sprintf(file, ""))
	est := declaredEstimate(t, c, "moa", 10)
	slowEnd := 200*time.Millisecond + 99*10*time.Millisecond
	aggOut := 0.95 * 21 // a model asked to be brief ends a little under its cap
	if want := slowEnd + 10*time.Millisecond; !near(est.AnswerTTFT, want) {
		t.Fatalf("moa: answer TTFT %v, want %v (after the slowest proposer)", est.AnswerTTFT, want)
	}
	if want := slowEnd + 10*time.Millisecond + time.Duration((aggOut-1)*float64(time.Millisecond)); !near(est.Duration, want) {
		t.Fatalf("moa: duration %v, want %v", est.Duration, want)
	}
	c = parseEstimateConfig(t, fmt.Sprintf(file, "min_proposers: 2\n    step_deadline: 300ms"))
	est = declaredEstimate(t, c, "moa", 10)
	if want := 300*time.Millisecond + 10*time.Millisecond; !near(est.AnswerTTFT, want) {
		t.Fatalf("moa with a deadline: answer TTFT %v, want %v (the straggler is cut at its deadline)", est.AnswerTTFT, want)
	}
}

// A vote's tally calls no model: the answer is there when the samples (and
// the judge) are; a model's telemetry replaces what the file declares.
func TestEstimateVoteAndTelemetry(t *testing.T) {
	c := parseEstimateConfig(t, `
providers:
  sim: {kind: sim, sim: {ttft: 10ms, itl: 1ms, output_tokens: 20}}
profiles:
  vote:
    strategy: vote
    provider: sim
    samples: [{model: a}, {model: a}, {model: a}]
    method: majority
`)
	p, _ := c.Profile("vote")
	est := EstimateRun(p, 5, c.DeclaredPerf, c.Price)
	if want := 10*time.Millisecond + 19*time.Millisecond; !near(est.AnswerTTFT, want) || !near(est.Duration, want) {
		t.Fatalf("vote: %v %v, want both %v", est.AnswerTTFT, est.Duration, want)
	}
	measured := func(sp StageSpec) ModelPerf {
		return ModelPerf{TTFT: 100 * time.Millisecond, ITL: 2 * time.Millisecond, OutputTokens: 11, Basis: "telemetry"}
	}
	est = EstimateRun(p, 5, measured, c.Price)
	if want := 120 * time.Millisecond; !near(est.AnswerTTFT, want) || est.Basis != "telemetry" {
		t.Fatalf("vote on telemetry: %v %q, want %v", est.AnswerTTFT, est.Basis, want)
	}
}

// ttft_budget needs hedge (and so a fallback); the error names the field.
func TestTTFTBudgetNeedsHedge(t *testing.T) {
	_, err := ParseConfig([]byte(`
providers:
  sim: {kind: sim}
profiles:
  p:
    provider: sim
    stages: {generator: {model: g, ttft_budget: 1s}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`))
	if err == nil || !strings.Contains(err.Error(), "generator.ttft_budget") {
		t.Fatalf("err = %v, want one naming generator.ttft_budget", err)
	}
	c := parseEstimateConfig(t, `
providers:
  sim: {kind: sim}
profiles:
  p:
    provider: sim
    stages: {generator: {model: g, hedge: true, ttft_budget: 1s, fallback: {model: h}}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`)
	if p, _ := c.Profile("p"); p.Stages[0].TTFTBudget != time.Second {
		t.Fatalf("ttft_budget: %v", p.Stages[0].TTFTBudget)
	}
}
