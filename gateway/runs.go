package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// createRunRequest is the body of POST /v1/runs.
type createRunRequest struct {
	Query     string `json:"query"`
	Profile   string `json:"profile"`
	Seed      int64  `json:"seed"`
	MaxTokens int    `json:"max_tokens"`
	// Stream answers with the run's event stream (SSE, as GET
	// /v1/runs/{id}/events from seq 1) instead of the run resource: one
	// round trip to the first token. The run does not depend on the
	// connection: a reader that drops resumes with GET and Last-Event-ID.
	Stream bool `json:"stream"`
	// Cache false: the run calls the models even if an identical one was
	// kept or is in flight (also Cache-Control: no-cache).
	Cache *bool `json:"cache"`
	// max_cost_usd, max_latency_ms, min_quality, on_budget (budget.go).
	budgetFields
}

// noCache reports whether a request opts out of the response cache: a
// "cache": false field, or Cache-Control: no-cache / no-store.
func noCache(r *http.Request, field *bool) bool {
	if field != nil && !*field {
		return true
	}
	for _, v := range r.Header.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			if d = strings.ToLower(strings.TrimSpace(d)); d == "no-cache" || d == "no-store" {
				return true
			}
		}
	}
	return false
}

// maxTokensLimit bounds a caller's max_tokens override.
const maxTokensLimit = 1 << 20

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) {
	if s.refuseSaturated(w, r) {
		return
	}
	var req createRunRequest
	if e := s.decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	if e := s.checkQuery(req.Query, "query"); e != nil {
		writeError(w, e)
		return
	}
	if req.Profile == "" {
		req.Profile = s.defaultProfile(principalOf(r))
	}
	if req.MaxTokens < 0 || req.MaxTokens > maxTokensLimit {
		writeError(w, errInvalidParam("max_tokens", "invalid_max_tokens", fmt.Sprintf("max_tokens must be between 0 and %d", maxTokensLimit)))
		return
	}
	budget, e := req.budget()
	if e != nil {
		writeError(w, e)
		return
	}
	who := principalOf(r)
	if req.Stream {
		done, e := s.streamSlot(who)
		if e != nil {
			writeError(w, e)
			return
		}
		defer done()
	}
	hub, reserved, e := s.startReserving(who, actors.RunRequest{Profile: req.Profile, Query: req.Query, Seed: req.Seed, MaxTokens: req.MaxTokens,
		NoCache: noCache(r, req.Cache), Ctx: r.Context(), Budget: budget})
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("Location", "/v1/runs/"+hub.RunID)
	if reserved > 0 {
		// What the run holds of the tenant's limits until it is billed (the
		// chaos suite's history check of the budget reads it).
		w.Header().Set("X-QLC-Reserved-Tokens", strconv.FormatInt(reserved, 10))
	}
	if req.Stream {
		w.Header().Set("X-QLC-Run-Id", hub.RunID)
		sub := hub.Subscribe(1)
		err := pump(r.Context(), sub, newSSETransport(w, s.cfg.WriteTimeout, s.cfg.MaxEventBytes), s.cfg.PingInterval, 0)
		s.logStreamEnd("sse", hub.RunID, sub, err)
		return
	}
	writeJSON(w, http.StatusCreated, s.view(hub))
}

// start admits a run for p (its tenant's profiles and limits), starts it,
// has it billed when it ends, and maps refusals to API errors.
func (s *Server) start(p principal, req actors.RunRequest) (*actors.Hub, *apiError) {
	hub, _, e := s.startReserving(p, req)
	return hub, e
}

// startReserving is start, also returning the tokens the run reserved
// against its tenant's limits (0: no limits).
func (s *Server) startReserving(p principal, req actors.RunRequest) (*actors.Hub, int64, *apiError) {
	if e := s.routeAuto(p, &req); e != nil {
		return nil, 0, e
	}
	// The tenant's own profile of that name, else the profile file's.
	prof, def, e := s.runProfile(p, req.Profile)
	if e != nil {
		return nil, 0, e
	}
	req.ProfileDefinition = def
	// The tenant's own keys for the profile's endpoints, sealed: only the
	// attempts that call those endpoints open them (providerkeys.go).
	req.ProviderKeys = s.tenancy.sealedKeys(p.tenantID(), prof)
	// The cost/quality optimiser, before admission: a run its budget
	// cannot pay for is refused having reserved nothing.
	if e := s.planRun(&req); e != nil {
		return nil, 0, e
	}
	if full, after := s.engine.Saturated(); full {
		// Every node announced it is at its run limit: refuse now, before
		// the tenant's limiter, the reservation or a placement (issue 18).
		return nil, 0, s.saturated(p.tenant.ID, after)
	}
	adm, e := s.admit(p, &req)
	if e != nil {
		return nil, 0, e
	}
	adm.prof = prof
	hub, err := s.engine.StartRun(req)
	if err == nil {
		if req.Ctx != nil {
			trace.SpanFromContext(req.Ctx).SetAttributes(attribute.String("qlc.run.id", hub.RunID))
		}
		s.account(hub, adm)
		return hub, adm.reserved, nil
	}
	s.release(adm)
	switch {
	case errors.Is(err, stagework.ErrUnknownProfile), errors.Is(err, stagework.ErrInvalidConfig):
		return nil, 0, s.profileErrorFor(p, req.Profile)
	case errors.Is(err, actors.ErrOverShare):
		// The engine is shared among the tenants with runs: this one holds
		// its share, others still have room (their runs are admitted).
		return nil, 0, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "active_runs_share", RetryAfter: 1,
			Message: "this tenant holds its share of the server's active runs (limit active_runs_share); retry when one of its runs ends"}
	case errors.Is(err, actors.ErrSaturated):
		return nil, 0, s.saturated(p.tenant.ID, time.Second)
	case errors.Is(err, actors.ErrMemoryBudget):
		e := errServer(http.StatusServiceUnavailable, "memory_budget", "the server is near its memory budget; retry shortly")
		e.RetryAfter = 2
		return nil, 0, e
	case errors.Is(err, actors.ErrBusy):
		e := errServer(http.StatusServiceUnavailable, "overloaded", "the server has too many active runs; retry shortly")
		e.RetryAfter = 1
		return nil, 0, e
	case errors.Is(err, actors.ErrNoNode):
		s.logger.Error("no node took the run", "error", err)
		e := errServer(http.StatusServiceUnavailable, "no_node", "no node is available to run this; retry shortly")
		e.RetryAfter = 1
		return nil, 0, e
	case errors.Is(err, actors.ErrShutdown):
		return nil, 0, errServer(http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
	}
	s.logger.Error("start run failed", "error", err)
	return nil, 0, errServer(http.StatusInternalServerError, "internal_error", "could not start the run")
}

// refuseSaturated answers 503 cluster_saturated and returns true when no
// node (or this gateway) has room for a run: before the body is read, so
// the excess of an overload costs the gateway as little as possible.
func (s *Server) refuseSaturated(w http.ResponseWriter, r *http.Request) bool {
	full, after := s.engine.Saturated()
	if full {
		writeError(w, s.saturated(principalOf(r).tenant.ID, after))
	}
	return full
}

// saturated is the answer to a run no node has room for: 503
// cluster_saturated with a Retry-After (whole seconds, at least 1).
func (s *Server) saturated(tenant string, after time.Duration) *apiError {
	s.metrics.refused.WithLabelValues(s.metrics.tenant(tenant), "cluster_saturated").Inc()
	e := errServer(http.StatusServiceUnavailable, "cluster_saturated", "every node is at its run limit; retry after the Retry-After")
	e.RetryAfter = max(1, int((after+time.Second-1)/time.Second))
	return e
}

// defaultProfile is the profile a request naming none runs: the
// configuration's default, or the tenant's first allowed profile if the
// default is not one of them.
func (s *Server) defaultProfile(p principal) string {
	def := s.engine.Stages().DefaultProfile
	if !p.allows(def) {
		return p.tenant.Limits.Profiles[0]
	}
	return def
}

func (s *Server) profileError(name string) *apiError {
	return errNotFound("unknown_profile", fmt.Sprintf("unknown profile %q; known profiles: %s", name, strings.Join(s.engine.Stages().ProfileNames(), ", ")))
}

func (s *Server) checkQuery(q, param string) *apiError {
	switch {
	case strings.TrimSpace(q) == "":
		return errInvalidParam(param, "empty_query", param+" is empty")
	case len(q) > s.cfg.MaxQueryBytes:
		return errInvalidParam(param, "query_too_long", fmt.Sprintf("%s is %d bytes; the limit is %d", param, len(q), s.cfg.MaxQueryBytes))
	}
	return nil
}

func (s *Server) hub(w http.ResponseWriter, r *http.Request) (*actors.Hub, bool) {
	id := r.PathValue("id")
	hub, err := s.engine.Hub(id)
	if err != nil {
		// A run that ended before this gateway (re)started: from its store.
		if h := s.restore(id); h != nil {
			hub, err = h, nil
		}
	}
	if err != nil {
		// A run this gateway does not know may be one whose gateway died:
		// find its coordinator in the cluster and follow it from here.
		hub, err = s.engine.Attach(id)
	}
	if errors.Is(err, actors.ErrLookupIncomplete) {
		// Some node did not answer whether it has the run (loaded, or
		// being declared dead): not a "no such run". Says nothing of
		// whose run it is.
		e := errServer(http.StatusServiceUnavailable, "run_lookup_incomplete", "not every node answered in time; retry shortly")
		e.RetryAfter = 1
		writeError(w, e)
		return nil, false
	}
	// Another tenant's run is "not found", exactly like a missing one: run
	// ids leak nothing.
	if err != nil || hub.Tenant != principalOf(r).tenantID() {
		writeError(w, errNotFound("run_not_found", fmt.Sprintf("no run %q", id)))
		return nil, false
	}
	return hub, true
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) {
	if hub, ok := s.hub(w, r); ok {
		writeJSON(w, http.StatusOK, s.view(hub))
	}
}

func (s *Server) cancelRun(w http.ResponseWriter, r *http.Request) {
	hub, ok := s.hub(w, r)
	if !ok {
		return
	}
	switch err := s.engine.Cancel(hub.RunID, "cancelled by request"); {
	case errors.Is(err, actors.ErrRunFinished):
		v := s.view(hub)
		writeError(w, &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "run_finished",
			Message: fmt.Sprintf("run %s already ended (%s)", hub.RunID, v.Status)})
		return
	case err != nil:
		writeError(w, errNotFound("run_not_found", fmt.Sprintf("no run %q", hub.RunID)))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CancelWait)
	defer cancel()
	_ = hub.WaitDone(ctx)
	writeJSON(w, http.StatusOK, s.view(hub))
}

// fromSeq reads where a reader resumes: the SSE Last-Event-ID header (the
// last event it has) or ?from_seq= (the first event it wants). Either may
// be "seq:bytes" for a reader inside a delta that was split into parts: it
// has the first bytes bytes of event seq's text (the id of the last part it
// read, or its part.end), and the stream resumes with the rest. It returns
// the first seq to read and how many text bytes of it to skip.
func fromSeq(r *http.Request) (seq uint64, skip int, e *apiError) {
	if v := r.URL.Query().Get("from_seq"); v != "" {
		n, b, ok := parseResume(v)
		if !ok {
			return 0, 0, errInvalidParam("from_seq", "invalid_from_seq", "from_seq must be a seq (a non-negative integer), or seq:bytes to resume inside a split delta")
		}
		return n, b, nil
	}
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, b, ok := parseResume(strings.TrimSpace(v))
		if !ok {
			return 0, 0, errInvalidParam("Last-Event-ID", "invalid_last_event_id", "Last-Event-ID must be an event's id")
		}
		if b > 0 || strings.Contains(v, ":") {
			return n, b, nil // inside event n
		}
		return n + 1, 0, nil
	}
	return 1, 0, nil
}

// parseResume parses "seq" or "seq:bytes" (both non-negative decimal, bytes
// below 2^31).
func parseResume(v string) (seq uint64, skip int, ok bool) {
	head, tail, split := strings.Cut(v, ":")
	n, err := strconv.ParseUint(head, 10, 64)
	if err != nil {
		return 0, 0, false
	}
	if !split {
		return n, 0, true
	}
	b, err := strconv.ParseUint(tail, 10, 31)
	if err != nil {
		return 0, 0, false
	}
	return n, int(b), true
}

// streamTarget is the run, the first seq and the text bytes of it to skip
// that a stream request asks for (or the error it was answered with).
func (s *Server) streamTarget(w http.ResponseWriter, r *http.Request) (*actors.Hub, uint64, int, bool) {
	if s.engine.ShuttingDown() {
		// Its streams end: the reader goes to another gateway (or this one,
		// restarted) with its last seq.
		writeError(w, &apiError{Status: http.StatusServiceUnavailable, Type: "server_error", Code: "shutting_down", RetryAfter: 1,
			Message: "this gateway is shutting down; reconnect (another gateway serves the run)"})
		return nil, 0, 0, false
	}
	hub, ok := s.hub(w, r)
	if !ok {
		return nil, 0, 0, false
	}
	from, skip, e := fromSeq(r)
	if e != nil {
		writeError(w, e)
		return nil, 0, 0, false
	}
	return hub, from, skip, true
}

func (s *Server) runEventsSSE(w http.ResponseWriter, r *http.Request) {
	hub, from, skip, ok := s.streamTarget(w, r)
	if !ok {
		return
	}
	done, e := s.streamSlot(principalOf(r))
	if e != nil {
		writeError(w, e)
		return
	}
	defer done()
	sub := hub.Subscribe(from)
	t := newSSETransport(w, s.cfg.WriteTimeout, s.cfg.MaxEventBytes)
	err := pump(r.Context(), sub, t, s.cfg.PingInterval, skip)
	s.logStreamEnd("sse", hub.RunID, sub, err)
}

func (s *Server) runEventsWS(w http.ResponseWriter, r *http.Request) {
	hub, from, skip, ok := s.streamTarget(w, r)
	if !ok {
		return
	}
	done, e := s.streamSlot(principalOf(r))
	if e != nil {
		writeError(w, e)
		return
	}
	defer done()
	conn, err := websocket.Accept(w, r, nil)
	if err != nil {
		return // Accept already wrote the HTTP error
	}
	defer conn.CloseNow()
	ctx := conn.CloseRead(r.Context())
	sub := hub.Subscribe(from)
	err = pump(ctx, sub, &wsTransport{ctx: ctx, conn: conn, writeTimeout: s.cfg.WriteTimeout, max: s.cfg.MaxEventBytes}, s.cfg.PingInterval, skip)
	s.logStreamEnd("websocket", hub.RunID, sub, err)
	if err == nil {
		_ = conn.Close(websocket.StatusNormalClosure, "run ended")
	}
}

func (s *Server) logStreamEnd(kind, runID string, sub *actors.Subscription, err error) {
	switch {
	case errors.Is(err, actors.ErrLagged):
		s.logger.Warn("stream reader lagged and was dropped", "run_id", runID, "transport", kind, "next_seq", sub.NextSeq())
	case err != nil && !errors.Is(err, context.Canceled):
		s.logger.Info("stream ended early", "run_id", runID, "transport", kind, "next_seq", sub.NextSeq(), "error", err)
	}
}

// profileView is one entry of GET /v1/profiles.
type profileView struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	Strategy    string `json:"strategy"`
	// Owner is "server" for a profile of the profile file, "tenant" for
	// the tenant's own (PUT /v1/profiles/{name}).
	Owner string `json:"owner"`
	// Local marks a profile generated from the model servers found on
	// this machine (stagework/discover).
	Local bool `json:"local"`
	// Steps are the profile's steps in plan order (a chain's four stages).
	Steps []profileStepVw `json:"steps"`
	// Stages are a chain profile's four stages, as before steps existed;
	// empty for a parallel strategy (see Steps).
	Stages []profileStageVw `json:"stages"`
}

type profileStageVw struct {
	Stage    string `json:"stage"`
	Provider string `json:"provider"`
	Model    string `json:"model"`
}

// profileStepVw is one step of a profile: what a run's run_planned says
// of it (docs/api.md), with its display title.
type profileStepVw struct {
	ID        string   `json:"id"`
	Stage     string   `json:"stage"`
	Title     string   `json:"title"`
	Provider  string   `json:"provider"`
	Model     string   `json:"model"`
	Inputs    []string `json:"inputs"`
	MinInputs int      `json:"min_inputs"`
	Final     bool     `json:"final"`
	Layer     int      `json:"layer"`
	// Method is a vote's tally method (majority or judge).
	Method string `json:"method,omitempty"`
	// DeadlineMs is the step's own time limit (0: none).
	DeadlineMs float64 `json:"deadline_ms,omitempty"`
	// Candidates are the models the cost/quality optimiser may choose
	// for the step; Optional, a step a run over its cost cap stops.
	Candidates []candidateView `json:"candidates,omitempty"`
	Optional   bool            `json:"optional,omitempty"`
}

// listProfiles lists the profiles the tenant may use, and its default.
func (s *Server) listProfiles(w http.ResponseWriter, r *http.Request) {
	cfg := s.engine.Stages()
	who := principalOf(r)
	out := struct {
		Object  string        `json:"object"`
		Default string        `json:"default"`
		Data    []profileView `json:"data"`
		// Routing maps each complexity tier to the profile a run asked
		// for with profile "auto" runs (absent: the server has no routing,
		// or the tenant may run none of its profiles).
		Routing map[string]string `json:"routing,omitempty"`
	}{Object: "list", Default: s.defaultProfile(who), Data: []profileView{}}
	if s.autoAllowed(who) {
		out.Routing = cfg.Routing
	}
	for _, name := range cfg.ProfileNames() {
		if !who.allows(name) {
			continue
		}
		if _, _, own := s.ownProfile(who.tenant, name); own {
			continue // the tenant's own of that name is the one it runs (listed below)
		}
		p, _ := cfg.Profile(name)
		out.Data = append(out.Data, viewProfile(cfg, p))
	}
	// The tenant's own profiles (tenantprofiles.go), after the file's.
	if !who.admin && who.tenant.Limits.MaxProfiles > 0 {
		for _, tp := range s.tenancy.TenantProfilesOf(who.tenantID()) {
			if p, _, ok := s.ownProfile(who.tenant, tp.Name); ok {
				pv := viewProfile(cfg, p)
				pv.Owner = "tenant"
				out.Data = append(out.Data, pv)
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// viewProfile is p as GET /v1/profiles lists it (Owner "server": the
// caller marks a tenant's own).
func viewProfile(cfg *stagework.Config, p *stagework.Profile) profileView {
	pv := profileView{Name: p.Name, Description: p.Description, Strategy: p.Strategy, Owner: "server", Local: p.Local, Steps: []profileStepVw{}, Stages: []profileStageVw{}}
	if p.IsChain() {
		pv.Strategy = stagework.StrategyChain
	}
	for _, st := range p.Stages {
		inputs := st.Inputs
		if inputs == nil {
			inputs = []string{}
		}
		pv.Steps = append(pv.Steps, profileStepVw{ID: st.StepID(), Stage: st.Stage.String(), Title: stepTitle(st.StepID(), messages.Stage(st.Stage)),
			Provider: st.Provider, Model: st.Model, Inputs: inputs, MinInputs: st.MinInputs, Final: st.Final, Layer: st.Layer,
			Method: st.Method, DeadlineMs: millis(st.Deadline), Candidates: toCandidateViews(cfg, st.Candidates), Optional: st.Optional})
		if p.IsChain() {
			pv.Stages = append(pv.Stages, profileStageVw{Stage: st.Stage.String(), Provider: st.Provider, Model: st.Model})
		}
	}
	return pv
}

// decodeJSON reads a bounded JSON body into v. strict rejects unknown
// fields (our own API); the OpenAI API ignores them, as OpenAI's does.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any, strict bool) *apiError {
	// JSON is expected; curl's default for -d (form-urlencoded) is let through
	// because the body is parsed as JSON either way and must be valid JSON.
	if ct := strings.ToLower(r.Header.Get("Content-Type")); ct != "" && !strings.HasPrefix(ct, "application/json") &&
		!strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type must be application/json, not %q", ct)}
	}
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: fmt.Sprintf("request body exceeds %d bytes", s.cfg.MaxBodyBytes)}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "body_timeout",
				Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyReadTimeout)}
		}
		return errInvalid("body_read_error", "could not read the request body (the connection broke or the body is malformed)")
	}
	return decodeBody(body, v, strict)
}

// decodeBody parses one JSON value into v with errors a person can act on.
func decodeBody(body []byte, v any, strict bool) *apiError {
	if len(bytes.TrimSpace(body)) == 0 {
		return errInvalid("empty_body", "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return errInvalid("invalid_json", fmt.Sprintf("malformed JSON at byte %d: %v", syn.Offset, syn))
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				return errInvalid("invalid_json", fmt.Sprintf("the body must be a JSON object, not %s", typ.Value))
			}
			return errInvalidParam(field, "invalid_type", fmt.Sprintf("field %q must be %s, not %s", field, typ.Type, typ.Value))
		case errors.Is(err, io.ErrUnexpectedEOF):
			return errInvalid("invalid_json", "malformed JSON: unexpected end of body")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return errInvalidParam(name, "unknown_field", fmt.Sprintf("unknown field %q", name))
		}
		return errInvalid("invalid_json", "malformed JSON: "+err.Error())
	}
	if dec.More() {
		return errInvalid("invalid_json", "malformed JSON: extra data after the object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errInvalid("invalid_json", "malformed JSON: extra data after the object")
	}
	return nil
}

// runView is the run resource (docs/api.md).
type runView struct {
	ID        string    `json:"id"`
	Object    string    `json:"object"`
	TraceID   string    `json:"trace_id,omitempty"` // the run's OpenTelemetry trace, when tracing is on
	Status    string    `json:"status"`
	Profile   string    `json:"profile"`
	Query     string    `json:"query"`
	CreatedAt time.Time `json:"created_at"`
	LastSeq   uint64    `json:"last_seq"`
	Strategy  string    `json:"strategy"`
	// Steps are every step of the run, in plan order (a chain's four
	// stages; a strategy's steps), with their outputs.
	Steps []stepView `json:"steps"`
	// Ranking is a council's aggregate ranking of its members' answers
	// (best first), once its chairman starts.
	Ranking []rankView `json:"ranking,omitempty"`
	// Stages are a chain run's four stages, as before steps existed; empty
	// for a run of a parallel strategy (see Steps).
	Stages []stageView `json:"stages"`
	Answer string      `json:"answer,omitempty"`
	Usage  *usageView  `json:"usage,omitempty"`
	Error  *runError   `json:"error,omitempty"`
	// Cached: the run was answered from the response cache, or shared an
	// identical run in flight (CachedFrom): no model was called for it.
	Cached     bool   `json:"cached,omitempty"`
	CachedFrom string `json:"cached_from,omitempty"`
	// Estimate is the run's predicted latency and cost, made when it was
	// admitted.
	Estimate *estimateView `json:"estimate,omitempty"`
	// Routing says how the profile was chosen for a run asked for with
	// profile "auto": the question's tier, why, and the profile.
	Routing   *routingView `json:"routing,omitempty"`
	EventsURL string       `json:"events_url"`
	WSURL     string       `json:"ws_url"`

	// Budget is what the request asked of the run's cost, latency and
	// quality; Models the cost/quality optimiser's choices, in the order
	// made (each also a model_chosen event).
	Budget *budgetView       `json:"budget,omitempty"`
	Models []modelChoiceView `json:"models,omitempty"`
}

// estimateView is a run's estimate (stagework.EstimateRun): the answer's
// first token and last token from the run's start, tokens and cost, and
// whether it came from live telemetry or the profiles file.
type estimateView struct {
	AnswerTTFTMs float64 `json:"answer_ttft_ms"`
	DurationMs   float64 `json:"duration_ms"`
	PromptTokens int64   `json:"prompt_tokens"`
	OutputTokens int64   `json:"output_tokens"`
	CostUSD      float64 `json:"cost_usd"`
	Basis        string  `json:"basis"`
}

func toEstimateView(e *messages.RunEstimate) *estimateView {
	if e == nil {
		return nil
	}
	return &estimateView{AnswerTTFTMs: millis(e.GetAnswerTtft().AsDuration()), DurationMs: millis(e.GetDuration().AsDuration()),
		PromptTokens: e.GetPromptTokens(), OutputTokens: e.GetOutputTokens(), CostUSD: e.GetCostUsd(), Basis: e.GetBasis()}
}

type stageView struct {
	Stage      string     `json:"stage"`
	Status     string     `json:"status"`
	Model      string     `json:"model"`
	Provider   string     `json:"provider"`
	Attempts   int32      `json:"attempts"`
	Restarts   int        `json:"restarts"`
	Output     string     `json:"output"`
	Tokens     int64      `json:"tokens"`
	Usage      *usageView `json:"usage,omitempty"`
	TTFTMs     float64    `json:"ttft_ms"`
	DurationMs float64    `json:"duration_ms"`
}

type usageView struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	Estimated        bool  `json:"estimated,omitempty"`
}

type runError struct {
	Message string `json:"message"`
	Code    string `json:"code"`
	Stage   string `json:"stage,omitempty"`
	Step    string `json:"step,omitempty"` // the step that failed, when one did
}

func toUsageView(u *messages.Usage) *usageView {
	if u == nil {
		return nil
	}
	return &usageView{u.PromptTokens, u.CompletionTokens, u.TotalTokens, u.Estimated}
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// view folds a run's log into its resource.
func (s *Server) view(h *actors.Hub) runView {
	v := runView{
		ID: h.RunID, Object: "run", TraceID: h.TraceID, Status: "running", Profile: h.Profile, Query: h.Query, CreatedAt: h.Created.UTC(),
		EventsURL: "/v1/runs/" + h.RunID + "/events", WSURL: "/v1/runs/" + h.RunID + "/ws", Stages: []stageView{},
	}
	evs := h.Events(1)
	p := s.hubProfile(h)
	if p != nil {
		p = p.WithModels(actors.ChosenModels(stepModelsOf(h, evs)))
	}
	f := newRunFold(p, s.engine.Stages(), true)
	f.fold(evs)
	v.Strategy, v.Steps, v.Ranking = f.strategy, f.views(), f.ranking
	if f.strategy == "" {
		v.Strategy = stagework.StrategyChain // a run of a parallel strategy logs its plan first
	}
	if v.Strategy == stagework.StrategyChain {
		v.Stages = chainStages(p, evs, v.Steps)
	}
	if len(evs) > 0 {
		v.LastSeq = evs[len(evs)-1].Seq
	}
	v.Status, v.Error = f.status, f.err
	v.Estimate = toEstimateView(h.Estimate())
	v.Routing = toRoutingView(h.Routing())
	v.Budget, v.Models = toBudgetView(h.Budget()), toModelChoiceViews(stepModelsOf(h, evs))
	if from := h.CachedFrom(); from != "" {
		v.Cached, v.CachedFrom = true, from
	}
	if f.status == "completed" {
		v.Answer, v.Usage = f.answer, toUsageView(f.usage)
	}
	return v
}

// chainStages folds a chain run's log into its "stages" (the resource's
// shape from before steps; kept as it was). A stage's output is its
// step's (the same string: a huge output is held once).
func chainStages(p *stagework.Profile, evs []*messages.RunEvent, steps []stepView) []stageView {
	stages := []stageView{}
	idx := map[messages.Stage]int{}
	if p != nil && p.IsChain() {
		for _, st := range p.Stages {
			idx[messages.Stage(st.Stage)] = len(stages)
			stages = append(stages, stageView{Stage: st.Stage.String(), Status: "pending", Model: st.Model, Provider: st.Provider})
		}
	}
	stage := func(st messages.Stage) int {
		i, ok := idx[st]
		if !ok {
			return -1
		}
		return i
	}
	for _, ev := range evs {
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_StageStarted:
			if i := stage(k.StageStarted.Stage); i >= 0 {
				sv := &stages[i]
				sv.Status, sv.Model, sv.Provider, sv.Attempts = "running", k.StageStarted.Model, k.StageStarted.Provider, k.StageStarted.Attempt
				sv.Tokens = 0
			}
		case *messages.RunEvent_TokenDelta:
			if i := stage(k.TokenDelta.Stage); i >= 0 {
				stages[i].Tokens += int64(k.TokenDelta.Tokens)
			}
		case *messages.RunEvent_StageRestarted:
			if i := stage(k.StageRestarted.Stage); i >= 0 {
				stages[i].Tokens = 0
				stages[i].Restarts++
			}
		case *messages.RunEvent_StageCompleted:
			if i := stage(k.StageCompleted.Stage); i >= 0 {
				m := k.StageCompleted
				sv := &stages[i]
				sv.Status, sv.Model = "completed", m.Model
				sv.Usage = toUsageView(m.Usage)
				sv.TTFTMs, sv.DurationMs = millis(m.GetTtft().AsDuration()), millis(m.GetDuration().AsDuration())
			}
		case *messages.RunEvent_RunFailed:
			for i := range stages {
				if stages[i].Status == "running" {
					stages[i].Status = "failed"
				}
			}
		case *messages.RunEvent_RunCancelled:
			for i := range stages {
				if stages[i].Status == "running" {
					stages[i].Status = "cancelled"
				}
			}
		}
	}
	for i := range stages {
		for _, st := range steps {
			if st.ID == stages[i].Stage {
				stages[i].Output = st.Output
			}
		}
	}
	return stages
}
