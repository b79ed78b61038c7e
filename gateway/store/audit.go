package store

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// AuditEntry is one admin action in the audit log.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`  // admin key id; a tenant key's id for a tenant's own change (provider keys)
	Action string    `json:"action"` // e.g. "tenant.create"
	Target string    `json:"target"`
	Detail string    `json:"detail"` // JSON text, never a key
}

// Audit appends e to the audit log; the store assigns Seq (increasing, never
// reused), ignoring e.Seq. e needs a non-zero At, an Action, and a Detail
// that is empty or valid JSON.
func (s *Store) Audit(e AuditEntry) error {
	at, err := requiredTimeArg(e.At, "at")
	if err != nil {
		return fmt.Errorf("store: audit %q: %w", e.Action, err)
	}
	if e.Action == "" {
		return fmt.Errorf("store: audit: empty action: %w", ErrInvalid)
	}
	if e.Detail != "" && !json.Valid([]byte(e.Detail)) {
		return fmt.Errorf("store: audit %q: detail is not valid JSON: %w", e.Action, ErrInvalid)
	}
	if _, err := s.exec(`INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)`,
		at, e.Actor, e.Action, e.Target, e.Detail); err != nil {
		return fmt.Errorf("store: audit %q: %w", e.Action, err)
	}
	return nil
}

// AuditLog returns the entries with At in [from, to), ordered by At then
// Seq, at most limit of them (0 = DefaultLimit). A zero from means no lower
// bound and a zero to no upper bound.
func (s *Store) AuditLog(from, to time.Time, limit int) ([]AuditEntry, error) {
	n, err := limitArg(limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit log: %w", err)
	}
	rows, err := s.query(`SELECT seq, at, actor, action, target, detail FROM audit
		WHERE at >= ? AND at < ? ORDER BY at, seq LIMIT ?`,
		boundArg(from, math.MinInt64), boundArg(to, math.MaxInt64), n)
	if err != nil {
		return nil, fmt.Errorf("store: audit log: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var (
			e  AuditEntry
			at int64
		)
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("store: audit log: %w", err)
		}
		e.At = time.Unix(0, at).UTC()
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: audit log: %w", err)
	}
	return out, nil
}
