package gateway

// Batches: POST /v1/runs/batch takes up to maxBatchItems queries at once;
// the batch and its items are kept in the gateway's store, and a
// dispatcher owned by the Server starts the items' runs as the tenant's
// limits allow. Each item's run is an ordinary run (admitted, fair-queued,
// billed, streamed and cancelled like any run); the batch only decides when
// to start it and records its outcome.
//
// Life cycle:
//  1. createBatch validates every item as POST /v1/runs would (the whole
//     batch is refused if one is bad), writes the batch and its items
//     (status queued) in one transaction, and wakes the dispatcher.
//  2. The dispatcher (one goroutine, batchManager.run) takes, tenant by
//     tenant in turn, the next queued item of the tenant's oldest open
//     batch while the tenant has fewer than its concurrent_runs (or
//     batchInFlightDefault) of batch runs going, claims it (queued →
//     starting), and starts its run with Server.start. A refusal that
//     passes with time (429 with a Retry-After, 503) puts the item back
//     and pauses the tenant for the Retry-After; one that does not
//     (budget spent, profile gone) fails the item with that error.
//  3. When an item's run has ended and has been billed (Server.account
//     calls runEnded after the tenant's limiter has released the run, so
//     the next start is not refused for a run that is over), its outcome
//     (answer or error) is written to the item and the slot is free again.
//  4. When a batch has no queued or running item left it ends; ended
//     batches are pruned with the runs, after Config.KeepRuns.
//  5. On shutdown the dispatcher stops (Server.Close waits for it); items
//     whose runs were cut off by the shutdown go back to the queue, and the
//     next start of a gateway on the same store loads the open batches,
//     follows or reads the runs of running items, and starts the rest.

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Bounds of batches, each with its reason.
const (
	// maxBatchItems bounds one batch: enough for a day's evaluation set,
	// small enough that its items fit in one transaction and one page.
	maxBatchItems = 1000
	// maxOpenBatches bounds a tenant's batches not ended: each holds queued
	// items in the store, and more than a few at once only queue behind
	// each other (they share the tenant's concurrent runs).
	maxOpenBatches = 10
	// maxCustomIDBytes bounds an item's custom_id (it is echoed in every
	// page and may be given back as ?after=).
	maxCustomIDBytes = 64
	// maxBatchBodyBytes is POST /v1/runs/batch's body limit (other routes
	// keep Config.MaxBodyBytes, if larger this): 1000 questions of 16 KiB.
	maxBatchBodyBytes = 16 << 20
	// defaultBatchPage and maxBatchPage bound the items of one GET.
	defaultBatchPage, maxBatchPage = 100, 1000
	// batchPageBytes bounds the answers and errors of one GET page (at
	// least one item is always given): 1000 long answers are never one
	// giant response; has_more says to read on.
	batchPageBytes = 4 << 20
	// batchInFlightDefault is how many runs of a tenant's batches go at once
	// when the tenant has no concurrent_runs limit (the default limit of a
	// tenant created without one is also 16).
	batchInFlightDefault = 16
	// maxItemAttempts bounds the runs started for one item: a run cut off
	// by a shutdown (or lost with its gateway) is started again, at most
	// this many times in all.
	maxItemAttempts = 3
	// batchProblemsShown is how many bad items a 400 names.
	batchProblemsShown = 5
	// shutdownCancelReason is the reason the engine cancels its runs with
	// when it shuts down (actors.Engine.Shutdown): an item whose run ended
	// so is queued again, not cancelled.
	shutdownCancelReason = "server shutting down"
	// batchCancelledMessage is the error of an item cancelled before its
	// run started.
	batchCancelledMessage = "cancelled with its batch before it started"
)

// batchItemRequest is one item of POST /v1/runs/batch: the fields of POST
// /v1/runs (without stream) and the caller's custom_id. Its budget fields
// override the batch's, field by field.
type batchItemRequest struct {
	CustomID  string `json:"custom_id"`
	Query     string `json:"query"`
	Profile   string `json:"profile"`
	Seed      int64  `json:"seed"`
	MaxTokens int    `json:"max_tokens"`
	budgetFields
}

// createBatchRequest is the body of POST /v1/runs/batch. Items are decoded
// one by one, so that an error names its item. The budget fields apply to
// every item that does not set its own.
type createBatchRequest struct {
	Items []json.RawMessage `json:"items"`
	budgetFields
}

// batchView is the batch resource (docs/api.md, Batches).
type batchView struct {
	ID          string          `json:"id"`
	Object      string          `json:"object"`
	Status      string          `json:"status"`
	CreatedAt   time.Time       `json:"created_at"`
	CancelledAt *time.Time      `json:"cancelled_at,omitempty"`
	EndedAt     *time.Time      `json:"ended_at,omitempty"`
	Total       int             `json:"total"`
	Counts      batchCounts     `json:"counts"`
	URL         string          `json:"url"`
	Items       []batchItemView `json:"items,omitempty"`
	HasMore     *bool           `json:"has_more,omitempty"`
	NextAfter   string          `json:"next_after,omitempty"`
}

type batchCounts struct {
	Queued    int `json:"queued"`
	Running   int `json:"running"`
	Completed int `json:"completed"`
	Failed    int `json:"failed"`
	Cancelled int `json:"cancelled"`
}

type batchItemView struct {
	Index     int           `json:"index"`
	CustomID  string        `json:"custom_id"`
	Profile   string        `json:"profile"`
	Status    string        `json:"status"`
	RunID     string        `json:"run_id,omitempty"`
	Answer    string        `json:"answer,omitempty"`
	Error     *batchItemErr `json:"error,omitempty"`
	Attempts  int           `json:"attempts,omitempty"`
	StartedAt *time.Time    `json:"started_at,omitempty"`
	EndedAt   *time.Time    `json:"ended_at,omitempty"`
}

type batchItemErr struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Type, Param and Status are set for an item refused over its budget:
	// the error body POST /v1/runs answers with HTTP 422.
	Type   string  `json:"type,omitempty"`
	Param  *string `json:"param,omitempty"`
	Status int     `json:"status,omitempty"`
}

// batchManager keeps the open batches of this gateway and starts their
// items. Its dispatcher goroutine (run) is owned by the Server: started by
// New, stopped by Stop, waited for by Close. runEnded is called from the
// Server's accounting goroutines.
//
// Lock order: startMu before mu; never hold mu while taking startMu.
type batchManager struct {
	s  *Server
	st *store.Store
	// wake is a capacity-1 signal: a non-blocking send asks the dispatcher
	// to look again (a batch arrived, a run ended).
	wake chan struct{}
	// since is when this manager was made: load takes up the open batches
	// created before (by an earlier life); createBatch adds its own.
	since time.Time
	// maxOpen, inFlightDefault: maxOpenBatches and batchInFlightDefault
	// (tests lower them).
	maxOpen, inFlightDefault int

	// startMu is held by the dispatcher from the start of a run until the
	// run is registered in runs, so that runEnded, finding no run, can wait
	// for a start under way and look again: a fast run may end (and be
	// billed) before Server.start has returned its id.
	startMu sync.Mutex

	// mu guards the fields below.
	mu      sync.Mutex
	open    map[string]*openBatch   // by batch id
	tenants map[string]*batchTenant // tenants with open batches or runs of them going
	runs    map[string]*batchRun    // runs of items going, by run id
}

// openBatch is what the dispatcher knows of a batch not ended.
type openBatch struct {
	id, tenant string
	cancelled  bool
	drained    bool          // no queued item was found at the last look
	pending    int           // items queued, starting or running
	done       chan struct{} // closed when the batch ends
}

// batchTenant is a tenant's share of the dispatcher.
type batchTenant struct {
	batches  []*openBatch // oldest first: a tenant's batches run in turn
	inFlight int          // items starting or running
	retryAt  time.Time    // after a refusal with a Retry-After: no start before
}

// batchRun is an item whose run is going.
type batchRun struct {
	b        *openBatch
	idx      int
	runID    string
	attempts int // runs started for the item, this one included
}

func newBatchManager(s *Server) *batchManager {
	return &batchManager{s: s, st: s.tenancy.Store(), wake: make(chan struct{}, 1), since: time.Now(),
		maxOpen: maxOpenBatches, inFlightDefault: batchInFlightDefault,
		open: map[string]*openBatch{}, tenants: map[string]*batchTenant{}, runs: map[string]*batchRun{}}
}

// poke wakes the dispatcher; it never blocks.
func (m *batchManager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// batchRoutes serves /v1/runs/batch and /v1/runs/batch/…, and hands every
// other request to next. The batch routes live on their own mux: on the
// main one "GET /v1/runs/batch/{id}" would conflict with "GET
// /v1/runs/{id}/events" (both match /v1/runs/batch/events).
func (s *Server) batchRoutes(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/runs/batch", s.createBatch)
	mux.HandleFunc("GET /v1/runs/batch", s.listBatches)
	mux.HandleFunc("GET /v1/runs/batch/{id}", s.getBatch)
	mux.HandleFunc("POST /v1/runs/batch/{id}/cancel", s.cancelBatch)
	unknown := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, errNotFound("unknown_endpoint", fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)))
	}
	mux.HandleFunc("/v1/runs/batch", unknown)
	mux.HandleFunc("/v1/runs/batch/", unknown)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/v1/runs/batch" || strings.HasPrefix(p, "/v1/runs/batch/") {
			mux.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// batchesOff answers when the gateway has no store to keep batches in.
func (s *Server) batchesOff(w http.ResponseWriter) bool {
	if s.batches != nil {
		return false
	}
	writeError(w, errNotFound("unknown_endpoint", "batches are kept in the gateway's store: they need tenancy on"))
	return true
}

// createBatch serves POST /v1/runs/batch.
func (s *Server) createBatch(w http.ResponseWriter, r *http.Request) {
	if s.batchesOff(w) {
		return
	}
	var req createBatchRequest
	if e := s.readBatchBody(w, r, &req); e != nil {
		writeError(w, e)
		return
	}
	who := principalOf(r)
	if _, e := req.budgetFields.budget(); e != nil {
		writeError(w, e)
		return
	}
	items, e := s.batchItems(who, req.Items, req.budgetFields)
	if e != nil {
		writeError(w, e)
		return
	}
	// Each item with a budget is planned now, as POST /v1/runs plans: one
	// its budget cannot pay for is refused (failed, with the 422's code and
	// message), the others are queued. It is planned again when its run
	// starts (the cluster's statistics may have moved by then).
	counts := map[string]int{}
	for i := range items {
		if e := s.planBatchItem(who, &items[i]); e != nil {
			items[i].Status, items[i].ErrorCode, items[i].ErrorMessage, items[i].EndedAt = store.ItemFailed, e.Code, e.Message, time.Now().UTC()
		}
		counts[cmp.Or(items[i].Status, store.ItemQueued)]++
	}
	id, err := newBatchID()
	if err != nil {
		writeError(w, errServer(http.StatusInternalServerError, "internal_error", "could not name the batch"))
		return
	}
	for i := range items {
		items[i].BatchID = id
	}
	m := s.batches
	b := store.Batch{ID: id, TenantID: who.tenantID(), Total: len(items), CreatedAt: time.Now().UTC()}
	if err := m.st.CreateBatch(b, items, m.maxOpen); err != nil {
		if errors.Is(err, store.ErrLimit) {
			writeError(w, &apiError{Status: http.StatusTooManyRequests, Type: "rate_limit_error", Code: "open_batches", RetryAfter: 10,
				Message: fmt.Sprintf("this tenant already has %d batches not ended, its limit; wait for one to end or cancel one (GET /v1/runs/batch lists them)", m.maxOpen)})
			return
		}
		s.logger.Error("store: create batch", "tenant", b.TenantID, "error", err)
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be stored right now; retry shortly"))
		return
	}
	if pending := counts[store.ItemQueued]; pending > 0 {
		m.add(b, pending, false)
		m.poke()
	} else if err := m.st.EndBatch(id, time.Now().UTC()); err != nil {
		s.logger.Error("store: end batch", "batch_id", id, "error", err)
	} else {
		b.EndedAt = time.Now().UTC() // every item refused: nothing to run
	}
	s.logger.Info("batch queued", "batch_id", id, "tenant", b.TenantID, "items", len(items), "refused", counts[store.ItemFailed])
	w.Header().Set("Location", "/v1/runs/batch/"+id)
	v := batchSummary(b, counts)
	writeJSON(w, http.StatusAccepted, v)
}

// readBatchBody reads POST /v1/runs/batch's body as decodeJSON does, with
// the batch route's larger bound.
func (s *Server) readBatchBody(w http.ResponseWriter, r *http.Request, v any) *apiError {
	if ct := strings.ToLower(r.Header.Get("Content-Type")); ct != "" && !strings.HasPrefix(ct, "application/json") &&
		!strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		return &apiError{Status: http.StatusUnsupportedMediaType, Type: "invalid_request_error", Code: "unsupported_media_type",
			Message: fmt.Sprintf("Content-Type must be application/json, not %q", ct)}
	}
	limit := max(s.cfg.MaxBodyBytes, maxBatchBodyBytes)
	_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return &apiError{Status: http.StatusRequestEntityTooLarge, Type: "invalid_request_error", Code: "body_too_large",
				Message: fmt.Sprintf("request body exceeds %d bytes (a batch's limit); split the batch", limit)}
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return &apiError{Status: http.StatusRequestTimeout, Type: "invalid_request_error", Code: "body_timeout",
				Message: fmt.Sprintf("the request body did not arrive within %v", s.cfg.BodyReadTimeout)}
		}
		return errInvalid("body_read_error", "could not read the request body (the connection broke or the body is malformed)")
	}
	return decodeBody(body, v, true)
}

// batchProblem is one bad item of a batch.
type batchProblem struct {
	index    int
	customID string
	param    string // within the item: "query", "custom_id", …
	code     string
	msg      string
}

// batchItems validates every item as POST /v1/runs validates its body,
// and returns them to be stored, or a 400 naming the first bad ones.
func (s *Server) batchItems(who principal, raw []json.RawMessage, batchBudget budgetFields) ([]store.BatchItem, *apiError) {
	switch {
	case len(raw) == 0:
		return nil, errInvalidParam("items", "empty_batch", `items is empty; send {"items":[{"custom_id":"…","query":"…"}, …]}`)
	case len(raw) > maxBatchItems:
		return nil, errInvalidParam("items", "too_many_items", fmt.Sprintf("the batch has %d items; the limit is %d (split it)", len(raw), maxBatchItems))
	}
	var problems []batchProblem
	seen := make(map[string]int, len(raw))
	items := make([]store.BatchItem, 0, len(raw))
	for i, data := range raw {
		var it batchItemRequest
		bad := func(param, code, msg string) {
			problems = append(problems, batchProblem{index: i, customID: it.CustomID, param: param, code: code, msg: msg})
		}
		if e := decodeBody(data, &it, true); e != nil {
			param := ""
			if e.Param != nil {
				param = *e.Param
			}
			bad(param, e.Code, e.Message)
			continue
		}
		switch first, dup := seen[it.CustomID]; {
		case it.CustomID == "":
			bad("custom_id", "missing_custom_id", "custom_id is missing (each item needs one, unique within the batch)")
		case len(it.CustomID) > maxCustomIDBytes:
			bad("custom_id", "invalid_custom_id", fmt.Sprintf("custom_id is %d bytes; the limit is %d", len(it.CustomID), maxCustomIDBytes))
		case !utf8.ValidString(it.CustomID) || strings.ContainsFunc(it.CustomID, unicode.IsControl):
			bad("custom_id", "invalid_custom_id", "custom_id must be UTF-8 text without control characters")
		case dup:
			bad("custom_id", "duplicate_custom_id", fmt.Sprintf("custom_id %q is also items[%d]'s", it.CustomID, first))
		default:
			seen[it.CustomID] = i
		}
		if e := s.checkQuery(it.Query, "query"); e != nil {
			bad("query", e.Code, e.Message)
		}
		if it.Profile == "" {
			it.Profile = s.defaultProfile(who)
		}
		if it.Profile == stagework.AutoProfile {
			// Routed when the item's run starts, as POST /v1/runs does.
			if s.engine.Stages().Routing == nil {
				bad("profile", "routing_not_configured", `profile "auto" needs routing in the profiles file; this server's file has none`)
			} else if !s.autoAllowed(who) {
				bad("profile", "profile_not_allowed", fmt.Sprintf(`profile "auto" routes to profiles this tenant may not run; allowed: %s`, strings.Join(who.tenant.Limits.Profiles, ", ")))
			}
		} else if _, _, own := s.ownProfile(who.tenant, it.Profile); own {
			// The tenant's own profile: the allow-list is not about it.
		} else if _, err := s.engine.Stages().Profile(it.Profile); err != nil {
			bad("profile", "unknown_profile", s.profileErrorFor(who, it.Profile).Message)
		} else if !who.allows(it.Profile) {
			bad("profile", "profile_not_allowed", fmt.Sprintf("profile %q is not allowed for this tenant; allowed: %s", it.Profile, strings.Join(who.tenant.Limits.Profiles, ", ")))
		}
		if it.MaxTokens < 0 || it.MaxTokens > maxTokensLimit {
			bad("max_tokens", "invalid_max_tokens", fmt.Sprintf("max_tokens must be between 0 and %d", maxTokensLimit))
		}
		bf := it.budgetFields.over(batchBudget)
		var budget []byte
		if b, e := bf.budget(); e != nil {
			param := ""
			if e.Param != nil {
				param = *e.Param
			}
			bad(param, e.Code, e.Message)
		} else if !b.IsZero() {
			budget, _ = json.Marshal(bf) // plain fields: cannot fail
		}
		items = append(items, store.BatchItem{Index: i, CustomID: it.CustomID, Query: it.Query, Profile: it.Profile,
			Seed: it.Seed, MaxTokens: it.MaxTokens, Budget: string(budget), Status: store.ItemQueued})
	}
	if len(problems) == 0 {
		return items, nil
	}
	var msg strings.Builder
	bad := map[int]bool{}
	for _, p := range problems {
		bad[p.index] = true
	}
	fmt.Fprintf(&msg, "%d of %d items are invalid; nothing was queued: ", len(bad), len(raw))
	for i, p := range problems {
		if i == batchProblemsShown {
			fmt.Fprintf(&msg, "; and %d more", len(problems)-i)
			break
		}
		if i > 0 {
			msg.WriteString("; ")
		}
		fmt.Fprintf(&msg, "items[%d]", p.index)
		if p.customID != "" && p.code != "invalid_custom_id" {
			fmt.Fprintf(&msg, " (custom_id %q)", p.customID)
		}
		fmt.Fprintf(&msg, ": %s", p.msg)
	}
	p := problems[0]
	param := fmt.Sprintf("items[%d]", p.index)
	if p.param != "" {
		param += "." + p.param
	}
	return nil, errInvalidParam(param, p.code, msg.String())
}

// planBatchItem plans an item with a budget as POST /v1/runs would
// (Server.start): nil when it has none or its budget can pay for it, else
// the 422 (over_cost_cap, over_latency_cap, no_candidate) naming the cap
// and the estimate.
func (s *Server) planBatchItem(who principal, it *store.BatchItem) *apiError {
	b, e := itemBudget(it.Budget)
	if e != nil || b.IsZero() {
		return e
	}
	req := actors.RunRequest{Profile: it.Profile, Query: it.Query, MaxTokens: it.MaxTokens, Budget: b}
	if e := s.routeAuto(who, &req); e != nil {
		return e
	}
	_, def, e := s.runProfile(who, req.Profile)
	if e != nil {
		return e
	}
	req.ProfileDefinition = def
	return s.planRun(&req)
}

// itemBudget decodes a stored item's budget ("" for none).
func itemBudget(stored string) (stagework.Budget, *apiError) {
	if stored == "" {
		return stagework.Budget{}, nil
	}
	var f budgetFields
	if err := json.Unmarshal([]byte(stored), &f); err != nil {
		return stagework.Budget{}, errInvalid("invalid_budget", "the item's stored budget does not decode: "+err.Error())
	}
	return f.budget()
}

// newBatchID names a batch: "batch_" and 20 random bytes in hex.
func newBatchID() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("gateway: batch id: %w", err)
	}
	return "batch_" + hex.EncodeToString(b[:]), nil
}

// batchOf reads the batch named in the path, for its tenant only: another
// tenant's batch is "not found", exactly like a missing one.
func (s *Server) batchOf(w http.ResponseWriter, r *http.Request) (store.Batch, bool) {
	id := r.PathValue("id")
	b, err := s.batches.st.Batch(id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.logger.Error("store: read batch", "batch_id", id, "error", err)
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be read right now; retry shortly"))
		return store.Batch{}, false
	}
	if err != nil || b.TenantID != principalOf(r).tenantID() {
		writeError(w, errNotFound("batch_not_found", fmt.Sprintf("no batch %q", id)))
		return store.Batch{}, false
	}
	return b, true
}

// batchSummary is the batch resource without items.
func batchSummary(b store.Batch, counts map[string]int) batchView {
	v := batchView{ID: b.ID, Object: "batch", CreatedAt: b.CreatedAt, Total: b.Total, URL: "/v1/runs/batch/" + b.ID,
		Counts: batchCounts{Queued: counts[store.ItemQueued] + counts[store.ItemStarting], Running: counts[store.ItemRunning],
			Completed: counts[store.ItemCompleted], Failed: counts[store.ItemFailed], Cancelled: counts[store.ItemCancelled]}}
	if !b.CancelledAt.IsZero() {
		v.CancelledAt = &b.CancelledAt
	}
	switch {
	case !b.EndedAt.IsZero():
		v.EndedAt = &b.EndedAt
		v.Status = "completed"
		if v.CancelledAt != nil {
			v.Status = "cancelled"
		}
	case v.CancelledAt != nil:
		v.Status = "cancelling"
	default:
		v.Status = "in_progress"
	}
	return v
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// getBatch serves GET /v1/runs/batch/{id}?after=&limit=: the batch's
// progress and a page of its items.
func (s *Server) getBatch(w http.ResponseWriter, r *http.Request) {
	if s.batchesOff(w) {
		return
	}
	b, ok := s.batchOf(w, r)
	if !ok {
		return
	}
	st := s.batches.st
	q := r.URL.Query()
	limit := defaultBatchPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxBatchPage {
			writeError(w, errInvalidParam("limit", "invalid_limit", fmt.Sprintf("limit must be an integer from 0 (no items) to %d", maxBatchPage)))
			return
		}
		limit = n
	}
	after := -1
	if v := q.Get("after"); v != "" {
		idx, err := st.BatchItemIndex(b.ID, v)
		switch {
		case err == nil:
			after = idx
		case errors.Is(err, store.ErrNotFound):
			n, perr := strconv.Atoi(v)
			if perr != nil || n < 0 {
				writeError(w, errInvalidParam("after", "invalid_after", fmt.Sprintf("after must be an item's custom_id or index; this batch has no item %q", v)))
				return
			}
			after = n
		default:
			s.logger.Error("store: read batch item", "batch_id", b.ID, "error", err)
			writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be read right now; retry shortly"))
			return
		}
	}
	counts, err := st.BatchCounts(b.ID)
	var items []store.BatchItem
	var more bool
	if err == nil && limit > 0 {
		items, more, err = st.BatchItems(b.ID, after, limit, batchPageBytes)
	}
	if err != nil {
		s.logger.Error("store: read batch items", "batch_id", b.ID, "error", err)
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be read right now; retry shortly"))
		return
	}
	v := batchSummary(b, counts)
	v.Items = make([]batchItemView, 0, len(items))
	for _, it := range items {
		iv := batchItemView{Index: it.Index, CustomID: it.CustomID, Profile: it.Profile, Status: it.Status, RunID: it.RunID,
			Answer: it.Answer, Attempts: it.Attempts, StartedAt: timePtr(it.StartedAt), EndedAt: timePtr(it.EndedAt)}
		if iv.Status == store.ItemStarting {
			iv.Status = store.ItemQueued // its run is being admitted
		}
		if it.ErrorCode != "" {
			iv.Error = &batchItemErr{Code: it.ErrorCode, Message: it.ErrorMessage}
			if param, ok := budgetErrorParam[it.ErrorCode]; ok {
				iv.Error.Type, iv.Error.Param, iv.Error.Status = "invalid_request_error", &param, http.StatusUnprocessableEntity
			}
		}
		v.Items = append(v.Items, iv)
	}
	if limit > 0 {
		v.HasMore = &more
		if more {
			v.NextAfter = items[len(items)-1].CustomID
		}
	}
	writeJSON(w, http.StatusOK, v)
}

// listBatches serves GET /v1/runs/batch?limit=: the tenant's batches,
// newest first, without items.
func (s *Server) listBatches(w http.ResponseWriter, r *http.Request) {
	if s.batchesOff(w) {
		return
	}
	limit := 20
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, errInvalidParam("limit", "invalid_limit", "limit must be an integer from 1 to 100"))
			return
		}
		limit = n
	}
	st := s.batches.st
	bs, err := st.TenantBatches(principalOf(r).tenantID(), limit)
	out := struct {
		Object string      `json:"object"`
		Data   []batchView `json:"data"`
	}{Object: "list", Data: []batchView{}}
	for _, b := range bs {
		if err != nil {
			break
		}
		var counts map[string]int
		if counts, err = st.BatchCounts(b.ID); err == nil {
			out.Data = append(out.Data, batchSummary(b, counts))
		}
	}
	if err != nil {
		s.logger.Error("store: list batches", "error", err)
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "batches cannot be read right now; retry shortly"))
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// cancelBatch serves POST /v1/runs/batch/{id}/cancel: queued items are
// cancelled, running runs are cancelled (as DELETE /v1/runs/{id} does);
// it waits up to Config.CancelWait for them to end and answers with the
// batch. Cancelling a cancelled batch again is not an error; an ended
// batch answers 409.
func (s *Server) cancelBatch(w http.ResponseWriter, r *http.Request) {
	if s.batchesOff(w) {
		return
	}
	b, ok := s.batchOf(w, r)
	if !ok {
		return
	}
	m := s.batches
	if !b.EndedAt.IsZero() && b.CancelledAt.IsZero() {
		writeError(w, &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "batch_finished",
			Message: fmt.Sprintf("batch %s already ended (completed)", b.ID)})
		return
	}
	done, err := m.cancel(b.ID)
	if err != nil {
		s.logger.Error("store: cancel batch", "batch_id", b.ID, "error", err)
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be cancelled right now; retry shortly"))
		return
	}
	if done != nil {
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CancelWait)
		select {
		case <-done:
		case <-ctx.Done():
		}
		cancel()
	}
	b, err = m.st.Batch(b.ID)
	var counts map[string]int
	if err == nil {
		counts, err = m.st.BatchCounts(b.ID)
	}
	if err != nil {
		writeError(w, errServer(http.StatusServiceUnavailable, "store_unavailable", "the batch cannot be read right now; retry shortly"))
		return
	}
	writeJSON(w, http.StatusOK, batchSummary(b, counts))
}

// add registers an open batch with pending items not ended.
func (m *batchManager) add(b store.Batch, pending int, cancelled bool) *openBatch {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ob := m.open[b.ID]; ob != nil {
		return ob
	}
	ob := &openBatch{id: b.ID, tenant: b.TenantID, pending: pending, cancelled: cancelled, done: make(chan struct{})}
	m.open[b.ID] = ob
	t := m.tenant(b.TenantID)
	t.batches = append(t.batches, ob)
	return ob
}

// tenant returns (creating) a tenant's share. m.mu must be held.
func (m *batchManager) tenant(id string) *batchTenant {
	t := m.tenants[id]
	if t == nil {
		t = &batchTenant{}
		m.tenants[id] = t
	}
	return t
}

// ended is called with m.mu held when a batch's pending count may have
// reached 0: it forgets the batch and reports whether it ended now (the
// caller then records it with endBatch, outside the lock).
func (m *batchManager) ended(b *openBatch) bool {
	if b.pending > 0 || m.open[b.id] != b {
		return false
	}
	delete(m.open, b.id)
	t := m.tenants[b.tenant]
	t.batches = slices.DeleteFunc(t.batches, func(c *openBatch) bool { return c == b })
	if len(t.batches) == 0 && t.inFlight == 0 {
		delete(m.tenants, b.tenant)
	}
	close(b.done)
	return true
}

func (m *batchManager) endBatch(b *openBatch) {
	if err := m.st.EndBatch(b.id, time.Now().UTC()); err != nil {
		m.s.logger.Error("store: end batch", "batch_id", b.id, "error", err)
		return
	}
	m.s.logger.Info("batch ended", "batch_id", b.id, "tenant", b.tenant, "cancelled", b.cancelled)
}

// cancel cancels a batch: its queued items in the store, its running runs
// at the engine. done is closed when the batch has ended (nil if this
// gateway does not dispatch it).
func (m *batchManager) cancel(id string) (done <-chan struct{}, err error) {
	m.mu.Lock()
	b := m.open[id]
	if b != nil {
		// Before the store is read: a start under way then sees the flag
		// after it recorded its run, or this reads the run (startNext).
		b.cancelled = true
		done = b.done
	}
	m.mu.Unlock()
	n, err := m.st.CancelBatch(id, time.Now().UTC(), "cancelled", batchCancelledMessage)
	if err != nil {
		return nil, err
	}
	if b != nil {
		m.mu.Lock()
		b.pending -= int(n)
		end := m.ended(b)
		m.mu.Unlock()
		if end {
			m.endBatch(b)
		}
	}
	active, err := m.st.ActiveItems(id)
	if err != nil {
		return nil, err
	}
	for _, it := range active {
		if it.Status == store.ItemRunning && it.RunID != "" {
			if err := m.s.engine.Cancel(it.RunID, "batch cancelled"); err != nil && !errors.Is(err, actors.ErrRunFinished) {
				m.s.logger.Warn("cancel a batch's run", "batch_id", id, "run_id", it.RunID, "error", err)
			}
		}
	}
	return done, nil
}

// run is the dispatcher: it loads the open batches, then starts items as
// the tenants' limits allow until the Server stops. Owned by the Server
// (goBackground).
func (m *batchManager) run() {
	m.load()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	m.prune()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := m.dispatch()
		var retry <-chan time.Time
		if !next.IsZero() {
			timer.Reset(max(time.Millisecond, time.Until(next)))
			retry = timer.C
		}
		select {
		case <-m.s.stop:
			return
		case <-m.wake:
		case <-retry:
		case <-prune.C:
			m.prune()
		}
		timer.Stop()
	}
}

// prune deletes the batches that ended before Config.KeepRuns ago (their
// runs are pruned then too).
func (m *batchManager) prune() {
	if n, err := m.st.PruneBatches(time.Now().Add(-m.s.cfg.KeepRuns)); err != nil {
		m.s.logger.Error("store: prune batches", "error", err)
	} else if n > 0 {
		m.s.logger.Info("store: pruned ended batches", "batches", n)
	}
}

// dispatch starts items, one per tenant in turn, until none can start now.
// It returns when to look again for tenants paused by a refusal (zero:
// when woken).
func (m *batchManager) dispatch() time.Time {
	for {
		m.mu.Lock()
		ids := make([]string, 0, len(m.tenants))
		for id := range m.tenants {
			ids = append(ids, id)
		}
		m.mu.Unlock()
		slices.Sort(ids)
		progress := false
		var next time.Time
		for _, id := range ids {
			if isClosed(m.s.stop) {
				return time.Time{}
			}
			ok, retryAt := m.startNext(id)
			progress = progress || ok
			if !retryAt.IsZero() && (next.IsZero() || retryAt.Before(next)) {
				next = retryAt
			}
		}
		if !progress {
			return next
		}
	}
}

// limitOf is how many of a tenant's batch runs may go at once.
func (m *batchManager) limitOf(tn store.Tenant, known bool) int {
	if !known {
		return 1 // a deleted tenant: its items fail one by one
	}
	if c := tn.Limits.ConcurrentRuns; c > 0 {
		return int(min(c, maxBatchItems))
	}
	return m.inFlightDefault
}

// startNext starts the next item of a tenant if the tenant has room. It
// reports whether anything changed, and when the tenant may be tried
// again if a refusal paused it.
func (m *batchManager) startNext(tenant string) (progress bool, retryAt time.Time) {
	tn, known := m.s.tenancy.Tenant(tenant)
	limit := m.limitOf(tn, known)
	now := time.Now()
	m.mu.Lock()
	t := m.tenants[tenant]
	if t == nil {
		m.mu.Unlock()
		return false, time.Time{}
	}
	if now.Before(t.retryAt) {
		m.mu.Unlock()
		return false, t.retryAt
	}
	if t.inFlight >= limit {
		m.mu.Unlock()
		return false, time.Time{}
	}
	var b *openBatch
	for _, c := range t.batches {
		if !c.cancelled && !c.drained {
			b = c
			break
		}
	}
	if b == nil {
		m.mu.Unlock()
		return false, time.Time{}
	}
	t.inFlight++ // the slot is this start's until it ends
	m.mu.Unlock()

	// release gives the slot back; pause > 0 also holds the tenant back
	// that long, drained marks the batch's queue empty, failed counts the
	// item as ended.
	release := func(pause time.Duration, drained, failed bool) {
		m.mu.Lock()
		t.inFlight--
		if pause > 0 {
			t.retryAt = time.Now().Add(pause)
			retryAt = t.retryAt
		}
		if drained {
			b.drained = true
		}
		end := false
		if failed {
			b.pending--
			end = m.ended(b)
		}
		if len(t.batches) == 0 && t.inFlight == 0 {
			delete(m.tenants, tenant)
		}
		m.mu.Unlock()
		if end {
			m.endBatch(b)
		}
	}
	it, err := m.st.NextQueuedItem(b.id)
	if errors.Is(err, store.ErrNotFound) {
		release(0, true, false)
		return true, time.Time{}
	}
	if err != nil {
		m.s.logger.Error("store: next batch item", "batch_id", b.id, "error", err)
		release(time.Second, false, false)
		return false, retryAt
	}
	claim := store.BatchItem{BatchID: b.id, Index: it.Index, Status: store.ItemStarting}
	if ok, err := m.st.MoveBatchItem(claim, store.ItemQueued, 0); !ok || err != nil {
		if err != nil {
			m.s.logger.Error("store: claim batch item", "batch_id", b.id, "index", it.Index, "error", err)
			release(time.Second, false, false)
			return false, retryAt
		}
		release(0, false, false) // cancelled meanwhile
		return true, time.Time{}
	}
	fail := func(code, msg string) {
		f := store.BatchItem{BatchID: b.id, Index: it.Index, Status: store.ItemFailed, ErrorCode: code, ErrorMessage: msg, EndedAt: time.Now().UTC()}
		if _, err := m.st.MoveBatchItem(f, store.ItemStarting, 0); err != nil {
			m.s.logger.Error("store: fail batch item", "batch_id", b.id, "index", it.Index, "error", err)
		}
		release(0, false, true)
	}
	if !known {
		fail("tenant_not_found", "the batch's tenant no longer exists")
		return true, time.Time{}
	}
	budget, be := itemBudget(it.Budget)
	if be != nil {
		fail(be.Code, be.Message)
		return true, time.Time{}
	}
	req := actors.RunRequest{Profile: it.Profile, Query: it.Query, Seed: it.Seed, MaxTokens: it.MaxTokens, Budget: budget}
	m.startMu.Lock()
	hub, e := m.s.start(principal{tenant: tn}, req)
	if e != nil {
		m.startMu.Unlock()
		if pause, again := m.refusedFor(tn, req, e); again {
			cancelled := m.requeue(b, it.Index, store.ItemStarting)
			release(pause, false, cancelled)
			return cancelled, retryAt
		}
		fail(e.Code, e.Message)
		return true, time.Time{}
	}
	running := store.BatchItem{BatchID: b.id, Index: it.Index, Status: store.ItemRunning, RunID: hub.RunID, StartedAt: time.Now().UTC()}
	if _, err := m.st.MoveBatchItem(running, store.ItemStarting, 1); err != nil {
		m.s.logger.Error("store: batch item started", "batch_id", b.id, "index", it.Index, "run_id", hub.RunID, "error", err)
	}
	m.mu.Lock()
	m.runs[hub.RunID] = &batchRun{b: b, idx: it.Index, runID: hub.RunID, attempts: it.Attempts + 1}
	cancelled := b.cancelled
	m.mu.Unlock()
	m.startMu.Unlock()
	if cancelled {
		// The batch was cancelled while this run started (cancel did not
		// see it running).
		_ = m.s.engine.Cancel(hub.RunID, "batch cancelled")
	}
	return true, time.Time{}
}

// refusedFor decides what a refused start means: again, after pause, for a
// limit that passes with time (requests or tokens per minute, concurrent
// runs, the engine's share, a budget held by running runs, a service
// briefly unavailable); or not (the budget is spent, the profile is gone
// or not allowed, the run is larger than the tenant's tokens per minute):
// the item fails with the refusal.
func (m *batchManager) refusedFor(tn store.Tenant, req actors.RunRequest, e *apiError) (pause time.Duration, again bool) {
	pause = time.Duration(max(1, e.RetryAfter)) * time.Second
	switch {
	case e.Status == http.StatusServiceUnavailable:
		return pause, true
	case e.Status != http.StatusTooManyRequests:
		return 0, false
	case e.Code == "token_budget":
		// Running runs may settle for less than they reserved (the
		// limiter then says 1 s); a budget spent for its period is not
		// waited out.
		return pause, e.RetryAfter <= 1
	case e.Code == "tokens_per_minute":
		if tpm := tn.Limits.TokensPerMinute; tpm > 0 {
			if n, err := m.s.engine.Reservation(req); err == nil && n > tpm {
				return 0, false // never fits in a minute
			}
		}
	}
	return pause, true
}

// runEnded is called (by Server.account) when an admitted run has ended
// and been billed; if it is a batch item's, the item gets its outcome and
// its slot is free. Safe on a nil manager (no tenancy).
func (m *batchManager) runEnded(hub *actors.Hub) {
	if m == nil {
		return
	}
	r, anyOpen := m.take(hub.RunID)
	if r == nil && anyOpen {
		// A start under way may not have registered this run yet.
		m.startMu.Lock()
		m.startMu.Unlock() // empty: it only waits for the start under way
		r, _ = m.take(hub.RunID)
	}
	if r != nil {
		m.finishRun(r, hub)
	}
}

// take removes and returns a batch run (nil if runID is none), and
// reports whether any batch is open.
func (m *batchManager) take(runID string) (*batchRun, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.runs[runID]
	delete(m.runs, runID)
	return r, len(m.open) > 0
}

// runOutcome reads a run's end from its log.
func runOutcome(evs []*messages.RunEvent) (status, answer, code, msg string) {
	for i := len(evs) - 1; i >= 0; i-- {
		switch k := evs[i].Kind.(type) {
		case *messages.RunEvent_RunCompleted:
			return store.ItemCompleted, k.RunCompleted.Answer, "", ""
		case *messages.RunEvent_RunFailed:
			code := k.RunFailed.Code
			if code == "" {
				code = "run_failed"
			}
			return store.ItemFailed, "", code, k.RunFailed.Reason
		case *messages.RunEvent_RunCancelled:
			return store.ItemCancelled, "", "cancelled", k.RunCancelled.Reason
		}
	}
	return store.ItemFailed, "", "run_abandoned", "the run ended without an outcome (it was lost with its gateway)"
}

// finishRun is finish with the outcome in hub's log.
func (m *batchManager) finishRun(r *batchRun, hub *actors.Hub) {
	status, answer, code, msg := runOutcome(hub.Events(1))
	m.finish(r, status, answer, code, msg)
}

// finish records the outcome of an item's ended run and frees its slot.
// A run cut off by a shutdown queues its item again (bounded by
// maxItemAttempts).
func (m *batchManager) finish(r *batchRun, status, answer, code, msg string) {
	m.mu.Lock()
	batchCancelled := r.b.cancelled
	m.mu.Unlock()
	shutdown := m.s.engine.ShuttingDown() || isClosed(m.s.stop) || msg == shutdownCancelReason
	requeue := status == store.ItemCancelled && shutdown && !batchCancelled
	it := store.BatchItem{BatchID: r.b.id, Index: r.idx, Status: status, RunID: r.runID, Answer: answer, ErrorCode: code,
		ErrorMessage: msg, EndedAt: time.Now().UTC()}
	if requeue && r.attempts >= maxItemAttempts {
		requeue = false
		it.Status, it.ErrorCode = store.ItemFailed, "run_lost"
		it.ErrorMessage = fmt.Sprintf("the item's run was cut off by a shutdown %d times", r.attempts)
	}
	itemEnded := true
	if requeue {
		itemEnded = m.requeue(r.b, r.idx, store.ItemRunning)
	} else if _, err := m.st.MoveBatchItem(it, store.ItemRunning, 0); err != nil {
		// The item stays running in the store: the next start reads its run.
		m.s.logger.Error("store: batch item ended", "batch_id", r.b.id, "index", r.idx, "run_id", r.runID, "error", err)
	}
	m.mu.Lock()
	t := m.tenant(r.b.tenant)
	t.inFlight--
	end := false
	if itemEnded {
		r.b.pending--
		end = m.ended(r.b)
	} else {
		r.b.drained = false
	}
	if len(t.batches) == 0 && t.inFlight == 0 {
		delete(m.tenants, r.b.tenant)
	}
	m.mu.Unlock()
	if end {
		m.endBatch(r.b)
	}
	m.poke()
}

// requeue puts an item back in the queue (from starting or running),
// unless its batch was cancelled meanwhile: then the item is cancelled,
// and requeue reports true (it ended). The item's status is written before
// the batch's flag is read, as cancel sets the flag before it cancels the
// queued items: one of the two cancels it, never neither, and the one that
// moves it counts it.
func (m *batchManager) requeue(b *openBatch, idx int, from string) (cancelled bool) {
	back := store.BatchItem{BatchID: b.id, Index: idx, Status: store.ItemQueued}
	if _, err := m.st.MoveBatchItem(back, from, 0); err != nil {
		m.s.logger.Error("store: requeue batch item", "batch_id", b.id, "index", idx, "error", err)
		return false
	}
	m.mu.Lock()
	flagged := b.cancelled
	m.mu.Unlock()
	if !flagged {
		return false
	}
	gone := store.BatchItem{BatchID: b.id, Index: idx, Status: store.ItemCancelled, ErrorCode: "cancelled",
		ErrorMessage: batchCancelledMessage, EndedAt: time.Now().UTC()}
	ok, err := m.st.MoveBatchItem(gone, store.ItemQueued, 0)
	if err != nil {
		m.s.logger.Error("store: cancel batch item", "batch_id", b.id, "index", idx, "error", err)
	}
	return ok
}

// load reads the open batches from the store (at start): items a previous
// life was starting go back to the queue (a run it may have started is
// billed by recoverOpen but not followed), running items' runs are
// followed (still going on a node), read (kept finished) or, if gone,
// started again.
func (m *batchManager) load() {
	if m.s.cfg.Ready != nil {
		// In a cluster, the nodes that may still run these must be known
		// before their runs are looked for (as recoverOpen waits).
		deadline := time.Now().Add(30 * time.Second)
		for m.s.cfg.Ready() != nil && time.Now().Before(deadline) {
			select {
			case <-m.s.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	open, err := m.st.OpenBatches()
	if err != nil {
		m.s.logger.Error("store: open batches", "error", err)
		return
	}
	for _, b := range open {
		if !b.CreatedAt.Before(m.since) {
			continue // created by this gateway's createBatch, which added it
		}
		counts, err := m.st.BatchCounts(b.ID)
		if err != nil {
			m.s.logger.Error("store: batch counts", "batch_id", b.ID, "error", err)
			continue
		}
		active, err := m.st.ActiveItems(b.ID)
		if err != nil {
			m.s.logger.Error("store: active batch items", "batch_id", b.ID, "error", err)
			continue
		}
		ob := m.add(b, counts[store.ItemQueued]+counts[store.ItemStarting]+counts[store.ItemRunning], !b.CancelledAt.IsZero())
		for _, it := range active {
			if it.Status == store.ItemStarting {
				back := store.BatchItem{BatchID: b.ID, Index: it.Index, Status: store.ItemQueued}
				if _, err := m.st.MoveBatchItem(back, store.ItemStarting, 0); err != nil {
					m.s.logger.Error("store: requeue batch item", "batch_id", b.ID, "index", it.Index, "error", err)
				}
				continue
			}
			m.follow(ob, it)
		}
		m.mu.Lock()
		end := m.ended(ob)
		m.mu.Unlock()
		if end {
			m.endBatch(ob)
		} else if ob.cancelled {
			// Cancelled before the restart: what was queued stays
			// cancelled (CancelBatch), what runs is stopped again.
			if _, err := m.cancel(ob.id); err != nil {
				m.s.logger.Error("store: cancel batch", "batch_id", ob.id, "error", err)
			}
		}
		m.s.logger.Info("batch taken up after a (re)start", "batch_id", b.ID, "tenant", b.TenantID, "active", len(active))
	}
}

// follow takes up a running item found by load.
func (m *batchManager) follow(b *openBatch, it store.BatchItem) {
	hub, err := m.s.engine.Hub(it.RunID)
	if err != nil {
		if h := m.s.restore(it.RunID); h != nil {
			hub, err = h, nil
		} else {
			hub, err = m.s.engine.Attach(it.RunID)
		}
	}
	r := &batchRun{b: b, idx: it.Index, runID: it.RunID, attempts: it.Attempts}
	m.mu.Lock()
	m.tenant(b.tenant).inFlight++
	if err == nil {
		m.runs[it.RunID] = r
	}
	m.mu.Unlock()
	if err != nil {
		// Gone with the gateway that started it: start it again.
		m.s.logger.Warn("a batch item's run is gone; starting it again", "batch_id", b.id, "index", it.Index, "run_id", it.RunID)
		// As if cut off by a shutdown: finish queues the item again.
		m.finish(r, store.ItemCancelled, "", "cancelled", shutdownCancelReason)
		return
	}
	if hub.Done() {
		if r, _ := m.take(it.RunID); r != nil {
			m.finishRun(r, hub)
		}
		return
	}
	// Still going on a node: runEnded hears of it if recoverOpen bills it;
	// this watcher makes sure of it either way.
	m.s.goBackground(func() {
		if hub.WaitDone(m.s.ctx) != nil {
			return
		}
		if r, _ := m.take(it.RunID); r != nil {
			m.finishRun(r, hub)
		}
	})
}
