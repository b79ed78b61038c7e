package actors

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// serve accepts one TLS connection and echoes what it reads.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return l.Addr().String()
}

func roundTrip(addr string, cfg *tls.Config) error {
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, []byte("ping")) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestTransportTLSAdmitsOnlyKeyHolders(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	srvA, _, err := TransportTLS(key)
	if err != nil {
		t.Fatal(err)
	}
	_, cliA2, _ := TransportTLS(key) // another process with the same key: its own leaf, same CA
	_, cliB, _ := TransportTLS(other)
	addr := serveTLS(t, srvA)

	if err := roundTrip(addr, cliA2); err != nil {
		t.Fatalf("a process with the key must connect: %v", err)
	}
	if err := roundTrip(addr, cliB); err == nil {
		t.Fatal("a process with another key connected")
	}
	// No client certificate at all, even trusting the server blindly.
	if err := roundTrip(addr, &tls.Config{InsecureSkipVerify: true}); err == nil {
		t.Fatal("a client without a certificate connected")
	}
	// A client with the key refuses an impostor server (another key).
	srvB, _, _ := TransportTLS(other)
	if err := roundTrip(serveTLS(t, srvB), cliA2); err == nil {
		t.Fatal("a client with the key trusted a server without it")
	}
	// Plain TCP is not spoken at all.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	if n, _ := c.Read(make([]byte, 64)); n > 0 {
		// The server may send a TLS alert; it must never echo plain text.
		t.Logf("server answered plain text with %d bytes (a TLS alert)", n)
	}
	if _, _, err := TransportTLS([]byte("short")); err == nil {
		t.Fatal("a short key must be refused")
	}
}

// Key rotation (docs/keys.md): a process presents the certificate of its
// primary key's CA and accepts those of every key in its ring. Two
// processes connect, both ways, when each one's primary is in the other's
// ring — the mixes of the three rolling phases — and never when their
// rings are disjoint.
func TestTransportTLSKeyring(t *testing.T) {
	old := bytes.Repeat([]byte{1}, 32)
	next := bytes.Repeat([]byte{2}, 32)
	other := bytes.Repeat([]byte{3}, 32)
	type ring struct {
		name  string
		keys  [][]byte
		srv   *tls.Config
		cli   *tls.Config
		addrs string
	}
	mk := func(name string, keys ...[]byte) *ring {
		srv, cli, err := TransportTLS(keys[0], keys[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		r := &ring{name: name, keys: keys, srv: srv, cli: cli}
		r.addrs = serveTLS(t, srv)
		return r
	}
	before := mk("[old]", old)
	phase1 := mk("[old,+new]", old, next)
	phase2 := mk("[new,+old]", next, old)
	after := mk("[new]", next)
	stranger := mk("[other]", other)
	strangerRing := mk("[other,+new]", other, next) // accepts new, but presents other

	for _, c := range []struct {
		a, b *ring
		ok   bool
	}{
		{before, phase1, true},  // phase 1 under way
		{phase1, phase2, true},  // phase 2 under way
		{before, phase2, false}, // phase 1 skipped: [old] cannot verify a new certificate
		{phase2, after, true},   // phase 3 under way
		{phase1, after, false},  // phase 2 skipped
		{before, after, false},  // disjoint
		{stranger, before, false},
		{stranger, after, false},
		{strangerRing, after, false}, // its certificate is from a key [new] does not hold
		{strangerRing, phase2, false},
	} {
		for _, dir := range [][2]*ring{{c.a, c.b}, {c.b, c.a}} {
			server, client := dir[0], dir[1]
			err := roundTrip(server.addrs, client.cli)
			if c.ok && err != nil {
				t.Errorf("client %s → server %s: %v, want a connection", client.name, server.name, err)
			}
			if !c.ok && err == nil {
				t.Errorf("client %s → server %s connected, want a refusal", client.name, server.name)
			}
		}
	}
	if _, _, err := TransportTLS(old, []byte("short")); err == nil {
		t.Fatal("a short secondary key must be refused")
	}
}
