package actors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/messages"
)

// HubConfig bounds one run's hub.
type HubConfig struct {
	// MaxEvents caps the run's log. Events past it are refused and the run is
	// cancelled (a run is bounded by its profile's max_tokens, so this is a
	// safety net). Default 1<<20.
	MaxEvents int
	// MaxLag is how many events a reader of a live run may fall behind
	// before it can be dropped with a Lagged notice: it is dropped when, at
	// a read, it is more than MaxLag events behind *and* further behind than
	// at its previous read (it cannot keep up with the producer). A reader
	// whose lag shrinks between reads (it is catching up) is never dropped,
	// nor is a reader of a finished run, nor the first read of a
	// subscription (so resuming from a Lagged notice always makes progress).
	// The log is shared, so a lagging subscriber costs no memory; the bound
	// is about cutting off readers that cannot keep up instead of letting
	// them stream minutes behind. Default 65536 (about 0.1 s of a run at
	// 500k tokens/s; minutes at human speeds).
	MaxLag int
	// MaxBatch is the most events one Subscription.Next returns. It bounds
	// the work a reader does between two lag checks (and so how long a
	// cancelled or lagging reader keeps writing), not memory: a batch is a
	// slice of the shared log. Default 4096.
	MaxBatch int
}

// DefaultHubConfig returns the defaults described on each field.
func DefaultHubConfig() HubConfig {
	return HubConfig{MaxEvents: 1 << 20, MaxLag: 1 << 16, MaxBatch: 4096}
}

func (c *HubConfig) validate() error {
	d := DefaultHubConfig()
	if c.MaxEvents == 0 {
		c.MaxEvents = d.MaxEvents
	}
	if c.MaxLag == 0 {
		c.MaxLag = d.MaxLag
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = d.MaxBatch
	}
	if c.MaxEvents < 8 || c.MaxLag < 1 || c.MaxBatch < 1 {
		return fmt.Errorf("actors: hub MaxEvents must be >= 8, MaxLag and MaxBatch >= 1 (got %d, %d, %d)", c.MaxEvents, c.MaxLag, c.MaxBatch)
	}
	return nil
}

// Errors a Subscription returns.
var (
	// ErrLagged means the subscriber of a live run fell more than MaxLag
	// events behind and kept falling further behind, and was dropped; it may
	// resubscribe from LaggedError.NextSeq (whose first read always delivers).
	ErrLagged = errors.New("actors: subscriber lagged")
	// ErrHubClosed means the hub was evicted or the engine shut down.
	ErrHubClosed = errors.New("actors: run hub closed")
	// ErrIdle is returned by Subscription.Next when its idle channel fired
	// before an event arrived (time for a keep-alive).
	ErrIdle = errors.New("actors: subscription idle")
)

// LaggedError is returned (wrapping ErrLagged) to a dropped subscriber.
type LaggedError struct{ NextSeq uint64 }

func (e *LaggedError) Error() string {
	return fmt.Sprintf("%v: resume from seq %d", ErrLagged, e.NextSeq)
}

// Unwrap lets errors.Is(err, ErrLagged) match.
func (e *LaggedError) Unwrap() error { return ErrLagged }

// Hub is one run's event log and fan-out point (the RunHub). Events arrive
// through its actor's mailbox, in order, from the run's coordinator; readers
// are Subscriptions, each read by one goroutine (an SSE or WebSocket writer).
//
// The log is append-only and its entries are immutable, so a subscriber reads
// a slice of it without copying; publishing costs O(1) whatever the number of
// subscribers: waiting readers share one channel that is closed on append.
type Hub struct {
	// Immutable after creation.
	RunID   string
	Tenant  string
	Profile string
	// label is the run's profile in metrics labels: Profile, or
	// TenantProfileLabel for a tenant's own profile (tenantprofile.go).
	label   string
	Query   string
	Created time.Time
	// TraceID is the run's trace id (hex) when tracing is on, else "".
	TraceID string
	cfg     HubConfig
	metrics *Metrics
	logger  *slog.Logger

	// mu guards the fields below it.
	mu          sync.Mutex
	log         []*messages.RunEvent // log[i].Seq == i+1; nil once packed
	n           int                  // events in the log (len(log), or packed's)
	packed      *packedLog           // the finished log, compacted (compact); nil before
	store       *storedLogs          // the log is durably in the gateway's store (Engine.LogStored); nil: not known to be
	offloaded   bool                 // and dropped from memory (compact): reads load it from store
	epoch       uint64
	terminal    bool      // a RunCompleted/RunFailed/RunCancelled is in the log
	endedAt     time.Time // when terminal became true
	heapBytes   int64     // an estimate of the memory the log holds (eventHeapBytes per event)
	closed      bool      // evicted: readers get ErrHubClosed once they are done
	notify      chan struct{}
	hasWaiters  bool // someone holds notify: close and replace it on the next append
	subscribers int
	coordinator *actor.PID // who to send CancelRun to
	pid         *actor.PID
	stopActor   func(*actor.PID)   // stops the hub's actor once the log is in the store (compact); nil: it has none
	start       *messages.StartRun // how the run was started (for a failover)
	failingOver bool               // a failover is placing a new coordinator
	minEpoch    uint64             // events below it are refused (a replaced coordinator's)
	failovers   int                // failovers so far
	cancelled   string             // a cancel's reason, kept to repeat it to a coordinator that replaces a lost one
	gapWarned   uint64             // the missing seq last warned about: a gap is logged once, not once per late event
	sawToken    bool               // a TokenDelta is in the log (Config.Slow was told the run's TTFT)
	cacheKey    string             // the response cache's key of a run led for others (onEnd keeps its log)
	nearScope   string             // and its near-duplicate scope ("" when its profile does not opt in)
	packWanted  bool               // Pack was asked for while readers were on the log
	heard       uint64             // messages heard from the current coordinator (silence.go)
	vouched     uint64             // its answers to peers' probes, passed on by them (silence.go)

	// onLost is called from the hub actor when the coordinator is gone
	// before the log ended; it must not block: the engine moves the run on
	// a goroutine it owns (Engine.failover).
	onLost func(h *Hub, lost *actor.PID, why string)
	// onEnd is called once, without the hub's lock, by whoever appended the
	// terminal event; it must not block. Set before the hub is shared.
	onEnd func(h *Hub)
}

func newHub(runID, tenant, profile, query string, cfg HubConfig, m *Metrics, logger *slog.Logger) *Hub {
	return &Hub{
		RunID: runID, Tenant: tenant, Profile: profile, label: profile, Query: query, Created: time.Now(),
		cfg: cfg, metrics: m, logger: logger.With("run_id", runID),
		notify: make(chan struct{}),
	}
}

// PID is the hub actor's address, where a coordinator sends RunEvents.
func (h *Hub) PID() *actor.PID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.pid
}

// Coordinator is the PID of the run's current coordinator.
func (h *Hub) Coordinator() *actor.PID {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.coordinator
}

// setCacheKey marks the run as the one that identical requests share
// (Engine.startCached); it reports whether the run has ended already.
func (h *Hub) setCacheKey(key, nearScope string) (ended bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.cacheKey, h.nearScope = key, nearScope
	return h.terminal
}

func (h *Hub) getNearScope() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nearScope
}

func (h *Hub) getCacheKey() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cacheKey
}

// CachedFrom names the run whose log this run replays (served from the
// response cache, or shared with an identical run in flight): no model
// was called for it. Empty for a run of its own.
func (h *Hub) CachedFrom() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetCachedFrom()
}

// Estimate is the run's predicted latency and cost when it was admitted
// (nil for a run started before estimates existed).
func (h *Hub) Estimate() *messages.RunEstimate {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetEstimate()
}

// StepModels are the cost/quality optimiser's choices for the run's
// steps, in the order made (nil when the request set no budget).
func (h *Hub) StepModels() []*messages.StepModel {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetStepModels()
}

// Budget is what the request asked of the run's cost, latency and
// quality (nil: nothing).
func (h *Hub) Budget() *messages.RunBudget {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetBudget()
}

// Routing is how the run's profile was chosen when the request asked
// for profile "auto" (nil otherwise).
func (h *Hub) Routing() *messages.RunRouting {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.start.GetRouting()
}

// Done reports whether the run has ended (its log holds a terminal event).
func (h *Hub) Done() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.terminal
}

// LastSeq is the seq of the newest event (0 before the first).
func (h *Hub) LastSeq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return uint64(h.n)
}

// Events returns the log from fromSeq on (1 = all). The slice must not be
// modified. A packed log (compact) is decoded: each call returns new
// messages.
func (h *Hub) Events(fromSeq uint64) []*messages.RunEvent {
	if fromSeq < 1 {
		fromSeq = 1
	}
	h.mu.Lock()
	if fromSeq > uint64(h.n) {
		h.mu.Unlock()
		return nil
	}
	if p := h.packed; p != nil {
		h.mu.Unlock()
		return h.unpack(p, int(fromSeq-1), p.len())
	}
	if h.offloaded {
		n := h.n
		h.mu.Unlock()
		evs, err := h.readStored(int(fromSeq-1), n)
		if err != nil {
			h.logger.Error("a finished run's log could not be read back from the store", "error", err)
		}
		return evs
	}
	evs := h.log[fromSeq-1:]
	h.mu.Unlock()
	return evs
}

// readStored reads events i to j-1 (0-based) of a log dropped from memory
// for the store (Engine.LogStored): decoded from the packed copy storedLogs
// keeps or loads. Called without h.mu.
func (h *Hub) readStored(i, j int) ([]*messages.RunEvent, error) {
	p, err := h.store.get(h)
	if err != nil {
		return nil, err
	}
	evs, err := p.decode(i, j)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLogUnavailable, err)
	}
	return evs, nil
}

// WaitDone blocks until the run ends or ctx is done.
func (h *Hub) WaitDone(ctx context.Context) error {
	return h.waitUntil(ctx, func() bool { return h.terminal })
}

// waitSeq blocks until the log holds seq (or has ended), the hub is
// closed, or ctx is done.
func (h *Hub) waitSeq(ctx context.Context, seq uint64) error {
	return h.waitUntil(ctx, func() bool { return uint64(h.n) >= seq || h.terminal })
}

// waitUntil blocks until ready (called under h.mu) is true, the hub is
// closed, or ctx is done.
func (h *Hub) waitUntil(ctx context.Context, ready func() bool) error {
	for {
		h.mu.Lock()
		if ready() {
			h.mu.Unlock()
			return nil
		}
		if h.closed {
			h.mu.Unlock()
			return ErrHubClosed
		}
		ch := h.notify
		h.hasWaiters = true
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Subscribe returns a reader of the log from fromSeq on (fromSeq <= 1 means
// the whole log). Close it when done.
func (h *Hub) Subscribe(fromSeq uint64) *Subscription {
	if fromSeq < 1 {
		fromSeq = 1
	}
	h.mu.Lock()
	h.subscribers++
	h.mu.Unlock()
	h.metrics.subscribers.Inc()
	return &Subscription{hub: h, next: fromSeq, lastLag: freshLag}
}

// append adds events that arrive from the coordinator. It enforces the log's
// invariants: a lower epoch than the newest seen is a stale coordinator and is
// ignored; a seq already in the log is a duplicate and ignored; a gap is
// refused (it would break every subscriber's transcript).
func (h *Hub) append(evs ...*messages.RunEvent) (cancelRun bool) {
	cancelRun, _ = h.appendEvents(evs)
	return cancelRun
}

// appendEvents is append that also reports a gap: gapFrom > 0 is the first
// missing seq (the transport lost a message; the coordinator resends).
func (h *Hub) appendEvents(evs []*messages.RunEvent) (cancelRun bool, gapFrom uint64) {
	h.mu.Lock()
	appended, ended, heard := 0, false, false
	for _, ev := range evs {
		if ev.GetEpoch() < h.epoch || ev.GetEpoch() < h.minEpoch {
			h.logger.Warn("hub ignored an event from a stale coordinator", "epoch", ev.GetEpoch(), "current_epoch", h.epoch, "seq", ev.GetSeq())
			continue
		}
		heard = true // a duplicate too: the coordinator is there
		n := uint64(h.n)
		switch {
		case ev.GetSeq() <= n:
			continue // duplicate (a resend or a resumed coordinator's replay)
		case ev.GetSeq() > n+1:
			if gapFrom == 0 && h.gapWarned != n+1 {
				h.gapWarned = n + 1
				h.logger.Warn("hub saw a gap in the run's log; asking the coordinator to resend", "seq", ev.GetSeq(), "last_seq", n)
			}
			gapFrom = n + 1
			continue
		case h.terminal:
			continue
		case h.n >= h.cfg.MaxEvents:
			cancelRun = true
			continue
		}
		h.epoch = ev.GetEpoch()
		h.log = append(h.log, ev)
		h.n++
		h.heapBytes += eventHeapBytes(ev)
		appended++
		h.metrics.observe(h.label, ev)
		if !h.sawToken && ev.GetTokenDelta() != nil { // the first delta only: the per-token path stays as it was
			h.sawToken = true
			h.metrics.firstToken(h.Created)
		}
		if isTerminal(ev) {
			h.terminal = true
			h.endedAt = time.Now()
			ended = true
		}
	}
	if heard {
		h.heard++
	}
	wake := appended > 0 && h.hasWaiters
	var ch chan struct{}
	if wake {
		ch = h.notify
		h.notify = make(chan struct{})
		h.hasWaiters = false
	}
	h.mu.Unlock()
	if ended && h.onEnd != nil {
		// Before the readers wake: one that sees the run ended may start
		// the next at once, and the ended run's slot must be back by then.
		h.onEnd(h)
	}
	if wake {
		close(ch)
	}
	return cancelRun, gapFrom
}

// fail ends an unfinished log with a RunFailed of the hub's own making, for
// when the coordinator that would have ended it is gone.
func (h *Hub) fail(code, reason string) {
	h.mu.Lock()
	ev := &messages.RunEvent{RunId: h.RunID, Seq: uint64(h.n) + 1, Epoch: max(h.epoch, h.minEpoch), Time: timestamppb.Now(),
		Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{Reason: reason, Code: code}}}
	h.mu.Unlock()
	h.logger.Error("run failed: coordinator lost", "code", code, "reason", reason)
	h.append(ev)
}

func (h *Hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	close(h.notify)
	h.notify = make(chan struct{})
	h.hasWaiters = false
}

func isTerminal(ev *messages.RunEvent) bool {
	switch ev.GetKind().(type) {
	case *messages.RunEvent_RunCompleted, *messages.RunEvent_RunFailed, *messages.RunEvent_RunCancelled:
		return true
	}
	return false
}

// Subscription reads one run's log in order. It is used by one goroutine.
// It is a cursor into the shared log: whatever the log holds and however far
// behind its reader is, it costs these few words.
type Subscription struct {
	hub     *Hub
	next    uint64 // seq of the next event to deliver
	lastLag uint64 // events pending at the previous read; freshLag: none to compare with
	closed  bool
}

// freshLag is a Subscription's lastLag before a read it could be dropped
// at: its first, and the first after it caught up with the log.
const freshLag = ^uint64(0)

// NextSeq is the seq of the next event Next will return; after a drop it is
// where a resumed subscription should start.
func (s *Subscription) NextSeq() uint64 { return s.next }

// Next returns the events from the subscription's position on (at least
// one, at most MaxBatch), blocking until there is one. It returns io.EOF
// after the run's terminal event was delivered, a *LaggedError if the run is
// live and the subscriber is more than MaxLag events behind and further
// behind than at its previous read (it is then closed), ErrHubClosed if the
// hub was evicted or its log could not be read back from the store
// (ErrLogUnavailable, which wraps it), ErrIdle if idle fired first (nil:
// never), or ctx's error.
// A finished run's log is delivered whole, from any seq. The returned slice
// is shared and read-only.
func (s *Subscription) Next(ctx context.Context, idle <-chan time.Time) ([]*messages.RunEvent, error) {
	h := s.hub
	for {
		h.mu.Lock()
		n := uint64(h.n)
		if s.next <= n {
			lag := n - s.next + 1
			if !h.terminal && lag > uint64(h.cfg.MaxLag) && s.lastLag != freshLag && lag > s.lastLag {
				h.mu.Unlock()
				h.metrics.droppedSubscribers.Inc()
				s.Close()
				return nil, &LaggedError{NextSeq: s.next}
			}
			end := min(n, s.next-1+uint64(h.cfg.MaxBatch))
			var evs []*messages.RunEvent
			p, stored := h.packed, h.offloaded
			if p == nil && !stored {
				evs = h.log[s.next-1 : end : end]
			}
			h.mu.Unlock()
			switch {
			case p != nil: // immutable: decoded without the lock
				evs = h.unpack(p, int(s.next-1), int(end))
			case stored:
				var err error
				if evs, err = h.readStored(int(s.next-1), int(end)); err != nil {
					h.logger.Error("a finished run's log could not be read back from the store", "error", err)
					s.Close()
					return nil, err
				}
			}
			s.next, s.lastLag = end+1, lag
			return evs, nil
		}
		if h.terminal {
			h.mu.Unlock()
			return nil, io.EOF
		}
		if h.closed {
			h.mu.Unlock()
			return nil, ErrHubClosed
		}
		// Caught up: whatever arrives next, the reader was keeping up.
		s.lastLag = freshLag
		ch := h.notify
		h.hasWaiters = true
		h.mu.Unlock()
		select {
		case <-ch:
		case <-idle:
			return nil, ErrIdle
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close releases the subscription. It is idempotent.
func (s *Subscription) Close() {
	if s.closed {
		return
	}
	s.closed = true
	s.hub.metrics.subscribers.Dec()
	s.hub.leave()
}

// leave is a reader's leaving the log (Subscription.Close, Hold's
// release): the last one packs or drops a log that was asked to be while
// readers were on it.
func (h *Hub) leave() {
	h.mu.Lock()
	h.subscribers--
	pack := h.packWanted && h.subscribers == 0
	h.mu.Unlock()
	if pack {
		h.Pack() // asked for while this reader was still on the log
	}
}

// Hold marks a reader that will read the log once the run ends (Events
// after WaitDone, as a blocking chat completion does) until release is
// called: as for an open Subscription, the finished log is not packed or
// dropped for the store under it (for up to packWithReadersAfter after the
// end), so the read shares the log as it was written instead of decoding
// it, or loading it back from the store. release is idempotent.
func (h *Hub) Hold() (release func()) {
	h.mu.Lock()
	h.subscribers++
	h.mu.Unlock()
	return sync.OnceFunc(h.leave)
}

// hubActor is the hub's mailbox: the coordinator sends it RunEvents. It
// watches the coordinator: if the coordinator stops before the run's log
// ends (its node died, or it crashed), the hub ends the log with RunFailed
// (code "coordinator_lost") so no reader waits for ever.
type hubActor struct {
	hub         *Hub
	coordinator *actor.PID
	resendFrom  uint64    // last resend asked for, so a burst of late events asks once
	resendAt    time.Time // when it was asked: asked again after resendRetry (the ask, or its answer, may be lost)
	pendingGap  uint64    // a gap seen before the coordinator was known
	acked       bool      // the terminal event was acknowledged to the coordinator
}

func (a *hubActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.RunEvent:
		a.received(ctx, []*messages.RunEvent{m})
	case *messages.RunEventBatch:
		a.received(ctx, m.Events)
	case *messages.RunHeartbeat:
		// The coordinator answered a probe (silence.go); if it logged
		// events the hub has not, they were lost on the way: ask for them.
		if a.hub.heartbeat(m) {
			a.followUp(ctx, a.hub.LastSeq()+1)
		}
	case *messages.WatchRun:
		if pid := pidOf(m.Coordinator); pid != nil {
			a.coordinator = pid
			ctx.Watch(pid)
			a.followUp(ctx, a.pendingGap)
		}
	case *actor.Terminated:
		if a.coordinator == nil || !m.Who.Equal(a.coordinator) {
			return
		}
		if a.hub.Done() {
			// Nothing more to say to it; a PID keeps a pointer to the
			// process it last reached, and with it the stopped
			// coordinator and its whole log (detachedPID).
			a.coordinator = detachedPID(a.coordinator)
			return
		}
		// Terminated is a system message and overtakes user messages: the
		// coordinator's last events may still be queued. A note to self
		// queues behind them, so the check sees them.
		ctx.Send(ctx.Self(), &coordinatorGone{who: m.Who, why: m.Why.String()})
	case lostEvents:
		// The mailbox was full and dropped events: ask for everything
		// after the log's end (even a gap asked for before).
		if !a.hub.Done() {
			a.resendFrom = 0
			a.followUp(ctx, a.hub.LastSeq()+1)
		}
	case *messages.Lagged:
		// The coordinator follows too many subscribers already and sent
		// the log so far only: ask again in a while (a follower that
		// polls), until it has room.
		if !a.hub.Done() && a.coordinator != nil {
			self, root := ctx.Self(), ctx.ActorSystem().Root
			time.AfterFunc(resubscribeAfter, func() { root.Send(self, resubscribe{}) })
		}
	case resubscribe:
		if !a.hub.Done() && a.coordinator != nil {
			ctx.Send(a.coordinator, &messages.Subscribe{RunId: a.hub.RunID, FromSeq: a.hub.LastSeq() + 1, Subscriber: refOf(ctx.Self())})
		}
	case *coordinatorGone:
		if !a.hub.Done() && a.hub.onLost != nil {
			a.hub.onLost(a.hub, m.who, fmt.Sprintf("the run's coordinator stopped unexpectedly (%s)", m.why))
		}
	}
}

// resubscribe is the hub actor's note to itself to follow its coordinator
// again after a Lagged (never leaves its mailbox).
type resubscribe struct{}

// resubscribeAfter is how long a hub refused as a live subscriber waits
// before it asks again.
const resubscribeAfter = time.Second

// coordinatorGone is the hub actor's note to itself (never leaves its mailbox).
type coordinatorGone struct {
	who *actor.PID
	why string
}

// fenceBelow makes the hub refuse events of epochs below epoch: a
// placement that gave up on a slow node offers the run elsewhere at a
// higher epoch, and whatever coordinator the slow node may still start
// must not write into the log.
func (h *Hub) fenceBelow(epoch uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.minEpoch = max(h.minEpoch, epoch)
}

// beginFailover claims the right to move the run away from lost: false if
// the run ended, another failover is under way, or lost is no longer the
// run's coordinator (it already moved).
func (h *Hub) beginFailover(lost *actor.PID) (prior []*messages.RunEvent, epoch uint64, n int, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.terminal || h.failingOver || h.coordinator == nil || !h.coordinator.Equal(lost) {
		return nil, 0, 0, false
	}
	h.failingOver = true
	h.failovers++
	// Fence the old coordinator now: the new one resumes from exactly this
	// log, so nothing the old one still sends may enter it. The old one's
	// epoch is the highest of the log's, the run's start and an earlier
	// move's (a coordinator lost before its first event reached the log).
	cur := max(h.epoch, h.start.GetEpoch(), h.minEpoch)
	h.minEpoch = cur + 1
	return h.log[:len(h.log):len(h.log)], cur, h.failovers, true
}

// endFailover records the run's new coordinator (nil: the failover failed)
// and returns the reason of a cancel asked for meanwhile ("" if none).
func (h *Hub) endFailover(coordinator *actor.PID) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.failingOver = false
	if coordinator != nil {
		h.coordinator = coordinator
	}
	return h.cancelled
}

// noteCancel records a cancel (so a failover repeats it) and returns the
// coordinator to send it to.
func (h *Hub) noteCancel(reason string) *actor.PID {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancelled == "" {
		h.cancelled = reason
		if reason == "" {
			h.cancelled = "cancelled by its owner"
		}
	}
	return h.coordinator
}

// received logs events, asks for a resend after a gap (the actor transport
// is at most once), and acknowledges the terminal event so the coordinator
// may stop.
func (a *hubActor) received(ctx actor.Context, evs []*messages.RunEvent) {
	wasDone := a.hub.Done()
	cancel, gapFrom := a.hub.appendEvents(evs)
	a.refuseOverflow(ctx, cancel)
	a.followUp(ctx, gapFrom)
	if wasDone && a.acked && a.coordinator != nil {
		// A finished coordinator resends its last event until acknowledged:
		// the acknowledgement was lost (at most once), so send it again.
		ctx.Send(a.coordinator, &messages.RunEventAck{RunId: a.hub.RunID, Seq: a.hub.LastSeq()})
	}
}

// resendRetry is how long a hub waits before asking again for the same gap.
const resendRetry = 250 * time.Millisecond

// followUp asks the coordinator to resend from gapFrom (> 0), and
// acknowledges a complete log, once the coordinator is known.
func (a *hubActor) followUp(ctx actor.Context, gapFrom uint64) {
	if a.coordinator == nil {
		if gapFrom > 0 {
			a.pendingGap = gapFrom
		}
		return
	}
	if gapFrom > 0 && gapFrom > a.hub.LastSeq() && (gapFrom != a.resendFrom || time.Since(a.resendAt) >= resendRetry) {
		a.resendFrom, a.resendAt = gapFrom, time.Now()
		ctx.Send(a.coordinator, &messages.Subscribe{RunId: a.hub.RunID, FromSeq: gapFrom, Subscriber: refOf(ctx.Self())})
	}
	if !a.acked && a.hub.Done() {
		a.acked = true
		ctx.Send(a.coordinator, &messages.RunEventAck{RunId: a.hub.RunID, Seq: a.hub.LastSeq()})
	}
}

func (a *hubActor) refuseOverflow(ctx actor.Context, cancel bool) {
	if cancel {
		if c := a.hub.Coordinator(); c != nil {
			ctx.Send(c, &messages.CancelRun{RunId: a.hub.RunID, Reason: fmt.Sprintf("run exceeded the hub's limit of %d events", a.hub.cfg.MaxEvents)})
		}
	}
}

// eventOverheadBytes is what one logged event costs in memory besides its
// text: the RunEvent, its oneof wrapper and kind, its timestamp, the
// log's slot (measured: about 300 bytes per token event of a finished run).
const eventOverheadBytes = 300

// eventHeapBytes estimates the memory one logged event holds.
func eventHeapBytes(ev *messages.RunEvent) int64 {
	n := int64(eventOverheadBytes)
	switch k := ev.GetKind().(type) {
	case *messages.RunEvent_TokenDelta:
		n += int64(len(k.TokenDelta.Text))
	case *messages.RunEvent_StageCompleted:
		n += int64(len(k.StageCompleted.Output))
	case *messages.RunEvent_RunCompleted:
		n += int64(len(k.RunCompleted.Answer))
	}
	return n
}

// packedLog is a finished run's log in two allocations that hold no
// pointers. A live log is one RunEvent, oneof wrapper, kind and timestamp
// per event (about 300 bytes and four objects the garbage collector must
// trace, per token); packed, a token event is about 20 bytes, never
// traced. Readers of a finished run decode the part they read
// (Hub.unpack).
//
// Each event is a record: its length (varint), then epoch<<1 | has-time
// (varint), the time as nanoseconds since the previous event's (zigzag
// varint, when it has one), then the protobuf encoding of its kind alone
// (RunEvent with only the oneof set). The run id is the log's, the seq is
// the record's place (a hub's log holds seq i at i-1): neither is stored.
type packedLog struct {
	runID string
	n     int        // events
	data  []byte     // the records, back to back
	index []packMark // index[k]: record k*packIndexEvery
}

// packMark is where a record starts, and the time (ns) its delta is from.
type packMark struct {
	off uint32
	ns  int64
}

// packIndexEvery is how many records one index entry covers: a read from
// seq s skips at most this many records by their lengths.
const packIndexEvery = 64

// packLog encodes evs, whose seqs are 1 to len(evs) and run ids runID; an
// error (an event that is not so, or does not encode, a time that is not
// a time, a log over 4 GiB) leaves the log as it was.
func packLog(runID string, evs []*messages.RunEvent) (*packedLog, error) {
	p := &packedLog{runID: runID, n: len(evs), index: make([]packMark, 0, (len(evs)+packIndexEvery-1)/packIndexEvery)}
	// A first guess of the size, grown by append; the copy at the end keeps
	// what is used. (Summing proto.Size of every event cost a third of
	// packing: every gateway packs every finished run.)
	p.data = make([]byte, 0, 24*len(evs)+64)
	var (
		kind   messages.RunEvent // the event's kind only, marshalled
		rec    []byte
		prevNs int64
	)
	opts := proto.MarshalOptions{Deterministic: true}
	for i, ev := range evs {
		if ev.GetSeq() != uint64(i+1) || ev.GetRunId() != runID {
			return nil, fmt.Errorf("actors: pack: event %d has seq %d, run %q", i+1, ev.GetSeq(), ev.GetRunId())
		}
		if i%packIndexEvery == 0 {
			if len(p.data) > math.MaxUint32 {
				return nil, fmt.Errorf("actors: a log of over %d bytes is too long to pack", len(p.data))
			}
			p.index = append(p.index, packMark{uint32(len(p.data)), prevNs})
		}
		rec = rec[:0]
		head := ev.GetEpoch() << 1
		if ev.GetEpoch() >= 1<<63 {
			return nil, fmt.Errorf("actors: pack: event %d has epoch %d", i+1, ev.GetEpoch())
		}
		if t := ev.GetTime(); t != nil {
			ns, ok := timeNanos(t)
			if !ok {
				return nil, fmt.Errorf("actors: pack: event %d has time %v", i+1, t)
			}
			rec = protowire.AppendVarint(rec, head|1)
			rec = protowire.AppendVarint(rec, protowire.EncodeZigZag(ns-prevNs))
			prevNs = ns
		} else {
			rec = protowire.AppendVarint(rec, head)
		}
		kind.Kind = ev.Kind
		var err error
		if rec, err = opts.MarshalAppend(rec, &kind); err != nil {
			return nil, fmt.Errorf("actors: pack event %d: %w", i+1, err)
		}
		p.data = protowire.AppendBytes(p.data, rec)
	}
	p.data = append(make([]byte, 0, len(p.data)), p.data...) // the estimate was generous: keep what is used
	return p, nil
}

// timeNanos is t as nanoseconds since 1970, if it is a valid time that
// int64 nanoseconds hold (1678 to 2262).
func timeNanos(t *timestamppb.Timestamp) (int64, bool) {
	if t.CheckValid() != nil || t.Seconds < -9e9 || t.Seconds > 9e9 {
		return 0, false
	}
	return t.Seconds*1e9 + int64(t.Nanos), true
}

func (p *packedLog) len() int { return p.n }

// bytes is the memory the packed log holds.
func (p *packedLog) bytes() int64 { return int64(cap(p.data) + 16*cap(p.index) + 64) }

// decode returns events i to j-1 (0-based) as new messages.
func (p *packedLog) decode(i, j int) ([]*messages.RunEvent, error) {
	if i < 0 || j > p.n || i >= j {
		return nil, nil
	}
	evs := make([]*messages.RunEvent, 0, j-i)
	k := i / packIndexEvery * packIndexEvery
	mark := p.index[k/packIndexEvery]
	b, ns := p.data[mark.off:], mark.ns
	for ; k < j; k++ {
		rec, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return evs, fmt.Errorf("actors: packed event %d: %w", k+1, protowire.ParseError(n))
		}
		b = b[n:]
		head, m := protowire.ConsumeVarint(rec)
		if m < 0 {
			return evs, fmt.Errorf("actors: packed event %d: %w", k+1, protowire.ParseError(m))
		}
		rec = rec[m:]
		var t *timestamppb.Timestamp
		if head&1 == 1 {
			d, m := protowire.ConsumeVarint(rec)
			if m < 0 {
				return evs, fmt.Errorf("actors: packed event %d: %w", k+1, protowire.ParseError(m))
			}
			rec = rec[m:]
			ns += protowire.DecodeZigZag(d)
			t = &timestamppb.Timestamp{Seconds: ns / 1e9, Nanos: int32(ns % 1e9)}
			if t.Nanos < 0 {
				t.Seconds, t.Nanos = t.Seconds-1, t.Nanos+1e9
			}
		}
		if k < i {
			continue
		}
		ev := &messages.RunEvent{}
		if err := proto.Unmarshal(rec, ev); err != nil {
			return evs, fmt.Errorf("actors: packed event %d: %w", k+1, err)
		}
		ev.RunId, ev.Seq, ev.Epoch, ev.Time = p.runID, uint64(k+1), head>>1, t
		evs = append(evs, ev)
	}
	return evs, nil
}

// unpack decodes events i to j-1 of the packed log p. A log QLC packed
// itself always decodes; if one does not, the reader gets the events
// before the bad one and the error is logged.
func (h *Hub) unpack(p *packedLog, i, j int) []*messages.RunEvent {
	evs, err := p.decode(i, j)
	if err != nil {
		h.logger.Error("a finished run's packed log does not decode", "err", err)
	}
	return evs
}

// compactAfter is how long a finished run's log stays as it was written
// before it is packed: the run's end is billed, cached and answered from
// it at once (they read it whole, within milliseconds), and a client often
// reads the run resource right after the end. Later reads decode.
const compactAfter = 500 * time.Millisecond

// Pack packs a finished run's log now (see compact), for a caller that has
// read what it needed of the whole log at the end (the gateway's ledger
// has billed and stored it): the engine's own tick would pack it
// compactAfter later, and a busy gateway ends hundreds of runs in that
// time. It reports whether it packed (false: the run is live, packed, or
// still being read: the engine's tick packs it once its readers are done).
func (h *Hub) Pack() bool {
	ok, _ := h.compact(time.Now(), 0)
	if !ok {
		h.mu.Lock()
		h.packWanted = h.terminal && !h.compacted() // the last reader to leave packs it
		h.mu.Unlock()
	}
	return ok
}

// detachCoordinator replaces the hub's PID of its coordinator with a copy
// that caches no process (detachedPID).
func (h *Hub) detachCoordinator() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.coordinator = detachedPID(h.coordinator)
}

// readingAt reports whether readers are still on the log (open
// subscriptions, e.g. a stream still writing out the end of a run that
// ended faster than its reader read) and the run ended less than
// packWithReadersAfter before now: packed now, each of their later reads
// would decode — allocate again — what the live log shares. h.mu held.
func (h *Hub) readingAt(now time.Time) bool {
	return h.subscribers > 0 && now.Sub(h.endedAt) < packWithReadersAfter
}

// packWithReadersAfter is how long a finished run with readers still open
// waits to be packed: a reader that has not finished by then is slow, and
// the memory matters more than its decoding.
const packWithReadersAfter = 30 * time.Second

// waitsToPack reports whether a finished run not packed yet will be
// packable later (it ended less than minAge ago, or readers are still on
// it), so the engine keeps it in its packing queue.
func (h *Hub) waitsToPack(now time.Time, minAge time.Duration) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.terminal && !h.compacted() && (now.Sub(h.endedAt) < minAge || h.readingAt(now))
}

// LogInStore reports whether the run's log has left memory and is read
// back from the gateway's store when asked for (Engine.LogStored).
func (h *Hub) LogInStore() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.offloaded
}

// compacted reports whether the finished log is in its final form in
// memory: dropped for the store, or packed when no store has it. h.mu held.
func (h *Hub) compacted() bool {
	return h.offloaded || (h.packed != nil && h.store == nil)
}

// markStored records that the run's whole log is durably in s: compact
// then drops it from memory. False if the run has not ended.
func (h *Hub) markStored(s *storedLogs) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.terminal {
		return false
	}
	h.store = s
	return true
}

// storedHubBytes is what evict counts for a finished run whose log is in
// the store: the hub and its actor, not one byte per event.
const storedHubBytes = 2048

// compact packs a log that ended at least minAge before now (packedLog):
// the memory of a retained finished run becomes its encoding, and the
// garbage collector no longer traces it; a log the store holds
// (markStored) is dropped instead, packed or not, and read back from the
// store when asked for. It reports whether it packed (or dropped), and the
// log's memory then. Readers holding parts of the old log keep them; new
// reads decode.
func (h *Hub) compact(now time.Time, minAge time.Duration) (packed bool, size int64) {
	h.mu.Lock()
	if !h.terminal || h.compacted() || h.n == 0 || now.Sub(h.endedAt) < minAge || h.readingAt(now) {
		h.mu.Unlock()
		return false, 0
	}
	if h.store != nil {
		// The store has the log: memory keeps none of it. Nor an actor:
		// its mailbox took the run's events and acknowledged the log's end
		// to the coordinator in the message that ended it (before the run
		// could be recorded; a Stop is handled after the message under
		// way), and has nothing more to do — a coordinator that missed the
		// acknowledgement resends to nobody until its FinishLinger ends.
		// Each hub actor is a process, its mailbox and context, and an
		// entry in the actor registry: about a quarter of what a
		// retained run cost (TestRetainedStoredRunsCostNoLog).
		h.offloaded, h.log, h.packed, h.packWanted = true, nil, nil, false
		h.heapBytes = storedHubBytes
		h.coordinator = detachedPID(h.coordinator)
		pid, stop := h.pid, h.stopActor
		h.pid, h.stopActor = nil, nil
		h.mu.Unlock()
		if pid != nil && stop != nil {
			stop(pid)
		}
		return true, storedHubBytes
	}
	evs := h.log // immutable once terminal: nothing is appended after the end
	h.mu.Unlock()
	p, err := packLog(h.RunID, evs)
	if err != nil {
		h.logger.Warn("a finished run's log was not packed", "err", err)
		return false, 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.packed != nil || h.offloaded || len(h.log) != len(evs) {
		return false, 0
	}
	h.packed, h.log = p, nil
	h.heapBytes = p.bytes()
	h.coordinator = detachedPID(h.coordinator) // the stopped coordinator and its log go with it
	return true, h.heapBytes
}

// detachedPID is a copy of pid without the process it caches. protoactor's
// PID keeps a pointer to the local process it last reached and drops it
// only at its next use; a PID kept after its actor stopped keeps the
// stopped actor (a finished coordinator: its whole log) in memory.
func detachedPID(pid *actor.PID) *actor.PID {
	if pid == nil {
		return nil
	}
	return actor.NewPID(pid.Address, pid.Id)
}
