package cli

import (
	"testing"

	"github.com/qlc-project/qlc/actors"
)

// -stage-cpu-target: a share turns the adaptive stage slots on with that
// target; 0 (or below) keeps them fixed; above 1 is refused.
func TestStageCapacityFlag(t *testing.T) {
	var cfg actors.Config
	if err := StageCapacity(&cfg, 0.7); err != nil || !cfg.AdaptiveStageSlots || cfg.StageCapacity.TargetCPU != 0.7 {
		t.Fatalf("0.7: %v %+v", err, cfg.StageCapacity)
	}
	cfg = actors.Config{}
	if err := StageCapacity(&cfg, 0); err != nil || cfg.AdaptiveStageSlots {
		t.Fatalf("0: %v adaptive=%v", err, cfg.AdaptiveStageSlots)
	}
	if err := StageCapacity(&cfg, 1.5); err == nil {
		t.Fatal("1.5 accepted")
	}
	t.Setenv("QLC_TEST_FLOAT", "0.25")
	if got := EnvFloat("QLC_TEST_FLOAT", 0.85); got != 0.25 {
		t.Fatalf("EnvFloat: %v", got)
	}
	t.Setenv("QLC_TEST_FLOAT", "x")
	if got := EnvFloat("QLC_TEST_FLOAT", 0.85); got != 0.85 {
		t.Fatalf("EnvFloat of a bad value: %v, want the default", got)
	}
}
