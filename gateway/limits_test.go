package gateway

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
)

// POST /v1/tokenize is a request like any other: with requests_per_minute
// 1 the second answers 429 with Retry-After and the limit's code, and so
// does a run in the same minute. On the old gateway it answered 200 every
// time.
func TestTokenizeCountsAgainstRequestsPerMinute(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, key := newTenant(t, g, "rpm1", `{"requests_per_minute": 1}`)
	body := `{"model":"gpt-4o","text":"hello world"}`
	if code, _ := call(t, "POST", g.URL+"/v1/tokenize", key, body, nil); code != http.StatusOK {
		t.Fatalf("first tokenize: HTTP %d", code)
	}
	var e errBody
	code, h := call(t, "POST", g.URL+"/v1/tokenize", key, body, &e)
	if code != http.StatusTooManyRequests || e.Error.Code != "requests_per_minute" || e.Error.Type != "rate_limit_error" || h.Get("Retry-After") == "" {
		t.Fatalf("second tokenize in the minute: HTTP %d Retry-After %q %+v", code, h.Get("Retry-After"), e)
	}
	if code, _, _, e := postRun(t, g.URL, key, "instant"); code != http.StatusTooManyRequests || e.Error.Code != "requests_per_minute" {
		t.Fatalf("run after the tokenize used the minute: HTTP %d %+v", code, e)
	}
	// Another tenant is not affected.
	if code, _ := call(t, "POST", g.URL+"/v1/tokenize", g.Dev.TenantKey, body, nil); code != http.StatusOK {
		t.Fatalf("dev tenant's tokenize: HTTP %d", code)
	}
}

// countingLedger counts the ledger writes of admission.
type countingLedger struct {
	st     *store.Store
	writes atomic.Int64
}

func (c *countingLedger) Reserve(r store.Reservation) error {
	c.writes.Add(1)
	return c.st.Reserve(r)
}

func (c *countingLedger) DropReservation(id string) error {
	c.writes.Add(1)
	return c.st.DropReservation(id)
}

// A refused run is refused by the cheap checks before the expensive ones:
// it does not count its reservation (tokenizing every stage's prompt) and
// writes nothing to the ledger, whether the limiter refuses it (precheck)
// or the gateway does while a refusal's Retry-After holds. On the old
// gateway every refused run tokenized and wrote the ledger twice.
func TestRefusedRunCostsNoTokenizingNorLedgerWrites(t *testing.T) {
	for _, c := range []struct{ limits, profile, code string }{
		{`{"requests_per_minute": 1}`, "instant", "requests_per_minute"},
		{`{"concurrent_runs": 1}`, "slow", "concurrent_runs"},
		{`{"token_budget": 10, "budget_period": "day"}`, "instant", "token_budget"},
	} {
		t.Run(c.code, func(t *testing.T) {
			g := startTenantGateway(t, nil)
			var reservations atomic.Int64
			ledger := &countingLedger{st: g.Tenancy.Store()}
			g.Server.adm.reservation = func(r actors.RunRequest) (int64, error) {
				reservations.Add(1)
				return g.Engine.Reservation(r)
			}
			g.Server.adm.ledger = ledger
			_, key := newTenant(t, g, "t", c.limits)
			grants := 1
			if c.code == "token_budget" {
				grants = 0 // the cheapest run reserves more than 10 tokens
			}
			for i := 0; i < grants; i++ {
				if code, _, _, e := postRun(t, g.URL, key, c.profile); code != http.StatusCreated {
					t.Fatalf("run %d: HTTP %d %+v", i, code, e)
				}
			}
			wantRes, wantWrites := reservations.Load(), ledger.writes.Load()
			for i := 0; i < 4; i++ {
				if i%2 == 0 {
					// Forget the remembered refusal: the limiter's precheck refuses.
					g.Server.adm.mu.Lock()
					g.Server.adm.refused = nil
					g.Server.adm.mu.Unlock()
				}
				code, h, _, e := postRun(t, g.URL, key, c.profile)
				if code != http.StatusTooManyRequests || e.Error.Code != c.code || h.Get("Retry-After") == "" || !strings.Contains(e.Error.Message, c.code) {
					t.Fatalf("refused run %d: HTTP %d Retry-After %q %+v", i, code, h.Get("Retry-After"), e)
				}
			}
			if n := reservations.Load() - wantRes; n != 0 {
				t.Errorf("refused runs counted %d reservations (tokenized), want 0", n)
			}
			if n := ledger.writes.Load() - wantWrites; n != 0 {
				t.Errorf("refused runs wrote the ledger %d times, want 0", n)
			}
		})
	}
}
