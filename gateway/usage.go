package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// maxRunWait bounds how long the ledger waits for one run to end.
const maxRunWait = 24 * time.Hour

// account waits for an admitted run to end, writes its usage record to the
// ledger (exactly once: the record is keyed by run id, and its reservation
// is removed in the same transaction), and settles the tenant's limiter at
// the run's real token count.
func (s *Server) account(hub *actors.Hub, a *admission) {
	s.accounting.Add(1)
	go func() {
		defer s.accounting.Done()
		ctx, cancel := context.WithTimeout(s.ctx, maxRunWait) // cancelled by Stop too
		err := hub.WaitDone(ctx)
		cancel()
		if err != nil && !hub.Done() && isClosed(s.stop) {
			// The gateway stops while the run goes on (on a node): its
			// reservation stays open in the ledger, and the next start
			// follows the run again and bills it.
			return
		}
		evs := hub.Events(1)
		u := usageFromLog(evs, s.engine.Stages(), a)
		if hub.CachedFrom() != "" {
			billCached(&u, s.cfg.CachedBilling)
		}
		var run *store.FinishedRun
		if err != nil {
			u.Status = "abandoned"
		} else if log, merr := proto.Marshal(&messages.RunEventBatch{Events: evs}); merr == nil {
			run = &store.FinishedRun{RunID: hub.RunID, TenantID: hub.Tenant, Profile: hub.Profile, Query: hub.Query,
				CreatedAt: hub.Created, EndedAt: u.EndedAt, Log: log}
		}
		stored := s.settle(u, a, run)
		s.batches.runEnded(hub) // a batch item's run: its outcome, and its slot is free (batch.go)
		// Billed and stored: the log in memory can go now, not half a
		// second later — read back from the store when asked for
		// (actors.Engine.LogStored), or, if the store does not have it,
		// shrunk to its encoding (actors.Hub.Pack).
		if !stored || !s.engine.LogStored(hub) {
			hub.Pack()
		}
	}()
}

// settle records u (and the finished run, if any) and tells the limiter.
// It reports whether run (not nil) is now in the store.
func (s *Server) settle(u store.Usage, a *admission, run *store.FinishedRun) (stored bool) {
	s.metrics.observeRun(u)
	if s.tenancy == nil {
		return false
	}
	if _, err := s.tenancy.Store().RecordRun(u, run); err != nil {
		// The reservation stays in the ledger: the budget stays reserved
		// (never overrun), and the next start retries the record.
		s.logger.Error("ledger: record usage", "run_id", u.RunID, "tenant", u.TenantID, "error", err)
		return false
	}
	// RecordRun keeps the run's log (or found it kept already: a run is
	// stored once, by the gateway that settled it first).
	stored = run != nil
	if s.engine.ShuttingDown() {
		return stored // the ledger has it; a limiter reads it when it rebuilds
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.engine.Limiter().Settle(ctx, a.tenant, a.runID, u.TotalTokens); err != nil {
		s.logger.Warn("tenant limiter: settle (its next rebuild reads the ledger)", "run_id", a.runID, "error", err)
	}
	return stored
}

// usageFromLog bills a run from its log: every step's usage — finished
// steps', and what void attempts (restarted, left out, cancelled, failed)
// used — each at its model's price, one row per step (runFold).
func usageFromLog(evs []*messages.RunEvent, prices *stagework.Config, a *admission) store.Usage {
	u := store.Usage{RunID: a.runID, TenantID: a.tenant, Profile: a.profile, AdmittedAt: a.at, Status: "abandoned", EndedAt: time.Now().UTC()}
	p := a.prof
	if p == nil {
		p, _ = prices.Profile(a.profile)
	}
	f := newRunFold(p, prices, false)
	f.fold(evs)
	if f.status != "running" {
		u.Status, u.EndedAt = f.status, f.endedAt
	}
	if !f.firstAt.IsZero() {
		u.TTFTMS = max(1, f.firstAt.Sub(a.at).Milliseconds())
	}
	u.Stages = f.rows()
	for _, s := range u.Stages {
		u.PromptTokens += s.PromptTokens
		u.CompletionTokens += s.CompletionTokens
		u.CostUSD += s.CostUSD
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	u.EndedAt = u.EndedAt.UTC()
	if d := u.EndedAt.Sub(a.at); d > 0 {
		u.DurationMS = d.Milliseconds()
	}
	return u
}

// billCached bills a run served from the response cache ratio (0 to 1) of
// what the run it replays used, each step's row marked "cached".
func billCached(u *store.Usage, ratio float64) {
	ratio = min(max(ratio, 0), 1)
	u.PromptTokens, u.CompletionTokens, u.CostUSD = 0, 0, 0
	for i := range u.Stages {
		st := &u.Stages[i]
		st.PromptTokens = int64(math.Round(float64(st.PromptTokens) * ratio))
		st.CompletionTokens = int64(math.Round(float64(st.CompletionTokens) * ratio))
		st.CostUSD *= ratio
		st.Status = "cached"
		u.PromptTokens += st.PromptTokens
		u.CompletionTokens += st.CompletionTokens
		u.CostUSD += st.CostUSD
	}
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
}

// recoverOpen accounts the runs a previous life of this gateway admitted
// but did not record (it was killed): a run still going on a node is
// followed again (its coordinator replays the whole log) and billed when it
// ends; one that cannot be found is recorded "abandoned", with no tokens
// (what it used died with its log), and its reservation released.
func (s *Server) recoverOpen() {
	if s.tenancy == nil {
		return
	}
	if s.cfg.Ready != nil {
		// In a cluster, the nodes that may still run these must be known
		// before they are looked for.
		deadline := time.Now().Add(30 * time.Second)
		for s.cfg.Ready() != nil && time.Now().Before(deadline) {
			select {
			case <-s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	open, err := s.tenancy.Store().OpenReservations("")
	if err != nil {
		s.logger.Error("ledger: open reservations", "error", err)
		return
	}
	for _, r := range open {
		if !r.At.Before(s.started) {
			continue // admitted by this life (recoverOpen runs beside new requests): its own accounting bills it
		}
		a := &admission{tenant: r.TenantID, runID: r.RunID, profile: r.Profile, reserved: r.Tokens, at: r.At.UTC()}
		if hub, err := s.engine.Attach(r.RunID); err == nil {
			s.logger.Info("ledger: following a run admitted before this gateway restarted", "run_id", r.RunID, "tenant", r.TenantID)
			s.account(hub, a)
			continue
		}
		s.logger.Warn("ledger: a run admitted before this gateway restarted is gone; recorded as abandoned", "run_id", r.RunID, "tenant", r.TenantID)
		u := store.Usage{RunID: r.RunID, TenantID: r.TenantID, Profile: r.Profile, Status: "abandoned", AdmittedAt: a.at, EndedAt: time.Now().UTC()}
		s.settle(u, a, nil)
	}
}

// restore reads a finished run this gateway kept (it may have restarted
// since): nil if it has none.
func (s *Server) restore(runID string) *actors.Hub {
	if s.tenancy == nil {
		return nil
	}
	r, err := s.tenancy.Store().Run(runID)
	if err != nil {
		return nil
	}
	var batch messages.RunEventBatch
	if err := proto.Unmarshal(r.Log, &batch); err != nil {
		s.logger.Error("ledger: a kept run's log does not decode", "run_id", runID, "error", err)
		return nil
	}
	// Read from the store: while it stays in memory, it keeps no log there
	// (once its first reader is served).
	hub, err := s.engine.RestoreStored(r.RunID, r.TenantID, r.Profile, r.Query, r.CreatedAt, batch.Events)
	if err != nil {
		s.logger.Error("ledger: restore a kept run", "run_id", runID, "error", err)
		return nil
	}
	return hub
}

// loadLog reads a finished run's log from the store, for a run whose hub
// dropped it from memory (actors.Engine.LogStored).
func (s *Server) loadLog(runID string) ([]*messages.RunEvent, error) {
	r, err := s.tenancy.Store().Run(runID)
	if err != nil {
		return nil, err
	}
	var batch messages.RunEventBatch
	if err := proto.Unmarshal(r.Log, &batch); err != nil {
		return nil, fmt.Errorf("ledger: the kept log of run %s does not decode: %w", runID, err)
	}
	return batch.Events, nil
}

// keepRuns prunes kept runs older than Config.KeepRuns, now and hourly.
func (s *Server) keepRuns() {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := s.tenancy.Store().PruneRuns(time.Now().Add(-s.cfg.KeepRuns)); err != nil {
			s.logger.Error("ledger: prune kept runs", "error", err)
		} else if n > 0 {
			s.logger.Info("ledger: pruned kept runs", "runs", n)
		}
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

// getUsage serves GET /v1/usage?from=&to=[&tenant=]: a tenant sees its own
// records; an admin key sees every tenant's (or one, with tenant=).
func (s *Server) getUsage(w http.ResponseWriter, r *http.Request) {
	if s.tenancy == nil {
		writeError(w, errNotFound("unknown_endpoint", "usage is recorded only with tenancy on"))
		return
	}
	p := principalOf(r)
	q := r.URL.Query()
	from, e := timeParam(q.Get("from"), "from", time.Now().UTC().AddDate(0, 0, -30))
	if e != nil {
		writeError(w, e)
		return
	}
	to, e := timeParam(q.Get("to"), "to", time.Now().UTC().Add(time.Minute))
	if e != nil {
		writeError(w, e)
		return
	}
	if !to.After(from) {
		writeError(w, errInvalidParam("to", "invalid_range", "to must be after from"))
		return
	}
	limit := 10000
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, errInvalidParam("limit", "invalid_limit", "limit must be between 1 and 10000"))
			return
		}
		limit = n
	}
	// scope=gateway: this gateway's ledger alone (the runs admitted
	// through it); the default, cluster, sums every gateway's.
	local := false
	switch sc := q.Get("scope"); sc {
	case "", "cluster":
	case "gateway":
		local = true
	default:
		writeError(w, errInvalidParam("scope", "invalid_scope", fmt.Sprintf("scope %q: must be cluster (every gateway's ledger, the default) or gateway (this one's)", sc)))
		return
	}
	tenant := p.tenantID()
	if p.admin {
		tenant = q.Get("tenant") // "" = all
	} else if q.Has("tenant") && q.Get("tenant") != tenant {
		writeError(w, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "admin_key_required",
			Message: "a tenant key sees only its own usage"})
		return
	}
	if q.Has("bucket") || q.Has("group_by") {
		s.usageSeries(w, q, tenant, from, to, limit, local)
		return
	}
	recs, err := s.tenancy.Store().Usage(tenant, from, to, limit)
	if err != nil {
		s.logger.Error("ledger: usage", "error", err)
		writeError(w, errServer(http.StatusInternalServerError, "internal_error", "could not read the ledger"))
		return
	}
	// The other gateways' ledgers (usage_cluster.go).
	var answers []*messages.UsageReply
	asked, complete := 0, true
	if !local {
		answers, asked, complete = s.peerUsage(usageQuery{tenant: tenant, from: from, to: to, limit: limit})
	}
	if asked > 0 {
		lists := [][]store.Usage{recs}
		for _, a := range answers {
			var l []store.Usage
			if json.Unmarshal(a.Rows, &l) != nil {
				complete = false
				continue
			}
			lists = append(lists, l)
		}
		recs = mergeRecords(lists, limit)
	}
	if recs == nil {
		recs = []store.Usage{}
	}
	var sum struct {
		Runs             int     `json:"runs"`
		PromptTokens     int64   `json:"prompt_tokens"`
		CompletionTokens int64   `json:"completion_tokens"`
		TotalTokens      int64   `json:"total_tokens"`
		CostUSD          float64 `json:"cost_usd"`
	}
	for i, u := range recs {
		for j := range u.Stages {
			if u.Stages[j].Step == "" {
				recs[i].Stages[j].Step = u.Stages[j].Stage // a row from before steps: a chain's stage
			}
		}
		sum.Runs++
		sum.PromptTokens += u.PromptTokens
		sum.CompletionTokens += u.CompletionTokens
		sum.TotalTokens += u.TotalTokens
		sum.CostUSD += u.CostUSD
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "from": from, "to": to, "data": recs, "totals": sum,
		"gateways": 1 + len(answers), "complete": complete})
}

// usageSeries serves GET /v1/usage with bucket= and/or group_by=: usage
// summed in the store by UTC hour or day and by tenant, profile or model.
// Without bucket, the rows are the groups, highest cost first (top tenants
// by cost: group_by=tenant&limit=10).
func (s *Server) usageSeries(w http.ResponseWriter, q url.Values, tenant string, from, to time.Time, limit int, local bool) {
	sq := store.SeriesQuery{TenantID: tenant, From: from, To: to, GroupBy: q.Get("group_by"), Limit: limit}
	switch b := q.Get("bucket"); b {
	case "hour":
		sq.Bucket = store.BucketHour
	case "day":
		sq.Bucket = store.BucketDay
	case "":
		if q.Has("bucket") {
			writeError(w, errInvalidParam("bucket", "invalid_bucket", "bucket must be hour or day"))
			return
		}
	default:
		writeError(w, errInvalidParam("bucket", "invalid_bucket", fmt.Sprintf("bucket %q: must be hour or day", b)))
		return
	}
	switch sq.GroupBy {
	case store.GroupTenant, store.GroupProfile, store.GroupModel:
	case "":
		if q.Has("group_by") {
			writeError(w, errInvalidParam("group_by", "invalid_group_by", "group_by must be tenant, profile or model"))
			return
		}
	default:
		writeError(w, errInvalidParam("group_by", "invalid_group_by", fmt.Sprintf("group_by %q: must be tenant, profile or model", sq.GroupBy)))
		return
	}
	if n := store.Buckets(from, to, sq.Bucket); sq.Bucket > 0 && n > store.MaxBuckets {
		writeError(w, errInvalidParam("from", "too_many_buckets", fmt.Sprintf(
			"from..to spans %d %s buckets, at most %d: narrow the range or use bigger buckets", n, q.Get("bucket"), store.MaxBuckets)))
		return
	}
	rows, truncated, err := s.tenancy.Store().UsageSeries(sq)
	if err != nil {
		s.logger.Error("ledger: usage series", "error", err)
		writeError(w, errServer(http.StatusInternalServerError, "internal_error", "could not read the ledger"))
		return
	}
	// The other gateways' ledgers (usage_cluster.go).
	var answers []*messages.UsageReply
	asked, complete := 0, true
	if !local {
		answers, asked, complete = s.peerUsage(usageQuery{tenant: tenant, from: from, to: to, limit: limit, series: true, sq: sq})
	}
	if asked > 0 {
		lists := [][]store.SeriesRow{rows}
		for _, a := range answers {
			var l []store.SeriesRow
			if json.Unmarshal(a.Rows, &l) != nil {
				complete = false
				continue
			}
			truncated = truncated || a.Truncated
			lists = append(lists, l)
		}
		rows, truncated = mergeSeries(lists, truncated, limit)
	}
	if rows == nil {
		rows = []store.SeriesRow{}
	}
	out := map[string]any{"object": "usage.series", "from": from, "to": to, "bucket": nil, "group_by": nil,
		"data": rows, "truncated": truncated, "gateways": 1 + len(answers), "complete": complete}
	if sq.Bucket > 0 {
		out["bucket"] = q.Get("bucket")
	}
	if sq.GroupBy != "" {
		out["group_by"] = sq.GroupBy
	}
	writeJSON(w, http.StatusOK, out)
}

// timeParam reads an RFC 3339 time or Unix seconds; def if empty.
func timeParam(v, name string, def time.Time) (time.Time, *apiError) {
	if v == "" {
		return def, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC(), nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 && n < 1<<40 {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Time{}, errInvalidParam(name, "invalid_time", name+" must be an RFC 3339 time (2026-11-26T00:00:00Z) or Unix seconds")
}

var errUnknownProfile = stagework.ErrUnknownProfile

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
