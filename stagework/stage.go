package stagework

import (
	"errors"
	"fmt"
	"strings"
)

// Stage is the role of one step of a run: one of the chain's four stages, or
// a role of the parallel strategies (moa, council, vote). The values match
// messages.Stage.
type Stage int

// The roles. The first four are the chain's stages, in pipeline order. Their
// names, titles and roles are in stageTable; nothing else in QLC lists them.
const (
	StageGenerator Stage = iota + 1
	StageRefiner
	StageValidator
	StageCurator
	StageProposer   // moa: answers (layer 1) or re-answers from the previous layer's answers
	StageAggregator // moa: synthesises the last layer's answers into the final one
	StageMember     // council: answers the question
	StageRanker     // council: ranks the members' anonymised answers
	StageChairman   // council: writes the final answer from the answers and the ranking
	StageSample     // vote: one independent sample
	StageJudge      // vote: picks the most consistent sample
	StageTally      // vote (and a council without a chairman): the chosen answer; no model call
)

// StageInfo describes a stage: its name on the wire, its display title and
// its role, for people (the web UI shows them) and for code that must list
// the stages (metrics, usage records).
type StageInfo struct {
	// Stage is the stage's value (equal to its messages.Stage).
	Stage Stage `json:"-"`
	// Name is the lower-case name used in profiles, JSON, metrics and the
	// store ("generator"): Stage.String.
	Name string `json:"name"`
	// Title is the display name ("Generator"): Stage.Title.
	Title string `json:"title"`
	// Role says in a few words what the stage does.
	Role string `json:"role"`
}

// stageTable is the one table of the stages, in pipeline order: entry i is
// Stage i+1. Every other list of stage names (the gateway's JSON, metrics,
// the web UI, Stages) is derived from it.
var stageTable = [...]StageInfo{
	{StageGenerator, "generator", "Generator", "drafts a first answer"},
	{StageRefiner, "refiner", "Refiner", "deepens and corrects the draft"},
	{StageValidator, "validator", "Validator", "checks facts, logic and code; lists problems"},
	{StageCurator, "curator", "Curator", "writes the final answer from all of it"},
	{StageProposer, "proposer", "Proposer", "answers on its own, or from the previous layer's answers"},
	{StageAggregator, "aggregator", "Aggregator", "synthesises the proposers' answers into the final one"},
	{StageMember, "member", "Member", "answers the question for the council"},
	{StageRanker, "ranker", "Ranker", "ranks the members' anonymised answers"},
	{StageChairman, "chairman", "Chairman", "writes the final answer from the answers and their ranking"},
	{StageSample, "sample", "Sample", "one independent sample of an answer"},
	{StageJudge, "judge", "Judge", "picks the most consistent sample"},
	{StageTally, "tally", "Answer", "the chosen answer, by majority or by the judge"},
}

// NumStages is the number of roles; Stage values run from 1 to NumStages.
const NumStages = len(stageTable)

// numChainStages is how many of stageTable's entries are the chain's stages.
const numChainStages = 4

// Stages lists the chain's four stages in pipeline order.
var Stages = func() []Stage {
	out := make([]Stage, numChainStages)
	for i, in := range stageTable[:numChainStages] {
		out[i] = in.Stage
	}
	return out
}()

// Chain reports whether s is one of the chain's four stages.
func (s Stage) Chain() bool { return s >= 1 && int(s) <= numChainStages }

// StageTable returns the chain's stages' names, titles and roles in
// pipeline order (a fresh copy).
func StageTable() []StageInfo { return append([]StageInfo(nil), stageTable[:numChainStages]...) }

// RoleTable returns every role's name, title and description: the chain's
// stages, then the strategies' roles (a fresh copy).
func RoleTable() []StageInfo { return append([]StageInfo(nil), stageTable[:]...) }

// ErrUnknownStage is returned by ParseStage for a name that is not a stage.
var ErrUnknownStage = errors.New("stagework: unknown stage")

// Valid reports whether s is one of the pipeline's stages.
func (s Stage) Valid() bool { return s >= 1 && int(s) <= len(stageTable) }

// Info returns s's entry of the stage table; ok is false for a value that is
// not a stage.
func (s Stage) Info() (info StageInfo, ok bool) {
	if !s.Valid() {
		return StageInfo{}, false
	}
	return stageTable[s-1], true
}

// String is the stage's lower-case name, as used in profiles, JSON and
// metrics; "stage(N)" for a value that is not a stage.
func (s Stage) String() string {
	if s.Valid() {
		return stageTable[s-1].Name
	}
	return fmt.Sprintf("stage(%d)", int(s))
}

// Title is the stage's display name ("Generator"); "Stage(N)" for a value
// that is not a stage.
func (s Stage) Title() string {
	if s.Valid() {
		return stageTable[s-1].Title
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

// ParseStage maps a stage name (any case) to its Stage.
func ParseStage(name string) (Stage, error) {
	for _, in := range stageTable {
		if strings.EqualFold(in.Name, name) {
			return in.Stage, nil
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
