package main

import (
	"strings"
	"testing"
)

func TestSummary(t *testing.T) {
	if s := summary([]float64{3, 1, 2}); s.Med != 2 || s.Min != 1 || s.Max != 3 || s.format(0) != "2 (1–3)" {
		t.Fatalf("odd: %+v %q", s, s.format(0))
	}
	if s := summary([]float64{4, 1, 2, 3}); s.Med != 2.5 {
		t.Fatalf("even: %+v", s)
	}
	if s := summary([]float64{54000, 53000}); s.format(0) != "53.5 k (53.0 k–54.0 k)" {
		t.Fatalf("thousands: %q", s.format(0))
	}
	if s := summary([]float64{7}); s.format(1) != "7.0" || summary(nil).format(1) != "–" {
		t.Fatal("one value, none")
	}
}

// The table has a row per configuration and target that ran, and the
// comparison checks the goals at 1000 readers and the paced rate.
func TestFanTableAndGoals(t *testing.T) {
	var rs []roundResult
	for round := 1; round <= 3; round++ {
		rs = append(rs,
			roundResult{Target: "QLC", Mode: modePaced, Readers: 1000, Round: round, DeliveriesPerS: 100_000, P99ms: 50, CPUPerDelivery: 1},
			roundResult{Target: "Centrifugo", Mode: modePaced, Readers: 1000, Round: round, DeliveriesPerS: 50_000 + float64(round), P99ms: 80, CPUPerDelivery: 3,
				SourceRate: 44, SourceLagMs: 7000},
			roundResult{Target: "QLC", Mode: modeFull, Readers: 1000, Round: round, DeliveriesPerS: 1e6, P99ms: 90, CPUPerDelivery: 0.1, Lost: 1},
		)
	}
	rows := groupRounds(rs, []int{100, 1000}, []string{modePaced, modeFull}, []string{"QLC", "Centrifugo"})
	if len(rows) != 3 || rows[0].Target != "QLC" || rows[1].Target != "Centrifugo" || rows[2].Mode != modeFull || len(rows[0].Rounds) != 3 {
		t.Fatalf("rows: %+v", rows)
	}
	var b strings.Builder
	writeFanTable(&b, rows, 100)
	if out := b.String(); strings.Count(out, "\n") != 5 || !strings.Contains(out, "| 1000 | full speed | QLC | 1000.0 k |") || !strings.Contains(out, "| 3 of 3000 |") ||
		!strings.Contains(out, "| 44, last sent 7.0 s late |") {
		t.Fatalf("table:\n%s", out)
	}
	b.Reset()
	writeComparisons(&b, rows)
	if out := b.String(); !strings.Contains(out, "goals (≥ 2×, ≤ 0.5×, p99 below): NOT met, met, met") || strings.Count(out, "\n") != 1 {
		t.Fatalf("comparisons:\n%s", out)
	}
}
