package scalesim

import (
	"testing"
	"time"
)

// The figure's goal: with the shipped two choices, at 100 nodes half full,
// the busiest node holds at most 1.25 × the mean, with loads as stale as
// gossip makes them. The same simulation with one choice (plain rendezvous
// hashing) misses it: the test can fail.
func TestPlacementTwoChoicesBalance(t *testing.T) {
	two, err := SimulatePlacement(PlacementConfig{Nodes: 100, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	one, err := SimulatePlacement(PlacementConfig{Nodes: 100, Choices: 1, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("two choices %+v", two)
	t.Logf("one choice  %+v", one)
	if two.Choices != 2 {
		t.Fatalf("default choices %d, want the shipped 2", two.Choices)
	}
	if two.MaxOverMean > 1.25 {
		t.Errorf("two choices: max/mean %.3f > 1.25", two.MaxOverMean)
	}
	if one.MaxOverMean <= 1.25 || one.MaxOverMean < two.MaxOverMean+0.2 {
		t.Errorf("one choice: max/mean %.3f, want clearly worse than two choices' %.3f", one.MaxOverMean, two.MaxOverMean)
	}
	if two.Arrivals < 100*32*8 || two.MaxRuns < 32 {
		t.Errorf("too small a simulation: %+v", two)
	}
}

// Fresh loads and "least loaded of all" are the bounds two stale choices
// sit between; the simulation is deterministic for a seed.
func TestPlacementOrdering(t *testing.T) {
	cfg := PlacementConfig{Nodes: 50, PerNode: 16, Turnovers: 5, Seed: 3}
	a, _ := SimulatePlacement(cfg)
	b, _ := SimulatePlacement(cfg)
	if a != b {
		t.Fatalf("not deterministic: %+v vs %+v", a, b)
	}
	fresh := cfg
	fresh.Announce = -1
	all := fresh
	all.Choices = 50
	f, _ := SimulatePlacement(fresh)
	l, _ := SimulatePlacement(all)
	if !(l.MaxOverMean <= f.MaxOverMean && f.MaxOverMean <= a.MaxOverMean+0.02) {
		t.Errorf("least loaded of all %.3f, fresh two %.3f, stale two %.3f", l.MaxOverMean, f.MaxOverMean, a.MaxOverMean)
	}
	if _, err := SimulatePlacement(PlacementConfig{}); err == nil {
		t.Error("no nodes accepted")
	}
	if _, err := SimulatePlacement(PlacementConfig{Nodes: 3, Turnovers: 2}); err == nil {
		t.Error("2 turnovers accepted")
	}
	_ = time.Second
}
