// Package store is the gateway's embedded SQL store: tenants, API keys, the
// admin audit log, run reservations and the usage ledger, kept in one SQLite
// file through the pure-Go driver modernc.org/sqlite (no cgo).
//
// Life cycle:
//
//  1. Open creates the file (mode 0600, parent directories 0700) if needed,
//     switches it to WAL and migrates its schema to the newest version
//     (schema_version table; each migration runs once, in one transaction),
//     and starts the Store's one goroutine, the record writer.
//  2. Many goroutines call its methods at once. Writes go through a single
//     write connection (database/sql queues callers for it), so writers of
//     one process never see SQLITE_BUSY; reads use a small pool of read-only
//     connections and, thanks to WAL, never wait for the writer. Statements
//     are prepared once per connection and cached. RecordRun (and so
//     RecordUsage) hands its record to the record writer, which commits the
//     records queued together, up to 64, in one transaction (group commit,
//     groupcommit.go); each caller returns once its own record committed.
//  3. Close stops the record writer after it has committed every record
//     queued (later RecordRun calls get ErrClosed), then closes both pools;
//     SQLite checkpoints the WAL on the last close.
//
// Admission protocol: Reserve records a run's upper-bound token reservation
// before the tenant's limiter is asked; DropReservation undoes it when the
// run is denied or never starts; RecordUsage settles the run, inserting its
// usage record and deleting its reservation in one transaction. A limiter
// rebuilt after a restart (LedgerSince) therefore sees every admitted run,
// settled or not, exactly once.
//
// Durability: the database runs with journal_mode=WAL and synchronous=NORMAL.
// A transaction is durable against the death of the process (kill -9, panic,
// OOM kill) as soon as its call returns (RecordRun returns once the group
// transaction holding its record has committed): the commit is in the WAL
// file, and the next Open recovers it. It is NOT guaranteed durable against power loss
// or a kernel crash: with synchronous=NORMAL the WAL is fsynced only at
// checkpoints, so the last transactions before such a crash may be lost
// (the database stays consistent; it just rolls back to an earlier commit).
//
// Representation choices:
//
//   - Times are INTEGER nanoseconds since the Unix epoch (UTC), so they
//     round-trip exactly and compare as integers; a zero time.Time is NULL.
//     Times outside the years 1678..2261 cannot be stored and are rejected.
//   - A run's CostUSD is an INTEGER count of nano-dollars (1e-9 USD): SQL sums
//     over any number of rows are exact, and any value with at most nine
//     decimals round-trips exactly. Finer fractions are rounded to the
//     nearest nano-dollar. Per-step rows (a chain's stages, a parallel
//     strategy's steps) live in the stages JSON column, where float64 text
//     round-trips exactly; fields added to them (step, status) need no
//     migration, and rows written before read with them empty.
//   - Reports are computed in SQL: UsageSeries sums the ledger by UTC hour or
//     day and by tenant, profile or model (a model's sums come from the
//     stages JSON column, each step's cost rounded to nano-dollars before it
//     is summed); AuditFind filters the audit log. Their SQL text varies only
//     with which filters are set (bucket widths are two constants), so the
//     statement cache stays small.
//   - A nil slice is stored as NULL and an empty one as '[]', so both
//     round-trip as they were given.
//   - No foreign keys: tenants and keys are replicated between gateways with
//     last-writer-wins, and a key may arrive before its tenant.
package store
