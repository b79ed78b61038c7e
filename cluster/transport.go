package cluster

import (
	"errors"
	"fmt"
	"log"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// MemNetwork is an in-memory network for tests: each NewTransport is one member's endpoint.
//
// It replaces memberlist's MockNetwork, which does not serve here: its address maps are written by
// NewTransport without a lock while running members read them (a data race under -race as soon as a
// member joins late), and its WriteToAddress blocks forever on a member that was shut down (MockTransport
// has no buffer and Shutdown does nothing), which hangs the sender's probe loop. MemNetwork drops packets
// to unknown, shut-down or congested endpoints, as UDP does, and refuses dials to them.
// Encryption and labels still apply: memberlist encrypts before the transport.
type MemNetwork struct {
	mu     sync.Mutex
	byAddr map[string]*MemTransport
	port   int
}

// NewMemNetwork returns an empty network.
func NewMemNetwork() *MemNetwork {
	return &MemNetwork{byAddr: make(map[string]*MemTransport), port: 10000}
}

// NewTransport returns an endpoint with a fresh address 127.0.0.1:<port> (no socket is opened).
func (n *MemNetwork) NewTransport() *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.port++
	t := n.newLocked(n.port)
	n.byAddr[t.addr] = t
	return t
}

// NewTransportAt returns an endpoint at addr, a "127.0.0.1:<port>" that an endpoint of n had before
// (as a process restarting on the same gossip port), or an error if an open endpoint has it.
func (n *MemNetwork) NewTransportAt(addr string) (*MemTransport, error) {
	host, port, err := splitHostPort(addr)
	if err != nil || host != "127.0.0.1" {
		return nil, fmt.Errorf("cluster: mem transport address %q: want 127.0.0.1:<port>", addr)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.byAddr[addr]; ok {
		return nil, fmt.Errorf("cluster: mem transport address %s in use", addr)
	}
	t := n.newLocked(port)
	n.byAddr[addr] = t
	return t, nil
}

func (n *MemNetwork) newLocked(port int) *MemTransport {
	t := &MemTransport{
		net:     n,
		ip:      net.IPv4(127, 0, 0, 1).To4(),
		port:    port,
		packets: make(chan *memberlist.Packet, 1024),
		streams: make(chan net.Conn, 64),
		done:    make(chan struct{}),
	}
	t.addr = net.JoinHostPort(t.ip.String(), strconv.Itoa(t.port))
	return t
}

func (n *MemNetwork) lookup(addr string) *MemTransport {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.byAddr[addr]
}

// MemTransport is one endpoint of a MemNetwork; it implements memberlist.NodeAwareTransport.
type MemTransport struct {
	net      *MemNetwork
	addr     string
	ip       net.IP
	port     int
	packets  chan *memberlist.Packet
	streams  chan net.Conn
	done     chan struct{}
	shutOnce sync.Once
}

var _ memberlist.NodeAwareTransport = (*MemTransport)(nil)

// Addr returns the endpoint's "host:port".
func (t *MemTransport) Addr() string { return t.addr }

// FinalAdvertiseAddr returns the endpoint's address whatever is asked.
func (t *MemTransport) FinalAdvertiseAddr(string, int) (net.IP, int, error) { return t.ip, t.port, nil }

// WriteTo sends a packet to addr.
func (t *MemTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress delivers a copy of b to a.Addr, or drops it (like UDP) if there is no such endpoint,
// it is shut down, or its queue is full.
func (t *MemTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	now := time.Now()
	dest := t.net.lookup(a.Addr)
	if dest == nil {
		return now, nil
	}
	p := &memberlist.Packet{Buf: append([]byte(nil), b...), From: &net.UDPAddr{IP: t.ip, Port: t.port}, Timestamp: now}
	select {
	case <-dest.done:
	case dest.packets <- p:
	default:
	}
	return now, nil
}

// PacketCh returns incoming packets.
func (t *MemTransport) PacketCh() <-chan *memberlist.Packet { return t.packets }

// DialTimeout opens a stream to addr.
func (t *MemTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens an in-memory stream (net.Pipe) to a.Addr.
func (t *MemTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	dest := t.net.lookup(a.Addr)
	if dest == nil {
		return nil, fmt.Errorf("cluster: memnet: dial %s: connection refused", a.Addr)
	}
	local, remote := net.Pipe()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	select {
	case dest.streams <- remote:
		// net.Pipe has no buffer: bound writes made before memberlist sets its own deadline (the
		// label header) in case the peer never reads.
		_ = local.SetDeadline(time.Now().Add(timeout))
		return local, nil
	case <-dest.done:
	case <-tm.C:
	}
	_ = local.Close()
	_ = remote.Close()
	return nil, fmt.Errorf("cluster: memnet: dial %s: connection refused", a.Addr)
}

// StreamCh returns incoming streams.
func (t *MemTransport) StreamCh() <-chan net.Conn { return t.streams }

// Shutdown removes the endpoint from the network. Idempotent.
func (t *MemTransport) Shutdown() error {
	t.shutOnce.Do(func() {
		t.net.mu.Lock()
		if t.net.byAddr[t.addr] == t { // not a later endpoint at the same address
			delete(t.net.byAddr, t.addr)
		}
		t.net.mu.Unlock()
		close(t.done)
	})
	return nil
}

// TransportStats are the counters of a FaultTransport. Bytes include memberlist's framing, encryption and
// label; stream bytes are TCP payload (push/pull, TCP fallback probes, reliable user messages).
type TransportStats struct {
	PacketsSent, PacketsReceived int64
	PacketBytesSent              int64
	PacketBytesReceived          int64
	StreamBytesSent              int64
	StreamBytesReceived          int64
	Dropped                      int64 // packets and streams dropped while paused
}

// FaultTransport wraps a transport to count traffic and to inject faults: while paused, every packet in
// either direction is dropped, dials fail and incoming streams are closed, as for a frozen or cut-off
// host. For tests, chaos runs and bandwidth figures. It owns two forwarding goroutines, stopped by
// Shutdown (which memberlist calls).
type FaultTransport struct {
	inner   memberlist.NodeAwareTransport
	packets chan *memberlist.Packet
	streams chan net.Conn
	paused  atomic.Bool
	delay   atomic.Int64 // nanoseconds every incoming packet and stream is held (SetDelay)
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup

	pktSent, pktRecv, pktBytesSent, pktBytesRecv, streamSent, streamRecv, dropped atomic.Int64
}

var _ memberlist.NodeAwareTransport = (*FaultTransport)(nil)

// WrapTransport wraps inner. Use it as Config.Transport.
func WrapTransport(inner memberlist.NodeAwareTransport) *FaultTransport {
	f := &FaultTransport{
		inner:   inner,
		packets: make(chan *memberlist.Packet),
		streams: make(chan net.Conn),
		stop:    make(chan struct{}),
	}
	f.wg.Add(2)
	go f.forwardPackets()
	go f.forwardStreams()
	return f
}

// NewLoopbackTransport opens real UDP+TCP sockets on 127.0.0.1 with a free port (tests, figures).
func NewLoopbackTransport() (*memberlist.NetTransport, error) {
	var nt *memberlist.NetTransport
	var err error
	for range 10 { // port 0 binds TCP first, then UDP on the same port, which can be taken: retry
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{"127.0.0.1"},
			Logger:    log.New(discard{}, "", 0),
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: loopback transport: %w", err)
	}
	return nt, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// Pause drops all traffic until Resume.
func (f *FaultTransport) Pause() { f.paused.Store(true) }

// Resume lets traffic through again.
func (f *FaultTransport) Resume() { f.paused.Store(false) }

// SetDelay holds every incoming packet and stream (TCP fallback ping, push/pull) for d after it arrived
// before memberlist sees it (0: none), in arrival order: a CPU-starved process reads its sockets late,
// so its acks and refutations leave late, though nothing is lost. Tests of the failure detector under
// starvation.
func (f *FaultTransport) SetDelay(d time.Duration) { f.delay.Store(int64(max(d, 0))) }

// hold waits until arrived plus the delay (SetDelay); false if the transport stops meanwhile.
func (f *FaultTransport) hold(arrived time.Time) bool {
	d := time.Duration(f.delay.Load())
	if d <= 0 {
		return true
	}
	wait := time.Until(arrived.Add(d))
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-f.stop:
		return false
	}
}

// Stats returns the counters so far.
func (f *FaultTransport) Stats() TransportStats {
	return TransportStats{
		PacketsSent: f.pktSent.Load(), PacketsReceived: f.pktRecv.Load(),
		PacketBytesSent: f.pktBytesSent.Load(), PacketBytesReceived: f.pktBytesRecv.Load(),
		StreamBytesSent: f.streamSent.Load(), StreamBytesReceived: f.streamRecv.Load(),
		Dropped: f.dropped.Load(),
	}
}

func (f *FaultTransport) forwardPackets() {
	defer f.wg.Done()
	in := f.inner.PacketCh()
	for {
		select {
		case <-f.stop:
			return
		case p := <-in:
			if f.paused.Load() {
				f.dropped.Add(1)
				continue
			}
			if !f.hold(p.Timestamp) {
				return
			}
			f.pktRecv.Add(1)
			f.pktBytesRecv.Add(int64(len(p.Buf)))
			select {
			case f.packets <- p:
			case <-f.stop:
				return
			}
		}
	}
}

func (f *FaultTransport) forwardStreams() {
	defer f.wg.Done()
	in := f.inner.StreamCh()
	for {
		select {
		case <-f.stop:
			return
		case c := <-in:
			if f.paused.Load() {
				f.dropped.Add(1)
				_ = c.Close()
				continue
			}
			if !f.hold(time.Now()) {
				_ = c.Close()
				return
			}
			select {
			case f.streams <- &countingConn{Conn: c, f: f}:
			case <-f.stop:
				_ = c.Close()
				return
			}
		}
	}
}

// FinalAdvertiseAddr is the inner transport's.
func (f *FaultTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	return f.inner.FinalAdvertiseAddr(ip, port)
}

// WriteTo sends through the inner transport unless paused.
func (f *FaultTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return f.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends through the inner transport unless paused (then the packet is lost silently).
func (f *FaultTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if f.paused.Load() {
		f.dropped.Add(1)
		return time.Now(), nil
	}
	f.pktSent.Add(1)
	f.pktBytesSent.Add(int64(len(b)))
	return f.inner.WriteToAddress(b, a)
}

// PacketCh returns the forwarded incoming packets.
func (f *FaultTransport) PacketCh() <-chan *memberlist.Packet { return f.packets }

// DialTimeout dials through the inner transport unless paused.
func (f *FaultTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return f.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// errPaused is returned by dials while paused.
var errPaused = errors.New("cluster: transport paused")

// DialAddressTimeout dials through the inner transport unless paused.
func (f *FaultTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if f.paused.Load() {
		f.dropped.Add(1)
		return nil, errPaused
	}
	c, err := f.inner.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, f: f}, nil
}

// StreamCh returns the forwarded incoming streams.
func (f *FaultTransport) StreamCh() <-chan net.Conn { return f.streams }

// Shutdown stops forwarding and shuts the inner transport down. Idempotent.
func (f *FaultTransport) Shutdown() error {
	var err error
	f.once.Do(func() {
		close(f.stop)
		err = f.inner.Shutdown()
		f.wg.Wait()
	})
	return err
}

type countingConn struct {
	net.Conn
	f *FaultTransport
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.f.streamRecv.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.f.streamSent.Add(int64(n))
	return n, err
}
