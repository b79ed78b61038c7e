package store

import (
	"database/sql"
	"fmt"
	"time"
)

// ProviderKey is a tenant's own API key for one provider endpoint (bring
// your own key), sealed: Box is AES-GCM under the cluster-derived key KeyID
// names (internal/sealed), bound to TenantID and Endpoint. The clear key is
// never stored. Rows replicate between gateways with last-writer-wins on
// UpdatedAt; a deletion is a tombstone (Deleted, no box).
type ProviderKey struct {
	TenantID  string    `json:"tenant_id"`
	Endpoint  string    `json:"endpoint"`
	KeyID     string    `json:"key_id"`
	Box       []byte    `json:"box"`
	Hint      string    `json:"hint,omitempty"` // "…" and the key's last 4 characters, or ""
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Deleted   bool      `json:"deleted,omitempty"`
}

// PutProviderKey inserts or replaces a tenant's key for an endpoint if it is
// new or k.UpdatedAt is after the stored row's (last-writer-wins; equal
// timestamps keep the stored row). It reports whether the row was applied.
// k needs a TenantID, an Endpoint, a non-zero UpdatedAt, and a KeyID and
// Box unless Deleted.
func (s *Store) PutProviderKey(k ProviderKey) (bool, error) {
	what := k.TenantID + "/" + k.Endpoint
	switch {
	case k.TenantID == "" || k.Endpoint == "":
		return false, fmt.Errorf("store: put provider key %q: empty tenant or endpoint: %w", what, ErrInvalid)
	case !k.Deleted && (k.KeyID == "" || len(k.Box) == 0):
		return false, fmt.Errorf("store: put provider key %q: no sealed box: %w", what, ErrInvalid)
	}
	if k.Deleted {
		k.KeyID, k.Box, k.Hint = "", nil, ""
	}
	created, err := timeArg(k.CreatedAt, "created_at")
	if err != nil {
		return false, fmt.Errorf("store: put provider key %q: %w", what, err)
	}
	updated, err := requiredTimeArg(k.UpdatedAt, "updated_at")
	if err != nil {
		return false, fmt.Errorf("store: put provider key %q: %w", what, err)
	}
	box := k.Box
	if box == nil {
		box = []byte{}
	}
	res, err := s.exec(`INSERT INTO provider_keys (tenant_id, endpoint, key_id, box, hint, created_at, updated_at, deleted)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, endpoint) DO UPDATE SET
			key_id = excluded.key_id, box = excluded.box, hint = excluded.hint,
			created_at = excluded.created_at, updated_at = excluded.updated_at, deleted = excluded.deleted
		WHERE excluded.updated_at > provider_keys.updated_at`,
		k.TenantID, k.Endpoint, k.KeyID, box, k.Hint, created, updated, k.Deleted)
	if err != nil {
		return false, fmt.Errorf("store: put provider key %q: %w", what, err)
	}
	return applied(res, "put provider key", what)
}

// ProviderKeys returns every row, tombstones included, ordered by tenant
// and endpoint.
func (s *Store) ProviderKeys() ([]ProviderKey, error) {
	rows, err := s.query(`SELECT tenant_id, endpoint, key_id, box, hint, created_at, updated_at, deleted
		FROM provider_keys ORDER BY tenant_id, endpoint`)
	if err != nil {
		return nil, fmt.Errorf("store: provider keys: %w", err)
	}
	defer rows.Close()
	var out []ProviderKey
	for rows.Next() {
		var k ProviderKey
		var created, updated sql.NullInt64
		if err := rows.Scan(&k.TenantID, &k.Endpoint, &k.KeyID, &k.Box, &k.Hint, &created, &updated, &k.Deleted); err != nil {
			return nil, fmt.Errorf("store: provider keys: %w", err)
		}
		k.CreatedAt, k.UpdatedAt = fromNS(created), fromNS(updated)
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: provider keys: %w", err)
	}
	return out, nil
}
