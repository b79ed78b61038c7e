package gateway

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: every
// goroutine the gateway starts has an owner that stops it and waits for it
// (Server.Close: recoverOpen, keepRuns, billing, a limiter's settle;
// Tenancy.Close: registry replication), and every test closes what it
// starts (engine, gateway, store, HTTP servers). Nothing needs ignoring
// today: protoactor's actor system stops its goroutines in
// ActorSystem.Shutdown (the engine's Shutdown calls it), and net/http's
// idle client connections are not reported once their server has closed
// them. A library goroutine that truly lives for the whole process would be
// listed here with goleak.IgnoreTopFunction and the reason.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
