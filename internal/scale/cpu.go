package scale

import (
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var sink atomic.Uint64

// selfCPU is this process's CPU time so far (user + system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Burn keeps every CPU busy for d and returns the cores it got (process
// CPU time over wall time): under a CFS quota of q cores, about q. It is
// the quota check `make scale` runs in a container (qlc-scale -burn).
func Burn(d time.Duration) float64 {
	start, cpu0 := time.Now(), selfCPU()
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() { // owned: ends after d
			defer wg.Done()
			x := uint64(1)
			for time.Since(start) < d {
				for range 10000 {
					x = x*6364136223846793005 + 1442695040888963407
				}
			}
			sink.Store(x)
		}()
	}
	wg.Wait()
	return (selfCPU() - cpu0).Seconds() / time.Since(start).Seconds()
}
