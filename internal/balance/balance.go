// Package balance is the HTTP balancer that puts several QLC gateways
// behind one address (docker-compose.yml's `balancer`, the `gateway
// balance` subcommand). Any gateway serves any run — a run started through
// one is streamed, resumed, read and cancelled through another (the
// gateway attaches to its coordinator, or asks the other gateways for a run
// that ended) — so requests are spread round robin with no stickiness.
//
// Its life cycle:
//
//  1. New(cfg) checks the configuration; every backend starts healthy.
//  2. Run(ctx) checks each backend's cfg.HealthPath every cfg.Interval
//     (200 within cfg.Timeout: healthy) until ctx is done; its caller owns
//     it and waits for it to return.
//  3. ServeHTTP proxies a request to the next healthy backend (round
//     robin). A backend that refuses the connection is marked down until
//     its next good check, and the request goes to the next one: nothing
//     was sent, so even a POST is safe to retry. Any other error ends the
//     request with 502. Responses are flushed as they come (event
//     streams); WebSocket upgrades pass through.
//  4. With no backend answering: 503 no_gateway with Retry-After: 1, in
//     the gateways' error shape.
package balance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Balancer.
type Config struct {
	// Backends are the gateways, host:port or http://host:port; at least one.
	Backends []string
	// HealthPath is what a check GETs on each backend: a gateway's /readyz
	// answers 503 while it starts or drains, which takes it out of the
	// rotation before it stops listening.
	HealthPath string
	// Interval between checks (default 1 s): how long a gateway that went
	// away without refusing connections (a paused container) may still be
	// chosen.
	Interval time.Duration
	// Timeout of one check (default 500 ms).
	Timeout time.Duration
	// Transport carries requests and checks (default: a clone of
	// http.DefaultTransport).
	Transport http.RoundTripper
	// Logger gets state changes of backends (default: discard).
	Logger *slog.Logger
}

// DefaultConfig is the configuration `gateway balance` starts from.
func DefaultConfig() Config {
	return Config{HealthPath: "/readyz", Interval: time.Second, Timeout: 500 * time.Millisecond}
}

func (c *Config) validate() error {
	d := DefaultConfig()
	if len(c.Backends) == 0 {
		return errors.New("balance: no backends")
	}
	if c.HealthPath == "" {
		c.HealthPath = d.HealthPath
	}
	if !strings.HasPrefix(c.HealthPath, "/") {
		return fmt.Errorf("balance: health path %q does not start with /", c.HealthPath)
	}
	if c.Interval < 0 || c.Timeout < 0 {
		return errors.New("balance: negative interval or timeout")
	}
	if c.Interval == 0 {
		c.Interval = d.Interval
	}
	if c.Timeout == 0 {
		c.Timeout = d.Timeout
	}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// ParseBackend reads a backend as host:port or http://host:port[/]: the
// URL requests go to. Paths, queries and other schemes are refused.
func ParseBackend(s string) (*url.URL, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("balance: backend %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("balance: backend %q: scheme %q (http or https)", s, u.Scheme)
	}
	if u.Host == "" || u.Port() == "" {
		return nil, fmt.Errorf("balance: backend %q: want host:port", s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil || u.Fragment != "" {
		return nil, fmt.Errorf("balance: backend %q: only scheme, host and port", s)
	}
	u.Path = ""
	return u, nil
}

type backend struct {
	url  *url.URL
	up   atomic.Bool
	name string
}

// Balancer spreads requests over Config.Backends. Its methods may be
// called concurrently.
type Balancer struct {
	cfg      Config
	backends []*backend
	next     atomic.Uint64
	proxy    *httputil.ReverseProxy
	client   *http.Client
}

// New returns a balancer over cfg.Backends, all taken as healthy until a
// check says otherwise.
func New(cfg Config) (*Balancer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	b := &Balancer{cfg: cfg, client: &http.Client{Transport: cfg.Transport, Timeout: cfg.Timeout}}
	for _, s := range cfg.Backends {
		u, err := ParseBackend(s)
		if err != nil {
			return nil, err
		}
		be := &backend{url: u, name: u.Host}
		be.up.Store(true)
		b.backends = append(b.backends, be)
	}
	b.proxy = &httputil.ReverseProxy{
		// The backend is chosen by the transport (retries need it there);
		// the URL is completed per attempt.
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetXForwarded()
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", "balance.invalid"
		},
		Transport:     &retrying{b: b},
		FlushInterval: -1, // event streams: every write reaches the client
		ErrorHandler:  b.proxyError,
		ErrorLog:      slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn),
	}
	return b, nil
}

// errNoBackend is the transport's answer when no backend took the
// connection.
var errNoBackend = errors.New("balance: no backend accepted the connection")

func (b *Balancer) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	status, code, msg := http.StatusBadGateway, "bad_gateway", "the gateway did not answer"
	if errors.Is(err, errNoBackend) {
		status, code, msg = http.StatusServiceUnavailable, "no_gateway", "no gateway is reachable; retry shortly"
		w.Header().Set("Retry-After", "1")
	}
	b.cfg.Logger.Warn("balance: request failed", "method", r.Method, "path", r.URL.Path, "error", err)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"message":%q,"type":"server_error","code":%q}}`+"\n", msg, code)
}

// ServeHTTP proxies r to a backend.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.proxy.ServeHTTP(w, r) }

// order returns the backends in the order a request tries them: the
// healthy ones round robin from the next turn, then the ones marked down
// (a check may lag: better a try than a refusal).
func (b *Balancer) order() []*backend {
	n := len(b.backends)
	start := int(b.next.Add(1)-1) % n
	out := make([]*backend, 0, n)
	for _, up := range []bool{true, false} {
		for i := range n {
			if be := b.backends[(start+i)%n]; be.up.Load() == up {
				out = append(out, be)
			}
		}
	}
	return out
}

// Healthy reports each backend's state (host:port → up), for tests and logs.
func (b *Balancer) Healthy() map[string]bool {
	out := make(map[string]bool, len(b.backends))
	for _, be := range b.backends {
		out[be.name] = be.up.Load()
	}
	return out
}

func (b *Balancer) mark(be *backend, up bool, why string) {
	if be.up.Swap(up) != up {
		if up {
			b.cfg.Logger.Info("balance: backend up", "backend", be.name)
		} else {
			b.cfg.Logger.Warn("balance: backend down", "backend", be.name, "reason", why)
		}
	}
}

// Run checks every backend each Interval until ctx is done. Call it once;
// its caller owns it.
func (b *Balancer) Run(ctx context.Context) {
	t := time.NewTicker(b.cfg.Interval)
	defer t.Stop()
	for {
		b.CheckNow(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckNow checks every backend once, together, and returns when all have
// answered or timed out.
func (b *Balancer) CheckNow(ctx context.Context) {
	var wg sync.WaitGroup
	for _, be := range b.backends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			up, why := b.check(ctx, be)
			if ctx.Err() == nil {
				b.mark(be, up, why)
			}
		}()
	}
	wg.Wait()
}

func (b *Balancer) check(ctx context.Context, be *backend) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, be.url.String()+b.cfg.HealthPath, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Sprintf("%s: HTTP %d", b.cfg.HealthPath, resp.StatusCode)
	}
	return true, ""
}

// retrying is the proxy's transport: it sends a request to the backends
// in order() until one takes the connection.
type retrying struct{ b *Balancer }

func (t *retrying) RoundTrip(r *http.Request) (*http.Response, error) {
	var body *onceBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &onceBody{r: r.Body}
	}
	var last error
	for _, be := range t.b.order() {
		out := r.Clone(r.Context())
		out.URL.Scheme, out.URL.Host = be.url.Scheme, be.url.Host
		out.Host = r.Host // the client's Host header, as a proxy keeps it
		if body != nil {
			out.Body = body
		}
		resp, err := t.b.cfg.Transport.RoundTrip(out)
		if err == nil {
			return resp, nil
		}
		last = err
		if !refused(err) || (body != nil && body.read.Load()) {
			return nil, err // something may have reached the backend
		}
		t.b.mark(be, false, err.Error())
	}
	return nil, fmt.Errorf("%w: %v", errNoBackend, last)
}

// refused reports whether err is a failure to connect: nothing was sent.
func refused(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// onceBody is a request body the transport may close after a failed dial
// without ending it for the next backend; read says whether any of it was
// sent (then the request is not retried).
type onceBody struct {
	r    io.ReadCloser
	read atomic.Bool
}

func (o *onceBody) Read(p []byte) (int, error) {
	o.read.Store(true)
	return o.r.Read(p)
}

// Close is a no-op: the server closes the incoming body itself.
func (o *onceBody) Close() error { return nil }
