package main

import (
	"math/bits"
	"time"
)

// hist is a latency histogram in the manner of HDR histograms, with a
// fixed size whatever the number of samples: durations up to 127 ns are
// exact; above, each power of two is split in 64 buckets, so a bucket's
// width is under 1/64 (1.6 %) of its values. Durations above histMax are
// counted in the last bucket (and in over). 2048 buckets of 4 bytes: 8 KiB,
// one per reader, merged at the end (no sharing while readers run).
//
// A hist is not safe for concurrent use.
type hist struct {
	counts [histBuckets]uint32
	n      uint64
	over   uint64 // samples above histMax
	neg    uint64 // negative samples (clock steps), counted as 0
	maxV   time.Duration
}

const (
	histSubBits = 6
	histExact   = 1 << (histSubBits + 1) // 128: values below are their own bucket
	histMaxExp  = 37                     // 2^37 ns ≈ 137 s
	histBuckets = histExact + (histMaxExp-histSubBits-1)*(1<<histSubBits)
	histMax     = time.Duration(1)<<histMaxExp - 1
)

// bucketOf returns v's bucket (v in [0, histMax]).
func bucketOf(v uint64) int {
	if v < histExact {
		return int(v)
	}
	e := bits.Len64(v) // 8..histMaxExp
	sub := (v >> (e - histSubBits - 1)) & (1<<histSubBits - 1)
	return histExact + (e-histSubBits-2)*(1<<histSubBits) + int(sub)
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi uint64) {
	if i < histExact {
		return uint64(i), uint64(i)
	}
	j := i - histExact
	e := j>>histSubBits + histSubBits + 2
	sub := uint64(j & (1<<histSubBits - 1))
	shift := uint(e - histSubBits - 1)
	lo = (1<<histSubBits | sub) << shift
	return lo, lo + 1<<shift - 1
}

// record adds one sample.
func (h *hist) record(d time.Duration) {
	h.n++
	if d < 0 {
		h.neg++
		d = 0
	}
	if d > h.maxV {
		h.maxV = d
	}
	if d > histMax {
		h.over++
		d = histMax
	}
	h.counts[bucketOf(uint64(d))]++
}

// merge adds o's samples to h.
func (h *hist) merge(o *hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.over += o.over
	h.neg += o.neg
	h.maxV = max(h.maxV, o.maxV)
}

// quantile returns the q-quantile (0 < q ≤ 1): the middle of the bucket
// holding the sample of rank ceil(q·n); 0 without samples. The largest
// sample is exact (quantile(1) is the maximum).
func (h *hist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	if q >= 1 {
		return h.maxV
	}
	rank := uint64(q * float64(h.n))
	if float64(rank) < q*float64(h.n) {
		rank++
	}
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			lo, hi := bucketRange(i)
			return min(time.Duration(lo+(hi-lo)/2), h.maxV)
		}
	}
	return h.maxV
}
