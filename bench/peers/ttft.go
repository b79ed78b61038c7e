package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// mockUpstream is a zero-latency OpenAI-compatible server: POST
// /v1/chat/completions with "stream": true answers with a role chunk,
// min(tokens, max_tokens) content chunks (each written and flushed on its
// own, as a model streams), a finish chunk, the usage chunk when asked,
// and [DONE].
type mockUpstream struct {
	tokens int
}

func (m *mockUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/chat/completions" {
		http.NotFound(w, r)
		return
	}
	var req struct {
		Stream        bool `json:"stream"`
		MaxTokens     int  `json:"max_tokens"`
		StreamOptions struct {
			IncludeUsage bool `json:"include_usage"`
		} `json:"stream_options"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4<<20)).Decode(&req); err != nil || !req.Stream {
		http.Error(w, `{"error":{"message":"stream: true and a JSON body, please","type":"invalid_request_error"}}`, http.StatusBadRequest)
		return
	}
	n := m.tokens
	if req.MaxTokens > 0 {
		n = min(n, req.MaxTokens)
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	const head = `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[`
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	b := []byte(head + `{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}` + "\n\n")
	if !write(b) {
		return
	}
	for i := range n {
		b = append(b[:0], head...)
		b = append(b, `{"index":0,"delta":{"content":" t`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `"},"finish_reason":null}]}`+"\n\n"...)
		if !write(b) {
			return
		}
	}
	b = append(b[:0], head+`{"index":0,"delta":{},"finish_reason":"stop"}]}`+"\n\n"...)
	if req.StreamOptions.IncludeUsage {
		b = append(b, `data: {"id":"chatcmpl-mock","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":`...)
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, `,"total_tokens":`...)
		b = strconv.AppendInt(b, int64(n+10), 10)
		b = append(b, "}}\n\n"...)
	}
	b = append(b, "data: [DONE]\n\n"...)
	write(b)
}

// newFloorProxy is the floor: a plain reverse proxy to target that flushes
// every write at once (FlushInterval -1), as a streaming proxy must.
//
// It reads the (small, bounded) request body before proxying. Forwarding
// the inbound body as it is fails now and then against an upstream that
// answers at once: writing the response headers makes the proxy's server
// close the inbound body, the transport's check for extra body bytes then
// reads a closed body, and its write loop tears the upstream connection
// down mid-answer ("ReverseProxy read error during body copy: use of closed
// network connection"; the client gets unexpected EOF). Seen here on about
// one request in a hundred with the zero-latency mock; the analysis in
// coddy-project/coddy-agent#170 matches.
func newFloorProxy(target *url.URL) http.Handler {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 16
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
		},
		FlushInterval: -1,
		Transport:     tr,
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(b)), int64(len(b))
		rp.ServeHTTP(w, r)
	})
}

// serveLoopback serves h on a fresh loopback port until ctx ends and
// returns its base URL.
func serveLoopback(ctx context.Context, h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	return "http://" + ln.Addr().String(), nil
}

// streamTiming is one streamed chat completion as the client saw it.
type streamTiming struct {
	TTFT time.Duration // request sent → first non-empty content delta
	E2E  time.Duration // request sent → data: [DONE]
}

var (
	keyContent   = []byte(`"content":"`)
	emptyContent = []byte(`"content":""`)
	doneData     = []byte("[DONE]")
)

// chatStream sends one streamed chat completion to url and times it. The
// first token is the first chunk with non-empty content: QLC (and many
// gateways) send their headers and a role chunk with empty content at once,
// which is no token (the TTFT pitfall of the research notes). A stream that
// ends without [DONE], an error chunk, or no content is an error.
func chatStream(ctx context.Context, client *http.Client, url, key, model string, maxTokens int) (streamTiming, error) {
	body := fmt.Sprintf(`{"model":%q,"stream":true,"max_tokens":%d,"messages":[{"role":"user","content":"bench-peers: time to first token"}]}`, model, maxTokens)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(body)))
	if err != nil {
		return streamTiming{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return streamTiming{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return streamTiming{}, fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	}
	var t streamTiming
	sr := newSSEReader(resp.Body, defaultReadBuf, defaultMaxLine, defaultMaxEvent)
	for {
		ev, err := sr.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("the stream ended without [DONE]")
			}
			return t, err
		}
		switch {
		case bytes.Equal(ev.Data, doneData):
			t.E2E = time.Since(start)
			if t.TTFT == 0 {
				return t, errors.New("no content before [DONE]")
			}
			// Read the body to its end, as a well-behaved client does, so
			// that the connection is reused: every arm then measures
			// requests on a warm keep-alive connection. (Closing it early
			// also made the proxy abort its copy mid-response.)
			if _, err := io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20)); err != nil {
				return t, fmt.Errorf("after [DONE]: %w", err)
			}
			return t, nil
		case bytes.HasPrefix(ev.Data, []byte(`{"error"`)):
			return t, fmt.Errorf("error chunk: %.300s", ev.Data)
		case t.TTFT == 0 && bytes.Contains(ev.Data, keyContent) && !bytes.Contains(ev.Data, emptyContent):
			t.TTFT = time.Since(start)
		}
	}
}

// ttftArm is one way to get an answer of Tokens tokens a stage: direct to
// the mock, through the floor proxy, or through QLC; Calls is how many
// streamed completions in a row make one answer (four, for a four-stage
// pipeline done by hand through a proxy; QLC does its four in one request).
type ttftArm struct {
	Name   string
	Stages int // 1 or 4: the profile's shape, pairing QLC with its floor
	Calls  int // requests per answer
	Tokens int // max_tokens of each request: the mock's answer length
	URL    string
	Key    string
	Model  string
}

// ttftSample is one answer: TTFT from the first request's start to the
// first token of the last, E2E to the last [DONE].
type ttftSample struct {
	TTFT, E2E time.Duration
}

// measureArm times one answer of arm: its Calls requests one after the
// other.
func measureArm(ctx context.Context, client *http.Client, arm ttftArm) (ttftSample, error) {
	start := time.Now()
	for i := range arm.Calls {
		callStart := time.Now()
		t, err := chatStream(ctx, client, arm.URL, arm.Key, arm.Model, arm.Tokens)
		if err != nil {
			return ttftSample{}, fmt.Errorf("%s, %d tokens: %w", arm.Name, arm.Tokens, err)
		}
		if i == arm.Calls-1 {
			before := callStart.Sub(start)
			return ttftSample{TTFT: before + t.TTFT, E2E: before + t.E2E}, nil
		}
	}
	return ttftSample{}, errors.New("benchpeers: an arm with no calls")
}

// ttftConfig says how much the TTFT part measures.
type ttftConfig struct {
	Tokens   []int // answer lengths (tokens a stage), each measured
	Requests int   // measured answers per arm, length and round
	Warm     int   // answers per arm, length and round before measuring
	Rounds   int
}

// ttftRound is one arm's answers of one length in one round.
type ttftRound struct {
	Arm     string             `json:"arm"`
	Tokens  int                `json:"tokens"`
	Round   int                `json:"round"`
	Samples []ttftSample       `json:"-"`
	TTFT    map[string]float64 `json:"ttft_ms"`       // p50, p99
	E2E     float64            `json:"e2e_ms_p50"`    // request sent → [DONE], median
	Stream  float64            `json:"stream_ms_p50"` // E2E - TTFT, median
	Load1   float64            `json:"loadavg_1m"`
}

// runTTFT measures every arm (each at its length) for cfg.Rounds rounds;
// within a round the arms go in a random order (rng), each with its
// warm-up first, one request at a time (concurrency 1). No arm starts
// after deadline (errBudget).
func runTTFT(ctx context.Context, client *http.Client, arms []ttftArm, cfg ttftConfig, rng *rand.Rand, deadline time.Time) ([]ttftRound, error) {
	var out []ttftRound
	for r := range cfg.Rounds {
		order := slices.Clone(arms)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, arm := range order {
			if time.Now().After(deadline) {
				return out, errBudget
			}
			for range cfg.Warm {
				if _, err := measureArm(ctx, client, arm); err != nil {
					return out, err
				}
			}
			tr := ttftRound{Arm: arm.Name, Tokens: arm.Tokens, Round: r + 1, Load1: loadAvg()}
			for range cfg.Requests {
				s, err := measureArm(ctx, client, arm)
				if err != nil {
					return out, err
				}
				tr.Samples = append(tr.Samples, s)
			}
			ttft := make([]time.Duration, len(tr.Samples))
			e2e := make([]time.Duration, len(tr.Samples))
			stream := make([]time.Duration, len(tr.Samples))
			for i, s := range tr.Samples {
				ttft[i], e2e[i], stream[i] = s.TTFT, s.E2E, s.E2E-s.TTFT
			}
			tr.TTFT = map[string]float64{"p50": ms(percentile(ttft, 0.5)), "p99": ms(percentile(ttft, 0.99))}
			tr.E2E = ms(percentile(e2e, 0.5))
			tr.Stream = ms(percentile(stream, 0.5))
			out = append(out, tr)
		}
	}
	return out, nil
}

// percentile returns the q-quantile of ds (nearest rank; sorts ds).
func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(q*float64(len(ds))+0.999999) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// errBudget: the run's time budget is spent; what was measured is kept.
var errBudget = errors.New("benchpeers: the time budget is spent")
