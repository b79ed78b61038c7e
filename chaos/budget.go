package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The budget check of the fault scenarios (issue 17: "the history checker
// passes under every fault scenario with limits on"). Beside a scenario's
// load, budgetWorkers clients post runs of the light `budget` profile for
// a tenant whose token budget is budgetRuns runs' reservations, so it is
// reached within seconds; once the tenant has refused budgetRotate posts
// in a row for its budget, a new tenant with the same budget takes its
// place. So budgets run out again and again over the whole scenario,
// during its faults as between them, on limiters placed on every node.
// Every admission attempt is recorded per tenant and each tenant's history
// checked as the limits scenario's is (limitcheck.go): granted tokens never
// exceed the budget. The scenario fails on a violation.

const (
	budgetWorkers = 2
	budgetRuns    = 16 // a tenant's budget: this many runs' reservations
	budgetRotate  = 8  // refusals for the budget in a row: next tenant
	budgetTenants = 64 // at most this many tenants per scenario
)

// budgetPace bounds a budget client's wait between two posts (a variable:
// the tests run it faster).
var budgetPace = [2]time.Duration{300 * time.Millisecond, 600 * time.Millisecond}

// budgetProfile is the profile the budget load runs: four short stages
// (4 tokens 50 ms apart each, about 1.2 s a run), so its runs cost the
// nodes little beside the scenario's load.
const budgetProfile = `
  budget:
    description: Four short stages of 4 tokens (about 1.2 s); the budget check's load.
    provider: quick
    stages:
      generator: {model: sim-a, max_tokens: 10}
      refiner:   {model: sim-a, max_tokens: 10}
      validator: {model: sim-a, max_tokens: 10}
      curator:   {model: sim-a, max_tokens: 10}
`

// budgetQuery is the budget load's request; every one has the same length,
// so the same reservation.
func budgetQuery(n int) string {
	return fmt.Sprintf(`{"profile":"budget","cache":false,"query":"Budget check %08d: how many tokens may a tenant spend during a fault?"}`, n%100000000)
}

// budgetTenant is one tenant of the budget load and its history.
type budgetTenant struct {
	id, key  string
	hist     []attempt
	refusals int  // refusals for the budget in a row
	reached  bool // refused for its budget at least once
}

// budgetLoad is the budget check's load and its histories.
type budgetLoad struct {
	base, admin string
	r0, budget  int64
	progress    func(string, ...any)

	mu      sync.Mutex
	tenants []*budgetTenant
	cur     *budgetTenant
	seq     int
	errs    []string // tenants that could not be made

	rotating sync.Mutex // one tenant made at a time
	wg       sync.WaitGroup
	stop     context.CancelFunc
}

// budgetResult is what the scenario's table says of the check.
type budgetResult struct {
	tenants, reached                          int
	attempts, granted, refused, unavail, unkn int
	budget, r0                                int64
	counted                                   int64 // Σ over tenants of Σ min(bill, R)
	violations                                []string
	note                                      string // why there was no check
}

// startBudgetLoad probes a run's reservation with the scenario's tenant key,
// makes the first tenant and starts the workers; they run until finish.
func startBudgetLoad(ctx context.Context, base string, seed uint64, progress func(string, ...any)) (*budgetLoad, error) {
	admin, _ := metricsKey.Load().(string)
	dev, _ := apiKey.Load().(string)
	if admin == "" || dev == "" {
		return nil, fmt.Errorf("chaos: budget check: no admin key or tenant key")
	}
	_, code, hdr, err := limitsRequest(ctx, http.MethodPost, base+"/v1/runs", dev, budgetQuery(0), nil)
	if err != nil || code != "" {
		return nil, fmt.Errorf("chaos: budget check: the probe run: %v %s", err, code)
	}
	r0, _ := strconv.ParseInt(hdr.Get("X-QLC-Reserved-Tokens"), 10, 64)
	if r0 <= 0 {
		return nil, fmt.Errorf("chaos: budget check: the gateway sent no X-QLC-Reserved-Tokens")
	}
	b := &budgetLoad{base: base, admin: admin, r0: r0, budget: budgetRuns * r0, progress: progress}
	if err := b.rotate(ctx, nil); err != nil {
		return nil, err
	}
	lctx, stop := context.WithCancel(ctx)
	b.stop = stop
	for w := range budgetWorkers {
		b.wg.Go(func() { b.work(lctx, rand.New(rand.NewPCG(seed, 0xb0d6e7+uint64(w)))) })
	}
	return b, nil
}

// rotate makes a new tenant current unless old is no longer the current one
// (another worker rotated it already).
func (b *budgetLoad) rotate(ctx context.Context, old *budgetTenant) error {
	b.rotating.Lock()
	defer b.rotating.Unlock()
	b.mu.Lock()
	if b.cur != old || len(b.tenants) >= budgetTenants {
		b.mu.Unlock()
		return nil
	}
	id := fmt.Sprintf("budget-%d", len(b.tenants)+1)
	b.mu.Unlock()
	var created struct {
		Key string `json:"key"`
	}
	body := fmt.Sprintf(`{"id":%q,"name":%q,"limits":{"token_budget":%d,"budget_period":"month","concurrent_runs":100000}}`, id, id, b.budget)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, code, _, err := limitsRequest(cctx, http.MethodPost, b.base+"/v1/admin/tenants", b.admin, body, &created); err != nil || code != "" || created.Key == "" {
		err := fmt.Errorf("chaos: budget check: create tenant %s: %v %s", id, err, code)
		b.mu.Lock()
		b.errs = append(b.errs, err.Error())
		b.mu.Unlock()
		return err
	}
	t := &budgetTenant{id: id, key: created.Key}
	b.mu.Lock()
	b.tenants = append(b.tenants, t)
	b.cur = t
	b.mu.Unlock()
	return nil
}

// work posts runs for the current tenant until ctx ends.
func (b *budgetLoad) work(ctx context.Context, rng *rand.Rand) {
	for ctx.Err() == nil {
		b.mu.Lock()
		t := b.cur
		b.seq++
		n := b.seq
		b.mu.Unlock()
		a, err := postAttempt(ctx, 1, b.base, t.key, budgetQuery(n))
		if err != nil && ctx.Err() != nil {
			return // the load ended mid-request: not an attempt
		}
		b.mu.Lock()
		t.hist = append(t.hist, a)
		if a.outcome == outRefused && a.code == "token_budget" {
			t.refusals++
			t.reached = true
		} else {
			t.refusals = 0
		}
		full := t.refusals >= budgetRotate
		b.mu.Unlock()
		if full {
			if err := b.rotate(ctx, t); err != nil && ctx.Err() == nil {
				b.progress("%v", err)
			}
		}
		sleep(ctx, budgetPace[0]+time.Duration(rng.Int64N(int64(budgetPace[1]-budgetPace[0]))))
	}
}

// finish stops the workers, waits for every granted run to end (at most
// within), reads its bill and checks each tenant's history.
func (b *budgetLoad) finish(within time.Duration) budgetResult {
	b.stop()
	b.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	res := budgetResult{budget: b.budget, r0: b.r0, tenants: len(b.tenants)}
	for _, t := range b.tenants {
		for i := range t.hist {
			a := &t.hist[i]
			if a.outcome != outGranted {
				continue
			}
			for ctx.Err() == nil {
				var v struct {
					Status string `json:"status"`
					Usage  *struct {
						Total int64 `json:"total_tokens"`
					} `json:"usage"`
				}
				st, _, _, err := limitsRequest(ctx, http.MethodGet, b.base+"/v1/runs/"+a.run, t.key, "", &v)
				if err == nil && st == http.StatusOK && v.Status != "running" && v.Status != "queued" && v.Status != "" {
					if v.Usage != nil {
						a.billed = v.Usage.Total
					}
					break
				}
				sleep(ctx, 250*time.Millisecond)
			}
		}
		c := checkBudget(b.budget, t.hist)
		res.counted += c.counted
		for _, v := range c.violations {
			res.violations = append(res.violations, t.id+": "+v)
		}
		if t.reached {
			res.reached++
		}
		for _, a := range t.hist {
			res.attempts++
			switch a.outcome {
			case outGranted:
				res.granted++
			case outRefused:
				res.refused++
			case outUnavailable:
				res.unavail++
			default:
				res.unkn++
			}
		}
	}
	if ctx.Err() != nil {
		res.note = fmt.Sprintf("some granted runs had not ended within %v: their bills count 0 (the check stays sound)", within)
	}
	if len(b.errs) > 0 {
		res.note = strings.TrimPrefix(res.note+"; "+b.errs[0], "; ")
	}
	return res
}

// rows is the check's lines of the scenario's table.
func (r budgetResult) rows() [][2]string {
	if r.note != "" && r.attempts == 0 {
		return [][2]string{{"budget check", r.note}}
	}
	out := [][2]string{
		{"budget check: tenants (budget each) / reached their budget", fmt.Sprintf("%d (%d tokens: %d runs of %d reserved) / %d", r.tenants, r.budget, budgetRuns, r.r0, r.reached)},
		{"budget check: admissions recorded (granted / refused / 503 / no answer)", fmt.Sprintf("%d (%d / %d / %d / %d)", r.attempts, r.granted, r.refused, r.unavail, r.unkn)},
		{"budget check: granted tokens over a budget (violations)", must0(len(r.violations))},
	}
	if r.note != "" {
		out = append(out, [2]string{"budget check: note", r.note})
	}
	return out
}
