package cluster

import (
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Errors returned by Leave (and wrapped by FenceCause).
var (
	// ErrShutdown: the Cluster was shut down.
	ErrShutdown = errors.New("cluster: shut down")
	// ErrFenced: this member learnt that the others declared it dead and fenced itself.
	ErrFenced = errors.New("cluster: fenced")
)

// Cluster is this process's membership in the cluster: a memberlist instance plus the goroutines that
// publish topology, announce load, re-join seeds and fence. All methods are safe for concurrent use.
//
// Goroutines (each stopped by Shutdown, which waits for them): the topology loop (sole sender on
// Updates), the maintenance loop (load announcements, fence notices, fencing decisions) and the re-join
// loop (the only caller of memberlist's Join after Start, which may block up to TCPTimeout per seed).
type Cluster struct {
	cfg      Config
	log      *slog.Logger
	ml       *memberlist.Memberlist
	met      *metrics
	self     string
	feat     uint64
	load     atomic.Int64
	pressure atomic.Pointer[Pressure] // the rest of SetPressure's value (Load is in load)
	draining atomic.Bool              // announced in metadata once Leave starts

	// Load gossip (load.go). bq holds our load messages and those we pass on, at most one per member
	// name; announced is our last announced load (also the metadata's snapshot); loadSeq is its
	// sequence (the maintenance loop's, and Start's, alone).
	bq        *loadQueue
	announced atomic.Pointer[loadMsg]
	loadSeq   uint64

	joinFailures atomic.Int64 // join attempts where no seed answered (tests read it)

	// life serialises Leave, fencing and Shutdown (memberlist panics on Leave after Shutdown).
	life     sync.Mutex
	closed   bool // Shutdown called
	left     bool // Leave called
	isFenced bool

	// mu guards the fields below. Lock order: memberlist's internal node lock, then mu (memberlist calls
	// our delegates with its lock held), so mu is never held while calling memberlist.
	mu         sync.Mutex
	view       map[string]Member
	graceful   map[string]bool // names that left saying so (not declared dead); pruned with tombstones
	tomb       tombstones
	suspected  map[string]time.Time // member name → when this member's probe of it failed (see Suspects)
	loadSeqs   map[string]uint64    // member in view → sequence of the load we hold for it (load.go)
	fenceCause error

	snap     atomic.Pointer[[]Member] // sorted alive members, rebuilt under mu
	inactive atomic.Bool              // fenced or shut down: delegates ignore events
	gone     atomic.Bool              // memberlist's Leave was called: our node state is no longer announced

	kick        chan struct{}    // cap 1: view changed → topology loop
	loadKick    chan struct{}    // cap 1: SetLoad → maintenance loop
	bump        chan struct{}    // cap 1: a member left our view → re-announce ourselves at once
	notices     chan fenceNotice // bounded: refused identities to notify; dropped when full
	accusations chan accusation  // bounded: accusations to evaluate; dropped when full (more will come)
	updates     chan Topology    // unbuffered; the topology loop holds at most one pending snapshot
	fenced      chan struct{}
	stop        chan struct{}
	wg          sync.WaitGroup
}

// Start validates cfg, creates the memberlist instance (listening at once), tries to join Seeds, and
// starts the background goroutines. If no seed answers, Start still succeeds: the node runs alone and the
// re-join loop keeps trying (every RejoinInterval/4 while it knows no other member). Start blocks for at
// most about TCPTimeout per unreachable seed.
func Start(cfg Config) (*Cluster, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:         cfg,
		log:         cfg.Logger.With("component", "cluster", "node", cfg.NodeName),
		met:         newMetrics(cfg.Registerer),
		self:        cfg.NodeName,
		feat:        localFeatures(cfg.DisableFeatures),
		view:        make(map[string]Member),
		loadSeqs:    make(map[string]uint64),
		kick:        make(chan struct{}, 1),
		loadKick:    make(chan struct{}, 1),
		bump:        make(chan struct{}, 1),
		notices:     make(chan fenceNotice, 64),
		accusations: make(chan accusation, 16),
		updates:     make(chan Topology),
		fenced:      make(chan struct{}),
		stop:        make(chan struct{}),
	}
	empty := []Member{}
	c.snap.Store(&empty)
	c.bq = newLoadQueue(loadRetransmitMult, func() int { return len(*c.snap.Load()) }) // no memberlist lock: GetBroadcasts may run under it
	first := c.currentLoad(c.nextLoadSeq())
	c.announced.Store(&first)
	worst := meta{Load: 1<<31 - 1, Features: ^uint64(0), RemoteAddr: cfg.RemoteAddr, Version: cfg.Version, Kinds: cfg.Kinds,
		Draining: true, Limit: 1<<31 - 1, Queued: 1<<31 - 1, LatencyMs: 1<<31 - 1,
		StageActive: 1<<31 - 1, StageLimit: 1<<31 - 1, LoadSeq: ^uint64(0)}
	if n := len(worst.encode()); n > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: metadata is %d bytes, memberlist allows %d (shorten kinds, version or remote address)", n, memberlist.MetaMaxSize)
	}

	mc, err := c.memberlistConfig()
	if err != nil {
		return nil, err
	}
	if len(cfg.ClusterKey) == 0 {
		c.log.Warn("cluster: INSECURE: gossip is neither encrypted nor authenticated; any process on the network can join (local development only)")
	}
	c.ml, err = memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	// The seeds' addresses, resolved, at most maxRejoinTargets of them (rejoin.go): one answer is enough.
	if seeds := pickMissing(c.resolveSeeds(), nil, maxRejoinTargets, rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))); len(seeds) > 0 {
		if n, err := c.ml.Join(seeds); err != nil {
			c.met.joinFailures.Inc()
			c.joinFailures.Add(1)
			c.log.Warn("cluster: no seed answered yet; retrying in the background", "seeds", seeds, "err", err)
		} else {
			c.log.Info("cluster: joined", "seeds_contacted", n)
		}
	}
	c.wg.Add(3)
	go c.topologyLoop()
	go c.maintenanceLoop()
	go c.rejoinLoop()
	return c, nil
}

func (c *Cluster) memberlistConfig() (*memberlist.Config, error) {
	cfg := c.cfg
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.SuspicionMult = cfg.SuspicionMult
	mc.SuspicionMaxTimeoutMult = cfg.SuspicionMaxTimeoutMult
	mc.IndirectChecks = cfg.IndirectChecks
	mc.GossipInterval = cfg.GossipInterval
	mc.GossipNodes = cfg.GossipNodes
	mc.RetransmitMult = cfg.RetransmitMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.GossipToTheDeadTime = cfg.GossipToTheDeadTime
	mc.TCPTimeout = cfg.TCPTimeout
	mc.AwarenessMaxMultiplier = cfg.AwarenessMaxMultiplier
	mc.DeadNodeReclaimTime = 0 // a dead name is never reused; see fence.go
	mc.EnableCompression = cfg.CompressGossip
	mc.Label = cfg.ClusterName
	if len(cfg.ClusterKey) > 0 {
		// The primary encrypts; every key of the ring decrypts (rotation, docs/keys.md).
		ring, err := memberlist.NewKeyring(cfg.SecondaryKeys, cfg.ClusterKey)
		if err != nil {
			return nil, fmt.Errorf("cluster: keyring: %w", err)
		}
		mc.Keyring = ring
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	mc.Logger = log.New(&logWriter{log: c.log, m: c.met, suspect: c.probeFailed}, "", 0)
	d := &delegate{c: c}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	if cfg.AdvertiseAddr != "" {
		host, port, _ := splitHostPort(cfg.AdvertiseAddr)
		ip, err := resolveIP(host)
		if err != nil {
			return nil, fmt.Errorf("cluster: advertise address: %w", err)
		}
		mc.AdvertiseAddr = ip
		mc.AdvertisePort = port
	}
	if cfg.Transport != nil {
		mc.Transport = cfg.Transport
		return mc, nil
	}
	host, port, _ := splitHostPort(cfg.BindAddr)
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr = host
	mc.BindPort = port
	if cfg.AdvertiseAddr == "" {
		mc.AdvertisePort = port
	}
	return mc, nil
}

func resolveIP(host string) (string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return "", err
	}
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	if len(ips) == 0 {
		return "", fmt.Errorf("%s: no address", host)
	}
	return ips[0].String(), nil
}

// seeds returns Seeds without our own address.
func (c *Cluster) seeds() []string {
	self := c.Self().GossipAddr
	out := make([]string, 0, len(c.cfg.Seeds))
	for _, s := range c.cfg.Seeds {
		if s != self && s != c.cfg.AdvertiseAddr {
			out = append(out, s)
		}
	}
	return out
}

// Name returns this member's name.
func (c *Cluster) Name() string { return c.self }

// Self returns this member as announced (current load, features minus DisableFeatures).
func (c *Cluster) Self() Member {
	m := Member{
		Name:       c.self,
		RemoteAddr: c.cfg.RemoteAddr,
		Version:    c.cfg.Version,
		Kinds:      slices.Clone(c.cfg.Kinds),
		Features:   featureNames(c.feat),
		Load:       int(c.load.Load()),
	}
	if p := c.pressure.Load(); p != nil {
		m.Limit, m.Queued, m.StageLatency = p.Limit, p.Queued, p.StageLatency
		m.StageLoad, m.StageLimit = p.StageLoad, p.StageLimit
	}
	c.mu.Lock()
	if v, ok := c.view[c.self]; ok {
		m.GossipAddr = v.GossipAddr
	}
	c.mu.Unlock()
	return m
}

// Members returns the alive (and suspect) members, self included, sorted by name; empty once fenced or
// shut down. It does not block on the network.
func (c *Cluster) Members() []Member {
	return cloneMembers(*c.snap.Load())
}

// EachMember calls f with each member of the current view, in name order,
// until f returns false: Members without the copy, for hot paths (a
// gateway's check of the cluster's saturation on every request for a
// run). f must neither keep nor modify the member (its slices are
// shared); it must not block. Concurrent calls are safe.
func (c *Cluster) EachMember(f func(*Member) bool) {
	ms := *c.snap.Load()
	for i := range ms {
		if !f(&ms[i]) {
			return
		}
	}
}

// suspectMemory is how long a failed probe of a member counts (Suspects):
// longer than the suspicion timeout, after which the member is declared
// dead (and leaves the view) or has refuted the suspicion.
const suspectMemory = 2 * time.Second

// probeFailed records that this member's probe of name failed (memberlist
// then suspects it). Called from memberlist's logger; does not block.
func (c *Cluster) probeFailed(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.suspected == nil || len(c.suspected) > 1024 {
		c.suspected = map[string]time.Time{} // bounded; only recent failures matter
	}
	c.suspected[name] = time.Now()
}

// Suspects returns the names of the members in the view whose probe by
// this member failed in the last suspectMemory (memberlist suspects them;
// they are declared dead after the suspicion timeout unless they refute
// it), sorted. memberlist tells no delegate when it suspects a member, nor
// exposes the state: its log line is the signal. Suspicions gossiped by
// other members are not seen here. It does not block on the network.
func (c *Cluster) Suspects() []string {
	if c.inactive.Load() {
		return nil
	}
	now := time.Now()
	var out []string
	c.mu.Lock()
	for name, at := range c.suspected {
		if now.Sub(at) > suspectMemory {
			delete(c.suspected, name)
			continue
		}
		if _, ok := c.view[name]; ok {
			out = append(out, name)
		}
	}
	c.mu.Unlock()
	slices.Sort(out)
	return out
}

// Member returns the alive (or suspect) member called name as this member sees it now, and whether there
// is one. Unlike Members it copies one member, not the view: O(log n), for callers that poll one name
// (the scale simulation watches hundreds of members for one change).
func (c *Cluster) Member(name string) (Member, bool) {
	ms := *c.snap.Load()
	i, ok := slices.BinarySearchFunc(ms, name, func(m Member, n string) int {
		switch {
		case m.Name < n:
			return -1
		case m.Name > n:
			return 1
		}
		return 0
	})
	if !ok {
		return Member{}, false
	}
	return cloneMember(ms[i]), true
}

func cloneMembers(ms []Member) []Member {
	out := make([]Member, len(ms))
	for i, m := range ms {
		m.Kinds = slices.Clone(m.Kinds)
		m.Features = slices.Clone(m.Features)
		out[i] = m
	}
	return out
}

// Updates returns the channel of topology changes (joins, leaves, failures, metadata changes other than
// load). One goroutine sends, in order. It never blocks memberlist: if the reader is slow, changes are
// coalesced into one pending Topology whose Joined/Left/Changed are relative to the last Topology the
// reader received. The channel is closed by Shutdown.
func (c *Cluster) Updates() <-chan Topology { return c.updates }

// Owner returns the member hosting kind that ranks first for key by rendezvous hashing over the current
// members (see Topology.Owner). For cluster-unique keyed actors (a tenant's limiter).
func (c *Cluster) Owner(kind, key string) (Member, bool) {
	m, ok := ownerOf(*c.snap.Load(), kind, key)
	c.placed("owner", kind, ok)
	return cloneMember(m), ok
}

// PickLeastLoaded chooses a member hosting kind for new work identified by key (a run id), preferring
// low load: "power of d choices" with d = PlacementChoices (default 2), the choices being the d members
// ranked highest by rendezvous hashing of key. The less loaded wins; ties go to the better ranked.
// Why not the least loaded of all: load is gossiped (lagging by up to LoadUpdateInterval), so every
// caller would send a burst of new runs to the same node until its load update arrives; two choices
// bound the imbalance without herding, and every caller picks the same member for the same key and load.
func (c *Cluster) PickLeastLoaded(kind, key string) (Member, bool) {
	m, ok := pickLeastLoaded(*c.snap.Load(), kind, key, c.cfg.PlacementChoices)
	c.placed("least_loaded", kind, ok)
	return cloneMember(m), ok
}

func cloneMember(m Member) Member {
	m.Kinds = slices.Clone(m.Kinds)
	m.Features = slices.Clone(m.Features)
	return m
}

func (c *Cluster) placed(method, kind string, ok bool) {
	res := "ok"
	if !ok {
		res = "none"
	}
	c.met.placements.WithLabelValues(method, kind, res).Inc()
}

// SetLoad sets the load (active runs) this member announces (gossiped as load messages, load.go). It
// never blocks: announcements are sent by the maintenance loop at most once per LoadUpdateInterval,
// always with the latest value.
func (c *Cluster) SetLoad(active int) {
	if active < 0 {
		active = 0
	}
	if c.load.Swap(int64(active)) == int64(active) {
		return
	}
	select {
	case c.loadKick <- struct{}{}:
	default:
	}
}

// Pressure is what a member announces about its load (issue 18): see Member's fields of the same names.
type Pressure struct {
	Load, Limit, Queued   int
	StageLatency          time.Duration
	StageLoad, StageLimit int
}

// SetPressure sets the load, limit, queue and stage latency this member announces, like SetLoad (never
// blocks; at most one announcement per LoadUpdateInterval, with the latest values). The latency is
// announced in whole milliseconds.
func (c *Cluster) SetPressure(p Pressure) {
	p.Limit, p.Queued = max(p.Limit, 0), max(p.Queued, 0)
	p.StageLoad, p.StageLimit = max(p.StageLoad, 0), max(p.StageLimit, 0)
	p.StageLatency = p.StageLatency.Truncate(time.Millisecond)
	old := c.pressure.Swap(&p)
	changed := old == nil || old.Limit != p.Limit || old.Queued != p.Queued || old.StageLatency != p.StageLatency ||
		old.StageLoad != p.StageLoad || old.StageLimit != p.StageLimit
	if c.load.Swap(int64(max(p.Load, 0))) != int64(max(p.Load, 0)) {
		changed = true
	}
	if changed {
		select {
		case c.loadKick <- struct{}{}:
		default:
		}
	}
}

// Fenced returns a channel closed when this member learns that the others declared it dead (see
// fence.go). By then memberlist is shut down; the caller stops its actors, calls Shutdown, and starts a
// new Cluster with a new NodeName (NewNodeName).
func (c *Cluster) Fenced() <-chan struct{} { return c.fenced }

// FenceCause returns nil, or an error wrapping ErrFenced that says who declared us dead and why we
// accepted it.
func (c *Cluster) FenceCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fenceCause
}

// Leave announces a graceful departure and waits up to timeout for it to be gossiped; the others see us
// leave at once instead of after failure detection. Membership keeps running (so in-flight work can be
// handed off) until Shutdown; seeds are no longer re-joined. Calling it twice is harmless. It returns
// ErrShutdown or ErrFenced when there is nothing to leave.
func (c *Cluster) Leave(timeout time.Duration) error {
	c.life.Lock()
	defer c.life.Unlock()
	switch {
	case c.closed:
		return ErrShutdown
	case c.isFenced:
		return ErrFenced
	case c.left:
		return nil // memberlist's Leave is done or under way
	}
	c.left = true
	// Say "draining" first, so others stop placing work here and know, when
	// we are gone, that we left on purpose (memberlist does not tell a
	// leave from a death in NotifyLeave).
	c.draining.Store(true)
	c.met.metaUpdates.Inc()
	if err := c.ml.UpdateNode(timeout / 2); err != nil {
		c.log.Warn("cluster: could not announce draining", "err", err)
	}
	time.Sleep(min(timeout/4, 4*c.cfg.GossipInterval))
	// From here on nothing announces our state again: an UpdateNode after
	// memberlist's Leave would say we are alive again, and once memberlist
	// reaped our own left state (GossipToTheDeadTime) it panics.
	c.gone.Store(true)
	if err := c.ml.Leave(timeout); err != nil {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return nil
}

// Shutdown stops memberlist (without Leave: call Leave first for a graceful exit) and every goroutine
// this package started, waits for them, and closes Updates. It is idempotent and safe to call
// concurrently; later calls return nil at once.
func (c *Cluster) Shutdown() error {
	c.life.Lock()
	if c.closed {
		c.life.Unlock()
		return nil
	}
	c.closed = true
	c.inactive.Store(true)
	c.life.Unlock()
	close(c.stop)
	err := c.ml.Shutdown()
	c.wg.Wait()
	close(c.updates)
	if err != nil {
		return fmt.Errorf("cluster: shutdown: %w", err)
	}
	return nil
}

// fence is called by the maintenance loop once an accusation is accepted.
func (c *Cluster) fence(reason string) {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed || c.isFenced || c.left {
		return
	}
	c.isFenced = true
	c.inactive.Store(true)
	c.mu.Lock()
	c.fenceCause = fmt.Errorf("%w: %s", ErrFenced, reason)
	c.view = map[string]Member{}
	c.loadSeqs = map[string]uint64{}
	c.rebuildLocked()
	c.mu.Unlock()
	c.met.fencings.Inc()
	c.log.Error("cluster: FENCED: the cluster declared this member dead; stopping membership", "reason", reason)
	close(c.fenced)
	if err := c.ml.Shutdown(); err != nil {
		c.log.Warn("cluster: memberlist shutdown after fencing", "err", err)
	}
	c.kickTopology()
}

// rebuildLocked publishes the view as the sorted snapshot. c.mu must be held.
func (c *Cluster) rebuildLocked() {
	ms := make([]Member, 0, len(c.view))
	for _, m := range c.view {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	c.snap.Store(&ms)
	c.met.members.Set(float64(len(ms)))
	c.met.tombstoned.Set(float64(len(c.tomb.at)))
}

// putLocked publishes the snapshot with m in place of the member of the same name, or inserted in
// order: one copy, no sort (updates and joins are the frequent changes: O(N) instead of rebuilding
// and sorting the view). c.view must already hold m; c.mu must be held.
func (c *Cluster) putLocked(m Member) {
	ms := *c.snap.Load()
	i, ok := slices.BinarySearchFunc(ms, m.Name, func(x Member, n string) int { return strings.Compare(x.Name, n) })
	if ok {
		ns := slices.Clone(ms)
		ns[i] = m
		c.snap.Store(&ns)
		return
	}
	if len(ms)+1 != len(c.view) { // the snapshot and the view disagree: start again from the view
		c.rebuildLocked()
		return
	}
	ns := make([]Member, 0, len(ms)+1)
	ns = append(append(append(ns, ms[:i]...), m), ms[i:]...)
	c.snap.Store(&ns)
	c.met.members.Set(float64(len(ns)))
}

func (c *Cluster) kickTopology() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// topologyLoop is the only sender on Updates. It holds at most one pending Topology, recomputed against
// the last delivered one at every kick.
func (c *Cluster) topologyLoop() {
	defer c.wg.Done()
	var (
		last    []Member
		pending *Topology
		epoch   uint64
	)
	c.kickTopology() // deliver the initial view
	for {
		var out chan<- Topology
		var next Topology
		if pending != nil {
			out, next = c.updates, *pending
		}
		select {
		case <-c.stop:
			return
		case <-c.kick:
			cur := *c.snap.Load()
			t := diffTopology(last, cur)
			c.mu.Lock()
			for _, m := range t.Left {
				if c.graceful[m.Name] {
					t.Departed = append(t.Departed, m)
				}
			}
			c.mu.Unlock()
			if t.Members == nil && last != nil {
				pending = nil // back to what the reader has (or only load changed)
				continue
			}
			if pending == nil {
				epoch++
			}
			t.Epoch = epoch
			pending = &t
		case out <- next:
			last = next.Members
			pending = nil
			c.met.topologies.Inc()
		}
	}
}

// diffTopology builds the Topology for cur relative to prev (both sorted by name). It compares first
// and copies only when something other than load changed (a load-only change, the common update, then
// costs no allocation: issue 15 measured these copies among the costs of 500 members).
func diffTopology(prev, cur []Member) Topology {
	var joined, changed []int // indexes into cur
	var left []int            // indexes into prev
	i, j := 0, 0
	for i < len(prev) || j < len(cur) {
		switch {
		case j == len(cur) || (i < len(prev) && prev[i].Name < cur[j].Name):
			left = append(left, i)
			i++
		case i == len(prev) || cur[j].Name < prev[i].Name:
			joined = append(joined, j)
			j++
		default:
			if !sameButLoad(prev[i], cur[j]) {
				changed = append(changed, j)
			}
			i++
			j++
		}
	}
	if len(joined) == 0 && len(changed) == 0 && len(left) == 0 && prev != nil {
		return Topology{}
	}
	t := Topology{Members: cloneMembers(cur)}
	for _, j := range joined {
		t.Joined = append(t.Joined, t.Members[j])
	}
	for _, j := range changed {
		t.Changed = append(t.Changed, t.Members[j])
	}
	for _, i := range left {
		t.Left = append(t.Left, prev[i])
	}
	return t
}

func sameButLoad(a, b Member) bool {
	return a.GossipAddr == b.GossipAddr && a.RemoteAddr == b.RemoteAddr && a.Version == b.Version &&
		slices.Equal(a.Kinds, b.Kinds) && slices.Equal(a.Features, b.Features)
}

// maintenanceLoop announces load (rate-limited), re-announces our metadata when a member left, sends
// fence notices and evaluates accusations.
func (c *Cluster) maintenanceLoop() {
	defer c.wg.Done()
	var (
		lastLoad   time.Time
		loadTimer  *time.Timer
		loadFire   <-chan time.Time
		lastNotice = map[string]time.Time{}
	)
	defer func() {
		if loadTimer != nil {
			loadTimer.Stop()
		}
	}()
	announce := func() {
		lastLoad = time.Now()
		c.announceLoad()
	}
	for {
		select {
		case <-c.stop:
			return
		case <-c.loadKick:
			if c.inactive.Load() || loadFire != nil {
				continue
			}
			if wait := c.cfg.LoadUpdateInterval - time.Since(lastLoad); wait > 0 {
				loadTimer = time.NewTimer(wait)
				loadFire = loadTimer.C
				continue
			}
			announce()
		case <-c.bump:
			// Raise our incarnation: dead/suspect messages about us that the other side of a partition
			// produced (with the incarnation it last knew) are then ignored as stale when it heals,
			// instead of killing us here (memberlist accepts a dead message whose incarnation equals
			// the one it holds).
			if !c.inactive.Load() && !c.gone.Load() {
				c.met.metaUpdates.Inc()
				// The broadcast is queued at once; the timeout only bounds how long we wait for it to go out.
				if err := c.ml.UpdateNode(4 * c.cfg.GossipInterval); err != nil {
					c.log.Debug("cluster: re-announcement not yet gossiped", "err", err)
				}
			}
		case <-loadFire:
			loadFire, loadTimer = nil, nil
			if !c.inactive.Load() {
				announce()
			}
		case n := <-c.notices:
			now := time.Now()
			if c.inactive.Load() || now.Sub(lastNotice[n.Target]) < noticeInterval {
				continue
			}
			for t, at := range lastNotice {
				if now.Sub(at) > noticeInterval {
					delete(lastNotice, t)
				}
			}
			lastNotice[n.Target] = now
			c.mu.Lock()
			n.Accuser = c.self
			n.AccuserCount, n.AccuserMin = c.sideLocked()
			c.mu.Unlock()
			if err := c.ml.SendToAddress(memberlist.Address{Addr: n.addr}, n.encode()); err != nil {
				c.log.Debug("cluster: fence notice not sent", "to", n.Target, "err", err)
				continue
			}
			c.met.noticesSent.Inc()
		case a := <-c.accusations:
			c.mu.Lock()
			names := make(map[string]struct{}, len(c.view))
			for n := range c.view {
				names[n] = struct{}{}
			}
			c.mu.Unlock()
			if len(names) == 0 { // fenced or not started
				continue
			}
			if ok, reason := decide(c.self, names, a); ok {
				c.fence(reason)
			} else {
				c.log.Info("cluster: ignoring accusation from the minority side of a healed partition", "accuser", a.Accuser, "its_members", a.AccuserCount, "ours", len(names))
			}
		}
	}
}

// sideLocked returns our view's size and smallest name. c.mu must be held.
func (c *Cluster) sideLocked() (int, string) {
	min := ""
	for n := range c.view {
		if min == "" || n < min {
			min = n
		}
	}
	return len(c.view), min
}

// delegate implements memberlist's Delegate, EventDelegate and AliveDelegate. memberlist calls them with
// its node lock held (events and alive) or from its packet/stream goroutines; none of them blocks or
// calls back into memberlist.
type delegate struct{ c *Cluster }

// NodeMeta encodes our metadata with our last announced load (and its sequence) as a snapshot.
func (d *delegate) NodeMeta(limit int) []byte {
	c := d.c
	md := meta{Features: c.feat, RemoteAddr: c.cfg.RemoteAddr, Version: c.cfg.Version, Kinds: c.cfg.Kinds,
		Draining: c.draining.Load()}
	if l := c.announced.Load(); l != nil {
		md.Load, md.Limit, md.Queued, md.LatencyMs = l.Load, l.Limit, l.Queued, l.LatencyMs
		md.StageActive, md.StageLimit, md.LoadSeq = l.StageActive, l.StageLimit, l.Seq
	}
	b := md.encode()
	if len(b) > limit { // Start checked the worst case against MetaMaxSize
		return nil
	}
	return b
}

// NotifyMsg receives our user messages: fence notices and load messages, told apart by their tag
// (wireMagic, then wireFenceV1 or wireLoadV1). Anything else is ignored.
func (d *delegate) NotifyMsg(b []byte) {
	if d.c.inactive.Load() || len(b) < 2 || b[0] != wireMagic {
		return
	}
	switch b[1] {
	case wireFenceV1:
		n, err := decodeFenceNotice(b)
		if err != nil || n.Target != d.c.self {
			return
		}
		d.c.accuse(n.accusation)
	case wireLoadV1:
		d.c.receiveLoad(b)
	}
}

func (c *Cluster) accuse(a accusation) {
	select {
	case c.accusations <- a:
	default:
	}
}

// GetBroadcasts returns load messages to piggyback on a gossip or probe packet (load.go).
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if d.c.inactive.Load() {
		return nil
	}
	return d.c.bq.get(overhead, limit)
}

// LocalState is sent on every push/pull: our side, our recent tombstones, and the load we hold for
// each member of our view (load.go).
func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	c.mu.Lock()
	defer c.mu.Unlock()
	n, smallest := c.sideLocked()
	loads := make([]loadMsg, 0, min(len(c.view), maxWireStrings))
	for name, m := range c.view {
		if len(loads) == cap(loads) {
			break
		}
		l := loadMsg{Sender: name, Seq: c.loadSeqs[name], Load: m.Load, Limit: m.Limit, Queued: m.Queued,
			LatencyMs: int(m.StageLatency / time.Millisecond), StageActive: m.StageLoad, StageLimit: m.StageLimit}
		loads = append(loads, l)
	}
	return pushState{Sender: c.self, Count: n, Min: smallest, Dead: c.tomb.recent(maxStateTombstones), Loads: loads}.encode()
}

// MergeRemoteState looks for our own name among the sender's tombstones.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := d.c
	kind := "periodic"
	if join {
		kind = "join"
	}
	c.met.pushPulls.WithLabelValues(kind).Inc()
	if c.inactive.Load() {
		return
	}
	s, err := decodePushState(buf)
	if err != nil {
		return
	}
	if slices.Contains(s.Dead, c.self) {
		c.accuse(accusation{Accuser: s.Sender, AccuserCount: s.Count, AccuserMin: s.Min, Via: "push-pull"})
	}
	for _, l := range s.Loads {
		if l.Sender != c.self && c.applyLoad(l) {
			c.met.loadReceived.WithLabelValues("push_pull").Inc()
		}
	}
}

// NotifyAlive refuses alive messages for tombstoned names, and asks the maintenance loop to tell that
// address it is fenced.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	c := d.c
	if n.Name == c.self {
		return nil
	}
	c.mu.Lock()
	dead := c.tomb.has(n.Name, time.Now(), c.cfg.TombstoneTTL)
	c.mu.Unlock()
	if !dead {
		return nil
	}
	c.met.refusedAlive.Inc()
	select {
	case c.notices <- fenceNotice{Target: n.Name, addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))}:
	default:
	}
	return fmt.Errorf("cluster: %s was declared dead; it must rejoin under a new name", n.Name)
}

// NotifyJoin adds a member to the view.
func (d *delegate) NotifyJoin(n *memberlist.Node) { d.upsert(n, true) }

// NotifyUpdate refreshes a member's metadata.
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.upsert(n, false) }

func (d *delegate) upsert(n *memberlist.Node, join bool) {
	c := d.c
	if c.inactive.Load() {
		return
	}
	m, seq, err := memberFromMeta(n.Name, net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), n.Meta)
	if err != nil {
		c.log.Warn("cluster: member metadata unreadable; it will not be chosen for placement", "member", n.Name, "err", err)
	}
	c.mu.Lock()
	old, existed := c.view[n.Name]
	if known := c.loadSeqs[n.Name]; existed && known > seq {
		// A load message newer than this snapshot: keep its load.
		m.Load, m.Limit, m.Queued, m.StageLatency = old.Load, old.Limit, old.Queued, old.StageLatency
		m.StageLoad, m.StageLimit = old.StageLoad, old.StageLimit
	} else {
		c.loadSeqs[n.Name] = seq
	}
	c.view[n.Name] = m
	c.putLocked(m)
	c.mu.Unlock()
	if join && !existed {
		c.met.joins.Inc()
		c.log.Info("cluster: member joined", "member", n.Name, "kinds", m.Kinds, "remote", m.RemoteAddr)
	}
	c.kickTopology()
}

// NotifyLeave removes a member from the view and tombstones its name.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	c := d.c
	if c.inactive.Load() || n.Name == c.self {
		return
	}
	now := time.Now()
	c.mu.Lock()
	wasDraining := c.view[n.Name].Draining
	delete(c.view, n.Name)
	delete(c.loadSeqs, n.Name)
	c.bq.remove(n.Name)
	c.tomb.prune(now, c.cfg.TombstoneTTL)
	c.tomb.add(n.Name, now)
	if c.graceful == nil || len(c.graceful) > 4096 {
		c.graceful = map[string]bool{} // bounded; only recent departures matter
	}
	if wasDraining {
		c.graceful[n.Name] = true
	}
	c.rebuildLocked()
	c.mu.Unlock()
	c.met.leaves.Inc()
	c.log.Info("cluster: member left or declared dead", "member", n.Name)
	c.kickTopology()
	select {
	case c.bump <- struct{}{}:
	default:
	}
}
