package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// benchProfiles: "bulk" streams 4 × 50 000 tokens at zero latency; "one"
// streams one token per stage; "hold" keeps a coordinator alive.
const benchProfiles = `
providers:
  bulk: {kind: sim, sim: {output_tokens: 50000, truncate_at_max_tokens: true}}
  one:  {kind: sim, sim: {output_tokens: 1}}
  hold: {kind: sim, sim: {itl: 50ms, output_tokens: 100000}}
profiles:
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
  hold:
    provider: hold
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// crossNode starts a node process and, in this process, a gateway (engine
// with the actor transport + HTTP server) that places runs on it.
func crossNode(b *testing.B) (*actors.Engine, string) {
	b.Helper()
	pf := filepath.Join(b.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(benchProfiles), 0o644); err != nil {
		b.Fatal(err)
	}
	_, na := launchNode(b, testKey, "-profiles", pf, "-log-level", "error")
	nodeAddr := na.Actor

	stages, err := stagework.ParseConfig([]byte(benchProfiles))
	if err != nil {
		b.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	providers, _ := actors.BuildProviders(stages, logger)
	key, _ := base64.StdEncoding.DecodeString(testKey)
	cfg := actors.DefaultConfig()
	cfg.Logger, cfg.Stages, cfg.Providers = logger, stages, providers
	cfg.Remote = &actors.RemoteConfig{Bind: "127.0.0.1:0", ClusterKey: key}
	cfg.Topology = &actors.StaticTopology{Nodes: []string{nodeAddr}, Tokenizers: []string{nodeAddr}}
	cfg.Hub.MaxLag = 1 << 20
	engine, err := actors.NewEngine(cfg)
	if err != nil {
		b.Fatal(err)
	}
	gw, err := gateway.New(gateway.Config{Engine: engine, Logger: logger})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	b.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		engine.Shutdown(ctx)
		_ = gw.Close(ctx) // its background goroutines
	})
	return engine, srv.URL
}

func pct(d []time.Duration, p float64) float64 {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return float64(d[min(len(d)-1, int(float64(len(d))*p))].Microseconds())
}

func createB(b *testing.B, c *http.Client, base, profile string) string {
	resp, err := c.Post(base+"/v1/runs", "application/json", strings.NewReader(`{"query":"How does gossip converge?","profile":"`+profile+`","seed":3,"cache":false}`))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	i := bytes.Index(body, []byte(`"id":"`))
	if resp.StatusCode != 201 || i < 0 {
		b.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	rest := body[i+6:]
	return string(rest[:bytes.IndexByte(rest, '"')])
}

// BenchmarkCrossNodeStreamToSSE: the coordinator and its workers on a node
// process, the hub on this process's gateway, a real SSE client reading
// every event. Compare with gateway's BenchmarkStreamToSSE (one process).
func BenchmarkCrossNodeStreamToSSE(b *testing.B) {
	_, base := crossNode(b)
	client := &http.Client{}
	var tokens int64
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		id := createB(b, client, base, "bulk")
		resp, err := client.Get(base + "/v1/runs/" + id + "/events")
		if err != nil {
			b.Fatal(err)
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, []byte(`"type":"token_delta"`)) {
				j := bytes.LastIndex(line, []byte(`"tokens":`))
				var n int64
				for _, c := range line[j+9:] {
					if c < '0' || c > '9' {
						break
					}
					n = n*10 + int64(c-'0')
				}
				tokens += n
			}
		}
		resp.Body.Close()
	}
	el := time.Since(t0)
	b.ReportMetric(float64(tokens)/el.Seconds(), "tokens/s")
	b.ReportMetric(float64(el.Nanoseconds())/float64(tokens), "ns/token")
}

// BenchmarkCrossNodeTTFT: POST /v1/runs → first token_delta on the SSE
// stream, with the coordinator placed on the node process (spawn, ack,
// provider call and the first event all cross the transport).
//
// Sub-benchmarks: "post+get" is the two requests (create, then follow the
// events); "streamed-post" is one (POST with "stream": true answers with
// the event stream).
func BenchmarkCrossNodeTTFT(b *testing.B) {
	_, base := crossNode(b)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	// Warm up: the first run also opens the transport's TLS connections.
	for i := 0; i < 5; i++ {
		streamOne(b, client, base, createB(b, client, base, "one"))
	}
	b.Run("post+get", func(b *testing.B) {
		ttft(b, func() *http.Response {
			id := createB(b, client, base, "one")
			resp, err := client.Get(base + "/v1/runs/" + id + "/events")
			if err != nil {
				b.Fatal(err)
			}
			return resp
		})
	})
	b.Run("streamed-post", func(b *testing.B) {
		ttft(b, func() *http.Response {
			resp, err := client.Post(base+"/v1/runs", "application/json", strings.NewReader(`{"query":"How does gossip converge?","profile":"one","seed":3,"stream":true,"cache":false}`))
			if err != nil || resp.StatusCode != 200 {
				b.Fatalf("streamed create: %v %v", err, resp)
			}
			return resp
		})
	})
}

// ttft times open (the requests that lead to an event stream) to the
// stream's first token_delta.
func ttft(b *testing.B, open func() *http.Response) {
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		resp := open()
		br := bufio.NewReader(resp.Body)
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
		resp.Body.Close()
	}
	b.StopTimer()
	b.ReportMetric(pct(lat, 0.5), "p50-µs")
	b.ReportMetric(pct(lat, 0.99), "p99-µs")
}

// BenchmarkRemoteRoundTrip: request/response between this process and a
// coordinator on the node process through protoactor remote (mutual TLS):
// a repeated StartRun is answered with a StartRunAck.
func BenchmarkRemoteRoundTrip(b *testing.B) {
	engine, _ := crossNode(b)
	h, err := engine.StartRun(actors.RunRequest{Profile: "hold", Query: "q", Seed: 1, NoCache: true})
	if err != nil {
		b.Fatal(err)
	}
	pid := h.Coordinator()
	msg := &messages.StartRun{RunId: h.RunID}
	lat := make([]time.Duration, 0, b.N)
	for i := 0; i < 10; i++ { // warm up
		_, _ = engine.System().Root.RequestFuture(pid, msg, 2*time.Second).Result()
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := engine.System().Root.RequestFuture(pid, msg, 2*time.Second).Result(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(pct(lat, 0.5), "p50-µs")
	b.ReportMetric(pct(lat, 0.99), "p99-µs")
	_ = engine.Cancel(h.RunID, "bench over")
}

// streamOne reads a run's SSE stream to its end.
func streamOne(b *testing.B, c *http.Client, base, id string) {
	resp, err := c.Get(base + "/v1/runs/" + id + "/events")
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// BenchmarkTokenizerThroughput: tokens counted per second through
// tokenizer actors, 8 concurrent callers of ~1 KB texts: on this process's
// own actors ("local"), and on a node's across the transport with adaptive
// batching ("remote-batched").
func BenchmarkTokenizerThroughput(b *testing.B) {
	text := strings.Repeat("Consensus needs a quorum; leases bound clock drift. ", 20)
	run := func(b *testing.B, e *actors.Engine) {
		var tokens atomic.Int64
		var wg sync.WaitGroup
		per := max(1, b.N/8)
		b.ResetTimer()
		t0 := time.Now()
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < per; i++ {
					tc, err := e.Tokenizer().CountTokens(context.Background(), &messages.CountTokens{Encoding: "cl100k_base", Texts: []string{text}})
					if err != nil {
						b.Error(err)
						return
					}
					tokens.Add(tc.Counts[0])
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(tokens.Load())/time.Since(t0).Seconds(), "tokens/s")
	}
	b.Run("local", func(b *testing.B) {
		cfg := actors.DefaultConfig()
		stages, _ := stagework.ParseConfig([]byte(benchProfiles))
		cfg.Stages = stages
		cfg.Providers, _ = actors.BuildProviders(stages, nil)
		cfg.Tokenizer, cfg.PreloadTokenizer = true, true
		e, err := actors.NewEngine(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer e.Shutdown(context.Background())
		run(b, e)
	})
	b.Run("remote-batched", func(b *testing.B) {
		e, _ := crossNode(b)
		for i := 0; i < 20; i++ { // warm up the connection
			_, _ = e.Tokenizer().CountTokens(context.Background(), &messages.CountTokens{Encoding: "cl100k_base", Texts: []string{text}})
		}
		run(b, e)
	})
}

// BenchmarkCrossNodeTTFTInProcess: Engine.StartRun on the gateway to the
// first TokenDelta in its hub, with the coordinator placed on the node
// process — the cluster's own share of TTFT, without the HTTP requests.
func BenchmarkCrossNodeTTFTInProcess(b *testing.B) {
	e, _ := crossNode(b)
	ctx := context.Background()
	first := func() time.Duration {
		t0 := time.Now()
		h, err := e.StartRun(actors.RunRequest{Profile: "one", Query: "q", Seed: 1, NoCache: true})
		if err != nil {
			b.Fatal(err)
		}
		sub := h.Subscribe(1)
		defer sub.Close()
		for {
			evs, err := sub.Next(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			for _, ev := range evs {
				if ev.GetTokenDelta() != nil {
					return time.Since(t0)
				}
			}
		}
	}
	for i := 0; i < 5; i++ { // warm up the TLS connections
		first()
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, first())
	}
	b.StopTimer()
	b.ReportMetric(pct(lat, 0.5), "p50-µs")
	b.ReportMetric(pct(lat, 0.99), "p99-µs")
}
