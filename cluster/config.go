package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures one membership instance. Start copies it; changing a Config after Start has no effect.
// Durations left at zero are filled from DefaultConfig by validate; every other zero value is documented.
type Config struct {
	// NodeName is this member's memberlist name. It must be unique in the cluster for the whole life of the
	// cluster: a name that the others have declared dead (or that left) is refused for TombstoneTTL, so a
	// process that restarts after a crash, or after being fenced, must use a NEW name (see NewNodeName).
	// Default: NewNodeName(hostname).
	NodeName string

	// BindAddr is the "host:port" gossip listens on, UDP and TCP. Port 0 picks a free port (tests).
	// Ignored when Transport is set. Default "0.0.0.0:7946".
	BindAddr string

	// AdvertiseAddr is the "host:port" other members use to reach this one. Default: the address of
	// BindAddr (a private IP of this host when BindAddr is 0.0.0.0), same port.
	AdvertiseAddr string

	// Seeds are "host:port" addresses of members to join through. DNS names are allowed and are resolved
	// again at every join attempt (compose service names, Kubernetes headless services). Our own
	// AdvertiseAddr may be listed (every node of a compose file can share one seed list). Empty: start a
	// new cluster and wait for others to join us.
	Seeds []string

	// ClusterKey is the gossip encryption key (AES-GCM through memberlist's keyring): 16, 24 or 32 bytes.
	// Required unless Insecure. Every packet and push/pull stream is encrypted and authenticated with it,
	// so a process without the key can neither join, read, nor inject gossip. See ParseKey.
	ClusterKey []byte

	// SecondaryKeys are further keys of the keyring, each 16, 24 or 32 bytes: packets encrypted with any
	// of them are accepted, while ClusterKey (the primary) encrypts what this member sends. A key is
	// rotated in three rolling phases (docs/keys.md): add the new key here everywhere, make it the
	// primary everywhere, then drop the old one. Requires ClusterKey.
	SecondaryKeys [][]byte

	// Insecure allows running without ClusterKey (local development only). It is logged at WARN level.
	Insecure bool

	// ClusterName separates clusters that share a network (and possibly a key): it is memberlist's Label,
	// sent in front of every packet and used as GCM associated data. Default "qlc".
	ClusterName string

	// Kinds are the actor kinds this process hosts, e.g. "coordinator", "tokenizer", "gateway".
	Kinds []string

	// RemoteAddr is this process's actor-transport address (protoactor remote), announced in metadata.
	RemoteAddr string

	// Version is the software version, announced in metadata.
	Version string

	// DisableFeatures are CPU features to pretend are absent (e.g. "avx2"), so tests and operators can
	// build mixed clusters on one machine. Names must be in KnownFeatures.
	DisableFeatures []string

	// ProbeInterval is the SWIM probe period: every interval this member pings one other member.
	// Default 100 ms (memberlist's LAN preset: 1 s). Detection time is about ProbeInterval plus the
	// suspicion timeout (see SuspicionMult) plus gossip: ~0.5–0.7 s on loopback for a frozen or cut-off
	// member (chaos pause/partition: fault → next token p99 0.71/0.81 s). A crashed process is noticed
	// sooner by the actor transport, whose connections break. Issue 18 tried 200 ms (with a 150 ms
	// ack timeout): no better under overload than 100/80 with SuspicionMult 4 (0 suspicions, 0 deaths
	// in the overload scenario), and a pause or partition then took 1.2–1.3 s to recover (issue 17's
	// goal is 1 s), a group split 3 s and more.
	ProbeInterval time.Duration

	// ProbeTimeout is how long to wait for a direct ack before asking IndirectChecks peers to probe.
	// Must be < ProbeInterval (memberlist issue #149). Default 80 ms (was 50): a LAN round trip is < 1 ms, the
	// rest is headroom for scheduling delay on a busy or CPU-limited host (a 0.2-CPU cgroup can be
	// throttled for 80 ms of every 100 ms). Lifeguard stretches it up to AwarenessMaxMultiplier× on a
	// member that notices it is the slow one.
	ProbeTimeout time.Duration

	// SuspicionMult scales the suspicion timeout: SuspicionMult × max(1, log10(n)) × ProbeInterval.
	// Default 4 (issue 18, "overload is not failure"): memberlist then expects k = SuspicionMult-2 = 2
	// independent confirmations (Lifeguard's local-health-aware suspicion, when n >= 4): a suspicion
	// starts at SuspicionMaxTimeoutMult × 400 ms and shrinks to 400 ms as other members confirm it. A
	// crashed member is confirmed by every prober within a probe round or two (detection ≈ 0.5–0.7 s); a
	// CPU-starved member that answers late is given the time to refute. The former default 2 (k = 0, a
	// fixed 200 ms at the former 100 ms probe interval) declared a member dead whenever it missed ~2
	// probe periods of CPU, then fenced it
	// and restarted its runs elsewhere (TestStarvedMemberIsNotDeclaredDead).
	SuspicionMult int

	// SuspicionMaxTimeoutMult bounds the suspicion timeout when confirmations are expected (k > 0): a
	// suspicion nobody confirms times out after SuspicionMaxTimeoutMult × the minimum. Default 6
	// (2.4 s for n < 10; Consul uses 6): long enough for a starved member to be scheduled and refute,
	// short enough that a member only one prober can reach is still settled in seconds.
	SuspicionMaxTimeoutMult int

	// IndirectChecks is how many peers are asked to probe a member that missed a direct ack. Default 2.
	IndirectChecks int

	// GossipInterval is the period of gossip rounds (dissemination of alive/suspect/dead and metadata).
	// Default 50 ms, so a death is known by everyone one or two rounds after it is declared.
	GossipInterval time.Duration

	// GossipNodes is how many random members each gossip round goes to. Default 3 (covers a small
	// cluster in one round).
	GossipNodes int

	// RetransmitMult scales how many gossip messages carry each membership broadcast (alive, suspect,
	// dead): RetransmitMult × ⌈log10(n+1)⌉, each to a random member of the view, then relayed by every
	// member it changes something for. Default 6 (memberlist's 4; 3 here before): with GossipNodes 3 a
	// limit of 3 spends a small cluster's whole budget in one gossip round, and in a split half of the
	// targets drawn are on the cut side (suspect and recently dead members stay gossip targets), so a
	// member missed a verdict and the suspicions that confirm it about one fault in ten when the gateway's
	// side held five members (compose with its second gateway: the gateway declared the node dead on its
	// own timer with one confirmation, 1.46 s after the cut, where its peer had with two at 0.72 s).
	// Load messages (load.go) keep 3: they are many and the next one supersedes a lost one.
	RetransmitMult int

	// PushPullInterval is the period of full state exchange with one random member (memberlist
	// multiplies it by 1 up to 32 members and one more per doubling beyond). Default 3 s: it is the
	// anti-entropy that repairs a join or a change gossip missed at one member (the every-seed re-join
	// did that every 3 s before issue 15; without it a member missed a join for 9.6 s at 50 members),
	// O(N) bytes per member per period, unlike the re-join's O(N²) at the seeds; the re-join of
	// missing seeds (RejoinInterval) heals partitions.
	PushPullInterval time.Duration

	// GossipToTheDeadTime is how long we keep gossiping to members we declared dead, so a member that
	// comes back (paused, partitioned) hears about it. Default 15 s.
	GossipToTheDeadTime time.Duration

	// TCPTimeout bounds push/pull, join and TCP-fallback probes. Default 1 s (loopback/LAN).
	TCPTimeout time.Duration

	// AwarenessMaxMultiplier lets a member that misses acks (it is probably the slow one) stretch its own
	// probe timeouts up to this factor (memberlist's Lifeguard). Default 8.
	AwarenessMaxMultiplier int

	// RejoinInterval is the period at which the seeds are checked (±20 % jitter; RejoinInterval/4 while
	// we know no other member): the seeds' addresses (DNS names resolved again) that no member of our
	// view has are joined, at most 3 of them. That heals a partition (memberlist does not re-merge one by
	// itself: the side without a seed joins the seeds on the other side, and the push/pull carries the
	// tombstones that fence the smaller side) and finds seeds that started after us, while a steady
	// cluster whose seeds are all members joins nobody (rejoin.go; until issue 15 every member joined
	// every seed every interval, O(N²) bytes at the seeds). A member whose own ticks come later than
	// ProbeTimeout + SuspicionMult × ProbeInterval (a pause: it may have been declared dead while it
	// still sees everyone) push/pulls with one random member, at most once per RejoinInterval. Default 3 s.
	RejoinInterval time.Duration

	// RejoinAllSeedsUpTo: a member whose view has at most this many members joins every seed each
	// RejoinInterval (up to 3), not only the missing ones (rejoin.go): in a small cluster that costs
	// little and is the fast anti-entropy a starved member needs to refute a suspicion in time.
	// Default 32 (where memberlist starts scaling its own push/pull); 0: only missing seeds.
	RejoinAllSeedsUpTo int

	// SeedResyncInterval is the mean period of the safety-net join of one random seed, done even when
	// every seed is a member (for views that disagree in ways the missing-seed rule does not see: a seed
	// we see alive that sees us dead). It is multiplied, as memberlist multiplies PushPullInterval, by 1
	// up to 32 members and one more per doubling beyond (×5 at 500), and jittered uniformly over 0.5–1.5
	// of that. Default 30 s: at 500 members and 3 seeds each seed serves ~1.1 such push/pulls a second.
	SeedResyncInterval time.Duration

	// CompressGossip turns on memberlist's LZW compression of every packet and push/pull (memberlist's
	// own default is on). Off by default (issue 15): memberlist compresses each packet with a new LZW
	// writer, a 64 KB table allocated per ping, ack and gossip packet, and the garbage collection that
	// follows were the largest CPU cost of 500 simulated members (BENCHMARKS.md, issue 15: 22 % of the
	// CPU, most of the garbage collection). The price is bigger packets and push/pulls (the saving
	// was not measured separately; bytes per member with it off are in BENCHMARKS.md). Members with
	// and without it interoperate (a compressed message is decoded whatever the receiver's setting).
	CompressGossip bool

	// LoadUpdateInterval is the minimum time between two load announcements (each a load message
	// gossiped to the cluster, load.go; not a metadata change). SetLoad never blocks; the newest value
	// is sent. Default 250 ms.
	LoadUpdateInterval time.Duration

	// TombstoneTTL is how long a name declared dead (or left) is refused after it left our view.
	// Default 1 h. At most maxTombstones names are kept (oldest dropped first).
	TombstoneTTL time.Duration

	// PlacementChoices is d in "power of d choices" for PickLeastLoaded: the d highest rendezvous-ranked
	// candidates for the key are compared and the least loaded wins. 0 means the default 2; a value >= the
	// number of candidates means "least loaded of all" (ties broken by rendezvous rank).
	PlacementChoices int

	// Transport replaces the network (tests: NewMemNetwork; fault injection and byte counts:
	// WrapTransport). nil means real UDP+TCP sockets on BindAddr. The Cluster shuts it down.
	Transport memberlist.NodeAwareTransport

	// Logger receives this package's and memberlist's logs. Default slog.Default().
	Logger *slog.Logger

	// Registerer receives the qlc_cluster_* metrics. nil: metrics are kept but not registered.
	// A second Cluster (after fencing) on the same Registerer reuses the collectors already registered.
	Registerer prometheus.Registerer
}

// DefaultConfig returns the LAN-tuned defaults described on each Config field. NodeName, Seeds,
// ClusterKey, Kinds, RemoteAddr and Version are left for the caller.
func DefaultConfig() Config {
	return Config{
		BindAddr:                "0.0.0.0:7946",
		ClusterName:             "qlc",
		ProbeInterval:           100 * time.Millisecond,
		ProbeTimeout:            80 * time.Millisecond,
		SuspicionMult:           4,
		SuspicionMaxTimeoutMult: 6,
		IndirectChecks:          2,
		GossipInterval:          50 * time.Millisecond,
		GossipNodes:             3,
		RetransmitMult:          6,
		PushPullInterval:        3 * time.Second,
		GossipToTheDeadTime:     15 * time.Second,
		TCPTimeout:              time.Second,
		AwarenessMaxMultiplier:  8,
		RejoinInterval:          3 * time.Second,
		SeedResyncInterval:      30 * time.Second,
		RejoinAllSeedsUpTo:      32,
		LoadUpdateInterval:      250 * time.Millisecond,
		TombstoneTTL:            time.Hour,
		PlacementChoices:        2,
	}
}

// NewNodeName returns base followed by "-" and 8 random hex digits: a name that was never used before, as
// a member needs after a restart or a fencing. An empty base uses the host name.
func NewNodeName(base string) string {
	if base == "" {
		base, _ = os.Hostname()
		if base == "" {
			base = "node"
		}
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return base + "-" + hex.EncodeToString(b[:])
}

// maxTombstones bounds the tombstone set (memory and the size of the push/pull state).
const maxTombstones = 4096

// validate fills defaults and rejects bad values. It returns a copy.
func (c Config) validate() (Config, error) {
	d := DefaultConfig()
	if c.NodeName == "" {
		c.NodeName = NewNodeName("")
	}
	if c.Transport == nil {
		if c.BindAddr == "" {
			c.BindAddr = d.BindAddr
		}
		if _, _, err := splitHostPort(c.BindAddr); err != nil {
			return c, fmt.Errorf("cluster: bind address: %w", err)
		}
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitHostPort(c.AdvertiseAddr); err != nil {
			return c, fmt.Errorf("cluster: advertise address: %w", err)
		}
	}
	for _, s := range c.Seeds {
		if _, _, err := splitHostPort(s); err != nil {
			return c, fmt.Errorf("cluster: seed %q: %w", s, err)
		}
	}
	switch len(c.ClusterKey) {
	case 0:
		if !c.Insecure {
			return c, errors.New("cluster: a cluster key is required (set Insecure for local development)")
		}
	case 16, 24, 32:
	default:
		return c, fmt.Errorf("cluster: cluster key is %d bytes, want 16, 24 or 32", len(c.ClusterKey))
	}
	if len(c.SecondaryKeys) > 0 && len(c.ClusterKey) == 0 {
		return c, errors.New("cluster: secondary keys without a primary cluster key")
	}
	secondary := make([][]byte, 0, len(c.SecondaryKeys))
	for i, k := range c.SecondaryKeys {
		switch len(k) {
		case 16, 24, 32:
		default:
			return c, fmt.Errorf("cluster: secondary key %d is %d bytes, want 16, 24 or 32", i+1, len(k))
		}
		secondary = append(secondary, append([]byte(nil), k...))
	}
	c.SecondaryKeys = secondary
	if c.ClusterName == "" {
		c.ClusterName = d.ClusterName
	}
	if len(c.ClusterName) > memberlist.LabelMaxSize {
		return c, fmt.Errorf("cluster: cluster name longer than %d bytes", memberlist.LabelMaxSize)
	}
	for _, k := range c.Kinds {
		if k == "" {
			return c, errors.New("cluster: empty kind")
		}
	}
	for _, f := range c.DisableFeatures {
		if featureBit(strings.ToLower(f)) < 0 {
			return c, fmt.Errorf("cluster: unknown CPU feature %q in DisableFeatures (known: %s)", f, strings.Join(KnownFeatures(), ", "))
		}
	}
	durs := []struct {
		p   *time.Duration
		def time.Duration
	}{
		{&c.ProbeInterval, d.ProbeInterval}, {&c.ProbeTimeout, d.ProbeTimeout},
		{&c.GossipInterval, d.GossipInterval}, {&c.PushPullInterval, d.PushPullInterval},
		{&c.GossipToTheDeadTime, d.GossipToTheDeadTime}, {&c.TCPTimeout, d.TCPTimeout},
		{&c.RejoinInterval, d.RejoinInterval}, {&c.SeedResyncInterval, d.SeedResyncInterval}, {&c.LoadUpdateInterval, d.LoadUpdateInterval},
		{&c.TombstoneTTL, d.TombstoneTTL},
	}
	for _, x := range durs {
		if *x.p < 0 {
			return c, errors.New("cluster: negative duration in config")
		}
		if *x.p == 0 {
			*x.p = x.def
		}
	}
	ints := []struct {
		p   *int
		def int
	}{
		{&c.SuspicionMult, d.SuspicionMult}, {&c.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult},
		{&c.IndirectChecks, d.IndirectChecks}, {&c.GossipNodes, d.GossipNodes},
		{&c.RetransmitMult, d.RetransmitMult}, {&c.AwarenessMaxMultiplier, d.AwarenessMaxMultiplier},
		{&c.PlacementChoices, d.PlacementChoices},
	}
	for _, x := range ints {
		if *x.p < 0 {
			return c, errors.New("cluster: negative count in config")
		}
		if *x.p == 0 {
			*x.p = x.def
		}
	}
	if c.ProbeTimeout >= c.ProbeInterval {
		return c, fmt.Errorf("cluster: ProbeTimeout %v must be below ProbeInterval %v", c.ProbeTimeout, c.ProbeInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.Seeds = append([]string(nil), c.Seeds...)
	c.Kinds = append([]string(nil), c.Kinds...)
	c.DisableFeatures = append([]string(nil), c.DisableFeatures...)
	c.ClusterKey = append([]byte(nil), c.ClusterKey...)
	return c, nil
}

func splitHostPort(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	return host, p, nil
}
