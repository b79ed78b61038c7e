package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework/openai"
)

// chatBody is the streamed chat request of the tail benchmarks.
const chatBody = `{"model":"qlc-http","stream":true,"messages":[{"role":"user","content":"How do B-trees stay balanced?"}]}`

// BenchmarkChatTTFT: time to the first content chunk of a streamed
// /v1/chat/completions request through QLC, four stages whose provider is
// the openai client against a real zero-latency OpenAI-compatible server on
// loopback (openai.Mock, k chunks per answer): the client sees nothing of
// the first three stages but pings, so this is three whole stages plus the
// fourth's first token. Beside it, the floor: the same kind of request
// through a minimal reverse proxy (httputil.ReverseProxy, FlushInterval -1)
// straight to the mock, one upstream request. Reported: p50/p99 in µs of
// both, the p99/p50 ratio of QLC's (goal ≤ 2), and upstream connections
// opened per request (0 once kept alive). Each request is read to its end,
// so the client's connection is reused.
func BenchmarkChatTTFT(b *testing.B) {
	for _, k := range []int{5, 200} {
		mock := &openai.Mock{Tokens: k}
		up := httptest.NewUnstartedServer(mock)
		up.Config.ConnState = mock.ConnState
		up.Start()
		b.Run(fmt.Sprintf("qlc/k=%d", k), func(b *testing.B) {
			g := startGateway(b, fmt.Sprintf(`
providers:
  http: {kind: openai, base_url: %s/v1}
profiles:
  http:
    provider: http
    stages:
      generator: {model: gpt-4o-mini, max_tokens: %[2]d}
      refiner: {model: gpt-4o-mini, max_tokens: %[2]d}
      validator: {model: gpt-4o-mini, max_tokens: %[2]d}
      curator: {model: gpt-4o-mini, max_tokens: %[2]d}
`, up.URL, k), nil)
			benchChat(b, g.URL+"/v1/chat/completions", mock, 4)
		})
		b.Run(fmt.Sprintf("proxy/k=%d", k), func(b *testing.B) {
			target, _ := url.Parse(up.URL)
			rp := httputil.NewSingleHostReverseProxy(target)
			rp.FlushInterval = -1
			proxy := httptest.NewServer(rp)
			defer proxy.Close()
			benchChat(b, proxy.URL+"/v1/chat/completions", mock, 1)
		})
		up.Close()
	}
}

// benchChat posts chatBody b.N times (after a warm-up) and reports the
// time to the first content chunk; upstreamPerReq is how many upstream
// requests one request makes.
func benchChat(b *testing.B, u string, mock *openai.Mock, upstreamPerReq int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	br := bufio.NewReaderSize(nil, 16<<10) // reused: the client's garbage is not QLC's
	for range 30 {
		chatTTFC(b, client, u, br)
	}
	conns0, reqs0 := mock.Conns(), mock.Requests()
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		lat = append(lat, chatTTFC(b, client, u, br))
	}
	b.StopTimer()
	if got := mock.Requests() - reqs0; got != int64(b.N*upstreamPerReq) {
		b.Fatalf("%d upstream requests, want %d", got, b.N*upstreamPerReq)
	}
	p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
	b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(p99)/float64(p50), "p99/p50")
	b.ReportMetric(float64(mock.Conns()-conns0)/float64(b.N), "upstream-conns/req")
}

var contentDelta = []byte(`"delta":{"content":"`)

// chatTTFC sends one streamed chat request, returns the time to its first
// content chunk, and reads the rest.
func chatTTFC(b *testing.B, client *http.Client, u string, br *bufio.Reader) time.Duration {
	t0 := time.Now()
	resp, err := client.Post(u, "application/json", strings.NewReader(chatBody))
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		b.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	br.Reset(resp.Body)
	var ttfc time.Duration
	for ttfc == 0 {
		line, err := br.ReadSlice('\n')
		if err != nil {
			b.Fatalf("stream ended before content: %v", err)
		}
		if bytes.HasPrefix(line, []byte("data: ")) && bytes.Contains(line, contentDelta) {
			ttfc = time.Since(t0)
		}
	}
	if _, err := io.Copy(io.Discard, br); err != nil {
		b.Fatal(err)
	}
	return ttfc
}
