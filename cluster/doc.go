// Package cluster is QLC's membership and placement library: who is in the cluster, what each member
// can host, and which member should run a given actor. It is built on hashicorp/memberlist (SWIM gossip,
// the one failure detector in QLC) and knows nothing of actors. Package topology (beside it) implements
// the actor engine's Topology interface over it: placement of runs, tokenizer work and tenant limiters,
// and the events the engine acts on (a member lost, an address reused, this process fenced).
//
// Life cycle of one member:
//
//  1. Configure: DefaultConfig() (LAN-tuned failure detection, documented per field), then NodeName
//     (NewNodeName: unique per process incarnation), Seeds, ClusterKey (ParseKey), Kinds, RemoteAddr,
//     Version, DisableFeatures.
//  2. Start: memberlist listens, announces our metadata (kinds, remote address, version, CPU features
//     from cpuid minus DisableFeatures, a snapshot of our load) and joins the seeds. If no seed answers it runs alone and
//     keeps retrying; a seed list that includes ourselves is fine.
//  3. Run: Members, Owner (rendezvous hashing, for cluster-unique keyed actors) and PickLeastLoaded
//     (power of two choices, for run coordinators) read the current view without blocking. Updates
//     delivers every change of membership or metadata, in order, from one goroutine, coalescing when
//     the reader is slow. SetLoad/SetPressure announce the load (rate-limited, never blocks) as
//     load messages gossiped beside the metadata, not in it: a metadata change raises the member's
//     incarnation, and memberlist drops suspicions that carry an older one (load.go).
//     Every RejoinInterval the seeds that no member of our view has are joined again, which re-merges
//     healed partitions and finds late seeds; a steady cluster joins nobody (rejoin.go).
//  4. Failure of another member: after about ProbeInterval + the suspicion timeout + gossip it leaves
//     every view and appears in Topology.Left. The suspicion timeout is SuspicionMult×ProbeInterval
//     (800 ms) once k = SuspicionMult-2 other members confirmed the suspicion, as they do at once for a
//     crashed member, and up to SuspicionMaxTimeoutMult times that (4.8 s) while none does: a member
//     that is slow (CPU-starved) rather than dead has that long to refute (issue 18). Its
//     name is tombstoned: if it was only paused or cut off and comes back, it is refused, not resurrected.
//  5. Fencing: a member that learns it was declared dead (a fence notice from a member refusing its
//     name, or its name among a peer's tombstones at push/pull; after a partition only the smaller side
//     fences) closes Fenced() and stops memberlist. The process stops the actors it hosts, calls
//     Shutdown, and goes back to step 1 with a new NodeName. See fence.go for the rule.
//  6. Graceful exit (SIGTERM): Leave(timeout) tells the others at once (they see it in tens of
//     milliseconds instead of after failure detection), hand off or finish work, then Shutdown.
//  7. Shutdown: idempotent; stops memberlist and every goroutine this package started, waits for them,
//     and closes Updates.
//
// Security: with ClusterKey, every gossip packet and push/pull stream is AES-GCM encrypted and
// authenticated (memberlist keyring), with ClusterName as label; a process without the key cannot join,
// read the member list, or inject messages (fence notices travel inside the same encryption).
//
// Tests use MemNetwork (an in-memory network; memberlist's MockNetwork is racy and blocks on stopped
// peers) and FaultTransport (pause a member's traffic, count bytes) instead of sockets where they can.
package cluster
