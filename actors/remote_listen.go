package actors

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"syscall"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
)

// pickPortTries bounds startRemote's attempts with a picked port.
const pickPortTries = 8

// startRemote starts protoactor's remote (the actor transport) on
// host:port and returns it once it listens. advertise, if set, is the host
// other processes use; the port is always the one bound.
//
// Port 0 asks for a free port. protoactor takes the address it names its
// PIDs with from its listener only when nothing is advertised, and listens
// itself (Remote.Start neither takes a listener nor reports one), so:
//   - with a concrete host and nothing advertised, port 0 goes to protoactor
//     as is: the kernel picks the port and protoactor reports it
//     (ActorSystem.Address). No race.
//   - with an advertised host (which must carry the port before Start) or a
//     wildcard host (whose bound address "[::]:port" names no reachable
//     host), a port is picked first by listening and closing, and Start is
//     retried with a fresh one if another process took it in between
//     ("address already in use"), up to pickPortTries times.
func startRemote(system *actor.ActorSystem, host string, port int, advertise string, opts []remote.ConfigOption) (*remote.Remote, error) {
	if port != 0 || (advertise == "" && !wildcardHost(host)) {
		return tryRemote(system, host, port, advertise, opts)
	}
	var err error
	for range pickPortTries {
		var p int
		if p, err = pickPort(host); err != nil {
			return nil, err
		}
		var r *remote.Remote
		if r, err = tryRemote(system, host, p, advertise, opts); err == nil || !addrInUse(err) {
			return r, err
		}
	}
	return nil, err
}

// tryRemote is one Start. protoactor panics when it cannot listen; that
// becomes an error (nothing else has started by then).
func tryRemote(system *actor.ActorSystem, host string, port int, advertise string, opts []remote.ConfigOption) (r *remote.Remote, err error) {
	if advertise != "" {
		opts = append(opts[:len(opts):len(opts)], remote.WithAdvertisedHost(net.JoinHostPort(advertise, strconv.Itoa(port))))
	}
	r = remote.NewRemote(system, remote.Configure(host, port, opts...))
	defer func() {
		if p := recover(); p != nil {
			r = nil
			if e, ok := p.(error); ok {
				err = fmt.Errorf("actors: actor transport on %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), e)
			} else {
				err = fmt.Errorf("actors: actor transport on %s: %v", net.JoinHostPort(host, strconv.Itoa(port)), p)
			}
		}
	}()
	r.Start()
	return r, nil
}

// addrInUse reports a listen that failed because the port is taken.
// protoactor formats the listen error with %v, so the text is all there is.
func addrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

func wildcardHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "" || (ip != nil && ip.IsUnspecified())
}

// pickPort is freePort; tests replace it to force a collision.
var pickPort = freePort

// freePort is a port on host that was free a moment ago (see startRemote
// for when that is used, and why it is retried).
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("actors: pick a port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
