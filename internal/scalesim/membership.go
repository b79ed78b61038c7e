package scalesim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// Key is the simulations' cluster key (32 bytes: AES-256-GCM on every
// packet, as a deployment's).
const Key = "qlc-scalesim-key-0123456789abcde"

// Config configures one membership simulation. Zero values take the
// defaults named on each field.
type Config struct {
	// N is the number of members in the steady state. Required, >= 3.
	N int
	// Seeds is how many of the first members every member lists as seeds
	// (a deployment lists a few nodes, or a DNS name). A member joins them
	// again when they are missing from its view, and one of them every
	// SeedResyncInterval × m(N) (cluster/rejoin.go). Default 3.
	Seeds int
	// Reps is how many times a join, a death and a metadata change are
	// timed. Default 3.
	Reps int
	// Steady is the window over which gossip bytes are counted. Default
	// 10 s × Scale.
	Steady time.Duration
	// Scale multiplies every protocol interval and timeout of the shipped
	// configuration (probe, gossip, push/pull, re-join, TCP, load
	// announcements). Times are reported divided by Scale, bytes per second
	// multiplied by it: if the protocol, not the CPU, sets the pace, the
	// reported figures do not change with Scale. Default 1.
	Scale int
	// Timeout bounds each wait for every member to agree (a join, a death,
	// a change). Default 30 s × Scale. The start of all N members gets
	// max(60 s, N × 200 ms) × Scale.
	Timeout time.Duration
	// Poll is how often the members' views are read while waiting; it is
	// the resolution of the timings. Default 5 ms.
	Poll time.Duration
	// StartEvery paces the start of the N members. Default 20 ms × Scale
	// (500 members in 10 s). Zero pacing (a mass start) loses members: see
	// docs/scale.md.
	StartEvery time.Duration
	// Seed seeds the choice of members to kill and change. Default 1.
	Seed uint64
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
	// Compress turns on memberlist's per-packet LZW compression
	// (cluster.Config.CompressGossip; off as shipped), to compare.
	Compress bool
	// MemberLogger receives the members' own logs (cluster and memberlist).
	// Default: discard — hundreds of members logging through one handler
	// serialise on it, and a slow writer then delays their acks.
	MemberLogger *slog.Logger
}

func (c *Config) validate() error {
	if c.N < 3 {
		return fmt.Errorf("scalesim: N is %d, want at least 3", c.N)
	}
	if c.Seeds == 0 {
		c.Seeds = 3
	}
	if c.Seeds < 1 || c.Seeds > c.N {
		return fmt.Errorf("scalesim: Seeds is %d, want 1..N", c.Seeds)
	}
	if c.Reps == 0 {
		c.Reps = 3
	}
	if c.Scale == 0 {
		c.Scale = 1
	}
	if c.Reps < 0 || c.Scale < 0 || c.Steady < 0 || c.Timeout < 0 || c.Poll < 0 || c.StartEvery < 0 {
		return errors.New("scalesim: negative Reps, Scale or duration")
	}
	s := time.Duration(c.Scale)
	if c.Steady == 0 {
		c.Steady = 10 * time.Second * s
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second * s
	}
	if c.Poll == 0 {
		c.Poll = 5 * time.Millisecond
	}
	if c.StartEvery == 0 {
		c.StartEvery = 20 * time.Millisecond * s
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MemberLogger == nil {
		c.MemberLogger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Result is what one membership simulation measured. Durations are divided
// by Scale; rates multiplied by it.
type Result struct {
	N, Scale, Seeds int
	// Start is how long starting N members took until every one saw N.
	Start time.Duration
	// Join, Death and Meta hold one time per repetition: until every
	// member saw the new member, saw the stopped one gone, saw the new
	// load. A wait that timed out is recorded as Timeout and counted in
	// Missed.
	Join, Death, Meta []time.Duration
	Missed            int
	// BytesPerMember is gossip sent per member per second over the steady
	// window (packets and streams, after encryption); PacketBytesPerMember
	// and StreamBytesPerMember split it (streams: push/pull, joins).
	// MaxBytesPerMember is the busiest member's (a seed's). PacketsPerMember
	// counts packets.
	BytesPerMember, PacketBytesPerMember, StreamBytesPerMember, MaxBytesPerMember, PacketsPerMember float64
	// CPU is the process's CPU time over the steady window divided by the
	// window times GOMAXPROCS (1 = every core busy all the time).
	CPU float64
	// LagP99 and LagMax are how late a 10 ms timer fired in the steady
	// window (scheduling delay; memberlist's probe timeout is 50 ms).
	LagP99, LagMax time.Duration
	// Loss is the share of packets sent in the steady window that no
	// member received: the in-memory network drops a packet only when the
	// receiver's queue (1024 packets) is full, i.e. when it cannot keep up.
	Loss float64
	// MinView is the smallest view (members seen) at the end of the steady
	// window (N when nobody was falsely suspected); Fenced counts members
	// that were declared dead and fenced themselves during the run.
	MinView, Fenced int
	// Goroutines is the process's goroutine count with N members running.
	Goroutines int
	// StartLagMax is the longest timer lateness while the members started
	// (a stall there makes false suspicions, and fencings, likely).
	StartLagMax time.Duration
	// Failed says why the simulation stopped early ("" if it did not); the
	// error returned says the same.
	Failed string
}

// member is one simulated process: a cluster instance and its counting
// transport.
type member struct {
	c    *cluster.Cluster
	ft   *cluster.FaultTransport
	name string
	addr string
	dead bool
}

// sim is the running set of members of one simulation.
type sim struct {
	cfg   Config
	net   *cluster.MemNetwork
	key   []byte
	seeds []string
	all   []*member
	next  int
	// drains are the members' Updates readers; shutdown waits for them.
	drains sync.WaitGroup
}

// clusterConfig is the configuration a node ships (cmd/node:
// topology.DefaultConfig, a cluster key, the node's kinds), with this
// simulation's transport, seeds and time scale.
func (s *sim) clusterConfig(name string, tr *cluster.FaultTransport) cluster.Config {
	cc := shippedConfig(s.cfg.Scale)
	cc.CompressGossip = s.cfg.Compress
	cc.NodeName = name
	cc.Transport = tr
	cc.Seeds = slices.Clone(s.seeds)
	cc.ClusterKey = s.key
	cc.Kinds = []string{actors.KindCoordinator, actors.KindTokenizer}
	// An actor address and a version as long as a deployment's.
	cc.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:8090", (s.next>>16)&255, (s.next>>8)&255, s.next&255)
	cc.Version = "v0.15.0-3-g0e5f637"
	cc.Logger = s.cfg.MemberLogger
	return cc
}

// add starts one more member.
func (s *sim) add() (*member, error) {
	s.next++
	// Names as cluster.NewNodeName makes them (host name, 8 hex digits),
	// deterministic here so runs place alike.
	name := fmt.Sprintf("qlc-node-%d-%08x", s.next, uint32(s.next)*2654435761)
	ft := cluster.WrapTransport(s.net.NewTransport())
	c, err := cluster.Start(s.clusterConfig(name, ft))
	if err != nil {
		_ = ft.Shutdown()
		return nil, err
	}
	s.drains.Add(1)
	go drainUpdates(c, &s.drains)
	m := &member{c: c, ft: ft, name: name, addr: c.Self().GossipAddr}
	s.all = append(s.all, m)
	if len(s.seeds) < s.cfg.Seeds {
		s.seeds = append(s.seeds, m.addr)
	}
	return m, nil
}

// alive returns the members running and not fenced: a fenced member (a
// false death under CPU starvation) has stopped its membership and sees
// nobody, so waiting for it to see a change would only time out; it is
// counted in Result.Fenced instead.
func (s *sim) alive() []*member {
	var out []*member
	for _, m := range s.all {
		if !m.dead && !isClosed(m.c.Fenced()) {
			out = append(out, m)
		}
	}
	return out
}

func (s *sim) shutdown() {
	for _, m := range s.all {
		if !m.dead {
			m.dead = true
			_ = m.c.Shutdown()
		}
	}
	s.drains.Wait()
}

// drainUpdates reads c's topology updates until Shutdown closes the channel,
// as a node's topology package does. Unread, each member's topology loop
// would rebuild its pending update (a copy of the whole view) at every
// change: a cost no node pays, and at 500 members a large one.
func drainUpdates(c *cluster.Cluster, wg *sync.WaitGroup) {
	defer wg.Done()
	for range c.Updates() {
	}
}

// waitAll polls until cond holds for every member of ms (each checked until
// it holds once), or timeout or ctx ends. It returns the time from t0 to
// the poll that saw the last one, and whether all did.
func waitAll(ctx context.Context, t0 time.Time, ms []*member, poll, timeout time.Duration, cond func(*member) bool) (time.Duration, bool) {
	pending := slices.Clone(ms)
	deadline := t0.Add(timeout)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		now := time.Now()
		pending = slices.DeleteFunc(pending, cond)
		if len(pending) == 0 {
			return now.Sub(t0), true
		}
		if now.After(deadline) {
			return timeout, false
		}
		select {
		case <-ctx.Done():
			return timeout, false
		case <-tick.C:
		}
	}
}

// viewSize counts the members c sees without copying its view.
func viewSize(c *cluster.Cluster) int {
	n := 0
	c.EachMember(func(*cluster.Member) bool { n++; return true })
	return n
}

// SimulateMembership runs one simulation (see the package comment). It
// returns an error if the members could not be started or never all saw
// each other; timed-out waits after that are counted in Result.Missed.
func SimulateMembership(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.validate(); err != nil {
		return Result{}, err
	}
	log := cfg.Logger
	scale := time.Duration(cfg.Scale)
	res := Result{N: cfg.N, Scale: cfg.Scale, Seeds: cfg.Seeds}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x5ca1e))
	s := &sim{cfg: cfg, net: cluster.NewMemNetwork(), key: []byte(Key)}
	defer s.shutdown()

	// 1. Start N members and wait until each sees N (counted with
	// EachMember, which copies nothing), reading the views every 200 ms.
	t0 := time.Now()
	startLag := startLagProbe()
	for range cfg.N {
		if _, err := s.add(); err != nil {
			return res, fmt.Errorf("scalesim: start member %d: %w", len(s.all)+1, err)
		}
		if !sleep(ctx, cfg.StartEvery) {
			return res, ctx.Err()
		}
	}
	startTimeout := max(60*time.Second, time.Duration(cfg.N)*200*time.Millisecond) * scale
	lastLog := time.Now()
	_, ok := waitAll(ctx, t0, s.all, 200*time.Millisecond, startTimeout, func(m *member) bool {
		if time.Since(lastLog) > 15*time.Second {
			lastLog = time.Now()
			lo, hi, fenced := cfg.N, 0, 0
			for _, x := range s.all {
				v := viewSize(x.c)
				lo, hi, fenced = min(lo, v), max(hi, v), fenced+b2i(isClosed(x.c.Fenced()))
			}
			log.Info("scalesim: starting", "n", cfg.N, "since", time.Since(t0).Round(time.Second), "views_min", lo, "views_max", hi, "fenced", fenced)
		}
		return viewSize(m.c) == cfg.N
	})
	res.StartLagMax = quantile(startLag.stop(), 1)
	if !ok {
		lo, hi, full := cfg.N, 0, 0
		for _, m := range s.all {
			v := viewSize(m.c)
			lo, hi, full = min(lo, v), max(hi, v), full+b2i(v == cfg.N)
		}
		res.Failed = fmt.Sprintf("%d members did not all see each other within %v (views %d..%d, %d complete; longest stall while starting %v)", cfg.N, startTimeout, lo, hi, full, res.StartLagMax.Round(time.Millisecond))
		return res, errors.New("scalesim: " + res.Failed)
	}
	res.Start = time.Since(t0) / scale
	res.Goroutines = runtime.NumGoroutine()
	log.Info("scalesim: members up", "n", cfg.N, "took", time.Since(t0).Round(time.Millisecond), "goroutines", res.Goroutines)

	// 2. Settle (the joins' broadcasts drain), then the steady window.
	if !sleep(ctx, 3*time.Second*scale) {
		return res, ctx.Err()
	}
	before := make([]cluster.TransportStats, len(s.all))
	for i, m := range s.all {
		before[i] = m.ft.Stats()
	}
	cpu0 := cpuTime()
	lag := startLagProbe()
	w0 := time.Now()
	ok = sleep(ctx, cfg.Steady)
	window := time.Since(w0)
	lags := lag.stop()
	cpu := cpuTime() - cpu0
	if !ok {
		return res, ctx.Err()
	}
	res.CPU = cpu.Seconds() / (window.Seconds() * float64(runtime.GOMAXPROCS(0)))
	res.LagP99, res.LagMax = quantile(lags, 0.99), quantile(lags, 1)
	perSec := float64(cfg.Scale) / window.Seconds() // per second of unscaled protocol time
	var pkt, strm, pkts, recv float64
	for i, m := range s.all {
		st := m.ft.Stats()
		recv += float64(st.PacketsReceived - before[i].PacketsReceived)
		p := float64(st.PacketBytesSent - before[i].PacketBytesSent)
		q := float64(st.StreamBytesSent - before[i].StreamBytesSent)
		pkt += p
		strm += q
		pkts += float64(st.PacketsSent - before[i].PacketsSent)
		res.MaxBytesPerMember = max(res.MaxBytesPerMember, (p+q)*perSec)
	}
	n := float64(len(s.all))
	if pkts > 0 {
		res.Loss = max(0, 1-recv/pkts)
	}
	res.PacketBytesPerMember = pkt / n * perSec
	res.StreamBytesPerMember = strm / n * perSec
	res.BytesPerMember = res.PacketBytesPerMember + res.StreamBytesPerMember
	res.PacketsPerMember = pkts / n * perSec
	res.MinView = cfg.N
	for _, m := range s.all {
		res.MinView = min(res.MinView, viewSize(m.c))
	}
	log.Info("scalesim: steady window", "n", cfg.N, "bytes_per_member_s", int(res.BytesPerMember), "cpu", fmt.Sprintf("%.2f", res.CPU), "lag_p99", res.LagP99, "loss", res.Loss, "min_view", res.MinView)

	// 3. Repetitions: a join, a death, a load change, each until everyone
	// alive agrees, with a pause between them for broadcasts to drain.
	settle := time.Second * scale
	for r := range cfg.Reps {
		// Join: a new member through the seeds.
		others := s.alive()
		t := time.Now()
		nm, err := s.add()
		if err != nil {
			return res, fmt.Errorf("scalesim: join: %w", err)
		}
		d, ok := waitAll(ctx, t, others, cfg.Poll, cfg.Timeout, func(m *member) bool { _, ok := m.c.Member(nm.name); return ok })
		res.Join = append(res.Join, d/scale)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}

		// Death: a member (not a seed, not the newcomer) stops without
		// leaving, as on kill -9.
		victims := s.alive()[cfg.Seeds:]
		victims = slices.DeleteFunc(victims, func(m *member) bool { return m == nm })
		v := victims[rng.IntN(len(victims))]
		v.dead = true
		t = time.Now()
		_ = v.c.Shutdown()
		d, ok = waitAll(ctx, t, s.alive(), cfg.Poll, cfg.Timeout, func(m *member) bool { _, ok := m.c.Member(v.name); return !ok })
		res.Death = append(res.Death, d/scale)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}

		// Metadata: one member announces a new load (the first change in
		// its life, so not held back by LoadUpdateInterval).
		live := s.alive()
		src := live[rng.IntN(len(live))]
		load := 1000 + r
		t = time.Now()
		src.c.SetLoad(load)
		d, ok = waitAll(ctx, t, live, cfg.Poll, cfg.Timeout, func(m *member) bool {
			x, ok := m.c.Member(src.name)
			return ok && x.Load == load
		})
		res.Meta = append(res.Meta, d/scale)
		res.Missed += b2i(!ok)
		if !sleep(ctx, settle) {
			return res, ctx.Err()
		}
		log.Info("scalesim: repetition", "n", cfg.N, "rep", r+1, "join", res.Join[r], "death", res.Death[r], "meta", res.Meta[r])
	}
	for _, m := range s.all {
		if isClosed(m.c.Fenced()) {
			res.Fenced++
		}
	}
	return res, nil
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// sleep waits d unless ctx ends first (then false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// quantile returns the q-quantile of ds (nearest rank); 0 for none.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// lagProbe measures scheduling delay: how late a 10 ms timer fires.
type lagProbe struct {
	stopc chan struct{}
	done  chan []time.Duration
}

const lagTick = 10 * time.Millisecond

func startLagProbe() *lagProbe {
	p := &lagProbe{stopc: make(chan struct{}), done: make(chan []time.Duration, 1)}
	go func() {
		var lags []time.Duration
		t := time.NewTimer(lagTick)
		defer t.Stop()
		for {
			at := time.Now()
			t.Reset(lagTick)
			select {
			case <-p.stopc:
				p.done <- lags
				return
			case <-t.C:
				lags = append(lags, max(0, time.Since(at)-lagTick))
			}
		}
	}()
	return p
}

func (p *lagProbe) stop() []time.Duration {
	close(p.stopc)
	return <-p.done
}
