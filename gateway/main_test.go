package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// goroutine the gateway starts has an owner that stops it and waits for it
// (Server.Close: recoverOpen, keepRuns, billing, a limiter's settle;
// Tenancy.Close: registry replication), and every test closes what it
// starts (engine, gateway, store, HTTP servers). protoactor's actor system
// stops its goroutines in ActorSystem.Shutdown (the engine's Shutdown calls
// it), and net/http's idle client connections are not reported once their
// server has closed them. Ignored, as in package actors: protoactor's
// dead-letter throttle, a goroutine that waits one throttle period (a
// second) after a dead letter and ends by itself — a message to an actor
// that has just stopped (a coordinator or a cache replayer that stopped on
// its hub's acknowledgement gets the hub's repeated one) starts it, and
// Shutdown does not stop it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
