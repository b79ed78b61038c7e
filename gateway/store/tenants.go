package store

import (
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Tenant is a customer of the gateway and its limits. Tenants are replicated
// between gateways with last-writer-wins on UpdatedAt; a deletion is a
// tombstone (Deleted) so that it replicates too.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Limits    Limits    `json:"limits"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"` // last-writer-wins version across gateways (nanosecond precision must round-trip exactly)
	Deleted   bool      `json:"deleted,omitempty"`
}

// Key is an API key's public record. Like tenants, keys replicate with
// last-writer-wins on UpdatedAt, with one exception: a revoked key is a
// tombstone. Revoking sets RevokedAt and bumps UpdatedAt; once a key id is
// revoked, no later row (a restart that registers the key again, an
// environment variable, a tenants file with a newer mtime, a peer's older
// "add" arriving late) makes it valid again. Re-enabling takes a new key.
type Key struct {
	ID        string    `json:"id"`        // public key id (non-secret)
	TenantID  string    `json:"tenant_id"` // "" for an admin key
	Admin     bool      `json:"admin"`
	Hash      []byte    `json:"hash"` // SHA-256 of the whole key; never the key itself
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
}

// PutTenant inserts or replaces a tenant if it is new or t.UpdatedAt is
// AFTER the stored row's (last-writer-wins; equal timestamps: keep the stored
// one). It reports whether the row was applied. t must have an ID, a
// non-zero UpdatedAt and valid Limits.
func (s *Store) PutTenant(t Tenant) (bool, error) {
	args, err := tenantArgs(t)
	if err != nil {
		return false, fmt.Errorf("store: put tenant %q: %w", t.ID, err)
	}
	res, err := s.exec(`INSERT INTO tenants
		(id, name, rpm, tpm, concurrent_runs, token_budget, budget_period, profiles, weight, max_streams, created_at, updated_at, deleted, max_profiles)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			name = excluded.name, rpm = excluded.rpm, tpm = excluded.tpm,
			concurrent_runs = excluded.concurrent_runs, token_budget = excluded.token_budget,
			budget_period = excluded.budget_period, profiles = excluded.profiles,
			weight = excluded.weight, max_streams = excluded.max_streams,
			created_at = excluded.created_at, updated_at = excluded.updated_at,
			deleted = excluded.deleted, max_profiles = excluded.max_profiles
		WHERE excluded.updated_at > tenants.updated_at`, args...)
	if err != nil {
		return false, fmt.Errorf("store: put tenant %q: %w", t.ID, err)
	}
	return applied(res, "put tenant", t.ID)
}

// tenantArgs validates t and returns its column values in table order.
func tenantArgs(t Tenant) ([]any, error) {
	if t.ID == "" {
		return nil, fmt.Errorf("empty id: %w", ErrInvalid)
	}
	if err := t.Limits.Validate(); err != nil {
		return nil, err
	}
	created, err := timeArg(t.CreatedAt, "created_at")
	if err != nil {
		return nil, err
	}
	updated, err := requiredTimeArg(t.UpdatedAt, "updated_at")
	if err != nil {
		return nil, err
	}
	profiles, err := jsonArg(t.Limits.Profiles)
	if err != nil {
		return nil, err
	}
	l := t.Limits
	return []any{t.ID, t.Name, l.RequestsPerMinute, l.TokensPerMinute, l.ConcurrentRuns, l.TokenBudget,
		l.BudgetPeriod, profiles, l.Weight, l.MaxStreams, created, updated, t.Deleted, l.MaxProfiles}, nil
}

// tenantColumns are the columns scanTenant reads, in its order.
const tenantColumns = `id, name, rpm, tpm, concurrent_runs, token_budget, budget_period, profiles, weight, max_streams, created_at, updated_at, deleted, max_profiles`

// scanTenant reads one row of tenantColumns.
func scanTenant(sc rowScanner) (Tenant, error) {
	var (
		t                Tenant
		profiles         sql.NullString
		created, updated sql.NullInt64
		l                = &t.Limits
	)
	if err := sc.Scan(&t.ID, &t.Name, &l.RequestsPerMinute, &l.TokensPerMinute, &l.ConcurrentRuns, &l.TokenBudget,
		&l.BudgetPeriod, &profiles, &l.Weight, &l.MaxStreams, &created, &updated, &t.Deleted, &l.MaxProfiles); err != nil {
		return Tenant{}, err
	}
	if err := fromJSON(profiles, &l.Profiles); err != nil {
		return Tenant{}, fmt.Errorf("tenant %q: profiles: %w", t.ID, err)
	}
	t.CreatedAt, t.UpdatedAt = fromNS(created), fromNS(updated)
	return t, nil
}

// Tenants returns all tenants, including deleted ones, ordered by id.
func (s *Store) Tenants() ([]Tenant, error) {
	rows, err := s.query(`SELECT ` + tenantColumns + ` FROM tenants ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: tenants: %w", err)
	}
	defer rows.Close()
	var out []Tenant
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, fmt.Errorf("store: tenants: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tenants: %w", err)
	}
	return out, nil
}

// Tenant returns the tenant with the given id, deleted or not; the error
// wraps ErrNotFound if there is none.
func (s *Store) Tenant(id string) (Tenant, error) {
	t, err := scanTenant(s.queryRow(`SELECT `+tenantColumns+` FROM tenants WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Tenant{}, fmt.Errorf("store: tenant %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Tenant{}, fmt.Errorf("store: tenant %q: %w", id, err)
	}
	return t, nil
}

// PutKey inserts or replaces a key if it is new or k.UpdatedAt is AFTER the
// stored row's (last-writer-wins; equal timestamps: keep the stored one),
// except that a revocation is final: a revoked row replaces an unrevoked one
// whatever their versions, and nothing replaces a revoked row but a revoked
// one with an earlier RevokedAt (so two gateways that revoke the same key at
// once converge on the first revocation). It reports whether the row was
// applied. k must have an ID, a SHA-256 Hash, a non-zero UpdatedAt, and a
// TenantID exactly when it is not Admin.
func (s *Store) PutKey(k Key) (bool, error) {
	args, err := keyArgs(k)
	if err != nil {
		return false, fmt.Errorf("store: put key %q: %w", k.ID, err)
	}
	res, err := s.exec(`INSERT INTO keys (id, tenant_id, admin, hash, created_at, revoked_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET
			tenant_id = excluded.tenant_id, admin = excluded.admin, hash = excluded.hash,
			created_at = excluded.created_at, revoked_at = excluded.revoked_at,
			updated_at = excluded.updated_at
		WHERE CASE
			WHEN keys.revoked_at IS NULL THEN excluded.revoked_at IS NOT NULL OR excluded.updated_at > keys.updated_at
			ELSE excluded.revoked_at IS NOT NULL AND excluded.revoked_at < keys.revoked_at
		END`, args...)
	if err != nil {
		return false, fmt.Errorf("store: put key %q: %w", k.ID, err)
	}
	return applied(res, "put key", k.ID)
}

// keyArgs validates k and returns its column values in table order.
func keyArgs(k Key) ([]any, error) {
	switch {
	case k.ID == "":
		return nil, fmt.Errorf("empty id: %w", ErrInvalid)
	case k.Admin && k.TenantID != "":
		return nil, fmt.Errorf("admin key has tenant %q (admin keys belong to no tenant): %w", k.TenantID, ErrInvalid)
	case !k.Admin && k.TenantID == "":
		return nil, fmt.Errorf("non-admin key has no tenant: %w", ErrInvalid)
	case len(k.Hash) != sha256.Size:
		return nil, fmt.Errorf("hash is %d bytes, want a %d-byte SHA-256: %w", len(k.Hash), sha256.Size, ErrInvalid)
	}
	created, err := timeArg(k.CreatedAt, "created_at")
	if err != nil {
		return nil, err
	}
	revoked, err := timeArg(k.RevokedAt, "revoked_at")
	if err != nil {
		return nil, err
	}
	updated, err := requiredTimeArg(k.UpdatedAt, "updated_at")
	if err != nil {
		return nil, err
	}
	return []any{k.ID, k.TenantID, k.Admin, k.Hash, created, revoked, updated}, nil
}

// keyColumns are the columns scanKey reads, in its order.
const keyColumns = `id, tenant_id, admin, hash, created_at, revoked_at, updated_at`

// scanKey reads one row of keyColumns.
func scanKey(sc rowScanner) (Key, error) {
	var (
		k                         Key
		created, revoked, updated sql.NullInt64
	)
	if err := sc.Scan(&k.ID, &k.TenantID, &k.Admin, &k.Hash, &created, &revoked, &updated); err != nil {
		return Key{}, err
	}
	k.CreatedAt, k.RevokedAt, k.UpdatedAt = fromNS(created), fromNS(revoked), fromNS(updated)
	return k, nil
}

// Keys returns all keys, including revoked ones, ordered by id.
func (s *Store) Keys() ([]Key, error) {
	rows, err := s.query(`SELECT ` + keyColumns + ` FROM keys ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("store: keys: %w", err)
	}
	defer rows.Close()
	var out []Key
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, fmt.Errorf("store: keys: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: keys: %w", err)
	}
	return out, nil
}

// Key returns the key with the given id, revoked or not; the error wraps
// ErrNotFound if there is none.
func (s *Store) Key(id string) (Key, error) {
	k, err := scanKey(s.queryRow(`SELECT `+keyColumns+` FROM keys WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Key{}, fmt.Errorf("store: key %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Key{}, fmt.Errorf("store: key %q: %w", id, err)
	}
	return k, nil
}

// applied reports whether an upsert changed a row.
func applied(res sql.Result, what, id string) (bool, error) {
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("store: %s %q: %w", what, id, err)
	}
	return n > 0, nil
}

// jsonArg encodes v as JSON text for a column, or NULL if v is a nil slice.
func jsonArg[T any](v []T) (any, error) {
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return string(b), nil
}

// fromJSON decodes a column written by jsonArg into dst; NULL leaves dst nil.
func fromJSON[T any](v sql.NullString, dst *[]T) error {
	if !v.Valid {
		*dst = nil
		return nil
	}
	*dst = []T{}
	return json.Unmarshal([]byte(v.String), dst)
}
