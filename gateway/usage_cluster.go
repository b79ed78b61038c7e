package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
)

// Several gateways behind one address each bill the runs admitted through
// them in their own ledger. GET /v1/usage through any of them answers for
// the cluster: the gateway asks every other one for its rows (UsageQuery,
// served from that gateway's ledger only) and merges them with its own.
// A gateway that does not answer within usagePeerTimeout is left out and
// the answer says so ("complete": false), as /v1/stats/models does.

// usagePeerTimeout bounds the wait for the other gateways' ledgers.
const usagePeerTimeout = 2 * time.Second

// usageQuery is a checked GET /v1/usage: records, or a series when series.
type usageQuery struct {
	tenant   string
	from, to time.Time
	limit    int
	series   bool
	sq       store.SeriesQuery
	// inFlight asks for the gateway's runs in flight (GET /v1/runs), not
	// its ledger.
	inFlight bool
}

func (q usageQuery) message() *messages.UsageQuery {
	return &messages.UsageQuery{Tenant: q.tenant, FromUnixMs: q.from.UnixMilli(), ToUnixMs: q.to.UnixMilli(), Limit: int32(q.limit),
		BucketSeconds: int64(q.sq.Bucket / time.Second), GroupBy: q.sq.GroupBy, Series: q.series, InFlight: q.inFlight}
}

func usageQueryOf(m *messages.UsageQuery) usageQuery {
	q := usageQuery{tenant: m.Tenant, from: time.UnixMilli(m.FromUnixMs).UTC(), to: time.UnixMilli(m.ToUnixMs).UTC(), limit: int(m.Limit), series: m.Series,
		inFlight: m.InFlight}
	q.sq = store.SeriesQuery{TenantID: q.tenant, From: q.from, To: q.to, GroupBy: m.GroupBy, Limit: q.limit, Bucket: time.Duration(m.BucketSeconds) * time.Second}
	return q
}

// usageReply answers another gateway's UsageQuery from this gateway's
// ledger (never asking further: no loops).
func (s *Server) usageReply(m *messages.UsageQuery) *messages.UsageReply {
	q := usageQueryOf(m)
	var rows any
	var truncated bool
	var err error
	if q.inFlight {
		b, err := json.Marshal(s.runsInFlight(q.tenant, min(max(q.limit, 1), runListMax)))
		if err != nil {
			return &messages.UsageReply{Error: err.Error()}
		}
		return &messages.UsageReply{Rows: b}
	}
	if q.series {
		rows, truncated, err = s.tenancy.Store().UsageSeries(q.sq)
	} else {
		rows, err = s.tenancy.Store().Usage(q.tenant, q.from, q.to, q.limit)
	}
	if err != nil {
		s.logger.Error("ledger: usage for another gateway", "error", err)
		return &messages.UsageReply{Error: "ledger: " + err.Error()}
	}
	b, err := json.Marshal(rows)
	if err != nil {
		return &messages.UsageReply{Error: err.Error()}
	}
	return &messages.UsageReply{Rows: b, Truncated: truncated}
}

// peerUsage asks every other gateway for q's rows, together, and returns
// each answer's rows JSON and truncation; complete is false if one did not
// answer (or answered rows that do not decode: left out as well).
func (s *Server) peerUsage(q usageQuery) (answers []*messages.UsageReply, asked int, complete bool) {
	if s.tenancy == nil {
		return nil, 0, true
	}
	s.tenancy.mu.RLock()
	engine, peerList := s.tenancy.engine, s.tenancy.peers
	s.tenancy.mu.RUnlock()
	if engine == nil || peerList == nil {
		return nil, 0, true // not replicating: a single gateway
	}
	peers := peerList()
	ctx, cancel := context.WithTimeout(context.Background(), usagePeerTimeout)
	defer cancel()
	msg := q.message()
	out := make([]*messages.UsageReply, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		wg.Go(func() {
			r, err := engine.AskUsage(ctx, p, msg)
			if err != nil {
				s.logger.Warn("usage: a gateway's ledger did not answer", "gateway", p, "error", err)
				return
			}
			out[i] = r
		})
	}
	wg.Wait()
	complete = true
	for _, r := range out {
		if r == nil {
			complete = false
			continue
		}
		answers = append(answers, r)
	}
	return answers, len(peers), complete
}

// mergeRecords merges usage records of several ledgers in the ledger's
// order (ended_at, run_id), a run once, at most limit.
func mergeRecords(lists [][]store.Usage, limit int) []store.Usage {
	seen := map[string]bool{}
	var out []store.Usage
	for _, l := range lists {
		for _, u := range l {
			if !seen[u.RunID] {
				seen[u.RunID] = true
				out = append(out, u)
			}
		}
	}
	slices.SortFunc(out, func(a, b store.Usage) int {
		return cmp.Or(a.EndedAt.Compare(b.EndedAt), cmp.Compare(a.RunID, b.RunID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// mergeSeries sums the rows of several ledgers by bucket and group, in
// the store's order (bucket, then cost and tokens descending, then
// group), at most limit; truncated if a ledger's rows were, or the merge
// is cut.
func mergeSeries(lists [][]store.SeriesRow, truncatedAny bool, limit int) ([]store.SeriesRow, bool) {
	type key struct {
		start time.Time
		group string
	}
	idx := map[key]int{}
	var out []store.SeriesRow
	for _, l := range lists {
		for _, r := range l {
			k := key{r.Start.UTC(), r.Group}
			i, ok := idx[k]
			if !ok {
				idx[k] = len(out)
				out = append(out, r)
				continue
			}
			o := &out[i]
			o.Runs += r.Runs
			o.PromptTokens += r.PromptTokens
			o.CompletionTokens += r.CompletionTokens
			o.TotalTokens += r.TotalTokens
			o.CostUSD += r.CostUSD
		}
	}
	slices.SortFunc(out, func(a, b store.SeriesRow) int {
		return cmp.Or(a.Start.Compare(b.Start), -cmp.Compare(a.CostUSD, b.CostUSD), -cmp.Compare(a.TotalTokens, b.TotalTokens), cmp.Compare(a.Group, b.Group))
	})
	if limit > 0 && len(out) > limit {
		out, truncatedAny = out[:limit], true
	}
	return out, truncatedAny
}
