package stagework

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Candidate is one model a step may run on, chosen per run by the
// cost/quality optimiser (Optimise). In the profiles file:
//
//	candidates:
//	  - {model: sim-small, quality: low, price: {input: 0.2, output: 0.8}}
//	  - {model: sim-large, provider: sim-slow, quality: 5}
type Candidate struct {
	// Provider names an entry of Config.Providers; the step's provider
	// when the file leaves it out.
	Provider string
	// Model is the model name sent to the provider.
	Model string
	// Quality is the declared quality tier, 1 (lowest) to 5 (highest);
	// the file may say low (1), medium (3) or high (5).
	Quality int
	// Price, when the file declares one, is the model's price; it is also
	// entered in Config.Prices (billing reads that), where a different
	// price for the same model is an error.
	Price *Price
}

// Ref is the candidate's provider and model.
func (c Candidate) Ref() ModelRef { return ModelRef{Provider: c.Provider, Model: c.Model} }

// Quality tiers by name, for the file and requests.
const (
	QualityLow    = 1
	QualityMedium = 3
	QualityHigh   = 5
	// MaxQuality is the highest tier.
	MaxQuality = 5
)

// ParseQuality reads a quality tier: an integer 1..5, or low, medium,
// high.
func ParseQuality(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "low":
		return QualityLow, nil
	case "medium":
		return QualityMedium, nil
	case "high":
		return QualityHigh, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 || n > MaxQuality {
		return 0, fmt.Errorf("quality %q is not 1..%d, low, medium or high", s, MaxQuality)
	}
	return n, nil
}

// rawCandidate mirrors a candidate in the file.
type rawCandidate struct {
	Provider string `yaml:"provider"`
	Model    string `yaml:"model"`
	// Quality is a number or a name; checked by checkCandidates.
	Quality string `yaml:"quality"`
	Price   *Price `yaml:"price"`
}

// candidates turns the file's candidates into Candidates; a quality that
// does not parse is left 0 (checkCandidates reports it, by path).
func (rs *rawStage) candidates(stepProvider string) []Candidate {
	if len(rs.Candidates) == 0 {
		return nil
	}
	out := make([]Candidate, 0, len(rs.Candidates))
	for _, rc := range rs.Candidates {
		if rc == nil {
			out = append(out, Candidate{})
			continue
		}
		c := Candidate{Provider: rc.Provider, Model: rc.Model, Price: rc.Price}
		if c.Provider == "" {
			c.Provider = stepProvider
		}
		c.Quality, _ = ParseQuality(rc.Quality)
		out = append(out, c)
	}
	return out
}

// MaxCandidates bounds a step's candidates.
const MaxCandidates = 16

// checkCandidates checks a step's candidates: each names a known provider
// and a model, once; its quality is a tier; its price is valid and agrees
// with the file's prices (it is entered there). With candidates, the
// step's model is one of them.
func (c *Config) checkCandidates(errs *[]error, spath string, sp *StageSpec) {
	if len(sp.Candidates) == 0 {
		return
	}
	bad := func(path, format string, args ...any) {
		*errs = append(*errs, fmt.Errorf("%w: %s: %s", ErrInvalidConfig, path, fmt.Sprintf(format, args...)))
	}
	if len(sp.Candidates) > MaxCandidates {
		bad(spath+".candidates", "%d candidates; at most %d", len(sp.Candidates), MaxCandidates)
	}
	seen := map[ModelRef]bool{}
	for i, cd := range sp.Candidates {
		cpath := fmt.Sprintf("%s.candidates[%d]", spath, i)
		if cd.Model == "" {
			bad(cpath+".model", "missing")
			continue
		}
		c.checkRef(errs, cpath, "provider", cd.Provider)
		if seen[cd.Ref()] {
			bad(cpath, "%s on %s is listed twice", cd.Model, cd.Provider)
		}
		seen[cd.Ref()] = true
		if cd.Quality < 1 || cd.Quality > MaxQuality {
			bad(cpath+".quality", "missing or not 1..%d, low, medium or high", MaxQuality)
		}
		if pr := cd.Price; pr != nil {
			if !(pr.Input >= 0 && pr.Output >= 0) || math.IsInf(pr.Input, 0) || math.IsInf(pr.Output, 0) {
				bad(cpath+".price", "input and output must be finite and >= 0")
				continue
			}
			if old, ok := c.Prices[cd.Model]; ok && old != *pr {
				bad(cpath+".price", "%+v differs from the price of %s elsewhere in the file (%+v)", *pr, cd.Model, old)
				continue
			}
			if c.Prices == nil {
				c.Prices = map[string]Price{}
			}
			c.Prices[cd.Model] = *pr
		}
	}
	if sp.Model != "" && !slices.ContainsFunc(sp.Candidates, func(cd Candidate) bool { return cd.Ref() == (ModelRef{sp.Provider, sp.Model}) }) {
		bad(spath+".model", "%s on %s is not one of the step's candidates (with candidates, model names the default among them, or is left out for the first)", sp.Model, sp.Provider)
	}
}

// checkOptional checks a strategy profile's optional steps: never the
// final one, and every step that reads optional steps still has its
// MinInputs among its other inputs (leaving the optional ones out never
// fails the run).
func checkOptional(errs *[]error, path string, p *Profile) {
	optional := map[string]bool{}
	for _, sp := range p.Stages {
		if sp.Optional {
			optional[sp.StepID()] = true
		}
	}
	if len(optional) == 0 {
		return
	}
	for _, sp := range p.Stages {
		spath := sp.src
		if spath == "" {
			spath = path + ".steps." + sp.StepID()
		}
		if sp.Optional && sp.Final {
			*errs = append(*errs, fmt.Errorf("%w: %s.optional: the final step writes the answer; it cannot be optional", ErrInvalidConfig, spath))
		}
		needed := 0
		for _, in := range sp.Inputs {
			if !optional[in] {
				needed++
			}
		}
		if sp.MinInputs > needed {
			*errs = append(*errs, fmt.Errorf("%w: %s: needs %d of its inputs but only %d are not optional (lower its min_*, or mark fewer steps optional)",
				ErrInvalidConfig, spath, sp.MinInputs, needed))
		}
	}
}

// HasCandidates reports whether any step of p has candidates.
func (p *Profile) HasCandidates() bool {
	return slices.ContainsFunc(p.Stages, func(sp StageSpec) bool { return len(sp.Candidates) > 0 })
}

// WithModels returns a copy of p whose steps named in models run on the
// model given (a step's candidates are not checked: the optimiser chose
// among them). A fallback that is now the step's own model is dropped.
// p itself is returned when models is empty.
func (p *Profile) WithModels(models map[string]ModelRef) *Profile {
	if len(models) == 0 {
		return p
	}
	cp := *p
	cp.Stages = slices.Clone(p.Stages)
	for i := range cp.Stages {
		sp := &cp.Stages[i]
		m, ok := models[sp.StepID()]
		if !ok || m.Model == "" {
			continue
		}
		if m.Provider == "" {
			m.Provider = sp.Provider
		}
		sp.Provider, sp.Model = m.Provider, m.Model
		if fb := sp.Fallback; fb != nil && *fb == m {
			sp.Fallback, sp.Hedge, sp.TTFTBudget = nil, false, 0
		}
	}
	return &cp
}
