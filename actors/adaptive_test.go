package actors

import (
	"testing"
	"time"
)

// TestAdaptiveLimitShrinksWhenLatencyRises: a node whose stage attempts
// take 4× longer than its baseline (CPU starvation) lowers its limit to
// the minimum side; when latency comes back, the limit grows again while
// the node uses it.
func TestAdaptiveLimitShrinksWhenLatencyRises(t *testing.T) {
	l := NewAdaptiveLimit(AdaptiveLimitConfig{Initial: 32, Min: 2, Max: 64})
	for range 200 {
		l.Sample(800*time.Millisecond, 30)
	}
	steady := l.Limit()
	if steady < 32 {
		t.Fatalf("a busy node at its baseline latency lowered its limit to %d", steady)
	}
	for range 30 {
		l.Sample(3200*time.Millisecond, steady)
	}
	starved := l.Limit()
	if starved >= steady/2 {
		t.Fatalf("limit %d after 30 samples at 4× the baseline; want below half of %d", starved, steady)
	}
	for range 200 {
		l.Sample(800*time.Millisecond, l.Limit())
	}
	if got := l.Limit(); got <= starved {
		t.Fatalf("limit stayed at %d after latency recovered (starved %d)", got, starved)
	}
}

// TestAdaptiveLimitIdleDoesNotGrow: samples from a node that uses few of
// its slots do not raise the limit (no evidence it could take more).
func TestAdaptiveLimitIdleDoesNotGrow(t *testing.T) {
	l := NewAdaptiveLimit(AdaptiveLimitConfig{Initial: 10, Max: 100})
	for range 500 {
		l.Sample(100*time.Millisecond, 1)
	}
	if got := l.Limit(); got != 10 {
		t.Fatalf("idle node's limit = %d, want 10", got)
	}
}

// TestAdaptiveLimitBounds: the limit never leaves [Min, Max], and a lasting
// change of workload (every sample 3× slower for good) settles instead of
// pinning the limit at Min for ever.
func TestAdaptiveLimitBounds(t *testing.T) {
	l := NewAdaptiveLimit(AdaptiveLimitConfig{Initial: 8, Min: 2, Max: 16})
	for range 1000 {
		if got := l.Sample(50*time.Millisecond, 16); got < 2 || got > 16 {
			t.Fatalf("limit %d outside [2, 16]", got)
		}
	}
	if got := l.Limit(); got != 16 {
		t.Fatalf("limit %d after a long busy healthy stretch, want Max 16", got)
	}
	for range 3000 {
		if got := l.Sample(150*time.Millisecond, l.Limit()); got < 2 || got > 16 {
			t.Fatalf("limit %d outside [2, 16]", got)
		}
	}
	if got := l.Limit(); got <= 2 {
		t.Fatalf("limit pinned at %d after the workload got slower for good", got)
	}
}

// TestAdaptiveLimitMixedWork: a busy node alternating short (100 ms) and
// long (2 s) work of two kinds keeps its limit (SampleFor compares each
// kind with its own baseline); when both kinds get 3× slower, it shrinks.
func TestAdaptiveLimitMixedWork(t *testing.T) {
	l := NewAdaptiveLimit(AdaptiveLimitConfig{Initial: 32, Min: 2, Max: 32})
	for i := range 400 {
		if i%2 == 0 {
			l.SampleFor("fast", 100*time.Millisecond, 32)
		} else {
			l.SampleFor("slow", 2*time.Second, 32)
		}
	}
	if got := l.Limit(); got != 32 {
		t.Fatalf("mixed work at steady latency moved the limit to %d", got)
	}
	if got := l.Latency(); got <= 100*time.Millisecond || got >= 2*time.Second {
		t.Fatalf("Latency %v is not an average of the raw durations", got)
	}
	for i := range 40 {
		if i%2 == 0 {
			l.SampleFor("fast", 300*time.Millisecond, 32)
		} else {
			l.SampleFor("slow", 6*time.Second, 32)
		}
	}
	if got := l.Limit(); got >= 16 {
		t.Fatalf("limit %d after both kinds got 3× slower, want below 16", got)
	}
}
