package grafana

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/cpuid/v2"
	"go.yaml.in/yaml/v3"

	"github.com/qlc-project/qlc/client"
)

// The simulated providers of the test cluster: quick runs complete, flaky's
// every request fails (its breaker opens after two), long runs last a few
// seconds (a node can be killed under them), slow ones are cancelled or
// hold a tenant's only run slot. Prices make the cost panel move.
const testProfiles = `
default_profile: quick
providers:
  quick: {kind: sim, sim: {itl: 2ms, output_tokens: 40}}
  flaky: {kind: sim, sim: {itl: 1ms, output_tokens: 20, error_rate: 1, error_kind: server}, breaker: {failures: 2, open_for: 1m}}
  long:  {kind: sim, sim: {itl: 5ms, output_tokens: 250}}
  slow:  {kind: sim, sim: {itl: 20ms, output_tokens: 2000}}
profiles:
  quick:
    provider: quick
    stages: {generator: {model: sim-small}, refiner: {model: sim-large}, validator: {model: sim-small}, curator: {model: sim-large}}
  flaky:
    provider: flaky
    stages: {generator: {model: sim-flaky}, refiner: {model: sim-flaky}, validator: {model: sim-flaky}, curator: {model: sim-flaky}}
  long:
    provider: long
    stages: {generator: {model: sim-small}, refiner: {model: sim-large}, validator: {model: sim-small}, curator: {model: sim-large}}
  slow:
    provider: slow
    stages: {generator: {model: sim-small}, refiner: {model: sim-large}, validator: {model: sim-small}, curator: {model: sim-large}}
prices:
  sim-small: {input: 0.15, output: 0.60}
  sim-large: {input: 2.50, output: 10.00}
`

// allowedEmpty are the queries that may return no data after the test's
// load, each with the reason; the metric must still exist. Keyed by panel
// title and refId. Filled in by the test for what the machine cannot do.
var allowedEmpty = map[string]string{}

// mayBeZero are the queries whose series may stay at 0 through the load:
// what it does not do, on purpose. Every other query must have a value
// above 0 at some point of the test's time range (a dashboard of flat
// zeros can hide a query that selects the wrong series).
var mayBeZero = map[string]string{
	"Mailbox queued now by actor kind/A":      "at this load a message waits in a mailbox for microseconds: a scrape rarely finds one",
	"Mailbox drops and cut-off subscribers/A": "no mailbox fills up at this load (actors/mailbox.go: the bounds are in the thousands)",
	"Mailbox drops and cut-off subscribers/B": "every watcher keeps up; a lagging subscriber is cmd/gateway's and actors' tests' business",
	"Suspicions, deaths, fencings/C":          "no process is accused while alive (refutations need a paused process: cmd/node TestPausedNodeFencesAndRejoins)",
	"Suspicions, deaths, fencings/D":          "no process is declared dead while alive (fencing needs a paused process: cmd/node TestPausedNodeFencesAndRejoins)",
}

// cluster is the processes under test.
type cluster struct {
	t        *testing.T
	bin      string
	dir      string
	profiles string
	env      []string
	gwURL    string
	gwOps    string
	nodes    []*proc
	gateway  *proc
	procs    []*proc
	mu       sync.Mutex
}

type proc struct {
	name  string
	cmd   *exec.Cmd
	addrs addrs
	log   string
	done  chan struct{}
}

// addrs is what a command writes to its -addr-file (cmd/internal/cli.Addrs).
type addrs struct {
	HTTP   string `json:"http"`
	Ops    string `json:"ops"`
	Actor  string `json:"actor"`
	Gossip string `json:"gossip"`
}

// TestDashboardAgainstPrometheus runs the dashboard's every query against a
// real Prometheus that scraped a real cluster under load.
func TestDashboardAgainstPrometheus(t *testing.T) {
	if os.Getenv("QLC_SKIP_PROMETHEUS") == "1" {
		t.Skip("QLC_SKIP_PROMETHEUS=1: the dashboard is not checked against Prometheus")
	}
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("the prometheus binary is not installed: apt-get install prometheus (Debian's package; .ci/run installs it), or set QLC_SKIP_PROMETHEUS=1 to skip this test")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	defer cancel()

	c := startCluster(t)
	t.Logf("cluster up in %v", time.Since(start).Round(time.Millisecond))
	promStart := time.Now()
	prom := startPrometheus(t, promBin, c)
	prom.waitTargets(ctx, 4)
	t.Logf("prometheus scraping 4 targets after %v", time.Since(start).Round(time.Millisecond))

	c.load(ctx)
	t.Logf("load done after %v", time.Since(start).Round(time.Millisecond))
	// Every process's last counters are in Prometheus once it scraped the
	// gateway after the failover and the fallbacks.
	prom.waitFor(ctx, `sum(qlc_failovers_total) >= 1 and sum(qlc_tokenizer_requests_total{path="local-fallback"}) >= 1`)
	time.Sleep(2 * time.Second) // two more scrapes of every process

	if !cpuid.CPU.Supports(cpuid.AVX2) {
		allowedEmpty["Tokenizer batch size p50 / p99/A"] = "no AVX2 on this machine: no node hosts tokenizer actors, every request is a local fallback"
		allowedEmpty["Tokenizer batch size p50 / p99/B"] = allowedEmpty["Tokenizer batch size p50 / p99/A"]
	}
	checkDashboard(t, ctx, prom, promStart)
	t.Logf("done in %v", time.Since(start).Round(time.Millisecond))
}

// checkDashboard evaluates every query of every panel and of every variable.
func checkDashboard(t *testing.T, ctx context.Context, prom *prometheus, from time.Time) {
	d := loadDashboard(t)
	names := map[string]bool{}
	for _, n := range prom.labelValues(ctx, "__name__", "") {
		names[n] = true
	}
	subst := map[string]string{}
	for k, v := range builtins {
		subst[k] = v
	}
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			subst[v.Name] = v.AllValue
		}
	}
	expand := func(expr string) string {
		return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
			sm := grafanaVar.FindStringSubmatch(m)
			if v, ok := subst[sm[1]+sm[2]]; ok {
				return v
			}
			return m
		})
	}

	// The variables list what the scrape configuration names.
	labelValues := regexp.MustCompile(`^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		m := labelValues.FindStringSubmatch(v.queryText())
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(...)", v.Name, v.queryText())
			continue
		}
		got := prom.labelValues(ctx, m[2], expand(m[1]))
		switch {
		case len(got) == 0:
			t.Errorf("variable %s: %s lists nothing", v.Name, v.queryText())
		case v.Name == "job" && !(slices.Contains(got, gatewayJob) && slices.Contains(got, nodeJob)):
			t.Errorf("variable job lists %v, want %s and %s", got, gatewayJob, nodeJob)
		case v.Name == "instance" && len(got) != 4:
			t.Errorf("variable instance lists %v, want the 4 processes", got)
		}
	}

	// A metric's name is followed by its selector (every query selects
	// job and instance); label names in by (...) are not.
	metricName := regexp.MustCompile(`\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{`)
	checked, empty, zero := 0, 0, 0
	for _, p := range d.dataPanels() {
		for _, tg := range p.Targets {
			key := p.Title + "/" + tg.RefID
			expr := expand(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q query %s: variables left after expansion: %s", p.Title, tg.RefID, expr)
				continue
			}
			metrics := metricName.FindAllStringSubmatch(expr, -1)
			if len(metrics) == 0 {
				t.Errorf("panel %q query %s: no metric with a selector: %s", p.Title, tg.RefID, tg.Expr)
			}
			for _, m := range metrics {
				if n := m[1]; !names[n] {
					t.Errorf("panel %q query %s: metric %s is exported by no process (renamed?): %s", p.Title, tg.RefID, n, tg.Expr)
				}
			}
			// The panel as Grafana draws it over the test's time range.
			res, err := prom.queryRange(ctx, expr, from, time.Now(), time.Second)
			checked++
			top := maxValue(res)
			switch {
			case err != nil:
				t.Errorf("panel %q query %s: %v: %s", p.Title, tg.RefID, err, expr)
			case len(res) == 0 && allowedEmpty[key] != "":
				empty++
				t.Logf("panel %q query %s: no data, allowed: %s", p.Title, tg.RefID, allowedEmpty[key])
			case len(res) == 0:
				t.Errorf("panel %q query %s returned no data: %s", p.Title, tg.RefID, expr)
			case math.IsInf(top, -1):
				t.Errorf("panel %q query %s returned only NaN (%d series): %s", p.Title, tg.RefID, len(res), expr)
			case top <= 0 && mayBeZero[key] == "":
				t.Errorf("panel %q query %s stayed at %g in all %d series through the load: %s", p.Title, tg.RefID, top, len(res), expr)
			case top <= 0:
				zero++
				t.Logf("panel %q query %s: 0, allowed: %s", p.Title, tg.RefID, mayBeZero[key])
			default:
				t.Logf("panel %q query %s: %d series, max %.4g", p.Title, tg.RefID, len(res), top)
			}
		}
	}
	t.Logf("%d queries evaluated, %d allowed to be empty, %d allowed to stay at 0", checked, empty, zero)
	if checked < 40 {
		t.Errorf("only %d queries", checked)
	}
}

// series is one series of a range query's answer.
type series struct {
	Metric map[string]string `json:"metric"`
	Values [][2]any          `json:"values"`
}

// maxValue is the largest finite value of a result (-Inf: none).
func maxValue(res []series) float64 {
	m := math.Inf(-1)
	for _, s := range res {
		for _, v := range s.Values {
			if str, ok := v[1].(string); ok {
				if f, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
					m = max(m, f)
				}
			}
		}
	}
	return m
}

// startCluster builds the commands and starts three nodes (the first the
// only tokenizer host, the second with the flight recorder on) and a
// gateway, all on loopback ports the kernel chose.
func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, bin: t.TempDir(), dir: t.TempDir()}
	build := exec.Command("go", "build", "-o", c.bin+string(filepath.Separator),
		"github.com/qlc-project/qlc/cmd/node", "github.com/qlc-project/qlc/cmd/gateway")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	write := func(name, text string) string {
		p := filepath.Join(c.dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Keys are made here, never committed.
	clusterKey := make([]byte, 32)
	_, _ = rand.Read(clusterKey)
	tenantKey, smallKey, adminKey := randomKey(), randomKey(), randomKey()
	tenants := write("tenants.yaml", fmt.Sprintf(`admin_keys: [%s]
tenants:
  - {id: acme, name: Acme, keys: [%s], limits: {concurrent_runs: 0}}
  - {id: small, name: Small, keys: [%s], limits: {concurrent_runs: 1}}
`, adminKey, tenantKey, smallKey))
	profiles := write("profiles.yaml", testProfiles)
	c.profiles = profiles
	c.env = append(os.Environ(), "QLC_CLUSTER_KEY="+base64.StdEncoding.EncodeToString(clusterKey), "QLC_LOG_LEVEL=warn")
	t.Cleanup(c.stop)

	common := []string{"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-ops-addr", "127.0.0.1:0", "-profiles", profiles}
	n1 := c.start("node1", "node", nil, append(common, "-drain-timeout", "1s")...)
	seed := []string{"-seeds", n1.addrs.Gossip, "-drain-timeout", "1s", "-disable-features", "avx2"}
	n2 := c.start("node2", "node", nil, append(append(common, seed...),
		"-trace-slow-stage", "5ms", "-trace-dir", filepath.Join(c.dir, "traces"))...)
	// node3 runs one run at a time: others wait for its slot.
	n3 := c.start("node3", "node", nil, append(append(common, seed...), "-run-slots", "1", "-run-slot-headroom", "-1")...)
	c.nodes = []*proc{n1, n2, n3}
	c.gateway = c.start("gateway", "gateway", []string{"QLC_TENANTS=" + tenants, "QLC_DATA_DIR=" + filepath.Join(c.dir, "gateway-data")},
		append(common, "-addr", "127.0.0.1:0", "-seeds", n1.addrs.Gossip)...)
	c.gwURL, c.gwOps = "http://"+c.gateway.addrs.HTTP, "http://"+c.gateway.addrs.Ops
	keys = testKeys{tenant: tenantKey, small: smallKey}
	waitUntil(t, 20*time.Second, "the gateway to see 4 members", func() bool {
		return metricValue(c.gwOps, "qlc_cluster_members_alive") == 4
	})
	return c
}

// keys are the tenants' API keys of the running test.
var keys testKeys

type testKeys struct{ tenant, small string }

// randomKey is an API key: qlc_ and 40 hex digits (160 bits).
func randomKey() string {
	b := make([]byte, 20)
	_, _ = rand.Read(b)
	return "qlc_" + hex.EncodeToString(b)
}

// start runs a command with -addr-file and waits for its addresses and
// its readiness.
func (c *cluster) start(name, bin string, env []string, args ...string) *proc {
	t := c.t
	t.Helper()
	p := &proc{name: name, log: filepath.Join(c.dir, name+".log"), done: make(chan struct{})}
	af := filepath.Join(c.dir, name+"-addrs.json")
	p.cmd = exec.Command(filepath.Join(c.bin, bin), append(args, "-addr-file", af)...)
	p.cmd.Env = append(slices.Clone(c.env), env...)
	logf, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	waitUntil(t, 30*time.Second, name+" to write its addresses", func() bool {
		b, err := os.ReadFile(af)
		return err == nil && json.Unmarshal(b, &p.addrs) == nil && p.addrs.Ops != ""
	})
	waitUntil(t, 20*time.Second, name+" to be ready", func() bool {
		resp, err := http.Get("http://" + p.addrs.Ops + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// stop ends every process: SIGTERM, SIGKILL after 5 s; on failure the
// logs' ends go to the test log.
func (c *cluster) stop() {
	c.mu.Lock()
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	for _, p := range procs {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(5 * time.Second)
	for _, p := range procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	if c.t.Failed() {
		for _, p := range procs {
			c.t.Logf("%s log (end):\n%s", p.name, tail(p.log, 3000))
		}
	}
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// load drives what every panel shows, in about 15 s: completed runs of two
// models, failing runs (provider errors, an open breaker), a cancelled run,
// runs refused at admission, bad keys, tokenizer calls, runs watched over
// SSE, and a node killed under its runs (a failover, stage restarts,
// suspicions, tokenizer fallbacks: the killed node was the only tokenizer
// host) and replaced (joins). An event that makes a new series is
// repeated a scrape or more later: a counter's first sample has no
// increase, so a lone event shows in no rate().
func (c *cluster) load(ctx context.Context) {
	t := c.t
	t.Helper()
	acme := c.client(keys.tenant)
	small := c.client(keys.small)
	var bg sync.WaitGroup
	errs := make(chan error, 64)
	defer func() {
		bg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}()

	// Tokenizer calls all along, a few per scrape: served by node1 while
	// it lives, counted by the gateway itself after.
	stopTokenize := make(chan struct{})
	defer close(stopTokenize)
	bg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopTokenize:
				return
			case <-tick.C:
			}
			if _, err := acme.Tokenize(ctx, client.TokenizeRequest{Model: "gpt-4o", Text: "count these tokens " + strconv.Itoa(i)}); err != nil {
				errs <- fmt.Errorf("tokenize: %w", err)
				return
			}
		}
	})

	// Failing runs, one every 1.2 s (each node sees some at different
	// scrapes; its breaker opens after two failures).
	bg.Go(func() {
		for range 6 {
			r, err := c.runToEnd(ctx, acme, "flaky")
			if err != nil {
				errs <- err
				return
			}
			if r.Status != "failed" {
				errs <- fmt.Errorf("a flaky run ended %s, want failed", r.Status)
			}
			time.Sleep(1200 * time.Millisecond)
		}
	})

	// Completed runs, six at a time: more than the two full nodes' share,
	// so runs also wait for node3's one slot (the gateway counts its own
	// runs on each node and offers a node at its limit last: with four at a
	// time node3's queue stayed empty in one CI run of four).
	work := make(chan string, 64)
	for range 36 {
		work <- "quick"
	}
	close(work)
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for profile := range work {
				r, err := c.runToEnd(ctx, acme, profile)
				if err != nil {
					errs <- err
					return
				}
				if r.Status != "completed" {
					errs <- fmt.Errorf("a %s run ended %s (%+v)", profile, r.Status, r.Error)
				}
			}
		})
	}

	// Twice, 1.5 s apart: a cancelled run; a run of a tenant at its limit
	// (concurrent_runs 1), refused; a bad key, refused.
	for round := range 2 {
		slow, err := acme.CreateRun(ctx, client.RunRequest{Query: "What is a vector clock?", Profile: "slow"})
		if err != nil {
			t.Fatalf("create run: %v", err)
		}
		held, err := small.CreateRun(ctx, client.RunRequest{Query: "What is a vector clock?", Profile: "slow"})
		if err != nil {
			t.Fatalf("create run: %v", err)
		}
		_, err = small.CreateRun(ctx, client.RunRequest{Query: "And a second one?", Profile: "quick"})
		var apiErr *client.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusTooManyRequests {
			t.Fatalf("a second run of a tenant with concurrent_runs 1: %v, want HTTP 429", err)
		}
		if _, err := c.client(randomKey()).CreateRun(ctx, client.RunRequest{Query: "q"}); !errors.As(err, &apiErr) || apiErr.Status != http.StatusUnauthorized {
			t.Fatalf("a run with an unknown key: %v, want HTTP 401", err)
		}
		time.Sleep(300 * time.Millisecond) // some tokens first
		for _, r := range []struct {
			cl *client.Client
			id string
		}{{acme, slow.ID}, {small, held.ID}} {
			if got, err := r.cl.CancelRun(ctx, r.id); err != nil || got.Status != "cancelled" {
				t.Fatalf("cancel: %v %+v", err, got)
			}
		}
		if round == 0 {
			time.Sleep(1500 * time.Millisecond)
		}
	}
	wg.Wait()

	// A node killed under its runs: long runs, each watched over SSE,
	// until one holds a run slot of node1; then SIGKILL. Every run still
	// completes, and its watcher sees it end.
	victim := c.nodes[0]
	var watchers sync.WaitGroup
	for n := 0; n < 12 && metricValue("http://"+victim.addrs.Ops, "qlc_run_slots_in_use") < 1; n++ {
		r, err := acme.CreateRun(ctx, client.RunRequest{Query: "Explain failover.", Profile: "long"})
		if err != nil {
			t.Fatalf("create run: %v", err)
		}
		watchers.Go(func() {
			if err := c.watch(ctx, acme, r.ID); err != nil {
				errs <- err
			}
		})
		time.Sleep(100 * time.Millisecond)
	}
	if metricValue("http://"+victim.addrs.Ops, "qlc_run_slots_in_use") < 1 {
		t.Fatalf("no run landed on %s", victim.name)
	}
	time.Sleep(700 * time.Millisecond) // into its first stages
	_ = victim.cmd.Process.Kill()
	<-victim.done
	watchers.Wait()
	waitUntil(t, 20*time.Second, "a failover counted by the gateway", func() bool {
		return metricValue(c.gwOps, "qlc_failovers_total") >= 1
	})

	// A replacement joins (not scraped: the others count the join), and
	// quick runs go on, so rates are current.
	c.start("node4", "node", nil, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-ops-addr", "127.0.0.1:0",
		"-profiles", c.profiles, "-seeds", c.nodes[1].addrs.Gossip, "-drain-timeout", "1s", "-disable-features", "avx2")
	for range 6 {
		if _, err := c.runToEnd(ctx, acme, "quick"); err != nil {
			t.Fatal(err)
		}
	}
}

// watch reads a run's events over SSE until its end, and checks it
// completed.
func (c *cluster) watch(ctx context.Context, cl *client.Client, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st := cl.Events(ctx, id, "")
	defer st.Close()
	for {
		ev, err := st.Next()
		if err != nil {
			return fmt.Errorf("run %s: events: %w", id, err)
		}
		if ev.Terminal() {
			break
		}
	}
	r, err := cl.GetRun(ctx, id)
	if err != nil {
		return err
	}
	if r.Status != "completed" {
		return fmt.Errorf("run %s ended %s after the kill: %+v", id, r.Status, r.Error)
	}
	return nil
}

func (c *cluster) client(key string) *client.Client {
	cl, err := client.New(client.Config{BaseURL: c.gwURL, APIKey: key, HTTPClient: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) runToEnd(ctx context.Context, cl *client.Client, profile string) (*client.Run, error) {
	// A refusal that says when to come back (503 with Retry-After: a node
	// starved of CPU on a busy machine was taken for dead a moment) is
	// retried as a client should, a few times.
	for attempt := 1; ; attempt++ {
		r, err := cl.CreateRun(ctx, client.RunRequest{Query: "How do vector clocks work?", Profile: profile})
		var apiErr *client.APIError
		if err != nil && attempt < 5 && errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable && apiErr.RetryAfter > 0 {
			c.t.Logf("create a %s run: %v; retrying after %v", profile, err, apiErr.RetryAfter)
			select {
			case <-time.After(min(apiErr.RetryAfter, 3*time.Second)):
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if err != nil {
			return nil, fmt.Errorf("create a %s run: %w", profile, err)
		}
		return c.wait(ctx, cl, r.ID)
	}
}

// wait polls a run until it ended (30 s at most).
func (c *cluster) wait(ctx context.Context, cl *client.Client, id string) (*client.Run, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := cl.GetRun(ctx, id)
		if err == nil && r.Ended() {
			return r, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("run %s did not end in 30 s (last: %v)", id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue is the sum of a metric's samples on a /metrics page (base is
// an ops URL), -1 when it cannot be read or has none.
func metricValue(base, name string) float64 {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum, found := 0.0, false
	for _, line := range strings.Split(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// prometheus is a Prometheus server started by the test.
type prometheus struct {
	t    *testing.T
	base string
}

// startPrometheus writes a configuration with prometheus.yml's jobs and the
// cluster's ops addresses, scraped every second, and starts the server on
// a free loopback port (Prometheus cannot listen on port 0 and report the
// port: a port is picked by listening and closing, and picked again when
// another process took it in between).
func startPrometheus(t *testing.T, bin string, c *cluster) *prometheus {
	t.Helper()
	shipped := readScrapeConfig(t)
	targets := map[string][]string{gatewayJob: {c.gateway.addrs.Ops}}
	for _, n := range c.nodes {
		targets[nodeJob] = append(targets[nodeJob], n.addrs.Ops)
	}
	type static struct {
		Targets []string `yaml:"targets"`
	}
	type job struct {
		JobName       string   `yaml:"job_name"`
		MetricsPath   string   `yaml:"metrics_path,omitempty"`
		StaticConfigs []static `yaml:"static_configs"`
	}
	cfg := struct {
		Global        map[string]string `yaml:"global"`
		ScrapeConfigs []job             `yaml:"scrape_configs"`
	}{Global: map[string]string{"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"}}
	for _, sc := range shipped.ScrapeConfigs {
		if targets[sc.JobName] == nil {
			t.Fatalf("prometheus.yml has a job %q the test does not know", sc.JobName)
		}
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, job{JobName: sc.JobName, MetricsPath: sc.MetricsPath, StaticConfigs: []static{{Targets: targets[sc.JobName]}}})
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		addr := freePort(t)
		logPath := filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt))
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start prometheus: %v", err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
		t.Cleanup(func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("prometheus log (end):\n%s", tail(logPath, 2000))
			}
		})
		p := &prometheus{t: t, base: "http://" + addr}
		ready := false
		deadline := time.Now().Add(20 * time.Second)
	poll:
		for time.Now().Before(deadline) {
			select {
			case <-done:
				break poll
			default:
			}
			if resp, err := http.Get(p.base + "/-/ready"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ready = true
					break
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		if ready {
			return p
		}
		log := tail(logPath, 2000)
		if attempt < 3 && strings.Contains(log, "address already in use") {
			continue
		}
		t.Fatalf("prometheus did not become ready on %s:\n%s", addr, log)
	}
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// api GETs a Prometheus API path and decodes data.
func (p *prometheus) api(ctx context.Context, path string, q url.Values, data any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", p.base+path+"?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return fmt.Errorf("%s: HTTP %d: %w", path, resp.StatusCode, err)
	}
	if out.Status != "success" {
		return fmt.Errorf("%s: %s", path, out.Error)
	}
	return json.Unmarshal(out.Data, data)
}

// queryRange evaluates a query over [from, to] as a graph panel does.
func (p *prometheus) queryRange(ctx context.Context, expr string, from, to time.Time, step time.Duration) ([]series, error) {
	var data struct {
		ResultType string   `json:"resultType"`
		Result     []series `json:"result"`
	}
	q := url.Values{"query": {expr}, "start": {strconv.FormatInt(from.Unix(), 10)}, "end": {strconv.FormatInt(to.Unix(), 10)},
		"step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
	if err := p.api(ctx, "/api/v1/query_range", q, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "matrix" {
		return nil, fmt.Errorf("result type %s, want matrix", data.ResultType)
	}
	return data.Result, nil
}

// query evaluates an instant query now.
func (p *prometheus) query(ctx context.Context, expr string) ([]series, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := p.api(ctx, "/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %s, want vector", data.ResultType)
	}
	out := make([]series, len(data.Result))
	for i, r := range data.Result {
		out[i] = series{Metric: r.Metric, Values: [][2]any{r.Value}}
	}
	return out, nil
}

// labelValues lists a label's values, of the series match selects ("": all).
func (p *prometheus) labelValues(ctx context.Context, label, match string) []string {
	q := url.Values{}
	if match != "" {
		q.Set("match[]", match)
	}
	var vals []string
	if err := p.api(ctx, "/api/v1/label/"+label+"/values", q, &vals); err != nil {
		p.t.Fatalf("label values of %s: %v", label, err)
	}
	return vals
}

// waitTargets waits until n targets are up.
func (p *prometheus) waitTargets(ctx context.Context, n int) {
	p.t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var data struct {
			ActiveTargets []struct {
				ScrapeURL, Health, LastError string
			} `json:"activeTargets"`
		}
		if err := p.api(ctx, "/api/v1/targets", url.Values{"state": {"active"}}, &data); err != nil {
			last = err.Error()
			continue
		}
		up := 0
		last = fmt.Sprintf("%d targets", len(data.ActiveTargets))
		for _, tg := range data.ActiveTargets {
			if tg.Health == "up" {
				up++
			} else {
				last += fmt.Sprintf("; %s %s %s", tg.ScrapeURL, tg.Health, tg.LastError)
			}
		}
		if up == n {
			return
		}
	}
	p.t.Fatalf("prometheus never had %d targets up: %s", n, last)
}

// waitFor waits until an expression has a result.
func (p *prometheus) waitFor(ctx context.Context, expr string) {
	p.t.Helper()
	waitUntil(p.t, 20*time.Second, "prometheus to have "+expr, func() bool {
		res, err := p.query(ctx, expr)
		return err == nil && len(res) > 0
	})
}
