package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	qcluster "github.com/qlc-project/qlc/cluster"
	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/stagework"
)

// Multi-process tenancy tests: budgets held cluster-wide by the tenant
// limiters (on node processes) while gateways admit runs concurrently,
// while the limiter's node dies, and the usage ledger across a gateway's
// kill -9. Figures are logged with t.Logf ("figure: ...").

// runQuery is the question of every run these tests post; reservation
// computes the runs' reservations from it.
const runQuery = "How do vector clocks work?"

// tgateway is a gateway process of a tcluster.
type tgateway struct {
	base string // http://host:port
	cmd  *exec.Cmd
}

// logText is what the gateway has logged so far.
func (g *tgateway) logText(tb testing.TB) string {
	tb.Helper()
	f, ok := g.cmd.Stdout.(*os.File)
	if !ok {
		tb.Fatal("the gateway's output is not a file")
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// tcluster is node processes and gateways that find each other with
// memberlist (like memberCluster, for tests and benchmarks alike, with any
// number of gateways).
type tcluster struct {
	tb    testing.TB
	pf    string
	seed  string // gossip address of the first node
	nodes []*member
	gws   []*tgateway
	// nodeArgs, if set, gives node i (from 0) extra flags.
	nodeArgs func(i int) []string
	// nodeHost, if set, gives node i (from 0) a host name of its own
	// (startAs; check canSetHostname first).
	nodeHost func(i int) string
}

// newTCluster starts nodes node processes and gateways gateways, and waits
// until every gateway sees every member.
func newTCluster(tb testing.TB, nodes, gateways int) *tcluster {
	tb.Helper()
	return startTCluster(&tcluster{tb: tb, pf: writeProfiles(tb)}, nodes, gateways)
}

// startTCluster starts c's nodes and gateways (newTCluster).
func startTCluster(c *tcluster, nodes, gateways int) *tcluster {
	c.tb.Helper()
	for range nodes {
		c.addNode()
	}
	for range gateways {
		c.addGateway()
	}
	for _, g := range c.gws {
		c.waitMembers(g, nodes+gateways)
	}
	return c
}

func writeProfiles(tb testing.TB) string {
	tb.Helper()
	pf := filepath.Join(tb.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		tb.Fatal(err)
	}
	return pf
}

func (c *tcluster) addNode() *member {
	tb := c.tb
	tb.Helper()
	args := []string{"-profiles", c.pf, "-log-level", "warn"}
	if c.seed != "" {
		args = append(args, "-seeds", c.seed)
	}
	if c.nodeArgs != nil {
		args = append(args, c.nodeArgs(len(c.nodes))...)
	}
	m := &member{}
	var a cli.Addrs
	host := ""
	if c.nodeHost != nil {
		host = c.nodeHost(len(c.nodes))
	}
	m.cmd, a = launchNodeAs(tb, host, testKey, args...)
	m.gossip, m.ops, m.act = a.Gossip, a.Ops, a.Actor
	if c.seed == "" {
		c.seed = m.gossip
	}
	c.nodes = append(c.nodes, m)
	return m
}

func (c *tcluster) addGateway() *tgateway {
	tb := c.tb
	tb.Helper()
	g := &tgateway{}
	g.cmd, g.base, _ = launchGateway(tb, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf)
	c.gws = append(c.gws, g)
	return g
}

// waitMembers polls g's view until it has n members.
func (c *tcluster) waitMembers(g *tgateway, n int) {
	c.tb.Helper()
	want := fmt.Sprint(n)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if seriesValue(scrape(c.tb, g.base+"/metrics"), "qlc_cluster_members_alive") == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.tb.Fatalf("gateway %s never saw %d members", g.base, n)
}

// hosted is how many run coordinators node m has started.
func (c *tcluster) hosted(m *member) string {
	return seriesValue(scrape(c.tb, "http://"+m.ops+"/metrics"), "qlc_coordinators_started_total")
}

// limiterHost returns the node hosting tenant's limiter as gateway g places
// it (topology.Membership.LimiterHost: the rendezvous owner of "tenant/<id>"
// among the coordinator hosts), computed with the cluster package from the
// members g logged as joined (and not since gone).
func (c *tcluster) limiterHost(g *tgateway, tenant string) *member {
	c.tb.Helper()
	var members []qcluster.Member
	sc := bufio.NewScanner(strings.NewReader(g.logText(c.tb)))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var l struct {
			Msg    string   `json:"msg"`
			Member string   `json:"member"`
			Kinds  []string `json:"kinds"`
			Remote string   `json:"remote"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil {
			continue
		}
		switch l.Msg {
		case "cluster: member joined":
			members = append(members, qcluster.Member{Name: l.Member, Kinds: l.Kinds, RemoteAddr: l.Remote})
		case "cluster: member left or declared dead":
			members = slices.DeleteFunc(members, func(m qcluster.Member) bool { return m.Name == l.Member })
		}
	}
	owner, ok := qcluster.Topology{Members: members}.Owner(actors.KindCoordinator, "tenant/"+tenant)
	if !ok {
		c.tb.Fatalf("the gateway's log names no coordinator host (members %v)", members)
	}
	for _, m := range c.nodes {
		if m.act == owner.RemoteAddr {
			return m
		}
	}
	c.tb.Fatalf("the limiter's owner %s (%s) is none of the nodes", owner.Name, owner.RemoteAddr)
	return nil
}

// scrape reads the /metrics at url (with the admin key a gateway's API
// address asks for; nodes' ops addresses ignore it).
func scrape(tb testing.TB, url string) string {
	tb.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

// seriesValue is the value of series (name and labels, as exposed) in a
// Prometheus text exposition; "" if absent.
func seriesValue(text, series string) string {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// reservations caches reservation's answers by profile.
var reservations sync.Map

// reservation is what a gateway reserves for one run of profile asking
// runQuery: computed with the product's own actors.Engine.Reservation on
// the tests' profiles, in this process (an engine without the transport).
func reservation(tb testing.TB, profile string) int64 {
	tb.Helper()
	if r, ok := reservations.Load(profile); ok {
		return r.(int64)
	}
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		tb.Fatal(err)
	}
	providers, _ := actors.BuildProviders(stages, nil)
	cfg := actors.DefaultConfig()
	cfg.Stages, cfg.Providers = stages, providers
	e, err := actors.NewEngine(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	r, err := e.Reservation(actors.RunRequest{Profile: profile, Query: runQuery})
	if err != nil {
		tb.Fatal(err)
	}
	if r <= 0 {
		tb.Fatalf("reservation of a %s run: %d", profile, r)
	}
	reservations.Store(profile, r)
	return r
}

// apiCall sends a JSON request with key (an admin or tenant key) and
// returns the status, the Retry-After header and the decoded body.
func apiCall(method, url, key string, body any) (int, string, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, "", nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return resp.StatusCode, "", nil, fmt.Errorf("%s %s: %d with an unreadable body: %w", method, url, resp.StatusCode, err)
	}
	return resp.StatusCode, resp.Header.Get("Retry-After"), v, nil
}

// mustCall is apiCall that fails the test on a transport error or a status
// other than want.
func mustCall(tb testing.TB, want int, method, url, key string, body any) map[string]any {
	tb.Helper()
	code, _, v, err := apiCall(method, url, key, body)
	if err != nil {
		tb.Fatal(err)
	}
	if code != want {
		tb.Fatalf("%s %s: %d %v, want %d", method, url, code, v, want)
	}
	return v
}

// newTenant is a tenant made through the admin API.
type newTenant struct {
	id, key, keyID string
}

func createTenant(tb testing.TB, base, id, name string, limits map[string]any) newTenant {
	tb.Helper()
	v := mustCall(tb, http.StatusCreated, "POST", base+"/v1/admin/tenants", testAdminKey, map[string]any{"id": id, "name": name, "limits": limits})
	tn := newTenant{id: fmt.Sprint(v["id"]), key: fmt.Sprint(v["key"]), keyID: fmt.Sprint(v["key_id"])}
	if tn.id != id || !strings.HasPrefix(tn.key, "qlc_") {
		tb.Fatalf("created tenant: %v", v)
	}
	return tn
}

// waitKeyStatus polls GET /v1/models on base with key until it answers
// want, and returns how long that took.
func waitKeyStatus(tb testing.TB, base, key string, want int, within time.Duration) time.Duration {
	tb.Helper()
	t0 := time.Now()
	var last int
	for time.Since(t0) < within {
		code, _, _, err := apiCall("GET", base+"/v1/models", key, nil)
		if err == nil && code == want {
			return time.Since(t0)
		}
		last = code
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("GET %s/v1/models with the key answered %d for %v, want %d", base, last, within, want)
	return 0
}

// posted is the outcome of one POST /v1/runs.
type posted struct {
	status     int
	id, code   string // the run's id (201), or the error's code
	retryAfter string
	at         time.Time // when the answer arrived
	err        error     // transport error
}

// postAs posts a run of profile with key. It may run on any goroutine.
// postBurst sends n runs of profile as key at once (n goroutines released
// together), item i to bases[i%len(bases)], and returns each outcome and
// the time from the release until the last answer.
func postBurst(bases []string, key, profile string, n int) ([]posted, time.Duration) {
	results := make([]posted, n)
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-gate
			results[i] = postAs(bases[i%len(bases)], key, profile)
		})
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	return results, time.Since(t0)
}

func postAs(base, key, profile string) posted {
	code, retry, v, err := apiCall("POST", base+"/v1/runs", key, map[string]any{"query": runQuery, "profile": profile})
	p := posted{status: code, retryAfter: retry, at: time.Now(), err: err}
	if err != nil {
		return p
	}
	if code == http.StatusCreated {
		p.id, _ = v["id"].(string)
	} else if e, ok := v["error"].(map[string]any); ok {
		p.code, _ = e["code"].(string)
	}
	return p
}

// streamAs reads a run's whole event stream with key (see readEvents) and
// returns its last event.
func streamAs(t *testing.T, base, key, id string, onEvent func(map[string]any)) map[string]any {
	t.Helper()
	req, err := http.NewRequest("GET", base+"/v1/runs/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET events of run %s: %d", id, resp.StatusCode)
	}
	return readEvents(t, resp.Body, 1, onEvent)
}

// usageList is GET /v1/usage's answer.
type usageList struct {
	Data   []store.Usage `json:"data"`
	Totals struct {
		Runs             int   `json:"runs"`
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"totals"`
}

func usageOf(tb testing.TB, base, key string) usageList {
	tb.Helper()
	if !strings.Contains(base, "/v1/usage") {
		base += "/v1/usage"
	}
	req, err := http.NewRequest("GET", base, nil)
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var u usageList
	if err := json.NewDecoder(resp.Body).Decode(&u); err != nil || resp.StatusCode != 200 {
		tb.Fatalf("GET %s: %d %v", base, resp.StatusCode, err)
	}
	return u
}

// checkTotals compares the answer's totals with the sum of its records.
func checkTotals(tb testing.TB, where string, u usageList) {
	tb.Helper()
	var p, c, tot int64
	for _, r := range u.Data {
		if r.TotalTokens != r.PromptTokens+r.CompletionTokens {
			tb.Errorf("%s: run %s: total_tokens %d != prompt %d + completion %d", where, r.RunID, r.TotalTokens, r.PromptTokens, r.CompletionTokens)
		}
		p, c, tot = p+r.PromptTokens, c+r.CompletionTokens, tot+r.TotalTokens
	}
	if u.Totals.Runs != len(u.Data) || u.Totals.PromptTokens != p || u.Totals.CompletionTokens != c || u.Totals.TotalTokens != tot {
		tb.Errorf("%s: usage totals %+v, but the records sum to runs=%d prompt=%d completion=%d total=%d", where, u.Totals, len(u.Data), p, c, tot)
	}
}

// waitUsage polls base's ledger (key's tenant) until done accepts it.
func waitUsage(tb testing.TB, base, key string, within time.Duration, done func(usageList) bool) usageList {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		u := usageOf(tb, base, key)
		if done(u) {
			return u
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s/v1/usage did not reach the expected state within %v; it has %d records", base, within, len(u.Data))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Two gateways admit 300 (QLC_BUDGET_RACE_N: the figure uses 1000)
// concurrent runs of one tenant whose budget holds
// exactly 40 reservations: the limiter (one per tenant, on a node) admits at
// most 40 whichever gateway asks, each admitted run is billed exactly once,
// in the ledger of the gateway that admitted it, and never above its
// reservation.
func TestBudgetHoldsAcrossTwoGateways(t *testing.T) {
	c := newTCluster(t, 2, 2)
	a, b := c.gws[0].base, c.gws[1].base
	r := reservation(t, "slow")
	const slots = 40
	budget := slots * r
	tn := createTenant(t, a, "budget-two-gateways", "Budget across two gateways", map[string]any{"token_budget": budget, "concurrent_runs": 0}) // the budget alone limits
	waitKeyStatus(t, b, tn.key, 200, 10*time.Second)

	// "slow" runs last minutes: none settles while the others are admitted.
	attempts := 300
	if raceEnabled {
		// Race-built processes on two cores answer a 300-request burst's
		// limiter calls after AdmitTimeout (every POST 503, on the base
		// before issue 10 too); 60 still races 1.5× the budget. The full
		// burst runs in make test's pass without -race.
		attempts = 60
	}
	if n, err := strconv.Atoi(os.Getenv("QLC_BUDGET_RACE_N")); err == nil && n > 0 && n <= 5000 {
		attempts = n
	}
	results, elapsed := postBurst([]string{c.gws[0].base, c.gws[1].base}, tn.key, "slow", attempts)

	admittedBy := map[string]string{} // run id -> gateway base
	outcomes := map[string]int{}
	for i, p := range results {
		switch {
		case p.err != nil:
			t.Errorf("POST %d: %v", i, p.err)
			continue
		case p.status == http.StatusCreated && p.id != "":
			admittedBy[p.id] = c.gws[i%2].base
		case p.status == http.StatusTooManyRequests && p.code == "token_budget":
			if p.retryAfter == "" {
				t.Errorf("POST %d: 429 without Retry-After", i)
			}
		case p.status == http.StatusServiceUnavailable && p.code == "limiter_unavailable":
			// The limiter did not answer in time: refused, not admitted.
		default:
			t.Errorf("POST %d: %d %q, want 201, 429 token_budget or 503 limiter_unavailable", i, p.status, p.code)
		}
		outcomes[fmt.Sprintf("%d %s", p.status, p.code)]++
	}
	n := int64(len(admittedBy))
	t.Logf("figure: %d concurrent POSTs over 2 gateways in %v: %v; reservation R=%d tokens, budget=%d (40 R)", attempts, elapsed.Round(time.Millisecond), outcomes, r, budget)
	t.Logf("figure: admitted %d of the %d runs the budget holds (%.0f%%)", n, slots, 100*float64(n)/slots)
	if n*r > budget {
		t.Fatalf("the budget was overrun: %d runs admitted × %d reserved = %d > budget %d", n, r, n*r, budget)
	}
	if n == 0 {
		t.Fatal("no run was admitted")
	}

	// Cancel every admitted run on the gateway that admitted it.
	var wg sync.WaitGroup
	for id, base := range admittedBy {
		wg.Go(func() {
			code, _, v, err := apiCall("DELETE", base+"/v1/runs/"+id, tn.key, nil)
			if err != nil || code != 200 || v["status"] != "cancelled" {
				t.Errorf("DELETE run %s: %d %v %v", id, code, v["status"], err)
			}
		})
	}
	wg.Wait()
	per := map[string]int{}
	for _, base := range admittedBy {
		per[base]++
	}
	// Each ledger gets exactly the runs its gateway admitted.
	seen := map[string]int{}
	var billed int64
	for _, base := range []string{a, b} {
		// This gateway's ledger alone (GET /v1/usage sums every gateway's).
		u := waitUsage(t, base+"/v1/usage?scope=gateway", tn.key, 30*time.Second, func(u usageList) bool { return len(u.Data) >= per[base] })
		checkTotals(t, base, u)
		for _, rec := range u.Data {
			seen[rec.RunID]++
			billed += rec.TotalTokens
			switch {
			case admittedBy[rec.RunID] == "":
				t.Errorf("%s billed run %s, which was never admitted", base, rec.RunID)
			case admittedBy[rec.RunID] != base:
				t.Errorf("%s billed run %s, which %s admitted", base, rec.RunID, admittedBy[rec.RunID])
			}
			if rec.Status != store.StatusCancelled || rec.TenantID != tn.id {
				t.Errorf("run %s billed as %s to %s, want cancelled to %s", rec.RunID, rec.Status, rec.TenantID, tn.id)
			}
			if rec.TotalTokens > r {
				t.Errorf("run %s billed %d tokens, above its reservation %d", rec.RunID, rec.TotalTokens, r)
			}
		}
	}
	for id := range admittedBy {
		if seen[id] != 1 {
			t.Errorf("admitted run %s has %d usage records, want 1", id, seen[id])
		}
	}
	t.Logf("figure: %d cancelled runs billed %d tokens in all (%.2f%% of the budget)", len(seen), billed, 100*float64(billed)/float64(budget))
	if billed > budget {
		t.Fatalf("the ledgers bill %d tokens, above the budget %d", billed, budget)
	}

	// The limiter was settled at the real counts: what the cancelled runs
	// did not use is free again, whichever gateway asks.
	var again posted
	deadline := time.Now().Add(10 * time.Second)
	for {
		again = postAs(b, tn.key, "slow")
		if again.status == http.StatusCreated || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if again.status != http.StatusCreated {
		t.Fatalf("after the runs settled for %d of %d tokens, a new run is refused: %d %s", billed, budget, again.status, again.code)
	}
	mustCall(t, 200, "DELETE", b+"/v1/runs/"+again.id, tn.key, nil)
}

// The node hosting a tenant's limiter is killed (kill -9) while half the
// tenant's budget is reserved by running runs: the limiter starts again on
// the other node, rebuilds its counters from the gateway's ledger (the open
// reservations included), and goes on refusing what the budget does not
// hold. The runs on the killed node move to the other and are billed; the
// ledger bills no more than the budget, and at every admission settled
// usage + open reservations + the new run fitted in it.
func TestBudgetSurvivesNodeLoss(t *testing.T) {
	c := newTCluster(t, 2, 1)
	gw := c.gws[0]
	r := reservation(t, "medium")
	const slots = 30
	budget := slots * r
	tn := createTenant(t, gw.base, "budget-node-loss", "Budget through a node loss", map[string]any{"token_budget": budget, "concurrent_runs": 0}) // the budget alone limits
	victim := c.limiterHost(gw, tn.id)

	type admittedRun struct {
		id string
		at time.Time // when its 201 arrived
	}
	var runs []admittedRun
	// Half the budget, in runs that take a few seconds.
	for len(runs) < slots/2 {
		p := postAs(gw.base, tn.key, "medium")
		if p.err != nil || p.status != http.StatusCreated {
			t.Fatalf("POST before the kill: %d %s %v", p.status, p.code, p.err)
		}
		runs = append(runs, admittedRun{p.id, p.at})
	}
	before := len(runs)
	onVictim := c.hosted(victim)
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()

	// Go on until the budget refuses.
	var refused posted
	unavailable := map[string]int{}
	var firstAfter time.Duration
	for attempt := 0; refused.status == 0; attempt++ {
		if attempt > 400 || time.Since(killed) > 90*time.Second {
			t.Fatalf("no token_budget refusal after %d attempts in %v (%d runs admitted)", attempt, time.Since(killed), len(runs))
		}
		p := postAs(gw.base, tn.key, "medium")
		switch {
		case p.err != nil:
			t.Fatal(p.err)
		case p.status == http.StatusCreated:
			runs = append(runs, admittedRun{p.id, p.at})
			if firstAfter == 0 {
				firstAfter = time.Since(killed)
			}
		case p.status == http.StatusTooManyRequests && p.code == "token_budget":
			refused = p
		case p.status == http.StatusServiceUnavailable && (p.code == "limiter_unavailable" || p.code == "no_node"):
			// The dead node is still a member until the failure detector
			// says otherwise: the gateway asks the dead limiter.
			unavailable[p.code]++
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("POST after the kill: %d %s", p.status, p.code)
		}
	}
	t.Logf("figure: R=%d, budget=%d (30 R); %d runs admitted before the kill (the limiter's node had started %s runs), %d after; "+
		"first admission %v after the kill (refused meanwhile: %v)",
		r, budget, before, onVictim, len(runs)-before, firstAfter.Round(time.Millisecond), unavailable)
	// The first POST follows the kill by far less than the failure detector
	// needs: it must have found the limiter's node dead — refused, or asked
	// again at the new owner (the gateway logs each retry with the host).
	if unavailable["limiter_unavailable"] == 0 &&
		!strings.Contains(gw.logText(t), `"msg":"tenant limiter did not answer; asking again","tenant":"`+tn.id+`","host":"`+victim.act+`"`) {
		t.Errorf("no admission failed on, or was retried after, the dead limiter: was the killed node %s the limiter's (limiterHost mirrors topology.Membership.LimiterHost)?", victim.act)
	}

	// Every run ends (those on the dead node on the other) and is billed once.
	u := waitUsage(t, gw.base, tn.key, 120*time.Second, func(u usageList) bool { return len(u.Data) >= len(runs) })
	checkTotals(t, gw.base, u)
	rec := map[string]store.Usage{}
	statuses := map[string]int{}
	var billed int64
	for _, x := range u.Data {
		if _, dup := rec[x.RunID]; dup {
			t.Errorf("run %s billed twice", x.RunID)
		}
		rec[x.RunID] = x
		statuses[x.Status]++
		billed += x.TotalTokens
	}
	for _, run := range runs {
		if _, ok := rec[run.id]; !ok {
			t.Errorf("admitted run %s has no usage record", run.id)
		}
	}
	if len(rec) != len(runs) {
		t.Errorf("the ledger has %d records for %d admitted runs", len(rec), len(runs))
	}
	// Runs the kill interrupted: moved (a stage restarted) or failed; billed all the same.
	interrupted := 0
	for _, run := range runs[:before] {
		moved := false
		streamAs(t, gw.base, tn.key, run.id, func(d map[string]any) { moved = moved || d["type"] == "stage_restarted" })
		if x := rec[run.id]; moved || x.Status == store.StatusFailed {
			interrupted++
			if x.TotalTokens == 0 {
				t.Errorf("run %s, interrupted by the kill, was billed no tokens (%s)", run.id, x.Status)
			}
		}
	}
	t.Logf("figure: %d runs billed %d tokens (%.1f%% of the budget); statuses %v; %d runs interrupted by the kill", len(rec), billed, 100*float64(billed)/float64(budget), statuses, interrupted)
	if interrupted == 0 {
		t.Errorf("no run was interrupted by the kill (the killed node had started %s runs)", onVictim)
	}
	if billed > budget {
		t.Errorf("the ledger bills %d tokens, above the budget %d", billed, budget)
	}
	// At each admission, what the limiter must have counted: runs ended
	// before it at their billed count (at most their reservation), the
	// others at their reservation, plus the new one.
	for k, run := range runs {
		load := r
		for _, prev := range runs[:k] {
			if x := rec[prev.id]; x.EndedAt.Before(run.at) {
				load += min(x.TotalTokens, r)
			} else {
				load += r
			}
		}
		if load > budget {
			t.Errorf("run %d (%s) was admitted while settled usage + open reservations + its own came to %d, above the budget %d", k, run.id, load, budget)
		}
	}
}

// kill -9 of a gateway (local mode: it hosts its runs) while runs go on,
// twice: after each restart on the same data folder every admitted run has
// exactly one usage record, completed if it completed before (and was
// recorded), abandoned if the kill cut it, and the ledger's totals are the
// sum of its records.
func TestLedgerSurvivesKillOfTheGateway(t *testing.T) {
	pf := writeProfiles(t)
	// Each restart listens on a new port (port 0) with the same data folder.
	args := []string{"-local", "-data-dir", t.TempDir(), "-profiles", pf}
	gw, base, _ := launchGateway(t, testKey, args...)

	recorded := map[string]store.Usage{} // every record seen so far, by run id
	for round := 1; round <= 2; round++ {
		// 20 runs one after another, each to its end and into the ledger.
		var completed []string
		for range 20 {
			p := postAs(base, testTenantKey, "quick")
			if p.err != nil || p.status != http.StatusCreated {
				t.Fatalf("round %d: POST: %d %s %v", round, p.status, p.code, p.err)
			}
			if last := streamEvents(t, base, p.id, nil); last["type"] != "run_completed" {
				t.Fatalf("round %d: run ended with %v", round, last)
			}
			completed = append(completed, p.id)
		}
		waitUsage(t, base, testTenantKey, 10*time.Second, func(u usageList) bool {
			have := map[string]bool{}
			for _, x := range u.Data {
				have[x.RunID] = true
			}
			return !slices.ContainsFunc(completed, func(id string) bool { return !have[id] })
		})

		// 20 more, 4 at a time; kill -9 once the 10th of them is admitted.
		var (
			mu     sync.Mutex
			cut    []string // admitted in this batch
			lost   int      // POSTs whose answer the kill swallowed
			killed bool
			wg     sync.WaitGroup
		)
		for range 4 {
			wg.Go(func() {
				for range 5 {
					p := postAs(base, testTenantKey, "quick")
					mu.Lock()
					switch {
					case p.err != nil:
						lost++
					case p.status == http.StatusCreated:
						cut = append(cut, p.id)
						if len(cut) == 10 && !killed {
							killed = true
							_ = gw.Process.Kill()
						}
					default:
						t.Errorf("round %d: POST: %d %s", round, p.status, p.code)
					}
					stop := killed || p.err != nil
					mu.Unlock()
					if stop {
						return
					}
				}
			})
		}
		wg.Wait()
		if !killed {
			t.Fatalf("round %d: only %d runs admitted; the gateway was not killed", round, len(cut))
		}
		_ = gw.Wait()
		t0 := time.Now()
		gw, base, _ = launchGateway(t, testKey, args...)

		// Every admitted run is accounted after the restart.
		u := waitUsage(t, base, testTenantKey, 20*time.Second, func(u usageList) bool {
			have := map[string]bool{}
			for _, x := range u.Data {
				have[x.RunID] = true
			}
			return !slices.ContainsFunc(cut, func(id string) bool { return !have[id] })
		})
		t.Logf("figure: round %d: restart → every cut run recorded in %v", round, time.Since(t0).Round(time.Millisecond))
		checkTotals(t, base, u)
		now := map[string]store.Usage{}
		for _, x := range u.Data {
			if _, dup := now[x.RunID]; dup {
				t.Errorf("round %d: run %s has two usage records", round, x.RunID)
			}
			now[x.RunID] = x
		}
		for id, old := range recorded {
			if x, ok := now[id]; !ok || x.Status != old.Status || x.TotalTokens != old.TotalTokens {
				t.Errorf("round %d: run %s was recorded %s/%d tokens, now %+v", round, id, old.Status, old.TotalTokens, x)
			}
		}
		for _, id := range completed {
			if x := now[id]; x.Status != store.StatusCompleted || x.TotalTokens == 0 {
				t.Errorf("round %d: run %s completed before the kill, recorded as %s with %d tokens", round, id, x.Status, x.TotalTokens)
			}
		}
		statuses := map[string]int{}
		for _, id := range cut {
			x := now[id]
			statuses[x.Status]++
			if x.Status != store.StatusCompleted && x.Status != store.StatusAbandoned {
				t.Errorf("round %d: run %s, admitted before the kill, recorded as %q", round, id, x.Status)
			}
		}
		// Records of runs no client heard of: admitted as the kill came.
		unknown := 0
		for id, x := range now {
			if _, ok := recorded[id]; ok || slices.Contains(completed, id) || slices.Contains(cut, id) {
				continue
			}
			unknown++
			if x.Status != store.StatusAbandoned {
				t.Errorf("round %d: run %s, whose POST got no answer, recorded as %s", round, id, x.Status)
			}
		}
		if unknown > lost {
			t.Errorf("round %d: %d records of unanswered POSTs, but only %d POSTs went unanswered", round, unknown, lost)
		}
		t.Logf("figure: round %d: %d runs admitted in the killed batch: %v; %d POSTs cut by the kill (%d of them recorded abandoned)", round, len(cut), statuses, lost, unknown)
		if statuses[store.StatusAbandoned] == 0 {
			t.Errorf("round %d: the kill cut no run (statuses %v)", round, statuses)
		}
		recorded = now
	}
}

// Admin changes made on one gateway reach the others at once: a tenant
// created on A authenticates on B; a key revoked on B is refused on A; a
// limit changed on A is enforced for runs admitted through B (and A).
func TestAdminChangesReachOtherGateways(t *testing.T) {
	c := newTCluster(t, 1, 2)
	a, b := c.gws[0].base, c.gws[1].base
	tn := createTenant(t, a, "admin-replication", "Admin replication", nil)
	d := waitKeyStatus(t, b, tn.key, 200, 5*time.Second)
	t.Logf("figure: a tenant created on A authenticates on B after %v", d.Round(time.Millisecond))

	mustCall(t, 200, "DELETE", b+"/v1/admin/keys/"+tn.keyID, testAdminKey, nil)
	d = waitKeyStatus(t, a, tn.key, http.StatusUnauthorized, 5*time.Second)
	t.Logf("figure: a key revoked on B is refused on A after %v", d.Round(time.Millisecond))

	k := mustCall(t, http.StatusCreated, "POST", a+"/v1/admin/tenants/"+tn.id+"/keys", testAdminKey, nil)
	key, _ := k["key"].(string)
	waitKeyStatus(t, b, key, 200, 5*time.Second)

	mustCall(t, 200, "PATCH", a+"/v1/admin/tenants/"+tn.id, testAdminKey, map[string]any{"limits": map[string]any{"concurrent_runs": 1}})
	t0 := time.Now()
	for {
		v := mustCall(t, 200, "GET", b+"/v1/admin/tenants/"+tn.id, testAdminKey, nil)
		if lim, _ := v["limits"].(map[string]any); lim["concurrent_runs"] == 1.0 {
			break
		}
		if time.Since(t0) > 5*time.Second {
			t.Fatalf("B never learned the new limits: %v", v)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("figure: a limit changed on A is on B after %v", time.Since(t0).Round(time.Millisecond))

	first := postAs(b, key, "slow")
	if first.err != nil || first.status != http.StatusCreated {
		t.Fatalf("first run through B: %d %s %v", first.status, first.code, first.err)
	}
	for _, base := range []string{b, a} {
		p := postAs(base, key, "slow")
		if p.status != http.StatusTooManyRequests || p.code != "concurrent_runs" || p.retryAfter == "" {
			t.Fatalf("second concurrent run through %s: %d %q (Retry-After %q), want 429 concurrent_runs", base, p.status, p.code, p.retryAfter)
		}
	}
	// Once the first run is cancelled (and settled) the slot is free again.
	mustCall(t, 200, "DELETE", b+"/v1/runs/"+first.id, key, nil)
	t0 = time.Now()
	for {
		p := postAs(a, key, "slow")
		if p.status == http.StatusCreated {
			mustCall(t, 200, "DELETE", a+"/v1/runs/"+p.id, key, nil)
			break
		}
		if p.code != "concurrent_runs" || time.Since(t0) > 10*time.Second {
			t.Fatalf("after the first run ended, a run through A: %d %q", p.status, p.code)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
