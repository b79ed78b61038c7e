package actors

import (
	"math"
	"slices"
	"sync"
)

// runSlots admits runs on a node that executes a limited number at once
// (its run slots). A run takes a slot before its first stage and gives it
// back when it ends. When every slot is taken, runs wait, and a freed slot
// goes to the waiting runs in weighted-fair order per tenant, so a tenant
// that floods the node cannot starve a quiet one.
//
// Two rules decide who gets a slot:
//
//  1. Headroom: no tenant may hold more than capacity-headroom slots, so
//     headroom slots are always left for other tenants. A quiet tenant
//     that arrives at a node full of a flooding tenant's runs starts at once.
//  2. Start-time fair queueing (SFQ) between tenants: each tenant has a
//     virtual time, the start tag of its next grant. A grant advances it by
//     1/weight (the weight of the run that got the slot), so while two
//     tenants wait, weights 2:1 get slots 2:1. A tenant that starts waiting
//     after it had nothing queued starts at max(its own virtual time, the
//     system's), the system's being the largest start tag granted so far:
//     time spent idle is not banked as a burst. The waiting run of the
//     tenant with the smallest virtual time goes first; ties go to the run
//     that arrived first. A tenant at its headroom cap is skipped.
//
// Capacity 0 means no limit: every run is admitted at once and only counted.
//
// runSlots is pure bookkeeping (no actors, no clock) and safe for concurrent
// use; no method blocks beyond a short mutex. Picking the next run costs
// O(tenants with runs on the node). A nil *runSlots admits everything.
type runSlots struct {
	capacity  int // C; 0: unlimited
	perTenant int // C-R: the most slots one tenant may hold

	// mu guards the fields below it.
	mu       sync.Mutex
	tenants  map[string]*slotTenant // tenants with running or waiting runs
	held     map[string]string      // run key -> tenant, for runs holding a slot
	running  int
	waiting  int
	vnow     uint64 // the system's virtual time: the largest start tag granted
	arrivals uint64 // arrival counter, for FIFO among equal tags
}

// slotTenant is one tenant's share of the slots.
type slotTenant struct {
	running int
	vtime   uint64        // start tag of the tenant's next grant
	queue   []*slotWaiter // FIFO
}

// slotWaiter is a run waiting for a slot.
type slotWaiter struct {
	runID   string
	weight  uint32
	arrival uint64
	grant   func()
}

// vtimeUnit is one grant of weight 1 in virtual time. Fixed point instead
// of float: it is the least common multiple of 1..16, so the steps of
// weights up to 16 are exact and equal tags compare equal (ties go FIFO).
// A uint64 holds 2.5e13 such grants.
const vtimeUnit = 720720

// slotStats is a snapshot of a runSlots' counts.
type slotStats struct {
	Running int // runs holding a slot
	Waiting int // runs queued for a slot
	Tenants int // tenants with running or waiting runs
}

// newRunSlots returns a scheduler of capacity slots (0: no limit) that
// keeps headroom of them for tenants other than any one: 0 picks the
// default, capacity/8 and at least 1; negative keeps none. A capacity of 1
// or less has no headroom, and the headroom is always below the capacity
// (a tenant may hold at least one slot).
func newRunSlots(capacity, headroom int) *runSlots {
	capacity = max(capacity, 0)
	switch {
	case headroom < 0 || capacity <= 1:
		headroom = 0
	case headroom == 0:
		headroom = max(1, capacity/8)
	}
	headroom = min(headroom, max(capacity-1, 0))
	s := &runSlots{capacity: capacity, perTenant: capacity - headroom, tenants: map[string]*slotTenant{}, held: map[string]string{}}
	if capacity == 0 {
		s.perTenant = math.MaxInt
	}
	return s
}

// acquire asks for a slot for run runID of tenant. It returns true when the
// run holds a slot now; otherwise the run waits, and grant is called once
// when it gets one, unless release removed it first. grant is called
// without any lock held, on the goroutine of the release that freed the
// slot; it must not block (send a message). weight 0 counts as 1.
//
// runID must be unique among the runs in the scheduler; acquiring a run
// that holds a slot again returns true, and one that waits returns false
// and replaces its grant.
func (s *runSlots) acquire(tenant string, weight uint32, runID string, grant func()) bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[runID]; ok {
		return true
	}
	t := s.tenants[tenant]
	if t == nil {
		t = &slotTenant{vtime: s.vnow}
		s.tenants[tenant] = t
	}
	for _, w := range t.queue {
		if w.runID == runID {
			w.grant = grant
			return false
		}
	}
	// Idle time is not banked: a tenant with nothing queued starts at the
	// system's virtual time if it fell behind it.
	if len(t.queue) == 0 {
		t.vtime = max(t.vtime, s.vnow)
	}
	// A free slot goes to this run only if no waiting run could take it;
	// the waiting runs that remain while a slot is free are all at their
	// tenant's cap, so this run is not overtaking anyone entitled to it.
	if len(t.queue) == 0 && s.hasFree() && t.running < s.perTenant {
		s.take(tenant, t, weight, runID)
		return true
	}
	s.arrivals++
	t.queue = append(t.queue, &slotWaiter{runID: runID, weight: weight, arrival: s.arrivals, grant: grant})
	s.waiting++
	return false
}

// release gives back run runID's slot, or takes it out of the queue if it
// waits. It is idempotent, and harmless for a run the scheduler does not
// know. A freed slot goes to the next waiting run at once (its grant is
// called before release returns).
func (s *runSlots) release(tenant, runID string) {
	if s == nil {
		return
	}
	var grants []func()
	s.mu.Lock()
	if owner, ok := s.held[runID]; ok {
		delete(s.held, runID)
		t := s.tenants[owner]
		t.running--
		s.running--
		s.forgetIfIdle(owner, t)
		grants = s.dispatch()
	} else if t := s.tenants[tenant]; t != nil {
		for i, w := range t.queue {
			if w.runID == runID {
				t.queue = slices.Delete(t.queue, i, i+1)
				s.waiting--
				s.forgetIfIdle(tenant, t)
				break
			}
		}
	}
	s.mu.Unlock()
	for _, g := range grants {
		g()
	}
}

// stats returns the current counts.
func (s *runSlots) stats() slotStats {
	if s == nil {
		return slotStats{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return slotStats{Running: s.running, Waiting: s.waiting, Tenants: len(s.tenants)}
}

// tenantStats returns how many of tenant's runs hold a slot and wait for one.
func (s *runSlots) tenantStats(tenant string) (running, waiting int) {
	if s == nil {
		return 0, 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t := s.tenants[tenant]; t != nil {
		return t.running, len(t.queue)
	}
	return 0, 0
}

func (s *runSlots) hasFree() bool { return s.capacity == 0 || s.running < s.capacity }

// take gives runID a slot at tenant t's virtual time and advances it.
func (s *runSlots) take(tenant string, t *slotTenant, weight uint32, runID string) {
	s.vnow = max(s.vnow, t.vtime)
	t.vtime += max(vtimeUnit/uint64(max(weight, 1)), 1)
	t.running++
	s.running++
	s.held[runID] = tenant
}

// dispatch gives free slots to waiting runs in weighted-fair order and
// returns their grants, to be called once the lock is released.
func (s *runSlots) dispatch() []func() {
	var grants []func()
	for s.hasFree() {
		var best *slotTenant
		var bestName string
		for name, t := range s.tenants {
			if len(t.queue) == 0 || t.running >= s.perTenant {
				continue
			}
			if best == nil || t.vtime < best.vtime || (t.vtime == best.vtime && t.queue[0].arrival < best.queue[0].arrival) {
				best, bestName = t, name
			}
		}
		if best == nil {
			break
		}
		w := best.queue[0]
		best.queue[0] = nil
		best.queue = best.queue[1:]
		s.waiting--
		s.take(bestName, best, w.weight, w.runID)
		grants = append(grants, w.grant)
	}
	return grants
}

// forgetIfIdle drops a tenant with nothing running or waiting. Its virtual
// time is lost, which costs at most one grant of its precedence: it is at
// most one step ahead of the system's (its last grant's tag is at most the
// system's), and a returning tenant starts at the system's anyway.
func (s *runSlots) forgetIfIdle(name string, t *slotTenant) {
	if t.running == 0 && len(t.queue) == 0 {
		delete(s.tenants, name)
	}
}
