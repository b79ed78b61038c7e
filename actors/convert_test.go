package actors

import (
	"strings"
	"testing"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// TestStageNumberingIsShared guards the rule convert.go relies on: each
// stage of stagework's table has the same value in messages.Stage, under the
// proto name STAGE_<NAME>, and the proto has no stage the table lacks.
func TestStageNumberingIsShared(t *testing.T) {
	for _, in := range stagework.StageTable() {
		m := toMsgStage(in.Stage)
		if got, want := m.String(), "STAGE_"+strings.ToUpper(in.Name); got != want {
			t.Errorf("%s is %s in messages, want %s", in.Name, got, want)
		}
		if toWorkStage(m) != in.Stage || stageName(m) != in.Name {
			t.Errorf("%s: round trip %v, name %q", in.Name, toWorkStage(m), stageName(m))
		}
	}
	if n := len(messages.Stage_name) - 1; n != stagework.NumStages { // less STAGE_UNSPECIFIED
		t.Errorf("messages.Stage has %d stages, stagework's table %d", n, stagework.NumStages)
	}
}
