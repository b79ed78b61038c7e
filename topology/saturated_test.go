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
		got, after := saturated(each)
		if got != c.want || (got && after <= 0) {
			t.Errorf("%s: saturated = %v, %v; want %v with a Retry-After", c.name, got, after, c.want)
		}
	}
}
