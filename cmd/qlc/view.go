package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/qlc-project/qlc/client"
)

// ANSI styles.
const (
	sBold  = "\x1b[1m"
	sDim   = "\x1b[2m"
	sRed   = "\x1b[31m"
	sGreen = "\x1b[32m"
	sReset = "\x1b[0m"
)

// view renders a run's events. Three modes:
//   - json: every event's JSON as a line, as received;
//   - tty: one step live at a time (header, tokens, status line); a step
//     that starts while another is live waits, and is printed whole (or
//     goes live, if still running) when its turn comes, in start order;
//   - piped: nothing until the end, then the answer (with --thinking, the
//     reasoning steps first, each under a "### " header).
//
// Every mode folds the events (client.Fold), so the answer printed is
// rebuilt from the deltas exactly as the run resource has it.
type view struct {
	w     io.Writer
	tty   bool
	color bool
	o     streamOpts
	fold  *client.Fold

	live    string          // the step being printed live ("" none)
	queue   []string        // steps started while another was live, in start order
	queued  map[string]bool // in queue
	shown   map[string]bool // header printed
	ended   map[string]bool // completed or skipped
	lastNL  bool            // the last byte written was a newline
	runID   string
	planned int
}

func newView(w io.Writer, tty, color bool, o streamOpts) *view {
	return &view{w: w, tty: tty, color: color, o: o, fold: client.NewFold(),
		queued: map[string]bool{}, shown: map[string]bool{}, ended: map[string]bool{}, lastNL: true}
}

func (v *view) style(s, text string) string {
	if !v.color || text == "" {
		return text
	}
	return s + text + sReset
}

func (v *view) print(s string) {
	if s == "" {
		return
	}
	io.WriteString(v.w, s)
	v.lastNL = strings.HasSuffix(s, "\n")
}

func (v *view) newline() {
	if !v.lastNL {
		v.print("\n")
	}
}

func (v *view) begin(id string) {
	v.runID = id
	if v.tty {
		v.print(v.style(sDim, "run "+id) + "\n")
	}
}

// event folds ev in and renders it.
func (v *view) event(ev client.Event) {
	st := v.fold.Add(ev)
	if v.o.json {
		v.print(string(ev.JSON) + "\n")
		return
	}
	if !v.tty {
		return
	}
	switch ev.Type {
	case client.EventRunPlanned:
		ids := make([]string, 0, len(ev.Steps))
		for _, p := range ev.Steps {
			ids = append(ids, p.Step)
		}
		v.planned = len(ev.Steps)
		v.print(v.style(sDim, fmt.Sprintf("%s · %d steps: %s", ev.Strategy, len(ev.Steps), strings.Join(ids, ", "))) + "\n")
	case client.EventStageStarted:
		switch {
		case v.live == ev.Step:
			// A new attempt of the live step (after a restart).
			v.newline()
			v.print(v.style(sDim, fmt.Sprintf("  attempt %d · %s", ev.Attempt, ev.Model)) + "\n")
		case v.live == "":
			v.goLive(ev.Step)
		case !v.queued[ev.Step]:
			v.queue, v.queued[ev.Step] = append(v.queue, ev.Step), true
		}
	case client.EventTokenDelta:
		if v.live == ev.Step {
			v.text(st, ev.Text)
		}
	case client.EventStageRestarted:
		if v.live == ev.Step {
			v.newline()
			v.print(v.style(sDim, "  ↻ restarted: "+oneLine(ev.Reason)+" — redone below") + "\n")
		}
	case client.EventStageCompleted, client.EventStepSkipped:
		v.ended[ev.Step] = true
		if !v.shown[ev.Step] && v.live != "" && !v.queued[ev.Step] {
			v.queue, v.queued[ev.Step] = append(v.queue, ev.Step), true // skipped before it started
		}
		if v.live == ev.Step {
			v.footer(st)
			v.live = ""
			v.advance()
		} else if v.live == "" && !v.shown[ev.Step] {
			v.whole(st)
		}
	case client.EventStepNote:
		if v.live == "" {
			v.print(v.style(sDim, "  — "+oneLine(ev.Message)) + "\n")
		}
	}
}

// goLive prints a step's header and its text so far; its next deltas
// follow live.
func (v *view) goLive(id string) {
	st := v.fold.Steps[id]
	v.live = id
	v.header(st)
	v.text(st, st.Text.String())
}

// advance prints the queued steps in start order: ended ones whole, until
// one still running, which goes live.
func (v *view) advance() {
	for len(v.queue) > 0 {
		id := v.queue[0]
		v.queue = v.queue[1:]
		delete(v.queued, id)
		st := v.fold.Steps[id]
		if v.ended[id] {
			v.whole(st)
			continue
		}
		v.goLive(id)
		return
	}
}

func (v *view) whole(st *client.StepState) {
	v.header(st)
	v.text(st, st.Text.String())
	v.footer(st)
}

func title(st *client.StepState) string {
	role := st.Stage
	if role == "" {
		role = "step"
	}
	t := strings.ToUpper(role[:1]) + role[1:]
	if st.ID != st.Stage {
		t += " " + st.ID
	}
	return t
}

func (v *view) header(st *client.StepState) {
	v.shown[st.ID] = true
	v.newline()
	h := "▶ " + title(st)
	if st.Model != "" {
		h += " · " + st.Model
	}
	if st.Provider != "" {
		h += " (" + st.Provider + ")"
	}
	if st.Final {
		h += " · answer"
	}
	v.print("\n" + v.style(sBold, h) + "\n")
}

// text prints a step's text: dimmed for a reasoning step with --thinking.
func (v *view) text(st *client.StepState, s string) {
	if v.o.thinking && !st.Final {
		s = v.style(sDim, s)
	}
	v.print(s)
}

func (v *view) footer(st *client.StepState) {
	v.newline()
	var line string
	switch st.Status {
	case "completed":
		line = v.style(sGreen, "✓ completed")
	case "skipped":
		line = v.style(sDim, "– left out: "+oneLine(st.Reason))
	default:
		line = v.style(sRed, "✗ "+st.Status)
	}
	parts := []string{line}
	if st.Usage != nil {
		parts = append(parts, fmt.Sprintf("%d tokens", st.Usage.CompletionTokens))
	} else if st.Tokens > 0 {
		parts = append(parts, fmt.Sprintf("%d tokens", st.Tokens))
	}
	if st.TTFTMs > 0 {
		parts = append(parts, "ttft "+ms(st.TTFTMs))
	}
	if st.DurationMs > 0 {
		parts = append(parts, ms(st.DurationMs))
	}
	v.print(v.style(sDim, "  ") + strings.Join(parts, v.style(sDim, " · ")) + "\n")
}

// ms formats milliseconds for people: 0.03ms, 12.5ms, 2.31s.
func ms(x float64) string {
	switch {
	case x <= 0:
		return "-"
	case x < 1:
		return fmt.Sprintf("%.2fms", x)
	case x < 1000:
		return fmt.Sprintf("%.1fms", x)
	default:
		return fmt.Sprintf("%.2fs", x/1000)
	}
}

// interrupted ends a live line before an error is printed.
func (v *view) interrupted() {
	if v.tty {
		v.newline()
	}
}

// end prints what is left: on a terminal, the waiting steps and a summary
// line; piped, the answer.
func (v *view) end(took time.Duration, cost *float64) {
	f := v.fold
	if v.o.json {
		return
	}
	if !v.tty {
		if v.o.thinking {
			for _, id := range f.Order {
				st := f.Steps[id]
				if id == f.FinalStep || st.Text.Len() == 0 {
					continue
				}
				h := "### " + title(st)
				if st.Model != "" {
					h += " · " + st.Model
				}
				v.print(h + "\n" + st.Text.String())
				v.newline()
				v.print("\n")
			}
		}
		v.print(f.Answer())
		if f.Answer() != "" {
			v.newline()
		}
		return
	}
	if v.live != "" {
		v.footer(f.Steps[v.live])
		v.live = ""
	}
	for len(v.queue) > 0 {
		v.ended[v.queue[0]] = true // the run ended: print what it has
		v.advance()
	}
	v.newline()
	var line string
	switch f.Status {
	case "completed":
		line = v.style(sGreen+sBold, "● completed")
	case "failed":
		line = v.style(sRed+sBold, "● failed: "+oneLine(reasonOf(f.End)))
	default:
		line = v.style(sRed+sBold, "● "+f.Status+": "+oneLine(reasonOf(f.End)))
	}
	parts := []string{line + " in " + took.Round(time.Millisecond).String(), fmt.Sprintf("%d steps", len(f.Steps))}
	if f.End != nil && f.End.Usage != nil {
		u := f.End.Usage
		parts = append(parts, fmt.Sprintf("%d tokens (%d prompt + %d completion)", u.TotalTokens, u.PromptTokens, u.CompletionTokens))
	}
	if cost != nil {
		parts = append(parts, fmt.Sprintf("$%.6f", *cost))
	}
	v.print("\n" + strings.Join(parts, " · ") + "\n")
}
