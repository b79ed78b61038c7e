package cluster

import (
	"slices"
	"testing"
)

// EachMember walks the same members as Members, in the same order, and
// stops when asked.
func TestEachMemberWalksTheView(t *testing.T) {
	c := &Cluster{}
	ms := []Member{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	c.snap.Store(&ms)
	var names []string
	c.EachMember(func(m *Member) bool { names = append(names, m.Name); return true })
	var want []string
	for _, m := range c.Members() {
		want = append(want, m.Name)
	}
	if !slices.Equal(names, want) || len(names) != 3 {
		t.Fatalf("EachMember %v, Members %v", names, want)
	}
	names = nil
	c.EachMember(func(m *Member) bool { names = append(names, m.Name); return m.Name != "b" })
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Fatalf("stopped walk: %v", names)
	}
}
