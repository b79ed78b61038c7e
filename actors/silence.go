package actors

import (
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
)

// A silent coordinator (issue 17): the membership finds a node that is
// dead, paused or cut from everyone, but not a node that only cannot send
// to the gateway. Under such an asymmetric cut (the gateway hears nothing
// from node A; A hears the gateway, and every other member hears A)
// memberlist's indirect probes keep A alive, so the runs whose coordinator
// is on A stalled until the cut healed — 6.9 s p99 in the chaos suite's
// asymmetric scenario. So a run's hub watches its coordinator itself:
//
//   - every message of the current epoch from the coordinator (an event, a
//     batch, a resend, a heartbeat) counts as heard;
//   - after probeAfter without one, the hub sends the coordinator a
//     RunProbe, again every probeAfter while it stays silent; the
//     coordinator answers each at once with a RunHeartbeat, from its
//     mailbox, whatever its model does: a model slow to its first token, a
//     run queued for a slot or a step between attempts is never silence;
//   - from the second probe on, two other nodes are asked to probe the
//     coordinator too (RelayProbe, memberlist's indirect probe for one
//     run) and pass its answer on (RunHeartbeat.via_peer);
//   - after moveAfter without a word, with a probe unanswered for at least
//     probeAfter and a peer's answer since the first relay, the run moves
//     as if the node had died (Engine.moveRun: a higher epoch, the hub
//     fenced, the log resumed), and the old coordinator, which may still
//     hear the gateway, is told it was superseded (RunSuperseded) and stops
//     without a word.
//
// The node's link is judged too, not only the run: a run moves only when
// nothing at all came from its coordinator's node to this process's hubs
// for linkQuiet (2 × probeAfter). An overloaded node's messages to the
// gateway queue behind its token events (the transport keeps one stream per
// peer), so a silent run's answer to a probe can arrive after a peer's relay
// of the same answer, which travels other streams; but the congested stream
// still delivers the node's other runs' events, while an asymmetric cut
// delivers nothing (issue 18: 17 runs of a quarter-core node were moved at
// once in the overload scenario before this).
//
// A coordinator that answers no one is not moved by this rule: its node is
// frozen, starved or cut from everyone, and the membership judges that
// (issue 18: a CPU-starved node stalls for more than 600 ms at times; the
// first version of this rule, without the peers' word, moved 39 runs of
// live nodes in the chaos overload scenario). The peer's answer reaches
// the hub two hops after the coordinator answered a probe sent with it, so
// a slow node's own answer comes first. The gateway's own stalls are not
// the coordinator's silence either: a tick that comes late (the process
// was starved or paused) starts every clock again.

// DefaultCoordinatorSilence is Config.CoordinatorSilence's default: with
// the probes at 200 ms, a cut run moves about 0.6–0.65 s after its last
// word, so the next token (the simulator's 50 ms first token after the
// redo) comes within issue 17's 1 s; a live coordinator's answer to a
// probe has 400 ms to arrive, five times the membership's 80 ms ack
// timeout, which a CPU-starved node meets (issue 18's overload scenario).
const DefaultCoordinatorSilence = 600 * time.Millisecond

// silentHostMemory is how long a node where a coordinator went silent is
// offered new runs last: while the cut lasts, a StartRun there would wait
// for an answer that cannot come (SpawnTimeout).
const silentHostMemory = 10 * time.Second

// silenceRule decides, from how many messages a hub has heard from its
// coordinator, when to probe and when to give up on it. Pure: the tests
// drive it with their own clock.
type silenceRule struct {
	probeAfter time.Duration // silence before the first probe, and between probes
	moveAfter  time.Duration // silence before the run moves (a probe out for probeAfter at least)
}

// newSilenceRule is the rule for Config.CoordinatorSilence d (> 0).
func newSilenceRule(d time.Duration) silenceRule {
	return silenceRule{probeAfter: d / 3, moveAfter: d}
}

// linkQuiet is how long nothing may have come from a node before one of
// its runs moves (see above).
func (r silenceRule) linkQuiet() time.Duration { return 2 * r.probeAfter }

// tick is how often the watch looks at every live run.
func (r silenceRule) tick() time.Duration { return max(r.moveAfter/12, time.Millisecond) }

// silence is what the rule remembers of one hub.
type silence struct {
	heard      uint64    // the hub's count at the last change
	since      time.Time // when the count last changed (or watching began)
	firstProbe time.Time // the first probe sent since then (zero: none)
	lastProbe  time.Time // the last one
	relayed    bool      // peers were asked to probe too
	vouched    uint64    // the hub's count of peers' answers when they were first asked
}

// silenceAction is what the watch does about one hub at one tick.
type silenceAction int

const (
	silenceOK         silenceAction = iota // heard lately, or waiting
	silenceProbe                           // send a RunProbe
	silenceProbeRelay                      // send a RunProbe, and RelayProbes to peers
	silenceMove                            // move the run
)

// step advances s to now, given the hub's counts of messages heard from
// its coordinator and of peers' answers for it, and says what to do. A
// move needs a probe unanswered for probeAfter at least (a coordinator
// first looked at after a long time is probed, not moved at once) and a
// peer's answer since peers were first asked.
func (r silenceRule) step(s *silence, heard, vouched uint64, now time.Time) silenceAction {
	if s.since.IsZero() || heard != s.heard {
		*s = silence{heard: heard, since: now}
		return silenceOK
	}
	quiet := now.Sub(s.since)
	if quiet >= r.moveAfter && !s.firstProbe.IsZero() && now.Sub(s.firstProbe) >= r.probeAfter && s.relayed && vouched > s.vouched {
		return silenceMove
	}
	if quiet >= r.probeAfter && (s.lastProbe.IsZero() || now.Sub(s.lastProbe) >= r.probeAfter) {
		s.lastProbe = now
		if s.firstProbe.IsZero() {
			s.firstProbe = now
			return silenceProbe
		}
		if !s.relayed {
			s.relayed, s.vouched = true, vouched
		}
		return silenceProbeRelay
	}
	return silenceOK
}

// restart starts s's clock again at now (the watcher itself was stalled).
func (s *silence) restart(heard uint64, now time.Time) { *s = silence{heard: heard, since: now} }

// silenceWatch applies the rule to every live run of an engine. Its state
// is the watch goroutine's alone.
type silenceWatch struct {
	rule     silenceRule
	states   map[*Hub]*silence
	lastTick time.Time
	// linkHeard is, per node address, the tick at which a hub of this
	// process last heard something new from a coordinator there; views
	// is check's scratch.
	linkHeard map[string]time.Time
	views     []silenceViewOf
	// probe sends coord a RunProbe for h, and with relay asks peers to
	// probe it too; move moves h's run away from coord (it must not block:
	// Engine.failover runs it on a goroutine).
	probe func(h *Hub, coord *actor.PID, relay bool)
	move  func(h *Hub, coord *actor.PID, quiet time.Duration)
	// quiet, when set, is told after every tick the nodes whose link is
	// quiet now: every watched run there silent, and nothing from the node
	// through any run, for linkQuiet at least (nil: none).
	quiet    func(map[string]bool)
	wasQuiet bool // the last report named a node
}

func newSilenceWatch(rule silenceRule, probe func(*Hub, *actor.PID, bool), move func(*Hub, *actor.PID, time.Duration)) *silenceWatch {
	return &silenceWatch{rule: rule, states: map[*Hub]*silence{}, linkHeard: map[string]time.Time{}, probe: probe, move: move}
}

// silenceViewOf is one hub's silenceView, taken once per tick.
type silenceViewOf struct {
	h              *Hub
	coord          *actor.PID
	heard, vouched uint64
	watched        bool
}

// check looks at each of hubs (the live runs) at now.
func (w *silenceWatch) check(hubs []*Hub, now time.Time) {
	late := !w.lastTick.IsZero() && now.Sub(w.lastTick) > w.rule.probeAfter
	w.lastTick = now
	seen := make(map[*Hub]bool, len(hubs))
	// First every hub's view, and which nodes were heard from since the
	// last tick (through any of their runs).
	w.views = w.views[:0]
	for _, h := range hubs {
		v := silenceViewOf{h: h}
		v.coord, v.heard, v.vouched, v.watched = h.silenceView()
		w.views = append(w.views, v)
		if s := w.states[h]; v.watched && s != nil && !s.since.IsZero() && s.heard != v.heard {
			w.linkHeard[v.coord.Address] = now
		}
	}
	for _, v := range w.views {
		h, coord, heard, vouched, watched := v.h, v.coord, v.heard, v.vouched, v.watched
		seen[h] = true
		s := w.states[h]
		if s == nil {
			s = &silence{}
			w.states[h] = s
		}
		if !watched {
			// Ended, moving, or no coordinator yet: watch it afresh after.
			*s = silence{}
			continue
		}
		if late {
			s.restart(heard, now)
			continue
		}
		act := w.rule.step(s, heard, vouched, now)
		if act == silenceMove && now.Sub(w.linkHeard[coord.Address]) < w.rule.linkQuiet() {
			// The node still talks to us: slow, not cut. Keep probing.
			act = silenceOK
			if now.Sub(s.lastProbe) >= w.rule.probeAfter {
				s.lastProbe, act = now, silenceProbeRelay
			}
		}
		switch act {
		case silenceProbe:
			w.probe(h, coord, false)
		case silenceProbeRelay:
			w.probe(h, coord, true)
		case silenceMove:
			quiet := now.Sub(s.since)
			*s = silence{}
			w.move(h, coord, quiet)
		}
	}
	for h := range w.states {
		if !seen[h] {
			delete(w.states, h)
		}
	}
	w.reportQuiet(now)
	for addr, at := range w.linkHeard {
		if now.Sub(at) > time.Minute {
			delete(w.linkHeard, addr) // bounded by the nodes heard in the last minute
		}
	}
	clear(w.views) // let ended runs go
}

// reportQuiet tells w.quiet which nodes' links are quiet at now (after
// check): a node is when each watched run on it has heard nothing for
// linkQuiet and neither has any other (linkHeard). A node the membership
// has not yet declared dead but that no run here has heard from lately —
// the other node of a split's cut-off side, a starved node — is offered a
// moved run last (Engine.silentLast), not first and waited for.
func (w *silenceWatch) reportQuiet(now time.Time) {
	if w.quiet == nil {
		return
	}
	lq := w.rule.linkQuiet()
	var quiet, talking map[string]bool
	for _, v := range w.views {
		if !v.watched {
			continue
		}
		a := v.coord.Address
		s := w.states[v.h]
		if s == nil || s.since.IsZero() || now.Sub(s.since) < lq || now.Sub(w.linkHeard[a]) < lq {
			if talking == nil {
				talking = map[string]bool{}
			}
			talking[a] = true
			continue
		}
		if quiet == nil {
			quiet = map[string]bool{}
		}
		quiet[a] = true
	}
	for a := range talking {
		delete(quiet, a)
	}
	if len(quiet) == 0 && !w.wasQuiet {
		return // nothing to say again: no allocation per tick in the common case
	}
	w.wasQuiet = len(quiet) > 0
	w.quiet(quiet)
}

// silenceView is what the watch needs of a hub: its coordinator, how many
// messages it has heard from it and how many answers of it peers passed
// on, and whether to watch it now (live, a coordinator known, not moving,
// a failover possible).
func (h *Hub) silenceView() (coord *actor.PID, heard, vouched uint64, watched bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.coordinator, h.heard, h.vouched, !h.terminal && !h.failingOver && h.coordinator != nil && h.onLost != nil && !h.closed
}

// heartbeat records a coordinator's RunHeartbeat and reports whether it has
// logged events the hub has not (lost on the way: ask for them).
func (h *Hub) heartbeat(m *messages.RunHeartbeat) (behind bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if m.GetEpoch() < h.epoch || m.GetEpoch() < h.minEpoch {
		return false // a fenced coordinator's
	}
	if m.GetViaPeer() {
		h.vouched++ // alive, and reaches a peer: not a word to this hub
		return false
	}
	h.heard++
	return m.GetLastSeq() > uint64(h.n) && !h.terminal
}

// watchSilence is the goroutine that applies the silence rule to the
// engine's live runs until the engine shuts down.
func (e *Engine) watchSilence(rule silenceRule) {
	defer e.wg.Done()
	w := newSilenceWatch(rule, e.probeCoordinator, e.moveSilent)
	w.quiet = func(m map[string]bool) { e.quietLinks.Store(&m) }
	t := time.NewTicker(rule.tick())
	defer t.Stop()
	var hubs []*Hub
	for {
		select {
		case <-e.stop:
			return
		case now := <-t.C:
			hubs = e.liveHubs(hubs[:0])
			w.check(hubs, now)
			clear(hubs) // let ended runs go
		}
	}
}

// liveHubs appends the engine's unfinished runs that may fail over to buf.
func (e *Engine) liveHubs(buf []*Hub) []*Hub {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, h := range e.live {
		buf = append(buf, h)
	}
	return buf
}

// probeCoordinator asks coord whether it still runs h's run, and with
// relay asks up to relayPeers other coordinator hosts to ask it too.
func (e *Engine) probeCoordinator(h *Hub, coord *actor.PID, relay bool) {
	pid := h.PID()
	if pid == nil {
		return
	}
	e.metrics.silenceProbes.Inc()
	e.system.Root.Send(coord, &messages.RunProbe{RunId: h.RunID, Epoch: h.currentEpoch(), ReplyTo: refOf(pid)})
	if !relay || e.placer == nil {
		return
	}
	n := 0
	for _, node := range e.placer.Candidates(h.RunID) {
		if node == coord.Address || node == e.Address() {
			continue
		}
		e.system.Root.Send(actor.NewPID(node, starterName), &messages.RelayProbe{RunId: h.RunID, Coordinator: refOf(coord), Hub: refOf(pid)})
		if n++; n == relayPeers {
			break
		}
	}
}

// relayPeers is how many other nodes a hub asks to probe a silent
// coordinator (memberlist asks three; two of three nodes besides the
// coordinator's here).
const relayPeers = 2

// relayWait is how long a node waits for a coordinator's answer to a
// probe it relays.
const relayWait = 500 * time.Millisecond

// relayProbe is a run starter's part of RelayProbe: probe the coordinator
// and pass its answer on to the hub, marked as a peer's.
func relayProbe(ctx actor.Context, m *messages.RelayProbe) {
	coord, hub := pidOf(m.Coordinator), pidOf(m.Hub)
	if coord == nil || hub == nil {
		return
	}
	f := ctx.RequestFuture(coord, &messages.RunProbe{RunId: m.RunId}, relayWait)
	ctx.ReenterAfter(f, func(res any, err error) {
		if hb, ok := res.(*messages.RunHeartbeat); ok && err == nil {
			ctx.Send(hub, &messages.RunHeartbeat{RunId: hb.RunId, Epoch: hb.Epoch, LastSeq: hb.LastSeq, ViaPeer: true})
		}
	})
}

// moveSilent moves a run whose coordinator said nothing for quiet, and
// tells the old coordinator it was superseded.
func (e *Engine) moveSilent(h *Hub, coord *actor.PID, quiet time.Duration) {
	e.metrics.silentCoordinators.Inc()
	e.silentAt.Store(coord.Address, time.Now())
	why := fmt.Sprintf("the run's coordinator on %s was silent for %v and did not answer a probe", coord.Address, quiet.Round(time.Millisecond))
	e.logger.Warn("run's coordinator is silent; moving the run", "run_id", h.RunID, "coordinator", coord.String(), "silent_for", quiet)
	e.goOwned(func() {
		if epoch, ok := e.moveRun(h, coord, why); ok {
			e.system.Root.Send(coord, &messages.RunSuperseded{RunId: h.RunID, Epoch: epoch, Reason: why})
		}
	})
}

// currentEpoch is the epoch of the run's current coordinator as the hub
// knows it.
func (h *Hub) currentEpoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return max(h.epoch, h.minEpoch, h.start.GetEpoch())
}

// hostSilent reports whether a coordinator on addr went silent lately, or
// the node's link is quiet now (silenceWatch.reportQuiet).
func (e *Engine) hostSilent(addr string) bool {
	if q := e.quietLinks.Load(); q != nil && (*q)[addr] {
		return true
	}
	at, ok := e.silentAt.Load(addr)
	if !ok {
		return false
	}
	if time.Since(at.(time.Time)) < silentHostMemory {
		return true
	}
	e.silentAt.CompareAndDelete(addr, at) // forgotten: replaced nodes' addresses do not pile up
	return false
}

// silentLast returns candidates with the nodes where a coordinator went
// silent lately moved to the end, the order kept otherwise (candidates
// itself when there are none).
func (e *Engine) silentLast(candidates []string) []string {
	if !slices.ContainsFunc(candidates, e.hostSilent) {
		return candidates
	}
	out := make([]string, 0, len(candidates))
	var quiet []string
	for _, c := range candidates {
		if e.hostSilent(c) {
			quiet = append(quiet, c)
		} else {
			out = append(out, c)
		}
	}
	return append(out, quiet...)
}
