package actors

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/tokenizer"
)

// heldClient is a TokenizerClient on e's actor system whose batches wait
// for hold, with its first request already taken into a held batch.
func heldClient(t *testing.T, e *Engine, maxQueue int) (c *TokenizerClient, hold chan struct{}, first <-chan error) {
	t.Helper()
	c = NewTokenizerClient(e.System(), TokenizerClientConfig{
		Hosts: &StaticTopology{Tokenizers: []string{"nonhost"}}, Local: true, Timeout: 5 * time.Second,
		MaxQueue: maxQueue, Metrics: e.Metrics(), Logger: testLogger(t)})
	t.Cleanup(c.Close)
	hold = make(chan struct{})
	c.batch.mu.Lock()
	c.batch.hold = hold
	c.batch.mu.Unlock()
	errc := make(chan error, 1)
	go func() {
		_, err := c.CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"first"}})
		errc <- err
	}()
	waitUntil(t, "the first request taken into a batch", func() bool {
		c.batch.mu.Lock()
		defer c.batch.mu.Unlock()
		return c.batch.enqueued == 1 && len(c.batch.queue) == 0
	})
	return c, hold, errc
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// A request whose caller gave up while it waited for a batch is dropped,
// not sent; the others are answered.
func TestTokenizerDropsAbandonedRequests(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.Tokenizer = true })
	c, hold, first := heldClient(t, e, 0)
	const abandoned = 5
	var wg sync.WaitGroup
	for range abandoned {
		ctx, cancel := context.WithCancel(context.Background())
		wg.Go(func() {
			if _, err := c.CountTokens(ctx, &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"gone"}}); !errors.Is(err, context.Canceled) {
				t.Errorf("abandoned request: %v, want context.Canceled", err)
			}
		})
		waitUntil(t, "the request queued", func() bool {
			c.batch.mu.Lock()
			defer c.batch.mu.Unlock()
			return len(c.batch.queue) > 0 && c.batch.queue[len(c.batch.queue)-1].ctx == ctx
		})
		cancel()
	}
	wg.Wait()
	live := make(chan *messages.TokenCounts, 1)
	go func() {
		tc, err := c.CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"still here"}})
		if err != nil {
			t.Error(err)
		}
		live <- tc
	}()
	waitUntil(t, "the live request queued", func() bool {
		c.batch.mu.Lock()
		defer c.batch.mu.Unlock()
		return len(c.batch.queue) == abandoned+1
	})
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if tc := <-live; tc == nil || tc.ServedBy != "nonhost" || tc.Counts[0] != 2 {
		t.Fatalf("live request: %+v", tc)
	}
	c.batch.mu.Lock()
	dropped := c.batch.dropped
	c.batch.mu.Unlock()
	if dropped != abandoned {
		t.Fatalf("dropped %d requests, want the %d abandoned ones", dropped, abandoned)
	}
}

// When MaxQueue requests wait, the next is counted here at once (the
// scalar fallback) instead of waiting for room.
func TestTokenizerQueueFullCountsHere(t *testing.T) {
	e, _ := newTestEngine(t, func(c *Config) { c.Tokenizer = true })
	c, hold, first := heldClient(t, e, 2)
	results := make(chan *messages.TokenCounts, 2)
	for range 2 {
		go func() {
			tc, err := c.CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"queued"}})
			if err != nil {
				t.Error(err)
			}
			results <- tc
		}()
	}
	waitUntil(t, "two requests queued", func() bool {
		c.batch.mu.Lock()
		defer c.batch.mu.Unlock()
		return len(c.batch.queue) == 2
	})
	// The batch is still held: this answer can only come from here.
	tc, err := c.CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"one too many"}})
	if err != nil || tc.ServedBy != "local-fallback" || tc.Counts[0] != 3 {
		t.Fatalf("request beyond MaxQueue: %+v %v; want counted here", tc, err)
	}
	close(hold)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if tc := <-results; tc == nil || tc.ServedBy != "nonhost" {
			t.Fatalf("queued request: %+v", tc)
		}
	}
	c.Close()
	// Closed: nothing waits for a batch any more.
	if tc, err := c.CountTokens(context.Background(), &messages.CountTokens{Encoding: tokenizer.Cl100kBase, Texts: []string{"late"}}); err != nil || tc.ServedBy != "local-fallback" {
		t.Fatalf("after Close: %+v %v", tc, err)
	}
}

// Services serve at most Workers requests at once; beyond, a ledger query
// is answered "busy" at once. Close waits for the requests being served.
func TestServicesBusyAndClose(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	s := NewServices(e.System(), ServicesConfig{Workers: 1, Logger: testLogger(t)})
	release := make(chan struct{})
	entered := make(chan struct{}, 1)
	if err := s.ServeLedger(func(*messages.LedgerQuery) *messages.LedgerState {
		entered <- struct{}{}
		<-release
		return &messages.LedgerState{PeriodTokens: 7}
	}); err != nil {
		t.Fatal(err)
	}
	pid := e.System().NewLocalPID(ledgerName)
	slow := e.System().Root.RequestFuture(pid, &messages.LedgerQuery{Tenant: "a"}, 10*time.Second)
	<-entered
	r, err := e.System().Root.RequestFuture(pid, &messages.LedgerQuery{Tenant: "b"}, 10*time.Second).Result()
	if st, ok := r.(*messages.LedgerState); err != nil || !ok || st.Error != "busy" {
		t.Fatalf("second query while the worker is taken: %v %v; want busy", r, err)
	}
	closed := make(chan struct{})
	go func() {
		s.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a request was being served")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	if r, err := slow.Result(); err != nil || r.(*messages.LedgerState).PeriodTokens != 7 {
		t.Fatalf("the served query: %v %v", r, err)
	}
	s.Close() // idempotent
	r, err = e.System().Root.RequestFuture(pid, &messages.LedgerQuery{Tenant: "c"}, 10*time.Second).Result()
	if st, ok := r.(*messages.LedgerState); err != nil || !ok || st.Error != "busy" {
		t.Fatalf("after Close: %v %v; want busy", r, err)
	}
}

// eventTopology is a StaticTopology whose events the test sends.
type eventTopology struct {
	StaticTopology
	events  chan TopologyEvent
	joined  chan string
	joinErr error
	load    func() Load
}

func (f *eventTopology) Join(self string, load func() Load) (<-chan TopologyEvent, error) {
	if f.joinErr != nil {
		return nil, f.joinErr
	}
	f.load = load
	f.joined <- self
	return f.events, nil
}

// The engine joins its Topology with its address and load, acts on its
// events on one goroutine, and stops that goroutine on Shutdown (goleak
// checks); a Topology that cannot join fails NewEngine.
func TestEngineTopologyEvents(t *testing.T) {
	topo := &eventTopology{events: make(chan TopologyEvent), joined: make(chan string, 1)}
	e, _ := newTestEngine(t, func(c *Config) { c.Topology = topo })
	if self := <-topo.joined; self != e.Address() {
		t.Fatalf("joined as %q, want %q", self, e.Address())
	}
	if topo.load().Active != 0 {
		t.Fatal("load of an idle engine")
	}
	// Unbuffered: each send returns once the engine's goroutine took it.
	handled := make(chan struct{})
	for _, ev := range []TopologyEvent{
		{Kind: NodeLost, Addr: "gone:1", Member: "n-1"},
		{Kind: AddressReused, Addr: "back:1", Member: "n-2"},
		{Kind: Fenced, Member: "declared dead", Done: func() { close(handled) }},
		{Kind: Rejoined, Member: "n-3"},
	} {
		select {
		case topo.events <- ev:
		case <-time.After(10 * time.Second):
			t.Fatalf("the engine does not read its topology events (%v)", ev.Kind)
		}
	}
	select {
	case <-handled:
	default: // Rejoined was taken, so Fenced was handled before it
		t.Fatal("the engine did not call Fenced's Done")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	release := make(chan struct{})
	if !e.goOwned(func() { <-release }) {
		t.Fatal("goOwned refused before Shutdown")
	}
	down := make(chan struct{})
	go func() {
		e.Shutdown(ctx)
		close(down)
	}()
	select {
	case <-down:
		t.Fatal("Shutdown returned while an owned goroutine runs")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-down
	e.Shutdown(ctx) // idempotent
	if e.goOwned(func() { t.Error("ran after Shutdown") }) {
		t.Fatal("goOwned started a goroutine after Shutdown")
	}

	bad := &eventTopology{joinErr: errors.New("no seed")}
	cfg := DefaultConfig()
	cfg.Logger, cfg.Topology, cfg.Providers = testLogger(t), bad, e.cfg.Providers
	cfg.Stages = e.cfg.Stages
	if _, err := NewEngine(cfg); err == nil {
		t.Fatal("NewEngine succeeded with a Topology that cannot join")
	}
}
