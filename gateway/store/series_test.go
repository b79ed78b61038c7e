package store

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// seriesUsage is a settled run of tenant on profile ending at end, with one
// step per model given (each 10 prompt + 20 completion tokens at 1 ¢).
func seriesUsage(id, tenant, profile string, end time.Time, models ...string) Usage {
	u := Usage{RunID: id, TenantID: tenant, Profile: profile, Status: StatusCompleted, AdmittedAt: end.Add(-time.Second), EndedAt: end}
	for _, m := range models {
		u.Stages = append(u.Stages, StageUsage{Step: m, Stage: "generator", Model: m, PromptTokens: 10, CompletionTokens: 20, CostUSD: 0.01})
		u.PromptTokens += 10
		u.CompletionTokens += 20
		u.CostUSD += 0.01
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	return u
}

func TestUsageSeriesBucketsAndGroups(t *testing.T) {
	s := openTemp(t)
	day := time.Date(2026, 3, 14, 0, 0, 0, 0, time.UTC)
	for _, u := range []Usage{
		seriesUsage("r1", "acme", "fast", day.Add(10*time.Minute), "g", "c"),
		seriesUsage("r2", "acme", "deep", day.Add(50*time.Minute), "g", "g", "c"), // g twice: one run
		seriesUsage("r3", "beta", "fast", day.Add(2*time.Hour+time.Minute), "c"),
		seriesUsage("r4", "beta", "fast", day.Add(26*time.Hour), "g", "c", "x"),
		seriesUsage("r5", "acme", "fast", day.Add(-time.Minute), "g"), // before from
	} {
		if _, err := s.RecordUsage(u); err != nil {
			t.Fatal(err)
		}
	}
	from, to := day, day.Add(48*time.Hour)

	t.Run("hour by tenant", func(t *testing.T) {
		rows, trunc, err := s.UsageSeries(SeriesQuery{From: from, To: to, Bucket: BucketHour, GroupBy: GroupTenant})
		if err != nil || trunc {
			t.Fatalf("UsageSeries: %v truncated=%v", err, trunc)
		}
		want := []SeriesRow{
			{Start: day, Group: "acme", Runs: 2, PromptTokens: 50, CompletionTokens: 100, TotalTokens: 150, CostUSD: 0.05},
			{Start: day.Add(2 * time.Hour), Group: "beta", Runs: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 0.01},
			{Start: day.Add(26 * time.Hour), Group: "beta", Runs: 1, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("rows =\n %+v\nwant\n %+v", rows, want)
		}
	})
	t.Run("day by profile", func(t *testing.T) {
		rows, _, err := s.UsageSeries(SeriesQuery{From: from, To: to, Bucket: BucketDay, GroupBy: GroupProfile})
		if err != nil {
			t.Fatal(err)
		}
		// Within a bucket: highest cost first.
		want := []SeriesRow{
			{Start: day, Group: "deep", Runs: 1, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
			{Start: day, Group: "fast", Runs: 2, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
			{Start: day.Add(24 * time.Hour), Group: "fast", Runs: 1, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("rows =\n %+v\nwant\n %+v", rows, want)
		}
	})
	t.Run("day by model", func(t *testing.T) {
		rows, _, err := s.UsageSeries(SeriesQuery{From: from, To: to, Bucket: BucketDay, GroupBy: GroupModel})
		if err != nil {
			t.Fatal(err)
		}
		// Day 1: g in r1 once and r2 twice (2 runs, 3 steps); c in r1, r2, r3.
		want := []SeriesRow{
			{Start: day, Group: "g", Runs: 2, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
			{Start: day, Group: "c", Runs: 3, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
			{Start: day.Add(24 * time.Hour), Group: "c", Runs: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 0.01},
			{Start: day.Add(24 * time.Hour), Group: "g", Runs: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 0.01},
			{Start: day.Add(24 * time.Hour), Group: "x", Runs: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 0.01},
		}
		// Ties on cost and tokens sort by group name; day 1's g and c tie.
		want[0], want[1] = want[1], want[0]
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("rows =\n %+v\nwant\n %+v", rows, want)
		}
	})
	t.Run("top tenants by cost", func(t *testing.T) {
		rows, trunc, err := s.UsageSeries(SeriesQuery{From: from, To: to, GroupBy: GroupTenant, Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		want := []SeriesRow{{Group: "acme", Runs: 2, PromptTokens: 50, CompletionTokens: 100, TotalTokens: 150, CostUSD: 0.05}}
		if !reflect.DeepEqual(rows, want) || !trunc {
			t.Errorf("rows = %+v truncated=%v, want %+v truncated", rows, trunc, want)
		}
	})
	t.Run("one tenant, no groups", func(t *testing.T) {
		rows, _, err := s.UsageSeries(SeriesQuery{TenantID: "beta", From: from, To: to, Bucket: BucketDay})
		if err != nil {
			t.Fatal(err)
		}
		want := []SeriesRow{
			{Start: day, Runs: 1, PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30, CostUSD: 0.01},
			{Start: day.Add(24 * time.Hour), Runs: 1, PromptTokens: 30, CompletionTokens: 60, TotalTokens: 90, CostUSD: 0.03},
		}
		if !reflect.DeepEqual(rows, want) {
			t.Errorf("rows =\n %+v\nwant\n %+v", rows, want)
		}
	})
	t.Run("empty range", func(t *testing.T) {
		rows, trunc, err := s.UsageSeries(SeriesQuery{From: to, To: to.Add(time.Hour), Bucket: BucketHour, GroupBy: GroupModel})
		if err != nil || len(rows) != 0 || trunc {
			t.Errorf("rows = %+v, %v, %v; want none", rows, trunc, err)
		}
	})
}

func TestUsageSeriesRejects(t *testing.T) {
	s := openTemp(t)
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for name, q := range map[string]SeriesQuery{
		"bad group":       {From: from, To: from.Add(time.Hour), GroupBy: "run"},
		"bad bucket":      {From: from, To: from.Add(time.Hour), Bucket: time.Minute},
		"no from":         {To: from, Bucket: BucketHour},
		"to before from":  {From: from, To: from.Add(-time.Hour), Bucket: BucketDay},
		"too many hours":  {From: from, To: from.Add((MaxBuckets + 1) * time.Hour), Bucket: BucketHour},
		"negative limit":  {From: from, To: from.Add(time.Hour), GroupBy: GroupTenant, Limit: -1},
		"too many days":   {From: from, To: from.Add((MaxBuckets + 1) * BucketDay), Bucket: BucketDay},
		"unaligned extra": {From: from.Add(time.Minute), To: from.Add(MaxBuckets*time.Hour + time.Second), Bucket: BucketHour},
	} {
		if _, _, err := s.UsageSeries(q); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
	// Exactly MaxBuckets aligned buckets is allowed.
	if _, _, err := s.UsageSeries(SeriesQuery{From: from, To: from.Add(MaxBuckets * time.Hour), Bucket: BucketHour}); err != nil {
		t.Errorf("MaxBuckets hours: %v", err)
	}
}

func TestBuckets(t *testing.T) {
	h := time.Date(2026, 1, 1, 5, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		from, to time.Time
		want     int64
	}{
		{h, h.Add(time.Hour), 1},
		{h, h.Add(time.Hour + 1), 2},
		{h.Add(59 * time.Minute), h.Add(61 * time.Minute), 2},
		{h, h, 0},
		{h, h.Add(-1), 0},
	} {
		if got := Buckets(c.from, c.to, BucketHour); got != c.want {
			t.Errorf("Buckets(%v, %v) = %d, want %d", c.from, c.to, got, c.want)
		}
	}
}

func TestAuditFind(t *testing.T) {
	s := openTemp(t)
	entries := []AuditEntry{
		{At: at(1 * time.Second), Actor: "kA", Action: "tenant.create", Target: "acme", Detail: `{"name":"Acme"}`},
		{At: at(2 * time.Second), Actor: "kA", Action: "key.create", Target: "k1", Detail: `{"tenant":"acme"}`},
		{At: at(3 * time.Second), Actor: "kB", Action: "tenant.update", Target: "beta", Detail: `{}`},
		{At: at(4 * time.Second), Actor: "kB", Action: "key.revoke", Target: "k1", Detail: `{"tenant":"acme"}`},
		{At: at(5 * time.Second), Actor: "kA", Action: "key_x.odd", Target: "z", Detail: ``},
	}
	for _, e := range entries {
		if err := s.Audit(e); err != nil {
			t.Fatal(err)
		}
	}
	seqs := func(q AuditQuery) []int64 {
		t.Helper()
		log, err := s.AuditFind(q)
		if err != nil {
			t.Fatalf("AuditFind(%+v): %v", q, err)
		}
		out := []int64{}
		for _, e := range log {
			out = append(out, e.Seq)
		}
		return out
	}
	for name, c := range map[string]struct {
		q    AuditQuery
		want []int64
	}{
		"all":            {AuditQuery{}, []int64{1, 2, 3, 4, 5}},
		"actor":          {AuditQuery{Actor: "kB"}, []int64{3, 4}},
		"action":         {AuditQuery{Action: "key.create"}, []int64{2}},
		"action prefix":  {AuditQuery{Action: "key."}, []int64{2, 4}},
		"target":         {AuditQuery{Target: "k1"}, []int64{2, 4}},
		"tenant":         {AuditQuery{Tenant: "acme"}, []int64{1, 2, 4}},
		"tenant+action":  {AuditQuery{Tenant: "acme", Action: "key.revoke"}, []int64{4}},
		"newest first":   {AuditQuery{NewestFirst: true, Limit: 2}, []int64{5, 4}},
		"time range":     {AuditQuery{From: at(2 * time.Second), To: at(4 * time.Second)}, []int64{2, 3}},
		"nothing":        {AuditQuery{Actor: "nobody"}, []int64{}},
		"prefix literal": {AuditQuery{Action: "key%."}, []int64{}},
	} {
		if got := seqs(c.q); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: seqs %v, want %v", name, got, c.want)
		}
	}
	if _, err := s.AuditFind(AuditQuery{Limit: -1}); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative limit: %v", err)
	}
}
