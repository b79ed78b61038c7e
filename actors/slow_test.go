package actors

import (
	"sync"
	"testing"
	"time"
)

// slowRecorder is a SlowWatcher that keeps what it is told.
type slowRecorder struct {
	mu     sync.Mutex
	firsts []time.Duration
	stages []time.Duration
}

func (s *slowRecorder) FirstToken(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.firsts = append(s.firsts, d)
}

func (s *slowRecorder) StageDone(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stages = append(s.stages, d)
}

// Config.Slow hears each run's TTFT once per place that logs the run (the
// hub and, on a node, the coordinator: here one process holds both) and
// every completed stage's duration, not each token.
func TestSlowWatcherHearsFirstTokenAndStages(t *testing.T) {
	w := &slowRecorder{}
	e, _ := newTestEngine(t, func(c *Config) { c.Slow = w })
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "How do Go channels work?", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	deltas, completed := 0, 0
	for _, ev := range evs {
		if ev.GetTokenDelta() != nil {
			deltas++
		}
		if ev.GetStageCompleted() != nil {
			completed++
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.firsts) != 2 || deltas < 4 {
		t.Fatalf("FirstToken told %d times (want 2: hub and coordinator) for %d deltas", len(w.firsts), deltas)
	}
	if len(w.stages) != 2*completed || completed != 4 {
		t.Fatalf("StageDone told %d times for %d completed stages", len(w.stages), completed)
	}
	for _, d := range append(w.firsts, w.stages...) {
		if d < 0 || d > time.Minute {
			t.Fatalf("implausible duration %v", d)
		}
	}
}
