package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Event types, as in the API (docs/api.md).
const (
	evStageStarted   = "stage_started"
	evTokenDelta     = "token_delta"
	evStageCompleted = "stage_completed"
	evStageRestarted = "stage_restarted"
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
	Stage       string `json:"stage"`
	Text        string `json:"text"`
	Part        *part  `json:"part"`         // a part of a delta too long for one event
	OutputBytes *int   `json:"output_bytes"` // stage_completed: the length of the stage's text
	AnswerBytes *int   `json:"answer_bytes"` // run_completed: the length of the final stage's text
	Reason      string `json:"reason"`
	Code        string `json:"code"`
	Attempt     int    `json:"attempt"`
	Fallback    bool   `json:"fallback"`
	NextSeq     uint64 `json:"next_seq"`

	at time.Time
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

// transcript is what one reader saw of a run, checked on its own.
type transcript struct {
	defects  []string          // "kind: detail"
	term     *event            // the terminal event, if any
	text     map[string]string // per stage, after applying stage_restarted
	outputs  map[string]string // per stage, its streamed text when it completed
	segments []string          // a signature independent of coalescing
	restarts int
	retries  int // stage_started with attempt > 1
	fallback int // stage_started on the fallback model
}

// analyze checks one reader's events: every seq exactly once and in order
// from 1, nothing after the terminal event, deltas only for the running
// stage, no redo of streamed text without a stage_restarted, no finished
// stage recomputed, the parts of a split delta in order, and each
// stage_completed's output_bytes equal to the length of the stage's streamed
// text.
func analyze(evs []event) *transcript {
	t := &transcript{text: map[string]string{}, outputs: map[string]string{}}
	next := uint64(1)
	partEnd := 0 // bytes of seq next received in parts
	cur := ""
	var seg strings.Builder
	flush := func() {
		if seg.Len() > 0 {
			t.segments = append(t.segments, "Δ "+cur+": "+seg.String())
			seg.Reset()
		}
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
				if e.Type != evTokenDelta || e.Stage != cur {
					t.defects = append(t.defects, fmt.Sprintf("stray-delta: part of seq %d (%s) for stage %s while %q runs", e.Seq, e.Type, e.Stage, cur))
				}
				t.text[e.Stage] += e.Text
				seg.WriteString(e.Text)
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
		switch e.Type {
		case evStageStarted:
			if _, done := t.outputs[e.Stage]; done {
				t.defects = append(t.defects, fmt.Sprintf("recomputed: stage %s started again at seq %d after it completed", e.Stage, e.Seq))
			}
			if t.text[e.Stage] != "" {
				t.defects = append(t.defects, fmt.Sprintf("unmarked-redo: stage %s restarted at seq %d after streaming text without stage_restarted", e.Stage, e.Seq))
			}
			t.text[e.Stage] = ""
			cur = e.Stage
			if e.Attempt > 1 {
				t.retries++
			}
			if e.Fallback {
				t.fallback++
			}
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s attempt=%d fallback=%v", e.Seq, e.Type, e.Stage, e.Attempt, e.Fallback))
		case evTokenDelta:
			if e.Stage != cur {
				t.defects = append(t.defects, fmt.Sprintf("stray-delta: seq %d for stage %s while %q runs", e.Seq, e.Stage, cur))
			}
			t.text[e.Stage] += e.Text
			seg.WriteString(e.Text)
		case evStageRestarted:
			t.restarts++
			t.text[e.Stage] = ""
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s", e.Seq, e.Type, e.Stage))
		case evStageCompleted:
			got := t.text[e.Stage]
			if e.OutputBytes == nil || *e.OutputBytes != len(got) {
				n := -1
				if e.OutputBytes != nil {
					n = *e.OutputBytes
				}
				t.defects = append(t.defects, fmt.Sprintf("text-mismatch: stage %s streamed %d bytes but completed (seq %d) with output_bytes %d",
					e.Stage, len(got), e.Seq, n))
			}
			t.outputs[e.Stage] = got
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %q", e.Seq, e.Type, e.Stage, got))
		default:
			t.segments = append(t.segments, fmt.Sprintf("%d %s %s %q", e.Seq, e.Type, e.Code, e.Reason))
			if e.Type == evRunCompleted {
				if c, ok := t.outputs["curator"]; ok && (e.AnswerBytes == nil || *e.AnswerBytes != len(c)) {
					t.defects = append(t.defects, fmt.Sprintf("answer: run_completed's answer_bytes (%v) is not the length of the curator's output (%d bytes)", e.AnswerBytes, len(c)))
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
	ID      string `json:"id"`
	Status  string `json:"status"`
	LastSeq uint64 `json:"last_seq"`
	Answer  string `json:"answer"`
	Stages  []struct {
		Stage  string `json:"stage"`
		Status string `json:"status"`
		Output string `json:"output"`
	} `json:"stages"`
	Error *struct {
		Message string `json:"message"`
		Code    string `json:"code"`
	} `json:"error"`
}

// compareResource checks a transcript against the run resource: status,
// last seq, each completed stage's output and the answer.
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
	seen := map[string]bool{}
	for _, s := range v.Stages {
		if s.Status != "completed" {
			if _, ok := t.outputs[s.Stage]; ok {
				d = append(d, fmt.Sprintf("resource-stage: stage %s completed in the stream, %q in the resource", s.Stage, s.Status))
			}
			continue
		}
		seen[s.Stage] = true
		out, ok := t.outputs[s.Stage]
		switch {
		case !ok:
			d = append(d, fmt.Sprintf("resource-stage: stage %s completed in the resource but not in the stream", s.Stage))
		case out != s.Output:
			d = append(d, fmt.Sprintf("resource-output: stage %s output differs from the stream's%s", s.Stage, firstDiff(out, s.Output)))
		}
	}
	for st := range t.outputs {
		if !seen[st] {
			d = append(d, fmt.Sprintf("resource-stage: stage %s completed in the stream, not in the resource", st))
		}
	}
	if t.term.Type == evRunCompleted {
		if c := t.outputs["curator"]; v.Answer != c {
			d = append(d, "resource-answer: the resource's answer differs from the curator's streamed output"+firstDiff(c, v.Answer))
		}
	}
	return d
}
