package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func ev(seq uint64, typ, stage, text string) event {
	return event{Seq: seq, Type: typ, Stage: stage, Text: text}
}

// completed is a stage_completed for an output of n bytes.
func completed(seq uint64, stage string, n int) event {
	return event{Seq: seq, Type: evStageCompleted, Stage: stage, OutputBytes: &n}
}

func kinds(t *transcript) []string {
	var k []string
	for _, d := range t.defects {
		kind, _, _ := strings.Cut(d, ":")
		k = append(k, kind)
	}
	return k
}

// A clean run with a mid-stream redo and coalesced deltas has no defect, and
// its stage text is what was streamed after the reset.
func TestAnalyzeCleanRunWithRestart(t *testing.T) {
	evs := []event{
		{Seq: 1, Type: evStageStarted, Stage: "generator", Attempt: 1},
		ev(2, evTokenDelta, "generator", "He"),
		ev(3, evStageRestarted, "generator", ""),
		{Seq: 4, Type: evStageStarted, Stage: "generator", Attempt: 2, Fallback: true},
		{Seq: 6, FromSeq: 5, Type: evTokenDelta, Stage: "generator", Text: "Hello"},
		completed(7, "generator", 5),
		{Seq: 8, Type: evRunCompleted, AnswerBytes: ptrTo(5)},
	}
	tr := analyze(evs)
	if len(tr.defects) != 0 || tr.term == nil || tr.term.Seq != 8 || tr.restarts != 1 || tr.fallback != 1 || tr.retries != 1 {
		t.Fatalf("defects %v, term %v, restarts %d, fallbacks %d, retries %d", tr.defects, tr.term, tr.restarts, tr.fallback, tr.retries)
	}
	// The same log with the deltas not coalesced has the same signature.
	split := append([]event{}, evs[:4]...)
	split = append(split, ev(5, evTokenDelta, "generator", "Hel"), ev(6, evTokenDelta, "generator", "lo"))
	split = append(split, evs[5:]...)
	if d := compareSegments(tr.segments, analyze(split).segments); d != "" {
		t.Fatal(d)
	}
}

// partOf is a token_delta carrying bytes off..end of a size-byte delta.
func partOf(seq uint64, off, end, size int, text string) event {
	return event{Seq: seq, Type: evTokenDelta, Stage: "generator", Text: text, Part: &part{Offset: off, End: end, Size: size}}
}

// A delta split into parts, read whole or resumed inside, is one seq with
// the same text as the delta unsplit.
func TestAnalyzeSplitDelta(t *testing.T) {
	start := event{Seq: 1, Type: evStageStarted, Stage: "generator", Attempt: 1}
	whole := analyze([]event{start, ev(2, evTokenDelta, "generator", "Hello"), completed(3, "generator", 5)})
	split := analyze([]event{start, partOf(2, 0, 2, 5, "He"), partOf(2, 2, 4, 5, "ll"), partOf(2, 4, 5, 5, "o"), completed(3, "generator", 5)})
	if len(split.defects) != 0 {
		t.Fatalf("defects %v", split.defects)
	}
	if d := compareSegments(whole.segments, split.segments); d != "" {
		t.Fatal(d)
	}
	if split.outputs["generator"] != "Hello" {
		t.Fatalf("output %q", split.outputs["generator"])
	}
}

func TestAnalyzeFindsDefects(t *testing.T) {
	cases := []struct {
		name string
		evs  []event
		want []string
	}{
		{"missing", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(3, evTokenDelta, "generator", "x")}, []string{"missing"}},
		{"duplicate", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "generator", "x"), ev(2, evTokenDelta, "generator", "x")}, []string{"duplicate"}},
		{"overlap", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "generator", "x"), {Seq: 3, FromSeq: 2, Type: evTokenDelta, Stage: "generator"}}, []string{"reordered"}},
		{"text", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "generator", "ab"), completed(3, "generator", 3)}, []string{"text-mismatch"}},
		{"part again", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, partOf(2, 0, 2, 4, "ab"), partOf(2, 0, 2, 4, "ab")}, []string{"duplicate"}},
		{"part missing", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, partOf(2, 0, 2, 4, "ab"), ev(3, evTokenDelta, "generator", "x")}, []string{"missing"}},
		{"answer", []event{{Seq: 1, Type: evStageStarted, Stage: "curator"}, ev(2, evTokenDelta, "curator", "ab"), completed(3, "curator", 2), {Seq: 4, Type: evRunCompleted}}, []string{"answer"}},
		{"unmarked redo", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "generator", "ab"), {Seq: 3, Type: evStageStarted, Stage: "generator"}}, []string{"unmarked-redo"}},
		{"recomputed", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, completed(2, "generator", 0), {Seq: 3, Type: evStageStarted, Stage: "generator"}}, []string{"recomputed"}},
		{"stray", []event{{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "refiner", "x")}, []string{"stray-delta"}},
		{"after end", []event{{Seq: 1, Type: evRunCancelled}, ev(2, evTokenDelta, "generator", "x")}, []string{"after-terminal"}},
	}
	for _, c := range cases {
		if got := kinds(analyze(c.evs)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: defects %v, want %v", c.name, got, c.want)
		}
	}
}

func TestCompareResource(t *testing.T) {
	tr := analyze([]event{
		{Seq: 1, Type: evStageStarted, Stage: "curator"}, ev(2, evTokenDelta, "curator", "A"),
		completed(3, "curator", 1), {Seq: 4, Type: evRunCompleted, AnswerBytes: ptrTo(1)},
	})
	v := &runView{Status: "completed", LastSeq: 4, Answer: "A", Stages: []stepView{{Stage: "curator", Status: "completed", Output: "A"}}}
	if d := compareResource(tr, v); len(d) != 0 {
		t.Fatalf("agreeing resource: %v", d)
	}
	v.LastSeq, v.Stages[0].Output = 5, "B"
	if d := compareResource(tr, v); len(d) != 2 {
		t.Fatalf("want last_seq and output defects, got %v", d)
	}
}

func ptrTo[T any](v T) *T { return &v }

const sseSample = "id: 1\nevent: stage_started\ndata: {\"seq\":1,\"type\":\"stage_started\",\"stage\":\"generator\"}\n\n" +
	": ping\n\n" +
	"id: 3\nevent: token_delta\r\ndata: {\"seq\":3,\"from_seq\":2,\"type\":\"token_delta\",\"stage\":\"generator\",\"text\":\"a\\nb\"}\r\n\r\n" +
	"event: lagged\ndata: {\"type\":\"lagged\",\"next_seq\":4}\n\n"

// parseAll parses s whole or one byte per read; read times are dropped.
func parseAll(s string, oneByte bool) ([]event, error) {
	var r io.Reader = strings.NewReader(s)
	if oneByte {
		r = iotest.OneByteReader(r)
	}
	var out []event
	err := readSSE(r, func(e event) bool { e.at = time.Time{}; out = append(out, e); return true })
	return out, err
}

func TestReadSSE(t *testing.T) {
	got, err := parseAll(sseSample, false)
	if err != nil || len(got) != 3 {
		t.Fatalf("%d events, %v", len(got), err)
	}
	if got[1].Seq != 3 || got[1].FromSeq != 2 || got[1].first() != 2 || got[1].Text != "a\nb" || got[2].Type != evLagged || got[2].NextSeq != 4 {
		t.Fatalf("parsed %+v", got)
	}
}

// An event split across reads parses as when read whole.
func FuzzReadSSE(f *testing.F) {
	f.Add(sseSample)
	f.Add("data: {\"seq\":1}\n\ndata: {\"se")
	f.Fuzz(func(t *testing.T, s string) {
		a, errA := parseAll(s, false)
		b, errB := parseAll(s, true)
		if (errA == nil) != (errB == nil) || !reflect.DeepEqual(a, b) {
			t.Fatalf("whole: %v %v; byte by byte: %v %v", a, errA, b, errB)
		}
	})
}

// sev is a stage event of a strategy's step.
func sev(seq uint64, typ, step, stage, text string) event {
	return event{Seq: seq, Type: typ, Step: step, Stage: stage, Text: text}
}

func started(seq uint64, step, stage string, attempt int, final bool) event {
	return event{Seq: seq, Type: evStageStarted, Step: step, Stage: stage, Attempt: attempt, Final: final}
}

func stepDone(seq uint64, step, stage string, n int) event {
	return event{Seq: seq, Type: evStageCompleted, Step: step, Stage: stage, OutputBytes: &n}
}

func planned(seq uint64, final string, steps ...string) event {
	e := event{Seq: seq, Type: evRunPlanned}
	for _, s := range append(steps, final) {
		e.Steps = append(e.Steps, struct {
			Step  string `json:"step"`
			Final bool   `json:"final"`
		}{s, s == final})
	}
	return e
}

// moaFailover is a moa run whose three proposers stream at once, the
// coordinator moves while p1.1 and p1.3 stream (p1.2 finished: it is
// kept), the two are redone, then the aggregator writes the answer.
func moaFailover() []event {
	return []event{
		planned(1, "aggregator", "p1.1", "p1.2", "p1.3"),
		started(2, "p1.1", "proposer", 1, false),
		started(3, "p1.2", "proposer", 1, false),
		started(4, "p1.3", "proposer", 1, false),
		sev(5, evTokenDelta, "p1.1", "proposer", "a"),
		sev(6, evTokenDelta, "p1.2", "proposer", "b"),
		sev(7, evTokenDelta, "p1.1", "proposer", "c"),
		sev(8, evTokenDelta, "p1.3", "proposer", "x"),
		stepDone(9, "p1.2", "proposer", 1),
		sev(10, evStageRestarted, "p1.1", "proposer", ""),
		sev(11, evStageRestarted, "p1.3", "proposer", ""),
		started(12, "p1.1", "proposer", 2, false),
		started(13, "p1.3", "proposer", 2, false),
		sev(14, evTokenDelta, "p1.3", "proposer", "yz"),
		sev(15, evTokenDelta, "p1.1", "proposer", "AC"),
		sev(16, evTokenDelta, "p1.1", "proposer", "D"),
		stepDone(17, "p1.3", "proposer", 2),
		stepDone(18, "p1.1", "proposer", 3),
		started(19, "aggregator", "aggregator", 1, true),
		sev(20, evTokenDelta, "aggregator", "aggregator", "final"),
		stepDone(21, "aggregator", "aggregator", 5),
		{Seq: 22, Type: evRunCompleted, AnswerBytes: ptrTo(5)},
	}
}

// Interleaved parallel steps with a failover are followed step by step:
// no defect, each step's text is what it streamed after its last reset,
// and coalescing consecutive deltas of one step leaves the signature as is.
func TestAnalyzeParallelSteps(t *testing.T) {
	evs := moaFailover()
	tr := analyze(evs)
	if len(tr.defects) != 0 || tr.term == nil || tr.restarts != 2 || tr.retries != 2 {
		t.Fatalf("defects %v, term %v, restarts %d, retries %d", tr.defects, tr.term, tr.restarts, tr.retries)
	}
	want := map[string]string{"p1.1": "ACD", "p1.2": "b", "p1.3": "yz", "aggregator": "final"}
	if !reflect.DeepEqual(tr.outputs, want) || tr.answerStep() != "aggregator" {
		t.Fatalf("outputs %v, answer step %q", tr.outputs, tr.answerStep())
	}
	coalesced := append([]event{}, evs[:14]...)
	coalesced = append(coalesced, event{Seq: 16, FromSeq: 15, Type: evTokenDelta, Step: "p1.1", Stage: "proposer", Text: "ACD"})
	coalesced = append(coalesced, evs[16:]...)
	ct := analyze(coalesced)
	if len(ct.defects) != 0 {
		t.Fatalf("coalesced: %v", ct.defects)
	}
	if d := compareSegments(tr.segments, ct.segments); d != "" {
		t.Fatal(d)
	}
	// Deltas of two steps are two segments, not one: the signature sees
	// which step each byte belongs to.
	swapped := append([]event{}, evs...)
	swapped[13], swapped[14] = sev(14, evTokenDelta, "p1.1", "proposer", "yz"), sev(15, evTokenDelta, "p1.3", "proposer", "AC")
	if d := compareSegments(tr.segments, analyze(swapped).segments); d == "" {
		t.Fatal("a delta attributed to another step went unnoticed")
	}

	v := &runView{Status: "completed", LastSeq: 22, Answer: "final"}
	for _, s := range []string{"p1.1", "p1.2", "p1.3"} {
		v.Steps = append(v.Steps, stepView{ID: s, Stage: "proposer", Status: "completed", Output: want[s]})
	}
	v.Steps = append(v.Steps, stepView{ID: "aggregator", Stage: "aggregator", Status: "completed", Output: "final"})
	if d := compareResource(tr, v); len(d) != 0 {
		t.Fatalf("agreeing resource: %v", d)
	}
	v.Steps[0].Output = "acACD" // the voided attempt's text kept
	if d := compareResource(tr, v); len(d) != 1 || !strings.HasPrefix(d[0], "resource-output: step p1.1") {
		t.Fatalf("want p1.1's output defect, got %v", d)
	}
	v.Steps[0].Output, v.Answer = "ACD", "ACD"
	if d := compareResource(tr, v); len(d) != 1 || !strings.HasPrefix(d[0], "resource-answer") {
		t.Fatalf("want the answer defect, got %v", d)
	}
}

// A council whose chairman fails: it is skipped, QLC's synthetic final
// step "answer" gives the best-ranked answer; the answer is that step's.
func TestAnalyzeChairmanFallback(t *testing.T) {
	tr := analyze([]event{
		planned(1, "chairman", "m1", "m2"),
		started(2, "m1", "member", 1, false), started(3, "m2", "member", 1, false),
		sev(4, evTokenDelta, "m2", "member", "two"), sev(5, evTokenDelta, "m1", "member", "one"),
		stepDone(6, "m1", "member", 3), stepDone(7, "m2", "member", 3),
		started(8, "chairman", "chairman", 1, true),
		sev(9, evTokenDelta, "chairman", "chairman", "half"),
		{Seq: 10, Type: evStepSkipped, Step: "chairman", Stage: "chairman", Code: "failed", Reason: "server error"},
		{Seq: 11, Type: "step_note", Step: "chairman"},
		started(12, "answer", "tally", 1, true),
		sev(13, evTokenDelta, "answer", "tally", "two"),
		stepDone(14, "answer", "tally", 3),
		{Seq: 15, Type: evRunCompleted, AnswerBytes: ptrTo(3)},
	})
	if len(tr.defects) != 0 || tr.answerStep() != "answer" {
		t.Fatalf("defects %v, answer step %q", tr.defects, tr.answerStep())
	}
}

// A gateway without step ids: the step is the stage, as for a chain.
func TestAnalyzeStageFallback(t *testing.T) {
	tr := analyze([]event{
		{Seq: 1, Type: evStageStarted, Stage: "generator"}, ev(2, evTokenDelta, "generator", "g"), completed(3, "generator", 1),
		{Seq: 4, Type: evStageStarted, Stage: "curator"}, ev(5, evTokenDelta, "curator", "cc"), completed(6, "curator", 2),
		{Seq: 7, Type: evRunCompleted, AnswerBytes: ptrTo(2)},
	})
	if len(tr.defects) != 0 || tr.answerStep() != "curator" || tr.outputs["generator"] != "g" {
		t.Fatalf("defects %v, answer step %q, outputs %v", tr.defects, tr.answerStep(), tr.outputs)
	}
}

// Each kind of defect of a run with parallel steps, found in an otherwise
// clean interleaved transcript.
func TestAnalyzeParallelDefects(t *testing.T) {
	base := moaFailover()
	// edit changes a copy of base; at finds a seq in it; replace puts e
	// in place of the event of its seq.
	edit := func(f func([]event) []event) []event { return f(append([]event{}, base...)) }
	at := func(evs []event, seq uint64) int { // index of seq
		for i, e := range evs {
			if e.Seq == seq {
				return i
			}
		}
		t.Fatalf("no seq %d", seq)
		return -1
	}
	replace := func(seq uint64, e event) []event {
		return edit(func(evs []event) []event { evs[at(evs, seq)] = e; return evs })
	}
	cases := []struct {
		name string
		evs  []event
		want []string
	}{
		{"delta of a completed parallel step", replace(14, sev(14, evTokenDelta, "p1.2", "proposer", "yz")),
			[]string{"stray-delta", "text-mismatch"}},
		{"finished step recomputed after failover", replace(13, started(13, "p1.2", "proposer", 2, false)),
			[]string{"recomputed", "stray-delta", "stray-complete", "text-mismatch"}},
		{"delta of a step never started", replace(6, sev(6, evTokenDelta, "p1.4", "proposer", "b")),
			[]string{"stray-delta", "text-mismatch"}},
		{"delta after restart before start", []event{
			started(1, "p1.1", "proposer", 1, false), sev(2, evTokenDelta, "p1.1", "proposer", "a"),
			sev(3, evStageRestarted, "p1.1", "proposer", ""), sev(4, evTokenDelta, "p1.1", "proposer", "q"),
			started(5, "p1.1", "proposer", 2, false), sev(6, evTokenDelta, "p1.1", "proposer", "b"), stepDone(7, "p1.1", "proposer", 1),
		}, []string{"stray-delta"}},
		{"restart of a step never started", []event{
			started(1, "p1.1", "proposer", 1, false), sev(2, evStageRestarted, "p1.2", "proposer", ""),
		}, []string{"stray-restart"}},
		{"delta of another step counted", replace(15, sev(15, evTokenDelta, "p1.3", "proposer", "AC")),
			[]string{"text-mismatch", "text-mismatch"}},
		{"parallel redo without stage_restarted", edit(func(evs []event) []event {
			i := at(evs, 10)
			return append(evs[:i], evs[i+1:]...)
		}), []string{"missing", "unmarked-redo"}},
		{"skipped step streams and completes", edit(func(evs []event) []event {
			// p1.2 is left out instead of completing; it streams on.
			evs[at(evs, 9)] = event{Seq: 9, Type: evStepSkipped, Step: "p1.2", Stage: "proposer", Code: "deadline"}
			evs[at(evs, 14)] = sev(14, evTokenDelta, "p1.2", "proposer", "late")
			evs[at(evs, 17)] = stepDone(17, "p1.2", "proposer", 1)
			return evs
		}), []string{"after-skip", "after-skip"}},
		{"skipped step started again", []event{
			started(1, "p1.2", "proposer", 1, false), sev(2, evTokenDelta, "p1.2", "proposer", "b"),
			{Seq: 3, Type: evStepSkipped, Step: "p1.2", Stage: "proposer", Code: "failed"}, started(4, "p1.2", "proposer", 2, false),
		}, []string{"after-skip"}},
		{"answer is a proposer's", replace(22, event{Seq: 22, Type: evRunCompleted, AnswerBytes: ptrTo(3)}), []string{"answer"}},
		{"tokens after cancel", edit(func(evs []event) []event {
			i := at(evs, 15)
			evs[i] = event{Seq: 15, Type: evRunCancelled}
			return evs[:i+2]
		}), []string{"after-terminal"}},
	}
	for _, c := range cases {
		if got := kinds(analyze(c.evs)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: defects %v, want %v", c.name, got, c.want)
		}
	}
}

// A cancelled run's unfinished steps: their text since the last reset is
// what the resource shows.
func TestCompareResourceUnfinishedSteps(t *testing.T) {
	tr := analyze([]event{
		planned(1, "aggregator", "p1.1", "p1.2"),
		started(2, "p1.1", "proposer", 1, false), started(3, "p1.2", "proposer", 1, false),
		sev(4, evTokenDelta, "p1.1", "proposer", "ab"), sev(5, evTokenDelta, "p1.2", "proposer", "x"),
		sev(6, evStageRestarted, "p1.2", "proposer", ""), started(7, "p1.2", "proposer", 2, false),
		sev(8, evTokenDelta, "p1.2", "proposer", "y"), sev(9, evTokenDelta, "p1.1", "proposer", "c"),
		{Seq: 10, Type: evRunCancelled},
	})
	if len(tr.defects) != 0 {
		t.Fatal(tr.defects)
	}
	v := &runView{Status: "cancelled", LastSeq: 10, Steps: []stepView{
		{ID: "p1.1", Stage: "proposer", Status: "cancelled", Output: "abc"},
		{ID: "p1.2", Stage: "proposer", Status: "cancelled", Output: "y"},
		{ID: "aggregator", Stage: "aggregator", Status: "pending"},
	}}
	if d := compareResource(tr, v); len(d) != 0 {
		t.Fatalf("agreeing resource: %v", d)
	}
	v.Steps[1].Output = "xy"
	if d := compareResource(tr, v); len(d) != 1 || !strings.HasPrefix(d[0], "resource-output: step p1.2") {
		t.Fatalf("want p1.2's text defect, got %v", d)
	}
}
