package store

import (
	"errors"
	"fmt"
	"time"
)

// Budget periods of Limits.BudgetPeriod.
const (
	PeriodNever = ""      // the budget never resets
	PeriodDay   = "day"   // resets at 00:00 UTC
	PeriodWeek  = "week"  // resets on Monday 00:00 UTC
	PeriodMonth = "month" // resets on the 1st at 00:00 UTC
)

// MaxTenantProfiles is the largest max_profiles Validate accepts: every
// gateway holds every tenant's profiles in memory.
const MaxTenantProfiles = 1000

// MaxWeight is the largest fair-share weight Validate accepts.
const MaxWeight = 1000

// Limits of a tenant; 0 means no limit. JSON field names as tagged (the HTTP
// admin API uses them verbatim).
type Limits struct {
	RequestsPerMinute int64    `json:"requests_per_minute,omitempty" yaml:"requests_per_minute"`
	TokensPerMinute   int64    `json:"tokens_per_minute,omitempty" yaml:"tokens_per_minute"`
	ConcurrentRuns    int64    `json:"concurrent_runs,omitempty" yaml:"concurrent_runs"`
	TokenBudget       int64    `json:"token_budget,omitempty" yaml:"token_budget"`
	BudgetPeriod      string   `json:"budget_period,omitempty" yaml:"budget_period"` // "day","week","month" (UTC calendar) or "" = never resets
	Profiles          []string `json:"profiles,omitempty" yaml:"profiles"`           // allowed profiles; empty = all
	Weight            int64    `json:"weight,omitempty" yaml:"weight"`               // fair-share weight; 0 = 1
	MaxStreams        int64    `json:"max_streams,omitempty" yaml:"max_streams"`     // concurrent event streams per key
	// MaxProfiles is how many profiles of its own the tenant may keep
	// (PUT /v1/profiles/{name}). Unlike the other limits, 0 (the default)
	// is none: a tenant's own profiles are off until an admin allows them.
	MaxProfiles int64 `json:"max_profiles,omitempty" yaml:"max_profiles"`
}

// Validate reports every problem of l, each wrapping ErrInvalid and naming
// the JSON field: negative values, an unknown budget period, a weight above
// MaxWeight, and empty or duplicate profile names.
func (l Limits) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("store: limits: %s: %s: %w", field, fmt.Sprintf(format, args...), ErrInvalid))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"requests_per_minute", l.RequestsPerMinute},
		{"tokens_per_minute", l.TokensPerMinute},
		{"concurrent_runs", l.ConcurrentRuns},
		{"token_budget", l.TokenBudget},
		{"weight", l.Weight},
		{"max_streams", l.MaxStreams},
		{"max_profiles", l.MaxProfiles},
	} {
		if f.v < 0 {
			bad(f.name, "%d is negative", f.v)
		}
	}
	switch l.BudgetPeriod {
	case PeriodNever, PeriodDay, PeriodWeek, PeriodMonth:
	default:
		bad("budget_period", "unknown period %q (want \"day\", \"week\", \"month\" or empty)", l.BudgetPeriod)
	}
	if l.MaxProfiles > MaxTenantProfiles {
		bad("max_profiles", "%d is above the maximum %d", l.MaxProfiles, MaxTenantProfiles)
	}
	if l.Weight > MaxWeight {
		bad("weight", "%d is above the maximum %d", l.Weight, MaxWeight)
	}
	seen := make(map[string]bool, len(l.Profiles))
	for i, p := range l.Profiles {
		switch {
		case p == "":
			bad("profiles", "entry %d is empty", i)
		case seen[p]:
			bad("profiles", "%q is listed twice", p)
		}
		seen[p] = true
	}
	return errors.Join(errs...)
}

// PeriodStart returns the start (UTC) of the budget period containing t; the
// zero time for "" (and for an unknown period, which Validate rejects). Weeks
// start on Monday 00:00 UTC; months on the 1st.
func (l Limits) PeriodStart(t time.Time) time.Time {
	t = t.UTC()
	y, m, d := t.Date()
	switch l.BudgetPeriod {
	case PeriodDay:
		return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	case PeriodWeek:
		// Days since Monday: Sunday (0) is 6, Monday (1) is 0.
		back := (int(t.Weekday()) + 6) % 7
		return time.Date(y, m, d-back, 0, 0, 0, 0, time.UTC)
	case PeriodMonth:
		return time.Date(y, m, 1, 0, 0, 0, 0, time.UTC)
	}
	return time.Time{}
}
