package actors

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/qlc-project/qlc/stagework"
)

// A run's completed stage attempts are in the GenAI metrics, by model and
// stage: one operation, TTFT and token usage sample per stage.
func TestGenAIMetricsPerModelAndStage(t *testing.T) {
	e, reg := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "How do Go channels work?", Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, h, 1)
	for _, tt := range []struct{ model, stage string }{{"g", "generator"}, {"r", "refiner"}, {"v", "validator"}, {"c", "curator"}} {
		if n := samples(t, e.metrics.genaiDuration.WithLabelValues("chat", tt.model, tt.stage)); n != 1 {
			t.Errorf("%s/%s: %d duration samples, want 1", tt.model, tt.stage, n)
		}
		if n := samples(t, e.metrics.genaiTokens.WithLabelValues("output", tt.model, tt.stage)); n != 1 {
			t.Errorf("%s/%s: %d output token usage samples, want 1", tt.model, tt.stage, n)
		}
	}
	got, err := testutil.GatherAndCount(reg, "gen_ai_client_operation_duration_seconds", "gen_ai_server_time_to_first_token_seconds", "gen_ai_client_token_usage")
	if err != nil || got != 4+4+8 {
		t.Errorf("GenAI series: %d (%v), want 4 durations, 4 TTFTs, 8 token usages", got, err)
	}
}

// samples is a histogram's sample count.
func samples(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	var m dto.Metric
	if err := o.(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestModelLabelsAreBounded(t *testing.T) {
	var l modelLabels
	for i := range maxModelLabels {
		if got := l.of(fmt.Sprint("m", i)); got != fmt.Sprint("m", i) {
			t.Fatalf("model %d reported as %q", i, got)
		}
	}
	if got := l.of("one-too-many"); got != "other" {
		t.Errorf("model beyond the bound reported as %q", got)
	}
	if got := l.of("m0"); got != "m0" {
		t.Errorf("a known model reported as %q", got)
	}
}

// qlc_stage_restarts_total has every stage's series at 0 before any
// restart (Prometheus's increase() misses a series born at 1: the
// dashboard's first restart after a start would not show).
func TestStageRestartSeriesStartAtZero(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewMetrics(reg)
	want := "# HELP qlc_stage_restarts_total Stages whose streamed text was voided and redone.\n# TYPE qlc_stage_restarts_total counter\n"
	for _, r := range stagework.RoleTable() {
		want += fmt.Sprintf("qlc_stage_restarts_total{stage=%q} 0\n", r.Name)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "qlc_stage_restarts_total"); err != nil {
		t.Errorf("before any restart: %v", err)
	}
}
