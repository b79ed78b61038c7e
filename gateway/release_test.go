package gateway

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
)

// TestMemReleaseAfterStreamsLeave: memory is released once, after many
// streams closed and streams stopped closing; not after a small drop, not
// again until the next large drop, and not sooner than minInterval.
func TestMemReleaseAfterStreamsLeave(t *testing.T) {
	var freed atomic.Int32
	m := newMemRelease(4)
	m.quiet, m.minInterval = time.Millisecond, 0
	m.free = func() { freed.Add(1) }
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { m.run(stop); close(done) }()
	defer func() { close(stop); <-done }()

	// checked waits for run to look again after a close.
	checked := func(after int) {
		t.Helper()
		waitUntil(t, "the release check", func() bool { _, c := m.counts(); return c > after })
	}
	for i := 0; i < 10; i++ {
		m.opened()
	}
	// 3 of 10 close: fewer than the threshold, and more than half remain.
	_, c := m.counts()
	for i := 0; i < 3; i++ {
		m.closed()
	}
	checked(c)
	if r, _ := m.counts(); r != 0 || freed.Load() != 0 {
		t.Fatalf("released after 3 of 10 streams closed")
	}
	// 3 more: 6 closed, 4 open — at most half the peak.
	_, c = m.counts()
	for i := 0; i < 3; i++ {
		m.closed()
	}
	checked(c)
	waitUntil(t, "a release", func() bool { r, _ := m.counts(); return r == 1 })
	if freed.Load() != 1 {
		t.Fatalf("free called %d times", freed.Load())
	}
	// The peak is now 4: one more close is no large drop.
	_, c = m.counts()
	m.closed()
	checked(c)
	if r, _ := m.counts(); r != 1 {
		t.Fatalf("released again after 1 of 4 streams closed")
	}
	// A large drop inside minInterval waits for it.
	m.mu.Lock()
	m.minInterval = time.Hour
	m.mu.Unlock()
	for i := 0; i < 8; i++ {
		m.opened()
	}
	_, c = m.counts()
	for i := 0; i < 8; i++ {
		m.closed()
	}
	checked(c)
	if r, _ := m.counts(); r != 1 {
		t.Fatalf("released twice within minInterval")
	}
}

// TestGatewayReleasesMemoryWhenReadersLeave: SSE readers of a real gateway
// count as open streams; when most of them leave, the gateway releases
// memory.
func TestGatewayReleasesMemoryWhenReadersLeave(t *testing.T) {
	g := startGateway(t, idleProfiles, func(c *Config, _ *actors.Config) { c.FreeMemoryAfter = 6 })
	g.Server.mem.quiet = time.Millisecond
	id := createRun(t, g.URL, "idle", "q")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", g.URL+"/v1/runs/"+id+"/events", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	waitUntil(t, "8 open streams", func() bool {
		g.Server.mem.mu.Lock()
		defer g.Server.mem.mu.Unlock()
		return g.Server.mem.open == 8
	})
	if r, _ := g.Server.mem.counts(); r != 0 {
		t.Fatal("released while the readers were there")
	}
	cancel()
	wg.Wait()
	waitUntil(t, "a release after the readers left", func() bool { r, _ := g.Server.mem.counts(); return r == 1 })
	_ = g.Engine.Cancel(id, "test over")
}
