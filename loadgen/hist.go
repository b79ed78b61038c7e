package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// histSubBits sets a Hist's precision: 2^histSubBits buckets per power of
// two, so a recorded value is known to within 1/256 (0.4 %) of itself.
const histSubBits = 8

// Hist is a log-linear histogram of durations (nanoseconds), in the manner
// of HdrHistogram: exact below 512 ns, then 256 buckets per power of two.
// Its memory grows with the range of values recorded (at most ~14 K
// counters for the whole int64 range), never with their number, so an ITL
// histogram of millions of tokens stays small. Count, sum, min and max are
// exact; quantiles are within 0.4 %. The zero value is ready to use. A
// Hist is not safe for concurrent use.
type Hist struct {
	counts   []int64
	n        int64
	sum      float64 // nanoseconds
	min, max int64
}

func histIndex(v int64) int {
	if v < 1<<(histSubBits+1) {
		return int(v)
	}
	shift := bits.Len64(uint64(v)) - histSubBits - 1
	return shift<<histSubBits + int(v>>shift)
}

// histValue is the middle of bucket i.
func histValue(i int) int64 {
	if i < 1<<(histSubBits+1) {
		return int64(i)
	}
	shift := i>>histSubBits - 1
	m := int64(i - shift<<histSubBits)
	return m<<shift + (int64(1)<<shift)/2
}

// Record adds one value.
func (h *Hist) Record(d time.Duration) { h.RecordN(d, 1) }

// RecordN adds a value n times (a token-weighted gap: see Result).
func (h *Hist) RecordN(d time.Duration, n int64) {
	if n <= 0 {
		return
	}
	v := max(int64(d), 0)
	i := histIndex(v)
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]int64, i+1-len(h.counts)+64)...)
	}
	h.counts[i] += n
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n += n
	h.sum += float64(v) * float64(n)
}

// Merge adds every value of o.
func (h *Hist) Merge(o *Hist) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]int64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of values recorded.
func (h *Hist) Count() int64 { return h.n }

// Mean is the exact mean (0 when empty).
func (h *Hist) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Min and Max are exact (0 when empty).
func (h *Hist) Min() time.Duration { return time.Duration(h.min) }

// Max: see Min.
func (h *Hist) Max() time.Duration { return time.Duration(h.max) }

// Quantile is the value at quantile q (0..1): the smallest recorded value
// v such that at least q of the values are ≤ v, to within 0.4 % (the
// exact min and max at the ends).
func (h *Hist) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q <= 0 {
		return time.Duration(h.min)
	}
	if q >= 1 {
		return time.Duration(h.max)
	}
	rank := int64(math.Ceil(q * float64(h.n)))
	var seen int64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(histValue(i), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}

// CDFPoint is one step of a cumulative distribution: the fraction of
// values at or below Value.
type CDFPoint struct {
	Value    time.Duration
	Fraction float64
}

// CDF returns the distribution at every non-empty bucket, thinned to at
// most maxPoints (the last point, fraction 1, is always kept).
func (h *Hist) CDF(maxPoints int) []CDFPoint {
	if h.n == 0 {
		return nil
	}
	var pts []CDFPoint
	var seen int64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		seen += c
		v := min(max(histValue(i), h.min), h.max)
		if seen == h.n {
			v = h.max // the last point is the exact max
		}
		pts = append(pts, CDFPoint{time.Duration(v), float64(seen) / float64(h.n)})
	}
	if maxPoints > 1 && len(pts) > maxPoints {
		thin := make([]CDFPoint, 0, maxPoints)
		step := float64(len(pts)-1) / float64(maxPoints-1)
		for k := 0; k < maxPoints; k++ {
			thin = append(thin, pts[int(math.Round(float64(k)*step))])
		}
		pts = thin
	}
	return pts
}
