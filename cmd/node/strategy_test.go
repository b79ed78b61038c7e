package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
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

// In a three-node cluster where each node runs at most two stage attempts
// at once, a six-proposer run uses all three nodes: a node at capacity
// refuses the step and the coordinator offers it to the next.
func TestParallelStepsSpreadOverTheCluster(t *testing.T) {
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

	code, v := postRun(t, c.gw, "moa6")
	if code != 201 {
		t.Fatalf("POST: %d %v", code, v)
	}
	last := streamEvents(t, c.gw, v["id"].(string), nil)
	if last["type"] != "run_completed" {
		t.Fatalf("the run ended with %v", last)
	}
	total := 0
	for i, m := range c.nodes {
		n, _ := strconv.Atoi(metric(t, "http://"+m.ops+"/metrics", `qlc_stage_host_steps_total{outcome="started"}`))
		if n == 0 {
			t.Errorf("node %d ran no step of the six-proposer run", i)
		}
		total += n
	}
	if total != 7 {
		t.Errorf("the nodes started %d steps, want 7 (6 proposers and the aggregator)", total)
	}
}
