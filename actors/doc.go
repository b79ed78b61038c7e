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
