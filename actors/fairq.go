package actors

import (
	"math"
	"slices"
	"sync"
	"time"
)

// runSlots admits runs on a node that executes a limited number at once
// (its run slots). A run takes a slot before its first stage and gives it
// back when it ends. When no slot is free for it, a run waits, and freed
// slots go to the waiting runs in weighted-fair order per tenant, so a
// tenant that floods the node cannot starve a quiet one. Runs are never
// stopped to make room (no preemption): every rule below decides only who
// gets the next free slot.
//
// Three rules decide who gets a slot:
//
//  1. Share cap: each active tenant may hold up to its share of the slots,
//     capacity·w/Σw over the active tenants' weights w, rounded so the
//     shares add up to the capacity (each gets the floor, at least 1, and
//     the slots left over go one at a time to the tenants furthest below
//     their exact share; ties go to a tenant with runs waiting, then to the
//     one behind in virtual time). A tenant is active while it has runs
//     holding or waiting for a slot, and for window after its last grant:
//     a tenant sending one run at a time keeps its share between runs, so
//     its next run finds a slot free instead of waiting for a flooding
//     tenant's run to end. A tenant alone on the node may use every slot
//     up to the headroom rule; when another becomes active, the first keeps
//     its runs but gets no slot until it is back under its share, and the
//     slots its runs free go to the newcomer first.
//  2. Headroom: no tenant may hold more than capacity-headroom slots, so
//     headroom slots are always left for other tenants. A quiet tenant
//     that arrives at a node full of a flooding tenant's runs (after the
//     window, when the flooder was alone) starts at once.
//  3. Start-time fair queueing (SFQ) between tenants: each tenant has a
//     virtual time, the start tag of its next grant. A grant advances it by
//     1/weight (the weight of the run that got the slot), so while two
//     tenants wait, weights 2:1 get slots 2:1. A tenant that starts waiting
//     after it had nothing queued starts at max(its own virtual time, the
//     system's), the system's being the largest start tag granted so far:
//     time spent idle is not banked as a burst. The waiting run of the
//     tenant with the smallest virtual time goes first; ties go to the run
//     that arrived first. A tenant at its cap (rules 1 and 2) is skipped.
//
// A tenant's weight for its share is that of its latest run.
//
// Capacity 0 means no limit: every run is admitted at once and only counted.
//
// runSlots is bookkeeping safe for concurrent use; no method blocks beyond
// a short mutex. Time comes from its now func, and its one timer (armed
// with afterFunc) wakes it when an idle tenant's window ends while runs
// wait with slots free, so they get those slots without waiting for some
// other event. Each grant computes the shares again and picks the next
// run: O(active tenants × (1 + slots the rounding leaves over)), the
// latter below the number of active tenants unless the headroom rule
// clamps a share.
// A nil *runSlots admits everything.
type runSlots struct {
	// capacity and perTenant are guarded by mu: setCapacity changes them
	// (the stage slots' adaptive limit).
	capacity  int // C; 0: unlimited (then for good)
	perTenant int // C-R: the most slots one tenant may hold

	// window is how long a tenant stays active after its last grant once
	// it has nothing running or waiting. Set before first use.
	window time.Duration
	// now is the clock; afterFunc runs f once after d on some goroutine
	// and returns a func that cancels it (time.AfterFunc's Stop). Tests
	// replace both before first use.
	now       func() time.Time
	afterFunc func(d time.Duration, f func()) (stop func() bool)

	// mu guards the fields below it.
	mu       sync.Mutex
	tenants  map[string]*slotTenant // active tenants (and inactive ones not yet dropped)
	held     map[string]string      // run key -> tenant, for runs holding a slot
	running  int
	waiting  int
	vnow     uint64 // the system's virtual time: the largest start tag granted
	arrivals uint64 // arrival counter, for FIFO among equal tags
	order    []*slotTenant
	// The expiry timer: armed at timerAt while timerStop is not nil; a
	// firing whose generation is not timerGen was superseded.
	timerStop func() bool
	timerAt   time.Time
	timerGen  uint64
}

// slotTenant is one tenant's share of the slots.
type slotTenant struct {
	name      string
	weight    uint64 // of its latest run, in [1, maxShareWeight]
	running   int
	vtime     uint64 // start tag of the tenant's next grant
	lastGrant time.Time
	cap       int           // its share as of the last shares(): 0 if inactive
	queue     []*slotWaiter // FIFO
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

// maxShareWeight bounds the weight a tenant's share is computed with, so
// capacity·weight·tenants stays far inside an int64. A weight above
// vtimeUnit already advances virtual time by the smallest step.
const maxShareWeight = vtimeUnit

// defaultRunSlotWindow is how long a tenant keeps its share of the run
// slots after its last run started, once it has nothing running or
// waiting. Long enough to span the gaps of a tenant that sends runs one
// after another (seconds apart at most), so its next run finds its share
// free; short enough that a tenant gone quiet hands its share back to the
// busy ones within seconds.
const defaultRunSlotWindow = 5 * time.Second

// slotStats is a snapshot of a runSlots' counts.
type slotStats struct {
	Running int // runs holding a slot
	Waiting int // runs queued for a slot
	Tenants int // tenants with running or waiting runs
	Active  int // tenants the slots are shared among: Tenants and those granted a slot within the window
}

// newRunSlots returns a scheduler of capacity slots (0: no limit) that
// keeps headroom of them for tenants other than any one: 0 picks the
// default, capacity/8 and at least 1; negative keeps none. A capacity of 1
// or less has no headroom, and the headroom is always below the capacity
// (a tenant may hold at least one slot). Its activity window is
// defaultRunSlotWindow, its clock the wall clock.
func newRunSlots(capacity, headroom int) *runSlots {
	capacity = max(capacity, 0)
	headroom = slotHeadroom(capacity, headroom)
	s := &runSlots{capacity: capacity, perTenant: capacity - headroom, window: defaultRunSlotWindow,
		now: time.Now, afterFunc: func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop },
		tenants: map[string]*slotTenant{}, held: map[string]string{}}
	if capacity == 0 {
		s.perTenant = math.MaxInt
	}
	return s
}

// slotHeadroom is newRunSlots' rule for the slots kept for other tenants.
func slotHeadroom(capacity, headroom int) int {
	switch {
	case headroom < 0 || capacity <= 1:
		headroom = 0
	case headroom == 0:
		headroom = max(1, capacity/8)
	}
	return min(headroom, max(capacity-1, 0))
}

// setCapacity changes the number of slots to capacity (at least 1) with
// headroom as newRunSlots takes it (the stage slots' adaptive limit,
// StageCapacity). Runs holding slots keep them (no preemption): past a
// shrink, no run gets a slot until fewer than capacity hold one; a growth
// grants waiting runs at once (before setCapacity returns). No-op on a
// scheduler without a limit (capacity 0).
func (s *runSlots) setCapacity(capacity, headroom int) {
	if s == nil {
		return
	}
	capacity = max(capacity, 1)
	s.mu.Lock()
	if s.capacity == 0 || s.capacity == capacity {
		s.mu.Unlock()
		return
	}
	s.capacity = capacity
	s.perTenant = capacity - slotHeadroom(capacity, headroom)
	granted := s.settle(s.now())
	s.mu.Unlock()
	for _, w := range granted {
		w.grant()
	}
}

// capacityNow is the current number of slots (0: no limit).
func (s *runSlots) capacityNow() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.capacity
}

// acquire asks for a slot for run runID of tenant. It returns true when the
// run holds a slot now; otherwise the run waits, and grant is called once
// when it gets one, unless release removed it first. grant is called
// without any lock held, on the goroutine of the acquire or release that
// made the slot available, or of the scheduler's timer; it must not block
// (send a message). weight 0 counts as 1.
//
// runID must be unique among the runs in the scheduler; acquiring a run
// that holds a slot again returns true, and one that waits returns false
// and replaces its grant.
func (s *runSlots) acquire(tenant string, weight uint32, runID string, grant func()) bool {
	if s == nil {
		return true
	}
	s.mu.Lock()
	if _, ok := s.held[runID]; ok {
		s.mu.Unlock()
		return true
	}
	t := s.tenants[tenant]
	if t == nil {
		t = &slotTenant{name: tenant, vtime: s.vnow}
		s.tenants[tenant] = t
	}
	for _, w := range t.queue {
		if w.runID == runID {
			w.grant = grant
			s.mu.Unlock()
			return false
		}
	}
	t.weight = min(uint64(max(weight, 1)), maxShareWeight)
	// Idle time is not banked: a tenant with nothing queued starts at the
	// system's virtual time if it fell behind it.
	if len(t.queue) == 0 {
		t.vtime = max(t.vtime, s.vnow)
	}
	// The run queues, and settle grants free slots in weighted-fair order:
	// it takes one at once if no waiting run comes before it. (Its arrival
	// can also raise another tenant's share by the rounding, so settle may
	// grant other runs too.)
	s.arrivals++
	me := &slotWaiter{runID: runID, weight: weight, arrival: s.arrivals, grant: grant}
	t.queue = append(t.queue, me)
	s.waiting++
	granted := s.settle(s.now())
	s.mu.Unlock()
	mine := false
	for _, w := range granted {
		if w == me {
			mine = true
		} else {
			w.grant()
		}
	}
	return mine
}

// release gives back run runID's slot, or takes it out of the queue if it
// waits. It is idempotent, and harmless for a run the scheduler does not
// know. A freed slot goes to the next waiting run at once (its grant is
// called before release returns).
func (s *runSlots) release(tenant, runID string) {
	if s == nil {
		return
	}
	var granted []*slotWaiter
	s.mu.Lock()
	if owner, ok := s.held[runID]; ok {
		delete(s.held, runID)
		s.tenants[owner].running--
		s.running--
		granted = s.settle(s.now())
	} else if t := s.tenants[tenant]; t != nil {
		for i, w := range t.queue {
			if w.runID == runID {
				t.queue = slices.Delete(t.queue, i, i+1)
				s.waiting--
				// It may have been what held another tenant's share down
				// (it made its tenant active, or won a tie for a slot).
				granted = s.settle(s.now())
				break
			}
		}
	}
	s.mu.Unlock()
	for _, w := range granted {
		w.grant()
	}
}

// stats returns the current counts.
// inUse is stats().Running in O(1) (the admission check of every request).
func (s *runSlots) inUse() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

func (s *runSlots) stats() slotStats {
	if s == nil {
		return slotStats{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := slotStats{Running: s.running, Waiting: s.waiting}
	now := s.now()
	for _, t := range s.tenants {
		if t.busy() {
			st.Tenants++
		}
		if s.active(t, now) {
			st.Active++
		}
	}
	return st
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

// share returns how many slots tenant may hold now (its cap): 0 if it is
// not active, math.MaxInt with no limit.
func (s *runSlots) share(tenant string) int {
	if s == nil {
		return math.MaxInt
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.capacity == 0 {
		return math.MaxInt
	}
	t := s.tenants[tenant]
	if t == nil {
		return 0
	}
	s.shares(s.now())
	return t.cap
}

func (s *runSlots) hasFree() bool { return s.capacity == 0 || s.running < s.capacity }

func (t *slotTenant) busy() bool { return t.running > 0 || len(t.queue) > 0 }

// active reports whether t counts in the shares at now.
func (s *runSlots) active(t *slotTenant, now time.Time) bool {
	return t.busy() || (s.capacity > 0 && !t.lastGrant.IsZero() && now.Sub(t.lastGrant) < s.window)
}

// settle brings the scheduler to now after an event: it drops the tenants
// no longer active, gives free slots to waiting runs, and arms the timer if
// runs still wait beside free slots that an idle tenant's share keeps from
// them. It returns the runs granted, whose grants the caller calls once the
// lock is released.
func (s *runSlots) settle(now time.Time) []*slotWaiter {
	for name, t := range s.tenants {
		// A dropped tenant's virtual time is lost, which costs at most one
		// grant of its precedence: it is at most one step ahead of the
		// system's (its last grant's tag is at most the system's), and a
		// returning tenant starts at the system's anyway.
		if !s.active(t, now) {
			delete(s.tenants, name)
		}
	}
	granted := s.dispatch(now)
	if s.waiting > 0 && s.hasFree() {
		s.armExpiry(now)
	}
	return granted
}

// dispatch gives free slots to waiting runs in weighted-fair order, each to
// a tenant below its share, until no slot is free or every waiting run's
// tenant is at its share. The shares are computed again after each grant
// (the tie-breaks of their rounding move with the grants), so when it
// returns no waiting run could take a free slot under the shares at now.
func (s *runSlots) dispatch(now time.Time) []*slotWaiter {
	var granted []*slotWaiter
	for s.waiting > 0 && s.hasFree() {
		s.shares(now)
		var best *slotTenant
		for _, t := range s.tenants {
			if len(t.queue) == 0 || t.running >= t.cap {
				continue
			}
			if best == nil || t.vtime < best.vtime || (t.vtime == best.vtime && t.queue[0].arrival < best.queue[0].arrival) {
				best = t
			}
		}
		if best == nil {
			break
		}
		w := best.queue[0]
		best.queue[0] = nil
		best.queue = best.queue[1:]
		s.waiting--
		s.take(best, w, now)
		granted = append(granted, w)
	}
	return granted
}

// take gives w a slot at tenant t's virtual time and advances it.
func (s *runSlots) take(t *slotTenant, w *slotWaiter, now time.Time) {
	s.vnow = max(s.vnow, t.vtime)
	t.vtime += max(vtimeUnit/uint64(max(w.weight, 1)), 1)
	t.running++
	t.lastGrant = now
	s.running++
	s.held[w.runID] = t.name
}

// shares sets every tenant's cap: its share of the slots among the tenants
// active at now (0 for an inactive one), at most perTenant. With no limit
// every cap is perTenant (unlimited).
func (s *runSlots) shares(now time.Time) {
	s.order = s.order[:0]
	var sum int64
	for _, t := range s.tenants {
		if s.capacity == 0 {
			t.cap = s.perTenant
			continue
		}
		t.cap = 0
		if s.active(t, now) {
			s.order = append(s.order, t)
			sum += int64(t.weight)
		}
	}
	if len(s.order) == 0 {
		return
	}
	c := int64(s.capacity)
	left := s.capacity
	for _, t := range s.order {
		t.cap = min(s.perTenant, max(1, int(c*int64(t.weight)/sum)))
		left -= t.cap
	}
	// Largest remainder, one slot at a time: the tenant furthest below its
	// exact share c·w/sum, i.e. with the largest c·w - cap·sum, gets the
	// next. Once a tenant is at perTenant, the headroom rule keeps the rest
	// for the others, so they go on around it.
	for ; left > 0; left-- {
		var best *slotTenant
		var bestGap int64
		for _, t := range s.order {
			if t.cap >= s.perTenant {
				continue
			}
			gap := c*int64(t.weight) - int64(t.cap)*sum
			if best == nil || gap > bestGap || (gap == bestGap && remainderFirst(t, best)) {
				best, bestGap = t, gap
			}
		}
		if best == nil {
			return
		}
		best.cap++
	}
}

// remainderFirst reports whether a left-over slot goes to t before u when
// both are equally far below their exact shares: first to a tenant with
// runs waiting (it can use the slot now), then to the one behind in
// virtual time (so two backlogged tenants take turns), then by name (to be
// deterministic).
func remainderFirst(t, u *slotTenant) bool {
	if tw, uw := len(t.queue) > 0, len(u.queue) > 0; tw != uw {
		return tw
	}
	if t.vtime != u.vtime {
		return t.vtime < u.vtime
	}
	return t.name < u.name
}

// armExpiry arms the timer for the moment the first idle tenant stops being
// active, when that is sooner than the timer is armed for: its share then
// goes to the others, and runs waiting beside free slots may get them.
// A busy tenant's end of activity needs no timer: it comes with the
// release of its last run, which settles.
func (s *runSlots) armExpiry(now time.Time) {
	var at time.Time
	for _, t := range s.tenants {
		if !t.busy() {
			if end := t.lastGrant.Add(s.window); at.IsZero() || end.Before(at) {
				at = end
			}
		}
	}
	if at.IsZero() || (s.timerStop != nil && !at.Before(s.timerAt)) {
		return
	}
	if s.timerStop != nil {
		s.timerStop()
	}
	s.timerGen++
	gen := s.timerGen
	s.timerAt = at
	s.timerStop = s.afterFunc(at.Sub(now), func() { s.expire(gen) })
}

// expire is the timer's firing: it settles at the current time.
func (s *runSlots) expire(gen uint64) {
	s.mu.Lock()
	if gen == s.timerGen {
		s.timerStop = nil
	}
	granted := s.settle(s.now())
	s.mu.Unlock()
	for _, w := range granted {
		w.grant()
	}
}

// tryAcquire takes a slot for run runID of tenant if it can have one now
// under the rules above, and otherwise refuses it (false) without queuing:
// the engine's admission of active runs (Config.MaxActiveRuns) answers at
// once instead of waiting. It is meant for a scheduler whose runs never
// wait (no acquire): the run queues for the length of one settle and, if
// not granted, leaves again, so its tenant counts as active only while its
// share is computed.
func (s *runSlots) tryAcquire(tenant string, weight uint32, runID string) bool {
	if s == nil {
		return true
	}
	if s.acquire(tenant, weight, runID, func() {}) {
		return true
	}
	s.release(tenant, runID)
	return false
}

// hold counts run runID of tenant as holding a slot whatever the shares
// and the capacity say: for a run that was admitted before and must not
// be refused now (one resumed or attached after a failure elsewhere). It
// may take the scheduler above its capacity; later runs then wait (or are
// refused) until enough slots are released.
func (s *runSlots) hold(tenant string, weight uint32, runID string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.held[runID]; ok {
		return
	}
	t := s.tenants[tenant]
	if t == nil {
		t = &slotTenant{name: tenant, vtime: s.vnow}
		s.tenants[tenant] = t
	}
	t.weight = min(uint64(max(weight, 1)), maxShareWeight)
	if len(t.queue) == 0 {
		t.vtime = max(t.vtime, s.vnow)
	}
	s.take(t, &slotWaiter{runID: runID, weight: weight}, s.now())
}

// holds reports whether run runID holds a slot.
func (s *runSlots) holds(runID string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[runID]
	return ok
}
