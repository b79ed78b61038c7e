package scalesim

import (
	"fmt"
	"testing"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// BenchmarkPickLeastLoaded is the cost of one placement decision
// (cluster.Topology.PickLeastLoaded, what Candidates calls for every run and
// every parallel step) against the number of coordinator hosts.
func BenchmarkPickLeastLoaded(b *testing.B) {
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			ms := make([]cluster.Member, n)
			for i := range ms {
				ms[i] = cluster.Member{Name: fmt.Sprintf("qlc-node-%04d-%08x", i, i*2654435761), Kinds: []string{actors.KindCoordinator, actors.KindTokenizer},
					RemoteAddr: "10.0.0.1:8090", Features: []string{"avx2"}, Load: i % 40}
			}
			v := cluster.Topology{Members: ms}
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = fmt.Sprintf("run_%032x", i*7919)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, ok := v.PickLeastLoaded(actors.KindCoordinator, keys[i%len(keys)], 2); !ok {
					b.Fatal("no pick")
				}
			}
		})
	}
}
