package loadgen

import (
	"errors"
	"testing"
	"time"

	"github.com/qlc-project/qlc/client"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(msec float64) time.Time { return t0.Add(time.Duration(msec * float64(time.Millisecond))) }

// A moa run: two proposers interleave, then the aggregator. TTFT (any) is
// the first proposer token, TTFT the aggregator's; ITL is per step and per
// token; no TTFT lands in ITL.
func TestMeasureRunEvents(t *testing.T) {
	res := &Result{}
	m := newMeasure(res, at(0), nil)
	evs := []client.Event{
		{Seq: 1, Type: client.EventRunPlanned, Steps: []client.PlannedStep{{Step: "p1"}, {Step: "p2"}, {Step: "agg", Final: true}}, Received: at(5)},
		{Seq: 2, Type: client.EventStageStarted, Step: "p1", Received: at(6)},
		{Seq: 3, Type: client.EventStageStarted, Step: "p2", Received: at(6)},
		{Seq: 4, Type: client.EventTokenDelta, Step: "p1", Text: "a", Tokens: 1, Received: at(100)},  // TTFT any
		{Seq: 5, Type: client.EventTokenDelta, Step: "p2", Text: "b", Tokens: 1, Received: at(110)},  // p2's first: no ITL
		{Seq: 6, Type: client.EventTokenDelta, Step: "p1", Text: "cd", Tokens: 2, Received: at(120)}, // 2 gaps of 10
		{Seq: 7, Type: client.EventStageCompleted, Step: "p1", Received: at(121)},
		{Seq: 8, Type: client.EventStageCompleted, Step: "p2", Received: at(121)},
		{Seq: 9, Type: client.EventStageStarted, Step: "agg", Final: true, Received: at(130)},
		{Seq: 10, Type: client.EventTokenDelta, Step: "agg", Text: "x", Tokens: 1, Received: at(300)},                // TTFT answer
		{Seq: 11, Type: client.EventTokenDelta, Step: "agg", Text: "y", Tokens: 1, Received: at(340)},                // gap 40
		{Seq: 12, FromSeq: 12, Type: client.EventTokenDelta, Step: "agg", Text: "zzz", Tokens: 4, Received: at(380)}, // 4 gaps of 10
		{Seq: 13, Type: client.EventStageCompleted, Step: "agg", Received: at(381)},
		{Seq: 14, Type: client.EventRunCompleted, Usage: &client.Usage{CompletionTokens: 10}, Received: at(400)},
	}
	for i := range evs {
		end := m.runEvent(&evs[i])
		if end != (i == len(evs)-1) {
			t.Fatalf("event %d: end %v", i, end)
		}
	}
	m.finish(nil)
	if res.Outcome != OutcomeOK || res.TTFTAnyMs != 100 || res.TTFTMs != 300 || res.E2EMs != 400 || res.Tokens != 10 ||
		res.AnswerTokens != 6 || res.UsageTokens != 10 || res.SeqGaps != 0 {
		t.Fatalf("result %+v", res)
	}
	if want := 100.0 / 5; res.TPOTMs != want { // (400 − 300) / (6 − 1)
		t.Fatalf("tpot %v, want %v", res.TPOTMs, want)
	}
	// ITL: 2×10 (p1) + 1×40 + 4×10 (agg) = 7 gaps, mean 80/7 ms.
	if res.itl.Count() != 7 || res.itl.Max() != 40*time.Millisecond || res.itl.Quantile(0.5)-10*time.Millisecond > 10*time.Millisecond/256 {
		t.Fatalf("itl count %d max %v p50 %v", res.itl.Count(), res.itl.Max(), res.itl.Quantile(0.5))
	}
}

// Streamed failures are errors; a restart voids the answer's tokens; a
// chain's curator is the answer without a final flag; gaps and repeats
// are caught; a stream that ends early is an error.
func TestMeasureFailuresAndGaps(t *testing.T) {
	res := &Result{}
	m := newMeasure(res, at(0), nil)
	for _, ev := range []client.Event{
		{Seq: 1, Type: client.EventStageStarted, Step: "curator", Received: at(1)},
		{Seq: 2, Type: client.EventTokenDelta, Step: "curator", Text: "a", Tokens: 3, Received: at(50)},
		{Seq: 3, Type: client.EventStageRestarted, Step: "curator", Received: at(60)},
		{Seq: 4, Type: client.EventStageStarted, Step: "curator", Received: at(61)},
		{Seq: 5, Type: client.EventTokenDelta, Step: "curator", Text: "b", Tokens: 1, Received: at(90)},
		{Seq: 6, Type: client.EventRunFailed, Code: "provider_error", Reason: "boom", Received: at(100)},
	} {
		m.runEvent(&ev)
	}
	m.finish(nil)
	if res.Outcome != OutcomeError || res.Code != "provider_error" || res.TTFTMs != 50 || res.AnswerTokens != 1 || res.Tokens != 4 || res.itl.Count() != 0 {
		t.Fatalf("failed run: %+v itl %d", res, res.itl.Count())
	}

	res = &Result{}
	m = newMeasure(res, at(0), nil)
	for _, ev := range []client.Event{
		{Seq: 1, Type: client.EventStageStarted, Step: "g"},
		{Seq: 2, Type: client.EventTokenDelta, Step: "g", Text: "ab", Part: &client.Part{Offset: 0, End: 2, Size: 4}},
		{Seq: 2, Type: client.EventTokenDelta, Step: "g", Text: "cd", Tokens: 2, Part: &client.Part{Offset: 2, End: 4, Size: 4}},
		{Seq: 2, Type: client.EventTokenDelta, Step: "g", Text: "x", Tokens: 1}, // a repeat
		{Seq: 4, Type: client.EventTokenDelta, Step: "g", Text: "y", Tokens: 1}, // seq 3 missing
		{Seq: 5, Type: client.EventRunCompleted},
	} {
		m.runEvent(&ev)
	}
	m.finish(nil)
	if res.SeqGaps != 2 || res.Outcome != OutcomeError || res.Code != "seq_gap" {
		t.Fatalf("gaps: %+v", res)
	}

	res = &Result{}
	m = newMeasure(res, at(0), nil)
	m.runEvent(&client.Event{Seq: 1, Type: client.EventStageStarted, Step: "g"})
	m.finish(errors.New("connection reset"))
	if res.Outcome != OutcomeError || res.Code != "stream_lost" {
		t.Fatalf("cut stream: %+v", res)
	}
	// A run cancelled by someone else is an error; by a cancel probe not.
	for _, probe := range []string{"", "cancel"} {
		res = &Result{Probe: probe}
		m = newMeasure(res, at(0), nil)
		m.runEvent(&client.Event{Seq: 1, Type: client.EventRunCancelled, Received: at(5)})
		m.finish(nil)
		if (res.Outcome == OutcomeError) != (probe == "") || !m.cancelled {
			t.Fatalf("cancelled, probe %q: %+v", probe, res)
		}
	}
}

// A chat stream: the role-only chunk and reasoning are not the TTFT, the
// first content is; [DONE] adds nothing to the end-to-end time; tokens are
// counted by the counter; an error chunk is an error.
func TestMeasureChat(t *testing.T) {
	words := func(s string) int { return len(s) } // one token per byte, for the test
	res := &Result{}
	m := newMeasure(res, at(0), nil)
	chunks := []client.ChatChunk{
		{Role: "assistant", Received: at(10)},
		{Reasoning: "hmm", Received: at(20)},
		{Content: "", Received: at(25)},
		{Content: "ab", Received: at(100)},
		{Content: "c", Received: at(130)},
		{FinishReason: "stop", Received: at(140)},
		{Usage: &client.Usage{CompletionTokens: 99}, Received: at(150)},
		{Done: true, Received: at(900)},
	}
	for i := range chunks {
		if end := m.chatChunk(&chunks[i], words); end != chunks[i].Done {
			t.Fatalf("chunk %d: end %v", i, end)
		}
	}
	m.finish(nil)
	if res.Outcome != OutcomeOK || res.TTFTMs != 100 || res.TTFTAnyMs != 20 || res.E2EMs != 150 || res.AnswerTokens != 3 ||
		res.Tokens != 6 || res.UsageTokens != 99 || res.itl.Count() != 1 || res.itl.Max() != 30*time.Millisecond {
		t.Fatalf("chat: %+v itl %d %v", res, res.itl.Count(), res.itl.Max())
	}
	if res.TPOTMs != 25 { // (150 − 100) / (3 − 1)
		t.Fatalf("tpot %v", res.TPOTMs)
	}

	res = &Result{}
	m = newMeasure(res, at(0), nil)
	m.chatChunk(&client.ChatChunk{Content: "a", Received: at(10)}, words)
	if !m.chatChunk(&client.ChatChunk{Err: &client.APIError{Code: "final_step_failed"}, Received: at(20)}, words) {
		t.Fatal("an error chunk does not end the stream")
	}
	m.finish(nil)
	if res.Outcome != OutcomeError || res.Code != "final_step_failed" {
		t.Fatalf("error chunk: %+v", res)
	}
	// No [DONE]: incomplete.
	res = &Result{}
	m = newMeasure(res, at(0), nil)
	m.chatChunk(&client.ChatChunk{Content: "a", Received: at(10)}, words)
	m.finish(nil)
	if res.Outcome != OutcomeError || res.Code != "incomplete_stream" {
		t.Fatalf("no [DONE]: %+v", res)
	}
}
