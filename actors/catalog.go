package actors

import (
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/qlc-project/qlc/stagework"
)

// The profiles and provider clients runs use start as Config.Stages and
// Config.Providers and may grow while the engine runs (Engine.AddProfiles:
// local model servers found on demand). They are held as an immutable
// snapshot behind an atomic pointer: a reader loads the snapshot once and
// reads it without a lock; a writer builds a new snapshot and swaps it in
// (copy on write). Additions only: a profile or provider in a snapshot is
// in every later one, unchanged, so a run that resolved its profile from
// an older snapshot (or a run in flight) sees the same thing.

// catalog is one snapshot. Never change it, nor what it points to.
type catalog struct {
	stages    *stagework.Config
	providers map[string]stagework.Provider
}

// catalogRef holds the current snapshot. Safe for concurrent use.
type catalogRef struct {
	cur atomic.Pointer[catalog]

	mu sync.Mutex // serialises writers (add); readers never take it
}

func newCatalogRef(stages *stagework.Config, providers map[string]stagework.Provider) *catalogRef {
	r := &catalogRef{}
	r.cur.Store(&catalog{stages: stages, providers: providers})
	return r
}

// stages is the current profile configuration. Never change it.
func (r *catalogRef) stages() *stagework.Config { return r.cur.Load().stages }

// provider is the client of the endpoint name.
func (r *catalogRef) provider(name string) (stagework.Provider, bool) {
	p, ok := r.cur.Load().providers[name]
	return p, ok
}

// providers is the current map of clients. Never change it.
func (r *catalogRef) providers() map[string]stagework.Provider { return r.cur.Load().providers }

// ErrCatalogChanged is returned by Engine.AddProfiles when the profiles
// changed since the caller read the base it extends: read Stages again.
var ErrCatalogChanged = errors.New("actors: the profiles changed meanwhile; read them again")

// ErrProfilesFixed is returned by Engine.AddProfiles on an engine whose
// runs execute on other nodes: those know only their own profile file.
var ErrProfilesFixed = errors.New("actors: runs execute on other nodes, which know only their own profile file: profiles cannot be added while running")

// AddProfiles makes next the profile configuration new runs use, with
// clients the clients of its new provider endpoints, at once and for
// every later run; runs already started are unaffected. base is the
// configuration next was built from (Stages, read by the caller): if the
// profiles changed since, nothing changes and the error is
// ErrCatalogChanged. next may only add: every provider endpoint and
// profile of base must be in next unchanged (same settings, same
// *Profile), and its default profile, prices and routing stay base's.
// next must be validated (stagework.Config.Validate) and is not changed
// afterwards by anyone. Every step of every profile must name an
// endpoint with a client. Only an engine that runs its runs in this
// process may add (ErrProfilesFixed otherwise).
func (e *Engine) AddProfiles(base, next *stagework.Config, clients map[string]stagework.Provider) error {
	if e.placer != nil || e.cfg.Remote != nil {
		return ErrProfilesFixed
	}
	e.cat.mu.Lock()
	defer e.cat.mu.Unlock()
	cur := e.cat.cur.Load()
	if cur.stages != base {
		return ErrCatalogChanged
	}
	if next.DefaultProfile != base.DefaultProfile {
		return fmt.Errorf("actors: AddProfiles: the default profile changed (%q, was %q)", next.DefaultProfile, base.DefaultProfile)
	}
	for name, pc := range base.Providers {
		if got, ok := next.Providers[name]; !ok || !sameProvider(got, pc) {
			return fmt.Errorf("actors: AddProfiles: provider %q removed or changed: only additions are allowed", name)
		}
	}
	for name, p := range base.Profiles {
		if next.Profiles[name] != p {
			return fmt.Errorf("actors: AddProfiles: profile %q removed or replaced: only additions are allowed", name)
		}
	}
	providers := maps.Clone(cur.providers)
	for name, c := range clients {
		if _, ok := base.Providers[name]; ok {
			return fmt.Errorf("actors: AddProfiles: provider %q has a client already", name)
		}
		if _, ok := next.Providers[name]; !ok {
			return fmt.Errorf("actors: AddProfiles: client for %q, which is not a provider endpoint", name)
		}
		providers[name] = c
	}
	check := e.cfg
	check.Stages, check.Providers = next, providers
	if err := check.checkClients(); err != nil {
		return err
	}
	for name, c := range clients {
		e.metrics.addProvider(e.cfg.Registerer, name, c)
	}
	e.cat.cur.Store(&catalog{stages: next, providers: providers})
	return nil
}

// sameProvider reports whether a and b are the same endpoint settings.
func sameProvider(a, b stagework.ProviderConfig) bool {
	return a.Kind == b.Kind && a.BaseURL == b.BaseURL && a.APIKeyEnv == b.APIKeyEnv && maps.Equal(a.Headers, b.Headers) &&
		a.Sim == b.Sim && a.Breaker == b.Breaker && a.RateLimit == b.RateLimit
}

// addProvider registers the metrics of a provider endpoint's client: its
// breaker's state (when it has one) and its failure series at 0 (a series
// born at 1 has no increase in Prometheus).
func (m *Metrics) addProvider(reg prometheus.Registerer, name string, p stagework.Provider) {
	if g, ok := p.(*stagework.Guarded); ok && reg != nil {
		_ = reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qlc_provider_breaker_state", Help: "Circuit breaker state per provider endpoint: 0 closed, 1 half open, 2 open.",
			ConstLabels: prometheus.Labels{"provider": name},
		}, func() float64 { return float64(g.State()) }))
	}
	for _, kind := range providerErrorKinds {
		m.providerErrors.WithLabelValues(name, kind)
	}
}
