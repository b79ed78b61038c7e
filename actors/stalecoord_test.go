package actors

import (
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

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
	gw := startStubNode(t, func(*messages.StartRun) *messages.StartRunAck { return nil }) // a stand-in hub's process
	sys := actor.NewActorSystem()
	r, err := startRemote(sys, "127.0.0.1", 0, "", []remote.ConfigOption{
		remote.WithDialOptions(grpc.WithTransportCredentials(insecure.NewCredentials()))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown(false) })
	hub := &messages.ActorRef{Address: gw.addr, Id: "hub/x"}
	starter := actor.NewPID(e.Address(), starterName)
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
