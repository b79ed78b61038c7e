package main

// Memory of event streams in a real gateway process (issue 11): the
// readers are real HTTP connections on loopback, the figures the process's
// own (/proc/<pid>/status and its /metrics), so net/http's share is in them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// procStatus reads a field of /proc/<pid>/status, in KiB (VmRSS, VmHWM).
func procStatus(b testing.TB, pid int, field string) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// opsMetric reads one unlabelled series from the gateway's ops /metrics.
func opsMetric(b testing.TB, ops, series string) float64 {
	b.Helper()
	resp, err := http.Get("http://" + ops + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no series %s", series)
	return 0
}

// memGateway is a gateway process for the memory benchmarks, with its dev
// tenant's key and its addresses.
type memGateway struct {
	proc *gatewayProc
	key  string
	base string
	ops  string
	tls  *tls.Config // the clients' TLS configuration (nil: plain HTTP)
}

// client returns an HTTP client of the gateway: HTTP/1.1 (each reader
// has its own connection, as browsers' EventSource over HTTP/1.1 does).
func (g *memGateway) client() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext, MaxIdleConnsPerHost: -1,
		DisableCompression: true, TLSClientConfig: g.tls, TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
}

// startMemGateway starts a gateway process (-local) with profiles; with
// withTLS it serves HTTPS with a self-signed certificate.
func startMemGateway(b *testing.B, profiles string, withTLS bool) *memGateway {
	b.Helper()
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	bin := buildGateway(b)
	dir := b.TempDir()
	pf := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o600); err != nil {
		b.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	args := []string{"-local", "-data-dir", data, "-profiles", pf, "-ops-addr", "127.0.0.1:0", "-max-streams-per-key", "-1", "-log-level", "warn"}
	var conf *tls.Config
	scheme := "http://"
	if withTLS {
		cert, key, pool := selfSignedCert(b, dir)
		args = append(args, "-tls-cert", cert, "-tls-key", key)
		conf, scheme = &tls.Config{RootCAs: pool}, "https://"
	}
	p := startProc(b, bin, nil, args...)
	return &memGateway{proc: p, key: readDevKeys(b, data).TenantKey, base: scheme + p.addrs.HTTP, ops: p.addrs.Ops, tls: conf}
}

func (g *memGateway) pid() int { return g.proc.cmd.Process.Pid }

// createRun starts a run of profile and returns its id.
func (g *memGateway) createRun(b *testing.B, profile string) string {
	b.Helper()
	req, _ := http.NewRequest("POST", g.base+"/v1/runs", strings.NewReader(`{"query":"How do B-trees stay balanced?","profile":"`+profile+`"}`))
	req.Header.Set("Authorization", "Bearer "+g.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	i := bytes.Index(body, []byte(`"id":"`))
	if resp.StatusCode != http.StatusCreated || i < 0 {
		b.Fatalf("create run: %d %s", resp.StatusCode, body)
	}
	rest := body[i+6:]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// waitSubscribers polls the gateway's subscriber gauge until it is n.
func (g *memGateway) waitSubscribers(b *testing.B, n float64) {
	b.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for opsMetric(b, g.ops, "qlc_subscribers") != n {
		if time.Now().After(deadline) {
			b.Fatalf("subscribers: %v, want %v", opsMetric(b, g.ops, "qlc_subscribers"), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// readers are n SSE connections to one run's events, each on its own TCP
// connection, each read by its own goroutine until the run ends or close.
type readers struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex // guards the fields below
	errs    []error
	largest int // the longest line a reader read
}

// openReaders connects n readers (at most 64 dialling at once) and returns
// once each has read its first event.
func openReaders(b *testing.B, g *memGateway, id string, n int) *readers {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &readers{cancel: cancel}
	client := g.client()
	sem := make(chan struct{}, 64)
	var ready sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		ready.Add(1)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			started := false
			start := func() {
				if !started {
					started = true
					<-sem
					ready.Done()
				}
			}
			defer start()
			req, _ := http.NewRequestWithContext(ctx, "GET", g.base+"/v1/runs/"+id+"/events", nil)
			req.Header.Set("Authorization", "Bearer "+g.key)
			resp, err := client.Do(req)
			if err != nil {
				r.fail(err)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				r.fail(fmt.Errorf("HTTP %d", resp.StatusCode))
				return
			}
			sc := bufio.NewScanner(resp.Body) // default 64 KiB line limit
			longest := 0
			for sc.Scan() {
				longest = max(longest, len(sc.Bytes()))
				if len(sc.Bytes()) == 0 {
					start() // a whole first event
				}
			}
			r.mu.Lock()
			r.largest = max(r.largest, longest)
			r.mu.Unlock()
			if err := sc.Err(); err != nil && ctx.Err() == nil {
				r.fail(err)
			}
		}()
	}
	ready.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) > 0 {
		b.Fatalf("%d readers failed, e.g. %v", len(r.errs), r.errs[0])
	}
	return r
}

func (r *readers) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
}

// close disconnects every reader and waits for their goroutines.
func (r *readers) close() {
	r.cancel()
	r.wg.Wait()
}

// settle gives the gateway time to park its goroutines and finish a GC
// cycle in progress.
func settle() { time.Sleep(2 * time.Second) }

// BenchmarkIdleSSESubscribers: N SSE readers connected to one live run that
// sends nothing after its first event (its first stage waits ten minutes
// for a first token). Reports the gateway process's memory per connected
// reader: RSS, Go heap in use and goroutine stacks (from its /metrics), and
// goroutines; then its RSS once the readers left, in MiB beside its idle
// RSS before they came. Run with -benchtime 1x: each iteration is N
// connections.
func BenchmarkIdleSSESubscribers(b *testing.B) {
	const profiles = `
default_profile: idle
providers:
  idle: {kind: sim, sim: {ttft: 10m, output_tokens: 10}}
profiles:
  idle:
    provider: idle
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`
	for _, c := range []struct {
		n   int
		tls bool
	}{{1000, false}, {10000, false}, {10000, true}} {
		name := fmt.Sprintf("subscribers=%d", c.n)
		if c.tls {
			name = "tls/" + name
		}
		n := c.n
		b.Run(name, func(b *testing.B) {
			g := startMemGateway(b, profiles, c.tls)
			var rss, heap, stack, gor, idle, after, afterLong float64
			for i := 0; i < b.N; i++ {
				id := g.createRun(b, "idle")
				settle()
				rss0, heap0, stack0, gor0 := procStatus(b, g.pid(), "VmRSS"), opsMetric(b, g.ops, "go_memstats_heap_inuse_bytes"),
					opsMetric(b, g.ops, "go_memstats_stack_inuse_bytes"), opsMetric(b, g.ops, "go_goroutines")
				r := openReaders(b, g, id, n)
				g.waitSubscribers(b, float64(n))
				settle()
				rss += (procStatus(b, g.pid(), "VmRSS") - rss0) / float64(n)
				heap += (opsMetric(b, g.ops, "go_memstats_heap_inuse_bytes") - heap0) / 1024 / float64(n)
				stack += (opsMetric(b, g.ops, "go_memstats_stack_inuse_bytes") - stack0) / 1024 / float64(n)
				gor += (opsMetric(b, g.ops, "go_goroutines") - gor0) / float64(n)
				r.close()
				g.waitSubscribers(b, 0)
				settle()
				idle += rss0 / 1024
				after += procStatus(b, g.pid(), "VmRSS") / 1024
				time.Sleep(10 * time.Second)
				afterLong += procStatus(b, g.pid(), "VmRSS") / 1024
			}
			N := float64(b.N)
			b.ReportMetric(rss/N, "RSS-KiB/subscriber")
			b.ReportMetric(heap/N, "heap-KiB/subscriber")
			b.ReportMetric(stack/N, "stack-KiB/subscriber")
			b.ReportMetric(gor/N, "goroutines/subscriber")
			b.ReportMetric(idle/N, "idle-RSS-MiB")
			b.ReportMetric(after/N, "RSS-MiB-2s-after")
			b.ReportMetric(afterLong/N, "RSS-MiB-12s-after")
		})
	}
}

// heldUpstream is an OpenAI-compatible endpoint (in this process, so not
// in the gateway's figures) that answers each chat completion with n
// deltas of about 200 bytes at full speed once release is closed.
func heldUpstream(b *testing.B, release <-chan struct{}, n int) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		bw := bufio.NewWriter(w)
		word := strings.Repeat(" lorem ipsum dolor sit amet,", 7)
		for i := 0; i < n; i++ {
			fmt.Fprintf(bw, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s %d\\n\"},\"finish_reason\":null}]}\n\n", word, i)
		}
		fmt.Fprintf(bw, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", n, n+10)
		_ = bw.Flush()
	}))
	b.Cleanup(srv.Close)
	return srv.URL
}

// BenchmarkSSEReadersRSS: one run at full speed (4 stages of 5000 deltas
// of 200 bytes, 4 MB of text, from an upstream with no latency) read from
// seq 1 to its end by N SSE readers with default line limits, all
// connected before it streams, as in issue 11's report (218 MiB with 100
// readers, 366 MiB with 1000, and it did not come back). Reports the
// gateway process's idle RSS, its peak (VmHWM) and its RSS after the
// readers left, in MiB (the finished run's log, about 6 MB, stays for
// replay), and the longest line a reader read.
func BenchmarkSSEReadersRSS(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("readers=%d", n), func(b *testing.B) {
			release := make(chan struct{})
			up := heldUpstream(b, release, 5000)
			g := startMemGateway(b, fmt.Sprintf(`
default_profile: bulk
providers:
  up: {kind: openai, base_url: %s/v1}
profiles:
  bulk:
    provider: up
    stages:
      generator: {model: g, max_tokens: 100000}
      refiner: {model: r, max_tokens: 100000}
      validator: {model: v, max_tokens: 100000}
      curator: {model: c, max_tokens: 100000}
`, up), false)
			if b.N > 1 {
				b.Fatal("run with -benchtime 1x: the upstream is released once")
			}
			// The readers subscribe while the generator waits for the
			// upstream, then the run streams at full speed.
			id := g.createRun(b, "bulk")
			settle()
			idle := procStatus(b, g.pid(), "VmRSS") / 1024
			r := openReaders(b, g, id, n)
			close(release)
			r.wg.Wait() // every reader read the run to its end
			if len(r.errs) > 0 {
				b.Fatalf("%d readers failed, e.g. %v", len(r.errs), r.errs[0])
			}
			peak := procStatus(b, g.pid(), "VmHWM") / 1024
			g.waitSubscribers(b, 0)
			settle()
			after := procStatus(b, g.pid(), "VmRSS") / 1024
			time.Sleep(10 * time.Second)
			afterLong := procStatus(b, g.pid(), "VmRSS") / 1024
			b.ReportMetric(idle, "idle-RSS-MiB")
			b.ReportMetric(peak, "peak-RSS-MiB")
			b.ReportMetric(after, "RSS-MiB-2s-after")
			b.ReportMetric(afterLong, "RSS-MiB-12s-after")
			b.ReportMetric(float64(r.largest), "longest-line-B")
		})
	}
}
