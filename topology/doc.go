// Package topology is the seam between the cluster's membership (package
// cluster, memberlist) and the actor engine (package actors): it implements
// actors.Topology over a cluster.Cluster. The decisions that used to hide in
// the commands live here, tested in one process with cluster's in-memory
// network:
//
//   - placement: a run's coordinator goes to the less loaded of the two
//     rendezvous-ranked coordinator hosts for its id, then to every other
//     one; draining members are skipped; an address declared dead a moment
//     ago (and back under a new name) goes last, because the actor
//     transport's old connection to it may still be in its reconnect wait;
//   - tenant limiters: the rendezvous owner of "tenant/<id>" among the
//     coordinator hosts, with a view (a hash of the names of those hosts) so
//     that a limiter answers only gateways that see the same hosts;
//   - ledgers: the gateways, plus gateways declared dead within LedgerGrace;
//   - events: a member declared dead (not one that left gracefully) is
//     NodeLost with its actor address; a new process at an address another
//     member had is AddressReused; our own fencing is Fenced, then Rejoined
//     once we are a member again under a new name.
//
// Life cycle:
//
//  1. New(cfg): nothing runs yet; the queries return nothing.
//  2. Join(self, load) (called by actors.NewEngine once the actor transport
//     is up): starts the cluster membership announcing self, and the one
//     goroutine that turns cluster.Topology updates into events, announces
//     load every LoadInterval and, when fenced, sends Fenced, shuts the old
//     membership down and rejoins under a new name (cluster.NewNodeName).
//  3. Leave(timeout) on SIGTERM: the others see a graceful departure (no
//     NodeLost: a draining node finishes its runs).
//  4. Close: stops the goroutine (waiting for it), closes the event channel
//     and shuts the membership down. Idempotent.
package topology
