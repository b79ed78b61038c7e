package gateway

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/gateway/store"
)

// maxTenantLabels bounds the tenant label's values: the first tenants seen
// get their own series, later ones share "_other" (a host with thousands
// of tenants must not blow up /metrics).
const maxTenantLabels = 200

// gatewayMetrics are the gateway's own metrics, per tenant where it helps.
type gatewayMetrics struct {
	runs         *prometheus.CounterVec // tenant, status
	tokens       *prometheus.CounterVec // tenant, kind (prompt, completion)
	cost         *prometheus.CounterVec // tenant
	refused      *prometheus.CounterVec // tenant, limit
	authFailures *prometheus.CounterVec // code
	admission    prometheus.Histogram
	// refusalSeconds: refusals of a run (429, 503) from the handler's
	// entry to the answer written, by where (door: refuse.go's fast
	// path; handler: the normal path) and status.
	refusalSeconds *prometheus.HistogramVec

	mu     sync.Mutex
	labels map[string]bool
}

func newGatewayMetrics(reg prometheus.Registerer) *gatewayMetrics {
	m := &gatewayMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qlc_tenant_runs_total",
			Help: "Runs accounted in the usage ledger, by tenant (the first 200; later ones as _other) and final status."}, []string{"tenant", "status"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qlc_tenant_tokens_total",
			Help: "Tokens billed, by tenant and kind (prompt, completion)."}, []string{"tenant", "kind"}),
		cost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qlc_tenant_cost_usd_total",
			Help: "Cost billed in US dollars (from the profiles' price table), by tenant."}, []string{"tenant"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qlc_tenant_refused_total",
			Help: "Runs refused at admission, by tenant and the limit that refused them."}, []string{"tenant", "limit"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "qlc_auth_failures_total",
			Help: "Requests refused for a missing or invalid API key, by error code."}, []string{"code"}),
		admission: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "qlc_admission_seconds",
			Help:    "Time to admit a run: reservation in the ledger and the tenant limiter's answer.",
			Buckets: []float64{50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 1}}),
		refusalSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "qlc_refusal_seconds",
			Help:    "Refusals of a run (429, 503) from the gateway handler's entry to the answer written, by where (door: before the body is read; handler) and status.",
			Buckets: []float64{10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 2.5}}, []string{"at", "status"}),
		labels: map[string]bool{},
	}
	// Series that exist from the start at 0: one born at 1 has no increase
	// in Prometheus, so the first failure after a start would not show.
	for _, code := range []string{"missing_api_key", "invalid_api_key"} {
		m.authFailures.WithLabelValues(code)
	}
	if reg != nil {
		m.runs = register(reg, m.runs)
		m.tokens = register(reg, m.tokens)
		m.cost = register(reg, m.cost)
		m.refused = register(reg, m.refused)
		m.authFailures = register(reg, m.authFailures)
		m.admission = register(reg, m.admission)
		m.refusalSeconds = register(reg, m.refusalSeconds)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name (two gateways on one registry share their series).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
	}
	return c
}

// tenant is the bounded label for tenant id.
func (m *gatewayMetrics) tenant(id string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.labels[id] {
		return id
	}
	if len(m.labels) >= maxTenantLabels {
		return "_other"
	}
	m.labels[id] = true
	return id
}

func (m *gatewayMetrics) observeRun(u store.Usage) {
	t := m.tenant(u.TenantID)
	m.runs.WithLabelValues(t, u.Status).Inc()
	m.tokens.WithLabelValues(t, "prompt").Add(float64(u.PromptTokens))
	m.tokens.WithLabelValues(t, "completion").Add(float64(u.CompletionTokens))
	m.cost.WithLabelValues(t).Add(u.CostUSD)
}
