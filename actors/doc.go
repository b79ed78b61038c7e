// Package actors glues QLC's pure stage logic to protoactor mailboxes.
//
// Three actors make a run:
//
//   - RunCoordinator (coordinator.go): one per run. It drives the stages in
//     order, spawns and supervises one StageWorker per stage attempt, numbers
//     every event, keeps the run's log (its checkpoint at every stage boundary
//     is the log prefix up to the last StageCompleted) and stops its workers on
//     CancelRun.
//   - StageWorker (worker.go): one per stage attempt. It builds the prompt,
//     streams from the provider on a goroutine it owns, and forwards deltas to
//     its coordinator. Stopping the worker cancels the provider request.
//   - RunHub (hub.go): one per run, on the gateway. It keeps the run's log
//     (bounded), replays it from any seq and fans it out to any number of
//     subscribers, each with a bounded lag; a subscriber that falls further
//     behind is dropped with a Lagged notice and never slows the run.
//
// Around them, one of each per process:
//
//   - run starter (engine.go, "qlc-run-starter"): a node's entry point for
//     runs placed by gateways; it spawns coordinators as its children,
//     answers FindRun, and stops them all when the process is fenced. At
//     the node's adaptive run limit (adaptive.go, Config.RunLimit) it
//     refuses a new run at once (StartRunAck code node_saturated, with its
//     load); a CancelRun reaches the run's coordinator (an abandoned
//     placement).
//   - fair queue of run slots (fairq.go): not an actor but the coordinators'
//     shared admission: a node runs at most Config.RunSlots runs at once and
//     hands freed slots to waiting runs in weighted-fair order per tenant; a
//     new run waits at most Config.QueueDeadline (then RunFailed
//     queue_timeout, before any work).
//   - placement (engine.go, placeRun): a new run goes to the placer's
//     candidates in order; a node that refuses or does not ack within
//     SpawnTimeout is skipped, never counted lost, within a retry budget
//     (retrybudget.go); each further offer after a timeout has a higher
//     epoch, fenced at the hub. A gateway's own adaptive limit on
//     unfinished runs (Config.ActiveRunLimit) and the nodes' gossiped
//     saturation make Saturated true: the excess is refused before any work.
//   - tokenizer pool (tokenizer.go, "qlc-tokenizer"): a round-robin pool of
//     tokenizer actors, only on hosts whose CPU runs the SIMD path; other
//     processes reach it through a TokenizerClient, which batches requests
//     and counts locally on the scalar path when no host answers in time.
//   - tenant limiters (limiter.go, "qlc-limiters"): a parent that spawns
//     one virtual actor per tenant, holding its request, token, concurrency
//     and budget counters for the whole cluster, rebuilt from the gateways'
//     ledgers; gateways reach them through a LimiterClient (Admit, Settle).
//   - ledger and registry services (services.go, "qlc-ledger",
//     "qlc-registry"): a gateway's usage ledger and tenant registry, served
//     to limiters and other gateways by a bounded pool of workers.
//
// Where actors live in a cluster is the Topology's business (topology.go):
// an interface the engine depends on, implemented over memberlist by
// package topology; the engine consumes its events (a node lost: move its
// runs; an address reused: dial it afresh; this process fenced: stop what
// it hosts) on one goroutine.
//
// Life cycle of a run:
//
//  1. Engine.StartRun checks the profile, picks an unguessable run id and a
//     seed, spawns the RunHub and the RunCoordinator, and sends StartRun.
//  2. For each stage the coordinator emits StageStarted, spawns a worker, and
//     turns the worker's deltas into numbered TokenDelta events sent to the hub.
//  3. A failed attempt is retried with backoff, then moved to the stage's
//     fallback model (stagework.RetryPolicy decides); a failure after tokens
//     were streamed emits StageRestarted first. When nothing is left to try
//     the run ends with RunFailed.
//  4. After the Curator, RunCompleted carries the answer; the coordinator
//     stops. CancelRun at any point stops the worker (closing the upstream
//     request) and ends the run with RunCancelled.
//  5. The hub keeps the finished log for Config.RetainFinished, then the
//     engine evicts it.
//
// Every message between actors is a protobuf type from package messages, so
// the same actors work across nodes. The only non-protobuf messages are an
// actor's timers to itself, which never leave its mailbox.
package actors
