package actors

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/stats"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Metrics are the run pipeline's Prometheus metrics. Label sets are bounded by
// configuration (stages, profiles, providers, error kinds), never by traffic.
type Metrics struct {
	runsStarted        *prometheus.CounterVec   // profile
	runsEnded          *prometheus.CounterVec   // profile, outcome
	activeRuns         prometheus.Gauge         //
	stageDuration      *prometheus.HistogramVec // stage
	stageTTFT          *prometheus.HistogramVec // stage
	tokensStreamed     *prometheus.CounterVec   // stage
	stageRestarts      *prometheus.CounterVec   // stage
	providerErrors     *prometheus.CounterVec   // provider, kind
	runCache           *prometheus.CounterVec   // result: hit, shared, miss
	subscribers        prometheus.Gauge
	droppedSubscribers prometheus.Counter
	coordinators       prometheus.Counter       // coordinators started on this process
	mailboxDepth       *prometheus.HistogramVec // actor kind
	mailboxDropped     *prometheus.CounterVec   // actor kind
	mailboxQueued      *queuedByKind            // actor kind
	transportMsgs      *prometheus.CounterVec   // direction
	transportBytes     *prometheus.CounterVec   // direction
	placements         *prometheus.CounterVec   // outcome
	tokenizerRequests  *prometheus.CounterVec   // path
	failovers          prometheus.Counter
	silenceProbes      prometheus.Counter // RunProbes sent to coordinators that had said nothing for a while
	silentCoordinators prometheus.Counter // runs moved because their coordinator stayed silent
	tokenizerBatches   prometheus.Histogram
	hedges             *prometheus.CounterVec // outcome
	stepOffers         *prometheus.CounterVec // outcome

	tokensByStage [stagework.NumStages + 1]prometheus.Counter // resolved once: the per-token path does no label lookup

	// The OpenTelemetry GenAI semantic conventions' metrics, in
	// Prometheus names, per model (gen_ai_request_model, at most
	// maxModelLabels values, then "other") and stage (role).
	genaiDuration *prometheus.HistogramVec
	genaiTTFT     *prometheus.HistogramVec
	genaiPerToken *prometheus.HistogramVec
	genaiTokens   *prometheus.HistogramVec
	modelLabels   modelLabels

	slots        atomic.Pointer[runSlots] // read by the two gauges below; nil: no slots yet
	slotsInUse   prometheus.GaugeFunc
	slotsWaiting prometheus.GaugeFunc

	slow SlowWatcher // Config.Slow; nil: none
}

// NewMetrics creates the metrics and registers them with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		runsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_runs_started_total", Help: "Runs accepted, by profile.",
		}, []string{"profile"}),
		runsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_runs_total", Help: "Runs ended, by profile and outcome (completed, failed, cancelled).",
		}, []string{"profile", "outcome"}),
		activeRuns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qlc_active_runs", Help: "Runs started and not yet ended.",
		}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "qlc_stage_duration_seconds", Help: "Stage duration from its (last) start to its completion.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
		}, []string{"stage"}),
		genaiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gen_ai_client_operation_duration_seconds", Help: "GenAI operation duration (OpenTelemetry gen_ai.client.operation.duration): a stage attempt that completed, from its request to its last token.",
			Buckets: []float64{0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92},
		}, []string{"gen_ai_operation_name", "gen_ai_request_model", "stage"}),
		genaiTTFT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gen_ai_server_time_to_first_token_seconds", Help: "Time to first token of a completed stage attempt (OpenTelemetry gen_ai.server.time_to_first_token).",
			Buckets: []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0},
		}, []string{"gen_ai_request_model", "stage"}),
		genaiPerToken: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gen_ai_server_time_per_output_token_seconds", Help: "Time per output token after the first, of a completed stage attempt (OpenTelemetry gen_ai.server.time_per_output_token).",
			Buckets: []float64{0.0001, 0.001, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5},
		}, []string{"gen_ai_request_model", "stage"}),
		genaiTokens: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gen_ai_client_token_usage", Help: "Tokens used by a completed stage attempt, by type: input (prompt) or output (OpenTelemetry gen_ai.client.token.usage).",
			Buckets: []float64{1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864},
		}, []string{"gen_ai_token_type", "gen_ai_request_model", "stage"}),
		stageTTFT: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "qlc_stage_ttft_seconds", Help: "Stage time to first token, as seen by the stage worker.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14),
		}, []string{"stage"}),
		tokensStreamed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_tokens_streamed_total", Help: "Completion tokens streamed, by stage.",
		}, []string{"stage"}),
		stageRestarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_stage_restarts_total", Help: "Stages whose streamed text was voided and redone.",
		}, []string{"stage"}),
		providerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_provider_errors_total", Help: "Failed stage attempts, by provider and error kind.",
		}, []string{"provider", "kind"}),
		runCache: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_run_cache_requests_total",
			Help: "Cacheable run requests by result: hit (replayed a kept log), near (replayed the kept log of a near-duplicate question), shared (followed an identical run in flight), miss (ran the models).",
		}, []string{"result"}),
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qlc_subscribers", Help: "Open event subscriptions (SSE, WebSocket, OpenAI streams).",
		}),
		droppedSubscribers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_subscribers_dropped_total", Help: "Subscribers cut off because they fell too far behind.",
		}),
		coordinators: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_coordinators_started_total", Help: "Run coordinators started on this process (a node hosts them for gateways).",
		}),
		mailboxDepth: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "qlc_mailbox_depth", Help: "Messages waiting in an actor's mailbox when it takes the next one, by actor kind.",
			Buckets: []float64{0, 1, 2, 4, 8, 16, 64, 256, 1024, 4096, 16384},
		}, []string{"kind"}),
		mailboxDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_mailbox_dropped_total", Help: "Messages dropped because the receiving actor's mailbox was full, by actor kind (see actors/mailbox.go for what each kind drops and how the sender recovers).",
		}, []string{"kind"}),
		transportMsgs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_transport_messages_total", Help: "gRPC messages (protoactor batches) over the actor transport, by direction (sent, received).",
		}, []string{"direction"}),
		transportBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_transport_bytes_total", Help: "Wire bytes over the actor transport, by direction (sent, received).",
		}, []string{"direction"}),
		tokenizerRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_tokenizer_requests_total", Help: "CountTokens requests, by path: served (by this process's tokenizer actors), remote (sent to a capable host), local-fallback (no capable host answered: counted here, scalar path).",
		}, []string{"path"}),
		stepOffers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_stage_host_steps_total", Help: "Parallel steps offered to this process's stage host, by outcome: started (a worker runs it), busy (refused at capacity), queued (waits for a stage slot), refused (draining, no such provider).",
		}, []string{"outcome"}),
		hedges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_hedges_total", Help: "Hedged stage attempts, by outcome: started, speculative (started at once: the primary's p95 TTFT is over the step's ttft_budget), won (the fallback streamed first), lost, failed.",
		}, []string{"outcome"}),
		tokenizerBatches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "qlc_tokenizer_batch_size", Help: "Requests per CountTokensBatch served by this process's tokenizer actors.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64},
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_failovers_total", Help: "Runs moved to a new coordinator after theirs was lost.",
		}),
		silenceProbes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_coordinator_probes_total", Help: "RunProbes this process's hubs sent to run coordinators they had heard nothing from for a third of -coordinator-silence.",
		}),
		silentCoordinators: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_silent_coordinators_total", Help: "Runs moved because their coordinator said nothing for -coordinator-silence and answered no probe (an asymmetric cut, a frozen process); also counted in qlc_failovers_total.",
		}),
		placements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qlc_placements_total", Help: "Run placements, by outcome: local, remote, refused (a node said no or did not answer; the next was tried), failed (no node took it).",
		}, []string{"outcome"}),
	}
	m.mailboxQueued = &queuedByKind{desc: prometheus.NewDesc("qlc_mailbox_queued",
		"Messages queued now in this process's actor mailboxes, summed by actor kind (qlc_mailbox_depth: the depth each message found).", []string{"kind"}, nil),
		kinds: map[string]*atomic.Int64{}}
	m.slotsInUse = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qlc_run_slots_in_use", Help: "Runs holding one of this process's run slots (Config.RunSlots).",
	}, func() float64 { return float64(m.slots.Load().stats().Running) })
	m.slotsWaiting = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "qlc_runs_waiting_for_slot", Help: "Runs queued for a run slot of this process, in weighted-fair order per tenant.",
	}, func() float64 { return float64(m.slots.Load().stats().Waiting) })
	for _, r := range stagework.RoleTable() {
		m.tokensByStage[toMsgStage(r.Stage)] = m.tokensStreamed.WithLabelValues(r.Name)
		// Every stage's restart series exists from the start at 0: a
		// series born at 1 has no increase in Prometheus, so the first
		// restart after a process starts would never show on a dashboard.
		m.stageRestarts.WithLabelValues(r.Name)
	}
	if reg != nil {
		reg.MustRegister(m.runsStarted, m.runsEnded, m.activeRuns, m.stageDuration, m.stageTTFT,
			m.tokensStreamed, m.stageRestarts, m.providerErrors, m.runCache, m.subscribers, m.droppedSubscribers, m.coordinators,
			m.mailboxDepth, m.mailboxDropped, m.mailboxQueued, m.transportMsgs, m.transportBytes, m.placements, m.tokenizerRequests, m.failovers, m.silenceProbes, m.silentCoordinators, m.tokenizerBatches, m.hedges, m.stepOffers,
			m.genaiDuration, m.genaiTTFT, m.genaiPerToken, m.genaiTokens,
			m.slotsInUse, m.slotsWaiting)
	}
	return m
}

// observe records what one logged event says. Called once per event, by the hub.
func (m *Metrics) observe(profile string, ev *messages.RunEvent) {
	switch k := ev.GetKind().(type) {
	case *messages.RunEvent_TokenDelta:
		if s := k.TokenDelta.GetStage(); s > 0 && int(s) < len(m.tokensByStage) {
			m.tokensByStage[s].Add(float64(k.TokenDelta.GetTokens()))
		}
	case *messages.RunEvent_StageCompleted:
		c := k.StageCompleted
		st := stageName(c.GetStage())
		m.stageDuration.WithLabelValues(st).Observe(c.GetDuration().AsDuration().Seconds())
		m.stageTTFT.WithLabelValues(st).Observe(c.GetTtft().AsDuration().Seconds())
		m.observeGenAI(st, c)
		m.stageDone(c)
	case *messages.RunEvent_StageRestarted:
		m.stageRestarts.WithLabelValues(stageName(k.StageRestarted.GetStage())).Inc()
	case *messages.RunEvent_RunCompleted:
		m.runEnded(profile, "completed")
	case *messages.RunEvent_RunFailed:
		m.runEnded(profile, "failed")
	case *messages.RunEvent_RunCancelled:
		m.runEnded(profile, "cancelled")
	}
}

// observeGenAI records a completed stage attempt in the GenAI metrics; a
// step QLC writes itself (a tally, provider "qlc": no duration) is not a
// model call.
func (m *Metrics) observeGenAI(stage string, c *messages.StageCompleted) {
	dur, ttft := c.GetDuration().AsDuration(), c.GetTtft().AsDuration()
	if dur <= 0 {
		return
	}
	model := m.modelLabels.of(c.GetModel())
	m.genaiDuration.WithLabelValues("chat", model, stage).Observe(dur.Seconds())
	if ttft > 0 {
		m.genaiTTFT.WithLabelValues(model, stage).Observe(ttft.Seconds())
	}
	u := c.GetUsage()
	if out := u.GetCompletionTokens(); out > 1 && dur > ttft {
		m.genaiPerToken.WithLabelValues(model, stage).Observe((dur - ttft).Seconds() / float64(out-1))
	}
	if u != nil {
		m.genaiTokens.WithLabelValues("input", model, stage).Observe(float64(u.GetPromptTokens()))
		m.genaiTokens.WithLabelValues("output", model, stage).Observe(float64(u.GetCompletionTokens()))
	}
}

// maxModelLabels bounds the gen_ai_request_model values a process reports
// (models come from the profiles, but a series per model must not grow
// without bound); later models are reported as "other".
const maxModelLabels = 64

// modelLabels admits model names as label values, up to maxModelLabels.
type modelLabels struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (l *modelLabels) of(model string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen[model] {
		return model
	}
	if l.seen == nil {
		l.seen = map[string]bool{}
	}
	if len(l.seen) >= maxModelLabels {
		return "other"
	}
	l.seen[model] = true
	return model
}

// firstToken tells Config.Slow a run's time to its first token delta.
func (m *Metrics) firstToken(since time.Time) {
	if m.slow != nil {
		m.slow.FirstToken(time.Since(since))
	}
}

// stageDone tells Config.Slow a completed stage's duration.
func (m *Metrics) stageDone(sc *messages.StageCompleted) {
	if m.slow != nil {
		m.slow.StageDone(sc.GetDuration().AsDuration())
	}
}

func (m *Metrics) runStarted(profile string) {
	m.runsStarted.WithLabelValues(profile).Inc()
	m.activeRuns.Inc()
}

// runNotStarted undoes runStarted for a run no node took.
func (m *Metrics) runNotStarted() { m.activeRuns.Dec() }

func (m *Metrics) runEnded(profile, outcome string) {
	m.runsEnded.WithLabelValues(profile, outcome).Inc()
	m.activeRuns.Dec()
}

// mailbox returns a mailbox producer for an actor kind: bounded by the
// kind's mailboxPolicy (mailbox.go; unbounded for a kind without one),
// counting drops in qlc_mailbox_dropped_total{kind}, and reporting depth to
// qlc_mailbox_depth{kind}: each mailbox counts posted minus taken messages,
// and observes the count each time its actor takes one; the kind's
// mailboxes together count theirs in qlc_mailbox_queued{kind}.
func (m *Metrics) mailbox(kind string) actor.MailboxProducer {
	h := m.mailboxDepth.WithLabelValues(kind)
	q := m.mailboxQueued.kind(kind)
	p, ok := mailboxPolicies[kind]
	if !ok {
		return func() actor.Mailbox { return actor.Unbounded(&depthMiddleware{h: h, queued: q})() }
	}
	dropped := m.mailboxDropped.WithLabelValues(kind)
	return func() actor.Mailbox { return newBoundedMailbox(p, dropped.Inc, &depthMiddleware{h: h, queued: q}) }
}

type depthMiddleware struct {
	h      prometheus.Observer
	queued *atomic.Int64 // shared by the kind's mailboxes
	depth  atomic.Int64
}

func (d *depthMiddleware) MailboxStarted() {}
func (d *depthMiddleware) MessagePosted(any) {
	d.depth.Add(1)
	d.queued.Add(1)
}
func (d *depthMiddleware) MessageReceived(any) {
	d.queued.Add(-1)
	d.h.Observe(float64(d.depth.Add(-1)))
}
func (d *depthMiddleware) MailboxEmpty() {}

// queuedByKind is qlc_mailbox_queued: a counter per actor kind, shared by
// its mailboxes (an atomic add per message, no label lookup), read at scrape.
type queuedByKind struct {
	desc *prometheus.Desc
	// mu guards kinds (written once per kind; the counters are atomic).
	mu    sync.Mutex
	kinds map[string]*atomic.Int64
}

func (q *queuedByKind) kind(k string) *atomic.Int64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	c := q.kinds[k]
	if c == nil {
		c = new(atomic.Int64)
		q.kinds[k] = c
	}
	return c
}

// Depth is the messages queued now in the kind's mailboxes.
func (q *queuedByKind) Depth(k string) int64 { return q.kind(k).Load() }

func (q *queuedByKind) Describe(ch chan<- *prometheus.Desc) { ch <- q.desc }

func (q *queuedByKind) Collect(ch chan<- prometheus.Metric) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, c := range q.kinds {
		ch <- prometheus.MustNewConstMetric(q.desc, prometheus.GaugeValue, float64(max(c.Load(), 0)), k)
	}
}

// transportStats counts the actor transport's gRPC messages and bytes.
type transportStats struct{ m *Metrics }

func (t transportStats) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (t transportStats) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (t transportStats) HandleConn(context.Context, stats.ConnStats) {}
func (t transportStats) HandleRPC(_ context.Context, s stats.RPCStats) {
	switch p := s.(type) {
	case *stats.InPayload:
		t.m.transportMsgs.WithLabelValues("received").Inc()
		t.m.transportBytes.WithLabelValues("received").Add(float64(p.WireLength))
	case *stats.OutPayload:
		t.m.transportMsgs.WithLabelValues("sent").Inc()
		t.m.transportBytes.WithLabelValues("sent").Add(float64(p.WireLength))
	}
}

// useRunSlots makes the run-slot gauges report s, and returns s.
func (m *Metrics) useRunSlots(s *runSlots) *runSlots {
	m.slots.Store(s)
	return s
}
