package actors

import (
	"slices"
	"sync"
	"time"
)

// ttftStats keeps each endpoint model's recent times to first token, shared
// by the coordinators of a process, for hedging: its p95 is when a hedge
// starts. Safe for concurrent use.
type ttftStats struct {
	mu     sync.Mutex
	recent map[string][]time.Duration // key → ring of the last ttftWindow samples
	next   map[string]int
}

const (
	ttftWindow     = 64 // samples kept per endpoint model
	ttftMinSamples = 8  // fewer: use the default hedge delay
)

func (s *ttftStats) observe(key string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recent == nil {
		s.recent, s.next = map[string][]time.Duration{}, map[string]int{}
	}
	r := s.recent[key]
	if len(r) < ttftWindow {
		s.recent[key] = append(r, d)
		return
	}
	r[s.next[key]] = d
	s.next[key] = (s.next[key] + 1) % ttftWindow
}

// p95 is the 95th percentile of key's recent TTFTs, or def with too few.
func (s *ttftStats) p95(key string, def time.Duration) time.Duration {
	s.mu.Lock()
	r := slices.Clone(s.recent[key])
	s.mu.Unlock()
	if len(r) < ttftMinSamples {
		return def
	}
	slices.Sort(r)
	return r[(len(r)*95)/100]
}

// hedgeTick is a coordinator's timer to itself: the primary of attempt has
// had its p95 time to send a first token.
type hedgeTick struct {
	step    string
	attempt int32
}
