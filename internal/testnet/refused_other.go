//go:build !unix

package testnet

import (
	"net"
	"testing"
)

// RefusedAddr is a loopback address where connections are refused: a port
// that was free a moment ago (unix systems hold it bound; see
// refused_unix.go).
func RefusedAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
