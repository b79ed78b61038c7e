package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
)

// rotatedKey is the cluster key the rotation test moves to (base64 of 32 bytes).
const rotatedKey = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE="

// The cluster key of a running cluster — three nodes and two gateways,
// with runs streaming through them — is rotated by rolling restarts in the
// three phases of docs/keys.md: every process gets the new key as a
// secondary key, then as its primary, then loses the old one. Each process
// drains on SIGTERM and comes back on the same addresses. Every run
// accepted meanwhile completes with its full transcript (every seq once, in
// order, across the gateway changes its client makes; the answer a single
// process gives for its seed), and at the end a process holding only the
// old key can no longer join.
func TestClusterKeyRotationLosesNoRun(t *testing.T) {
	if slices.Contains(buildFlags, "-race") {
		// Five race-instrumented processes under steady load starve two
		// cores: members are falsely declared dead and fenced, which is not
		// what this test is about (and it takes 5 min instead of 50 s). The
		// keyring's concurrency is covered by the -race runs of cluster and
		// actors.
		t.Skip("the rotation under load is tested without -race (members are falsely suspected on a starved machine)")
	}
	c := startMemberCluster(t, 3)
	gwArgs := func(addr string) []string {
		var seeds []string
		for _, n := range c.nodes {
			seeds = append(seeds, n.gossip)
		}
		return []string{"-addr", addr, "-seeds", strings.Join(seeds, ","), "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", c.pf, "-log-level", "warn"}
	}
	_, gwB, _ := launchGateway(t, testKey, gwArgs("127.0.0.1:0")...)
	gateways := []string{c.gw, gwB}
	waitAlive(t, gateways, 5)

	// Load: a run every 300 ms (at most 6 at once: the machine has two
	// cores, and a starved member is falsely declared dead) through the
	// gateways in turn, each read to its end by a client that moves to the
	// other gateway when its own goes away.
	var (
		mu       sync.Mutex
		results  = map[int64]runResult{}
		seq      atomic.Int64
		stop     = make(chan struct{})
		wg       sync.WaitGroup
		inFlight = make(chan struct{}, 6)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			select {
			case <-stop:
				return
			case inFlight <- struct{}{}:
			}
			s := seq.Add(1)
			id, err := postSeededAny(gateways, i, s)
			if err != nil {
				<-inFlight
				mu.Lock()
				results[s] = runResult{err: err} // refused, never accepted: not lost, but reported below
				mu.Unlock()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := followRun(gateways, id, 90*time.Second)
				<-inFlight
				mu.Lock()
				results[s] = r
				mu.Unlock()
			}()
		}
	}()

	began := time.Now()
	restartNode := func(i int) {
		m := c.nodes[i]
		stopProcess(t, m.cmd)
		var seeds []string
		for _, n := range c.nodes {
			seeds = append(seeds, n.gossip)
		}
		m.cmd = start(t, os.Getenv("QLC_CLUSTER_KEY"), "node", "-gossip-bind", m.gossip, "-bind", m.act, "-ops-addr", m.ops,
			"-profiles", c.pf, "-log-level", "warn", "-seeds", strings.Join(seeds, ","))
		waitReady(t, "http://"+m.ops+"/readyz")
		waitAlive(t, gateways, 5)
	}
	restartGateway := func(base string) {
		addr := strings.TrimPrefix(base, "http://")
		stopProcess(t, gatewayCmd(t, addr))
		launch(t, os.Getenv("QLC_CLUSTER_KEY"), "gateway", gwArgs(addr)...)
		waitReady(t, base+"/readyz")
		waitAlive(t, gateways, 5)
	}
	for _, phase := range []struct{ name, primary, secondary string }{
		{"1: new key added as secondary", testKey, rotatedKey},
		{"2: new key primary, old secondary", rotatedKey, testKey},
		{"3: old key dropped", rotatedKey, ""},
	} {
		// start() gives a process QLC_CLUSTER_KEY=<its key argument> and this
		// process's environment, hence QLC_CLUSTER_KEY_SECONDARY.
		t.Setenv("QLC_CLUSTER_KEY", phase.primary)
		t.Setenv("QLC_CLUSTER_KEY_SECONDARY", phase.secondary)
		for i := range c.nodes {
			restartNode(i)
		}
		for _, gw := range gateways {
			restartGateway(gw)
		}
		t.Logf("phase %s: done at %v", phase.name, time.Since(began).Round(100*time.Millisecond))
	}
	close(stop)
	wg.Wait()

	// Every accepted run completed, with the transcript of a single process.
	var seeds []int64
	for s, r := range results {
		if r.err == nil {
			seeds = append(seeds, s)
		}
	}
	want := expectedAnswersFor(t, "medium", seeds)
	refused := 0
	for s := int64(1); s <= seq.Load(); s++ {
		r := results[s]
		switch {
		case r.id == "" && r.err != nil:
			refused++
			t.Logf("seed %d: not accepted: %v", s, r.err)
		case r.err != nil:
			t.Errorf("run %s (seed %d) lost: %v", r.id, s, r.err)
		case r.answer != want[s]:
			t.Errorf("run %s (seed %d): answer %q, want %q", r.id, s, r.answer, want[s])
		}
	}
	t.Logf("%d runs accepted and completed during the rotation (%d refused at admission) in %v", len(seeds), refused, time.Since(began).Round(100*time.Millisecond))
	if len(seeds) < 20 || refused > len(seeds)/10 {
		t.Fatalf("%d runs accepted, %d refused: the rotation must go on under load", len(seeds), refused)
	}

	// A process with only the old key is shut out of the rotated cluster.
	t.Setenv("QLC_CLUSTER_KEY_SECONDARY", "")
	_, sa := launchNode(t, testKey, "-profiles", c.pf, "-log-level", "warn", "-seeds", c.nodes[0].gossip)
	stale := &member{gossip: sa.Gossip, ops: sa.Ops, act: sa.Actor}
	deadline := time.Now().Add(20 * time.Second)
	for {
		f, _ := strconv.Atoi(metric(t, "http://"+stale.ops+"/metrics", "qlc_cluster_join_failures_total"))
		if f >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the node with the old key never failed to join (join failures %d)", f)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := metric(t, "http://"+stale.ops+"/metrics", "qlc_cluster_members_alive"); got != "1" {
		t.Fatalf("the node with the old key sees %s members", got)
	}
	for _, gw := range gateways {
		if got := metric(t, gw+"/metrics", "qlc_cluster_members_alive"); got != "5" {
			t.Fatalf("%s sees %s members, want the 5 with the new key", gw, got)
		}
	}
}

// Without a usable key, or with -insecure off loopback, a node refuses to
// start with a one-line error; so does a gateway in a cluster.
func TestKeyAndInsecureRefusals(t *testing.T) {
	published := "cWxjLWRldi1jbHVzdGVyLWtleS0wMDAwMDAwMDAwMDA=" // the old compose default
	short := "MDEyMzQ1Njc4OWFiY2RlZg=="                         // 16 bytes
	for _, c := range []struct {
		name, bin, key string
		args           []string
		want           string
	}{
		{"published key", "node", published, nil, "published"},
		{"16-byte key", "node", short, nil, "16 bytes"},
		{"gateway, published key", "gateway", published, []string{"-seeds", "127.0.0.1:1"}, "published"},
		{"insecure, all interfaces", "node", "", []string{"-insecure", "-bind", "0.0.0.0:0"}, "-insecure"},
		{"insecure, gossip on a LAN address", "node", "", []string{"-insecure", "-gossip-advertise", "10.0.0.1:7946"}, "-insecure"},
		{"gateway insecure, all interfaces", "gateway", "", []string{"-insecure", "-seeds", "127.0.0.1:1", "-gossip-bind", ":0"}, "-insecure"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-ops-addr", "", "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0"}, c.args...)
			if c.bin == "gateway" {
				args = append([]string{"-addr", "127.0.0.1:0", "-data-dir", t.TempDir(), "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0"}, c.args...)
			}
			cmd := exec.Command(filepath.Join(binDir, c.bin), args...)
			cmd.Env = append(os.Environ(), "QLC_CLUSTER_KEY="+c.key, "QLC_CLUSTER_KEY_SECONDARY=", "QLC_CLUSTER_KEY_FILE=")
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			done := make(chan struct{})
			go func() {
				select {
				case <-ctx.Done():
					_ = cmd.Process.Kill()
				case <-done:
				}
			}()
			out, err := cmd.CombinedOutput()
			close(done)
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("%s started (or was killed): %v\n%s", c.bin, err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, c.want) || !strings.HasPrefix(last, c.bin+": ") {
				t.Fatalf("last line %q, want a one-line error with %q", last, c.want)
			}
		})
	}
}

type runResult struct {
	id, answer string
	err        error
}

// postSeededAny posts a seeded medium run, to gateways[i%2] first and to
// the other if that one is down (restarting).
func postSeededAny(gateways []string, i int, seed int64) (string, error) {
	var last error
	for k := 0; k < 2*len(gateways); k++ {
		base := gateways[(i+k)%len(gateways)]
		resp, err := http.Post(base+"/v1/runs", "application/json",
			strings.NewReader(`{"query":"How do vector clocks work?","profile":"medium","seed":`+strconv.FormatInt(seed, 10)+`}`))
		if err != nil {
			last = err
			time.Sleep(100 * time.Millisecond)
			continue
		}
		var v struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated && err == nil {
			return v.ID, nil
		}
		last = fmt.Errorf("%s: HTTP %d", base, resp.StatusCode)
		time.Sleep(100 * time.Millisecond)
	}
	return "", last
}

// stallTimeout is how long followRun waits for the next event of a stream
// before it reconnects (a run's stage emits a token every few ms).
const stallTimeout = 10 * time.Second

// followRun reads run id's events to the end, from whichever gateway
// answers, resuming with Last-Event-ID after each broken stream; every seq
// must come once, in order.
func followRun(gateways []string, id string, timeout time.Duration) runResult {
	r := runResult{id: id}
	deadline := time.Now().Add(timeout)
	next := 1.0
	texts := map[string]string{} // per stage, from its deltas
	for try := 0; time.Now().Before(deadline); try++ {
		base := gateways[try%len(gateways)]
		req, _ := http.NewRequest("GET", base+"/v1/runs/"+id+"/events", nil)
		if next > 1 {
			req.Header.Set("Last-Event-ID", strconv.FormatFloat(next-1, 'f', 0, 64))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			if err == nil {
				resp.Body.Close()
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		// A stream that stalls (its gateway was fenced by a false suspicion on
		// a starved machine, its hub gone) is left for the other gateway, as
		// a client with a read timeout does; the seqs must still join up.
		stall := time.AfterFunc(stallTimeout, func() { resp.Body.Close() })
		sc := bufio.NewScanner(resp.Body) // default 64 KiB line limit: events are bounded
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			stall.Reset(stallTimeout)
			var d map[string]any
			if err := json.Unmarshal([]byte(line), &d); err != nil {
				resp.Body.Close()
				r.err = err
				return r
			}
			s, _ := d["seq"].(float64)
			first := s
			if f, ok := d["from_seq"].(float64); ok {
				first = f
			}
			if first != next {
				resp.Body.Close()
				r.err = fmt.Errorf("event starts at seq %v, want %v (via %s)", first, next, base)
				return r
			}
			next = s + 1
			stage, _ := d["stage"].(string)
			switch d["type"] {
			case "stage_started", "stage_restarted":
				texts[stage] = ""
			case "token_delta":
				texts[stage] += d["text"].(string)
			case "run_completed":
				resp.Body.Close()
				// Events do not repeat the answer: it is the curator's text.
				r.answer = texts["curator"]
				if d["answer_bytes"] != float64(len(r.answer)) {
					r.err = fmt.Errorf("answer_bytes %v, the curator streamed %d bytes", d["answer_bytes"], len(r.answer))
				}
				return r
			case "run_failed", "run_cancelled":
				resp.Body.Close()
				r.err = fmt.Errorf("ended with %v", d)
				return r
			}
		}
		stall.Stop()
		resp.Body.Close()
	}
	r.err = fmt.Errorf("no end within %v (next seq %v)", timeout, next)
	return r
}

// stopProcess sends SIGTERM (a node drains its runs, a gateway leaves) and
// waits for the exit.
func stopProcess(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }() // the start helper's cleanup then finds it waited for
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		dumpGoroutines(cmd, done)
		t.Fatalf("pid %d did not exit within 30 s of SIGTERM (its goroutines are in its log)", cmd.Process.Pid)
	}
}

// gatewayCmd is the newest gateway process started on addr.
func gatewayCmd(t *testing.T, addr string) *exec.Cmd {
	t.Helper()
	for i := len(procs) - 1; i >= 0; i-- {
		if procs[i].addr == addr {
			return procs[i].cmd
		}
	}
	t.Fatalf("no gateway process at %s", addr)
	return nil
}

// waitAlive polls each gateway's view until it has n live members.
func waitAlive(t *testing.T, gateways []string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, gw := range gateways {
		for metric(t, gw+"/metrics", "qlc_cluster_members_alive") != strconv.Itoa(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%s never saw %d members (has %s)", gw, n, metric(t, gw+"/metrics", "qlc_cluster_members_alive"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// expectedAnswersFor runs profile for each seed in one process (no
// cluster), all at once, for the transcript comparison.
func expectedAnswersFor(t *testing.T, profile string, seeds []int64) map[int64]string {
	t.Helper()
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		t.Fatal(err)
	}
	providers, _ := actors.BuildProviders(stages, nil)
	cfg := actors.DefaultConfig()
	cfg.Stages, cfg.Providers, cfg.RunSlots = stages, providers, 0
	e, err := actors.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown(context.Background())
	handles := map[int64]*actors.Hub{}
	for _, s := range seeds {
		h, err := e.StartRun(actors.RunRequest{Profile: profile, Query: "How do vector clocks work?", Seed: s})
		if err != nil {
			t.Fatal(err)
		}
		handles[s] = h
	}
	out := map[int64]string{}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for s, h := range handles {
		if err := h.WaitDone(ctx); err != nil {
			t.Fatal(err)
		}
		evs := h.Events(1)
		out[s] = evs[len(evs)-1].GetRunCompleted().GetAnswer()
	}
	return out
}
