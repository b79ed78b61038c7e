package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// coordinatorDeps is what every coordinator on a node shares.
type coordinatorDeps struct {
	// dispatcher runs the run actors' mailboxes (coordinators, hubs, stage
	// workers) on goroutines that keep their stacks (runpool.go).
	dispatcher *runPool
	draining   atomic.Bool  // refuse new runs (the node is leaving)
	hosted     atomic.Int64 // coordinators running on this process
	// hostedRuns says what each counted coordinator is doing (run@epoch →
	// *hostedRun), for a drain that waits on them to say what it waits for.
	hostedRuns sync.Map
	slots      *runSlots // the process's run slots: runs start in weighted-fair order per tenant
	// stageSlots bound the parallel steps' attempts this process runs
	// (its stage host's workers), fair among tenants.
	stageSlots *runSlots
	// stageCap adapts the stage slots' capacity to the process's CPU and
	// its attempts' waits (nil: fixed); stageWaits measures those waits.
	stageCap   *StageCapacity
	stageWaits *attemptWaits
	// stepHosts lists the processes to offer a parallel step to, best
	// first; hostLost says whether an address's endpoint broke recently.
	stepHosts func(key string) []string
	hostLost  func(addr string) bool

	cat       *catalogRef      // the profiles and provider clients, as they are now (catalog.go)
	profiles  *profileResolver // a run's profile: the file's, or its tenant's own (StartRun.profile_definition)
	secrets   *sealed.Ring     // opens the tenants' own provider keys (Config.Secrets)
	retry     stagework.RetryPolicy
	timeouts  Timeouts
	telemetry *Telemetry // live statistics per endpoint model (hedging reads its TTFT p95)
	// finishLinger is how long a finished coordinator resends its end to a
	// hub that does not acknowledge the log (Config.FinishLinger).
	finishLinger time.Duration
	hedgeWait    time.Duration // hedge delay before there are enough TTFT samples
	metrics      *Metrics
	logger       *slog.Logger
	// runLimit is this node's adaptive limit on the runs placed here (nil:
	// none), fed with every completed stage's duration; load reads the
	// process's pressure for acks (nil: none reported).
	runLimit *AdaptiveLimit
	load     func() Load
	// queueDeadline is how long a new run may wait for a run slot
	// (Config.QueueDeadline; 0: for ever).
	queueDeadline time.Duration
}

// nodeLoad is l on the wire.
func nodeLoad(l Load) *messages.NodeLoad {
	return &messages.NodeLoad{Active: uint32(max(l.Active, 0)), Limit: uint32(max(l.Limit, 0)), Queued: uint32(max(l.Queued, 0)),
		StageLatencyMs: uint32(l.StageLatency / time.Millisecond), StageActive: uint32(max(l.StageActive, 0)), StageLimit: uint32(max(l.StageLimit, 0))}
}

// ackLoad is the process's load for a StartRunAck (nil without deps.load).
func (d *coordinatorDeps) ackLoad() *messages.NodeLoad {
	if d.load == nil {
		return nil
	}
	return nodeLoad(d.load())
}

// hostedRun is what a hosted coordinator is doing now, for Drain's report.
type hostedRun struct {
	since time.Time
	state atomic.Pointer[string]
}

// host counts the coordinator as hosted work (Drain waits for it).
func (c *coordinator) host(state string) {
	c.counted = true
	c.deps.hosted.Add(1)
	h := &hostedRun{since: time.Now()}
	h.state.Store(&state)
	c.hostedAs = h
	c.deps.hostedRuns.Store(c.hostKey(), h)
}

// hostKey names the coordinator in deps.hostedRuns: a run may come back
// to this node under a new epoch while its old coordinator lingers.
func (c *coordinator) hostKey() string {
	return c.run.RunId + "@" + strconv.FormatUint(c.run.Epoch, 10)
}

// hostState records what the hosted coordinator waits for now.
func (c *coordinator) hostState(state string) {
	if c.hostedAs != nil {
		c.hostedAs.state.Store(&state)
	}
}

// unhost stops counting the coordinator as hosted work; once.
func (c *coordinator) unhost() {
	if !c.counted {
		return
	}
	c.counted = false
	c.deps.hosted.Add(-1)
	c.deps.hostedRuns.CompareAndDelete(c.hostKey(), c.hostedAs)
	c.hostedAs = nil
}

// retryTick is a coordinator's timer to itself (never leaves its mailbox):
// the backoff before a retry is over.
type retryTick struct {
	step string
	gen  int
}

// deadlineTick is a coordinator's timer to itself: a running step's
// deadline has passed (never leaves its mailbox).
type deadlineTick struct{ gen int }

// lingerTick is a finished coordinator's timer to itself: resend its end to
// a hub that has not acknowledged it, or stop. Its own timer (armLinger),
// not protoactor's receive timeout, whose timer goroutine writes the actor
// context without synchronisation (CancelReceiveTimeout) while the mailbox
// goroutine may be in SetReceiveTimeout: a data race -race reported in
// TestBudgetSurvivesNodeLoss when a resend came due as the hub's ack
// arrived.
type lingerTick struct{ gen int }

// queueTimeout is a coordinator's timer to itself: its new run has waited
// for a run slot for Config.QueueDeadline (never leaves its mailbox).
type queueTimeout struct{}

// CodeQueueTimeout is the RunFailed code of a new run that waited for a
// run slot longer than Config.QueueDeadline: it left the queue before any
// work, and the gateway answers it like a refusal (503 cluster_saturated
// with Retry-After) when it still can.
const CodeQueueTimeout = "queue_timeout"

// slotGranted is the run slots' word to a coordinator whose run waited for
// a slot: it holds one now (never leaves its mailbox).
type slotGranted struct{}

// slotState is where a coordinator's run is with its run slot.
type slotState uint8

const (
	slotNone     slotState = iota // not asked for yet
	slotWaiting                   // queued in deps.slots
	slotHeld                      // holds a slot
	slotReleased                  // given back (or left the queue); never asked again
)

// admit takes a run slot for the run and starts its first stage, or queues
// the run: the first stage then starts on slotGranted. A resumed run asks
// too (its new node's slots are what it uses). The key carries the epoch so
// a lost coordinator's late release never frees its successor's slot.
func (c *coordinator) admit(ctx actor.Context) {
	c.slotKey = c.run.RunId + "@" + strconv.FormatUint(c.run.Epoch, 10)
	self, root := ctx.Self(), ctx.ActorSystem().Root
	if !c.deps.slots.acquire(c.run.Tenant, max(c.run.Weight, 1), c.slotKey, func() { root.Send(self, &slotGranted{}) }) {
		c.slot = slotWaiting
		c.hostState("waiting for a run slot")
		c.logger.Debug("run waits for a run slot", "tenant", c.run.Tenant)
		if d := c.deps.queueDeadline; d > 0 && len(c.run.PriorEvents) == 0 {
			// A new run leaves the queue at its deadline; a resumed one
			// (admitted and under way before its node was lost) never does.
			time.AfterFunc(d, func() { root.Send(self, &queueTimeout{}) })
		}
		return
	}
	c.slot = slotHeld
	c.hostState("running")
	c.advance(ctx)
}

// releaseSlot gives the run's slot back, or leaves the queue; once.
func (c *coordinator) releaseSlot() {
	if c.slot == slotWaiting || c.slot == slotHeld {
		c.deps.slots.release(c.run.Tenant, c.slotKey)
	}
	c.slot = slotReleased
}

// coordinator is the RunCoordinator of one run: it runs the profile's
// graph of steps (a chain's four stages one after another; a parallel
// strategy's independent steps at once), each step's attempts in a stage
// worker it supervises, and logs every event.
type coordinator struct {
	deps    *coordinatorDeps
	run     *messages.StartRun
	profile *stagework.Profile
	graph   *stagework.Graph
	hub     *actor.PID
	logger  *slog.Logger
	rng     *rand.Rand

	log         []*messages.RunEvent // the run's log; log[i].Seq == i+1
	subscribers []*actor.PID         // Subscribe-rs, sent every new event
	running     []*stageAttempt      // the steps under way, in start order
	rankings    map[string][]int     // a council ranker's parsed ranking (indices into the answers it saw, best first)
	lastFailure string               // the kind of the last failure that left a step out
	usage       *messages.Usage
	ended       bool
	counted     bool       // counted in deps.hosted
	hostedAs    *hostedRun // its entry in deps.hostedRuns while counted
	acked       bool       // the hub acknowledged the whole, finished log
	endedAt     time.Time  // when the terminal event was logged (resends stop finishLinger after)
	slot        slotState
	slotKey     string // the run's key in deps.slots
	deadline    *time.Timer
	deadlineGen int
	// linger is the finished coordinator's timer (armLinger); lingerGen
	// tells a superseded tick.
	linger    *time.Timer
	lingerGen int
	started   time.Time // when this coordinator took the run (Config.Slow's TTFT counts from it)
	sawToken  bool      // a delta was logged, or the run resumed: Config.Slow's TTFT is told or moot
	// traceCtx holds the run's span (span, "qlc.run", a child of the
	// gateway's placement span that StartRun.trace_context names); the
	// steps' spans are its children. A no-op span with tracing off.
	traceCtx context.Context
	span     trace.Span
	spentUSD float64 // the run's real cost so far, at the file's prices (budget.go)
	capHit   bool    // the cost cap was crossed and the optional steps stopped
}

// stageAttempt is the state of one running step.
type stageAttempt struct {
	spec       stagework.StageSpec
	step       string             // the step's id
	wireStep   string             // the step id on the wire: empty for a chain's stage
	model      stagework.ModelRef // what this attempt runs on
	number     int32              // attempt number within the step, from 1
	onModel    int                // attempts made on model, this one included
	onFallback bool
	worker     *actor.PID // nil while waiting for a retry
	hedge      *actor.PID // a hedge on the fallback racing the primary, until one streams
	hedgeTimer *time.Timer
	retry      *time.Timer
	retryGen   int
	started    time.Time // when the primary of this attempt started (TTFT)
	text       strings.Builder
	tokens     int32
	bill       attemptPrompt // the current worker's prompt, to bill a void attempt
	hedgeBill  attemptPrompt // the hedge's, until it wins
	// lost is what the attempts that lost a hedge race used (their
	// prompts), billed with the step's StageCompleted; lostModel is the
	// last loser's model (its price).
	lost      *messages.Usage
	lostModel string
	// A parallel step's attempt runs on a stage host of some node: until
	// its worker announces itself (StepAccepted), placing (or
	// hedgePlacing, for a hedge) tracks the offer.
	placing, hedgePlacing *placement
	avoid                 map[string]bool // hosts where an attempt of this step was lost
	// Tracing: the step's span (stepCtx holds it), the current attempt's
	// and the hedge's spans (siblings under the step), and why the next
	// attempt (whyKind, why) and the next hedge (hedgeWhy) are made.
	stepCtx                   context.Context
	stepSpan, span, hedgeSpan trace.Span
	whyKind, why, hedgeWhy    string
}

// placement is an offer of one attempt of a parallel step to stage hosts,
// best first, until one runs it.
type placement struct {
	req     *messages.StartStep
	hosts   []string // left to offer it to
	first   string   // the best host, where it queues if every host is busy
	host    string   // offered to now
	queued  bool     // host queued it for a free slot
	tried   []string // why earlier hosts did not run it
	timer   *time.Timer
	gen     int
	didWait bool // already asked a host to queue it
}

// acceptTick is a coordinator's timer to itself: the stage host offered a
// step has not answered (never leaves its mailbox).
type acceptTick struct {
	step, role string
	attempt    int32
	gen        int
}

// stepAcceptTimeout is how long a stage host has to answer a StartStep
// (a refusal, a queue, or the worker's StepAccepted) before the step is
// offered to the next host.
const stepAcceptTimeout = 2 * time.Second

// attemptPrompt is what an attempt sent its model, kept to bill the attempt
// if it is cut off (its usage then never comes from the provider).
type attemptPrompt struct {
	prompt  []stagework.Message
	tokens  int64 // counted when fitted to a context window; 0: not counted yet
	counter stagework.TokenCounter
}

func newCoordinator(deps *coordinatorDeps) actor.Actor {
	return &coordinator{deps: deps, logger: deps.logger, rankings: map[string][]int{}}
}

// HandleFailure makes the coordinator its workers' supervisor: a worker that
// panics is stopped, and its Terminated is handled as a failed attempt.
func (c *coordinator) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason, _ interface{}) {
	c.logger.Error("stage worker failed", "worker", child.Id, "reason", fmt.Sprint(reason))
	sup.StopChildren(child)
}

func (c *coordinator) Receive(ctx actor.Context) {
	defer func() {
		// A bug must end the run with a reason, never restart the
		// coordinator with an empty state (its parent may be a remote
		// activator whose strategy is to restart).
		if r := recover(); r != nil {
			c.logger.Error("coordinator panicked", "panic", fmt.Sprint(r))
			if c.run != nil && !c.ended {
				c.fail(ctx, nil, "internal", fmt.Sprintf("internal error: %v", r))
			} else {
				ctx.Stop(ctx.Self())
			}
		}
	}()
	switch m := ctx.Message().(type) {
	case *messages.StartRun:
		c.start(ctx, m)
	case *messages.TokenDelta:
		if a := c.attemptOf(ctx.Sender()); a != nil {
			c.settleHedge(ctx, a, ctx.Sender())
			c.delta(ctx, a, m)
		}
	case *messages.TokenDeltaBatch:
		if a := c.attemptOf(ctx.Sender()); a != nil {
			c.settleHedge(ctx, a, ctx.Sender())
			c.deltas(ctx, a, m.Deltas)
		}
	case *messages.StageAttemptDone:
		if a := c.attemptOf(ctx.Sender()); a != nil {
			c.settleHedge(ctx, a, ctx.Sender())
			c.stageDone(ctx, a, m)
		}
	case *messages.StageAttemptFailed:
		if a := c.attemptOf(ctx.Sender()); a != nil && !c.hedgeLoses(ctx, a, ctx.Sender()) {
			c.attemptFailed(ctx, a, m)
		}
	case *hedgeTick:
		c.startHedge(ctx, m.step, m.attempt)
	case *messages.StepAccepted:
		c.stepAccepted(ctx, m)
	case *messages.StepRefused:
		if a, pl := c.placementOf(m.Step, m.Role, m.Attempt); pl != nil {
			pl.tried = append(pl.tried, fmt.Sprintf("%s: %s", pl.host, m.Reason))
			c.offer(ctx, a, pl)
		}
	case *acceptTick:
		if a, pl := c.placementOf(m.step, m.role, m.attempt); pl != nil && pl.gen == m.gen && !pl.queued {
			pl.tried = append(pl.tried, fmt.Sprintf("%s: no answer within %v", pl.host, stepAcceptTimeout))
			c.avoidHost(a, pl.host)
			c.offer(ctx, a, pl)
		}
	case *actor.Terminated:
		if c.unsubscribe(m.Who) {
			return
		}
		if c.hostLost(ctx, m.Who) {
			return
		}
		if a := c.attemptOf(m.Who); a != nil && !c.hedgeLoses(ctx, a, m.Who) {
			c.attemptFailed(ctx, a, &messages.StageAttemptFailed{
				Stage: toMsgStage(a.spec.Stage), Step: a.wireStep, Attempt: a.number, Kind: "internal",
				Message: "stage worker stopped unexpectedly", Retryable: true,
				TokensStreamed: a.tokens, Provider: a.model.Provider,
			})
		}
	case *retryTick:
		if a := c.attemptByStep(m.step); a != nil && m.gen == a.retryGen && !c.ended && a.worker == nil {
			c.spawnWorker(ctx, a)
		}
	case *deadlineTick:
		if m.gen == c.deadlineGen && !c.ended {
			c.advance(ctx)
		}
	case *queueTimeout:
		if c.slot == slotWaiting && !c.ended {
			c.deps.metrics.placements.WithLabelValues("queue_timeout").Inc()
			c.fail(ctx, nil, CodeQueueTimeout, fmt.Sprintf("waited %v for a run slot on a node at capacity; retry later", c.deps.queueDeadline))
		}
	case *slotGranted:
		if c.slot == slotWaiting && !c.ended {
			c.slot = slotHeld
			c.hostState("running")
			c.advance(ctx)
		}
	case *messages.CancelRun:
		c.cancel(ctx, m)
	case *messages.ProviderKeyChanged:
		if c.run != nil && m.RunId == c.run.RunId {
			// The next attempts on the endpoint use the new key (or the
			// endpoint's own); attempts already started keep theirs.
			c.run.ProviderKeys = withProviderKey(c.run.ProviderKeys, m.Endpoint, m.ProviderKey)
		}
	case *messages.RunEventAck:
		if c.ended && !c.acked && m.Seq >= uint64(len(c.log)) {
			// The hub has the whole log. Keep it a while longer anyway, not
			// counted as hosted work: a gateway that dies before it has
			// stored the finished run can still find it here (FindRun).
			c.acked = true
			c.unhost()
			if c.hub.Address == ctx.Self().Address {
				// The hub is in this process: the log is there (and in
				// the gateway's store), shared with ours; keeping ours
				// would only keep the memory.
				ctx.Stop(ctx.Self())
				return
			}
			c.armLinger(ctx, keepAfterAck)
		}
	case *lingerTick:
		if m.gen == c.lingerGen && c.ended {
			if !c.acked && time.Since(c.endedAt) < c.deps.finishLinger && c.hub != nil {
				// The transport is at most once: the end, or events before
				// it, may be lost (an endpoint reset when a falsely fenced
				// gateway rejoins). The last event again makes the hub see
				// the gap and ask for the rest, or acknowledge again.
				ctx.Send(c.hub, c.log[len(c.log)-1])
				c.armLinger(ctx, resendEnd) // the next resend
				return
			}
			if !c.acked {
				c.logger.Warn("run's hub never acknowledged the end of the log; stopping", "last_seq", len(c.log))
			}
			ctx.Stop(ctx.Self())
		}
	case *messages.Subscribe:
		c.subscribe(ctx, m)
	case *messages.RunProbe:
		// A hub that heard nothing for a while asks whether this
		// coordinator is still there (silence.go): answer at once, from
		// the mailbox, whatever the model does.
		if c.run != nil && m.RunId == c.run.RunId {
			to := pidOf(m.ReplyTo)
			if to == nil {
				to = ctx.Sender() // a peer probing for the hub (RelayProbe)
			}
			if to == nil {
				to = c.hub
			}
			if to != nil {
				ctx.Send(to, &messages.RunHeartbeat{RunId: c.run.RunId, Epoch: c.run.Epoch, LastSeq: uint64(len(c.log))})
			}
		}
	case *messages.RunSuperseded:
		// The run moved to a coordinator of a higher epoch (its hub heard
		// nothing from this one in time): stop without a word; the hub
		// refuses this epoch's events anyway.
		if c.run != nil && m.RunId == c.run.RunId && m.Epoch > c.run.Epoch {
			c.logger.Warn("run moved to another coordinator; stopping this one", "epoch", c.run.Epoch, "new_epoch", m.Epoch, "reason", m.Reason)
			ctx.Stop(ctx.Self())
		}
	case *messages.FindRun:
		if c.run == nil {
			ctx.Respond(&messages.RunFound{})
			return
		}
		st := proto.Clone(c.run).(*messages.StartRun)
		st.PriorEvents = nil
		ctx.Respond(&messages.RunFound{Start: st, Coordinator: refOf(ctx.Self()), LastSeq: uint64(len(c.log))})
		if m.Subscriber != nil {
			c.subscribe(ctx, &messages.Subscribe{RunId: m.RunId, FromSeq: 1, Subscriber: m.Subscriber})
		}
	case *actor.Stopping:
		c.ended = true // a stopping coordinator starts nothing new
		if c.linger != nil {
			c.linger.Stop()
		}
		for _, a := range c.running {
			c.endAttemptSpans(a, "coordinator stopped")
		}
		endSpan(&c.span, "", "coordinator stopped")
		c.stopTimers()
		c.releaseSlot()
		c.unhost()
	}
}

// attemptOf returns the running step whose worker or hedge is pid.
func (c *coordinator) attemptOf(pid *actor.PID) *stageAttempt {
	if c.ended || pid == nil {
		return nil
	}
	for _, a := range c.running {
		if (a.worker != nil && pid.Equal(a.worker)) || (a.hedge != nil && pid.Equal(a.hedge)) {
			return a
		}
	}
	return nil
}

// attemptByStep returns the running step with the given id.
func (c *coordinator) attemptByStep(step string) *stageAttempt {
	for _, a := range c.running {
		if a.step == step {
			return a
		}
	}
	return nil
}

// removeAttempt forgets a step that is no longer running.
func (c *coordinator) removeAttempt(a *stageAttempt) {
	if i := slices.Index(c.running, a); i >= 0 {
		c.running = slices.Delete(c.running, i, i+1)
	}
}

// settleHedge decides a hedge race when one side (from) streams or ends:
// from wins. A winning hedge becomes the step's attempt, announced by its
// own StageStarted; the loser is stopped.
func (c *coordinator) settleHedge(ctx actor.Context, a *stageAttempt, from *actor.PID) {
	if a.hedgeTimer != nil {
		a.hedgeTimer.Stop()
		a.hedgeTimer = nil
	}
	if a.hedgePlacing != nil && a.worker != nil && from.Equal(a.worker) {
		// The primary streamed before the hedge's worker even started.
		c.cancelPlacement(ctx, a, a.hedgePlacing)
		a.hedgePlacing = nil
		endSpan(&a.hedgeSpan, "", "hedge not needed: the primary streamed first")
	}
	if a.hedge == nil {
		return
	}
	if from.Equal(a.hedge) {
		c.billLoser(a, a.bill, a.model.Model)
		ctx.Stop(a.worker)
		c.endAttempt(a, "", "lost the hedge race")
		a.span, a.hedgeSpan = a.hedgeSpan, nil
		a.worker, a.hedge = a.hedge, nil
		a.bill = a.hedgeBill
		a.model, a.onFallback, a.onModel = *a.spec.Fallback, true, 1
		a.number++
		c.deps.metrics.hedges.WithLabelValues("won").Inc()
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
			Stage: toMsgStage(a.spec.Stage), Step: a.wireStep, Final: a.spec.Final, Model: a.model.Model, Provider: a.model.Provider, Attempt: a.number, Fallback: true,
			Note: "hedged: the primary sent no first token within its recent p95; the fallback streamed first"}}})
		return
	}
	c.billLoser(a, a.hedgeBill, a.spec.Fallback.Model)
	ctx.Stop(a.hedge)
	a.hedge = nil
	endSpan(&a.hedgeSpan, "", "lost the hedge race")
	c.deps.metrics.hedges.WithLabelValues("lost").Inc()
}

// billLoser counts what the attempt that lost a hedge race used: its
// prompt (the provider had it; the loser streamed nothing, or it would
// have won). It is billed with the step (StageCompleted.hedge_usage).
func (c *coordinator) billLoser(a *stageAttempt, bill attemptPrompt, model string) {
	if bill.counter == nil {
		return
	}
	prompt := bill.tokens
	if prompt == 0 {
		prompt = int64(stagework.PromptTokens(bill.prompt, bill.counter))
	}
	a.lost = addUsage(a.lost, &messages.Usage{PromptTokens: prompt, TotalTokens: prompt, Estimated: true})
	a.lostModel = model
}

// start takes a StartRun: a new run, or a resumed one whose prior log says
// which steps are finished.
func (c *coordinator) start(ctx actor.Context, m *messages.StartRun) {
	if c.run != nil {
		if ctx.Sender() != nil {
			ack := &messages.StartRunAck{RunId: m.RunId, Coordinator: refOf(ctx.Self())}
			if m.RunId != c.run.RunId {
				ack.Error = "coordinator already runs " + c.run.RunId
			}
			ctx.Respond(ack)
		}
		return
	}
	if c.deps.draining.Load() {
		if ctx.Sender() != nil {
			ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Error: "node is draining"})
		}
		ctx.Stop(ctx.Self())
		return
	}
	c.run = m
	c.started, c.sawToken = time.Now(), len(m.PriorEvents) > 0
	c.host("starting")
	c.deps.metrics.coordinators.Inc()
	c.hub = pidOf(m.Hub)
	c.traceCtx, c.span = context.Background(), noSpan
	if spanOn() {
		c.traceCtx, c.span = startSpan(tracing.Extract(context.Background(), m.TraceContext), "qlc.run", trace.WithAttributes(
			attrRunID.String(m.RunId), attrTenant.String(m.Tenant), attrProfile.String(m.Profile),
			attrEpoch.Int64(int64(m.Epoch)), attrNode.String(ctx.Self().Address)))
	}
	c.logger = c.deps.logger.With("run_id", m.RunId)
	if id := tracing.TraceID(c.traceCtx); id != "" {
		c.logger = c.logger.With("trace_id", id)
	}
	seed := uint64(m.GetOptions().GetSeed())
	c.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	profile, err := c.deps.profiles.resolve(m.Profile, m.ProfileDefinition)
	if err != nil {
		if ctx.Sender() != nil {
			ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Error: err.Error()})
		}
		endSpan(&c.span, "bad_profile", err.Error())
		ctx.Stop(ctx.Self())
		return
	}
	// The optimiser's choices, made at admission (budget.go).
	profile = profile.WithModels(ChosenModels(m.GetStepModels()))
	c.profile = profile
	c.span.SetAttributes(attrStrategy.String(profile.Strategy))
	c.graph = stagework.NewGraph(profile)
	if ctx.Sender() != nil {
		ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Coordinator: refOf(ctx.Self()), Load: c.deps.ackLoad()})
	}

	// Rebuild from the prior log: finished steps are kept, interrupted
	// ones are redone after a StageRestarted each.
	c.log = append(c.log, m.PriorEvents...)
	type interrupted struct {
		started *messages.StageStarted
		text    strings.Builder
	}
	var open []string // interrupted steps, in start order
	void := map[string]*interrupted{}
	for _, ev := range m.PriorEvents {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			id := stepOf(k.StageStarted.Step, k.StageStarted.Stage)
			if void[id] == nil {
				open = append(open, id)
				void[id] = &interrupted{}
			}
			void[id].started = k.StageStarted
			void[id].text.Reset()
		case *messages.RunEvent_TokenDelta:
			if v := void[stepOf(k.TokenDelta.Step, k.TokenDelta.Stage)]; v != nil {
				v.text.WriteString(k.TokenDelta.Text)
			}
		case *messages.RunEvent_StageRestarted:
			if v := void[stepOf(k.StageRestarted.Step, k.StageRestarted.Stage)]; v != nil {
				v.text.Reset()
			}
			c.spend(c.costOf(c.modelOfStep(stepOf(k.StageRestarted.Step, k.StageRestarted.Stage)), k.StageRestarted.Usage))
		case *messages.RunEvent_StageCompleted:
			id := stepOf(k.StageCompleted.Step, k.StageCompleted.Stage)
			c.graph.Finish(id, k.StageCompleted.Model, k.StageCompleted.Output)
			c.usage = addUsage(c.usage, k.StageCompleted.Usage)
			c.spend(c.costOf(k.StageCompleted.Model, k.StageCompleted.Usage))
			if hu := k.StageCompleted.HedgeUsage; hu != nil {
				c.usage = addUsage(c.usage, hu)
				c.spend(c.costOf(k.StageCompleted.HedgeModel, hu))
			}
			delete(void, id)
		case *messages.RunEvent_StepSkipped:
			c.graph.LeaveOut(k.StepSkipped.Step, k.StepSkipped.Reason)
			if k.StepSkipped.Usage != nil {
				c.usage = addUsage(c.usage, k.StepSkipped.Usage)
				c.spend(c.costOf(c.modelOfStep(k.StepSkipped.Step), k.StepSkipped.Usage))
			}
			delete(void, k.StepSkipped.Step)
		case *messages.RunEvent_StepNote:
			if k.StepNote.Kind == "cost_cap" {
				c.capHit = true
			}
		case *messages.RunEvent_Ranking:
			if !k.Ranking.Aggregate {
				c.rankings[k.Ranking.Step] = rankingIndices(k.Ranking)
			}
		}
		if isTerminal(ev) {
			c.ended = true
		}
	}
	if c.ended {
		endSpan(&c.span, "", "already ended")
		ctx.Stop(ctx.Self())
		return
	}
	c.logger.Info("run started", "profile", m.Profile, "strategy", profile.Strategy, "epoch", m.Epoch, "resumed_at_seq", len(c.log))
	if len(m.PriorEvents) == 0 && !profile.IsChain() {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunPlanned{RunPlanned: planOf(profile)}})
	}
	if len(m.PriorEvents) == 0 {
		for _, sm := range m.GetStepModels() {
			c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_ModelChosen{ModelChosen: sm}})
		}
	}
	for _, id := range open {
		v := void[id]
		if v == nil {
			continue
		}
		spec, _ := c.graph.Spec(id)
		moved := movedUsage(v.started, v.text.String())
		c.spend(c.costOf(v.started.GetModel(), moved))
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{
			Stage: toMsgStage(spec.Stage), Step: wireStep(spec), Reason: "coordinator moved to another node; the step is redone",
			Usage: moved}}})
	}
	c.checkCostCap(ctx) // a resumed run may have crossed its cap before the move
	c.admit(ctx)
}

// stepOf is the step id an event names: its step, else its stage's name.
func stepOf(step string, stage messages.Stage) string {
	if step != "" {
		return step
	}
	return toWorkStage(stage).String()
}

// wireStep is the step id a step's events carry: none for a chain's
// stage (its name says it), the id for a strategy's step.
func wireStep(sp stagework.StageSpec) string {
	if sp.Stage.Chain() {
		return ""
	}
	return sp.StepID()
}

// planOf describes a profile's steps for RunPlanned.
func planOf(p *stagework.Profile) *messages.RunPlanned {
	plan := &messages.RunPlanned{Strategy: p.Strategy}
	for _, sp := range p.Stages {
		plan.Steps = append(plan.Steps, &messages.PlannedStep{Step: sp.StepID(), Stage: toMsgStage(sp.Stage), Model: sp.Model,
			Provider: sp.Provider, Inputs: sp.Inputs, MinInputs: int32(sp.MinInputs), Final: sp.Final, Layer: int32(sp.Layer)})
	}
	return plan
}

// advance does what the graph says: leaves out steps past their deadline
// that nobody waits for, starts every step whose inputs are resolved,
// and completes the run once the final step is done, or fails it when a
// step can never run.
func (c *coordinator) advance(ctx actor.Context) {
	for !c.ended {
		start, cut, err := c.graph.Next(time.Now())
		if err != nil {
			c.fail(ctx, nil, c.failureCode(), err.Error())
			return
		}
		for _, id := range cut {
			if a := c.attemptByStep(id); a != nil {
				c.leaveOut(ctx, a, "deadline", fmt.Sprintf("did not finish within its step deadline of %v; its readers went on without it", a.spec.Deadline))
			}
		}
		for _, id := range start {
			if c.ended {
				return
			}
			c.startStep(ctx, id)
		}
		if len(start) == 0 && len(cut) == 0 {
			break
		}
	}
	if c.ended {
		return
	}
	if c.graph.Done() {
		c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{Answer: c.graph.Answer(), Usage: c.usage}}})
		return
	}
	if len(c.running) == 0 {
		c.fail(ctx, nil, "internal", "internal error: no step can run and the answer is not written")
		return
	}
	c.armDeadline(ctx)
}

// armDeadline sets the timer for the next running step's deadline.
func (c *coordinator) armDeadline(ctx actor.Context) {
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
	at := c.graph.NextDeadline()
	if at.IsZero() {
		return
	}
	c.deadlineGen++
	gen, self, root := c.deadlineGen, ctx.Self(), ctx.ActorSystem().Root
	c.deadline = time.AfterFunc(max(time.Until(at), time.Millisecond), func() { root.Send(self, &deadlineTick{gen: gen}) })
}

// failureCode is the code a run fails with when its steps cannot go on:
// the kind of the last failure that left a step out, else "timeout" (left
// out past a deadline).
func (c *coordinator) failureCode() string {
	if c.lastFailure != "" {
		return c.lastFailure
	}
	return "timeout"
}

// startStep starts a step the graph says is ready: a model step gets a
// worker; a tally is decided at once.
func (c *coordinator) startStep(ctx actor.Context, id string) {
	spec, _ := c.graph.Spec(id)
	if spec.Stage == stagework.StageTally {
		c.tally(ctx, spec)
		return
	}
	if spec.Stage == stagework.StageChairman {
		c.emitAggregateRanking(ctx, spec)
	}
	a := &stageAttempt{spec: spec, step: id, wireStep: wireStep(spec), model: stagework.ModelRef{Provider: spec.Provider, Model: spec.Model},
		whyKind: attemptFirst, why: "first attempt"}
	a.stepCtx, a.stepSpan = c.traceCtx, noSpan
	if spanOn() {
		a.stepCtx, a.stepSpan = startSpan(c.traceCtx, "qlc.step "+id, trace.WithAttributes(attrStep.String(id), attrStage.String(spec.Stage.String())))
	}
	c.running = append(c.running, a)
	c.graph.Start(id, time.Now())
	c.spawnWorker(ctx, a)
}

// spawnWorker opens a new attempt of a step.
func (c *coordinator) spawnWorker(ctx actor.Context, a *stageAttempt) {
	a.number++
	a.onModel++
	a.text.Reset()
	a.tokens = 0
	a.started = time.Now()
	pid, ok := c.startWorker(ctx, a, a.model, a.number, "")
	if !ok {
		return
	}
	a.worker = pid // nil while a stage host is being offered the attempt
	if a.spec.Hedge && a.spec.Fallback != nil && !a.onFallback {
		wait, speculative := hedgeDelay(c.deps.telemetry, a.spec, a.model, c.deps.hedgeWait)
		a.hedgeWhy = fmt.Sprintf("%s sent no first token within %v (its recent p95 TTFT on this node, or the default)", a.model.Model, wait)
		if speculative {
			a.hedgeWhy = fmt.Sprintf("speculative: %s's p95 TTFT is over the step's TTFT budget of %v", a.model.Model, a.spec.TTFTBudget)
			c.deps.metrics.hedges.WithLabelValues("speculative").Inc()
			c.logger.Info("speculative start: the primary's p95 TTFT is over the step's budget", "step", a.step,
				"model", a.model.Model, "ttft_budget", a.spec.TTFTBudget)
		}
		step, gen, self, root := a.step, a.number, ctx.Self(), ctx.ActorSystem().Root
		a.hedgeTimer = time.AfterFunc(wait, func() { root.Send(self, &hedgeTick{step: step, attempt: gen}) })
	}
}

// stepSeedStride separates the seeds of a strategy's steps, so three
// proposers on one simulated model do not write the same text.
const stepSeedStride = 104729

// startWorker fits the prompt for model, announces the attempt (unless it
// is a hedge, announced only if it wins) and spawns its worker. On failure
// it has failed the run and returns false.
func (c *coordinator) startWorker(ctx actor.Context, a *stageAttempt, model stagework.ModelRef, number int32, role string) (*actor.PID, bool) {
	stage := toMsgStage(a.spec.Stage)
	kind, why := a.whyKind, a.why
	if role != "" {
		kind, why = attemptHedge, a.hedgeWhy
	}
	// A step's first attempt has no span of its own: its provider call (the
	// "chat" span, on the worker's node) is the step's child and carries
	// the GenAI attributes, and the tokenizer's fit is an event of the
	// step. Retries, fallbacks and hedges get a qlc.attempt span with their
	// kind and reason, their provider call beneath it. (Spans cost CPU on
	// the run's path; issue 13 bounds tracing's added TTFT.)
	actx, span := a.stepCtx, noSpan
	if spanOn() && (number > 1 || role != "") {
		actx, span = startSpan(a.stepCtx, "qlc.attempt", trace.WithAttributes(attrStep.String(a.step), attrAttempt.Int(int(number)),
			attrAttemptKind.String(kind), attrAttemptReason.String(why), attribute.String("qlc.endpoint", model.Provider)))
	}
	if role == "" {
		endSpan(&a.span, "", "superseded")
		a.span = span
	} else {
		endSpan(&a.hedgeSpan, "", "superseded")
		a.hedgeSpan = span
	}
	prov, ok := c.deps.cat.provider(model.Provider)
	if !ok {
		c.fail(ctx, a, "bad_profile", fmt.Sprintf("%s: provider %q is not configured on this node", a.step, model.Provider))
		return nil, false
	}
	sealedKey := providerKeyFor(c.run.GetProviderKeys(), model.Provider)
	maxTokens := a.spec.MaxTokens
	if mt := int(c.run.GetOptions().GetMaxTokens()); mt > 0 {
		maxTokens = mt
	}
	// Fit the prompt into this model's context window, trimming earlier
	// steps' outputs (never the question) if it must.
	spec := a.spec
	spec.Model, spec.MaxTokens = model.Model, maxTokens
	counter, err := counterFor(spec.Model)
	if err != nil {
		c.fail(ctx, a, "internal", fmt.Sprintf("%s: token counter: %v", a.step, err))
		return nil, false
	}
	in := c.graph.PromptInput(a.step, c.run.Query, history(c.run.GetOptions()), c.aggregateRanking(a.spec))
	window := stagework.ContextWindowOf(spec)
	// A prompt that surely fits needs no counting before it is sent: it is
	// counted (for StageStarted and the bill) once its request is on its
	// way, off the stage boundary's critical path. Otherwise it is fitted
	// (counted, trimmed if it must) first.
	var prompt []stagework.Message
	var promptTokens int
	var notes []string
	countLater := false
	if window > 0 {
		if msgs, err := stagework.BuildPrompt(spec, in); err == nil && surelyFits(msgs, window-maxTokens) {
			prompt, countLater = msgs, true
		}
	}
	if !countLater {
		var fitStart time.Time
		fitSpan := span // the attempt's, or the step's for a first attempt
		if !fitSpan.IsRecording() {
			fitSpan = a.stepSpan
		}
		if fitSpan.IsRecording() {
			fitStart = time.Now()
		}
		prompt, promptTokens, notes, err = stagework.FitPrompt(spec, in, window, counter)
		if fitSpan.IsRecording() {
			// The tokenizer's work on the attempt's path (counting, and
			// trimming to the context window) is a local call: an event
			// on the attempt with its duration, not a span of its own
			// (spans cost more; the tokenizer actors' requests have
			// theirs, TokenizerClient).
			fitSpan.AddEvent("qlc.tokenizer.fit", trace.WithTimestamp(fitStart), trace.WithAttributes(
				attribute.Int("qlc.tokenizer.context_window", window), attribute.Int("qlc.tokenizer.prompt_tokens", promptTokens),
				attribute.Int("qlc.tokenizer.notes", len(notes)), attribute.Int64("qlc.tokenizer.duration_us", time.Since(fitStart).Microseconds())))
		}
		switch {
		case errors.Is(err, stagework.ErrPromptTooLong):
			c.fail(ctx, a, "prompt_too_long", fmt.Sprintf("%s: %v", stepTitle(a.spec), err))
			return nil, false
		case err != nil:
			c.fail(ctx, a, "bad_profile", fmt.Sprintf("%s: %v", a.step, err))
			return nil, false
		}
	}
	seed := c.run.GetOptions().GetSeed() + int64(a.spec.Stage)*7919 + int64(number-1)*1000003
	if !a.spec.Stage.Chain() {
		seed += int64(slices.IndexFunc(c.profile.Stages, func(s stagework.StageSpec) bool { return s.StepID() == a.step })+1) * stepSeedStride
	}
	req := stagework.Request{
		Model: model.Model, Messages: prompt, Temperature: a.spec.Temperature, MaxTokens: maxTokens,
		// Each attempt gets its own seed so a simulated fault is not replayed
		// identically on every retry; the sequence stays deterministic.
		Seed:  seed,
		Stage: a.spec.Stage, Query: c.run.Query,
	}
	if span.IsRecording() {
		span.SetAttributes(genAIRequest(prov.Name(), req)...)
	}
	if !a.spec.Stage.Chain() && c.deps.stepHosts != nil {
		// The stage host's worker opens the tenant's key, if any.
		// A parallel step runs on a stage host, here or on another node.
		if countLater {
			promptTokens = stagework.PromptTokens(prompt, counter)
		}
		bill := attemptPrompt{prompt: prompt, tokens: int64(promptTokens), counter: counter}
		if role == "" {
			a.bill = bill
			c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
				Stage: stage, Step: a.wireStep, Final: a.spec.Final, Model: model.Model, Provider: model.Provider, Attempt: number, Fallback: a.onFallback,
				Note: strings.Join(notes, "; "), PromptTokens: int64(promptTokens)}}})
		} else {
			a.hedgeBill = bill
		}
		st := &messages.StartStep{RunId: c.run.RunId, Tenant: c.run.Tenant, Weight: max(c.run.Weight, 1), Step: a.step, Stage: stage,
			Attempt: number, Role: role, Coordinator: refOf(ctx.Self()), Provider: model.Provider, Model: model.Model,
			Temperature: req.Temperature, MaxTokens: int32(req.MaxTokens), Seed: req.Seed, Query: req.Query, PromptTokens: int64(promptTokens), ProviderKey: sealedKey,
			TraceContext: tracing.Inject(actx)}
		st.Messages = make([]*messages.ChatMessage, len(prompt))
		for i, m := range prompt {
			st.Messages[i] = &messages.ChatMessage{Role: m.Role, Content: m.Content}
		}
		c.place(ctx, a, st)
		return nil, true
	}
	if req.APIKey, err = openProviderKey(c.deps.secrets, c.run.Tenant, sealedKey); err != nil {
		c.fail(ctx, a, "provider_key_unavailable", fmt.Sprintf("%s: %v", a.step, err))
		return nil, false
	}
	w := &stageWorker{provider: prov, req: req, stage: stage, step: a.wireStep, attempt: number, coordinator: ctx.Self(),
		timeouts: c.deps.timeouts, counter: counter, traceCtx: actx}
	w.promptTokens.Store(int64(promptTokens))
	name := fmt.Sprintf("%s-%d", a.step, number)
	if role != "" {
		name += "-" + role
	}
	pid, spawnErr := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return w }, actor.WithDispatcher(c.deps.dispatcher)), name)
	if countLater {
		// The worker's deltas queue behind this message: StageStarted
		// still comes first in the log.
		promptTokens = stagework.PromptTokens(prompt, counter)
		w.promptTokens.Store(int64(promptTokens))
	}
	if role == "" {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
			Stage: stage, Step: a.wireStep, Final: a.spec.Final, Model: model.Model, Provider: model.Provider, Attempt: number, Fallback: a.onFallback,
			Note: strings.Join(notes, "; "), PromptTokens: int64(promptTokens)}}})
	}
	bill := attemptPrompt{prompt: prompt, tokens: int64(promptTokens), counter: counter}
	if role == "" {
		a.bill = bill
	} else {
		a.hedgeBill = bill
	}
	if spawnErr != nil {
		c.fail(ctx, a, "internal", fmt.Sprintf("%s: cannot start stage worker: %v", a.step, spawnErr))
		return nil, false
	}
	return pid, true
}

// place offers a parallel step's attempt to the stage hosts, best first.
func (c *coordinator) place(ctx actor.Context, a *stageAttempt, st *messages.StartStep) {
	hosts := c.deps.stepHosts(c.run.RunId + "/" + a.step)
	// Hosts where this step was lost go last: their node is likely gone
	// and membership may not know it yet.
	lost := func(h string) bool { return a.avoid[h] || (c.deps.hostLost != nil && c.deps.hostLost(h)) }
	slices.SortStableFunc(hosts, func(x, y string) int {
		ax, ay := lost(x), lost(y)
		switch {
		case ax == ay:
			return 0
		case ax:
			return 1
		}
		return -1
	})
	pl := &placement{req: st, hosts: hosts}
	if len(hosts) > 0 {
		pl.first = hosts[0]
	}
	if st.Role == "" {
		a.placing = pl
	} else {
		a.hedgePlacing = pl
	}
	c.offer(ctx, a, pl)
}

// offer sends the attempt to the next host; when every host refused
// because it was busy, the best one is asked to queue it; when none can
// run it, the attempt fails (the retry policy decides what next).
func (c *coordinator) offer(ctx actor.Context, a *stageAttempt, pl *placement) {
	if pl.timer != nil {
		pl.timer.Stop()
		pl.timer = nil
	}
	pl.gen++
	pl.queued = false
	var host string
	switch {
	case len(pl.hosts) > 0:
		host, pl.hosts = pl.hosts[0], pl.hosts[1:]
	case !pl.didWait && pl.first != "":
		host, pl.didWait = pl.first, true
		pl.req.Queue = true
	default:
		why := "no node could run it: " + strings.Join(pl.tried, "; ")
		if pl.req.Role != "" {
			a.hedgePlacing = nil // the primary goes on alone
			endSpan(&a.hedgeSpan, "no_node", why)
			return
		}
		a.placing = nil
		c.attemptFailed(ctx, a, &messages.StageAttemptFailed{Stage: toMsgStage(a.spec.Stage), Step: a.wireStep, Attempt: a.number,
			Kind: "internal", Message: why, Retryable: true, Provider: a.model.Provider})
		return
	}
	pl.host = host
	ctx.Send(actor.NewPID(host, stageHostName), pl.req)
	step, role, attempt, gen, self, root := a.step, pl.req.Role, pl.req.Attempt, pl.gen, ctx.Self(), ctx.ActorSystem().Root
	pl.timer = time.AfterFunc(stepAcceptTimeout, func() { root.Send(self, &acceptTick{step: step, role: role, attempt: attempt, gen: gen}) })
}

// placementOf finds the open placement a stage host's answer is about.
func (c *coordinator) placementOf(step, role string, attempt int32) (*stageAttempt, *placement) {
	a := c.attemptByStep(step)
	if a == nil || c.ended {
		return nil, nil
	}
	pl := a.placing
	if role != "" {
		pl = a.hedgePlacing
	}
	if pl == nil || pl.req.Attempt != attempt {
		return nil, nil
	}
	return a, pl
}

// stepAccepted takes a stage host's or worker's StepAccepted: the attempt
// is queued there, or its worker runs (it is watched from now on). A
// worker of an attempt no longer wanted is stopped.
func (c *coordinator) stepAccepted(ctx actor.Context, m *messages.StepAccepted) {
	a, pl := c.placementOf(m.Step, m.Role, m.Attempt)
	worker := pidOf(m.Worker)
	if pl == nil {
		if worker != nil {
			ctx.Stop(worker)
		}
		return
	}
	if pl.timer != nil {
		pl.timer.Stop()
		pl.timer = nil
	}
	if m.Queued {
		pl.queued = true
		ctx.Watch(actor.NewPID(pl.host, stageHostName)) // its node's loss ends the wait
		return
	}
	if worker == nil {
		return
	}
	ctx.Watch(worker)
	if m.Role == "" {
		a.worker, a.placing = worker, nil
	} else {
		a.hedge, a.hedgePlacing = worker, nil
	}
}

// hostLost handles the loss of a stage host where a step was queued: the
// step is offered to the next host. It reports whether who was one.
func (c *coordinator) hostLost(ctx actor.Context, who *actor.PID) bool {
	if who.Id != stageHostName {
		return false
	}
	for _, a := range c.running {
		for _, pl := range []*placement{a.placing, a.hedgePlacing} {
			if pl != nil && pl.queued && pl.host == who.Address {
				pl.tried = append(pl.tried, pl.host+": its node was lost")
				c.avoidHost(a, pl.host)
				c.offer(ctx, a, pl)
			}
		}
	}
	return true
}

// cancelPlacement withdraws an offer: a queued attempt leaves its host's
// queue; a worker that starts anyway is stopped when it announces itself.
func (c *coordinator) cancelPlacement(ctx actor.Context, a *stageAttempt, pl *placement) {
	if pl.timer != nil {
		pl.timer.Stop()
		pl.timer = nil
	}
	if pl.host != "" {
		ctx.Send(actor.NewPID(pl.host, stageHostName), &messages.CancelStep{RunId: c.run.RunId, Step: a.step,
			Attempt: pl.req.Attempt, Role: pl.req.Role, Tenant: c.run.Tenant})
	}
}

func (c *coordinator) avoidHost(a *stageAttempt, host string) {
	if a.avoid == nil {
		a.avoid = map[string]bool{}
	}
	a.avoid[host] = true
}

// stepTitle names a step for people: a chain stage's title ("Refiner"),
// else its role and id ("Proposer p1.2").
func stepTitle(sp stagework.StageSpec) string {
	if sp.Stage.Chain() {
		return sp.Stage.Title()
	}
	return sp.Stage.Title() + " " + sp.StepID()
}

// surelyFits reports whether msgs fit budget tokens without counting them:
// a token of a byte-level BPE (every encoding package tokenizer has) is at
// least one byte, so text is at most as many tokens as bytes — three per
// byte of invalid UTF-8, which becomes U+FFFD before it is encoded — plus
// PromptTokens' per-message overhead.
func surelyFits(msgs []stagework.Message, budget int) bool {
	n := stagework.PromptTokens(msgs, byteCounter{})
	return n <= budget
}

// byteCounter counts an upper bound of any byte-level BPE's tokens.
type byteCounter struct{}

func (byteCounter) Count(s string) int {
	if utf8.ValidString(s) {
		return len(s)
	}
	return 3 * len(s)
}

func (byteCounter) Truncate(s string, n int) (string, int) { return s[:min(n, len(s))], min(n, len(s)) }

// hedgeLoses handles the failure of one side of an undecided hedge race:
// the other side simply goes on alone. It reports whether it did so (the
// failure then needs no retry).
func (c *coordinator) hedgeLoses(ctx actor.Context, a *stageAttempt, failed *actor.PID) bool {
	if a.hedge == nil {
		return false
	}
	if failed.Equal(a.hedge) {
		ctx.Stop(a.hedge)
		a.hedge = nil
		endSpan(&a.hedgeSpan, "failed", "the hedge failed; the primary goes on")
		c.deps.metrics.hedges.WithLabelValues("failed").Inc()
		return true
	}
	// The primary failed first: the hedge is the attempt now.
	c.endAttempt(a, "failed", "the primary failed; its hedge goes on")
	c.settleHedge(ctx, a, a.hedge)
	return true
}

// startHedge starts the fallback beside a primary that has not streamed.
func (c *coordinator) startHedge(ctx actor.Context, step string, attempt int32) {
	a := c.attemptByStep(step)
	if c.ended || a == nil || a.number != attempt || a.worker == nil || a.hedge != nil || a.hedgePlacing != nil || a.tokens > 0 || a.onFallback {
		return
	}
	a.hedgeTimer = nil
	pid, ok := c.startWorker(ctx, a, *a.spec.Fallback, a.number+1, "hedge")
	if ok {
		a.hedge = pid // nil while placed: set on its StepAccepted
		c.deps.metrics.hedges.WithLabelValues("started").Inc()
	}
}

func (c *coordinator) delta(ctx actor.Context, a *stageAttempt, m *messages.TokenDelta) {
	a.text.WriteString(m.Text)
	a.tokens += m.Tokens
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_TokenDelta{TokenDelta: m}})
}

// deltas logs a batch of deltas and sends them on as one RunEventBatch.
func (c *coordinator) deltas(ctx actor.Context, a *stageAttempt, ds []*messages.TokenDelta) {
	if !c.sawToken {
		c.sawToken = true
		c.deps.metrics.firstToken(c.started)
	}
	now := timestamppb.Now()
	evs := make([]*messages.RunEvent, len(ds))
	for i, d := range ds {
		a.text.WriteString(d.Text)
		a.tokens += d.Tokens
		evs[i] = &messages.RunEvent{RunId: c.run.RunId, Seq: uint64(len(c.log)) + 1, Epoch: c.run.Epoch, Time: now,
			Kind: &messages.RunEvent_TokenDelta{TokenDelta: d}}
		c.log = append(c.log, evs[i])
	}
	batch := &messages.RunEventBatch{Events: evs}
	if c.hub != nil {
		ctx.Send(c.hub, batch)
	}
	for _, s := range c.subscribers {
		ctx.Send(s, batch)
	}
}

func (c *coordinator) stageDone(ctx actor.Context, a *stageAttempt, m *messages.StageAttemptDone) {
	ctx.Stop(a.worker)
	a.worker = nil
	if a.hedgePlacing != nil {
		c.cancelPlacement(ctx, a, a.hedgePlacing)
		a.hedgePlacing = nil
	}
	c.stopAttemptTimers(a)
	if a.span != nil && a.span.IsRecording() {
		a.span.SetAttributes(semconv.GenAIUsageInputTokens(int(m.GetUsage().GetPromptTokens())),
			semconv.GenAIUsageOutputTokens(int(m.GetUsage().GetCompletionTokens())))
	}
	endSpan(&a.span, "", "")
	endSpan(&a.hedgeSpan, "", "hedge not needed")
	endSpan(&a.stepSpan, "", "")
	var cost float64
	if p, ok := c.deps.cat.stages().Price(a.model.Model); ok {
		cost = p.Cost(fromMsgUsage(m.Usage))
	}
	c.deps.telemetry.AttemptDone(a.model.Provider, a.model.Model, m.GetTtft().AsDuration(), m.GetDuration().AsDuration(), m.Itl,
		m.GetUsage().GetPromptTokens(), m.GetUsage().GetCompletionTokens(), cost)
	out := a.text.String()
	c.usage = addUsage(c.usage, m.Usage)
	c.spend(cost)
	if a.lost != nil {
		c.usage = addUsage(c.usage, a.lost)
		c.spend(c.costOf(a.lostModel, a.lost))
	}
	c.removeAttempt(a)
	c.graph.Finish(a.step, a.model.Model, out)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{
		Stage: toMsgStage(a.spec.Stage), Step: a.wireStep, Output: out, Usage: m.Usage, Ttft: m.Ttft, Duration: m.Duration, Model: a.model.Model,
		HedgeUsage: a.lost, HedgeModel: a.lostModel}}})
	if a.spec.Stage == stagework.StageRanker {
		c.ranked(ctx, a.spec, out)
	}
	c.checkCostCap(ctx)
	c.advance(ctx)
}

// attemptFailed applies the retry policy to a failed attempt.
func (c *coordinator) attemptFailed(ctx actor.Context, a *stageAttempt, m *messages.StageAttemptFailed) {
	if a.worker != nil {
		if a.worker.Address != ctx.Self().Address && m.Kind == "internal" {
			c.avoidHost(a, a.worker.Address) // its node is likely gone
		}
		ctx.Stop(a.worker)
	}
	a.worker = nil
	c.endAttempt(a, m.Kind, m.Message)
	c.deps.metrics.providerErrors.WithLabelValues(a.model.Provider, m.Kind).Inc()
	c.deps.telemetry.AttemptFailed(a.model.Provider, a.model.Model, m.Kind, m.HttpStatus)
	c.logger.Warn("stage attempt failed", "step", a.step, "stage", a.spec.Stage.String(), "attempt", a.number,
		"provider", a.model.Provider, "model", a.model.Model, "kind", m.Kind, "error", m.Message, "tokens_streamed", m.TokensStreamed)
	// A first-token or stall timeout goes to the fallback model at once, if
	// there is one (a model that hung once is likely to hang again).
	retryable := m.Retryable && !(m.Kind == stagework.ErrTimeout.String() && a.spec.Fallback != nil && !a.onFallback)
	d := c.deps.retry.Decide(stagework.Failure{
		Retryable: retryable, RetryAfter: m.GetRetryAfter().AsDuration(),
		AttemptsOnModel: a.onModel, OnFallback: a.onFallback, HasFallback: a.spec.Fallback != nil,
	}, c.rng)
	if d.Action == stagework.ActionFail {
		reason := fmt.Sprintf("%s failed after %d attempts; last error: %s", stepTitle(a.spec), a.number, m.Message)
		c.stepFailed(ctx, a, m.Kind, reason)
		return
	}
	if m.TokensStreamed > 0 {
		void := voidUsage(a)
		c.spend(c.costOf(a.model.Model, void))
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{
			Stage: toMsgStage(a.spec.Stage), Step: a.wireStep, Reason: fmt.Sprintf("%s after %d tokens: %s", m.Kind, m.TokensStreamed, m.Message),
			Usage: void}}})
		a.text.Reset() // void, and billed: a cancel before the retry must not bill it again
	}
	a.whyKind, a.why = attemptRetry, fmt.Sprintf("attempt %d on %s failed (%s): %s", a.number, a.model.Model, m.Kind, m.Message)
	if d.Action == stagework.ActionFallback {
		a.whyKind, a.why = attemptFallback, fmt.Sprintf("%s failed (%s): %s", a.model.Model, m.Kind, m.Message)
		a.model = *a.spec.Fallback
		a.onFallback = true
		a.onModel = 0
		c.spawnWorker(ctx, a)
		return
	}
	if d.Wait <= 0 {
		c.spawnWorker(ctx, a)
		return
	}
	a.retryGen++
	step, gen, self, root := a.step, a.retryGen, ctx.Self(), ctx.ActorSystem().Root
	a.retry = time.AfterFunc(d.Wait, func() { root.Send(self, &retryTick{step: step, gen: gen}) })
}

// stepFailed handles a step whose retries and fallback are spent. A chain's
// stage fails the run; so does a strategy's final step, except a council's
// chairman, whose answer falls back to the best-ranked member's. Any other
// step is left out and named to the steps that read it; the run fails
// only if too few inputs remain for one of them (advance decides).
func (c *coordinator) stepFailed(ctx actor.Context, a *stageAttempt, kind, reason string) {
	if a.spec.Stage.Chain() || (a.spec.Final && a.spec.Stage != stagework.StageChairman) {
		c.fail(ctx, a, kind, reason)
		return
	}
	c.lastFailure = kind
	if a.spec.Stage == stagework.StageChairman {
		c.leaveOut(ctx, a, "failed", reason)
		c.chairmanFallback(ctx, a.spec, reason)
		return
	}
	c.leaveOut(ctx, a, "failed", reason)
	c.advance(ctx)
}

// leaveOut stops a running step and logs that it is left out (billing
// what its cut-off attempt used).
func (c *coordinator) leaveOut(ctx actor.Context, a *stageAttempt, code, reason string) {
	usage := voidUsage(a)
	endSpan(&a.stepSpan, code, reason)
	c.stopAttempt(ctx, a)
	c.removeAttempt(a)
	c.graph.LeaveOut(a.step, reason)
	if usage != nil {
		c.usage = addUsage(c.usage, usage)
		c.spend(c.costOf(a.model.Model, usage))
	}
	c.logger.Info("step left out", "step", a.step, "code", code, "reason", reason)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepSkipped{StepSkipped: &messages.StepSkipped{
		Step: a.step, Stage: toMsgStage(a.spec.Stage), Reason: reason, Code: code, Usage: usage}}})
}

// maxNoteRaw bounds the raw model text a StepNote quotes.
const maxNoteRaw = 2048

// ranked parses a ranker's output into its ranking of the answers it saw,
// logged as a Ranking; one that cannot be parsed is a StepNote with the
// raw text, and that ranker's vote is left out.
func (c *coordinator) ranked(ctx actor.Context, spec stagework.StageSpec, out string) {
	shown, _ := c.graph.Shown(spec.StepID())
	order, err := stagework.ParseRanking(out, len(shown))
	if err != nil {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{
			Step: spec.StepID(), Kind: "ranking_unparsed",
			Message: fmt.Sprintf("%s's ranking could not be read (%v); its vote is left out", spec.StepID(), err),
			Raw:     truncateUTF8(out, maxNoteRaw)}}})
		return
	}
	c.rankings[spec.StepID()] = order
	r := &messages.Ranking{Step: spec.StepID()}
	for place, i := range order {
		r.Ranked = append(r.Ranked, &messages.RankedStep{Step: shown[i].ID, Label: shown[i].Label, AverageRank: float64(place + 1), Votes: 1})
	}
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_Ranking{Ranking: r}})
}

// rankingIndices turns a logged ranker's Ranking back into indices of the
// answers it saw (their labels' order), for a resumed run.
func rankingIndices(r *messages.Ranking) []int {
	out := make([]int, 0, len(r.Ranked))
	for _, e := range r.Ranked {
		for i := 0; i < stagework.MaxParallel; i++ {
			if stagework.Label(i) == e.Label {
				out = append(out, i)
				break
			}
		}
	}
	return out
}

// aggregateRanking is the council's ranking for a chairman (nil for any
// other step): every parsed ranking of the answers, averaged.
func (c *coordinator) aggregateRanking(spec stagework.StageSpec) []stagework.RankEntry {
	if spec.Stage != stagework.StageChairman {
		return nil
	}
	shown, _ := c.graph.Shown(spec.StepID())
	ids, labels := make([]string, len(shown)), make([]string, len(shown))
	for i, s := range shown {
		ids[i], labels[i] = s.ID, s.Label
	}
	var rankings [][]int
	for _, r := range spec.Inputs {
		if order, ok := c.rankings[r]; ok {
			rankings = append(rankings, order)
		}
	}
	if len(rankings) == 0 {
		return nil
	}
	return stagework.AggregateRanking(ids, labels, rankings)
}

// emitAggregateRanking logs the council's ranking as the chairman starts.
func (c *coordinator) emitAggregateRanking(ctx actor.Context, spec stagework.StageSpec) {
	entries := c.aggregateRanking(spec)
	if len(entries) == 0 {
		return
	}
	r := &messages.Ranking{Aggregate: true}
	for _, e := range entries {
		r.Ranked = append(r.Ranked, &messages.RankedStep{Step: e.ID, Label: e.Label, AverageRank: e.AverageRank, Votes: int32(e.Votes)})
	}
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_Ranking{Ranking: r}})
}

// chairmanFallback writes a council's answer when its chairman (and the
// chairman's fallback model) failed: the best-ranked member's answer, or
// the first member's when no ranking could be read.
func (c *coordinator) chairmanFallback(ctx actor.Context, chair stagework.StageSpec, why string) {
	shown, _ := c.graph.Shown(chair.StepID())
	if len(shown) == 0 {
		c.fail(ctx, nil, c.failureCode(), why+"; no member's answer is left to fall back to")
		return
	}
	pick, how := shown[0], "no ranking could be read, so the first member's answer is given"
	if entries := c.aggregateRanking(chair); len(entries) > 0 {
		for _, s := range shown {
			if s.ID == entries[0].ID {
				pick, how = s, fmt.Sprintf("the best-ranked answer (%s, average rank %.2f) is given", s.ID, entries[0].AverageRank)
			}
		}
	}
	note := fmt.Sprintf("the chairman failed (%s); %s", why, how)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{Step: chair.StepID(), Kind: "answer_fallback", Message: note}}})
	c.synthStep(ctx, "answer", stagework.StageTally, "best-ranked:"+pick.ID, note, pick.Text)
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{Answer: pick.Text, Usage: c.usage}}})
}

// tally decides a vote: the judge's pick if it answered and its pick can
// be read, else the majority of the samples' final answers.
func (c *coordinator) tally(ctx actor.Context, spec stagework.StageSpec) {
	shown, _ := c.graph.Shown(spec.StepID())
	texts := make([]string, len(shown))
	for i, s := range shown {
		texts[i] = s.Text
	}
	pick, note := -1, ""
	if spec.Method == stagework.VoteJudge {
		judge := "judge"
		if len(spec.Inputs) > 0 {
			judge = spec.Inputs[0]
		}
		if out, _, ok := c.graph.Output(judge); ok {
			i, err := stagework.ParseChoice(out, len(shown))
			if err == nil {
				pick, note = i, fmt.Sprintf("the judge picked %s (Response %s) as the most consistent", shown[i].ID, shown[i].Label)
			} else {
				c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{
					Step: judge, Kind: "choice_unparsed", Message: fmt.Sprintf("the judge's pick could not be read (%v); the majority decides", err),
					Raw: truncateUTF8(out, maxNoteRaw)}}})
			}
		} else {
			c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StepNote{StepNote: &messages.StepNote{
				Step: judge, Kind: "majority", Message: "the judge gave no answer (" + c.graph.Reason(judge) + "); the majority decides"}}})
		}
	}
	if pick < 0 {
		if w, votes, ok := stagework.Majority(texts); ok {
			answer, _ := stagework.FinalAnswer(texts[w])
			pick, note = w, fmt.Sprintf("majority: %d of %d samples answered %q; %s's answer is given", votes, len(texts), answer, shown[w].ID)
		} else if len(shown) > 0 {
			pick, note = 0, fmt.Sprintf("no sample stated a final answer; %s's answer is given", shown[0].ID)
		}
	}
	if pick < 0 {
		c.fail(ctx, nil, c.failureCode(), "vote: no sample answered")
		return
	}
	c.graph.Start(spec.StepID(), time.Now())
	c.synthStep(ctx, spec.StepID(), stagework.StageTally, spec.Method+":"+shown[pick].ID, note, shown[pick].Text)
}

// synthStep logs a step QLC writes itself, without a model (a vote's
// tally, a council's fallback answer): started, its whole text as one
// delta, completed; it is the run's final step.
func (c *coordinator) synthStep(ctx actor.Context, id string, role stagework.Stage, model, note, text string) {
	stage := toMsgStage(role)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
		Stage: stage, Step: id, Final: true, Model: model, Provider: "qlc", Attempt: 1, Note: note}}})
	if text != "" {
		tokens := int32(0)
		if counter, err := counterFor(model); err == nil {
			tokens = int32(counter.Count(text))
		}
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{Stage: stage, Step: id, Text: text, Tokens: tokens}}})
	}
	c.graph.Finish(id, model, text)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{
		Stage: stage, Step: id, Output: text, Model: model, Duration: durationpb.New(0)}}})
}

// truncateUTF8 cuts s to at most n bytes at a character boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func (c *coordinator) cancel(ctx actor.Context, m *messages.CancelRun) {
	if c.ended || c.run == nil {
		return
	}
	usage, per := c.runningUsage()
	c.stopWorkers(ctx)
	reason := m.Reason
	if reason == "" {
		reason = "cancelled by its owner"
	}
	c.logger.Info("run cancelled", "reason", reason)
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCancelled{RunCancelled: &messages.RunCancelled{Reason: reason, Usage: usage, StepUsage: per}}})
}

// subscribe sends the log from m.FromSeq on to a subscriber and, unless it
// is the run's hub asking for a resend, every later event too.
func (c *coordinator) subscribe(ctx actor.Context, m *messages.Subscribe) {
	to := pidOf(m.Subscriber)
	if to == nil {
		return
	}
	from := m.FromSeq
	if from < 1 {
		from = 1
	}
	if from <= uint64(len(c.log)) {
		ctx.Send(to, &messages.RunEventBatch{Events: c.log[from-1:]})
	}
	if c.ended || to.Equal(c.hub) {
		return
	}
	for _, s := range c.subscribers {
		if s.Equal(to) {
			return // already follows (a resubscribe after a gap)
		}
	}
	if len(c.subscribers) >= maxSubscribers {
		// Refused as a live subscriber: it has the log so far, and is told
		// so (a hub asks again in a while).
		c.logger.Warn("run has too many subscribers; one gets the log so far only", "subscriber", to.String(), "limit", maxSubscribers)
		ctx.Send(to, &messages.Lagged{RunId: c.run.GetRunId(), NextSeq: uint64(len(c.log)) + 1})
		return
	}
	ctx.Watch(to) // a subscriber that stops (its hub evicted, its gateway gone) is removed
	c.subscribers = append(c.subscribers, to)
}

// maxSubscribers bounds a run's live subscribers besides its hub: the hubs
// of other gateways that took readers over (Engine.Attach), one per
// gateway. Beyond it a subscriber gets the log so far and a Lagged.
const maxSubscribers = 64

// unsubscribe removes a subscriber that terminated; false if pid is none.
func (c *coordinator) unsubscribe(pid *actor.PID) bool {
	for i, s := range c.subscribers {
		if s.Equal(pid) {
			c.subscribers = slices.Delete(c.subscribers, i, i+1)
			return true
		}
	}
	return false
}

// fail ends the run with a reason; a is the step that failed (nil when
// the run fails as a whole). Every running step is stopped and billed.
func (c *coordinator) fail(ctx actor.Context, a *stageAttempt, code, reason string) {
	if a != nil {
		endSpan(&a.stepSpan, code, reason) // before stopWorkers ends it as stopped
	}
	usage, per := c.runningUsage()
	c.stopWorkers(ctx)
	ev := &messages.RunFailed{Reason: reason, Code: code, Usage: usage, StepUsage: per}
	if a != nil {
		ev.Stage, ev.Step = toMsgStage(a.spec.Stage), a.wireStep
	}
	c.logger.Warn("run failed", "code", code, "reason", reason)
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunFailed{RunFailed: ev}})
}

// finishLinger is how long a finished coordinator waits for its hub to
// acknowledge the whole log before stopping anyway (the default of
// Config.FinishLinger).
const finishLinger = 10 * time.Second

// keepAfterAck is how long a finished coordinator keeps the log after its
// hub has it all, for a gateway that restarts before it stored the run.
const keepAfterAck = 30 * time.Second

// finish emits the terminal event and stops the workers; the coordinator
// itself stops when the hub acknowledges the whole log (RunEventAck), so it
// can resend what the transport lost, or after finishLinger.
func (c *coordinator) finish(ctx actor.Context, ev *messages.RunEvent) {
	// The run does no more work: its slot is free before anyone sees the
	// end (a client that starts its next run then finds it), and the
	// lingering coordinator holds none.
	c.releaseSlot()
	c.emit(ctx, ev)
	c.ended = true
	c.stopTimers()
	c.stopWorkers(ctx)
	c.endRunSpan(ev)
	if c.hub == nil {
		ctx.Stop(ctx.Self())
		return
	}
	c.endedAt = time.Now()
	c.hostState("ended, waiting for its hub to acknowledge the log")
	c.armLinger(ctx, resendEnd)
}

// armLinger (re)arms the finished coordinator's timer: a lingerTick after d.
func (c *coordinator) armLinger(ctx actor.Context, d time.Duration) {
	if c.linger != nil {
		c.linger.Stop()
	}
	c.lingerGen++
	gen, self, root := c.lingerGen, ctx.Self(), ctx.ActorSystem().Root
	c.linger = time.AfterFunc(d, func() { root.Send(self, &lingerTick{gen: gen}) })
}

// resendEnd is how often a finished coordinator resends its last event to a
// hub that has not acknowledged the whole log.
const resendEnd = 500 * time.Millisecond

// emit numbers an event, logs it, and sends it to the hub and subscribers.
func (c *coordinator) emit(ctx actor.Context, ev *messages.RunEvent) {
	ev.RunId = c.run.RunId
	ev.Seq = uint64(len(c.log)) + 1
	ev.Epoch = c.run.Epoch
	ev.Time = timestamppb.Now()
	c.log = append(c.log, ev)
	if sc := ev.GetStageCompleted(); sc != nil {
		c.deps.metrics.stageDone(sc) // on the node that ran it (the gateway's hub tells its own process)
		if c.deps.runLimit != nil {
			// Time per output token, per model and step: answers and stages
			// of different lengths are not a change of latency.
			per := sc.GetDuration().AsDuration() / time.Duration(1+sc.GetUsage().GetCompletionTokens())
			c.deps.runLimit.SampleFor(sc.GetModel()+"\x00"+sc.GetStep()+"\x00"+sc.GetStage().String(), per, int(c.deps.hosted.Load()))
		}
	}
	if c.hub != nil {
		ctx.Send(c.hub, ev)
	}
	for _, s := range c.subscribers {
		ctx.Send(s, ev)
	}
}

// stopAttempt stops a step's worker, any hedge racing it and its timers.
func (c *coordinator) stopAttempt(ctx actor.Context, a *stageAttempt) {
	if a.worker != nil {
		ctx.Stop(a.worker)
		a.worker = nil
	}
	if a.hedge != nil {
		ctx.Stop(a.hedge)
		a.hedge = nil
	}
	if a.placing != nil {
		c.cancelPlacement(ctx, a, a.placing)
		a.placing = nil
	}
	if a.hedgePlacing != nil {
		c.cancelPlacement(ctx, a, a.hedgePlacing)
		a.hedgePlacing = nil
	}
	c.stopAttemptTimers(a)
	c.endAttemptSpans(a, "stopped")
}

// endAttempt ends the current attempt's span with an error type or an
// outcome (endSpan). A step's first attempt has none: its end is an event
// on the step's span ("qlc.attempt.end", with the attempt's number and the
// error type or outcome), so a retry's or a hedge's reason has its
// counterpart in the trace.
func (c *coordinator) endAttempt(a *stageAttempt, errType, msg string) {
	if a.span != nil && a.span.IsRecording() {
		endSpan(&a.span, errType, msg)
		return
	}
	a.span = nil
	if a.stepSpan == nil || !a.stepSpan.IsRecording() {
		return
	}
	attrs := []attribute.KeyValue{attrAttempt.Int(int(a.number)), attrOutcome.String(msg)}
	if errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
	}
	a.stepSpan.AddEvent("qlc.attempt.end", trace.WithAttributes(attrs...))
}

// endAttemptSpans ends a step's open spans (its attempt's, its hedge's,
// its own) with an outcome that is not an error of theirs.
func (c *coordinator) endAttemptSpans(a *stageAttempt, outcome string) {
	endSpan(&a.span, "", outcome)
	endSpan(&a.hedgeSpan, "", outcome)
	endSpan(&a.stepSpan, "", outcome)
}

// endRunSpan ends the run's span with its terminal event: a failure is
// an error of type its code; usage goes on as the GenAI usage attributes.
func (c *coordinator) endRunSpan(ev *messages.RunEvent) {
	if c.span == nil {
		return
	}
	if c.span.IsRecording() && c.usage != nil {
		c.span.SetAttributes(semconv.GenAIUsageInputTokens(int(c.usage.PromptTokens)), semconv.GenAIUsageOutputTokens(int(c.usage.CompletionTokens)))
	}
	switch {
	case ev.GetRunFailed() != nil:
		endSpan(&c.span, ev.GetRunFailed().Code, ev.GetRunFailed().Reason)
	case ev.GetRunCancelled() != nil:
		endSpan(&c.span, "", "cancelled")
	default:
		endSpan(&c.span, "", "completed")
	}
}

func (c *coordinator) stopAttemptTimers(a *stageAttempt) {
	if a.hedgeTimer != nil {
		a.hedgeTimer.Stop()
		a.hedgeTimer = nil
	}
	if a.retry != nil {
		a.retry.Stop()
		a.retry = nil
	}
	a.retryGen++
}

// stopWorkers stops every running step's worker and hedge (a cancel must
// stop every provider request at once).
func (c *coordinator) stopWorkers(ctx actor.Context) {
	for _, a := range c.running {
		c.stopAttempt(ctx, a)
	}
}

func (c *coordinator) stopTimers() {
	for _, a := range c.running {
		c.stopAttemptTimers(a)
	}
	if c.deadline != nil {
		c.deadline.Stop()
		c.deadline = nil
	}
	c.deadlineGen++
}

func history(o *messages.RunOptions) []stagework.Message {
	h := make([]stagework.Message, 0, len(o.GetHistory()))
	for _, m := range o.GetHistory() {
		h = append(h, stagework.Message{Role: m.Role, Content: m.Content})
	}
	return h
}

// runningUsage is what the running steps have used so far, billed when
// they are cut off together (cancel, a failed run): the sum, and each
// step's share when more than one step used something; nil when none ran.
func (c *coordinator) runningUsage() (*messages.Usage, []*messages.StepUsage) {
	var u *messages.Usage
	var per []*messages.StepUsage
	for _, a := range c.running {
		if v := voidUsage(a); v != nil {
			u = addUsage(u, v)
			per = append(per, &messages.StepUsage{Step: a.step, Stage: toMsgStage(a.spec.Stage), Usage: v})
		}
	}
	if len(per) < 2 {
		per = nil
	}
	return u, per
}

// voidUsage is what a step's current attempt has used so far — its prompt
// and the text it streamed — billed when the attempt is cut off
// (restarted, cancelled, failed, left out), since its provider then
// reports no usage. Nil when no attempt is under way. Counting happens
// here, off the token path.
func voidUsage(a *stageAttempt) *messages.Usage {
	if a == nil || a.bill.counter == nil || (a.worker == nil && a.text.Len() == 0) {
		return nil
	}
	prompt := a.bill.tokens
	if prompt == 0 {
		prompt = int64(stagework.PromptTokens(a.bill.prompt, a.bill.counter))
	}
	completion := int64(a.bill.counter.Count(a.text.String()))
	return &messages.Usage{PromptTokens: prompt, CompletionTokens: completion, TotalTokens: prompt + completion, Estimated: true}
}

// movedUsage bills the attempt a failover interrupted: the tokens it
// streamed, and its prompt if it was counted (the prompt itself died with
// the old coordinator).
func movedUsage(started *messages.StageStarted, text string) *messages.Usage {
	if started == nil {
		return nil
	}
	completion := int64(0)
	if counter, err := counterFor(started.Model); err == nil {
		completion = int64(counter.Count(text))
	}
	return &messages.Usage{PromptTokens: started.PromptTokens, CompletionTokens: completion,
		TotalTokens: started.PromptTokens + completion, Estimated: true}
}
