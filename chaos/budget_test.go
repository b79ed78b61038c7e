package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeBudgetGateway is a gateway's admission for the budget load: tenants
// made with the admin key, a run reserves r tokens and is billed r at
// once; slack lets it grant that many tokens past a budget (a broken
// limiter).
type fakeBudgetGateway struct {
	mu      sync.Mutex
	r       int64
	slack   int64
	budget  map[string]int64 // key → budget
	used    map[string]int64 // key → tokens granted
	runs    map[string]string
	tenants int
}

func (f *fakeBudgetGateway) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	switch {
	case req.Method == http.MethodPost && req.URL.Path == "/v1/admin/tenants":
		if key != "admin" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var body struct {
			Limits struct {
				TokenBudget int64 `json:"token_budget"`
			} `json:"limits"`
		}
		_ = json.NewDecoder(req.Body).Decode(&body)
		f.tenants++
		k := fmt.Sprintf("key-%d", f.tenants)
		f.budget[k] = body.Limits.TokenBudget
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"key":%q}`, k)
	case req.Method == http.MethodPost && req.URL.Path == "/v1/runs":
		w.Header().Set("X-QLC-Reserved-Tokens", fmt.Sprint(f.r))
		if key == "dev" {
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"id":"run_probe"}`)
			return
		}
		if f.used[key]+f.r > f.budget[key]+f.slack {
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"error":{"code":"token_budget"}}`)
			return
		}
		f.used[key] += f.r
		id := fmt.Sprintf("run_%d", len(f.runs)+1)
		f.runs[id] = key
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"id":%q}`, id)
	case req.Method == http.MethodGet && strings.HasPrefix(req.URL.Path, "/v1/runs/"):
		fmt.Fprintf(w, `{"status":"completed","usage":{"total_tokens":%d}}`, f.r)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func runBudgetLoad(t *testing.T, slack int64) budgetResult {
	t.Helper()
	f := &fakeBudgetGateway{r: 100, slack: slack, budget: map[string]int64{}, used: map[string]int64{}, runs: map[string]string{}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	apiKey.Store("dev")
	metricsKey.Store("admin")
	defer apiKey.Store("")
	defer metricsKey.Store("")
	pace := budgetPace
	budgetPace = [2]time.Duration{time.Millisecond, 3 * time.Millisecond}
	defer func() { budgetPace = pace }()
	b, err := startBudgetLoad(context.Background(), srv.URL, 1, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if b.budget != budgetRuns*100 {
		t.Fatalf("budget %d, want %d runs of the probe's reservation", b.budget, budgetRuns)
	}
	// Enough for two budgets and their refusals at the load's pace.
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.tenants)
		b.mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	return b.finish(10 * time.Second)
}

// TestBudgetLoadRotatesAndChecks: tenants are used up and replaced, and a
// gateway that keeps its budgets shows no violation.
func TestBudgetLoadRotatesAndChecks(t *testing.T) {
	res := runBudgetLoad(t, 0)
	if res.tenants < 3 || res.reached < 2 {
		t.Fatalf("tenants %d, reached their budget %d: want the budgets used up and replaced", res.tenants, res.reached)
	}
	if res.granted < 2*budgetRuns || res.refused < 2*budgetRotate {
		t.Fatalf("granted %d, refused %d", res.granted, res.refused)
	}
	if len(res.violations) != 0 {
		t.Fatalf("violations on a gateway that keeps its budgets: %v", res.violations)
	}
}

// TestBudgetLoadCatchesAnOverrun: a gateway that grants one run past each
// budget is caught.
func TestBudgetLoadCatchesAnOverrun(t *testing.T) {
	res := runBudgetLoad(t, 100)
	if len(res.violations) == 0 {
		t.Fatal("a gateway granting past its budgets was not caught")
	}
}
