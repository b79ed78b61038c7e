package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

func TestCoalesceMergesOnlyConsecutiveDeltasOfOneStage(t *testing.T) {
	d := func(seq uint64, st messages.Stage) *messages.RunEvent {
		return &messages.RunEvent{Seq: seq, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: st, Text: "x", Tokens: 1}}}
	}
	other := &messages.RunEvent{Seq: 4, Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{Stage: 1}}}
	evs := []*messages.RunEvent{d(1, 1), d(2, 1), d(3, 1), other, d(5, 2), d(6, 3), d(7, 3)}
	got := coalesce(nil, evs)
	want := []span{{0, 3}, {3, 4}, {4, 5}, {5, 7}}
	if len(got) != len(want) {
		t.Fatalf("spans %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("spans %v, want %v", got, want)
		}
	}
	// One pending event is one span: a reader that keeps up gets every event as logged.
	if s := coalesce(nil, evs[:1]); len(s) != 1 || s[0] != (span{0, 1}) {
		t.Fatalf("single event: %v", s)
	}
}

// blockingTransport holds its first write until released, like a client
// that stopped reading.
type blockingTransport struct {
	release chan struct{}
	writes  int
	lagged  uint64
}

func (b *blockingTransport) writeEvents([]*messages.RunEvent, []span) error {
	if b.writes == 0 {
		<-b.release
	}
	b.writes++
	return nil
}
func (b *blockingTransport) writeLagged(n uint64) error { b.lagged = n; return nil }
func (b *blockingTransport) ping() error                { return nil }

func TestPumpDropsALaggingReaderWithoutSlowingTheRun(t *testing.T) {
	g := startGateway(t, "", func(_ *Config, e *actors.Config) { e.Hub.MaxLag = 10 })
	h, err := g.Engine.StartRun(actors.RunRequest{Profile: "instant", Query: "q", Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	// Wait for the first event so the stuck reader's first write holds it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for h.LastSeq() == 0 {
		time.Sleep(time.Millisecond)
	}
	bt := &blockingTransport{release: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- pump(ctx, h.Subscribe(1), bt, time.Hour) }()
	// The run finishes while the reader is stuck.
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	close(bt.release)
	err = <-errc
	var lagged *actors.LaggedError
	if !errors.As(err, &lagged) || bt.lagged != lagged.NextSeq || lagged.NextSeq < 1 || !h.Done() {
		t.Fatalf("pump: %v, notice %d", err, bt.lagged)
	}
	// A fresh subscription from the notice's seq gets exactly the rest.
	if evs := h.Events(lagged.NextSeq); evs[0].Seq != lagged.NextSeq {
		t.Fatalf("resume from %d starts at %d", lagged.NextSeq, evs[0].Seq)
	}
	if got := metricValue(t, g, "qlc_subscribers_dropped_total"); got != "1" {
		t.Fatalf("dropped subscribers metric = %q", got)
	}
}
