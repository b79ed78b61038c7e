package actors

import "time"

// The engine's view of the cluster. Package actors never imports the
// membership library: it depends on the Topology interface below, which
// package topology implements over package cluster (memberlist), and which
// tests fake (StaticTopology, or a type of their own).

// Actor kinds a process announces in the cluster's membership: the one
// definition, used by the Topology implementation and by the commands.
const (
	// KindCoordinator: hosts run coordinators and tenant limiters (nodes).
	KindCoordinator = "coordinator"
	// KindGateway: hosts run hubs, ledgers and tenant registries (gateways).
	KindGateway = "gateway"
	// KindTokenizer: hosts tokenizer actors (nodes whose CPU runs the
	// tokenizer's SIMD path).
	KindTokenizer = "tokenizer"
)

// Placer chooses where run coordinators go.
type Placer interface {
	// Candidates returns the actor addresses of the nodes to offer runID
	// to, best first; the engine tries them in order until one takes it.
	// Empty: no node is available. It does not block and is called
	// concurrently (once per run, and by failovers).
	Candidates(runID string) []string
}

// TokenizerPlacer chooses the hosts of tokenizer actors for a request.
type TokenizerPlacer interface {
	// TokenizerHosts returns the actor addresses of capable hosts, best
	// first (the rendezvous owner of key first, so equal requests meet warm
	// caches). It does not block and is called concurrently.
	TokenizerHosts(key string) []string
}

// LimiterPlacer tells a gateway where tenant limiters live.
type LimiterPlacer interface {
	// LimiterHost returns the actor address of tenant's limiter and a name
	// for the set of limiter hosts the answer was drawn from ("" when none).
	// It does not block and is called concurrently.
	LimiterHost(tenant string) (addr, view string, ok bool)
}

// Topology is what the engine needs to know of the cluster: where to place
// runs, tokenizer work and tenant limiters, which processes serve ledgers,
// and what happens to the members (a stream of TopologyEvent).
//
// Every query method returns the current view without blocking on the
// network and may be called concurrently from many goroutines. Join is
// called once, by NewEngine.
type Topology interface {
	Placer
	TokenizerPlacer
	LimiterPlacer
	// LimiterView is this process's own name for the set of limiter hosts
	// it sees for tenant (the view LimiterHost gives a gateway with the same
	// membership): a tenant limiter hosted here answers only gateways whose
	// view is the same. Non-blocking, concurrent.
	LimiterView(tenant string) string
	// LedgerHosts lists the actor addresses of the processes whose ledgers
	// a tenant limiter rebuilds from: the gateways, and gateways declared
	// dead a short while ago (a falsely suspected gateway comes back with
	// the same ledger). Non-blocking, concurrent.
	LedgerHosts() []string
	// Gateways lists the actor addresses of the gateways (their ledgers and
	// tenant registries), except skip. Non-blocking, concurrent.
	Gateways(skip string) []string
	// Join announces this process in the cluster under its actor address
	// self, with load (the number of runs it hosts, read now and then from
	// the implementation's own goroutine: load must not block), and returns
	// the stream of topology events. It is called once, by NewEngine, after
	// the actor transport is up; it may block for the join (about a second
	// per unreachable seed). The channel is closed when the implementation
	// is closed; its reader (the engine's topology goroutine) must keep
	// reading: the implementation blocks while the channel is full, and
	// membership changes coalesce meanwhile.
	Join(self string, load func() Load) (<-chan TopologyEvent, error)
}

// Load is a process's pressure as it announces it in the membership
// (issue 18): Active is the load placement compares (runs hosted plus
// parallel steps running), Limit the adaptive limit on it (0: none; at
// Limit the process refuses new runs), Queued the runs waiting for a run
// slot, StageLatency its recent stage attempts' mean time per output token
// (what its adaptive limit follows).
//
// StageActive is how many stage attempts of parallel steps it runs, and
// StageLimit its adaptive limit on them (its share of the machine,
// StageCapacity; 0: none): at StageLimit it refuses new attempts, and step
// placement (StepPlacer) offers them to other nodes first.
type Load struct {
	Active, Limit, Queued   int
	StageLatency            time.Duration
	StageActive, StageLimit int
}

// Saturated reports whether l is at its limit.
func (l Load) Saturated() bool { return l.Limit > 0 && l.Active >= l.Limit }

// StageFull reports whether l's stage attempts are at their limit.
func (l Load) StageFull() bool { return l.StageLimit > 0 && l.StageActive >= l.StageLimit }

// StepPlacer is implemented by a Placer that knows the nodes' gossiped
// stage-attempt load: StepCandidates returns the actor addresses to offer
// a parallel step's attempt to (key: run id/step), best first, with the
// nodes that announced their stage share full last. The engine uses
// Candidates when the Placer does not implement it. It does not block and
// is called concurrently.
type StepPlacer interface {
	StepCandidates(key string) []string
}

// HeadroomPlacer is implemented by a Placer that knows the nodes' gossiped
// pressure: Saturated reports whether every node that could take a new run
// announced it is at its limit, with the Retry-After to suggest, so the
// engine refuses at once (ErrSaturated) instead of asking each node. It does
// not block and is called concurrently.
type HeadroomPlacer interface {
	Saturated() (bool, time.Duration)
}

// OwnLoadPlacer is implemented by a Placer that can count what this
// process knows first-hand beside the gossiped loads: the engine hands it,
// once before its first run, own(addr) = this process's unfinished runs on
// the node at addr, and the placer takes a node's load as at least that
// when it judges the node full (Saturated, the order of Candidates). own is
// non-blocking and safe for concurrent use.
type OwnLoadPlacer interface {
	CountOwnRuns(own func(addr string) int)
}

// TopologyEventKind says what happened in the cluster.
type TopologyEventKind int

const (
	// NodeLost: the member at Addr was declared dead (crash, pause,
	// partition). Not sent for a member that left gracefully (a draining
	// node finishes its runs) nor for members lost with our own fencing.
	// The engine moves the runs whose coordinator was there.
	NodeLost TopologyEventKind = iota + 1
	// AddressReused: a new process (a restart, a rejoin under a new name)
	// joined at Addr, where another member was before. The engine drops the
	// transport's state for Addr so the next message dials it afresh.
	AddressReused
	// Fenced: the cluster declared this process dead. The engine stops the
	// actors it hosts (their runs may already go on elsewhere), then calls
	// Done; the implementation rejoins under a new name after that.
	Fenced
	// Rejoined: this process is a member again, under a new name, after
	// Fenced. Addr is empty.
	Rejoined
)

// String names the kind for logs.
func (k TopologyEventKind) String() string {
	switch k {
	case NodeLost:
		return "node-lost"
	case AddressReused:
		return "address-reused"
	case Fenced:
		return "fenced"
	case Rejoined:
		return "rejoined"
	}
	return "unknown"
}

// TopologyEvent is one change of the cluster that the engine acts on.
type TopologyEvent struct {
	Kind TopologyEventKind
	// Addr is the actor address concerned (NodeLost, AddressReused).
	Addr string
	// Member names the member concerned, or the reason of a fencing (for
	// logs).
	Member string
	// Done, when set (Fenced), is called by the engine once it has acted on
	// the event (told the actors hosted here to stop): the implementation
	// rejoins only then, so no run placed here after the rejoin is stopped
	// by a late reaction to the fencing. It does not block.
	Done func()
}

// StaticTopology is a Topology over fixed lists, without events: for tests
// and benchmarks that place work on known processes. Its lists must not be
// changed after NewEngine.
type StaticTopology struct {
	// Nodes host run coordinators, tried in order (every run the same).
	Nodes []string
	// Tokenizers host tokenizer actors, tried in order.
	Tokenizers []string
	// Limiters: the first hosts every tenant's limiter. Empty: none.
	Limiters []string
	// Ledgers serve ledgers and registries (gateways).
	Ledgers []string
	// View is the limiter view for every tenant.
	View string
}

var _ Topology = (*StaticTopology)(nil)

// Candidates returns Nodes.
func (s *StaticTopology) Candidates(string) []string { return append([]string(nil), s.Nodes...) }

// TokenizerHosts returns Tokenizers.
func (s *StaticTopology) TokenizerHosts(string) []string {
	return append([]string(nil), s.Tokenizers...)
}

// LimiterHost returns the first of Limiters and View.
func (s *StaticTopology) LimiterHost(string) (string, string, bool) {
	if len(s.Limiters) == 0 {
		return "", "", false
	}
	return s.Limiters[0], s.View, true
}

// LimiterView returns View.
func (s *StaticTopology) LimiterView(string) string { return s.View }

// LedgerHosts returns Ledgers.
func (s *StaticTopology) LedgerHosts() []string { return append([]string(nil), s.Ledgers...) }

// Gateways returns Ledgers except skip.
func (s *StaticTopology) Gateways(skip string) []string {
	var out []string
	for _, g := range s.Ledgers {
		if g != skip {
			out = append(out, g)
		}
	}
	return out
}

// Join returns a channel that is never written nor closed: fixed lists do
// not change.
func (s *StaticTopology) Join(string, func() Load) (<-chan TopologyEvent, error) {
	return make(chan TopologyEvent), nil
}
