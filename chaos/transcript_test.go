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
		{Seq: 8, Type: evRunCompleted},
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
	v := &runView{Status: "completed", LastSeq: 4, Answer: "A"}
	v.Stages = append(v.Stages, struct {
		Stage  string `json:"stage"`
		Status string `json:"status"`
		Output string `json:"output"`
	}{"curator", "completed", "A"})
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
