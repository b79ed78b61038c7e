package actors

import (
	"fmt"

	"github.com/qlc-project/qlc/stagework"
)

// reserveOutputOverhead bounds what an earlier stage's output adds to a
// later prompt besides its own tokens (a trim marker, separators).
const reserveOutputOverhead = 16

// Reservation is an upper bound of the tokens (prompt + completion, every
// stage) req can use when no attempt is retried: what a tenant's limiter
// reserves at admission. Stage k's prompt is its template with the question
// and history, plus every earlier stage's whole max_tokens (capped by the
// model's context window); its output is at most its max_tokens (or
// req.MaxTokens). Counting is local (no tokenizer actor round trip); a
// retried or restarted attempt uses more than this, and is billed.
func (e *Engine) Reservation(req RunRequest) (int64, error) { return e.reservation(req, false) }

// reservation is Reservation; exact counts every prompt whole (the
// reference the cheaper count is tested against).
func (e *Engine) reservation(req RunRequest, exact bool) (int64, error) {
	p, err := e.profiles.resolve(req.Profile, req.ProfileDefinition)
	if err != nil {
		return 0, err
	}
	empty := map[stagework.Stage]string{}
	for _, st := range p.Stages {
		empty[st.Stage] = ""
	}
	outOf := map[string]int64{} // each step's output bound
	counters := reserveCounters{query: req.Query, exact: exact, by: map[string]*reserveCounter{}}
	var total, earlier int64
	for _, st := range p.Stages {
		out := int64(st.MaxTokens)
		if req.MaxTokens > 0 {
			out = int64(req.MaxTokens)
		}
		outOf[st.StepID()] = out
		if st.Stage == stagework.StageTally {
			continue // no model call: its text is a sample's, already counted
		}
		in := stagework.PromptInput{Query: req.Query, History: req.History, Outputs: empty}
		if !p.IsChain() {
			// A strategy's step reads only the steps it reads, not every
			// earlier one.
			in.Outputs, earlier = nil, 0
			for i, r := range p.Reads(st.StepID()) {
				in.Inputs = append(in.Inputs, stagework.StepOutput{ID: r, Label: stagework.Label(i)})
				earlier += outOf[r] + reserveOutputOverhead
			}
		}
		spec := st
		spec.MaxTokens = int(out)
		// A fallback may be another model with another tokenizer: count with
		// the larger.
		var prompt int64
		models := []string{st.Model}
		if st.Fallback != nil {
			models = append(models, st.Fallback.Model)
		}
		for _, m := range models {
			spec.Model = m
			counter, err := counters.of(m)
			if err != nil {
				return 0, fmt.Errorf("actors: reservation: %w", err)
			}
			msgs, err := stagework.BuildPrompt(spec, in)
			if err != nil {
				return 0, fmt.Errorf("actors: reservation: %w", err)
			}
			n := int64(stagework.PromptTokens(msgs, counter)) + earlier
			if w := int64(stagework.ContextWindowOf(spec)); w > 0 {
				n = min(n, w-out)
			}
			prompt = max(prompt, n)
		}
		total += prompt + out
		earlier += out + reserveOutputOverhead
	}
	return total, nil
}

// ReservationFloor is a lower bound of Reservation(req) that needs no
// tokenizing: the stages' output tokens (every stage's max_tokens, or
// req.MaxTokens). A gateway asks a tenant's limiter with it before paying
// for the real count (see Admit.precheck).
func (e *Engine) ReservationFloor(req RunRequest) (int64, error) {
	p, err := e.profiles.resolve(req.Profile, req.ProfileDefinition)
	if err != nil {
		return 0, err
	}
	var total int64
	for _, st := range p.Stages {
		if st.Stage == stagework.StageTally {
			continue
		}
		out := int64(st.MaxTokens)
		if req.MaxTokens > 0 {
			out = int64(req.MaxTokens)
		}
		total += out
	}
	return total, nil
}

// reserveCounters holds one reserveCounter per encoding for a reservation:
// the question is counted once per encoding, not once per step and model.
type reserveCounters struct {
	query string
	exact bool
	by    map[string]*reserveCounter
}

func (r reserveCounters) of(model string) (stagework.TokenCounter, error) {
	c, err := counterFor(model)
	if err != nil || r.exact {
		return c, err
	}
	enc := c.(modelCounter).enc.Name()
	rc := r.by[enc]
	if rc == nil {
		rc = newReserveCounter(c, enc, r.query)
		r.by[enc] = rc
	}
	return rc, nil
}
