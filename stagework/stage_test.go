package stagework

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestStageTable(t *testing.T) {
	want := []struct {
		s            Stage
		name, title  string
		roleNotEmpty bool
	}{
		{StageGenerator, "generator", "Generator", true},
		{StageRefiner, "refiner", "Refiner", true},
		{StageValidator, "validator", "Validator", true},
		{StageCurator, "curator", "Curator", true},
	}
	table := StageTable()
	if len(table) != len(want) || len(Stages) != len(want) {
		t.Fatalf("StageTable has %d entries, Stages %d, want %d", len(table), len(Stages), len(want))
	}
	for i, w := range want {
		in := table[i]
		if in.Stage != w.s || in.Name != w.name || in.Title != w.title || in.Role == "" || Stages[i] != w.s {
			t.Errorf("entry %d = %+v (Stages[%d] = %v), want %v %s %s with a role", i, in, i, Stages[i], w.s, w.name, w.title)
		}
		if int(w.s) != i+1 {
			t.Errorf("%s = %d, want %d (the values match messages.Stage)", w.name, int(w.s), i+1)
		}
		if got, ok := w.s.Info(); !ok || got != in {
			t.Errorf("%v.Info() = %+v, %v", w.s, got, ok)
		}
		if !w.s.Valid() || w.s.String() != w.name || w.s.Title() != w.title {
			t.Errorf("%d: Valid %v String %q Title %q", int(w.s), w.s.Valid(), w.s.String(), w.s.Title())
		}
	}
	// A copy: changing it changes nothing else.
	table[0].Name = "changed"
	if StageGenerator.String() != "generator" || StageTable()[0].Name != "generator" {
		t.Error("StageTable returned shared state")
	}
	b, err := json.Marshal(StageTable()[3])
	if err != nil || string(b) != `{"name":"curator","title":"Curator","role":"writes the final answer from all of it"}` {
		t.Errorf("JSON of a table entry: %s, %v", b, err)
	}
}

func TestStageOutsideTheTable(t *testing.T) {
	for _, s := range []Stage{0, -1, Stage(NumStages + 1), 99} {
		if s.Valid() {
			t.Errorf("%d is valid", int(s))
		}
		if _, ok := s.Info(); ok {
			t.Errorf("%d has an entry", int(s))
		}
	}
	if Stage(0).String() != "stage(0)" || Stage(99).Title() != "Stage(99)" {
		t.Errorf("String %q Title %q", Stage(0).String(), Stage(99).Title())
	}
}

func TestRolesBesideTheChain(t *testing.T) {
	if len(Stages) != 4 || len(StageTable()) != 4 {
		t.Fatalf("the chain has 4 stages: Stages %v, StageTable %d", Stages, len(StageTable()))
	}
	for _, s := range Stages {
		if !s.Chain() {
			t.Errorf("%s is not a chain stage", s)
		}
	}
	roles := RoleTable()
	if len(roles) != NumStages {
		t.Fatalf("RoleTable has %d entries, NumStages %d", len(roles), NumStages)
	}
	for _, in := range roles[4:] {
		if in.Stage.Chain() || !in.Stage.Valid() {
			t.Errorf("%s: Chain %v Valid %v", in.Name, in.Stage.Chain(), in.Stage.Valid())
		}
		if got, err := ParseStage(in.Name); err != nil || got != in.Stage {
			t.Errorf("ParseStage(%q) = %v, %v", in.Name, got, err)
		}
	}
}

func TestParseStageAndText(t *testing.T) {
	for _, name := range []string{"refiner", "Refiner", "REFINER"} {
		if s, err := ParseStage(name); err != nil || s != StageRefiner {
			t.Errorf("ParseStage(%q) = %v, %v", name, s, err)
		}
	}
	if _, err := ParseStage("editor"); !errors.Is(err, ErrUnknownStage) {
		t.Errorf("ParseStage(editor): %v", err)
	}
	// JSON map keys and values round-trip through MarshalText/UnmarshalText.
	in := map[Stage]Stage{StageGenerator: StageCurator}
	b, err := json.Marshal(in)
	if err != nil || string(b) != `{"generator":"curator"}` {
		t.Fatalf("marshal: %s, %v", b, err)
	}
	var out map[Stage]Stage
	if err := json.Unmarshal(b, &out); err != nil || out[StageGenerator] != StageCurator {
		t.Errorf("unmarshal: %v, %v", out, err)
	}
	var s Stage
	if err := json.Unmarshal([]byte(`"nope"`), &s); !errors.Is(err, ErrUnknownStage) {
		t.Errorf("unmarshal of a bad name: %v", err)
	}
}
