package actors

import (
	"sync"
	"testing"

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
