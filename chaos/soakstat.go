package main

import (
	"math"
	"slices"
)

// This file is the soak suite's verdict: pure functions of the samples (no
// I/O, no clock), tested in soakstat_test.go.

// seriesKind is what a sampled series measures; its floor is the smallest
// projected growth over the analysis window that may be called a leak,
// whatever the relative figures say (a process with 12 open files that opens
// 3 more is not leaking).
type seriesKind struct {
	name  string  // CSV column and table name
	unit  string  // "MiB" or "" (a count)
	scale float64 // divide by it to print in unit
	floor float64 // in the series' own unit (bytes, count)
}

var (
	kindRSS        = seriesKind{name: "rss", unit: "MiB", scale: 1 << 20, floor: 8 << 20}
	kindHeap       = seriesKind{name: "heap_inuse", unit: "MiB", scale: 1 << 20, floor: 4 << 20}
	kindGoroutines = seriesKind{name: "goroutines", scale: 1, floor: 20}
	kindFDs        = seriesKind{name: "open_fds", scale: 1, floor: 10}
	soakKinds      = []seriesKind{kindRSS, kindHeap, kindGoroutines, kindFDs}
)

// The thresholds of the leak test (see leakVerdict).
const (
	// leakGrowth: a series whose fitted line rises by more than this share
	// of its mean over the analysis window trends upward. A leak of any
	// rate crosses it once the run is long enough (the 1-hour run sees 20×
	// what the 3-minute one does); steady-state noise (GC saw-tooth, streams
	// opening and closing) has no slope, however long the run.
	leakGrowth = 0.20
	// leakT: the slope must be this many standard errors above zero. The
	// samples are autocorrelated (a second apart), which inflates t, hence
	// a high bar; R² below guards the same thing from the other side.
	leakT = 3.0
	// leakR2: the line must explain this share of the variance: a leak is
	// a trend, a noisy plateau with one high stretch is not.
	leakR2 = 0.5
	// leakTail: the last half of the window must still rise by this share
	// of the mean. A leak keeps growing; a step in the first half (a cache
	// filling up, a pool reaching its size) is flat afterwards and passes.
	leakTail = 0.05
	// minSamples: fewer samples in the window (a replacement node started
	// late, a node drained early) are reported, not judged.
	minSamples = 30
	// settleShare, settleSlack: after the load stops, the goroutines of a
	// process must fall to at most settleShare × their level just after
	// warm-up (under load) + settleSlack.
	settleShare = 1.10
	settleSlack = 10
)

// trend is a least-squares line through a series: v ≈ intercept + slope·t.
type trend struct {
	n                int
	mean             float64
	slope, intercept float64 // slope per second
	r2               float64 // share of the variance the line explains (0 for a constant series)
	t                float64 // slope / its standard error (+Inf for an exact rising line)
	span             float64 // t_last − t_first, seconds
}

// growth is the fitted rise over the window as a share of the mean (0 for a
// series whose mean is not positive).
func (tr trend) growth() float64 {
	if tr.mean <= 0 {
		return 0
	}
	return tr.slope * tr.span / tr.mean
}

// fitTrend fits the least-squares line through (ts[i], vs[i]); ts ascending
// seconds. Fewer than three points give a zero trend with n set.
func fitTrend(ts, vs []float64) trend {
	n := min(len(ts), len(vs))
	tr := trend{n: n}
	if n < 3 {
		if n > 0 {
			tr.mean = mean(vs[:n])
		}
		return tr
	}
	mt, mv := mean(ts[:n]), mean(vs[:n])
	var sxx, sxy, sst float64
	for i := 0; i < n; i++ {
		dt, dv := ts[i]-mt, vs[i]-mv
		sxx += dt * dt
		sxy += dt * dv
		sst += dv * dv
	}
	tr.mean, tr.span = mv, ts[n-1]-ts[0]
	if sxx == 0 {
		return tr
	}
	tr.slope = sxy / sxx
	tr.intercept = mv - tr.slope*mt
	var ssr float64
	for i := 0; i < n; i++ {
		r := vs[i] - (tr.intercept + tr.slope*ts[i])
		ssr += r * r
	}
	if sst > 0 {
		tr.r2 = 1 - ssr/sst
	}
	se := math.Sqrt(ssr / float64(n-2) / sxx)
	switch {
	case se > 0:
		tr.t = tr.slope / se
	case tr.slope > 0:
		tr.t = math.Inf(1)
	case tr.slope < 0:
		tr.t = math.Inf(-1)
	}
	return tr
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// median of xs (0 for none); xs is not changed.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// verdict is one series' judgement.
type verdict int

const (
	verdictOK    verdict = iota
	verdictShort         // too few samples in the window: not judged
	verdictLeak          // trends upward
)

func (v verdict) String() string {
	switch v {
	case verdictShort:
		return "not judged (short)"
	case verdictLeak:
		return "**LEAK**"
	}
	return "ok"
}

// leakVerdict judges one series of the analysis window (the samples after
// warm-up, while the load runs). It is a leak when all of these hold:
//
//  1. the fitted line rises by more than leakGrowth (20 %) of the series'
//     mean over the window, and by more than the kind's floor in absolute
//     terms;
//  2. the slope is significant: t > leakT (3) and R² ≥ leakR2 (0.5), so a
//     noisy flat series or a GC saw-tooth does not pass for a trend;
//  3. the last half of the window, fitted alone, still rises by more than
//     leakTail (5 %) of the mean: growth that has stopped (a step up in the
//     first half — a pool or cache reaching its size) is not a leak. A step
//     in the last half fails: from inside the window it cannot be told from
//     the start of a leak (a longer run tells).
//
// Fewer than minSamples samples: verdictShort.
func leakVerdict(k seriesKind, ts, vs []float64) (verdict, trend) {
	tr := fitTrend(ts, vs)
	if tr.n < minSamples {
		return verdictShort, tr
	}
	if tr.growth() <= leakGrowth || tr.slope*tr.span <= k.floor || tr.t <= leakT || tr.r2 < leakR2 {
		return verdictOK, tr
	}
	h := tr.n / 2
	tail := fitTrend(ts[h:tr.n], vs[h:tr.n])
	if tr.mean <= 0 || tail.slope*tail.span/tr.mean <= leakTail {
		return verdictOK, tr
	}
	return verdictLeak, tr
}

// settled says whether a process's goroutines came back after the load:
// final ≤ settleShare × level + settleSlack, where level is their count
// just after warm-up (under load: every stream then holds goroutines that
// must be gone once the load has stopped).
func settled(level, final float64) bool {
	return final <= settleShare*level+settleSlack
}
