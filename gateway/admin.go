package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
)

// Admin API (admin key): tenants, keys, the audit log. Every change is
// audited (which admin key, what, when) in the store; keys never appear in
// the audit or in logs.

type tenantView struct {
	store.Tenant
	Keys []keyView `json:"keys"`
}

type keyView struct {
	ID        string     `json:"id"`
	CreatedAt time.Time  `json:"created_at"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

func (s *Server) tenantView(tn store.Tenant) tenantView {
	v := tenantView{Tenant: tn, Keys: []keyView{}}
	for _, k := range s.tenancy.keysOf(tn.ID) {
		kv := keyView{ID: k.ID, CreatedAt: k.CreatedAt}
		if !k.RevokedAt.IsZero() {
			r := k.RevokedAt
			kv.RevokedAt = &r
		}
		v.Keys = append(v.Keys, kv)
	}
	return v
}

func (s *Server) audit(r *http.Request, action, target string, detail any) {
	b, _ := json.Marshal(detail)
	e := store.AuditEntry{At: time.Now().UTC(), Actor: principalOf(r).keyID, Action: action, Target: target, Detail: string(b)}
	if err := s.tenancy.Store().Audit(e); err != nil {
		s.logger.Error("audit log write failed", "action", action, "target", target, "error", err)
	}
	s.logger.Info("admin change", "actor", e.Actor, "action", action, "target", target)
}

type createTenantRequest struct {
	ID     string        `json:"id"`
	Name   string        `json:"name"`
	Limits limitsRequest `json:"limits"`
}

// limitsRequest is store.Limits as the admin API reads it: concurrent_runs
// absent (nil) takes the gateway's default for new tenants
// (Tenancy.DefaultConcurrentRuns); 0 given is "no limit".
type limitsRequest struct {
	store.Limits
	ConcurrentRuns *int64 `json:"concurrent_runs"` // shadows Limits.ConcurrentRuns when decoding
}

// limits resolves the request's limits with t's default.
func (l limitsRequest) limits(t *Tenancy) store.Limits {
	out := l.Limits
	out.ConcurrentRuns = t.DefaultConcurrentRuns()
	if l.ConcurrentRuns != nil {
		out.ConcurrentRuns = *l.ConcurrentRuns
	}
	return out
}

func (s *Server) adminCreateTenant(w http.ResponseWriter, r *http.Request) {
	var req createTenantRequest
	if e := s.decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	switch {
	case req.Name == "" || len(req.Name) > 200:
		writeError(w, errInvalidParam("name", "invalid_name", "name is required (at most 200 bytes)"))
		return
	case req.ID != "" && !validID(req.ID):
		writeError(w, errInvalidParam("id", "invalid_id", "id must be 1-64 letters, digits, '-' or '_'"))
		return
	}
	limits := req.Limits.limits(s.tenancy)
	if e := s.checkProfiles(limits); e != nil {
		writeError(w, e)
		return
	}
	tn, key, k, err := s.tenancy.CreateTenant(req.ID, req.Name, limits)
	if e := adminError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "tenant.create", tn.ID, map[string]any{"name": tn.Name, "limits": tn.Limits, "key_id": k.ID})
	w.Header().Set("Location", "/v1/admin/tenants/"+tn.ID)
	writeJSON(w, http.StatusCreated, map[string]any{"id": tn.ID, "name": tn.Name, "limits": tn.Limits, "key": key, "key_id": k.ID,
		"note": "the key is shown only now: store it safely"})
}

func (s *Server) adminListTenants(w http.ResponseWriter, _ *http.Request) {
	ts, _ := s.tenancy.snapshot()
	out := []tenantView{}
	for _, tn := range ts {
		if !tn.Deleted {
			out = append(out, s.tenantView(tn))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}

func (s *Server) adminGetTenant(w http.ResponseWriter, r *http.Request) {
	tn, ok := s.tenancy.Tenant(r.PathValue("id"))
	if !ok {
		writeError(w, errNotFound("tenant_not_found", fmt.Sprintf("no tenant %q", r.PathValue("id"))))
		return
	}
	writeJSON(w, http.StatusOK, s.tenantView(tn))
}

// patchTenantRequest: a field present replaces the stored one; limits are
// replaced whole (send every limit the tenant should keep).
type patchTenantRequest struct {
	Name   *string        `json:"name"`
	Limits *limitsRequest `json:"limits"`
}

func (s *Server) adminPatchTenant(w http.ResponseWriter, r *http.Request) {
	var req patchTenantRequest
	if e := s.decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if req.Name == nil && req.Limits == nil {
		writeError(w, errInvalid("empty_patch", "send name and/or limits"))
		return
	}
	if req.Name != nil && (*req.Name == "" || len(*req.Name) > 200) {
		writeError(w, errInvalidParam("name", "invalid_name", "name must be 1-200 bytes"))
		return
	}
	var limits *store.Limits
	if req.Limits != nil {
		l := req.Limits.limits(s.tenancy)
		if e := s.checkProfiles(l); e != nil {
			writeError(w, e)
			return
		}
		limits = &l
	}
	tn, err := s.tenancy.UpdateTenant(r.PathValue("id"), req.Name, limits)
	if e := adminError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "tenant.update", tn.ID, patchTenantAudit{Name: req.Name, Limits: limits})
	writeJSON(w, http.StatusOK, s.tenantView(tn))
}

// patchTenantAudit is what the audit log keeps of a PATCH: the limits as
// applied (with the default concurrent_runs filled in).
type patchTenantAudit struct {
	Name   *string       `json:"name,omitempty"`
	Limits *store.Limits `json:"limits,omitempty"`
}

func (s *Server) adminCreateKey(w http.ResponseWriter, r *http.Request) {
	key, k, err := s.tenancy.CreateKey(r.PathValue("id"))
	if e := adminError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "key.create", k.ID, map[string]string{"tenant": k.TenantID})
	writeJSON(w, http.StatusCreated, map[string]any{"key": key, "key_id": k.ID, "tenant": k.TenantID, "created_at": k.CreatedAt,
		"note": "the key is shown only now: store it safely"})
}

func (s *Server) adminRevokeKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("key_id")
	if id == principalOf(r).keyID {
		writeError(w, errInvalid("cannot_revoke_self", "an admin key cannot revoke itself"))
		return
	}
	k, err := s.tenancy.RevokeKey(id)
	if e := adminError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "key.revoke", k.ID, map[string]string{"tenant": k.TenantID})
	writeJSON(w, http.StatusOK, map[string]any{"id": k.ID, "tenant": k.TenantID, "revoked_at": k.RevokedAt})
}

// adminAudit serves GET /v1/admin/audit?from=&to=&actor=&action=&target=&tenant=&limit=&order=.
func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request) {
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
	aq := store.AuditQuery{From: from, To: to, Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"),
		Tenant: q.Get("tenant"), Limit: 10000}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, errInvalidParam("limit", "invalid_limit", "limit must be between 1 and 10000"))
			return
		}
		aq.Limit = n
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		aq.NewestFirst = true
	default:
		writeError(w, errInvalidParam("order", "invalid_order", "order must be asc (oldest first, the default) or desc"))
		return
	}
	for _, f := range []struct{ name, v string }{{"actor", aq.Actor}, {"action", aq.Action}, {"target", aq.Target}, {"tenant", aq.Tenant}} {
		if len(f.v) > 200 {
			writeError(w, errInvalidParam(f.name, "invalid_filter", f.name+" must be at most 200 bytes"))
			return
		}
	}
	log, err := s.tenancy.Store().AuditFind(aq)
	if err != nil {
		writeError(w, errServer(http.StatusInternalServerError, "internal_error", "could not read the audit log"))
		return
	}
	if log == nil {
		log = []store.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": log})
}

// checkProfiles refuses limits naming profiles that do not exist.
func (s *Server) checkProfiles(l store.Limits) *apiError {
	for _, p := range l.Profiles {
		if _, err := s.engine.Stages().Profile(p); err != nil {
			e := s.profileError(p)
			e.Status = http.StatusBadRequest
			return e
		}
	}
	return nil
}

func adminError(err error) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errTenantExists):
		return &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "tenant_exists", Message: err.Error()}
	case errors.Is(err, errTenantUnknown):
		return errNotFound("tenant_not_found", err.Error())
	case errors.Is(err, errKeyUnknown):
		return errNotFound("key_not_found", err.Error())
	case errors.Is(err, store.ErrInvalid):
		return errInvalidParam("limits", "invalid_limits", err.Error())
	}
	return errServer(http.StatusInternalServerError, "internal_error", err.Error())
}

// ledgerState answers a tenant limiter's LedgerQuery from this gateway's
// ledger.
func (s *Server) ledgerState(q *messages.LedgerQuery) *messages.LedgerState {
	st := s.tenancy.Store()
	var period time.Time
	if q.PeriodStartUnixMs > 0 {
		period = time.UnixMilli(q.PeriodStartUnixMs)
	}
	recent, periodTokens, err := st.LedgerSince(q.Tenant, time.UnixMilli(q.SinceUnixMs), period)
	if err != nil {
		return &messages.LedgerState{Error: err.Error()}
	}
	open, err := st.OpenReservations(q.Tenant)
	if err != nil {
		return &messages.LedgerState{Error: err.Error()}
	}
	out := &messages.LedgerState{PeriodTokens: periodTokens}
	for _, e := range recent {
		out.Recent = append(out.Recent, &messages.LedgerEntry{RunId: e.RunID, Tokens: e.Tokens, AtUnixMs: e.At.UnixMilli(), Settled: e.Settled})
	}
	for _, r := range open {
		out.Open = append(out.Open, &messages.LedgerEntry{RunId: r.RunID, Tokens: r.Tokens, AtUnixMs: r.At.UnixMilli()})
	}
	return out
}
