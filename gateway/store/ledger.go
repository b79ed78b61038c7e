package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// Reservation is an admitted run's claim on its tenant's token budget. It is
// written BEFORE the tenant's limiter is asked (so a limiter rebuilt from the
// ledger never misses one), and removed by DropReservation or RecordUsage.
type Reservation struct {
	RunID    string
	TenantID string
	Profile  string
	Tokens   int64     // the reserved upper bound
	At       time.Time // admission time
}

// Reserve records r. The error wraps ErrExists if the run id is already
// reserved or settled: a run id is admitted at most once. r needs a RunID, a
// TenantID, non-negative Tokens and a non-zero At.
func (s *Store) Reserve(r Reservation) error {
	switch {
	case r.RunID == "":
		return fmt.Errorf("store: reserve: empty run id: %w", ErrInvalid)
	case r.TenantID == "":
		return fmt.Errorf("store: reserve run %q: empty tenant: %w", r.RunID, ErrInvalid)
	case r.Tokens < 0:
		return fmt.Errorf("store: reserve run %q: negative tokens %d: %w", r.RunID, r.Tokens, ErrInvalid)
	}
	at, err := requiredTimeArg(r.At, "at")
	if err != nil {
		return fmt.Errorf("store: reserve run %q: %w", r.RunID, err)
	}
	// One statement, so it is atomic without a transaction: insert unless
	// the run is already settled, and do nothing if it is already reserved.
	res, err := s.exec(`INSERT INTO reservations (run_id, tenant_id, profile, tokens, at)
		SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM usage WHERE run_id = ?)
		ON CONFLICT (run_id) DO NOTHING`,
		r.RunID, r.TenantID, r.Profile, r.Tokens, at, r.RunID)
	if err != nil {
		return fmt.Errorf("store: reserve run %q: %w", r.RunID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: reserve run %q: %w", r.RunID, err)
	}
	if n == 0 {
		return fmt.Errorf("store: reserve run %q: already reserved or settled: %w", r.RunID, ErrExists)
	}
	return nil
}

// dropReservationSQL deletes a run's reservation.
const dropReservationSQL = `DELETE FROM reservations WHERE run_id = ?`

// DropReservation deletes the reservation of a run that was denied or never
// started. It is not an error if there is none.
func (s *Store) DropReservation(runID string) error {
	if _, err := s.exec(dropReservationSQL, runID); err != nil {
		return fmt.Errorf("store: drop reservation %q: %w", runID, err)
	}
	return nil
}

// OpenReservations returns the reservations not yet settled or dropped of
// tenantID ("" = all tenants), ordered by At then run id.
func (s *Store) OpenReservations(tenantID string) ([]Reservation, error) {
	const cols = `SELECT run_id, tenant_id, profile, tokens, at FROM reservations`
	var (
		rows *sql.Rows
		err  error
	)
	if tenantID == "" {
		rows, err = s.query(cols + ` ORDER BY at, run_id`)
	} else {
		rows, err = s.query(cols+` WHERE tenant_id = ? ORDER BY at, run_id`, tenantID)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open reservations: %w", err)
	}
	defer rows.Close()
	var out []Reservation
	for rows.Next() {
		var (
			r  Reservation
			at int64
		)
		if err := rows.Scan(&r.RunID, &r.TenantID, &r.Profile, &r.Tokens, &at); err != nil {
			return nil, fmt.Errorf("store: open reservations: %w", err)
		}
		r.At = time.Unix(0, at).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: open reservations: %w", err)
	}
	return out, nil
}

// Run statuses of Usage.Status.
const (
	StatusCompleted = "completed"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
	StatusAbandoned = "abandoned" // the gateway lost track of the run (e.g. restarted)
)

// StageUsage is the usage of one step of a run (a chain's stage, or a
// step of a parallel strategy): every attempt billed to it, void ones
// included. Rows recorded before steps existed have no Step: their step is
// their Stage (a chain's step id is its stage's name). Both live in the
// stages JSON column, so no migration was needed to add them.
type StageUsage struct {
	// Step is the step's id ("generator", "p1.2", "m3", "chairman").
	Step string `json:"step,omitempty"`
	// Stage is the step's role ("generator", "proposer", "member").
	Stage            string  `json:"stage"`
	Model            string  `json:"model"`
	Provider         string  `json:"provider"`
	PromptTokens     int64   `json:"prompt_tokens"`
	CompletionTokens int64   `json:"completion_tokens"`
	CostUSD          float64 `json:"cost_usd"`
	DurationMS       int64   `json:"duration_ms"`
	// Status is how the step ended: completed, skipped (left out; what its
	// cut-off attempt used is billed), failed, cancelled, or restarted
	// (its last attempt was voided and the run ended before a new one).
	Status string `json:"status,omitempty"`
}

// Usage is the settled record of one run.
type Usage struct {
	RunID            string       `json:"run_id"`
	TenantID         string       `json:"tenant"`
	Profile          string       `json:"profile"`
	Status           string       `json:"status"` // completed | failed | cancelled | abandoned
	AdmittedAt       time.Time    `json:"admitted_at"`
	EndedAt          time.Time    `json:"ended_at"`
	PromptTokens     int64        `json:"prompt_tokens"`
	CompletionTokens int64        `json:"completion_tokens"`
	TotalTokens      int64        `json:"total_tokens"`
	CostUSD          float64      `json:"cost_usd"`
	TTFTMS           int64        `json:"ttft_ms"`
	DurationMS       int64        `json:"duration_ms"`
	Stages           []StageUsage `json:"stages"`
}

// usageArgs validates u and returns its column values in table order.
func usageArgs(u Usage) ([]any, error) {
	switch {
	case u.RunID == "":
		return nil, fmt.Errorf("empty run id: %w", ErrInvalid)
	case u.TenantID == "":
		return nil, fmt.Errorf("empty tenant: %w", ErrInvalid)
	}
	switch u.Status {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusAbandoned:
	default:
		return nil, fmt.Errorf("unknown status %q (want completed, failed, cancelled or abandoned): %w", u.Status, ErrInvalid)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"prompt_tokens", u.PromptTokens},
		{"completion_tokens", u.CompletionTokens},
		{"total_tokens", u.TotalTokens},
		{"ttft_ms", u.TTFTMS},
		{"duration_ms", u.DurationMS},
	} {
		if f.v < 0 {
			return nil, fmt.Errorf("%s %d is negative: %w", f.name, f.v, ErrInvalid)
		}
	}
	if u.CostUSD < 0 {
		return nil, fmt.Errorf("cost_usd %v is negative: %w", u.CostUSD, ErrInvalid)
	}
	cost, err := costArg(u.CostUSD, "cost_usd")
	if err != nil {
		return nil, err
	}
	admitted, err := requiredTimeArg(u.AdmittedAt, "admitted_at")
	if err != nil {
		return nil, err
	}
	ended, err := requiredTimeArg(u.EndedAt, "ended_at")
	if err != nil {
		return nil, err
	}
	for _, st := range u.Stages {
		if math.IsNaN(st.CostUSD) || math.IsInf(st.CostUSD, 0) {
			return nil, fmt.Errorf("stage %q (step %q): cost_usd %v: %w", st.Stage, st.Step, st.CostUSD, ErrInvalid)
		}
	}
	stages, err := jsonArg(u.Stages)
	if err != nil {
		return nil, fmt.Errorf("stages: %w", err)
	}
	return []any{u.RunID, u.TenantID, u.Profile, u.Status, admitted, ended, u.PromptTokens, u.CompletionTokens,
		u.TotalTokens, cost, u.TTFTMS, u.DurationMS, stages}, nil
}

// insertUsageSQL inserts a usage record unless its run is already settled.
const insertUsageSQL = `INSERT INTO usage (` + usageColumns + `)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (run_id) DO NOTHING`

// RecordUsage, in ONE transaction, inserts the usage record and deletes the
// run's reservation. A second call for the same run id inserts nothing and
// returns (false, nil): never a duplicate. The first call returns (true, nil)
// once the record is committed.
func (s *Store) RecordUsage(u Usage) (bool, error) {
	return s.RecordRun(u, nil)
}

// FinishedRun is a finished run kept so it can be read after its gateway
// restarted: how it was started and its whole log (a protobuf
// RunEventBatch, opaque here).
type FinishedRun struct {
	RunID     string
	TenantID  string
	Profile   string
	Query     string
	CreatedAt time.Time
	EndedAt   time.Time
	Log       []byte
}

// DefaultRunsPerTenant is how many finished runs a store keeps per tenant
// unless SetRunsPerTenant says otherwise: one tenant's thousands of runs
// cannot push every other tenant's out of the store (or fill the disk)
// before PruneRuns' age limit does.
const DefaultRunsPerTenant = 10000

// SetRunsPerTenant sets how many finished runs RecordRun keeps per tenant,
// the newest; 0 keeps every one (until PruneRuns).
func (s *Store) SetRunsPerTenant(n int) { s.runsPerTenant.Store(int64(max(n, 0))) }

// trimRunsSQL deletes a tenant's kept runs older than its newest ?3 (the
// one at that offset, by the runs_tenant_ended index, and all older).
const trimRunsSQL = `DELETE FROM runs WHERE tenant_id = ?1 AND ended_at <= (
	SELECT ended_at FROM runs WHERE tenant_id = ?1 ORDER BY ended_at DESC LIMIT 1 OFFSET ?2)`

// maxTrimTenants bounds Store.sinceTrim.
const maxTrimTenants = 10000

// dueTrim reports whether the run RecordRun just kept for tenant should
// trim the tenant's kept runs to keep: every max(1, keep/64) runs. The
// trim walks up to keep index entries (its OFFSET), which at the default
// cap cost each run ~0.5 ms of the gateway's CPU; amortized, a tenant may
// hold up to 1/64 more than its cap between trims.
func (s *Store) dueTrim(tenant string, keep int64) bool {
	every := max(1, keep/64)
	s.trimMu.Lock()
	defer s.trimMu.Unlock()
	if s.sinceTrim == nil || len(s.sinceTrim) >= maxTrimTenants {
		s.sinceTrim = map[string]int64{}
	}
	n := s.sinceTrim[tenant] + 1
	if _, seen := s.sinceTrim[tenant]; !seen || n >= every {
		s.sinceTrim[tenant] = 0
		return true
	}
	s.sinceTrim[tenant] = n
	return false
}

// RecordRun is RecordUsage that also keeps run (when not nil) in the same
// transaction, and deletes the tenant's oldest kept runs beyond its cap
// (SetRunsPerTenant; every cap/64 runs: dueTrim). Calls made at the same
// time share transactions (groupcommit.go); each returns once its own
// record is committed, with the answer it would have got alone. After
// Close it returns an error wrapping ErrClosed.
func (s *Store) RecordRun(u Usage, run *FinishedRun) (bool, error) {
	args, err := usageArgs(u)
	if err != nil {
		return false, fmt.Errorf("store: record usage of run %q: %w", u.RunID, err)
	}
	var runArgs []any
	if run != nil {
		if run.RunID != u.RunID || len(run.Log) == 0 {
			return false, fmt.Errorf("store: record run %q: a log of the same run is required: %w", u.RunID, ErrInvalid)
		}
		created, err := requiredTimeArg(run.CreatedAt, "created_at")
		if err != nil {
			return false, fmt.Errorf("store: record run %q: %w", u.RunID, err)
		}
		ended, err := requiredTimeArg(run.EndedAt, "ended_at")
		if err != nil {
			return false, fmt.Errorf("store: record run %q: %w", u.RunID, err)
		}
		runArgs = []any{run.RunID, run.TenantID, run.Profile, run.Query, created, ended, run.Log}
	}
	req := &recordReq{runID: u.RunID, usage: args, runArgs: runArgs, done: make(chan recordResult, 1)}
	if run != nil {
		req.tenant = run.TenantID
	}
	if err := s.enqueue(req); err != nil {
		return false, fmt.Errorf("store: record usage of run %q: %w", u.RunID, err)
	}
	res := <-req.done
	if res.err != nil {
		return false, fmt.Errorf("store: record usage of run %q: %w", u.RunID, res.err)
	}
	return res.inserted, nil
}

// usageColumns are the columns scanUsage reads, in its order.
const usageColumns = `run_id, tenant_id, profile, status, admitted_at, ended_at,
	prompt_tokens, completion_tokens, total_tokens, cost_nusd, ttft_ms, duration_ms, stages`

// scanUsage reads one row of usageColumns.
func scanUsage(sc rowScanner) (Usage, error) {
	var (
		u               Usage
		admitted, ended int64
		cost            int64
		stages          sql.NullString
	)
	if err := sc.Scan(&u.RunID, &u.TenantID, &u.Profile, &u.Status, &admitted, &ended,
		&u.PromptTokens, &u.CompletionTokens, &u.TotalTokens, &cost, &u.TTFTMS, &u.DurationMS, &stages); err != nil {
		return Usage{}, err
	}
	if err := fromJSON(stages, &u.Stages); err != nil {
		return Usage{}, fmt.Errorf("run %q: stages: %w", u.RunID, err)
	}
	u.AdmittedAt, u.EndedAt = time.Unix(0, admitted).UTC(), time.Unix(0, ended).UTC()
	u.CostUSD = fromCost(cost)
	return u, nil
}

// Usage returns records of tenantID ("" = all) with EndedAt in [from, to),
// ordered by EndedAt then run id, at most limit (0 = DefaultLimit). A zero
// from means no lower bound and a zero to no upper bound.
func (s *Store) Usage(tenantID string, from, to time.Time, limit int) ([]Usage, error) {
	n, err := limitArg(limit)
	if err != nil {
		return nil, fmt.Errorf("store: usage: %w", err)
	}
	lo, hi := boundArg(from, math.MinInt64), boundArg(to, math.MaxInt64)
	var rows *sql.Rows
	if tenantID == "" {
		rows, err = s.query(`SELECT `+usageColumns+` FROM usage
			WHERE ended_at >= ? AND ended_at < ? ORDER BY ended_at, run_id LIMIT ?`, lo, hi, n)
	} else {
		rows, err = s.query(`SELECT `+usageColumns+` FROM usage
			WHERE tenant_id = ? AND ended_at >= ? AND ended_at < ? ORDER BY ended_at, run_id LIMIT ?`, tenantID, lo, hi, n)
	}
	if err != nil {
		return nil, fmt.Errorf("store: usage: %w", err)
	}
	defer rows.Close()
	var out []Usage
	for rows.Next() {
		u, err := scanUsage(rows)
		if err != nil {
			return nil, fmt.Errorf("store: usage: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage: %w", err)
	}
	return out, nil
}

// LedgerEntry is one admitted run as a tenant limiter sees it.
type LedgerEntry struct {
	RunID   string
	Tokens  int64     // TotalTokens if Settled, else the reserved upper bound
	At      time.Time // admission time
	Settled bool      // true for a usage record, false for an open reservation
}

// ledgerRecentSQL selects a tenant's runs admitted at or after a time, in
// (At, run id) order; both halves are read off covering indexes in that order.
const ledgerRecentSQL = `
	SELECT run_id, total_tokens, admitted_at, 1 FROM usage WHERE tenant_id = ? AND admitted_at >= ?
	UNION ALL
	SELECT run_id, tokens, at, 0 FROM reservations WHERE tenant_id = ? AND at >= ?
	ORDER BY 3, 1`

// ledgerSumSQL sums a tenant's settled tokens admitted at or after a time.
const ledgerSumSQL = `SELECT coalesce(sum(total_tokens), 0) FROM usage WHERE tenant_id = ? AND admitted_at >= ?`

// LedgerSince returns what a tenant limiter needs to rebuild: every run of
// the tenant admitted at or after since (settled records with their
// TotalTokens and open reservations with their reserved Tokens), ordered by
// At then run id, and the sum of TotalTokens of settled runs admitted at or
// after periodStart (zero periodStart = all time). Both come from one
// consistent snapshot, so no run is counted as both open and settled. A
// zero since returns every run of the tenant.
func (s *Store) LedgerSince(tenantID string, since, periodStart time.Time) (recent []LedgerEntry, periodTokens int64, err error) {
	if tenantID == "" {
		return nil, 0, fmt.Errorf("store: ledger: empty tenant: %w", ErrInvalid)
	}
	// Prepare before taking a connection for the transaction: preparing
	// needs a connection of the same pool, and readers that all hold one in
	// a transaction while waiting for another would wait for ever (seen:
	// TestConcurrentReserveAndRecord hung on the statements' first use).
	recentStmt, err := s.prep(false, ledgerRecentSQL)
	if err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
	}
	sumStmt, err := s.prep(false, ledgerSumSQL)
	if err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
	}
	ctx := context.Background()
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
	}
	defer tx.Rollback()
	lo := boundArg(since, math.MinInt64)
	rows, err := tx.StmtContext(ctx, recentStmt).QueryContext(ctx, tenantID, lo, tenantID, lo)
	if err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			e  LedgerEntry
			at int64
		)
		if err := rows.Scan(&e.RunID, &e.Tokens, &at, &e.Settled); err != nil {
			return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
		}
		e.At = time.Unix(0, at).UTC()
		recent = append(recent, e)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: %w", tenantID, err)
	}
	rows.Close()
	if err := tx.StmtContext(ctx, sumStmt).QueryRowContext(ctx, tenantID, boundArg(periodStart, math.MinInt64)).Scan(&periodTokens); err != nil {
		return nil, 0, fmt.Errorf("store: ledger of %q: period sum: %w", tenantID, err)
	}
	return recent, periodTokens, nil
}

// Run returns a finished run kept by RecordRun; ErrNotFound if none.
func (s *Store) Run(runID string) (FinishedRun, error) {
	var r FinishedRun
	var created, ended int64
	err := s.queryRow(`SELECT run_id, tenant_id, profile, query, created_at, ended_at, log FROM runs WHERE run_id = ?`, runID).
		Scan(&r.RunID, &r.TenantID, &r.Profile, &r.Query, &created, &ended, &r.Log)
	if errors.Is(err, sql.ErrNoRows) {
		return FinishedRun{}, fmt.Errorf("store: run %q: %w", runID, ErrNotFound)
	}
	if err != nil {
		return FinishedRun{}, fmt.Errorf("store: run %q: %w", runID, err)
	}
	r.CreatedAt, r.EndedAt = time.Unix(0, created).UTC(), time.Unix(0, ended).UTC()
	return r, nil
}

// PruneRuns deletes kept runs that ended before cutoff (their usage
// records stay); it returns how many.
func (s *Store) PruneRuns(cutoff time.Time) (int64, error) {
	res, err := s.exec(`DELETE FROM runs WHERE ended_at < ?`, boundArg(cutoff, 0))
	if err != nil {
		return 0, fmt.Errorf("store: prune runs: %w", err)
	}
	return res.RowsAffected()
}
