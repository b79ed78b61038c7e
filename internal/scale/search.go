// Package scale measures throughput against node count (issue 15 item 2,
// `make scale`): for each cluster size, the highest open-loop arrival rate
// whose answers keep their time to first token under an SLO, found by a
// short search of bounded load steps; a table and an SVG plot of the
// result. The search and the table are pure and tested here; the compose
// driver (compose.go) and the load steps (run.go) are the I/O around them.
package scale

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// SLO is what a load step must keep to pass.
type SLO struct {
	// TTFTP99 bounds the p99 of the answer's time to first token (the
	// run's final step's first text, counted from the scheduled send).
	TTFTP99 time.Duration
	// MaxErrorShare bounds failed requests (errors and refusals alike)
	// over requests sent. Default 0.01.
	MaxErrorShare float64
	// MinGoodputShare: completed runs per second over the step's steady
	// window must be at least this share of the requests sent per second
	// in the same window (a cluster that falls behind is not keeping up
	// even while its p99 still looks good; the sends, not the nominal
	// rate, so that Poisson noise in a short window does not count).
	// Default 0.85.
	MinGoodputShare float64
}

func (s *SLO) defaults() {
	if s.MaxErrorShare == 0 {
		s.MaxErrorShare = 0.01
	}
	if s.MinGoodputShare == 0 {
		s.MinGoodputShare = 0.85
	}
}

// Step is one load step: Rate runs/s offered for a bounded time.
type Step struct {
	Rate float64 `json:"rate"`
	Sent int     `json:"sent"`
	OK   int     `json:"ok"`
	// Errors counts failed requests by code ("503 cluster_saturated",
	// "connection", a streamed failure's code…).
	Errors map[string]int `json:"errors,omitempty"`
	// Offered, Goodput and TokensPerSecond are requests sent, runs
	// completed and tokens streamed per second over the step's steady
	// window (after warm-up).
	Offered         float64 `json:"offered"`
	Goodput         float64 `json:"goodput"`
	TokensPerSecond float64 `json:"tokens_per_s"`
	// TTFT is the answer's first text; TTFTAny the first text of any step.
	TTFTP50    time.Duration `json:"ttft_p50"`
	TTFTP99    time.Duration `json:"ttft_p99"`
	TTFTAnyP99 time.Duration `json:"ttft_any_p99"`
	E2EP50     time.Duration `json:"e2e_p50"`
	// CPU is each container's CPU over the step, in cores (1 = one
	// core busy the whole time); Throttled its CFS periods throttled.
	CPU       map[string]float64 `json:"cpu,omitempty"`
	Throttled map[string]int64   `json:"throttled,omitempty"`
	// LoadCPU is the load generator's own CPU, in cores.
	LoadCPU float64 `json:"load_cpu"`

	Pass bool   `json:"pass"`
	Why  string `json:"why,omitempty"`
}

// ErrorCount is the number of failed requests.
func (s Step) ErrorCount() int {
	n := 0
	for _, v := range s.Errors {
		n += v
	}
	return n
}

// Judge decides whether a step kept the SLO, and says why not.
func (s SLO) Judge(st Step) (bool, string) {
	s.defaults()
	var why []string
	if st.Sent == 0 {
		return false, "nothing sent"
	}
	if st.OK == 0 {
		why = append(why, "no run completed")
	} else if st.TTFTP99 > s.TTFTP99 {
		why = append(why, fmt.Sprintf("ttft p99 %s > %s", st.TTFTP99.Round(time.Millisecond), s.TTFTP99.Round(time.Millisecond)))
	}
	if e := st.ErrorCount(); float64(e) > s.MaxErrorShare*float64(st.Sent) {
		why = append(why, fmt.Sprintf("%d of %d failed (%s)", e, st.Sent, errorList(st.Errors)))
	}
	offered := st.Offered
	if offered == 0 {
		offered = st.Rate
	}
	if st.Goodput < s.MinGoodputShare*offered {
		why = append(why, fmt.Sprintf("goodput %.2f/s < %.0f %% of %.2f/s sent", st.Goodput, 100*s.MinGoodputShare, offered))
	}
	return len(why) == 0, strings.Join(why, "; ")
}

// errorList is "503 cluster_saturated ×12, connection ×1", largest first.
func errorList(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	codes := make([]string, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Slice(codes, func(i, j int) bool {
		if m[codes[i]] != m[codes[j]] {
			return m[codes[i]] > m[codes[j]]
		}
		return codes[i] < codes[j]
	})
	parts := make([]string, len(codes))
	for i, c := range codes {
		parts[i] = fmt.Sprintf("%s ×%d", c, m[c])
	}
	return strings.Join(parts, ", ")
}

// SearchConfig bounds a search.
type SearchConfig struct {
	// Start is the first rate tried (runs/s). Required, > 0.
	Start float64
	// Min: below it a failing search gives up (default Start/16). Max:
	// doubling stops there (default Start×64).
	Min, Max float64
	// Bisections between the last passing and the first failing rate
	// after doubling (default 3: the answer within 1/8 of that gap).
	Bisections int
	// MaxSteps bounds the steps in all (default 10).
	MaxSteps int
}

// Probe runs one load step at rate and returns what it measured (Pass
// and Why are set by the search).
type Probe func(ctx context.Context, rate float64) (Step, error)

// Outcome is what a search found.
type Outcome struct {
	// Best is the passing step of the highest rate (Found false: none
	// passed down to Min).
	Best  Step `json:"best"`
	Found bool `json:"found"`
	// AtMax: every rate passed up to Max (the answer is a lower bound).
	AtMax bool `json:"at_max"`
	// Steps is every step in the order run.
	Steps []Step `json:"steps"`
}

// ErrBadSearch is returned for a SearchConfig that cannot run.
var ErrBadSearch = errors.New("scale: bad search")

// Search finds the highest rate that keeps slo: from Start it doubles
// while steps pass (halves while they fail), then bisects between the
// highest passing and the lowest failing rate. It assumes that a rate
// above a failing one would fail too; a noisy machine can break that, and
// then the answer is the highest rate that passed, which every step
// reported in Outcome.Steps lets a reader check.
func Search(ctx context.Context, cfg SearchConfig, slo SLO, probe Probe) (Outcome, error) {
	if !(cfg.Start > 0) || math.IsInf(cfg.Start, 0) {
		return Outcome{}, fmt.Errorf("%w: start rate %v", ErrBadSearch, cfg.Start)
	}
	if cfg.Min == 0 {
		cfg.Min = cfg.Start / 16
	}
	if cfg.Max == 0 {
		cfg.Max = cfg.Start * 64
	}
	if cfg.Bisections == 0 {
		cfg.Bisections = 3
	}
	if cfg.MaxSteps == 0 {
		cfg.MaxSteps = 10
	}
	if cfg.Min <= 0 || cfg.Min > cfg.Start || cfg.Max < cfg.Start || cfg.Bisections < 0 || cfg.MaxSteps < 1 {
		return Outcome{}, fmt.Errorf("%w: min %v, start %v, max %v, bisections %d, steps %d", ErrBadSearch,
			cfg.Min, cfg.Start, cfg.Max, cfg.Bisections, cfg.MaxSteps)
	}
	var out Outcome
	try := func(rate float64) (bool, error) {
		st, err := probe(ctx, rate)
		if err != nil {
			return false, err
		}
		st.Rate = rate
		st.Pass, st.Why = slo.Judge(st)
		out.Steps = append(out.Steps, st)
		if st.Pass && (!out.Found || rate > out.Best.Rate) {
			out.Best, out.Found = st, true
		}
		return st.Pass, nil
	}
	lo, hi := 0.0, math.Inf(1) // highest pass, lowest fail
	rate := cfg.Start
	// Bracket: double while passing, halve while failing.
	for len(out.Steps) < cfg.MaxSteps {
		pass, err := try(rate)
		if err != nil {
			return out, err
		}
		if pass {
			lo = rate
			if !math.IsInf(hi, 1) {
				break
			}
			if rate >= cfg.Max {
				out.AtMax = true
				return out, nil
			}
			rate = math.Min(rate*2, cfg.Max)
		} else {
			hi = rate
			if lo > 0 {
				break
			}
			if rate/2 < cfg.Min {
				return out, nil
			}
			rate /= 2
		}
	}
	for i := 0; i < cfg.Bisections && len(out.Steps) < cfg.MaxSteps && lo > 0 && !math.IsInf(hi, 1); i++ {
		mid := (lo + hi) / 2
		pass, err := try(mid)
		if err != nil {
			return out, err
		}
		if pass {
			lo = mid
		} else {
			hi = mid
		}
	}
	return out, nil
}
