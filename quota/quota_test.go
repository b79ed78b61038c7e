package quota

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestStateNeverOverAllocates applies random grants and returns (with
// budgets that change) and checks the invariant after each: allocated is
// the sum of what holders hold, within the budget of the last grant that
// allocated.
func TestStateNeverOverAllocates(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	s := NewState()
	held := map[holderKey]int64{}
	for i := range 20000 {
		k := holderKey{uint64(1 + r.IntN(3)), uint64(1 + r.IntN(2))}
		c := Command{Holder: k.id, Inc: k.inc, Tenant: "t", Period: 1}
		if r.IntN(3) == 0 {
			c.Op, c.Tokens = OpReturn, r.Int64N(50)
		} else {
			c.Op, c.Budget, c.Min = OpGrant, 500+r.Int64N(100), r.Int64N(40)
			c.Want = c.Min + r.Int64N(40)
		}
		_, before, _ := s.Allocated("t")
		res := s.Apply(c)
		_, budget, allocated := s.Allocated("t")
		switch {
		case c.Op == OpGrant && !res.Refused:
			held[k] += res.Tokens
			if res.Tokens < c.Min || res.Tokens > c.Want || allocated > budget {
				t.Fatalf("step %d: granted %d for [%d, %d]; allocated %d of %d", i, res.Tokens, c.Min, c.Want, allocated, budget)
			}
		case c.Op == OpReturn:
			held[k] -= res.Tokens
			if held[k] < 0 {
				t.Fatalf("step %d: %v gave back more than it held", i, k)
			}
		}
		_ = before
		var sum int64
		for _, h := range held {
			sum += h
		}
		if sum != allocated {
			t.Fatalf("step %d: holders hold %d, account says %d", i, sum, allocated)
		}
	}
	// A new period starts afresh; an old one is refused.
	if r := s.Apply(Command{Op: OpGrant, Holder: 1, Inc: 1, Tenant: "t", Period: 2, Budget: 10, Min: 10, Want: 10}); r.Refused || r.Tokens != 10 {
		t.Fatalf("new period: %+v", r)
	}
	if r := s.Apply(Command{Op: OpGrant, Holder: 1, Inc: 1, Tenant: "t", Period: 1, Budget: 10, Min: 1, Want: 1}); !r.Refused {
		t.Fatalf("old period granted: %+v", r)
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	for _, in := range []string{``, `{`, `{"op":"steal","holder":1,"tenant":"t"}`, `{"op":"grant","tenant":"t"}`,
		`{"op":"grant","holder":1,"tenant":"t","min":5,"want":2}`, `{"op":"return","holder":1,"tenant":"t","tokens":-1}`} {
		if _, err := DecodeCommand([]byte(in)); err == nil {
			t.Errorf("DecodeCommand(%q) accepted", in)
		}
	}
	if _, err := DecodeCommand([]byte(`{"op":"grant","holder":1,"inc":3,"tenant":"t","period":1,"budget":9,"min":1,"want":2}`)); err != nil {
		t.Fatal(err)
	}
}

// TestWALRoundTripAndTornTail writes records, cuts the file inside the
// last one, and reads back the well-formed prefix.
func TestWALRoundTripAndTornTail(t *testing.T) {
	dir := t.TempDir()
	l, hs, ents, err := openWAL(dir)
	if err != nil || hs != nil || len(ents) != 0 {
		t.Fatalf("fresh log: %v %v %v", hs, ents, err)
	}
	e := func(i uint64) *pb.Entry {
		return &pb.Entry{Index: proto.Uint64(i), Term: proto.Uint64(2), Data: []byte(`{"x":1}`)}
	}
	if err := l.save(&pb.HardState{Term: proto.Uint64(2), Vote: proto.Uint64(3), Commit: proto.Uint64(2)}, []*pb.Entry{e(2), e(3)}, true); err != nil {
		t.Fatal(err)
	}
	if err := l.save(nil, []*pb.Entry{e(4)}, true); err != nil {
		t.Fatal(err)
	}
	l.close()
	path := filepath.Join(dir, walFile)
	data, _ := os.ReadFile(path)
	os.WriteFile(path, data[:len(data)-3], 0o600) // torn: the last entry's checksum is cut
	l, hs, ents, err = openWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	if hs.GetVote() != 3 || len(ents) != 2 || ents[1].GetIndex() != 3 {
		t.Fatalf("read back %v, %d entries", hs, len(ents))
	}
	if fi, _ := os.Stat(path); fi.Size() >= int64(len(data)-3) {
		t.Fatalf("the torn tail was not cut: %d bytes", fi.Size())
	}
}

func FuzzReadWAL(f *testing.F) {
	var b bytes.Buffer
	appendRecord(&b, recHardState, &pb.HardState{Term: proto.Uint64(1)})
	appendRecord(&b, recEntry, &pb.Entry{Index: proto.Uint64(2), Data: []byte("x")})
	f.Add(b.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, good, _ := readWAL(bufio.NewReader(bytes.NewReader(data)))
		if good < 0 || good > int64(len(data)) {
			t.Fatalf("good prefix %d of %d bytes", good, len(data))
		}
		// The good prefix alone reads the same, without error.
		if _, _, g2, err := readWAL(bufio.NewReader(bytes.NewReader(data[:good]))); err != nil || g2 != good {
			t.Fatalf("prefix of %d bytes: %d, %v", good, g2, err)
		}
	})
}

// group is three Nodes on a MemNet, each logging into its own directory.
type group struct {
	t     testing.TB
	net   *MemNet
	dirs  map[uint64]string
	mu    sync.Mutex
	nodes map[uint64]*Node
}

func newGroup(t testing.TB) *group {
	t.Helper()
	g := &group{t: t, net: NewMemNet(), dirs: map[uint64]string{}, nodes: map[uint64]*Node{}}
	for id := uint64(1); id <= 3; id++ {
		g.dirs[id] = t.TempDir()
		g.start(id)
	}
	t.Cleanup(func() {
		g.mu.Lock()
		for _, n := range g.nodes {
			n.Stop()
		}
		g.mu.Unlock()
		g.net.Close()
	})
	return g
}

func (g *group) start(id uint64) *Node {
	g.t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.Dir, cfg.Send, cfg.Tick = id, g.dirs[id], g.net.Sender(id), 10*time.Millisecond
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := Start(cfg)
	if err != nil {
		g.t.Fatal(err)
	}
	g.net.Attach(n)
	g.mu.Lock()
	g.nodes[id] = n
	g.mu.Unlock()
	return n
}

func (g *group) node(id uint64) *Node {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.nodes[id]
}

// restart stops node id (as kill -9 would: nothing is given back) and
// starts a new process of it from its log.
func (g *group) restart(id uint64) {
	g.net.Detach(id)
	g.node(id).Stop()
	g.start(id)
}

func acquire(n *Node, tenant string, need, want int64, d time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return n.Acquire(ctx, tenant, 1, 1000, need, want)
}

// TestMinorityCannotAcquire: a node cut off from both others gets no new
// slice, grants only from what it held, and the majority allocates the
// rest of the budget; after the partition heals the group goes on.
func TestMinorityCannotAcquire(t *testing.T) {
	g := newGroup(t)
	if _, err := acquire(g.node(1), "t", 100, 100, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	g.net.Isolate(1, []uint64{1, 2, 3})
	if _, err := acquire(g.node(1), "t", 10, 10, 700*time.Millisecond); err == nil {
		t.Fatal("an isolated node got a slice")
	}
	if !g.node(1).Take("t", 1, 100) || g.node(1).Take("t", 1, 1) {
		t.Fatal("the isolated node should grant exactly what it held (100)")
	}
	// The majority allocates what is left: 900, not one token more.
	got, err := acquire(g.node(2), "t", 900, 900, 5*time.Second)
	if err != nil || got != 900 {
		t.Fatalf("majority: %d, %v", got, err)
	}
	if _, err := acquire(g.node(3), "t", 1, 1, 5*time.Second); !errors.Is(err, ErrBudget) {
		t.Fatalf("over budget: %v", err)
	}
	g.net.Heal()
	if err := g.node(2).GiveBack(context.Background(), "t", 1); err != nil {
		t.Fatal(err)
	}
	if got, err := acquire(g.node(1), "t", 50, 50, 5*time.Second); err != nil || got != 50 {
		t.Fatalf("after healing: %d, %v", got, err)
	}
}

// TestGrantsNeverExceedBudget is the history check in one process: three
// nodes, eight admitting workers each, taking tokens for one tenant (and
// acquiring slices when short) while nodes are isolated, healed and
// restarted from their logs (a restart forgets what the process held).
// Every granted take is recorded; their sum must stay within the budget,
// and the group must have granted most of it (not refused everything).
func TestGrantsNeverExceedBudget(t *testing.T) {
	const budget = 20000
	g := newGroup(t)
	var granted, attempts, refused atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for id := uint64(1); id <= 3; id++ {
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(id, uint64(w)))
				for ctx.Err() == nil {
					n := g.node(id)
					tokens := 1 + r.Int64N(40)
					attempts.Add(1)
					if n.Take("t", 1, tokens) {
						granted.Add(tokens)
						continue
					}
					actx, acancel := context.WithTimeout(ctx, 300*time.Millisecond)
					_, err := n.Acquire(actx, "t", 1, budget, tokens, 500)
					acancel()
					if errors.Is(err, ErrBudget) {
						refused.Add(1)
						time.Sleep(5 * time.Millisecond)
					}
				}
			})
		}
	}
	faults := 0
	r := rand.New(rand.NewPCG(9, 9))
	for ctx.Err() == nil {
		time.Sleep(time.Duration(100+r.IntN(150)) * time.Millisecond)
		id := uint64(1 + r.IntN(3))
		switch r.IntN(3) {
		case 0:
			g.net.Isolate(id, []uint64{1, 2, 3})
		case 1:
			g.restart(id)
		default:
			g.net.Heal()
		}
		faults++
	}
	wg.Wait()
	g.net.Heal()
	t.Logf("attempts %d, granted %d tokens of %d, refusals for the budget %d, faults %d", attempts.Load(), granted.Load(), budget, refused.Load(), faults)
	if granted.Load() > budget {
		t.Fatalf("granted %d tokens, budget %d", granted.Load(), budget)
	}
	if granted.Load() < budget/4 {
		t.Fatalf("granted only %d of %d: the group hardly worked", granted.Load(), budget)
	}
}

// BenchmarkAcquire measures one slice grant: a proposal committed by the
// group (log appended and fsynced on a majority) and applied here — the
// uncommon path of an admission, once per slice. BenchmarkTake is the
// common path.
func BenchmarkAcquire(b *testing.B) {
	n := newGroup(b).node(1)
	ctx := context.Background()
	if _, err := n.Acquire(ctx, "t", 1, 1<<50, 1, 1); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := n.Acquire(ctx, "t", 1, 1<<50, 1, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTake(b *testing.B) {
	n := newGroup(b).node(1)
	if _, err := n.Acquire(context.Background(), "t", 1, 1<<50, 1<<40, 1<<40); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if !n.Take("t", 1, 1) {
			b.Fatal("no tokens")
		}
	}
}

// FuzzDecodeCommand: whatever a log entry holds, a command DecodeCommand
// accepts keeps the state's invariant when applied (allocated = Σ held,
// never over the budget of the grant that allocated).
func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte(`{"op":"grant","holder":1,"inc":3,"tenant":"t","period":1,"budget":9,"min":1,"want":2}`))
	f.Add([]byte(`{"op":"return","holder":1,"inc":3,"tenant":"t","period":1,"tokens":5}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeCommand(data)
		if err != nil {
			return
		}
		s := NewState()
		s.Apply(Command{Op: OpGrant, Holder: 1, Inc: 3, Tenant: "t", Period: 1, Budget: 100, Min: 1, Want: 50})
		r := s.Apply(c)
		_, budget, allocated := s.Allocated(c.Tenant)
		if allocated < 0 || (c.Op == OpGrant && !r.Refused && allocated > budget) {
			t.Fatalf("%+v → %+v: allocated %d of %d", c, r, allocated, budget)
		}
	})
}
