package client

import (
	"context"
	"net/url"
	"strconv"
	"time"
)

// Limits are a tenant's limits (docs/api.md); 0 or absent is no limit,
// except ConcurrentRuns (see the API).
type Limits struct {
	RequestsPerMinute int64    `json:"requests_per_minute,omitempty"`
	TokensPerMinute   int64    `json:"tokens_per_minute,omitempty"`
	ConcurrentRuns    *int64   `json:"concurrent_runs,omitempty"`
	TokenBudget       int64    `json:"token_budget,omitempty"`
	BudgetPeriod      string   `json:"budget_period,omitempty"`
	Profiles          []string `json:"profiles,omitempty"`
	Weight            int64    `json:"weight,omitempty"`
	MaxStreams        int64    `json:"max_streams,omitempty"`
	MaxProfiles       int64    `json:"max_profiles,omitempty"` // profiles the tenant may define itself; 0 = none
}

// KeyInfo is a key's public record.
type KeyInfo struct {
	ID        string    `json:"id"`
	CreatedAt time.Time `json:"created_at"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// Tenant is a tenant as the admin API shows it.
type Tenant struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Limits    Limits    `json:"limits"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Keys      []KeyInfo `json:"keys"`
}

// NewTenant is the body of POST /v1/admin/tenants.
type NewTenant struct {
	Name   string  `json:"name"`
	ID     string  `json:"id,omitempty"`
	Limits *Limits `json:"limits,omitempty"`
}

// IssuedKey is a key just made: Key is shown only once.
type IssuedKey struct {
	TenantID string `json:"id,omitempty"`
	Name     string `json:"name,omitempty"`
	Key      string `json:"key"`
	KeyID    string `json:"key_id"`
}

// AuditEntry is one entry of the admin audit log.
type AuditEntry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target"`
	Detail string    `json:"detail"`
}

// AdminTenants lists the tenants (admin key).
func (c *Client) AdminTenants(ctx context.Context) ([]Tenant, error) {
	var out struct {
		Data []Tenant `json:"data"`
	}
	if err := c.do(ctx, "GET", "/v1/admin/tenants", nil, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

// AdminTenant returns one tenant (admin key).
func (c *Client) AdminTenant(ctx context.Context, id string) (*Tenant, error) {
	var t Tenant
	if err := c.do(ctx, "GET", "/v1/admin/tenants/"+url.PathEscape(id), nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// AdminCreateTenant creates a tenant and its first key (admin key).
func (c *Client) AdminCreateTenant(ctx context.Context, t NewTenant) (*IssuedKey, error) {
	var k IssuedKey
	if err := c.do(ctx, "POST", "/v1/admin/tenants", t, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// TenantPatch is the body of PATCH /v1/admin/tenants/{id}; Limits
// replaces the whole set.
type TenantPatch struct {
	Name   *string `json:"name,omitempty"`
	Limits *Limits `json:"limits,omitempty"`
}

// AdminUpdateTenant changes a tenant's name or limits (admin key).
func (c *Client) AdminUpdateTenant(ctx context.Context, id string, p TenantPatch) (*Tenant, error) {
	var t Tenant
	if err := c.do(ctx, "PATCH", "/v1/admin/tenants/"+url.PathEscape(id), p, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// AdminCreateKey issues a new key for a tenant (admin key).
func (c *Client) AdminCreateKey(ctx context.Context, tenantID string) (*IssuedKey, error) {
	var k IssuedKey
	if err := c.do(ctx, "POST", "/v1/admin/tenants/"+url.PathEscape(tenantID)+"/keys", nil, &k); err != nil {
		return nil, err
	}
	return &k, nil
}

// AdminRevokeKey revokes a key for good (admin key) and returns when.
func (c *Client) AdminRevokeKey(ctx context.Context, keyID string) (time.Time, error) {
	var out struct {
		ID        string    `json:"id"`
		RevokedAt time.Time `json:"revoked_at"`
	}
	if err := c.do(ctx, "DELETE", "/v1/admin/keys/"+url.PathEscape(keyID), nil, &out); err != nil {
		return time.Time{}, err
	}
	return out.RevokedAt, nil
}

// AdminAudit returns the audit log between from and to (RFC 3339 or Unix
// seconds, as given; empty: the API's default).
func (c *Client) AdminAudit(ctx context.Context, from, to string) ([]AuditEntry, error) {
	v := url.Values{}
	if from != "" {
		v.Set("from", from)
	}
	if to != "" {
		v.Set("to", to)
	}
	var out struct {
		Data []AuditEntry `json:"data"`
	}
	if err := c.do(ctx, "GET", "/v1/admin/audit"+query(v), nil, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}

func itoa(n int) string { return strconv.Itoa(n) }
