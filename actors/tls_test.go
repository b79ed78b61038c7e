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
