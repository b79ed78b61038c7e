package actors

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// stageHostName is the well-known name of every process's stage host.
const stageHostName = "qlc-stage-host"

// stageHost runs steps for coordinators on any node: a StartStep becomes a
// stage worker here, if a stage slot is free (the process's stage attempts
// are bounded and shared fairly among tenants, like run slots). A host at
// capacity refuses (busy: the coordinator offers the step to another
// node) or, when asked to, queues the step until a slot frees. The
// workers are its children: a worker's end frees its slot.
type stageHost struct {
	deps    *coordinatorDeps
	waiting map[string]*messages.StartStep // by stepKey, queued for a slot
	running map[string]*messages.StartStep // by worker PID id
}

// stepGranted is the stage slots' word that a queued step holds a slot
// (never leaves the host's mailbox).
type stepGranted struct{ key string }

// stepKey names one attempt of one step in the stage slots.
func stepKey(run, step string, attempt int32, role string) string {
	return run + "/" + step + "/" + strconv.Itoa(int(attempt)) + "/" + role
}

func newStageHost(deps *coordinatorDeps) actor.Actor {
	return &stageHost{deps: deps, waiting: map[string]*messages.StartStep{}, running: map[string]*messages.StartStep{}}
}

func (h *stageHost) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.StartStep:
		h.startStep(ctx, m)
	case *stepGranted:
		if m2 := h.waiting[m.key]; m2 != nil {
			delete(h.waiting, m.key)
			h.spawn(ctx, m2)
		}
	case *messages.CancelStep:
		key := stepKey(m.RunId, m.Step, m.Attempt, m.Role)
		if _, ok := h.waiting[key]; ok {
			delete(h.waiting, key)
			h.deps.stageWaits.done(key, time.Now(), false)
			h.deps.stageSlots.release(m.Tenant, key)
		}
	case *actor.Terminated:
		if m2 := h.running[m.Who.Id]; m2 != nil {
			delete(h.running, m.Who.Id)
			key := stepKey(m2.RunId, m2.Step, m2.Attempt, m2.Role)
			h.deps.stageWaits.done(key, time.Now(), false) // stopped before it ran (normally a no-op)
			h.deps.stageSlots.release(m2.Tenant, key)
		}
	case stopHosted:
		for _, c := range ctx.Children() {
			ctx.Stop(c)
		}
	}
}

func (h *stageHost) refuse(ctx actor.Context, m *messages.StartStep, busy bool, reason string) {
	if busy {
		h.deps.metrics.stepOffers.WithLabelValues("busy").Inc()
	} else {
		h.deps.metrics.stepOffers.WithLabelValues("refused").Inc()
	}
	if to := pidOf(m.Coordinator); to != nil {
		ctx.Send(to, &messages.StepRefused{Step: m.Step, Attempt: m.Attempt, Role: m.Role, Busy: busy, Reason: reason, Load: h.deps.ackLoad()})
	}
}

func (h *stageHost) startStep(ctx actor.Context, m *messages.StartStep) {
	switch {
	case h.deps.draining.Load():
		h.refuse(ctx, m, false, "node is draining")
		return
	case pidOf(m.Coordinator) == nil:
		return
	}
	if _, ok := h.deps.cat.providers()[m.Provider]; !ok {
		h.refuse(ctx, m, false, fmt.Sprintf("provider %q is not configured on this node", m.Provider))
		return
	}
	key := stepKey(m.RunId, m.Step, m.Attempt, m.Role)
	self, root := ctx.Self(), ctx.ActorSystem().Root
	waits := h.deps.stageWaits
	if h.deps.stageSlots.acquire(m.Tenant, max(m.Weight, 1), key, func() {
		waits.wait(key, time.Now()) // it holds a slot: from now on, its wait to start counts
		root.Send(self, &stepGranted{key: key})
	}) {
		h.spawn(ctx, m)
		return
	}
	if !m.Queue {
		h.deps.stageSlots.release(m.Tenant, key) // leaves the queue: another node may be free
		h.refuse(ctx, m, true, fmt.Sprintf("node is at its stage attempt capacity (%d running, limit %d)",
			h.deps.stageSlots.inUse(), h.deps.stageSlots.capacityNow()))
		return
	}
	h.waiting[key] = m
	h.deps.metrics.stepOffers.WithLabelValues("queued").Inc()
	ctx.Send(pidOf(m.Coordinator), &messages.StepAccepted{Step: m.Step, Attempt: m.Attempt, Role: m.Role, Queued: true})
}

// spawn starts the step's worker, which reports straight to its
// coordinator.
func (h *stageHost) spawn(ctx actor.Context, m *messages.StartStep) {
	key := stepKey(m.RunId, m.Step, m.Attempt, m.Role)
	waits := h.deps.stageWaits
	waits.start(key, time.Now())
	fail := func(reason string) {
		waits.done(key, time.Now(), false)
		h.deps.stageSlots.release(m.Tenant, key)
		h.refuse(ctx, m, false, reason)
	}
	prov := h.deps.cat.providers()[m.Provider]
	counter, err := counterFor(m.Model)
	if err != nil {
		fail("token counter: " + err.Error())
		return
	}
	msgs := make([]stagework.Message, len(m.Messages))
	for i, c := range m.Messages {
		msgs[i] = stagework.Message{Role: c.Role, Content: c.Content}
	}
	apiKey, err := openProviderKey(h.deps.secrets, m.Tenant, m.ProviderKey)
	if err != nil {
		fail(err.Error())
		return
	}
	w := &stageWorker{provider: prov, stage: m.Stage, step: m.Step, attempt: m.Attempt, coordinator: pidOf(m.Coordinator),
		timeouts: h.deps.timeouts, counter: counter,
		req: stagework.Request{Model: m.Model, Messages: msgs, Temperature: m.Temperature, MaxTokens: int(m.MaxTokens),
			Seed: m.Seed, Stage: toWorkStage(m.Stage), Query: m.Query, APIKey: apiKey},
		accept:   &messages.StepAccepted{Step: m.Step, Attempt: m.Attempt, Role: m.Role},
		started:  func() { waits.done(key, time.Now(), true) },
		traceCtx: tracing.Extract(context.Background(), m.TraceContext)}
	w.promptTokens.Store(m.PromptTokens)
	pid, err := ctx.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return w }, actor.WithDispatcher(h.deps.dispatcher)), key)
	if err != nil {
		fail("cannot start stage worker: " + err.Error())
		return
	}
	h.running[pid.Id] = m
	h.deps.metrics.stepOffers.WithLabelValues("started").Inc()
}
