package quota

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// Errors of a Node.
var (
	// ErrBudget: the group refused the slice: the tenant's budget for the
	// period is allocated (to this process or others).
	ErrBudget = errors.New("quota: the tenant's budget is allocated")
	// ErrStopped: the node was stopped.
	ErrStopped = errors.New("quota: node stopped")
)

// Config configures a Node. DefaultConfig gives the values the cluster
// runs with.
type Config struct {
	// ID is this node's Raft id, one of Peers.
	ID uint64
	// Peers are the group's voters: fixed, 1, 2, 3 by default (no
	// membership change: a replaced machine takes over an id with its
	// log directory; a member whose log is lost must not come back under
	// its id with an empty one — it may vote twice in a term or forget a
	// committed entry the others lack — only with the whole group reset).
	Peers []uint64
	// Dir holds the write-ahead log. Empty: memory only — for tests; a
	// restart then forgets what this node voted and acknowledged, which
	// Raft does not allow.
	Dir string
	// Send carries a message to peer to. It must not block (drop rather:
	// Raft resends). Required.
	Send func(to uint64, data []byte)
	// Tick is Raft's logical clock period; ElectionTicks of them without a
	// leader's heartbeat start an election (heartbeats every tick).
	// 50 ms × 10: a leader lost is replaced in 0.5–1 s.
	Tick          time.Duration
	ElectionTicks int
	// Logger receives Raft's warnings and errors. Nil: slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the group of three with a 50 ms tick.
func DefaultConfig() Config {
	return Config{Peers: []uint64{1, 2, 3}, Tick: 50 * time.Millisecond, ElectionTicks: 10}
}

func (c *Config) validate() error {
	if len(c.Peers) == 0 {
		c.Peers = []uint64{1, 2, 3}
	}
	if c.Tick <= 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.ElectionTicks <= 1 {
		c.ElectionTicks = 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	switch {
	case c.ID == 0 || !slices.Contains(c.Peers, c.ID):
		return fmt.Errorf("quota: id %d is not one of the peers %v", c.ID, c.Peers)
	case c.Send == nil:
		return errors.New("quota: no Send")
	}
	return nil
}

// holding is what this process holds of one tenant's budget.
type holding struct {
	period int64
	held   int64 // granted to this process (applied here)
	used   int64 // taken by grants (reserved or settled)
}

// Node is one member of the quota group. Its methods are safe for
// concurrent use; Take, Release, Free and Available never block on the
// network.
type Node struct {
	cfg     Config
	inc     uint64 // this process's incarnation
	rn      raft.Node
	storage *raft.MemoryStorage
	log     *wal // nil: memory only
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	// mu guards the fields below.
	mu       sync.Mutex
	state    *State
	waiters  map[uint64]chan Result
	holdings map[string]*holding
	seq      uint64
	lead     uint64
	stopped  bool
}

// Start starts the node: it replays its log from cfg.Dir (or bootstraps
// the group's fixed configuration) and runs its goroutine until Stop.
func Start(cfg Config) (*Node, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	n := &Node{cfg: cfg, inc: binary.BigEndian.Uint64(b[:]) | 1, storage: raft.NewMemoryStorage(),
		stop: make(chan struct{}), done: make(chan struct{}),
		state: NewState(), waiters: map[uint64]chan Result{}, holdings: map[string]*holding{}}
	// Every member starts from the same snapshot at index 1: the voters,
	// no entries. No configuration change is ever logged.
	boot := &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: proto.Uint64(1), Term: proto.Uint64(1),
		ConfState: &pb.ConfState{Voters: slices.Clone(cfg.Peers)}}}
	if err := n.storage.ApplySnapshot(boot); err != nil {
		return nil, fmt.Errorf("quota: %w", err)
	}
	if cfg.Dir != "" {
		l, hs, ents, err := openWAL(cfg.Dir)
		if err != nil {
			return nil, err
		}
		n.log = l
		if hs != nil {
			if err := n.storage.SetHardState(hs); err != nil {
				l.close()
				return nil, fmt.Errorf("quota: %w", err)
			}
		}
		for _, e := range ents {
			if e.GetIndex() <= 1 {
				continue
			}
			if err := n.storage.Append([]*pb.Entry{e}); err != nil {
				l.close()
				return nil, fmt.Errorf("quota: replaying the log: %w", err)
			}
		}
	}
	n.rn = raft.RestartNode(&raft.Config{
		ID: cfg.ID, ElectionTick: cfg.ElectionTicks, HeartbeatTick: 1, Storage: n.storage,
		MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true,
		Logger: raftLogger{cfg.Logger.With("quota_id", cfg.ID)},
	})
	go n.run()
	return n, nil
}

// Stop stops the node and waits for its goroutine; waiting Acquires fail
// with ErrStopped. Idempotent.
func (n *Node) Stop() {
	n.once.Do(func() {
		close(n.stop)
		<-n.done
		n.rn.Stop()
		n.mu.Lock()
		n.stopped = true
		for req, ch := range n.waiters {
			close(ch)
			delete(n.waiters, req)
		}
		n.mu.Unlock()
		if n.log != nil {
			n.log.close()
		}
	})
}

// ID is this node's Raft id.
func (n *Node) ID() uint64 { return n.cfg.ID }

// Leader is the leader this node knows (0: none).
func (n *Node) Leader() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lead
}

// Step hands the node a message from a peer (the transport's data).
func (n *Node) Step(data []byte) error {
	m := &pb.Message{}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("quota: bad message: %w", err)
	}
	if m.GetTo() != n.cfg.ID || !slices.Contains(n.cfg.Peers, m.GetFrom()) {
		return fmt.Errorf("quota: message from %d to %d is not for this node", m.GetFrom(), m.GetTo())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	return n.rn.Step(ctx, m)
}

func (n *Node) run() {
	defer close(n.done)
	t := time.NewTicker(n.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.rn.Tick()
		case rd := <-n.rn.Ready():
			if rd.SoftState != nil {
				n.mu.Lock()
				n.lead = rd.SoftState.Lead
				n.mu.Unlock()
			}
			if n.log != nil && (rd.HardState != nil || len(rd.Entries) > 0) {
				if err := n.log.save(rd.HardState, rd.Entries, rd.MustSync); err != nil {
					// Nothing may be sent that the log does not hold: this
					// node stops taking part (the two others go on).
					n.cfg.Logger.Error("quota: cannot write the log; this node stops", "error", err)
					return
				}
			}
			if rd.HardState != nil {
				n.storage.SetHardState(rd.HardState)
			}
			if len(rd.Entries) > 0 {
				n.storage.Append(rd.Entries)
			}
			for _, m := range rd.Messages {
				if data, err := proto.Marshal(m); err == nil {
					n.cfg.Send(m.GetTo(), data)
				}
			}
			for _, e := range rd.CommittedEntries {
				if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
					n.apply(e.GetData())
				}
			}
			n.rn.Advance()
		}
	}
}

// apply decides a committed entry and credits this process with what was
// granted to it.
func (n *Node) apply(data []byte) {
	c, err := DecodeCommand(data)
	if err != nil {
		n.cfg.Logger.Warn("quota: skipping a bad log entry", "error", err)
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r := n.state.Apply(c)
	if c.Holder == n.cfg.ID && c.Inc == n.inc {
		if c.Op == OpGrant && !r.Refused {
			h := n.holdingLocked(c.Tenant, c.Period)
			if h != nil {
				h.held += r.Tokens
			}
		}
		if ch, ok := n.waiters[c.Req]; ok {
			ch <- r
			delete(n.waiters, c.Req)
		}
	}
}

// holdingLocked is tenant's holding for period, started afresh at a newer
// period; nil for an older one.
func (n *Node) holdingLocked(tenant string, period int64) *holding {
	h := n.holdings[tenant]
	if h == nil || period > h.period {
		h = &holding{period: period}
		n.holdings[tenant] = h
	}
	if period < h.period {
		return nil
	}
	return h
}

// Take takes tokens for a grant from the slices this process holds of
// tenant's budget for period; false: not enough left (Acquire more).
func (n *Node) Take(tenant string, period, tokens int64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.holdingLocked(tenant, period)
	if h == nil || h.held-h.used < tokens {
		return false
	}
	h.used += tokens
	return true
}

// Release gives tokens taken earlier back to this process's slices (a run
// settled for less than it reserved).
func (n *Node) Release(tenant string, period, tokens int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h := n.holdingLocked(tenant, period); h != nil {
		h.used = max(0, h.used-tokens)
	}
}

// Free is what this process holds of tenant's budget and has not taken.
func (n *Node) Free(tenant string, period int64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if h := n.holdingLocked(tenant, period); h != nil {
		return h.held - h.used
	}
	return 0
}

// Available is an estimate, from this replica's state (possibly behind),
// of what a grant of tenant's budget could take now: this process's free
// tokens plus the unallocated rest. For prechecks only.
func (n *Node) Available(tenant string, period, budget int64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	free := int64(0)
	if h := n.holdingLocked(tenant, period); h != nil {
		free = h.held - h.used
	}
	p, _, allocated := n.state.Allocated(tenant)
	if p != period {
		allocated = 0
	}
	return free + max(0, budget-allocated)
}

// Acquire asks the group for a slice of tenant's budget for period: at
// least need tokens, at most want. It returns once the grant is applied
// here (the tokens are then Free), ErrBudget if the group refused it, or
// ctx's error (no majority reachable: a proposal that commits later still
// credits this process).
func (n *Node) Acquire(ctx context.Context, tenant string, period, budget, need, want int64) (int64, error) {
	r, err := n.propose(ctx, Command{Op: OpGrant, Tenant: tenant, Period: period, Budget: budget, Min: need, Want: max(want, need)}, false)
	if err != nil {
		return 0, err
	}
	if r.Refused {
		return 0, fmt.Errorf("%w (%d of %d allocated)", ErrBudget, r.Allocated, r.Budget)
	}
	return r.Tokens, nil
}

// GiveBack returns what this process holds of tenant's budget and has not
// taken, so other nodes may have it. The tokens leave this process's
// holding at once (nothing is granted from them meanwhile); if the return
// never commits they stay allocated: wasted, never granted twice.
func (n *Node) GiveBack(ctx context.Context, tenant string, period int64) error {
	n.mu.Lock()
	h := n.holdingLocked(tenant, period)
	var free int64
	if h != nil {
		free = h.held - h.used
		h.held -= free
	}
	n.mu.Unlock()
	if free <= 0 {
		return nil
	}
	// Proposed once, never again: a second copy applied after the first
	// would give back tokens this process has taken since.
	_, err := n.propose(ctx, Command{Op: OpReturn, Tenant: tenant, Period: period, Tokens: free}, true)
	return err
}

// propose appends c (as this process's) and waits until it is applied
// here. A proposal dropped on the way (no leader, a leader change) is
// proposed again until ctx ends, unless once is set (a grant applied
// twice only credits this process twice; a return must not be).
func (n *Node) propose(ctx context.Context, c Command, once bool) (Result, error) {
	c.Holder, c.Inc = n.cfg.ID, n.inc
	for {
		n.mu.Lock()
		if n.stopped {
			n.mu.Unlock()
			return Result{}, ErrStopped
		}
		n.seq++
		c.Req = n.seq
		ch := make(chan Result, 1)
		n.waiters[c.Req] = ch
		n.mu.Unlock()
		data, err := json.Marshal(c)
		if err != nil {
			return Result{}, err
		}
		retry := time.NewTimer(time.Second)
		err = n.rn.Propose(ctx, data)
		if err == nil {
			select {
			case r, ok := <-ch:
				retry.Stop()
				if !ok {
					return Result{}, ErrStopped
				}
				return r, nil
			case <-retry.C: // lost on the way: propose again
				n.forget(c.Req)
				if once {
					return Result{}, errors.New("quota: no answer to a proposal made once")
				}
				continue
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		retry.Stop()
		n.forget(c.Req)
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("quota: no majority answered: %w", ctx.Err())
		}
		if once {
			return Result{}, fmt.Errorf("quota: proposal dropped: %w", err)
		}
		// Dropped (no leader known yet): wait a tick and try again.
		select {
		case <-ctx.Done():
			return Result{}, fmt.Errorf("quota: no majority answered: %w", ctx.Err())
		case <-time.After(n.cfg.Tick):
		}
	}
}

func (n *Node) forget(req uint64) {
	n.mu.Lock()
	delete(n.waiters, req)
	n.mu.Unlock()
}

// raftLogger hands Raft's log to slog: debug and info at debug level.
type raftLogger struct{ l *slog.Logger }

func (r raftLogger) Debug(v ...any)              { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Debugf(f string, v ...any)   { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Info(v ...any)               { r.l.Debug(fmt.Sprint(v...)) }
func (r raftLogger) Infof(f string, v ...any)    { r.l.Debug(fmt.Sprintf(f, v...)) }
func (r raftLogger) Warning(v ...any)            { r.l.Warn(fmt.Sprint(v...)) }
func (r raftLogger) Warningf(f string, v ...any) { r.l.Warn(fmt.Sprintf(f, v...)) }
func (r raftLogger) Error(v ...any)              { r.l.Error(fmt.Sprint(v...)) }
func (r raftLogger) Errorf(f string, v ...any)   { r.l.Error(fmt.Sprintf(f, v...)) }
func (r raftLogger) Fatal(v ...any)              { r.l.Error(fmt.Sprint(v...)); panic(fmt.Sprint(v...)) }
func (r raftLogger) Fatalf(f string, v ...any)   { r.Fatal(fmt.Sprintf(f, v...)) }
func (r raftLogger) Panic(v ...any)              { panic(fmt.Sprint(v...)) }
func (r raftLogger) Panicf(f string, v ...any)   { panic(fmt.Sprintf(f, v...)) }
