package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
)

// principalKey keys the request's principal in its context.
type principalKey struct{}

// principalOf is who r runs as (set by withAuth).
func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// withAuth authenticates every /v1/ request: a tenant key for the API, an
// admin key for /v1/admin/ (and, besides, GET /v1/usage for every tenant).
// Without Tenancy (a single-user embedding), requests run as Config.Tenant.
func (s *Server) withAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") {
			next.ServeHTTP(w, r)
			return
		}
		var p principal
		if s.tenancy == nil {
			p = principal{tenant: store.Tenant{ID: s.cfg.Tenant, Name: s.cfg.Tenant}}
		} else {
			var e *apiError
			if p, e = s.tenancy.authenticate(r); e != nil {
				s.metrics.authFailures.WithLabelValues(e.Code).Inc()
				writeError(w, e)
				return
			}
			adminPath := strings.HasPrefix(r.URL.Path, "/v1/admin/")
			switch {
			case adminPath && !p.admin:
				writeError(w, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "admin_key_required",
					Message: "this endpoint needs an admin key"})
				return
			case p.admin && !adminPath && !(r.Method == http.MethodGet && r.URL.Path == "/v1/usage"):
				writeError(w, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "tenant_key_required",
					Message: "admin keys manage tenants; use a tenant's key for this endpoint"})
				return
			}
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}

// allows reports whether the principal's tenant may run profile.
func (p principal) allows(profile string) bool {
	l := p.tenant.Limits.Profiles
	return len(l) == 0 || slices.Contains(l, profile)
}

// admission is a run admitted for a tenant: its reservation in the ledger
// and at the tenant's limiter, until the run is accounted.
type admission struct {
	tenant   string
	runID    string
	profile  string
	reserved int64
	at       time.Time
}

// admit checks a tenant's run against its profile list and its limits,
// cluster-wide, reserving the run's upper-bound token count: first in the
// ledger (so a limiter rebuilt after a node loss sees it), then at the
// tenant's limiter. req.ID is set.
func (s *Server) admit(p principal, req *actors.RunRequest) (*admission, *apiError) {
	lim := p.tenant.Limits
	if len(lim.Profiles) > 0 && !slices.Contains(lim.Profiles, req.Profile) {
		if _, err := s.engine.Stages().Profile(req.Profile); err != nil {
			return nil, s.profileError(req.Profile)
		}
		return nil, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "profile_not_allowed",
			Message: fmt.Sprintf("profile %q is not allowed for this tenant; allowed: %s", req.Profile, strings.Join(lim.Profiles, ", "))}
	}
	start := time.Now()
	tokens, err := s.engine.Reservation(*req)
	if err != nil {
		if errors.Is(err, errUnknownProfile) {
			return nil, s.profileError(req.Profile)
		}
		return nil, errInvalid("invalid_request", err.Error())
	}
	id, err := actors.NewRunID()
	if err != nil {
		return nil, errServer(http.StatusInternalServerError, "internal_error", "could not name the run")
	}
	req.ID, req.Tenant = id, p.tenantID()
	req.Weight = uint32(max(1, lim.Weight))
	a := &admission{tenant: p.tenantID(), runID: id, profile: req.Profile, reserved: tokens, at: start.UTC()}
	if s.tenancy == nil {
		return a, nil
	}
	st := s.tenancy.Store()
	if err := st.Reserve(store.Reservation{RunID: id, TenantID: a.tenant, Profile: req.Profile, Tokens: tokens, At: a.at}); err != nil {
		s.logger.Error("ledger: reserve", "run_id", id, "error", err)
		return nil, errServer(http.StatusServiceUnavailable, "ledger_unavailable", "the usage ledger cannot record the run; retry shortly")
	}
	m := &messages.Admit{Tenant: a.tenant, RunId: id, Tokens: tokens, Limits: &messages.TenantLimits{
		RequestsPerMinute: lim.RequestsPerMinute, TokensPerMinute: lim.TokensPerMinute, ConcurrentRuns: lim.ConcurrentRuns,
		TokenBudget: lim.TokenBudget, BudgetPeriod: lim.BudgetPeriod, Version: p.tenant.UpdatedAt.UnixNano(),
	}}
	if lim.TokenBudget > 0 {
		if ps := lim.PeriodStart(a.at); !ps.IsZero() {
			m.PeriodStartUnixMs = ps.UnixMilli()
			m.PeriodEndUnixMs = nextPeriod(lim.BudgetPeriod, ps).UnixMilli()
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AdmitTimeout)
	reply, err := s.engine.Limiter().Admit(ctx, m)
	cancel()
	s.metrics.admission.Observe(time.Since(start).Seconds())
	if err != nil || !reply.Ok {
		if derr := st.DropReservation(id); derr != nil {
			s.logger.Error("ledger: drop reservation", "run_id", id, "error", derr)
		}
	}
	if err != nil {
		// The limiter may have granted it all the same: take it back.
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = s.engine.Limiter().Settle(ctx, a.tenant, id, 0)
		}()
		s.logger.Error("tenant limiter unreachable", "tenant", a.tenant, "error", err)
		s.metrics.refused.WithLabelValues(s.metrics.tenant(a.tenant), "limiter_unavailable").Inc()
		return nil, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "limiter_unavailable", RetryAfter: 1,
			Message: "the tenant's limits cannot be checked right now; retry shortly"}
	}
	if !reply.Ok {
		s.metrics.refused.WithLabelValues(s.metrics.tenant(a.tenant), reply.Limit).Inc()
		retry := int((reply.RetryAfterMs + 999) / 1000)
		if retry < 1 {
			retry = 1
		}
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: reply.Limit, RetryAfter: retry,
			Message: fmt.Sprintf("%s (limit %s); retry in %d s", reply.Message, reply.Limit, retry)}
	}
	return a, nil
}

// nextPeriod is the start of the budget period after the one starting at ps.
func nextPeriod(period string, ps time.Time) time.Time {
	switch period {
	case "day":
		return ps.AddDate(0, 0, 1)
	case "week":
		return ps.AddDate(0, 0, 7)
	case "month":
		return ps.AddDate(0, 1, 0)
	}
	return time.Time{}
}

// release undoes an admission whose run never started.
func (s *Server) release(a *admission) {
	if s.tenancy == nil || a == nil {
		return
	}
	if err := s.tenancy.Store().DropReservation(a.runID); err != nil {
		s.logger.Error("ledger: drop reservation", "run_id", a.runID, "error", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := s.engine.Limiter().Settle(ctx, a.tenant, a.runID, 0); err != nil {
		s.logger.Warn("tenant limiter: settle", "run_id", a.runID, "error", err)
	}
}

// streamSlot takes one of a key's concurrent event streams; release with
// the returned func. Over the limit: 429.
func (s *Server) streamSlot(p principal) (func(), *apiError) {
	if s.tenancy == nil {
		return func() {}, nil
	}
	limit := p.tenant.Limits.MaxStreams
	if limit == 0 {
		limit = int64(s.cfg.MaxStreamsPerKey)
	}
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if limit > 0 && int64(s.streams[p.keyID]) >= limit {
		return nil, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "max_streams", RetryAfter: 1,
			Message: fmt.Sprintf("this key already has %d event streams open; its limit is %d", s.streams[p.keyID], limit)}
	}
	s.streams[p.keyID]++
	return func() {
		s.streamsMu.Lock()
		defer s.streamsMu.Unlock()
		if s.streams[p.keyID]--; s.streams[p.keyID] <= 0 {
			delete(s.streams, p.keyID)
		}
	}, nil
}

// isLoopback reports whether r came from this machine.
func isLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// uiSession gives the web UI the dev tenant's key in local mode, to a
// browser on this machine only.
func (s *Server) uiSession(w http.ResponseWriter, r *http.Request) {
	if s.cfg.DevKeys == nil || !isLoopback(r) || r.Header.Get("X-Forwarded-For") != "" {
		writeError(w, errNotFound("no_session", "no local session: paste an API key"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"tenant": s.cfg.DevKeys.Tenant, "tenant_key": s.cfg.DevKeys.TenantKey})
}
