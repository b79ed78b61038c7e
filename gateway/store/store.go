package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// Sentinel errors; every error the store returns for these cases wraps one.
var (
	// ErrNotFound reports that no row has the requested id.
	ErrNotFound = errors.New("store: not found")
	// ErrExists reports that a run id is already reserved or settled.
	ErrExists = errors.New("store: already exists")
	// ErrInvalid reports an argument the store refuses to write.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrClosed reports a RecordRun asked of a store that Close has
	// begun to close.
	ErrClosed = errors.New("store: closed")
)

// DefaultLimit is the row limit of Usage and AuditLog when the caller passes 0.
const DefaultLimit = 10000

// busyTimeoutMS bounds how long a connection waits for a lock held by another
// connection (another process on the same file, or a WAL checkpoint) before
// failing with SQLITE_BUSY. Writers of this process never wait on each other
// here: they share one connection.
const busyTimeoutMS = 5000

// Store is the gateway's embedded database. It is safe for concurrent use by
// many goroutines; every method may block on disk I/O, and a write waits for
// the writes queued before it.
type Store struct {
	// w is the single write connection. Every write, and every transaction
	// that writes, goes through it; database/sql queues callers for it
	// (RecordRun's records reach it through the record writer, one
	// caller of many).
	// Never call a method that uses w while holding a transaction of w: with
	// one connection that deadlocks.
	w *sql.DB
	// r is the pool of read-only connections used by queries.
	r *sql.DB

	// stmts caches prepared statements by stmtKey. The SQL texts are
	// constants of this package, so the cache is bounded.
	stmts sync.Map

	// runsPerTenant caps the finished runs kept per tenant (RecordRun
	// deletes a tenant's oldest beyond it); 0: no cap. Default
	// DefaultRunsPerTenant; SetRunsPerTenant changes it.
	runsPerTenant atomic.Int64
	// sinceTrim counts, per tenant, the runs RecordRun kept since it last
	// trimmed that tenant's (ledger.go, dueTrim); at most maxTrimTenants
	// entries (then it starts over: every tenant is trimmed at its next run).
	trimMu    sync.Mutex
	sinceTrim map[string]int64

	// records queues RecordRun's records for the writer goroutine
	// (groupcommit.go), which closes recorderDone when it has returned.
	records      chan *recordReq
	recorderDone chan struct{}
	// recordMu guards recordsClosed: a sender holds it for reading across
	// its send, and Close for writing while it closes records. It is never
	// held together with trimMu (the writer takes trimMu, never recordMu).
	recordMu      sync.RWMutex
	recordsClosed bool
	// groups counts the transactions the writer began for a group of
	// records, and redoneGroups those it rolled back and redid record by
	// record (tests and benchmarks read them).
	groups, redoneGroups atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// Open opens (creating if needed, with parent dirs, file mode 0600) the
// database at path and migrates its schema (a schema_version table;
// migrations are idempotent).
func Open(path string) (*Store, error) {
	if path == "" {
		return nil, fmt.Errorf("store: open: empty path: %w", ErrInvalid)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("store: open %s: create parent directory: %w", path, err)
	}
	// Create the file ourselves so it gets 0600; SQLite then creates the
	// -wal and -shm files with the same mode as the database file.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	w, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// The first connection switches the file to WAL (persistent) before any
	// reader opens it, and migrations run before anyone can query.
	if err := migrate(context.Background(), w); err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.Ping(); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("store: open %s: read pool: %w", path, err)
	}
	s := &Store{w: w, r: r}
	s.runsPerTenant.Store(DefaultRunsPerTenant)
	s.startRecorder()
	for _, q := range txStatements {
		if _, err := s.prep(true, q); err != nil {
			s.Close()
			return nil, fmt.Errorf("store: open %s: prepare: %w", path, err)
		}
	}
	return s, nil
}

// dsn builds the modernc.org/sqlite data source name for the file at abs.
// Writers begin their transactions with BEGIN IMMEDIATE so that a
// transaction that reads before it writes cannot fail to upgrade its lock;
// readers are query_only so a bug cannot write through the read pool.
func dsn(abs string, readOnly bool) string {
	// The name is a URI: escape the characters that would end the path.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(abs)
	q := []string{
		fmt.Sprintf("_pragma=busy_timeout(%d)", busyTimeoutMS),
		"_pragma=synchronous(NORMAL)",
		"_pragma=foreign_keys(0)",
	}
	if readOnly {
		q = append(q, "_pragma=query_only(1)")
	} else {
		// journal_mode is persistent in the file; the writer sets it once.
		q = append(q, "_pragma=journal_mode(WAL)", "_txlock=immediate")
	}
	return "file:" + esc + "?" + strings.Join(q, "&")
}

// Close closes the database, after committing the records RecordRun
// callers queued before it (each caller gets its answer); later RecordRun
// calls return ErrClosed. It is idempotent; calls after the first return
// the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// First the records queued: the writer commits them while the
		// database is still open, so every caller gets its answer.
		s.closeRecorder()
		var errs []error
		s.stmts.Range(func(_, v any) bool {
			errs = append(errs, v.(*sql.Stmt).Close())
			return true
		})
		s.closeErr = errors.Join(append(errs, s.r.Close(), s.w.Close())...)
		if s.closeErr != nil {
			s.closeErr = fmt.Errorf("store: close: %w", s.closeErr)
		}
	})
	return s.closeErr
}

// IntegrityCheck runs SQLite's PRAGMA integrity_check and returns an error
// describing every problem it reports, or nil for a sound database.
func (s *Store) IntegrityCheck() error {
	rows, err := s.r.Query("PRAGMA integrity_check")
	if err != nil {
		return fmt.Errorf("store: integrity check: %w", err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return fmt.Errorf("store: integrity check: %w", err)
		}
		if line != "ok" {
			problems = append(problems, line)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store: integrity check: %w", err)
	}
	if len(problems) > 0 {
		return fmt.Errorf("store: integrity check: %s", strings.Join(problems, "; "))
	}
	return nil
}

// stmtKey names a cached prepared statement: its SQL on one of the pools.
type stmtKey struct {
	write bool
	query string
}

// prep returns the prepared statement for query on the write connection
// (write) or the read pool, preparing it on first use. Preparing once saves
// SQLite's parse and plan on every call; database/sql re-prepares it on each
// connection of the pool as needed.
func (s *Store) prep(write bool, query string) (*sql.Stmt, error) {
	k := stmtKey{write, query}
	if st, ok := s.stmts.Load(k); ok {
		return st.(*sql.Stmt), nil
	}
	db := s.r
	if write {
		db = s.w
	}
	st, err := db.Prepare(query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(k, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// exec runs a write statement on the write connection.
func (s *Store) exec(query string, args ...any) (sql.Result, error) {
	st, err := s.prep(true, query)
	if err != nil {
		return nil, err
	}
	return st.Exec(args...)
}

// txStatements are the statements run inside write transactions. Open
// prepares them, so that txExec finds them cached.
var txStatements = []string{insertRunSQL, trimRunsSQL, insertUsageSQL, dropReservationSQL}

// txExec runs a write statement within tx, a transaction of the write
// connection.
func (s *Store) txExec(tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	// Preparing on s.w would wait for the one write connection, which tx
	// holds: a deadlock. So only use a statement Open prepared
	// (txStatements); any other runs unprepared on tx's own connection.
	if st, ok := s.stmts.Load(stmtKey{true, query}); ok {
		return tx.Stmt(st.(*sql.Stmt)).Exec(args...)
	}
	return tx.Exec(query, args...)
}

// query runs a query on the read pool.
func (s *Store) query(query string, args ...any) (*sql.Rows, error) {
	st, err := s.prep(false, query)
	if err != nil {
		return nil, err
	}
	return st.Query(args...)
}

// queryRow runs a query expected to return at most one row on the read
// pool; a prepare error is returned by the row's Scan.
func (s *Store) queryRow(query string, args ...any) rowScanner {
	st, err := s.prep(false, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRow(args...)
}

// rowScanner is a *sql.Row or a *sql.Rows positioned on a row.
type rowScanner interface{ Scan(dest ...any) error }

// errRow is a row whose Scan fails with err.
type errRow struct{ err error }

// Scan returns the error the row was made with.
func (r errRow) Scan(...any) error { return r.err }

// withTx runs fn in a write transaction (BEGIN IMMEDIATE) and commits it if
// fn returns nil; otherwise it rolls back and returns fn's error.
func (s *Store) withTx(fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(context.Background(), nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Bounds of a time stored as int64 Unix nanoseconds.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// timeArg converts t to its column value: NULL for the zero time, Unix
// nanoseconds otherwise. what names the field in the error.
func timeArg(t time.Time, what string) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	if t.Before(minTime) || t.After(maxTime) {
		return nil, fmt.Errorf("%s %s is outside the storable range %d..%d: %w",
			what, t.Format(time.RFC3339Nano), minTime.Year(), maxTime.Year(), ErrInvalid)
	}
	return t.UnixNano(), nil
}

// requiredTimeArg is timeArg for a field that must be set.
func requiredTimeArg(t time.Time, what string) (int64, error) {
	if t.IsZero() {
		return 0, fmt.Errorf("%s is not set: %w", what, ErrInvalid)
	}
	v, err := timeArg(t, what)
	if err != nil {
		return 0, err
	}
	return v.(int64), nil
}

// boundArg converts a query bound to Unix nanoseconds, clamping to the
// storable range; the zero time becomes ifZero.
func boundArg(t time.Time, ifZero int64) int64 {
	switch {
	case t.IsZero():
		return ifZero
	case t.Before(minTime):
		return math.MinInt64
	case t.After(maxTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// fromNS converts a column value back to a UTC time; NULL is the zero time.
func fromNS(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.Unix(0, v.Int64).UTC()
}

// nanoPerUSD is the unit costs are stored in: nano-dollars.
const nanoPerUSD = 1e9

// costArg converts a cost in USD to integer nano-dollars.
func costArg(usd float64, what string) (int64, error) {
	n := math.Round(usd * nanoPerUSD)
	// float64(MaxInt64) rounds up to 2^63, so compare with >=.
	if math.IsNaN(n) || n >= math.MaxInt64 || n < math.MinInt64 {
		return 0, fmt.Errorf("%s %v USD cannot be stored: %w", what, usd, ErrInvalid)
	}
	return int64(n), nil
}

// fromCost converts integer nano-dollars back to USD.
func fromCost(n int64) float64 { return float64(n) / nanoPerUSD }

// limitArg applies the default to a caller's row limit.
func limitArg(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, fmt.Errorf("negative limit %d: %w", limit, ErrInvalid)
	case limit == 0:
		return DefaultLimit, nil
	}
	return limit, nil
}
