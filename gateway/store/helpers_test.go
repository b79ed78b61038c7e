package store

import (
	"crypto/sha256"
	"path/filepath"
	"testing"
	"time"
)

// openTemp opens a fresh store in a test directory and closes it at the end.
func openTemp(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(filepath.Join(tb.TempDir(), "gw.db"))
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// base is a fixed instant with a nanosecond part, so exact round trips are
// visible.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// at returns base plus d.
func at(d time.Duration) time.Time { return base.Add(d) }

// hashOf returns the SHA-256 of key, as the gateway stores it.
func hashOf(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// usageOf returns a completed usage record of runID with plausible figures
// derived from tokens. Its costs are whole micro-dollars, which the store
// keeps exactly (computing tokens*0.000002 in float64 would give values with
// more than nine decimals, which it rounds).
func usageOf(runID, tenant string, admitted time.Time, tokens int64) Usage {
	return Usage{
		RunID:            runID,
		TenantID:         tenant,
		Profile:          "fast",
		Status:           StatusCompleted,
		AdmittedAt:       admitted,
		EndedAt:          admitted.Add(1500*time.Millisecond + 7),
		PromptTokens:     tokens / 3,
		CompletionTokens: tokens - tokens/3,
		TotalTokens:      tokens,
		CostUSD:          float64(2*tokens) / 1e6,
		TTFTMS:           120,
		DurationMS:       1500,
		Stages: []StageUsage{
			{Stage: "draft", Model: "m1", Provider: "p1", PromptTokens: tokens / 3, CompletionTokens: tokens - tokens/3, CostUSD: float64(2*tokens) / 1e6, DurationMS: 1500},
		},
	}
}
