package actors

import (
	"sync"
	"time"
)

// negativeCache remembers, briefly, the run ids that no node knew
// (Engine.Attach asked every coordinator host and none had the run), so a
// client polling an unknown id, or many clients asking for ids that do not
// exist, cost one fan-out per id per TTL instead of one per request. It is
// bounded: beyond its size, the oldest entry goes. A run that appears in
// this engine (started or attached here) is removed from it at once; a run
// started on another gateway and asked for within the TTL of a miss is
// "not found" for at most the TTL.
//
// Safe for concurrent use; no method blocks beyond a short mutex. Time
// comes from now (tests replace it before first use).
type negativeCache struct {
	ttl time.Duration
	now func() time.Time

	// mu guards the fields below it.
	mu    sync.Mutex
	until map[string]time.Time // run id -> when the miss expires
	ring  []string             // insertion order, len == size once full
	next  int                  // where the next insertion goes in ring
}

// Bounds of the FindRun negative cache: misses are remembered for
// findRunMissTTL (short: a run placed by another gateway a moment after a
// miss is found soon), at most findRunMisses of them (a few hundred KiB).
const (
	findRunMissTTL = time.Second
	findRunMisses  = 4096
)

func newNegativeCache(size int, ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, now: time.Now, until: make(map[string]time.Time, size), ring: make([]string, 0, size)}
}

// missed reports whether id is remembered as unknown (and not expired).
func (c *negativeCache) missed(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.until[id]
	if ok && !c.now().Before(until) {
		delete(c.until, id)
		return false
	}
	return ok
}

// add remembers id as unknown for the TTL, pushing out the oldest entry
// when full.
func (c *negativeCache) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.until[id]; !ok {
		if len(c.ring) < cap(c.ring) {
			c.ring = append(c.ring, id)
		} else {
			delete(c.until, c.ring[c.next])
			c.ring[c.next] = id
			c.next = (c.next + 1) % len(c.ring)
		}
	}
	c.until[id] = c.now().Add(c.ttl)
}

// forget removes id (the run appeared).
func (c *negativeCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.until, id) // its ring slot is reused in turn; deleting a missing key is harmless
}

// len is how many ids are remembered (expired ones included until asked).
func (c *negativeCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.until)
}
