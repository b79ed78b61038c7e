package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A pool runs every batch once, reuses idle workers instead of starting
// new ones, keeps at most maxIdle waiting, and Close waits for them all.
func TestRunPoolReusesWorkersAndCloses(t *testing.T) {
	p := newRunPool(10, 2, time.Minute)
	var ran atomic.Int32
	// wait until n batches have run and idle workers wait.
	wait := func(n int32, idle int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ran.Load() < n || p.Idle() < idle {
			if time.Now().After(deadline) {
				t.Fatalf("ran %d of %d, %d idle", ran.Load(), n, p.Idle())
			}
			time.Sleep(time.Millisecond)
		}
	}
	// One after another: a batch finds the last one's worker idle (but for
	// the instant between a batch's end and its worker's wait).
	for i := range int32(100) {
		p.Schedule(func() { ran.Add(1) })
		wait(i+1, 1)
	}
	if n := p.started.Load(); n > 10 {
		t.Fatalf("%d workers started for 100 batches one after another; want them reused", n)
	}
	// Five at once, held until all have started: five workers, two kept.
	var hold sync.WaitGroup
	hold.Add(5)
	release := make(chan struct{})
	for range 5 {
		p.Schedule(func() { hold.Done(); <-release; ran.Add(1) })
	}
	hold.Wait()
	close(release)
	wait(105, 2)
	deadline := time.Now().Add(10 * time.Second)
	for p.Idle() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle after a burst of 5; want maxIdle 2", p.Idle())
		}
		time.Sleep(time.Millisecond)
	}
	p.Close()
	if p.Idle() != 0 {
		t.Fatalf("%d idle after Close", p.Idle())
	}
	// After Close a batch still runs (actors stopping during shutdown).
	done := make(chan struct{})
	p.Schedule(func() { close(done) })
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a batch scheduled after Close never ran")
	}
}

// An idle worker leaves after idleFor.
func TestRunPoolIdleWorkersLeave(t *testing.T) {
	p := newRunPool(10, 4, 20*time.Millisecond)
	defer p.Close()
	done := make(chan struct{})
	p.Schedule(func() { close(done) })
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for p.Idle() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d idle workers still waiting long after idleFor", p.Idle())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
