package stagework

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// tieredYAML is a moa profile whose proposer and aggregator choose among
// candidates: big (quality 5, slow, $20/M), mid (3, fast, $5/M) and small
// (1, slow, $1/M); a second, optional proposer has no candidates.
const tieredYAML = `
providers:
  fast: {kind: sim, sim: {ttft: 100ms, itl: 1ms, output_tokens: 100}}
  slow: {kind: sim, sim: {ttft: 2s, itl: 10ms, output_tokens: 100}}
prices:
  big: {input: 20, output: 20}
profiles:
  tiered:
    strategy: moa
    provider: fast
    min_proposers: 1
    proposers:
      - candidates:
          - {model: big, provider: slow, quality: high}
          - {model: mid, quality: medium, price: {input: 5, output: 5}}
          - {model: small, provider: slow, quality: 1, price: {input: 1, output: 1}}
      - {model: extra, optional: true}
    aggregator:
      candidates:
        - {model: big, provider: slow, quality: 5}
        - {model: mid, quality: 3}
`

func tiered(t *testing.T) (*Config, *Profile) {
	t.Helper()
	c, err := ParseConfig([]byte(tieredYAML))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Profile("tiered")
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

func plan(t *testing.T, b Budget, health func(ModelRef) string) (Plan, error) {
	t.Helper()
	c, p := tiered(t)
	return Optimise(PlanInput{Profile: p, QueryTokens: 100, Perf: c.DeclaredPerf, Price: c.Price, Health: health, Budget: b})
}

func nearUSD(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func models(pl Plan) string {
	m := pl.Models()
	return m["p1.1"].Model + "/" + m["aggregator"].Model
}

func TestCandidatesParsed(t *testing.T) {
	c, p := tiered(t)
	sp, _ := p.Step("p1.1")
	if sp.Model != "big" || sp.Provider != "slow" || len(sp.Candidates) != 3 || sp.Candidates[1].Quality != QualityMedium ||
		sp.Candidates[1].Provider != "fast" || sp.Candidates[2].Quality != 1 {
		t.Fatalf("proposer = %+v", sp)
	}
	if pr, ok := c.Price("mid"); !ok || pr.Input != 5 {
		t.Fatalf("a candidate's price is entered in prices: %+v %v", pr, ok)
	}
	if ex, _ := p.Step("p1.2"); !ex.Optional || len(ex.Candidates) != 0 {
		t.Fatalf("extra = %+v", ex)
	}
}

func TestOptimiseCheapestMeetingQuality(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    Budget
		want string
		cost float64
	}{
		{"default floor is the default model's quality", Budget{MaxCostUSD: 1}, "big/big", 0.0168},
		{"medium", Budget{MinQuality: 3}, "mid/mid", 0.0042},
		{"low", Budget{MinQuality: 1}, "small/mid", 0.00292},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl, err := plan(t, tc.b, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := models(pl); got != tc.want || !nearUSD(pl.Estimate.CostUSD, tc.cost) {
				t.Fatalf("chose %s at $%v; want %s at $%v", got, pl.Estimate.CostUSD, tc.want, tc.cost)
			}
			if len(pl.Choices) != 2 || pl.Choices[0].Step != "p1.1" || pl.Choices[1].Step != "aggregator" || !strings.Contains(pl.Choices[0].Reason, "with quality >= ") {
				t.Fatalf("choices = %+v", pl.Choices)
			}
			if sp, _ := pl.Profile.Step("aggregator"); sp.Model != strings.Split(tc.want, "/")[1] {
				t.Fatalf("the plan's profile runs %s", sp.Model)
			}
		})
	}
}

func TestOptimiseAvoidsUnhealthy(t *testing.T) {
	health := func(m ModelRef) string {
		if m.Model == "mid" {
			return "breaker open"
		}
		return ""
	}
	pl, err := plan(t, Budget{MinQuality: 3}, health)
	if err != nil {
		t.Fatal(err)
	}
	if got := models(pl); got != "big/big" || !strings.Contains(pl.Choices[0].Reason, "avoided: mid (breaker open)") {
		t.Fatalf("chose %s: %+v", got, pl.Choices)
	}
	// Nothing healthy at the floor: refused, naming the step, unless the
	// request allows a downgrade (the best healthy below the floor).
	bigDown := func(m ModelRef) string {
		if m.Model == "big" {
			return "p95 TTFT blew up"
		}
		return ""
	}
	_, err = plan(t, Budget{MinQuality: 5}, bigDown)
	var be *BudgetError
	if !errors.As(err, &be) || be.Code != "no_candidate" || be.Step != "p1.1" || !errors.Is(err, ErrOverBudget) {
		t.Fatalf("err = %v", err)
	}
	pl, err = plan(t, Budget{MinQuality: 5, Downgrade: true}, bigDown)
	if err != nil || models(pl) != "mid/mid" || !pl.Choices[0].Downgraded {
		t.Fatalf("%s %+v %v", models(pl), pl.Choices, err)
	}
	// Every candidate unhealthy: the default stays (retries and fallback
	// handle it as without candidates).
	pl, err = plan(t, Budget{MinQuality: 1}, func(ModelRef) string { return "down" })
	if err != nil || models(pl) != "big/big" || !strings.Contains(pl.Choices[0].Reason, "unhealthy") {
		t.Fatalf("%s %+v %v", models(pl), pl.Choices, err)
	}
}

func TestOptimiseLatency(t *testing.T) {
	// small is cheapest but slow (2s TTFT): a 1s cap moves the proposer to
	// mid, the cheapest fast one.
	pl, err := plan(t, Budget{MinQuality: 1, MaxLatency: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := models(pl); got != "mid/mid" || pl.Estimate.Duration > time.Second || len(pl.Choices) != 3 ||
		pl.Choices[2].From.Model != "small" || !strings.Contains(pl.Choices[2].Reason, "max_latency_ms 1000") {
		t.Fatalf("chose %s in %v: %+v", got, pl.Estimate.Duration, pl.Choices)
	}
	// Quality 5 is only on the slow model: no way to fit.
	_, err = plan(t, Budget{MinQuality: 5, MaxLatency: time.Second}, nil)
	var be *BudgetError
	if !errors.As(err, &be) || be.Code != "over_latency_cap" || be.EstimateLatency <= time.Second || !strings.Contains(err.Error(), "max_latency_ms 1000") {
		t.Fatalf("err = %v", err)
	}
}

func TestOptimiseCostCap(t *testing.T) {
	_, err := plan(t, Budget{MinQuality: 5, MaxCostUSD: 0.01}, nil)
	var be *BudgetError
	if !errors.As(err, &be) || be.Code != "over_cost_cap" || !nearUSD(be.EstimateUSD, 0.0168) || be.CapUSD != 0.01 ||
		!strings.Contains(err.Error(), "$0.016800") || !strings.Contains(err.Error(), "max_cost_usd $0.010000") {
		t.Fatalf("err = %v", err)
	}
}

func TestOptimiseDowngradeSequence(t *testing.T) {
	pl, err := plan(t, Budget{MinQuality: 5, MaxCostUSD: 0.005, Downgrade: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// big/big $0.0168 → the aggregator one notch down (saves most) $0.009
	// → the proposer one notch down (mid, not small) $0.0042.
	c := pl.Choices
	if len(c) != 4 || c[2].Step != "aggregator" || c[2].Model != "mid" || c[2].From.Model != "big" || !c[2].Downgraded || !nearUSD(c[2].EstimateUSD, 0.009) ||
		c[3].Step != "p1.1" || c[3].Model != "mid" || c[3].FromQuality != 5 || c[3].Quality != 3 || !nearUSD(c[3].EstimateUSD, 0.0042) {
		t.Fatalf("choices = %+v", c)
	}
	if models(pl) != "mid/mid" || !nearUSD(pl.Estimate.CostUSD, 0.0042) || !strings.Contains(c[3].Reason, "downgraded to fit max_cost_usd $0.005000") {
		t.Fatalf("%s $%v %q", models(pl), pl.Estimate.CostUSD, c[3].Reason)
	}
	// A cap below the cheapest plan is refused even with downgrades,
	// naming the lowest estimate reached.
	_, err = plan(t, Budget{MinQuality: 5, MaxCostUSD: 0.001, Downgrade: true}, nil)
	var be *BudgetError
	if !errors.As(err, &be) || be.Code != "over_cost_cap" || !nearUSD(be.EstimateUSD, 0.00292) || !strings.Contains(err.Error(), "even downgraded") {
		t.Fatalf("err = %v", err)
	}
}

func TestWithModelsDropsFallbackItBecame(t *testing.T) {
	p := &Profile{Name: "x", Stages: []StageSpec{{Stage: StageGenerator, Provider: "a", Model: "m1", Hedge: true,
		Fallback: &ModelRef{Provider: "a", Model: "m2"}}}}
	q := p.WithModels(map[string]ModelRef{"generator": {Provider: "a", Model: "m2"}})
	if q.Stages[0].Model != "m2" || q.Stages[0].Fallback != nil || q.Stages[0].Hedge || p.Stages[0].Model != "m1" {
		t.Fatalf("%+v / %+v", q.Stages[0], p.Stages[0])
	}
}

func TestCandidatesValidated(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`candidates: [{model: a, quality: 9}]`, "profiles.x.proposers[0].candidates[0].quality: missing or not 1..5"},
		{`candidates: [{model: a, quality: best}]`, "candidates[0].quality"},
		{`candidates: [{model: a, provider: nope, quality: 1}]`, `candidates[0].provider: "nope" is not a provider`},
		{`candidates: [{quality: 1}]`, "candidates[0].model: missing"},
		{`candidates: [{model: a, quality: 1}, {model: a, quality: 2}]`, "candidates[1]: a on fast is listed twice"},
		{`{model: z, candidates: [{model: a, quality: 1}]}`, "proposers[0].model: z on fast is not one of the step's candidates"},
		{`candidates: [{model: a, quality: 1, price: {input: 3, output: 3}}]`, "candidates[0].price: {Input:3 Output:3} differs from the price of a"},
		{`candidates: [{model: a, quality: 1, price: {input: -1, output: 3}}]`, "candidates[0].price: input and output must be finite"},
	} {
		doc := "providers: {fast: {kind: sim}}\nprices: {a: {input: 1, output: 1}}\nprofiles:\n  x:\n    strategy: moa\n    provider: fast\n    proposers:\n      - " +
			tc.yaml + "\n      - {model: b}\n    aggregator: {model: c}\n"
		_, err := ParseConfig([]byte(doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want %q", tc.yaml, err, tc.want)
		}
	}
}

func TestOptionalValidated(t *testing.T) {
	for _, tc := range []struct{ doc, want string }{
		{`profiles: {x: {provider: fast, stages: {generator: {model: a}, refiner: {model: a, optional: true}, validator: {model: a}, curator: {model: a}}}}`,
			"profiles.x.stages.refiner.optional: applies only to steps of strategies"},
		{`profiles: {x: {provider: fast, strategy: moa, proposers: [{model: a, optional: true}, {model: b}], aggregator: {model: c}}}`,
			"profiles.x.aggregator: needs 2 of its inputs but only 1 are not optional"},
		{`profiles: {x: {provider: fast, strategy: moa, proposers: [{model: a}, {model: b}], aggregator: {model: c, optional: true}}}`,
			"profiles.x.aggregator.optional: the final step"},
	} {
		_, err := ParseConfig([]byte("providers: {fast: {kind: sim}}\n" + tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("err = %v; want %q", err, tc.want)
		}
	}
	// Enough non-optional inputs: valid.
	if _, err := ParseConfig([]byte("providers: {fast: {kind: sim}}\nprofiles: {x: {provider: fast, strategy: council, min_members: 2, members: [{model: a}, {model: b}, {model: c, optional: true}], chairman: {model: d}}}")); err != nil {
		t.Fatal(err)
	}
}

func TestBudgetValidate(t *testing.T) {
	for _, b := range []Budget{{MaxCostUSD: -1}, {MaxCostUSD: math.NaN()}, {MaxLatency: -1}, {MinQuality: 6}} {
		if b.Validate() == nil {
			t.Errorf("%+v passed", b)
		}
	}
	if (Budget{}).Validate() != nil || !(Budget{}).IsZero() {
		t.Fatal("zero budget")
	}
	for s, want := range map[string]int{"low": 1, "Medium": 3, "high": 5, "2": 2} {
		if q, err := ParseQuality(s); err != nil || q != want {
			t.Errorf("%s: %d %v", s, q, err)
		}
	}
	if _, err := ParseQuality("0"); err == nil {
		t.Fatal("0 parsed")
	}
}
