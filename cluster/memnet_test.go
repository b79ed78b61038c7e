package cluster

import "testing"

// An address is free again once its endpoint is shut down (a process
// restarting on the same gossip port), and only then.
func TestMemNetworkReusesAnAddress(t *testing.T) {
	n := NewMemNetwork()
	a := n.NewTransport()
	if _, err := n.NewTransportAt(a.Addr()); err == nil {
		t.Fatal("an address in use was given twice")
	}
	if _, err := n.NewTransportAt("10.0.0.1:1"); err == nil {
		t.Fatal("a non-loopback address was accepted")
	}
	_ = a.Shutdown()
	b, err := n.NewTransportAt(a.Addr())
	if err != nil || b.Addr() != a.Addr() {
		t.Fatalf("reuse after shutdown: %v %v", b, err)
	}
	_ = a.Shutdown() // the old endpoint's second shutdown leaves the new one
	if n.lookup(a.Addr()) != b {
		t.Fatal("the old endpoint's shutdown removed the new one")
	}
	_ = b.Shutdown()
}
