package stagework

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// The cost/quality optimiser. A profile's steps may list candidate models,
// each with a quality tier and a price (Candidate); a request may set a
// Budget: a cost cap, a latency cap and a quality floor. Optimise picks
// for each step with candidates the cheapest healthy candidate that meets
// the floor, makes the run fit its latency cap by moving steps to faster
// candidates, and checks the predicted cost against the cap: over it, the
// run is refused (a *BudgetError naming the cap and the estimate) or, with
// Budget.Downgrade, moved one step at a time to cheaper candidates until
// it fits, each move recorded. It is a pure function of its inputs: the
// caller brings the telemetry (Perf, Health) and prices.

// ErrOverBudget is wrapped by every *BudgetError.
var ErrOverBudget = errors.New("stagework: over budget")

// Budget is what a request asks of a run's cost, latency and quality.
// The zero Budget asks nothing.
type Budget struct {
	// MaxCostUSD caps the run's cost in US dollars: a run predicted over
	// it is refused (or downgraded), and one whose real cost crosses it
	// leaves out its remaining optional steps. 0: no cap.
	MaxCostUSD float64
	// MaxLatency caps the run's predicted duration (the answer's last
	// token). 0: no cap.
	MaxLatency time.Duration
	// MinQuality is the quality floor (1..5) for every step with
	// candidates; 0: each step's default model's quality.
	MinQuality int
	// Downgrade lets a run predicted over MaxCostUSD run on cheaper
	// candidates (below the floor if it must) instead of being refused.
	Downgrade bool
}

// IsZero reports whether b asks nothing.
func (b Budget) IsZero() bool { return b == Budget{} }

// Validate checks a request's budget.
func (b Budget) Validate() error {
	switch {
	case math.IsNaN(b.MaxCostUSD) || math.IsInf(b.MaxCostUSD, 0) || b.MaxCostUSD < 0:
		return errors.New("max_cost_usd must be a finite number >= 0")
	case b.MaxLatency < 0:
		return errors.New("max_latency_ms must be >= 0")
	case b.MinQuality < 0 || b.MinQuality > MaxQuality:
		return fmt.Errorf("min_quality must be 1..%d (or low, medium, high)", MaxQuality)
	}
	return nil
}

// PlanInput is what Optimise decides from.
type PlanInput struct {
	// Profile is the profile the run was admitted for.
	Profile *Profile
	// QueryTokens is the question's (and history's) size in tokens.
	QueryTokens int
	// Perf is a step's model's predicted performance (live telemetry,
	// else declared): the step as it would run, its model set.
	Perf func(StageSpec) ModelPerf
	// Price is a model's price, if known (a model without one costs 0).
	Price func(model string) (Price, bool)
	// Health says why a model should be avoided now ("" when it is fine):
	// its endpoint's breaker is open, its p95 TTFT blew up. Nil: all fine.
	Health func(ModelRef) string
	Budget Budget
}

// Choice is the model a step runs on, and why: an event of the run
// (ModelChosen), either the optimiser's first pick for a step or a later
// change of it (a downgrade to fit the cost cap, or a faster model to fit
// the latency cap).
type Choice struct {
	Step     string
	Provider string
	Model    string
	Quality  int
	Reason   string
	// Downgraded marks a move to a cheaper, lower-quality candidate (or a
	// first pick below the floor) made to fit the cost cap.
	Downgraded bool
	// From is the model the step had before this change; empty for a
	// first pick.
	From        ModelRef
	FromQuality int
	// EstimateUSD is the run's predicted cost after this choice (the
	// last choice's is the run's).
	EstimateUSD float64
}

// Plan is Optimise's answer.
type Plan struct {
	// Profile is the profile with each step on its chosen model.
	Profile *Profile
	// Choices lists the choices in the order they were made: one first
	// pick per step with candidates (profile order), then each change.
	Choices []Choice
	// Estimate is the run's prediction on the chosen models.
	Estimate RunEstimate
}

// Models is the final model of every step with a choice.
func (p Plan) Models() map[string]ModelRef {
	out := map[string]ModelRef{}
	for _, c := range p.Choices {
		out[c.Step] = ModelRef{Provider: c.Provider, Model: c.Model}
	}
	return out
}

// BudgetError refuses a run its budget cannot pay for.
type BudgetError struct {
	// Code is over_cost_cap, over_latency_cap or no_candidate.
	Code string
	// CapUSD and EstimateUSD: the cost cap and the lowest estimate the
	// optimiser could reach (over_cost_cap).
	CapUSD, EstimateUSD float64
	// CapLatency and EstimateLatency: the latency cap and the lowest
	// estimate (over_latency_cap).
	CapLatency, EstimateLatency time.Duration
	// Step is the step no candidate fits (no_candidate).
	Step    string
	Message string
}

func (e *BudgetError) Error() string { return e.Message }

// Unwrap makes errors.Is(err, ErrOverBudget) true.
func (e *BudgetError) Unwrap() error { return ErrOverBudget }

// Optimise chooses the model of each step with candidates for a run under
// in.Budget (see the package comment above). A profile without candidates
// is only checked against the caps.
func Optimise(in PlanInput) (Plan, error) {
	p, b := in.Profile, in.Budget
	health := in.Health
	if health == nil {
		health = func(ModelRef) string { return "" }
	}
	cur := map[string]Candidate{} // the current pick of each step with candidates
	var plan Plan
	estimate := func(models map[string]Candidate) RunEstimate {
		refs := make(map[string]ModelRef, len(models))
		for id, c := range models {
			refs[id] = c.Ref()
		}
		return EstimateRun(p.WithModels(refs), in.QueryTokens, in.Perf, in.Price)
	}
	with := func(step string, c Candidate) RunEstimate {
		m := make(map[string]Candidate, len(cur)+1)
		for k, v := range cur {
			m[k] = v
		}
		m[step] = c
		return estimate(m)
	}
	// 1. First picks: the cheapest healthy candidate meeting the floor.
	for _, sp := range p.Stages {
		if len(sp.Candidates) == 0 {
			continue
		}
		id := sp.StepID()
		floor := b.MinQuality
		if floor == 0 {
			floor = defaultQuality(sp)
		}
		var ok []Candidate
		var avoided, below []string
		for _, c := range sp.Candidates {
			switch why := health(c.Ref()); {
			case why != "":
				avoided = append(avoided, fmt.Sprintf("%s (%s)", c.Model, why))
			case c.Quality < floor:
				below = append(below, fmt.Sprintf("%s (quality %d)", c.Model, c.Quality))
			default:
				ok = append(ok, c)
			}
		}
		note := ""
		if len(avoided) > 0 {
			note = "; avoided: " + strings.Join(avoided, ", ")
		}
		if len(ok) == 0 {
			healthy := slices.DeleteFunc(slices.Clone(sp.Candidates), func(c Candidate) bool { return health(c.Ref()) != "" })
			switch {
			case len(healthy) == 0:
				// Nothing is healthy: keep the default; its retries and
				// fallback deal with it as they would without candidates.
				def := candidateOf(sp)
				cur[id] = def
				plan.Choices = append(plan.Choices, Choice{Step: id, Provider: def.Provider, Model: def.Model, Quality: def.Quality,
					Reason: "every candidate is unhealthy: kept the default" + note})
			case b.Downgrade:
				best := slices.MaxFunc(healthy, func(x, y Candidate) int { return x.Quality - y.Quality })
				cur[id] = best
				plan.Choices = append(plan.Choices, Choice{Step: id, Provider: best.Provider, Model: best.Model, Quality: best.Quality, Downgraded: true,
					Reason: fmt.Sprintf("no healthy candidate meets quality %d: took the best, quality %d%s", floor, best.Quality, note)})
			default:
				return Plan{}, &BudgetError{Code: "no_candidate", Step: id, Message: fmt.Sprintf(
					"step %s has no healthy candidate of quality >= %d (below it: %s%s); lower min_quality, or allow \"on_budget\": \"downgrade\"",
					id, floor, strings.Join(below, ", "), note)}
			}
			continue
		}
		type priced struct {
			c    Candidate
			cost float64
			i    int
		}
		ps := make([]priced, len(ok))
		for i, c := range ok {
			ps[i] = priced{c, with(id, c).CostUSD, i}
		}
		best := slices.MinFunc(ps, func(x, y priced) int {
			switch {
			case x.cost != y.cost:
				return cmpFloat(x.cost, y.cost)
			case x.c.Quality != y.c.Quality:
				return y.c.Quality - x.c.Quality // the better of equally cheap
			}
			return x.i - y.i
		})
		cur[id] = best.c
		reason := fmt.Sprintf("cheapest of %d candidates with quality >= %d", len(ok), floor)
		if len(ok) == 1 {
			reason = fmt.Sprintf("the only candidate with quality >= %d", floor)
		}
		plan.Choices = append(plan.Choices, Choice{Step: id, Provider: best.c.Provider, Model: best.c.Model, Quality: best.c.Quality, Reason: reason + note})
	}
	est := estimate(cur)
	stamp := func() {
		for i := range plan.Choices {
			plan.Choices[i].EstimateUSD = est.CostUSD
		}
	}
	stamp()
	// steps lists the steps with candidates, in profile order.
	var steps []StageSpec
	for _, sp := range p.Stages {
		if len(sp.Candidates) > 0 {
			steps = append(steps, sp)
		}
	}
	move := func(sp StageSpec, to Candidate, next RunEstimate, reason string, down bool) {
		id := sp.StepID()
		from := cur[id]
		cur[id] = to
		est = next
		plan.Choices = append(plan.Choices, Choice{Step: id, Provider: to.Provider, Model: to.Model, Quality: to.Quality, Reason: reason,
			Downgraded: down, From: from.Ref(), FromQuality: from.Quality, EstimateUSD: est.CostUSD})
	}
	floorOf := func(sp StageSpec) int {
		if b.MinQuality > 0 {
			return b.MinQuality
		}
		return defaultQuality(sp)
	}
	// 2. Latency: move the step whose faster candidate (meeting the
	// floor, healthy) buys the most time per dollar, until the run fits.
	if b.MaxLatency > 0 {
		for est.Duration > b.MaxLatency {
			var bestSp StageSpec
			var bestC Candidate
			var bestE RunEstimate
			bestScore, found := math.Inf(1), false
			for _, sp := range steps {
				id := sp.StepID()
				for _, c := range sp.Candidates {
					if c.Ref() == cur[id].Ref() || c.Quality < floorOf(sp) || health(c.Ref()) != "" {
						continue
					}
					e := with(id, c)
					saved := float64(est.Duration - e.Duration)
					if saved <= 0 {
						continue
					}
					score := (e.CostUSD - est.CostUSD) / saved
					if score < bestScore {
						bestSp, bestC, bestE, bestScore, found = sp, c, e, score, true
					}
				}
			}
			if !found {
				break
			}
			move(bestSp, bestC, bestE, fmt.Sprintf("faster, to fit max_latency_ms %d (predicted %s)", b.MaxLatency.Milliseconds(), msString(bestE.Duration)), false)
		}
		if est.Duration > b.MaxLatency {
			return Plan{}, &BudgetError{Code: "over_latency_cap", CapLatency: b.MaxLatency, EstimateLatency: est.Duration, Message: fmt.Sprintf(
				"the run is predicted to take %s, over its cap max_latency_ms %d (profile %s, on the fastest healthy candidates meeting the quality floor)",
				msString(est.Duration), b.MaxLatency.Milliseconds(), p.Name)}
		}
	}
	// 3. Cost: over the cap, refuse, or downgrade one step at a time: the
	// move to a cheaper candidate that saves the most (and keeps the
	// latency cap), until the run fits.
	if b.MaxCostUSD > 0 && est.CostUSD > b.MaxCostUSD {
		first := est.CostUSD
		if !b.Downgrade {
			return Plan{}, &BudgetError{Code: "over_cost_cap", CapUSD: b.MaxCostUSD, EstimateUSD: est.CostUSD, Message: fmt.Sprintf(
				"the run's estimated cost $%s is over its cap max_cost_usd $%s (profile %s%s); raise the cap, lower min_quality, or allow \"on_budget\": \"downgrade\"",
				usd(est.CostUSD), usd(b.MaxCostUSD), p.Name, candidatesNote(steps))}
		}
		for est.CostUSD > b.MaxCostUSD {
			var bestSp StageSpec
			var bestC Candidate
			var bestE RunEstimate
			found := false
			for _, sp := range steps {
				id := sp.StepID()
				// The next cheaper candidate of this step: the dearest of
				// those cheaper than its current one (one notch down).
				var next *Candidate
				var nextE RunEstimate
				for _, c := range sp.Candidates {
					if c.Ref() == cur[id].Ref() || health(c.Ref()) != "" {
						continue
					}
					e := with(id, c)
					if e.CostUSD >= est.CostUSD || (b.MaxLatency > 0 && e.Duration > b.MaxLatency) {
						continue
					}
					if next == nil || e.CostUSD > nextE.CostUSD {
						c := c
						next, nextE = &c, e
					}
				}
				if next == nil {
					continue
				}
				if !found || nextE.CostUSD < bestE.CostUSD ||
					(nextE.CostUSD == bestE.CostUSD && cur[id].Quality-next.Quality < cur[bestSp.StepID()].Quality-bestC.Quality) {
					bestSp, bestC, bestE, found = sp, *next, nextE, true
				}
			}
			if !found {
				return Plan{}, &BudgetError{Code: "over_cost_cap", CapUSD: b.MaxCostUSD, EstimateUSD: est.CostUSD, Message: fmt.Sprintf(
					"the run's estimated cost $%s is over its cap max_cost_usd $%s even downgraded as far as its candidates go (from $%s; profile %s%s)",
					usd(est.CostUSD), usd(b.MaxCostUSD), usd(first), p.Name, candidatesNote(steps))}
			}
			move(bestSp, bestC, bestE, fmt.Sprintf("downgraded to fit max_cost_usd $%s: saves $%s (run now $%s)",
				usd(b.MaxCostUSD), usd(est.CostUSD-bestE.CostUSD), usd(bestE.CostUSD)), true)
		}
	}
	refs := map[string]ModelRef{}
	for id, c := range cur {
		refs[id] = c.Ref()
	}
	plan.Profile = p.WithModels(refs)
	plan.Estimate = est
	return plan, nil
}

// defaultQuality is the quality of step sp's default model among its
// candidates (the floor when a request sets none).
func defaultQuality(sp StageSpec) int { return candidateOf(sp).Quality }

// candidateOf is sp's default model as a candidate.
func candidateOf(sp StageSpec) Candidate {
	for _, c := range sp.Candidates {
		if c.Provider == sp.Provider && c.Model == sp.Model {
			return c
		}
	}
	return Candidate{Provider: sp.Provider, Model: sp.Model}
}

func candidatesNote(steps []StageSpec) string {
	if len(steps) == 0 {
		return "; no step has candidates to choose from"
	}
	return ""
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// usd formats dollars with enough digits for small amounts.
func usd(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.6f", v)
}

func msString(d time.Duration) string { return fmt.Sprintf("%dms", d.Milliseconds()) }

// FormatUSD formats a dollar amount as messages do.
func FormatUSD(v float64) string { return usd(v) }
