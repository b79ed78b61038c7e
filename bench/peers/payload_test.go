package main

import (
	"testing"
	"time"
)

// parseFrame reads QLC's event JSON as gateway/events.go writes it, plain
// and coalesced, and the publisher's payload inside a Centrifugo push; a
// key inside a string value does not fool it.
func TestParseFrame(t *testing.T) {
	at := time.Date(2026, 12, 6, 16, 56, 9, 123456789, time.UTC)
	for _, tc := range []struct {
		name, in      string
		typ           string
		seq, from, nt uint64
		hasTime       bool
	}{
		{"qlc delta", `{"seq":12,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","stage":"generator","text":" a","tokens":1}`, "token_delta", 12, 12, 1, true},
		{"qlc coalesced", `{"seq":19,"from_seq":12,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","stage":"generator","text":"abc","tokens":8}`, "token_delta", 19, 12, 8, true},
		{"tricky text", `{"seq":3,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","text":"\"seq\":99 \"time\":\"x\""}`, "token_delta", 3, 3, 1, true},
		{"centrifugo push", `{"channel":"bench","pub":{"data":{"seq":7,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","stage":"curator","text":" tok7","tokens":1},"offset":7}}`, "token_delta", 7, 7, 1, true},
		{"run completed", `{"seq":40,"type":"run_completed","time":"2026-12-06T16:56:09.123456789Z","answer":"…"}`, "run_completed", 40, 40, 1, true},
		{"first part of a split delta", `{"seq":5,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","stage":"generator","part":{"offset":0,"end":16000,"size":40000},"text":"x","tokens":0}`, "token_delta", 5, 5, 0, true},
		{"last part of a split delta", `{"seq":5,"type":"token_delta","time":"2026-12-06T16:56:09.123456789Z","stage":"generator","part":{"offset":32000,"end":40000,"size":40000},"text":"x","tokens":1}`, "token_delta", 5, 5, 1, true},
		{"lagged", `{"type":"lagged","next_seq":3}`, "lagged", 0, 0, 0, false},
		{"bad time", `{"seq":1,"type":"token_delta","time":"yesterday"}`, "token_delta", 1, 1, 1, false},
		{"from_seq above seq is ignored", `{"seq":2,"from_seq":5,"type":"token_delta"}`, "token_delta", 2, 2, 1, false},
	} {
		f := parseFrame([]byte(tc.in))
		if string(f.Type) != tc.typ || f.Seq != tc.seq || f.FromSeq != tc.from || f.Tokens() != tc.nt || f.HasTime != tc.hasTime {
			t.Errorf("%s: %+v (type %q, tokens %d)", tc.name, f, f.Type, f.Tokens())
		}
		if tc.hasTime && !f.Time.Equal(at) {
			t.Errorf("%s: time %v, want %v", tc.name, f.Time, at)
		}
	}
}

// The pushes a uni_sse reader gets, as Centrifugo v6 writes them.
func TestClassifyPush(t *testing.T) {
	for in, want := range map[string]pushKind{
		`{"connect":{"client":"5d9","version":"0.0.0","subs":{"bench":{}},"ping":25,"session":"x"}}`: pushConnect,
		`{"disconnect":{"code":3008,"reason":"slow"}}`:                                               pushDisconnect,
		`{"channel":"bench","pub":{"data":{"seq":1}}}`:                                               pushPub,
		`{}`: pushOther,
	} {
		if got := classifyPush([]byte(in)); got != want {
			t.Errorf("%s: %v, want %v", in, got, want)
		}
	}
}

// A reader counts token frames and tokens, leaves the warm-up (seq up to
// warmSeq, a coalesced frame across it in part) out of the measured
// figures, and records one latency sample per measured frame.
func TestCountFrame(t *testing.T) {
	t0 := time.Unix(1000, 0)
	var st readerStats
	frames := []frame{
		{Seq: 2, FromSeq: 2, Time: t0, HasTime: true},
		{Seq: 6, FromSeq: 3, Time: t0.Add(10 * time.Millisecond), HasTime: true}, // 3..6: 5 and 6 measured
		{Seq: 7, FromSeq: 7, Time: t0.Add(20 * time.Millisecond), HasTime: true},
	}
	for i, f := range frames {
		st.countFrame(f, f.Time.Add(time.Duration(i+1)*time.Millisecond), 4)
	}
	if st.frames != 3 || st.tokens != 6 || st.mFrames != 2 || st.mTokens != 3 {
		t.Fatalf("counts: %+v", st)
	}
	if !st.firstSrc.Equal(frames[1].Time) || !st.lastSrc.Equal(frames[2].Time) || !st.lastRecv.Equal(frames[2].Time.Add(3*time.Millisecond)) {
		t.Fatalf("times: first %v last %v recv %v", st.firstSrc, st.lastSrc, st.lastRecv)
	}
	if st.lat.n != 2 || st.lat.quantile(1) != 3*time.Millisecond {
		t.Fatalf("latency: n %d max %v", st.lat.n, st.lat.quantile(1))
	}
}
