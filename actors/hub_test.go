package actors

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/messages"
)

func propsFunc(f func(m any)) *actor.Props {
	return actor.PropsFromFunc(func(ctx actor.Context) { f(ctx.Message()) })
}

func delta(seq, epoch uint64, text string) *messages.RunEvent {
	return &messages.RunEvent{RunId: "r", Seq: seq, Epoch: epoch, Time: timestamppb.Now(),
		Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: messages.Stage_STAGE_GENERATOR, Text: text, Tokens: 1}}}
}

func done(seq, epoch uint64) *messages.RunEvent {
	return &messages.RunEvent{RunId: "r", Seq: seq, Epoch: epoch, Time: timestamppb.Now(),
		Kind: &messages.RunEvent_RunCancelled{RunCancelled: &messages.RunCancelled{}}}
}

func testHub(cfg HubConfig) *Hub {
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	return newHub("r", "t", "p", "q", cfg, NewMetrics(nil), slog.New(slog.DiscardHandler))
}

func TestHubLogInvariants(t *testing.T) {
	h := testHub(HubConfig{})
	h.append(delta(1, 1, "a"), delta(2, 1, "b"))
	h.append(delta(2, 1, "dup"))   // duplicate: ignored
	h.append(delta(4, 1, "gap"))   // gap: refused
	h.append(delta(3, 2, "c"))     // newer epoch: accepted
	h.append(delta(4, 1, "stale")) // older epoch: ignored
	h.append(done(4, 2))
	h.append(delta(5, 2, "late")) // after the end: ignored
	var text string
	for _, ev := range h.Events(1) {
		text += ev.GetTokenDelta().GetText()
	}
	if text != "abc" || h.LastSeq() != 4 || !h.Done() {
		t.Fatalf("log = %q, last seq %d, done %v", text, h.LastSeq(), h.Done())
	}
}

// A gap is warned about once: when the hub's mailbox overflowed during a
// zero-latency burst, every later event arrived after the gap and each
// logged the same warning (thousands of lines for one lost batch).
func TestHubWarnsOncePerGap(t *testing.T) {
	var out bytes.Buffer
	h := newHub("r", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), slog.New(slog.NewTextHandler(&out, nil)))
	h.append(delta(1, 1, "a"))
	for seq := uint64(3); seq < 200; seq++ {
		h.append(delta(seq, 1, "late"))
	}
	if n := strings.Count(out.String(), "saw a gap"); n != 1 {
		t.Fatalf("one gap at seq 2 warned %d times", n)
	}
	h.append(delta(2, 1, "b"), delta(3, 1, "c")) // the resend fills it
	for seq := uint64(5); seq < 50; seq++ {
		h.append(delta(seq, 1, "late"))
	}
	if n := strings.Count(out.String(), "saw a gap"); n != 2 {
		t.Fatalf("a second gap (at seq 4) warned %d times in all; want 2", n)
	}
}

func TestSubscriptionReadsInOrderAndEnds(t *testing.T) {
	h := testHub(HubConfig{})
	sub := h.Subscribe(2)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		for i := uint64(1); i <= 100; i++ {
			h.append(delta(i, 1, "x"))
		}
		h.append(done(101, 1))
	}()
	next := uint64(2)
	for {
		evs, err := sub.Next(ctx, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range evs {
			if ev.Seq != next {
				t.Fatalf("got seq %d, want %d", ev.Seq, next)
			}
			next++
		}
	}
	if next != 102 {
		t.Fatalf("subscription ended at %d", next)
	}
}

func TestSlowSubscriberIsDroppedNotWaitedFor(t *testing.T) {
	h := testHub(HubConfig{MaxLag: 10, MaxBatch: 4})
	slow := h.Subscribe(1)
	fast := h.Subscribe(1)
	ctx := context.Background()
	next := func(s *Subscription) []*messages.RunEvent {
		t.Helper()
		evs, err := s.Next(ctx, nil)
		if err != nil {
			t.Fatalf("reader: %v", err)
		}
		return evs
	}
	h.append(delta(1, 1, "x"))
	next(fast)
	if evs := next(slow); len(evs) != 1 { // its first read delivers
		t.Fatalf("slow reader's first read: %d events", len(evs))
	}
	for i := uint64(2); i <= 30; i++ {
		h.append(delta(i, 1, "x")) // never blocks, whoever reads
		next(fast)
	}
	// The slow reader is 29 events behind, more than MaxLag and more than
	// at its previous read: the run is live and it cannot keep up.
	_, err := slow.Next(ctx, nil)
	var lagged *LaggedError
	if !errors.As(err, &lagged) || !errors.Is(err, ErrLagged) || lagged.NextSeq != 2 {
		t.Fatalf("slow reader: %v, want lagged at seq 2", err)
	}
	// It resumes from where it was, with a fresh subscription, whose first
	// read delivers (a bounded batch) although it is still far behind.
	again := h.Subscribe(lagged.NextSeq)
	if evs := next(again); evs[0].Seq != 2 || len(evs) != 4 {
		t.Fatalf("resume: first event %d, %d events; want 2 and a batch of 4", evs[0].Seq, len(evs))
	}
}

// TestReplayIsNeverRefused: a reader of a finished run gets its whole log
// from any seq, in bounded batches, however long the log is compared with
// MaxLag; a reader far behind a live run that catches up (its lag shrinks
// between reads) is never dropped.
func TestReplayIsNeverRefused(t *testing.T) {
	ctx := context.Background()
	readAll := func(s *Subscription, from uint64) (n int, err error) {
		want := from
		for {
			evs, err := s.Next(ctx, nil)
			if err != nil {
				return n, err
			}
			if len(evs) > 16 {
				t.Fatalf("a batch of %d events, MaxBatch is 16", len(evs))
			}
			for _, ev := range evs {
				if ev.Seq != want {
					t.Fatalf("seq %d, want %d", ev.Seq, want)
				}
				want++
				n++
			}
		}
	}

	t.Run("finished", func(t *testing.T) {
		h := testHub(HubConfig{MaxLag: 10, MaxBatch: 16})
		for i := uint64(1); i <= 1000; i++ {
			h.append(delta(i, 1, "x"))
		}
		h.append(done(1001, 1))
		for _, from := range []uint64{1, 2, 500, 1001} {
			n, err := readAll(h.Subscribe(from), from)
			if err != io.EOF || n != int(1002-from) {
				t.Fatalf("from %d: %d events, %v; want %d and EOF", from, n, err, 1002-from)
			}
		}
	})

	t.Run("live, catching up", func(t *testing.T) {
		h := testHub(HubConfig{MaxLag: 10, MaxBatch: 16})
		for i := uint64(1); i <= 1000; i++ {
			h.append(delta(i, 1, "x"))
		}
		sub := h.Subscribe(1)
		got := 0
		for seq := uint64(1001); got < 1000; seq++ {
			evs, err := sub.Next(ctx, nil)
			if err != nil {
				t.Fatalf("after %d events: %v (its lag shrinks at every read)", got, err)
			}
			got += len(evs)
			h.append(delta(seq, 1, "x")) // the producer goes on, slower than the reader
		}
	})
}

func TestSubscriptionIdleAndCancel(t *testing.T) {
	h := testHub(HubConfig{})
	sub := h.Subscribe(1)
	idle := make(chan time.Time, 1)
	idle <- time.Now()
	if _, err := sub.Next(context.Background(), idle); !errors.Is(err, ErrIdle) {
		t.Fatalf("want ErrIdle, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sub.Next(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	h.close()
	if _, err := sub.Next(context.Background(), nil); !errors.Is(err, ErrHubClosed) {
		t.Fatalf("want ErrHubClosed, got %v", err)
	}
}

func TestHubRefusesEventsPastItsLimit(t *testing.T) {
	h := testHub(HubConfig{MaxEvents: 8})
	var cancel bool
	for i := uint64(1); i <= 10; i++ {
		cancel = h.append(delta(i, 1, "x")) || cancel
	}
	if !cancel || h.LastSeq() != 8 {
		t.Fatalf("hub over its limit: cancel=%v last=%d", cancel, h.LastSeq())
	}
}

func TestRunIDsAreUnguessable(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		id, err := NewRunID()
		if err != nil {
			t.Fatal(err)
		}
		if len(id) != 4+32 || seen[id] {
			t.Fatalf("bad or repeated id %q", id)
		}
		seen[id] = true
	}
}

// The actor transport is at most once: a hub that sees a gap asks the
// coordinator to resend from the first missing seq, and acknowledges the
// complete log so the coordinator may stop.
func TestHubAsksForResendAfterAGapAndAcksTheEnd(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	root := e.System().Root
	full := []*messages.RunEvent{delta(1, 1, "a"), delta(2, 1, "b"), delta(3, 1, "c"), delta(4, 1, "d"), done(5, 1)}
	asked := make(chan uint64, 4)
	acked := make(chan uint64, 4)
	coord := root.Spawn(propsFunc(func(m any) {
		switch m := m.(type) {
		case *messages.Subscribe:
			asked <- m.FromSeq
			root.Send(pidOf(m.Subscriber), &messages.RunEventBatch{Events: full[m.FromSeq-1:]})
		case *messages.RunEventAck:
			acked <- m.Seq
		}
	}))
	h := testHub(HubConfig{})
	hub := root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: h} }))
	root.Send(hub, &messages.RunEventBatch{Events: full[:2]})
	root.Send(hub, full[3]) // seq 3 was lost
	root.Send(hub, &messages.WatchRun{Coordinator: refOf(coord)})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case from := <-asked:
		if from != 3 {
			t.Fatalf("resend asked from %d, want 3", from)
		}
	case <-ctx.Done():
		t.Fatal("the hub never asked for a resend")
	}
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case seq := <-acked:
		if seq != 5 {
			t.Fatalf("acked seq %d, want 5", seq)
		}
	case <-ctx.Done():
		t.Fatal("the hub never acknowledged the end of the log")
	}
	var text string
	for _, ev := range h.Events(1) {
		text += ev.GetTokenDelta().GetText()
	}
	if text != "abcd" {
		t.Fatalf("log after resend: %q", text)
	}
}

// TestFailoverBeforeTheFirstEventFences: a coordinator lost before any of
// its events reached the log (epoch 1, from its StartRun) is fenced all the
// same, and so is a replacement lost in turn before its first event.
func TestFailoverBeforeTheFirstEventFences(t *testing.T) {
	h := newHub("r", "t", "p", "q", DefaultHubConfig(), NewMetrics(nil), slog.New(slog.DiscardHandler))
	h.start = &messages.StartRun{RunId: "r", Epoch: 1}
	first := actor.NewPID("node-a:1", "run/r")
	h.coordinator = first
	_, epoch, _, ok := h.beginFailover(first)
	if !ok || epoch != 1 {
		t.Fatalf("failover of a coordinator that logged nothing: epoch %d ok %v; want the old epoch 1", epoch, ok)
	}
	second := actor.NewPID("node-b:1", "run/r")
	h.endFailover(second)
	h.append(&messages.RunEvent{RunId: "r", Seq: 1, Epoch: 1, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{}}})
	if n := len(h.Events(1)); n != 0 {
		t.Fatalf("the fenced coordinator's event entered the log (%d events)", n)
	}
	_, epoch, _, ok = h.beginFailover(second)
	if !ok || epoch != 2 {
		t.Fatalf("second failover: epoch %d ok %v; want 2 (the first replacement's)", epoch, ok)
	}
	h.endFailover(actor.NewPID("node-c:1", "run/r"))
	h.append(&messages.RunEvent{RunId: "r", Seq: 1, Epoch: 2, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{}}})
	h.append(&messages.RunEvent{RunId: "r", Seq: 1, Epoch: 3, Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{}}})
	if evs := h.Events(1); len(evs) != 1 || evs[0].Epoch != 3 {
		t.Fatalf("log after two failovers: %v; want the epoch-3 event only", evs)
	}
}
