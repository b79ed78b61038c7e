package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// strategyProfiles: a six-proposer Mixture-of-Agents whose proposers
// stream for about half a second each.
const strategyProfiles = profiles + `
  moa6:
    strategy: moa
    provider: medium
    proposers: [{model: a}, {model: b}, {model: c}, {model: d}, {model: e}, {model: f}]
    aggregator: {provider: quick, model: agg}
`

// startStageCluster starts three nodes that run at most two stage attempts
// at once each, and a gateway, on strategyProfiles.
func startStageCluster(t *testing.T) *memberCluster {
	t.Helper()
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(strategyProfiles), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &memberCluster{t: t, pf: pf}
	for i := 0; i < 3; i++ {
		c.addNode("-stage-slots", "2")
	}
	_, c.gw, _ = launchGateway(t, testKey, "-seeds", c.seed, "-gossip-bind", "127.0.0.1:0", "-bind", "127.0.0.1:0", "-profiles", pf)
	c.waitMembers(4)
	return c
}

// In a three-node cluster where each node runs at most two stage attempts
// at once, a six-proposer run uses all three nodes: a node at capacity
// refuses the step and the coordinator offers it to the next.
func TestParallelStepsSpreadOverTheCluster(t *testing.T) {
	c := startStageCluster(t)

	code, v := postRun(t, c.gw, "moa6")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	last := streamEvents(t, c.gw, v["id"].(string), nil)
	if last["type"] != "run_completed" {
		t.Fatalf("the run ended with %v", last)
	}
	total := 0
	var counts []int
	defer func() { t.Logf("steps started per node: %v", counts) }()
	for i, m := range c.nodes {
		n, _ := strconv.Atoi(metric(t, "http://"+m.ops+"/metrics", `qlc_stage_host_steps_total{outcome="started"}`))
		if n == 0 {
			t.Errorf("node %d ran no step of the six-proposer run", i)
		}
		total += n
		counts = append(counts, n)
	}
	if total != 7 {
		t.Errorf("the nodes started %d steps, want 7 (6 proposers and the aggregator)", total)
	}
}

// A node running some of a six-proposer run's steps (not its coordinator)
// is killed while they stream: those steps are redone on the other nodes,
// no finished step is recomputed, and the run completes.
func TestParallelStepsSurviveKillOfAStageHost(t *testing.T) {
	c := startStageCluster(t)
	before := make([]int, len(c.nodes))
	for i, m := range c.nodes {
		before[i] = c.hosted(m)
	}
	code, v := postRun(t, c.gw, "moa6")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	coordinator := -1
	waitUntil(t, 10*time.Second, "the run's coordinator", func() bool {
		for i, m := range c.nodes {
			if c.hosted(m) > before[i] {
				coordinator = i
				return true
			}
		}
		return false
	})
	victim := c.nodes[(coordinator+1)%len(c.nodes)]
	streaming, completed := map[string]bool{}, map[string]bool{}
	killed := false
	var afterKill []map[string]any
	last := streamEvents(t, c.gw, v["id"].(string), func(d map[string]any) {
		step, _ := d["step"].(string)
		if killed {
			afterKill = append(afterKill, d)
			return
		}
		switch d["type"] {
		case "token_delta":
			streaming[step] = true
		case "stage_completed":
			completed[step] = true
		}
		if len(streaming) >= 6 && len(completed) == 0 {
			killed = true
			_ = victim.cmd.Process.Kill()
		}
	})
	if !killed {
		t.Fatal("the six proposers never streamed at once")
	}
	if last["type"] != "run_completed" {
		t.Fatalf("the run ended with %v", last)
	}
	restarted := 0
	for _, d := range afterKill {
		step, _ := d["step"].(string)
		if d["type"] == "stage_restarted" {
			restarted++
		}
		if d["type"] == "stage_started" && completed[step] {
			t.Fatalf("finished step %s was recomputed", step)
		}
	}
	if restarted == 0 {
		t.Fatal("no step was restarted after its stage host was killed")
	}
}
