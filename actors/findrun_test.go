package actors

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// countingPlacer offers runs to the engine itself and counts the lookups.
type countingPlacer struct {
	StaticTopology
	self  func() string
	calls atomic.Int64
}

func (p *countingPlacer) Candidates(string) []string {
	p.calls.Add(1)
	return []string{p.self()}
}

// An unknown run id is asked of the nodes once per TTL, however often a
// client asks for it; the miss is forgotten when the run appears here.
// On the old engine every Attach asked every node in turn.
func TestAttachRemembersUnknownRuns(t *testing.T) {
	var e *Engine
	placer := &countingPlacer{self: func() string { return e.Address() }}
	e = newSlotEngine(t, "", func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", Insecure: true}
		c.Topology = placer
	})
	var mu sync.Mutex
	now := time.Now()
	e.misses.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	const id = "run_doesnotexistdoesnotexist0000"
	for range 10 {
		if _, err := e.Attach(id); !errors.Is(err, ErrUnknownRun) {
			t.Fatalf("unknown run: %v", err)
		}
	}
	if n := placer.calls.Load(); n != 1 {
		t.Fatalf("10 lookups of an unknown run asked the nodes %d times, want 1", n)
	}
	mu.Lock()
	now = now.Add(findRunMissTTL)
	mu.Unlock()
	if _, err := e.Attach(id); !errors.Is(err, ErrUnknownRun) {
		t.Fatal(err)
	}
	if n := placer.calls.Load(); n != 2 {
		t.Fatalf("after the TTL: %d fan-outs, want 2", n)
	}
	// The run appears here: the miss is forgotten at once.
	h, err := e.StartRun(RunRequest{ID: id, Tenant: "a", Profile: "instant", Query: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if e.misses.missed(id) {
		t.Fatal("a run started here is still remembered as unknown")
	}
	if got, err := e.Attach(id); err != nil || got != h {
		t.Fatalf("Attach after the run appeared: %v", err)
	}
}

// The negative cache holds at most its size: the oldest miss goes first.
func TestNegativeCacheIsBounded(t *testing.T) {
	c := newNegativeCache(3, time.Minute)
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		c.add(id)
	}
	if c.len() != 3 {
		t.Fatalf("holds %d, want 3", c.len())
	}
	for id, want := range map[string]bool{"a": false, "b": false, "c": true, "d": true, "e": true} {
		if c.missed(id) != want {
			t.Errorf("missed(%s) = %v, want %v", id, !want, want)
		}
	}
	c.forget("d")
	if c.missed("d") {
		t.Error("a forgotten id is still missed")
	}
}

// A lookup that a node did not answer is not a "no such run": Attach says
// so (ErrLookupIncomplete), and the miss is not remembered.
func TestAttachDoesNotConcludeFromASilentNode(t *testing.T) {
	var e *Engine
	placer := &silentPlacer{self: func() string { return e.Address() }, silent: "127.0.0.1:1"}
	e = newSlotEngine(t, "", func(c *Config) {
		c.Remote = &RemoteConfig{Bind: "127.0.0.1:0", Insecure: true}
		c.Topology = placer
	})
	e.findRunVia = func(node, runID string) func() (any, error) {
		if node == placer.silent {
			return func() (any, error) { return nil, actor.ErrTimeout }
		}
		return askFindRunVia(e, node, runID)
	}
	const id = "run_silentsilentsilentsilent0000"
	if _, err := e.Attach(id); !errors.Is(err, ErrLookupIncomplete) || errors.Is(err, ErrUnknownRun) {
		t.Fatalf("a lookup a node did not answer: %v, want ErrLookupIncomplete", err)
	}
	if e.misses.missed(id) {
		t.Fatal("an incomplete lookup was remembered as a miss")
	}
	// Once every node answers, an unknown run is unknown.
	e.findRunVia = nil
	placer.silent = e.Address()
	if _, err := e.Attach(id); !errors.Is(err, ErrUnknownRun) {
		t.Fatalf("every node answered: %v, want ErrUnknownRun", err)
	}
}

// silentPlacer offers runs to the engine itself and to a node that does
// not answer.
type silentPlacer struct {
	StaticTopology
	self   func() string
	silent string
}

func (p *silentPlacer) Candidates(string) []string { return []string{p.self(), p.silent} }
