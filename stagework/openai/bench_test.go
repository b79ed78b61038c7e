package openai

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchEvent is a typical OpenAI content chunk (~230 bytes on the wire).
const benchEvent = `data: {"id":"chatcmpl-CJ7hXbX2Yg1uQf4mNw3sT9vLzKpA8","object":"chat.completion.chunk","created":1761004800,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_560af6e559","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n"

// BenchmarkStream pushes b.N tokens through one stream from a loopback
// server at zero latency: op = one token. The server runs in the same
// process on the same cores, so its cost (and its allocations) are in the
// figures too. flush=1 flushes every event, as real servers do; flush=64
// batches 64 events per write.
func BenchmarkStream(b *testing.B) {
	for _, proto := range []string{"h1", "h2"} {
		for _, flushEvery := range []int{1, 64} {
			b.Run(fmt.Sprintf("proto=%s/flush=%d", proto, flushEvery), func(b *testing.B) {
				var tokens atomic.Int64
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					sseHeaders(w)
					f := w.(http.Flusher)
					batch := strings.Repeat(benchEvent, flushEvery)
					n := tokens.Load()
					for ; n >= int64(flushEvery); n -= int64(flushEvery) {
						io.WriteString(w, batch)
						f.Flush()
					}
					io.WriteString(w, strings.Repeat(benchEvent, int(n)))
					io.WriteString(w, okStream[strings.Index(okStream, "\n\n")+2:]) // finish, usage, [DONE]
				})
				var p *Provider
				if proto == "h1" {
					srv := httptest.NewServer(h)
					defer srv.Close()
					p = newProvider(b, srv.URL+"/v1")
				} else {
					srv := httptest.NewUnstartedServer(h)
					srv.EnableHTTP2 = true
					srv.StartTLS()
					defer srv.Close()
					p = newProvider(b, srv.URL+"/v1", func(c *Config) { c.TLSConfig = trust(srv) })
				}
				tokens.Store(int64(b.N))
				b.SetBytes(int64(len(benchEvent)))
				b.ReportAllocs()
				b.ResetTimer()
				s, err := p.Stream(context.Background(), testRequest())
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				for {
					c, err := s.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					n += c.Tokens
				}
				b.StopTimer()
				s.Close()
				if n != b.N {
					b.Fatalf("got %d tokens, want %d", n, b.N)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
			})
		}
	}
}

// BenchmarkCancel measures the latency from cancelling the caller's context
// to the server seeing its request context end, with the request held
// before headers, after headers before the first token, and mid-stream;
// over HTTP/1.1 and HTTP/2. It reports p50 and p99 in microseconds.
func BenchmarkCancel(b *testing.B) {
	for _, proto := range []string{"h1", "h2"} {
		for _, ph := range phases {
			b.Run(proto+"/"+strings.ReplaceAll(ph.name, " ", "_"), func(b *testing.B) {
				arrived := make(chan struct{}, 1)
				gone := make(chan time.Time, 1)
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					_, _ = io.Copy(io.Discard, r.Body)
					if ph.before != nil {
						ph.before(w)
					}
					arrived <- struct{}{}
					<-r.Context().Done()
					gone <- time.Now()
				})
				var p *Provider
				if proto == "h1" {
					srv := httptest.NewServer(h)
					defer srv.Close()
					p = newProvider(b, srv.URL+"/v1")
				} else {
					srv := httptest.NewUnstartedServer(h)
					srv.EnableHTTP2 = true
					srv.StartTLS()
					defer srv.Close()
					p = newProvider(b, srv.URL+"/v1", func(c *Config) { c.TLSConfig = trust(srv) })
				}
				lat := make([]time.Duration, 0, b.N)
				done := make(chan error, 1)
				ready := make(chan struct{}, 1) // the client got its headers and tokens
				b.ReportAllocs()
				for i := 0; i < b.N; i++ {
					ctx, cancel := context.WithCancel(context.Background())
					go func() {
						s, err := p.Stream(ctx, testRequest())
						if err != nil {
							done <- err
							return
						}
						defer s.Close()
						for range ph.tokens {
							if _, err := s.Recv(); err != nil {
								done <- err
								return
							}
						}
						ready <- struct{}{}
						_, err = s.Recv()
						done <- err
					}()
					<-arrived
					if ph.before != nil {
						<-ready // cancel in the phase under test, not before it
					}
					t0 := time.Now()
					cancel()
					t1 := <-gone
					lat = append(lat, t1.Sub(t0))
					if err := <-done; isCanceled(err) != nil {
						b.Fatalf("call ended with %v", err)
					}
				}
				b.StopTimer()
				slices.Sort(lat)
				us := func(d time.Duration) float64 { return d.Seconds() * 1e6 }
				b.ReportMetric(us(lat[len(lat)/2]), "p50-µs")
				b.ReportMetric(us(lat[len(lat)*99/100]), "p99-µs")
			})
		}
	}
}
