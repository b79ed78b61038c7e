package quota

import (
	"fmt"
	"strings"
	"testing"
)

// TestMemberID: the setting and host name each decide what they should,
// and every bad value is an error that says what it wanted.
func TestMemberID(t *testing.T) {
	for _, c := range []struct {
		setting, host string
		peers         []uint64
		want          uint64
	}{
		{"", "anything", nil, 0},
		{"0", "qlc-node-1", nil, 0},
		{"1", "node1", nil, 1},
		{"3", "", nil, 3},
		{" 2 ", "x", nil, 2},
		{"ordinal", "qlc-node-0", nil, 1},
		{"ordinal", "qlc-node-1", nil, 2},
		{"ordinal", "qlc-node-2", nil, 3},
		// Beyond the group: plain nodes, never a fourth voter.
		{"ordinal", "qlc-node-3", nil, 0},
		{"ordinal", "qlc-node-11", nil, 0},
		// setHostnameAsFQDN: the first label is the pod's name.
		{"ordinal", "qlc-node-2.qlc-gossip.qlc.svc.cluster.local", nil, 3},
		// Another group: ordinal i is peers[i].
		{"ordinal", "q-1", []uint64{4, 5, 6, 7, 8}, 5},
		{"ordinal", "q-4", []uint64{4, 5, 6, 7, 8}, 8},
		{"ordinal", "q-5", []uint64{4, 5, 6, 7, 8}, 0},
		{"7", "", []uint64{4, 5, 6, 7, 8}, 7},
	} {
		got, err := MemberID(c.setting, c.host, c.peers)
		if err != nil || got != c.want {
			t.Errorf("MemberID(%q, %q, %v) = %d, %v; want %d", c.setting, c.host, c.peers, got, err, c.want)
		}
	}
	for _, c := range []struct{ setting, host, want string }{
		{"4", "qlc-node-0", "not one of the group's ids 1, 2, 3"},
		{"-1", "", "want 0 (no member), one of 1, 2, 3, or \"ordinal\""},
		{"1.0", "", "want 0"},
		{"one", "", "want 0"},
		{"Ordinal", "qlc-node-0", "want 0"},
		{"ordinal", "", `host name "" does not end in -N`},
		{"ordinal", "qlc-node", `host name "qlc-node" does not end in -N`},
		{"ordinal", "qlc-node-", "does not end in -N"},
		{"ordinal", "node1", "does not end in -N"},
		// A Deployment's pod: the hash suffix is no ordinal.
		{"ordinal", "qlc-node-5d8f7b9c4-x2k9p", `("x2k9p" is not one)`},
		{"ordinal", "qlc-node-01", `("01" is not one)`},
		{"ordinal", "qlc-node-+1", `("+1" is not one)`},
		{"ordinal", "qlc-node-99999999999999999999", "is not one"},
	} {
		got, err := MemberID(c.setting, c.host, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("MemberID(%q, %q) = %d, %v; want an error with %q", c.setting, c.host, got, err, c.want)
		}
	}
}

// TestMemberIDScaling: whatever the StatefulSet's replicas, ordinals give
// each id of the group to exactly one pod while there are enough pods, and
// no pod an id outside it.
func TestMemberIDScaling(t *testing.T) {
	peers := DefaultConfig().Peers
	for replicas := 1; replicas <= 20; replicas++ {
		seen := map[uint64]int{}
		for i := range replicas {
			id, err := MemberID(Ordinal, fmt.Sprintf("qlc-node-%d", i), nil)
			if err != nil {
				t.Fatal(err)
			}
			seen[id]++
		}
		for _, p := range peers {
			if want := min(1, max(0, replicas-int(p)+1)); seen[p] != want {
				t.Errorf("%d replicas: member %d on %d pods, want %d", replicas, p, seen[p], want)
			}
		}
		if plain := max(0, replicas-len(peers)); seen[0] != plain {
			t.Errorf("%d replicas: %d plain nodes, want %d", replicas, seen[0], plain)
		}
		if len(seen) > len(peers)+1 {
			t.Errorf("%d replicas: ids %v", replicas, seen)
		}
	}
}
