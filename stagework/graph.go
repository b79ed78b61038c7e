package stagework

import (
	"fmt"
	"strings"
	"time"
)

// StepState is where one step of a run stands.
type StepState uint8

const (
	StepPending StepState = iota // not started: waits for its inputs
	StepRunning                  // an attempt is under way
	StepDone                     // finished; its output is kept
	StepLeft                     // left out: failed, or stopped past its deadline
)

// Graph is the state of one run's steps: which can start, which ran past
// their deadline and may be left out, and whether the run can still
// finish. It decides; the caller (a run's coordinator) acts and reports
// back (Start, Finish, LeaveOut). Not safe for concurrent use.
type Graph struct {
	p       *Profile
	index   map[string]int
	state   []StepState
	started []time.Time
	model   []string
	output  []string
	reason  []string // why a step was left out
	readers [][]int  // readers[i]: the steps that read step i
}

// NewGraph returns the graph of p's steps, all pending.
func NewGraph(p *Profile) *Graph {
	n := len(p.Stages)
	g := &Graph{p: p, index: make(map[string]int, n), state: make([]StepState, n), started: make([]time.Time, n),
		model: make([]string, n), output: make([]string, n), reason: make([]string, n), readers: make([][]int, n)}
	for i, sp := range p.Stages {
		g.index[sp.StepID()] = i
		for _, in := range sp.Inputs {
			if j, ok := g.index[in]; ok {
				g.readers[j] = append(g.readers[j], i)
			}
		}
	}
	return g
}

// Steps returns the profile's steps (shared; do not modify).
func (g *Graph) Steps() []StageSpec { return g.p.Stages }

// Spec returns the step with the given id.
func (g *Graph) Spec(id string) (StageSpec, bool) {
	i, ok := g.index[id]
	if !ok {
		return StageSpec{}, false
	}
	return g.p.Stages[i], true
}

// State returns a step's state (StepPending for an unknown id).
func (g *Graph) State(id string) StepState {
	if i, ok := g.index[id]; ok {
		return g.state[i]
	}
	return StepPending
}

// Output returns a finished step's output and the model that wrote it.
func (g *Graph) Output(id string) (text, model string, ok bool) {
	i, found := g.index[id]
	if !found || g.state[i] != StepDone {
		return "", "", false
	}
	return g.output[i], g.model[i], true
}

// Reason returns why a step was left out ("" if it was not).
func (g *Graph) Reason(id string) string {
	if i, ok := g.index[id]; ok && g.state[i] == StepLeft {
		return g.reason[i]
	}
	return ""
}

// Start marks a step running since at (a redo after a failover or a
// mid-stream failure starts it again: its deadline counts from at).
func (g *Graph) Start(id string, at time.Time) {
	if i, ok := g.index[id]; ok && (g.state[i] == StepPending || g.state[i] == StepRunning) {
		g.state[i], g.started[i] = StepRunning, at
	}
}

// Finish marks a step done with its output.
func (g *Graph) Finish(id, model, output string) {
	if i, ok := g.index[id]; ok && g.state[i] != StepLeft {
		g.state[i], g.model[i], g.output[i] = StepDone, model, output
	}
}

// LeaveOut marks a step left out, with a reason people can act on.
func (g *Graph) LeaveOut(id, reason string) {
	if i, ok := g.index[id]; ok && g.state[i] != StepDone {
		g.state[i], g.reason[i] = StepLeft, reason
	}
}

// Done reports whether the final step has finished.
func (g *Graph) Done() bool {
	n := len(g.state)
	return n > 0 && g.state[n-1] == StepDone
}

// Answer is the final step's output.
func (g *Graph) Answer() string {
	if n := len(g.state); n > 0 {
		return g.output[n-1]
	}
	return ""
}

// Next says what to do now: the pending steps whose inputs are all
// finished or left out, in profile order (start them), and the running
// steps past their deadline that every reader can do without (stop them
// and leave them out, then call Next again). err is non-nil when a
// step can never run — fewer than its MinInputs inputs finished — and
// says which inputs did not and why: the run fails with it.
func (g *Graph) Next(now time.Time) (start, cut []string, err error) {
	for i, sp := range g.p.Stages {
		switch g.state[i] {
		case StepPending:
			resolved, done := true, 0
			for _, in := range sp.Inputs {
				switch g.state[g.index[in]] {
				case StepDone:
					done++
				case StepPending, StepRunning:
					resolved = false
				}
			}
			if !resolved {
				continue
			}
			if done < sp.MinInputs {
				return nil, nil, g.shortOf(sp, done)
			}
			start = append(start, sp.StepID())
		case StepRunning:
			if g.overdue(i, now) {
				cut = append(cut, sp.StepID())
			}
		}
	}
	return start, cut, nil
}

// overdue reports whether running step i is past its deadline and every
// step that reads it has enough other finished inputs to go on without it
// (at least one, and at least its MinInputs).
func (g *Graph) overdue(i int, now time.Time) bool {
	sp := g.p.Stages[i]
	if sp.Deadline <= 0 || now.Before(g.started[i].Add(sp.Deadline)) || len(g.readers[i]) == 0 {
		return false
	}
	for _, r := range g.readers[i] {
		done := 0
		for _, in := range g.p.Stages[r].Inputs {
			if g.state[g.index[in]] == StepDone {
				done++
			}
		}
		if done < max(g.p.Stages[r].MinInputs, 1) {
			return false
		}
	}
	return true
}

// NextDeadline is the earliest time a running step's deadline passes
// (zero when no running step has one): the caller calls Next again then.
func (g *Graph) NextDeadline() time.Time {
	var t time.Time
	for i, sp := range g.p.Stages {
		if g.state[i] != StepRunning || sp.Deadline <= 0 || len(g.readers[i]) == 0 {
			continue
		}
		if d := g.started[i].Add(sp.Deadline); t.IsZero() || d.Before(t) {
			t = d
		}
	}
	return t
}

// shortOf explains why sp cannot run: which of its inputs did not finish.
func (g *Graph) shortOf(sp StageSpec, done int) error {
	var left []string
	for _, in := range sp.Inputs {
		if i := g.index[in]; g.state[i] == StepLeft {
			left = append(left, fmt.Sprintf("%s (%s): %s", in, g.p.Stages[i].Model, g.reason[i]))
		}
	}
	return fmt.Errorf("%s needs at least %d of its %d inputs, and %d finished; left out: %s",
		sp.StepID(), sp.MinInputs, len(sp.Inputs), done, strings.Join(left, "; "))
}

// Shown returns the finished steps a step's prompt shows as labelled
// answers, in profile order, and the ones left out: a step's finished
// inputs — for a chairman, the answers its rankers ranked; for a tally,
// the samples (behind its judge).
func (g *Graph) Shown(id string) (shown, left []StepOutput) {
	for _, in := range g.p.Reads(id) {
		i := g.index[in]
		out := StepOutput{ID: in, Role: g.p.Stages[i].Stage, Model: g.p.Stages[i].Model}
		switch g.state[i] {
		case StepDone:
			out.Model, out.Text, out.Label = g.model[i], g.output[i], Label(len(shown))
			shown = append(shown, out)
		case StepLeft:
			out.Reason = g.reason[i]
			left = append(left, out)
		}
	}
	return shown, left
}

// Reads returns the ids of the steps whose outputs step id's prompt shows:
// its inputs — but for a chairman or a tally, which follow steps that read
// the answers (rankers, a judge), those steps' inputs: the answers.
func (p *Profile) Reads(id string) []string {
	sp, ok := p.Step(id)
	if !ok {
		return nil
	}
	if (sp.Stage == StageChairman || sp.Stage == StageTally) && len(sp.Inputs) > 0 {
		if first, ok := p.Step(sp.Inputs[0]); ok && (first.Stage == StageRanker || first.Stage == StageJudge) {
			return first.Inputs
		}
	}
	return sp.Inputs
}

// PromptInput is what step id's prompt is built from: the question and
// history, the chain's earlier outputs (chain stages) or the step's shown
// answers and left-out inputs (strategy steps), and ranking (a chairman).
func (g *Graph) PromptInput(id, query string, history []Message, ranking []RankEntry) PromptInput {
	in := PromptInput{Query: query, History: history}
	sp, ok := g.Spec(id)
	if !ok {
		return in
	}
	if sp.Stage.Chain() {
		in.Outputs = make(map[Stage]string, 3)
		for i, s := range g.p.Stages {
			if g.state[i] == StepDone && s.Stage.Chain() {
				in.Outputs[s.Stage] = g.output[i]
			}
		}
		return in
	}
	in.Inputs, in.Left = g.Shown(id)
	if sp.Stage == StageChairman {
		in.Ranking = ranking
	}
	return in
}
