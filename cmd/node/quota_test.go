package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestBudgetHoldsWithTheQuotaGroup: three node processes form the quota
// group (-limiter-id 1..3, its Raft messages over the actor transport) and
// two gateways admit a burst of runs into one tenant's budget of 30 runs:
// no more than 30 are admitted, and once the cancelled runs settle for less
// than they reserved, the budget they left is granted again (the slices
// take it back without a log write). The split-brain overrun itself is
// shown in package actors (TestSplitBrainOverrunsWithoutTheQuotaGroup) and
// by go run ./chaos -scenario limits.
func TestBudgetHoldsWithTheQuotaGroup(t *testing.T) {
	dir := t.TempDir()
	c := startTCluster(&tcluster{tb: t, pf: writeProfiles(t), nodeArgs: func(i int) []string {
		return []string{"-limiter-id", fmt.Sprint(i + 1), "-limiter-dir", filepath.Join(dir, fmt.Sprint("quota-", i+1))}
	}}, 3, 2)
	a, b := c.gws[0].base, c.gws[1].base
	r := reservation(t, "slow")
	const slots = 30
	budget := slots * r
	tn := createTenant(t, a, "budget-quota", "Budget under the quota group", map[string]any{"token_budget": budget, "concurrent_runs": 0})
	waitKeyStatus(t, b, tn.key, 200, 10*time.Second)

	attempts := 90
	if raceEnabled {
		attempts = 45
	}
	results := make([]posted, attempts)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range attempts {
		wg.Go(func() {
			<-gate
			results[i] = postAs(c.gws[i%2].base, tn.key, "slow")
		})
	}
	close(gate)
	wg.Wait()
	admittedBy := map[string]string{}
	outcomes := map[string]int{}
	for i, p := range results {
		outcomes[fmt.Sprintf("%d %s", p.status, p.code)]++
		switch {
		case p.err != nil:
			t.Errorf("POST %d: %v", i, p.err)
		case p.status == http.StatusCreated && p.id != "":
			admittedBy[p.id] = c.gws[i%2].base
		case p.status == http.StatusTooManyRequests && p.code == "token_budget",
			p.status == http.StatusServiceUnavailable && p.code == "limiter_unavailable":
		default:
			t.Errorf("POST %d: %d %q, want 201, 429 token_budget or 503 limiter_unavailable", i, p.status, p.code)
		}
	}
	n := int64(len(admittedBy))
	t.Logf("figure: %d POSTs over 2 gateways with the quota group: %v; admitted %d of the %d runs the budget holds", attempts, outcomes, n, slots)
	if n*r > budget {
		t.Fatalf("the budget was overrun: %d runs × %d = %d > %d", n, r, n*r, budget)
	}
	if n == 0 {
		t.Fatal("no run was admitted")
	}
	if raceEnabled {
		// Cancelling 30 runs at once ends 30 coordinators together, and
		// protoactor's receive-timeout timer (coordinator.go's resendEnd →
		// keepAfterAck) races with SetReceiveTimeout on its own goroutine
		// (actor_context.go:81 vs :60, a library race; 2 of 13 race-built
		// runs of this test). The budget check above ran; the settle path
		// runs in make test's plain pass.
		return
	}
	for id, base := range admittedBy {
		wg.Go(func() {
			if code, _, _, err := apiCall("DELETE", base+"/v1/runs/"+id, tn.key, nil); err != nil || code != 200 {
				t.Errorf("DELETE run %s: %d %v", id, code, err)
			}
		})
	}
	wg.Wait()
	// What the cancelled runs did not use is free again, at either gateway.
	var again posted
	deadline := time.Now().Add(15 * time.Second)
	for {
		again = postAs(b, tn.key, "slow")
		if again.status == http.StatusCreated || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if again.status != http.StatusCreated {
		t.Fatalf("after the runs were cancelled, a new run is refused: %d %s", again.status, again.code)
	}
	mustCall(t, 200, "DELETE", b+"/v1/runs/"+again.id, tn.key, nil)
}
