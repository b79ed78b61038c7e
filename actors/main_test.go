package actors

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/qlc-project/qlc/internal/ops"
)

// TestMain fails the package if a test leaves a goroutine of ours behind.
// Ignored: protoactor's dead-letter throttle, a goroutine that waits one
// throttle period (a second) after a dead letter and ends by itself — a
// message to an actor that has just stopped (a coordinator that stopped
// on its hub's acknowledgement gets the hub's repeated one) starts it.
func TestMain(m *testing.M) {
	// The test process collects garbage as a gateway or node process does
	// (ops.DefaultGCPercent, unless GOGC is set): the benchmarks' latency
	// tails are the product's.
	ops.ApplyGCPercent(ops.DefaultGCPercent)
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
