package main

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkAdmissionCluster measures what admission (the run's reservation
// in the gateway's ledger, then the tenant limiter's answer) costs a POST
// /v1/runs when the limiter lives on a node process (a memberlist cluster:
// the gateway asks it over the actor transport), with the limiter in the
// gateway's own process (-local) as the reference in the same run. The runs
// admitted go on meanwhile: "quick" ones stream their tokens as fast as they
// come (the node's events share the transport with the limiter's answers),
// "slow" ones one token every 20 ms. Figures: the admission's mean and its
// p50/p99 upper bounds from the gateway's qlc_admission_seconds histogram
// (bucket bounds), and the whole POST's p50/p99 as the client sees it. The
// tenant's limits never refuse.
func BenchmarkAdmissionCluster(b *testing.B) {
	b.Run("limiter=node", func(b *testing.B) {
		c := newTCluster(b, 1, 1)
		for _, profile := range []string{"quick", "slow"} {
			b.Run("runs="+profile, func(b *testing.B) { benchAdmission(b, c.gws[0].base, profile) })
		}
	})
	b.Run("limiter=in-process", func(b *testing.B) {
		_, base, _ := launchGateway(b, testKey, "-local", "-profiles", writeProfiles(b), "-log-level", "warn")
		for _, profile := range []string{"quick", "slow"} {
			b.Run("runs="+profile, func(b *testing.B) { benchAdmission(b, base, profile) })
		}
	})
}

// benchTenants numbers the benchmark's tenants (one per run of benchAdmission).
var benchTenants int

func benchAdmission(b *testing.B, base, profile string) {
	benchTenants++
	tn := createTenant(b, base, fmt.Sprintf("bench-%d", benchTenants), fmt.Sprintf("Admission bench %d", benchTenants),
		map[string]any{"requests_per_minute": 1_000_000, "token_budget": int64(1) << 50, "concurrent_runs": 0})
	var ids []string
	defer func() {
		// Cancel what still runs, so the processes stop at once.
		for _, id := range ids {
			_, _, _, _ = apiCall("DELETE", base+"/v1/runs/"+id, tn.key, nil)
		}
	}()
	post := func() time.Duration {
		t0 := time.Now()
		p := postAs(base, tn.key, profile)
		d := time.Since(t0)
		if p.status != http.StatusCreated {
			b.Fatalf("POST: %d %s %v", p.status, p.code, p.err)
		}
		ids = append(ids, p.id)
		return d
	}
	// The first admission starts the limiter (it reads the ledgers) and
	// opens the connections: not measured.
	for range 5 {
		post()
	}
	h0 := admissionHistogram(b, base)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		lat = append(lat, post())
	}
	b.StopTimer()
	h := admissionHistogram(b, base).minus(h0)
	if h.count != float64(b.N) {
		b.Fatalf("the admission histogram counted %v admissions for %d runs", h.count, b.N)
	}
	b.ReportMetric(h.sum/h.count*1e6, "admit-mean-µs")
	b.ReportMetric(h.upperBound(0.5)*1e6, "admit-p50-ub-µs")
	b.ReportMetric(h.upperBound(0.99)*1e6, "admit-p99-ub-µs")
	b.ReportMetric(pct(lat, 0.5), "post-p50-µs")
	b.ReportMetric(pct(lat, 0.99), "post-p99-µs")
}

// histogram is a Prometheus histogram as scraped: cumulative bucket counts
// by upper bound (ascending, +Inf last), sum and count.
type histogram struct {
	le, cum    []float64
	sum, count float64
}

// admissionHistogram scrapes the gateway's qlc_admission_seconds.
func admissionHistogram(tb testing.TB, base string) histogram {
	tb.Helper()
	const name = "qlc_admission_seconds"
	var h histogram
	for _, l := range strings.Split(scrape(tb, base+"/metrics"), "\n") {
		series, val, ok := strings.Cut(l, " ")
		if !ok || !strings.HasPrefix(series, name) {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			tb.Fatalf("metrics: %q: %v", l, err)
		}
		switch {
		case series == name+"_sum":
			h.sum = v
		case series == name+"_count":
			h.count = v
		case strings.HasPrefix(series, name+`_bucket{le="`):
			le, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(series, name+`_bucket{le="`), `"}`), 64)
			if err != nil {
				tb.Fatalf("metrics: %q: %v", l, err)
			}
			h.le, h.cum = append(h.le, le), append(h.cum, v)
		}
	}
	if len(h.le) == 0 || !slices.IsSorted(h.le) {
		tb.Fatalf("the gateway exports no usable %s histogram (bounds %v)", name, h.le)
	}
	return h
}

// minus is what was observed between scrape o and h.
func (h histogram) minus(o histogram) histogram {
	d := histogram{le: h.le, cum: slices.Clone(h.cum), sum: h.sum - o.sum, count: h.count - o.count}
	for i := range d.cum {
		d.cum[i] -= o.cum[i]
	}
	return d
}

// upperBound is the upper bound of the bucket holding quantile q (+Inf if
// that is the last bucket).
func (h histogram) upperBound(q float64) float64 {
	rank := q * h.count
	for i, c := range h.cum {
		if c >= rank {
			return h.le[i]
		}
	}
	return math.Inf(1)
}
