package cluster

import (
	"fmt"
	"testing"
	"time"
)

func membersN(n int, kinds ...string) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("node-%02d", i), Kinds: kinds}
	}
	return ms
}

func TestOwnerRendezvousStability(t *testing.T) {
	const keys = 20000
	ms := membersN(10, "limiter")
	before := make([]string, keys)
	counts := map[string]int{}
	for i := range keys {
		o, ok := ownerOf(ms, "limiter", fmt.Sprintf("tenant-%d", i))
		if !ok {
			t.Fatal("no owner")
		}
		before[i] = o.Name
		counts[o.Name]++
	}
	for n, c := range counts { // each of 10 owns ~10%
		if c < keys/10*7/10 || c > keys/10*13/10 {
			t.Errorf("%s owns %d of %d keys: unbalanced", n, c, keys)
		}
	}
	added := append(ms, Member{Name: "node-new", Kinds: []string{"limiter"}})
	moved := 0
	for i := range keys {
		o, _ := ownerOf(added, "limiter", fmt.Sprintf("tenant-%d", i))
		if o.Name != before[i] {
			moved++
			if o.Name != "node-new" {
				t.Fatalf("key %d moved between old members (%s -> %s)", i, before[i], o.Name)
			}
		}
	}
	frac := float64(moved) / keys
	if frac < 0.06 || frac > 0.12 { // expected 1/11 = 0.091
		t.Fatalf("adding 1 of 11 members moved %.3f of keys, want ~0.09", frac)
	}
	// Removing a member moves only its keys.
	removed := ms[1:]
	for i := range keys {
		o, _ := ownerOf(removed, "limiter", fmt.Sprintf("tenant-%d", i))
		if before[i] != ms[0].Name && o.Name != before[i] {
			t.Fatalf("key %d moved off a surviving member", i)
		}
	}
	// Only members hosting the kind are candidates.
	mixed := []Member{{Name: "a", Kinds: []string{"gateway"}}, {Name: "b", Kinds: []string{"limiter"}}}
	for i := range 100 {
		if o, _ := ownerOf(mixed, "limiter", fmt.Sprint(i)); o.Name != "b" {
			t.Fatal("owner does not host the kind")
		}
	}
}

func TestPickLeastLoaded(t *testing.T) {
	ms := membersN(3, "coordinator")
	ms[0].Load, ms[1].Load, ms[2].Load = 10, 0, 10
	idle := 0
	for i := range 3000 {
		key := fmt.Sprintf("run-%d", i)
		m, ok := pickLeastLoaded(ms, "coordinator", key, 2)
		if !ok {
			t.Fatal("no pick")
		}
		if m.Name == ms[1].Name {
			idle++
		}
		// Deterministic: same inputs, same choice (every gateway agrees).
		if again, _ := pickLeastLoaded(ms, "coordinator", key, 2); again.Name != m.Name {
			t.Fatal("not deterministic")
		}
		// The exported form is the same function.
		if pub, _ := (Topology{Members: ms}).PickLeastLoaded("coordinator", key, 2); pub.Name != m.Name {
			t.Fatalf("Topology.PickLeastLoaded picked %s, pickLeastLoaded %s", pub.Name, m.Name)
		}
		if all, _ := pickLeastLoaded(ms, "coordinator", key, 3); all.Name != ms[1].Name {
			t.Fatalf("d=all picked %s, load %d", all.Name, all.Load)
		}
	}
	// With two choices, the idle node wins whenever it is among the key's top 2 (~2/3 of keys), and
	// never loses to a loaded node when it is.
	if idle < 1800 || idle > 2200 {
		t.Fatalf("idle node got %d of 3000 with d=2, want ~2000", idle)
	}
	// Equal loads: spread like rendezvous hashing.
	for i := range ms {
		ms[i].Load = 5
	}
	counts := map[string]int{}
	for i := range 3000 {
		m, _ := pickLeastLoaded(ms, "coordinator", fmt.Sprintf("run-%d", i), 2)
		counts[m.Name]++
	}
	for n, c := range counts {
		if c < 700 || c > 1300 {
			t.Fatalf("equal loads: %s got %d of 3000", n, c)
		}
	}
	if _, ok := pickLeastLoaded(ms, "tokenizer", "x", 2); ok {
		t.Fatal("picked a member not hosting the kind")
	}
}

func TestPickLeastLoadedLive(t *testing.T) {
	n := NewMemNetwork()
	var cs []*Cluster
	var seed string
	for i := range 3 {
		tr := n.NewTransport()
		cfg := testConfig(fmt.Sprintf("c%d", i), tr)
		if seed != "" {
			cfg.Seeds = []string{seed}
		}
		seed = tr.Addr()
		cfg.Kinds = []string{"coordinator"}
		cfg.PlacementChoices = 3
		cs = append(cs, mustStart(t, cfg))
	}
	cs[0].SetLoad(4)
	cs[1].SetLoad(1)
	cs[2].SetLoad(9)
	waitFor(t, 5*time.Second, "loads gossiped", func() bool {
		ms := cs[2].Members()
		return len(ms) == 3 && ms[0].Load == 4 && ms[1].Load == 1 && ms[2].Load == 9
	})
	for i := range 50 {
		if m, _ := cs[2].PickLeastLoaded("coordinator", fmt.Sprint(i)); m.Name != "c1" {
			t.Fatalf("picked %s (load %d), want c1", m.Name, m.Load)
		}
	}
	// Member looks one name up in the same view.
	for i, want := range []int{4, 1, 9} {
		m, ok := cs[2].Member(fmt.Sprintf("c%d", i))
		if !ok || m.Load != want || m.GossipAddr == "" || !m.Has("coordinator") {
			t.Fatalf("Member(c%d) = %+v, %v; want load %d", i, m, ok, want)
		}
	}
	if _, ok := cs[2].Member("c3"); ok {
		t.Fatal("Member found a name that never joined")
	}
	_ = cs[1].Shutdown()
	waitFor(t, 5*time.Second, "c1 gone from c2's view", func() bool { _, ok := cs[2].Member("c1"); return !ok })
}
