package cluster

import (
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// incarnation reads memberlist's own incarnation number of c (memberlist exposes it nowhere: an
// atomic.Uint32 field of Memberlist, read atomically through its address). It fails t if a memberlist
// upgrade renamed the field.
func incarnation(t *testing.T, c *Cluster) uint32 {
	t.Helper()
	f := reflect.ValueOf(c.ml).Elem().FieldByName("incarnation")
	if !f.IsValid() || f.Type() != reflect.TypeFor[atomic.Uint32]() {
		t.Fatal("memberlist.Memberlist has no incarnation atomic.Uint32 field (memberlist upgraded?)")
	}
	return (*atomic.Uint32)(unsafe.Pointer(f.UnsafeAddr())).Load()
}

// startMembers starts n members on one MemNetwork, each seeded by the first, and waits until each sees
// all of them.
func startMembers(t *testing.T, n int, tweak func(*Config)) ([]*Cluster, *MemNetwork) {
	t.Helper()
	net := NewMemNetwork()
	var cs []*Cluster
	var seed string
	for i := range n {
		tr := net.NewTransport()
		var cfg Config
		if i == 0 {
			cfg, seed = testConfig(fmt.Sprintf("m%d", i), tr), tr.Addr()
		} else {
			cfg = testConfig(fmt.Sprintf("m%d", i), tr, seed)
		}
		if tweak != nil {
			tweak(&cfg)
		}
		cs = append(cs, mustStart(t, cfg))
	}
	for _, c := range cs {
		waitFor(t, 10*time.Second, c.Name()+" sees every member", func() bool { return len(c.Members()) == n })
	}
	return cs, net
}

func pressureOf(m Member) Pressure {
	return Pressure{Load: m.Load, Limit: m.Limit, Queued: m.Queued, StageLatency: m.StageLatency, StageLoad: m.StageLoad, StageLimit: m.StageLimit}
}

// Load changes reach every member as load messages, relayed (each gossip round goes to one member
// here), and the announcing member's incarnation does not change: memberlist's suspicion of it keeps
// being taken by everyone (load.go).
func TestLoadReachesEveryMemberWithoutIncarnation(t *testing.T) {
	done := checkGoroutines(t)
	cs, _ := startMembers(t, 6, func(c *Config) { c.GossipNodes = 1 })
	a := cs[0]
	// Let the joins settle (a re-announces after nothing; joins do not raise incarnations).
	time.Sleep(5 * a.cfg.GossipInterval)
	inc := incarnation(t, a)
	metaBefore := testutil.ToFloat64(a.met.metaUpdates)
	var want Pressure
	for i := range 20 {
		want = Pressure{Load: i + 1, Limit: 48, Queued: i % 3, StageLatency: time.Duration(100+i) * time.Millisecond, StageLoad: i, StageLimit: 96}
		a.SetPressure(want)
		time.Sleep(a.cfg.LoadUpdateInterval / 2)
	}
	for _, c := range cs[1:] {
		waitFor(t, 5*time.Second, c.Name()+" sees m0's last load", func() bool {
			m, ok := c.Member("m0")
			return ok && pressureOf(m) == want
		})
	}
	if got := a.Self(); pressureOf(got) != want {
		t.Fatalf("Self: %+v, want %+v", pressureOf(got), want)
	}
	if m, _ := a.Member("m0"); pressureOf(m) != want {
		t.Fatalf("m0 in its own view: %+v, want %+v", pressureOf(m), want)
	}
	if got := incarnation(t, a); got != inc {
		t.Fatalf("m0's incarnation went from %d to %d while it announced its load", inc, got)
	}
	if got := testutil.ToFloat64(a.met.metaUpdates); got != metaBefore {
		t.Fatalf("m0 updated its metadata %v times while it announced its load", got-metaBefore)
	}
	if sent := testutil.ToFloat64(a.met.loadSent); sent < 2 {
		t.Fatalf("load announcements: %v", sent)
	}
	for _, c := range cs {
		_ = c.Shutdown()
	}
	done()
}

// A load message is applied only if it is newer than the load held for its sender, and passed on only
// then; a message from a member not in the view is ignored and not passed on.
func TestLoadMessageOrderAndUnknownSender(t *testing.T) {
	cs, _ := startMembers(t, 2, nil)
	a, b := cs[0], cs[1]
	d := &delegate{c: a}
	base := b.announced.Load().Seq
	queued := func() int { return a.bq.len() }
	drain := func() {
		for _, n := range []string{"m0", "m1", "ghost"} {
			a.bq.remove(n)
		}
	}

	drain()
	d.NotifyMsg(loadMsg{Sender: "m1", Seq: base + 1e12, Load: 5, Limit: 9}.encode())
	if m, _ := a.Member("m1"); m.Load != 5 || m.Limit != 9 {
		t.Fatalf("newer load not applied: %+v", m)
	}
	if queued() != 1 {
		t.Fatalf("newer load queued %d times for passing on, want 1", queued())
	}
	drain()
	d.NotifyMsg(loadMsg{Sender: "m1", Seq: base + 1e12 - 1, Load: 1, Limit: 2}.encode()) // older
	d.NotifyMsg(loadMsg{Sender: "m1", Seq: base + 1e12, Load: 2, Limit: 2}.encode())     // same sequence
	if m, _ := a.Member("m1"); m.Load != 5 || m.Limit != 9 {
		t.Fatalf("stale load applied: %+v", m)
	}
	if queued() != 0 {
		t.Fatalf("stale load passed on (%d queued)", queued())
	}
	d.NotifyMsg(loadMsg{Sender: "ghost", Seq: 1 << 62, Load: 3}.encode())
	if _, ok := a.Member("ghost"); ok || len(a.Members()) != 2 {
		t.Fatalf("a load message added a member: %v", names(a.Members()))
	}
	a.mu.Lock()
	_, tracked := a.loadSeqs["ghost"]
	a.mu.Unlock()
	if tracked || queued() != 0 {
		t.Fatalf("unknown sender tracked=%v, queued %d", tracked, queued())
	}
	// Our own message coming back is not applied over what we announced.
	own := a.announced.Load().Seq
	d.NotifyMsg(loadMsg{Sender: "m0", Seq: own + 1e12, Load: 77}.encode())
	if m, _ := a.Member("m0"); m.Load == 77 {
		t.Fatal("own load taken from the network")
	}
	// Garbage and truncated messages are ignored.
	for _, bad := range [][]byte{nil, {wireMagic}, {wireMagic, wireLoadV1}, {wireMagic, wireLoadV1, 5, 'x'}, {'Z', wireLoadV1, 1, 'a'}} {
		d.NotifyMsg(bad)
	}
	if got := testutil.ToFloat64(a.met.loadReceived.WithLabelValues("applied")); got != 1 {
		t.Fatalf("applied %v load messages, want 1", got)
	}
	if m, _ := a.Member("m1"); m.Load != 5 {
		t.Fatalf("m1's load after garbage: %+v", m)
	}
	// Once b is gone its load is no longer tracked, and a message for it is ignored.
	_ = b.Shutdown()
	waitFor(t, 10*time.Second, "a declares m1 dead", func() bool { return len(a.Members()) == 1 })
	d.NotifyMsg(loadMsg{Sender: "m1", Seq: 1 << 62, Load: 8}.encode())
	a.mu.Lock()
	n := len(a.loadSeqs)
	a.mu.Unlock()
	if _, ok := a.Member("m1"); ok || n != 1 {
		t.Fatalf("a gone member's load: in view %v, %d tracked", ok, n)
	}
}

// A member's load is whichever of its metadata snapshot and its load messages is newer; metadata of an
// older member (no load sequence) is taken as it comes.
func TestLoadSnapshotAndMessageNewestWins(t *testing.T) {
	cs, _ := startMembers(t, 2, nil)
	a, b := cs[0], cs[1]
	d := &delegate{c: a}
	bm, _ := a.Member("m1")
	host, port, _ := net.SplitHostPort(bm.GossipAddr)
	p, _ := strconv.Atoi(port)
	node := func(md meta) *memberlist.Node {
		return &memberlist.Node{Name: "m1", Addr: net.ParseIP(host), Port: uint16(p), Meta: md.encode()}
	}
	seq := b.announced.Load().Seq + 1e12
	md := meta{RemoteAddr: bm.RemoteAddr, Version: bm.Version, Kinds: bm.Kinds}

	d.NotifyMsg(loadMsg{Sender: "m1", Seq: seq, Load: 5}.encode())
	md.Load, md.LoadSeq = 1, seq-1
	d.NotifyUpdate(node(md)) // an older snapshot (a draining announcement, say)
	if m, _ := a.Member("m1"); m.Load != 5 {
		t.Fatalf("an older snapshot replaced a newer load message: load %d", m.Load)
	}
	md.Load, md.LoadSeq = 6, seq+1
	d.NotifyUpdate(node(md))
	if m, _ := a.Member("m1"); m.Load != 6 {
		t.Fatalf("a newer snapshot was not taken: load %d", m.Load)
	}
	d.NotifyMsg(loadMsg{Sender: "m1", Seq: seq, Load: 7}.encode())
	if m, _ := a.Member("m1"); m.Load != 6 {
		t.Fatalf("a load message older than the snapshot was taken: load %d", m.Load)
	}

	// An older member: its metadata has no load sequence (the encoding ends before it), and every
	// change of it is taken. (Delegate calls as memberlist makes them for a member "old1".)
	old := func(load int) *memberlist.Node {
		n := &memberlist.Node{Name: "old1", Addr: net.ParseIP("127.0.0.1"), Port: 1,
			Meta: meta{RemoteAddr: "10.0.0.9:1", Version: "v0", Kinds: bm.Kinds, Load: load}.encode()}
		n.Meta = n.Meta[:len(n.Meta)-1] // LoadSeq 0 is one byte
		if got, err := decodeMeta(n.Meta); err != nil || got.Load != load {
			t.Fatalf("old-format metadata: %+v %v", got, err)
		}
		return n
	}
	d.NotifyJoin(old(3))
	for _, l := range []int{3, 4, 2} {
		d.NotifyUpdate(old(l))
		if m, _ := a.Member("old1"); m.Load != l || m.RemoteAddr != "10.0.0.9:1" {
			t.Fatalf("an older member's metadata load %d not taken: %+v", l, m)
		}
	}
	d.NotifyLeave(old(2))
}

// A member that joins learns the others' current load at once, although their metadata snapshots are
// older and every gossip copy of it has gone out: its join push/pull carries the seed's loads.
func TestJoinerLearnsCurrentLoad(t *testing.T) {
	cs, mn := startMembers(t, 2, nil)
	a, c := cs[0], cs[1]
	a.SetPressure(Pressure{Load: 11, Limit: 40})
	waitFor(t, 5*time.Second, "m1 sees m0's load", func() bool { m, _ := c.Member("m0"); return m.Load == 11 })
	// Every copy of the message has gone out: nothing but the join's push/pull can bring it to b.
	waitFor(t, 5*time.Second, "queues empty", func() bool { return a.bq.len() == 0 && c.bq.len() == 0 })
	if md, err := decodeMeta(a.ml.LocalNode().Meta); err != nil || md.Load != 0 {
		t.Fatalf("m0's metadata snapshot already has the load (%+v, %v): the test needs an old one", md, err)
	}
	b := mustStart(t, testConfig("m2", mn.NewTransport(), a.Self().GossipAddr))
	waitFor(t, 5*time.Second, "m2 sees m0's load", func() bool {
		m, ok := b.Member("m0")
		return ok && m.Load == 11 && m.Limit == 40
	})
}

// The load queue keeps one message per member (the newest), sends the least sent first (newest among
// equals), within the byte limit, and drops a message after loadRetransmitMult × ⌈log10(N+1)⌉ sends. The
// sequence that lost a message in memberlist's TransmitLimitedQueue (a replacement that empties it, then
// another member's message of the same length) keeps both here.
func TestLoadQueue(t *testing.T) {
	nodes := 3 // limit 3 × ⌈log10(4)⌉ = 3
	q := newLoadQueue(3, func() int { return nodes })
	msg := func(sender string, seq uint64) []byte { return loadMsg{Sender: sender, Seq: seq, Load: 1}.encode() }
	q.queue("a", msg("a", 1))
	q.queue("a", msg("a", 2)) // replaces
	q.queue("b", msg("b", 1)) // same length as a's
	if q.len() != 2 {
		t.Fatalf("queued %d, want 2 (one per member)", q.len())
	}
	got := q.get(2, 1400)
	if len(got) != 2 {
		t.Fatalf("first get: %d messages, want 2", len(got))
	}
	if m, _ := decodeLoad(got[0]); m.Sender != "b" {
		t.Fatalf("newest first: got %s first", m.Sender)
	}
	if m, _ := decodeLoad(got[1]); m.Sender != "a" || m.Seq != 2 {
		t.Fatalf("a's newest message: %+v", m)
	}
	q.queue("c", msg("c", 1))
	// Room for one message: the least sent (c) goes first.
	if got := q.get(2, len(msg("c", 1))+2); len(got) != 1 {
		t.Fatalf("limited get: %d messages", len(got))
	} else if m, _ := decodeLoad(got[0]); m.Sender != "c" {
		t.Fatalf("least sent first: got %s", m.Sender)
	}
	if got := q.get(2, 10); got != nil {
		t.Fatalf("nothing fits in 10 bytes, got %d", len(got))
	}
	q.get(2, 1400) // a and b sent twice, c twice
	if q.len() != 3 {
		t.Fatalf("before the transmit limit: %d queued, want 3", q.len())
	}
	q.queue("c", msg("c", 2)) // a newer message starts again
	q.get(2, 1400)            // a and b sent 3 times: dropped
	if q.len() != 1 {
		t.Fatalf("after the transmit limit: %d queued, want 1", q.len())
	}
	q.remove("c")
	if q.len() != 0 || q.get(2, 1400) != nil {
		t.Fatal("remove")
	}
}

// A push/pull state carries the loads its sender holds; each is applied under the same rule as a load
// message (newer only, members of the view only), so a member that missed every gossip copy of a load
// gets it at the next push/pull. A state with a malformed load section still counts for fencing.
func TestPushPullCarriesLoads(t *testing.T) {
	cs, _ := startMembers(t, 2, nil)
	a, b := cs[0], cs[1]
	d := &delegate{c: a}
	seq := b.announced.Load().Seq + 1e12
	d.MergeRemoteState(pushState{Sender: "m1", Count: 2, Min: "m0", Loads: []loadMsg{
		{Sender: "m1", Seq: seq, Load: 6, Limit: 8},
		{Sender: "ghost", Seq: seq, Load: 3},
		{Sender: "m0", Seq: 1 << 62, Load: 99}, // ours: we know better
	}}.encode(), false)
	if m, _ := a.Member("m1"); m.Load != 6 || m.Limit != 8 {
		t.Fatalf("load from push/pull not applied: %+v", m)
	}
	if _, ok := a.Member("ghost"); ok {
		t.Fatal("push/pull load added a member")
	}
	if m, _ := a.Member("m0"); m.Load == 99 {
		t.Fatal("own load taken from a push/pull")
	}
	d.MergeRemoteState(pushState{Sender: "m1", Count: 2, Min: "m0", Loads: []loadMsg{{Sender: "m1", Seq: seq - 1, Load: 1}}}.encode(), false)
	if m, _ := a.Member("m1"); m.Load != 6 {
		t.Fatalf("an older load from push/pull replaced a newer one: %+v", m)
	}
	// What a member sends in its push/pull: every member of its view with the sequence it holds.
	s, err := decodePushState(d.LocalState(false))
	if err != nil || len(s.Loads) != 2 {
		t.Fatalf("local state: %+v %v", s, err)
	}
	for _, l := range s.Loads {
		if l.Sender == "m1" && (l.Seq != seq || l.Load != 6 || l.Limit != 8) {
			t.Fatalf("m1 in the local state: %+v", l)
		}
		if l.Sender == "m0" && l.Seq != a.announced.Load().Seq {
			t.Fatalf("m0 in the local state: %+v, announced %+v", l, *a.announced.Load())
		}
	}
	// A malformed load section: the tombstones still accuse us.
	bad := pushState{Sender: "x", Count: 5, Min: "a", Dead: []string{"m0"}}.encode()
	bad = append(bad[:len(bad)-1], 3, 1, 'z') // three loads announced, one byte of the first
	if s, err := decodePushState(bad); err != nil || s.Loads != nil || len(s.Dead) != 1 {
		t.Fatalf("state with a bad load section: %+v %v", s, err)
	}
}
