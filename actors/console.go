package actors

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// What the cluster console (gateway: GET /console) asks of each process:
// the numbers only that process knows (its runs, stage attempts, mailbox
// depths, breakers: ConsoleQuery) and the spans of one trace from its
// in-process span store (TraceSpansQuery). Both are answered by the run
// starter, like ModelStatsQuery: one round trip per node, only when asked.

// maxConsoleRuns bounds the hosted runs one ConsoleReply lists.
const maxConsoleRuns = 64

// consoleReply is this process's ConsoleReply. It reads atomics and short
// locks only: the run starter calls it in its Receive.
func (e *Engine) consoleReply() *messages.ConsoleReply {
	r := &messages.ConsoleReply{Node: e.Address(), Hosted: int32(e.deps.hosted.Load()), MailboxDepth: map[string]int64{}}
	e.deps.hostedRuns.Range(func(k, v any) bool {
		h := v.(*hostedRun)
		id, epoch, _ := strings.Cut(k.(string), "@")
		ep, _ := strconv.ParseUint(epoch, 10, 64)
		r.Runs = append(r.Runs, &messages.ConsoleHostedRun{RunId: id, Epoch: ep, State: *h.state.Load(), Since: timestamppb.New(h.since)})
		return true
	})
	slices.SortFunc(r.Runs, func(a, b *messages.ConsoleHostedRun) int { return a.Since.AsTime().Compare(b.Since.AsTime()) })
	if len(r.Runs) > maxConsoleRuns {
		r.Runs = r.Runs[:maxConsoleRuns]
	}
	st := e.deps.stageSlots.stats()
	r.AttemptsRunning, r.AttemptsWaiting = int32(st.Running), int32(st.Waiting)
	rs := e.deps.slots.stats()
	r.RunSlotsInUse, r.RunsWaiting = int32(rs.Running), int32(rs.Waiting)
	for _, m := range e.deps.telemetry.Snapshot() {
		r.AttemptsTotal += m.Attempts
		r.AttemptsFailed += m.Attempts - m.Succeeded
	}
	q := e.metrics.mailboxQueued
	q.mu.Lock()
	for k, c := range q.kinds {
		r.MailboxDepth[k] = max(c.Load(), 0)
	}
	q.mu.Unlock()
	for name, p := range e.cat.providers() {
		if g, ok := p.(*stagework.Guarded); ok {
			r.Breakers = append(r.Breakers, &messages.ConsoleBreaker{Endpoint: name, State: g.State().String()})
		}
	}
	slices.SortFunc(r.Breakers, func(a, b *messages.ConsoleBreaker) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return r
}

// traceSpansReply is this process's TraceSpansReply.
func (e *Engine) traceSpansReply(traceID string) *messages.TraceSpansReply {
	r := &messages.TraceSpansReply{Node: e.Address()}
	if e.cfg.TraceSpans != nil {
		r.Spans = e.cfg.TraceSpans(traceID)
	}
	return r
}

// ConsoleNodes asks every coordinator host (and this process) for its
// ConsoleReply, together under one deadline (Config.SpawnTimeout/2). A node
// that does not answer is missing from the result. Replies are sorted by
// node. It blocks up to the deadline.
func (e *Engine) ConsoleNodes() []*messages.ConsoleReply {
	out := []*messages.ConsoleReply{e.consoleReply()}
	for _, res := range e.askNodes(&messages.ConsoleQuery{}) {
		if r, ok := res.(*messages.ConsoleReply); ok && r.Node != e.Address() {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *messages.ConsoleReply) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// TraceSpans collects the spans of the trace traceID (hex) from this
// process's span store and every coordinator host's, under one deadline;
// complete is false when a node did not answer. Spans are sorted by start.
func (e *Engine) TraceSpans(traceID string) (spans []*messages.TraceSpan, complete bool) {
	complete = true
	spans = append(spans, e.traceSpansReply(traceID).Spans...)
	nodes := e.consoleHosts()
	for i, res := range e.askNodes(&messages.TraceSpansQuery{TraceId: traceID}) {
		r, ok := res.(*messages.TraceSpansReply)
		switch {
		case !ok:
			complete = false
		case nodes[i] != e.Address():
			spans = append(spans, r.Spans...)
		}
	}
	slices.SortStableFunc(spans, func(a, b *messages.TraceSpan) int { return a.Start.AsTime().Compare(b.Start.AsTime()) })
	return spans, complete
}

// consoleHosts lists the processes the console asks: the coordinator hosts.
func (e *Engine) consoleHosts() []string {
	if e.placer == nil || e.remote == nil {
		return nil
	}
	return e.coordinatorHosts()
}

// askNodes sends q to every console host's run starter at once and returns
// their answers in consoleHosts order (nil for none within the deadline).
func (e *Engine) askNodes(q any) []any {
	nodes := e.consoleHosts()
	waits := make([]func() (any, error), len(nodes))
	for i, node := range nodes {
		waits[i] = e.system.Root.RequestFuture(actor.NewPID(node, starterName), q, e.cfg.SpawnTimeout/2).Result
	}
	out := make([]any, len(nodes))
	for i, wait := range waits {
		if res, err := wait(); err == nil {
			out[i] = res
		}
	}
	return out
}

// ConsoleHubs returns the hubs of the runs started or attached through
// this process that have not ended (oldest first, at most inFlight), then
// the most recently created of those that ended and are still held (newest
// first, at most ended).
func (e *Engine) ConsoleHubs(inFlight, ended int) (running, done []*Hub) {
	e.mu.Lock()
	hubs := make([]*Hub, 0, len(e.hubs))
	for _, h := range e.hubs {
		hubs = append(hubs, h)
	}
	e.mu.Unlock()
	slices.SortFunc(hubs, func(a, b *Hub) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.RunID, b.RunID)
	})
	for _, h := range hubs {
		if !h.Done() {
			running = append(running, h)
		}
	}
	for i := len(hubs) - 1; i >= 0 && len(done) < ended; i-- {
		if hubs[i].Done() {
			done = append(done, hubs[i])
		}
	}
	return running[:min(inFlight, len(running))], done
}

// InFlight returns the hubs of the runs started or attached through this
// process that have not ended, oldest first, at most max.
func (e *Engine) InFlight(max int) []*Hub {
	running, _ := e.ConsoleHubs(max, 0)
	return running
}

// EndpointLost reports when the actor transport's connection to addr broke
// (a killed process's connections break at once, long before the
// membership declares it dead), if it did and addr has not come back
// since. Non-blocking.
func (e *Engine) EndpointLost(addr string) (time.Time, bool) {
	at, ok := e.lostHosts.Load(addr)
	if !ok {
		return time.Time{}, false
	}
	return at.(time.Time), true
}
