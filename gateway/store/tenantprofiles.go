package store

import (
	"database/sql"
	"fmt"
	"time"
)

// TenantProfile is a tenant's own profile (PUT /v1/profiles/{name}): its
// Definition is one entry of a profile file's "profiles" section, as JSON,
// already checked by the gateway (stagework.Config.ParseProfile). Rows
// replicate between gateways with last-writer-wins on UpdatedAt; a
// deletion is a tombstone (Deleted, no definition).
type TenantProfile struct {
	TenantID   string    `json:"tenant_id"`
	Name       string    `json:"name"`
	Definition string    `json:"definition,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	Deleted    bool      `json:"deleted,omitempty"`
}

// PutTenantProfile inserts or replaces a tenant's profile if it is new or
// p.UpdatedAt is after the stored row's (last-writer-wins; equal
// timestamps keep the stored row). It reports whether the row was
// applied. p needs a TenantID, a Name, a non-zero UpdatedAt, and a
// Definition unless Deleted.
func (s *Store) PutTenantProfile(p TenantProfile) (bool, error) {
	what := p.TenantID + "/" + p.Name
	switch {
	case p.TenantID == "" || p.Name == "":
		return false, fmt.Errorf("store: put tenant profile %q: empty tenant or name: %w", what, ErrInvalid)
	case !p.Deleted && p.Definition == "":
		return false, fmt.Errorf("store: put tenant profile %q: no definition: %w", what, ErrInvalid)
	}
	if p.Deleted {
		p.Definition = ""
	}
	created, err := timeArg(p.CreatedAt, "created_at")
	if err != nil {
		return false, fmt.Errorf("store: put tenant profile %q: %w", what, err)
	}
	updated, err := requiredTimeArg(p.UpdatedAt, "updated_at")
	if err != nil {
		return false, fmt.Errorf("store: put tenant profile %q: %w", what, err)
	}
	res, err := s.exec(`INSERT INTO tenant_profiles (tenant_id, name, definition, created_at, updated_at, deleted)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (tenant_id, name) DO UPDATE SET
			definition = excluded.definition, created_at = excluded.created_at,
			updated_at = excluded.updated_at, deleted = excluded.deleted
		WHERE excluded.updated_at > tenant_profiles.updated_at`,
		p.TenantID, p.Name, p.Definition, created, updated, p.Deleted)
	if err != nil {
		return false, fmt.Errorf("store: put tenant profile %q: %w", what, err)
	}
	return applied(res, "put tenant profile", what)
}

// TenantProfiles returns every row, tombstones included, ordered by tenant
// and name.
func (s *Store) TenantProfiles() ([]TenantProfile, error) {
	rows, err := s.query(`SELECT tenant_id, name, definition, created_at, updated_at, deleted
		FROM tenant_profiles ORDER BY tenant_id, name`)
	if err != nil {
		return nil, fmt.Errorf("store: tenant profiles: %w", err)
	}
	defer rows.Close()
	var out []TenantProfile
	for rows.Next() {
		var p TenantProfile
		var created, updated sql.NullInt64
		if err := rows.Scan(&p.TenantID, &p.Name, &p.Definition, &created, &updated, &p.Deleted); err != nil {
			return nil, fmt.Errorf("store: tenant profiles: %w", err)
		}
		p.CreatedAt, p.UpdatedAt = fromNS(created), fromNS(updated)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: tenant profiles: %w", err)
	}
	return out, nil
}
