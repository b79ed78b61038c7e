package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/internal/tracing"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// principalKey keys the request's principal in its context.
type principalKey struct{}

// principalOf is who r runs as (set by withAuth).
func principalOf(r *http.Request) principal {
	p, _ := r.Context().Value(principalKey{}).(principal)
	return p
}

// withAuth authenticates every /v1/ request: a tenant key for the API, an
// admin key for /v1/admin/ (and, besides, GET /v1/usage for every tenant and
// GET /v1/stats/models for every model).
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
			case p.admin && !adminPath && !(r.Method == http.MethodGet && (r.URL.Path == "/v1/usage" || r.URL.Path == "/v1/stats/models")) &&
				!(r.URL.Path == "/v1/provider-keys" || strings.HasPrefix(r.URL.Path, "/v1/provider-keys/")) && // ?tenant= names the tenant
				!strings.HasPrefix(r.URL.Path, "/v1/profiles/"): // a tenant's own profiles; ?tenant= names it
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
	prof     *stagework.Profile // the profile the run runs (the tenant's own or the file's), for billing
	reserved int64
	at       time.Time
}

// admissionState is what admission keeps between requests: the cheap
// refusals it remembers, and two seams tests use to count the expensive
// steps.
type admissionState struct {
	// reservation counts a run's reservation (tokenizing its prompts for
	// every stage); nil: Engine.Reservation.
	reservation func(actors.RunRequest) (int64, error)
	// ledger records reservations; nil: the tenancy's store.
	ledger reservationLedger

	// mu guards refused.
	mu sync.Mutex
	// refused holds, per tenant and limit, the latest refusal for a limit
	// that no smaller request escapes (requests_per_minute, and
	// concurrent_runs for runs) until its Retry-After: while it holds,
	// this gateway refuses the tenant's requests itself, without a round
	// trip to the limiter. At most maxRememberedRefusals entries.
	refused map[refusalKey]refusal
}

// reservationLedger is where admission records reservations (the store).
type reservationLedger interface {
	Reserve(store.Reservation) error
	DropReservation(runID string) error
}

type refusalKey struct{ tenant, limit string }

type refusal struct {
	until   time.Time
	version int64 // the tenant's limits (UpdatedAt) it was decided under: new limits forget it
	message string
}

// maxRememberedRefusals bounds admissionState.refused; when full, expired
// entries are dropped, and if none is, the new refusal is not remembered
// (the limiter is asked again, which is only slower).
const maxRememberedRefusals = 4096

// rememberable are the limits whose refusal holds for any request of the
// tenant until its Retry-After: the per-minute window only empties with
// time, and the limiter itself says when a run may end (1 s). A refusal
// for tokens (per minute, budget) depends on the run's size and is not
// remembered.
var rememberable = map[string]bool{"requests_per_minute": true, "concurrent_runs": true}

func (a *admissionState) remember(tenant string, version int64, reply *messages.AdmitReply, now time.Time) {
	if !rememberable[reply.Limit] || reply.RetryAfterMs <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.refused == nil {
		a.refused = map[refusalKey]refusal{}
	}
	if len(a.refused) >= maxRememberedRefusals {
		for k, r := range a.refused {
			if !now.Before(r.until) {
				delete(a.refused, k)
			}
		}
		if len(a.refused) >= maxRememberedRefusals {
			return
		}
	}
	a.refused[refusalKey{tenant, reply.Limit}] = refusal{until: now.Add(time.Duration(reply.RetryAfterMs) * time.Millisecond),
		version: version, message: reply.Message}
}

// held returns the first of limits for which tenant's remembered refusal
// still holds at now, as the limiter's reply with the time left.
func (a *admissionState) held(tenant string, version int64, now time.Time, limits ...string) *messages.AdmitReply {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, l := range limits {
		k := refusalKey{tenant, l}
		r, ok := a.refused[k]
		if !ok {
			continue
		}
		if !now.Before(r.until) || r.version != version {
			delete(a.refused, k)
			continue
		}
		return &messages.AdmitReply{Limit: l, RetryAfterMs: max(1, r.until.Sub(now).Milliseconds()), Message: r.message}
	}
	return nil
}

// limitsOf is the tenant's limits as its limiter gets them.
func limitsOf(p principal) *messages.TenantLimits {
	lim := p.tenant.Limits
	return &messages.TenantLimits{
		RequestsPerMinute: lim.RequestsPerMinute, TokensPerMinute: lim.TokensPerMinute, ConcurrentRuns: lim.ConcurrentRuns,
		TokenBudget: lim.TokenBudget, BudgetPeriod: lim.BudgetPeriod, Version: p.tenant.UpdatedAt.UnixNano(),
	}
}

// refusal maps a limiter's refusal to the API's 429.
func (s *Server) refusal(tenant string, reply *messages.AdmitReply) *apiError {
	s.metrics.refused.WithLabelValues(s.metrics.tenant(tenant), reply.Limit).Inc()
	retry := int((reply.RetryAfterMs + 999) / 1000)
	if retry < 1 {
		retry = 1
	}
	return &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: reply.Limit, RetryAfter: retry,
		Message: fmt.Sprintf("%s (limit %s); retry in %d s", reply.Message, reply.Limit, retry)}
}

func (s *Server) limiterUnavailable(tenant string, err error) *apiError {
	s.logger.Error("tenant limiter unreachable", "tenant", tenant, "error", err)
	s.metrics.refused.WithLabelValues(s.metrics.tenant(tenant), "limiter_unavailable").Inc()
	return &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "limiter_unavailable", RetryAfter: 1,
		Message: "the tenant's limits cannot be checked right now; retry shortly"}
}

// countRequest counts a request that is not a run (POST /v1/tokenize)
// against the tenant's requests_per_minute, cluster-wide: 429 beyond it.
func (s *Server) countRequest(p principal) *apiError {
	if s.tenancy == nil || p.tenant.Limits.RequestsPerMinute <= 0 {
		return nil
	}
	tenant, version, now := p.tenantID(), p.tenant.UpdatedAt.UnixNano(), time.Now()
	if r := s.adm.held(tenant, version, now, "requests_per_minute"); r != nil {
		return s.refusal(tenant, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.AdmitTimeout)
	reply, err := s.engine.Limiter().Admit(ctx, &messages.Admit{Tenant: tenant, Request: true, Limits: limitsOf(p)})
	cancel()
	if err != nil {
		return s.limiterUnavailable(tenant, err)
	}
	if !reply.Ok {
		s.adm.remember(tenant, version, reply, now)
		return s.refusal(tenant, reply)
	}
	return nil
}

// admit checks a tenant's run against its profile list and its limits,
// cluster-wide, reserving the run's upper-bound token count: first in the
// ledger (so a limiter rebuilt after a node loss sees it), then at the
// tenant's limiter. req.ID is set.
//
// The cheap checks come first, so that a refused run costs neither the
// reservation's count (tokenizing the prompts of every stage) nor two
// ledger writes (reserve, then drop): the profile list; then a refusal
// this gateway remembers while its Retry-After holds (requests or
// concurrent runs: admissionState.refused), without a round trip; then,
// if the tenant has any limit, a precheck at the limiter with a lower
// bound of the reservation (Admit.precheck, which records nothing). Only
// a run that passes is counted, written to the ledger and asked for; that
// last Admit alone grants, after the ledger write, so the budget stays
// exact (the precheck can only refuse early what the Admit would refuse).
func (s *Server) admit(p principal, req *actors.RunRequest) (adm *admission, apiErr *apiError) {
	// The admission span: the tenant's limits (the limiter's precheck and
	// Admit, on the limiter's node), the reservation and the ledger.
	// Limiter requests outlive no request, but carry its span.
	actx, span := context.Background(), trace.SpanFromContext(context.Background())
	if tracing.Enabled() {
		actx, span = tracer.Start(tracing.Detach(req.Ctx), "qlc.admission", trace.WithAttributes(attribute.String("qlc.tenant", p.tenantID()),
			attribute.String("qlc.profile", req.Profile)))
	}
	defer func() {
		if apiErr != nil {
			span.SetAttributes(semconv.ErrorTypeKey.String(apiErr.Code))
			span.SetStatus(codes.Error, apiErr.Message)
		}
		span.End()
	}()
	lim := p.tenant.Limits
	// The allow-list is about the profile file's profiles: a tenant's own
	// (req.ProfileDefinition) is the tenant's to run.
	if len(lim.Profiles) > 0 && len(req.ProfileDefinition) == 0 && !slices.Contains(lim.Profiles, req.Profile) {
		if _, err := s.engine.Stages().Profile(req.Profile); err != nil {
			return nil, s.profileError(req.Profile)
		}
		return nil, &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "profile_not_allowed",
			Message: fmt.Sprintf("profile %q is not allowed for this tenant; allowed: %s", req.Profile, strings.Join(lim.Profiles, ", "))}
	}
	start := time.Now()
	tenant, version := p.tenantID(), p.tenant.UpdatedAt.UnixNano()
	limited := lim.RequestsPerMinute > 0 || lim.TokensPerMinute > 0 || lim.ConcurrentRuns > 0 || lim.TokenBudget > 0
	var periodStart, periodEnd int64
	if lim.TokenBudget > 0 {
		if ps := lim.PeriodStart(start.UTC()); !ps.IsZero() {
			periodStart, periodEnd = ps.UnixMilli(), nextPeriod(lim.BudgetPeriod, ps).UnixMilli()
		}
	}
	if s.tenancy != nil && limited {
		if r := s.adm.held(tenant, version, start, "requests_per_minute", "concurrent_runs"); r != nil {
			return nil, s.refusal(tenant, r)
		}
		floor, err := s.engine.ReservationFloor(*req)
		if err != nil {
			return nil, s.profileError(req.Profile)
		}
		ctx, cancel := context.WithTimeout(actx, s.cfg.AdmitTimeout)
		reply, err := s.engine.Limiter().Admit(ctx, &messages.Admit{Tenant: tenant, Precheck: true, Tokens: floor, Limits: limitsOf(p),
			PeriodStartUnixMs: periodStart, PeriodEndUnixMs: periodEnd})
		cancel()
		if err != nil {
			return nil, s.limiterUnavailable(tenant, err)
		}
		if !reply.Ok {
			s.adm.remember(tenant, version, reply, start)
			return nil, s.refusal(tenant, reply)
		}
	}
	reservation := s.adm.reservation
	if reservation == nil {
		reservation = s.engine.Reservation
	}
	tokens, err := reservation(*req)
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
	req.ID, req.Tenant = id, tenant
	req.Weight = uint32(max(1, lim.Weight))
	a := &admission{tenant: tenant, runID: id, profile: req.Profile, reserved: tokens, at: start.UTC()}
	if s.tenancy == nil {
		return a, nil
	}
	st := s.ledger()
	if err := st.Reserve(store.Reservation{RunID: id, TenantID: a.tenant, Profile: req.Profile, Tokens: tokens, At: a.at}); err != nil {
		s.logger.Error("ledger: reserve", "run_id", id, "error", err)
		return nil, errServer(http.StatusServiceUnavailable, "ledger_unavailable", "the usage ledger cannot record the run; retry shortly")
	}
	m := &messages.Admit{Tenant: a.tenant, RunId: id, Tokens: tokens, Limits: limitsOf(p),
		PeriodStartUnixMs: periodStart, PeriodEndUnixMs: periodEnd}
	ctx, cancel := context.WithTimeout(actx, s.cfg.AdmitTimeout)
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
		s.goBackground(func() {
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			defer cancel()
			_ = s.engine.Limiter().Settle(ctx, a.tenant, id, 0)
		})
		return nil, s.limiterUnavailable(a.tenant, err)
	}
	if !reply.Ok {
		s.adm.remember(tenant, version, reply, time.Now())
		return nil, s.refusal(a.tenant, reply)
	}
	return a, nil
}

// ledger is where reservations are recorded: the tenancy's store, or the
// test seam.
func (s *Server) ledger() reservationLedger {
	if s.adm.ledger != nil {
		return s.adm.ledger
	}
	return s.tenancy.Store()
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
	if err := s.ledger().DropReservation(a.runID); err != nil {
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
		return s.streamOpened(), nil
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
	closed := s.streamOpened()
	return func() {
		s.streamsMu.Lock()
		if s.streams[p.keyID]--; s.streams[p.keyID] <= 0 {
			delete(s.streams, p.keyID)
		}
		s.streamsMu.Unlock()
		closed()
	}, nil
}

// streamOpened counts an event stream for the memory release (release.go)
// and returns what to call when it ends.
func (s *Server) streamOpened() func() {
	if s.mem == nil {
		return func() {}
	}
	s.mem.opened()
	return s.mem.closed
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
