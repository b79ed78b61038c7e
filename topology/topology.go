package topology

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// Config configures a Membership. Zero durations take the defaults named
// on them.
type Config struct {
	// Cluster is the template of every membership instance: NodeName is
	// replaced at every (re)join by cluster.NewNodeName(NameBase), and
	// RemoteAddr by Join's self. Its Registerer is reused by a rejoin (the
	// collectors registered by the first instance).
	Cluster cluster.Config
	// NameBase prefixes member names (a fresh random suffix is added at
	// every join: a fenced process must come back under a new name).
	// Default: the host name.
	NameBase string
	// NewTransport, when set, gives every (re)join its own memberlist
	// transport (tests: an endpoint of a cluster.MemNetwork, possibly
	// wrapped by cluster.WrapTransport). A transport is shut down with its
	// instance, so Cluster.Transport alone would serve only the first join.
	// Nil: Cluster.Transport on the first join, sockets on
	// Cluster.BindAddr afterwards (or always, when Cluster.Transport is nil).
	NewTransport func() memberlist.NodeAwareTransport
	// LostWarmup is how long an actor address declared dead is offered runs
	// only after every other node: protoactor's endpoint to it may still be
	// in its reconnect wait (2 s per failed dial), and a run placed there
	// would wait with it (a node cut off that rejoins at the same address).
	// Default 5 s.
	LostWarmup time.Duration
	// LedgerGrace is how long a gateway declared dead is still listed by
	// LedgerHosts: a false suspicion (CPU starvation) fences a gateway that
	// comes back within a second or two with the same ledger, and a limiter
	// that rebuilt without its reservations could overrun a budget; until
	// then a rebuild that cannot read it waits (admissions of the tenants
	// concerned fail closed). Default 10 s.
	LedgerGrace time.Duration
	// LoadInterval is how often the load (Join's load function) is read and
	// announced; cluster rate-limits the announcements further. Default
	// 250 ms.
	LoadInterval time.Duration
	// RejoinBackoff is the pause between two failed rejoins after a
	// fencing. Default 1 s.
	RejoinBackoff time.Duration
	// EventBuffer is the capacity of the event channel. When it is full the
	// membership goroutine waits for the reader (cluster coalesces
	// membership changes meanwhile, so memberlist never waits). Default 64.
	EventBuffer int
	// Logger receives this package's logs. Default Cluster.Logger, else
	// slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns a Config with cluster.DefaultConfig() and every
// default of this package filled.
func DefaultConfig() Config {
	return Config{
		Cluster: cluster.DefaultConfig(), LostWarmup: 5 * time.Second, LedgerGrace: 10 * time.Second,
		LoadInterval: 250 * time.Millisecond, RejoinBackoff: time.Second, EventBuffer: 64,
	}
}

func (c *Config) validate() error {
	d := DefaultConfig()
	if c.LostWarmup == 0 {
		c.LostWarmup = d.LostWarmup
	}
	if c.LedgerGrace == 0 {
		c.LedgerGrace = d.LedgerGrace
	}
	if c.LoadInterval == 0 {
		c.LoadInterval = d.LoadInterval
	}
	if c.RejoinBackoff == 0 {
		c.RejoinBackoff = d.RejoinBackoff
	}
	if c.EventBuffer == 0 {
		c.EventBuffer = d.EventBuffer
	}
	if c.LostWarmup < 0 || c.LedgerGrace < 0 || c.LoadInterval < 0 || c.RejoinBackoff < 0 || c.EventBuffer < 0 {
		return errors.New("topology: durations and EventBuffer must not be negative")
	}
	if c.Logger == nil {
		c.Logger = c.Cluster.Logger
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ErrJoined is returned by a second Join.
var ErrJoined = errors.New("topology: Join called twice")

// Membership keeps a process in the cluster and implements actors.Topology
// over it. Its query methods read the current membership without blocking
// and are safe for concurrent use.
//
// Goroutines: one (started by Join, stopped and waited for by Close) owns
// the membership instance's life: it reads cluster updates, sends events,
// announces load and rejoins after a fencing.
type Membership struct {
	cfg Config
	log *slog.Logger

	// mu guards c, the current membership instance (replaced by a rejoin),
	// and joined.
	mu     sync.Mutex
	c      *cluster.Cluster
	joined bool

	// lostMu guards lost and lostGateways. Never held with mu.
	lostMu       sync.Mutex
	lost         map[string]time.Time // actor address → when its member was declared dead
	lostGateways map[string]time.Time // gateway actor address → when it was declared dead

	// own counts this process's unfinished runs on a node (the engine's,
	// CountOwnRuns; nil: none): a node is taken as loaded by at least them.
	own atomic.Pointer[func(addr string) int]

	self   string             // our actor address (set by Join, then read-only)
	load   func() actors.Load // set by Join, then read-only
	names  map[string]string  // actor address → the member last seen there (loop only)
	events chan actors.TopologyEvent
	// changed (capacity 1) is signalled after every membership update the
	// loop applies, without blocking: Changed's reader.
	changed chan struct{}
	first   bool // the loop has not used Cluster.Transport yet (loop only, after Join)

	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

var _ actors.Topology = (*Membership)(nil)

// New prepares a Membership; Join starts it.
func New(cfg Config) (*Membership, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Membership{
		cfg: cfg, log: cfg.Logger.With("component", "topology"),
		names: map[string]string{}, lost: map[string]time.Time{}, lostGateways: map[string]time.Time{},
		events: make(chan actors.TopologyEvent, cfg.EventBuffer), changed: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), first: true,
	}, nil
}

// start makes one membership instance under a new name.
func (m *Membership) start() (*cluster.Cluster, error) {
	cc := m.cfg.Cluster
	cc.NodeName = cluster.NewNodeName(m.cfg.NameBase)
	cc.RemoteAddr = m.self
	switch {
	case m.cfg.NewTransport != nil:
		cc.Transport = m.cfg.NewTransport()
	case !m.first:
		cc.Transport = nil // shut down with the first instance
	}
	m.first = false
	return cluster.Start(cc)
}

// Join implements actors.Topology: it joins the cluster announcing self
// and starts the membership goroutine. It blocks for the join (about
// Cluster.TCPTimeout per unreachable seed).
func (m *Membership) Join(self string, load func() actors.Load) (<-chan actors.TopologyEvent, error) {
	m.mu.Lock()
	if m.joined {
		m.mu.Unlock()
		return nil, ErrJoined
	}
	m.joined = true
	m.mu.Unlock()
	if load == nil {
		load = func() actors.Load { return actors.Load{} }
	}
	m.self, m.load = self, load
	c, err := m.start()
	if err != nil {
		close(m.done)
		close(m.events)
		return nil, err
	}
	// A rejoin after fencing binds the port this instance bound (gossip
	// bind port 0): the other members, and their seeds, know this one there.
	m.cfg.Cluster.BindAddr = pinPort(m.cfg.Cluster.BindAddr, c.Self().GossipAddr)
	m.mu.Lock()
	m.c = c
	m.mu.Unlock()
	go m.loop()
	return m.events, nil
}

// GossipAddr is this member's gossip address as announced (host:port, the
// port as bound when the bind address says 0); empty before Join.
func (m *Membership) GossipAddr() string {
	if c := m.current(); c != nil {
		return c.Self().GossipAddr
	}
	return ""
}

// pinPort returns bind with a port 0 replaced by the port of announced
// (memberlist announces the port it bound).
func pinPort(bind, announced string) string {
	host, port, err := net.SplitHostPort(bind)
	if err != nil || port != "0" {
		return bind
	}
	_, bound, err := net.SplitHostPort(announced)
	if err != nil || bound == "0" {
		return bind
	}
	return net.JoinHostPort(host, bound)
}

func (m *Membership) current() *cluster.Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

// Name is the current member name ("" before Join).
func (m *Membership) Name() string {
	if c := m.current(); c != nil {
		return c.Name()
	}
	return ""
}

// Members returns the current members (none before Join or while fenced).
func (m *Membership) Members() []cluster.Member {
	if c := m.current(); c != nil {
		return c.Members()
	}
	return nil
}

// Suspects returns the names of the members memberlist suspects now (see
// cluster.Cluster.Suspects). Non-blocking, concurrent.
func (m *Membership) Suspects() []string {
	if c := m.current(); c != nil {
		return c.Suspects()
	}
	return nil
}

// Changed returns a channel that receives a value after each membership
// update (a member joined, left, was declared dead, changed its metadata;
// a rejoin), coalesced: one pending signal at most, never blocking the
// membership. For one reader (the gateway's cluster console), which reads
// Members and Suspects when signalled. Load changes are not signalled.
func (m *Membership) Changed() <-chan struct{} { return m.changed }

func (m *Membership) signal() {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// send delivers ev unless Close comes first.
func (m *Membership) send(ev actors.TopologyEvent) bool {
	select {
	case m.events <- ev:
		return true
	case <-m.stop:
		return false
	}
}

// loop is the one goroutine through which topology changes reach the
// engine; it also announces load and handles fencing.
func (m *Membership) loop() {
	defer close(m.done)
	defer close(m.events)
	load := time.NewTicker(m.cfg.LoadInterval)
	defer load.Stop()
	for {
		c := m.current()
		select {
		case <-m.stop:
			return
		case t, ok := <-c.Updates():
			if !ok || isClosed(c.Fenced()) {
				// Fenced (the last update lists everyone as gone: they are
				// not, we are), or closed by Close.
				select {
				case <-m.stop:
					return
				case <-c.Fenced():
				}
				if !m.rejoin(c) {
					return
				}
				continue
			}
			if !slices.ContainsFunc(t.Members, func(x cluster.Member) bool { return x.Name == c.Name() }) {
				// A view without ourselves is the one a fencing leaves (the
				// others are not gone: we are); Fenced follows.
				continue
			}
			m.signal() // before the events: the console must not wait on the engine
			if !m.apply(t) {
				return
			}
		case <-load.C:
			l := m.load()
			c.SetPressure(cluster.Pressure{Load: l.Active, Limit: l.Limit, Queued: l.Queued, StageLatency: l.StageLatency,
				StageLoad: l.StageActive, StageLimit: l.StageLimit})
		case <-c.Fenced():
			if !m.rejoin(c) {
				return
			}
		}
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// apply turns one topology update into events. It returns false if Close
// came first.
func (m *Membership) apply(t cluster.Topology) bool {
	for _, j := range t.Joined {
		// A new process at an address another member had (a restart, a
		// rejoin under a new name): dial it afresh.
		if j.RemoteAddr == "" || j.RemoteAddr == m.self {
			continue
		}
		prev, seen := m.names[j.RemoteAddr]
		m.names[j.RemoteAddr] = j.Name
		if seen && prev != j.Name {
			if !m.send(actors.TopologyEvent{Kind: actors.AddressReused, Addr: j.RemoteAddr, Member: j.Name}) {
				return false
			}
		}
	}
	for _, gone := range t.Left {
		// A member that departed gracefully is draining: its runs go on.
		if gone.RemoteAddr == "" || gone.RemoteAddr == m.self || slices.ContainsFunc(t.Departed, func(d cluster.Member) bool { return d.Name == gone.Name }) {
			continue
		}
		m.markLost(gone.RemoteAddr, gone.Has(actors.KindGateway))
		if !m.send(actors.TopologyEvent{Kind: actors.NodeLost, Addr: gone.RemoteAddr, Member: gone.Name}) {
			return false
		}
	}
	m.log.Info("cluster topology", "epoch", t.Epoch, "members", len(t.Members), "joined", names(t.Joined), "left", names(t.Left), "departed", names(t.Departed))
	return true
}

// rejoin: the others declared this process dead. Its coordinators may
// already run elsewhere: the engine stops them (Fenced), then we join under
// a new name. It returns false if Close came first.
func (m *Membership) rejoin(old *cluster.Cluster) bool {
	cause := old.FenceCause()
	m.log.Error("fenced: the cluster declared this process dead; stopping hosted runs and rejoining under a new name", "cause", cause)
	reason := ""
	if cause != nil {
		reason = cause.Error()
	}
	// Rejoin only once the engine has told its actors to stop: a late stop
	// would hit runs placed here after the rejoin.
	handled := make(chan struct{})
	var once sync.Once
	if !m.send(actors.TopologyEvent{Kind: actors.Fenced, Member: reason, Done: func() { once.Do(func() { close(handled) }) }}) {
		return false
	}
	select {
	case <-handled:
	case <-m.stop:
		return false
	}
	_ = old.Shutdown()
	for {
		c, err := m.start()
		if err == nil {
			m.mu.Lock()
			m.c = c
			m.mu.Unlock()
			m.log.Info("rejoined the cluster", "name", c.Name())
			return m.send(actors.TopologyEvent{Kind: actors.Rejoined, Member: c.Name()})
		}
		m.log.Error("rejoin failed; retrying", "error", err)
		select {
		case <-m.stop:
			return false
		case <-time.After(m.cfg.RejoinBackoff):
		}
	}
}

func (m *Membership) markLost(addr string, gateway bool) {
	now := time.Now()
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	for a, t := range m.lost {
		if now.Sub(t) > m.cfg.LostWarmup {
			delete(m.lost, a)
		}
	}
	m.lost[addr] = now
	if gateway {
		m.lostGateways[addr] = now
	}
}

func (m *Membership) recentlyLost(addr string) bool {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	t, ok := m.lost[addr]
	return ok && time.Since(t) < m.cfg.LostWarmup
}

func names(ms []cluster.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// Ready reports whether any member hosts run coordinators (a gateway's
// readiness).
func (m *Membership) Ready() error {
	if len(m.Candidates("")) == 0 {
		return errors.New("no cluster member hosts run coordinators yet")
	}
	return nil
}

// Leave leaves the cluster gracefully: the others stop placing work here,
// and see a departure, not a death (no NodeLost). It blocks up to timeout.
func (m *Membership) Leave(timeout time.Duration) error {
	if c := m.current(); c != nil {
		if err := c.Leave(timeout); err != nil {
			return fmt.Errorf("topology: %w", err)
		}
	}
	return nil
}

// Close stops the membership goroutine (waiting for it), closes the event
// channel and shuts the membership down. Idempotent; safe to call before
// Join.
func (m *Membership) Close() {
	m.closeOnce.Do(func() {
		close(m.stop)
		m.mu.Lock()
		joined := m.joined
		m.joined = true // a later Join fails
		m.mu.Unlock()
		if !joined {
			return
		}
		<-m.done
		if c := m.current(); c != nil {
			_ = c.Shutdown()
		}
	})
}
