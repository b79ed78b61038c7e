package loadgen

import (
	"fmt"
	"time"

	"github.com/qlc-project/qlc/client"
)

// Outcomes of a request.
const (
	// OutcomeOK: the run completed (the chat stream ended with [DONE]).
	OutcomeOK = "ok"
	// OutcomeError: refused, failed, cut off, or its stream was not
	// gap-free; Result.Code says which.
	OutcomeError = "error"
	// OutcomeCancelled: a cancel probe whose run was cancelled, as meant.
	OutcomeCancelled = "cancelled"
	// OutcomeInterrupted: still going when the load stopped (Ctrl-C, or
	// Drain ran out); neither a success nor an error.
	OutcomeInterrupted = "interrupted"
)

// Result is what one request measured. Times are milliseconds; every
// latency is counted from the request's scheduled send (in a closed loop,
// its actual send), and every arrival is stamped when the bytes were read,
// before any JSON parsing (client.Event.Received).
//
// Definitions (docs: README, "qlc-load"):
//   - TTFTAnyMs: the first non-empty text of any step (a QLC run's first
//     stage's first token; a chat stream's first content or reasoning).
//   - TTFTMs: the first non-empty text of the answer: the run's final step
//     (a chain's curator, a moa's aggregator, …), or a chat stream's first
//     non-empty delta.content (a role-only or reasoning chunk is not it).
//   - E2EMs: the run's terminal event (run_completed, run_failed,
//     run_cancelled); for a chat stream its last chunk before [DONE] (the
//     finish or usage chunk: [DONE] adds nothing).
//   - ITL (in the report's histogram, not per request): within each step,
//     the gap between two consecutive token-bearing events; an event with
//     k tokens that came g after the step's previous one counts as k
//     gaps of g/k. A step's first event is its TTFT, never an ITL gap.
//   - TPOTMs: (E2E − TTFT) / (AnswerTokens − 1), when AnswerTokens ≥ 2.
//   - Tokens: every token streamed (all steps, restarted attempts too),
//     from the events' "tokens" fields — the server's count of what the
//     model sent; for a chat stream, the local tokenizer's count of the
//     content and reasoning text (Config.Tokenizer). AnswerTokens: the
//     final step's (its last attempt's). UsageTokens: the server's
//     usage.completion_tokens at the end (for QLC, every step's).
type Result struct {
	Index       int     `json:"i"`
	Mix         string  `json:"mix"`
	RunID       string  `json:"run_id,omitempty"`
	Outcome     string  `json:"outcome"`
	Code        string  `json:"code,omitempty"`
	Error       string  `json:"error,omitempty"`
	ScheduledMs float64 `json:"scheduled_ms"`
	// QueueMs is how late the request went out: its actual send minus its
	// scheduled send (an open loop's MaxInFlight, or a busy load
	// generator); it is part of every latency.
	QueueMs      float64 `json:"queue_ms"`
	TTFTAnyMs    float64 `json:"ttft_any_ms,omitempty"`
	TTFTMs       float64 `json:"ttft_ms,omitempty"`
	E2EMs        float64 `json:"e2e_ms,omitempty"`
	TPOTMs       float64 `json:"tpot_ms,omitempty"`
	Tokens       int64   `json:"tokens"`
	AnswerTokens int64   `json:"answer_tokens"`
	UsageTokens  int64   `json:"usage_completion_tokens,omitempty"`
	Events       int     `json:"events"`
	Reconnects   int     `json:"reconnects,omitempty"`
	// Probe is "cancel" or "reconnect" for a probed request.
	Probe string `json:"probe,omitempty"`
	// CancelToEndMs: a cancel probe's DELETE sent → its stream's end.
	CancelToEndMs float64 `json:"cancel_to_end_ms,omitempty"`
	// SeqGaps counts seqs missing or repeated in a run's stream.
	SeqGaps int `json:"seq_gaps,omitempty"`
	// EndMs is when the request ended, from the load's start.
	EndMs float64 `json:"end_ms"`

	itl Hist // this request's ITL gaps, merged into the report's
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// stepClock is what a measure keeps per step: when its last token came.
type stepClock struct {
	last time.Time // zero before the attempt's first token
}

// measure turns one request's stream into a Result. It does no I/O and
// reads no clock: every time comes with the events. Used by one goroutine.
type measure struct {
	res   *Result
	sched time.Time

	finalStep string
	steps     map[string]*stepClock

	first, firstAnswer, end time.Time
	ended                   bool // a terminal event, or [DONE]
	cancelled               bool // it ended as cancelled (run_cancelled)

	lastSeq  uint64
	partEnd  int // bytes of lastSeq's split delta received; -1: complete
	onTokens func(at time.Time, n int64)
}

func newMeasure(res *Result, sched time.Time, onTokens func(time.Time, int64)) *measure {
	return &measure{res: res, sched: sched, steps: map[string]*stepClock{}, partEnd: -1, onTokens: onTokens}
}

func (m *measure) fail(code, msg string) {
	if m.res.Outcome == OutcomeError {
		return // the first error says why
	}
	m.res.Outcome, m.res.Code, m.res.Error = OutcomeError, code, msg
}

// checkSeq counts a gap or a repeat in a run's log: each seq exactly once,
// in order, a split delta's parts back to back.
func (m *measure) checkSeq(ev *client.Event) {
	first := ev.Seq
	if ev.FromSeq != 0 {
		first = ev.FromSeq
	}
	switch {
	case ev.Part != nil && ev.Part.Offset > 0:
		if ev.Seq != m.lastSeq || ev.Part.Offset != m.partEnd {
			m.res.SeqGaps++
		}
	case m.partEnd >= 0 || first != m.lastSeq+1:
		m.res.SeqGaps++
	}
	m.lastSeq, m.partEnd = ev.Seq, -1
	if ev.Part != nil && ev.Part.End < ev.Part.Size {
		m.partEnd = ev.Part.End
	}
}

func (m *measure) step(id string) *stepClock {
	s := m.steps[id]
	if s == nil {
		s = &stepClock{}
		m.steps[id] = s
	}
	return s
}

// token notes k tokens (and text) of step s arriving at t.
func (m *measure) token(s *stepClock, answer bool, t time.Time, text bool, k int64) {
	if text || k > 0 {
		if m.first.IsZero() {
			m.first = t
		}
		if answer && m.firstAnswer.IsZero() {
			m.firstAnswer = t
		}
	}
	if k <= 0 {
		return // a split delta's leading part: text, its tokens come with the last part
	}
	if !s.last.IsZero() {
		m.res.itl.RecordN(t.Sub(s.last)/time.Duration(k), k)
	}
	s.last = t
	m.res.Tokens += k
	if answer {
		m.res.AnswerTokens += k
	}
	if m.onTokens != nil {
		m.onTokens(t, k)
	}
}

// runEvent takes one event of a run's log; it reports whether the log
// ended.
func (m *measure) runEvent(ev *client.Event) bool {
	m.res.Events++
	if ev.Type != client.EventLagged {
		m.checkSeq(ev)
	}
	switch ev.Type {
	case client.EventRunPlanned:
		for _, p := range ev.Steps {
			if p.Final {
				m.finalStep = p.Step
			}
		}
	case client.EventStageStarted, client.EventStageRestarted:
		if ev.Type == client.EventStageStarted && ev.Final {
			m.finalStep = ev.Step
		}
		if ev.Step == m.finalStep || (m.finalStep == "" && ev.Step == "curator") {
			m.res.AnswerTokens = 0 // a new attempt: the answer is its text
		}
		m.step(ev.Step).last = time.Time{}
	case client.EventTokenDelta:
		answer := ev.Step == m.finalStep || (m.finalStep == "" && ev.Step == "curator")
		m.token(m.step(ev.Step), answer, ev.Received, ev.Text != "", ev.Tokens)
	case client.EventRunCompleted, client.EventRunFailed, client.EventRunCancelled:
		m.end, m.ended = ev.Received, true
		if ev.Usage != nil {
			m.res.UsageTokens = ev.Usage.CompletionTokens
		}
		switch ev.Type {
		case client.EventRunFailed:
			code := ev.Code
			if code == "" {
				code = "run_failed"
			}
			m.fail(code, "run failed: "+ev.Reason)
		case client.EventRunCancelled:
			m.cancelled = true
			if m.res.Probe != "cancel" {
				m.fail("run_cancelled", "run cancelled: "+ev.Reason)
			}
		}
		return true
	}
	return false
}

// chatChunk takes one chunk of a chat stream, with its tokens counted by
// count; it reports whether the stream ended.
func (m *measure) chatChunk(c *client.ChatChunk, count func(string) int) bool {
	if c.Done {
		m.ended = true
		return true
	}
	m.res.Events++
	if c.Err != nil {
		m.end, m.ended = c.Received, true
		if c.Err.Code == "run_cancelled" {
			m.cancelled = true
			if m.res.Probe == "cancel" {
				return true
			}
		}
		m.fail(c.Err.Code, "stream error: "+c.Err.Message)
		return true
	}
	if c.Reasoning != "" {
		m.token(m.step("reasoning"), false, c.Received, true, int64(max(count(c.Reasoning), 1)))
	}
	if c.Content != "" {
		m.token(m.step("answer"), true, c.Received, true, int64(max(count(c.Content), 1)))
	}
	if c.Usage != nil {
		m.res.UsageTokens = c.Usage.CompletionTokens
	}
	m.end = c.Received // the last chunk before [DONE] ends it
	return false
}

// finish fills the Result's latencies; streamErr is how the stream ended
// if not by its own end (nil when it did).
func (m *measure) finish(streamErr error) {
	r := m.res
	if !m.ended && r.Outcome != OutcomeError && r.Outcome != OutcomeInterrupted {
		code := "stream_lost"
		if streamErr == nil {
			streamErr = fmt.Errorf("the stream ended before the run did")
			code = "incomplete_stream"
		}
		m.fail(code, streamErr.Error())
	}
	if r.SeqGaps > 0 {
		m.fail("seq_gap", fmt.Sprintf("%d seqs missing or repeated in the stream", r.SeqGaps))
	}
	if r.Outcome == "" {
		r.Outcome = OutcomeOK
	}
	if !m.first.IsZero() {
		r.TTFTAnyMs = ms(m.first.Sub(m.sched))
	}
	if !m.firstAnswer.IsZero() {
		r.TTFTMs = ms(m.firstAnswer.Sub(m.sched))
	}
	if m.ended && !m.end.IsZero() {
		r.E2EMs = ms(m.end.Sub(m.sched))
		if r.AnswerTokens >= 2 && !m.firstAnswer.IsZero() {
			r.TPOTMs = ms(m.end.Sub(m.firstAnswer)) / float64(r.AnswerTokens-1)
		}
	}
}
