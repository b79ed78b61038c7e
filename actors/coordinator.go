package actors

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// coordinatorDeps is what every coordinator on a node shares.
type coordinatorDeps struct {
	draining atomic.Bool  // refuse new runs (the node is leaving)
	hosted   atomic.Int64 // coordinators running on this process
	slots    *runSlots    // the process's run slots: runs start in weighted-fair order per tenant

	stages    *stagework.Config
	providers map[string]stagework.Provider
	retry     stagework.RetryPolicy
	timeouts  Timeouts
	ttft      ttftStats     // recent TTFTs per endpoint model (hedging)
	hedgeWait time.Duration // hedge delay before there are enough TTFT samples
	metrics   *Metrics
	logger    *slog.Logger
}

// retryTick is a coordinator's timer to itself (never leaves its mailbox):
// the backoff before a retry is over.
type retryTick struct{ gen int }

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
		c.logger.Debug("run waits for a run slot", "tenant", c.run.Tenant)
		return
	}
	c.slot = slotHeld
	c.nextStage(ctx)
}

// releaseSlot gives the run's slot back, or leaves the queue; once.
func (c *coordinator) releaseSlot() {
	if c.slot == slotWaiting || c.slot == slotHeld {
		c.deps.slots.release(c.run.Tenant, c.slotKey)
	}
	c.slot = slotReleased
}

// coordinator is the RunCoordinator of one run.
type coordinator struct {
	deps    *coordinatorDeps
	run     *messages.StartRun
	profile *stagework.Profile
	hub     *actor.PID
	logger  *slog.Logger
	rng     *rand.Rand

	log         []*messages.RunEvent // the run's log; log[i].Seq == i+1
	subscribers []*actor.PID         // Subscribe-rs, sent every new event
	stageIdx    int                  // index into profile.Stages of the current stage
	outputs     map[stagework.Stage]string
	usage       *messages.Usage
	cur         *stageAttempt
	ended       bool
	counted     bool      // counted in deps.hosted
	acked       bool      // the hub acknowledged the whole, finished log
	endedAt     time.Time // when the terminal event was logged (resends stop finishLinger after)
	slot        slotState
	slotKey     string // the run's key in deps.slots
	timer       *time.Timer
	timerGen    int
}

// stageAttempt is the state of the current stage.
type stageAttempt struct {
	spec       stagework.StageSpec
	model      stagework.ModelRef // what this attempt runs on
	number     int32              // attempt number within the stage, from 1
	onModel    int                // attempts made on model, this one included
	onFallback bool
	worker     *actor.PID // nil while waiting for a retry
	hedge      *actor.PID // a hedge on the fallback racing the primary, until one streams
	hedgeTimer *time.Timer
	started    time.Time // when the primary of this attempt started (TTFT)
	text       strings.Builder
	tokens     int32
	bill       attemptPrompt // the current worker's prompt, to bill a void attempt
	hedgeBill  attemptPrompt // the hedge's, until it wins
}

// attemptPrompt is what an attempt sent its model, kept to bill the attempt
// if it is cut off (its usage then never comes from the provider).
type attemptPrompt struct {
	prompt  []stagework.Message
	tokens  int64 // counted when fitted to a context window; 0: not counted yet
	counter stagework.TokenCounter
}

func newCoordinator(deps *coordinatorDeps) actor.Actor {
	return &coordinator{deps: deps, logger: deps.logger, outputs: map[stagework.Stage]string{}}
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
				c.fail(ctx, messages.Stage_STAGE_UNSPECIFIED, "internal", fmt.Sprintf("internal error: %v", r))
			} else {
				ctx.Stop(ctx.Self())
			}
		}
	}()
	switch m := ctx.Message().(type) {
	case *messages.StartRun:
		c.start(ctx, m)
	case *messages.TokenDelta:
		if c.isCurrent(ctx.Sender()) {
			c.settleHedge(ctx, ctx.Sender())
			c.delta(ctx, m)
		}
	case *messages.TokenDeltaBatch:
		if c.isCurrent(ctx.Sender()) {
			c.settleHedge(ctx, ctx.Sender())
			c.deltas(ctx, m.Deltas)
		}
	case *messages.StageAttemptDone:
		if c.isCurrent(ctx.Sender()) {
			c.settleHedge(ctx, ctx.Sender())
			c.stageDone(ctx, m)
		}
	case *messages.StageAttemptFailed:
		if c.isCurrent(ctx.Sender()) && !c.hedgeLoses(ctx, ctx.Sender()) {
			c.attemptFailed(ctx, m)
		}
	case *hedgeTick:
		c.startHedge(ctx, m.attempt)
	case *actor.Terminated:
		if c.unsubscribe(m.Who) {
			return
		}
		if c.isCurrent(m.Who) && !c.hedgeLoses(ctx, m.Who) {
			c.attemptFailed(ctx, &messages.StageAttemptFailed{
				Stage: toMsgStage(c.cur.spec.Stage), Attempt: c.cur.number, Kind: "internal",
				Message: "stage worker stopped unexpectedly", Retryable: true,
				TokensStreamed: c.cur.tokens, Provider: c.cur.model.Provider,
			})
		}
	case *retryTick:
		if m.gen == c.timerGen && !c.ended && c.cur != nil && c.cur.worker == nil {
			c.spawnWorker(ctx)
		}
	case *slotGranted:
		if c.slot == slotWaiting && !c.ended {
			c.slot = slotHeld
			c.nextStage(ctx)
		}
	case *messages.CancelRun:
		c.cancel(ctx, m)
	case *messages.RunEventAck:
		if c.ended && !c.acked && m.Seq >= uint64(len(c.log)) {
			// The hub has the whole log. Keep it a while longer anyway, not
			// counted as hosted work: a gateway that dies before it has
			// stored the finished run can still find it here (FindRun).
			c.acked = true
			if c.counted {
				c.counted = false
				c.deps.hosted.Add(-1)
			}
			ctx.SetReceiveTimeout(keepAfterAck)
		}
	case *actor.ReceiveTimeout:
		if c.ended {
			if !c.acked && time.Since(c.endedAt) < finishLinger && c.hub != nil {
				// The transport is at most once: the end, or events before
				// it, may be lost (an endpoint reset when a falsely fenced
				// gateway rejoins). The last event again makes the hub see
				// the gap and ask for the rest, or acknowledge again.
				ctx.Send(c.hub, c.log[len(c.log)-1])
				return
			}
			if !c.acked {
				c.logger.Warn("run's hub never acknowledged the end of the log; stopping", "last_seq", len(c.log))
			}
			ctx.Stop(ctx.Self())
		}
	case *messages.Subscribe:
		c.subscribe(ctx, m)
	case *messages.FindRun:
		if c.run == nil {
			ctx.Respond(&messages.RunFound{})
			return
		}
		st := proto.Clone(c.run).(*messages.StartRun)
		st.PriorEvents = nil
		ctx.Respond(&messages.RunFound{Start: st, Coordinator: refOf(ctx.Self())})
		if m.Subscriber != nil {
			c.subscribe(ctx, &messages.Subscribe{RunId: m.RunId, FromSeq: 1, Subscriber: m.Subscriber})
		}
	case *actor.Stopping:
		c.ended = true // a stopping coordinator starts nothing new
		c.stopTimer()
		c.releaseSlot()
		if c.counted {
			c.counted = false
			c.deps.hosted.Add(-1)
		}
	}
}

func (c *coordinator) isCurrent(pid *actor.PID) bool {
	if c.ended || c.cur == nil || pid == nil {
		return false
	}
	return (c.cur.worker != nil && pid.Equal(c.cur.worker)) || (c.cur.hedge != nil && pid.Equal(c.cur.hedge))
}

// settleHedge decides a hedge race when one side (from) streams or ends:
// from wins. A winning hedge becomes the stage's attempt, announced by its
// own StageStarted; the loser is stopped. won says whether from is still
// the current worker afterwards.
func (c *coordinator) settleHedge(ctx actor.Context, from *actor.PID) {
	a := c.cur
	if a.hedgeTimer != nil {
		a.hedgeTimer.Stop()
		a.hedgeTimer = nil
	}
	if a.hedge == nil {
		return
	}
	if from.Equal(a.hedge) {
		ctx.Stop(a.worker)
		a.worker, a.hedge = a.hedge, nil
		a.bill = a.hedgeBill
		a.model, a.onFallback, a.onModel = *a.spec.Fallback, true, 1
		a.number++
		c.deps.metrics.hedges.WithLabelValues("won").Inc()
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
			Stage: toMsgStage(a.spec.Stage), Model: a.model.Model, Provider: a.model.Provider, Attempt: a.number, Fallback: true,
			Note: "hedged: the primary sent no first token within its recent p95; the fallback streamed first"}}})
		return
	}
	ctx.Stop(a.hedge)
	a.hedge = nil
	c.deps.metrics.hedges.WithLabelValues("lost").Inc()
}

// start takes a StartRun: a new run, or a resumed one whose prior log says
// which stages are finished.
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
	c.counted = true
	c.deps.hosted.Add(1)
	c.deps.metrics.coordinators.Inc()
	c.hub = pidOf(m.Hub)
	c.logger = c.deps.logger.With("run_id", m.RunId)
	seed := uint64(m.GetOptions().GetSeed())
	c.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	profile, err := c.deps.stages.Profile(m.Profile)
	if err != nil {
		if ctx.Sender() != nil {
			ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Error: err.Error()})
		}
		ctx.Stop(ctx.Self())
		return
	}
	c.profile = profile
	if ctx.Sender() != nil {
		ctx.Respond(&messages.StartRunAck{RunId: m.RunId, Coordinator: refOf(ctx.Self())})
	}

	// Rebuild from the prior log: finished stages are kept, an interrupted
	// one is redone after a StageRestarted.
	c.log = append(c.log, m.PriorEvents...)
	var interrupted messages.Stage
	var void *messages.StageStarted // the interrupted attempt
	var voidText strings.Builder    // and what it streamed
	for _, ev := range m.PriorEvents {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			interrupted = k.StageStarted.Stage
			void = k.StageStarted
			voidText.Reset()
		case *messages.RunEvent_TokenDelta:
			voidText.WriteString(k.TokenDelta.Text)
		case *messages.RunEvent_StageRestarted:
			voidText.Reset()
		case *messages.RunEvent_StageCompleted:
			c.outputs[toWorkStage(k.StageCompleted.Stage)] = k.StageCompleted.Output
			c.usage = addUsage(c.usage, k.StageCompleted.Usage)
			interrupted = messages.Stage_STAGE_UNSPECIFIED
		}
		if isTerminal(ev) {
			c.ended = true
		}
	}
	if c.ended {
		ctx.Stop(ctx.Self())
		return
	}
	c.logger.Info("run started", "profile", m.Profile, "epoch", m.Epoch, "resumed_at_seq", len(c.log))
	if interrupted != messages.Stage_STAGE_UNSPECIFIED {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{
			Stage: interrupted, Reason: "coordinator moved to another node; the stage is redone",
			Usage: movedUsage(void, voidText.String())}}})
	}
	c.admit(ctx)
}

// nextStage starts the first stage without output, or completes the run.
func (c *coordinator) nextStage(ctx actor.Context) {
	for c.stageIdx < len(c.profile.Stages) {
		spec := c.profile.Stages[c.stageIdx]
		if _, done := c.outputs[spec.Stage]; !done {
			c.cur = &stageAttempt{spec: spec, model: stagework.ModelRef{Provider: spec.Provider, Model: spec.Model}}
			c.spawnWorker(ctx)
			return
		}
		c.stageIdx++
	}
	answer := ""
	if n := len(c.profile.Stages); n > 0 {
		answer = c.outputs[c.profile.Stages[n-1].Stage]
	}
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{Answer: answer, Usage: c.usage}}})
}

// spawnWorker opens a new attempt of the current stage.
func (c *coordinator) spawnWorker(ctx actor.Context) {
	a := c.cur
	a.number++
	a.onModel++
	a.text.Reset()
	a.tokens = 0
	a.started = time.Now()
	pid, ok := c.startWorker(ctx, a.model, a.number, "")
	if !ok {
		return
	}
	a.worker = pid
	if a.spec.Hedge && a.spec.Fallback != nil && !a.onFallback {
		wait := c.deps.ttft.p95(a.model.Provider+"/"+a.model.Model, c.deps.hedgeWait)
		gen, self, root := a.number, ctx.Self(), ctx.ActorSystem().Root
		a.hedgeTimer = time.AfterFunc(wait, func() { root.Send(self, &hedgeTick{attempt: gen}) })
	}
}

// startWorker fits the prompt for model, announces the attempt (unless it
// is a hedge, announced only if it wins) and spawns its worker. On failure
// it has failed the run and returns false.
func (c *coordinator) startWorker(ctx actor.Context, model stagework.ModelRef, number int32, role string) (*actor.PID, bool) {
	a := c.cur
	stage := toMsgStage(a.spec.Stage)
	prov, ok := c.deps.providers[model.Provider]
	if !ok {
		c.fail(ctx, stage, "bad_profile", fmt.Sprintf("%s: provider %q is not configured on this node", a.spec.Stage, model.Provider))
		return nil, false
	}
	maxTokens := a.spec.MaxTokens
	if mt := int(c.run.GetOptions().GetMaxTokens()); mt > 0 {
		maxTokens = mt
	}
	// Fit the prompt into this model's context window, trimming earlier
	// stages' outputs (never the question) if it must.
	spec := a.spec
	spec.Model, spec.MaxTokens = model.Model, maxTokens
	counter, err := counterFor(spec.Model)
	if err != nil {
		c.fail(ctx, stage, "internal", fmt.Sprintf("%s: token counter: %v", a.spec.Stage, err))
		return nil, false
	}
	in := stagework.PromptInput{Query: c.run.Query, History: history(c.run.GetOptions()), Outputs: c.outputs}
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
		prompt, promptTokens, notes, err = stagework.FitPrompt(spec, in, window, counter)
		switch {
		case errors.Is(err, stagework.ErrPromptTooLong):
			c.fail(ctx, stage, "prompt_too_long", fmt.Sprintf("%s: %v", a.spec.Stage.Title(), err))
			return nil, false
		case err != nil:
			c.fail(ctx, stage, "bad_profile", fmt.Sprintf("%s: %v", a.spec.Stage, err))
			return nil, false
		}
	}
	req := stagework.Request{
		Model: model.Model, Messages: prompt, Temperature: a.spec.Temperature, MaxTokens: maxTokens,
		// Each attempt gets its own seed so a simulated fault is not replayed
		// identically on every retry; the sequence stays deterministic.
		Seed:  c.run.GetOptions().GetSeed() + int64(a.spec.Stage)*7919 + int64(number-1)*1000003,
		Stage: a.spec.Stage, Query: c.run.Query,
	}
	w := &stageWorker{provider: prov, req: req, stage: stage, attempt: number, coordinator: ctx.Self(),
		timeouts: c.deps.timeouts, counter: counter}
	w.promptTokens.Store(int64(promptTokens))
	name := fmt.Sprintf("%s-%d", a.spec.Stage, number)
	if role != "" {
		name += "-" + role
	}
	pid, spawnErr := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return w }), name)
	if countLater {
		// The worker's deltas queue behind this message: StageStarted
		// still comes first in the log.
		promptTokens = stagework.PromptTokens(prompt, counter)
		w.promptTokens.Store(int64(promptTokens))
	}
	if role == "" {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageStarted{StageStarted: &messages.StageStarted{
			Stage: stage, Model: model.Model, Provider: model.Provider, Attempt: number, Fallback: a.onFallback,
			Note: strings.Join(notes, "; "), PromptTokens: int64(promptTokens)}}})
	}
	bill := attemptPrompt{prompt: prompt, tokens: int64(promptTokens), counter: counter}
	if role == "" {
		a.bill = bill
	} else {
		a.hedgeBill = bill
	}
	if spawnErr != nil {
		c.fail(ctx, stage, "internal", fmt.Sprintf("%s: cannot start stage worker: %v", a.spec.Stage, spawnErr))
		return nil, false
	}
	return pid, true
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
func (c *coordinator) hedgeLoses(ctx actor.Context, failed *actor.PID) bool {
	a := c.cur
	if a.hedge == nil {
		return false
	}
	if failed.Equal(a.hedge) {
		ctx.Stop(a.hedge)
		a.hedge = nil
		c.deps.metrics.hedges.WithLabelValues("failed").Inc()
		return true
	}
	// The primary failed first: the hedge is the attempt now.
	c.settleHedge(ctx, a.hedge)
	return true
}

// startHedge starts the fallback beside a primary that has not streamed.
func (c *coordinator) startHedge(ctx actor.Context, attempt int32) {
	a := c.cur
	if c.ended || a == nil || a.number != attempt || a.worker == nil || a.hedge != nil || a.tokens > 0 || a.onFallback {
		return
	}
	a.hedgeTimer = nil
	pid, ok := c.startWorker(ctx, *a.spec.Fallback, a.number+1, "hedge")
	if ok {
		a.hedge = pid
		c.deps.metrics.hedges.WithLabelValues("started").Inc()
	}
}

func (c *coordinator) delta(ctx actor.Context, m *messages.TokenDelta) {
	c.cur.text.WriteString(m.Text)
	c.cur.tokens += m.Tokens
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_TokenDelta{TokenDelta: m}})
}

// deltas logs a batch of deltas and sends them on as one RunEventBatch.
func (c *coordinator) deltas(ctx actor.Context, ds []*messages.TokenDelta) {
	now := timestamppb.Now()
	evs := make([]*messages.RunEvent, len(ds))
	for i, d := range ds {
		c.cur.text.WriteString(d.Text)
		c.cur.tokens += d.Tokens
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

func (c *coordinator) stageDone(ctx actor.Context, m *messages.StageAttemptDone) {
	a := c.cur
	ctx.Stop(a.worker)
	a.worker = nil
	if ttft := m.GetTtft().AsDuration(); ttft > 0 {
		c.deps.ttft.observe(a.model.Provider+"/"+a.model.Model, ttft)
	}
	out := a.text.String()
	c.outputs[a.spec.Stage] = out
	c.usage = addUsage(c.usage, m.Usage)
	c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageCompleted{StageCompleted: &messages.StageCompleted{
		Stage: toMsgStage(a.spec.Stage), Output: out, Usage: m.Usage, Ttft: m.Ttft, Duration: m.Duration, Model: a.model.Model}}})
	c.cur = nil
	c.stageIdx++
	c.nextStage(ctx)
}

// attemptFailed applies the retry policy to a failed attempt.
func (c *coordinator) attemptFailed(ctx actor.Context, m *messages.StageAttemptFailed) {
	a := c.cur
	ctx.Stop(a.worker)
	a.worker = nil
	c.deps.metrics.providerErrors.WithLabelValues(a.model.Provider, m.Kind).Inc()
	c.logger.Warn("stage attempt failed", "stage", a.spec.Stage.String(), "attempt", a.number,
		"provider", a.model.Provider, "model", a.model.Model, "kind", m.Kind, "error", m.Message, "tokens_streamed", m.TokensStreamed)
	// A first-token or stall timeout goes to the fallback model at once, if
	// there is one (a model that hung once is likely to hang again).
	retryable := m.Retryable && !(m.Kind == stagework.ErrTimeout.String() && a.spec.Fallback != nil && !a.onFallback)
	d := c.deps.retry.Decide(stagework.Failure{
		Retryable: retryable, RetryAfter: m.GetRetryAfter().AsDuration(),
		AttemptsOnModel: a.onModel, OnFallback: a.onFallback, HasFallback: a.spec.Fallback != nil,
	}, c.rng)
	if d.Action == stagework.ActionFail {
		c.fail(ctx, toMsgStage(a.spec.Stage), m.Kind, fmt.Sprintf("%s failed after %d attempts; last error: %s", a.spec.Stage.Title(), a.number, m.Message))
		return
	}
	if m.TokensStreamed > 0 {
		c.emit(ctx, &messages.RunEvent{Kind: &messages.RunEvent_StageRestarted{StageRestarted: &messages.StageRestarted{
			Stage: toMsgStage(a.spec.Stage), Reason: fmt.Sprintf("%s after %d tokens: %s", m.Kind, m.TokensStreamed, m.Message),
			Usage: c.voidUsage()}}})
		a.text.Reset() // void, and billed: a cancel before the retry must not bill it again
	}
	if d.Action == stagework.ActionFallback {
		a.model = *a.spec.Fallback
		a.onFallback = true
		a.onModel = 0
		c.spawnWorker(ctx)
		return
	}
	if d.Wait <= 0 {
		c.spawnWorker(ctx)
		return
	}
	c.timerGen++
	gen, self, root := c.timerGen, ctx.Self(), ctx.ActorSystem().Root
	c.timer = time.AfterFunc(d.Wait, func() { root.Send(self, &retryTick{gen: gen}) })
}

func (c *coordinator) cancel(ctx actor.Context, m *messages.CancelRun) {
	if c.ended || c.run == nil {
		return
	}
	usage := c.voidUsage()
	c.stopWorkers(ctx)
	reason := m.Reason
	if reason == "" {
		reason = "cancelled by its owner"
	}
	c.logger.Info("run cancelled", "reason", reason)
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCancelled{RunCancelled: &messages.RunCancelled{Reason: reason, Usage: usage}}})
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

func (c *coordinator) fail(ctx actor.Context, stage messages.Stage, code, reason string) {
	usage := c.voidUsage()
	c.stopWorkers(ctx)
	c.logger.Warn("run failed", "code", code, "reason", reason)
	c.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Reason: reason, Stage: stage, Code: code, Usage: usage}}})
}

// finishLinger is how long a finished coordinator waits for its hub to
// acknowledge the whole log before stopping anyway.
const finishLinger = 10 * time.Second

// keepAfterAck is how long a finished coordinator keeps the log after its
// hub has it all, for a gateway that restarts before it stored the run.
const keepAfterAck = 30 * time.Second

// finish emits the terminal event and stops the worker; the coordinator
// itself stops when the hub acknowledges the whole log (RunEventAck), so it
// can resend what the transport lost, or after finishLinger.
func (c *coordinator) finish(ctx actor.Context, ev *messages.RunEvent) {
	// The run does no more work: its slot is free before anyone sees the
	// end (a client that starts its next run then finds it), and the
	// lingering coordinator holds none.
	c.releaseSlot()
	c.emit(ctx, ev)
	c.ended = true
	c.stopTimer()
	c.stopWorkers(ctx)
	if c.hub == nil {
		ctx.Stop(ctx.Self())
		return
	}
	c.endedAt = time.Now()
	ctx.SetReceiveTimeout(resendEnd)
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
	if c.hub != nil {
		ctx.Send(c.hub, ev)
	}
	for _, s := range c.subscribers {
		ctx.Send(s, ev)
	}
}

// stopWorkers stops the current attempt's worker and any hedge racing it
// (a cancel must stop every provider request at once).
func (c *coordinator) stopWorkers(ctx actor.Context) {
	if c.cur == nil {
		return
	}
	if c.cur.worker != nil {
		ctx.Stop(c.cur.worker)
		c.cur.worker = nil
	}
	if c.cur.hedge != nil {
		ctx.Stop(c.cur.hedge)
		c.cur.hedge = nil
	}
	if c.cur.hedgeTimer != nil {
		c.cur.hedgeTimer.Stop()
		c.cur.hedgeTimer = nil
	}
}

func (c *coordinator) stopTimer() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.timerGen++
}

func history(o *messages.RunOptions) []stagework.Message {
	h := make([]stagework.Message, 0, len(o.GetHistory()))
	for _, m := range o.GetHistory() {
		h = append(h, stagework.Message{Role: m.Role, Content: m.Content})
	}
	return h
}

// voidUsage is what the current stage attempt has used so far — its prompt
// and the text it streamed — billed when the attempt is cut off (restarted,
// cancelled, failed), since its provider then reports no usage. Nil when no
// attempt is under way. Counting happens here, off the token path.
func (c *coordinator) voidUsage() *messages.Usage {
	a := c.cur
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
