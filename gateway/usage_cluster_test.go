package gateway

import (
	"reflect"
	"testing"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
)

func TestMergeRecords(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(1_800_000_000+int64(s), 0).UTC() }
	a := []store.Usage{{RunID: "run_b", EndedAt: at(2)}, {RunID: "run_d", EndedAt: at(4)}}
	b := []store.Usage{{RunID: "run_a", EndedAt: at(2)}, {RunID: "run_c", EndedAt: at(3)}, {RunID: "run_b", EndedAt: at(2)}}
	ids := func(l []store.Usage) (out []string) {
		for _, u := range l {
			out = append(out, u.RunID)
		}
		return out
	}
	if got := ids(mergeRecords([][]store.Usage{a, b}, 0)); !reflect.DeepEqual(got, []string{"run_a", "run_b", "run_c", "run_d"}) {
		t.Fatalf("merged %v: want by end time then id, run_b once", got)
	}
	if got := ids(mergeRecords([][]store.Usage{a, b}, 2)); !reflect.DeepEqual(got, []string{"run_a", "run_b"}) {
		t.Fatalf("limit 2: %v", got)
	}
	if got := mergeRecords(nil, 10); got != nil {
		t.Fatalf("nothing: %v", got)
	}
}

func TestMergeSeries(t *testing.T) {
	h := func(n int) time.Time { return time.Date(2026, 12, 7, n, 0, 0, 0, time.UTC) }
	a := []store.SeriesRow{{Start: h(1), Group: "x", Runs: 1, TotalTokens: 10, CostUSD: 1}, {Start: h(2), Group: "x", Runs: 2, TotalTokens: 20, CostUSD: 2}}
	b := []store.SeriesRow{{Start: h(1), Group: "y", Runs: 1, TotalTokens: 5, CostUSD: 3}, {Start: h(1).In(time.FixedZone("x", 3600)), Group: "x", Runs: 3, PromptTokens: 7, CompletionTokens: 1, TotalTokens: 8, CostUSD: 0.5}}
	got, truncated := mergeSeries([][]store.SeriesRow{a, b}, false, 0)
	want := []store.SeriesRow{
		{Start: h(1), Group: "y", Runs: 1, TotalTokens: 5, CostUSD: 3},
		{Start: h(1), Group: "x", Runs: 4, PromptTokens: 7, CompletionTokens: 1, TotalTokens: 18, CostUSD: 1.5},
		{Start: h(2), Group: "x", Runs: 2, TotalTokens: 20, CostUSD: 2},
	}
	if truncated || !reflect.DeepEqual(got, want) {
		t.Fatalf("merged %+v (truncated %v), want %+v", got, truncated, want)
	}
	if got, truncated := mergeSeries([][]store.SeriesRow{a, b}, false, 2); len(got) != 2 || !truncated {
		t.Fatalf("limit 2: %d rows, truncated %v", len(got), truncated)
	}
	if _, truncated := mergeSeries([][]store.SeriesRow{a}, true, 0); !truncated {
		t.Fatal("a ledger's truncation is lost")
	}
}

// A query travels to the other gateways as it was checked here.
func TestUsageQueryRoundTrip(t *testing.T) {
	from, to := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	q := usageQuery{tenant: "t1", from: from, to: to, limit: 50, series: true,
		sq: store.SeriesQuery{TenantID: "t1", From: from, To: to, Bucket: store.BucketHour, GroupBy: store.GroupModel, Limit: 50}}
	back := usageQueryOf(q.message())
	if !reflect.DeepEqual(back, q) {
		t.Fatalf("round trip: %+v, want %+v", back, q)
	}
	if in := (usageQuery{tenant: "t", limit: 7, inFlight: true}); !usageQueryOf(in.message()).inFlight {
		t.Fatal("in_flight lost on the way")
	}
	if m := (usageQuery{tenant: "t", from: from, to: to, limit: 3}).message(); m.Series || m.BucketSeconds != 0 || m.GroupBy != "" || m.InFlight {
		t.Fatalf("records query as %v", m)
	}
}
