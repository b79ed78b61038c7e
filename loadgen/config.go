package loadgen

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// Target is what a request is.
type Target string

const (
	// TargetRuns starts a run (POST /v1/runs) and reads its events over
	// SSE (GET /v1/runs/{id}/events).
	TargetRuns Target = "runs"
	// TargetRunsStream starts a run with "stream": true: its events come
	// on the POST's own connection.
	TargetRunsStream Target = "runs-stream"
	// TargetWS starts a run and reads its events over its WebSocket.
	TargetWS Target = "ws"
	// TargetChat is a streamed POST /v1/chat/completions: QLC's
	// OpenAI-compatible endpoint, or any OpenAI-compatible server.
	TargetChat Target = "chat"
)

// Arrival is how an open loop spaces its sends.
type Arrival string

const (
	// ArrivalConstant sends at an even rate.
	ArrivalConstant Arrival = "constant"
	// ArrivalPoisson sends as a Poisson process (exponential gaps).
	ArrivalPoisson Arrival = "poisson"
)

// Config is one load. Every field is documented with its default; see
// DefaultConfig.
type Config struct {
	// URL is the server's address, e.g. "http://localhost:8080" (the API
	// root: /v1/… is appended).
	URL string
	// APIKey is sent as a bearer token.
	APIKey string
	// Target: TargetRuns (default), TargetRunsStream, TargetWS, TargetChat.
	Target Target

	// Rate > 0 makes an open loop: Rate sends per second, spaced by
	// Arrival, each request's latency counted from its scheduled send.
	// Rate 0 makes a closed loop of Concurrency workers, each sending its
	// next request when its last one ended.
	Rate        float64
	Arrival     Arrival // default ArrivalConstant
	Concurrency int     // closed loop's workers (default 4)
	// MaxInFlight bounds an open loop's requests in flight (default
	// 1000); a request waiting for a slot is late, and its latency says so.
	MaxInFlight int

	// Requests bounds how many requests are sent (default 100), Duration
	// how long sending goes on (default 1 min); the load ends at whichever
	// comes first. Then requests in flight have Drain (default 30 s) to
	// end; the ones still going are stopped and counted as interrupted.
	Requests int
	Duration time.Duration
	Drain    time.Duration

	// Mix is what to send (default: one item, the default profile, a
	// made question of 20 words).
	Mix []MixItem
	// ChatThinking asks the chat target for "qlc-<profile>-thinking".
	ChatThinking bool
	// Tokenizer counts the chat target's tokens (it has no token counts
	// in its chunks): "o200k_base" (default), "cl100k_base", or "chunks"
	// (each non-empty chunk is one token, as some tools count).
	Tokenizer string

	// CancelProbes is the fraction (0..1) of run requests cancelled with
	// DELETE /v1/runs/{id} at a random time within CancelWithin (default
	// 2 s) after their first event; the probe measures how long the stream
	// then takes to end. Chat requests (QLC only) are cancelled the same way.
	CancelProbes float64
	CancelWithin time.Duration
	// ReconnectProbes is the fraction (0..1) of run requests whose stream
	// is dropped once, after a random number of events (1..ReconnectWithin,
	// default 50), and resumed with Last-Event-ID (from_seq over
	// WebSocket). Every run stream is checked gap-free (each seq once, in
	// order); a gap or a duplicate is an error.
	ReconnectProbes float64
	ReconnectWithin int

	// Seed makes the mix's choices, the Poisson gaps and the probes
	// reproducible (default 1).
	Seed uint64

	// ServerMetrics, when set, is the server's Prometheus endpoint (e.g.
	// QLC's ops address http://127.0.0.1:9080/metrics, or /metrics on the
	// API address with MetricsKey an admin key); it is scraped before and
	// after the load and the server's own histograms and usage ledger are
	// compared with what the load measured (Report.Agreement).
	ServerMetrics string
	MetricsKey    string
	// Nodes are named /metrics endpoints sampled every second for the
	// report's per-node load (runs in flight on each process).
	Nodes map[string]string

	// Progress, when not nil, gets a live progress line every second
	// (carriage-return updated: give it a terminal).
	Progress io.Writer
	// KeepRequests keeps every request's result in the report (default
	// true up to 100 000 requests).
	KeepRequests *bool
	// HTTPClient makes every request (default: a transport with enough
	// idle connections for the load, no timeouts).
	HTTPClient *http.Client
	// Logger gets warnings (default: none).
	Logger *slog.Logger

	// now is the clock (tests); time.Now when nil.
	now func() time.Time
}

// DefaultConfig is a closed loop of 4 workers, 100 requests in at most a
// minute, against a local gateway's runs.
func DefaultConfig() Config {
	return Config{URL: "http://localhost:8080", Target: TargetRuns, Arrival: ArrivalConstant, Concurrency: 4,
		MaxInFlight: 1000, Requests: 100, Duration: time.Minute, Drain: 30 * time.Second, Tokenizer: "o200k_base",
		CancelWithin: 2 * time.Second, ReconnectWithin: 50, Seed: 1}
}

// ErrBadConfig is returned for a Config that cannot run.
var ErrBadConfig = errors.New("loadgen: bad config")

func (c *Config) validate() error {
	d := DefaultConfig()
	bad := func(f string, a ...any) error { return fmt.Errorf("%w: "+f, append([]any{ErrBadConfig}, a...)...) }
	if c.URL == "" {
		c.URL = d.URL
	}
	switch c.Target {
	case "":
		c.Target = d.Target
	case TargetRuns, TargetRunsStream, TargetWS, TargetChat:
	default:
		return bad("unknown target %q (runs, runs-stream, ws, chat)", c.Target)
	}
	switch c.Arrival {
	case "":
		c.Arrival = d.Arrival
	case ArrivalConstant, ArrivalPoisson:
	default:
		return bad("unknown arrival %q (constant, poisson)", c.Arrival)
	}
	if c.Rate < 0 || c.Rate != c.Rate {
		return bad("rate %v", c.Rate)
	}
	if c.Concurrency < 0 || c.MaxInFlight < 0 || c.Requests < 0 || c.Duration < 0 || c.Drain < 0 {
		return bad("negative bound")
	}
	if c.Concurrency == 0 {
		c.Concurrency = d.Concurrency
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.Requests == 0 {
		c.Requests = d.Requests
	}
	if c.Duration == 0 {
		c.Duration = d.Duration
	}
	if c.Drain == 0 {
		c.Drain = d.Drain
	}
	if c.Tokenizer == "" {
		c.Tokenizer = d.Tokenizer
	}
	if len(c.Mix) == 0 {
		c.Mix = []MixItem{{QueryWords: 20, Weight: 1}}
	}
	for i := range c.Mix {
		if err := c.Mix[i].check(); err != nil {
			return bad("mix item %d: %v", i, err)
		}
	}
	if err := checkWeights(c.Mix); err != nil {
		return err
	}
	for _, p := range []float64{c.CancelProbes, c.ReconnectProbes} {
		if !(p >= 0 && p <= 1) {
			return bad("probe fraction %v is not within 0..1", p)
		}
	}
	if c.CancelProbes+c.ReconnectProbes > 1 {
		return bad("cancel and reconnect probes add up to more than every request")
	}
	if c.CancelWithin <= 0 {
		c.CancelWithin = d.CancelWithin
	}
	if c.ReconnectWithin <= 0 {
		c.ReconnectWithin = d.ReconnectWithin
	}
	if c.Seed == 0 {
		c.Seed = d.Seed
	}
	if c.KeepRequests == nil {
		keep := c.Requests <= 100_000
		c.KeepRequests = &keep
	}
	if c.HTTPClient == nil {
		conns := max(c.Concurrency, min(c.MaxInFlight, 4096))
		if c.Rate == 0 {
			conns = c.Concurrency
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns, tr.MaxIdleConnsPerHost = conns*2, conns*2
		c.HTTPClient = &http.Client{Transport: tr}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return nil
}
