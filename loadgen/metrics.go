package loadgen

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/qlc-project/qlc/client"
)

// scrape is one read of a Prometheus endpoint.
type scrape map[string]*dto.MetricFamily

// maxMetricsBytes bounds one scrape.
const maxMetricsBytes = 32 << 20

func scrapeMetrics(ctx context.Context, hc *http.Client, url, key string) (scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
}

// parseMetrics reads Prometheus' text format.
func parseMetrics(r io.Reader) (scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("loadgen: metrics: %w", err)
	}
	return scrape(fams), nil
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// histogram sums the sum and count of a histogram's series that have the
// labels.
func (s scrape) histogram(name string, labels map[string]string) (sum float64, count uint64) {
	f := s[name]
	if f == nil {
		return 0, 0
	}
	for _, m := range f.GetMetric() {
		if h := m.GetHistogram(); h != nil && hasLabels(m, labels) {
			sum += h.GetSampleSum()
			count += h.GetSampleCount()
		}
	}
	return sum, count
}

// value sums a counter's or gauge's series that have the labels; ok is
// false when there is no such series.
func (s scrape) value(name string, labels map[string]string) (v float64, ok bool) {
	f := s[name]
	if f == nil {
		return 0, false
	}
	for _, m := range f.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		switch {
		case m.GetCounter() != nil:
			v, ok = v+m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			v, ok = v+m.GetGauge().GetValue(), true
		case m.GetUntyped() != nil:
			v, ok = v+m.GetUntyped().GetValue(), true
		}
	}
	return v, ok
}

// histMean is the mean of what a histogram recorded between two scrapes
// (in ms) and how many values that was.
func histMean(before, after scrape, name string, labels map[string]string) (float64, uint64) {
	s1, c1 := before.histogram(name, labels)
	s2, c2 := after.histogram(name, labels)
	if c2 <= c1 {
		return 0, 0
	}
	return (s2 - s1) / float64(c2-c1) * 1000, c2 - c1
}

// Agreement compares what the load measured with what the server measured
// of the same runs: its Prometheus histograms (means between a scrape
// before and one after the load) and its usage ledger (per run). The
// server counts from admission and the load from its scheduled send, and
// the stage histograms leave out what happens between stages, so the load's
// figures are a little larger; they should agree within a few per cent
// when nothing else runs on the server.
type Agreement struct {
	Source string         `json:"source"`
	Rows   []AgreementRow `json:"rows"`
	// MaxAbsDiffPct is the largest |difference| over the latency rows.
	MaxAbsDiffPct float64  `json:"max_abs_diff_pct"`
	Notes         []string `json:"notes,omitempty"`
}

// AgreementRow is one figure both sides have.
type AgreementRow struct {
	What    string  `json:"what"`
	Client  float64 `json:"client"`
	Server  float64 `json:"server"`
	DiffPct float64 `json:"diff_pct"` // (client − server) / server × 100
	Unit    string  `json:"unit"`
	// Server's source: a metric, or the usage ledger.
	Source string `json:"source"`
	N      int64  `json:"n"`
}

var chainStages = []string{"generator", "refiner", "validator", "curator"}

func (r *runner) agreement(ctx context.Context, before scrape, rep *Report) *Agreement {
	ag := &Agreement{Source: r.cfg.ServerMetrics}
	after, err := scrapeMetrics(ctx, r.cfg.HTTPClient, r.cfg.ServerMetrics, r.cfg.MetricsKey)
	if err != nil {
		ag.Notes = append(ag.Notes, "second scrape failed: "+err.Error())
		return ag
	}
	row := func(what, unit, src string, cl, sv float64, n int64, latency bool) {
		d := 0.0
		if sv != 0 {
			d = (cl - sv) / sv * 100
		}
		ag.Rows = append(ag.Rows, AgreementRow{What: what, Client: cl, Server: sv, DiffPct: d, Unit: unit, Source: src, N: n})
		if latency {
			ag.MaxAbsDiffPct = max(ag.MaxAbsDiffPct, math.Abs(d))
		}
	}
	// Counts: runs ended and tokens streamed.
	if r.cfg.Target != TargetChat {
		c1, _ := before.value("qlc_runs_total", map[string]string{"outcome": "completed"})
		c2, ok := after.value("qlc_runs_total", map[string]string{"outcome": "completed"})
		if ok {
			row("runs completed", "runs", "qlc_runs_total{outcome=completed}", float64(rep.Outcomes[OutcomeOK]), c2-c1, int64(rep.Outcomes[OutcomeOK]), false)
		}
		t1, _ := before.value("qlc_tokens_streamed_total", nil)
		t2, ok := after.value("qlc_tokens_streamed_total", nil)
		if ok {
			row("tokens streamed", "tokens", "qlc_tokens_streamed_total", float64(rep.Tokens), t2-t1, rep.Tokens, false)
		}
	}
	// A chain's stages run one after another: its first token is the
	// generator's, its answer's first token comes after three stages and
	// the curator's TTFT, and its run is the four stages end to end.
	// Admission (the ledger's reservation and the tenant limiter) comes
	// before any stage: the gateway's qlc_admission_seconds.
	adm, _ := histMean(before, after, "qlc_admission_seconds", nil)
	admSrc := "qlc_admission_seconds + "
	genTTFT, n := histMean(before, after, "qlc_stage_ttft_seconds", map[string]string{"stage": "generator"})
	ok := rep.Outcomes[OutcomeOK]
	if n > 0 && int(n) >= ok && ok > 0 {
		row("TTFT, first token of any step (mean)", "ms", admSrc+"qlc_stage_ttft_seconds{stage=generator}", rep.Latency["ttft_any"].Mean, adm+genTTFT, rep.Latency["ttft_any"].Count, true)
		sum, answer := adm, adm
		complete := true
		for _, st := range chainStages {
			m, c := histMean(before, after, "qlc_stage_duration_seconds", map[string]string{"stage": st})
			if c == 0 {
				complete = false
			}
			sum += m
			if st != "curator" {
				answer += m
			}
		}
		curTTFT, c := histMean(before, after, "qlc_stage_ttft_seconds", map[string]string{"stage": "curator"})
		if complete && c > 0 {
			row("TTFT, answer (mean)", "ms", admSrc+"Σ qlc_stage_duration_seconds{generator,refiner,validator} + qlc_stage_ttft_seconds{curator}", rep.Latency["ttft"].Mean, answer+curTTFT, rep.Latency["ttft"].Count, true)
			row("end to end (mean)", "ms", admSrc+"Σ qlc_stage_duration_seconds over the four stages", rep.Latency["e2e"].Mean, sum, rep.Latency["e2e"].Count, true)
		}
	} else {
		ag.Notes = append(ag.Notes, "no chain runs in the stage histograms (moa, council and vote steps overlap): compared with the usage ledger only")
	}
	r.ledgerRows(ctx, rep, row, &ag.Notes)
	return ag
}

// ledgerRows compares each completed run's TTFT and duration with the
// server's usage ledger (GET /v1/usage: ttft_ms and duration_ms, from
// admission, whole milliseconds).
func (r *runner) ledgerRows(ctx context.Context, rep *Report, row func(string, string, string, float64, float64, int64, bool), notes *[]string) {
	mine := map[string]*Result{}
	r.mu.Lock()
	for i := range r.agg.results {
		if res := &r.agg.results[i]; res.Outcome == OutcomeOK && res.RunID != "" {
			mine[res.RunID] = res
		}
	}
	r.mu.Unlock()
	if len(mine) == 0 {
		*notes = append(*notes, "no completed runs with ids kept: no ledger comparison")
		return
	}
	u, err := r.c.Usage(ctx, client.UsageQuery{From: rep.Started.Add(-time.Minute).Format(time.RFC3339), Limit: 10000})
	if err != nil {
		*notes = append(*notes, "usage ledger: "+err.Error())
		return
	}
	var cT, sT, cD, sD []float64
	for _, rec := range u.Data {
		res := mine[rec.RunID]
		if res == nil || rec.Status != "completed" {
			continue
		}
		cT, sT = append(cT, res.TTFTAnyMs), append(sT, float64(rec.TTFTMs))
		cD, sD = append(cD, res.E2EMs), append(sD, float64(rec.DurationMs))
	}
	if len(cT) == 0 {
		*notes = append(*notes, "usage ledger: none of the load's runs found")
		return
	}
	n := int64(len(cT))
	for _, q := range []struct {
		name string
		f    func([]float64) float64
	}{{"mean", mean}, {"p50", quantile(0.5)}, {"p90", quantile(0.9)}, {"p99", quantile(0.99)}} {
		row("TTFT any step ("+q.name+")", "ms", "usage ledger ttft_ms", q.f(cT), q.f(sT), n, true)
	}
	for _, q := range []struct {
		name string
		f    func([]float64) float64
	}{{"mean", mean}, {"p50", quantile(0.5)}, {"p90", quantile(0.9)}, {"p99", quantile(0.99)}} {
		row("end to end ("+q.name+")", "ms", "usage ledger duration_ms", q.f(cD), q.f(sD), n, true)
	}
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func quantile(q float64) func([]float64) float64 {
	return func(v []float64) float64 {
		s := append([]float64(nil), v...)
		sort.Float64s(s)
		i := int(math.Ceil(q*float64(len(s)))) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
}

func (ag *Agreement) write(w io.Writer) {
	fmt.Fprintf(w, "agreement with the server (%s): largest latency difference %.2f %%\n", ag.Source, ag.MaxAbsDiffPct)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  figure\tqlc-load\tserver\tdiff\tserver's source")
	for _, r := range ag.Rows {
		fmt.Fprintf(tw, "  %s\t%.1f %s\t%.1f %s\t%+.2f %%\t%s\n", r.What, r.Client, r.Unit, r.Server, r.Unit, r.DiffPct, r.Source)
	}
	tw.Flush()
	for _, n := range ag.Notes {
		fmt.Fprintln(w, "  note:", n)
	}
}

// NodeSeries is one node's runs in flight over the load, from its
// /metrics (qlc_run_slots_in_use, else qlc_active_runs).
type NodeSeries struct {
	Name   string      `json:"name"`
	URL    string      `json:"url"`
	Points []NodePoint `json:"points"`
}

// NodePoint is one sample.
type NodePoint struct {
	T    float64 `json:"t"`
	Runs float64 `json:"runs"`
}

// nodeSampler scrapes the nodes' metrics; owned by the runner's ticker.
type nodeSampler struct {
	hc    *http.Client
	names []string
	urls  map[string]string
	pts   map[string][]NodePoint
}

func newNodeSampler(nodes map[string]string, hc *http.Client) *nodeSampler {
	return &nodeSampler{hc: hc, names: sortedKeys(nodes), urls: nodes, pts: map[string][]NodePoint{}}
}

func (n *nodeSampler) sample(ctx context.Context, at time.Duration) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, name := range n.names {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, 900*time.Millisecond)
			defer cancel()
			s, err := scrapeMetrics(sctx, n.hc, n.urls[name], "")
			if err != nil {
				return
			}
			v, ok := s.value("qlc_run_slots_in_use", nil)
			if !ok {
				v, ok = s.value("qlc_active_runs", nil)
			}
			if ok {
				mu.Lock()
				n.pts[name] = append(n.pts[name], NodePoint{T: at.Seconds(), Runs: v})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

func (n *nodeSampler) series() []NodeSeries {
	var out []NodeSeries
	for _, name := range n.names {
		out = append(out, NodeSeries{Name: name, URL: n.urls[name], Points: n.pts[name]})
	}
	return out
}
