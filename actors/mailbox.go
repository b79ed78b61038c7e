package actors

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
)

// Mailboxes. Every actor kind of this package that others can flood has a
// bounded mailbox that never blocks its sender, and says what it does with
// a message that finds it full.
//
// Why not protoactor's own: actor.Bounded(n) blocks the sender when full
// (Workiva RingBuffer.Put), and for a message from another process the
// sender is the transport's endpoint reader, so one full mailbox would stall
// every message from that process (and an actor sending to itself would
// deadlock); actor.BoundedDropping(n) drops the oldest message silently,
// but still counts it as queued, so its mailbox never sees itself empty
// and keeps rescheduling itself. Both round n up to a power of two.
//
// A boundedMailbox holds at most Size user messages that its policy lets it
// drop; messages the policy keeps (control messages whose number the
// protocol bounds: a run's cancel, its watcher's notes, one answer per
// request the actor made) are queued even when it is full. System messages
// (Watch, Terminated, Stop) are protoactor's, few, and always queued.
//
// The bounds, by actor kind (mailboxPolicies):
//
//	kind         bound  full: what is dropped, and how the sender recovers
//	hub          4096   RunEvent, RunEventBatch. A lostEvents note is queued (once until taken) and
//	                    the hub asks the coordinator to resend from its last seq: the log stays whole.
//	                    RunHeartbeat (an answer to the hub's own probe; it probes again).
//	coordinator  1024   FindRun, and Subscribe of a new subscriber (from seq 1), from other gateways:
//	                    the asker times out (Attach answers "not found"; the client asks again);
//	                    RunProbe (the hub probes again while the coordinator stays silent). A
//	                    hub's resend after a gap (from seq > 1) is kept: it asks once per gap. Worker
//	                    deltas, attempt results, CancelRun and RunEventAck are kept: dropping them
//	                    would corrupt or never stop the run, and the protocol bounds them.
//	limiter      4096   Admit (the gateway's Engine.Admit tries again until its AdmitTimeout, then
//	                    answers 503 limiter_unavailable: slower, never wrong). Settle is kept (one per
//	                    run; a lost one is also recovered from the ledger). The tenant limiter's queue
//	                    of messages waiting for a rebuild is capped the same (maxPendingAdmits).
//	run-starter  1024   StartRun, FindRun (the gateway's SpawnTimeout expires and it tries the next node),
//	                    RelayProbe (the hub asks again while the coordinator stays silent).
//	quota        1024   QuotaMessage (a Raft message of the tenant-budget group: Raft resends what is lost).
//	tokenizer    1024   CountTokens, FitToBudget (the caller counts locally after TokenizerTimeout).
//	worker       —      unbounded queue: only its coordinator talks to it (one start, one stop).
//
// Not bounded here: protoactor's EndpointWriter queue (its own, unbounded: a
// ring that doubles when full, started at endpointWriterQueue envelopes, not
// protoactor's 1 000 000 — 16 MB per peer) and the ledger/registry service
// actors (being moved to their own types).
type mailboxPolicy struct {
	// Size is how many droppable messages the mailbox holds.
	Size int
	// Drop reports whether a message may be dropped when the mailbox is full.
	Drop func(m any) bool
	// Note, if set, is queued after a drop (beyond the bound, once until the
	// actor has taken it): it tells the actor it lost messages.
	Note any
}

// lostEvents is the hub mailbox's note that it dropped events.
type lostEvents struct{}

// mailboxPolicies are the bounds of the table above, by kind.
var mailboxPolicies = map[string]mailboxPolicy{
	"hub": {Size: 4096, Note: lostEvents{}, Drop: func(m any) bool {
		switch m.(type) {
		case *messages.RunEvent, *messages.RunEventBatch, *messages.RunHeartbeat:
			return true
		}
		return false
	}},
	"coordinator": {Size: 1024, Drop: func(m any) bool {
		switch m := m.(type) {
		case *messages.Subscribe:
			// A resend its hub asks after a gap (from_seq > 1) is kept: the
			// hub asks once per gap. A new subscriber (from seq 1) may go.
			return m.GetFromSeq() <= 1
		case *messages.FindRun, *messages.RunProbe:
			return true
		}
		return false
	}},
	"limiter": {Size: 4096, Drop: func(m any) bool { _, ok := m.(*messages.Admit); return ok }},
	"quota":   {Size: 1024, Drop: func(m any) bool { _, ok := m.(*messages.QuotaMessage); return ok }},
	"run-starter": {Size: 1024, Drop: func(m any) bool {
		switch m.(type) {
		case *messages.StartRun, *messages.FindRun, *messages.RelayProbe:
			return true
		}
		return false
	}},
	"tokenizer": {Size: 1024, Drop: func(m any) bool {
		switch m.(type) {
		case *messages.CountTokens, *messages.FitToBudget:
			return true
		}
		return false
	}},
}

// maxPendingAdmits caps the messages a tenant limiter keeps while it
// rebuilds; an Admit beyond it is dropped like one that found the mailbox
// full (the gateway asks again).
const maxPendingAdmits = 4096

const (
	mailboxIdle int32 = iota
	mailboxRunning
)

// boundedMailbox is an actor.Mailbox with a mailboxPolicy. It follows
// protoactor's default mailbox (system messages first, throughput batches,
// suspend and resume) with mutex-guarded queues.
type boundedMailbox struct {
	policy  mailboxPolicy
	mw      []actor.MailboxMiddleware
	dropped func() // counts a dropped message

	invoker    actor.MessageInvoker
	dispatcher actor.Dispatcher
	status     atomic.Int32
	suspended  atomic.Bool

	// mu guards the fields below it.
	mu        sync.Mutex
	user      []any
	userHead  int
	droppable int // droppable messages in user
	sys       []any
	noted     bool // the Note is queued and not taken yet
}

func newBoundedMailbox(p mailboxPolicy, dropped func(), mw ...actor.MailboxMiddleware) *boundedMailbox {
	return &boundedMailbox{policy: p, dropped: dropped, mw: mw}
}

// PostUserMessage queues message unless its policy drops it; it never blocks.
func (m *boundedMailbox) PostUserMessage(message any) {
	if batch, ok := message.(actor.MessageBatch); ok {
		for _, msg := range batch.GetMessages() {
			m.PostUserMessage(msg)
		}
	}
	drop := m.policy.Drop != nil && m.policy.Drop(actor.UnwrapEnvelopeMessage(message))
	m.mu.Lock()
	if drop && m.droppable >= m.policy.Size {
		note := m.policy.Note != nil && !m.noted
		if note {
			m.noted = true
			m.user = append(m.user, m.policy.Note)
		}
		m.mu.Unlock()
		if m.dropped != nil {
			m.dropped()
		}
		if note {
			m.posted(m.policy.Note)
			m.schedule()
		}
		return
	}
	if drop {
		m.droppable++
	}
	m.user = append(m.user, message)
	m.mu.Unlock()
	m.posted(message)
	m.schedule()
}

func (m *boundedMailbox) posted(message any) {
	for _, mw := range m.mw {
		mw.MessagePosted(message)
	}
}

// PostSystemMessage queues a system message (never dropped).
func (m *boundedMailbox) PostSystemMessage(message any) {
	m.mu.Lock()
	m.sys = append(m.sys, message)
	m.mu.Unlock()
	m.posted(message)
	m.schedule()
}

func (m *boundedMailbox) RegisterHandlers(invoker actor.MessageInvoker, dispatcher actor.Dispatcher) {
	m.invoker, m.dispatcher = invoker, dispatcher
}

func (m *boundedMailbox) Start() {
	for _, mw := range m.mw {
		mw.MailboxStarted()
	}
}

// UserMessageCount is how many user messages are queued.
func (m *boundedMailbox) UserMessageCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.user) - m.userHead
}

func (m *boundedMailbox) schedule() {
	if m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
		m.dispatcher.Schedule(m.process)
	}
}

func (m *boundedMailbox) counts() (sys, user int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sys), len(m.user) - m.userHead
}

func (m *boundedMailbox) process() {
	for {
		m.run()
		m.status.Store(mailboxIdle)
		sys, user := m.counts()
		// A message posted after run's last look finds the mailbox running
		// and does not schedule it: look again.
		if sys > 0 || (!m.suspended.Load() && user > 0) {
			if m.status.CompareAndSwap(mailboxIdle, mailboxRunning) {
				continue
			}
		}
		if user == 0 && !m.suspended.Load() {
			for _, mw := range m.mw {
				mw.MailboxEmpty()
			}
		}
		return
	}
}

func (m *boundedMailbox) popSys() any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.sys) == 0 {
		return nil
	}
	msg := m.sys[0]
	m.sys[0] = nil
	m.sys = m.sys[1:]
	return msg
}

func (m *boundedMailbox) popUser() any {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.userHead == len(m.user) {
		return nil
	}
	msg := m.user[m.userHead]
	m.user[m.userHead] = nil
	m.userHead++
	if m.userHead == len(m.user) {
		m.user, m.userHead = m.user[:0], 0
	} else if m.userHead >= 1024 && m.userHead*2 >= len(m.user) {
		m.user, m.userHead = append(m.user[:0], m.user[m.userHead:]...), 0
	}
	switch {
	case m.policy.Note != nil && msg == m.policy.Note:
		m.noted = false
	case m.policy.Drop != nil && m.policy.Drop(actor.UnwrapEnvelopeMessage(msg)):
		m.droppable--
	}
	return msg
}

func (m *boundedMailbox) run() {
	var msg any
	defer func() {
		if r := recover(); r != nil {
			m.invoker.EscalateFailure(r, msg)
		}
	}()
	i, t := 0, m.dispatcher.Throughput()
	for {
		if i > t {
			i = 0
			runtime.Gosched()
		}
		i++
		if msg = m.popSys(); msg != nil {
			switch msg.(type) {
			case *actor.SuspendMailbox:
				m.suspended.Store(true)
			case *actor.ResumeMailbox:
				m.suspended.Store(false)
			default:
				m.invoker.InvokeSystemMessage(msg)
			}
			for _, mw := range m.mw {
				mw.MessageReceived(msg)
			}
			continue
		}
		if m.suspended.Load() {
			return
		}
		if msg = m.popUser(); msg == nil {
			return
		}
		m.invoker.InvokeUserMessage(msg)
		for _, mw := range m.mw {
			mw.MessageReceived(msg)
		}
	}
}
