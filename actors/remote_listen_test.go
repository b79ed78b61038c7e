package actors

import (
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

func startTestRemote(t *testing.T, host string, port int, advertise string) (*actor.ActorSystem, error) {
	t.Helper()
	system := actor.NewActorSystem()
	r, err := startRemote(system, host, port, advertise, nil)
	if err == nil {
		t.Cleanup(func() { r.Shutdown(false) })
	}
	return system, err
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// dials checks something accepts TCP connections at addr.
func dials(t *testing.T, addr string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("nothing listens at %s: %v", addr, err)
	}
	c.Close()
}

// Port 0 without an advertised host: protoactor binds it and names its PIDs
// with the bound address.
func TestStartRemotePortZeroReportsTheBoundPort(t *testing.T) {
	pickPort = func(string) (int, error) { t.Fatal("a port was picked: port 0 should go to the kernel"); return 0, nil }
	defer func() { pickPort = freePort }()
	system, err := startTestRemote(t, "127.0.0.1", 0, "")
	if err != nil {
		t.Fatal(err)
	}
	addr := system.Address()
	if !strings.HasPrefix(addr, "127.0.0.1:") || portOf(t, addr) == 0 {
		t.Fatalf("Address() = %q, want 127.0.0.1 and the bound port", addr)
	}
	dials(t, addr)
}

// With an advertised host the port is picked first; a collision (another
// process took it) is retried with a fresh port.
func TestStartRemoteAdvertisedRetriesATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	picks := 0
	pickPort = func(host string) (int, error) {
		picks++
		if picks == 1 {
			return taken.Addr().(*net.TCPAddr).Port, nil // lost the race
		}
		return freePort(host)
	}
	defer func() { pickPort = freePort }()
	system, err := startTestRemote(t, "127.0.0.1", 0, "node-a.example")
	if err != nil {
		t.Fatal(err)
	}
	addr := system.Address()
	host, _, _ := net.SplitHostPort(addr)
	port := portOf(t, addr)
	if picks != 2 || host != "node-a.example" || port == 0 || port == taken.Addr().(*net.TCPAddr).Port {
		t.Fatalf("after %d picks, Address() = %q: want the advertised host and the second port", picks, addr)
	}
	dials(t, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

// A concrete port that is taken is an error (protoactor would panic), and
// only port 0 is retried.
func TestStartRemoteTakenPortIsAnError(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = startTestRemote(t, "127.0.0.1", taken.Addr().(*net.TCPAddr).Port, "")
	if err == nil || !addrInUse(err) || !strings.Contains(err.Error(), "actors: actor transport on 127.0.0.1:") {
		t.Fatalf("err = %v, want address already in use", err)
	}
	// Every pick collides: the last error is returned after pickPortTries.
	picks := 0
	pickPort = func(string) (int, error) { picks++; return taken.Addr().(*net.TCPAddr).Port, nil }
	defer func() { pickPort = freePort }()
	if _, err := startTestRemote(t, "127.0.0.1", 0, "adv"); err == nil || !addrInUse(err) || picks != pickPortTries {
		t.Fatalf("after %d picks: %v", picks, err)
	}
}

func TestWildcardHost(t *testing.T) {
	for host, want := range map[string]bool{"": true, "0.0.0.0": true, "::": true, "127.0.0.1": false, "localhost": false, "10.0.0.5": false} {
		if wildcardHost(host) != want {
			t.Errorf("wildcardHost(%q) = %v", host, !want)
		}
	}
}
