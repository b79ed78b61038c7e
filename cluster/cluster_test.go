package cluster

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/klauspost/cpuid/v2"
)

func TestJoinThroughSeedsAndMetadata(t *testing.T) {
	done := checkGoroutines(t)
	n := NewMemNetwork()
	t0, t1, t2 := n.NewTransport(), n.NewTransport(), n.NewTransport()
	c0cfg := testConfig("n0", t0)
	c0cfg.Kinds = []string{"coordinator", "tokenizer"}
	c0cfg.RemoteAddr = "10.0.0.1:8090"
	c0cfg.Version = "v1.2.3"
	c0 := mustStart(t, c0cfg)
	c1cfg := testConfig("n1", t1, t0.Addr())
	c1cfg.Kinds = []string{"gateway"}
	c1 := mustStart(t, c1cfg)
	c2cfg := testConfig("n2", t2, t1.Addr(), "127.0.0.1:1") // one dead seed is fine
	c2cfg.Kinds = []string{"tokenizer"}
	c2cfg.DisableFeatures = []string{"AVX2"}
	c2 := mustStart(t, c2cfg)

	for _, c := range []*Cluster{c0, c1, c2} {
		waitFor(t, 5*time.Second, c.Name()+" sees 3 members", func() bool { return len(c.Members()) == 3 })
		if got := names(c.Members()); !slices.Equal(got, []string{"n0", "n1", "n2"}) {
			t.Fatalf("%s: members %v, want sorted n0 n1 n2", c.Name(), got)
		}
	}
	m0, _ := memberNamed(c2.Members(), "n0")
	if m0.RemoteAddr != "10.0.0.1:8090" || m0.Version != "v1.2.3" || !m0.Has("coordinator") || !m0.Has("tokenizer") || m0.Has("gateway") {
		t.Fatalf("n0 as seen by n2: %+v", m0)
	}
	if m0.GossipAddr != t0.Addr() {
		t.Fatalf("n0 gossip addr %q, want %q", m0.GossipAddr, t0.Addr())
	}
	if m0.HasFeature("avx2") != cpuid.CPU.Supports(cpuid.AVX2) {
		t.Fatalf("n0 avx2=%v, cpu says %v", m0.HasFeature("avx2"), cpuid.CPU.Supports(cpuid.AVX2))
	}
	m2, _ := memberNamed(c0.Members(), "n2")
	if m2.HasFeature("avx2") {
		t.Fatalf("n2 disabled avx2 but announces it: %v", m2.Features)
	}
	if c2.Self().HasFeature("avx2") {
		t.Fatal("Self() announces a disabled feature")
	}
	// Tokenizer placement only on members hosting it; n2 (no avx2) still hosts the kind, the caller
	// filters by feature.
	if o, ok := c1.Owner("tokenizer", "k"); !ok || (o.Name != "n0" && o.Name != "n2") {
		t.Fatalf("owner of tokenizer: %v %v", o.Name, ok)
	}
	if _, ok := c1.Owner("nope", "k"); ok {
		t.Fatal("owner for a kind nobody hosts")
	}

	c1.SetLoad(7)
	waitFor(t, 5*time.Second, "n0 sees n1 load 7", func() bool {
		m, ok := memberNamed(c0.Members(), "n1")
		return ok && m.Load == 7
	})
	if c1.Self().Load != 7 {
		t.Fatalf("Self load %d", c1.Self().Load)
	}
	for _, c := range []*Cluster{c2, c1, c0} {
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	done()
}

func TestUpdatesOrderedAndCoalesced(t *testing.T) {
	n := NewMemNetwork()
	t0, t1, t2 := n.NewTransport(), n.NewTransport(), n.NewTransport()
	c0 := mustStart(t, testConfig("a", t0))
	// Nobody reads c0.Updates() while two members join: changes must coalesce, not block memberlist.
	c1 := mustStart(t, testConfig("b", t1, t0.Addr()))
	c2 := mustStart(t, testConfig("c", t2, t0.Addr()))
	waitFor(t, 5*time.Second, "a sees 3", func() bool { return len(c0.Members()) == 3 })
	_ = c1

	var epoch uint64
	view := map[string]bool{}
	next := func() Topology {
		t.Helper()
		select {
		case top := <-c0.Updates():
			if top.Epoch <= epoch {
				t.Fatalf("epoch %d after %d", top.Epoch, epoch)
			}
			epoch = top.Epoch
			for _, m := range top.Joined {
				view[m.Name] = true
			}
			for _, m := range top.Left {
				delete(view, m.Name)
			}
			if len(view) != len(top.Members) {
				t.Fatalf("Joined/Left do not add up: view %v, members %v", view, names(top.Members))
			}
			for _, m := range top.Members {
				if !view[m.Name] {
					t.Fatalf("member %s not announced in Joined", m.Name)
				}
			}
			return top
		case <-time.After(5 * time.Second):
			t.Fatal("no topology")
		}
		return Topology{}
	}
	// The pending snapshot was recomputed against "nothing delivered": the reader gets the latest
	// view in one Topology (coalesced; the count of deliveries is at most 3 if it raced).
	top := next()
	for len(top.Members) < 3 {
		top = next()
	}
	if top.Epoch > 3 {
		t.Fatalf("updates were not coalesced: epoch %d for 3 joins", top.Epoch)
	}
	c1.SetLoad(3) // load-only change: no Topology
	if err := c2.Shutdown(); err != nil {
		t.Fatal(err)
	}
	top = next()
	if len(top.Left) != 1 || top.Left[0].Name != "c" || len(top.Joined) != 0 {
		t.Fatalf("after c stopped: joined %v left %v", names(top.Joined), names(top.Left))
	}
	if err := c0.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, open := <-c0.Updates(); open {
		t.Fatal("Updates not closed by Shutdown")
	}
}

func TestLeaveAndShutdownIdempotent(t *testing.T) {
	done := checkGoroutines(t)
	n := NewMemNetwork()
	t0, t1 := n.NewTransport(), n.NewTransport()
	c0 := mustStart(t, testConfig("a", t0))
	c1 := mustStart(t, testConfig("b", t1, t0.Addr()))
	waitFor(t, 5*time.Second, "join", func() bool { return len(c0.Members()) == 2 })
	if err := c1.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c1.Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	waitFor(t, 2*time.Second, "a sees b leave", func() bool { return len(c0.Members()) == 1 })
	for range 2 {
		if err := c1.Shutdown(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c1.Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
	if err := c0.Shutdown(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c1.Fenced():
		t.Fatal("a graceful leave must not fence")
	default:
	}
	done()
}

func TestConfigValidate(t *testing.T) {
	cases := map[string]func(*Config){
		"no key":        func(c *Config) { c.ClusterKey = nil },
		"short key":     func(c *Config) { c.ClusterKey = []byte("short") },
		"bad seed":      func(c *Config) { c.Seeds = []string{"nohost"} },
		"bad bind":      func(c *Config) { c.Transport = nil; c.BindAddr = "x" },
		"probe timeout": func(c *Config) { c.ProbeTimeout = c.ProbeInterval },
		"feature":       func(c *Config) { c.DisableFeatures = []string{"avx3"} },
		"empty kind":    func(c *Config) { c.Kinds = []string{""} },
	}
	for name, mod := range cases {
		cfg := testConfig("x", NewMemNetwork().NewTransport())
		mod(&cfg)
		if _, err := cfg.validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	cfg := testConfig("", NewMemNetwork().NewTransport())
	cfg.ClusterKey, cfg.Insecure = nil, true
	got, err := cfg.validate()
	if err != nil || got.NodeName == "" || got.ProbeInterval != 100*time.Millisecond || got.ProbeTimeout != 80*time.Millisecond || got.SuspicionMult != 4 {
		t.Fatalf("defaults: %v %+v", err, got)
	}
	big := testConfig("x", NewMemNetwork().NewTransport())
	for range 60 {
		big.Kinds = append(big.Kinds, "a-rather-long-kind-name")
	}
	if _, err := Start(big); err == nil {
		t.Fatal("oversized metadata accepted")
	}
}

// A member that left keeps draining (its load changes as runs finish) until
// Shutdown; those changes are not announced: an announcement after Leave
// would tell the others it is alive again, and once memberlist has reaped
// the left member's own state it panicked (UpdateNode on a missing node;
// seen when a node drained longer than GossipToTheDeadTime).
func TestLoadChangesAfterLeaveAreNotAnnounced(t *testing.T) {
	done := checkGoroutines(t)
	n := NewMemNetwork()
	t0, t1 := n.NewTransport(), n.NewTransport()
	cfg0, cfg1 := testConfig("a", t0), testConfig("b", t1, t0.Addr())
	for _, c := range []*Config{&cfg0, &cfg1} {
		c.GossipToTheDeadTime = 200 * time.Millisecond
	}
	c0 := mustStart(t, cfg0)
	c1 := mustStart(t, cfg1)
	waitFor(t, 5*time.Second, "join", func() bool { return len(c0.Members()) == 2 })
	if err := c1.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "a sees b leave", func() bool { return len(c0.Members()) == 1 })
	// Past GossipToTheDeadTime: b's memberlist reaps its own left state.
	time.Sleep(4 * cfg1.GossipToTheDeadTime)
	for i := range 5 {
		c1.SetLoad(i + 1)
		time.Sleep(2 * cfg1.LoadUpdateInterval)
	}
	time.Sleep(10 * cfg1.GossipInterval)
	if ms := c0.Members(); len(ms) != 1 {
		t.Fatalf("a member that left came back after announcing its load: a sees %v", names(ms))
	}
	_ = c1.Shutdown()
	_ = c0.Shutdown()
	done()
}
