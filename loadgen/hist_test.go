package loadgen

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// The histogram against exact sorted samples (the reference): every
// quantile within its 1/256 precision, count, mean, min and max exact.
func TestHistAgainstExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := 0; trial < 50; trial++ {
		var h Hist
		n := 1 + rng.IntN(5000)
		vals := make([]int64, n)
		var sum float64
		for i := range vals {
			// Log-uniform from 1 ns to 100 s, and some exact zeros.
			v := int64(math.Pow(10, rng.Float64()*11))
			if rng.IntN(50) == 0 {
				v = 0
			}
			vals[i] = v
			sum += float64(v)
			h.Record(time.Duration(v))
		}
		slices.Sort(vals)
		if h.Count() != int64(n) || h.Min() != time.Duration(vals[0]) || h.Max() != time.Duration(vals[n-1]) {
			t.Fatalf("count %d min %v max %v; want %d %v %v", h.Count(), h.Min(), h.Max(), n, vals[0], vals[n-1])
		}
		if got, want := float64(h.Mean()), sum/float64(n); math.Abs(got-want) > want*1e-9+1 {
			t.Fatalf("mean %v, want %v", got, want)
		}
		for _, q := range []float64{0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
			want := vals[max(int(math.Ceil(q*float64(n)))-1, 0)]
			got := int64(h.Quantile(q))
			if math.Abs(float64(got-want)) > float64(want)/256+1 {
				t.Fatalf("trial %d n %d q %v: %d, want %d", trial, n, q, got, want)
			}
		}
	}
}

func TestHistRecordNMergeCDF(t *testing.T) {
	var a, b, both Hist
	a.RecordN(10*time.Millisecond, 3)
	b.Record(time.Second)
	both.RecordN(10*time.Millisecond, 3)
	both.Record(time.Second)
	a.Merge(&b)
	if a.Count() != 4 || a.Quantile(0.75) != both.Quantile(0.75) || a.Mean() != both.Mean() || a.Max() != time.Second {
		t.Fatalf("merged: count %d p75 %v mean %v", a.Count(), a.Quantile(0.75), a.Mean())
	}
	cdf := a.CDF(10)
	if len(cdf) != 2 || cdf[0].Fraction != 0.75 || cdf[1].Fraction != 1 || cdf[1].Value != time.Second ||
		math.Abs(float64(cdf[0].Value-10*time.Millisecond)) > float64(10*time.Millisecond)/256 {
		t.Fatalf("cdf %v", cdf)
	}
	var e Hist
	if e.Quantile(0.5) != 0 || e.CDF(5) != nil || e.Mean() != 0 {
		t.Fatal("an empty histogram is not empty")
	}
	e.RecordN(time.Second, 0) // nothing
	if e.Count() != 0 {
		t.Fatal("RecordN with 0")
	}
}

func TestSchedule(t *testing.T) {
	s := NewSchedule(ArrivalConstant, 4, 1)
	for i := 0; i < 5; i++ {
		if got := s.Next(); got != time.Duration(i)*250*time.Millisecond {
			t.Fatalf("send %d at %v", i, got)
		}
	}
	// Poisson: reproducible from the seed, increasing, mean gap 1/rate.
	p1, p2 := NewSchedule(ArrivalPoisson, 50, 7), NewSchedule(ArrivalPoisson, 50, 7)
	var last time.Duration
	const n = 20000
	for i := 0; i < n; i++ {
		a, b := p1.Next(), p2.Next()
		if a != b || a < last {
			t.Fatalf("send %d: %v and %v after %v", i, a, b, last)
		}
		last = a
	}
	if mean := last.Seconds() / n; math.Abs(mean-0.02) > 0.02*0.03 {
		t.Fatalf("mean gap %v s, want 0.02 s", mean)
	}
}
