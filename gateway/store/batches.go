package store

import (
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrLimit reports that a write would pass a bound the caller set (a
// tenant's open batches).
var ErrLimit = errors.New("store: limit reached")

// Statuses of a batch item. An item moves queued → starting → running →
// completed | failed | cancelled; starting → queued when its run was
// refused for now (a limit with a Retry-After); running → queued when its
// run was cut off by a shutdown; queued → cancelled with its batch;
// starting → failed when its run was refused for good.
const (
	ItemQueued    = "queued"
	ItemStarting  = "starting" // claimed by the dispatcher; its run is being admitted
	ItemRunning   = "running"
	ItemCompleted = "completed"
	ItemFailed    = "failed"
	ItemCancelled = "cancelled"
)

// Batch is a batch of runs a tenant submitted at once.
type Batch struct {
	ID          string
	TenantID    string
	Total       int       // items
	CreatedAt   time.Time // required
	CancelledAt time.Time // zero: not cancelled
	EndedAt     time.Time // zero: items still queued or running
}

// BatchItem is one query of a batch and what became of it.
type BatchItem struct {
	BatchID   string
	Index     int
	CustomID  string
	Query     string // not read by BatchItems (the API does not repeat it)
	Profile   string
	Seed      int64
	MaxTokens int
	// Budget is the item's cost/quality constraints as the API's JSON
	// ("" for none); like Query, only NextQueuedItem reads it.
	Budget string

	Status       string // Item*
	RunID        string // "" before its run started
	Answer       string // when completed
	ErrorCode    string // when failed or cancelled
	ErrorMessage string
	Attempts     int // runs started for it
	StartedAt    time.Time
	EndedAt      time.Time
}

// CreateBatch writes b and its items in one transaction, each with Status
// ItemQueued, or ItemFailed (refused at once, e.g. over its budget: with its
// ErrorCode, ErrorMessage and EndedAt) if given so, unless the tenant already has maxOpen batches not ended
// (maxOpen > 0): then the error wraps ErrLimit and nothing is written.
func (s *Store) CreateBatch(b Batch, items []BatchItem, maxOpen int) error {
	switch {
	case b.ID == "" || b.TenantID == "":
		return fmt.Errorf("store: create batch: empty id or tenant: %w", ErrInvalid)
	case b.Total != len(items) || len(items) == 0:
		return fmt.Errorf("store: create batch %q: total %d for %d items: %w", b.ID, b.Total, len(items), ErrInvalid)
	}
	created, err := requiredTimeArg(b.CreatedAt, "created_at")
	if err != nil {
		return fmt.Errorf("store: create batch %q: %w", b.ID, err)
	}
	err = s.withTx(func(tx *sql.Tx) error {
		if maxOpen > 0 {
			var open int
			if err := tx.QueryRow(`SELECT count(*) FROM batches WHERE tenant_id = ? AND ended_at IS NULL`, b.TenantID).Scan(&open); err != nil {
				return err
			}
			if open >= maxOpen {
				return fmt.Errorf("tenant %q has %d open batches: %w", b.TenantID, open, ErrLimit)
			}
		}
		if _, err := tx.Exec(`INSERT INTO batches (id, tenant_id, total, created_at) VALUES (?, ?, ?, ?)`,
			b.ID, b.TenantID, b.Total, created); err != nil {
			return err
		}
		st, err := tx.Prepare(`INSERT INTO batch_items (batch_id, idx, custom_id, query, profile, seed, max_tokens, budget,
			status, run_id, answer, error_code, error_message, attempts, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '', '', ?, ?, 0, ?)`)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, it := range items {
			status, code, msg, ended := ItemQueued, "", "", sql.NullInt64{}
			if it.Status == ItemFailed {
				status, code, msg = ItemFailed, it.ErrorCode, it.ErrorMessage
				ended = sql.NullInt64{Int64: it.EndedAt.UnixNano(), Valid: !it.EndedAt.IsZero()}
			}
			if _, err := st.Exec(b.ID, it.Index, it.CustomID, it.Query, it.Profile, it.Seed, it.MaxTokens, it.Budget,
				status, code, msg, ended); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store: create batch %q: %w", b.ID, err)
	}
	return nil
}

const batchColumns = `id, tenant_id, total, created_at, cancelled_at, ended_at`

func scanBatch(sc rowScanner) (Batch, error) {
	var b Batch
	var created int64
	var cancelled, ended sql.NullInt64
	if err := sc.Scan(&b.ID, &b.TenantID, &b.Total, &created, &cancelled, &ended); err != nil {
		return Batch{}, err
	}
	b.CreatedAt, b.CancelledAt, b.EndedAt = time.Unix(0, created).UTC(), fromNS(cancelled), fromNS(ended)
	return b, nil
}

// Batch returns a batch; the error wraps ErrNotFound if there is none.
func (s *Store) Batch(id string) (Batch, error) {
	b, err := scanBatch(s.queryRow(`SELECT `+batchColumns+` FROM batches WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Batch{}, fmt.Errorf("store: batch %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Batch{}, fmt.Errorf("store: batch %q: %w", id, err)
	}
	return b, nil
}

func (s *Store) batches(what, query string, args ...any) ([]Batch, error) {
	rows, err := s.query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []Batch
	for rows.Next() {
		b, err := scanBatch(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", what, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", what, err)
	}
	return out, nil
}

// OpenBatches returns every batch not ended, oldest first.
func (s *Store) OpenBatches() ([]Batch, error) {
	return s.batches("open batches", `SELECT `+batchColumns+` FROM batches WHERE ended_at IS NULL ORDER BY created_at, id`)
}

// TenantBatches returns a tenant's batches, newest first, at most limit
// (0: DefaultLimit).
func (s *Store) TenantBatches(tenantID string, limit int) ([]Batch, error) {
	n, err := limitArg(limit)
	if err != nil {
		return nil, fmt.Errorf("store: batches of %q: %w", tenantID, err)
	}
	return s.batches("batches of "+tenantID, `SELECT `+batchColumns+` FROM batches WHERE tenant_id = ?
		ORDER BY created_at DESC, id DESC LIMIT ?`, tenantID, n)
}

// BatchCounts returns how many of a batch's items are in each status.
func (s *Store) BatchCounts(id string) (map[string]int, error) {
	rows, err := s.query(`SELECT status, count(*) FROM batch_items WHERE batch_id = ? GROUP BY status`, id)
	if err != nil {
		return nil, fmt.Errorf("store: counts of batch %q: %w", id, err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, fmt.Errorf("store: counts of batch %q: %w", id, err)
		}
		out[st] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: counts of batch %q: %w", id, err)
	}
	return out, nil
}

// itemColumns are what scanItem reads (without the query).
const itemColumns = `batch_id, idx, custom_id, profile, seed, max_tokens, status, run_id, answer,
	error_code, error_message, attempts, started_at, ended_at`

func scanItem(sc rowScanner, extra ...any) (BatchItem, error) {
	var it BatchItem
	var started, ended sql.NullInt64
	dst := append([]any{&it.BatchID, &it.Index, &it.CustomID, &it.Profile, &it.Seed, &it.MaxTokens, &it.Status, &it.RunID,
		&it.Answer, &it.ErrorCode, &it.ErrorMessage, &it.Attempts, &started, &ended}, extra...)
	if err := sc.Scan(dst...); err != nil {
		return BatchItem{}, err
	}
	it.StartedAt, it.EndedAt = fromNS(started), fromNS(ended)
	return it, nil
}

// BatchItems returns a page of a batch's items in index order: those
// after index after (-1: from the first), at most limit, and no more than
// fit in maxBytes of answers and errors (0: no bound) — at least one, so a
// long answer is never cut off. more reports whether items follow. The
// items' Query is left empty.
func (s *Store) BatchItems(id string, after, limit, maxBytes int) (items []BatchItem, more bool, err error) {
	if limit <= 0 {
		return nil, false, fmt.Errorf("store: items of batch %q: limit %d: %w", id, limit, ErrInvalid)
	}
	rows, err := s.query(`SELECT `+itemColumns+` FROM batch_items WHERE batch_id = ? AND idx > ? ORDER BY idx LIMIT ?`, id, after, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("store: items of batch %q: %w", id, err)
	}
	defer rows.Close()
	size := 0
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, false, fmt.Errorf("store: items of batch %q: %w", id, err)
		}
		size += len(it.Answer) + len(it.ErrorMessage) + len(it.CustomID)
		if len(items) == limit || (maxBytes > 0 && size > maxBytes && len(items) > 0) {
			return items, true, nil
		}
		items = append(items, it)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("store: items of batch %q: %w", id, err)
	}
	return items, false, nil
}

// BatchItemIndex returns the index of the item with customID; the error
// wraps ErrNotFound if none has it.
func (s *Store) BatchItemIndex(id, customID string) (int, error) {
	var idx int
	err := s.queryRow(`SELECT idx FROM batch_items WHERE batch_id = ? AND custom_id = ?`, id, customID).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("store: batch %q has no item %q: %w", id, customID, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("store: item %q of batch %q: %w", customID, id, err)
	}
	return idx, nil
}

// NextQueuedItem returns the queued item of a batch with the lowest index,
// its query included; the error wraps ErrNotFound if none is queued.
func (s *Store) NextQueuedItem(id string) (BatchItem, error) {
	var q, budget string
	it, err := scanItem(s.queryRow(`SELECT `+itemColumns+`, query, budget FROM batch_items
		WHERE batch_id = ? AND status = ? ORDER BY idx LIMIT 1`, id, ItemQueued), &q, &budget)
	if errors.Is(err, sql.ErrNoRows) {
		return BatchItem{}, fmt.Errorf("store: batch %q has no queued item: %w", id, ErrNotFound)
	}
	if err != nil {
		return BatchItem{}, fmt.Errorf("store: next item of batch %q: %w", id, err)
	}
	it.Query, it.Budget = q, budget
	return it, nil
}

// ActiveItems returns a batch's items that are starting or running, in
// index order (without answers: they have none yet).
func (s *Store) ActiveItems(id string) ([]BatchItem, error) {
	rows, err := s.query(`SELECT `+itemColumns+` FROM batch_items WHERE batch_id = ? AND status IN (?, ?) ORDER BY idx`,
		id, ItemStarting, ItemRunning)
	if err != nil {
		return nil, fmt.Errorf("store: active items of batch %q: %w", id, err)
	}
	defer rows.Close()
	var out []BatchItem
	for rows.Next() {
		it, err := scanItem(rows)
		if err != nil {
			return nil, fmt.Errorf("store: active items of batch %q: %w", id, err)
		}
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: active items of batch %q: %w", id, err)
	}
	return out, nil
}

// MoveBatchItem sets item (it.BatchID, it.Index) to it's Status, RunID,
// Answer, ErrorCode, ErrorMessage and EndedAt (zero: NULL), StartedAt (zero:
// unchanged) and adds addAttempts to its attempts — only if its status is
// from. It reports whether the item was moved: the status is the item's
// lock, so that the dispatcher and a cancel never both move it.
func (s *Store) MoveBatchItem(it BatchItem, from string, addAttempts int) (bool, error) {
	started, err := timeArg(it.StartedAt, "started_at")
	if err != nil {
		return false, fmt.Errorf("store: move item %d of batch %q: %w", it.Index, it.BatchID, err)
	}
	ended, err := timeArg(it.EndedAt, "ended_at")
	if err != nil {
		return false, fmt.Errorf("store: move item %d of batch %q: %w", it.Index, it.BatchID, err)
	}
	res, err := s.exec(`UPDATE batch_items SET status = ?, run_id = ?, answer = ?, error_code = ?, error_message = ?,
		started_at = coalesce(?, started_at), ended_at = ?, attempts = attempts + ?
		WHERE batch_id = ? AND idx = ? AND status = ?`,
		it.Status, it.RunID, it.Answer, it.ErrorCode, it.ErrorMessage, started, ended, addAttempts, it.BatchID, it.Index, from)
	if err != nil {
		return false, fmt.Errorf("store: move item %d of batch %q: %w", it.Index, it.BatchID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: move item %d of batch %q: %w", it.Index, it.BatchID, err)
	}
	return n > 0, nil
}

// CancelBatch marks a batch cancelled at at (if it is not already) and
// cancels its queued items, with code and message; it returns how many
// items it cancelled. Starting and running items are the caller's to stop.
func (s *Store) CancelBatch(id string, at time.Time, code, message string) (int64, error) {
	t, err := requiredTimeArg(at, "at")
	if err != nil {
		return 0, fmt.Errorf("store: cancel batch %q: %w", id, err)
	}
	var n int64
	err = s.withTx(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE batches SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL`, t, id); err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE batch_items SET status = ?, error_code = ?, error_message = ?, ended_at = ?
			WHERE batch_id = ? AND status = ?`, ItemCancelled, code, message, t, id, ItemQueued)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: cancel batch %q: %w", id, err)
	}
	return n, nil
}

// EndBatch records that a batch's last item ended at at (once: a batch
// already ended keeps its time).
func (s *Store) EndBatch(id string, at time.Time) error {
	t, err := requiredTimeArg(at, "at")
	if err != nil {
		return fmt.Errorf("store: end batch %q: %w", id, err)
	}
	if _, err := s.exec(`UPDATE batches SET ended_at = ? WHERE id = ? AND ended_at IS NULL`, t, id); err != nil {
		return fmt.Errorf("store: end batch %q: %w", id, err)
	}
	return nil
}

// PruneBatches deletes the batches (and their items) that ended before
// cutoff; it returns how many batches.
func (s *Store) PruneBatches(cutoff time.Time) (int64, error) {
	c := boundArg(cutoff, 0)
	var n int64
	err := s.withTx(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM batch_items WHERE batch_id IN (SELECT id FROM batches WHERE ended_at < ?)`, c); err != nil {
			return err
		}
		res, err := tx.Exec(`DELETE FROM batches WHERE ended_at < ?`, c)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: prune batches: %w", err)
	}
	return n, nil
}
