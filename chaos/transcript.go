package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

// Event types, as in the API (docs/api.md).
const (
	evRunPlanned     = "run_planned"
	evStageStarted   = "stage_started"
	evTokenDelta     = "token_delta"
	evStageCompleted = "stage_completed"
	evStageRestarted = "stage_restarted"
	evStepSkipped    = "step_skipped"
	evRunCompleted   = "run_completed"
	evRunFailed      = "run_failed"
	evRunCancelled   = "run_cancelled"
	evLagged         = "lagged"
)

// event is one SSE event's data, with the time it was read.
type event struct {
	Seq         uint64 `json:"seq"`
	FromSeq     uint64 `json:"from_seq"`
	Type        string `json:"type"`
	Step        string `json:"step"` // the step's id; absent on older gateways (then the stage names it)
	Stage       string `json:"stage"`
	Final       bool   `json:"final"` // stage_started: the step's text is the run's answer
	Text        string `json:"text"`
	Part        *part  `json:"part"`         // a part of a delta too long for one event
	OutputBytes *int   `json:"output_bytes"` // stage_completed: the length of the step's text
	AnswerBytes *int   `json:"answer_bytes"` // run_completed: the length of the final step's text
	Reason      string `json:"reason"`
	Code        string `json:"code"`
	Attempt     int    `json:"attempt"`
	Fallback    bool   `json:"fallback"`
	NextSeq     uint64 `json:"next_seq"`
	Steps       []struct {
		Step  string `json:"step"`
		Final bool   `json:"final"`
	} `json:"steps"` // run_planned
	Time time.Time `json:"time"` // when the coordinator logged it (the cluster's clock)

	at time.Time
}

// step is the id of the step an event is about: its step, else its stage
// (a chain's stage, or any stage event of a gateway without step ids).
func (e event) step() string {
	if e.Step != "" {
		return e.Step
	}
	return e.Stage
}

// part says which bytes of a split delta's text an event carries.
type part struct{ Offset, End, Size int }

// last reports whether e completes its seq (it is not a part, or the last part).
func (e event) last() bool { return e.Part == nil || e.Part.End >= e.Part.Size }

// resumeAt is the from_seq that resumes after the events read so far: the
// next seq, or "seq:bytes" inside a split delta.
func resumeAt(next uint64, partEnd int) string {
	if partEnd > 0 {
		return fmt.Sprintf("%d:%d", next, partEnd)
	}
	return fmt.Sprint(next)
}

// first is the first seq the event covers (coalesced deltas cover several).
func (e event) first() uint64 {
	if e.FromSeq != 0 {
		return e.FromSeq
	}
	return e.Seq
}

func terminal(t string) bool {
	return t == evRunCompleted || t == evRunFailed || t == evRunCancelled
}

// readSSE parses an SSE stream and calls fn with each event's data until the
// stream ends or fn returns false. Comments, id: and event: lines are
// skipped: the data JSON carries seq and type.
func readSSE(r io.Reader, fn func(event) bool) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var data strings.Builder
	for {
		line, err := br.ReadString('\n')
		if err != nil && line == "" {
			if err == io.EOF {
				return nil
			}
			return err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var ev event
			if jerr := json.Unmarshal([]byte(data.String()), &ev); jerr != nil {
				return fmt.Errorf("chaos: bad event data %q: %w", data.String(), jerr)
			}
			data.Reset()
			ev.at = time.Now()
			if !fn(ev) {
				return nil
			}
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
		if err != nil { // a last line without its newline
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// stepState is where a step is in a transcript.
type stepState int

const (
	stepRunning    stepState = iota + 1 // stage_started: it may stream
	stepRestarting                      // stage_restarted: its text is void until its next stage_started
	stepCompleted
	stepSkipped
)

// transcript is what one reader saw of a run, checked on its own. Every
// step is followed on its own (keyed by step id): parallel steps' deltas
// interleave in the log.
type transcript struct {
	defects  []string             // "kind: detail"
	term     *event               // the terminal event, if any
	text     map[string]string    // per step, after applying stage_restarted
	outputs  map[string]string    // per step, its streamed text when it completed
	state    map[string]stepState // per step seen
	final    string               // the step last announced final (stage_started's final)
	planned  string               // the final step in run_planned
	lastDone string               // the step that completed last
	segments []string             // a signature independent of coalescing
	restarts int
	retries  int // stage_started with attempt > 1
	fallback int // stage_started on the fallback model
}

// answerStep is the step whose text is the run's answer: the one last
// announced final, else the plan's final step, else (a gateway that
// announces neither) the step that completed last — a chain's curator.
func (t *transcript) answerStep() string {
	switch {
	case t.final != "":
		return t.final
	case t.planned != "":
		return t.planned
	}
	return t.lastDone
}

// analyze checks one reader's events: every seq exactly once and in order
// from 1, nothing after the terminal event, deltas only for a running step
// (started, not restarted since, not completed, not skipped), no redo of
// streamed text without a stage_restarted, no completed step started again
// (a failover keeps finished steps), nothing of a step after its
// step_skipped, the parts of a split delta in order, each stage_completed's
// output_bytes equal to the length of the step's streamed text, and
// run_completed's answer_bytes equal to the length of the final step's.
func analyze(evs []event) *transcript {
	t := &transcript{text: map[string]string{}, outputs: map[string]string{}, state: map[string]stepState{}}
	next := uint64(1)
	partEnd := 0 // bytes of seq next received in parts
	segStep := ""
	var seg strings.Builder
	flush := func() {
		if seg.Len() > 0 {
			t.segments = append(t.segments, "Δ "+segStep+": "+seg.String())
			seg.Reset()
		}
	}
	// delta takes a delta's text (or a part of it) for its step; the text
	// of a step that is not running is reported, not counted (one defect,
	// not one more for each check that follows).
	delta := func(e event, what string) {
		id := e.step()
		switch st := t.state[id]; st {
		case stepRunning:
			t.text[id] += e.Text
		case stepSkipped:
			t.defects = append(t.defects, fmt.Sprintf("after-skip: %s for step %s after its step_skipped", what, id))
		default:
			t.defects = append(t.defects, fmt.Sprintf("stray-delta: %s for step %s, which is %s", what, id, st))
		}
		if id != segStep {
			flush()
			segStep = id
		}
		seg.WriteString(e.Text)
	}
	for _, e := range evs {
		if e.Type == evLagged {
			continue // not a log entry
		}
		if t.term != nil {
			t.defects = append(t.defects, fmt.Sprintf("after-terminal: seq %d (%s) after %s at seq %d", e.Seq, e.Type, t.term.Type, t.term.Seq))
			continue
		}
		if e.Part != nil {
			switch {
			case e.Seq < next:
				t.defects = append(t.defects, fmt.Sprintf("duplicate: part %d-%d of seq %d again (expected %d)", e.Part.Offset, e.Part.End, e.Seq, next))
				continue
			case e.Seq > next:
				t.defects = append(t.defects, fmt.Sprintf("missing: seqs %d..%d", next, e.Seq-1))
			case e.Part.Offset < partEnd:
				t.defects = append(t.defects, fmt.Sprintf("duplicate: part %d-%d of seq %d, bytes to %d were read", e.Part.Offset, e.Part.End, e.Seq, partEnd))
				continue
			case e.Part.Offset > partEnd:
				t.defects = append(t.defects, fmt.Sprintf("missing: bytes %d-%d of seq %d", partEnd, e.Part.Offset, e.Seq))
			}
			next, partEnd = e.Seq, e.Part.End
			if !e.last() {
				if e.Type != evTokenDelta {
					t.defects = append(t.defects, fmt.Sprintf("stray-delta: part of seq %d is a %s", e.Seq, e.Type))
				}
				delta(e, fmt.Sprintf("part of seq %d", e.Seq))
				continue
			}
			partEnd = 0
		} else if partEnd > 0 {
			t.defects = append(t.defects, fmt.Sprintf("missing: bytes %d.. of seq %d", partEnd, next))
			next, partEnd = next+1, 0 // reported: not again as a missing seq
		}
		switch first := e.first(); {
		case e.Part != nil:
		case first > next:
			t.defects = append(t.defects, fmt.Sprintf("missing: seqs %d..%d", next, first-1))
		case first < next && e.Seq < next:
			t.defects = append(t.defects, fmt.Sprintf("duplicate: seq %d..%d again (expected %d)", first, e.Seq, next))
			continue
		case first < next:
			t.defects = append(t.defects, fmt.Sprintf("reordered: event %d..%d overlaps (expected %d)", first, e.Seq, next))
		}
		if e.Seq+1 > next {
			next = e.Seq + 1
		}
		if e.Type != evTokenDelta {
			flush()
		}
		id := e.step()
		switch e.Type {
		case evRunPlanned:
			for _, s := range e.Steps {
				if s.Final {
					t.planned = s.Step
				}
			}
			t.segments = append(t.segments, fmt.Sprintf("%d %s %d steps, final %s", e.Seq, e.Type, len(e.Steps), t.planned))
		case evStageStarted:
			switch t.state[id] {
			case stepCompleted:
				t.defects = append(t.defects, fmt.Sprintf("recomputed: step %s started again at seq %d after it completed", id, e.Seq))
			case stepSkipped:
				t.defects = append(t.defects, fmt.Sprintf("after-skip: step %s started at seq %d after its step_skipped", id, e.Seq))
			}
			if t.text[id] != "" && t.state[id] == stepRunning {
				t.defects = append(t.defects, fmt.Sprintf("unmarked-redo: step %s restarted at seq %d after streaming text without stage_restarted", id, e.Seq))
			}
			t.text[id] = ""
			t.state[id] = stepRunning
			if e.Final {
				t.final = id
			}
			if e.Attempt > 1 {
				t.retries++
			}
			if e.Fallback {
				t.fallback++
			}
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %s attempt=%d fallback=%v final=%v", e.Seq, e.Type, id, e.Stage, e.Attempt, e.Fallback, e.Final))
		case evTokenDelta:
			delta(e, fmt.Sprintf("seq %d", e.Seq))
		case evStageRestarted:
			switch st := t.state[id]; st {
			case stepRunning, stepRestarting:
			case stepSkipped:
				t.defects = append(t.defects, fmt.Sprintf("after-skip: step %s restarted at seq %d after its step_skipped", id, e.Seq))
			default:
				t.defects = append(t.defects, fmt.Sprintf("stray-restart: step %s restarted at seq %d, which is %s", id, e.Seq, st))
			}
			t.restarts++
			t.text[id] = ""
			if t.state[id] == stepRunning {
				t.state[id] = stepRestarting
			}
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s", e.Seq, e.Type, id))
		case evStageCompleted:
			switch st := t.state[id]; st {
			case stepRunning:
			case stepSkipped:
				t.defects = append(t.defects, fmt.Sprintf("after-skip: step %s completed at seq %d after its step_skipped", id, e.Seq))
			default:
				t.defects = append(t.defects, fmt.Sprintf("stray-complete: step %s completed at seq %d, which is %s", id, e.Seq, st))
			}
			got := t.text[id]
			if e.OutputBytes == nil || *e.OutputBytes != len(got) {
				n := -1
				if e.OutputBytes != nil {
					n = *e.OutputBytes
				}
				t.defects = append(t.defects, fmt.Sprintf("text-mismatch: step %s streamed %d bytes but completed (seq %d) with output_bytes %d",
					id, len(got), e.Seq, n))
			}
			t.outputs[id] = got
			t.state[id] = stepCompleted
			t.lastDone = id
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %q", e.Seq, e.Type, id, got))
		case evStepSkipped:
			if t.state[id] == stepCompleted {
				t.defects = append(t.defects, fmt.Sprintf("stray-skip: step %s skipped at seq %d after it completed", id, e.Seq))
			} else {
				t.state[id] = stepSkipped
			}
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %s %q", e.Seq, e.Type, id, e.Code, e.Reason))
		default:
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %s %q", e.Seq, e.Type, e.Step, e.Code, e.Reason))
			if e.Type == evRunCompleted {
				a := t.answerStep()
				if out, ok := t.outputs[a]; !ok {
					t.defects = append(t.defects, fmt.Sprintf("answer: run completed (seq %d) but its final step %q did not", e.Seq, a))
				} else if e.AnswerBytes == nil || *e.AnswerBytes != len(out) {
					t.defects = append(t.defects, fmt.Sprintf("answer: run_completed's answer_bytes (%v) is not the length of final step %s's output (%d bytes)", ptrStr(e.AnswerBytes), a, len(out)))
				}
			}
			if terminal(e.Type) {
				term := e
				t.term = &term
			}
		}
	}
	flush()
	return t
}

func (s stepState) String() string {
	switch s {
	case stepRunning:
		return "running"
	case stepRestarting:
		return "restarted and not started again"
	case stepCompleted:
		return "completed"
	case stepSkipped:
		return "skipped"
	}
	return "not started"
}

func ptrStr(p *int) string {
	if p == nil {
		return "absent"
	}
	return fmt.Sprint(*p)
}

// firstDiff describes where a and b first differ.
func firstDiff(a, b string) string {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return fmt.Sprintf(", first difference at byte %d", i)
		}
	}
	if len(a) != len(b) {
		return fmt.Sprintf(", one is a prefix of the other (%d vs %d bytes)", len(a), len(b))
	}
	return ""
}

// compareSegments reports the first place where a live transcript and a
// replay of the log differ (coalescing of deltas aside).
func compareSegments(live, replay []string) string {
	n := min(len(live), len(replay))
	for i := 0; i < n; i++ {
		if live[i] != replay[i] {
			return fmt.Sprintf("live-vs-log: element %d differs: live %.80q, log %.80q", i, live[i], replay[i])
		}
	}
	if len(live) != len(replay) {
		return fmt.Sprintf("live-vs-log: live has %d elements, the log %d", len(live), len(replay))
	}
	return ""
}

// runView is the part of GET /v1/runs/{id} the checks use.
type runView struct {
	ID      string     `json:"id"`
	Status  string     `json:"status"`
	LastSeq uint64     `json:"last_seq"`
	Answer  string     `json:"answer"`
	Stages  []stepView `json:"stages"` // a chain's stages (all a gateway without steps lists)
	Steps   []stepView `json:"steps"`  // every step (a chain's stages too)
	Error   *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

// stepView is one entry of the run resource's steps (id) or, on a gateway
// without steps, of its stages (stage).
type stepView struct {
	ID     string `json:"id"`
	Stage  string `json:"stage"`
	Status string `json:"status"`
	Output string `json:"output"`
}

func (s stepView) id() string {
	if s.ID != "" {
		return s.ID
	}
	return s.Stage
}

// compareResource checks a transcript against the run resource: status,
// last seq, each step's text (a completed step's output; the text streamed
// since its last reset for any other step the resource shows), and the
// answer (the final step's output).
func compareResource(t *transcript, v *runView) []string {
	var d []string
	if t.term == nil {
		return d
	}
	want := map[string]string{evRunCompleted: "completed", evRunFailed: "failed", evRunCancelled: "cancelled"}[t.term.Type]
	if v.Status != want {
		d = append(d, fmt.Sprintf("resource-status: the stream ended with %s, the resource says %q", t.term.Type, v.Status))
	}
	if v.LastSeq != t.term.Seq {
		d = append(d, fmt.Sprintf("resource-last-seq: the stream ended at seq %d, the resource's last_seq is %d", t.term.Seq, v.LastSeq))
	}
	steps := v.Stages
	if len(v.Steps) > 0 {
		steps = v.Steps
	}
	seen := map[string]bool{}
	for _, s := range steps {
		id := s.id()
		if seen[id] {
			d = append(d, fmt.Sprintf("resource-step: step %s is listed twice", id))
			continue
		}
		seen[id] = true
		if s.Status != "completed" {
			if _, ok := t.outputs[id]; ok {
				d = append(d, fmt.Sprintf("resource-step: step %s completed in the stream, %q in the resource", id, s.Status))
			} else if got := t.text[id]; got != s.Output {
				d = append(d, fmt.Sprintf("resource-output: step %s (%s) text differs from the stream's since its last reset%s", id, s.Status, firstDiff(got, s.Output)))
			}
			continue
		}
		out, ok := t.outputs[id]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("resource-step: step %s completed in the resource but not in the stream", id))
		case out != s.Output:
			d = append(d, fmt.Sprintf("resource-output: step %s output differs from the stream's%s", id, firstDiff(out, s.Output)))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(t.outputs)) {
		if !seen[id] {
			d = append(d, fmt.Sprintf("resource-step: step %s completed in the stream, not in the resource", id))
		}
	}
	if t.term.Type == evRunCompleted {
		a := t.answerStep()
		if out := t.outputs[a]; v.Answer != out {
			d = append(d, fmt.Sprintf("resource-answer: the resource's answer differs from final step %s's streamed output%s", a, firstDiff(out, v.Answer)))
		}
	}
	return d
}
