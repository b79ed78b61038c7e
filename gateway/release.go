package gateway

import (
	"runtime"
	"runtime/debug"
	"sync"
	"time"
)

// memRelease gives memory back to the OS after many event streams closed.
//
// Why: an event stream's memory is mostly net/http's (per connection
// buffers, two goroutine stacks); when thousands of readers leave an
// otherwise quiet gateway, that memory becomes garbage, but nothing
// allocates, so no GC runs (Go forces one only every 2 minutes), the heap
// goal stays where the readers put it and the scavenger keeps the pages:
// RSS stays at its peak. Once the streams have stopped closing for a
// moment, memRelease runs two GCs (net/http's buffer pools are cleared on
// the second) and returns the free pages (runtime/debug.FreeOSMemory). It
// does so only after a large drop, and at most every minInterval: a GC of a
// gateway's heap costs milliseconds of CPU, not a pause of the streams.
//
// opened and closed are called by stream handlers, concurrently, and do
// not block; run is one goroutine, owned by the Server.
type memRelease struct {
	threshold   int           // streams closed since the peak (Config.FreeMemoryAfter)
	quiet       time.Duration // no stream closed for this long before a release
	minInterval time.Duration // between two releases
	free        func()        // the release; tests count calls

	wake chan struct{} // a stream closed; capacity 1, sent without blocking

	// mu guards the fields below it.
	mu     sync.Mutex
	open   int       // streams open now
	peak   int       // most open since the last release
	last   time.Time // the last release
	runs   int       // releases so far
	checks int       // times run looked whether a release was due
}

func newMemRelease(threshold int) *memRelease {
	return &memRelease{threshold: threshold, quiet: time.Second, minInterval: 10 * time.Second,
		free: freeOSMemory, wake: make(chan struct{}, 1)}
}

// freeOSMemory collects twice (a sync.Pool empties on its second GC) and
// returns what is free to the OS.
func freeOSMemory() {
	runtime.GC()
	debug.FreeOSMemory()
}

// opened counts a stream that began.
func (m *memRelease) opened() {
	m.mu.Lock()
	m.open++
	m.peak = max(m.peak, m.open)
	m.mu.Unlock()
}

// closed counts a stream that ended and wakes run.
func (m *memRelease) closed() {
	m.mu.Lock()
	m.open--
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// counts returns how many releases ran and how many times run checked.
func (m *memRelease) counts() (releases, checks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.runs, m.checks
}

// run releases memory when due, until stop is closed.
func (m *memRelease) run(stop <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var fire <-chan time.Time // nil: nothing pending
	for {
		select {
		case <-stop:
			return
		case <-m.wake:
			timer.Reset(m.quiet) // streams are still closing: wait until they stop
			fire = timer.C
		case <-fire:
			fire = nil
			m.mu.Lock()
			m.checks++
			due := m.peak-m.open >= m.threshold && m.open <= m.peak/2
			wait := m.minInterval - time.Since(m.last)
			if due && wait <= 0 {
				m.peak, m.last = m.open, time.Now()
			}
			m.mu.Unlock()
			switch {
			case due && wait > 0:
				timer.Reset(wait)
				fire = timer.C
			case due:
				m.free()
				m.mu.Lock()
				m.runs++
				m.mu.Unlock()
			}
		}
	}
}
