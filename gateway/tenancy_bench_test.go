package gateway

import (
	"slices"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
)

// BenchmarkAdmission measures what admission adds to a run's start with
// limits on: the reservation's count (the tokenizer, locally), its row in
// the SQLite ledger, and the tenant limiter's answer (an actor in this
// process: a single gateway, or `make run`). Each admission is then
// released (its row dropped, the limiter settled). Figures: p50 and p99 in
// µs per admission.
func BenchmarkAdmission(b *testing.B) {
	g := startTenantGateway(b, nil)
	tn, _, _, err := g.Tenancy.CreateTenant("", "bench", store.Limits{
		RequestsPerMinute: 1 << 40, TokensPerMinute: 1 << 50, ConcurrentRuns: 1 << 20, TokenBudget: 1 << 55, BudgetPeriod: "month",
	})
	if err != nil {
		b.Fatal(err)
	}
	p := principal{tenant: tn, keyID: "bench"}
	s := g.Server
	warm := actors.RunRequest{Profile: "instant", Query: "warm up the tokenizer and the limiter"}
	a, e := s.admit(p, &warm)
	if e != nil {
		b.Fatal(e)
	}
	s.release(a)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		req := actors.RunRequest{Profile: "instant", Query: "Why is the sky blue? Explain Rayleigh scattering briefly."}
		t0 := time.Now()
		a, e := s.admit(p, &req)
		lat = append(lat, time.Since(t0))
		if e != nil {
			b.Fatal(e)
		}
		b.StopTimer()
		s.release(a)
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(f float64) float64 { return float64(lat[int(f*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.5), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
}
