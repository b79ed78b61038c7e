package main

import (
	"math"
	"testing"
)

func TestRefusalHistogram(t *testing.T) {
	before := readHistogram(`# TYPE qlc_refusal_seconds histogram
qlc_refusal_seconds_bucket{at="door",status="503",le="0.0001"} 5
qlc_refusal_seconds_bucket{at="door",status="503",le="0.005"} 5
qlc_refusal_seconds_bucket{at="door",status="503",le="+Inf"} 5
`, "qlc_refusal_seconds")
	after := readHistogram(`qlc_refusal_seconds_bucket{at="door",status="503",le="0.0001"} 100
qlc_refusal_seconds_bucket{at="door",status="503",le="0.005"} 104
qlc_refusal_seconds_bucket{at="door",status="503",le="+Inf"} 105
qlc_refusal_seconds_bucket{at="handler",status="429",le="0.0001"} 0
qlc_refusal_seconds_bucket{at="handler",status="429",le="0.005"} 0
qlc_refusal_seconds_bucket{at="handler",status="429",le="+Inf"} 0
qlc_refusal_seconds_sum 1
qlc_other_bucket{le="0.0001"} 7
`, "qlc_refusal_seconds")
	d := after.sub(before)
	if le, n := d.quantile(0.5); le != 0.0001 || n != 100 {
		t.Fatalf("p50 %v of %v", le, n)
	}
	if le, _ := d.quantile(0.99); le != 0.005 {
		t.Fatalf("p99 %v", le)
	}
	if le, _ := d.quantile(1); !math.IsInf(le, 1) {
		t.Fatalf("max %v", le)
	}
	handler := readHistogram(`qlc_refusal_seconds_bucket{at="door",status="503",le="0.005"} 104
qlc_refusal_seconds_bucket{at="handler",status="503",le="0.005"} 3
qlc_refusal_seconds_bucket{at="handler",status="503",le="1"} 9
qlc_refusal_seconds_bucket{at="handler",status="503",le="+Inf"} 9
`, "qlc_refusal_seconds", `at="handler"`)
	if n := handler.atMost(0.005); n != 3 {
		t.Fatalf("handler's refusals within 5 ms: %v, want 3", n)
	}
	if _, n := handler.quantile(1); n != 9 {
		t.Fatalf("handler's refusals: %v, want 9", n)
	}
	if le, n := (histogram{}).quantile(0.99); le != 0 || n != 0 {
		t.Fatalf("empty: %v %v", le, n)
	}
}

func TestSchedStatOfThisProcess(t *testing.T) {
	s := readSchedStat("self")
	if s.cpu <= 0 {
		t.Skip("no /proc/self/task/*/schedstat here (not Linux, or schedstats off)")
	}
	if d := s.describe(s.cpu * 2); d == "" {
		t.Fatal("no description")
	}
}
