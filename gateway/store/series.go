package store

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Bucket widths of UsageSeries: UTC hours and UTC days.
const (
	BucketHour = time.Hour
	BucketDay  = 24 * time.Hour
)

// MaxBuckets bounds how many buckets one UsageSeries range may span.
const MaxBuckets = 1000

// Groupings of UsageSeries: by tenant, by profile, or by the model of
// each step (one run counts toward every model it used).
const (
	GroupTenant  = "tenant"
	GroupProfile = "profile"
	GroupModel   = "model"
)

// SeriesQuery asks UsageSeries for usage summed by time bucket and/or group.
type SeriesQuery struct {
	// TenantID restricts the sums to one tenant; "" sums every tenant's.
	TenantID string
	// From and To bound the runs' EndedAt: [From, To). A zero From means no
	// lower bound and a zero To no upper bound (a bucketed query needs both).
	From, To time.Time
	// Bucket is 0 (no time buckets), BucketHour or BucketDay. Buckets start
	// at whole UTC hours or days; the first and last may be cut by From and To.
	Bucket time.Duration
	// GroupBy is "" (no groups), GroupTenant, GroupProfile or GroupModel.
	GroupBy string
	// Limit bounds the rows returned (0 = DefaultLimit).
	Limit int
}

// SeriesRow is the usage of one bucket and group. By model, Runs counts
// the runs that used the model, and the tokens and cost are its steps' only.
type SeriesRow struct {
	Start            time.Time `json:"start,omitzero"` // the bucket's start; zero without buckets
	Group            string    `json:"group"`          // the tenant, profile or model; "" without groups
	Runs             int64     `json:"runs"`
	PromptTokens     int64     `json:"prompt_tokens"`
	CompletionTokens int64     `json:"completion_tokens"`
	TotalTokens      int64     `json:"total_tokens"`
	CostUSD          float64   `json:"cost_usd"`
}

// validate checks q and returns its row limit.
func (q SeriesQuery) validate() (int, error) {
	n, err := limitArg(q.Limit)
	if err != nil {
		return 0, err
	}
	switch q.GroupBy {
	case "", GroupTenant, GroupProfile, GroupModel:
	default:
		return 0, fmt.Errorf("unknown grouping %q (want tenant, profile or model): %w", q.GroupBy, ErrInvalid)
	}
	switch q.Bucket {
	case 0:
		return n, nil
	case BucketHour, BucketDay:
	default:
		return 0, fmt.Errorf("bucket %v is neither an hour nor a day: %w", q.Bucket, ErrInvalid)
	}
	if q.From.IsZero() || q.To.IsZero() || !q.To.After(q.From) {
		return 0, fmt.Errorf("a bucketed series needs from < to: %w", ErrInvalid)
	}
	if b := Buckets(q.From, q.To, q.Bucket); b > MaxBuckets {
		return 0, fmt.Errorf("%d buckets of %v from %s to %s, at most %d: %w",
			b, q.Bucket, q.From.Format(time.RFC3339), q.To.Format(time.RFC3339), MaxBuckets, ErrInvalid)
	}
	return n, nil
}

// Buckets counts the UTC-aligned buckets of width that [from, to) touches.
func Buckets(from, to time.Time, width time.Duration) int64 {
	if !to.After(from) || width <= 0 {
		return 0
	}
	w := int64(width)
	first := floorDiv(from.UnixNano(), w)
	last := floorDiv(to.UnixNano()-1, w)
	return last - first + 1
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// UsageSeries sums settled usage by time bucket and/or group, in SQL. Rows
// come ordered by bucket start, then cost (highest first), total tokens
// (highest first) and group: without buckets, the first rows are the top
// groups by cost. Only buckets and groups with runs have a row. It also
// reports whether more rows than q.Limit matched (the rest are left out).
func (s *Store) UsageSeries(q SeriesQuery) (rows []SeriesRow, truncated bool, err error) {
	n, err := q.validate()
	if err != nil {
		return nil, false, fmt.Errorf("store: usage series: %w", err)
	}
	width := int64(q.Bucket)
	bucketExpr := "0"
	if width > 0 {
		// ended_at is never negative (a run ends after 1970), so integer
		// division floors.
		bucketExpr = fmt.Sprintf("(u.ended_at / %d) * %d", width, width)
	}
	var (
		from  = "usage AS u"
		group = "''"
		runs  = "count(*)"
		sums  = "sum(u.prompt_tokens), sum(u.completion_tokens), sum(u.total_tokens), sum(u.cost_nusd)"
	)
	switch q.GroupBy {
	case GroupTenant:
		group = "u.tenant_id"
	case GroupProfile:
		group = "u.profile"
	case GroupModel:
		// One row per step of a run (the stages JSON column): its model,
		// tokens and cost. Cost is kept in nano-dollars like cost_nusd.
		from = "usage AS u, json_each(u.stages) AS st"
		group = "coalesce(json_extract(st.value, '$.model'), '')"
		runs = "count(DISTINCT u.run_id)"
		sums = `sum(coalesce(json_extract(st.value, '$.prompt_tokens'), 0)),
			sum(coalesce(json_extract(st.value, '$.completion_tokens'), 0)),
			sum(coalesce(json_extract(st.value, '$.prompt_tokens'), 0) + coalesce(json_extract(st.value, '$.completion_tokens'), 0)),
			sum(CAST(round(coalesce(json_extract(st.value, '$.cost_usd'), 0) * 1e9) AS INTEGER))`
	}
	var where strings.Builder
	where.WriteString("u.ended_at >= ? AND u.ended_at < ?")
	args := []any{boundArg(q.From, math.MinInt64), boundArg(q.To, math.MaxInt64)}
	if q.TenantID != "" {
		where.WriteString(" AND u.tenant_id = ?")
		args = append(args, q.TenantID)
	}
	// cost sorts by its integer sum (column 7), so equal costs tie exactly.
	query := fmt.Sprintf(`SELECT %s AS b, %s AS g, %s, %s FROM %s WHERE %s
		GROUP BY b, g ORDER BY b, 7 DESC, 6 DESC, g LIMIT ?`, bucketExpr, group, runs, sums, from, where.String())
	args = append(args, n+1)
	res, err := s.query(query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("store: usage series: %w", err)
	}
	defer res.Close()
	for res.Next() {
		var (
			r     SeriesRow
			start int64
			cost  int64
		)
		if err := res.Scan(&start, &r.Group, &r.Runs, &r.PromptTokens, &r.CompletionTokens, &r.TotalTokens, &cost); err != nil {
			return nil, false, fmt.Errorf("store: usage series: %w", err)
		}
		if width > 0 {
			r.Start = time.Unix(0, start).UTC()
		}
		r.CostUSD = fromCost(cost)
		rows = append(rows, r)
	}
	if err := res.Err(); err != nil {
		return nil, false, fmt.Errorf("store: usage series: %w", err)
	}
	if len(rows) > n {
		return rows[:n], true, nil
	}
	return rows, false, nil
}
