package topology

import (
	"testing"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// The cluster is saturated only when every coordinator host that is not
// draining announced a load at its limit; gateways, draining nodes and
// nodes without a limit never make it so.
func TestSaturated(t *testing.T) {
	coord := []string{actors.KindCoordinator}
	node := func(name string, load, limit int, draining bool) cluster.Member {
		return cluster.Member{Name: name, RemoteAddr: name + ":1", Kinds: coord, Load: load, Limit: limit, Draining: draining}
	}
	gw := cluster.Member{Name: "gw", RemoteAddr: "gw:1", Kinds: []string{actors.KindGateway}}
	for _, c := range []struct {
		name    string
		members []cluster.Member
		want    bool
	}{
		{"no nodes", []cluster.Member{gw}, false},
		{"all full", []cluster.Member{gw, node("a", 4, 4, false), node("b", 9, 8, false)}, true},
		{"one has room", []cluster.Member{node("a", 4, 4, false), node("b", 7, 8, false)}, false},
		{"the one with room is draining", []cluster.Member{node("a", 4, 4, false), node("b", 0, 8, true)}, true},
		{"no limit announced", []cluster.Member{node("a", 4, 4, false), node("b", 100, 0, false)}, false},
	} {
		each := func(f func(*cluster.Member) bool) {
			for i := range c.members {
				if !f(&c.members[i]) {
					return
				}
			}
		}
		got, after := saturated(each, cluster.Member.Saturated)
		if got != c.want || (got && after <= 0) {
			t.Errorf("%s: saturated = %v, %v; want %v with a Retry-After", c.name, got, after, c.want)
		}
	}
}

// A node is full by the load it announced or by this process's own runs
// there, whichever is more (issue 18: the announcement lags; the runs this
// gateway placed since, it knows at once): the cluster is saturated, and
// the full node offered last, without waiting for the next announcement.
func TestOwnRunsFillANode(t *testing.T) {
	coord := []string{actors.KindCoordinator}
	a := cluster.Member{Name: "a", RemoteAddr: "a:1", Kinds: coord, Load: 1, Limit: 4}
	b := cluster.Member{Name: "b", RemoteAddr: "b:1", Kinds: coord, Load: 3, Limit: 4}
	members := []cluster.Member{a, b}
	each := func(f func(*cluster.Member) bool) {
		for i := range members {
			if !f(&members[i]) {
				return
			}
		}
	}
	own := map[string]int{}
	m := &Membership{}
	if got, _ := saturated(each, m.full()); got {
		t.Fatal("saturated with room on both nodes and no own count")
	}
	m.CountOwnRuns(func(addr string) int { return own[addr] })
	own["a:1"] = 4 // announced 1: we placed three more since
	if got, _ := saturated(each, m.full()); got {
		t.Fatal("saturated while b has room")
	}
	if out := lastIf([]string{"a:1", "b:1"}, members, m.full()); out[0] != "b:1" {
		t.Fatalf("candidates %v: the node full of our runs should go last", out)
	}
	own["b:1"] = 2 // less than b announced: the announcement counts
	if got, _ := saturated(each, m.full()); got {
		t.Fatal("saturated while b announced 3 of 4 and holds 2 of ours")
	}
	own["b:1"] = 4
	if got, after := saturated(each, m.full()); !got || after <= 0 {
		t.Fatalf("saturated = %v, %v with our runs at both limits", got, after)
	}
	members[1].Limit = 0 // no limit announced: never full
	if got, _ := saturated(each, m.full()); got {
		t.Fatal("saturated though b announced no limit")
	}
}

// A parallel step's attempt goes to nodes with room in their stage share
// first: a node that announced its share full gets no new attempt while
// another has room (it is offered last, only when every node refused), and
// the placement does not depend on the run load (a node at its run limit
// may still run stage attempts). Gateways and draining nodes are never
// offered one.
func TestStepCandidatesPutFullSharesLast(t *testing.T) {
	coord := []string{actors.KindCoordinator}
	node := func(name string, stage, stageLimit int) cluster.Member {
		return cluster.Member{Name: name, RemoteAddr: name + ":1", Kinds: coord, StageLoad: stage, StageLimit: stageLimit}
	}
	gw := cluster.Member{Name: "gw", RemoteAddr: "gw:1", Kinds: []string{actors.KindGateway}}
	full := node("full", 6, 6)
	members := []cluster.Member{gw, full, node("b", 3, 6), node("c", 0, 0)}
	draining := node("d", 0, 8)
	draining.Draining = true
	members = append(members, draining)
	runFull := node("runfull", 0, 8)
	runFull.Load, runFull.Limit = 4, 4
	members = append(members, runFull)
	firsts := map[string]int{}
	for i := range 200 {
		key := "run_" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "/proposer-1"
		out := stepCandidates(members, key, nil)
		if len(out) != 4 || out[len(out)-1] != "full:1" {
			t.Fatalf("%s: candidates %v; want 4 coordinator hosts with full:1 last", key, out)
		}
		for _, a := range out {
			if a == "gw:1" || a == "d:1" {
				t.Fatalf("%s: candidates %v include a gateway or a draining node", key, out)
			}
		}
		firsts[out[0]]++
	}
	// The others share the first offers (rendezvous on the step's key).
	for _, a := range []string{"b:1", "c:1", "runfull:1"} {
		if firsts[a] == 0 {
			t.Fatalf("%s never offered first in 200 steps: %v", a, firsts)
		}
	}
	// Once full has room again, it takes its share of first offers.
	members[1] = node("full", 5, 6)
	n := 0
	for i := range 200 {
		if stepCandidates(members, "run_"+string(rune('a'+i%26))+string(rune('a'+i/26))+"/p", nil)[0] == "full:1" {
			n++
		}
	}
	if n == 0 {
		t.Fatal("a node with room again is never offered first")
	}
}
