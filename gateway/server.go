package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/web"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework/discover"
)

// Config configures a gateway Server. Zero fields take the defaults named on them.
type Config struct {
	// Engine runs the runs. Required.
	Engine *actors.Engine
	// Logger receives request and run logs. Default slog.Default().
	Logger *slog.Logger
	// Gatherer is served on /metrics: by OpsHandler to anyone, and on the
	// public handler only to an admin key (its series name tenants and what
	// they use). Default prometheus.DefaultGatherer.
	Gatherer prometheus.Gatherer
	// Tenancy holds tenants, API keys and the usage ledger: every /v1/
	// request then needs "Authorization: Bearer <key>", runs are admitted
	// against the tenant's limits cluster-wide, and every run is billed in
	// the ledger. Nil: no keys, every request runs as Tenant (a single-user
	// embedding; the gateway command always sets it).
	Tenancy *Tenancy
	// Tenant is the tenant every request runs as without Tenancy. Default
	// "local".
	Tenant string
	// DevKeys, in local mode, is given to a web UI on this machine
	// (GET /ui/session), so nobody pastes a key. Nil: the UI asks for one.
	// It is given only to a loopback peer that addressed the server as
	// localhost, 127.0.0.1 or [::1], with no proxy's forwarding header
	// (local.go: DNS rebinding and proxies).
	DevKeys *DevKeys
	// LocalOnly (local mode) refuses every request whose Host header is not
	// localhost, 127.0.0.1 or [::1] with 421 Misdirected Request, on the
	// public and the ops handler: a page on another site that rebinds its
	// name to this machine gets nothing.
	LocalOnly bool
	// Ops, if set, serves the paths of OpsHandler other than /healthz,
	// /readyz and /metrics (cmd/gateway: net/http/pprof under
	// /debug/pprof/), behind the same LocalOnly check. Never served on the
	// public handler. Nil: 404 there.
	Ops http.Handler
	// Registerer receives the gateway's metrics (per tenant, bounded).
	// Default prometheus.DefaultRegisterer.
	Registerer prometheus.Registerer
	// AdmitTimeout bounds the tenant limiter's answer. Default 2 s.
	AdmitTimeout time.Duration
	// BodyReadTimeout bounds reading a request body (slow clients get 408).
	// Default 30 s.
	BodyReadTimeout time.Duration
	// KeepRuns is how long finished runs' logs stay in the store, readable
	// after a restart (their usage records stay for good). Default 7 days.
	KeepRuns time.Duration
	// MaxStreamsPerKey caps a key's concurrent event streams (SSE, WebSocket,
	// streamed chat completions) when its tenant sets no max_streams.
	// Default 64; negative: no cap.
	MaxStreamsPerKey int
	// MaxBodyBytes caps a request body. Default 1 MiB.
	MaxBodyBytes int64
	// MaxQueryBytes caps a run's question (and a chat request's whole
	// conversation). Default 32 KiB: far above any typed question, far below
	// what a stage model's context window takes once four stages add their text.
	MaxQueryBytes int
	// PingInterval is how often an idle event stream gets a keep-alive
	// (SSE ": ping" comment, WebSocket ping). Default 15 s.
	PingInterval time.Duration
	// WriteTimeout bounds one write to a streaming client; a client that does
	// not read for this long is disconnected. Default 30 s.
	WriteTimeout time.Duration
	// MaxEventBytes bounds one event on the wire, framing included: an SSE
	// event (its id, event and data lines), a WebSocket message, an OpenAI
	// stream chunk. Token deltas are coalesced only up to it and a longer
	// delta is split into parts; reasons and notes are cut to fit; stage
	// outputs and answers are not repeated in events (docs/api.md). Default
	// DefaultMaxEventBytes (16 KiB); at least MinMaxEventBytes (1 KiB).
	MaxEventBytes int
	// CachedBilling is the share of the original run's tokens and cost a
	// run served from the response cache (or sharing an identical run in
	// flight) is billed: 0 (the default) bills nothing, 1 the full run.
	// Its ledger rows say "cached" either way.
	CachedBilling float64
	// FreeMemoryAfter: when at least this many event streams have closed
	// since the most were open, and at most half of that peak remain, the
	// gateway returns the memory they held to the OS (two GCs and
	// runtime/debug.FreeOSMemory) once streams stopped closing for a second,
	// at most every 10 s. Without it a quiet gateway keeps its peak RSS for
	// minutes after readers leave (no allocation, so no GC). Default 256;
	// negative: never.
	FreeMemoryAfter int
	// DiscoverLocal looks again for model servers on this machine, for
	// POST /v1/admin/discover-local (admin key), which reports what it
	// finds against the providers in use and adds the servers not in use
	// to the running engine (their providers and generated local
	// profiles: actors.Engine.AddProfiles). Nil: the endpoint answers 404
	// (discovery is off).
	DiscoverLocal func(context.Context) (discover.Result, error)
	// CancelWait is how long DELETE /v1/runs/{id} waits for the run to end
	// before answering (the answer then shows status "cancelled"). Default 2 s.
	CancelWait time.Duration
	// Console is the membership the cluster console (GET /console) watches:
	// members and their states, limiter hosts. Nil: the console shows this
	// process only (no members, no limiter hosts).
	Console ConsoleCluster
	// Ready, if set, is asked by /readyz besides the actor system: e.g. in a
	// cluster, whether any node hosts run coordinators. It must not block.
	Ready func() error
}

// DefaultConfig returns the defaults described on each field (Engine unset).
func DefaultConfig() Config {
	return Config{
		Logger: slog.Default(), Gatherer: prometheus.DefaultGatherer, Registerer: prometheus.DefaultRegisterer, Tenant: "local",
		AdmitTimeout: 2 * time.Second, MaxStreamsPerKey: 64, KeepRuns: 7 * 24 * time.Hour, BodyReadTimeout: 30 * time.Second,
		MaxBodyBytes: 1 << 20, MaxQueryBytes: 32 << 10, PingInterval: 15 * time.Second,
		WriteTimeout: 30 * time.Second, CancelWait: 2 * time.Second, MaxEventBytes: DefaultMaxEventBytes,
		FreeMemoryAfter: 256,
	}
}

func (c *Config) validate() error {
	if c.Engine == nil {
		return errors.New("gateway: Config.Engine is required")
	}
	d := DefaultConfig()
	if c.Logger == nil {
		c.Logger = d.Logger
	}
	if c.Gatherer == nil {
		c.Gatherer = d.Gatherer
	}
	if c.Tenant == "" {
		c.Tenant = d.Tenant
	}
	if c.AdmitTimeout == 0 {
		c.AdmitTimeout = d.AdmitTimeout
	}
	if c.BodyReadTimeout == 0 {
		c.BodyReadTimeout = d.BodyReadTimeout
	}
	if c.KeepRuns == 0 {
		c.KeepRuns = d.KeepRuns
	}
	if c.MaxStreamsPerKey == 0 {
		c.MaxStreamsPerKey = d.MaxStreamsPerKey
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	if c.MaxQueryBytes == 0 {
		c.MaxQueryBytes = d.MaxQueryBytes
	}
	if c.PingInterval == 0 {
		c.PingInterval = d.PingInterval
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.CancelWait == 0 {
		c.CancelWait = d.CancelWait
	}
	if c.MaxEventBytes == 0 {
		c.MaxEventBytes = d.MaxEventBytes
	}
	if c.FreeMemoryAfter == 0 {
		c.FreeMemoryAfter = d.FreeMemoryAfter
	}
	if c.MaxEventBytes < MinMaxEventBytes {
		return fmt.Errorf("gateway: MaxEventBytes must be at least %d bytes (got %d)", MinMaxEventBytes, c.MaxEventBytes)
	}
	if c.MaxBodyBytes < 1024 || c.MaxQueryBytes < 1 || c.PingInterval < 0 || c.WriteTimeout < 0 || c.CancelWait < 0 {
		return fmt.Errorf("gateway: bad limits (MaxBodyBytes >= 1024, MaxQueryBytes >= 1, durations >= 0)")
	}
	return nil
}

// Server is the HTTP gateway. Its handler is safe for concurrent use.
type Server struct {
	cfg     Config
	started time.Time // when New ran: reservations before it are a previous life's (recoverOpen)
	engine  *actors.Engine
	tenancy *Tenancy
	logger  *slog.Logger
	handler http.Handler
	metrics *gatewayMetrics

	localMu sync.Mutex // one POST /v1/admin/discover-local adds at a time (localmodels.go)

	opsHandler     http.Handler // /healthz, /readyz, /metrics without a key
	metricsHandler http.Handler // Config.Gatherer in Prometheus' text format
	routes         http.Handler // handler without the refusal at the door (refuse.go)

	streamsMu sync.Mutex
	streams   map[string]int // open event streams per key id
	mem       *memRelease    // nil: Config.FreeMemoryAfter < 0

	adm admissionState // cheap refusals remembered; seams for tests (admission.go)

	batches *batchManager // POST /v1/runs/batch (batch.go); nil without Tenancy

	console *consoleHub // the cluster console's snapshots (console.go)

	// Goroutines, each owned by the Server and waited for by Close: the
	// runs waiting to be billed (accounting), and the background work
	// (bg: recoverOpen, keepRuns, a limiter's settle after a failed admit,
	// the batch dispatcher and its watchers: batch.go).
	// stop (and ctx, cancelled with it) tells them to end.
	accounting sync.WaitGroup
	bgMu       sync.Mutex // guards bgClosed and bg.Add against Close's bg.Wait
	bgClosed   bool
	bg         sync.WaitGroup
	stop       chan struct{} // closed by Stop
	ctx        context.Context
	cancel     context.CancelFunc
	closeOnce  sync.Once
}

// New builds a gateway on cfg.Engine.
func New(cfg Config) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, started: time.Now(), engine: cfg.Engine, tenancy: cfg.Tenancy, logger: cfg.Logger,
		metrics: newGatewayMetrics(cfg.Registerer), streams: map[string]int{}, stop: make(chan struct{}),
		metricsHandler: promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if s.tenancy != nil {
		if err := s.engine.Services().ServeLedger(s.ledgerState); err != nil {
			return nil, err
		}
		// GET /v1/usage through another gateway sums this ledger in.
		if err := s.engine.Services().ServeUsage(s.usageReply); err != nil {
			return nil, err
		}
		// A provider key put or deleted reaches the runs in flight of its
		// tenant (their next attempts).
		s.tenancy.OnProviderKeyChange(func(tenant, endpoint string, sk *messages.SealedSecret) {
			s.engine.ProviderKeyChanged(tenant, endpoint, sk)
		})
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/runs", s.createRun)
	mux.HandleFunc("GET /v1/runs", s.listRuns)
	mux.HandleFunc("GET /v1/runs/{id}", s.getRun)
	mux.HandleFunc("DELETE /v1/runs/{id}", s.cancelRun)
	mux.HandleFunc("GET /v1/runs/{id}/events", s.runEventsSSE)
	mux.HandleFunc("GET /v1/runs/{id}/ws", s.runEventsWS)
	mux.HandleFunc("GET /v1/profiles", s.listProfiles)
	mux.HandleFunc("POST /v1/chat/completions", s.chatCompletions)
	mux.HandleFunc("GET /v1/models", s.listModels)
	mux.HandleFunc("POST /v1/tokenize", s.tokenize)
	mux.HandleFunc("GET /v1/usage", s.getUsage)
	mux.HandleFunc("GET /v1/stats/models", s.modelStats)
	if s.tenancy != nil {
		mux.HandleFunc("POST /v1/admin/tenants", s.adminCreateTenant)
		mux.HandleFunc("GET /v1/admin/tenants", s.adminListTenants)
		mux.HandleFunc("GET /v1/admin/tenants/{id}", s.adminGetTenant)
		mux.HandleFunc("PATCH /v1/admin/tenants/{id}", s.adminPatchTenant)
		mux.HandleFunc("POST /v1/admin/tenants/{id}/keys", s.adminCreateKey)
		mux.HandleFunc("DELETE /v1/admin/keys/{key_id}", s.adminRevokeKey)
		mux.HandleFunc("GET /v1/admin/audit", s.adminAudit)
		mux.HandleFunc("POST /v1/admin/discover-local", s.adminDiscoverLocal)
		mux.HandleFunc("PUT /v1/provider-keys/{endpoint}", s.putProviderKey)
		mux.HandleFunc("GET /v1/provider-keys", s.listProviderKeys)
		mux.HandleFunc("DELETE /v1/provider-keys/{endpoint}", s.deleteProviderKey)
		mux.HandleFunc("PUT /v1/profiles/{name}", s.putTenantProfile)
		mux.HandleFunc("GET /v1/profiles/{name}", s.getTenantProfile)
		mux.HandleFunc("DELETE /v1/profiles/{name}", s.deleteTenantProfile)
	}
	s.consoleRoutes(mux)
	mux.Handle("GET /ui/session", s.localSession(http.HandlerFunc(s.uiSession)))
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.ready)
	mux.HandleFunc("GET /metrics", s.publicMetrics)
	mux.Handle("/", web.Handler())
	mux.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errNotFound("unknown_endpoint", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)))
	})
	s.routes = s.traced(mux, s.recoverer(s.loopbackOnly(s.withAuth(s.batchRoutes(mux)))))
	s.handler = s.refuseAtTheDoor(s.routes)
	ops := http.NewServeMux()
	ops.HandleFunc("GET /healthz", s.healthz)
	ops.HandleFunc("GET /readyz", s.ready)
	ops.Handle("GET /metrics", s.metricsHandler)
	if cfg.Ops != nil {
		ops.Handle("/", cfg.Ops)
	}
	s.opsHandler = s.recoverer(s.loopbackOnly(ops))
	if s.tenancy != nil {
		s.batches = newBatchManager(s) // before recoverOpen: the runs it bills tell it (runEnded)
		s.goBackground(s.recoverOpen)
		s.goBackground(s.keepRuns)
		// Another gateway asked for a run that ended here and left memory:
		// from the store (several gateways behind one address).
		s.engine.SetKeptRuns(s.restore)
		// A finished run's log, once recorded, leaves memory and is read
		// back from the store when asked for (actors.Engine.LogStored).
		s.engine.SetLogStore(s.loadLog)
		s.goBackground(s.batches.run)
	}
	s.console = newConsoleHub(s, cfg.Console)
	s.goBackground(func() { s.console.watchMembers(s.stop) })
	s.goBackground(func() { s.console.pollNodes(s.stop) })
	if cfg.FreeMemoryAfter > 0 {
		s.mem = newMemRelease(cfg.FreeMemoryAfter)
		s.goBackground(func() { s.mem.run(s.stop) })
	}
	return s, nil
}

// goBackground runs f in a goroutine that Close waits for; f must end soon
// after s.stop is closed. After Close has begun, f is not started (it
// reports false).
func (s *Server) goBackground(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.bgClosed {
		return false
	}
	s.bg.Go(f)
	return true
}

// Stop tells the server it is going away: runs still going (on nodes)
// are no longer waited for; their reservations stay open in the ledger, and
// the next start follows them again and bills them. Call it before the
// engine's Shutdown when runs live on nodes; Close calls it too.
func (s *Server) Stop() {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.cancel()
	})
}

// Close stops the server's background goroutines and waits (until ctx is
// done) for them and for the runs admitted here to be billed in the ledger:
// call it after the engine has ended its runs. Calling it again is safe (it
// waits again).
func (s *Server) Close(ctx context.Context) error {
	s.Stop()
	s.bgMu.Lock()
	s.bgClosed = true
	s.bgMu.Unlock()
	done := make(chan struct{})
	go func() { // ends when both groups are done, even after ctx gave up
		s.bg.Wait()
		s.accounting.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gateway: runs still unbilled at shutdown: %w", ctx.Err())
	}
}

// Handler serves the gateway's public routes: the API, the web UI, and
// /healthz and /readyz without a key; /metrics there needs an admin key.
func (s *Server) Handler() http.Handler { return s.handler }

// OpsHandler serves /healthz, /readyz and /metrics without a key: serve it
// on an address only operators reach (cmd/gateway's -ops-addr, loopback by
// default), never on the public one.
func (s *Server) OpsHandler() http.Handler { return s.opsHandler }

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// publicMetrics serves /metrics on the public handler to an admin key only:
// its series name tenants and what they run and spend. Without tenancy
// there are no keys, and metrics are on OpsHandler alone.
func (s *Server) publicMetrics(w http.ResponseWriter, r *http.Request) {
	if s.tenancy == nil {
		writeError(w, errNotFound("unknown_endpoint", "metrics are served on the ops address, not here"))
		return
	}
	p, e := s.tenancy.authenticate(r)
	if e != nil {
		s.metrics.authFailures.WithLabelValues(e.Code).Inc()
		e.Message += " (/metrics here needs an admin key; the ops address serves it without one)"
		writeError(w, e)
		return
	}
	if !p.admin {
		writeError(w, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "admin_key_required",
			Message: "/metrics needs an admin key (or use the ops address)"})
		return
	}
	s.metricsHandler.ServeHTTP(w, r)
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	if s.engine.System().IsStopped() {
		writeError(w, errServer(http.StatusServiceUnavailable, "not_ready", "actor system stopped"))
		return
	}
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			writeError(w, errServer(http.StatusServiceUnavailable, "not_ready", err.Error()))
			return
		}
	}
	writeJSON(w, 200, map[string]string{"status": "ready"})
}

// recoverer turns a panic in one request into a 500 for that request alone.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Every answer says it is QLC, so that local model discovery (ours
		// or another gateway's on this machine) never takes QLC for a model
		// server (discover.QLCHeader).
		w.Header().Set(discover.QLCHeader, "qlc")
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				writeError(w, errServer(http.StatusInternalServerError, "internal_error", "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// EdgeLimits bounds what a client may do at the HTTP edge, before a request
// reaches the gateway's handler. DefaultEdgeLimits gives the defaults
// (cmd/gateway's flags start from the same values).
type EdgeLimits struct {
	// ReadHeaderTimeout bounds reading a request's line and headers: a client
	// that sends them slowly (slowloris) is disconnected. Zero: no bound.
	ReadHeaderTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request. Zero: no bound (the server sets no ReadTimeout for net/http to
	// fall back on).
	IdleTimeout time.Duration
	// MaxHeaderBytes caps a request's line and headers; a larger request gets
	// 431 from net/http (which allows 4 KiB of slack on top). Zero: net/http's
	// default (1 MiB).
	MaxHeaderBytes int
}

// DefaultEdgeLimits returns the default limits, each with its reason.
func DefaultEdgeLimits() EdgeLimits {
	return EdgeLimits{
		// 10 s: a real client sends its headers in one packet; a slow mobile
		// link still needs far less.
		ReadHeaderTimeout: 10 * time.Second,
		// 120 s: long enough for a browser tab to reuse its connection between
		// polls, short enough that idle connections do not pile up.
		IdleTimeout: 120 * time.Second,
		// 64 KiB: an API key and a few cookies take under 1 KiB.
		MaxHeaderBytes: 64 << 10,
	}
}

// NewHTTPServerWith wraps h in an http.Server with timeouts that fit
// streaming: no overall write timeout (streams are long; each write has its
// own deadline), but header reads bounded by lim against slow clients.
func NewHTTPServerWith(addr string, h http.Handler, logger *slog.Logger, lim EdgeLimits) *http.Server {
	return &http.Server{
		Addr: addr, Handler: h,
		// No ReadTimeout: net/http's background read would hit it during a
		// long stream and cancel the request. Bodies are bounded in size and
		// read with their own deadline (decodeJSON).
		ReadHeaderTimeout: lim.ReadHeaderTimeout,
		IdleTimeout:       lim.IdleTimeout,
		MaxHeaderBytes:    lim.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		BaseContext:       func(_ net.Listener) context.Context { return context.Background() },
	}
}
