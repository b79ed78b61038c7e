package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/internal/spanstore"
	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
)

// cpuTime is the process's CPU time so far (user and system): a cost that
// a busy machine inflates less than wall time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTracing turns tracing on for a benchmark when QLC_BENCH_TRACING=1:
// sampling 1.0 (always_on; QLC_BENCH_SAMPLER=always_off measures spans
// that record nothing), exported with OTLP/HTTP to a receiver on loopback
// in this process, which counts the spans and keeps nothing, so the figure
// is QLC's cost and the exporter's, not a collector's. QLC_TRACING_SDK=true
// measures the OpenTelemetry SDK's pipeline instead of QLC's compact spans.
// It returns a function reporting the spans received per run; with tracing
// off it does nothing. Compare
// `QLC_BENCH_TRACING=1 go test -bench ...` with the same command without it.
//
// QLC_BENCH_TRACING=store is a gateway or node binary with -trace-store
// set and no OTEL_* (make run): every span goes to the console's
// in-process span store, nothing is exported.
func benchTracing(b *testing.B) (report func(runs int)) {
	switch os.Getenv("QLC_BENCH_TRACING") {
	case "1":
	case "store":
		store := spanstore.New(spanstore.DefaultMax)
		tr, err := tracing.Setup(context.Background(), tracing.Config{ServiceName: "qlc-bench", Logger: slog.New(slog.DiscardHandler),
			Processors: []sdktrace.SpanProcessor{store}})
		if err != nil || !tr.Enabled() {
			b.Fatalf("tracing: %v", err)
		}
		b.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
		return func(int) {
			if store.Len() == 0 {
				b.Fatal("tracing to the span store recorded no span")
			}
		}
	default:
		return func(int) {}
	}
	// The receiver counts the spans of each request (a walk over the
	// protobuf, no decoding) into a buffer it reuses, and keeps nothing:
	// a receiver in another process would cost this one nothing, so this
	// one costs as little as it can. QLC_BENCH_SPANS=1 keeps the bodies
	// and logs the spans by name at the end instead.
	var mu sync.Mutex
	var buf []byte
	var bodies [][]byte
	var spans int
	keep := os.Getenv("QLC_BENCH_SPANS") != ""
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if n := int(r.ContentLength); n > cap(buf) {
			buf = make([]byte, n)
		}
		buf = buf[:max(r.ContentLength, 0)]
		if _, err := io.ReadFull(r.Body, buf); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n, err := tracing.CountSpans(buf)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		spans += n
		if keep {
			bodies = append(bodies, bytes.Clone(buf))
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", srv.URL)
	b.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	b.Setenv("OTEL_TRACES_SAMPLER", cmp.Or(os.Getenv("QLC_BENCH_SAMPLER"), "always_on"))
	tr, err := tracing.Setup(context.Background(), tracing.Config{ServiceName: "qlc-bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil || !tr.Enabled() {
		b.Fatalf("tracing: %v", err)
	}
	b.Cleanup(func() {
		_ = tr.Shutdown(context.Background())
		srv.Close()
	})
	return func(runs int) {
		_ = tr.Shutdown(context.Background()) // flushes
		mu.Lock()
		defer mu.Unlock()
		if keep {
			rcv := &tracing.Receiver{}
			for _, body := range bodies {
				rcv.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/traces", bytes.NewReader(body)))
			}
			names := map[string]int{}
			for _, s := range rcv.Spans() {
				names[s.Service+" "+s.Kind+" "+s.Name]++
			}
			b.Logf("spans by name: %v", names)
		}
		if runs > 0 {
			b.ReportMetric(float64(spans)/float64(runs), "spans/run")
		}
	}
}

// benchProfiles: "bulk" streams 4 stages of 50k tokens each at zero latency.
const benchProfiles = `
default_profile: bulk
providers:
  bulk: {kind: sim, sim: {output_tokens: 50000, truncate_at_max_tokens: true}}
  one:  {kind: sim, sim: {output_tokens: 1}}
  fan:  {kind: sim, sim: {output_tokens: 1000, truncate_at_max_tokens: true}}
profiles:
  fan:
    provider: fan
    stages:
      generator: {model: g, max_tokens: 1000}
      refiner: {model: r, max_tokens: 1000}
      validator: {model: v, max_tokens: 1000}
      curator: {model: c, max_tokens: 1000}
  bulk:
    provider: bulk
    stages:
      generator: {model: g, max_tokens: 50000}
      refiner: {model: r, max_tokens: 50000}
      validator: {model: v, max_tokens: 50000}
      curator: {model: c, max_tokens: 50000}
  one:
    provider: one
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// BenchmarkStreamToSSE: one run's tokens from the simulated provider (zero
// latency) through the coordinator, the hub and the SSE writer to a real
// HTTP client on loopback that reads every event. Reports tokens/s and the
// whole pipeline's cost per token (the simulator's own cost included; see
// stagework's BenchmarkSimStream for it alone).
func BenchmarkStreamToSSE(b *testing.B) {
	report := benchTracing(b)
	g := startGateway(b, benchProfiles, func(c *Config, e *actors.Config) { e.Hub.MaxLag = 1 << 20 })
	var tokens int64
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		id := benchCreate(b, http.DefaultClient, g.URL, "bulk")
		resp, err := http.Get(g.URL + "/v1/runs/" + id + "/events")
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20) // a coalesced delta can be long
		for sc.Scan() {
			line := sc.Bytes()
			if bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, []byte(`"type":"token_delta"`)) {
				tokens += countTokens(line)
			}
		}
		if err := sc.Err(); err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
	el := time.Since(start)
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(tokens), "allocs/token")
	b.ReportMetric(float64(tokens)/el.Seconds(), "tokens/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(tokens), "ns/token")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(tokens), "cpu-ns/token")
	report(b.N)
}

// countTokens reads "tokens":N from a token_delta event's JSON.
func countTokens(line []byte) int64 {
	i := bytes.LastIndex(line, []byte(`"tokens":`))
	if i < 0 {
		return 0
	}
	var n int64
	for _, c := range line[i+9:] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

func benchCreate(b *testing.B, c *http.Client, base, profile string) string {
	resp, err := c.Post(base+"/v1/runs", "application/json", strings.NewReader(`{"query":"How do B-trees stay balanced?","profile":"`+profile+`"}`))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	i := bytes.Index(buf.Bytes(), []byte(`"id":"`))
	if resp.StatusCode != 201 || i < 0 {
		b.Fatalf("create: %d %s", resp.StatusCode, buf.String())
	}
	rest := buf.Bytes()[i+6:]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

func percentile(d []time.Duration, p float64) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[min(len(d)-1, int(float64(len(d))*p))]
}

// BenchmarkAddedTTFT: with a zero-latency provider, the time from sending
// POST /v1/runs to reading the first token_delta on the run's SSE stream is
// all QLC's (two HTTP round trips on loopback included). Reports p50/p99.
func BenchmarkAddedTTFT(b *testing.B) {
	report := benchTracing(b)
	g := startGateway(b, benchProfiles, nil)
	lat := make([]time.Duration, 0, b.N)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		id := benchCreate(b, client, g.URL, "one")
		ev, err := client.Get(g.URL + "/v1/runs/" + id + "/events")
		if err != nil {
			b.Fatal(err)
		}
		br := bufio.NewReader(ev.Body)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				b.Fatal("stream ended before a token")
			}
			if bytes.HasPrefix(line, []byte("event: token_delta")) {
				break
			}
		}
		lat = append(lat, time.Since(t0))
		ev.Body.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/run")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
	report(b.N)
}

// BenchmarkAddedTTFTInProcess: the same without HTTP: Engine.StartRun to the
// first TokenDelta in the run's hub (actor spawns, mailboxes, provider call).
func BenchmarkAddedTTFTInProcess(b *testing.B) {
	report := benchTracing(b)
	g := startGateway(b, benchProfiles, nil)
	lat := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	cpu0 := cpuTime()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		h, err := g.Engine.StartRun(actors.RunRequest{Profile: "one", Query: "q", Seed: 1, NoCache: true})
		if err != nil {
			b.Fatal(err)
		}
		sub := h.Subscribe(1)
	wait:
		for {
			evs, err := sub.Next(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range evs {
				if ev.GetTokenDelta() != nil {
					break wait
				}
			}
		}
		lat = append(lat, time.Since(t0))
		sub.Close()
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/run")
	b.ReportMetric(float64(percentile(lat, 0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(percentile(lat, 0.99).Microseconds()), "p99-µs")
	report(b.N)
}

// BenchmarkCancelLatency: a run streams from a real OpenAI-compatible
// upstream (an HTTP server on loopback sending a token every 5 ms); DELETE
// /v1/runs/{id} is sent, and we measure (a) until the upstream server sees
// its request's context end (connection closed) and (b) until DELETE returns,
// which it does once the coordinator has stopped its worker and logged
// RunCancelled. Reports p50/p99 of both.
func BenchmarkCancelLatency(b *testing.B) {
	type hold struct{ closed chan time.Time }
	var mu sync.Mutex
	var current *hold
	streaming := make(chan struct{}, 1)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := current
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ; n++ {
			select {
			case <-r.Context().Done():
				h.closed <- time.Now()
				return
			case <-tick.C:
				fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" t%d\"},\"finish_reason\":null}]}\n\n", n)
				fl.Flush()
				if n == 2 {
					select {
					case streaming <- struct{}{}:
					default:
					}
				}
			}
		}
	}))
	defer upstream.Close()
	g := startGateway(b, fmt.Sprintf(`
providers:
  up: {kind: openai, base_url: %s/v1}
profiles:
  live:
    provider: up
    stages: {generator: {model: m}, refiner: {model: m}, validator: {model: m}, curator: {model: m}}
`, upstream.URL), nil)
	var toUpstream, toReply []time.Duration
	client := &http.Client{}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h := &hold{closed: make(chan time.Time, 1)}
		mu.Lock()
		current = h
		mu.Unlock()
		id := benchCreate(b, client, g.URL, "live")
		<-streaming
		req, _ := http.NewRequest("DELETE", g.URL+"/v1/runs/"+id, nil)
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil || resp.StatusCode != 200 {
			b.Fatalf("DELETE: %v %v", err, resp)
		}
		toReply = append(toReply, time.Since(t0))
		resp.Body.Close()
		select {
		case t1 := <-h.closed:
			toUpstream = append(toUpstream, t1.Sub(t0))
		case <-time.After(5 * time.Second):
			b.Fatal("upstream request was never closed")
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(toUpstream, 0.5).Microseconds()), "upstream-closed-p50-µs")
	b.ReportMetric(float64(percentile(toUpstream, 0.99).Microseconds()), "upstream-closed-p99-µs")
	b.ReportMetric(float64(percentile(toReply, 0.5).Microseconds()), "all-stopped-p50-µs")
	b.ReportMetric(float64(percentile(toReply, 0.99).Microseconds()), "all-stopped-p99-µs")
}

// discardWriter is an http.ResponseWriter that drops what it is given: the
// fan-out benchmark measures the hub and the SSE encoder, not the kernel.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Flush()                      {}

// BenchmarkFanOut: one run (4 × 1000 tokens, zero latency) delivered to N
// SSE writers at once. Reports tokens delivered per second (all subscribers
// together), allocations per delivered token, and bytes allocated per
// subscriber (B/op ÷ N, the run's own allocations included: at N = 1 they
// are most of it; issue 11 holds it to 16 KiB at N = 10 000).
func BenchmarkFanOut(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("subscribers=%d", n), func(b *testing.B) {
			g := startGateway(b, benchProfiles, func(c *Config, e *actors.Config) { e.Hub.MaxLag = 1 << 20 })
			var delivered int64
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for i := 0; i < b.N; i++ {
				h, err := g.Engine.StartRun(actors.RunRequest{Profile: "fan", Query: "q", Seed: 1, NoCache: true})
				if err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				for s := 0; s < n; s++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						t := newSSETransport(&discardWriter{h: http.Header{}}, 0, DefaultMaxEventBytes)
						cw := &countingTransport{transport: t}
						if err := pump(context.Background(), h.Subscribe(1), cw, time.Hour, 0); err != nil {
							b.Error(err)
						}
						mu.Lock()
						delivered += cw.tokens
						mu.Unlock()
					}()
				}
				wg.Wait()
			}
			el := time.Since(start)
			runtime.ReadMemStats(&m1)
			b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(delivered), "allocs/delivered-token")
			b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(b.N)/float64(n), "B/subscriber")
			b.ReportMetric(float64(delivered)/el.Seconds(), "tokens-delivered/s")
			b.ReportMetric(float64(el.Nanoseconds())/float64(delivered), "ns/delivered-token")
		})
	}
}

type countingTransport struct {
	transport
	tokens int64
}

func (c *countingTransport) writeEvents(evs []*messages.RunEvent, off int) error {
	for _, ev := range evs {
		if d := ev.GetTokenDelta(); d != nil {
			c.tokens += int64(d.Tokens)
		}
	}
	return c.transport.writeEvents(evs, off)
}
