package gateway

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// spansOf runs a spanner over evs.
func spansOf(evs []*messages.RunEvent, off, budget int) []span {
	var out []span
	sp := spanner{evs: evs, off: off, budget: budget}
	for s, ok := sp.next(); ok; s, ok = sp.next() {
		out = append(out, s)
	}
	return out
}

func TestSpannerCoalescesWithinTheBoundAndSplitsLongDeltas(t *testing.T) {
	d := func(seq uint64, st messages.Stage, text string) *messages.RunEvent {
		return &messages.RunEvent{Seq: seq, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: st, Text: text, Tokens: 1}}}
	}
	other := &messages.RunEvent{Seq: 4, Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{Stage: 1}}}
	evs := []*messages.RunEvent{d(1, 1, "x"), d(2, 1, "x"), d(3, 1, "x"), other, d(5, 2, "x"), d(6, 3, "x"), d(7, 3, "x")}
	// Only consecutive deltas of one stage merge.
	if got, want := spansOf(evs, 0, 100), []span{{lo: 0, hi: 3}, {lo: 3, hi: 4}, {lo: 4, hi: 5}, {lo: 5, hi: 7}}; !slices.Equal(got, want) {
		t.Fatalf("spans %v, want %v", got, want)
	}
	// Parallel steps of one role interleave in the log: only consecutive
	// deltas of one step merge.
	sd := func(seq uint64, step string) *messages.RunEvent {
		return &messages.RunEvent{Seq: seq, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: messages.Stage_STAGE_PROPOSER, Step: step, Text: "x", Tokens: 1}}}
	}
	steps := []*messages.RunEvent{sd(1, "p1.1"), sd(2, "p1.1"), sd(3, "p1.2"), sd(4, "p1.1"), sd(5, "p1.3"), sd(6, "p1.3")}
	if got, want := spansOf(steps, 0, 100), []span{{lo: 0, hi: 2}, {lo: 2, hi: 3}, {lo: 3, hi: 4}, {lo: 4, hi: 6}}; !slices.Equal(got, want) {
		t.Fatalf("steps' spans %v, want %v", got, want)
	}
	// One pending event is one span: a reader that keeps up gets every event as logged.
	if got := spansOf(evs[:1], 0, 100); !slices.Equal(got, []span{{lo: 0, hi: 1}}) {
		t.Fatalf("single event: %v", got)
	}
	// Coalescing stops before the escaped text passes the budget: "\n" is
	// two bytes escaped.
	evs = []*messages.RunEvent{d(1, 1, "ab"), d(2, 1, "\n\n"), d(3, 1, "c")}
	if got, want := spansOf(evs, 0, 6), []span{{lo: 0, hi: 2}, {lo: 2, hi: 3}}; !slices.Equal(got, want) {
		t.Fatalf("bounded coalescing: %v, want %v", got, want)
	}
	// A delta longer than the budget is cut into parts between characters
	// (é is 2 bytes, \x01 escapes to 6), never coalesced.
	evs = []*messages.RunEvent{d(1, 1, "a"), d(2, 1, "éééé\x01z"), d(3, 1, "b")}
	want := []span{{lo: 0, hi: 1}, {lo: 1, hi: 2, from: 0, to: 6}, {lo: 1, hi: 2, from: 6, to: 8}, {lo: 1, hi: 2, from: 8, to: 9}, {lo: 1, hi: 2, from: 9, to: 10}, {lo: 2, hi: 3}}
	if got := spansOf(evs, 0, 6); !slices.Equal(got, want) {
		t.Fatalf("split: %v, want %v", got, want)
	}
	// A reader resumed inside a delta gets the rest of it as a part.
	if got := spansOf(evs[1:], 6, 100); !slices.Equal(got, []span{{lo: 0, hi: 1, from: 6, to: 10}, {lo: 1, hi: 2}}) {
		t.Fatalf("resume: %v", got)
	}
}

// blockingTransport holds its first write until released, like a client
// that stopped reading.
type blockingTransport struct {
	release chan struct{}
	writes  int
	lagged  uint64
}

func (b *blockingTransport) writeEvents([]*messages.RunEvent, int) error {
	if b.writes == 0 {
		<-b.release
	}
	b.writes++
	return nil
}
func (b *blockingTransport) writeLagged(n uint64) error { b.lagged = n; return nil }
func (b *blockingTransport) ping() error                { return nil }

// TestPumpDropsALaggingReaderWithoutSlowingTheRun: a reader stuck in a write
// while the live run goes on is dropped with a resumable seq once it is more
// than MaxLag behind and further behind than at its last read; the run does
// not wait for it.
func TestPumpDropsALaggingReaderWithoutSlowingTheRun(t *testing.T) {
	g := startGateway(t, "", func(_ *Config, e *actors.Config) { e.Hub.MaxLag = 10 })
	h, err := g.Engine.StartRun(actors.RunRequest{Profile: "slow", Query: "q", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Engine.Cancel(h.RunID, "test over") }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitUntil(t, "the run's first event", func() bool { return h.LastSeq() > 0 })
	first := h.LastSeq()
	bt := &blockingTransport{release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- pump(ctx, h.Subscribe(1), bt, time.Hour, 0) }()
	// The run goes on while the reader is stuck.
	waitUntil(t, "the run to go 20 events past the stuck reader", func() bool { return h.LastSeq() > first+20 })
	close(bt.release)
	err = <-errc
	var lagged *actors.LaggedError
	// Its first read delivered (next_seq ≥ 2); it was dropped more than
	// MaxLag events behind.
	if !errors.As(err, &lagged) || bt.lagged != lagged.NextSeq || lagged.NextSeq < 2 || lagged.NextSeq+10 > h.LastSeq() {
		t.Fatalf("pump: %v, notice %d (log at %d)", err, bt.lagged, h.LastSeq())
	}
	if h.Done() {
		t.Fatal("the run ended: the test needs a live run")
	}
	// A fresh subscription from the notice's seq makes progress at once.
	again := h.Subscribe(lagged.NextSeq)
	defer again.Close()
	evs, err := again.Next(ctx, nil)
	if err != nil || evs[0].Seq != lagged.NextSeq {
		t.Fatalf("resume from %d: %v", lagged.NextSeq, err)
	}
	if got := metricValue(t, g, "qlc_subscribers_dropped_total"); got != "1" {
		t.Fatalf("dropped subscribers metric = %q", got)
	}
}
