package stagework

import (
	"slices"
	"time"
)

// ModelPerf is what an estimate assumes of one step's model: its time to
// first token, its time per further output token and how many tokens it
// writes, from live telemetry or, without enough samples, from the
// profiles file (DeclaredPerf).
type ModelPerf struct {
	TTFT time.Duration
	// ITL is the mean time per output token after the first.
	ITL time.Duration
	// OutputTokens is how many tokens an answer has (capped at the step's
	// max_tokens by EstimateRun); 0: the step's max_tokens.
	OutputTokens float64
	// Basis is "telemetry" or "declared".
	Basis string
}

// Assumed performance of a model QLC knows nothing of yet (an OpenAI-
// compatible endpoint before its first attempt): a mid-size hosted model.
const (
	AssumedTTFT = 800 * time.Millisecond
	AssumedITL  = 25 * time.Millisecond
)

// promptOverheadTokens approximates a prompt's system text and framing
// beyond the question and the outputs it shows.
const promptOverheadTokens = 120

// DeclaredPerf is step sp's model as the profiles file declares it: a
// simulated model's ttft, itl and output_tokens; for others AssumedTTFT,
// AssumedITL and the step's max_tokens.
func (c *Config) DeclaredPerf(sp StageSpec) ModelPerf {
	pc, ok := c.Providers[sp.Provider]
	if ok && pc.Kind == "sim" {
		out := pc.Sim.OutputTokens
		if out == 0 {
			out = DefaultSimOutputTokens
		}
		return ModelPerf{TTFT: pc.Sim.TTFT, ITL: pc.Sim.ITL, OutputTokens: float64(out), Basis: "declared"}
	}
	return ModelPerf{TTFT: AssumedTTFT, ITL: AssumedITL, Basis: "declared"}
}

// RunEstimate is a run's predicted latency and cost, before it starts.
type RunEstimate struct {
	// AnswerTTFT is from the run's start to the answer's first token (the
	// final step's), Duration to its last.
	AnswerTTFT, Duration time.Duration
	PromptTokens         int64
	OutputTokens         int64
	// CostUSD is at the file's prices; steps whose model has none count 0.
	CostUSD float64
	// Basis is "telemetry" when every model step's numbers came from
	// telemetry, "declared" when none did, else "mixed".
	Basis string
}

// EstimateRun predicts a run of p for a question of queryTokens tokens:
// every step starts when its inputs have finished (the MinInputs-th
// finished input at the earliest; an input with a deadline counts until
// its deadline at the latest), takes its model's TTFT plus ITL for each
// further token, and reads its inputs' outputs. A tally step calls no
// model. perf says what each step's model does (live telemetry, else
// DeclaredPerf); price returns a model's price, if any.
func EstimateRun(p *Profile, queryTokens int, perf func(StageSpec) ModelPerf, price func(model string) (Price, bool)) RunEstimate {
	type done struct {
		start, firstToken, finish time.Duration
		out                       float64
	}
	steps := map[string]done{}
	var est RunEstimate
	telemetry, declared := 0, 0
	for i, sp := range p.Stages {
		inputs := sp.Inputs
		if len(inputs) == 0 && p.IsChain() && i > 0 {
			inputs = []string{p.Stages[i-1].StepID()}
		}
		var start time.Duration
		var finishes []time.Duration
		for _, in := range inputs {
			d, ok := steps[in]
			if !ok {
				continue
			}
			finishes = append(finishes, d.finish)
			eff := d.finish
			if in, ok := p.Step(in); ok && in.Deadline > 0 {
				eff = min(eff, d.start+in.Deadline)
			}
			start = max(start, eff)
		}
		if k := sp.MinInputs; k > 0 && k <= len(finishes) {
			slices.Sort(finishes)
			start = max(start, finishes[k-1])
		}
		var prompt float64
		for _, id := range p.Reads(sp.StepID()) {
			prompt += steps[id].out
		}
		if p.IsChain() { // a chain stage's prompt shows every earlier output
			prompt = 0
			for _, prev := range p.Stages[:i] {
				prompt += steps[prev.StepID()].out
			}
		}
		if sp.Stage == StageTally {
			// No model: the chosen answer, as long as the answers it reads.
			var out float64
			for _, id := range p.Reads(sp.StepID()) {
				out = max(out, steps[id].out)
			}
			steps[sp.StepID()] = done{start: start, firstToken: start, finish: start, out: out}
			if sp.Final {
				est.AnswerTTFT, est.Duration = start, start
			}
			continue
		}
		m := perf(sp)
		if m.Basis == "telemetry" {
			telemetry++
		} else {
			declared++
		}
		out := m.OutputTokens
		if sp.MaxTokens > 0 && (out <= 0 || out > float64(sp.MaxTokens)) {
			// A model asked to be brief ends a little under its limit.
			out = 0.95 * float64(sp.MaxTokens)
		}
		out = max(out, 1)
		first := start + m.TTFT
		finish := first + time.Duration(float64(m.ITL)*(out-1))
		steps[sp.StepID()] = done{start: start, firstToken: first, finish: finish, out: out}
		in := int64(queryTokens) + promptOverheadTokens + int64(prompt)
		est.PromptTokens += in
		est.OutputTokens += int64(out)
		if pr, ok := price(sp.Model); ok {
			est.CostUSD += pr.Cost(Usage{PromptTokens: in, CompletionTokens: int64(out)})
		}
		if sp.Final || i == len(p.Stages)-1 {
			est.AnswerTTFT, est.Duration = first, finish
		}
	}
	switch {
	case declared == 0 && telemetry > 0:
		est.Basis = "telemetry"
	case telemetry == 0:
		est.Basis = "declared"
	default:
		est.Basis = "mixed"
	}
	return est
}
