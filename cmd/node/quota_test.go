package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/quota"
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
	results, _ := postBurst([]string{c.gws[0].base, c.gws[1].base}, tn.key, "slow", attempts)
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
	var wg sync.WaitGroup
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

// TestLimiterIDSetting: the node process takes its member id from
// -limiter-id / QLC_LIMITER_ID as quota.MemberID decides (an explicit id, or
// "ordinal" from its host name, as a StatefulSet pod), refuses a bad value
// before it joins anything, and with "ordinal" past the group runs as a
// plain node. The cases with a pod's host name run the node in a UTS
// namespace of its own (unshare -Ur -u, where user namespaces are allowed;
// skipped elsewhere); the last case runs on this machine's host name and
// expects what quota.MemberID says of it.
func TestLimiterIDSetting(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	type testCase struct {
		name  string
		host  string // run under this host name ("": the machine's)
		env   []string
		exits bool   // the process ends on its own with an error
		text  string // in its output
	}
	dir := t.TempDir()
	cases := []testCase{
		{"id outside the group", "", []string{"QLC_LIMITER_ID=4"}, true,
			"-limiter-id: quota: member id 4 is not one of the group's ids 1, 2, 3"},
		{"not an id", "", []string{"QLC_LIMITER_ID=first"}, true,
			`-limiter-id: quota: member id "first": want 0 (no member), one of 1, 2, 3, or "ordinal"`},
		{"id without a log dir", "", []string{"QLC_LIMITER_ID=2"}, true,
			"-limiter-id needs -limiter-dir"},
		{"ordinal 0 is member 1", "qlc-node-0", []string{"QLC_LIMITER_ID=ordinal", "QLC_LIMITER_DIR=" + filepath.Join(dir, "q0")}, false,
			`"msg":"quota group","limiter_id":1,"setting":"ordinal","hostname":"qlc-node-0","member":true`},
		{"ordinal 2 is member 3", "qlc-node-2", []string{"QLC_LIMITER_ID=ordinal", "QLC_LIMITER_DIR=" + filepath.Join(dir, "q2")}, false,
			`"msg":"quota group","limiter_id":3,"setting":"ordinal","hostname":"qlc-node-2","member":true`},
		{"ordinal 3 is a plain node", "qlc-node-3", []string{"QLC_LIMITER_ID=ordinal", "QLC_LIMITER_DIR=" + filepath.Join(dir, "q3")}, false,
			`"msg":"quota group","limiter_id":0,"setting":"ordinal","hostname":"qlc-node-3","member":false`},
		{"ordinal on a Deployment's pod", "qlc-node-5d8f7b9c4-x2k9p", []string{"QLC_LIMITER_ID=ordinal"}, true,
			`host name "qlc-node-5d8f7b9c4-x2k9p" does not end in -N`},
	}
	here := testCase{name: "ordinal on this host " + host, env: []string{"QLC_LIMITER_ID=ordinal"}}
	switch id, err := quota.MemberID(quota.Ordinal, host, nil); {
	case err != nil:
		here.exits, here.text = true, "-limiter-id: "+err.Error()
	case id != 0:
		here.exits, here.text = true, "-limiter-id needs -limiter-dir"
	default:
		here.text = `"msg":"quota group","limiter_id":0,"setting":"ordinal","hostname":"` + host + `","member":false`
	}
	cases = append(cases, here)
	unshare := canSetHostname()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bin, args := filepath.Join(binDir, "node"), slices.Clone(nodeListen)
			if c.host != "" {
				if !unshare {
					t.Skip("unshare -Ur -u does not work here: no host name of a pod to run under")
				}
				// hostname(1) may be absent: the UTS namespace's name is set by
				// writing it, then the node runs in that namespace.
				args = append([]string{"-Ur", "-u", "sh", "-c", `echo "$0" >/proc/sys/kernel/hostname && exec "$@"`, c.host, bin}, args...)
				bin = "unshare"
			}
			cmd := exec.Command(bin, args...)
			cmd.Env = append(append(os.Environ(), "QLC_CLUSTER_KEY="+testKey, "QLC_LIMITER_ID=", "QLC_LIMITER_DIR="), c.env...)
			var out lockedBuffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			deadline := time.After(30 * time.Second)
			var werr error
			ended := false
		wait:
			for {
				select {
				case werr = <-exited:
					ended = true
					break wait
				case <-deadline:
					break wait
				case <-time.After(20 * time.Millisecond):
					if !c.exits && strings.Contains(out.String(), c.text) {
						break wait
					}
				}
			}
			if !ended {
				_ = cmd.Process.Signal(syscall.SIGTERM)
				select {
				case werr = <-exited:
				case <-time.After(15 * time.Second):
					_ = cmd.Process.Kill()
					werr = <-exited
				}
			}
			text := out.String()
			switch {
			case c.exits && !ended:
				t.Errorf("the node did not exit on its own; want an error with %q; output:\n%s", c.text, text)
			case c.exits && werr == nil:
				t.Errorf("the node exited 0; want an error with %q; output:\n%s", c.text, text)
			case !c.exits && ended:
				t.Errorf("the node exited by itself (%v); want it running with %q; output:\n%s", werr, c.text, text)
			case !strings.Contains(text, c.text):
				t.Errorf("output lacks %q:\n%s", c.text, text)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestQuotaGroupByOrdinal: five node processes started as a StatefulSet's
// pods are (deploy/k8s: QLC_LIMITER_ID=ordinal, the host names qlc-node-0
// … qlc-node-4, a log directory each) form the quota group from the first
// three, and the two past them run as plain nodes: they announce no member
// id, they host runs, and the group grants and holds the budget as with
// three nodes — also once member 1 is killed (two of three left).
func TestQuotaGroupByOrdinal(t *testing.T) {
	if !canSetHostname() {
		t.Skip("unshare -Ur -u does not work here: no pod host names to start nodes under")
	}
	dir := t.TempDir()
	const pods = 5
	c := startTCluster(&tcluster{tb: t, pf: writeProfiles(t),
		nodeHost: func(i int) string { return fmt.Sprintf("qlc-node-%d", i) },
		nodeArgs: func(i int) []string {
			return []string{"-limiter-id", "ordinal", "-limiter-dir", filepath.Join(dir, fmt.Sprint("data-qlc-node-", i))}
		}}, pods, 1)
	g := c.gws[0]

	// What each pod announces, as the gateway saw it join.
	kinds := map[string][]string{}
	for _, l := range strings.Split(g.logText(t), "\n") {
		var e struct {
			Msg    string   `json:"msg"`
			Member string   `json:"member"`
			Kinds  []string `json:"kinds"`
		}
		if json.Unmarshal([]byte(l), &e) != nil || e.Msg != "cluster: member joined" {
			continue
		}
		for i := range pods {
			if strings.HasPrefix(e.Member, fmt.Sprintf("node-qlc-node-%d-", i)) {
				kinds[fmt.Sprint(i)] = e.Kinds
			}
		}
	}
	for i := range pods {
		k, ok := kinds[fmt.Sprint(i)]
		quotaKinds := slices.DeleteFunc(slices.Clone(k), func(s string) bool { return !strings.HasPrefix(s, "quota") })
		var want []string
		if i < 3 {
			want = []string{"quota", fmt.Sprintf("quota-%d", i+1)}
		}
		if !ok || !slices.Equal(quotaKinds, want) {
			t.Errorf("qlc-node-%d: announced %v (joined: %v); want the quota kinds %v", i, k, ok, want)
		}
	}

	r := reservation(t, "slow")
	burst := func(name string, slots int64, attempts int) int64 {
		t.Helper()
		tn := createTenant(t, g.base, name, name, map[string]any{"token_budget": slots * r, "concurrent_runs": 0})
		results, _ := postBurst([]string{g.base}, tn.key, "slow", attempts)
		var n int64
		outcomes := map[string]int{}
		for i, p := range results {
			outcomes[fmt.Sprintf("%d %s", p.status, p.code)]++
			switch {
			case p.err != nil:
				t.Errorf("%s: POST %d: %v", name, i, p.err)
			case p.status == http.StatusCreated:
				n++
			case p.status == http.StatusTooManyRequests && p.code == "token_budget",
				p.status == http.StatusServiceUnavailable && (p.code == "limiter_unavailable" || p.code == "no_node"):
			default:
				t.Errorf("%s: POST %d: %d %q, want 201, 429 token_budget or 503 limiter_unavailable", name, i, p.status, p.code)
			}
		}
		t.Logf("figure: %s: %d POSTs for a budget of %d runs: %v", name, attempts, slots, outcomes)
		if n > slots {
			t.Errorf("%s: the budget was overrun: %d runs admitted, the budget holds %d", name, n, slots)
		}
		if n == 0 {
			t.Errorf("%s: no run was admitted", name)
		}
		return n
	}
	attempts := 40
	if raceEnabled {
		attempts = 20
	}
	burst("five-pods", int64(attempts/2), attempts)

	// Member 1 (ordinal 0) killed: members 2 and 3 still commit slices.
	if err := c.nodes[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.waitMembers(g, pods)
	burst("member-1-down", int64(attempts/4), attempts/2)

	var plain int
	for _, m := range c.nodes[3:] {
		n, _ := strconv.Atoi(c.hosted(m))
		plain += n
	}
	t.Logf("figure: runs hosted by the plain nodes (ordinals 3, 4): %d", plain)
	if plain == 0 {
		t.Error("the plain nodes hosted no run")
	}
}
