package main

import (
	"slices"
	"testing"
)

func TestDropRules(t *testing.T) {
	a := member{name: "node-1", uid: 62001, ports: []string{"4001", "5001"}}
	gw := member{name: "gateway", uid: 0, ports: []string{"4009", "5009"}}
	got := dropRules(a, gw)
	want := [][]string{
		{"-o", "lo", "-m", "owner", "--uid-owner", "62001", "-p", "tcp", "-m", "multiport", "--dports", "4009,5009", "-j", "DROP"},
		{"-o", "lo", "-m", "owner", "--uid-owner", "62001", "-p", "udp", "-m", "multiport", "--dports", "4009,5009", "-j", "DROP"},
		// answers from a's ports on connections the gateway (mark 62000) opened
		{"-o", "lo", "-m", "owner", "--uid-owner", "62001", "-p", "tcp", "-m", "multiport", "--sports", "4001,5001", "-m", "connmark", "--mark", "62000", "-j", "DROP"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d rules, want %d", len(got), len(want))
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("rule %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
	// The gateway's own rules use uid 0 and mark the node's connections by its uid.
	back := dropRules(gw, a)
	if back[0][5] != "0" || back[2][len(back[2])-3] != "62001" {
		t.Errorf("gateway → node rules: %v", back)
	}
}

func TestSplitRulesBothWaysEveryPair(t *testing.T) {
	m := func(uid uint32, p string) member { return member{uid: uid, ports: []string{p}} }
	a := []member{m(62001, "1"), m(62002, "2")}
	b := []member{m(0, "9"), m(62003, "3"), m(62004, "4")}
	rules := splitRules(a, b)
	if len(rules) != 3*2*len(a)*len(b) {
		t.Fatalf("%d rules, want %d", len(rules), 3*2*len(a)*len(b))
	}
	// No rule drops traffic inside a group: a uid's request rules only name
	// the other group's ports.
	for _, r := range rules {
		uid, dports := r[5], ""
		if i := slices.Index(r, "--dports"); i >= 0 {
			dports = r[i+1]
		}
		inA := uid == "62001" || uid == "62002"
		if dports != "" && inA != (dports == "9" || dports == "3" || dports == "4") {
			t.Errorf("rule %v drops traffic within a group", r)
		}
	}
}

func TestMarkRules(t *testing.T) {
	rules := markRules(62001, 2)
	if len(rules) != 3 {
		t.Fatalf("%d rules", len(rules))
	}
	for i, want := range []string{"62000", "62001", "62002"} {
		if got := rules[i][len(rules[i])-1]; got != want {
			t.Errorf("rule %d sets mark %s, want %s", i, got, want)
		}
		if !slices.Contains(rules[i], "--mark") { // only unmarked connections
			t.Errorf("rule %d does not match mark 0: %v", i, rules[i])
		}
	}
}

func TestRestoreInput(t *testing.T) {
	in := restoreInput("QLC-GROUP-DROP", [][]string{{"-o", "lo", "-j", "DROP"}})
	if in != "*filter\n-A QLC-GROUP-DROP -o lo -j DROP\nCOMMIT\n" {
		t.Errorf("got %q", in)
	}
}

func TestSplitGroups(t *testing.T) {
	ns := []*proc{{name: "n1"}, {name: "n2"}, {name: "n3"}, {name: "n4"}, {name: "n5"}}
	for _, n := range []int{4, 5} {
		for i := 0; i < 4; i++ {
			cut, kept := splitGroups(ns[:n], i)
			if len(cut) < 2 || len(kept) < 2 || len(cut)+len(kept) != n {
				t.Errorf("n=%d fault %d: %d | %d", n, i, len(cut), len(kept))
			}
			for _, c := range cut {
				if slices.Contains(kept, c) {
					t.Errorf("%s on both sides", c.name)
				}
			}
		}
		c0, _ := splitGroups(ns[:n], 0)
		c1, k1 := splitGroups(ns[:n], 1)
		if !slices.Equal(c0, k1) || slices.Equal(c0, c1) {
			t.Errorf("n=%d: the gateway does not change sides between faults", n)
		}
	}
}

func TestAsymmetricPeer(t *testing.T) {
	gw := &proc{name: "gateway"}
	ns := []*proc{{name: "n1"}, {name: "n2"}, {name: "n3"}}
	if p := asymmetricPeer(ns, ns[0], gw, 0); p != ns[1] {
		t.Errorf("fault 0: %s", p.name)
	}
	if p := asymmetricPeer(ns, ns[1], gw, 0); p != ns[0] {
		t.Errorf("fault 0 from n2: %s", p.name)
	}
	if p := asymmetricPeer(ns, ns[0], gw, 1); p != gw {
		t.Errorf("fault 1: %s", p.name)
	}
	if p := asymmetricPeer(ns[:1], ns[0], gw, 2); p != gw {
		t.Errorf("a lone node: %s", p.name)
	}
}

func TestGroupScenariosValidate(t *testing.T) {
	for _, s := range groupScenarios {
		c := DefaultConfig()
		c.Scenario = s
		if err := c.validate(); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if c.Nodes < groupMinNodes {
			t.Errorf("%s runs %d nodes", s, c.Nodes)
		}
		if slices.Contains(scenarios, s) {
			t.Errorf("%s is part of all (and so of make chaos-smoke)", s)
		}
		if sc := scenarioFor(s, c); sc.inject == nil || sc.faults == 0 {
			t.Errorf("%s: no injector", s)
		}
	}
}

func TestSplitGroupsOfThree(t *testing.T) {
	ns := []*proc{{name: "n1"}, {name: "n2"}, {name: "n3"}}
	for i := 0; i < 3; i++ {
		cut, kept := splitGroups(ns, i)
		if len(cut) != 2 || len(kept) != 1 || kept[0] != ns[i] || slices.Contains(cut, kept[0]) {
			t.Errorf("fault %d: %v | %v", i, cut, kept)
		}
	}
}

func TestNSInput(t *testing.T) {
	got := nsDropInput([]string{"172.18.0.2", "172.18.0.5"})
	want := "*filter\n:QLC-GROUP - [0:0]\n-I OUTPUT 1 -j QLC-GROUP\n-A QLC-GROUP -d 172.18.0.2/32 -j DROP\n-A QLC-GROUP -d 172.18.0.5/32 -j DROP\nCOMMIT\n"
	if got != want {
		t.Errorf("got %q", got)
	}
}
