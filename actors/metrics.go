package actors

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/messages"
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
	subscribers        prometheus.Gauge
	droppedSubscribers prometheus.Counter
	coordinators       prometheus.Counter // coordinators started on this process

	tokensByStage [5]prometheus.Counter // resolved once: the per-token path does no label lookup
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
		subscribers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qlc_subscribers", Help: "Open event subscriptions (SSE, WebSocket, OpenAI streams).",
		}),
		droppedSubscribers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_subscribers_dropped_total", Help: "Subscribers cut off because they fell too far behind.",
		}),
		coordinators: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qlc_coordinators_started_total", Help: "Run coordinators started on this process (a node hosts them for gateways).",
		}),
	}
	for s := messages.Stage_STAGE_GENERATOR; s <= messages.Stage_STAGE_CURATOR; s++ {
		m.tokensByStage[s] = m.tokensStreamed.WithLabelValues(stageName(s))
	}
	if reg != nil {
		reg.MustRegister(m.runsStarted, m.runsEnded, m.activeRuns, m.stageDuration, m.stageTTFT,
			m.tokensStreamed, m.stageRestarts, m.providerErrors, m.subscribers, m.droppedSubscribers, m.coordinators)
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
		st := stageName(k.StageCompleted.GetStage())
		m.stageDuration.WithLabelValues(st).Observe(k.StageCompleted.GetDuration().AsDuration().Seconds())
		m.stageTTFT.WithLabelValues(st).Observe(k.StageCompleted.GetTtft().AsDuration().Seconds())
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
