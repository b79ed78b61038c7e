package gateway

import (
	"math/bits"
	"strings"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// A run's steps as its log tells them: one fold of the log serves the run
// resource's "steps" (runs.go) and the ledger's per-step usage rows
// (usage.go), so what a reader sees and what a tenant is billed agree.
//
// Every event of a step is keyed by its step id (stepOf): parallel steps'
// events interleave in the log, and nothing here assumes one step at a
// time.

// stepFold is one step while the log is folded.
type stepFold struct {
	id       string
	stage    messages.Stage
	model    string // the current (last started) attempt's model
	provider string
	status   string // pending, running, restarted, completed, skipped, failed, cancelled
	final    bool
	inputs   []string
	min      int
	layer    int

	attempts int32
	restarts int
	fallback bool
	note     string // the last stage_started's note
	tokens   int64  // streamed by the current attempt
	prompt   int64  // the current attempt's prompt_tokens (0: not counted)
	text     strings.Builder
	output   string // a completed step's output (text is then unused)
	done     bool   // output holds the text
	ttft     time.Duration
	duration time.Duration
	skipped  *skipView
	ranking  []rankView
	notes    []noteView

	started time.Time // the first attempt's start
	billed  bool      // some usage was billed to it
	bill    store.StageUsage
	usage   usageView // billed, summed (Estimated if any part was)
}

// runFold is a run's log folded into its steps.
type runFold struct {
	strategy string
	steps    []*stepFold
	byID     map[string]*stepFold
	ranking  []rankView // the council's aggregate ranking
	lastSeq  uint64

	// Only when folding for billing or the resource's status.
	status   string // running, completed, failed, cancelled
	answer   string
	usage    *messages.Usage
	err      *runError
	firstAt  time.Time // the first token_delta's time
	endedAt  time.Time
	withText bool
	prices   *stagework.Config
}

// newRunFold starts a fold with the profile's steps (nil: none known
// until the log names them); a run_planned event replaces them.
func newRunFold(p *stagework.Profile, prices *stagework.Config, withText bool) *runFold {
	f := &runFold{status: "running", byID: map[string]*stepFold{}, withText: withText, prices: prices}
	if p == nil {
		return f
	}
	f.strategy = p.Strategy
	if f.strategy == "" {
		f.strategy = stagework.StrategyChain
	}
	for _, sp := range p.Stages {
		f.add(&stepFold{id: sp.StepID(), stage: messages.Stage(sp.Stage), model: sp.Model, provider: sp.Provider,
			final: sp.Final, inputs: sp.Inputs, min: sp.MinInputs, layer: sp.Layer})
	}
	return f
}

func (f *runFold) add(s *stepFold) *stepFold {
	s.status = "pending"
	if s.inputs == nil {
		s.inputs = []string{}
	}
	f.steps = append(f.steps, s)
	f.byID[s.id] = s
	return s
}

// step returns the step an event names, adding one the plan did not have
// (a council's fallback "answer", or a run whose profile is gone).
func (f *runFold) step(id string, stage messages.Stage) *stepFold {
	if s := f.byID[id]; s != nil {
		return s
	}
	return f.add(&stepFold{id: id, stage: stage})
}

// fold reads evs, in seq order, into f.
func (f *runFold) fold(evs []*messages.RunEvent) {
	for _, ev := range evs {
		f.event(ev)
	}
}

func (f *runFold) event(ev *messages.RunEvent) {
	at := ev.GetTime().AsTime()
	f.lastSeq = ev.Seq
	switch k := ev.Kind.(type) {
	case *messages.RunEvent_RunPlanned:
		// The plan the run was started with wins over today's profile.
		f.strategy, f.steps, f.byID = k.RunPlanned.Strategy, nil, map[string]*stepFold{}
		for _, p := range k.RunPlanned.Steps {
			f.add(&stepFold{id: stepOf(p.Step, p.Stage), stage: p.Stage, model: p.Model, provider: p.Provider,
				final: p.Final, inputs: p.Inputs, min: int(p.MinInputs), layer: int(p.Layer)})
		}
	case *messages.RunEvent_StageStarted:
		m := k.StageStarted
		s := f.step(stepOf(m.Step, m.Stage), m.Stage)
		s.status, s.model, s.provider, s.attempts, s.fallback, s.note = "running", m.Model, m.Provider, m.Attempt, m.Fallback, m.Note
		if m.Final {
			s.final = true
		}
		s.tokens, s.prompt, s.done, s.output = 0, m.PromptTokens, false, ""
		s.text.Reset()
		if s.started.IsZero() {
			s.started = at
		}
	case *messages.RunEvent_TokenDelta:
		m := k.TokenDelta
		s := f.step(stepOf(m.Step, m.Stage), m.Stage)
		if f.withText {
			s.text.WriteString(m.Text)
		}
		s.tokens += int64(m.Tokens)
		if f.firstAt.IsZero() {
			f.firstAt = at
		}
	case *messages.RunEvent_StageRestarted:
		m := k.StageRestarted
		s := f.step(stepOf(m.Step, m.Stage), m.Stage)
		f.billStep(s, s.model, m.Usage, at)
		s.status, s.tokens = "restarted", 0
		s.restarts++
		s.text.Reset()
	case *messages.RunEvent_StageCompleted:
		m := k.StageCompleted
		s := f.step(stepOf(m.Step, m.Stage), m.Stage)
		s.status, s.model = "completed", m.Model
		s.output, s.done = m.Output, true
		s.text.Reset()
		s.ttft, s.duration = m.GetTtft().AsDuration(), m.GetDuration().AsDuration()
		f.billStep(s, m.HedgeModel, m.HedgeUsage, at) // the hedge race's loser, at its model's price; then the winner
		f.billStep(s, m.Model, m.Usage, at)
	case *messages.RunEvent_StepSkipped:
		m := k.StepSkipped
		s := f.step(stepOf(m.Step, m.Stage), m.Stage)
		s.status, s.skipped = "skipped", &skipView{Reason: m.Reason, Code: m.Code}
		f.billStep(s, s.model, m.Usage, at)
	case *messages.RunEvent_Ranking:
		m := k.Ranking
		r := make([]rankView, 0, len(m.Ranked))
		for _, e := range m.Ranked {
			r = append(r, rankView{Step: e.Step, Label: e.Label, AverageRank: e.AverageRank, Votes: e.Votes})
		}
		if m.Aggregate {
			f.ranking = r
		} else if m.Step != "" {
			f.step(m.Step, messages.Stage_STAGE_RANKER).ranking = r
		}
	case *messages.RunEvent_StepNote:
		m := k.StepNote
		if s := f.byID[m.Step]; s != nil {
			s.notes = append(s.notes, noteView{Kind: m.Kind, Message: m.Message, Raw: m.Raw})
		}
	case *messages.RunEvent_RunCompleted:
		f.status, f.answer, f.usage, f.endedAt = "completed", k.RunCompleted.Answer, k.RunCompleted.Usage, at
		for _, s := range f.steps {
			if s.status == "running" || s.status == "restarted" {
				s.status = "cancelled" // not waited for (cannot happen today)
			}
		}
	case *messages.RunEvent_RunFailed:
		m := k.RunFailed
		f.status, f.endedAt = "failed", at
		f.err = &runError{Message: m.Reason, Code: m.Code, Stage: stageString(m.Stage)}
		var failed *stepFold
		if m.Step != "" || m.Stage != messages.Stage_STAGE_UNSPECIFIED {
			failed = f.step(stepOf(m.Step, m.Stage), m.Stage)
			f.err.Step = failed.id
		}
		f.billRunning(m.Usage, m.StepUsage, failed, at)
		for _, s := range f.steps {
			switch {
			case s == failed:
				s.status = "failed"
			case s.status == "running" || s.status == "restarted":
				s.status = "cancelled" // stopped with the run
				if f.strategy == stagework.StrategyChain || f.strategy == "" {
					s.status = "failed" // a chain's one running stage is the one that failed
				}
			}
		}
	case *messages.RunEvent_RunCancelled:
		f.status, f.endedAt = "cancelled", at
		f.err = &runError{Message: k.RunCancelled.Reason, Code: "cancelled"}
		f.billRunning(k.RunCancelled.Usage, k.RunCancelled.StepUsage, nil, at)
		for _, s := range f.steps {
			if s.status == "running" || s.status == "restarted" {
				s.status = "cancelled"
			}
		}
	}
}

// billStep bills u, used by step s's attempt on model, at its model's price.
func (f *runFold) billStep(s *stepFold, model string, u *messages.Usage, at time.Time) {
	if u == nil {
		return
	}
	s.billed = true
	b := &s.bill
	b.Step, b.Stage = s.id, stageString(s.stage)
	if model != "" {
		b.Model = model
	}
	b.Provider = s.provider
	b.PromptTokens += u.PromptTokens
	b.CompletionTokens += u.CompletionTokens
	if f.prices != nil {
		if p, ok := f.prices.Price(model); ok {
			b.CostUSD += p.Cost(stagework.Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens})
		}
	}
	if !s.started.IsZero() && !at.IsZero() {
		b.DurationMS = at.Sub(s.started).Milliseconds()
	}
	s.usage.PromptTokens += u.PromptTokens
	s.usage.CompletionTokens += u.CompletionTokens
	s.usage.TotalTokens += u.TotalTokens
	s.usage.Estimated = s.usage.Estimated || u.Estimated
}

// billRunning bills what a run's end cut off (RunFailed's and
// RunCancelled's usage: the sum of every running step's void attempt) to
// the steps that were running: exactly by per (the coordinator's split)
// when the log has it; else (logs from before it) split by what each had
// used as far as the log tells (its prompt_tokens, the tokens it
// streamed), evenly when that is nothing, so the rows add up to it
// exactly. With no step running it goes to failed, else to the step
// started last.
func (f *runFold) billRunning(u *messages.Usage, per []*messages.StepUsage, failed *stepFold, at time.Time) {
	if u == nil {
		return
	}
	if len(per) > 0 {
		for _, p := range per {
			s := f.step(stepOf(p.Step, p.Stage), p.Stage)
			f.billStep(s, s.model, p.Usage, at)
		}
		return
	}
	var running []*stepFold
	for _, s := range f.steps {
		if s.status == "running" {
			running = append(running, s)
		}
	}
	if len(running) == 0 {
		switch {
		case failed != nil:
			running = []*stepFold{failed}
		default:
			var last *stepFold
			for _, s := range f.steps {
				if !s.started.IsZero() && (last == nil || !s.started.Before(last.started)) {
					last = s
				}
			}
			if last == nil {
				return
			}
			running = []*stepFold{last}
		}
	}
	if len(running) == 1 {
		f.billStep(running[0], running[0].model, u, at)
		return
	}
	pw, cw := make([]int64, len(running)), make([]int64, len(running))
	for i, s := range running {
		pw[i], cw[i] = s.prompt, s.tokens
	}
	prompt, completion := split(u.PromptTokens, pw), split(u.CompletionTokens, cw)
	for i, s := range running {
		f.billStep(s, s.model, &messages.Usage{PromptTokens: prompt[i], CompletionTokens: completion[i],
			TotalTokens: prompt[i] + completion[i], Estimated: true}, at)
	}
}

// split divides total into shares proportional to weights (evenly if they
// are all 0), exactly: the shares add up to total. Negative values count
// as 0.
func split(total int64, weights []int64) []int64 {
	out := make([]int64, len(weights))
	if total <= 0 || len(weights) == 0 {
		return out
	}
	var sum uint64
	w := make([]uint64, len(weights))
	for i, x := range weights {
		if x > 0 {
			w[i] = uint64(x)
			sum += w[i]
		}
	}
	if sum == 0 {
		for i := range w {
			w[i] = 1
		}
		sum = uint64(len(w))
	}
	left := total
	for i := range w {
		hi, lo := bits.Mul64(uint64(total), w[i])
		q, _ := bits.Div64(hi, lo, sum) // w[i] <= sum, so q <= total: no overflow
		out[i] = int64(q)
		left -= out[i]
	}
	for i := 0; left > 0; i = (i + 1) % len(out) {
		if w[i] > 0 {
			out[i]++
			left--
		}
	}
	return out
}

// rows is the ledger's per-step usage: one row per step that was billed,
// in plan order (steps the plan did not have last).
func (f *runFold) rows() []store.StageUsage {
	var out []store.StageUsage
	for _, s := range f.steps {
		if s.billed {
			r := s.bill
			r.Status = s.status
			out = append(out, r)
		}
	}
	return out
}

// skipView says why a step was left out (step_skipped).
type skipView struct {
	Reason string `json:"reason"`
	Code   string `json:"code"` // failed, deadline, no_inputs
}

// rankView is one answer's place in a ranking.
type rankView struct {
	Step        string  `json:"step"`
	Label       string  `json:"label"`
	AverageRank float64 `json:"average_rank"`
	Votes       int32   `json:"votes"`
}

// noteView is a step_note.
type noteView struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Raw     string `json:"raw,omitempty"`
}

// stepView is one step of the run resource (docs/api.md).
type stepView struct {
	ID         string     `json:"id"`
	Stage      string     `json:"stage"`
	Title      string     `json:"title"`
	Model      string     `json:"model"`
	Provider   string     `json:"provider"`
	Status     string     `json:"status"`
	Final      bool       `json:"final"`
	Inputs     []string   `json:"inputs"`
	MinInputs  int        `json:"min_inputs"`
	Layer      int        `json:"layer"`
	Attempts   int32      `json:"attempts"`
	Restarts   int        `json:"restarts"`
	Fallback   bool       `json:"fallback"`
	Tokens     int64      `json:"tokens"`
	Output     string     `json:"output"`
	TTFTMs     float64    `json:"ttft_ms"`
	DurationMs float64    `json:"duration_ms"`
	Usage      *usageView `json:"usage,omitempty"`
	CostUSD    float64    `json:"cost_usd"`
	Note       string     `json:"note,omitempty"`
	Skipped    *skipView  `json:"skipped,omitempty"`
	Ranking    []rankView `json:"ranking,omitempty"`
	Notes      []noteView `json:"notes,omitempty"`
}

// views is the resource's steps.
func (f *runFold) views() []stepView {
	out := make([]stepView, 0, len(f.steps))
	for _, s := range f.steps {
		v := stepView{ID: s.id, Stage: stageString(s.stage), Title: stepTitle(s.id, s.stage), Model: s.model, Provider: s.provider,
			Status: s.status, Final: s.final, Inputs: s.inputs, MinInputs: s.min, Layer: s.layer, Attempts: s.attempts,
			Restarts: s.restarts, Fallback: s.fallback, Tokens: s.tokens, TTFTMs: millis(s.ttft), DurationMs: millis(s.duration),
			CostUSD: s.bill.CostUSD, Note: s.note, Skipped: s.skipped, Ranking: s.ranking, Notes: s.notes}
		if s.done {
			v.Output = s.output
		} else {
			v.Output = s.text.String()
		}
		if s.billed {
			u := s.usage
			v.Usage = &u
		}
		out = append(out, v)
	}
	return out
}

// stepTitle is a step's display name: its role's title, with the step's
// number when the role has several ("Proposer 1.2", "Member 3"), else
// the title alone ("Aggregator", "Curator").
func stepTitle(id string, stage messages.Stage) string {
	st := stagework.Stage(stage)
	title := st.Title()
	if !st.Valid() {
		title = id
	}
	if len(id) > 1 && id != st.String() && strings.Trim(id[1:], "0123456789.") == "" {
		return title + " " + id[1:]
	}
	return title
}
