// Command chaos runs fault scenarios against a real multi-process QLC cluster
// on loopback and prints, for each, a markdown table of figures: runs
// started, completed, failed (by code) and cancelled; runs lost (must be 0);
// transcript defects (must be 0); recovery time from a fault to the next
// token of an affected run; and tokens streamed after a cancel (must be 0).
//
// Life cycle of one scenario:
//
//  1. Build cmd/node and cmd/gateway once into a temporary directory.
//  2. Start three nodes and a gateway with a random cluster key, distinct
//     free loopback ports and a profile file of its own (simulated models).
//  3. Run a steady load of concurrent runs through the gateway's HTTP API:
//     POST /v1/runs, then read /v1/runs/{id}/events (SSE) to the end; some
//     runs are cancelled mid-stream with DELETE.
//  4. Inject the scenario's faults (kill -9, SIGSTOP/SIGCONT, provider
//     errors, SIGTERM drains), replacing nodes where the scenario says so.
//  5. When every run has ended (or its timeout passed: it is lost), compare
//     each subscriber's transcript with a replay of the whole log from seq 1
//     and with the run resource (GET /v1/runs/{id}).
//  6. Stop every process it started and print the table.
//
// The program exits 1 when a run was lost, a transcript defect was found or
// tokens were streamed after a cancel; 2 when the cluster could not be set
// up. See chaos/README.md.
package main
