package actors

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
)

// The transport is at most once. A finished coordinator whose hub lost the
// terminal event (and everything after some seq) resends its last event
// until the hub acknowledges the whole log; the hub asks for the gap again
// and acknowledges. Before, the coordinator waited finishLinger (10 s) for
// an ack that could not come, then stopped, and the run was resumed
// elsewhere by a failover: a cancel answered "running" meanwhile.
func TestFinishedCoordinatorResendsUntilAcknowledged(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	root := e.System().Root

	// A hub in front of a real hubActor that drops the first terminal
	// event and every event after seq 2 the first time it sees them.
	hub := newHub("run_lingerlingerlingerlingerlinger", "a", "instant", "q", e.cfg.Hub, e.metrics, e.logger)
	inner := &hubActor{hub: hub}
	var (
		mu      sync.Mutex
		seen    = map[uint64]bool{}
		dropped int
	)
	hubPID := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		keep := func(ev *messages.RunEvent) bool {
			mu.Lock()
			defer mu.Unlock()
			if ev.GetSeq() > 2 && !seen[ev.GetSeq()] {
				seen[ev.GetSeq()] = true
				dropped++
				return false
			}
			return true
		}
		switch m := ctx.Message().(type) {
		case *messages.RunEvent:
			if !keep(m) {
				return
			}
		case *messages.RunEventBatch:
			var evs []*messages.RunEvent
			for _, ev := range m.Events {
				if keep(ev) {
					evs = append(evs, ev)
				}
			}
			if len(evs) == 0 {
				return
			}
			m = &messages.RunEventBatch{Events: evs}
			inner.received(ctx, m.Events)
			return
		}
		inner.Receive(ctx)
	}))
	coord, err := e.coordRoot.SpawnNamed(e.coordinatorProps(), "run/"+hub.RunID)
	if err != nil {
		t.Fatal(err)
	}
	root.Send(coord, &messages.StartRun{RunId: hub.RunID, Tenant: "a", Profile: "instant", Query: "q", Hub: refOf(hubPID), Epoch: 1})
	root.Send(hubPID, &messages.WatchRun{Coordinator: refOf(coord)})
	pollUntilTrue(t, "the hub to have the whole log", func() bool { return hub.Done() })
	mu.Lock()
	if dropped == 0 {
		mu.Unlock()
		t.Fatal("nothing was dropped: the test proves nothing")
	}
	mu.Unlock()
	for i, ev := range hub.Events(1) {
		if ev.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, ev.GetSeq())
		}
	}
	if err := root.StopFuture(hubPID).Wait(); err != nil {
		t.Fatal(err)
	}
}

// A finished coordinator whose hub never acknowledges (its gateway died,
// or the run moved to a newer coordinator whose hub ignores this one)
// resends its last event every resendEnd until FinishLinger, then stops:
// it is no longer hosted work, so a drain does not wait for it. Before,
// the first resend was the last (protoactor's receive timeout fires once
// unless re-armed): the coordinator kept its log until the process ended,
// and a node draining under a rolling restart waited its whole drain
// timeout for it.
func TestFinishedCoordinatorWithoutAckStopsAfterLinger(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.FinishLinger = 2 * time.Second })
	root := e.System().Root
	var (
		mu   sync.Mutex
		ends int // terminal events the silent hub received
	)
	hubPID := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		var evs []*messages.RunEvent
		switch m := ctx.Message().(type) {
		case *messages.RunEvent:
			evs = []*messages.RunEvent{m}
		case *messages.RunEventBatch:
			evs = m.Events
		}
		for _, ev := range evs {
			if ev.GetRunCompleted() != nil {
				mu.Lock()
				ends++
				mu.Unlock()
			}
		}
	}))
	const id = "run_silenthubsilenthubsilenthub0"
	coord, err := e.coordRoot.SpawnNamed(e.coordinatorProps(), "run/"+id)
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		switch ctx.Message().(type) {
		case *actor.Started:
			ctx.Watch(coord)
		case *actor.Terminated:
			close(stopped)
		}
	}))
	root.Send(coord, &messages.StartRun{RunId: id, Tenant: "a", Profile: "instant", Query: "q", Hub: refOf(hubPID), Epoch: 1})
	pollUntilTrue(t, "the run to end", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return ends > 0
	})
	if e.Hosted() != 1 {
		t.Fatalf("hosted %d while the end is unacknowledged, want 1 (%v)", e.Hosted(), e.HostedRuns(4))
	}
	if got := e.HostedRuns(4); len(got) != 1 || !strings.Contains(got[0], id+"@1: ended, waiting for its hub") {
		t.Fatalf("HostedRuns = %q", got)
	}
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatalf("the coordinator did not stop within 30 s of an unacknowledged end (FinishLinger 2 s); hosted %v", e.HostedRuns(4))
	}
	mu.Lock()
	defer mu.Unlock()
	// The first copy, then one every resendEnd (500 ms) for 2 s.
	if ends < 3 {
		t.Fatalf("the hub got the end %d times, want the first and at least 2 resends", ends)
	}
	if e.Hosted() != 0 || len(e.HostedRuns(4)) != 0 {
		t.Fatalf("hosted %d %v after the coordinator stopped", e.Hosted(), e.HostedRuns(4))
	}
}
