package actors

import (
	"context"
	"testing"
	"time"
)

// One engine with the actor transport, shut down: goleak (TestMain) checks
// that neither protoactor's remote nor gRPC leaves a goroutine behind. It is
// the package's only test with a remote: two remotes in one process trip
// -race inside protoactor (Remote.Start writes grpc's global logger while the
// first remote's server reads it).
func TestEngineWithRemoteShutsDown(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", ClusterKey: []byte("0123456789abcdef0123456789abcdef")}
	})
	if e.Address() == "nonhost" {
		t.Fatal("no transport")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e.Shutdown(ctx)
}
