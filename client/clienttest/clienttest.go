// Package clienttest starts a real QLC gateway in-process (an actors.Engine
// on the simulator, tenancy on, a dev tenant and an admin key) behind an
// httptest server, for end-to-end tests of API clients such as package
// client and cmd/qlc. It is imported only by tests: the client itself never
// links a server package.
package clienttest

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/stagework"
)

// Profiles are the test gateway's profiles: "instant" (a zero-latency
// chain, the default), "moa" (three proposers and an aggregator, fast),
// "slow" (a chain slow enough to cancel or to cut mid-stream) and
// "slowmoa" (parallel steps that take a second or so).
const Profiles = `
default_profile: instant
providers:
  sim-instant: {kind: sim, sim: {output_tokens: 60}}
  sim-quick:   {kind: sim, sim: {itl: 1ms, output_tokens: 40}}
  sim-slow:    {kind: sim, sim: {ttft: 5ms, itl: 4ms, output_tokens: 200}}
  sim-glacial: {kind: sim, sim: {ttft: 10ms, itl: 20ms, output_tokens: 4000}}
profiles:
  instant:
    description: zero latency
    provider: sim-instant
    stages: {generator: {model: sim-small}, refiner: {model: sim-small}, validator: {model: sim-small}, curator: {model: sim-small}}
  moa:
    description: three proposers and an aggregator
    strategy: moa
    provider: sim-quick
    layers: 1
    proposers:
      - {model: sim-medium}
      - {model: sim-small}
      - {provider: sim-instant, model: sim-large}
    aggregator: {model: sim-large}
  slowmoa:
    description: parallel steps of a second or so
    strategy: moa
    provider: sim-slow
    layers: 1
    proposers:
      - {model: sim-medium}
      - {model: sim-small}
    aggregator: {model: sim-large}
  slow:
    description: slow enough to cancel
    provider: sim-glacial
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
prices:
  sim-small:  {input: 0.15, output: 0.60}
  sim-medium: {input: 1.00, output: 4.00}
  sim-large:  {input: 3.00, output: 15.00}
`

// Gateway is a running test gateway.
type Gateway struct {
	// URL is its API's address.
	URL string
	// TenantKey is the dev tenant's key, AdminKey an admin key.
	TenantKey, AdminKey string
	// Tenant is the dev tenant's id.
	Tenant string
	// Server is the httptest server (CloseClientConnections cuts every
	// open stream).
	Server *httptest.Server
}

// Start starts a gateway with Profiles (or profiles, when not "") and
// stops it when the test ends.
func Start(t testing.TB, profiles string) *Gateway {
	t.Helper()
	if profiles == "" {
		profiles = Profiles
	}
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	providers, err := actors.BuildProviders(stages, logger)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ecfg := actors.DefaultConfig()
	ecfg.Logger, ecfg.Stages, ecfg.Providers, ecfg.Registerer = logger, stages, providers, reg
	ecfg.Retry = stagework.RetryPolicy{AttemptsPerModel: 2, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	engine, err := actors.NewEngine(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "qlc.db"))
	if err != nil {
		t.Fatal(err)
	}
	tn, err := gateway.NewTenancy(st, logger)
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := tn.EnsureDevKeys(filepath.Join(dir, "dev-keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	gcfg := gateway.DefaultConfig()
	gcfg.Logger, gcfg.Gatherer, gcfg.Registerer = logger, reg, reg
	gcfg.Engine, gcfg.Tenancy, gcfg.DevKeys = engine, tn, &dk
	gw, err := gateway.New(gcfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		engine.Shutdown(ctx)
		if err := gw.Close(ctx); err != nil {
			t.Logf("gateway close: %v", err)
		}
		srv.CloseClientConnections()
		srv.Close()
		st.Close()
	})
	return &Gateway{URL: srv.URL, TenantKey: dk.TenantKey, AdminKey: dk.AdminKey, Tenant: dk.Tenant, Server: srv}
}
