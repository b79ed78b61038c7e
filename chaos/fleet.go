package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// fleet is what the scenarios need from a cluster, whatever runs it: local
// processes (localCluster, the default) or the repository's docker compose
// cluster (composeCluster, -backend compose). A node is a *proc: one process,
// or one incarnation of a container (a container started again is a new
// *proc with a new name, so a run's placement never points at a later
// incarnation of the node that hosted it).
//
// A scenario calls the methods that change the cluster from one goroutine;
// they block until what they say is done (a node ready, a process exited).
// liveNodes, node and placements may be called from any goroutine and do
// not block.
type fleet interface {
	// start brings up nodes nodes and the gateway for the named scenario and
	// waits until each answers /readyz. skip is non-nil (and err nil) when
	// the scenario cannot run on this backend here; it says why.
	start(ctx context.Context, scenario string, nodes int) (skip, err error)
	// shutdown ends everything start brought up, whatever state it is in
	// (paused, cut off); it is called once, also after a failed start.
	shutdown()

	// liveNodes returns the nodes started and not ended by a fault (paused
	// and cut-off ones included), oldest first.
	liveNodes() []*proc
	// node returns the live node of that name, or nil.
	node(name string) *proc
	// placements is where the nodes' logs say each run's coordinator is.
	placements() *placements
	// gatewayURL is the gateway's base URL (it stays the same across
	// gateway restarts).
	gatewayURL() string
	// waitMembers waits until the gateway counts n live members (itself
	// included).
	waitMembers(n int, within time.Duration) error

	// kill ends n at once (SIGKILL) and takes it out of the live set. It
	// returns the time just before the signal was asked for: the fault's
	// time. It may return after the fault took effect (compose: the
	// engine answers once the container has exited, and runs may have
	// moved by then); it need not wait for the exit (<-n.done does).
	kill(n *proc) (time.Time, error)
	// terminate asks n to drain and exit (SIGTERM) and takes it out of the
	// live set; n.done closes when it has exited.
	terminate(n *proc) error
	// replace brings a node in for old and waits until it is ready: a new
	// process (local), or old's container started again (compose: old must
	// have exited). old may be nil where inPlace is false.
	replace(old *proc) (*proc, error)
	// inPlace says whether replace restarts the old node's own slot
	// (compose: a fixed set of services) rather than adding a node: a
	// rolling restart then stops the old node first.
	inPlace() bool
	// pause stops n's process without ending it (SIGSTOP); resume goes on.
	// pause returns the time just before the fault was asked for.
	pause(n *proc) (time.Time, error)
	resume(n *proc) error
	// cut takes n off the network the cluster talks on; heal undoes it. cut
	// returns the time just before the fault was asked for.
	cut(n *proc) (time.Time, error)
	heal(n *proc) error
	// restartGateway ends the gateway (SIGKILL if kill, else SIGTERM and
	// wait) and starts it again on the same address and store; it returns
	// once the new gateway is ready, with the time the old one was hit (as
	// kill says).
	restartGateway(kill bool) (time.Time, error)

	// words names this backend's faults in progress lines and tables.
	words() faultWords
	// extras are backend figures for the table, read at the end.
	extras() [][2]string
}

// faultWords names a backend's faults: the local backend's words are the
// signals it sends, the compose backend's the docker commands.
type faultWords struct {
	kill     string // a SIGKILL: "kill -9"
	replaced string // what follows a kill: "each replaced by a new node"
	pause    string // "SIGSTOP"
	resume   string // "SIGCONT"
	cut      string // "cut off the network (iptables)"
	term     string // a drain: "SIGTERM"
	rolled   string // how the rolling scenario replaces: "a new node started first"
	gateway  string // how the gateway is restarted
	backend  string // "" (local processes) or "docker compose": shown in the table's heading
}

// waitMembers polls gwURL's metrics until the gateway counts n live members
// (itself included).
func waitMembers(gwURL string, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	var got float64
	for time.Now().Before(deadline) {
		v, ok := metric(gwURL+"/metrics", "qlc_cluster_members_alive")
		if ok && int(v) == n {
			return nil
		}
		got = v
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("chaos: the gateway never saw %d members (sees %v)", n, got)
}

// roster is what both backends keep of their processes: the live nodes,
// every process started, the gateway, and the run placements read from the
// logs. Its mu also guards the backend's own fields.
type roster struct {
	pl    *placements
	mu    sync.Mutex
	nodes []*proc // started and not ended by a fault (paused ones included)
	all   []*proc
	gw    *proc
	gwURL string
}

func newRoster() roster { return roster{pl: &placements{runs: map[string]placement{}}} }

func (r *roster) liveNodes() []*proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*proc(nil), r.nodes...)
}

func (r *roster) node(name string) *proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

func (r *roster) placements() *placements { return r.pl }

func (r *roster) gatewayURL() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gwURL
}

func (r *roster) waitMembers(n int, within time.Duration) error {
	return waitMembers(r.gatewayURL(), n, within)
}

// removeNode drops a node from the live set (it was killed or drained).
func (r *roster) removeNode(p *proc) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i := slices.Index(r.nodes, p); i >= 0 {
		r.nodes = slices.Delete(r.nodes, i, i+1)
	}
}
