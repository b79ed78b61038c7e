package client

import (
	"context"
	"net/url"
	"time"
)

// Reports: usage summed over time and groups, and the audit log filtered —
// what the admin console (/admin) reads.

// SeriesQuery asks for usage summed by time bucket and/or group (GET
// /v1/usage with bucket= and group_by=). Give Bucket, GroupBy or both.
type SeriesQuery struct {
	// Bucket is "hour" or "day" (UTC), or "" for no time buckets.
	Bucket string
	// GroupBy is "tenant", "profile" or "model", or "" for no groups.
	// Without Bucket, the rows are the groups, highest cost first.
	GroupBy string
	// From and To are RFC 3339 times or Unix seconds, passed as given
	// ("": the last 30 days). The range may span at most 1000 buckets.
	From, To string
	// Limit bounds the rows (0: the API's default, 10000).
	Limit int
	// Tenant selects one tenant (admin key only).
	Tenant string
}

// SeriesRow is the usage of one bucket and group.
type SeriesRow struct {
	Start            time.Time `json:"start"` // zero without Bucket
	Group            string    `json:"group"` // "" without GroupBy
	Runs             int64     `json:"runs"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	TotalTokens      int64     `json:"total_tokens"`
	CostUSD          float64   `json:"cost_usd"`
}

// UsageSeries is the answer to a SeriesQuery.
type UsageSeries struct {
	From      time.Time   `json:"from"`
	To        time.Time   `json:"to"`
	Bucket    string      `json:"bucket"`
	GroupBy   string      `json:"group_by"`
	Data      []SeriesRow `json:"data"`
	Truncated bool        `json:"truncated"` // more rows matched than Limit
}

// UsageSeries returns usage summed as q asks.
func (c *Client) UsageSeries(ctx context.Context, q SeriesQuery) (*UsageSeries, error) {
	v := url.Values{}
	for k, s := range map[string]string{"bucket": q.Bucket, "group_by": q.GroupBy, "from": q.From, "to": q.To, "tenant": q.Tenant} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", itoa(q.Limit))
	}
	var out UsageSeries
	if err := c.do(ctx, "GET", "/v1/usage"+query(v), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// AuditQuery filters the audit log; empty fields match everything.
type AuditQuery struct {
	// From and To are RFC 3339 times or Unix seconds ("": the last 30 days).
	From, To string
	// Actor is an admin key id.
	Actor string
	// Action is an action ("key.revoke") or a prefix ending in a dot ("key.").
	Action string
	// Target is a tenant id, or a key id for key.* actions.
	Target string
	// Tenant matches the entries about a tenant (its own and its keys').
	Tenant string
	// Limit bounds the entries (0: the API's default, 10000).
	Limit int
	// NewestFirst returns the newest Limit entries, newest first.
	NewestFirst bool
}

// AdminAuditFind returns the audit entries q selects (admin key).
func (c *Client) AdminAuditFind(ctx context.Context, q AuditQuery) ([]AuditEntry, error) {
	v := url.Values{}
	for k, s := range map[string]string{"from": q.From, "to": q.To, "actor": q.Actor, "action": q.Action, "target": q.Target, "tenant": q.Tenant} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", itoa(q.Limit))
	}
	if q.NewestFirst {
		v.Set("order", "desc")
	}
	var out struct {
		Data []AuditEntry `json:"data"`
	}
	if err := c.do(ctx, "GET", "/v1/admin/audit"+query(v), nil, &out); err != nil {
		return nil, err
	}
	return out.Data, nil
}
