package actors

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qlc-project/qlc/messages"
)

// fakeClock is a settable clock for Telemetry's windows.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func within(got, want, rel float64) bool { return math.Abs(got-want) <= rel*want }
func ms(d time.Duration) float64         { return float64(d) / float64(time.Millisecond) }
func exactQuantile(xs []float64, q float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[int(math.Ceil(q*float64(len(s))))-1]
}

// Attempts' TTFTs, ITLs, tokens, cost and failures come out of a snapshot
// and a merge as recorded: quantiles within the sketch's 1 % of the exact
// ones, counts and sums exact, failures by kind and HTTP status.
func TestTelemetryRecordsAttempts(t *testing.T) {
	tel := NewTelemetry(time.Minute)
	var ttfts []float64
	for i := 1; i <= 200; i++ {
		ttft := time.Duration(i) * time.Millisecond // 1..200 ms
		ttfts = append(ttfts, ms(ttft))
		var itl ITLRecorder
		at := time.Unix(0, 0)
		itl.Chunk(at, 1)                          // the first token: no gap
		itl.Chunk(at.Add(10*time.Millisecond), 1) // 10 ms, one token
		itl.Chunk(at.Add(40*time.Millisecond), 3) // 30 ms for 3 tokens: 10 ms three times
		tel.AttemptDone("sim", "m1", ttft, ttft+time.Second, itl.Encode(), 100, 5, 0.25)
	}
	tel.AttemptFailed("sim", "m1", "rate_limited", 429)
	tel.AttemptFailed("sim", "m1", "timeout", 0)
	tel.AttemptDone("other", "m2", 0, 0, nil, 1, 0, 0)

	views := MergeModelStats([]*messages.ModelStatsReply{{Models: tel.Snapshot()}})
	if len(views) != 2 || views[0].Endpoint != "other" || views[1].Model != "m1" {
		t.Fatalf("views: %+v", views)
	}
	v := views[1]
	if v.Attempts != 202 || v.Succeeded != 200 || v.Failed != 2 || v.Errors["rate_limited"] != 1 || v.Errors["timeout"] != 1 || v.HTTPStatus["429"] != 1 {
		t.Fatalf("counts: %+v", v)
	}
	if !within(v.ErrorRate, 2.0/202, 1e-9) || !within(v.TimeoutRate, 1.0/202, 1e-9) {
		t.Fatalf("rates: %v %v", v.ErrorRate, v.TimeoutRate)
	}
	if v.InputTokens != 20000 || v.OutputTokens != 1000 || !within(v.CostUSD, 50, 1e-9) {
		t.Fatalf("tokens/cost: %+v", v)
	}
	// 1000 output tokens over 200 × 1 s of streaming after the first token.
	if v.TokensPerSecond == nil || !within(*v.TokensPerSecond, 5, 1e-9) {
		t.Fatalf("tokens/s: %v", v.TokensPerSecond)
	}
	if v.TTFTms.Count != 200 {
		t.Fatalf("ttft count %d", v.TTFTms.Count)
	}
	for _, c := range []struct {
		got *float64
		q   float64
	}{{v.TTFTms.P50, 0.5}, {v.TTFTms.P90, 0.9}, {v.TTFTms.P99, 0.99}, {v.TTFTms.Max, 1}} {
		if want := exactQuantile(ttfts, c.q); c.got == nil || !within(*c.got, want, 0.011) {
			t.Fatalf("ttft q%v = %v, want %v ±1 %%", c.q, c.got, want)
		}
	}
	// Four tokens after the first per attempt, each 10 ms apart.
	if v.ITLms.Count != 800 || v.ITLms.P50 == nil || !within(*v.ITLms.P50, 10, 0.011) || !within(*v.ITLms.Max, 10, 0.011) {
		t.Fatalf("itl: %+v p50 %v", v.ITLms, v.ITLms.P50)
	}
	if views[0].TTFTms.Count != 0 || views[0].TTFTms.P50 != nil || views[0].TokensPerSecond != nil {
		t.Fatalf("a model without samples has quantiles: %+v", views[0])
	}
	// Hedging reads the same numbers.
	if got := tel.TTFTQuantile("sim", "m1", 0.95, 8, time.Hour); !within(ms(got), exactQuantile(ttfts, 0.95), 0.011) {
		t.Fatalf("TTFTQuantile p95 = %v", got)
	}
	if got := tel.TTFTQuantile("sim", "unknown", 0.95, 8, time.Hour); got != time.Hour {
		t.Fatalf("TTFTQuantile without samples = %v, want the default", got)
	}
}

// Two nodes' replies merge: counts add up and the quantiles are those of
// the union of the samples (a sketch merge, not an average of quantiles).
func TestMergeModelStatsAcrossNodes(t *testing.T) {
	fast, slow := NewTelemetry(time.Minute), NewTelemetry(time.Minute)
	var all []float64
	for i := 0; i < 90; i++ {
		fast.AttemptDone("sim", "m", 10*time.Millisecond, time.Second, nil, 1, 2, 0)
		all = append(all, 10)
	}
	for i := 0; i < 10; i++ {
		slow.AttemptDone("sim", "m", time.Second, 2*time.Second, nil, 1, 2, 0)
		all = append(all, 1000)
	}
	views := MergeModelStats([]*messages.ModelStatsReply{{Models: fast.Snapshot()}, {Models: slow.Snapshot()}})
	if len(views) != 1 {
		t.Fatalf("views: %+v", views)
	}
	v := views[0]
	if v.Nodes != 2 || v.Attempts != 100 || v.TTFTms.Count != 100 {
		t.Fatalf("merged: %+v", v)
	}
	if !within(*v.TTFTms.P50, exactQuantile(all, 0.5), 0.011) || !within(*v.TTFTms.P95, exactQuantile(all, 0.95), 0.011) {
		t.Fatalf("merged quantiles p50 %v p95 %v", *v.TTFTms.P50, *v.TTFTms.P95)
	}
}

// The window slides: statistics older than two windows are gone, those of
// the previous window are still read.
func TestTelemetryWindowSlides(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	tel := NewTelemetry(time.Minute)
	tel.now = clk.now
	tel.AttemptFailed("sim", "old", "server", 500)
	clk.add(61 * time.Second)
	tel.AttemptFailed("sim", "new", "server", 500)
	if got := tel.Snapshot(); len(got) != 2 {
		t.Fatalf("after one window: %d models, want the previous window's and the current", len(got))
	}
	clk.add(61 * time.Second)
	got := tel.Snapshot()
	if len(got) != 1 || got[0].Model != "new" {
		t.Fatalf("after two windows: %v, want only the newer", got)
	}
	clk.add(3 * time.Minute)
	if got := tel.Snapshot(); len(got) != 0 {
		t.Fatalf("after an idle spell: %v, want nothing", got)
	}
}

// Beyond maxTelemetryModels pairs in a window, new pairs are not recorded
// (the memory is bounded); known pairs still are.
func TestTelemetryBoundsModels(t *testing.T) {
	tel := NewTelemetry(time.Minute)
	for i := 0; i < maxTelemetryModels+10; i++ {
		tel.AttemptFailed("sim", string(rune('a'+i%26))+string(rune(i)), "server", 0)
	}
	if n := len(tel.Snapshot()); n != maxTelemetryModels {
		t.Fatalf("%d models kept, want %d", n, maxTelemetryModels)
	}
}

// Bytes from a peer that are not a sketch are left out of the merge; the
// counts still add up, and nothing panics (see also FuzzMergeModelStats).
func TestMergeModelStatsBadSketch(t *testing.T) {
	views := MergeModelStats([]*messages.ModelStatsReply{{Models: []*messages.ModelStats{{
		Endpoint: "sim", Model: "m", Attempts: 3, Succeeded: 3, Ttft: []byte{0xff, 0x01, 0x02}, Itl: []byte("garbage"),
	}}}})
	if len(views) != 1 || views[0].Attempts != 3 {
		t.Fatalf("views: %+v", views)
	}
}

func FuzzMergeModelStats(f *testing.F) {
	tel := NewTelemetry(time.Minute)
	tel.AttemptDone("sim", "m", 5*time.Millisecond, time.Second, nil, 1, 2, 0)
	good := tel.Snapshot()[0].Ttft
	f.Add(good)
	f.Add([]byte{})
	f.Add([]byte{0x02, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		views := MergeModelStats([]*messages.ModelStatsReply{{Models: []*messages.ModelStats{{Endpoint: "e", Model: "m", Attempts: 1, Ttft: b, Itl: b}}}})
		if len(views) != 1 || views[0].Attempts != 1 {
			t.Fatalf("views: %+v", views)
		}
	})
}

// Failure and cache series exist at 0 from the start: a series born at 1
// has no increase in Prometheus, so the first failure after a process
// starts would never show on a dashboard.
func TestFailureSeriesStartAtZero(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	for _, kind := range providerErrorKinds {
		if got := testutil.ToFloat64(e.metrics.providerErrors.WithLabelValues("sim", kind)); got != 0 {
			t.Fatalf("%s: %v", kind, got)
		}
	}
	// sim's 8 kinds among every endpoint's; the cache's 4 results.
	if n := testutil.CollectAndCount(e.metrics.providerErrors); n < len(providerErrorKinds)*len(e.cfg.Providers) {
		t.Fatalf("%d provider error series before any failure, want %d", n, len(providerErrorKinds)*len(e.cfg.Providers))
	}
	if n := testutil.CollectAndCount(e.metrics.runCache); n != 4 {
		t.Fatalf("%d cache series, want 4", n)
	}
}
