package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/cmd/internal/cli"
)

// buildFlags are passed to `go build` for the binaries under test (-race
// when this test runs with -race: each process is then checked on its own).
var buildFlags []string

var binDir string

// TestMain builds cmd/node and cmd/gateway once; the tests run them as
// separate processes, as users do.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qlc-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, c := range []string{"node", "gateway"} {
		args := append([]string{"build", "-o", filepath.Join(dir, c)}, buildFlags...)
		args = append(args, "github.com/qlc-project/qlc/cmd/"+c)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", c, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	// Every gateway of the tests knows the test tenant (tenantsFile); every
	// request carries its key unless it sets another.
	tf := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tf, []byte(tenantsYAML), 0o600); err != nil {
		panic(err)
	}
	tenantsFile = tf
	http.DefaultTransport = withKey{http.DefaultTransport}
	http.DefaultClient.Transport = http.DefaultTransport
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// The tests' tenant, its key, and an admin key (tenantsYAML).
const (
	testTenantKey = "qlc_t3stk7mq2xv9rzp4wd8nfy6hjc5bg1sa"
	testAdminKey  = "qlc_adm9k2xq7vz4mp8rw3ny6fj5hc1tbg0l"
)

const tenantsYAML = `
admin_keys: [` + testAdminKey + `]
tenants:
  - id: test
    name: Test tenant
    keys: [` + testTenantKey + `]
    limits: {concurrent_runs: 0} # no limit (the default is 16)
`

var tenantsFile string

// withKey sends the test tenant's key with every request that has none.
type withKey struct{ next http.RoundTripper }

func (w withKey) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Header.Get("Authorization") == "" {
		r = r.Clone(r.Context())
		r.Header.Set("Authorization", "Bearer "+testTenantKey)
	}
	return w.next.RoundTrip(r)
}

const profiles = `
default_profile: quick
providers:
  quick: {kind: sim, sim: {itl: 1ms, output_tokens: 60}}
  slow:  {kind: sim, sim: {itl: 20ms, output_tokens: 2000}}
  medium: {kind: sim, sim: {itl: 4ms, output_tokens: 150}}
profiles:
  quick:
    provider: quick
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  slow:
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  medium:
    provider: medium
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// Every listener of the processes under test binds port 0; each process
// writes the addresses it bound to its -addr-file, and launch reads them
// back (no port is guessed: a port picked by listening and closing can be
// taken by another process before the command binds it).
var (
	nodeListen    = []string{"-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-ops-addr", "127.0.0.1:0"}
	gatewayListen = []string{"-addr", "127.0.0.1:0"}
)

// launch starts a binary as start does, with -addr-file, and returns it
// with the addresses it bound, once it listens.
func launch(t testing.TB, key, name string, args ...string) (*exec.Cmd, cli.Addrs) {
	t.Helper()
	return launchAs(t, "", key, name, args...)
}

// launchAs is launch under host name host (startAs).
func launchAs(t testing.TB, host, key, name string, args ...string) (*exec.Cmd, cli.Addrs) {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+"-addrs.json")
	cmd := startAs(t, host, key, name, append(args, "-addr-file", path)...)
	var a cli.Addrs
	waitUntil(t, 30*time.Second, name+" to write its addresses", func() bool {
		var err error
		a, err = cli.ReadAddrs(path)
		return err == nil
	})
	if a.HTTP != "" {
		procs = append(procs, struct {
			addr string
			cmd  *exec.Cmd
		}{a.HTTP, cmd})
	}
	return cmd, a
}

// launchNode starts a node on port 0 and waits until it is ready.
func launchNode(t testing.TB, key string, args ...string) (*exec.Cmd, cli.Addrs) {
	t.Helper()
	return launchNodeAs(t, "", key, args...)
}

// launchNodeAs is launchNode under host name host (startAs).
func launchNodeAs(t testing.TB, host, key string, args ...string) (*exec.Cmd, cli.Addrs) {
	t.Helper()
	cmd, a := launchAs(t, host, key, "node", append(slices.Clone(nodeListen), args...)...)
	waitReady(t, "http://"+a.Ops+"/readyz")
	return cmd, a
}

// launchGateway starts a gateway on port 0 and waits until it is ready;
// base is its URL.
func launchGateway(t testing.TB, key string, args ...string) (cmd *exec.Cmd, base string, a cli.Addrs) {
	t.Helper()
	cmd, a = launch(t, key, "gateway", append(slices.Clone(gatewayListen), args...)...)
	base = "http://" + a.HTTP
	waitReady(t, base+"/readyz")
	return cmd, base, a
}

// waitUntil polls cond until it holds, failing the test after d.
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Cluster keys for the tests (base64 of 32 bytes).
const (
	testKey  = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="
	wrongKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
)

// procs records the gateway processes launch started, by their HTTP
// address, for tests that signal one.
var procs []struct {
	addr string
	cmd  *exec.Cmd
}

// start runs a binary until the test ends; its output goes to the test log.
// A gateway gets its own store (QLC_DATA_DIR; a -data-dir flag wins, which
// is how a restart finds its ledger).
func start(t testing.TB, key, name string, args ...string) *exec.Cmd {
	t.Helper()
	return startAs(t, "", key, name, args...)
}

// startAs is start with the host name host ("": this machine's), as a
// Kubernetes pod has its own: the binary runs in a UTS namespace of its own
// (unshare, in a user namespace; canSetHostname says whether this machine
// allows it) whose name is set before it starts.
func startAs(t testing.TB, host, key, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	if host != "" {
		// hostname(1) may be absent: the namespace's name is written, then
		// the shell execs the binary (same process: signals reach it).
		cmd = exec.Command("unshare", append([]string{"-Ur", "-u", "sh", "-c",
			`echo "$0" >/proc/sys/kernel/hostname && exec "$@"`, host, filepath.Join(binDir, name)}, args...)...)
	}
	cmd.Env = append(os.Environ(), "QLC_CLUSTER_KEY="+key)
	if name == "gateway" {
		cmd.Env = append(cmd.Env, "QLC_TENANTS="+tenantsFile, "QLC_DATA_DIR="+t.TempDir(),
			"QLC_OPS_ADDR=none") // no fixed ops port: tests read /metrics on -addr with the admin key
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			dumpGoroutines(cmd, done)
		}
		logf.Close()
		b, _ := os.ReadFile(logf.Name())
		if strings.Contains(string(b), "WARNING: DATA RACE") {
			t.Errorf("%s: the race detector reported a data race", name)
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

// canSetHostname reports whether startAs can run a process under a host
// name of its own here (unprivileged user namespaces may be off).
var canSetHostname = sync.OnceValue(func() bool {
	return exec.Command("unshare", "-Ur", "-u", "sh", "-c",
		`echo qlc-probe-0 >/proc/sys/kernel/hostname && [ "$(cat /proc/sys/kernel/hostname)" = qlc-probe-0 ]`).Run() == nil
})

// dumpGoroutines ends a process that ignored SIGTERM with SIGQUIT, which
// makes a Go program print every goroutine's stack to its log (the
// test's report on a hung shutdown), and kills it if that did not end it.
// done is closed when the process has been waited for.
func dumpGoroutines(cmd *exec.Cmd, done <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func waitReady(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never became ready", url)
}

type cluster struct {
	gw, nodeOps string
	node        *exec.Cmd
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	return startClusterKeys(t, testKey, testKey)
}

func startClusterKeys(t *testing.T, nodeKey, gatewayKey string) *cluster {
	t.Helper()
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &cluster{}
	node, na := launchNode(t, nodeKey, "-profiles", pf, "-log-level", "warn")
	c.node, c.nodeOps = node, "http://"+na.Ops
	_, c.gw, _ = launchGateway(t, gatewayKey, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf)
	return c
}

func postRun(t *testing.T, base, profile string) (int, map[string]any) {
	t.Helper()
	resp, err := http.Post(base+"/v1/runs", "application/json", strings.NewReader(`{"query":"How do vector clocks work?","profile":"`+profile+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, v
}

// streamEvents reads a run's SSE stream to its end, checking seqs are
// contiguous; onEvent sees each event's data.
func streamEvents(t *testing.T, base, id string, onEvent func(map[string]any)) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return readEvents(t, resp.Body, 1, onEvent)
}

// readEvents parses an SSE body that must start at seq from and have no
// gap or repeat (coalesced deltas cover from_seq..seq; a delta split into
// parts comes in order); it returns the last event's data. Events do not
// repeat the answer: on run_completed it rebuilds it from the final step's
// deltas, checks it against answer_bytes, and puts it in the returned data
// as "answer" (when the stream began at seq 1).
func readEvents(t *testing.T, body io.Reader, from float64, onEvent func(map[string]any)) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(body) // default 64 KiB line limit: events are bounded
	next := from
	var last map[string]any
	texts := map[string]string{}
	final := ""
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal([]byte(line), &d); err != nil {
			t.Fatal(err)
		}
		first := d["seq"].(float64)
		if f, ok := d["from_seq"]; ok {
			first = f.(float64)
		}
		if first != next {
			t.Fatalf("event starts at seq %v, want %v", first, next)
		}
		step, _ := d["step"].(string) // parallel steps interleave: text is kept per step
		if step == "" {
			step, _ = d["stage"].(string)
		}
		switch d["type"] {
		case "stage_started", "stage_restarted":
			texts[step] = ""
			if d["type"] == "stage_started" && (d["final"] == true || step == "curator") {
				final = step
			}
		case "token_delta":
			texts[step] += d["text"].(string)
		case "run_completed":
			if from == 1 {
				if answer := texts[final]; d["answer_bytes"] == float64(len(answer)) {
					d["answer"] = answer
				} else {
					t.Fatalf("answer_bytes %v, the final step (%s) streamed %d bytes", d["answer_bytes"], final, len(answer))
				}
			}
		}
		if p, ok := d["part"].(map[string]any); ok && p["end"].(float64) < p["size"].(float64) {
			continue // more parts of this seq follow
		}
		next = d["seq"].(float64) + 1
		last = d
		if onEvent != nil {
			onEvent(d)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading events: %v", err)
	}
	return last
}

// metric reads series from the /metrics at url: a node's ops address, or a
// gateway's API address, where /metrics needs an admin key (sent always;
// nodes ignore it).
func metric(t *testing.T, url, series string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			return v
		}
	}
	return ""
}

// A gateway places runs on a node process; every event crosses the actor
// transport from the node's coordinator to the gateway's hub.
func TestRunOnANodeProcess(t *testing.T) {
	c := startCluster(t)
	code, v := postRun(t, c.gw, "quick")
	if code != 201 {
		t.Fatalf("POST /v1/runs: %d %v", code, v)
	}
	last := streamEvents(t, c.gw, v["id"].(string), nil)
	if last["type"] != "run_completed" || last["answer"] == "" {
		t.Fatalf("run ended with %v", last)
	}
	if got := metric(t, c.nodeOps+"/metrics", "qlc_coordinators_started_total"); got != "1" {
		t.Fatalf("node started %q coordinators, want 1", got)
	}
	if got := metric(t, c.gw+"/metrics", "qlc_coordinators_started_total"); got != "0" {
		t.Fatalf("gateway started %q coordinators itself, want 0", got)
	}
}

// kill -9 of the node mid-run: the gateway learns at once from the broken
// connection and ends the run with a clear reason; nothing hangs. (Resuming
// such a run elsewhere is the failover issue.)
func TestNodeLossEndsRunClearly(t *testing.T) {
	c := startCluster(t)
	code, v := postRun(t, c.gw, "slow")
	if code != 201 {
		t.Fatalf("POST /v1/runs: %d %v", code, v)
	}
	killed := false
	last := streamEvents(t, c.gw, v["id"].(string), func(d map[string]any) {
		if d["type"] == "token_delta" && !killed {
			killed = true
			_ = c.node.Process.Kill()
		}
	})
	if last["type"] != "run_failed" || last["code"] != "coordinator_lost" {
		t.Fatalf("run ended with %v, want run_failed/coordinator_lost", last)
	}
	code, v = postRun(t, c.gw, "quick")
	if code != http.StatusServiceUnavailable || v["error"].(map[string]any)["code"] != "no_node" {
		t.Fatalf("with no node, POST /v1/runs: %d %v", code, v)
	}
}

// A gateway without the cluster key cannot place a run on the node: the
// transport's mutual TLS refuses it, so it can neither inject messages nor
// receive events.
func TestGatewayWithoutTheKeyIsRefused(t *testing.T) {
	c := startClusterKeys(t, testKey, wrongKey)
	code, v := postRun(t, c.gw, "quick")
	if code != http.StatusServiceUnavailable || v["error"].(map[string]any)["code"] != "no_node" {
		t.Fatalf("POST /v1/runs through a gateway with the wrong key: %d %v", code, v)
	}
	if got := metric(t, c.nodeOps+"/metrics", "qlc_coordinators_started_total"); got != "0" {
		t.Fatalf("the node started %q coordinators for an outsider", got)
	}
}

// SIGTERM drains a node: it refuses new runs (the gateway places them on
// another node) and finishes the runs it hosts before it exits. No run is lost.
func TestNodeDrainsOnSIGTERM(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	node1, a1 := launchNode(t, testKey, "-profiles", pf, "-log-level", "warn")
	_, a2 := launchNode(t, testKey, "-profiles", pf, "-log-level", "warn")
	n1ops := a1.Ops
	_, base, _ := launchGateway(t, testKey, "-nodes", a1.Actor+","+a2.Actor, "-profiles", pf)

	code, a := postRun(t, base, "medium") // round robin: node1
	if code != 201 {
		t.Fatalf("POST: %d %v", code, a)
	}
	if got := metric(t, "http://"+n1ops+"/metrics", "qlc_coordinators_started_total"); got != "1" {
		t.Fatalf("node1 hosts %q runs, want the first one", got)
	}
	if err := node1.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// New runs go to node2, whichever node the round robin offers first.
	var others []string
	for i := 0; i < 2; i++ {
		code, v := postRun(t, base, "quick")
		if code != 201 {
			t.Fatalf("POST during drain: %d %v", code, v)
		}
		others = append(others, v["id"].(string))
	}
	if got := metric(t, "http://"+n1ops+"/metrics", "qlc_coordinators_started_total"); got != "1" {
		t.Fatalf("a draining node took new runs: %s", got)
	}
	for _, id := range append([]string{a["id"].(string)}, others...) {
		if last := streamEvents(t, base, id, nil); last["type"] != "run_completed" {
			t.Fatalf("run %s ended with %v", id, last)
		}
	}
	done := make(chan error, 1)
	go func() { done <- node1.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("node1 exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("node1 did not exit after draining")
	}
}
