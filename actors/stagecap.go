package actors

import (
	"math"
	"runtime"
	"sync"
	"time"
)

// StageCapacity is a node's adaptive limit on the stage attempts it runs at
// once (parallel strategies' steps, for coordinators on any node; issue 14
// item 6): a node takes no attempt it cannot start within its share of the
// machine. The stage slots (Config.StageSlots) are its ceiling; every
// Interval the engine feeds it the process's CPU use and how long attempts
// waited for a slot, and sets the slots' capacity to its answer:
//
//   - overloaded — the smoothed CPU use (process CPU time over wall time
//     and GOMAXPROCS) is over TargetCPU, or an attempt holding a slot
//     waited more than MaxQueueDelay to start (attemptWaits): the limit drops to the attempts running now
//     (if fewer) times min(TargetCPU/cpu, MaxQueueDelay/delay), at most
//     halving and at least a 5 % cut per sample. Running attempts are never
//     stopped: the node refuses new ones (StepRefused busy) until it is back
//     under, and the coordinator offers them to a node with room.
//   - not overloaded, and the slots in use (at least half the limit
//     running, or attempts waiting), or the CPU under half its target: the
//     limit grows by √limit (at least 1), so a node that shed load takes it
//     back within seconds.
//   - else it holds: an idle node does not inflate its limit.
//
// The limit stays within [Min, Max]. It is announced with the node's load
// (Load.StageActive, Load.StageLimit), and step placement puts nodes whose
// share is full last.
//
// It is pure: no clock, no goroutine; safe for concurrent use.
type StageCapacity struct {
	cfg StageCapacityConfig

	mu    sync.Mutex
	limit float64
	cpu   float64 // smoothed CPU use; <0 before the first sample
}

// StageCapacityConfig configures a StageCapacity. Zero fields take the
// defaults named on them.
type StageCapacityConfig struct {
	// Max is the ceiling and the limit before any sample (the stage
	// slots). Required (> 0).
	Max int
	// Min is the floor. Default max(1, Max/16): a node always takes a few.
	Min int
	// TargetCPU is the share of GOMAXPROCS the process may use before the
	// limit shrinks (0..1]. Default 0.85: the rest is for the node's own
	// coordinators, gossip and the actor transport.
	TargetCPU float64
	// MaxQueueDelay is how long an attempt holding a slot may wait to start
	// (the node's mailbox and scheduler) before the limit shrinks. Default
	// 25 ms: an idle node starts one in microseconds; a first token's
	// budget is hundreds of ms, and a longer wait is better spent on
	// another node.
	MaxQueueDelay time.Duration
	// Smoothing weighs each CPU sample (0..1]. Default 0.5: one busy tick
	// moves the average half way.
	Smoothing float64
	// Interval is how often the engine samples (not read by StageCapacity
	// itself). Default 250 ms, the membership's load interval.
	Interval time.Duration
}

// withDefaults fills cfg's zero fields with their defaults.
func (cfg StageCapacityConfig) withDefaults() StageCapacityConfig {
	cfg.Max = max(cfg.Max, 1)
	if cfg.Min < 1 {
		cfg.Min = max(1, cfg.Max/16)
	}
	cfg.Min = min(cfg.Min, cfg.Max)
	if cfg.TargetCPU <= 0 || cfg.TargetCPU > 1 {
		cfg.TargetCPU = 0.85
	}
	if cfg.MaxQueueDelay <= 0 {
		cfg.MaxQueueDelay = 25 * time.Millisecond
	}
	if cfg.Smoothing <= 0 || cfg.Smoothing > 1 {
		cfg.Smoothing = 0.5
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 250 * time.Millisecond
	}
	return cfg
}

// CapacitySample is what a node measured over one interval.
type CapacitySample struct {
	// CPU is the process's CPU time over wall time and GOMAXPROCS (0..1;
	// negative: not measured).
	CPU float64
	// QueueDelay is the longest an attempt waited to start once it held a
	// stage slot (attemptWaits): those that started in the interval, and
	// the oldest still waiting.
	QueueDelay time.Duration
	// Running and Waiting are the attempts holding and waiting for a slot.
	Running, Waiting int
}

// NewStageCapacity returns a limit at cfg.Max.
func NewStageCapacity(cfg StageCapacityConfig) *StageCapacity {
	cfg = cfg.withDefaults()
	return &StageCapacity{cfg: cfg, limit: float64(cfg.Max), cpu: -1}
}

// Limit is the current limit.
func (c *StageCapacity) Limit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.limit)
}

// CPU is the smoothed CPU use (negative before any measured sample).
func (c *StageCapacity) CPU() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cpu
}

// Observe moves the limit with one interval's sample and returns it.
func (c *StageCapacity) Observe(s CapacitySample) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.CPU >= 0 {
		if c.cpu < 0 {
			c.cpu = s.CPU
		} else {
			c.cpu += c.cfg.Smoothing * (s.CPU - c.cpu)
		}
	}
	factor := 1.0
	if c.cpu > c.cfg.TargetCPU {
		factor = c.cfg.TargetCPU / c.cpu
	}
	if s.QueueDelay > c.cfg.MaxQueueDelay {
		factor = min(factor, float64(c.cfg.MaxQueueDelay)/float64(s.QueueDelay))
	}
	switch {
	case factor < 1:
		base := min(c.limit, float64(max(s.Running, c.cfg.Min)))
		c.limit = base * max(0.5, min(0.95, factor))
	case float64(s.Running) >= c.limit/2 || s.Waiting > 0 || (c.cpu >= 0 && c.cpu < c.cfg.TargetCPU/2):
		c.limit += max(1, math.Sqrt(c.limit))
	}
	c.limit = min(float64(c.cfg.Max), max(float64(c.cfg.Min), c.limit))
	return int(c.limit)
}

// attemptWaits measures how long stage attempts wait to start once they
// hold a slot — the node's own queueing delay (its stage host's mailbox,
// then the scheduler until the worker first runs), which grows when its
// CPU cannot keep up, whatever the limit. (A wait *for* a slot is not
// counted: the limit itself causes it, and it would shrink the limit
// further; waiters count as demand instead, CapacitySample.Waiting.) The
// stage host notes when an attempt gets its slot, its worker when it first
// runs; the capacity sampler takes the longest wait of the interval.
// Bounded by the attempts holding slots. Safe for concurrent use.
type attemptWaits struct {
	mu      sync.Mutex
	since   map[string]time.Time // waiting attempts by step key
	longest time.Duration        // of those that got a slot since the last take
}

func newAttemptWaits() *attemptWaits { return &attemptWaits{since: map[string]time.Time{}} }

// wait notes that attempt key starts waiting at now.
func (w *attemptWaits) wait(key string, now time.Time) {
	w.mu.Lock()
	w.since[key] = now
	w.mu.Unlock()
}

// start is wait unless key already waits (since it got its slot).
func (w *attemptWaits) start(key string, now time.Time) {
	w.mu.Lock()
	if _, ok := w.since[key]; !ok {
		w.since[key] = now
	}
	w.mu.Unlock()
}

// done notes that attempt key stopped waiting at now; granted: it started
// (its wait counts), else it was withdrawn or failed to start.
func (w *attemptWaits) done(key string, now time.Time, granted bool) {
	w.mu.Lock()
	if at, ok := w.since[key]; ok {
		delete(w.since, key)
		if granted {
			w.longest = max(w.longest, now.Sub(at))
		}
	}
	w.mu.Unlock()
}

// take returns the longest wait since the last take — of the attempts that
// started, and of those still waiting at now — and starts afresh.
func (w *attemptWaits) take(now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.longest
	w.longest = 0
	for key, at := range w.since {
		if now.Sub(at) > staleAttemptWait {
			delete(w.since, key) // never started nor withdrawn: not a wait any more
			continue
		}
		d = max(d, now.Sub(at))
	}
	return d
}

// staleAttemptWait: an attempt noted as waiting to start for longer is
// forgotten (a bookkeeping slip must not hold the limit down for ever).
const staleAttemptWait = 30 * time.Second

// cpuMeter measures the process's CPU use between samples: CPU time over
// wall time and GOMAXPROCS. Owned by one goroutine (capacityLoop).
type cpuMeter struct {
	at  time.Time
	cpu time.Duration
	ok  bool
}

func newCPUMeter(now time.Time) *cpuMeter {
	cpu, ok := processCPUTime()
	return &cpuMeter{at: now, cpu: cpu, ok: ok}
}

// sample returns the share of GOMAXPROCS used since the last sample (0..1),
// or -1 when it cannot be measured.
func (m *cpuMeter) sample(now time.Time) float64 {
	cpu, ok := processCPUTime()
	wall := now.Sub(m.at)
	prev, had := m.cpu, m.ok
	m.at, m.cpu, m.ok = now, cpu, ok
	if !ok || !had || wall <= 0 {
		return -1
	}
	return cpuShare(cpu-prev, wall, runtime.GOMAXPROCS(0))
}

// cpuShare is cpu time over wall time and procs, within [0, 1].
func cpuShare(cpu, wall time.Duration, procs int) float64 {
	if wall <= 0 || procs < 1 {
		return -1
	}
	return min(1, max(0, float64(cpu)/float64(wall)/float64(procs)))
}
