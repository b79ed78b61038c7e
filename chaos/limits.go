package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The limits scenario (issue 17, item 4): a tenant with a small token
// budget, admissions from two gateways at once, and faults that make two
// limiter hosts believe they own the tenant — a split of the cluster into
// {one node, gateway 1} and {two nodes, gateway 2} for longer than the
// ledgers' grace (each side then decides without the other's
// reservations), SIGSTOP pauses and kill -9 of nodes (restarted with their
// Raft log). Every admission attempt and its outcome is recorded, every
// granted run read for its bill once it ended, and the history checked
// (limitcheck.go): granted tokens never exceed the budget.
//
// With -limits-consensus (the default) the nodes form the quota group
// (-limiter-id 1..3): the minority side can grant only the slice it holds.
// -limits-consensus=false runs the same faults with limiters counting alone
// (the behaviour before the group), whose split brain overruns.
//
// Local backend only; the split needs root and iptables (the group
// partition chains of groups.go), else the scenario runs pauses and kills
// only and says so.

// limitsProfiles: four short stages on a slow simulated model, so a run
// holds its reservation for a few seconds (≈ 4 s) and admissions, not
// runs, load the machine.
const limitsProfiles = `default_profile: limits
providers:
  slow: {kind: sim, sim: {ttft: 100ms, ttft_jitter: 20ms, itl: 100ms, itl_jitter: 10ms, output_tokens: 8}}
profiles:
  limits:
    description: Four short stages on a slow simulated model (about 4 s).
    provider: slow
    stages:
      generator: {model: sim-a, max_tokens: 10}
      refiner:   {model: sim-a, max_tokens: 10}
      validator: {model: sim-a, max_tokens: 10}
      curator:   {model: sim-a, max_tokens: 10}
`

const (
	// limitsUIDBase: node i runs as limitsUIDBase+i, gateway k as
	// limitsUIDBase+10+k (inside groups.go's marked uids).
	limitsUIDBase = firstNodeUID + groupUIDOffset
	// limitsBudgetRuns sizes the budget: about this many runs' reservations.
	limitsBudgetRuns = 250
	// limitsSplit is how long a split lasts: past LedgerGrace (10 s), after
	// which a limiter no longer waits for the other side's ledger.
	limitsSplit = 14 * time.Second
)

// limitsCluster is the scenario's processes.
type limitsCluster struct {
	c         *localCluster
	dir       string
	consensus bool
	split     bool // the firewall can split the cluster
	mu        sync.Mutex
	nodes     map[uint64]*proc // by limiter id
	gws       []*proc
	urls      []string
	adminKey  string
}

func (l *limitsCluster) uid(off int) uint32 {
	if !l.split {
		return 0
	}
	return uint32(limitsUIDBase + off)
}

// startNode starts (or restarts, with its log) the node of limiter id.
func (l *limitsCluster) startNode(id uint64) error {
	var extra []string
	if l.consensus {
		qdir := filepath.Join(l.dir, fmt.Sprintf("quota-%d", id))
		if err := os.MkdirAll(qdir, 0o700); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
		if u := l.uid(int(id)); u != 0 {
			if err := chownTree(qdir, int(u)); err != nil {
				return err
			}
		}
		extra = []string{"-limiter-id", strconv.FormatUint(id, 10), "-limiter-dir", qdir}
	}
	p, err := l.c.startNodeWith(extra, l.uid(int(id)))
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.nodes[id] = p
	l.mu.Unlock()
	return nil
}

func chownTree(dir string, uid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, uid)
	})
}

// startGateway starts gateway k (0, 1) with a data folder of its own.
func (l *limitsCluster) startGateway(k int) error {
	var seeds []string
	for _, n := range l.c.liveNodes() {
		seeds = append(seeds, n.gossip)
	}
	uid := l.uid(10 + k)
	data := filepath.Join(l.dir, fmt.Sprintf("gateway-%d-data", k+1))
	if err := os.MkdirAll(data, 0o700); err != nil {
		return fmt.Errorf("chaos: %w", err)
	}
	if uid != 0 {
		if err := os.Chown(data, int(uid), int(uid)); err != nil {
			return fmt.Errorf("chaos: %w", err)
		}
	}
	name := fmt.Sprintf("gateway-%d", k+1)
	addrFile, err := l.c.addrFile(name, uid)
	if err != nil {
		return err
	}
	p, err := l.c.spawnAs(name, "gateway", []string{"-addr", "127.0.0.1:0", "-addr-file", addrFile, "-seeds", strings.Join(seeds, ","),
		"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", l.c.profiles,
		"-log-format", "json", "-log-level", "warn", "-data-dir", data, "-dev-keys"}, nil, uid)
	if err != nil {
		return err
	}
	a, err := waitAddrs(addrFile, 20*time.Second, p.done)
	if err != nil {
		return fmt.Errorf("chaos: %s: %w (log %s)", name, err, p.logPath)
	}
	p.gossip, p.act = a.Gossip, a.Actor
	url := "http://" + a.HTTP
	if err := waitHTTP(url+"/readyz", 20*time.Second, p.done); err != nil {
		return fmt.Errorf("chaos: %s: %w (log %s)", name, err, p.logPath)
	}
	l.mu.Lock()
	l.gws = append(l.gws, p)
	l.urls = append(l.urls, url)
	l.mu.Unlock()
	if k == 0 {
		l.c.mu.Lock()
		l.c.gw, l.c.gwURL = p, url
		l.c.mu.Unlock()
		return loadKey(data) // the admin key (metrics, tenants)
	}
	return nil
}

// limitsRequest sends one API request with key and decodes a JSON answer
// into out (if not nil); it returns the status and the error code.
func limitsRequest(ctx context.Context, method, url, key, body string, out any) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		var e apiError
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Error.Code, resp.Header, nil
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, "", resp.Header, fmt.Errorf("chaos: bad answer: %w", err)
		}
	}
	return resp.StatusCode, "", resp.Header, nil
}

func limitsQuery(n int) string {
	return fmt.Sprintf(`{"profile":"limits","cache":false,"query":"Budget question %d: how many tokens may a tenant spend while the cluster is split?"}`, n)
}

// runLimits runs the scenario and prints its report; 1 if the history
// check failed.
func runLimits(ctx context.Context, cfg Config, bin, command string, progress func(string, ...any)) int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	dir, err := os.MkdirTemp("", "qlc-chaos-limits-")
	if err != nil {
		return fail(err)
	}
	c, err := newLocalCluster(bin, dir, limitsProfiles, progress)
	if err != nil {
		return fail(err)
	}
	l := &limitsCluster{c: c, dir: dir, consensus: cfg.LimitsConsensus, nodes: map[uint64]*proc{}}
	keep := cfg.KeepLogs
	defer func() {
		c.shutdown()
		if !keep {
			os.RemoveAll(dir)
		} else {
			progress("logs kept in %s", dir)
		}
	}()
	splitNote := ""
	if err := partitionSupport(); err != nil {
		splitNote = "no split here (" + err.Error() + "): pauses and kills only"
		progress("%s", splitNote)
	} else {
		if err := groupFirewallUp(); err != nil {
			return fail(err)
		}
		c.groups, c.ownUIDs, l.split = true, true, true
		for _, d := range []string{bin, dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				return fail(err)
			}
		}
	}
	progress("limits: starting 3 nodes (quota group: %v) and 2 gateways", l.consensus)
	for id := uint64(1); id <= 3; id++ {
		if err := l.startNode(id); err != nil {
			return fail(err)
		}
	}
	for k := range 2 {
		if err := l.startGateway(k); err != nil {
			return fail(err)
		}
	}
	if err := waitMembers(l.urls[0], 5, 30*time.Second); err != nil {
		return fail(err)
	}
	admin, _ := metricsKey.Load().(string)
	devKey, _ := apiKey.Load().(string)
	// One run of the dev tenant (no budget) tells a run's reservation.
	_, code, hdr, err := limitsRequest(ctx, http.MethodPost, l.urls[0]+"/v1/runs", devKey, limitsQuery(0), nil)
	if err != nil || code != "" {
		return fail(fmt.Errorf("chaos: limits: the probe run: %v %s", err, code))
	}
	r0, _ := strconv.ParseInt(hdr.Get("X-QLC-Reserved-Tokens"), 10, 64)
	if r0 <= 0 {
		return fail(errors.New("chaos: limits: the gateway sent no X-QLC-Reserved-Tokens"))
	}
	budget := limitsBudgetRuns * r0
	var created struct {
		Key string `json:"key"`
	}
	body := fmt.Sprintf(`{"id":"limits","name":"limits","limits":{"token_budget":%d,"budget_period":"month","concurrent_runs":100000}}`, budget)
	if _, code, _, err := limitsRequest(ctx, http.MethodPost, l.urls[0]+"/v1/admin/tenants", admin, body, &created); err != nil || code != "" || created.Key == "" {
		return fail(fmt.Errorf("chaos: limits: create the tenant: %v %s", err, code))
	}
	// The tenant reaches gateway 2 by the registry's push (or its pull,
	// every minute).
	deadline := time.Now().Add(75 * time.Second)
	for {
		st, _, _, err := limitsRequest(ctx, http.MethodGet, l.urls[1]+"/v1/runs/none", created.Key, "", nil)
		if err == nil && st != http.StatusUnauthorized {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fail(errors.New("chaos: limits: gateway 2 never learned the tenant's key"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	progress("limits: tenant with a budget of %d tokens (%d runs of %d reserved); load from %d workers on both gateways", budget, limitsBudgetRuns, r0, cfg.Concurrency)

	// The load: every attempt recorded.
	var hmu sync.Mutex
	var hist []attempt
	load, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	var seq int
	for w := range cfg.Concurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			for load.Err() == nil {
				hmu.Lock()
				seq++
				n := seq
				hmu.Unlock()
				k := w % 2 // a worker keeps to one gateway: one side's waits do not slow the other's
				a, err := postAttempt(load, k+1, l.urls[k], created.Key, limitsQuery(n))
				if err != nil && load.Err() != nil {
					return // the load ended mid-request: not an attempt
				}
				hmu.Lock()
				hist = append(hist, a)
				hmu.Unlock()
				sleep(load, time.Duration(150+rng.IntN(150))*time.Millisecond)
			}
		})
	}

	// The faults.
	var faults []string
	var splits [][2]time.Time
	note := func(format string, args ...any) {
		s := time.Now().Format("15:04:05.000") + " " + fmt.Sprintf(format, args...)
		faults = append(faults, s)
		progress("limits: %s", fmt.Sprintf(format, args...))
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 99))
	order := []uint64{1, 2, 3}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	node := func(id uint64) *proc {
		l.mu.Lock()
		defer l.mu.Unlock()
		return l.nodes[id]
	}
	splitOnce := func(id uint64) {
		if !l.split {
			return
		}
		var a, b []*proc
		a = append(a, node(id), l.gws[0])
		for _, o := range []uint64{1, 2, 3} {
			if o != id {
				b = append(b, node(o))
			}
		}
		b = append(b, l.gws[1])
		if _, err := c.dropBetween(a, b, true); err != nil {
			note("split failed: %v", err)
			return
		}
		note("split: {node %d, gateway 1} | {the two other nodes, gateway 2} for %s", id, limitsSplit)
		from := time.Now()
		sleep(ctx, limitsSplit)
		if err := c.healGroups(); err != nil {
			note("heal failed: %v", err)
		}
		splits = append(splits, [2]time.Time{from, time.Now()})
		note("healed")
	}
	sleep(ctx, 3*time.Second)
	splitOnce(order[0])
	sleep(ctx, 4*time.Second)
	if p := node(order[1]); p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
		note("SIGSTOP node %d for 3 s", order[1])
		sleep(ctx, 3*time.Second)
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		note("SIGCONT node %d", order[1])
	}
	sleep(ctx, 3*time.Second)
	if p := node(order[2]); p != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		p.killed = true
		c.removeNode(p)
		<-p.done
		note("kill -9 node %d; restarting it with its Raft log", order[2])
		if err := l.startNode(order[2]); err != nil {
			note("restart failed: %v", err)
		}
	}
	sleep(ctx, 4*time.Second)
	splitOnce(order[1])
	sleep(ctx, 3*time.Second)
	stopLoad()
	wg.Wait()
	loadEnd := time.Now()

	// Every granted run's bill, once it ended.
	progress("limits: %d attempts; reading the bills of the granted runs", len(hist))
	bctx, bcancel := context.WithTimeout(ctx, 90*time.Second)
	defer bcancel()
	for i := range hist {
		a := &hist[i]
		if a.outcome != outGranted {
			continue
		}
		for bctx.Err() == nil {
			var v struct {
				Status string `json:"status"`
				Usage  *struct {
					Total int64 `json:"total_tokens"`
				} `json:"usage"`
			}
			st, _, _, err := limitsRequest(bctx, http.MethodGet, l.urls[a.gateway-1]+"/v1/runs/"+a.run, created.Key, "", &v)
			if err == nil && st == http.StatusOK && v.Status != "running" && v.Status != "queued" && v.Status != "" {
				if v.Usage != nil {
					a.billed = v.Usage.Total
				}
				break
			}
			sleep(bctx, 250*time.Millisecond)
		}
	}
	res := checkBudget(budget, hist)
	writeLimitsReport(os.Stdout, command, cfg, l, splitNote, budget, r0, hist, res, faults, splits, loadEnd)
	if len(res.violations) > 0 {
		return 1
	}
	return 0
}

// writeLimitsReport prints the scenario's figures.
func writeLimitsReport(w io.Writer, command string, cfg Config, l *limitsCluster, splitNote string, budget, r0 int64, hist []attempt, res budgetCheck, faults []string, splits [][2]time.Time, end time.Time) {
	count := map[string]int{}
	codes := map[string]int{}
	var lat []time.Duration
	for _, a := range hist {
		count[a.outcome]++
		if a.code != "" {
			codes[a.code]++
		}
		if a.outcome == outGranted {
			lat = append(lat, a.ret.Sub(a.call))
		}
	}
	slices.Sort(lat)
	q := func(f float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(f*float64(len(lat)-1))].Round(100 * time.Microsecond)
	}
	var span time.Duration
	if len(hist) > 0 {
		span = end.Sub(hist[0].call)
	}
	mode := "quota group (Raft, -limiter-id 1..3)"
	if !l.consensus {
		mode = "limiters counting alone (no quota group)"
	}
	fmt.Fprintf(w, "\n## chaos limits — %s\n\n", mode)
	fmt.Fprintf(w, "command: %s\n\n", command)
	fmt.Fprintf(w, "- budget: %d tokens (%d runs of the probe's %d reserved); 2 gateways, 3 nodes, %d workers\n", budget, limitsBudgetRuns, r0, cfg.Concurrency)
	if splitNote != "" {
		fmt.Fprintf(w, "- %s\n", splitNote)
	}
	fmt.Fprintf(w, "- history: %d attempts in %s (%.1f/s): granted %d, refused %d, unavailable %d, unknown %d\n",
		len(hist), span.Round(time.Second), float64(len(hist))/max(span.Seconds(), 1e-9), count[outGranted], count[outRefused], count[outUnavailable], count[outUnknown])
	var cs []string
	for k, v := range codes {
		cs = append(cs, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(cs)
	fmt.Fprintf(w, "- answers other than 201: %s\n", strings.Join(cs, ", "))
	fmt.Fprintf(w, "- granted admission latency (POST /v1/runs → 201): p50 %s, p99 %s\n", q(0.5), q(0.99))
	fmt.Fprintf(w, "- granted: Σ reserved %d; counted at least (Σ min(billed, reserved)) %d of %d; peak at a grant %d\n", res.grantedTokens, res.counted, budget, res.peak)
	fmt.Fprintf(w, "- faults:\n")
	for _, f := range faults {
		fmt.Fprintf(w, "  - %s\n", f)
	}
	for i, sp := range splits {
		var g [3]int
		var tok int64
		for _, a := range hist {
			if a.outcome == outGranted && !a.call.Before(sp[0]) && a.call.Before(sp[1]) {
				g[a.gateway]++
				tok += a.reserved
			}
		}
		fmt.Fprintf(w, "- during split %d: granted %d at gateway 1 (the one-node side), %d at gateway 2 (%d tokens)\n", i+1, g[1], g[2], tok)
	}
	if len(res.violations) == 0 {
		fmt.Fprintf(w, "- **check: 0 violations** — granted tokens never exceeded the budget\n")
		return
	}
	fmt.Fprintf(w, "- **check: %d violations**:\n", len(res.violations))
	for i, v := range res.violations {
		if i == 10 {
			fmt.Fprintf(w, "  - … %d more\n", len(res.violations)-10)
			break
		}
		fmt.Fprintf(w, "  - %s\n", v)
	}
}

// postAttempt posts one run (body) to the gateway at base (numbered
// gateway) with key and records the admission: its outcome, the code of a
// refusal, the reserved tokens of a grant, when it was sent and answered.
// err is the request's (the history check counts it as unknown).
func postAttempt(ctx context.Context, gateway int, base, key, body string) (attempt, error) {
	a := attempt{gateway: gateway, call: time.Now(), billed: -1}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	var v struct {
		ID string `json:"id"`
	}
	st, code, hdr, err := limitsRequest(actx, http.MethodPost, base+"/v1/runs", key, body, &v)
	a.ret, a.code = time.Now(), code
	switch {
	case err != nil:
		a.outcome = outUnknown
	case st == http.StatusCreated:
		a.outcome, a.run = outGranted, v.ID
		a.reserved, _ = strconv.ParseInt(hdr.Get("X-QLC-Reserved-Tokens"), 10, 64)
	case st == http.StatusTooManyRequests:
		a.outcome = outRefused
	case st >= 500:
		a.outcome = outUnavailable
	default:
		a.outcome = outUnknown
	}
	return a, err
}
