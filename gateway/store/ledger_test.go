package store

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReservations(t *testing.T) {
	s := openTemp(t)
	rs := []Reservation{
		{RunID: "r3", TenantID: "t1", Profile: "fast", Tokens: 300, At: at(3)},
		{RunID: "r1", TenantID: "t1", Profile: "deep", Tokens: 100, At: at(1)},
		{RunID: "r2", TenantID: "t2", Profile: "", Tokens: 0, At: at(2)},
		{RunID: "r0", TenantID: "t1", Profile: "fast", Tokens: 50, At: at(3)}, // same At as r3: run id breaks the tie
	}
	for _, r := range rs {
		if err := s.Reserve(r); err != nil {
			t.Fatalf("Reserve(%s): %v", r.RunID, err)
		}
	}
	got, err := s.OpenReservations("t1")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Reservation{rs[1], rs[3], rs[0]}; !reflect.DeepEqual(got, want) {
		t.Errorf("OpenReservations(t1) =\n %+v\nwant\n %+v", got, want)
	}
	got, err = s.OpenReservations("")
	if err != nil {
		t.Fatal(err)
	}
	if want := []Reservation{rs[1], rs[2], rs[3], rs[0]}; !reflect.DeepEqual(got, want) {
		t.Errorf("OpenReservations(all) =\n %+v\nwant\n %+v", got, want)
	}

	// A run id is reserved at most once, even by another tenant.
	err = s.Reserve(Reservation{RunID: "r1", TenantID: "t9", Tokens: 1, At: at(9)})
	if !errors.Is(err, ErrExists) {
		t.Errorf("duplicate Reserve = %v, want ErrExists", err)
	}
	// Nor after it settled.
	if ok, err := s.RecordUsage(usageOf("r1", "t1", at(1), 80)); err != nil || !ok {
		t.Fatalf("RecordUsage(r1) = %v, %v", ok, err)
	}
	if err := s.Reserve(Reservation{RunID: "r1", TenantID: "t1", Tokens: 1, At: at(9)}); !errors.Is(err, ErrExists) {
		t.Errorf("Reserve of a settled run = %v, want ErrExists", err)
	}

	if err := s.DropReservation("r3"); err != nil {
		t.Fatal(err)
	}
	if err := s.DropReservation("r3"); err != nil {
		t.Errorf("dropping an absent reservation: %v", err)
	}
	got, _ = s.OpenReservations("t1")
	if want := []Reservation{rs[3]}; !reflect.DeepEqual(got, want) {
		t.Errorf("after settle and drop, OpenReservations(t1) = %+v, want %+v", got, want)
	}
	// A dropped run id may be reserved again (it was never admitted).
	if err := s.Reserve(rs[0]); err != nil {
		t.Errorf("Reserve after drop: %v", err)
	}

	for _, bad := range []Reservation{
		{TenantID: "t1", At: base},
		{RunID: "x", At: base},
		{RunID: "x", TenantID: "t1", Tokens: -1, At: base},
		{RunID: "x", TenantID: "t1"},
	} {
		if err := s.Reserve(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Reserve(%+v) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestUsageRoundTrip(t *testing.T) {
	s := openTemp(t)
	full := usageOf("run-full", "t1", at(0), 999)
	full.Stages = append(full.Stages, StageUsage{Stage: "review", Model: "m2", Provider: "p2",
		PromptTokens: 5, CompletionTokens: 6, CostUSD: 1.0 / 3, DurationMS: 7})
	full.CostUSD = 0.123456789
	nilStages := usageOf("run-nil", "t1", at(1), 0)
	nilStages.Stages, nilStages.Status, nilStages.CostUSD = nil, StatusFailed, 0
	emptyStages := usageOf("run-empty", "t2", at(2), 10)
	emptyStages.Stages, emptyStages.Status = []StageUsage{}, StatusCancelled
	abandoned := usageOf("run-abandoned", "t2", at(3), 10)
	abandoned.Status, abandoned.CostUSD = StatusAbandoned, 4321.5

	in := []Usage{full, nilStages, emptyStages, abandoned}
	for _, u := range in {
		if ok, err := s.RecordUsage(u); err != nil || !ok {
			t.Fatalf("RecordUsage(%s) = %v, %v", u.RunID, ok, err)
		}
	}
	got, err := s.Usage("", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, in) {
		t.Errorf("Usage() =\n %+v\nwant\n %+v", got, in)
	}
	if got[1].Stages != nil || got[2].Stages == nil {
		t.Errorf("nil/empty stages not preserved: %#v, %#v", got[1].Stages, got[2].Stages)
	}
}

// TestStepRowsNeedNoMigration: per-step rows (step, status) round-trip in
// the stages JSON column, and a row written before steps existed (no step,
// no status) still reads, with them empty.
func TestStepRowsNeedNoMigration(t *testing.T) {
	s := openTemp(t)
	u := usageOf("run-steps", "t1", at(0), 30)
	u.Stages = []StageUsage{
		{Step: "p1.1", Stage: "proposer", Model: "m1", Provider: "p", PromptTokens: 5, CompletionTokens: 6, CostUSD: 0.25, DurationMS: 7, Status: "completed"},
		{Step: "p1.2", Stage: "proposer", Model: "m2", Provider: "p", PromptTokens: 5, Status: "skipped"},
	}
	if _, err := s.RecordUsage(u); err != nil {
		t.Fatal(err)
	}
	old := usageOf("run-old", "t1", at(1), 30)
	old.Stages = nil
	if _, err := s.RecordUsage(old); err != nil {
		t.Fatal(err)
	}
	// As an earlier binary wrote it.
	if _, err := s.w.Exec(`UPDATE usage SET stages = ? WHERE run_id = 'run-old'`,
		`[{"stage":"generator","model":"g","provider":"sim","prompt_tokens":1,"completion_tokens":2,"cost_usd":0.5,"duration_ms":3}]`); err != nil {
		t.Fatal(err)
	}
	got, err := s.Usage("t1", time.Time{}, time.Time{}, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("Usage = %v, %v", got, err)
	}
	if !reflect.DeepEqual(got[0].Stages, u.Stages) {
		t.Errorf("step rows %+v, want %+v", got[0].Stages, u.Stages)
	}
	want := []StageUsage{{Stage: "generator", Model: "g", Provider: "sim", PromptTokens: 1, CompletionTokens: 2, CostUSD: 0.5, DurationMS: 3}}
	if !reflect.DeepEqual(got[1].Stages, want) {
		t.Errorf("an old row reads as %+v, want %+v", got[1].Stages, want)
	}
}

func TestUsageCostExact(t *testing.T) {
	s := openTemp(t)
	// Costs with up to nine decimals round-trip exactly, and a SQL sum over
	// many of them has no float drift.
	const n = 1000
	var floatSum float64
	for i := range n {
		u := usageOf(fmt.Sprintf("r%04d", i), "t1", at(time.Duration(i)), 1)
		u.CostUSD = 0.1 + float64(i%7)*0.000000001
		floatSum += u.CostUSD
		if _, err := s.RecordUsage(u); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Usage("t1", time.Time{}, time.Time{}, 0)
	if err != nil || len(got) != n {
		t.Fatalf("Usage = %d rows, %v", len(got), err)
	}
	for i, u := range got {
		if want := 0.1 + float64(i%7)*0.000000001; u.CostUSD != want {
			t.Fatalf("run %s cost = %.17g, want %.17g", u.RunID, u.CostUSD, want)
		}
	}
	var nano int64
	if err := s.r.QueryRow(`SELECT sum(cost_nusd) FROM usage`).Scan(&nano); err != nil {
		t.Fatal(err)
	}
	var wantNano int64
	for i := range n {
		wantNano += 100000000 + int64(i%7)
	}
	if nano != wantNano {
		t.Errorf("sum = %d nano-USD, want %d", nano, wantNano)
	}
	t.Logf("exact sum %.9f USD; naive float64 sum %.17g", fromCost(nano), floatSum)

	for _, c := range []float64{-0.01, math.NaN(), math.Inf(1), 1e12} {
		u := usageOf("bad", "t1", base, 1)
		u.CostUSD = c
		if _, err := s.RecordUsage(u); !errors.Is(err, ErrInvalid) {
			t.Errorf("cost %v: RecordUsage = %v, want ErrInvalid", c, err)
		}
	}
	// Finer fractions are rounded to the nearest nano-dollar, not rejected.
	for i, c := range []struct{ in, want float64 }{
		{4e-10, 0},
		{6e-10, 1e-9},
		{float64(10) * 0.000002, 2e-05}, // 1.9999999999999998e-05 in float64
		{1.0 / 3, 0.333333333},
	} {
		u := usageOf(fmt.Sprintf("round%d", i), "t-round", base, 1)
		u.CostUSD = c.in
		if _, err := s.RecordUsage(u); err != nil {
			t.Fatal(err)
		}
		got, err := s.Usage("t-round", time.Time{}, time.Time{}, 0)
		if err != nil || len(got) != i+1 || got[i].CostUSD != c.want {
			t.Errorf("cost %.17g stored as %+v (%v), want %.17g", c.in, got, err, c.want)
		}
	}
}

func TestRecordUsageIdempotent(t *testing.T) {
	s := openTemp(t)
	if err := s.Reserve(Reservation{RunID: "r1", TenantID: "t1", Tokens: 1000, At: at(0)}); err != nil {
		t.Fatal(err)
	}
	first := usageOf("r1", "t1", at(0), 420)
	ok, err := s.RecordUsage(first)
	if err != nil || !ok {
		t.Fatalf("first RecordUsage = %v, %v; want true", ok, err)
	}
	if open, _ := s.OpenReservations(""); len(open) != 0 {
		t.Errorf("reservation survived RecordUsage: %+v", open)
	}
	// A retry, even with different figures, inserts nothing.
	retry := usageOf("r1", "t1", at(0), 9999)
	retry.Status = StatusAbandoned
	for range 3 {
		ok, err = s.RecordUsage(retry)
		if err != nil || ok {
			t.Fatalf("repeated RecordUsage = %v, %v; want false, nil", ok, err)
		}
	}
	got, err := s.Usage("", time.Time{}, time.Time{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], first) {
		t.Errorf("Usage() = %+v, want only the first record", got)
	}
	// A run settled without a reservation (e.g. recorded after a drop) is fine.
	if ok, err := s.RecordUsage(usageOf("r2", "t1", at(1), 1)); err != nil || !ok {
		t.Errorf("RecordUsage without reservation = %v, %v", ok, err)
	}

	for _, bad := range []func(*Usage){
		func(u *Usage) { u.RunID = "" },
		func(u *Usage) { u.TenantID = "" },
		func(u *Usage) { u.Status = "done" },
		func(u *Usage) { u.TotalTokens = -1 },
		func(u *Usage) { u.EndedAt = time.Time{} },
		func(u *Usage) { u.AdmittedAt = time.Time{} },
		func(u *Usage) { u.Stages[0].CostUSD = math.NaN() },
	} {
		u := usageOf("r-bad", "t1", at(2), 1)
		bad(&u)
		if ok, err := s.RecordUsage(u); ok || !errors.Is(err, ErrInvalid) {
			t.Errorf("RecordUsage(%+v) = %v, %v; want ErrInvalid", u, ok, err)
		}
	}
}

func TestUsageQuery(t *testing.T) {
	s := openTemp(t)
	mk := func(run, tenant string, ended time.Duration) Usage {
		u := usageOf(run, tenant, at(0), 10)
		u.EndedAt = at(ended)
		return u
	}
	in := []Usage{
		mk("b", "t1", 10), mk("a", "t1", 10), // tie on EndedAt: run id orders
		mk("c", "t2", 5),
		mk("d", "t1", 20),
		mk("e", "t1", 30),
	}
	for _, u := range in {
		if _, err := s.RecordUsage(u); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(us []Usage) string {
		var out []string
		for _, u := range us {
			out = append(out, u.RunID)
		}
		return strings.Join(out, ",")
	}
	tests := []struct {
		tenant   string
		from, to time.Time
		limit    int
		want     string
	}{
		{"", time.Time{}, time.Time{}, 0, "c,a,b,d,e"},
		{"t1", time.Time{}, time.Time{}, 0, "a,b,d,e"},
		{"t2", time.Time{}, time.Time{}, 0, "c"},
		{"t3", time.Time{}, time.Time{}, 0, ""},
		{"t1", at(10), at(30), 0, "a,b,d"}, // from inclusive, to exclusive
		{"t1", at(11), at(31), 0, "d,e"},
		{"", at(5), at(20), 0, "c,a,b"},
		{"", time.Time{}, time.Time{}, 2, "c,a"},
		{"t1", at(10), time.Time{}, 3, "a,b,d"},
		{"", at(40), at(50), 0, ""},
	}
	for _, tc := range tests {
		got, err := s.Usage(tc.tenant, tc.from, tc.to, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if ids(got) != tc.want {
			t.Errorf("Usage(%q, %v, %v, %d) = %q, want %q", tc.tenant, tc.from, tc.to, tc.limit, ids(got), tc.want)
		}
	}
	if _, err := s.Usage("", time.Time{}, time.Time{}, -5); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative limit: %v", err)
	}
}

// ledgerRun is one admitted run in TestLedgerSince's reference model.
type ledgerRun struct {
	id      string
	tenant  string
	at      time.Duration
	tokens  int64 // reserved upper bound
	total   int64 // settled total
	settled bool
	dropped bool
}

func TestLedgerSince(t *testing.T) {
	s := openTemp(t)
	runs := []ledgerRun{
		{id: "a1", tenant: "A", at: 0, tokens: 1000, total: 400, settled: true},
		{id: "a2", tenant: "A", at: time.Minute, tokens: 1000, total: 650, settled: true},
		{id: "a3", tenant: "A", at: 2 * time.Minute, tokens: 2000},                         // open
		{id: "a4", tenant: "A", at: 2 * time.Minute, tokens: 500, total: 7, settled: true}, // same instant as a3
		{id: "a5", tenant: "A", at: 3*time.Minute + 1, tokens: 800},                        // open
		{id: "a6", tenant: "A", at: 3 * time.Minute, tokens: 300, dropped: true},           // denied: never counted
		{id: "b1", tenant: "B", at: time.Minute, tokens: 5000, total: 4000, settled: true},
		{id: "b2", tenant: "B", at: 3 * time.Minute, tokens: 9000},
	}
	for _, r := range runs {
		if err := s.Reserve(Reservation{RunID: r.id, TenantID: r.tenant, Tokens: r.tokens, At: at(r.at)}); err != nil {
			t.Fatal(err)
		}
		switch {
		case r.dropped:
			if err := s.DropReservation(r.id); err != nil {
				t.Fatal(err)
			}
		case r.settled:
			if _, err := s.RecordUsage(usageOf(r.id, r.tenant, at(r.at), r.total)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// reference computes the expected answer from the model.
	reference := func(tenant string, since, period time.Time) ([]LedgerEntry, int64) {
		var want []LedgerEntry
		var sum int64
		for _, r := range runs {
			if r.tenant != tenant || r.dropped {
				continue
			}
			t := at(r.at)
			if r.settled && (period.IsZero() || !t.Before(period)) {
				sum += r.total
			}
			if !since.IsZero() && t.Before(since) {
				continue
			}
			e := LedgerEntry{RunID: r.id, Tokens: r.tokens, At: t}
			if r.settled {
				e.Tokens, e.Settled = r.total, true
			}
			want = append(want, e)
		}
		sort.Slice(want, func(i, j int) bool {
			if !want[i].At.Equal(want[j].At) {
				return want[i].At.Before(want[j].At)
			}
			return want[i].RunID < want[j].RunID
		})
		return want, sum
	}
	tests := []struct {
		tenant        string
		since, period time.Time
		wantIDs       string // a readable cross-check of the reference
		wantSum       int64
	}{
		{"A", time.Time{}, time.Time{}, "a1,a2,a3,a4,a5", 400 + 650 + 7},
		{"A", at(time.Minute), time.Time{}, "a2,a3,a4,a5", 400 + 650 + 7},
		{"A", at(time.Minute + 1), at(time.Minute), "a3,a4,a5", 650 + 7},
		{"A", at(2 * time.Minute), at(time.Minute + 1), "a3,a4,a5", 7},
		{"A", at(3 * time.Minute), at(3 * time.Minute), "a5", 0},
		{"A", at(3*time.Minute + 2), time.Time{}, "", 400 + 650 + 7},
		{"B", time.Time{}, at(0), "b1,b2", 4000},
		{"C", time.Time{}, time.Time{}, "", 0},
	}
	for _, tc := range tests {
		got, sum, err := s.LedgerSince(tc.tenant, tc.since, tc.period)
		if err != nil {
			t.Fatal(err)
		}
		want, wantSum := reference(tc.tenant, tc.since, tc.period)
		var ids []string
		for _, e := range want {
			ids = append(ids, e.RunID)
		}
		if strings.Join(ids, ",") != tc.wantIDs || wantSum != tc.wantSum {
			t.Fatalf("reference model disagrees with the table: %v %d", ids, wantSum)
		}
		if !reflect.DeepEqual(got, want) || sum != wantSum {
			t.Errorf("LedgerSince(%s, %v, %v) =\n %+v, %d\nwant\n %+v, %d", tc.tenant, tc.since, tc.period, got, sum, want, wantSum)
		}
	}
	if _, _, err := s.LedgerSince("", time.Time{}, time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("LedgerSince(\"\") = %v, want ErrInvalid", err)
	}
}

// TestSettleIsAtomic checks that RecordUsage's insert and reservation delete
// are one transaction: a reader taking ledger snapshots while runs settle
// (from several callers, in shared transactions) sees each reserved run
// exactly once, either open or settled, never both or neither.
func TestSettleIsAtomic(t *testing.T) {
	s := openTemp(t)
	const n = 200
	for i := range n {
		if err := s.Reserve(Reservation{RunID: fmt.Sprintf("r%03d", i), TenantID: "t1", Tokens: 100, At: at(time.Duration(i))}); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	var snapshots, sawSettled int
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			entries, _, err := s.LedgerSince("t1", time.Time{}, time.Time{})
			if err != nil {
				t.Error(err)
				return
			}
			snapshots++
			seen := make(map[string]int, n)
			for _, e := range entries {
				seen[e.RunID]++
				if e.Settled {
					sawSettled++
				}
			}
			if len(entries) != n || len(seen) != n {
				t.Errorf("snapshot %d has %d entries over %d runs, want %d each", snapshots, len(entries), len(seen), n)
				return
			}
		}
	}()
	// 8 callers at once, so records share group transactions
	// (groupcommit.go): each record still drops its own reservation.
	const callers = 8
	var settlers sync.WaitGroup
	for c := range callers {
		settlers.Go(func() {
			for i := c; i < n; i += callers {
				if _, err := s.RecordUsage(usageOf(fmt.Sprintf("r%03d", i), "t1", at(time.Duration(i)), 50)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	settlers.Wait()
	close(done)
	wg.Wait()
	entries, sum, err := s.LedgerSince("t1", time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n || sum != 50*n || slices.ContainsFunc(entries, func(e LedgerEntry) bool { return !e.Settled }) {
		t.Errorf("final ledger: %d entries, sum %d, want %d settled and %d", len(entries), sum, n, 50*n)
	}
	t.Logf("%d snapshots taken during settlement, %d settled entries seen", snapshots, sawSettled)
}
