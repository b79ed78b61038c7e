package cluster

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: every
// goroutine of a Cluster, a FaultTransport or memberlist ends with
// Shutdown (goleak retries while memberlist's wind down).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
