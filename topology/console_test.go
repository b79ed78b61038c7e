package topology

import (
	"slices"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// For the cluster console: a paused member is first among Suspects (this
// member's probe of it failed), then declared dead, and Changed signals
// the membership change.
func TestSuspectsAndChanged(t *testing.T) {
	n := cluster.NewMemNetwork()
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g}})
	waitSee(t, []string{"gw:1", "n1:1"}, g, n1)
	name := n1.Name()
	for len(g.Changed()) > 0 {
		<-g.Changed()
	}
	if s := g.Suspects(); len(s) != 0 {
		t.Fatalf("suspects before any failure: %v", s)
	}
	n1.transport().Pause()
	waitFor(t, 10*time.Second, "gw suspects n1", func() bool { return slices.Contains(g.Suspects(), name) })
	waitFor(t, 10*time.Second, "gw: NodeLost n1:1", func() bool { return g.has(actors.NodeLost, "n1:1") })
	select {
	case <-g.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no Changed signal for the loss")
	}
	if slices.Contains(g.Suspects(), name) {
		t.Fatal("a member declared dead is still a suspect")
	}
}
