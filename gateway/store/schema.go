package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations are the schema's versions in order: migrations[i] takes the
// schema from version i to i+1. Never edit a released migration; append a new
// one. Each runs in the same transaction as the schema_version update, so a
// crash leaves the schema at a whole version.
var migrations = [][]string{
	// 1: the initial schema.
	{
		`CREATE TABLE IF NOT EXISTS tenants (
			id              TEXT PRIMARY KEY,
			name            TEXT NOT NULL,
			rpm             INTEGER NOT NULL,
			tpm             INTEGER NOT NULL,
			concurrent_runs INTEGER NOT NULL,
			token_budget    INTEGER NOT NULL,
			budget_period   TEXT NOT NULL,
			profiles        TEXT,     -- JSON array; NULL for a nil slice
			weight          INTEGER NOT NULL,
			max_streams     INTEGER NOT NULL,
			created_at      INTEGER,  -- Unix ns; NULL for the zero time
			updated_at      INTEGER NOT NULL,
			deleted         INTEGER NOT NULL
		) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS keys (
			id         TEXT PRIMARY KEY,
			tenant_id  TEXT NOT NULL,
			admin      INTEGER NOT NULL,
			hash       BLOB NOT NULL,
			created_at INTEGER,
			revoked_at INTEGER,
			updated_at INTEGER NOT NULL
		) WITHOUT ROWID`,
		`CREATE TABLE IF NOT EXISTS audit (
			seq    INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused
			at     INTEGER NOT NULL,
			actor  TEXT NOT NULL,
			action TEXT NOT NULL,
			target TEXT NOT NULL,
			detail TEXT NOT NULL
		)`,
		`CREATE INDEX IF NOT EXISTS audit_at ON audit (at, seq)`,
		`CREATE TABLE IF NOT EXISTS reservations (
			run_id    TEXT PRIMARY KEY,
			tenant_id TEXT NOT NULL,
			profile   TEXT NOT NULL,
			tokens    INTEGER NOT NULL,
			at        INTEGER NOT NULL
		) WITHOUT ROWID`,
		`CREATE INDEX IF NOT EXISTS reservations_tenant ON reservations (tenant_id, at)`,
		`CREATE TABLE IF NOT EXISTS usage (
			run_id            TEXT PRIMARY KEY,
			tenant_id         TEXT NOT NULL,
			profile           TEXT NOT NULL,
			status            TEXT NOT NULL,
			admitted_at       INTEGER NOT NULL,
			ended_at          INTEGER NOT NULL,
			prompt_tokens     INTEGER NOT NULL,
			completion_tokens INTEGER NOT NULL,
			total_tokens      INTEGER NOT NULL,
			cost_nusd         INTEGER NOT NULL, -- nano-dollars
			ttft_ms           INTEGER NOT NULL,
			duration_ms       INTEGER NOT NULL,
			stages            TEXT              -- JSON array; NULL for a nil slice
		)`,
		// LedgerSince: the recent runs and the period sum, covered.
		`CREATE INDEX IF NOT EXISTS usage_tenant_admitted ON usage (tenant_id, admitted_at, run_id, total_tokens)`,
		// Usage: by tenant or for all tenants, in (ended_at, run_id) order.
		`CREATE INDEX IF NOT EXISTS usage_tenant_ended ON usage (tenant_id, ended_at, run_id)`,
		`CREATE INDEX IF NOT EXISTS usage_ended ON usage (ended_at, run_id)`,
	},
	// 2: finished runs' logs, so a restarted gateway still serves them.
	{
		`CREATE TABLE IF NOT EXISTS runs (
			run_id     TEXT PRIMARY KEY,
			tenant_id  TEXT NOT NULL,
			profile    TEXT NOT NULL,
			query      TEXT NOT NULL,
			created_at INTEGER NOT NULL,
			ended_at   INTEGER NOT NULL,
			log        BLOB NOT NULL -- a protobuf RunEventBatch
		) WITHOUT ROWID`,
		`CREATE INDEX IF NOT EXISTS runs_ended ON runs (ended_at)`,
	},
	// 3: a tenant's kept runs by age, for the per-tenant cap of RecordRun.
	{
		`CREATE INDEX IF NOT EXISTS runs_tenant_ended ON runs (tenant_id, ended_at)`,
	},
	// 4: batches of runs (POST /v1/runs/batch) and their items, so a
	// restarted gateway serves them and starts their queued items.
	{
		`CREATE TABLE IF NOT EXISTS batches (
			id           TEXT PRIMARY KEY,
			tenant_id    TEXT NOT NULL,
			total        INTEGER NOT NULL,
			created_at   INTEGER NOT NULL,
			cancelled_at INTEGER, -- NULL: not cancelled
			ended_at     INTEGER  -- NULL: items still queued or running
		) WITHOUT ROWID`,
		`CREATE INDEX IF NOT EXISTS batches_tenant ON batches (tenant_id, created_at)`,
		`CREATE INDEX IF NOT EXISTS batches_ended ON batches (ended_at)`,
		// A rowid table: an item holds its query and answer, which may be
		// long (WITHOUT ROWID suits small rows only).
		`CREATE TABLE IF NOT EXISTS batch_items (
			batch_id      TEXT NOT NULL,
			idx           INTEGER NOT NULL,
			custom_id     TEXT NOT NULL,
			query         TEXT NOT NULL,
			profile       TEXT NOT NULL,
			seed          INTEGER NOT NULL,
			max_tokens    INTEGER NOT NULL,
			status        TEXT NOT NULL, -- queued starting running completed failed cancelled
			run_id        TEXT NOT NULL, -- '' before the item's run started
			answer        TEXT NOT NULL,
			error_code    TEXT NOT NULL,
			error_message TEXT NOT NULL,
			attempts      INTEGER NOT NULL, -- runs started for it (a requeue after a shutdown starts another)
			started_at    INTEGER,
			ended_at      INTEGER,
			UNIQUE (batch_id, idx)
		)`,
		`CREATE UNIQUE INDEX IF NOT EXISTS batch_items_custom ON batch_items (batch_id, custom_id)`,
		`CREATE INDEX IF NOT EXISTS batch_items_status ON batch_items (batch_id, status, idx)`,
	},
	// 5: tenants' own provider keys (bring your own key), sealed: box is
	// AES-GCM under a key derived from the cluster key (internal/sealed),
	// never the key in clear. A deletion is a tombstone (deleted, empty box)
	// so that it replicates.
	{
		`CREATE TABLE IF NOT EXISTS provider_keys (
			tenant_id  TEXT NOT NULL,
			endpoint   TEXT NOT NULL,
			key_id     TEXT NOT NULL, -- the derived key that sealed box ('' once deleted)
			box        BLOB NOT NULL, -- nonce || ciphertext || tag
			hint       TEXT NOT NULL, -- '…' and the last 4 characters, or ''
			created_at INTEGER,
			updated_at INTEGER NOT NULL,
			deleted    INTEGER NOT NULL,
			PRIMARY KEY (tenant_id, endpoint)
		) WITHOUT ROWID`,
	},
	// 6: tenants' own profiles, and the limit on how many a tenant keeps.
	// A deletion is a tombstone (deleted, empty definition) so that it
	// replicates.
	{
		`ALTER TABLE tenants ADD COLUMN max_profiles INTEGER NOT NULL DEFAULT 0`,
		`CREATE TABLE IF NOT EXISTS tenant_profiles (
			tenant_id  TEXT NOT NULL,
			name       TEXT NOT NULL,
			definition TEXT NOT NULL, -- the profile as JSON (stagework.Config.ParseProfile); '' once deleted
			created_at INTEGER,
			updated_at INTEGER NOT NULL,
			deleted    INTEGER NOT NULL,
			PRIMARY KEY (tenant_id, name)
		) WITHOUT ROWID`,
	},
	// 7: a batch item's budget (max_cost_usd, max_latency_ms, min_quality,
	// on_budget as the API's JSON; '' for none), applied when its run starts.
	{
		`ALTER TABLE batch_items ADD COLUMN budget TEXT NOT NULL DEFAULT ''`,
	},
}

// migrate brings the database behind db to the newest version, len(migrations). It is idempotent:
// applied migrations are skipped, and the IMMEDIATE transaction makes two
// processes opening the same file at once apply each migration only once.
func migrate(ctx context.Context, db *sql.DB) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: create schema_version: %w", err)
	}
	var version int
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&version); err != nil {
		return fmt.Errorf("migrate: read schema_version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("migrate: database schema version %d is newer than this binary's %d", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		for _, stmt := range migrations[v] {
			if _, err := tx.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("migrate: to version %d: %w", v+1, err)
			}
		}
	}
	if version < len(migrations) {
		if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
			return fmt.Errorf("migrate: write schema_version: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (?)`, len(migrations)); err != nil {
			return fmt.Errorf("migrate: write schema_version: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	return nil
}

// Version reports the schema version recorded in the database.
func (s *Store) Version() (int, error) {
	var v int
	if err := s.r.QueryRow(`SELECT coalesce(max(version), 0) FROM schema_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("store: schema version: %w", err)
	}
	return v, nil
}
