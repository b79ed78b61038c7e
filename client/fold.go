package client

import "strings"

// StepState is what a Fold knows of one step.
type StepState struct {
	ID, Stage, Model, Provider string
	Final                      bool
	// Status: pending, running, restarted, completed, skipped, failed, cancelled.
	Status  string
	Attempt int
	// Text is the step's output so far (its current attempt's).
	Text        strings.Builder
	Tokens      int64
	OutputBytes int
	Usage       *Usage
	TTFTMs      float64
	DurationMs  float64
	Reason      string // why it was restarted, skipped or failed
}

// Fold rebuilds a run from its events: every step's text (deltas keyed by
// step, split parts joined, a restart voiding what came before) and the
// answer, as the run resource has them. It does no I/O; feed it the events
// of a Stream in order. A Fold is used by one goroutine.
type Fold struct {
	Strategy string
	Plan     []PlannedStep
	// Order is the steps' ids in the order first seen (planned or started).
	Order []string
	Steps map[string]*StepState
	// FinalStep is the final step's id ("" until known).
	FinalStep string
	// Status is running until the run's terminal event, then completed,
	// failed or cancelled.
	Status string
	// End is the terminal event, once seen.
	End *Event
}

// NewFold returns an empty Fold.
func NewFold() *Fold { return &Fold{Steps: map[string]*StepState{}, Status: "running"} }

func (f *Fold) step(id string) *StepState {
	s := f.Steps[id]
	if s == nil {
		s = &StepState{ID: id, Status: "pending"}
		f.Steps[id] = s
		f.Order = append(f.Order, id)
	}
	return s
}

// Add folds one event in and returns the step it concerns (nil for a
// run-level event).
func (f *Fold) Add(ev Event) *StepState {
	switch ev.Type {
	case EventRunPlanned:
		f.Strategy, f.Plan = ev.Strategy, ev.Steps
		for _, p := range ev.Steps {
			s := f.step(p.Step)
			s.Stage, s.Model, s.Provider, s.Final = p.Stage, p.Model, p.Provider, p.Final
			if p.Final {
				f.FinalStep = p.Step
			}
		}
		return nil
	case EventRunCompleted, EventRunFailed, EventRunCancelled:
		e := ev
		f.End = &e
		f.Status = strings.TrimPrefix(ev.Type, "run_")
		for _, s := range f.Steps {
			if s.Status == "running" || s.Status == "restarted" {
				s.Status = "cancelled"
				if ev.Type == EventRunFailed && ev.Step == s.ID {
					s.Status = "failed"
				}
			}
		}
		return nil
	}
	if ev.Step == "" {
		return nil
	}
	s := f.step(ev.Step)
	if ev.Stage != "" {
		s.Stage = ev.Stage
	}
	switch ev.Type {
	case EventStageStarted:
		s.Model, s.Provider, s.Attempt, s.Status = ev.Model, ev.Provider, ev.Attempt, "running"
		s.Text.Reset()
		s.Tokens = 0
		if ev.Final {
			s.Final, f.FinalStep = true, ev.Step
		}
	case EventTokenDelta:
		s.Text.WriteString(ev.Text)
		s.Tokens += ev.Tokens
	case EventStageCompleted:
		s.Status, s.OutputBytes, s.Usage, s.TTFTMs, s.DurationMs = "completed", ev.OutputBytes, ev.Usage, ev.TTFTMs, ev.DurationMs
	case EventStageRestarted:
		s.Status, s.Reason = "restarted", ev.Reason
		s.Text.Reset()
		s.Tokens = 0
	case EventStepSkipped:
		s.Status, s.Reason = "skipped", ev.Reason
	}
	return s
}

// Answer is the final step's text so far: the run's answer once it
// completed. A chain run names no final step in its events before the
// curator starts; until then the answer is empty.
func (f *Fold) Answer() string {
	if f.FinalStep == "" {
		if s := f.Steps["curator"]; s != nil && f.Strategy == "" {
			return s.Text.String()
		}
		return ""
	}
	return f.Steps[f.FinalStep].Text.String()
}
