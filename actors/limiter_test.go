package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// fakeLedger is an in-memory ledger a test engine serves to its limiters.
type fakeLedger struct {
	mu      sync.Mutex
	state   *messages.LedgerState
	queries atomic.Int64
}

func (f *fakeLedger) answer(*messages.LedgerQuery) *messages.LedgerState {
	f.queries.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state == nil {
		return &messages.LedgerState{}
	}
	return f.state
}

func newLimiterEngine(t *testing.T) (*Engine, *fakeLedger) {
	t.Helper()
	e, _ := newTestEngine(t, nil)
	l := &fakeLedger{}
	if err := e.Services().ServeLedger(l.answer); err != nil {
		t.Fatal(err)
	}
	return e, l
}

func admit(t *testing.T, e *Engine, m *messages.Admit) *messages.AdmitReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := e.Limiter().Admit(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLimiterEnforcesEachLimit(t *testing.T) {
	cases := []struct {
		name   string
		limits *messages.TenantLimits
		tokens int64
		grants int // admissions before the first refusal
	}{
		{"requests_per_minute", &messages.TenantLimits{RequestsPerMinute: 3}, 10, 3},
		{"tokens_per_minute", &messages.TenantLimits{TokensPerMinute: 100}, 30, 3},
		{"concurrent_runs", &messages.TenantLimits{ConcurrentRuns: 2}, 10, 2},
		{"token_budget", &messages.TenantLimits{TokenBudget: 95, BudgetPeriod: "day"}, 30, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _ := newLimiterEngine(t)
			tenant := "t-" + c.name
			for i := 0; ; i++ {
				r := admit(t, e, &messages.Admit{Tenant: tenant, RunId: fmt.Sprint("run", i), Limits: c.limits, Tokens: c.tokens,
					PeriodStartUnixMs: 1, PeriodEndUnixMs: time.Now().Add(time.Hour).UnixMilli()})
				if r.Ok {
					if i >= c.grants {
						t.Fatalf("admission %d granted; the limit allows %d", i+1, c.grants)
					}
					continue
				}
				if i != c.grants {
					t.Fatalf("refused at admission %d (%s: %s); want at %d", i+1, r.Limit, r.Message, c.grants+1)
				}
				if r.Limit != c.name || r.RetryAfterMs <= 0 || r.Message == "" {
					t.Fatalf("refusal = %+v; want limit %s with a retry time and a message", r, c.name)
				}
				return
			}
		})
	}
}

func TestLimiterSettlesToTheActualCount(t *testing.T) {
	e, _ := newLimiterEngine(t)
	lim := &messages.TenantLimits{TokenBudget: 100, ConcurrentRuns: 1}
	ctx := context.Background()
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "r1", Limits: lim, Tokens: 90}); !r.Ok {
		t.Fatalf("first run refused: %s", r.Message)
	}
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "r2", Limits: lim, Tokens: 20}); r.Ok || r.Limit != "concurrent_runs" {
		t.Fatalf("second run while the first runs: %+v; want concurrent_runs", r)
	}
	// The run used 30 of the 90 it reserved: 70 are left.
	if err := e.Limiter().Settle(ctx, "a", "r1", 30); err != nil {
		t.Fatal(err)
	}
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "r3", Limits: lim, Tokens: 70}); !r.Ok {
		t.Fatalf("a run reserving exactly what is left was refused: %s", r.Message)
	}
	if err := e.Limiter().Settle(ctx, "a", "r3", 70); err != nil {
		t.Fatal(err)
	}
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "r4", Limits: lim, Tokens: 1}); r.Ok || r.Limit != "token_budget" {
		t.Fatalf("the budget is used up but a run was admitted: %+v", r)
	}
	// Tenants are independent.
	if r := admit(t, e, &messages.Admit{Tenant: "b", RunId: "r5", Limits: lim, Tokens: 100}); !r.Ok {
		t.Fatalf("tenant b refused because of tenant a: %s", r.Message)
	}
}

func TestLimiterRebuildsFromTheLedger(t *testing.T) {
	e, ledger := newLimiterEngine(t)
	now := time.Now()
	ledger.state = &messages.LedgerState{
		PeriodTokens: 500,
		Open:         []*messages.LedgerEntry{{RunId: "open1", Tokens: 300, AtUnixMs: now.UnixMilli()}},
		Recent: []*messages.LedgerEntry{
			{RunId: "open1", Tokens: 300, AtUnixMs: now.UnixMilli()},
			{RunId: "done1", Tokens: 200, AtUnixMs: now.Add(-10 * time.Second).UnixMilli(), Settled: true},
		},
	}
	lim := &messages.TenantLimits{TokenBudget: 1000, TokensPerMinute: 10000, RequestsPerMinute: 3}
	// 500 settled + 300 reserved: 200 are left in the budget.
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "x", Limits: lim, Tokens: 201, PeriodStartUnixMs: 7}); r.Ok || r.Limit != "token_budget" {
		t.Fatalf("admitted past the ledger's budget: %+v", r)
	}
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "y", Limits: lim, Tokens: 200, PeriodStartUnixMs: 7}); !r.Ok {
		t.Fatalf("refused within the ledger's budget: %s", r.Message)
	}
	// Two runs in the ledger's last minute and one here: the fourth is over 3/min.
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "z", Limits: lim, Tokens: 0, PeriodStartUnixMs: 7}); r.Ok || r.Limit != "requests_per_minute" {
		t.Fatalf("requests per minute ignored the ledger: %+v", r)
	}
	if n := ledger.queries.Load(); n != 1 {
		t.Fatalf("the ledger was asked %d times; want once (then the limiter keeps count)", n)
	}
	// A new view of the limiter hosts (ownership may have moved) rebuilds.
	ledger.mu.Lock()
	ledger.state = &messages.LedgerState{}
	ledger.mu.Unlock()
	if r := admit(t, e, &messages.Admit{Tenant: "a", RunId: "w", Limits: lim, Tokens: 1000, PeriodStartUnixMs: 7, View: "v2"}); !r.Ok {
		t.Fatalf("after the rebuild from an empty ledger: %s", r.Message)
	}
	if n := ledger.queries.Load(); n != 2 {
		t.Fatalf("ledger queries = %d after a view change; want 2", n)
	}
}

// TestLimiterNeverOverrunsUnderARace sends many concurrent admissions; the
// reservations granted never exceed the budget.
func TestLimiterNeverOverrunsUnderARace(t *testing.T) {
	e, _ := newLimiterEngine(t)
	const budget, each, n = 10_000, 37, 1000
	lim := &messages.TenantLimits{TokenBudget: budget}
	var granted atomic.Int64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r := admit(t, e, &messages.Admit{Tenant: "race", RunId: fmt.Sprint(i), Limits: lim, Tokens: each})
			if r.Ok {
				granted.Add(each)
			}
		})
	}
	wg.Wait()
	if g := granted.Load(); g > budget || g < budget-each {
		t.Fatalf("granted %d tokens against a budget of %d (each run %d)", g, budget, each)
	}
}

// TestLimiterRereadsReservationsKnownOnlyFromTheLedger: a reservation the
// limiter learned from the ledger but never granted (another owner refused
// it during a change of owner, and the gateway dropped it) is freed at the
// next re-read of the ledger.
func TestLimiterRereadsReservationsKnownOnlyFromTheLedger(t *testing.T) {
	old := ledgerRefresh
	ledgerRefresh = 50 * time.Millisecond
	t.Cleanup(func() { ledgerRefresh = old })
	e, ledger := newLimiterEngine(t)
	ledger.state = &messages.LedgerState{Open: []*messages.LedgerEntry{{RunId: "ghost", Tokens: 5, AtUnixMs: time.Now().UnixMilli()}}}
	lim := &messages.TenantLimits{ConcurrentRuns: 1}
	if r := admit(t, e, &messages.Admit{Tenant: "g", RunId: "x", Limits: lim, Tokens: 1}); r.Ok || r.Limit != "concurrent_runs" {
		t.Fatalf("the ledger's open reservation was not counted: %+v", r)
	}
	ledger.mu.Lock()
	ledger.state = &messages.LedgerState{} // the gateway dropped it
	ledger.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := admit(t, e, &messages.Admit{Tenant: "g", RunId: "y", Limits: lim, Tokens: 1})
		if r.Ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dropped reservation still holds the tenant's only slot: %+v", r)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The run it granted is its own: later re-reads do not free it.
	time.Sleep(3 * ledgerRefresh)
	if r := admit(t, e, &messages.Admit{Tenant: "g", RunId: "z", Limits: lim, Tokens: 1}); r.Ok {
		t.Fatal("a second run was admitted beside the granted one")
	}
}

// TestLimiterAnswersOnlyTheSameView: a limiter on a node whose view of the
// limiter hosts differs from the gateway's does not decide (two nodes that
// each believe they own a tenant must not both grant); the gateway asks
// again until its time is up.
func TestLimiterAnswersOnlyTheSameView(t *testing.T) {
	// One process plays the gateway (LimiterHost: its view) and the node
	// (LimiterView: "v1"); without Remote its address is "nonhost".
	topo := &viewTopology{StaticTopology: StaticTopology{Limiters: []string{"nonhost"}, Ledgers: []string{"nonhost"}, View: "v1"}}
	topo.gateway.Store("v2")
	e, _ := newTestEngine(t, func(c *Config) { c.Topology = topo })
	l := &fakeLedger{}
	if err := e.Services().ServeLedger(l.answer); err != nil {
		t.Fatal(err)
	}
	lim := &messages.TenantLimits{ConcurrentRuns: 5}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if r, err := e.Limiter().Admit(ctx, &messages.Admit{Tenant: "v", RunId: "a", Limits: lim, Tokens: 1}); !errors.Is(err, ErrNoLimiter) {
		t.Fatalf("another view: %+v %v; want ErrNoLimiter once the time is up", r, err)
	}
	topo.gateway.Store("v1")
	if r := admit(t, e, &messages.Admit{Tenant: "v", RunId: "b", Limits: lim, Tokens: 1}); !r.Ok {
		t.Fatalf("the same view: %+v", r)
	}
}

// TestLimiterWaitsForEveryLedger: a ledger that does not answer is asked
// again; the limiter decides only with every ledger's reservations.
func TestLimiterWaitsForEveryLedger(t *testing.T) {
	e, _ := newTestEngine(t, nil)
	var calls atomic.Int64
	now := time.Now().UnixMilli()
	if err := e.Services().ServeLedger(func(*messages.LedgerQuery) *messages.LedgerState {
		if calls.Add(1) == 1 {
			return &messages.LedgerState{Error: "database is locked"} // the first read fails
		}
		return &messages.LedgerState{Open: []*messages.LedgerEntry{{RunId: "held", Tokens: 90, AtUnixMs: now}}}
	}); err != nil {
		t.Fatal(err)
	}
	// Deciding without the ledger would admit it: 90 of 100 are reserved.
	r := admit(t, e, &messages.Admit{Tenant: "w", RunId: "x", Limits: &messages.TenantLimits{TokenBudget: 100}, Tokens: 20})
	if r.Ok || r.Limit != "token_budget" {
		t.Fatalf("decided without a ledger's reservations: %+v", r)
	}
	if calls.Load() < 2 {
		t.Fatalf("the failed ledger was read %d times; want it read again", calls.Load())
	}
}

// viewTopology is a StaticTopology whose gateway side (LimiterHost) may see
// another view than its node side (LimiterView).
type viewTopology struct {
	StaticTopology
	gateway atomic.Value // string
}

func (v *viewTopology) LimiterHost(tenant string) (string, string, bool) {
	addr, _, ok := v.StaticTopology.LimiterHost(tenant)
	return addr, v.gateway.Load().(string), ok
}
