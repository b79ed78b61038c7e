package tokenizer

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func cpuNow() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestMeasureThroughput logs encode throughput per CPU-second (getrusage),
// which stays meaningful on a shared, loaded machine where the wall-clock
// figures of the benchmarks do not. It asserts nothing and runs only with
// QLC_TOKENIZER_MEASURE=1 and QLC_TOKENIZER_CORPUS set; pin it with
// GOMAXPROCS=1 taskset -c 0.
func TestMeasureThroughput(t *testing.T) {
	dir := os.Getenv("QLC_TOKENIZER_CORPUS")
	if os.Getenv("QLC_TOKENIZER_MEASURE") == "" || dir == "" {
		t.Skip("set QLC_TOKENIZER_MEASURE=1 and QLC_TOKENIZER_CORPUS")
	}
	var docs []string
	for _, part := range []string{"en", "code", "multi"} {
		data, _ := os.ReadFile(filepath.Join(dir, part+".txt"))
		docs = append(docs, splitDocs(data)...)
	}
	size := totalBytes(docs)
	for _, name := range []string{Cl100kBase, O200kBase} {
		for _, g := range []bool{false, true} {
			e := mustLoad(t, name, g)
			var dst []int
			best := time.Hour
			for rep := 0; rep < 2; rep++ {
				c0 := cpuNow()
				for _, d := range docs {
					dst = e.AppendEncodeOrdinary(dst[:0], d)
				}
				best = min(best, cpuNow()-c0)
			}
			t.Logf("%s generic=%v (%s): %.2f MB/s per CPU-second over %d bytes", name, g, e.Path(), float64(size)/best.Seconds()/1e6, size)
		}
	}
}

// TestMeasureWorstCase logs CPU time per byte of one long piece (one letter,
// digits, spaces) at 200 000 bytes and 1, 2, 4, 8 MiB: it should stay flat.
// Runs only with QLC_TOKENIZER_MEASURE=1.
func TestMeasureWorstCase(t *testing.T) {
	if os.Getenv("QLC_TOKENIZER_MEASURE") == "" {
		t.Skip("set QLC_TOKENIZER_MEASURE=1")
	}
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		for _, unit := range []string{"a", "7", " "} {
			for _, mb := range []int{0, 1, 2, 4, 8} {
				n := mb << 20
				if mb == 0 {
					n = 200000
				}
				text := strings.Repeat(unit, n)
				e.Count(text)
				best := time.Hour
				for rep := 0; rep < 2; rep++ {
					c0 := cpuNow()
					e.Count(text)
					best = min(best, cpuNow()-c0)
				}
				t.Logf("%s %q x %d: %v cpu (%.1f ns/byte)", name, unit, n, best, float64(best.Nanoseconds())/float64(n))
			}
		}
	}
}
