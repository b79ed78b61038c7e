package gateway

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// budgetFields are a request's cost/quality constraints (docs/api.md,
// Cost and quality). The run API and the OpenAI endpoint take them as
// top-level fields of the body (OpenAI SDKs send them with extra_body).
type budgetFields struct {
	// MaxCostUSD caps the run's cost in US dollars.
	MaxCostUSD *float64 `json:"max_cost_usd"`
	// MaxLatencyMs caps the run's predicted duration.
	MaxLatencyMs *int64 `json:"max_latency_ms"`
	// MinQuality is the quality floor: 1..5, or "low", "medium", "high".
	MinQuality json.RawMessage `json:"min_quality"`
	// OnBudget says what a run predicted over max_cost_usd gets:
	// "refuse" (the default: HTTP 422, over_cost_cap) or "downgrade".
	OnBudget string `json:"on_budget"`
}

// budgetErrorParam names the request field behind each refusal code of
// the optimiser (HTTP 422).
var budgetErrorParam = map[string]string{"over_cost_cap": "max_cost_usd", "over_latency_cap": "max_latency_ms", "no_candidate": "min_quality"}

// over is f with each field it leaves unset taken from def (a batch's
// fields under an item's).
func (f budgetFields) over(def budgetFields) budgetFields {
	if f.MaxCostUSD == nil {
		f.MaxCostUSD = def.MaxCostUSD
	}
	if f.MaxLatencyMs == nil {
		f.MaxLatencyMs = def.MaxLatencyMs
	}
	if len(f.MinQuality) == 0 || string(f.MinQuality) == "null" {
		f.MinQuality = def.MinQuality
	}
	if f.OnBudget == "" {
		f.OnBudget = def.OnBudget
	}
	return f
}

// budget validates the fields into a stagework.Budget.
func (f budgetFields) budget() (stagework.Budget, *apiError) {
	var b stagework.Budget
	if f.MaxCostUSD != nil {
		b.MaxCostUSD = *f.MaxCostUSD
		if b.MaxCostUSD <= 0 {
			return b, errInvalidParam("max_cost_usd", "invalid_budget", "max_cost_usd must be a number above 0 (US dollars)")
		}
	}
	if f.MaxLatencyMs != nil {
		if *f.MaxLatencyMs <= 0 || *f.MaxLatencyMs > int64(24*time.Hour/time.Millisecond) {
			return b, errInvalidParam("max_latency_ms", "invalid_budget", "max_latency_ms must be between 1 and 86400000")
		}
		b.MaxLatency = time.Duration(*f.MaxLatencyMs) * time.Millisecond
	}
	if len(f.MinQuality) > 0 && string(f.MinQuality) != "null" {
		raw := strings.Trim(string(f.MinQuality), `"`)
		q, err := stagework.ParseQuality(raw)
		if err != nil {
			return b, errInvalidParam("min_quality", "invalid_budget", "min_quality must be 1..5, or \"low\", \"medium\", \"high\"")
		}
		b.MinQuality = q
	}
	switch f.OnBudget {
	case "", "refuse":
	case "downgrade":
		b.Downgrade = true
	default:
		return b, errInvalidParam("on_budget", "invalid_budget", `on_budget must be "refuse" (the default) or "downgrade"`)
	}
	if b.Downgrade && b.MaxCostUSD == 0 {
		return b, errInvalidParam("on_budget", "invalid_budget", `on_budget "downgrade" needs max_cost_usd`)
	}
	if err := b.Validate(); err != nil {
		return b, errInvalid("invalid_budget", err.Error())
	}
	return b, nil
}

// planRun runs the cost/quality optimiser for a request with a budget,
// before admission: a run its budget cannot pay for is refused with HTTP
// 422 and a code saying which cap (over_cost_cap, over_latency_cap) or
// that a step has no candidate meeting the floor (no_candidate); the
// message names the cap and the estimate.
func (s *Server) planRun(req *actors.RunRequest) *apiError {
	err := s.engine.PlanRun(req)
	if err == nil {
		return nil
	}
	var be *stagework.BudgetError
	if errors.As(err, &be) {
		e := &apiError{Status: http.StatusUnprocessableEntity, Type: "invalid_request_error", Code: be.Code, Message: be.Message}
		param := budgetErrorParam[be.Code]
		if param != "" {
			e.Param = &param
		}
		return e
	}
	if errors.Is(err, stagework.ErrUnknownProfile) {
		return s.profileError(req.Profile)
	}
	return errInvalid("invalid_budget", err.Error())
}

// budgetView is what a run's request asked of its cost, latency and
// quality.
type budgetView struct {
	MaxCostUSD   float64 `json:"max_cost_usd,omitempty"`
	MaxLatencyMs int64   `json:"max_latency_ms,omitempty"`
	MinQuality   int32   `json:"min_quality,omitempty"`
	OnBudget     string  `json:"on_budget"`
}

// modelChoiceView is one of the optimiser's choices (a model_chosen
// event).
type modelChoiceView struct {
	Step            string  `json:"step"`
	Model           string  `json:"model"`
	Provider        string  `json:"provider"`
	Quality         int32   `json:"quality,omitempty"`
	Reason          string  `json:"reason"`
	Downgraded      bool    `json:"downgraded,omitempty"`
	FromModel       string  `json:"from_model,omitempty"`
	FromProvider    string  `json:"from_provider,omitempty"`
	FromQuality     int32   `json:"from_quality,omitempty"`
	EstimateCostUSD float64 `json:"estimate_cost_usd"`
}

func toBudgetView(b *messages.RunBudget) *budgetView {
	if b == nil {
		return nil
	}
	v := &budgetView{MaxCostUSD: b.GetMaxCostUsd(), MaxLatencyMs: b.GetMaxLatencyMs(), MinQuality: b.GetMinQuality(), OnBudget: "refuse"}
	if b.GetDowngrade() {
		v.OnBudget = "downgrade"
	}
	return v
}

func toModelChoiceViews(ms []*messages.StepModel) []modelChoiceView {
	if len(ms) == 0 {
		return nil
	}
	out := make([]modelChoiceView, len(ms))
	for i, m := range ms {
		out[i] = modelChoiceView{Step: m.GetStep(), Model: m.GetModel(), Provider: m.GetProvider(), Quality: m.GetQuality(), Reason: m.GetReason(),
			Downgraded: m.GetDowngraded(), FromModel: m.GetFromModel(), FromProvider: m.GetFromProvider(), FromQuality: m.GetFromQuality(),
			EstimateCostUSD: m.GetEstimateCostUsd()}
	}
	return out
}

// setBudgetHeaders tells an OpenAI client, which reads no run resource,
// what the optimiser chose: X-QLC-Estimate-Cost-USD (the run's estimated
// cost) and X-QLC-Models ("step=model" pairs, comma-separated, the final
// choice of each step), when the request set a budget.
func setBudgetHeaders(w http.ResponseWriter, hub *actors.Hub) {
	if hub.Budget() == nil {
		return
	}
	if est := hub.Estimate(); est != nil {
		w.Header().Set("X-QLC-Estimate-Cost-USD", strconv.FormatFloat(est.GetCostUsd(), 'g', 6, 64))
	}
	ms := hub.StepModels()
	var pairs []string
	seen := map[string]int{}
	for _, m := range ms {
		if i, ok := seen[m.GetStep()]; ok {
			pairs[i] = m.GetStep() + "=" + m.GetModel()
			continue
		}
		seen[m.GetStep()] = len(pairs)
		pairs = append(pairs, m.GetStep()+"="+m.GetModel())
	}
	if len(pairs) > 0 {
		w.Header().Set("X-QLC-Models", strings.Join(pairs, ","))
	}
}

// stepModelsOf is a run's optimiser choices: as its start carries them,
// else (a run restored from the store) from its model_chosen events.
func stepModelsOf(h *actors.Hub, evs []*messages.RunEvent) []*messages.StepModel {
	if ms := h.StepModels(); len(ms) > 0 {
		return ms
	}
	var out []*messages.StepModel
	for _, ev := range evs {
		if m := ev.GetModelChosen(); m != nil {
			out = append(out, m)
		}
	}
	return out
}

// candidateView is one of a step's candidates in GET /v1/profiles.
type candidateView struct {
	Provider  string   `json:"provider"`
	Model     string   `json:"model"`
	Quality   int      `json:"quality"`
	InputUSD  *float64 `json:"input_usd_per_1m,omitempty"`
	OutputUSD *float64 `json:"output_usd_per_1m,omitempty"`
}

func toCandidateViews(cfg *stagework.Config, cs []stagework.Candidate) []candidateView {
	if len(cs) == 0 {
		return nil
	}
	out := make([]candidateView, len(cs))
	for i, c := range cs {
		out[i] = candidateView{Provider: c.Provider, Model: c.Model, Quality: c.Quality}
		if p, ok := cfg.Price(c.Model); ok {
			out[i].InputUSD, out[i].OutputUSD = &p.Input, &p.Output
		}
	}
	return out
}
