package actors

import (
	"fmt"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// A precheck is decided like a run of its tokens and records nothing: any
// number of granted prechecks leave the limits as they were, and a
// precheck over a limit is refused with that limit.
func TestLimiterPrecheckRecordsNothing(t *testing.T) {
	e, _ := newLimiterEngine(t)
	lim := &messages.TenantLimits{RequestsPerMinute: 2, ConcurrentRuns: 2, TokenBudget: 100, BudgetPeriod: "day"}
	period := func(m *messages.Admit) *messages.Admit {
		m.PeriodStartUnixMs, m.PeriodEndUnixMs = 1, time.Now().Add(time.Hour).UnixMilli()
		return m
	}
	for i := range 5 {
		if r := admit(t, e, period(&messages.Admit{Tenant: "t", Precheck: true, Tokens: 10, Limits: lim})); !r.Ok {
			t.Fatalf("precheck %d refused: %s", i, r.Message)
		}
	}
	if r := admit(t, e, period(&messages.Admit{Tenant: "t", Precheck: true, Tokens: 101, Limits: lim})); r.Ok || r.Limit != "token_budget" {
		t.Fatalf("precheck over the budget: %+v", r)
	}
	for i := range 2 {
		if r := admit(t, e, period(&messages.Admit{Tenant: "t", RunId: fmt.Sprint("run", i), Tokens: 10, Limits: lim})); !r.Ok {
			t.Fatalf("run %d after prechecks refused: %s", i, r.Message)
		}
	}
	// Two runs are in the window and open: requests and concurrency are
	// both at their limit; the cheaper check answers first.
	if r := admit(t, e, period(&messages.Admit{Tenant: "t", Precheck: true, Tokens: 10, Limits: lim})); r.Ok || r.Limit != "requests_per_minute" {
		t.Fatalf("precheck at the limits: %+v", r)
	}
}

// A request that is not a run counts against requests_per_minute, and
// against nothing else (no tokens, no concurrent run).
func TestLimiterCountsRequestsThatAreNotRuns(t *testing.T) {
	e, _ := newLimiterEngine(t)
	lim := &messages.TenantLimits{RequestsPerMinute: 3, ConcurrentRuns: 1}
	for i := range 2 {
		if r := admit(t, e, &messages.Admit{Tenant: "t", Request: true, Limits: lim}); !r.Ok {
			t.Fatalf("request %d refused: %s", i, r.Message)
		}
	}
	if r := admit(t, e, &messages.Admit{Tenant: "t", RunId: "run1", Tokens: 5, Limits: lim}); !r.Ok {
		t.Fatalf("run after two requests (1 of 3 left, no run going) refused: %s", r.Message)
	}
	r := admit(t, e, &messages.Admit{Tenant: "t", Request: true, Limits: lim})
	if r.Ok || r.Limit != "requests_per_minute" || r.RetryAfterMs <= 0 || r.RetryAfterMs > 60_000 {
		t.Fatalf("fourth request in the minute: %+v", r)
	}
}
