package actors

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// BenchmarkEvict is one eviction pass over n finished runs of 100 tenants
// with one run over MaxFinished (so the oldest must be found), the run put
// back between passes. Besides ns/op it reports max-lookup-µs: the longest
// a concurrent Engine.Hub lookup waited for Engine.mu during the passes
// (the sort used to run under it).
//
//	go test -run '^$' -bench BenchmarkEvict -benchtime 20x ./actors/
func BenchmarkEvict(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			e := newSlotEngine(b, "", func(c *Config) { c.MaxFinished = n; c.RetainFinished = time.Hour })
			t0 := time.Now()
			restore := func(i int) {
				id := fmt.Sprintf("run_%08d", i)
				log := []*messages.RunEvent{{RunId: id, Seq: 1, Epoch: 1,
					Kind: &messages.RunEvent_RunCompleted{RunCompleted: &messages.RunCompleted{}}}}
				h, err := e.Restore(id, fmt.Sprintf("t%d", i%100), "instant", "q", t0, log)
				if err != nil {
					b.Fatal(err)
				}
				h.mu.Lock()
				h.endedAt = t0.Add(time.Duration(i) * time.Microsecond)
				h.mu.Unlock()
			}
			for i := range n + 1 {
				restore(i)
			}
			var stop atomic.Bool
			var worst atomic.Int64
			var wg sync.WaitGroup
			wg.Go(func() {
				for !stop.Load() {
					s := time.Now()
					_, _ = e.Hub("run_none")
					if d := int64(time.Since(s)); d > worst.Load() {
						worst.Store(d)
					}
					time.Sleep(50 * time.Microsecond)
				}
			})
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				e.evict(t0.Add(time.Minute)) // drops run 0, the oldest
				b.StopTimer()
				restore(0)
				b.StartTimer()
			}
			b.StopTimer()
			stop.Store(true)
			wg.Wait()
			b.ReportMetric(float64(worst.Load())/1e3, "max-lookup-µs")
		})
	}
}
