package main

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// Every value falls in a bucket that contains it, buckets are in order and
// adjacent, and a bucket is narrower than 1/64 of its values.
func TestHistBuckets(t *testing.T) {
	prevHi := uint64(0)
	for i := range histBuckets {
		lo, hi := bucketRange(i)
		if i > 0 && lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, the one before ended at %d", i, lo, prevHi)
		}
		if lo >= histExact && float64(hi-lo+1) > float64(lo)/64 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/64 of its values", i, lo, hi)
		}
		for _, v := range []uint64{lo, hi, lo + (hi-lo)/2} {
			if b := bucketOf(v); b != i {
				t.Fatalf("%d: bucket %d, want %d", v, b, i)
			}
		}
		prevHi = hi
	}
	if prevHi != uint64(histMax) {
		t.Fatalf("the last bucket ends at %d, want %d", prevHi, histMax)
	}
}

// Quantiles agree with the exact ones of a sorted sample within a bucket's
// width (1.6 %), the maximum is exact, merging is adding, and samples out
// of range are kept (clamped) and counted.
func TestHistQuantiles(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var a, b hist
	var all []time.Duration
	for i := range 20000 {
		// Log-uniform from 1 µs to 1 s, as latencies spread.
		d := time.Duration(float64(time.Microsecond) * math.Pow(10, rng.Float64()*6))
		all = append(all, d)
		if i%2 == 0 {
			a.record(d)
		} else {
			b.record(d)
		}
	}
	a.merge(&b)
	slices.Sort(all)
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)))-1]
		got := a.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.02 || diff < -0.02 {
			t.Errorf("q %.3f: %v, exact %v", q, got, exact)
		}
	}
	if a.quantile(1) != all[len(all)-1] || a.n != uint64(len(all)) {
		t.Fatalf("max %v, want %v; n %d", a.quantile(1), all[len(all)-1], a.n)
	}
	var h hist
	h.record(-time.Millisecond)
	h.record(time.Hour)
	if h.neg != 1 || h.over != 1 || h.quantile(0.5) != 0 || h.quantile(1) != time.Hour {
		t.Fatalf("out of range: %+v, p50 %v", h, h.quantile(0.5))
	}
	var empty hist
	if empty.quantile(0.99) != 0 {
		t.Fatal("an empty histogram has no quantile")
	}
}
