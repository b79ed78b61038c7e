package stagework

import (
	"errors"
	"fmt"
	"strings"
)

// Stage is one step of the consensus pipeline. The values match messages.Stage.
type Stage int

// The four stages, in pipeline order.
const (
	StageGenerator Stage = iota + 1 // drafts a first answer
	StageRefiner                    // deepens and corrects the draft
	StageValidator                  // checks facts, logic and code; lists problems
	StageCurator                    // writes the final answer from all of it
)

// Stages lists the pipeline's stages in order.
var Stages = []Stage{StageGenerator, StageRefiner, StageValidator, StageCurator}

var stageNames = map[Stage]string{
	StageGenerator: "generator",
	StageRefiner:   "refiner",
	StageValidator: "validator",
	StageCurator:   "curator",
}

// ErrUnknownStage is returned by ParseStage for a name that is not a stage.
var ErrUnknownStage = errors.New("stagework: unknown stage")

// String is the stage's lower-case name, as used in profiles, JSON and metrics.
func (s Stage) String() string {
	if n, ok := stageNames[s]; ok {
		return n
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// Title is the stage's display name ("Generator").
func (s Stage) Title() string {
	n := s.String()
	return strings.ToUpper(n[:1]) + n[1:]
}

// ParseStage maps a stage name (any case) to its Stage.
func ParseStage(name string) (Stage, error) {
	for s, n := range stageNames {
		if strings.EqualFold(n, name) {
			return s, nil
		}
	}
	return 0, fmt.Errorf("%w %q", ErrUnknownStage, name)
}

// MarshalText writes the stage's name (for JSON and YAML map keys and values).
func (s Stage) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a stage's name.
func (s *Stage) UnmarshalText(b []byte) error {
	v, err := ParseStage(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
