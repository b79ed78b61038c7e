package topology

import (
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// A member started on gossip port 0 announces the port it bound, and its
// rejoins (after a fencing) bind that port again: the other members and
// their seeds know it there.
func TestGossipPortZero(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Cluster.BindAddr = "127.0.0.1:0"
	cfg.Cluster.Insecure = true
	cfg.Cluster.Logger = testLogger()
	cfg.Cluster.Registerer = prometheus.NewRegistry()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if m.GossipAddr() != "" {
		t.Error("GossipAddr before Join is not empty")
	}
	evs, err := m.Join("127.0.0.1:1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		m.Close()
		for range evs {
		}
	}()
	addr := m.GossipAddr()
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("GossipAddr() = %q, want 127.0.0.1 and the bound port", addr)
	}
	if m.cfg.Cluster.BindAddr != addr {
		t.Errorf("a rejoin would bind %q, want %q", m.cfg.Cluster.BindAddr, addr)
	}
}

func TestPinPort(t *testing.T) {
	for _, c := range []struct{ bind, announced, want string }{
		{"127.0.0.1:0", "127.0.0.1:4100", "127.0.0.1:4100"},
		{"0.0.0.0:0", "10.0.0.5:4100", "0.0.0.0:4100"},
		{"127.0.0.1:7946", "127.0.0.1:4100", "127.0.0.1:7946"}, // a set port stays
		{"127.0.0.1:0", "garbage", "127.0.0.1:0"},
		{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"},
		{"nonsense", "127.0.0.1:4100", "nonsense"},
	} {
		if got := pinPort(c.bind, c.announced); got != c.want {
			t.Errorf("pinPort(%q, %q) = %q, want %q", c.bind, c.announced, got, c.want)
		}
	}
}
