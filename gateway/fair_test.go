package gateway

import (
	"net/http"
	"sync"
	"testing"

	"github.com/qlc-project/qlc/actors"
)

// A tenant flooding POST /v1/runs gets its share of the engine's active
// runs and then 429 active_runs_share; another tenant's runs are still
// created (201). On the old engine the flooder took every place and the
// other tenant got 503 overloaded.
func TestFloodingTenantLeavesRoomForOthers(t *testing.T) {
	g := startTenantGateway(t, func(_ *Config, e *actors.Config) { e.MaxActiveRuns = 8 }) // headroom 1
	_, flood := newTenant(t, g, "flooder", `{"concurrent_runs": 1000}`)
	var mu sync.Mutex
	codes := map[int]int{}
	refusals := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			for i := 0; i < 6; i++ {
				code, h, _, e := postRun(t, g.URL, flood, "slow")
				mu.Lock()
				codes[code]++
				if code != http.StatusCreated {
					refusals[e.Error.Code]++
					if h.Get("Retry-After") == "" {
						t.Errorf("refusal %d %s without Retry-After", code, e.Error.Code)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if codes[http.StatusCreated] != 7 || codes[http.StatusTooManyRequests] != 24-7 || refusals["active_runs_share"] != 24-7 {
		t.Fatalf("flooder: statuses %v, refusals %v; want 7 created, 17 refused with 429 active_runs_share", codes, refusals)
	}
	if code, _, _, e := postRun(t, g.URL, g.Dev.TenantKey, "slow"); code != http.StatusCreated {
		t.Fatalf("another tenant during the flood: HTTP %d %+v", code, e)
	}
	// Every place is taken now: the next run of either is refused, the
	// flooder's by its share.
	if code, _, _, e := postRun(t, g.URL, flood, "slow"); code != http.StatusTooManyRequests || e.Error.Code != "active_runs_share" {
		t.Fatalf("flooder again: HTTP %d %+v", code, e)
	}
}
