// Package scalesim measures, in one process, how QLC's membership and
// placement behave at sizes this machine cannot host as processes: hundreds
// of members. It runs no actors.
//
//   - Membership (SimulateMembership): N instances of package cluster — the
//     code and the configuration a node ships (topology.DefaultConfig's
//     cluster.Config, with its encryption, metadata and re-join loop) — on
//     cluster's in-memory network, every endpoint wrapped by
//     cluster.WrapTransport to count bytes. It times a join, a death (a
//     member stops without leaving) and a metadata change (a load
//     announcement, SetLoad → memberlist UpdateNode) until every member
//     sees it, and counts gossip bytes per member per second in a steady
//     window. Because hundreds of members share two cores, it also reports
//     what the process did with them (CPU use, timer lateness, members that
//     were falsely declared dead) so a reader can tell protocol time from
//     starvation; Config.Scale stretches every protocol interval to check.
//   - Membership over processes (SimulateMembershipProcs, qlc-scalesim
//     -procs P): the same life cycle with the members spread over P worker
//     processes (RunWorker; this program again, driven by JSON lines on
//     stdin/stdout), each member on its own real UDP+TCP port on loopback
//     (memberlist's NetTransport, wrapped to count bytes). Each process has
//     its own scheduler and GC, as deployed nodes do; the machine's cores
//     are still shared. Times are wall-clock instants taken by the workers
//     (one kernel clock), the latest over all of them.
//   - Placement (SimulatePlacement): runs arrive (Poisson) and finish
//     (exponential durations) on N coordinator hosts, each placed by
//     cluster.Topology.PickLeastLoaded — the function Cluster.PickLeastLoaded
//     and topology's Candidates place with — over loads that lag as the
//     gossiped ones do; it reports max/mean runs per node.
//
// Life cycle of a membership simulation: start N members (seeds: the first
// Seeds of them, as a deployment lists a few), wait until every member sees
// N, settle, count bytes over Steady, then Reps times join one, kill one,
// change one's load, each timed until every member agrees; shut everything
// down and wait for the goroutines. Every wait has a deadline.
//
// cmd/qlc-scalesim prints the tables (make scalesim); docs/scale.md reads
// them.
package scalesim
