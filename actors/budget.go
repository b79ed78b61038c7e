package actors

import (
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// The cost/quality engine's glue: PlanRun runs the optimiser
// (stagework.Optimise) at admission with the cluster's live telemetry, the
// run carries its choices to its coordinator (StartRun.step_models, kept
// on failover), and the coordinator logs them (ModelChosen), runs its
// steps on them and stops the remaining optional steps once the run's real
// cost crosses its cap (budget.go's coordinator half below).

// blownFactor: a model whose live p95 TTFT is over this many times its
// declared (or assumed) TTFT is avoided by the optimiser.
const blownFactor = 4

// unhealthyErrorRate: a model that failed at least this share of at least
// unhealthyMinAttempts attempts in the telemetry window (cluster-wide) is
// avoided, as its breaker on the nodes that call it is likely open.
const (
	unhealthyErrorRate   = 0.5
	unhealthyMinAttempts = 4
)

// PlanRun chooses the models of the run's steps under req.Budget
// (stagework.Optimise, from the cluster's live model statistics, the
// profiles file's prices and declared latencies, and this process's
// breakers) and records the plan in req.Plan. A zero budget plans nothing
// (every step runs its profile's model). A run the budget cannot pay for
// gets a *stagework.BudgetError (errors.Is stagework.ErrOverBudget).
// StartRun calls it for a request not yet planned; the gateway calls it
// before admission, so a refused run reserves nothing.
func (e *Engine) PlanRun(req *RunRequest) error {
	if req.Budget.IsZero() || req.Plan != nil {
		return nil
	}
	if err := req.Budget.Validate(); err != nil {
		return err
	}
	p, err := e.profiles.resolve(req.Profile, req.ProfileDefinition) // the file's, or the tenant's own
	if err != nil {
		return err
	}
	p = withMaxTokens(p, req.MaxTokens)
	views := e.cachedModelStats()
	breakers := e.cachedBreakers()
	plan, err := stagework.Optimise(stagework.PlanInput{
		Profile:     p,
		QueryTokens: approxTokens(req.Query, req.History),
		Perf:        func(sp stagework.StageSpec) stagework.ModelPerf { return perfOf(e.cat.stages(), views, sp) },
		Price:       e.cat.stages().Price,
		Health:      func(m stagework.ModelRef) string { return e.modelHealth(views, breakers, m) },
		Budget:      req.Budget,
	})
	if err != nil {
		return err
	}
	req.Plan = &plan
	return nil
}

// modelHealth says why the optimiser should avoid model now: this
// process's breaker of its endpoint is open, or that of at least half the
// nodes that call the endpoint (breakers: the nodes' breakers as the
// cluster's model statistics carry them — the nodes run the stages, a
// gateway often calls no model itself), it failed most of its recent
// attempts cluster-wide, or its live p95 TTFT blew up (over blownFactor
// times what the profiles file declares). "" when it is fine.
func (e *Engine) modelHealth(views map[modelKey]ModelStatsView, breakers map[string]BreakerCount, m stagework.ModelRef) string {
	if g, ok := e.cat.providers()[m.Provider].(*stagework.Guarded); ok && g.State().String() == "open" {
		return "circuit breaker open"
	}
	if b := breakers[m.Provider]; b.Open > 0 && 2*b.Open >= b.Nodes {
		return fmt.Sprintf("circuit breaker open on %d of the %d nodes that call %s", b.Open, b.Nodes, m.Provider)
	}
	v, ok := views[modelKey{m.Provider, m.Model}]
	if !ok {
		return ""
	}
	if v.Attempts >= unhealthyMinAttempts && v.ErrorRate >= unhealthyErrorRate {
		return fmt.Sprintf("%.0f%% of its last %d attempts failed", 100*v.ErrorRate, v.Attempts)
	}
	if v.Succeeded >= estimateMinSamples && v.TTFTms.P95 != nil {
		declared := e.cat.stages().DeclaredPerf(stagework.StageSpec{Provider: m.Provider, Model: m.Model}).TTFT
		if declared <= 0 {
			declared = stagework.AssumedTTFT
		}
		if p95 := msDuration(*v.TTFTms.P95); p95 > blownFactor*declared {
			return fmt.Sprintf("p95 TTFT %v is over %d× its usual %v", p95.Round(time.Millisecond), blownFactor, declared)
		}
	}
	return ""
}

// withMaxTokens is p with every step's max_tokens set to n (n > 0), else p.
func withMaxTokens(p *stagework.Profile, n int) *stagework.Profile {
	if n <= 0 {
		return p
	}
	cp := *p
	cp.Stages = slices.Clone(p.Stages)
	for i := range cp.Stages {
		cp.Stages[i].MaxTokens = n
	}
	return &cp
}

// approxTokens approximates a question's and history's tokens (4 bytes a
// token): admission must stay cheap.
func approxTokens(query string, history []stagework.Message) int {
	n := utf8.RuneCountInString(query)
	for _, m := range history {
		n += utf8.RuneCountInString(m.Content)
	}
	return (n + 3) / 4
}

// toMsgStepModels is a plan's choices for StartRun.step_models.
func toMsgStepModels(plan *stagework.Plan) []*messages.StepModel {
	if plan == nil {
		return nil
	}
	out := make([]*messages.StepModel, len(plan.Choices))
	for i, c := range plan.Choices {
		out[i] = &messages.StepModel{Step: c.Step, Provider: c.Provider, Model: c.Model, Quality: int32(c.Quality), Reason: c.Reason,
			Downgraded: c.Downgraded, FromProvider: c.From.Provider, FromModel: c.From.Model, FromQuality: int32(c.FromQuality),
			EstimateCostUsd: c.EstimateUSD}
	}
	return out
}

func toMsgBudget(b stagework.Budget) *messages.RunBudget {
	if b.IsZero() {
		return nil
	}
	return &messages.RunBudget{MaxCostUsd: b.MaxCostUSD, MaxLatencyMs: b.MaxLatency.Milliseconds(), MinQuality: int32(b.MinQuality), Downgrade: b.Downgrade}
}

// ChosenModels is each step's final model in a run's step_models (the
// optimiser's choices, in the order made); nil when it made none.
func ChosenModels(ms []*messages.StepModel) map[string]stagework.ModelRef {
	if len(ms) == 0 {
		return nil
	}
	out := make(map[string]stagework.ModelRef, len(ms))
	for _, m := range ms {
		out[m.GetStep()] = stagework.ModelRef{Provider: m.GetProvider(), Model: m.GetModel()}
	}
	return out
}

// --- the coordinator's half ---

// costOf is what usage on model costs at the profiles file's prices (0
// for a model without one).
func (c *coordinator) costOf(model string, u *messages.Usage) float64 {
	if u == nil {
		return 0
	}
	if p, ok := c.deps.cat.stages().Price(model); ok {
		return p.Cost(fromMsgUsage(u))
	}
	return 0
}

// modelOfStep is the model a step of this run runs on.
func (c *coordinator) modelOfStep(id string) string {
	if sp, ok := c.profile.Step(id); ok {
		return sp.Model
	}
	return ""
}

// spend adds cost to the run's real cost so far.
func (c *coordinator) spend(cost float64) { c.spentUSD += cost }

// checkCostCap stops the run's remaining optional steps, once, when its
// real cost has crossed its max_cost_usd: running ones are cut (billed for
// what they used), pending ones never start; each is a StepSkipped with
// code cost_cap, after a StepNote (kind cost_cap) that says what happened.
// The run goes on with its other steps (and, having no optional step
// left, only says so).
func (c *coordinator) checkCostCap(ctx actor.Context) {
	limit := c.run.GetBudget().GetMaxCostUsd()
	if limit <= 0 || c.capHit || c.spentUSD <= limit || c.ended {
		return
	}
	c.capHit = true
	var optional []string
	for _, sp := range c.profile.Stages {
		if st := c.graph.State(sp.StepID()); sp.Optional && (st == stagework.StepPending || st == stagework.StepRunning) {
			optional = append(optional, sp.StepID())
		}
	}
	msg := fmt.Sprintf("the run's cost $%s has crossed its cap max_cost_usd $%s", stagework.FormatUSD(c.spentUSD), stagework.FormatUSD(limit))
	if len(optional) == 0 {
		msg += "; no optional step is left to stop, the run goes on"
	} else {
		msg += fmt.Sprintf("; its remaining optional steps are stopped: %v", optional)
	}
	c.logger.Info("cost cap crossed", "spent_usd", c.spentUSD, "max_cost_usd", limit, "optional_stopped", optional)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{Kind: "cost_cap", Message: msg}}})
	reason := fmt.Sprintf("optional step stopped: the run's cost $%s crossed its cap max_cost_usd $%s", stagework.FormatUSD(c.spentUSD), stagework.FormatUSD(limit))
	for _, id := range optional {
		if a := c.attemptByStep(id); a != nil {
			c.leaveOut(ctx, a, "cost_cap", reason)
			continue
		}
		spec, _ := c.graph.Spec(id)
		c.graph.LeaveOut(id, reason)
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepSkipped{StepSkipped: &messages.StepSkipped{
			Step: id, Stage: toMsgStage(spec.Stage), Reason: reason, Code: "cost_cap"}}})
	}
}
