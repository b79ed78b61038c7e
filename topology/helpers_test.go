package topology

import (
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// TestMain fails the package if a test leaves a goroutine behind. None is
// ignored: memberlist's goroutines end with its Shutdown (goleak retries
// while they wind down), and this package starts no other.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var testKey = []byte("0123456789abcdef0123456789abcdef")

func testLogger() *slog.Logger {
	if os.Getenv("QLC_CLUSTER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// member is one process's Membership in a test, on a MemNetwork, with its
// events recorded.
type member struct {
	*Membership
	addr string // its actor address (made up: no actor system runs)

	mu         sync.Mutex
	transports []*faultTransport // one per (re)join, the current last
	evs        []actors.TopologyEvent
	recorded   chan struct{} // closed when the event channel is
}

// faultTransport is a member's transport and its gossip address.
type faultTransport struct {
	*cluster.FaultTransport
	gossip string
}

// transport is the member's current memberlist transport.
func (m *member) transport() *cluster.FaultTransport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transports[len(m.transports)-1].FaultTransport
}

// gossip is the member's gossip address (a seed for others; the same
// across rejoins).
func (m *member) gossip() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transports[0].gossip
}

// events returns the events so far.
func (m *member) events() []actors.TopologyEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.evs)
}

// has reports whether an event of kind about addr was sent.
func (m *member) has(kind actors.TopologyEventKind, addr string) bool {
	return slices.ContainsFunc(m.events(), func(e actors.TopologyEvent) bool { return e.Kind == kind && e.Addr == addr })
}

type memberOpts struct {
	kinds []string
	seeds []*member
	load  func() actors.Load
	tune  func(*Config)
}

// start joins a member named base with actor address addr.
func start(t *testing.T, n *cluster.MemNetwork, base, addr string, o memberOpts) *member {
	t.Helper()
	m := &member{addr: addr, recorded: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.NameBase = base
	cfg.LoadInterval = 20 * time.Millisecond
	cfg.RejoinBackoff = 50 * time.Millisecond
	cfg.Logger = testLogger()
	cc := cluster.DefaultConfig()
	cc.ClusterKey = testKey
	cc.Kinds = o.kinds
	cc.RejoinInterval = 400 * time.Millisecond
	cc.LoadUpdateInterval = 20 * time.Millisecond
	cc.Logger = testLogger()
	cc.Registerer = prometheus.NewRegistry()
	for _, s := range o.seeds {
		cc.Seeds = append(cc.Seeds, s.gossip())
	}
	cfg.Cluster = cc
	// Slower than the defaults, so a loaded test machine does not suspect
	// members falsely; a pause is still found within a second or two.
	cc.ProbeInterval, cc.ProbeTimeout = 200*time.Millisecond, 150*time.Millisecond
	cfg.NewTransport = func() memberlist.NodeAwareTransport {
		// A rejoin binds the same gossip address, as a process does: the
		// others' seeds keep working.
		m.mu.Lock()
		defer m.mu.Unlock()
		var mt *cluster.MemTransport
		if len(m.transports) == 0 {
			mt = n.NewTransport()
		} else {
			var err error
			if mt, err = n.NewTransportAt(m.transports[0].gossip); err != nil {
				panic(err) // the previous instance shut its transport down first
			}
		}
		ft := &faultTransport{FaultTransport: cluster.WrapTransport(mt), gossip: mt.Addr()}
		m.transports = append(m.transports, ft)
		return ft.FaultTransport
	}
	if o.tune != nil {
		o.tune(&cfg)
	}
	ms, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Membership = ms
	ch, err := ms.Join(addr, o.load)
	if err != nil {
		t.Fatal(err)
	}
	go func() { // ends when Close closes the channel
		defer close(m.recorded)
		for ev := range ch {
			m.mu.Lock()
			m.evs = append(m.evs, ev)
			m.mu.Unlock()
			if ev.Done != nil {
				ev.Done() // as the engine does once it stopped its actors
			}
		}
	}()
	t.Cleanup(func() {
		m.Close()
		<-m.recorded
	})
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sees reports whether m's view holds exactly the members named by the
// actor addresses addrs.
func sees(m *member, addrs ...string) bool {
	ms := m.Members()
	if len(ms) != len(addrs) {
		return false
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(ms, func(x cluster.Member) bool { return x.RemoteAddr == a }) {
			return false
		}
	}
	return true
}

func waitSee(t *testing.T, addrs []string, ms ...*member) {
	t.Helper()
	for _, m := range ms {
		waitFor(t, 10*time.Second, m.addr+" sees "+joinAddrs(addrs), func() bool { return sees(m, addrs...) })
	}
}

func joinAddrs(a []string) string {
	out := ""
	for i, s := range a {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

var (
	coord   = []string{actors.KindCoordinator}
	gateway = []string{actors.KindGateway}
)
