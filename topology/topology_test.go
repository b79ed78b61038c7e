package topology

import (
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cluster"
)

// TestNodeLostOnlyForTheDead: a member that leaves gracefully (a node
// draining on SIGTERM: its runs finish there) is no NodeLost; a member
// declared dead (its traffic stops, as for a crash or a pause) is, with its
// actor address.
func TestNodeLostOnlyForTheDead(t *testing.T) {
	n := cluster.NewMemNetwork()
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g}})
	n2 := start(t, n, "n2", "n2:1", memberOpts{kinds: coord, seeds: []*member{g}})
	all := []string{"gw:1", "n1:1", "n2:1"}
	waitSee(t, all, g, n1, n2)

	if err := n2.Leave(2 * time.Second); err != nil {
		t.Fatal(err)
	}
	waitSee(t, []string{"gw:1", "n1:1"}, g, n1)
	n1.transport().Pause()
	waitFor(t, 10*time.Second, "gw: NodeLost n1:1", func() bool { return g.has(actors.NodeLost, "n1:1") })
	for _, m := range []*member{g, n1} {
		if m.has(actors.NodeLost, "n2:1") {
			t.Fatalf("%s: NodeLost for a member that left gracefully: %+v", m.addr, m.events())
		}
	}
	for _, ev := range g.events() {
		if ev.Kind == actors.NodeLost && ev.Member == "" {
			t.Fatalf("NodeLost names no member: %+v", ev)
		}
	}
}

// TestFencedRejoinAndAddressReuse: a paused member is declared dead; when
// it comes back it is fenced (Fenced, then Rejoined under a new name), and
// the others see a new member at the same actor address (AddressReused:
// dial it afresh), which they offer runs last while LostWarmup lasts.
func TestFencedRejoinAndAddressReuse(t *testing.T) {
	n := cluster.NewMemNetwork()
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	a := start(t, n, "a", "a:1", memberOpts{kinds: coord, seeds: []*member{g}})
	b := start(t, n, "b", "b:1", memberOpts{kinds: coord, seeds: []*member{g, a}})
	waitSee(t, []string{"gw:1", "a:1", "b:1"}, g, a, b)
	oldName := b.Name()

	b.transport().Pause()
	waitFor(t, 10*time.Second, "gw and a: NodeLost b:1", func() bool {
		return g.has(actors.NodeLost, "b:1") && a.has(actors.NodeLost, "b:1")
	})
	waitFor(t, 10*time.Second, "b alone", func() bool { return len(b.Members()) == 1 })
	if slices.ContainsFunc(b.events(), func(e actors.TopologyEvent) bool { return e.Kind == actors.Fenced }) {
		t.Fatal("fenced while cut off (nobody could tell it)")
	}
	b.transport().Resume()

	waitFor(t, 15*time.Second, "b fenced, then rejoined", func() bool {
		kinds := []actors.TopologyEventKind{}
		for _, e := range b.events() {
			if e.Kind == actors.Fenced || e.Kind == actors.Rejoined {
				kinds = append(kinds, e.Kind)
			}
		}
		return len(kinds) >= 2 && kinds[0] == actors.Fenced && kinds[1] == actors.Rejoined
	})
	if b.Name() == oldName {
		t.Fatalf("rejoined under the old name %s", oldName)
	}
	waitFor(t, 10*time.Second, "gw and a: AddressReused b:1", func() bool {
		return g.has(actors.AddressReused, "b:1") && a.has(actors.AddressReused, "b:1")
	})
	waitSee(t, []string{"gw:1", "a:1", "b:1"}, g, a, b)
	// The members lost with our own fencing are not NodeLost: they are alive.
	// (b may have declared them dead while cut off, before Resume: that is
	// a partition seen from b.)
	evs := b.events()
	fenced := slices.IndexFunc(evs, func(e actors.TopologyEvent) bool { return e.Kind == actors.Fenced })
	if evs[fenced].Done == nil {
		t.Fatal("Fenced carries no Done: the rejoin would not wait for the engine")
	}
	for _, ev := range evs[fenced:] {
		if ev.Kind == actors.NodeLost {
			t.Fatalf("NodeLost %s after b's fencing: %+v", ev.Addr, evs)
		}
	}
	// b:1 was declared dead a moment ago: offered last.
	for i := range 20 {
		c := g.Candidates(fmt.Sprint("run_", i))
		if len(c) != 2 || c[1] != "b:1" {
			t.Fatalf("candidates %v: want a:1 first, b:1 (recently lost) last", c)
		}
	}
}

// TestPlacementOrder: the first candidate is the less loaded of the two
// rendezvous-ranked coordinator hosts; every other host follows; gateways
// are never candidates.
func TestPlacementOrder(t *testing.T) {
	n := cluster.NewMemNetwork()
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	busy := start(t, n, "busy", "busy:1", memberOpts{kinds: coord, seeds: []*member{g}, load: func() actors.Load { return actors.Load{Active: 100} }})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g}})
	n2 := start(t, n, "n2", "n2:1", memberOpts{kinds: coord, seeds: []*member{g}})
	waitSee(t, []string{"gw:1", "busy:1", "n1:1", "n2:1"}, g, busy, n1, n2)
	waitFor(t, 10*time.Second, "gw sees busy's load", func() bool {
		return slices.ContainsFunc(g.Members(), func(m cluster.Member) bool { return m.RemoteAddr == "busy:1" && m.Load == 100 })
	})
	ms := g.Members()
	busyTop2 := 0
	for i := range 60 {
		id := fmt.Sprint("run_", i)
		top := cluster.Topology{Members: ms}
		first, _ := top.Owner(actors.KindCoordinator, id)
		second, _ := cluster.Topology{Members: slices.DeleteFunc(slices.Clone(ms), func(m cluster.Member) bool { return m.Name == first.Name })}.Owner(actors.KindCoordinator, id)
		want := first.RemoteAddr
		if first.RemoteAddr == "busy:1" {
			want = second.RemoteAddr // the less loaded of the top two
		}
		if first.RemoteAddr == "busy:1" || second.RemoteAddr == "busy:1" {
			busyTop2++
		}
		c := g.Candidates(id)
		if len(c) != 3 || c[0] != want {
			t.Fatalf("%s: candidates %v, want %s first of 3 (top two %s, %s)", id, c, want, first.RemoteAddr, second.RemoteAddr)
		}
		if slices.Contains(c, "gw:1") {
			t.Fatalf("a gateway is a candidate: %v", c)
		}
	}
	if busyTop2 == 0 {
		t.Fatal("the busy member was never among the top two: the test proves nothing")
	}
	if err := g.Ready(); err != nil {
		t.Fatal(err)
	}
}

// TestOrder is the ordering rule alone: draining members are skipped, the
// chosen one goes first, recently lost addresses go last.
func TestOrder(t *testing.T) {
	ms := []cluster.Member{
		{Name: "a", RemoteAddr: "a:1", Kinds: coord},
		{Name: "b", RemoteAddr: "b:1", Kinds: coord, Draining: true},
		{Name: "c", RemoteAddr: "c:1", Kinds: coord},
		{Name: "d", RemoteAddr: "d:1", Kinds: coord},
		{Name: "e", RemoteAddr: "", Kinds: coord},
		{Name: "g", RemoteAddr: "g:1", Kinds: gateway},
	}
	lost := func(a string) bool { return a == "a:1" }
	got := order(ms[3], true, ms, actors.KindCoordinator, lost)
	if want := []string{"d:1", "c:1", "a:1"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	got = order(cluster.Member{}, false, ms, actors.KindCoordinator, nil)
	if want := []string{"a:1", "c:1", "d:1"}; !slices.Equal(got, want) {
		t.Fatalf("order without a first = %v, want %v", got, want)
	}
	// A draining member is not a limiter host, and not in the view.
	withB := viewOf(ms, actors.KindCoordinator)
	ms[1].Draining = false
	if viewOf(ms, actors.KindCoordinator) == withB {
		t.Fatal("the view ignores a member that stopped draining")
	}
}

// TestLimiterHostAndViews: members with the same membership agree on every
// tenant's limiter host and view (a node's LimiterView is the gateway's
// view); when their memberships differ, so do their views.
func TestLimiterHostAndViews(t *testing.T) {
	n := cluster.NewMemNetwork()
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g}})
	n2 := start(t, n, "n2", "n2:1", memberOpts{kinds: coord, seeds: []*member{g}})
	n3 := start(t, n, "n3", "n3:1", memberOpts{kinds: coord, seeds: []*member{g}})
	all := []*member{g, n1, n2, n3}
	waitSee(t, []string{"gw:1", "n1:1", "n2:1", "n3:1"}, all...)
	owners := map[string]int{}
	var before string
	for i := range 30 {
		tenant := fmt.Sprint("t", i)
		addr, view, ok := g.LimiterHost(tenant)
		if !ok || view == "" {
			t.Fatalf("%s: no limiter host", tenant)
		}
		owners[addr]++
		before = view
		for _, m := range all[1:] {
			a, v, _ := m.LimiterHost(tenant)
			if a != addr || v != view || m.LimiterView(tenant) != view {
				t.Fatalf("%s: %s says %s/%s (own view %s), gw says %s/%s", tenant, m.addr, a, v, m.LimiterView(tenant), addr, view)
			}
		}
	}
	if owners["gw:1"] > 0 || len(owners) < 2 {
		t.Fatalf("limiter hosts %v: want spread over the nodes, never the gateway", owners)
	}

	n3.transport().Pause()
	waitSee(t, []string{"gw:1", "n1:1", "n2:1"}, g, n1, n2)
	waitFor(t, 10*time.Second, "n3 alone", func() bool { return len(n3.Members()) == 1 })
	for i := range 30 {
		tenant := fmt.Sprint("t", i)
		addr, view, _ := g.LimiterHost(tenant)
		if view == before {
			t.Fatal("the view did not change when a limiter host was lost")
		}
		if addr == "n3:1" {
			t.Fatalf("%s: the lost node still hosts the limiter", tenant)
		}
		if v := n1.LimiterView(tenant); v != view {
			t.Fatalf("%s: n1's view %s, gw's %s (same membership)", tenant, v, view)
		}
		if v := n3.LimiterView(tenant); v == view {
			t.Fatalf("%s: the cut-off node's view equals the majority's", tenant)
		}
	}
}

// TestLedgerHostsKeepALostGateway: a gateway declared dead stays a ledger
// host for LedgerGrace (it may come back with the same ledger), then is
// dropped; a gateway that left is no gateway any more at once.
func TestLedgerHostsKeepALostGateway(t *testing.T) {
	n := cluster.NewMemNetwork()
	g1 := start(t, n, "g1", "g1:1", memberOpts{kinds: gateway})
	g2 := start(t, n, "g2", "g2:1", memberOpts{kinds: gateway, seeds: []*member{g1}})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g1},
		tune: func(c *Config) { c.LedgerGrace = 2 * time.Second }})
	waitSee(t, []string{"g1:1", "g2:1", "n1:1"}, g1, g2, n1)
	if got := n1.LedgerHosts(); len(got) != 2 || !slices.Contains(got, "g1:1") || !slices.Contains(got, "g2:1") {
		t.Fatalf("ledger hosts %v", got)
	}
	if got := g1.Gateways("g1:1"); !slices.Equal(got, []string{"g2:1"}) {
		t.Fatalf("g1's peers %v, want [g2:1]", got)
	}

	g2.transport().Pause()
	waitFor(t, 10*time.Second, "n1: NodeLost g2:1", func() bool { return n1.has(actors.NodeLost, "g2:1") })
	if slices.Contains(n1.Gateways(""), "g2:1") {
		t.Fatal("a gateway declared dead is still a gateway")
	}
	if got := n1.LedgerHosts(); !slices.Contains(got, "g2:1") {
		t.Fatalf("ledger hosts %v right after g2 was declared dead: want g2:1 kept for the grace", got)
	}
	waitFor(t, 10*time.Second, "g2:1 dropped after the grace", func() bool { return !slices.Contains(n1.LedgerHosts(), "g2:1") })
	if got := n1.LedgerHosts(); !slices.Equal(got, []string{"g1:1"}) {
		t.Fatalf("ledger hosts %v, want [g1:1]", got)
	}
}

// TestJoinOnceAndClose: Close before Join, twice, and a Join after Close.
func TestJoinOnceAndClose(t *testing.T) {
	m, err := New(DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if m.Candidates("x") != nil || m.Gateways("") != nil || m.LedgerHosts() != nil || m.Ready() == nil {
		t.Fatal("a Membership that has not joined answers")
	}
	m.Close()
	m.Close()
	if _, err := m.Join("x:1", nil); err == nil {
		t.Fatal("Join after Close succeeded")
	}
	if _, err := New(Config{LostWarmup: -1}); err == nil {
		t.Fatal("a negative duration was accepted")
	}
}

// TestLimiterHostPrefersTheQuotaGroup: once a member of the quota group is
// seen, every tenant's limiter is placed among the group's members (their
// grants come from slices the group allocated), and the view names them.
func TestLimiterHostPrefersTheQuotaGroup(t *testing.T) {
	q := func(id uint64) []string {
		return []string{actors.KindCoordinator, actors.KindQuota, actors.KindQuotaPeer(id)}
	}
	ms := []cluster.Member{
		{Name: "plain", RemoteAddr: "p:1", Kinds: []string{actors.KindCoordinator}},
		{Name: "q1", RemoteAddr: "q1:1", Kinds: q(1)},
		{Name: "q2", RemoteAddr: "q2:1", Kinds: q(2)},
	}
	for i := range 50 {
		addr, view, ok := limiterHost(ms, fmt.Sprint("tenant-", i))
		if !ok || addr == "p:1" || view != viewOf(ms, actors.KindQuota) {
			t.Fatalf("tenant-%d: %s %s %v: not a quota member", i, addr, view, ok)
		}
	}
	if addr, _, _ := limiterHost(ms[:1], "t"); addr != "p:1" {
		t.Fatalf("without the group: %s", addr)
	}
	if id, ok := actors.QuotaPeerID(actors.KindQuotaPeer(3)); !ok || id != 3 {
		t.Fatal("QuotaPeerID does not read KindQuotaPeer")
	}
	for _, k := range []string{"quota", "quota-", "quota-0", "quota-x", "coordinator"} {
		if _, ok := actors.QuotaPeerID(k); ok {
			t.Fatalf("QuotaPeerID(%q) accepted", k)
		}
	}
}

// TestStepCandidatesFromGossip: a node's stage attempts and their limit
// travel in its metadata; while its share is full it is every step's last
// candidate, and once it has room again it is offered steps first.
func TestStepCandidatesFromGossip(t *testing.T) {
	n := cluster.NewMemNetwork()
	var full atomic.Bool
	full.Store(true)
	g := start(t, n, "gw", "gw:1", memberOpts{kinds: gateway})
	f := start(t, n, "full", "full:1", memberOpts{kinds: coord, seeds: []*member{g}, load: func() actors.Load {
		if full.Load() {
			return actors.Load{StageActive: 8, StageLimit: 8}
		}
		return actors.Load{StageActive: 2, StageLimit: 8}
	}})
	n1 := start(t, n, "n1", "n1:1", memberOpts{kinds: coord, seeds: []*member{g}})
	waitSee(t, []string{"gw:1", "full:1", "n1:1"}, g, f, n1)
	waitFor(t, 10*time.Second, "gw sees full's stage load", func() bool {
		return slices.ContainsFunc(g.Members(), func(m cluster.Member) bool { return m.RemoteAddr == "full:1" && m.StageFull() })
	})
	for i := range 40 {
		if c := g.StepCandidates(fmt.Sprint("run_", i, "/p1.1")); len(c) != 2 || c[1] != "full:1" {
			t.Fatalf("candidates %v: want n1:1 first, full:1 last", c)
		}
	}
	full.Store(false)
	waitFor(t, 10*time.Second, "gw sees full's room", func() bool {
		return slices.ContainsFunc(g.Members(), func(m cluster.Member) bool {
			return m.RemoteAddr == "full:1" && m.StageLoad == 2 && m.StageLimit == 8
		})
	})
	first := 0
	for i := range 40 {
		if g.StepCandidates(fmt.Sprint("run_", i, "/p1.1"))[0] == "full:1" {
			first++
		}
	}
	if first == 0 {
		t.Fatal("a node with room is never offered a step first")
	}
}
