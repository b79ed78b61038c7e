package actors

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/qlc-project/qlc/internal/neardup"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// RunCacheConfig bounds the response cache of an engine: completed runs'
// logs, by request (see Engine.StartRun), so an identical request is
// answered by replaying one instead of calling the models again, and
// identical requests in flight at once share one run.
type RunCacheConfig struct {
	// MaxBytes bounds the logs kept (their protobuf size); the least
	// recently used go first. 0: DefaultRunCacheBytes; < 0: no cache and
	// no sharing of runs in flight.
	MaxBytes int64
	// MaxEntryBytes: a longer log is not kept. 0: MaxBytes/16.
	MaxEntryBytes int64
	// TTL is how long a log is served. 0: DefaultRunCacheTTL.
	TTL time.Duration
}

// Defaults of RunCacheConfig.
const (
	DefaultRunCacheBytes = 64 << 20
	DefaultRunCacheTTL   = time.Hour
)

// runCache holds completed runs' logs by cache key (an LRU bounded in
// bytes, with a TTL), and the runs in flight by key, so that identical
// requests arriving together share one. Safe for concurrent use.
type runCache struct {
	maxBytes, maxEntry int64
	ttl                time.Duration
	now                func() time.Time

	mu       sync.Mutex
	entries  map[string]*list.Element // of *cacheEntry
	lru      list.List                // front: most recently used
	bytes    int64
	inflight map[string]*inflightRun
	near     map[string][]nearEntry // scope → kept questions, oldest first
	// claims are the runs in flight, started through any gateway, for the
	// keys this gateway owns (key → claim; at most maxClaims, each for at
	// most claimTTL).
	claims map[string]runClaim
}

// runClaim is a run in flight for a key (runCache.claims).
type runClaim struct {
	run string
	at  time.Time
}

// maxClaims bounds the claims an owner keeps; when it is full of live
// claims a new one is not recorded (that request's run is not shared with
// other gateways: slower, never wrong). claimTTL outlasts any run that
// should be shared (a claim is dropped earlier when its run ends).
const (
	maxClaims = 4096
	claimTTL  = 10 * time.Minute
)

type cacheEntry struct {
	key     string
	from    string // the run whose log it is
	events  []*messages.RunEvent
	size    int64
	expires time.Time
}

// inflightRun is a run started for a cache key and not ended yet; ready
// is closed once hub is set (nil: the run did not start).
type inflightRun struct {
	ready chan struct{}
	hub   *Hub
}

func newRunCache(cfg RunCacheConfig) *runCache {
	if cfg.MaxBytes < 0 {
		return nil
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultRunCacheBytes
	}
	if cfg.MaxEntryBytes <= 0 {
		cfg.MaxEntryBytes = cfg.MaxBytes / 16
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultRunCacheTTL
	}
	return &runCache{maxBytes: cfg.MaxBytes, maxEntry: cfg.MaxEntryBytes, ttl: cfg.TTL, now: time.Now,
		entries: map[string]*list.Element{}, inflight: map[string]*inflightRun{}, near: map[string][]nearEntry{},
		claims: map[string]runClaim{}}
}

// claim returns the run in flight for key among every gateway's (this
// gateway owns key), recording run as it when there is none (run ""
// records nothing). stale, a run the asker found ended without an answer,
// is no longer in flight.
func (c *runCache) claim(key, run, stale string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if cl, ok := c.claims[key]; ok && now.Sub(cl.at) < claimTTL && cl.run != stale {
		return cl.run
	}
	delete(c.claims, key)
	if run == "" {
		return ""
	}
	if len(c.claims) >= maxClaims {
		for k, cl := range c.claims {
			if now.Sub(cl.at) >= claimTTL {
				delete(c.claims, k)
			}
		}
		if len(c.claims) >= maxClaims {
			return ""
		}
	}
	c.claims[key] = runClaim{run: run, at: now}
	return run
}

// release drops run's claim on key (it ended without an answer, or its log
// is kept now).
func (c *runCache) release(key, run string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.claims[key]; ok && cl.run == run {
		delete(c.claims, key)
	}
}

// nearScope is the key of a request without its question: near-duplicate
// questions are looked for among the kept runs of the same scope; "" when
// the profile does not opt in.
func nearScope(req RunRequest, p *stagework.Profile) string {
	if p == nil || !p.CacheNearDuplicates {
		return ""
	}
	r := req
	r.Query = ""
	k, ok := cacheKey(r, p)
	if !ok {
		return ""
	}
	return k
}

// maxNearPerScope bounds the kept questions compared with a new one of the
// same scope (the newest kept).
const maxNearPerScope = 256

type nearEntry struct {
	sig neardup.Signature
	key string
}

// cacheKey is the key of a request, and whether it may be cached at all:
// the caller did not opt out, and the answer is reproducible — a seed, or
// no step samples (temperature 0), or the profile accepts it anyway
// (cache_unseeded). The key covers the tenant (never shared across
// tenants), the profile and every step's settings (a changed profiles
// file misses), the question with its whitespace normalised, the history,
// the seed and max_tokens.
func cacheKey(req RunRequest, p *stagework.Profile) (string, bool) {
	if req.NoCache || p == nil {
		return "", false
	}
	if req.Seed == 0 && !p.CacheUnseeded {
		for _, st := range p.Stages {
			if st.Stage != stagework.StageTally && st.Temperature > 0 {
				return "", false
			}
		}
	}
	h := sha256.New()
	field := func(s string) {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	field(req.Tenant)
	field(p.Name)
	if len(req.ProfileDefinition) > 0 {
		// The tenant's own profile: its definition, as it is now (a
		// profile put again under the same name is another profile).
		d := sha256.Sum256(req.ProfileDefinition)
		field("own:" + hex.EncodeToString(d[:]))
	}
	field(fmt.Sprintf("%s|%+v", p.Strategy, p.Stages))
	field(strings.Join(strings.Fields(req.Query), " "))
	for _, m := range req.History {
		field(m.Role)
		field(strings.Join(strings.Fields(m.Content), " "))
	}
	field(strconv.FormatInt(req.Seed, 10))
	field(strconv.Itoa(req.MaxTokens))
	if !req.Budget.IsZero() { // its cost cap may stop optional steps
		field(fmt.Sprintf("budget %+v", req.Budget))
	}
	return hex.EncodeToString(h.Sum(nil)), true
}

// get returns the log kept for key, if any and not expired.
func (c *runCache) get(key string) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	ent := el.Value.(*cacheEntry)
	if !c.now().Before(ent.expires) {
		c.remove(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	return ent, true
}

func (c *runCache) remove(el *list.Element) {
	ent := el.Value.(*cacheEntry)
	c.lru.Remove(el)
	delete(c.entries, ent.key)
	c.bytes -= ent.size
}

// put keeps a completed run's log for key (not one too long).
func (c *runCache) put(key, from string, events []*messages.RunEvent) bool {
	var size int64
	for _, ev := range events {
		size += int64(proto.Size(ev)) + 64
	}
	if size > c.maxEntry {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.remove(el)
	}
	if cl, ok := c.claims[key]; ok && cl.run == from {
		delete(c.claims, key) // kept: a later request replays it
	}
	c.entries[key] = c.lru.PushFront(&cacheEntry{key: key, from: from, events: events, size: size, expires: c.now().Add(c.ttl)})
	c.bytes += size
	for c.bytes > c.maxBytes {
		c.remove(c.lru.Back())
	}
	return true
}

// lead returns the run in flight for key, or registers the caller as the
// one starting it (then it must call started, with the hub or nil).
func (c *runCache) lead(key string) (existing *inflightRun, mine *inflightRun) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r, ok := c.inflight[key]; ok {
		return r, nil
	}
	r := &inflightRun{ready: make(chan struct{})}
	c.inflight[key] = r
	return nil, r
}

// started records the hub of a run led for key (nil: it did not start,
// and the key is free again).
func (c *runCache) started(key string, r *inflightRun, hub *Hub) {
	c.mu.Lock()
	r.hub = hub
	if hub == nil && c.inflight[key] == r {
		delete(c.inflight, key)
	}
	c.mu.Unlock()
	close(r.ready)
}

// getNear returns a kept log whose question is a near-duplicate of query
// in scope (the newest that matches).
func (c *runCache) getNear(scope, query string) (*cacheEntry, bool) {
	if scope == "" {
		return nil, false
	}
	sig := neardup.Sign(query)
	c.mu.Lock()
	cands := slices.Clone(c.near[scope])
	c.mu.Unlock()
	for i := len(cands) - 1; i >= 0; i-- {
		if neardup.Match(sig, cands[i].sig) {
			if ent, ok := c.get(cands[i].key); ok {
				return ent, true
			}
		}
	}
	return nil, false
}

// addNear remembers a kept run's question in scope.
func (c *runCache) addNear(scope, query, key string) {
	sig := neardup.Sign(query)
	c.mu.Lock()
	defer c.mu.Unlock()
	l := append(c.near[scope], nearEntry{sig: sig, key: key})
	if len(l) > maxNearPerScope {
		l = slices.Delete(l, 0, len(l)-maxNearPerScope)
	}
	c.near[scope] = l
	if len(c.near) > maxNearScopes {
		for s := range c.near { // any other scope goes: the map stays bounded
			if s != scope {
				delete(c.near, s)
				break
			}
		}
	}
}

// maxNearScopes bounds the scopes (tenant × profile × settings) with
// near-duplicate indexes.
const maxNearScopes = 4096

// ended is a led run's end: its log is kept if it completed, and the key
// is free for the next run.
func (c *runCache) ended(key string, h *Hub) (kept bool) {
	// Kept before the key is freed: a request in between finds one or
	// the other.
	if evs := h.Events(1); len(evs) > 0 && evs[len(evs)-1].GetRunCompleted() != nil {
		kept = c.put(key, h.RunID, evs)
		if scope := h.getNearScope(); kept && scope != "" {
			c.addNear(scope, h.Query, key)
		}
	}
	c.mu.Lock()
	if r, ok := c.inflight[key]; ok && r.hub == h {
		delete(c.inflight, key)
	}
	c.mu.Unlock()
	return kept
}

// clear drops every kept log (runs in flight stay shared).
func (c *runCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = map[string]*list.Element{}
	c.near = map[string][]nearEntry{}
	c.lru.Init()
	c.bytes = 0
}

// stats are the number of logs kept and their bytes.
func (c *runCache) stats() (entries int, bytes int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

// replaySource is what a replayed run's log comes from: a kept log, or a
// run in flight (its hub, followed from seq 1).
type replaySource struct {
	events []*messages.RunEvent
	leader *Hub
	from   string // the source run's id
}

// replayer stands in for a coordinator in a run served from the response
// cache or shared with an identical run in flight: it sends the source's
// log to the run's hub under the run's own id (times of now, the terminal
// RunCompleted marked cached), resends what the hub asks for again, ends
// the run on CancelRun (the shared run goes on for the others), and stops
// once the hub has acknowledged the end (or after finishLinger).
type replayer struct {
	runID   string
	hub     *actor.PID
	src     replaySource
	linger  time.Duration
	log     []*messages.RunEvent
	ended   bool
	endedAt time.Time
	cancel  context.CancelFunc
	wg      sync.WaitGroup // the goroutine following a leader
}

// replayBatch carries a leader's events from the following goroutine to
// the replayer (never leaves its mailbox); lost says the leader's log
// cannot be followed any more.
type replayBatch struct {
	events []*messages.RunEvent
	lost   error
}

func (r *replayer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		if r.src.leader == nil {
			r.forward(ctx, r.src.events)
			return
		}
		gctx, cancel := context.WithCancel(context.Background())
		r.cancel = cancel
		self, root := ctx.Self(), ctx.ActorSystem().Root
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			follow(gctx, r.src.leader, func(b replayBatch) { root.Send(self, b) })
		}()
	case replayBatch:
		if r.ended {
			return
		}
		if m.lost != nil {
			r.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunFailed{RunFailed: &messages.RunFailed{
				Code: "internal", Reason: "the identical run this one shared could not be followed: " + m.lost.Error()}}})
			return
		}
		r.forward(ctx, m.events)
	case *messages.CancelRun:
		if r.ended {
			return
		}
		if r.cancel != nil {
			r.cancel()
		}
		reason := m.Reason
		if reason == "" {
			reason = "cancelled by its owner"
		}
		r.finish(ctx, &messages.RunEvent{Kind: &messages.RunEvent_RunCancelled{RunCancelled: &messages.RunCancelled{Reason: reason}}})
	case *messages.Subscribe:
		if from := m.FromSeq; from >= 1 && from <= uint64(len(r.log)) {
			if to := pidOf(m.Subscriber); to != nil {
				ctx.Send(to, &messages.RunEventBatch{Events: r.log[from-1:]})
			}
		}
	case *messages.RunEventAck:
		if r.ended && m.Seq >= uint64(len(r.log)) {
			ctx.Stop(ctx.Self())
		}
	case *actor.ReceiveTimeout:
		if r.ended && time.Since(r.endedAt) < r.linger {
			ctx.Send(r.hub, r.log[len(r.log)-1])
			ctx.SetReceiveTimeout(resendEnd)
			return
		}
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		if r.cancel != nil {
			r.cancel()
		}
		r.wg.Wait()
	}
}

// follow reads leader's log from seq 1 to its end and hands it on in
// batches, until ctx ends.
func follow(ctx context.Context, leader *Hub, out func(replayBatch)) {
	sub := leader.Subscribe(1)
	defer func() { sub.Close() }()
	for {
		evs, err := sub.Next(ctx, nil)
		var lagged *LaggedError
		switch {
		case err == nil:
			out(replayBatch{events: evs})
		case errors.Is(err, io.EOF), ctx.Err() != nil:
			return
		case errors.As(err, &lagged):
			sub.Close()
			sub = leader.Subscribe(lagged.NextSeq)
		default:
			out(replayBatch{lost: err})
			return
		}
	}
}

// forward logs copies of evs under this run and sends them to the hub.
func (r *replayer) forward(ctx actor.Context, evs []*messages.RunEvent) {
	if len(evs) == 0 {
		return
	}
	now := timestamppb.Now()
	out := make([]*messages.RunEvent, 0, len(evs))
	flush := func() {
		if len(out) > 0 {
			ctx.Send(r.hub, &messages.RunEventBatch{Events: out})
			out = make([]*messages.RunEvent, 0, len(evs))
		}
	}
	for _, ev := range evs {
		if r.ended {
			break
		}
		// A new envelope around the same payload: logged events are never
		// changed, so the payloads are shared, but for the end, marked
		// cached.
		c := &messages.RunEvent{RunId: r.runID, Seq: uint64(len(r.log) + 1), Epoch: 1, Time: now, Kind: ev.Kind}
		if rc := ev.GetRunCompleted(); rc != nil {
			rc = proto.Clone(rc).(*messages.RunCompleted)
			rc.Cached, rc.CachedFrom = true, r.src.from
			c.Kind = &messages.RunEvent_RunCompleted{RunCompleted: rc}
		}
		r.log = append(r.log, c)
		out = append(out, c)
		if isTerminal(c) {
			r.ended, r.endedAt = true, time.Now()
			ctx.SetReceiveTimeout(resendEnd)
		}
		if len(r.log) == 1 {
			flush() // the first event at once: a reader sees the run start while the rest is copied
		}
	}
	flush()
}

// finish ends the run with ev (a cancel or a failure of its own).
func (r *replayer) finish(ctx actor.Context, ev *messages.RunEvent) {
	ev.RunId, ev.Seq, ev.Epoch, ev.Time = r.runID, uint64(len(r.log)+1), 1, timestamppb.Now()
	r.log = append(r.log, ev)
	r.ended, r.endedAt = true, time.Now()
	ctx.Send(r.hub, &messages.RunEventBatch{Events: []*messages.RunEvent{ev}})
	ctx.SetReceiveTimeout(resendEnd)
}

// cacheName is the actor on every process with a transport that serves
// the response cache keys it owns to the other gateways.
const cacheName = "qlc-run-cache"

// Bounds of the cluster-wide cache: a lookup waits at most
// cacheLookupTimeout for the owner (then it is a miss, never a wrong
// answer), and logs above maxCacheTransfer stay with the gateway that ran
// them (the transport's messages are bounded).
const (
	cacheLookupTimeout = 250 * time.Millisecond
	maxCacheTransfer   = 1 << 20
)

// cacheOwner is the gateway that keeps key cluster-wide: the rendezvous
// choice among the gateways (the highest hash of key and address); ""
// without a cluster.
func (e *Engine) cacheOwner(key string) string {
	if e.topo == nil || e.remote == nil {
		return ""
	}
	var best string
	var bestH uint64
	for _, gw := range e.topo.Gateways("") {
		h := fnv.New64a()
		h.Write([]byte(key))
		h.Write([]byte{0})
		h.Write([]byte(gw))
		if v := h.Sum64(); best == "" || v > bestH {
			best, bestH = gw, v
		}
	}
	return best
}

// remoteCacheGet asks key's owner, when it is another gateway, for the log
// it keeps; a log found is kept here too.
func (e *Engine) remoteCacheGet(key string) (*cacheEntry, bool) {
	owner := e.cacheOwner(key)
	if owner == "" || owner == e.Address() {
		return nil, false
	}
	res, err := e.system.Root.RequestFuture(actor.NewPID(owner, cacheName), &messages.CacheLookup{Key: key}, cacheLookupTimeout).Result()
	ent, ok := res.(*messages.CacheEntry)
	if err != nil || !ok || !ent.Found || len(ent.Events) == 0 || ent.Events[len(ent.Events)-1].GetRunCompleted() == nil {
		return nil, false
	}
	e.cache.put(key, ent.From, ent.Events)
	return &cacheEntry{key: key, from: ent.From, events: ent.Events}, true
}

// remoteCachePut gives a completed run's log to key's owner, when it is
// another gateway (at most once: a lost one is a later miss).
func (e *Engine) remoteCachePut(key, from string, evs []*messages.RunEvent) {
	owner := e.cacheOwner(key)
	if owner == "" || owner == e.Address() {
		return
	}
	size := 0
	for _, ev := range evs {
		size += proto.Size(ev)
	}
	if size > maxCacheTransfer {
		return
	}
	e.system.Root.Send(actor.NewPID(owner, cacheName), &messages.CacheStore{Key: key, From: from, Events: evs})
}

// cacheServer is the cacheName actor: it answers lookups of the keys this
// process keeps and keeps the logs other gateways give it.
type cacheServer struct{ cache *runCache }

func (s *cacheServer) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CacheLookup:
		if ent, ok := s.cache.get(m.Key); ok {
			ctx.Respond(&messages.CacheEntry{Found: true, From: ent.from, Events: ent.events})
			return
		}
		ctx.Respond(&messages.CacheEntry{InflightRunId: s.cache.claim(m.Key, m.ClaimRunId, m.StaleRunId)})
	case *messages.CacheStore:
		switch n := len(m.Events); {
		case m.Key == "":
		case n == 0: // its run ended without an answer: no longer in flight
			s.cache.release(m.Key, m.From)
		case m.Events[n-1].GetRunCompleted() != nil:
			s.cache.put(m.Key, m.From, m.Events)
		}
	}
}

// claimRun asks key's owner among the gateways (this one or another) for
// the run in flight for key, recording run as it when there is none. It
// returns that run ("" without a cluster, or when the owner does not answer
// in time: then nothing is shared across gateways), or, when the owner
// kept the key's log meanwhile, that log.
func (e *Engine) claimRun(key, run, stale string) (inflight string, kept *cacheEntry) {
	owner := e.cacheOwner(key)
	switch owner {
	case "":
		return "", nil
	case e.Address():
		return e.cache.claim(key, run, stale), nil
	}
	res, err := e.system.Root.RequestFuture(actor.NewPID(owner, cacheName),
		&messages.CacheLookup{Key: key, ClaimRunId: run, StaleRunId: stale}, cacheLookupTimeout).Result()
	ent, ok := res.(*messages.CacheEntry)
	if err != nil || !ok {
		return "", nil
	}
	if n := len(ent.Events); ent.Found && n > 0 && ent.Events[n-1].GetRunCompleted() != nil {
		e.cache.put(key, ent.From, ent.Events)
		return "", &cacheEntry{key: key, from: ent.From, events: ent.Events}
	}
	return ent.InflightRunId, nil
}

// releaseClaim tells key's owner that run ended without an answer.
func (e *Engine) releaseClaim(key, run string) {
	switch owner := e.cacheOwner(key); owner {
	case "":
	case e.Address():
		e.cache.release(key, run)
	default:
		e.system.Root.Send(actor.NewPID(owner, cacheName), &messages.CacheStore{Key: key, From: run})
	}
}

// sharedElsewhere looks for an identical run in flight through another
// gateway (claimRun) and, if there is one, follows it: a replayer here
// stands in for its coordinator, as for a run shared on one gateway. A
// claimed run that ended without an answer, or cannot be found, is
// replaced by this one. nil: start this run (its claim is recorded).
func (e *Engine) sharedElsewhere(key string, start *messages.StartRun, replay func(string, replaySource) (*Hub, error)) (*Hub, error, bool) {
	stale := ""
	for range 2 {
		other, kept := e.claimRun(key, start.RunId, stale)
		if kept != nil {
			h, err := replay("hit", replaySource{events: kept.events, from: kept.from})
			return h, err, true
		}
		if other == "" || other == start.RunId {
			return nil, nil, false
		}
		if leader, err := e.Attach(other); err == nil {
			evs := leader.Events(1)
			switch {
			case len(evs) == 0 || !isTerminal(evs[len(evs)-1]):
				h, err := replay("shared", replaySource{leader: leader, from: other})
				return h, err, true
			case evs[len(evs)-1].GetRunCompleted() != nil:
				h, err := replay("hit", replaySource{events: evs, from: other})
				return h, err, true
			}
		}
		stale = other
	}
	return nil, nil, false
}
