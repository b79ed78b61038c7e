package actors

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
)

// A bounded mailbox holds at most its bound of droppable messages while its
// actor is busy, drops the rest without blocking the sender, queues its
// note once, and always queues the messages its policy keeps.
func TestBoundedMailboxBoundAndPolicy(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	root := e.System().Root
	var dropped int
	var mu sync.Mutex
	policy := mailboxPolicy{Size: 4, Note: lostEvents{}, Drop: func(m any) bool { _, ok := m.(*messages.RunEvent); return ok }}
	var mb *boundedMailbox
	busy, release := make(chan struct{}), make(chan struct{})
	got := map[string]int{}
	done := make(chan struct{})
	pid := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch m := ctx.Message().(type) {
		case *messages.CancelRun:
			if m.Reason == "block" {
				close(busy)
				<-release
				return
			}
			got["kept"]++
			if m.Reason == "last" {
				close(done)
			}
		case *messages.RunEvent:
			got["event"]++
		case lostEvents:
			got["note"]++
		}
	}, actor.WithMailbox(func() actor.Mailbox {
		mb = newBoundedMailbox(policy, func() { mu.Lock(); dropped++; mu.Unlock() })
		return mb
	})))
	root.Send(pid, &messages.CancelRun{Reason: "block"})
	<-busy
	for i := range 20 {
		root.Send(pid, delta(uint64(i+1), 1, "x"))
	}
	root.Send(pid, &messages.CancelRun{Reason: "kept"})
	root.Send(pid, &messages.CancelRun{Reason: "last"})
	if n := mb.UserMessageCount(); n != 4+1+2 {
		t.Errorf("queued %d messages, want 7 (4 events, the note, 2 kept)", n)
	}
	mu.Lock()
	if dropped != 16 {
		t.Errorf("dropped %d events, want 16", dropped)
	}
	mu.Unlock()
	close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the actor never got its last message")
	}
	if got["event"] != 4 || got["note"] != 1 || got["kept"] != 2 {
		t.Fatalf("received %v, want 4 events, 1 note, 2 kept", got)
	}
}

// A hub whose mailbox filled up while it was busy drops the events beyond
// its bound, then asks its coordinator to resend from its log's end, and
// ends with the whole log.
func TestHubRecoversWhatItsFullMailboxDropped(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	root := e.System().Root
	bound := mailboxPolicies["hub"].Size
	n := bound + 900
	full := make([]*messages.RunEvent, 0, n+1)
	for i := 1; i <= n; i++ {
		full = append(full, delta(uint64(i), 1, "x"))
	}
	full = append(full, done(uint64(n+1), 1))
	asked := make(chan uint64, 8)
	coord := root.Spawn(propsFunc(func(m any) {
		if m, ok := m.(*messages.Subscribe); ok {
			asked <- m.FromSeq
			root.Send(pidOf(m.Subscriber), &messages.RunEventBatch{Events: full[m.FromSeq-1:]})
		}
	}))
	h := testHub(HubConfig{})
	hub := root.Spawn(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: h} },
		actor.WithMailbox(e.metrics.mailbox("hub"))))
	h.mu.Lock() // the hub actor blocks on its first message (WatchRun reads the hub)
	root.Send(hub, &messages.WatchRun{Coordinator: refOf(coord)})
	for _, ev := range full {
		root.Send(hub, ev) // never blocks
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	if from := <-asked; from != uint64(bound+1) {
		t.Fatalf("resend asked from %d, want %d", from, bound+1)
	}
	if got := len(h.Events(1)); got != n+1 {
		t.Fatalf("log has %d events, want %d", got, n+1)
	}
	if d := testutil.ToFloat64(e.metrics.mailboxDropped.WithLabelValues("hub")); d != float64(n+1-bound) {
		t.Fatalf("dropped %v, want %d", d, n+1-bound)
	}
}

// A run's live subscribers are capped: one beyond maxSubscribers gets the
// log so far and a Lagged; a subscriber that stops is removed, and its
// place goes to the next. On the old coordinator the list only grew.
func TestCoordinatorSubscribersAreCappedAndRemoved(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	root := e.System().Root
	h := startSlow(t, e, "a", 1)
	t.Cleanup(func() { _ = e.Cancel(h.RunID, "test") })
	pollUntilTrue(t, "the run's coordinator", func() bool { return h.Coordinator() != nil })
	coord := h.Coordinator()
	type inbox chan any
	spawnSub := func() (*actor.PID, inbox) {
		ch := make(inbox, 1<<14)
		return root.Spawn(propsFunc(func(m any) {
			switch m.(type) {
			case *messages.RunEvent, *messages.RunEventBatch, *messages.Lagged:
				select {
				case ch <- m:
				default:
				}
			}
		})), ch
	}
	// next waits for sub's next message from the coordinator.
	next := func(ch inbox) any {
		t.Helper()
		select {
		case m := <-ch:
			return m
		case <-time.After(10 * time.Second):
			t.Fatal("no message from the coordinator")
			return nil
		}
	}
	// subscribe asks from seq 1 and reports whether sub was refused: the
	// batch of the log comes first, then a Lagged at once if refused, or
	// a live event if it follows.
	subscribe := func(pid *actor.PID, ch inbox) bool {
		for len(ch) > 0 {
			<-ch
		}
		root.Send(coord, &messages.Subscribe{RunId: h.RunID, FromSeq: 1, Subscriber: refOf(pid)})
		for {
			switch m := next(ch).(type) {
			case *messages.RunEventBatch:
				if m.Events[0].GetSeq() == 1 {
					continue // the log so far
				}
				return false
			case *messages.Lagged:
				return true
			default:
				return false
			}
		}
	}
	pollUntilTrue(t, "the run's first events", func() bool { return h.LastSeq() > 0 })
	var subs []*actor.PID
	for i := range maxSubscribers {
		pid, ch := spawnSub()
		if subscribe(pid, ch) {
			t.Fatalf("subscriber %d refused", i+1)
		}
		subs = append(subs, pid)
	}
	extra, ch := spawnSub()
	if !subscribe(extra, ch) {
		t.Fatalf("subscriber %d was not refused", maxSubscribers+1)
	}
	if err := root.StopFuture(subs[0]).Wait(); err != nil {
		t.Fatal(err)
	}
	pollUntilTrue(t, "the stopped subscriber's place", func() bool { return !subscribe(extra, ch) })
}
