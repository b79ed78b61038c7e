package store

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
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
	return s.AuditFind(AuditQuery{From: from, To: to, Limit: limit})
}

// AuditQuery selects audit entries for AuditFind. Every filter that is set
// must match (exactly); an empty one matches all.
type AuditQuery struct {
	// From and To bound At: [From, To). Zero: no bound.
	From, To time.Time
	// Actor is an admin key id.
	Actor string
	// Action is an action ("tenant.create"), or a prefix of actions ending
	// in a dot ("key." matches key.create and key.revoke).
	Action string
	// Target is the entry's target (a tenant id, or a key id for key.*).
	Target string
	// Tenant matches entries about a tenant: its id as the target, or as the
	// "tenant" field of the detail (a key's entries).
	Tenant string
	// Limit bounds the entries returned (0 = DefaultLimit).
	Limit int
	// NewestFirst orders by At then Seq descending (the newest Limit entries).
	NewestFirst bool
}

// AuditFind returns the entries q selects, ordered by At then Seq (the other
// way with q.NewestFirst).
func (s *Store) AuditFind(q AuditQuery) ([]AuditEntry, error) {
	n, err := limitArg(q.Limit)
	if err != nil {
		return nil, fmt.Errorf("store: audit log: %w", err)
	}
	var where strings.Builder
	where.WriteString("at >= ? AND at < ?")
	args := []any{boundArg(q.From, math.MinInt64), boundArg(q.To, math.MaxInt64)}
	if q.Actor != "" {
		where.WriteString(" AND actor = ?")
		args = append(args, q.Actor)
	}
	switch {
	case strings.HasSuffix(q.Action, "."):
		// substr, not LIKE: an action may hold '%' or '_'.
		where.WriteString(" AND substr(action, 1, ?) = ?")
		args = append(args, len(q.Action), q.Action)
	case q.Action != "":
		where.WriteString(" AND action = ?")
		args = append(args, q.Action)
	}
	if q.Target != "" {
		where.WriteString(" AND target = ?")
		args = append(args, q.Target)
	}
	if q.Tenant != "" {
		where.WriteString(" AND (target = ? OR CASE WHEN json_valid(detail) THEN json_extract(detail, '$.tenant') END = ?)")
		args = append(args, q.Tenant, q.Tenant)
	}
	order := "at, seq"
	if q.NewestFirst {
		order = "at DESC, seq DESC"
	}
	args = append(args, n)
	rows, err := s.query(`SELECT seq, at, actor, action, target, detail FROM audit
		WHERE `+where.String()+` ORDER BY `+order+` LIMIT ?`, args...)
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
