package actors

import (
	"container/list"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// A finished run whose log is durably in the gateway's store keeps no log
// in memory (issue 17): its hub keeps what it is asked for without reading
// the log (its seq count, its end, how it was started) and reads the log
// back from the store when a reader wants events (Engine.LogStored). This
// file holds the reading side: the engine's loader (SetLogStore) and a small
// cache of the logs read lately, packed (packedLog), bounded in bytes.
//
// Life of a stored run's log:
//  1. The run ends; its hub holds the log as it was written, then packed
//     (compact), as any finished run.
//  2. The gateway writes the run to its store (RecordRun) and calls
//     Engine.LogStored: the hub drops its log (at once, or when its last
//     reader leaves, or at the engine's packing tick).
//  3. A reader asks for events (Subscription.Next, Hub.Events): the hub asks
//     storedLogs for the run's packed log — from the cache, or loaded from
//     the store and packed there — and decodes the part read.
//  4. The run is evicted (Engine.drop): its cached log goes with it.

// ErrLogUnavailable is what a reader of a finished run gets when the run's
// log was dropped from memory for the store and the store no longer gives
// it back (it was pruned, or the store failed). It wraps ErrHubClosed: the
// reader treats it as a run no longer held here.
var ErrLogUnavailable = fmt.Errorf("%w: the finished run's log could not be read from the store", ErrHubClosed)

// LogLoader reads a finished run's whole log (seq 1 to its terminal event)
// from where the gateway stored it. It may block on disk I/O and is called
// concurrently, from readers' goroutines, never under an engine lock.
type LogLoader func(runID string) ([]*messages.RunEvent, error)

// storedLogs reads stored runs' logs through load and keeps the latest
// read, packed, in an LRU bounded by maxBytes (a log over maxBytes/4 is not
// kept: each read of it loads it again), each for storedLogTTL after its
// last read (sweep): the cache serves reads that come together — an SSE
// replay read in batches, a page polling the run — not a second copy of
// the retained runs. Safe for concurrent use.
//
// Lock order: storedLogs.mu, then a Hub's mu (get checks the hub is still
// held under mu); never the other way.
type storedLogs struct {
	maxBytes int64
	// gone is called, without a lock, with a hub whose log could not be
	// read back (pruned from the store, or the store failed): the engine
	// lets go of the run, so that the next request for it reads the store
	// afresh (or finds no such run) instead of a run without events.
	gone func(h *Hub)
	// loads counts the logs read from the store (a metric).
	loads atomic.Int64

	// mu guards the fields below it.
	mu      sync.Mutex
	load    LogLoader
	entries map[string]*list.Element // run id → element of lru (*storedEntry)
	lru     list.List                // front: most recently read
	bytes   int64
}

type storedEntry struct {
	runID string
	log   *packedLog
	read  time.Time // last read
}

// storedLogTTL is how long a log read back from the store stays cached
// after its last read.
const storedLogTTL = 5 * time.Second

// defaultStoredLogCache bounds the cache of logs read back from the store:
// a few hundred average runs, or a dozen 20 000-token ones; readers of the
// same run (a page polling the run resource, an SSE replay read in
// batches) share one read.
const defaultStoredLogCache = 8 << 20

func newStoredLogs(maxBytes int64) *storedLogs {
	return &storedLogs{maxBytes: maxBytes, entries: map[string]*list.Element{}}
}

// SetLogStore gives the engine the loader of finished runs' logs from the
// gateway's store. Without one, LogStored does nothing: every finished run
// keeps its packed log in memory. Call it once, before serving.
func (e *Engine) SetLogStore(load LogLoader) {
	e.logs.mu.Lock()
	defer e.logs.mu.Unlock()
	e.logs.load = load
}

// LogStored tells the engine that h's whole log is durably in the store
// SetLogStore reads (the gateway recorded the run): h drops its log from
// memory and reads it from there on demand, now, or when its last reader
// leaves, or at the engine's next packing tick (compactFinished) once it
// has been over for compactAfter. It reports whether h can rely on the
// store (a loader is set and h has ended); false leaves h as it is.
func (e *Engine) LogStored(h *Hub) bool {
	e.logs.mu.Lock()
	ok := e.logs.load != nil
	e.logs.mu.Unlock()
	if !ok || !h.markStored(e.logs) {
		return false
	}
	if !h.Pack() {
		e.packLater(h) // readers are on it: the tick or its last reader drops it
	}
	return true
}

// get returns h's log, packed: the cached copy, else loaded and packed (and
// cached while h is held: not after it was evicted).
func (s *storedLogs) get(h *Hub) (*packedLog, error) {
	s.mu.Lock()
	if el, ok := s.entries[h.RunID]; ok {
		s.lru.MoveToFront(el)
		en := el.Value.(*storedEntry)
		en.read = time.Now()
		s.mu.Unlock()
		return en.log, nil
	}
	load := s.load
	s.mu.Unlock()
	if load == nil {
		return nil, ErrLogUnavailable
	}
	p, err := s.read(load, h)
	if err != nil {
		if s.gone != nil {
			s.gone(h)
		}
		return nil, err
	}
	s.put(h, p)
	return p, nil
}

// read loads h's log and packs it.
func (s *storedLogs) read(load LogLoader, h *Hub) (*packedLog, error) {
	s.loads.Add(1)
	evs, err := load(h.RunID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLogUnavailable, err)
	}
	n := h.LastSeq()
	if uint64(len(evs)) < n {
		return nil, fmt.Errorf("%w: the store holds %d of its %d events", ErrLogUnavailable, len(evs), n)
	}
	// The store holds the log the hub had (the gateway stored it from the
	// hub once it ended); a longer one is cut to the hub's.
	p, err := packLog(h.RunID, evs[:n])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrLogUnavailable, err)
	}
	return p, nil
}

// put caches p as h's log, if it is small enough and h is still held,
// pushing out the least recently read beyond maxBytes.
func (s *storedLogs) put(h *Hub, p *packedLog) {
	size := p.bytes()
	if size > s.maxBytes/4 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h.mu.Lock()
	closed := h.closed
	h.mu.Unlock()
	if closed {
		return // evicted meanwhile: forget ran already
	}
	if el, ok := s.entries[h.RunID]; ok {
		s.lru.MoveToFront(el)
		return // read concurrently: the first copy stays
	}
	s.entries[h.RunID] = s.lru.PushFront(&storedEntry{runID: h.RunID, log: p, read: time.Now()})
	s.bytes += size
	for s.bytes > s.maxBytes {
		s.remove(s.lru.Back())
	}
}

// sweep drops the logs not read since storedLogTTL before now (the least
// recently read are at the back).
func (s *storedLogs) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for el := s.lru.Back(); el != nil && now.Sub(el.Value.(*storedEntry).read) >= storedLogTTL; el = s.lru.Back() {
		s.remove(el)
	}
}

// forget drops runID's cached log (its run was evicted).
func (s *storedLogs) forget(runID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.entries[runID]; ok {
		s.remove(el)
	}
}

// remove drops el; s.mu held.
func (s *storedLogs) remove(el *list.Element) {
	en := s.lru.Remove(el).(*storedEntry)
	delete(s.entries, en.runID)
	s.bytes -= en.log.bytes()
}

// stats is how many logs are cached and their bytes.
func (s *storedLogs) stats() (entries int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries), s.bytes
}
