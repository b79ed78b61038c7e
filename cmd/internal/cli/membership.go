package cli

import (
	"hash/fnv"
	"strconv"
	"strings"

	"errors"
	"github.com/klauspost/cpuid/v2"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// Kinds a process announces in the cluster.
const (
	KindCoordinator = "coordinator" // hosts run coordinators (nodes)
	KindGateway     = "gateway"     // hosts run hubs and the HTTP edge
	KindTokenizer   = "tokenizer"   // hosts tokenizer actors (nodes with the CPU features)
)

// MembershipConfig is what a command knows about its place in the cluster.
type MembershipConfig struct {
	Base            string   // node name prefix (a fresh suffix is added at every (re)join)
	Bind, Advertise string   // gossip addresses
	Seeds           []string // host:port, DNS names allowed
	Key             []byte   // primary cluster key
	SecondaryKeys   [][]byte // further keys accepted (rotation)
	Insecure        bool
	Kinds           []string
	DisableFeatures []string
	Logger          *slog.Logger
	Registerer      prometheus.Registerer
}

// Membership keeps a process in the cluster: it starts memberlist
// membership, feeds topology changes to the engine from one goroutine,
// announces the engine's load, and on fencing stops the hosted actors and
// rejoins under a new name. It also places runs (actors.Placer).
type Membership struct {
	cfg    MembershipConfig
	engine *actors.Engine

	mu sync.Mutex // guards c
	c  *cluster.Cluster

	stop chan struct{}
	done chan struct{}
	once sync.Once

	lostMu sync.Mutex
	lost   map[string]time.Time // actor address → when its member was declared dead

	names map[string]string // actor address → the member last seen there (loop only)

	lostGateways map[string]time.Time // gateway actor address → when it was declared dead (guarded by lostMu)
}

// ledgerGrace is how long a gateway declared dead is still asked for its
// ledger when a tenant limiter rebuilds: a false suspicion (CPU
// starvation) fences a gateway that comes back within a second or two
// with the same ledger, and a limiter that rebuilt without its
// reservations could overrun a budget. Until then a rebuild that cannot
// read it waits (admissions of the tenants concerned fail closed).
const ledgerGrace = 10 * time.Second

// lostWarmup is how long an actor address declared dead is offered runs
// only after every other node: protoactor's endpoint to it may still be in
// its reconnect wait (2 s per failed dial), and a run placed there waits
// with it — a node that was cut off and rejoins at the same address.
const lostWarmup = 5 * time.Second

func (m *Membership) markLost(addr string) {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	if m.lost == nil {
		m.lost = map[string]time.Time{}
	}
	now := time.Now()
	for a, t := range m.lost {
		if now.Sub(t) > lostWarmup {
			delete(m.lost, a)
		}
	}
	m.lost[addr] = now
}

func (m *Membership) recentlyLost(addr string) bool {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	t, ok := m.lost[addr]
	return ok && time.Since(t) < lostWarmup
}

// NewMembership prepares membership; Run joins. In between (while the
// engine, which needs the Membership as its Placer, is built) Candidates
// returns nothing.
func NewMembership(cfg MembershipConfig) *Membership {
	return &Membership{cfg: cfg, stop: make(chan struct{}), done: make(chan struct{})}
}

func (m *Membership) start() (*cluster.Cluster, error) {
	cc := cluster.DefaultConfig()
	cc.NodeName = cluster.NewNodeName(m.cfg.Base)
	cc.BindAddr, cc.AdvertiseAddr, cc.Seeds = m.cfg.Bind, m.cfg.Advertise, m.cfg.Seeds
	cc.ClusterKey, cc.SecondaryKeys, cc.Insecure = m.cfg.Key, m.cfg.SecondaryKeys, m.cfg.Insecure
	cc.Kinds, cc.DisableFeatures = m.cfg.Kinds, m.cfg.DisableFeatures
	cc.Logger = m.cfg.Logger
	if m.engine != nil {
		cc.RemoteAddr = m.engine.Address()
	}
	cc.Registerer = m.cfg.Registerer // a rejoin reuses the registered metrics
	return cluster.Start(cc)
}

// Run joins the cluster, announcing the engine's actor address, and serves
// topology changes until Close. Call it once.
func (m *Membership) Run(engine *actors.Engine) error {
	m.engine = engine
	c, err := m.start()
	if err != nil {
		return err
	}
	m.cfg.Bind = pinGossipPort(m.cfg.Bind, c) // a rejoin binds the same port
	m.mu.Lock()
	m.c = c
	m.mu.Unlock()
	go m.loop()
	return nil
}

func (m *Membership) current() *cluster.Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.c
}

// loop is the one goroutine through which topology changes reach the
// engine; it also announces load and handles fencing.
func (m *Membership) loop() {
	defer close(m.done)
	load := time.NewTicker(250 * time.Millisecond)
	defer load.Stop()
	for {
		c := m.current()
		select {
		case <-m.stop:
			return
		case t, ok := <-c.Updates():
			if !ok {
				// Closed by Shutdown (ours, or the fencing's): wait for the fence path.
				select {
				case <-m.stop:
					return
				case <-c.Fenced():
				}
				m.rejoin(c)
				continue
			}
			for _, j := range t.Joined {
				// A new process at an address another member had (a restart,
				// a rejoin under a new name): dial it afresh.
				if j.RemoteAddr == "" {
					continue
				}
				if m.names == nil {
					m.names = map[string]string{}
				}
				if prev, ok := m.names[j.RemoteAddr]; ok && prev != j.Name {
					m.engine.ResetEndpoint(j.RemoteAddr)
				}
				m.names[j.RemoteAddr] = j.Name
			}
			for _, gone := range t.Left {
				// A member that departed gracefully is draining: its runs go on.
				if gone.RemoteAddr != "" && !slices.ContainsFunc(t.Departed, func(d cluster.Member) bool { return d.Name == gone.Name }) {
					m.markLost(gone.RemoteAddr)
					if gone.Has(KindGateway) {
						m.lostMu.Lock()
						if m.lostGateways == nil {
							m.lostGateways = map[string]time.Time{}
						}
						m.lostGateways[gone.RemoteAddr] = time.Now()
						m.lostMu.Unlock()
					}
					if n := m.engine.NodeLost(gone.RemoteAddr); n > 0 {
						m.cfg.Logger.Warn("member left the cluster; its runs ended", "member", gone.Name, "runs", n)
					}
				}
			}
			m.cfg.Logger.Info("cluster topology", "epoch", t.Epoch, "members", len(t.Members), "joined", names(t.Joined), "left", names(t.Left))
		case <-load.C:
			c.SetLoad(m.engine.Hosted())
		case <-c.Fenced():
			m.rejoin(c)
		}
	}
}

// rejoin: the others declared this process dead. Its coordinators may
// already run elsewhere, so it stops them, then joins under a new name.
func (m *Membership) rejoin(old *cluster.Cluster) {
	m.cfg.Logger.Error("fenced: the cluster declared this process dead; stopping hosted runs and rejoining under a new name", "cause", old.FenceCause())
	m.engine.StopHosted()
	_ = old.Shutdown()
	for {
		c, err := m.start()
		if err == nil {
			m.mu.Lock()
			m.c = c
			m.mu.Unlock()
			m.cfg.Logger.Info("rejoined the cluster", "name", c.Name())
			return
		}
		m.cfg.Logger.Error("rejoin failed; retrying", "error", err)
		select {
		case <-m.stop:
			return
		case <-time.After(time.Second):
		}
	}
}

func names(ms []cluster.Member) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return out
}

// Candidates places a run's coordinator: the less loaded of the two
// rendezvous-ranked coordinator hosts for the run id (cluster.PickLeastLoaded),
// then every other coordinator host as a fallback.
func (m *Membership) Candidates(runID string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	var out []string
	if first, ok := c.PickLeastLoaded(KindCoordinator, runID); ok && first.RemoteAddr != "" {
		out = append(out, first.RemoteAddr)
	}
	for _, mem := range c.Members() {
		if mem.Has(KindCoordinator) && !mem.Draining && mem.RemoteAddr != "" && !slices.Contains(out, mem.RemoteAddr) {
			out = append(out, mem.RemoteAddr)
		}
	}
	// Addresses just declared dead (and back) go last.
	slices.SortStableFunc(out, func(a, b string) int {
		la, lb := m.recentlyLost(a), m.recentlyLost(b)
		switch {
		case la == lb:
			return 0
		case la:
			return 1
		}
		return -1
	})
	return out
}

// TokenizerHosts returns the actor addresses of members hosting tokenizer
// actors: the rendezvous owner of key first (so equal requests meet warm
// caches), then the others.
func (m *Membership) TokenizerHosts(key string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	var out []string
	if first, ok := c.Owner(KindTokenizer, key); ok && first.RemoteAddr != "" {
		out = append(out, first.RemoteAddr)
	}
	for _, mem := range c.Members() {
		if mem.Has(KindTokenizer) && !mem.Draining && mem.RemoteAddr != "" && !slices.Contains(out, mem.RemoteAddr) {
			out = append(out, mem.RemoteAddr)
		}
	}
	return out
}

// LimiterHost places tenant limiters: the rendezvous owner of the tenant
// among the members hosting run coordinators (and not draining). view names
// that set of members, so a limiter knows when ownership may have moved.
func (m *Membership) LimiterHost(tenant string) (string, string, bool) {
	c := m.current()
	if c == nil {
		return "", "", false
	}
	owner, ok := c.Owner(KindCoordinator, "tenant/"+tenant)
	if !ok || owner.RemoteAddr == "" {
		return "", "", false
	}
	var names []string
	for _, mem := range c.Members() {
		if mem.Has(KindCoordinator) && !mem.Draining {
			names = append(names, mem.Name)
		}
	}
	slices.Sort(names)
	h := fnv.New64a()
	for _, n := range names {
		h.Write([]byte(n))
		h.Write([]byte{0})
	}
	return owner.RemoteAddr, strconv.FormatUint(h.Sum64(), 36), true
}

// Gateways returns the actor addresses of the gateways in the cluster
// (their ledgers and tenant registries), except the address skip.
func (m *Membership) Gateways(skip string) []string {
	c := m.current()
	if c == nil {
		return nil
	}
	var out []string
	for _, mem := range c.Members() {
		if mem.Has(KindGateway) && mem.RemoteAddr != "" && mem.RemoteAddr != skip {
			out = append(out, mem.RemoteAddr)
		}
	}
	return out
}

// LedgerHosts returns the gateways whose ledgers a tenant limiter rebuilds
// from: the members, and those declared dead within ledgerGrace.
func (m *Membership) LedgerHosts() []string {
	out := m.Gateways("")
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	for addr, at := range m.lostGateways {
		switch {
		case time.Since(at) > ledgerGrace:
			delete(m.lostGateways, addr)
		case !slices.Contains(out, addr):
			out = append(out, addr)
		}
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

// Leave leaves the cluster gracefully (others stop placing work here).
func (m *Membership) Leave(timeout time.Duration) error {
	if c := m.current(); c != nil {
		return c.Leave(timeout)
	}
	return nil
}

// Close stops the loop and membership. Idempotent.
func (m *Membership) Close() {
	m.once.Do(func() {
		close(m.stop)
		if c := m.current(); c != nil {
			<-m.done
			_ = c.Shutdown()
		}
	})
}

// Hostname is the default name base for members.
func Hostname(role string) string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return role + "-" + h
	}
	return role
}

// TokenizerCapable reports whether this CPU runs the tokenizer's SIMD path
// (AVX2), unless disabled names it (tests build mixed clusters on one machine).
func TokenizerCapable(disabled []string) bool {
	return cpuid.CPU.Supports(cpuid.AVX2) && !slices.ContainsFunc(disabled, func(f string) bool { return strings.EqualFold(f, "avx2") })
}
