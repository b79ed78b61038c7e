package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/client"
)

// The terminal view of parallel steps: one live, the others whole in start
// order; a restart voids the live text; a step left out while waiting is
// shown with its reason.
func TestViewParallelSteps(t *testing.T) {
	evs := []client.Event{
		{Type: "run_planned", Strategy: "moa", Steps: []client.PlannedStep{{Step: "p1.1", Stage: "proposer"}, {Step: "p1.2", Stage: "proposer"}, {Step: "p1.3", Stage: "proposer"}, {Step: "aggregator", Stage: "aggregator", Final: true}}},
		{Type: "stage_started", Step: "p1.1", Stage: "proposer", Model: "m1", Attempt: 1},
		{Type: "stage_started", Step: "p1.2", Stage: "proposer", Model: "m2", Attempt: 1},
		{Type: "stage_started", Step: "p1.3", Stage: "proposer", Model: "m3", Attempt: 1},
		{Type: "token_delta", Step: "p1.2", Text: "two "},
		{Type: "token_delta", Step: "p1.1", Text: "bad"},
		{Type: "stage_restarted", Step: "p1.1", Reason: "cut stream"},
		{Type: "stage_started", Step: "p1.1", Stage: "proposer", Model: "m1", Attempt: 2},
		{Type: "token_delta", Step: "p1.1", Text: "one"},
		{Type: "step_skipped", Step: "p1.3", Stage: "proposer", Reason: "deadline", Code: "deadline"},
		{Type: "token_delta", Step: "p1.2", Text: "more"},
		{Type: "stage_completed", Step: "p1.1", Stage: "proposer", OutputBytes: 3},
		{Type: "stage_completed", Step: "p1.2", Stage: "proposer", OutputBytes: 8},
		{Type: "stage_started", Step: "aggregator", Stage: "aggregator", Model: "big", Final: true, Attempt: 1},
		{Type: "token_delta", Step: "aggregator", Text: "answer"},
		{Type: "stage_completed", Step: "aggregator", Stage: "aggregator", OutputBytes: 6},
		{Type: "run_completed", AnswerBytes: 6, Usage: &client.Usage{TotalTokens: 9}},
	}
	var tty, piped bytes.Buffer
	vt := newView(&tty, true, false, streamOpts{})
	vp := newView(&piped, false, false, streamOpts{thinking: true})
	for _, ev := range evs {
		vt.event(ev)
		vp.event(ev)
	}
	vt.end(0, nil)
	vp.end(0, nil)
	want := "▶ Proposer p1.1 · m1\nbad\n  ↻ restarted: cut stream — redone below\n  attempt 2 · m1\none\n  ✓ completed\n" +
		"\n▶ Proposer p1.2 · m2\ntwo more\n  ✓ completed\n" +
		"\n▶ Proposer p1.3 · m3\n  – left out: deadline\n" +
		"\n▶ Aggregator · big · answer\nanswer\n  ✓ completed\n\n● completed in 0s · 4 steps · 9 tokens"
	if !strings.Contains(tty.String(), want) {
		t.Fatalf("terminal view:\n%s\nwant:\n%s", tty.String(), want)
	}
	if p := piped.String(); p != "### Proposer p1.1 · m1\none\n\n### Proposer p1.2 · m2\ntwo more\n\nanswer\n" {
		t.Fatalf("piped --thinking: %q", p)
	}
}
