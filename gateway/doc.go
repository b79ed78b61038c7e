// Package gateway is QLC's HTTP edge: the run API (create, status, cancel),
// run event streams over SSE and WebSocket, the OpenAI-compatible
// /v1/chat/completions and /v1/models, tokenization, tenants with their keys
// and limits, the usage ledger, the embedded web UI, and the operational
// endpoints. The API is described in docs/api.md.
//
// # Streams
//
// Every stream is a Subscription to a run's hub (package actors) pumped into a
// transport (transport.go): SSE (sse.go), WebSocket (ws.go) or an OpenAI
// chunk stream (openai.go). A pump writes what is pending (at most a batch of
// the hub's MaxBatch events) and flushes; when a reader is behind, consecutive
// token deltas of one step are coalesced into one event, so a slow link costs
// fewer, larger writes, and the first token is never held back. A run of a
// parallel strategy (moa, council, vote) has several steps streaming at
// once: their deltas interleave in the log, every step event names its step,
// and everything that rebuilds a step's text or bills it (steps.go: the run
// resource's steps, the ledger's per-step rows) keys by step id.
//
// No event on the wire is longer than Config.MaxEventBytes, framing included
// (events.go): coalescing stops at the bound, a delta too long for one event
// is sent in parts (same seq, resumable inside with "seq:bytes"), long reasons
// are cut, and stage outputs and answers are not repeated in events (readers
// have them from the deltas; the run resource serves them). A transport keeps
// no buffer between writes: it encodes into a pooled one, so a connected
// reader costs its cursor, a timer and its connection, whatever it was sent.
// When many streams close, Config.FreeMemoryAfter gives their memory back to
// the OS (release.go).
//
// A reader of a finished run gets its whole log from any seq; one of a live
// run that falls further behind between two reads while more than the hub's
// MaxLag events behind gets a lagged notice and is disconnected; it resumes
// from the sequence number in the notice, and its first read always delivers.
//
// # Tenancy
//
// With Config.Tenancy (tenancy.go; cmd/gateway always sets it) every /v1/
// request carries "Authorization: Bearer <key>":
//
//   - Keys are random ("qlc_" and 160 bits), shown once, stored only as
//     SHA-256 hashes in the store (gateway/store), compared in constant time
//     and never logged. A tenant key runs queries and sees only its tenant's
//     runs (another tenant's run is a 404, exactly like a missing one); an
//     admin key manages tenants (admin.go: /v1/admin/…, every change audited;
//     the audit log filtered by actor, action, target, tenant) and reads every
//     tenant's usage — records, or sums by hour/day and tenant/profile/model
//     (usage.go: usageSeries). The admin console (web: /admin) is a page over
//     those endpoints. Keys given in clear in a tenants file or
//     QLC_ADMIN_KEY need minKeyBits of entropy (keystrength.go).
//   - A revoked key id is a tombstone: no restart, environment variable,
//     tenants file or peer brings it back (the store's PutKey refuses any
//     unrevoked row over a revoked one); re-enabling takes a new key.
//   - Limits per tenant (requests and tokens per minute, concurrent runs,
//     token budget per period, allowed profiles, fair-share weight, event
//     streams per key) are enforced cluster-wide: admission.go reserves the
//     run's upper-bound token count in the ledger, then asks the tenant's
//     limiter actor (one per tenant in the cluster, rebuilt from every
//     gateway's ledger after a loss). A tenant created without
//     concurrent_runs gets Tenancy.DefaultConcurrentRuns.
//   - The usage ledger (usage.go) bills every run from its event log exactly
//     once (keyed by run id), settles the limiter at the real count, and keeps
//     finished runs' logs for Config.KeepRuns; a gateway restarted after a
//     crash follows the runs it had admitted again (recoverOpen) and bills
//     them.
//   - Batches (batch.go: POST /v1/runs/batch) are kept in the store; a
//     dispatcher starts their items as ordinary runs, at most the tenant's
//     concurrent_runs at once, and a restarted gateway takes them up again.
//   - The registry (tenants and keys) is replicated between the cluster's
//     gateways (Tenancy.Replicate): a change is pushed to every peer, and each
//     gateway pulls the others' registries at start and every minute; the row
//     with the latest version wins (last-writer-wins), except that a
//     revocation always wins.
//   - In local mode (Config.DevKeys) a dev tenant's key is handed to the web
//     UI on this machine only (local.go: loopback peer, loopback Host, no
//     forwarding header), and Config.LocalOnly refuses requests addressed to
//     any other host name (DNS rebinding).
//
// # Life cycle
//
//  1. New validates a Config (an actors.Engine is required), builds the
//     routes and starts its background goroutines (the memory release and,
//     with Tenancy, recoverOpen, keepRuns and the batch dispatcher), all
//     owned by the Server.
//  2. Handler serves the public routes: the API, the UI, /healthz and
//     /readyz (/metrics only to an admin key); OpsHandler serves /healthz,
//     /readyz and /metrics without a key, and Config.Ops's paths (cmd/gateway:
//     /debug/pprof/), for an address only operators reach. Wrap them in http.Servers (NewHTTPServerWith; cmd/gateway does).
//  3. Every request gets a clear OpenAI-shaped error on bad input; nothing a
//     request does can affect another run.
//  4. Stop (when runs live on nodes and must go on), then, after the engine's
//     Shutdown, Close: it stops the background goroutines and waits for them
//     and for the runs admitted here to be billed. Close is idempotent.
//     Tenancy.Close stops registry replication; the store is closed last.
package gateway
