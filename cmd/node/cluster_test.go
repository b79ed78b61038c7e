package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/stagework"
)

type member struct {
	cmd              *exec.Cmd
	gossip, ops, act string
}

// memberCluster is nodes and a gateway that find each other with memberlist.
type memberCluster struct {
	t     *testing.T
	pf    string
	seed  string // gossip address of the first node
	nodes []*member
	gw    string
}

func (c *memberCluster) addNode(extra ...string) *member {
	t := c.t
	args := []string{"-profiles", c.pf, "-log-level", "warn"}
	if c.seed != "" {
		args = append(args, "-seeds", c.seed)
	}
	m := &member{}
	var a cli.Addrs
	m.cmd, a = launchNode(t, testKey, append(args, extra...)...)
	m.gossip, m.ops, m.act = a.Gossip, a.Ops, a.Actor
	if c.seed == "" {
		c.seed = m.gossip
	}
	c.nodes = append(c.nodes, m)
	return m
}

// waitMembers polls the gateway's view until it has n members.
func (c *memberCluster) waitMembers(n int) {
	c.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if metric(c.t, c.gw+"/metrics", "qlc_cluster_members_alive") == strconv.Itoa(n) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("the gateway never saw %d members (has %s)", n, metric(c.t, c.gw+"/metrics", "qlc_cluster_members_alive"))
}

func startMemberCluster(t *testing.T, nodes int) *memberCluster {
	t.Helper()
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	for i := 0; i < nodes; i++ {
		c.addNode()
	}
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf)
	c.waitMembers(nodes + 1)
	return c
}

// runOn posts runs until one lands on m (placement spreads them), and
// returns its id; the others run elsewhere.
func (c *memberCluster) runOn(m *member, profile string) string {
	c.t.Helper()
	for i := 0; i < 20; i++ {
		before := c.hosted(m)
		code, v := postRun(c.t, c.gw, profile)
		if code != 201 {
			c.t.Fatalf("POST: %d %v", code, v)
		}
		if c.hosted(m) > before {
			return v["id"].(string)
		}
	}
	c.t.Fatalf("no run landed on the node at %s", m.act)
	return ""
}

func (c *memberCluster) hosted(m *member) int {
	n, _ := strconv.Atoi(metric(c.t, "http://"+m.ops+"/metrics", "qlc_coordinators_started_total"))
	return n
}

// expectedAnswers runs the same runs in one process (no cluster) for the
// transcript comparison.
func expectedAnswers(t *testing.T, seeds []int64) map[int64]string {
	t.Helper()
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		t.Fatal(err)
	}
	providers, _ := actors.BuildProviders(stages, nil)
	cfg := actors.DefaultConfig()
	cfg.Stages, cfg.Providers = stages, providers
	e, err := actors.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	out := map[int64]string{}
	for _, s := range seeds {
		h, err := e.StartRun(actors.RunRequest{Profile: "quick", Query: "How do vector clocks work?", Seed: s})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := h.WaitDone(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		evs := h.Events(1)
		out[s] = evs[len(evs)-1].GetRunCompleted().GetAnswer()
	}
	return out
}

func postSeeded(t *testing.T, base string, seed int64) string {
	t.Helper()
	resp, err := http.Post(base+"/v1/runs", "application/json",
		strings.NewReader(`{"query":"How do vector clocks work?","profile":"quick","seed":`+strconv.FormatInt(seed, 10)+`}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct{ ID string }
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 201 {
		t.Fatalf("POST: %d %v", resp.StatusCode, err)
	}
	return v.ID
}

// Three node processes and a gateway find each other with memberlist; runs
// are spread over the nodes and every transcript is the one a single process
// produces for the same seed. A fourth node joins and takes new runs; a node
// that leaves (SIGTERM) finishes its runs first and gets no new ones.
func TestClusterSpreadsRunsJoinAndLeave(t *testing.T) {
	c := startMemberCluster(t, 3)
	seeds := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9}
	want := expectedAnswers(t, seeds)
	for _, s := range seeds {
		id := postSeeded(t, c.gw, s)
		last := streamEvents(t, c.gw, id, nil)
		if last["type"] != "run_completed" || last["answer"] != want[s] {
			t.Fatalf("seed %d: cluster run ended %v; its answer must equal the one-process run's", s, last["type"])
		}
	}
	busy := 0
	total := 0
	for _, n := range c.nodes {
		if h := c.hosted(n); h > 0 {
			busy++
			total += h
		}
	}
	if busy < 2 || total != len(seeds) {
		t.Fatalf("runs landed on %d nodes (%d runs), want them spread", busy, total)
	}
	// The cluster's model statistics merge every node's telemetry: the
	// gateway (which coordinates nothing) sees each stage model's attempts
	// of all the runs, from the nodes that ran them.
	checkModelStats(t, c.gw, "quick", "g", len(seeds), busy)

	// Join: a fourth node receives new coordinators.
	t0 := time.Now()
	n4 := c.addNode()
	c.waitMembers(5)
	for s := int64(100); s < 120 && c.hosted(n4) == 0; s++ {
		if last := streamEvents(t, c.gw, postSeeded(t, c.gw, s), nil); last["type"] != "run_completed" {
			t.Fatalf("run ended with %v", last)
		}
	}
	if c.hosted(n4) == 0 {
		t.Fatal("the new node never received a run")
	}
	t.Logf("figure: node process start → serving its first coordinator: %v (runs posted back to back)", time.Since(t0))

	// Leave: SIGTERM a node while it hosts a run; the run completes, the
	// node exits cleanly, and new runs go to the others.
	leaving := c.nodes[0]
	id := c.runOn(leaving, "medium")
	if err := leaving.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if last := streamEvents(t, c.gw, id, nil); last["type"] != "run_completed" {
		t.Fatalf("the draining node's run ended with %v", last)
	}
	done := make(chan error, 1)
	go func() { done <- leaving.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the leaving node exited with %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the leaving node did not exit")
	}
	c.waitMembers(4)
	for s := int64(200); s < 206; s++ {
		if last := streamEvents(t, c.gw, postSeeded(t, c.gw, s), nil); last["type"] != "run_completed" {
			t.Fatalf("after the leave, a run ended with %v", last)
		}
	}
}

// Mixed capabilities: a node that lacks AVX2 (pretended) hosts no tokenizer
// actors; tokenization requests go to a capable node.
func TestTokenizerRunsOnlyOnCapableNodes(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	weak := c.addNode("-disable-features", "avx2")
	strong := c.addNode()
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf)
	c.waitMembers(3)
	type answer struct {
		Count    int
		ServedBy string `json:"served_by"`
	}
	tokenize := func(i int) answer {
		resp, err := http.Post(c.gw+"/v1/tokenize", "application/json", strings.NewReader(`{"model":"gpt-4","text":"mixed clusters `+strconv.Itoa(i)+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out answer
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Count == 0 {
			t.Fatalf("tokenize: %+v %v", out, err)
		}
		return out
	}
	// The first request also opens the transport's connection (TLS): until
	// it is up, the gateway counts locally rather than wait.
	deadline := time.Now().Add(10 * time.Second)
	for tokenize(-1).ServedBy != strong.act {
		if time.Now().After(deadline) {
			t.Fatal("the capable node never served a request")
		}
	}
	before, _ := strconv.Atoi(metric(t, "http://"+strong.ops+"/metrics", `qlc_tokenizer_requests_total{path="served"}`))
	for i := 0; i < 5; i++ {
		if out := tokenize(i); out.ServedBy != strong.act {
			t.Fatalf("tokenize %d: served by %s, want the capable node %s", i, out.ServedBy, strong.act)
		}
	}
	if got := metric(t, "http://"+strong.ops+"/metrics", `qlc_tokenizer_requests_total{path="served"}`); got != strconv.Itoa(before+5) {
		t.Fatalf("the capable node served %q requests, want %d", got, before+5)
	}
	if got := metric(t, "http://"+weak.ops+"/metrics", `qlc_tokenizer_requests_total{path="served"}`); got != "" {
		t.Fatalf("the node without AVX2 served tokenizer requests: %q", got)
	}
	// FitToBudget is served by the capable node too.
	resp, err := http.Post(c.gw+"/v1/tokenize", "application/json", strings.NewReader(`{"model":"gpt-4","text":"one two three four five six","max_tokens":3}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var fit struct {
		Text      string
		Count     int
		Truncated bool
		ServedBy  string `json:"served_by"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&fit); err != nil || fit.Text != "one two three" || fit.Count != 3 || !fit.Truncated || fit.ServedBy != strong.act {
		t.Fatalf("fit to 3 tokens across the cluster: %+v %v", fit, err)
	}
}

// A false suspicion: a node paused (SIGSTOP) past the failure detector's
// timeout is declared dead; its run moves to the other node and completes.
// When it resumes it learns it was declared dead, fences itself (stops what
// it hosted: the run's old coordinator) and rejoins under a new name — the
// hub ignores anything the old coordinator still sends (lower epoch).
func TestPausedNodeFencesAndRejoins(t *testing.T) {
	c := startMemberCluster(t, 2)
	victim := c.nodes[1]
	id := c.runOn(victim, "medium")
	// Pause it mid-stage (a run paused before its first event would move
	// without a stage_restarted: nothing to redo).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		resp, err := http.Get(c.gw + "/v1/runs/" + id)
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			LastSeq int `json:"last_seq"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if v.LastSeq >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the run on the victim streams nothing")
		}
	}
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	var moved time.Duration
	last := streamEvents(t, c.gw, id, func(d map[string]any) {
		if d["type"] == "stage_restarted" && moved == 0 {
			moved = time.Since(t0)
		}
	})
	if last["type"] != "run_completed" || moved == 0 {
		_ = victim.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("the paused node's run should move to the other node and complete: ended with %v (moved after %v)", last, moved)
	}
	t.Logf("paused node declared dead and its run moved after %v", moved)
	c.waitMembers(2)
	if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, "http://"+victim.ops+"/metrics", "qlc_cluster_fencings_total") != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the resumed node never fenced itself")
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.waitMembers(3) // back, under a new name
	if got := metric(t, "http://"+victim.ops+"/metrics", "qlc_cluster_members_alive"); got != "3" {
		t.Fatalf("the rejoined node sees %s members", got)
	}
}

// kill -9 of the node running a run's coordinator: the run moves to a live
// node and completes; the stages finished before the kill are not recomputed,
// the interrupted one is redone after a stage_restarted, and every seq
// arrives once, in order.
func TestRunSurvivesKillOfItsNode(t *testing.T) {
	c := startMemberCluster(t, 2)
	victim := c.nodes[0]
	id := c.runOn(victim, "medium")
	completedBefore := map[string]bool{}
	killed := false
	var afterKill []map[string]any
	last := streamEvents(t, c.gw, id, func(d map[string]any) {
		if killed {
			afterKill = append(afterKill, d)
			return
		}
		if d["type"] == "stage_completed" {
			completedBefore[d["stage"].(string)] = true
		}
		if d["type"] == "token_delta" && d["stage"] == "refiner" {
			killed = true
			_ = victim.cmd.Process.Kill()
		}
	})
	if last["type"] != "run_completed" {
		t.Fatalf("the run ended with %v", last)
	}
	restarted := false
	for _, d := range afterKill {
		if d["type"] == "stage_restarted" && d["stage"] == "refiner" {
			restarted = true
		}
		if d["type"] == "stage_started" && completedBefore[d["stage"].(string)] {
			t.Fatalf("finished stage %s was recomputed", d["stage"])
		}
	}
	if !restarted || !completedBefore["generator"] {
		t.Fatalf("want the refiner restarted after the kill (completed before: %v)", completedBefore)
	}
	if got := metric(t, c.gw+"/metrics", "qlc_failovers_total"); got != "1" {
		t.Fatalf("failovers: %q", got)
	}
}

// A gateway dies (kill -9) or is restarted (SIGTERM) while its client
// streams a run: the client reconnects to another gateway with
// Last-Event-ID and gets exactly the events it missed, then the live
// stream, to the end.
func TestReadersMoveToAnotherGateway(t *testing.T) {
	for _, sig := range []os.Signal{os.Kill, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) { readersMove(t, sig) })
	}
}

func readersMove(t *testing.T, sig os.Signal) {
	c := startMemberCluster(t, 1)
	_, gwB, _ := launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf)
	gwA := c.gw
	// The gateway process to kill is the one startMemberCluster started: find it by its address.
	code, v := postRun(t, gwA, "medium")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	id := v["id"].(string)
	resp, err := http.Get(gwA + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	var lastSeq float64
	buf := make([]byte, 0, 1<<16)
	tmp := make([]byte, 4096)
	for lastSeq < 20 {
		n, err := resp.Body.Read(tmp)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf, tmp[:n]...)
		for _, line := range strings.Split(string(buf), "\n") {
			if idv, ok := strings.CutPrefix(line, "id: "); ok {
				if f, err := strconv.ParseFloat(idv, 64); err == nil && f > lastSeq {
					lastSeq = f
				}
			}
		}
	}
	resp.Body.Close()
	signalGateway(t, gwA, sig)

	// A client retries a 503 (a node did not answer the lookup in time,
	// e.g. on a loaded machine) after its Retry-After, as clients do.
	var resp2 *http.Response
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest("GET", gwB+"/v1/runs/"+id+"/events", nil)
		req.Header.Set("Last-Event-ID", strconv.FormatFloat(lastSeq, 'f', 0, 64))
		resp2, err = http.DefaultClient.Do(req)
		if err == nil && resp2.StatusCode == http.StatusServiceUnavailable && attempt < 5 {
			resp2.Body.Close()
			time.Sleep(time.Second)
			continue
		}
		break
	}
	if err != nil || resp2.StatusCode != 200 {
		t.Fatalf("reconnect to the other gateway: %v %v", err, resp2)
	}
	defer resp2.Body.Close()
	last := readEvents(t, resp2.Body, lastSeq+1, nil)
	if last == nil || last["type"] != "run_completed" {
		t.Fatalf("the resumed stream ended with %v", last)
	}
}

// signalGateway signals the gateway process listening on base (http://addr).
func signalGateway(t *testing.T, base string, sig os.Signal) {
	t.Helper()
	addr := strings.TrimPrefix(base, "http://")
	for _, p := range procs {
		if p.addr == addr {
			_ = p.cmd.Process.Signal(sig)
			return
		}
	}
	t.Fatalf("no gateway process at %s", addr)
}

// checkModelStats asks the gateway for the cluster's model statistics and
// checks endpoint/model's attempts (each a success with a TTFT) and how
// many nodes ran them.
func checkModelStats(t *testing.T, gw, endpoint, model string, attempts, nodes int) {
	t.Helper()
	resp, err := http.Get(gw + "/v1/stats/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var stats struct {
		Complete bool
		Data     []struct {
			Endpoint, Model     string
			Nodes               int
			Attempts, Succeeded int
			TTFT                struct{ Count int } `json:"ttft_ms"`
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&stats); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/stats/models: HTTP %d %v", resp.StatusCode, err)
	}
	if !stats.Complete {
		t.Fatal("model stats: a node did not answer")
	}
	for _, m := range stats.Data {
		if m.Endpoint == endpoint && m.Model == model {
			if m.Attempts != attempts || m.Succeeded != attempts || m.TTFT.Count != attempts || m.Nodes != nodes {
				t.Fatalf("model stats of %s/%s: %+v; want %d attempts from %d nodes", endpoint, model, m, attempts, nodes)
			}
			return
		}
	}
	t.Fatalf("model stats: no %s/%s in %+v", endpoint, model, stats.Data)
}

// The response cache is cluster-wide: a seeded run completed through one
// gateway answers the identical request through the other (from the key's
// owner among the gateways), with the same answer and no model called;
// with that gateway gone, the other still answers (a kept copy, or a miss
// that runs the models: never a wrong answer).
func TestCacheAcrossGateways(t *testing.T) {
	c := startMemberCluster(t, 1)
	gwB, gwBURL, _ := launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf)
	c.waitMembers(3)
	first := postSeeded(t, c.gw, 77)
	last := streamEvents(t, c.gw, first, nil)
	if last["type"] != "run_completed" {
		t.Fatalf("first run ended with %v", last)
	}
	answer := last["answer"]
	waitUntil(t, 10*time.Second, "the run's log kept by the key's owner", func() bool {
		id := postSeeded(t, gwBURL, 77)
		l := streamEvents(t, gwBURL, id, nil)
		if l["type"] != "run_completed" || l["answer"] != answer {
			t.Fatalf("through gateway B: %v, want the first run's answer", l)
		}
		return l["cached"] == true && l["cached_from"] == first
	})
	started := c.hosted(c.nodes[0])
	// Gateway B gone: gateway A still answers the same, from its copy.
	if err := gwB.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	id := postSeeded(t, c.gw, 77)
	if l := streamEvents(t, c.gw, id, nil); l["type"] != "run_completed" || l["answer"] != answer {
		t.Fatalf("after gateway B died: %v", l)
	}
	if got := c.hosted(c.nodes[0]); got != started && got != started+1 {
		t.Fatalf("coordinators %d → %d", started, got)
	}
}

// Identical requests in flight at once through two gateways follow one
// run: the first claims the key at its owner among the gateways, the later
// ones — through either gateway — find it in flight there and replay it
// live (cached, cached_from the first); one coordinator runs the models.
func TestIdenticalRunsShareAcrossGateways(t *testing.T) {
	c := startMemberCluster(t, 1)
	_, gwBURL, _ := launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf)
	c.waitMembers(3)
	post := func(base string) string {
		t.Helper()
		resp, err := http.Post(base+"/v1/runs", "application/json",
			strings.NewReader(`{"query":"How do vector clocks work?","profile":"medium","seed":91}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct{ ID string }
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || resp.StatusCode != 201 {
			t.Fatalf("POST %s: %d %v", base, resp.StatusCode, err)
		}
		return v.ID
	}
	before := c.hosted(c.nodes[0])
	first := post(c.gw)
	type req struct{ base, id string }
	var later []req
	for _, base := range []string{gwBURL, c.gw, gwBURL, gwBURL} {
		later = append(later, req{base, post(base)}) // the first streams for ~2.4 s
	}
	last := streamEvents(t, c.gw, first, nil)
	if last["type"] != "run_completed" {
		t.Fatalf("first run ended with %v", last)
	}
	for i, r := range later {
		l := streamEvents(t, r.base, r.id, nil)
		if l["type"] != "run_completed" || l["answer"] != last["answer"] || l["cached"] != true || l["cached_from"] != first {
			t.Errorf("identical request %d through %s: %v; want the first run's answer, cached from %s", i, r.base, l, first)
		}
	}
	if got := c.hosted(c.nodes[0]); got != before+1 {
		t.Errorf("coordinators started %d → %d for five identical requests in flight; want one run", before, got)
	}
}
