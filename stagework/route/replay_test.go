package route

import (
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// replayResult is the labelled set replayed through the shipped
// profiles' declared performance and prices (stagework.EstimateRun with
// Config.DeclaredPerf): what routing costs against always one profile.
type replayResult struct {
	questions int
	// autoUSD, balancedUSD, oracleUSD: total estimated cost when each
	// question runs its routed profile, the balanced profile, and the
	// profile of its labelled tier (perfect routing).
	autoUSD, balancedUSD, oracleUSD float64
	// deepUSD is the cost when every question runs the deep profile.
	deepUSD float64
	// autoTime, balancedTime: mean estimated run duration.
	autoTime, balancedTime time.Duration
	// perTier counts the questions routed to each tier.
	perTier map[string]int
	// under counts questions routed to a cheaper tier than their label.
	under int
	// routing is the tier -> profile map replayed.
	routing map[string]string
}

func replay(t testing.TB, cfg *stagework.Config, qs []labelled) replayResult {
	t.Helper()
	estimate := func(profile, query string, hist []stagework.Message) stagework.RunEstimate {
		p, err := cfg.Profile(profile)
		if err != nil {
			t.Fatal(err)
		}
		n := utf8.RuneCountInString(query) // as actors.Engine.Estimate counts
		for _, m := range hist {
			n += utf8.RuneCountInString(m.Content)
		}
		return stagework.EstimateRun(p, (n+3)/4, cfg.DeclaredPerf, cfg.Price)
	}
	rank := map[string]int{Simple: 0, Standard: 1, Complex: 2}
	r := replayResult{questions: len(qs), perTier: map[string]int{}, routing: cfg.Routing}
	var autoTime, balTime time.Duration
	for _, q := range qs {
		h := history(q.History)
		d := Classify(q.Query, h)
		routed, ok := cfg.RoutedProfile(d.Tier)
		if !ok {
			t.Fatalf("no profile for tier %s", d.Tier)
		}
		oracle, _ := cfg.RoutedProfile(q.Tier)
		a, b, o := estimate(routed, q.Query, h), estimate("balanced", q.Query, h), estimate(oracle, q.Query, h)
		r.deepUSD += estimate("deep", q.Query, h).CostUSD
		r.autoUSD += a.CostUSD
		r.balancedUSD += b.CostUSD
		r.oracleUSD += o.CostUSD
		autoTime += a.Duration
		balTime += b.Duration
		r.perTier[d.Tier]++
		if rank[d.Tier] < rank[q.Tier] {
			r.under++
		}
	}
	r.autoTime = autoTime / time.Duration(len(qs))
	r.balancedTime = balTime / time.Duration(len(qs))
	return r
}

func (r replayResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d questions, routing simple: %s, standard: %s, complex: %s; shipped profiles' declared prices\n", r.questions,
		r.routing[Simple], r.routing[Standard], r.routing[Complex])
	fmt.Fprintf(&b, "  auto:            $%.4f total, mean run %v\n", r.autoUSD, r.autoTime.Round(10*time.Millisecond))
	fmt.Fprintf(&b, "  always balanced: $%.4f total, mean run %v\n", r.balancedUSD, r.balancedTime.Round(10*time.Millisecond))
	fmt.Fprintf(&b, "  always deep:     $%.4f total\n", r.deepUSD)
	fmt.Fprintf(&b, "  oracle (labels): $%.4f total\n", r.oracleUSD)
	fmt.Fprintf(&b, "  auto / balanced = %.3f; auto / oracle = %.3f\n", r.autoUSD/r.balancedUSD, r.autoUSD/r.oracleUSD)
	for _, tier := range stagework.Tiers {
		fmt.Fprintf(&b, "  routed %-8s %3d (%.1f%%)\n", tier, r.perTier[tier], 100*float64(r.perTier[tier])/float64(r.questions))
	}
	fmt.Fprintf(&b, "  routed below their label: %d (%.1f%%)", r.under, 100*float64(r.under)/float64(r.questions))
	return b.String()
}

// TestAutoRoutingCost replays the labelled set (the figure in
// BENCHMARKS.md, "Issue 14: auto routing"); run with -v to see it. The
// shipped routing spends what always-balanced spends, moving money from
// simple questions to complex ones; a saving routing (complex questions
// on balanced too) shows what auto saves when cost is the aim.
func TestAutoRoutingCost(t *testing.T) {
	qs := loadLabelled(t)
	shipped := stagework.DefaultConfig()
	r := replay(t, shipped, qs)
	t.Log("\n" + r.String())
	if sum := r.perTier[Simple] + r.perTier[Standard] + r.perTier[Complex]; sum != r.questions {
		t.Errorf("tier shares sum to %d of %d", sum, r.questions)
	}
	if !(r.autoUSD > 0 && r.autoUSD < r.deepUSD) {
		t.Errorf("shipped routing costs $%.4f, always-deep $%.4f", r.autoUSD, r.deepUSD)
	}
	saving := stagework.DefaultConfig()
	saving.Routing = map[string]string{Simple: "fast", Standard: "balanced", Complex: "balanced"}
	s := replay(t, saving, qs)
	t.Log("\n" + s.String())
	// Every simple-routed question moves from balanced to fast, the rest
	// stay: the saving is the simple share of balanced's cost, less fast's.
	if !(s.autoUSD < 0.8*s.balancedUSD) {
		t.Errorf("saving routing costs $%.4f, always-balanced $%.4f: want < 80%%", s.autoUSD, s.balancedUSD)
	}
}

// BenchmarkAutoRoutingCost reports the replay's figures as metrics (and
// the time of one replay of the whole set: classification plus estimate).
func BenchmarkAutoRoutingCost(b *testing.B) {
	cfg, qs := stagework.DefaultConfig(), loadLabelled(b)
	var r replayResult
	for b.Loop() {
		r = replay(b, cfg, qs)
	}
	b.ReportMetric(r.autoUSD, "auto-usd")
	b.ReportMetric(r.balancedUSD, "balanced-usd")
	b.ReportMetric(r.autoUSD/r.balancedUSD, "auto/balanced")
	for _, tier := range stagework.Tiers {
		b.ReportMetric(100*float64(r.perTier[tier])/float64(r.questions), "%"+tier)
	}
}
