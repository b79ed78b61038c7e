package gateway

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// idleProfiles: a run of "idle" logs its first event and then waits ten
// minutes for a first token.
const idleProfiles = `
default_profile: idle
providers:
  idle: {kind: sim, sim: {ttft: 10m, output_tokens: 10}}
profiles:
  idle:
    provider: idle
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// TestIdleReadersHelper is the client process of
// BenchmarkIdleSubscriberMemory (it skips otherwise): it connects
// QLC_IDLE_READERS SSE readers to QLC_IDLE_READERS_URL, prints "ready"
// once each read its first event, and exits when its stdin closes.
func TestIdleReadersHelper(t *testing.T) {
	url := os.Getenv("QLC_IDLE_READERS_URL")
	if url == "" {
		t.Skip("the client process of BenchmarkIdleSubscriberMemory")
	}
	n, _ := strconv.Atoi(os.Getenv("QLC_IDLE_READERS"))
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: -1, DisableCompression: true}}
	sem := make(chan struct{}, 64)
	var ready sync.WaitGroup
	failed := make(chan error, n)
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		ready.Add(1)
		go func() {
			once := sync.OnceFunc(func() { <-sem; ready.Done() })
			defer once()
			resp, err := client.Get(url)
			if err != nil {
				failed <- err
				return
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				if len(sc.Bytes()) == 0 {
					once()
				}
			}
		}()
	}
	ready.Wait()
	select {
	case err := <-failed:
		fmt.Println("failed:", err)
	default:
		fmt.Println("ready")
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0) // the readers' connections close with the process
}

// heapBy sums the bytes in use (as of the last GC) by where they were
// allocated: under gateway or actors code (QLC's), else under net/http or
// bufio (net/http's connections), else elsewhere. runtime.MemProfileRate
// must be 1 for exact sums.
func heapBy() (qlc, nethttp, other int64) {
	n, _ := runtime.MemProfile(nil, true)
	recs := make([]runtime.MemProfileRecord, n+100)
	n, _ = runtime.MemProfile(recs, true)
	for _, r := range recs[:n] {
		in := r.InUseBytes()
		if in == 0 {
			continue
		}
		frames := runtime.CallersFrames(r.Stack())
		class := &other
		for {
			f, more := frames.Next()
			switch {
			case strings.HasPrefix(f.Function, "github.com/qlc-project/qlc/"):
				class = &qlc
			case class == &other && (strings.HasPrefix(f.Function, "net/http.") || strings.HasPrefix(f.Function, "net.") || strings.HasPrefix(f.Function, "bufio.")):
				class = &nethttp
			}
			if class == &qlc || !more {
				break
			}
		}
		*class += in
	}
	return qlc, nethttp, other
}

// BenchmarkIdleSubscriberMemory: N SSE readers in another process (this
// test binary, TestIdleReadersHelper) connected over loopback to one live
// run of an in-process gateway that sends nothing after its first event.
// After two GCs it reports, per reader, the live heap allocated under
// QLC's code (qlc-B: the subscription, the transport, the ping timer, the
// headers it sets), under net/http alone (net/http-B: its connection,
// request, buffers), elsewhere, the goroutine stacks, and goroutines.
// Run with -benchtime 1x.
func BenchmarkIdleSubscriberMemory(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			old := runtime.MemProfileRate
			runtime.MemProfileRate = 1
			defer func() { runtime.MemProfileRate = old }()
			g := startGateway(b, idleProfiles, nil)
			var qlc, nethttp, other, stack, gor, heap float64
			for i := 0; i < b.N; i++ {
				id := createRunB(b, g.URL)
				h, err := g.Engine.Hub(id)
				if err != nil {
					b.Fatal(err)
				}
				waitUntil(b, "the run's first event", func() bool { return h.LastSeq() > 0 })
				runtime.GC()
				runtime.GC()
				var m0, m1 runtime.MemStats
				runtime.ReadMemStats(&m0)
				q0, h0, o0 := heapBy()
				g0 := runtime.NumGoroutine()

				cmd := exec.Command(os.Args[0], "-test.run=^TestIdleReadersHelper$", "-test.count=1")
				cmd.Env = append(os.Environ(), "QLC_IDLE_READERS_URL="+g.URL+"/v1/runs/"+id+"/events", "QLC_IDLE_READERS="+strconv.Itoa(n))
				stdin, _ := cmd.StdinPipe()
				stdout, _ := cmd.StdoutPipe()
				cmd.Stderr = os.Stderr
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				line, _ := bufio.NewReader(stdout).ReadString('\n')
				if strings.TrimSpace(line) != "ready" {
					b.Fatalf("readers: %q", line)
				}
				time.Sleep(time.Second) // every handler parked in its pump
				runtime.GC()
				runtime.GC()
				runtime.ReadMemStats(&m1)
				q1, h1, o1 := heapBy()
				gor += float64(runtime.NumGoroutine()-g0) / float64(n)
				qlc += float64(q1-q0) / float64(n)
				nethttp += float64(h1-h0) / float64(n)
				other += float64(o1-o0) / float64(n)
				stack += (float64(m1.StackInuse) - float64(m0.StackInuse)) / float64(n)
				heap += (float64(m1.HeapAlloc) - float64(m0.HeapAlloc)) / float64(n)
				stdin.Close()
				_ = cmd.Wait()
				_ = g.Engine.Cancel(id, "benchmark over")
			}
			N := float64(b.N)
			b.ReportMetric(qlc/N, "qlc-B/subscriber")
			b.ReportMetric(nethttp/N, "net/http-B/subscriber")
			b.ReportMetric(other/N, "other-B/subscriber")
			b.ReportMetric(heap/N, "heap-B/subscriber")
			b.ReportMetric(stack/N, "stack-B/subscriber")
			b.ReportMetric(gor/N, "goroutines/subscriber")
		})
	}
}

// createRunB posts a run of the "idle" profile.
func createRunB(b *testing.B, base string) string {
	b.Helper()
	return benchCreate(b, http.DefaultClient, base, "idle")
}
