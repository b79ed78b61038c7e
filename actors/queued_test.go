package actors

import (
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// qlc_mailbox_queued sums what a kind's mailboxes hold now: posts count up,
// takes count down, across every mailbox of the kind.
func TestMailboxQueuedByKind(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	a := &depthMiddleware{h: m.mailboxDepth.WithLabelValues("hub"), queued: m.mailboxQueued.kind("hub")}
	b := &depthMiddleware{h: m.mailboxDepth.WithLabelValues("hub"), queued: m.mailboxQueued.kind("hub")}
	c := &depthMiddleware{h: m.mailboxDepth.WithLabelValues("limiter"), queued: m.mailboxQueued.kind("limiter")}
	for range 3 {
		a.MessagePosted(nil)
	}
	b.MessagePosted(nil)
	c.MessagePosted(nil)
	a.MessageReceived(nil)
	c.MessageReceived(nil)
	if got := m.mailboxQueued.Depth("hub"); got != 3 {
		t.Fatalf("hub queued %d, want 3", got)
	}
	if n, err := testutil.GatherAndCount(reg, "qlc_mailbox_queued"); err != nil || n != 2 {
		t.Fatalf("qlc_mailbox_queued series: %d %v", n, err)
	}
}

// After a run, every mailbox the run used is drained: the gauge is back at 0.
func TestMailboxQueuedDrainsAfterARun(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	h, err := e.StartRun(RunRequest{Tenant: "t", Profile: "instant", Query: "How do Go channels work?", Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	collect(t, h, 1)
	for _, k := range []string{"hub", "coordinator"} {
		waitUntil(t, k+" mailboxes drained", func() bool { return e.metrics.mailboxQueued.Depth(k) == 0 })
	}
}

// BenchmarkDepthMiddleware is what every message costs the mailbox depth
// metrics (a post and a take), in parallel, each goroutine its own mailbox:
// shared, all counting in the kind's qlc_mailbox_queued (as they do); own,
// each its own counter (what the shared counter's contention costs).
func BenchmarkDepthMiddleware(b *testing.B) {
	m := NewMetrics(nil)
	for _, shared := range []bool{true, false} {
		b.Run(map[bool]string{true: "shared", false: "own"}[shared], func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				q := m.mailboxQueued.kind("hub")
				if !shared {
					q = new(atomic.Int64)
				}
				d := &depthMiddleware{h: m.mailboxDepth.WithLabelValues("hub"), queued: q}
				for pb.Next() {
					d.MessagePosted(nil)
					d.MessageReceived(nil)
				}
			})
		})
	}
}
