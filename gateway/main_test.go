package gateway

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/qlc-project/qlc/internal/ops"
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
	// The test process collects garbage as a gateway or node process does
	// (ops.DefaultGCPercent, unless GOGC is set): the benchmarks' latency
	// tails are the product's.
	ops.ApplyGCPercent(ops.DefaultGCPercent)
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
