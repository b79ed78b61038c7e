package gateway

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
)

// The cluster console (GET /console, admin key): one snapshot of the
// cluster, pushed over SSE (GET /v1/admin/console/events) whenever it
// changes. Membership changes are pushed at once (the topology's Changed
// signal, and a 50 ms poll of the members memberlist suspects, which no
// event announces); the numbers only each node knows (its runs, stage
// attempts, mailbox depths, breakers) are asked of every node once a
// second, and only while someone watches.

// ConsoleMember is one member of the cluster as the console shows it.
type ConsoleMember struct {
	Name       string   `json:"name"`
	RemoteAddr string   `json:"remote_addr"`
	GossipAddr string   `json:"gossip_addr"`
	Version    string   `json:"version"`
	Kinds      []string `json:"kinds"`
	Features   []string `json:"features"`
	Load       int      `json:"load"`
	Draining   bool     `json:"draining"`
}

// ConsoleCluster is the membership the console watches (cmd/gateway adapts
// topology.Membership to it). Every method returns at once without
// blocking on the network and may be called from the console's goroutine
// at any time.
type ConsoleCluster interface {
	// Members returns the alive and suspect members, self included.
	Members() []ConsoleMember
	// Suspects names the members suspected now (a failed probe). The
	// console adds those whose actor connection broke lately.
	Suspects() []string
	// Changed receives a value after each membership change (coalesced).
	Changed() <-chan struct{}
	// LimiterHost is where tenant's limiter lives (actors.LimiterPlacer).
	LimiterHost(tenant string) (addr, view string, ok bool)
}

// Member states on the console.
const (
	memberAlive    = "alive"
	memberSuspect  = "suspect"
	memberDraining = "draining"
	memberDead     = "dead" // declared dead (it did not say it was leaving)
	memberLeft     = "left" // left gracefully (it was draining)
)

// Bounds of one snapshot.
const (
	consoleMaxMembers  = 256
	consoleMaxGone     = 32 // dead or left members kept
	consoleKeepGone    = 10 * time.Minute
	consoleMaxChanges  = 50
	consoleMaxRuns     = 100
	consoleMaxEnded    = 20 // runs that ended, still held by the engine
	consoleMaxTenants  = 100
	consoleMaxSnapshot = 1 << 20 // bytes of JSON; past it runs' steps are dropped
)

// consoleMemberView is a member with its state on the console.
type consoleMemberView struct {
	ConsoleMember
	State string    `json:"state"`
	Since time.Time `json:"since"` // when the console saw it enter State
}

// consoleChange is one member's change of state, as the console saw it.
type consoleChange struct {
	At     time.Time `json:"at"`
	Member string    `json:"member"`
	Remote string    `json:"remote_addr"`
	From   string    `json:"from"`
	To     string    `json:"to"`
}

// memberBook follows the members' states from successive views: who is
// alive, suspect or draining now, who went (dead or left) recently, and the
// recent changes. A pure function of its inputs (the caller passes the
// time); not safe for concurrent use.
type memberBook struct {
	cur     map[string]*consoleMemberView
	gone    []consoleMemberView // newest last, at most consoleMaxGone
	changes []consoleChange     // newest last, at most consoleMaxChanges
	version uint64              // counts changes that show on the console
}

func newMemberBook() *memberBook { return &memberBook{cur: map[string]*consoleMemberView{}} }

// update takes the current members and suspects; it reports whether the
// console's membership changed (states, kinds, features: not load).
func (b *memberBook) update(members []ConsoleMember, suspects []string, now time.Time) bool {
	changed := false
	seen := make(map[string]bool, len(members))
	for _, m := range members[:min(len(members), consoleMaxMembers)] {
		seen[m.Name] = true
		state := memberAlive
		switch {
		case slices.Contains(suspects, m.Name):
			state = memberSuspect
		case m.Draining:
			state = memberDraining
		}
		v, ok := b.cur[m.Name]
		switch {
		case !ok:
			v = &consoleMemberView{ConsoleMember: m, State: state, Since: now}
			b.cur[m.Name] = v
			b.note(now, m, "", state)
			changed = true
		case v.State != state:
			b.note(now, m, v.State, state)
			v.State, v.Since = state, now
			changed = true
		}
		if !slices.Equal(v.Kinds, m.Kinds) || !slices.Equal(v.Features, m.Features) || v.RemoteAddr != m.RemoteAddr || v.Version != m.Version {
			changed = true
		}
		v.ConsoleMember = m
	}
	for name, v := range b.cur {
		if seen[name] {
			continue
		}
		to := memberDead
		if v.State == memberDraining {
			to = memberLeft
		}
		b.note(now, v.ConsoleMember, v.State, to)
		delete(b.cur, name)
		g := *v
		g.State, g.Since = to, now
		b.gone = append(b.gone, g)
		changed = true
	}
	// Forget the long gone, and a gone name that came back (a partition
	// healed before the name was refused: it is in cur again).
	b.gone = slices.DeleteFunc(b.gone, func(g consoleMemberView) bool {
		return now.Sub(g.Since) > consoleKeepGone || b.cur[g.Name] != nil
	})
	if n := len(b.gone) - consoleMaxGone; n > 0 {
		b.gone = slices.Delete(b.gone, 0, n)
	}
	if changed {
		b.version++
	}
	return changed
}

func (b *memberBook) note(now time.Time, m ConsoleMember, from, to string) {
	b.changes = append(b.changes, consoleChange{At: now, Member: m.Name, Remote: m.RemoteAddr, From: from, To: to})
	if n := len(b.changes) - consoleMaxChanges; n > 0 {
		b.changes = slices.Delete(b.changes, 0, n)
	}
}

// views returns the members (current by name, then the gone, newest first).
func (b *memberBook) views() []consoleMemberView {
	out := make([]consoleMemberView, 0, len(b.cur)+len(b.gone))
	for _, v := range b.cur {
		c := *v
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b consoleMemberView) int { return strings.Compare(a.Name, b.Name) })
	for i := len(b.gone) - 1; i >= 0; i-- {
		out = append(out, b.gone[i])
	}
	return out
}

// setLoads refreshes the current members' announced loads (not a change).
func (b *memberBook) setLoads(members []ConsoleMember) {
	for _, m := range members {
		if v := b.cur[m.Name]; v != nil {
			v.Load = m.Load
		}
	}
}

// consoleSnapshot is what one SSE "snapshot" event carries.
type consoleSnapshot struct {
	Seq            uint64               `json:"seq"`
	At             time.Time            `json:"at"`
	Gateway        string               `json:"gateway"`
	Members        []consoleMemberView  `json:"members"`
	Changes        []consoleChange      `json:"changes"`
	Nodes          []consoleNodeView    `json:"nodes"`
	NodesAt        *time.Time           `json:"nodes_at,omitempty"` // when the nodes were last asked
	Limiters       []consoleLimiterView `json:"limiters"`
	TokenizerHosts []string             `json:"tokenizer_hosts"`
	Runs           []consoleRunView     `json:"runs"`
}

type consoleNodeView struct {
	Node            string               `json:"node"`
	Member          string               `json:"member,omitempty"`
	Hosted          int32                `json:"hosted"`
	Runs            []consoleHostedView  `json:"runs"`
	AttemptsRunning int32                `json:"attempts_running"`
	AttemptsWaiting int32                `json:"attempts_waiting"`
	AttemptsTotal   int64                `json:"attempts_total"`
	AttemptsFailed  int64                `json:"attempts_failed"`
	RunSlotsInUse   int32                `json:"run_slots_in_use"`
	RunsWaiting     int32                `json:"runs_waiting"`
	Mailbox         map[string]int64     `json:"mailbox_depth"`
	Breakers        []consoleBreakerView `json:"breakers"`
}

type consoleHostedView struct {
	RunID string    `json:"run_id"`
	Epoch uint64    `json:"epoch"`
	State string    `json:"state"`
	Since time.Time `json:"since"`
}

type consoleBreakerView struct {
	Endpoint string `json:"endpoint"`
	State    string `json:"state"`
}

type consoleLimiterView struct {
	Tenant string `json:"tenant"`
	Host   string `json:"host"`
}

type consoleRunView struct {
	ID          string            `json:"id"`
	Tenant      string            `json:"tenant"`
	Profile     string            `json:"profile"`
	Status      string            `json:"status"`
	CreatedAt   time.Time         `json:"created_at"`
	TraceID     string            `json:"trace_id,omitempty"`
	Coordinator string            `json:"coordinator,omitempty"`
	LastSeq     uint64            `json:"last_seq"`
	Steps       []consoleStepView `json:"steps"`
}

type consoleStepView struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	Model    string `json:"model"`
	Status   string `json:"status"`
	Attempts int32  `json:"attempts"`
	Tokens   int64  `json:"tokens"`
}

// nodeViews turns the nodes' replies into the snapshot's section, naming
// each node's member where the membership knows its address.
func nodeViews(replies []*messages.ConsoleReply, members []consoleMemberView) []consoleNodeView {
	byAddr, gone := map[string]string{}, map[string]bool{}
	for _, m := range members {
		if m.State != memberDead && m.State != memberLeft {
			byAddr[m.RemoteAddr] = m.Name
		} else {
			gone[m.RemoteAddr] = true
		}
	}
	out := make([]consoleNodeView, 0, len(replies))
	for _, r := range replies {
		if gone[r.Node] && byAddr[r.Node] == "" {
			continue // asked before it went: not a node any more
		}
		v := consoleNodeView{Node: r.Node, Member: byAddr[r.Node], Hosted: r.Hosted, Runs: []consoleHostedView{},
			AttemptsRunning: r.AttemptsRunning, AttemptsWaiting: r.AttemptsWaiting, AttemptsTotal: r.AttemptsTotal,
			AttemptsFailed: r.AttemptsFailed, RunSlotsInUse: r.RunSlotsInUse, RunsWaiting: r.RunsWaiting,
			Mailbox: r.MailboxDepth, Breakers: []consoleBreakerView{}}
		if v.Mailbox == nil {
			v.Mailbox = map[string]int64{}
		}
		for _, h := range r.Runs {
			v.Runs = append(v.Runs, consoleHostedView{RunID: h.RunId, Epoch: h.Epoch, State: h.State, Since: h.Since.AsTime()})
		}
		for _, b := range r.Breakers {
			v.Breakers = append(v.Breakers, consoleBreakerView{Endpoint: b.Endpoint, State: b.State})
		}
		out = append(out, v)
	}
	return out
}

// tokenizerHosts lists the current members hosting tokenizer actors.
func tokenizerHosts(members []consoleMemberView) []string {
	out := []string{}
	for _, m := range members {
		if m.State != memberDead && m.State != memberLeft && slices.Contains(m.Kinds, actors.KindTokenizer) {
			out = append(out, m.RemoteAddr)
		}
	}
	return out
}

// encodeSnapshot marshals snap, dropping runs' steps (then runs) when it
// would pass consoleMaxSnapshot bytes.
func encodeSnapshot(snap *consoleSnapshot) []byte {
	b, _ := json.Marshal(snap)
	if len(b) <= consoleMaxSnapshot {
		return b
	}
	for i := range snap.Runs {
		snap.Runs[i].Steps = nil
	}
	if b, _ = json.Marshal(snap); len(b) <= consoleMaxSnapshot {
		return b
	}
	snap.Runs = nil
	b, _ = json.Marshal(snap)
	return b
}

// consoleHub builds snapshots and hands the latest to watchers. A watcher
// that falls behind skips to the latest: nothing queues.
//
// Goroutines (started by start, stopped by the Server's stop channel): the
// membership watcher, which owns the memberBook; the node poller, which
// asks the nodes once a second while someone watches.
type consoleHub struct {
	s       *Server
	cluster ConsoleCluster // nil: no cluster (a single process)

	// mu guards the fields below. Never held while asking nodes.
	mu       sync.Mutex
	book     *memberBook
	nodes    []*messages.ConsoleReply
	nodesAt  time.Time
	runs     []consoleRunView
	limiters []consoleLimiterView
	seq      uint64
	latest   []byte // the latest snapshot's JSON
	watchers map[chan struct{}]struct{}

	wake chan struct{} // cap 1: a watcher arrived → poll now
}

func newConsoleHub(s *Server, c ConsoleCluster) *consoleHub {
	return &consoleHub{s: s, cluster: c, book: newMemberBook(), watchers: map[chan struct{}]struct{}{}, wake: make(chan struct{}, 1)}
}

// watch registers a watcher: its channel (cap 1) is signalled after each
// new snapshot. The returned function unregisters it.
func (h *consoleHub) watch() (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	h.watchers[ch] = struct{}{}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
	return ch, func() {
		h.mu.Lock()
		delete(h.watchers, ch)
		h.mu.Unlock()
	}
}

func (h *consoleHub) watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.watchers) > 0
}

// nodesAskedSince reports whether the latest snapshot has the nodes'
// answers to a query made at or after t.
func (h *consoleHub) nodesAskedSince(t time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return !h.nodesAt.Before(t) && h.latest != nil
}

// latestSnapshot returns the newest snapshot's sequence number and JSON.
func (h *consoleHub) latestSnapshot() (uint64, []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq, h.latest
}

// publishLocked builds a snapshot from what is known and signals the
// watchers. h.mu must be held.
func (h *consoleHub) publishLocked(now time.Time) {
	h.seq++
	members := h.book.views()
	snap := &consoleSnapshot{Seq: h.seq, At: now.UTC(), Gateway: h.s.engine.Address(), Members: members,
		Changes: slices.Clone(h.book.changes), Nodes: nodeViews(h.nodes, members), Limiters: h.limiters,
		TokenizerHosts: tokenizerHosts(members), Runs: h.runs}
	if snap.Changes == nil {
		snap.Changes = []consoleChange{}
	}
	if snap.Limiters == nil {
		snap.Limiters = []consoleLimiterView{}
	}
	if snap.Runs == nil {
		snap.Runs = []consoleRunView{}
	}
	if !h.nodesAt.IsZero() {
		at := h.nodesAt.UTC()
		snap.NodesAt = &at
	}
	h.latest = encodeSnapshot(snap)
	for ch := range h.watchers {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// consoleEndpointLost is how long a member whose actor connection broke
// shows as suspect (unless the membership declares it dead first).
const consoleEndpointLost = 3 * time.Second

// view reads the cluster's members and suspects: the members the
// membership suspects, and those whose actor connection broke lately (a
// killed process: its connections break at once, while the membership
// needs a probe, then the suspicion timeout).
func (h *consoleHub) view(now time.Time) ([]ConsoleMember, []string) {
	ms, sus := h.cluster.Members(), h.cluster.Suspects()
	for _, m := range ms {
		if at, ok := h.s.engine.EndpointLost(m.RemoteAddr); ok && now.Sub(at) < consoleEndpointLost && !slices.Contains(sus, m.Name) {
			sus = append(sus, m.Name)
		}
	}
	return ms, sus
}

// members reads the cluster's view into the book; it reports a change.
func (h *consoleHub) members(now time.Time) bool {
	if h.cluster == nil {
		return false
	}
	ms, sus := h.view(now)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.book.update(ms, sus, now) {
		h.mu.Unlock()
		limiters := h.consoleLimiters() // owners move with the membership (local, no I/O)
		h.mu.Lock()
		h.limiters = limiters
		h.publishLocked(now)
		return true
	}
	h.book.setLoads(ms)
	return false
}

// watchMembers is the membership goroutine: at each Changed signal, and
// every 50 ms while watched (every second otherwise: dead members still
// get recorded), it reads the members.
func (h *consoleHub) watchMembers(stop <-chan struct{}) {
	var changed <-chan struct{}
	if h.cluster != nil {
		changed = h.cluster.Changed()
	}
	h.members(time.Now())
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-changed:
			h.members(time.Now())
		case <-t.C:
			h.members(time.Now())
			if h.watched() {
				t.Reset(50 * time.Millisecond)
			} else {
				t.Reset(time.Second)
			}
		}
	}
}

// pollNodes is the node poller: while watched, once a second (and at once
// when a watcher arrives) it asks every node, folds the in-flight runs and
// resolves the limiter hosts, then publishes.
func (h *consoleHub) pollNodes(stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-h.wake:
		case <-t.C:
			if !h.watched() {
				continue
			}
		}
		replies := h.s.engine.ConsoleNodes()
		runs := h.s.consoleRuns()
		limiters := h.consoleLimiters()
		now := time.Now()
		if h.cluster != nil {
			ms, sus := h.view(now)
			h.mu.Lock()
			h.book.update(ms, sus, now)
			h.book.setLoads(ms)
			h.mu.Unlock()
		}
		h.mu.Lock()
		h.nodes, h.nodesAt, h.runs, h.limiters = replies, now, runs, limiters
		h.publishLocked(now)
		h.mu.Unlock()
	}
}

// consoleLimiters resolves where each tenant's limiter lives (at most
// consoleMaxTenants tenants).
func (h *consoleHub) consoleLimiters() []consoleLimiterView {
	if h.cluster == nil || h.s.tenancy == nil {
		return nil
	}
	ts, _ := h.s.tenancy.snapshot()
	var out []consoleLimiterView
	for _, tn := range ts {
		if tn.Deleted {
			continue
		}
		if len(out) == consoleMaxTenants {
			break
		}
		addr, _, ok := h.cluster.LimiterHost(tn.ID)
		if !ok {
			addr = ""
		}
		out = append(out, consoleLimiterView{Tenant: tn.ID, Host: addr})
	}
	slices.SortFunc(out, func(a, b consoleLimiterView) int { return strings.Compare(a.Tenant, b.Tenant) })
	return out
}

// consoleRuns folds the in-flight runs (at most consoleMaxRuns, oldest
// first), then the last consoleMaxEnded runs that ended (newest first),
// into their steps.
func (s *Server) consoleRuns() []consoleRunView {
	running, ended := s.engine.ConsoleHubs(consoleMaxRuns, consoleMaxEnded)
	hubs := append(running, ended...)
	out := make([]consoleRunView, 0, len(hubs))
	for _, h := range hubs {
		evs := h.Events(1)
		p, _ := s.engine.Stages().Profile(h.Profile)
		f := newRunFold(p, s.engine.Stages(), false)
		f.fold(evs)
		v := consoleRunView{ID: h.RunID, Tenant: h.Tenant, Profile: h.Profile, Status: f.status, CreatedAt: h.Created.UTC(),
			TraceID: h.TraceID, Steps: []consoleStepView{}}
		if v.Status == "" {
			v.Status = "running"
		}
		if c := h.Coordinator(); c != nil {
			v.Coordinator = c.Address
		}
		if len(evs) > 0 {
			v.LastSeq = evs[len(evs)-1].Seq
		}
		for _, st := range f.views() {
			v.Steps = append(v.Steps, consoleStepView{ID: st.ID, Title: st.Title, Model: st.Model, Status: st.Status, Attempts: st.Attempts, Tokens: st.Tokens})
		}
		out = append(out, v)
	}
	return out
}
