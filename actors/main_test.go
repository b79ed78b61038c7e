package actors

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine of ours behind.
// Ignored: protoactor's dead-letter throttle, a goroutine that waits one
// throttle period (a second) after a dead letter and ends by itself — a
// message to an actor that has just stopped (a coordinator that stopped
// on its hub's acknowledgement gets the hub's repeated one) starts it.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}
