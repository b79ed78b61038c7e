package actors

import (
	"sync"
	"sync/atomic"
	"time"
)

// runPool is the actor.Dispatcher of the engine's actors: it runs a
// mailbox's batch on a goroutine that outlives the batch.
//
// protoactor's default dispatcher starts a goroutine per batch (go fn()). A
// new goroutine starts with a small stack, and a coordinator's or a hub's
// batch (protobuf, templates, logging) is deep enough to grow it by copying
// — at every batch: 22 % of the CPU of a run's start in
// BenchmarkAddedTTFTInProcess went to runtime.copystack. A worker of this
// pool keeps its grown stack from one batch to the next (the garbage
// collector may still shrink an idle one).
//
// Bounds: at most maxIdle workers wait for work, each for at most idleFor;
// a batch that finds none idle gets a new worker (never queued: a mailbox
// waiting behind another actor's batch would add its latency). The pool
// owns every worker it starts and Close waits for them; after Close a batch
// runs on a goroutine of its own, as with protoactor's dispatcher (actors
// still stopping during shutdown).
type runPool struct {
	throughput int
	maxIdle    int32
	idleFor    time.Duration

	work    chan func() // unbuffered: a send reaches only a waiting worker
	quit    chan struct{}
	idle    atomic.Int32 // workers waiting for work
	started atomic.Int64 // workers started

	mu     sync.Mutex // guards closed and wg.Add against Close's Wait
	closed bool
	wg     sync.WaitGroup
}

// newRunPool: throughput is protoactor's (messages per batch before the
// mailbox yields); maxIdle workers wait at most idleFor.
func newRunPool(throughput, maxIdle int, idleFor time.Duration) *runPool {
	return &runPool{throughput: throughput, maxIdle: int32(maxIdle), idleFor: idleFor,
		work: make(chan func()), quit: make(chan struct{})}
}

// Throughput implements actor.Dispatcher.
func (p *runPool) Throughput() int { return p.throughput }

// Schedule implements actor.Dispatcher: fn runs on an idle worker, or on a
// new one.
func (p *runPool) Schedule(fn func()) {
	select {
	case p.work <- fn:
		return
	default:
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		go fn()
		return
	}
	p.wg.Add(1)
	p.mu.Unlock()
	p.started.Add(1)
	go p.worker(fn)
}

func (p *runPool) worker(fn func()) {
	defer p.wg.Done()
	var timer *time.Timer
	for {
		fn()
		// An idle worker must not keep its last batch: the closure holds
		// the mailbox and its actor (a finished coordinator, with its whole
		// log), and the select below takes fn's address, so the stack slot
		// stays live until the next batch or runPoolIdleFor.
		fn = nil
		if p.idle.Add(1) > p.maxIdle {
			p.idle.Add(-1)
			return
		}
		if timer == nil {
			timer = time.NewTimer(p.idleFor)
		} else {
			timer.Reset(p.idleFor)
		}
		select {
		case fn = <-p.work:
			p.idle.Add(-1)
		case <-timer.C:
			p.idle.Add(-1)
			return
		case <-p.quit:
			p.idle.Add(-1)
			timer.Stop()
			return
		}
	}
}

// Idle is how many workers wait for work.
func (p *runPool) Idle() int { return int(p.idle.Load()) }

// Close stops the idle workers and waits for every worker to finish its
// batch; later batches run on goroutines of their own.
func (p *runPool) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.quit)
	p.mu.Unlock()
	p.wg.Wait()
}

// The engine's pool: protoactor's default throughput; up to 64 workers
// wait for work (a burst of run starts), each for at most 10 s.
const (
	runPoolThroughput = 300
	runPoolIdle       = 64
	runPoolIdleFor    = 10 * time.Second
)
