package actors

import (
	"math"
	"sync"
	"time"
)

// AdaptiveLimit is a node's concurrency limit on the runs it hosts (running
// plus queued for a run slot), adapted to the latency of its completed stage
// attempts: Netflix concurrency-limits' Gradient2, written out here (about
// 60 lines) because that library is not served to this build and its
// dependencies (a metrics registry of its own) are more than the formula.
//
// Two moving averages of the samples are kept: a short one (the latency
// now) and a long one (the latency the node delivers when not overloaded).
// Their ratio is the gradient: while short ≤ Tolerance × long the limit may
// grow by a small queue allowance (√limit) per sample, but only while the
// hosted runs use at least half of it (an idle node does not inflate its
// limit); past it the limit shrinks in proportion (at most halving per
// sample, smoothed). When latency falls far below the long average (long >
// 2 × short), the long one decays quickly towards it; a workload that got
// slower for good moves the long average up over LongWindow samples, so the
// node settles at a new baseline instead of shrinking for ever.
//
// It is pure: no clock, no goroutine; safe for concurrent use.
type AdaptiveLimit struct {
	cfg AdaptiveLimitConfig

	mu          sync.Mutex
	limit       float64
	short, long float64 // moving averages of the samples (seconds, or ratios to a key's baseline)
	n           int     // samples seen
	raw         float64 // short moving average of the durations as given (Latency)
	keyed       bool    // SampleFor was used: samples are ratios to the kinds' baselines, whose long-run mean is 1
	// base holds, per key (SampleFor), a baseline duration in seconds
	// that falls fast and rises slowly; at most maxLimitKeys keys.
	base map[string]float64
}

// maxLimitKeys bounds AdaptiveLimit's baselines; samples of further keys
// are taken as they are.
const maxLimitKeys = 256

// AdaptiveLimitConfig configures an AdaptiveLimit. Zero fields take the
// defaults named on them.
type AdaptiveLimitConfig struct {
	// Initial is the limit before any sample. Required (> 0).
	Initial int
	// Min and Max bound the limit. Default 1 and Initial.
	Min, Max int
	// Tolerance is how much slower than the long-run latency the short-run
	// latency may get before the limit shrinks. Default 2 (issue 18's
	// figure: admitted runs' p99 at most twice the unloaded one).
	Tolerance float64
	// Smoothing weighs each new estimate (0..1). Default 0.2.
	Smoothing float64
	// ShortWindow and LongWindow are the moving averages' lengths in
	// samples. Default 10 and 2000: the long one is the baseline, and must
	// outlast an overload (at ~100 samples/s, ~20 s).
	ShortWindow, LongWindow int
}

// DefaultActiveRunLimit is a gateway's adaptive limit on its unfinished
// runs (Config.ActiveRunLimit) under a fixed maximum: it starts at 128 and
// moves between 8 and max (each at most max), shrinking once the mean run
// takes 1.3× its baseline (a mean at 1.3× kept the p99 within 2× in the overload scenario; 1.5× let it reach 2.2×).
func DefaultActiveRunLimit(max int) AdaptiveLimitConfig {
	return AdaptiveLimitConfig{Initial: min(128, max), Min: min(8, max), Max: max, Tolerance: 1.3}
}

// NewAdaptiveLimit returns a limit at cfg.Initial.
func NewAdaptiveLimit(cfg AdaptiveLimitConfig) *AdaptiveLimit {
	if cfg.Initial < 1 {
		cfg.Initial = 1
	}
	if cfg.Min < 1 {
		cfg.Min = 1
	}
	if cfg.Max < cfg.Min {
		cfg.Max = max(cfg.Initial, cfg.Min)
	}
	if cfg.Tolerance <= 1 {
		cfg.Tolerance = 2
	}
	if cfg.Smoothing <= 0 || cfg.Smoothing > 1 {
		cfg.Smoothing = 0.2
	}
	if cfg.ShortWindow < 1 {
		cfg.ShortWindow = 10
	}
	if cfg.LongWindow <= cfg.ShortWindow {
		cfg.LongWindow = max(2000, cfg.ShortWindow*10)
	}
	return &AdaptiveLimit{cfg: cfg, limit: float64(min(max(cfg.Initial, cfg.Min), cfg.Max))}
}

// Limit is the current limit.
func (l *AdaptiveLimit) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit)
}

// Latency is the short-run average of the durations sampled (0 before any).
func (l *AdaptiveLimit) Latency() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return time.Duration(l.raw * float64(time.Second))
}

// Sample feeds one completed unit of work's latency, with inflight the
// work in flight when it completed, and returns the new limit.
func (l *AdaptiveLimit) Sample(d time.Duration, inflight int) int {
	if d <= 0 {
		return l.Limit()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observeRaw(d.Seconds())
	return l.sample(d.Seconds(), inflight)
}

// SampleFor is Sample for work of a kind (key: a model, a profile) whose
// durations differ from other kinds': the limit follows d relative to the
// kind's own baseline (a mean that follows faster samples within
// ShortWindow and slower ones over 10 × LongWindow samples, like Vegas'
// minimum latency), so a mix of short and long work does not read as a
// change of latency, and the limit shrinks once the recent mean ratio
// passes Tolerance. The first sample of a kind sets its baseline. Use one
// of Sample and SampleFor on a limit, not both.
func (l *AdaptiveLimit) SampleFor(key string, d time.Duration, inflight int) int {
	if d <= 0 {
		return l.Limit()
	}
	s := d.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.observeRaw(s)
	b, ok := l.base[key]
	switch {
	case !ok && len(l.base) >= maxLimitKeys:
		return l.sample(s, inflight)
	case !ok:
		if l.base == nil {
			l.base = map[string]float64{}
		}
		b = s
	case s < b:
		b = ewma(b, s, l.cfg.ShortWindow)
	default:
		b = ewma(b, s, baselineRise*l.cfg.LongWindow)
	}
	l.base[key] = b
	l.keyed = true
	return l.sample(s/b, inflight)
}

// baselineRise is how much slower than LongWindow a kind's baseline
// follows slower samples (SampleFor): an overload of a few minutes must
// not become the new normal.
const baselineRise = 10

func (l *AdaptiveLimit) observeRaw(s float64) {
	if l.raw == 0 {
		l.raw = s
		return
	}
	l.raw = ewma(l.raw, s, l.cfg.ShortWindow)
}

// sample moves the limit with one sample s; l.mu is held.
func (l *AdaptiveLimit) sample(s float64, inflight int) int {
	l.n++
	if l.n == 1 {
		l.short, l.long = s, s
		return int(l.limit)
	}
	l.short = ewma(l.short, s, l.cfg.ShortWindow)
	l.long = ewma(l.long, s, l.cfg.LongWindow)
	if l.keyed {
		// Ratios to baselines that fall with the fastest samples and rise
		// only slowly: the reference is the baseline itself, so an
		// overload cannot drift into the reference as a long mean would.
		l.long = 1
	}
	if l.long > 2*l.short {
		l.long *= 0.95 // latency fell well below the baseline: follow it down quickly
	}
	gradient := max(0.5, min(1, l.cfg.Tolerance*l.long/l.short))
	if gradient == 1 && float64(inflight) < l.limit/2 {
		return int(l.limit) // app-limited: no evidence the node could take more
	}
	next := l.limit*gradient + math.Sqrt(l.limit)
	if gradient < 1 {
		next = l.limit * gradient // overloaded: no queue allowance
	}
	next = l.limit*(1-l.cfg.Smoothing) + next*l.cfg.Smoothing
	l.limit = min(float64(l.cfg.Max), max(float64(l.cfg.Min), next))
	return int(l.limit)
}

func ewma(avg, x float64, window int) float64 {
	a := 2 / (float64(window) + 1)
	return avg + a*(x-avg)
}
