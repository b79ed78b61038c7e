package cluster

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

// socketConfig is testConfig on real UDP+TCP sockets at bind (no Transport).
func socketConfig(name, bind string, seeds ...string) Config {
	cfg := testConfig(name, nil, seeds...)
	cfg.Transport = nil
	cfg.BindAddr = bind
	return cfg
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// Port 0 on real sockets: memberlist binds a free port and the member
// announces it; a second member joins through that address, and one that
// advertises a host name is announced by its address.
func TestRealSocketsOnPortZero(t *testing.T) {
	a := mustStart(t, socketConfig("a", "127.0.0.1:0"))
	seed := a.Self().GossipAddr
	if host, _, _ := net.SplitHostPort(seed); host != "127.0.0.1" || portOf(t, seed) == 0 {
		t.Fatalf("a announces %q, want 127.0.0.1 and the bound port", seed)
	}
	bcfg := socketConfig("b", "127.0.0.1:0", seed)
	bcfg.AdvertiseAddr = "localhost:0" // resolved to an address; the port is the bound one
	b := mustStart(t, bcfg)
	waitFor(t, 10*time.Second, "a and b to see each other", func() bool {
		return len(a.Members()) == 2 && len(b.Members()) == 2
	})
	gb := b.Self().GossipAddr
	if host, _, _ := net.SplitHostPort(gb); host != "127.0.0.1" || portOf(t, gb) == 0 || gb == seed {
		t.Fatalf("b announces %q", gb)
	}
	for _, m := range a.Members() {
		if m.Name == "b" && m.GossipAddr != gb {
			t.Errorf("a sees b at %q, b announces %q", m.GossipAddr, gb)
		}
	}
	// A seed list naming ourselves is not a seed.
	for _, s := range b.seeds() {
		if s == gb {
			t.Errorf("b's seeds %v include itself", b.seeds())
		}
	}
}

// A member on a loopback transport wrapped for fault injection counts its
// traffic, and loses it while paused.
func TestLoopbackFaultTransportCounts(t *testing.T) {
	a := mustStart(t, socketConfig("a", "127.0.0.1:0"))
	nt, err := NewLoopbackTransport()
	if err != nil {
		t.Fatal(err)
	}
	if port := nt.GetAutoBindPort(); port == 0 {
		t.Fatal("the loopback transport has no port")
	}
	ft := WrapTransport(nt)
	b := mustStart(t, testConfig("b", ft, a.Self().GossipAddr))
	waitFor(t, 10*time.Second, "b to join a and probe it", func() bool {
		return len(b.Members()) == 2 && ft.Stats().PacketsReceived > 0 && ft.Stats().PacketsSent > 0
	})
	st := ft.Stats()
	if st.PacketsSent == 0 || st.PacketBytesSent == 0 || st.StreamBytesSent == 0 || st.StreamBytesReceived == 0 || st.Dropped != 0 {
		t.Fatalf("after a join (push/pull stream, probes): %+v", st)
	}
	ft.Pause()
	if _, err := ft.DialTimeout(a.Self().GossipAddr, time.Second); !errors.Is(err, errPaused) {
		t.Errorf("dial while paused: %v", err)
	}
	if _, err := ft.WriteTo([]byte("x"), a.Self().GossipAddr); err != nil {
		t.Errorf("write while paused: %v", err)
	}
	if ft.Stats().Dropped < 2 {
		t.Errorf("paused traffic not counted as dropped: %+v", ft.Stats())
	}
	ft.Resume()
	c, err := ft.DialTimeout(a.Self().GossipAddr, time.Second)
	if err != nil {
		t.Fatalf("dial after resume: %v", err)
	}
	c.Close()
}

// The address-only Transport methods of MemTransport deliver as the
// node-aware ones do, and refuse unknown or shut-down endpoints.
func TestMemTransportAddressMethods(t *testing.T) {
	n := NewMemNetwork()
	a, b := n.NewTransport(), n.NewTransport()
	if ip, port, _ := a.FinalAdvertiseAddr("", 0); net.JoinHostPort(ip.String(), strconv.Itoa(port)) != a.Addr() {
		t.Errorf("FinalAdvertiseAddr %v:%d, Addr %s", ip, port, a.Addr())
	}
	if _, err := a.WriteTo([]byte("ping"), b.Addr()); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-b.PacketCh():
		if string(p.Buf) != "ping" || p.From.String() != a.Addr() {
			t.Errorf("packet %q from %v", p.Buf, p.From)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no packet")
	}
	// To nowhere: dropped, as UDP does.
	if _, err := a.WriteTo([]byte("lost"), "127.0.0.1:1"); err != nil {
		t.Errorf("write to nowhere: %v", err)
	}
	done := make(chan net.Conn, 1)
	go func() { done <- <-b.StreamCh() }()
	c, err := a.DialTimeout(b.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = c.Write([]byte("hi")) }()
	in := <-done
	buf := make([]byte, 2)
	if _, err := in.Read(buf); err != nil || string(buf) != "hi" {
		t.Errorf("stream read %q, %v", buf, err)
	}
	c.Close()
	in.Close()
	if _, err := a.DialTimeout("127.0.0.1:1", time.Second); err == nil {
		t.Error("dial to an unknown address succeeded")
	}
	_ = b.Shutdown()
	_ = b.Shutdown() // idempotent
	if _, err := a.DialAddressTimeout(memberlist.Address{Addr: b.Addr()}, time.Second); err == nil {
		t.Error("dial to a shut-down endpoint succeeded")
	}
}

func TestTombstonesBounded(t *testing.T) {
	var ts tombstones
	t0 := time.Unix(1_000_000, 0)
	for i := range maxTombstones + 10 {
		ts.add("n"+strconv.Itoa(i), t0.Add(time.Duration(i)*time.Second))
	}
	if len(ts.at) != maxTombstones {
		t.Fatalf("%d tombstones, want the bound %d", len(ts.at), maxTombstones)
	}
	now := t0.Add(time.Duration(maxTombstones+10) * time.Second)
	for i := range 10 {
		if ts.has("n"+strconv.Itoa(i), now, time.Hour*24*365) {
			t.Errorf("oldest tombstone n%d kept", i)
		}
	}
	last := "n" + strconv.Itoa(maxTombstones+9)
	if !ts.has(last, now, time.Hour) || ts.has(last, now, time.Nanosecond) {
		t.Errorf("newest tombstone: has within an hour %v, within 1ns %v", ts.has(last, now, time.Hour), ts.has(last, now, time.Nanosecond))
	}
	// Most recent first; equal times by name.
	ts.add("zz", now)
	ts.add("aa", now)
	if r := ts.recent(3); len(r) != 3 || r[0] != "aa" || r[1] != "zz" || r[2] != last {
		t.Errorf("recent(3) = %v", r)
	}
	// Expired names go on prune: a minute later with a 90 s TTL, the names
	// of the last 30 s stay (n4077 … n4105, at now-29 s … now-1 s) with aa and zz.
	ts.prune(now.Add(time.Minute), 90*time.Second)
	if len(ts.at) != 29+2 || !ts.has("n4077", now, time.Hour) || ts.has("n4076", now, time.Hour) {
		t.Errorf("%d tombstones after pruning by age", len(ts.at))
	}
}

func TestRegisterKeepsOneSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	mk := func(help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "qlc_test_total", Help: help})
	}
	first := mk("one")
	if got := register(reg, first); got != first {
		t.Fatal("the first registration did not return its collector")
	}
	if got := register(reg, mk("one")); got != first {
		t.Error("a second Cluster does not count on the registered series")
	}
	other := mk("a different help")
	if got := register(reg, other); got != other {
		t.Error("a conflicting collector was not kept apart")
	}
	c := mk("x")
	if register(nil, c) != c {
		t.Error("no registry")
	}
	// Two clusters on one registry share their counters.
	m1, m2 := newMetrics(reg), newMetrics(reg)
	m1.joinFailures.Inc()
	var mf int
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() == "qlc_cluster_join_failures_total" {
			mf = int(f.GetMetric()[0].GetCounter().GetValue())
		}
	}
	m2.joinFailures.Inc()
	fams, _ = reg.Gather()
	for _, f := range fams {
		if f.GetName() == "qlc_cluster_join_failures_total" && int(f.GetMetric()[0].GetCounter().GetValue()) != mf+1 {
			t.Errorf("the second cluster's counter is not the first's")
		}
	}
}

func TestTopologyOwnerSkipsDraining(t *testing.T) {
	ms := []Member{
		{Name: "a", Kinds: []string{"limiter"}},
		{Name: "b", Kinds: []string{"limiter"}},
		{Name: "c", Kinds: []string{"other"}},
	}
	top := Topology{Members: ms}
	o, ok := top.Owner("limiter", "tenant-1")
	if !ok || (o.Name != "a" && o.Name != "b") {
		t.Fatalf("owner %v %v", o, ok)
	}
	for i := range ms {
		if ms[i].Name == o.Name {
			ms[i].Draining = true
		}
	}
	o2, ok := top.Owner("limiter", "tenant-1")
	if !ok || o2.Name == o.Name || o2.Name == "c" {
		t.Errorf("with the owner draining: %v %v", o2, ok)
	}
	if _, ok := top.Owner("nobody", "k"); ok {
		t.Error("an owner for a kind no member hosts")
	}
}

func TestResolveIP(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1": "127.0.0.1", "::1": "::1", "localhost": "127.0.0.1"} {
		if got, err := resolveIP(in); err != nil || got != want {
			t.Errorf("resolveIP(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
