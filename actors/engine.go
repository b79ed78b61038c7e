package actors

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"net"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"github.com/asynkron/protoactor-go/router"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/quota"
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/tokenizer"
)

// Errors the Engine returns.
var (
	ErrUnknownRun  = errors.New("actors: unknown run")
	ErrRunFinished = errors.New("actors: run already ended")
	ErrBusy        = errors.New("actors: too many active runs")
	// ErrOverShare comes with ErrBusy when the refused run's tenant holds
	// its share of MaxActiveRuns (others still have room).
	ErrOverShare = errors.New("actors: the tenant holds its share of the active runs")
	// ErrMemoryBudget comes with ErrBusy when the process is near its
	// memory budget (Config.MemoryBudget).
	ErrMemoryBudget = errors.New("actors: the process is near its memory budget")
	ErrShutdown     = errors.New("actors: engine shut down")
	ErrNoNode       = errors.New("actors: no node took the run")
	// ErrSaturated comes with ErrBusy when every node that could take a
	// new run is at its adaptive run limit (announced in the membership, or
	// answered to the StartRun): refused at once, before any work.
	ErrSaturated = errors.New("actors: every node is at its run limit")
	// ErrLookupIncomplete: no node that answered has the run, but some
	// did not answer in time (a loaded or unreachable node may have it):
	// ask again shortly rather than conclude it does not exist.
	ErrLookupIncomplete = errors.New("actors: not every node answered whether it has the run")
)

// Config configures an Engine. Zero fields take the defaults named on them.
type Config struct {
	// Logger receives every log line; lines about a run carry its run_id.
	// Default slog.Default().
	Logger *slog.Logger
	// Stages holds the profiles and provider endpoints. Default
	// stagework.DefaultConfig(). The engine never changes it; Engine.AddProfiles
	// may add profiles and endpoints while it runs (Engine.Stages: the ones now).
	Stages *stagework.Config
	// Providers maps the provider names used in Stages to clients. Required:
	// BuildProviders makes them from Stages.
	Providers map[string]stagework.Provider
	// Secrets opens the tenants' own provider keys that runs carry sealed
	// (RunRequest.ProviderKeys, bring your own key): the ring derived from
	// the cluster keyring (sealed.NewRing), the same on every process of a
	// cluster. nil: a step whose run carries a key for its endpoint fails
	// with an auth error rather than fall back to the endpoint's own key.
	Secrets *sealed.Ring
	// Retry is applied to every failed stage attempt. Default
	// stagework.DefaultRetryPolicy().
	Retry stagework.RetryPolicy
	// Timeouts bound each stage attempt's wait on its provider. Default
	// DefaultTimeouts().
	Timeouts Timeouts
	// HedgeWait is when a hedged stage starts its fallback while the
	// primary's endpoint has too few recent TTFT samples for a p95. Default 2 s.
	HedgeWait time.Duration
	// TelemetryWindow is the window of the live model statistics (see
	// Telemetry). Default TelemetryWindow.
	TelemetryWindow time.Duration
	// RunCache bounds the response cache (completed runs' logs kept for
	// identical requests, and identical requests in flight sharing a run).
	RunCache RunCacheConfig
	// FinishLinger is how long a finished coordinator resends the end of
	// its log to a hub that has not acknowledged it (a hub lost with its
	// gateway, or one that moved the run to a newer coordinator), before it
	// stops and frees the log. Default 10 s.
	FinishLinger time.Duration
	// Hub bounds each run's log and subscribers. Default DefaultHubConfig().
	Hub HubConfig
	// CoordinatorSilence is how long a run's hub waits without a word from
	// the run's coordinator before it moves the run to another node, as if
	// the coordinator's node had died (silence.go): after a third of it the
	// hub probes the coordinator (RunProbe), which answers at once whatever
	// its model does, so only a coordinator that cannot reach the hub stays
	// silent; the run moves only if another node gets answers from it (an
	// asymmetric cut, which the membership does not see; a node that
	// answers no one is the membership's to judge). Default 600 ms;
	// negative: never (only the membership moves runs).
	CoordinatorSilence time.Duration
	// MaxActiveRuns bounds the unfinished runs (running or queued for a run
	// slot) this engine keeps, shared among tenants like the run slots
	// (runSlots' rules 1 and 2, without the queue): each tenant active in
	// the last few seconds may hold its weighted share (StartRun.weight),
	// a tenant alone all but ActiveRunHeadroom of them, and a run beyond
	// its tenant's share or the total is refused at once (ErrBusy). So one
	// tenant flooding the engine leaves room for another's runs. Default
	// 1000.
	MaxActiveRuns int
	// ActiveRunHeadroom is how many of MaxActiveRuns no single tenant may
	// hold. 0: MaxActiveRuns/8, at least 1 (none if MaxActiveRuns is 1);
	// negative: none. Must be below MaxActiveRuns.
	ActiveRunHeadroom int
	// RunSlots is how many runs this process executes at once; beyond it,
	// runs wait in a weighted-fair queue per tenant (StartRun.weight), and
	// their coordinators answer Subscribe and CancelRun meanwhile. 0: no limit.
	RunSlots int
	// RunSlotHeadroom is how many of the RunSlots no single tenant may take,
	// so another tenant's run starts at once on a node full of a flooding
	// tenant's runs. 0: RunSlots/8, at least 1 (none if RunSlots is 1);
	// negative: none. Must be below RunSlots.
	RunSlotHeadroom int
	// StageSlots is how many stage attempts of parallel strategies' steps
	// (moa, council, vote) this process runs at once, for runs
	// coordinated here or on other nodes; beyond it a step is offered to
	// another node, or waits in a weighted-fair queue per tenant. A
	// chain's stages run under their run's slot. 0: no limit.
	StageSlots int
	// StageCapacity adapts how many of the StageSlots this process uses to
	// its measured CPU use and its attempts' wait for a slot
	// (StageCapacity), when AdaptiveStageSlots is set: a node whose share
	// is full refuses new attempts (the coordinator offers them to a node
	// with room). Max defaults to (and is at most) StageSlots. The stage
	// attempts and their limit are announced in the load either way.
	StageCapacity StageCapacityConfig
	// AdaptiveStageSlots turns StageCapacity on (the commands do, unless
	// -stage-cpu-target is 0); without it, or with StageSlots 0, the stage
	// slots are fixed (what tests that count slots want).
	AdaptiveStageSlots bool
	// RetainFinished is how long a finished run stays in memory for status
	// queries and replay: its log, or, once the gateway's store has the log
	// (LogStored), only its hub, the log being read from the store on
	// demand. Default 15 minutes.
	RetainFinished time.Duration
	// MaxFinished caps how many finished runs are kept; the oldest go first.
	// Default 10000.
	MaxFinished int
	// MaxFinishedPerTenant caps how many of one tenant's finished runs are
	// kept (its oldest go first), so one tenant's thousands of runs cannot
	// push every other tenant's out of memory. Default 1000 (at most
	// MaxFinished).
	MaxFinishedPerTenant int
	// MaxFinishedBytes bounds the memory the finished runs kept hold (an
	// estimate from their logs); beyond it the oldest go first (they stay
	// in the gateway's store). Default 256 MiB; negative: no bound.
	MaxFinishedBytes int64
	// MemoryBudget is the heap this process may use, in bytes (0: none).
	// Past 80 % of it, finished runs are dropped from memory (oldest
	// first; they stay in the gateway's store); past 95 %, new runs are
	// refused (ErrBusy with ErrMemoryBudget) until the heap is back under
	// 90 %. The commands set it (and GOMEMLIMIT) from the container's
	// memory limit.
	MemoryBudget int64
	// Registerer receives the engine's Prometheus metrics. Nil: not registered.
	Registerer prometheus.Registerer
	// Remote, when set, starts the actor transport so other processes can
	// reach this one: a node hosts coordinators for gateways, a gateway's hubs
	// receive events from nodes. Nil: a single process.
	Remote *RemoteConfig
	// Nodes lists the actor-transport addresses ("host:port") of the nodes
	// that host run coordinators; runs are placed on them in turn, skipping a
	// node that does not answer. Empty: this process hosts its runs. Needs
	// Remote. A fixed deployment without membership; a cluster uses Topology.
	Nodes []string
	// Topology is the engine's view of the cluster (package topology
	// implements it over memberlist): where runs, tokenizer work and tenant
	// limiters go, which processes serve ledgers, and the events the engine
	// acts on (a node lost, an address reused, this process fenced). It
	// replaces Nodes. Nil: a single process (or fixed Nodes): this process
	// hosts its tenant limiters and ledger, and counts tokens itself.
	// Addresses other than this process's are reached over Remote.
	Topology Topology
	// Quota, when set, makes this node a member of the quota group that
	// allocates tenants' token budgets in slices (actors/quota.go, package
	// quota): tenant limiters hosted here grant budget tokens only from
	// slices the group committed to this node, so no partition or split
	// brain can overrun a budget. Needs Remote and a Topology implementing
	// QuotaPeers. Nil: budgets are counted by each limiter alone (ledger
	// rebuilds; a split brain can overrun).
	Quota *QuotaConfig
	// SpawnTimeout bounds placing a coordinator on a node. Default 2 s.
	SpawnTimeout time.Duration
	// RunLimit is the adaptive limit (AdaptiveLimit, fed with this
	// process's completed stage durations) on the runs other processes
	// place here: a StartRun beyond it is refused at once (StartRunAck code
	// node_saturated, with a Retry-After and the load), so the gateway tries
	// another node or refuses the run instead of waiting on a node that
	// would only queue it. The limit is announced in the membership with
	// the load. A resumed run (failover) is never refused. Zero Initial:
	// derived from RunSlots (Max and Initial RunSlots plus a queue of
	// max(2, RunSlots/4), Min RunSlots/4): a node takes that many until its
	// latency says otherwise; no limit when RunSlots is 0 or Initial is
	// negative.
	RunLimit AdaptiveLimitConfig
	// PlacementRetries is how many further nodes a new run is offered to
	// after one refused it or did not answer within SpawnTimeout (default
	// 2; negative: none); PlacementRetryRatio bounds all such retries to
	// that share of the placements that succeeded at the first node, plus a
	// burst of 10 (default 0.1, Google SRE's retry budget), so a cluster
	// at capacity is not asked every run three times over. A timeout does
	// not mark a node lost: it is only slow. Failovers of admitted runs try
	// every node, outside the budget.
	PlacementRetries    int
	PlacementRetryRatio float64
	// QueueDeadline is how long a new run may wait for one of this
	// process's run slots: past it the run leaves the queue before any work
	// and ends with RunFailed code queue_timeout, which the gateway answers
	// like a refusal (503 cluster_saturated with Retry-After) when it has
	// not answered yet. A resumed run (failover) never leaves. Default 10 s;
	// negative: no deadline.
	QueueDeadline time.Duration
	// ActiveRunLimit adapts how many runs this engine starts and keeps
	// unfinished (below MaxActiveRuns) to the measured end-to-end duration
	// of its completed runs (AdaptiveLimit): a gateway whose own CPU, or
	// whose nodes, are the bottleneck stops admitting before its runs slow
	// down, and Saturated reports it, so the excess is refused at once
	// (ErrBusy with ErrSaturated). Zero Initial: off (a fixed
	// MaxActiveRuns only); Max defaults to MaxActiveRuns.
	ActiveRunLimit AdaptiveLimitConfig
	// Tokenizer hosts a pool of tokenizer actors here: set it only where the
	// CPU runs the tokenizer's SIMD path (AVX2).
	Tokenizer bool
	// TokenizerTimeout bounds a tokenizer host's answer before the request
	// is counted here instead. Default 250 ms.
	TokenizerTimeout time.Duration
	// PreloadTokenizer loads the vocabularies at start (nodes: the first
	// request must not pay for it) instead of on first use (a local
	// process: ~45 MB less while idle).
	PreloadTokenizer bool
	// Slow, if set, is told each run's time to first token and each
	// completed stage attempt's duration (package internal/ops's flight
	// recorder writes a trace when one is past its threshold). Nil: none.
	Slow SlowWatcher
	// TraceSpans, if set, returns the spans of one trace (hex id) from this
	// process's in-process span store (internal/spanstore), for the
	// cluster console's waterfall (TraceSpansQuery). It must not block.
	// Nil: this process answers with none.
	TraceSpans func(traceID string) []*messages.TraceSpan
}

// SlowWatcher hears how long runs take to their first token and stages to
// complete. Its methods are called concurrently, some with a hub's lock
// held: they must not block.
type SlowWatcher interface {
	// FirstToken is told, once per run and process, the time from the
	// run's start (its hub's creation on a gateway; its coordinator's
	// start on a node) to its first token delta.
	FirstToken(d time.Duration)
	// StageDone is told each completed stage's duration (StageCompleted).
	StageDone(d time.Duration)
}

// roundRobin is the Placer for a fixed list of nodes (Config.Nodes).
type roundRobin struct {
	nodes []string
	next  atomic.Uint64
}

func (r *roundRobin) Candidates(string) []string {
	n := uint64(len(r.nodes))
	first := r.next.Add(1) - 1
	out := make([]string, 0, n)
	for i := uint64(0); i < n; i++ {
		out = append(out, r.nodes[(first+i)%n])
	}
	return out
}

// RemoteConfig configures the actor transport (protoactor remote, gRPC).
type RemoteConfig struct {
	// Bind is the "host:port" the transport listens on; port 0 picks one.
	Bind string
	// Advertise is the host other processes use to reach this one; default
	// Bind's host. Under docker compose, the service name.
	Advertise string
	// ClusterKey authenticates and encrypts the transport (mutual TLS with a
	// CA derived from the key, see TransportTLS). Required unless Insecure.
	// This process's certificate is signed by this key's CA.
	ClusterKey []byte
	// SecondaryKeys are further keys of the cluster keyring (key rotation,
	// docs/keys.md): certificates signed by their CAs are accepted too.
	SecondaryKeys [][]byte
	// Insecure runs the transport in plain text, without authentication —
	// only for a single machine's loopback during development. Logged loudly.
	Insecure bool
}

// maxTransportMsg bounds one gRPC message of the actor transport (64 MiB).
const maxTransportMsg = 64 << 20

// dialTimeout bounds a dial of the actor transport to another process
// (TCP and TLS); a peer that does not answer within it counts as down.
const dialTimeout = 5 * time.Second

// DefaultConfig returns a Config with every default filled except Providers.
func DefaultConfig() Config {
	return Config{
		Logger: slog.Default(), Stages: stagework.DefaultConfig(), Retry: stagework.DefaultRetryPolicy(),
		Timeouts: DefaultTimeouts(), Hub: DefaultHubConfig(), MaxActiveRuns: 1000, RetainFinished: 15 * time.Minute, MaxFinished: 10000, MaxFinishedPerTenant: 1000, MaxFinishedBytes: 256 << 20,
	}
}

func (c *Config) validate() error {
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Stages == nil {
		c.Stages = d.Stages
	}
	if c.Retry == (stagework.RetryPolicy{}) {
		c.Retry = d.Retry
	}
	if err := c.Retry.Validate(); err != nil {
		return err
	}
	if c.HedgeWait <= 0 {
		c.HedgeWait = 2 * time.Second
	}
	if c.Timeouts.FirstToken == 0 {
		c.Timeouts.FirstToken = d.Timeouts.FirstToken
	}
	if c.Timeouts.Stall == 0 {
		c.Timeouts.Stall = d.Timeouts.Stall
	}
	if c.Timeouts.FirstToken < 0 || c.Timeouts.Stall < 0 {
		return fmt.Errorf("actors: timeouts must be positive")
	}
	if err := c.Hub.validate(); err != nil {
		return err
	}
	if c.MaxActiveRuns == 0 {
		c.MaxActiveRuns = d.MaxActiveRuns
	}
	if c.RetainFinished == 0 {
		c.RetainFinished = d.RetainFinished
	}
	if c.MaxFinished == 0 {
		c.MaxFinished = d.MaxFinished
	}
	if c.MaxFinishedBytes == 0 {
		c.MaxFinishedBytes = d.MaxFinishedBytes
	}
	if c.MemoryBudget > 0 && c.MaxFinishedBytes > 0 {
		// Finished runs take at most a quarter of the budget.
		c.MaxFinishedBytes = min(c.MaxFinishedBytes, max(c.MemoryBudget/4, 1))
	}
	if c.MaxFinishedPerTenant == 0 {
		c.MaxFinishedPerTenant = min(d.MaxFinishedPerTenant, c.MaxFinished)
	}
	if c.SpawnTimeout == 0 {
		c.SpawnTimeout = 2 * time.Second
	}
	if c.CoordinatorSilence == 0 {
		c.CoordinatorSilence = DefaultCoordinatorSilence
	}
	if c.CoordinatorSilence > 0 && c.CoordinatorSilence < 30*time.Millisecond {
		return fmt.Errorf("actors: CoordinatorSilence must be at least 30ms, or negative for off (got %v)", c.CoordinatorSilence)
	}
	if c.QueueDeadline == 0 {
		c.QueueDeadline = 10 * time.Second
	}
	if c.PlacementRetries == 0 {
		c.PlacementRetries = 2
	}
	if c.PlacementRetryRatio <= 0 {
		c.PlacementRetryRatio = 0.1
	}
	if c.ActiveRunLimit.Initial > 0 && (c.ActiveRunLimit.Max == 0 || c.ActiveRunLimit.Max > c.MaxActiveRuns) {
		c.ActiveRunLimit.Max = c.MaxActiveRuns
	}
	if c.RunLimit.Initial == 0 && c.RunSlots > 0 {
		top := c.RunSlots + max(2, c.RunSlots/4)
		c.RunLimit = AdaptiveLimitConfig{Initial: top, Min: max(1, c.RunSlots/4), Max: top,
			Tolerance: c.RunLimit.Tolerance, Smoothing: c.RunLimit.Smoothing, ShortWindow: c.RunLimit.ShortWindow, LongWindow: c.RunLimit.LongWindow}
	}
	if c.TokenizerTimeout == 0 {
		c.TokenizerTimeout = 250 * time.Millisecond
	}
	if len(c.Nodes) > 0 && c.Remote == nil {
		return errors.New("actors: Nodes need Remote (the actor transport) to reach nodes")
	}
	if c.Quota != nil && (c.Topology == nil || c.Remote == nil) {
		return errors.New("actors: Quota needs Remote and Topology")
	}
	if len(c.Nodes) > 0 && c.Topology != nil {
		return errors.New("actors: Nodes and Topology exclude each other")
	}
	if c.Remote != nil {
		if _, _, err := net.SplitHostPort(c.Remote.Bind); err != nil {
			return fmt.Errorf("actors: Remote.Bind %q: %w", c.Remote.Bind, err)
		}
	}
	if c.StageSlots < 0 {
		return fmt.Errorf("actors: StageSlots must be >= 0 (got %d)", c.StageSlots)
	}
	if c.RunSlots < 0 || (c.RunSlots > 0 && c.RunSlotHeadroom >= c.RunSlots) {
		return fmt.Errorf("actors: RunSlots must be >= 0 and RunSlotHeadroom below it (got %d, %d)", c.RunSlots, c.RunSlotHeadroom)
	}
	if c.MaxActiveRuns < 1 || c.RetainFinished < 0 || c.MaxFinished < 1 || c.MaxFinishedPerTenant < 1 {
		return fmt.Errorf("actors: MaxActiveRuns, MaxFinished and MaxFinishedPerTenant must be >= 1 and RetainFinished >= 0")
	}
	if c.ActiveRunHeadroom >= c.MaxActiveRuns {
		return fmt.Errorf("actors: ActiveRunHeadroom must be below MaxActiveRuns (got %d, %d)", c.ActiveRunHeadroom, c.MaxActiveRuns)
	}
	return c.checkClients()
}

// checkClients checks that every model a profile's step names has a
// provider client.
func (c *Config) checkClients() error {
	for _, name := range c.Stages.ProfileNames() {
		p, _ := c.Stages.Profile(name)
		for _, s := range p.Stages {
			if s.Stage == stagework.StageTally {
				continue // calls no model
			}
			refs := []stagework.ModelRef{{Provider: s.Provider, Model: s.Model}}
			if s.Fallback != nil {
				refs = append(refs, *s.Fallback)
			}
			for _, r := range refs {
				if _, ok := c.Providers[r.Provider]; !ok {
					return fmt.Errorf("actors: profile %q stage %s uses provider %q, which has no client", name, s.StepID(), r.Provider)
				}
			}
		}
	}
	return nil
}

// RunRequest is what a caller asks for when starting a run.
type RunRequest struct {
	// ID names the run; empty: a new id (NewRunID).
	ID     string
	Tenant string
	// Weight is the tenant's share when a node is at capacity (0: 1).
	Weight  uint32
	Profile string
	Query   string
	History []stagework.Message
	// Seed for simulated models; 0 picks a random one (recorded in the run, so a
	// resumed run replays the same simulated text).
	Seed int64
	// MaxTokens overrides every stage's max_tokens when > 0.
	MaxTokens int
	// NoCache: the run is not answered from the response cache, shares no
	// identical run in flight, and its log is not kept for others.
	NoCache bool
	// Routing is how Profile was chosen for a request that asked for
	// profile "auto" (recorded in the run, shown in its resource); nil
	// when the request named its profile.
	Routing *messages.RunRouting
	// ProviderKeys are the tenant's own keys for endpoints, sealed for it
	// (internal/sealed, bound to Tenant and the endpoint): a step calling
	// one of these endpoints opens its key at the attempt and uses it
	// instead of the endpoint's. The gateway sets them; they ride in
	// StartRun and StartStep, never in clear.
	ProviderKeys []*messages.SealedSecret
	// ProfileDefinition, when set, is the definition of the tenant's own
	// profile named Profile (one entry of a profile file's "profiles"
	// section, as JSON): the run uses it instead of a profile of the
	// file's. It rides in StartRun; every process parses and checks it
	// again (tenantprofile.go).
	ProfileDefinition []byte
	// Ctx carries the caller's trace span (the gateway's request span):
	// the run's placement span is its child and the run's trace is its
	// trace. Only its span is used, never its deadline or values. Nil:
	// no parent (a new trace, when tracing is on).
	Ctx context.Context
	// Budget is what the request asks of the run's cost, latency and
	// quality (the cost/quality optimiser, PlanRun); zero: nothing.
	Budget stagework.Budget
	// Plan is the optimiser's choice of models for the run's steps, set
	// by PlanRun (StartRun calls it when the gateway has not).
	Plan *stagework.Plan
}

// Engine runs consensus runs on an actor system: it owns the system, the
// hubs of the runs started through it, and the eviction of finished runs.
// Its methods are safe for concurrent use and do not block on a run. Its
// clients (Tokenizer, Limiter, Services) are built on the same system and
// Topology.
//
// Goroutines, each waited for by Shutdown: the eviction loop; with a
// Topology, the one goroutine that consumes its events; one per run being
// moved to a new coordinator (failover) and one per tenant limiter reading
// the ledgers (both started through goOwned, which refuses once Shutdown
// has begun); and the clients' own (see TokenizerClient and Services).
type Engine struct {
	cfg        Config
	cat        *catalogRef                                  // the profiles and provider clients (Config.Stages, Config.Providers, and what AddProfiles added)
	profiles   *profileResolver                             // the runs' profiles: the file's, or a tenant's own (tenantprofile.go)
	stats      statsCache                                   // the cluster's model statistics, for estimates
	cache      *runCache                                    // the response cache; nil when off
	findRunVia func(node, runID string) func() (any, error) // nil: FindRun over the transport (tests replace it)
	overMem    atomic.Bool                                  // past the memory budget's refusal mark
	retries    *retryBudget                                 // bounds placement retries of new runs
	own        *ownRuns                                     // this process's unfinished runs by node (ownruns.go)
	activeLim  *AdaptiveLimit                               // Config.ActiveRunLimit; nil: off
	lostHosts  sync.Map                                     // actor address -> time.Time its endpoint broke
	silentAt   sync.Map                                     // actor address -> time.Time a coordinator there last went silent (silence.go)
	quietLinks atomic.Pointer[map[string]bool]              // nodes whose link is quiet now (silence.go, reportQuiet); read-only maps
	system     *actor.ActorSystem
	metrics    *Metrics
	deps       *coordinatorDeps
	logger     *slog.Logger
	stop       chan struct{}
	wg         sync.WaitGroup
	// toPack are finished runs whose logs compactFinished packs once they
	// ended compactAfter ago and no reader is on them. Bounded by the runs
	// that end within packWithReadersAfter + compactEvery: each leaves at
	// the first tick after that (packed, or left as it is if it cannot be).
	toPackMu sync.Mutex
	toPack   []*Hub
	remote   *remote.Remote // nil in a single process
	// coordRoot spawns this process's own coordinators under a guardian
	// that stops (never restarts) one that fails. Its own root context:
	// WithGuardian changes the context it is called on.
	coordRoot *actor.RootContext

	// The engine's clients, built on its actor system and Topology.
	tokens   *TokenizerClient
	limits   *LimiterClient
	services *Services

	// placer places coordinators: the Topology, a round robin over
	// Config.Nodes, or nil (this process hosts its runs).
	placer Placer
	// topo is Config.Topology (nil: a single process).
	topo Topology
	// quota is this node's member of the quota group (nil: none).
	quota *quota.Node

	// admission shares MaxActiveRuns among tenants: a run holds one of its
	// slots from launch until its hub has the terminal event (or it is
	// forgotten). It has its own lock, taken after mu where both are held.
	admission *runSlots
	// misses remembers run ids no node knew (Attach), briefly.
	misses *negativeCache
	// keptRuns is SetKeptRuns's func(string) *Hub (nil: none).
	keptRuns atomic.Value
	// logs reads back the logs of finished runs dropped from memory for
	// the gateway's store (SetLogStore, LogStored), and caches a few.
	logs *storedLogs
	// stopHub stops a hub's actor (Hub.stopActor: one func for every hub).
	stopHub func(pid *actor.PID)

	// mu guards the fields below it.
	mu       sync.Mutex
	hubs     map[string]*Hub
	live     map[string]*Hub // the unfinished runs that may fail over (the silence watch's)
	shutdown bool
}

// Address is the actor transport address of this process ("nonhost"
// without Remote).
func (e *Engine) Address() string { return e.system.Address() }

// coordinatorProps makes coordinators; a coordinator that panics is stopped
// (never restarted with empty state), and its hub then ends the run.
func (e *Engine) coordinatorProps() *actor.Props {
	deps := e.deps
	return actor.PropsFromProducer(func() actor.Actor { return newCoordinator(deps) }, actor.WithMailbox(e.metrics.mailbox("coordinator")),
		actor.WithDispatcher(deps.dispatcher))
}

// stopOnFailure is the guardian of coordinators spawned from the root: a
// crashed coordinator is stopped, not restarted with an empty state.
var stopOnFailure = actor.NewOneForOneStrategy(0, 0, func(any) actor.Directive { return actor.StopDirective })

// placeRun starts a run's coordinator and hands it its StartRun: on this
// process, or on the next node of the placer's candidates that takes it.
//
// Overload is not failure (issue 18): a node that refuses (at its run
// limit, draining) or does not ack within SpawnTimeout (starved) is only
// skipped for this run, never counted as lost. A new run is offered to at
// most 1+PlacementRetries nodes, the retries within the engine's retry
// budget; a failover (start.PriorEvents) tries every node. Each further
// offer carries a higher epoch, and the hub (hub, when known) is fenced to
// it, so a coordinator that a slow node spawns after its ack timed out can
// never write into the run's log; it is told to stop (CancelRun to that
// node's run starter, which orders it after the StartRun).
func (e *Engine) placeRun(start *messages.StartRun, hub *Hub, exclude ...string) (*actor.PID, error) {
	id := start.RunId
	if e.placer == nil {
		name := "run/" + id
		if len(start.PriorEvents) > 0 {
			// A move within this process (its coordinator went silent):
			// the old one may not have stopped yet.
			name += fmt.Sprintf("@%d", start.Epoch)
		}
		pid, err := e.coordRoot.SpawnNamed(e.coordinatorProps(), name)
		if err != nil {
			e.metrics.placements.WithLabelValues("failed").Inc()
			return nil, err
		}
		e.metrics.placements.WithLabelValues("local").Inc()
		e.system.Root.Send(pid, start)
		return pid, nil
	}
	resumed := len(start.PriorEvents) > 0
	var errs []error
	var refusal *placeRefusal
	tried := 0
	candidates := slices.DeleteFunc(slices.Clone(e.silentLast(e.placer.Candidates(id))), func(n string) bool {
		return slices.Contains(exclude, n) // the node just lost (membership may not know yet)
	})
	for i, node := range candidates {
		if tried > 0 && !resumed {
			if tried > e.cfg.PlacementRetries || !e.retries.spend() {
				e.metrics.placements.WithLabelValues("retry_budget").Inc()
				errs = append(errs, errRetryBudget)
				break
			}
		}
		tried++
		wait := e.cfg.SpawnTimeout
		if resumed && i < len(candidates)-1 {
			// A moved run's reader waits on it: a node that does not
			// answer within failoverAckWait is passed over (in a split, the
			// first candidate may sit on the cut-off side, not yet declared
			// dead); the last candidate gets the whole SpawnTimeout.
			wait = min(wait, failoverAckWait)
		}
		pid, err := e.startOn(node, start, wait)
		if err == nil {
			if tried == 1 && !resumed {
				e.retries.earn()
			}
			e.own.place(id, node)
			e.metrics.placements.WithLabelValues("remote").Inc()
			return pid, nil
		}
		var r *placeRefusal
		switch {
		case errors.As(err, &r):
			e.metrics.placements.WithLabelValues("refused").Inc()
			if refusal == nil || r.code == CodeNodeSaturated {
				refusal = r
			}
		case errors.Is(err, errNoAck):
			// Slow, not lost: the StartRun may still spawn a coordinator
			// there. Stop it, and fence the hub to a higher epoch first.
			e.metrics.placements.WithLabelValues("timeout").Inc()
			e.system.Root.Send(actor.NewPID(node, starterName), &messages.CancelRun{RunId: id, Reason: "placed on another node (no StartRunAck in time)"})
			start.Epoch++
			if hub != nil {
				hub.fenceBelow(start.Epoch)
			}
		default:
			e.metrics.placements.WithLabelValues("refused").Inc()
		}
		e.logger.Warn("node did not take a run", "node", node, "run_id", id, "error", err)
		errs = append(errs, fmt.Errorf("%s: %w", node, err))
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no node hosts run coordinators"))
	}
	e.metrics.placements.WithLabelValues("failed").Inc()
	if refusal != nil && refusal.code == CodeNodeSaturated {
		return nil, fmt.Errorf("%w: %w: %w", ErrBusy, ErrSaturated, errors.Join(errs...))
	}
	return nil, fmt.Errorf("%w: %w", ErrNoNode, errors.Join(errs...))
}

// Codes of StartRunAck.code.
const (
	// CodeNodeSaturated: the node is at its adaptive run limit.
	CodeNodeSaturated = "node_saturated"
	// CodeDraining: the node is leaving the cluster.
	CodeDraining = "draining"
)

// saturatedRetryAfter is the Retry-After a saturated node suggests: about
// the time for some of its runs to end or its limit to move.
const saturatedRetryAfter = time.Second

// placeRefusal is a node's refusal of a StartRun (StartRunAck.error).
type placeRefusal struct {
	code, msg  string
	retryAfter time.Duration
}

func (r *placeRefusal) Error() string { return "run refused: " + r.msg }

// errNoAck: the node did not answer a StartRun within SpawnTimeout.
var errNoAck = errors.New("no StartRunAck in time")

// errRetryBudget: placement stopped offering the run to further nodes.
var errRetryBudget = errors.New("placement retry budget spent")

// startOn hands StartRun to node's run starter, which spawns the
// coordinator there; the coordinator's StartRunAck names it. One round trip.
//
// It gives up before SpawnTimeout once the placer no longer offers node (it
// was declared dead meanwhile): in a split, a run's failover may first be
// offered to a node on the same cut-off side, not yet declared dead, which
// never answers; waiting the whole SpawnTimeout (2 s) for it made the
// run's recovery 2.4 s instead of 0.5 s (chaos split scenario). Giving up
// early is an errNoAck like the timeout: placeRun cancels the run there and
// fences the hub to a higher epoch before it tries the next node.
func (e *Engine) startOn(node string, start *messages.StartRun, wait time.Duration) (*actor.PID, error) {
	f := e.system.Root.RequestFuture(actor.NewPID(node, starterName), start, wait)
	reply, err := awaitWhile(f.Result, func() bool { return slices.Contains(e.placer.Candidates(start.RunId), node) }, placementPoll)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNoAck, err)
	}
	ack, ok := reply.(*messages.StartRunAck)
	switch {
	case !ok:
		return nil, fmt.Errorf("unexpected answer %T", reply)
	case ack.Error != "":
		return nil, &placeRefusal{code: ack.Code, msg: ack.Error, retryAfter: time.Duration(ack.RetryAfterMs) * time.Millisecond}
	case pidOf(ack.Coordinator) == nil:
		return nil, errors.New("StartRunAck names no coordinator")
	}
	return pidOf(ack.Coordinator), nil
}

// endpointWriterQueue is the initial size of the queue of messages to
// one peer (protoactor's default: 1 000 000); it grows as a burst needs.
const endpointWriterQueue = 1024

// failoverAckWait is how long a moved run waits for a node's StartRunAck
// before it is offered to the next candidate (the last one gets the whole
// SpawnTimeout). An answer takes milliseconds on a live node (chaos moves:
// 2–85 ms); in a split, the first candidate may be the other node of the
// cut-off side, which the membership declares dead only 0.5–2 s later
// (chaos split with the silence rule: one move waited 1.95 s for it).
// Passing a node over is safe: placeRun cancels the run there and fences
// the hub to a higher epoch first.
const failoverAckWait = 250 * time.Millisecond

// placementPoll is how often startOn asks the placer whether the node it
// waits for is still offered.
const placementPoll = 25 * time.Millisecond

// errNodeGone: the node a run was offered to left the placer's candidates
// (declared dead) before it answered.
var errNodeGone = errors.New("the node left the cluster before it answered")

// awaitWhile returns result's answer, or errNodeGone as soon as alive (asked
// every poll) says false. result must return within a bounded time (a
// future's timeout): its goroutine ends then.
func awaitWhile(result func() (any, error), alive func() bool, poll time.Duration) (any, error) {
	type answer struct {
		v   any
		err error
	}
	done := make(chan answer, 1)
	go func() { // ends when result returns (its future's timeout at the latest)
		v, err := result()
		done <- answer{v, err}
	}()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case a := <-done:
			return a.v, a.err
		case <-t.C:
			if !alive() {
				return nil, errNodeGone
			}
		}
	}
}

// starterName is the well-known name of every process's run starter.
const starterName = "qlc-run-starter"

// runStarter is a node's entry point for runs placed by gateways: it spawns
// a coordinator per StartRun (as its child, stopped if it fails) and
// forwards the StartRun with the gateway as sender, so the coordinator's
// StartRunAck goes straight back.
type runStarter struct {
	e *Engine
	// epochs is the epoch of each coordinator hosted here (a child), by
	// run id; an entry goes when its child has stopped. Bounded by the
	// coordinators hosted.
	epochs map[string]uint64
	// waiting holds, by run id, a StartRun of a higher epoch than the
	// coordinator of that run still here, until that one has stopped
	// (stopStale); at most one per hosted coordinator.
	waiting map[string]waitingStart
}

// waitingStart is a StartRun and the gateway that sent it.
type waitingStart struct {
	m      *messages.StartRun
	sender *actor.PID
}

// runChild is the child name of run id's coordinator.
func runChild(id string) string { return "run/" + id }

func (s *runStarter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Terminated:
		// A hosted coordinator stopped: a StartRun that waited for it
		// starts now (its name is free: the registry drops a name before
		// the parent hears of the stop).
		id, ok := strings.CutPrefix(m.Who.Id, ctx.Self().Id+"/"+runChild(""))
		if !ok {
			return
		}
		delete(s.epochs, id)
		if w, ok := s.waiting[id]; ok {
			delete(s.waiting, id)
			s.spawn(ctx, w.m, w.sender)
		}
		return
	case *messages.ModelStatsQuery:
		ctx.Respond(&messages.ModelStatsReply{Models: s.e.deps.telemetry.Snapshot(), Node: ctx.Self().Address, Breakers: s.e.breakerStates()})
		return
	case *messages.ConsoleQuery:
		ctx.Respond(s.e.consoleReply())
		return
	case *messages.TraceSpansQuery:
		ctx.Respond(s.e.traceSpansReply(m.TraceId))
		return
	case *messages.RelayProbe:
		relayProbe(ctx, m)
		return
	case stopHosted:
		for _, c := range ctx.Children() {
			ctx.Stop(c)
		}
		return
	case *messages.FindRun:
		want := ctx.Self().Id + "/run/" + m.RunId
		for _, c := range ctx.Children() {
			if c.Id == want {
				ctx.Forward(c)
				return
			}
		}
		if st := s.e.finishedRun(m.RunId); st != nil {
			// Not hosted here, but this is a gateway that has the run's
			// whole log (another gateway asks: Attach).
			ctx.Respond(&messages.RunFound{Start: st})
			return
		}
		ctx.Respond(&messages.RunFound{}) // not here
		return
	}
	if c, ok := ctx.Message().(*messages.CancelRun); ok {
		// An abandoned placement (placeRun gave up waiting for the ack and
		// placed the run elsewhere): stop the coordinator if the StartRun,
		// which came before this on the same stream, spawned one.
		want := ctx.Self().Id + "/run/" + c.RunId
		for _, ch := range ctx.Children() {
			if ch.Id == want {
				ctx.Send(ch, c)
			}
		}
		return
	}
	m, ok := ctx.Message().(*messages.StartRun)
	if !ok {
		return
	}
	if s.e.deps.draining.Load() {
		ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Error: "node is draining", Code: CodeDraining})
		return
	}
	if l := s.e.load(); s.e.deps.runLimit != nil && len(m.PriorEvents) == 0 && l.Saturated() {
		// Refused at once, before any work: the gateway tries another node
		// or refuses the run itself. A resumed run is never refused here.
		s.e.metrics.placements.WithLabelValues("saturated").Inc()
		ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Error: fmt.Sprintf("node at its run limit (%d of %d)", l.Active, l.Limit),
			Code: CodeNodeSaturated, RetryAfterMs: uint32(saturatedRetryAfter / time.Millisecond), Load: nodeLoad(l)})
		return
	}
	if s.stopStale(ctx, m) {
		return
	}
	s.spawn(ctx, m, ctx.Sender())
}

// stopStale handles a StartRun for a run whose coordinator is still here,
// from an older epoch: its hub moved the run away and fenced that epoch
// (the node was declared dead, or silent, and was not), then brings it
// back. The old coordinator goes on for nothing — the hub drops its events
// — and holds the run's name: it is stopped, and the StartRun waits until
// it has (Terminated). It reports whether m waits. A StartRun of the same
// or a lower epoch is refused by the name, as before.
func (s *runStarter) stopStale(ctx actor.Context, m *messages.StartRun) bool {
	old, ok := s.epochs[m.RunId]
	if !ok || m.GetEpoch() <= old {
		return false
	}
	if w, ok := s.waiting[m.RunId]; ok {
		if w.m.GetEpoch() >= m.GetEpoch() {
			return false
		}
		ctx.Send(w.sender, &messages.StartRunAck{RunId: m.RunId, Error: fmt.Sprintf("superseded by epoch %d", m.GetEpoch())})
	}
	want := ctx.Self().Id + "/" + runChild(m.RunId)
	for _, c := range ctx.Children() {
		if c.Id == want {
			if s.waiting == nil {
				s.waiting = map[string]waitingStart{}
			}
			s.waiting[m.RunId] = waitingStart{m: m, sender: ctx.Sender()}
			s.e.logger.Warn("a coordinator of an older epoch of the run is still here; stopping it before the new one starts",
				"run_id", m.RunId, "epoch", old, "new_epoch", m.GetEpoch())
			ctx.Stop(c)
			return true
		}
	}
	return false
}

// spawn starts m's coordinator and hands it m, with sender as the sender
// (the coordinator's StartRunAck goes straight back to the gateway).
func (s *runStarter) spawn(ctx actor.Context, m *messages.StartRun, sender *actor.PID) {
	pid, err := ctx.SpawnNamed(s.e.coordinatorProps(), runChild(m.RunId))
	if err != nil {
		if sender != nil {
			ctx.Send(sender, &messages.StartRunAck{RunId: m.RunId, Error: "cannot start coordinator: " + err.Error()})
		}
		return
	}
	if s.epochs == nil {
		s.epochs = map[string]uint64{}
	}
	s.epochs[m.RunId] = m.GetEpoch()
	ctx.RequestWithCustomSender(pid, m, sender)
}

// Drain makes this process refuse new runs and waits until the runs it
// hosts have ended, or ctx is done. It returns how many were still running.
// A node calls it on SIGTERM, after leaving the cluster, so a rolling
// restart loses no run.
func (e *Engine) Drain(ctx context.Context) int {
	e.deps.draining.Store(true)
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	report := time.Now().Add(drainReport)
	for {
		n := int(e.deps.hosted.Load())
		if n == 0 {
			return 0
		}
		if time.Now().After(report) {
			report = time.Now().Add(drainReport)
			e.logger.Warn("node draining: runs still hosted", "runs", n, "waiting_on", e.HostedRuns(8))
		}
		select {
		case <-ctx.Done():
			e.logger.Warn("node draining: gave up waiting", "runs", n, "waiting_on", e.HostedRuns(8))
			return n
		case <-t.C:
		}
	}
}

// drainReport is how often a drain says what it still waits for.
const drainReport = 5 * time.Second

// HostedRuns describes up to max of the runs hosted here, oldest first: the
// run id, what its coordinator does now, and for how long it has been hosted
// ("run_x: running (3.2s)").
func (e *Engine) HostedRuns(max int) []string {
	type entry struct {
		id    string
		since time.Time
		state string
	}
	var all []entry
	e.deps.hostedRuns.Range(func(k, v any) bool {
		h := v.(*hostedRun)
		all = append(all, entry{k.(string), h.since, *h.state.Load()})
		return true
	})
	slices.SortFunc(all, func(a, b entry) int { return a.since.Compare(b.since) })
	out := make([]string, 0, min(max, len(all)))
	for _, x := range all[:min(max, len(all))] {
		out = append(out, fmt.Sprintf("%s: %s (%s)", x.id, x.state, time.Since(x.since).Round(100*time.Millisecond)))
	}
	return out
}

// nodeLost moves the unfinished runs whose coordinator ran on the node at
// the actor address addr (the cluster declared it dead). A broken
// connection tells the hubs by itself; a partitioned or paused node is
// found only by the failure detector, which calls this.
func (e *Engine) nodeLost(addr string) int {
	e.mu.Lock()
	var lost []*Hub
	for _, h := range e.hubs {
		if c := h.Coordinator(); c != nil && c.Address == addr && !h.Done() {
			lost = append(lost, h)
		}
	}
	e.mu.Unlock()
	for _, h := range lost {
		// Each on its own goroutine (failover): placing a run may take round
		// trips, and the caller is the engine's topology goroutine. The old
		// coordinator is not told to stop (as a silent one is): another
		// gateway's hub may still follow it (TestClusterKeyRotationLosesNoRun
		// failed 2 of 3 when it was); a node that gets the run back stops it
		// then (runStarter.stopStale).
		e.failover(h, h.Coordinator(), fmt.Sprintf("the node %s running the run's coordinator was declared dead", addr))
	}
	return len(lost)
}

// moveRetryFor bounds how long a moved run is offered again, every
// moveRetryEvery, while no node takes it (moveRun).
const (
	moveRetryFor   = 3 * time.Second
	moveRetryEvery = 50 * time.Millisecond
)

// maxFailovers bounds how often one run moves: a run that kills every node
// it lands on must end. Chaos runs kill nodes under a run several times in
// a row, so the bound is generous.
const maxFailovers = 10

// failover moves a run whose coordinator was lost (see moveRun) on a
// goroutine that Shutdown waits for; it does not block. After Shutdown has
// begun it does nothing: the process is going away, and runs on other
// nodes go on for other gateways. It is the hubs' onLost.
func (e *Engine) failover(h *Hub, lost *actor.PID, why string) {
	e.goOwned(func() { e.moveRun(h, lost, why) })
}

// goOwned runs f on a goroutine that Shutdown waits for, unless Shutdown
// has begun (then it returns false and f does not run).
func (e *Engine) goOwned(f func()) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.shutdown {
		return false
	}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		f()
	}()
	return true
}

// moveRun moves a run whose coordinator was lost to a live node: the new
// coordinator resumes from the hub's copy of the log with a higher epoch
// (finished stages are kept; the interrupted one is redone after a
// StageRestarted), and the hub ignores anything the old one might still
// send. If no node takes it, the run ends with RunFailed.
//
// It reports whether the run moved, and the new coordinator's epoch.
func (e *Engine) moveRun(h *Hub, lost *actor.PID, why string) (uint64, bool) {
	prior, epoch, n, ok := h.beginFailover(lost)
	if !ok {
		return 0, false
	}
	if n > maxFailovers {
		h.endFailover(nil)
		h.fail("coordinator_lost", fmt.Sprintf("%s; the run already moved %d times and is not moved again", why, maxFailovers))
		return 0, false
	}
	start := h.startMessage() // with any provider key changed since the start
	start.PriorEvents, start.Epoch, start.Hub = prior, epoch+1, refOf(h.PID())
	t0 := time.Now()
	pid, err := e.placeRun(start, h, lost.Address)
	for deadline := t0.Add(moveRetryFor); err != nil && errors.Is(err, ErrNoNode) && time.Now().Before(deadline) && !h.Done() && !e.ShuttingDown(); {
		// No node took it: in a split of equal sides the gateway's side
		// may fence its last node, which rejoins at once under a new name
		// (at the lost address: no longer excluded); a run failed here is
		// a run lost to its reader, a run placed a moment later is not.
		time.Sleep(moveRetryEvery)
		pid, err = e.placeRun(start, h)
	}
	if err != nil {
		h.endFailover(nil)
		h.fail("coordinator_lost", fmt.Sprintf("%s, and no node could take the run over: %v", why, err))
		return 0, false
	}
	cancelled := h.endFailover(pid)
	e.metrics.failovers.Inc()
	e.system.Root.Send(h.PID(), &messages.WatchRun{Coordinator: refOf(pid)})
	if cancelled != "" {
		// A cancel that arrived while the run was moving went to the lost
		// coordinator: repeat it to the new one.
		e.system.Root.Send(pid, &messages.CancelRun{RunId: h.RunID, Reason: cancelled})
	}
	e.logger.Warn("run moved to a new coordinator", "run_id", h.RunID, "reason", why, "epoch", start.Epoch,
		"resumed_at_seq", len(prior), "node", pid.Address, "took", time.Since(t0))
	return start.Epoch, true
}

// stopHostedActors stops every run coordinator hosted here (for gateways, their
// hubs end the runs): a fenced node must stop its actors before it rejoins
// the cluster under a new identity.
func (e *Engine) stopHostedActors() {
	if e.remote != nil {
		e.system.Root.Send(actor.NewPID(e.system.Address(), starterName), stopHosted{})
		e.system.Root.Send(actor.NewPID(e.system.Address(), stageHostName), stopHosted{})
	}
	// Tenant limiters here may be stale once the cluster moved on: the next
	// Admit rebuilds them from the ledgers.
	e.system.Root.Send(actor.NewPID(e.system.Address(), limitersName), stopHosted{})
}

// stopHosted is the engine's order to its run starter (never leaves this process).
type stopHosted struct{}

// StopAccepting makes this process refuse new runs at once (the first step
// of a drain; Drain waits for the hosted ones).
func (e *Engine) StopAccepting() { e.deps.draining.Store(true) }

// Attach finds a run that this gateway does not know (its readers come
// from a gateway that died): it asks every coordinator host; the one that
// has the run says how it was started, and a new hub here then subscribes
// to it from seq 1 (the whole log, then every later event). Needs a Placer
// (the cluster). The run stays its tenant's: the hub carries the tenant.
// The hosts are asked together under one deadline (findRun), and an id
// none of them knew is remembered for a moment (negativeCache): asking
// again for it then costs nothing.
func (e *Engine) Attach(runID string) (*Hub, error) {
	if h, err := e.Hub(runID); err == nil {
		return h, nil
	}
	if e.placer == nil || !strings.HasPrefix(runID, "run_") {
		return nil, ErrUnknownRun
	}
	if e.misses.missed(runID) {
		return nil, ErrUnknownRun
	}
	found, complete := e.findRun(runID)
	if found == nil {
		if !complete {
			return nil, ErrLookupIncomplete
		}
		e.misses.add(runID)
		return nil, ErrUnknownRun
	}
	if found.Coordinator == nil {
		// Another gateway's copy of a run that ended (its coordinator is
		// gone): kept here as a finished run, like one read from the store.
		st := found.Start
		var created time.Time
		if evs := st.GetPriorEvents(); len(evs) > 0 && evs[0].GetTime() != nil {
			created = evs[0].GetTime().AsTime()
		}
		h, err := e.Restore(runID, st.GetTenant(), st.GetProfile(), st.GetQuery(), created, st.GetPriorEvents())
		if err != nil {
			e.logger.Warn("a run another gateway kept does not restore", "run_id", runID, "error", err)
			return nil, ErrUnknownRun
		}
		e.misses.forget(runID)
		return h, nil
	}
	root := e.system.Root
	st, coord := found.Start, pidOf(found.Coordinator)
	hub := newHub(runID, st.Tenant, st.Profile, st.Query, e.cfg.Hub, e.metrics, e.logger)
	hub.label = metricsLabel(st)
	hub.start, hub.onLost, hub.onEnd, hub.coordinator = st, e.failover, e.runEnded, coord
	e.mu.Lock()
	if other, ok := e.hubs[runID]; ok {
		e.mu.Unlock()
		return other, nil // attached concurrently
	}
	e.hubs[runID] = hub
	e.live[runID] = hub
	e.misses.forget(runID)
	// Admitted by the gateway that died: counted, never refused.
	e.admission.hold(st.Tenant, st.Weight, runID)
	e.mu.Unlock()
	hubPID, err := root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: hub} },
		actor.WithMailbox(e.metrics.mailbox("hub")), actor.WithDispatcher(e.deps.dispatcher)), "hub/"+runID)
	if err != nil {
		e.forget(runID)
		return nil, fmt.Errorf("actors: spawn hub: %w", err)
	}
	hub.mu.Lock()
	hub.pid, hub.stopActor = hubPID, e.stopHub
	hub.mu.Unlock()
	root.Send(hubPID, &messages.WatchRun{Coordinator: refOf(coord)})
	root.Send(coord, &messages.Subscribe{RunId: runID, FromSeq: 1, Subscriber: refOf(hubPID)})
	e.logger.Info("attached to a run started by another gateway", "run_id", runID, "coordinator", coord.Address)
	// Answer with what the coordinator had when it was asked, not an
	// empty log: a GET through this gateway of a run started (or ended)
	// through another must not read "running, last_seq 0". Bounded: a
	// slow replay answers with the prefix it has.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.SpawnTimeout/2)
	defer cancel()
	_ = hub.waitSeq(ctx, found.GetLastSeq())
	return hub, nil
}

// findRun asks every coordinator host at once whether it has runID, and
// returns an answer that has it; nil if none does, with complete false
// when some node did not answer. The questions go out together and share
// one deadline, SpawnTimeout/2: a node that does not answer costs that
// bound once, not once per node in turn.
func (e *Engine) findRun(runID string) (found *messages.RunFound, complete bool) {
	nodes := e.placer.Candidates(runID)
	answers := make([]func() (any, error), len(nodes))
	for i, node := range nodes {
		answers[i] = e.askFindRun(node, runID)
	}
	complete = true
	for _, answer := range answers {
		res, err := answer() // all asked together: the waits overlap
		if err != nil {
			complete = false
			continue
		}
		if found, ok := res.(*messages.RunFound); ok && found.Start != nil && pidOf(found.Coordinator) != nil {
			return found, true
		}
	}
	if e.topo == nil {
		return nil, complete
	}
	// No node has a coordinator for it: a run that ended through another
	// gateway (several gateways behind one address: a client's next
	// request may reach any of them). Those gateways have its log.
	self := e.system.Address()
	gateways := e.topo.Gateways(self)
	answers = answers[:0]
	for _, gw := range gateways {
		answers = append(answers, e.askFindRun(gw, runID))
	}
	for _, answer := range answers {
		res, err := answer()
		if err != nil {
			complete = false
			continue
		}
		if found, ok := res.(*messages.RunFound); ok && len(found.Start.GetPriorEvents()) > 0 {
			return found, true
		}
	}
	return nil, complete
}

// finishedRun is how a gateway answers another's FindRun for a run that
// ended here: the start's fields and the whole log as prior events (nil if
// this process has no such finished run, or its log is over
// maxCacheTransfer: the transport's messages are bounded). A run no
// longer in memory comes from the kept-runs hook (SetKeptRuns).
func (e *Engine) finishedRun(runID string) *messages.StartRun {
	h, err := e.Hub(runID)
	if err != nil {
		kept, _ := e.keptRuns.Load().(func(string) *Hub)
		if kept == nil {
			return nil
		}
		if h = kept(runID); h == nil {
			return nil
		}
	}
	if !h.Done() {
		return nil // unfinished: its coordinator answers for it
	}
	evs := h.Events(1)
	size := 0
	for _, ev := range evs {
		size += proto.Size(ev)
	}
	if size > maxCacheTransfer {
		e.logger.Warn("a finished run asked for by another gateway is too large to send", "run_id", runID, "bytes", size)
		return nil
	}
	return &messages.StartRun{RunId: runID, Tenant: h.Tenant, Profile: h.Profile, Query: h.Query, PriorEvents: evs}
}

// SetKeptRuns gives the engine a way to find a finished run that is no
// longer in memory (the gateway's store), to answer other gateways'
// FindRun; keep returns nil if it has none. Call it once, before serving.
func (e *Engine) SetKeptRuns(keep func(runID string) *Hub) { e.keptRuns.Store(keep) }

// askFindRun sends FindRun to node's run starter and returns the wait for
// its answer (a variable: tests stand in for silent nodes).
var askFindRunVia = func(e *Engine, node, runID string) func() (any, error) {
	f := e.system.Root.RequestFuture(actor.NewPID(node, starterName), &messages.FindRun{RunId: runID}, e.cfg.SpawnTimeout/2)
	return f.Result
}

func (e *Engine) askFindRun(node, runID string) func() (any, error) {
	if e.findRunVia != nil {
		return e.findRunVia(node, runID)
	}
	return askFindRunVia(e, node, runID)
}

// Hosted is how many run coordinators run on this process now.
func (e *Engine) Hosted() int { return int(e.deps.hosted.Load()) }

// stageSlotHeadroom keeps an eighth of the stage slots for tenants other
// than any one (none below 8 slots: a step is offered to other nodes
// before it waits).
func stageSlotHeadroom(slots int) int {
	if slots < 8 {
		return -1
	}
	return slots / 8
}

// load is what this process announces as its load: the runs it hosts and
// the stage attempts it runs for parallel steps, its run limit, the runs
// queued for a run slot, and its recent stage latency.
func (e *Engine) load() Load {
	stage := e.deps.stageSlots.inUse()
	l := Load{Active: e.Hosted() + stage, Queued: e.deps.slots.stats().Waiting,
		StageActive: stage, StageLimit: e.deps.stageSlots.capacityNow()}
	if rl := e.deps.runLimit; rl != nil {
		l.Limit, l.StageLatency = rl.Limit(), rl.Latency()
	}
	return l
}

// stepHosts lists the processes to offer a parallel step to, best first:
// on a cluster, the coordinator hosts by the placer's order for key (the
// less loaded of two rendezvous choices first: steps spread); else this
// process.
func (e *Engine) stepHosts(key string) []string {
	var hosts []string
	if sp, ok := e.placer.(StepPlacer); ok {
		hosts = sp.StepCandidates(key)
	} else if e.placer != nil {
		hosts = e.placer.Candidates(key)
	}
	self := e.system.Address()
	if len(hosts) == 0 {
		return []string{self}
	}
	// This process's own share is known now, not a load interval late: a
	// full one goes last.
	if c := e.deps.stageSlots.capacityNow(); len(hosts) > 1 && c > 0 && e.deps.stageSlots.inUse() >= c {
		if i := slices.Index(hosts, self); i >= 0 {
			hosts = append(slices.Delete(hosts, i, i+1), self)
		}
	}
	return hosts
}

// adaptStageSlots feeds one interval's measures to the stage capacity and
// sets the stage slots to its answer, which it returns.
func (e *Engine) adaptStageSlots(now time.Time, cpu float64) int {
	st := e.deps.stageSlots.stats()
	n := e.deps.stageCap.Observe(CapacitySample{CPU: cpu, QueueDelay: e.deps.stageWaits.take(now), Running: st.Running, Waiting: st.Waiting})
	e.deps.stageSlots.setCapacity(n, stageSlotHeadroom(n))
	return n
}

// capacityLoop samples the process's CPU use and its attempts' waits every
// StageCapacity.Interval and adapts the stage slots (owned by the engine:
// it ends at Shutdown).
func (e *Engine) capacityLoop() {
	defer e.wg.Done()
	t := time.NewTicker(e.deps.stageCap.cfg.Interval)
	defer t.Stop()
	cpu := newCPUMeter(time.Now())
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			e.adaptStageSlots(now, cpu.sample(now))
		}
	}
}

// NewEngine starts an actor system and the run machinery on it.
func NewEngine(cfg Config) (*Engine, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	quiet := cfg.Logger.Handler()
	system := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		// protoactor logs every actor start and dead letter at Info; keep its warnings only.
		return slog.New(levelFilter{quiet, slog.LevelWarn}).With("lib", "protoactor")
	}))
	compactRegistry(system)
	m := NewMetrics(cfg.Registerer)
	m.slow = cfg.Slow
	// Every endpoint's failure series and the cache's results exist from
	// the start at 0 (a series born at 1 has no increase in Prometheus).
	for name, p := range cfg.Providers {
		m.addProvider(cfg.Registerer, name, p)
	}
	for _, r := range []string{"hit", "near", "shared", "miss"} {
		m.runCache.WithLabelValues(r)
	}
	cat := newCatalogRef(cfg.Stages, cfg.Providers)
	e := &Engine{
		cfg: cfg, system: system, metrics: m, logger: cfg.Logger, cache: newRunCache(cfg.RunCache),
		cat: cat, profiles: newProfileResolver(cat),
		deps: &coordinatorDeps{cat: cat, secrets: cfg.Secrets, retry: cfg.Retry, timeouts: cfg.Timeouts, hedgeWait: cfg.HedgeWait, metrics: m, logger: cfg.Logger,
			dispatcher: newRunPool(runPoolThroughput, runPoolIdle, runPoolIdleFor),
			telemetry:  NewTelemetry(cfg.TelemetryWindow), finishLinger: cmp.Or(cfg.FinishLinger, finishLinger),
			slots: m.useRunSlots(newRunSlots(cfg.RunSlots, cfg.RunSlotHeadroom)), stageSlots: newRunSlots(cfg.StageSlots, stageSlotHeadroom(cfg.StageSlots))},
		stop: make(chan struct{}), hubs: map[string]*Hub{}, live: map[string]*Hub{}, topo: cfg.Topology,
		admission: newRunSlots(cfg.MaxActiveRuns, cfg.ActiveRunHeadroom),
		misses:    newNegativeCache(findRunMisses, findRunMissTTL),
		logs:      newStoredLogs(defaultStoredLogCache),
		coordRoot: actor.NewRootContext(system, nil).WithGuardian(stopOnFailure),
	}
	e.deps.profiles = e.profiles
	e.logs.gone = func(h *Hub) { e.drop([]*Hub{h}) }
	e.stopHub = func(pid *actor.PID) { e.system.Root.Stop(pid) }
	if cfg.Registerer != nil {
		_ = cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qlc_stored_log_cache_bytes", Help: "Memory held by the logs of finished runs read back from the gateway's store lately (packed; an LRU of at most 8 MiB, each kept 5 s after its last read).",
		}, func() float64 { _, b := e.logs.stats(); return float64(b) }))
		_ = cfg.Registerer.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "qlc_stored_log_loads_total", Help: "Finished runs' logs read back from the gateway's store because a reader asked for events of a run whose log had left memory.",
		}, func() float64 { return float64(e.logs.loads.Load()) }))
		_ = cfg.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qlc_stage_attempt_limit", Help: "This process's limit on the stage attempts (parallel steps) it runs at once: the stage slots, adapted to its CPU use and its attempts' wait for a slot when adaptive (0: no limit).",
		}, func() float64 { return float64(e.deps.stageSlots.capacityNow()) }))
	}
	switch {
	case cfg.Topology != nil:
		e.placer = cfg.Topology
	case len(cfg.Nodes) > 0:
		e.placer = &roundRobin{nodes: cfg.Nodes}
	}
	e.own = newOwnRuns()
	if p, ok := e.placer.(OwnLoadPlacer); ok {
		p.CountOwnRuns(e.own.count)
	}
	e.deps.stepHosts, e.deps.hostLost, e.deps.load = e.stepHosts, e.hostLost, e.load
	e.deps.queueDeadline = max(cfg.QueueDeadline, 0)
	if cfg.RunLimit.Initial > 0 {
		e.deps.runLimit = NewAdaptiveLimit(cfg.RunLimit)
	}
	e.retries = newRetryBudget(10, cfg.PlacementRetryRatio)
	e.deps.stageWaits = newAttemptWaits()
	if cfg.StageSlots > 0 && cfg.AdaptiveStageSlots {
		sc := cfg.StageCapacity
		if sc.Max <= 0 || sc.Max > cfg.StageSlots {
			sc.Max = cfg.StageSlots
		}
		e.deps.stageCap = NewStageCapacity(sc)
	}
	if cfg.ActiveRunLimit.Initial > 0 {
		e.activeLim = NewAdaptiveLimit(cfg.ActiveRunLimit)
	}
	tcfg := TokenizerClientConfig{Local: cfg.Tokenizer, Timeout: cfg.TokenizerTimeout, Metrics: m, Logger: cfg.Logger}
	var limiters LimiterPlacer
	if cfg.Topology != nil {
		tcfg.Hosts, limiters = cfg.Topology, cfg.Topology
	}
	e.tokens = NewTokenizerClient(system, tcfg)
	e.limits = NewLimiterClient(system, limiters, cfg.Logger)
	e.services = NewServices(system, ServicesConfig{Logger: cfg.Logger})
	if cfg.Remote != nil {
		host, portStr, _ := net.SplitHostPort(cfg.Remote.Bind)
		port, err := strconv.Atoi(portStr)
		if err != nil {
			return nil, fmt.Errorf("actors: Remote.Bind port %q: %w", portStr, err)
		}
		opts := []remote.ConfigOption{
			// protoactor sends up to this many envelopes in one gRPC message;
			// with 256-delta batches, 1000 (its default) can pass gRPC's
			// 4 MiB limit, and a refused message is lost (at most once).
			remote.WithEndpointWriterBatchSize(64),
			// The queue of messages to one peer (a ring that doubles when
			// full) starts with room for 1 000 000 envelopes by default: a
			// 16 MB slice of pointers per peer, allocated by the first
			// message to it and scanned by every GC. A node of the soak's
			// cluster (gateway and three peers) held 61 of its 87 MB of
			// live heap in them, the GC's goal doubled that, and each
			// replaced peer allocated 16 MB more.
			remote.WithEndpointWriterQueueSize(endpointWriterQueue),
		}
		srvOpts := []grpc.ServerOption{grpc.MaxRecvMsgSize(maxTransportMsg), grpc.StatsHandler(transportStats{m})}
		dialOpts := []grpc.DialOption{grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxTransportMsg)), grpc.WithStatsHandler(transportStats{m}),
			// protoactor's endpoint writer does not close the connection of
			// a dial whose Receive stream fails (a departed node's address):
			// each retry left a ClientConn redialling for ever (the soak
			// suite saw ~30 goroutines per departed node in every node). A
			// blocking dial with a deadline fails in Dial itself, which then
			// closes its connection; a refused connection fails at once.
			grpc.WithBlock(), grpc.FailOnNonTempDialError(true), grpc.WithTimeout(dialTimeout)} //nolint:staticcheck // see above
		switch {
		case len(cfg.Remote.ClusterKey) > 0:
			srvTLS, cliTLS, err := TransportTLS(cfg.Remote.ClusterKey, cfg.Remote.SecondaryKeys...)
			if err != nil {
				return nil, err
			}
			srvOpts = append(srvOpts, grpc.Creds(credentials.NewTLS(srvTLS)))
			dialOpts = append(dialOpts, grpc.WithTransportCredentials(credentials.NewTLS(cliTLS)))
		case cfg.Remote.Insecure:
			cfg.Logger.Warn("INSECURE: the actor transport runs without a cluster key: any process that reaches it can read and inject messages")
			dialOpts = append(dialOpts, grpc.WithTransportCredentials(insecure.NewCredentials()))
		default:
			return nil, errNoKey
		}
		opts = append(opts, remote.WithServerOptions(srvOpts...), remote.WithDialOptions(dialOpts...))
		// Port 0 picks a free port: see startRemote.
		if e.remote, err = startRemote(system, host, port, cfg.Remote.Advertise, opts); err != nil {
			return nil, err
		}
		if e.cache != nil {
			cacheProps := actor.PropsFromProducer(func() actor.Actor { return &cacheServer{cache: e.cache} },
				actor.WithSupervisor(stopOnFailure), actor.WithMailbox(m.mailbox("run-cache")))
			if _, err := system.Root.SpawnNamed(cacheProps, cacheName); err != nil {
				return nil, fmt.Errorf("actors: run cache: %w", err)
			}
		}
		props := actor.PropsFromProducer(func() actor.Actor { return &runStarter{e: e} },
			actor.WithSupervisor(stopOnFailure), actor.WithMailbox(m.mailbox("run-starter")), actor.WithDispatcher(e.deps.dispatcher))
		if _, err := system.Root.SpawnNamed(props, starterName); err != nil {
			return nil, fmt.Errorf("actors: run starter: %w", err)
		}
		// A broken endpoint is a host to offer steps to last (a killed
		// node's connections break at once; membership takes seconds).
		system.EventStream.Subscribe(func(evt any) {
			if t, ok := evt.(*remote.EndpointTerminatedEvent); ok {
				e.lostHosts.Store(t.Address, time.Now())
			}
		})
	}
	hostProps := actor.PropsFromProducer(func() actor.Actor { return newStageHost(e.deps) },
		actor.WithSupervisor(stopOnFailure), actor.WithMailbox(m.mailbox("stage-host")), actor.WithDispatcher(e.deps.dispatcher))
	if _, err := system.Root.SpawnNamed(hostProps, stageHostName); err != nil {
		return nil, fmt.Errorf("actors: stage host: %w", err)
	}
	self := system.Address()
	ledgers, view := func() []string { return []string{self} }, (func(string) string)(nil)
	if cfg.Topology != nil {
		// Tenant limiters hosted here rebuild from the gateways' ledgers, and
		// answer only gateways that see the same limiter hosts as this node.
		ledgers, view = cfg.Topology.LedgerHosts, cfg.Topology.LimiterView
	}
	var slices budgetSlices
	if cfg.Quota != nil {
		if err := e.startQuota(cfg.Quota); err != nil {
			return nil, err
		}
		slices = e.quota
	}
	limiterMailbox := m.mailbox("limiter")
	if _, err := system.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &limiterParent{ledgers: ledgers, view: view, spawn: e.goOwned, mailbox: limiterMailbox, slices: slices}
	}, actor.WithMailbox(limiterMailbox)), limitersName); err != nil {
		return nil, fmt.Errorf("actors: tenant limiters: %w", err)
	}
	if cfg.Tokenizer {
		for _, name := range []string{tokenizer.Cl100kBase, tokenizer.O200kBase} {
			if !cfg.PreloadTokenizer {
				break
			}
			if _, err := tokenizer.Get(name); err != nil {
				return nil, fmt.Errorf("actors: tokenizer: %w", err)
			}
		}
		props := router.NewRoundRobinPool(max(2, runtime.GOMAXPROCS(0)),
			actor.WithProducer(func() actor.Actor { return &tokenizerActor{metrics: m} }), actor.WithMailbox(m.mailbox("tokenizer")))
		if _, err := system.Root.SpawnNamed(props, tokenizerName); err != nil {
			return nil, fmt.Errorf("actors: tokenizer pool: %w", err)
		}
	}
	e.wg.Add(1)
	go e.evictLoop()
	if cfg.CoordinatorSilence > 0 {
		e.wg.Add(1)
		go e.watchSilence(newSilenceRule(cfg.CoordinatorSilence))
	}
	if e.deps.stageCap != nil {
		e.wg.Add(1)
		go e.capacityLoop()
	}
	if e.topo != nil {
		// Last: the cluster learns our address only once we can serve it.
		events, err := e.topo.Join(system.Address(), e.load)
		if err != nil {
			e.Shutdown(context.Background())
			return nil, fmt.Errorf("actors: join the cluster: %w", err)
		}
		e.wg.Add(1)
		go e.watchTopology(events)
	}
	return e, nil
}

// watchTopology is the one goroutine that acts on topology events: runs
// whose coordinator's node was lost move to a live node, a process that
// came back at a known address is dialled afresh, and on fencing the actors
// hosted here stop before the process rejoins under a new name. It ends
// when the engine shuts down or the Topology closes the channel.
func (e *Engine) watchTopology(events <-chan TopologyEvent) {
	defer e.wg.Done()
	for {
		var ev TopologyEvent
		select {
		case <-e.stop:
			return
		case x, ok := <-events:
			if !ok {
				return
			}
			ev = x
		}
		switch ev.Kind {
		case NodeLost:
			if n := e.nodeLost(ev.Addr); n > 0 {
				e.logger.Warn("member declared dead; moving its runs", "member", ev.Member, "address", ev.Addr, "runs", n)
			}
		case AddressReused:
			e.resetEndpoint(ev.Addr)
		case Fenced:
			e.logger.Error("fenced: stopping the runs and limiters hosted here", "cause", ev.Member)
			e.stopHostedActors()
			if ev.Done != nil {
				ev.Done()
			}
		case Rejoined:
			e.logger.Info("back in the cluster", "member", ev.Member)
		}
	}
}

// Tokenizer is the engine's tokenizer client (CountTokens, FitToBudget).
func (e *Engine) Tokenizer() *TokenizerClient { return e.tokens }

// Limiter is the engine's client of the tenant limiters (Admit, Settle).
func (e *Engine) Limiter() *LimiterClient { return e.limits }

// Services serves this process's ledger and tenant registry to the
// cluster and sends registry changes.
func (e *Engine) Services() *Services { return e.services }

// System is the engine's actor system.
func (e *Engine) System() *actor.ActorSystem { return e.system }

// Stages is the profile configuration new runs are started with: a
// snapshot, never to be changed (AddProfiles replaces it whole).
func (e *Engine) Stages() *stagework.Config { return e.cat.stages() }

// Metrics are the engine's metrics.
func (e *Engine) Metrics() *Metrics { return e.metrics }

// StartRun validates the request, starts the run and returns its hub. The
// run goes on in the background; follow it with Hub.Subscribe.
// Saturated reports whether every node that could take a new run announced
// that it is at its run limit (the placer's gossiped view, HeadroomPlacer),
// and the Retry-After to suggest: a caller refuses the run at once, before
// any work. False without such a placer. Non-blocking.
func (e *Engine) Saturated() (bool, time.Duration) {
	if e.activeFull() {
		return true, saturatedRetryAfter
	}
	if hp, ok := e.placer.(HeadroomPlacer); ok {
		return hp.Saturated()
	}
	return false, 0
}

func (e *Engine) StartRun(req RunRequest) (*Hub, error) {
	if _, err := e.profiles.resolve(req.Profile, req.ProfileDefinition); err != nil {
		return nil, err
	}
	if e.overMem.Load() {
		return nil, fmt.Errorf("%w: %w (%d bytes)", ErrBusy, ErrMemoryBudget, e.cfg.MemoryBudget)
	}
	seed := req.Seed
	if seed == 0 {
		n, err := rand.Int(rand.Reader, big.NewInt(math.MaxInt64))
		if err != nil {
			return nil, fmt.Errorf("actors: seed: %w", err)
		}
		seed = n.Int64() + 1
	}
	id := req.ID
	if id == "" {
		var err error
		if id, err = NewRunID(); err != nil {
			return nil, err
		}
	}
	hist := make([]*messages.ChatMessage, len(req.History))
	for i, m := range req.History {
		hist[i] = &messages.ChatMessage{Role: m.Role, Content: m.Content}
	}
	if err := e.PlanRun(&req); err != nil {
		return nil, err
	}
	var estimate *messages.RunEstimate
	if req.Plan != nil {
		estimate = toMsgEstimate(req.Plan.Estimate)
	} else if est, err := e.estimate(req.Profile, req.ProfileDefinition, req.Query, req.History, req.MaxTokens); err == nil {
		estimate = toMsgEstimate(est)
	}
	start := &messages.StartRun{
		RunId: id, Tenant: req.Tenant, Profile: req.Profile, Query: req.Query, Epoch: 1, Weight: req.Weight,
		Options:  &messages.RunOptions{History: hist, Seed: seed, MaxTokens: int32(req.MaxTokens)},
		Estimate: estimate, Routing: req.Routing, ProviderKeys: req.ProviderKeys, ProfileDefinition: req.ProfileDefinition,
		StepModels: toMsgStepModels(req.Plan), Budget: toMsgBudget(req.Budget),
	}
	// The placement span covers choosing a node and its StartRunAck (or
	// the cache's answer); the coordinator's run span is its child.
	span := noSpan
	if spanOn() {
		var pctx context.Context
		pctx, span = startSpan(req.Ctx, "qlc.placement", trace.WithAttributes(attrRunID.String(id), attrProfile.String(req.Profile)))
		start.TraceContext = tracing.Inject(pctx)
	}
	hub, err := e.startCached(req, start)
	if err != nil {
		endSpan(&span, "not_started", err.Error())
		return nil, err
	}
	if start.CachedFrom != "" {
		span.SetAttributes(attribute.String("qlc.cached_from", start.CachedFrom))
	}
	endSpan(&span, "", "")
	e.logger.Info("run accepted", "run_id", id, "trace_id", hub.TraceID, "tenant", req.Tenant, "profile", req.Profile, "query_bytes", len(req.Query),
		"cached_from", start.CachedFrom)
	return hub, nil
}

// providerErrorKinds are the kinds of a failed stage attempt (the
// provider errors' kinds, and internal).
var providerErrorKinds = []string{
	stagework.ErrAuth.String(), stagework.ErrRateLimited.String(), stagework.ErrServer.String(), stagework.ErrTimeout.String(),
	stagework.ErrBadRequest.String(), stagework.ErrProtocol.String(), stagework.ErrConnection.String(), "internal",
}

// leaderWait bounds how long a request waits for an identical run that
// another request is starting (placing it on a node) before it starts its
// own.
const leaderWait = 5 * time.Second

// startCached starts the run through the response cache: a request whose
// answer is reproducible (cacheKey) is answered from a kept log of an
// identical run, or shares an identical run in flight (its log followed
// from seq 1), or starts the run and leads it for the others; its log is
// kept when it completes. Any other request starts its run.
func (e *Engine) startCached(req RunRequest, start *messages.StartRun) (*Hub, error) {
	p, _ := e.profiles.resolve(req.Profile, req.ProfileDefinition)
	if req.Plan != nil {
		p = req.Plan.Profile // its steps on the chosen models: part of the key
	}
	key, ok := cacheKey(req, p)
	if !ok || e.cache == nil {
		return e.launch(start, nil)
	}
	replay := func(result string, src replaySource) (*Hub, error) {
		e.metrics.runCache.WithLabelValues(result).Inc()
		start.CachedFrom = src.from
		return e.launch(start, &src)
	}
	scope := nearScope(req, p)
	if ent, result := e.keptLog(key, scope, req.Query); ent != nil {
		return replay(result, replaySource{events: ent.events, from: ent.from})
	}
	existing, mine := e.cache.lead(key)
	if existing != nil {
		select {
		case <-existing.ready:
		case <-time.After(leaderWait):
		}
		if leader := existing.hub; leader != nil {
			// Followed live; or, if it has just completed (its log not kept
			// yet), replayed from its hub.
			evs := leader.Events(1)
			switch {
			case len(evs) == 0 || !isTerminal(evs[len(evs)-1]):
				return replay("shared", replaySource{leader: leader, from: leader.RunID})
			case evs[len(evs)-1].GetRunCompleted() != nil:
				return replay("hit", replaySource{events: evs, from: leader.RunID})
			}
		}
		if ent, hit := e.cache.get(key); hit { // it ended meanwhile
			return replay("hit", replaySource{events: ent.events, from: ent.from})
		}
		e.metrics.runCache.WithLabelValues("miss").Inc()
		return e.launch(start, nil)
	}
	if h, err, shared := e.sharedElsewhere(key, start, replay); shared {
		e.cache.started(key, mine, nil)
		return h, err
	}
	e.metrics.runCache.WithLabelValues("miss").Inc()
	hub, err := e.launch(start, nil)
	if err != nil {
		e.cache.started(key, mine, nil)
		e.releaseClaim(key, start.RunId)
		return nil, err
	}
	e.cache.started(key, mine, hub)
	if hub.setCacheKey(key, scope) { // it ended before: onEnd did not see the key
		e.cacheEnded(key, hub)
	}
	return hub, nil
}

// keptLog finds a kept log for a request: under its key here, then at the
// key's owner among the gateways, then (when its profile opts in) a
// near-duplicate question's in scope. result names which ("hit", "near").
func (e *Engine) keptLog(key, scope, query string) (ent *cacheEntry, result string) {
	if ent, ok := e.cache.get(key); ok {
		return ent, "hit"
	}
	if ent, ok := e.remoteCacheGet(key); ok {
		return ent, "hit"
	}
	if ent, ok := e.cache.getNear(scope, query); ok {
		return ent, "near"
	}
	return nil, ""
}

// Resume re-activates a run from its log (StartRun.PriorEvents): finished
// stages are kept, an interrupted stage is redone after a StageRestarted,
// and new events carry StartRun.Epoch, which must be higher than the prior
// events'. This is how a run survives the loss of its coordinator's node.
func (e *Engine) Resume(start *messages.StartRun) (*Hub, error) {
	if start.GetRunId() == "" || len(start.GetPriorEvents()) == 0 {
		return nil, errors.New("actors: Resume needs a run id and the run's prior events")
	}
	last := start.PriorEvents[len(start.PriorEvents)-1]
	if start.Epoch <= last.GetEpoch() {
		return nil, fmt.Errorf("actors: Resume epoch %d must be above the log's epoch %d", start.Epoch, last.GetEpoch())
	}
	if _, err := e.startProfile(start); err != nil {
		return nil, err
	}
	return e.launch(start, nil)
}

// launch creates the run's hub (holding any prior events) and coordinator,
// and sends the coordinator its StartRun. With a replay source, a replayer
// in this process stands in for the coordinator (a cached or shared run:
// no model is called, and nothing to move elsewhere if it were lost).
func (e *Engine) launch(start *messages.StartRun, replay *replaySource) (*Hub, error) {
	id := start.RunId
	hub := newHub(id, start.Tenant, start.Profile, start.Query, e.cfg.Hub, e.metrics, e.logger)
	hub.label = metricsLabel(start)
	if tid := tracing.TraceIDOf(start.TraceContext); tid != "" {
		hub.TraceID, hub.logger = tid, hub.logger.With("trace_id", tid)
	}
	hub.append(start.PriorEvents...)
	hub.start = proto.Clone(start).(*messages.StartRun)
	hub.start.PriorEvents = nil
	hub.onLost = e.failover
	hub.onEnd = e.runEnded

	e.mu.Lock()
	switch {
	case e.shutdown:
		e.mu.Unlock()
		return nil, ErrShutdown
	case e.hubs[id] != nil:
		e.mu.Unlock()
		return nil, fmt.Errorf("actors: run %s is already in this engine", id)
	}
	if len(start.PriorEvents) > 0 {
		// A resumed run was admitted before: count it, never refuse it.
		e.admission.hold(start.Tenant, start.Weight, id)
	} else if replay == nil && e.activeFull() {
		e.mu.Unlock()
		return nil, fmt.Errorf("%w: %w: %d unfinished runs, the adaptive limit", ErrBusy, ErrSaturated, e.activeLim.Limit())
	} else if !e.admission.tryAcquire(start.Tenant, start.Weight, id) {
		e.mu.Unlock()
		return nil, e.busy(start.Tenant)
	}
	e.hubs[id] = hub
	if replay == nil {
		e.live[id] = hub
	}
	e.mu.Unlock()
	e.misses.forget(id)

	root := e.system.Root
	hubPID, err := root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return &hubActor{hub: hub} },
		actor.WithMailbox(e.metrics.mailbox("hub")), actor.WithDispatcher(e.deps.dispatcher)), "hub/"+id)
	if err != nil {
		e.forget(id)
		return nil, fmt.Errorf("actors: spawn hub: %w", err)
	}
	start.Hub = refOf(hubPID)
	if len(start.PriorEvents) == 0 {
		e.metrics.runStarted(hub.label)
	}
	var coordPID *actor.PID
	if replay != nil {
		hub.onLost = nil
		coordPID, err = e.coordRoot.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
			return &replayer{runID: id, hub: hubPID, src: *replay, linger: e.deps.finishLinger}
		}, actor.WithMailbox(e.metrics.mailbox("replayer")), actor.WithDispatcher(e.deps.dispatcher)), "replay/"+id)
	} else {
		coordPID, err = e.placeRun(start, hub)
	}
	if err != nil {
		root.Stop(hubPID)
		e.forget(id)
		if len(start.PriorEvents) == 0 {
			e.metrics.runNotStarted()
		}
		return nil, fmt.Errorf("actors: start coordinator: %w", err)
	}
	root.Send(hubPID, &messages.WatchRun{Coordinator: refOf(coordPID)})
	hub.mu.Lock()
	hub.pid, hub.coordinator, hub.stopActor = hubPID, coordPID, e.stopHub
	hub.mu.Unlock()
	return hub, nil
}

// Hub returns a run's hub, while the run is in memory.
func (e *Engine) Hub(runID string) (*Hub, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h, ok := e.hubs[runID]
	if !ok {
		return nil, ErrUnknownRun
	}
	return h, nil
}

// RunsInFlight lists the unfinished runs started through this engine (its
// hubs) of tenant ("" for every tenant), newest first, at most max (0: all).
// It holds the engine's lock while it copies the tenant's hubs out (O(hubs
// kept)), and reads each hub's state after, never holding both locks.
func (e *Engine) RunsInFlight(tenant string, max int) []*Hub {
	e.mu.Lock()
	all := make([]*Hub, 0, 8)
	for _, h := range e.hubs {
		if tenant == "" || h.Tenant == tenant {
			all = append(all, h)
		}
	}
	e.mu.Unlock()
	out := all[:0]
	for _, h := range all {
		if !h.Done() {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *Hub) int {
		if c := b.Created.Compare(a.Created); c != 0 {
			return c
		}
		return strings.Compare(a.RunID, b.RunID)
	})
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

// Cancel asks a run's coordinator to cancel it. It returns at once; the run's
// log ends with RunCancelled when the coordinator has stopped its workers
// (wait with Hub.WaitDone).
func (e *Engine) Cancel(runID, reason string) error {
	h, err := e.Hub(runID)
	if err != nil {
		return err
	}
	if h.Done() {
		return ErrRunFinished
	}
	e.system.Root.Send(h.noteCancel(reason), &messages.CancelRun{RunId: runID, Reason: reason})
	return nil
}

// Shutdown cancels every unfinished run hosted in this process, waits up to
// ctx for them to end, and stops the actor system. Runs hosted on other
// nodes go on: another gateway can take their readers over. It is idempotent.
func (e *Engine) Shutdown(ctx context.Context) {
	e.mu.Lock()
	if e.shutdown {
		e.mu.Unlock()
		return
	}
	e.shutdown = true
	var live []*Hub
	for _, h := range e.hubs {
		live = append(live, h)
	}
	e.mu.Unlock()
	// Runs whose coordinator lives in this process end with it; runs on
	// other nodes go on (their readers reconnect to another gateway).
	var ending []*Hub
	for _, h := range live {
		if c := h.Coordinator(); !h.Done() && c != nil && c.Address == e.system.Address() {
			e.system.Root.Send(c, &messages.CancelRun{RunId: h.RunID, Reason: "server shutting down"})
			ending = append(ending, h)
		}
	}
	for _, h := range ending {
		_ = h.WaitDone(ctx)
	}
	for _, h := range live {
		h.close()
	}
	close(e.stop)
	e.wg.Wait()
	e.tokens.Close()
	e.services.Close()
	if e.quota != nil {
		e.quota.Stop()
	}
	if e.remote != nil {
		// Not Shutdown(true): protoactor's graceful path writes endpoint
		// manager fields that in-flight sends read without a lock (a data
		// race, endpoint_manager.go:105,115). Stopping the gRPC server is
		// enough: the process is about to exit, which closes the rest.
		e.remote.Shutdown(false)
	}
	e.system.Shutdown()
	e.deps.dispatcher.Close()
}

func (e *Engine) forget(id string) {
	e.own.end(id)
	e.mu.Lock()
	defer e.mu.Unlock()
	if h, ok := e.hubs[id]; ok {
		delete(e.hubs, id)
		e.admission.release(h.Tenant, id)
	}
	delete(e.live, id)
}

// runEnded is every hub's onEnd: the run's log is complete, and its slot
// of MaxActiveRuns goes back at once (the next run of a tenant at its
// share is admitted without waiting for evict).
func (e *Engine) runEnded(h *Hub) {
	e.admission.release(h.Tenant, h.RunID)
	e.own.end(h.RunID)
	e.mu.Lock()
	if e.live[h.RunID] == h {
		delete(e.live, h.RunID)
	}
	e.mu.Unlock()
	if e.activeLim != nil && h.CachedFrom() == "" {
		// A completed run's time per output token, per profile: answers
		// of different lengths are not a change of latency.
		if evs := h.Events(h.LastSeq()); len(evs) == 1 && evs[0].GetRunCompleted() != nil {
			per := time.Since(h.Created) / time.Duration(1+evs[0].GetRunCompleted().GetUsage().GetCompletionTokens())
			e.activeLim.SampleFor(h.Profile, per, e.admission.inUse())
		}
	}
	e.packLater(h)
	if key := h.getCacheKey(); key != "" && e.cache != nil {
		e.cacheEnded(key, h)
	}
}

// cacheEnded keeps the log of a run started for key, here and at the key's
// owner, when it completed; when it did not, its claim is released.
func (e *Engine) cacheEnded(key string, h *Hub) {
	if e.cache.ended(key, h) {
		e.remoteCachePut(key, h.RunID, h.Events(1))
	} else if evs := h.Events(h.LastSeq()); len(evs) != 1 || evs[0].GetRunCompleted() == nil {
		e.releaseClaim(key, h.RunID) // no answer to share
	}
}

// activeFull reports whether the engine's unfinished runs reached its
// adaptive limit (Config.ActiveRunLimit).
func (e *Engine) activeFull() bool {
	return e.activeLim != nil && e.admission.inUse() >= e.activeLim.Limit()
}

// busy is the refusal of a run beyond its tenant's share of MaxActiveRuns,
// or beyond MaxActiveRuns.
func (e *Engine) busy(tenant string) error {
	running, _ := e.admission.tenantStats(tenant)
	share := e.admission.share(tenant)
	st := e.admission.stats()
	if running >= share && share > 0 {
		return fmt.Errorf("%w: %w: %d runs, its share of the %d this engine keeps (%d tenants active)",
			ErrBusy, ErrOverShare, running, e.cfg.MaxActiveRuns, st.Active)
	}
	return fmt.Errorf("%w (limit %d, %d tenants active)", ErrBusy, e.cfg.MaxActiveRuns, st.Active)
}

// ActiveRuns is how many unfinished runs this engine counts against
// MaxActiveRuns, and how many of them are tenant's.
func (e *Engine) ActiveRuns(tenant string) (total, ofTenant int) {
	ofTenant, _ = e.admission.tenantStats(tenant)
	return e.admission.stats().Running, ofTenant
}

// evictLoop drops finished runs older than RetainFinished, the oldest of a
// tenant's finished runs beyond MaxFinishedPerTenant, and the oldest
// finished runs beyond MaxFinished.
func (e *Engine) evictLoop() {
	defer e.wg.Done()
	period := min(e.cfg.RetainFinished/4, time.Second)
	if period <= 0 {
		period = 100 * time.Millisecond
	}
	t := time.NewTicker(period)
	defer t.Stop()
	compact := time.NewTicker(compactEvery)
	defer compact.Stop()
	// The memory budget is checked more often than runs are evicted: a
	// flood of runs fills memory within a second.
	var memTick <-chan time.Time
	if e.cfg.MemoryBudget > 0 {
		mt := time.NewTicker(memoryCheckEvery)
		defer mt.Stop()
		memTick = mt.C
	}
	for {
		select {
		case <-e.stop:
			return
		case <-memTick:
			e.checkMemory(heapInUse())
		case <-t.C:
			e.evict(time.Now())
		case now := <-compact.C:
			e.compactFinished(now)
			e.logs.sweep(now)
		}
	}
}

// compactEvery is how often finished runs' logs are looked at for packing
// (Hub.compact, compactAfter their end).
const compactEvery = 250 * time.Millisecond

// compactFinished packs the logs of the finished runs that ended
// compactAfter ago or more: a retained run then costs its encoding (about
// 20 bytes per token instead of 300), and the garbage collector no longer
// traces one object per token of every run it keeps (its mark phases grew
// with the retained runs and took one of two cores for tens of
// milliseconds).
func (e *Engine) compactFinished(now time.Time) {
	e.toPackMu.Lock()
	hubs := e.toPack
	e.toPack = nil
	e.toPackMu.Unlock()
	var later []*Hub
	for _, h := range hubs {
		e.mu.Lock()
		held := e.hubs[h.RunID] == h
		e.mu.Unlock()
		if !held {
			continue // evicted before its turn: not worth packing
		}
		if ok, _ := h.compact(now, compactAfter); !ok && h.waitsToPack(now, compactAfter) {
			later = append(later, h)
		}
	}
	if len(later) > 0 {
		e.toPackMu.Lock()
		e.toPack = append(e.toPack, later...)
		e.toPackMu.Unlock()
	}
}

// packLater queues a finished run's hub for compactFinished.
func (e *Engine) packLater(h *Hub) {
	e.toPackMu.Lock()
	e.toPack = append(e.toPack, h)
	e.toPackMu.Unlock()
}

// memoryCheckEvery is how often the heap is compared with MemoryBudget.
const memoryCheckEvery = 100 * time.Millisecond

// heapInUse reads the heap the last garbage collection found live
// (runtime/metrics: no stop of the world; garbage not yet collected does
// not count, so a process that merely allocates fast is not refused).
func heapInUse() int64 {
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return int64(s[0].Value.Uint64())
}

// checkMemory applies the memory budget to a heap reading: past 80 % it
// drops every finished run from memory but the newest, and the response
// cache's kept logs; past 95 % it
// refuses new runs until the heap is under 90 % again.
func (e *Engine) checkMemory(heap int64) {
	b := e.cfg.MemoryBudget
	if b <= 0 {
		return
	}
	switch {
	case heap > b*95/100:
		if !e.overMem.Swap(true) {
			e.logger.Warn("near the memory budget: new runs are refused", "heap_bytes", heap, "budget_bytes", b)
		}
	case heap < b*90/100:
		if e.overMem.Swap(false) {
			e.logger.Info("back under the memory budget: new runs are taken", "heap_bytes", heap, "budget_bytes", b)
		}
	}
	if heap > b*80/100 {
		e.shedFinished()
		if e.cache != nil {
			e.cache.clear() // kept logs are the first memory to give back
		}
	}
}

// shedFinished drops the finished runs from memory, the newest kept (its
// readers are likeliest); they stay in the gateway's store.
func (e *Engine) shedFinished() {
	finished := e.finishedRuns()
	if len(finished) < 2 {
		return
	}
	slices.SortFunc(finished, func(a, b finishedRun) int { return b.at.Compare(a.at) })
	drop := make([]*Hub, 0, len(finished)-1)
	for _, f := range finished[1:] {
		drop = append(drop, f.h)
	}
	e.drop(drop)
}

// finishedRuns copies out the finished runs the engine holds, holding
// Engine.mu only for the copy (O(n)).
func (e *Engine) finishedRuns() []finishedRun {
	var finished []finishedRun
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.hubs {
		h.mu.Lock()
		term, at, size := h.terminal, h.endedAt, h.heapBytes
		h.mu.Unlock()
		if term {
			finished = append(finished, finishedRun{h, at, size})
		}
	}
	return finished
}

// finishedRun is a finished run as evict saw it.
type finishedRun struct {
	h     *Hub
	at    time.Time // when its log ended
	bytes int64     // its log's estimated memory
}

// evict drops finished runs (see evictLoop). It holds Engine.mu only to
// copy the finished runs out (O(n)) and to delete the chosen ones: the
// sort, O(n log n), runs outside the lock, so StartRun and Hub lookups
// wait for no sort. A run chosen while unlocked is deleted only if the
// engine still holds that very hub (Restore may have put it back since).
func (e *Engine) evict(now time.Time) {
	finished := e.finishedRuns()
	for _, f := range finished {
		// A finished run's slot of MaxActiveRuns went back when its log
		// ended (onEnd); this catches one that ended without it (a resumed
		// run whose prior log was already complete). Idempotent.
		e.admission.release(f.h.Tenant, f.h.RunID)
	}
	e.drop(e.chooseEvictions(finished, now))
}

// drop deletes the hubs chosen while Engine.mu was released that the
// engine still holds (not a hub put back for the same run since), and
// closes them.
func (e *Engine) drop(hubs []*Hub) {
	if len(hubs) == 0 {
		return
	}
	e.mu.Lock()
	n := 0
	for _, h := range hubs {
		if e.hubs[h.RunID] == h {
			delete(e.hubs, h.RunID)
			hubs[n] = h
			n++
		}
	}
	hubs = hubs[:n]
	e.mu.Unlock()
	for _, h := range hubs {
		h.close()
		e.logs.forget(h.RunID) // after close: a read under way caches nothing more for it
		if pid := h.PID(); pid != nil {
			e.system.Root.Stop(pid)
		}
		h.detachCoordinator() // a reader may hold the hub a while yet: not the stopped coordinator with it
	}
}

// chooseEvictions picks the finished runs to drop: those older than
// RetainFinished, then each tenant's oldest beyond MaxFinishedPerTenant (one
// tenant's thousands of runs do not push every other tenant's out), then the
// oldest beyond MaxFinished or MaxFinishedBytes. It sorts finished in place.
func (e *Engine) chooseEvictions(finished []finishedRun, now time.Time) []*Hub {
	slices.SortFunc(finished, func(a, b finishedRun) int { return b.at.Compare(a.at) }) // newest first
	var drop []*Hub
	kept, keptBytes, perTenant := 0, int64(0), map[string]int{}
	for _, f := range finished {
		switch {
		case now.Sub(f.at) >= e.cfg.RetainFinished,
			perTenant[f.h.Tenant] >= e.cfg.MaxFinishedPerTenant,
			kept >= e.cfg.MaxFinished,
			e.cfg.MaxFinishedBytes > 0 && kept > 0 && keptBytes+f.bytes > e.cfg.MaxFinishedBytes:
			drop = append(drop, f.h)
		default:
			kept++
			keptBytes += f.bytes
			perTenant[f.h.Tenant]++
		}
	}
	return drop
}

var runIDEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewRunID returns "run_" and 160 random bits (32 base-32 characters): more
// than the 128 bits that make an id unguessable.
func NewRunID() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("actors: run id: %w", err)
	}
	return "run_" + runIDEncoding.EncodeToString(b[:]), nil
}

// levelFilter drops records below a level (protoactor's logger is chatty).
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(a), f.min}
}

func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(n), f.min}
}

// Restore makes a finished run readable again from its stored log (a
// gateway that restarted: the run's coordinator is long gone). The log
// must hold the whole run, seq 1 to a terminal event. The hub is kept like
// any finished run (Config.RetainFinished from now).
func (e *Engine) Restore(runID, tenant, profile, query string, created time.Time, log []*messages.RunEvent) (*Hub, error) {
	return e.restore(runID, tenant, profile, query, created, log, false)
}

// RestoreStored is Restore of a log read from the store SetLogStore reads:
// the hub serves it from memory for compactAfter (the reader that asked for
// it reads it at once), then drops it and reads it back from the store
// when asked for (LogStored).
func (e *Engine) RestoreStored(runID, tenant, profile, query string, created time.Time, log []*messages.RunEvent) (*Hub, error) {
	return e.restore(runID, tenant, profile, query, created, log, true)
}

func (e *Engine) restore(runID, tenant, profile, query string, created time.Time, log []*messages.RunEvent, stored bool) (*Hub, error) {
	if len(log) == 0 || !isTerminal(log[len(log)-1]) {
		return nil, fmt.Errorf("actors: restore %s: the log does not end the run", runID)
	}
	for i, ev := range log {
		if ev.GetSeq() != uint64(i+1) {
			return nil, fmt.Errorf("actors: restore %s: event %d has seq %d", runID, i+1, ev.GetSeq())
		}
	}
	h := newHub(runID, tenant, profile, query, e.cfg.Hub, e.metrics, e.logger)
	h.Created = created
	h.log, h.n = log, len(log)
	for _, ev := range log {
		h.heapBytes += eventHeapBytes(ev)
	}
	h.epoch = log[len(log)-1].GetEpoch()
	h.terminal, h.endedAt = true, time.Now()
	if stored {
		e.logs.mu.Lock()
		if e.logs.load != nil {
			h.store = e.logs
		}
		e.logs.mu.Unlock()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.shutdown {
		return nil, ErrShutdown
	}
	if old, ok := e.hubs[runID]; ok {
		return old, nil
	}
	e.hubs[runID] = h
	e.packLater(h)
	return h, nil
}

// ShuttingDown reports whether Shutdown has begun.
func (e *Engine) ShuttingDown() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.shutdown
}

// resetEndpoint drops the actor transport's connection state for addr, so
// the next message dials it afresh: for a process that came back at the
// same address (a restarted gateway, a node that rejoined), whose old
// endpoint may sit in protoactor's 2 s reconnect wait. Watchers of actors
// at addr are told they terminated (they did: the process is new).
func (e *Engine) resetEndpoint(addr string) {
	if e.remote == nil || addr == "" || addr == e.system.Address() {
		return
	}
	e.system.EventStream.Publish(&remote.EndpointTerminatedEvent{Address: addr})
	e.lostHosts.Delete(addr) // it is back, not lost
}

// lostHostMemory is how long an address whose actor endpoint broke counts
// as lost when placing steps (membership declares it dead within seconds).
const lostHostMemory = 30 * time.Second

// hostLost reports whether addr's actor endpoint broke recently (its
// process died, or its connection did): a step is offered there last.
func (e *Engine) hostLost(addr string) bool {
	at, ok := e.lostHosts.Load(addr)
	return ok && time.Since(at.(time.Time)) < lostHostMemory
}
