package actors

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// A node that still hosts a coordinator of an older epoch of a run (its hub
// moved the run away from a node declared dead that was not, then brings
// it back) stops the stale coordinator and starts the new epoch's, instead
// of refusing the run for its name (issue 17: on compose a partition's
// false death made runs fail with coordinator_lost, "spawn: name exists").
// A StartRun of the same epoch is still refused.
func TestStaleCoordinatorMakesWayForANewerEpoch(t *testing.T) {
	skipSecondRemoteUnderRace(t)
	e := newSlotEngine(t, "", func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", Insecure: true}
		c.Logger = quietLogger
		c.FinishLinger = 50 * time.Millisecond // the stand-in hub never acknowledges
	})
	sys, hub, starter := startRunAsker(t, e)
	const id = "run_stale_coordinator_000000000"
	prior := []*messages.RunEvent{{RunId: id, Seq: 1, Epoch: 1,
		Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{Stage: messages.Stage_STAGE_GENERATOR}}}}
	ask := func(epoch uint64, prior []*messages.RunEvent) *messages.StartRunAck {
		t.Helper()
		start := &messages.StartRun{RunId: id, Tenant: "a", Profile: "slow", Query: "q", Hub: hub, Epoch: epoch, PriorEvents: prior}
		reply, err := sys.Root.RequestFuture(starter, start, 5*time.Second).Result()
		if err != nil {
			t.Fatal(err)
		}
		return reply.(*messages.StartRunAck)
	}
	if ack := ask(1, nil); ack.Error != "" || ack.GetCoordinator() == nil {
		t.Fatalf("epoch 1: %+v", ack)
	}
	pollUntilTrue(t, "the run hosted", func() bool { return e.Hosted() == 1 })
	if ack := ask(1, prior); !strings.Contains(ack.Error, "exists") {
		t.Fatalf("a second StartRun of the same epoch: %+v, want refused for the name", ack)
	}
	if ack := ask(2, prior); ack.Error != "" || ack.GetCoordinator() == nil {
		t.Fatalf("epoch 2 while epoch 1's coordinator is still here: %+v, want started", ack)
	}
	pollUntilTrue(t, "one coordinator of the run hosted", func() bool { return e.Hosted() == 1 })
	if ack := ask(2, prior); !strings.Contains(ack.Error, "exists") {
		t.Fatalf("epoch 2 again: %+v, want refused for the name", ack)
	}
	sys.Root.Send(starter, &messages.CancelRun{RunId: id, Reason: "test over"})
	pollUntilTrue(t, "the run unhosted", func() bool { return e.Hosted() == 0 })
}

// A run whose coordinator is lost while no node can take it is offered
// again for a while instead of failing at once: in a split of equal sides
// the gateway's side may fence its last node, which rejoins under a new
// name a moment later (issue 17: compose split, runs failed with
// coordinator_lost, "no node hosts run coordinators").
func TestMovedRunWaitsForANode(t *testing.T) {
	skipSecondRemoteUnderRace(t)
	var none atomic.Bool
	var e *Engine
	placer := &orderPlacer{nodes: func() []string {
		if none.Load() {
			return nil
		}
		return []string{e.Address()}
	}}
	e = newSlotEngine(t, "", func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", Insecure: true}
		c.Logger = quietLogger
		c.Topology = placer
	})
	h, err := e.StartRun(RunRequest{Tenant: "a", Profile: "slow", Query: "q"})
	if err != nil {
		t.Fatal(err)
	}
	coord := h.Coordinator()
	none.Store(true) // the only node is gone for now
	moved := make(chan bool, 1)
	go func() {
		_, ok := e.moveRun(h, coord, "test: the coordinator's node was declared dead")
		moved <- ok
	}()
	time.Sleep(300 * time.Millisecond) // several offers find no node
	none.Store(false)                  // back (under a new name, at the same address)
	if ok := <-moved; !ok {
		t.Fatalf("the run was not moved once a node was back: %v", h.Events(0)[len(h.Events(0))-1])
	}
	pollUntilTrue(t, "the moved run's new coordinator streams", func() bool {
		log := h.Events(0)
		return len(log) > 0 && log[len(log)-1].GetEpoch() >= 2 && !h.Done()
	})
	if err := e.Cancel(h.RunID, "test over"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
}
