// Command chaos runs fault scenarios against a real multi-process QLC cluster
// and prints, for each, a markdown table of figures: runs started,
// completed, failed (by code) and cancelled; runs lost (must be 0);
// transcript defects (must be 0); recovery time from a fault to the next
// token of an affected run; and tokens streamed after a cancel (must be 0).
//
// Two backends run the cluster (a fleet): local processes on loopback (the
// default), or the repository's docker-compose.yml (-backend compose), whose
// faults are docker commands (kill, pause, network disconnect, stop). The
// scenarios, the load and the checks are the same for both.
//
// Life cycle of one scenario:
//
//  1. Build what the backend runs, once: cmd/node and cmd/gateway into a
//     temporary directory (local), or the FROM-scratch images (compose).
//  2. Start three nodes and a gateway with a random cluster key and a
//     profile file of its own (simulated models): processes on free
//     loopback ports, or a compose project with its ports published on
//     127.0.0.1.
//  3. Run a steady load of concurrent runs through the gateway's HTTP API:
//     POST /v1/runs, then read /v1/runs/{id}/events (SSE) to the end; some
//     runs are cancelled mid-stream with DELETE.
//  4. Inject the scenario's faults (kill, pause, partition, gateway restart,
//     provider errors, drains), bringing nodes back where the scenario says
//     so; which node hosts each run is read from the nodes' logs.
//  5. When every run has ended (or its timeout passed: it is lost), compare
//     each subscriber's transcript with a replay of the whole log from seq 1
//     and with the run resource (GET /v1/runs/{id}).
//  6. Stop everything it started (compose: down -v) and print the table.
//
// -scenario split and -scenario asymmetric (not part of all; split.go,
// groups.go, groups_compose.go) are group partitions: the nodes in two
// groups that each keep their peers, cut from each other both ways with
// the gateway on either side in turn; or one node that cannot send to one
// peer while that peer's packets reach it.
//
// -scenario soak (not part of all; soak.go) is a soak suite instead: a
// local cluster under a steady mixed load for -duration, each process's
// RSS, heap, goroutines and open files sampled every second, and a slope
// test per series after warm-up (soakstat.go).
//
// -scenario overload (not part of all; overload.go, issue 18) offers 3×
// the cluster's measured capacity for -duration (default 60 s) to CPU-limited
// local nodes and reports goodput, refusals by code, their Retry-After and
// latency, the admitted runs' p99 against the unloaded one, suspicions,
// members declared dead and fencings, runs lost or restarted.
//
// The program exits 1 when a run was lost, a transcript defect was found or
// tokens were streamed after a cancel; 2 when the cluster could not be set
// up. See chaos/README.md.
package main
