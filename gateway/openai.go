package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// modelPrefix turns a profile into an OpenAI model name: "qlc-balanced".
const modelPrefix = "qlc-"

// chatRequest is the part of OpenAI's chat completion request QLC uses;
// other fields are accepted and ignored, as a drop-in endpoint must.
type chatRequest struct {
	Model         string        `json:"model"`
	Messages      []chatMessage `json:"messages"`
	Stream        bool          `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
	MaxTokens           *int   `json:"max_tokens"`
	MaxCompletionTokens *int   `json:"max_completion_tokens"`
	Seed                *int64 `json:"seed"`
	N                   *int   `json:"n"`
	// QLC's cost/quality fields, top level (budget.go).
	budgetFields
}

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

// text returns a message's content: a string, or an array of text parts.
func (m chatMessage) text() (string, error) {
	if len(m.Content) == 0 || string(m.Content) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", errors.New("content must be a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type != "text" {
			return "", fmt.Errorf("content part type %q is not supported (only text)", p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// parsed is a validated chat request.
type parsedChat struct {
	profile   string
	thinking  bool // the model is qlc-<profile>-thinking
	query     string
	history   []stagework.Message
	maxTokens int
	seed      int64
	usage     bool
}

func (s *Server) parseChat(who principal, req *chatRequest) (*parsedChat, *apiError) {
	if req.Model == "" {
		return nil, errInvalidParam("model", "missing_model", "model is required, e.g. \"qlc-"+s.engine.Stages().DefaultProfile+"\"")
	}
	profile, thinking, ok := s.resolveModel(who, req.Model)
	if !ok {
		return nil, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: ptr("model"),
			Message: fmt.Sprintf("The model %q does not exist; use one of: %s", req.Model, strings.Join(s.modelNames(who), ", "))}
	}
	if req.N != nil && *req.N != 1 {
		return nil, errInvalidParam("n", "unsupported_n", "only n=1 is supported")
	}
	if len(req.Messages) == 0 {
		return nil, errInvalidParam("messages", "empty_messages", "messages must hold at least one user message")
	}
	p := &parsedChat{profile: profile, thinking: thinking, usage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
	total := 0
	for i, m := range req.Messages {
		txt, err := m.text()
		if err != nil {
			return nil, errInvalidParam(fmt.Sprintf("messages[%d].content", i), "invalid_content", err.Error())
		}
		switch m.Role {
		case "system", "developer", "user", "assistant", "tool":
		default:
			return nil, errInvalidParam(fmt.Sprintf("messages[%d].role", i), "invalid_role", fmt.Sprintf("unknown role %q", m.Role))
		}
		total += len(txt)
		if i == len(req.Messages)-1 {
			if m.Role != "user" {
				return nil, errInvalidParam(fmt.Sprintf("messages[%d].role", i), "last_message_not_user", "the last message must be the user's question")
			}
			p.query = txt
		} else {
			p.history = append(p.history, stagework.Message{Role: m.Role, Content: txt})
		}
	}
	if e := s.checkQuery(p.query, "messages"); e != nil {
		return nil, e
	}
	if total > s.cfg.MaxQueryBytes {
		return nil, errInvalidParam("messages", "query_too_long", fmt.Sprintf("the conversation is %d bytes; the limit is %d", total, s.cfg.MaxQueryBytes))
	}
	for _, mt := range []*int{req.MaxTokens, req.MaxCompletionTokens} {
		if mt != nil {
			if *mt < 1 || *mt > maxTokensLimit {
				return nil, errInvalidParam("max_tokens", "invalid_max_tokens", fmt.Sprintf("max_tokens must be between 1 and %d", maxTokensLimit))
			}
			p.maxTokens = *mt
		}
	}
	if req.Seed != nil {
		p.seed = *req.Seed
	}
	return p, nil
}

func ptr[T any](v T) *T { return &v }

// resolveModel maps an OpenAI model name to a profile: "qlc-<profile>",
// or "qlc-<profile>-thinking" for the same profile with its earlier steps
// streamed as reasoning. A profile's own name wins: with profiles "x" and
// "x-thinking" both defined, "qlc-x-thinking" is the profile x-thinking
// (and the thinking variant of x is not reachable; /v1/models does not
// list it). The tenant's own profiles (tenantprofiles.go) are its models
// too, and no other tenant's.
func (s *Server) resolveModel(who principal, model string) (profile string, thinking, ok bool) {
	name, ok := strings.CutPrefix(model, modelPrefix)
	if !ok || name == "" {
		return "", false, false
	}
	stages := s.engine.Stages()
	exists := func(n string) bool {
		if n == stagework.AutoProfile {
			return stages.Routing != nil // "qlc-auto": routing picks the profile
		}
		if _, _, own := s.ownProfile(who.tenant, n); own {
			return true
		}
		_, err := stages.Profile(n)
		return err == nil
	}
	if exists(name) {
		return name, false, true
	}
	if base, cut := strings.CutSuffix(name, thinkingSuffix); cut && base != "" {
		if exists(base) {
			return base, true, true
		}
	}
	return "", false, false
}

// thinkingSuffix ends the name of a profile's thinking model.
const thinkingSuffix = "-thinking"

// modelEntry is one model of /v1/models: its name and the profile it
// runs; own: the tenant's own profile.
type modelEntry struct {
	name, profile string
	own           bool
}

// models lists every model: "qlc-<profile>" for each profile, then
// "qlc-<profile>-thinking" for each profile whose thinking name is not
// itself a profile's name (see resolveModel).
func (s *Server) models(who principal) []modelEntry {
	stages := s.engine.Stages()
	names := stages.ProfileNames()
	own := map[string]bool{}
	if !who.admin && who.tenant.Limits.MaxProfiles > 0 {
		for _, tp := range s.tenancy.TenantProfilesOf(who.tenantID()) {
			if !own[tp.Name] && stages.Profiles[tp.Name] == nil {
				names = append(names, tp.Name)
			}
			own[tp.Name] = true
		}
	}
	exists := func(n string) bool {
		_, err := stages.Profile(n)
		return err == nil || own[n]
	}
	out := make([]modelEntry, 0, 2*len(names))
	if stages.Routing != nil {
		names = append([]string{stagework.AutoProfile}, names...)
	}
	for _, n := range names {
		out = append(out, modelEntry{modelPrefix + n, n, own[n]})
	}
	for _, n := range names {
		if n == stagework.AutoProfile {
			out = append(out, modelEntry{modelPrefix + n + thinkingSuffix, n, false})
			continue
		}
		if !exists(n + thinkingSuffix) {
			out = append(out, modelEntry{modelPrefix + n + thinkingSuffix, n, own[n]})
		}
	}
	return out
}

func (s *Server) modelNames(who principal) []string {
	var out []string
	for _, m := range s.models(who) {
		out = append(out, m.name)
	}
	return out
}

// listModels lists the profiles as models (see models): those the tenant
// may use.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	who := principalOf(r)
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
		// Local marks a model whose profile runs on the model servers
		// found on this machine (stagework/discover).
		Local bool `json:"local,omitempty"`
		// Owner is "tenant" for a model of the tenant's own profile
		// (owned_by is then the tenant's id).
		Owner string `json:"owner,omitempty"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, m := range s.models(who) {
		if m.own {
			out.Data = append(out.Data, model{ID: m.name, Object: "model", OwnedBy: who.tenantID(), Owner: "tenant"})
			continue
		}
		if who.allows(m.profile) || m.profile == stagework.AutoProfile && s.autoAllowed(who) {
			p, _ := s.engine.Stages().Profile(m.profile)
			out.Data = append(out.Data, model{ID: m.name, Object: "model", Created: 0, OwnedBy: "qlc", Local: p != nil && p.Local})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	if s.refuseSaturated(w, r) {
		return
	}
	var req chatRequest
	if e := s.decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	who := principalOf(r)
	p, e := s.parseChat(who, &req)
	if e != nil {
		writeError(w, e)
		return
	}
	budget, e := req.budget()
	if e != nil {
		writeError(w, e)
		return
	}
	if req.Stream {
		done, e := s.streamSlot(who)
		if e != nil {
			writeError(w, e)
			return
		}
		defer done()
	}
	hub, e := s.start(who, actors.RunRequest{Profile: p.profile, Query: p.query, History: p.history, Seed: p.seed, MaxTokens: p.maxTokens,
		NoCache: noCache(r, nil), Ctx: r.Context(), Budget: budget})
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("X-QLC-Run-Id", hub.RunID)
	setBudgetHeaders(w, hub)
	final := ""
	if prof := s.hubProfile(hub); prof != nil && len(prof.Stages) > 0 {
		// The profile's last step is the final one until a StageStarted
		// says otherwise (a council's fallback answer).
		final = prof.Stages[len(prof.Stages)-1].StepID()
	}
	c := &chunkWriter{id: "chatcmpl-" + strings.TrimPrefix(hub.RunID, "run_"), model: req.Model, created: time.Now().Unix(), usage: p.usage,
		view: newChatView(final, p.thinking)}
	if !req.Stream {
		s.chatBlocking(w, r, hub, c)
		return
	}
	t := newSSETransport(w, s.cfg.WriteTimeout, s.cfg.MaxEventBytes)
	c.sse = t
	if err := c.writeRole(); err != nil {
		s.cancelIfRunning(hub, "client disconnected")
		return
	}
	err := pump(r.Context(), hub.Subscribe(1), c, s.cfg.PingInterval, 0)
	if err != nil && !errors.Is(err, errChatEnded) {
		// The client went away (or could not keep up): nothing may keep
		// streaming or billing for it.
		s.cancelIfRunning(hub, "client disconnected")
	}
}

func (s *Server) cancelIfRunning(hub *actors.Hub, reason string) {
	if !hub.Done() {
		if err := s.engine.Cancel(hub.RunID, reason); err == nil {
			s.logger.Info("run cancelled: its OpenAI client left", "run_id", hub.RunID)
		}
	}
}

func (s *Server) chatBlocking(w http.ResponseWriter, r *http.Request, hub *actors.Hub, c *chunkWriter) {
	// The log is read whole once the run ends: held in memory until then
	// (the ledger drops a recorded run's log for the store moments after
	// its end, and reading it back would cost a load from the store).
	release := hub.Hold()
	defer release()
	if err := hub.WaitDone(r.Context()); err != nil {
		s.cancelIfRunning(hub, "client disconnected")
		return
	}
	evs := hub.Events(1)
	if len(evs) == 0 {
		// The log left memory for the store, which no longer gives it back.
		e := errServer(http.StatusServiceUnavailable, "run_unavailable", "the run ended but its log could not be read; read it again with GET /v1/runs/"+hub.RunID)
		e.RetryAfter = 1
		writeError(w, e)
		return
	}
	switch k := evs[len(evs)-1].Kind.(type) {
	case *messages.RunEvent_RunCompleted:
		u := k.RunCompleted.Usage
		msg := map[string]any{"role": "assistant", "content": k.RunCompleted.Answer, "refusal": nil}
		if c.view.thinking {
			// The same reasoning a streamed completion sends, whole.
			var rs reasoningText
			for _, ev := range evs {
				c.view.add(ev, &rs)
			}
			c.view.drain(&rs)
			msg["reasoning_content"] = rs.String()
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"id": c.id, "object": "chat.completion", "created": c.created, "model": c.model, "system_fingerprint": nil,
			"choices": []map[string]any{{"index": 0, "message": msg, "logprobs": nil, "finish_reason": "stop"}},
			"usage":   map[string]int64{"prompt_tokens": u.GetPromptTokens(), "completion_tokens": u.GetCompletionTokens(), "total_tokens": u.GetTotalTokens()},
		})
	case *messages.RunEvent_RunFailed:
		writeError(w, runFailedError(k.RunFailed))
	case *messages.RunEvent_RunCancelled:
		// Cancelled on purpose (DELETE /v1/runs/{id}, or the server going
		// away): a conflict with the request, not a server fault.
		writeError(w, &apiError{Status: http.StatusConflict, Type: "invalid_request_error", Code: "run_cancelled",
			Message: "the run was cancelled: " + k.RunCancelled.Reason})
	}
}

func runFailedError(f *messages.RunFailed) *apiError {
	if f.GetCode() == actors.CodeQueueTimeout {
		// It waited for a node's run slot and left the queue before any
		// work: the same answer as a refusal at the door.
		e := errServer(http.StatusServiceUnavailable, "cluster_saturated", "the run waited too long for a node with room; retry after the Retry-After")
		e.RetryAfter = 1
		return e
	}
	return errServer(http.StatusBadGateway, "run_failed", "the consensus run failed: "+f.Reason)
}

// reasoningText collects a chatView's reasoning (a non-streamed completion).
type reasoningText struct{ strings.Builder }

func (r *reasoningText) reasoning(s string) { r.WriteString(s) }
func (r *reasoningText) content(string)     {}

// errChatEnded ends a chunk stream once the run's outcome was written.
var errChatEnded = errors.New("gateway: chat stream ended")

// chunkWriter is the transport of an OpenAI streamed chat completion: it
// writes what its chatView makes of the run's events as
// chat.completion.chunk events — the final step's text as delta.content,
// and for a -thinking model every earlier step's text as
// delta.reasoning_content — and ends with a finish chunk, the usage chunk
// when asked for, and [DONE]. Without -thinking, earlier steps produce
// nothing but keep-alive comments while they run. Consecutive text of one
// field within a batch is coalesced into one chunk and a longer text is
// split, so no chunk is longer than the server's MaxEventBytes. Between
// batches it holds its view's state: for steps whose reasoning waits, the
// log's own events (shared, read-only), never a copy of their text.
type chunkWriter struct {
	sse     *sseTransport
	id      string
	model   string
	created int64
	usage   bool
	view    chatView

	// The batch being encoded, during writeEvents only (a transport holds
	// no buffer between calls).
	b       []byte
	open    chunkField // the field of the text chunk open at the end of b
	openLen int        // escaped text bytes in it
	err     error      // the first write error of the batch
}

// chunkField is the delta field a text chunk carries.
type chunkField uint8

const (
	fieldNone chunkField = iota
	fieldContent
	fieldReasoning
)

func (c *chunkWriter) head(b []byte) []byte {
	b = append(b, `data: {"id":"`...)
	b = append(b, c.id...)
	b = append(b, `","object":"chat.completion.chunk","created":`...)
	b = strconv.AppendInt(b, c.created, 10)
	b = append(b, `,"model":"`...)
	b = appendEscapedMax(b, c.model, shortFieldMax)
	return append(b, `","system_fingerprint":null,"choices":[`...)
}

func (c *chunkWriter) tail(b []byte) []byte {
	b = append(b, ']')
	if c.usage {
		b = append(b, `,"usage":null`...)
	}
	return append(b, "}\n\n"...)
}

func (c *chunkWriter) writeRole() error {
	bp := getBuf(writeBufSize(c.sse.max))
	defer putBuf(bp)
	b := c.head(*bp)
	b = append(b, `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`...)
	b = c.tail(b)
	if err := c.sse.write(b); err != nil {
		return err
	}
	return c.sse.flush()
}

func (c *chunkWriter) reasoning(s string) { c.text(fieldReasoning, s) }
func (c *chunkWriter) content(s string)   { c.text(fieldContent, s) }

// text appends s to the open chunk of field f, opening chunks as needed.
func (c *chunkWriter) text(f chunkField, s string) {
	budget := textBudget(c.sse.max)
	for len(s) > 0 && c.err == nil {
		if c.open != f || c.openLen >= budget {
			c.closeChunk()
			c.room(c.sse.max)
			c.b = c.head(c.b)
			if f == fieldReasoning {
				c.b = append(c.b, `{"index":0,"delta":{"reasoning_content":"`...)
			} else {
				c.b = append(c.b, `{"index":0,"delta":{"content":"`...)
			}
			c.open, c.openLen = f, 0
		}
		n := len(s)
		if escapedLen(s) > budget-c.openLen {
			if n = escapedPrefix(s, budget-c.openLen); n == 0 {
				c.openLen = budget // the next unit does not fit: a new chunk
				continue
			}
		}
		l := len(c.b)
		c.b = appendEscaped(c.b, s[:n])
		c.openLen += len(c.b) - l
		s = s[n:]
	}
}

// closeChunk ends the open text chunk, if any.
func (c *chunkWriter) closeChunk() {
	if c.open == fieldNone {
		return
	}
	c.b = append(c.b, `"},"logprobs":null,"finish_reason":null}`...)
	c.b = c.tail(c.b)
	c.open = fieldNone
}

// room makes room for n more bytes in the batch's buffer, writing out what
// it holds when needed. No text chunk may be open.
func (c *chunkWriter) room(n int) {
	if len(c.b)+n > cap(c.b) && c.err == nil {
		c.err = c.sse.write(c.b)
		c.b = c.b[:0]
	}
}

func (c *chunkWriter) writeEvents(evs []*messages.RunEvent, off int) error {
	max := c.sse.max
	bp := getBuf(writeBufSize(max))
	c.b, c.open, c.err = *bp, fieldNone, nil
	defer func() {
		*bp, c.b = c.b, nil
		putBuf(bp)
	}()
	var end error
	for i, ev := range evs {
		if i == 0 && off > 0 {
			if d := ev.GetTokenDelta(); d != nil && off < len(d.Text) {
				// A reader resumed inside a delta: the rest of it.
				ev = &messages.RunEvent{Seq: ev.Seq, Kind: &messages.RunEvent_TokenDelta{TokenDelta: &messages.TokenDelta{
					Stage: d.Stage, Step: d.Step, Text: d.Text[off:], Tokens: d.Tokens}}}
			}
		}
		if code, msg := c.view.add(ev, c); code != "" {
			c.closeChunk()
			c.room(max)
			c.b = appendChunkError(c.b, "server_error", code, msg, textBudget(max))
			end = errChatEnded
		}
		switch k := ev.Kind.(type) {
		case *messages.RunEvent_RunCompleted:
			c.view.drain(c)
			c.closeChunk()
			c.room(max)
			c.b = c.head(c.b)
			c.b = append(c.b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}`...)
			c.b = c.tail(c.b)
			if c.usage {
				c.room(max)
				c.b = append(c.b, `data: {"id":"`...)
				c.b = append(c.b, c.id...)
				c.b = append(c.b, `","object":"chat.completion.chunk","created":`...)
				c.b = strconv.AppendInt(c.b, c.created, 10)
				c.b = append(c.b, `,"model":"`...)
				c.b = appendEscapedMax(c.b, c.model, shortFieldMax)
				c.b = append(c.b, `","system_fingerprint":null,"choices":[]`...)
				c.b = appendUsage(c.b, k.RunCompleted.Usage)
				c.b = append(c.b, "}\n\n"...)
			}
			c.b = append(c.b, "data: [DONE]\n\n"...)
			end = errChatEnded
		case *messages.RunEvent_RunFailed:
			c.closeChunk()
			c.room(max)
			c.b = appendChunkError(c.b, "server_error", "run_failed", "the consensus run failed: "+k.RunFailed.Reason, textBudget(max))
			end = errChatEnded
		case *messages.RunEvent_RunCancelled:
			c.closeChunk()
			c.room(max)
			c.b = appendChunkError(c.b, "server_error", "run_cancelled", "the run was cancelled: "+k.RunCancelled.Reason, textBudget(max))
			end = errChatEnded
		}
		if end != nil || c.err != nil {
			break
		}
	}
	c.closeChunk()
	if c.err != nil {
		return c.err
	}
	if err := c.sse.write(c.b); err != nil {
		return err
	}
	if err := c.sse.flush(); err != nil {
		return err
	}
	return end
}

// appendChunkError writes an error event after HTTP 200, as OpenAI does; the
// message is cut to long encoded bytes.
func appendChunkError(b []byte, typ, code, msg string, long int) []byte {
	b = append(b, `data: {"error":{"message":"`...)
	b = appendEscapedMax(b, msg, long)
	b = append(b, `","type":"`...)
	b = append(b, typ...)
	b = append(b, `","param":null,"code":"`...)
	b = append(b, code...)
	return append(b, "\"}}\n\n"...)
}

func (c *chunkWriter) writeLagged(uint64) error {
	bp := getBuf(writeBufSize(c.sse.max))
	defer putBuf(bp)
	b := appendChunkError(*bp, "server_error", "lagged", "the client fell too far behind the stream", textBudget(c.sse.max))
	if err := c.sse.write(b); err != nil {
		return err
	}
	return c.sse.flush()
}

func (c *chunkWriter) ping() error { return c.sse.ping() }

// chatSink receives what a chatView makes of a run's events, in order.
type chatSink interface {
	reasoning(s string) // text of delta.reasoning_content
	content(s string)   // text of delta.content: the answer
}

// chatView turns a run's log into what an OpenAI chat client sees: the
// final step's text as the answer (content) and, for a -thinking model,
// every earlier step's text as reasoning. It depends only on the events,
// in seq order, never on how they were batched: a streamed and a
// non-streamed completion carry the same reasoning.
//
// Parallel steps' tokens interleave in the log; the reasoning shows one
// step at a time, in the order the steps started, each whole after a
// header line ("### Proposer p1.2 · sim-medium"). The first started step is
// live: its header goes out as it starts and its tokens as they arrive.
// The others wait: the view holds the log's own events (their deltas, or
// the output of a step that completed), never a copy of their text. When
// the live step ends, every waiting step that ended since goes out whole,
// in start order, and the first one still under way becomes live (its
// text so far, then its tokens as they arrive). Between steps come short
// lines: a step left out, a restart (then the redo), a ranking, a note.
//
// The final step is the one whose StageStarted says final (the profile's
// last step until then): a council whose chairman failed gets a synthetic
// final step "answer". If the final step's text that already went out as
// content becomes void (restarted, left out, replaced), add says the
// stream cannot go on.
type chatView struct {
	thinking bool
	final    string // the final step's id
	sent     bool   // some of the final step's text went out as content

	// queue holds reasoning not yet wholly out, in start order; queue[0]
	// is live once headOut. steps indexes its items by step id.
	queue   []*viewItem
	steps   map[string]*viewItem
	headOut bool // queue[0]'s header and text so far are out: its tokens go out as they arrive
	closing bool // queue[0] ended; it leaves the queue at the next event not about it (its ranking or note follow it)
	nl      int  // trailing newlines of the reasoning so far (at most 2); -1 before any
	note    string
}

// viewItem is a step of the reasoning, or a line on its own (line != "").
type viewItem struct {
	id, title, model string
	line             string
	deltas           []*messages.TokenDelta // text of its current attempt while it waits
	output           string                 // its whole text, once it completed while waiting
	done             bool                   // output is set
	ended            bool                   // completed or left out
	before, after    []string               // lines after its header (restarts) and after its text
}

func newChatView(final string, thinking bool) chatView {
	return chatView{final: final, thinking: thinking, steps: map[string]*viewItem{}, nl: -1}
}

// maxLine bounds a line of reasoning (a note, a reason) in bytes.
const maxLine = 1024

// synthProvider is the provider of a step QLC writes itself (a tally).
const synthProvider = "qlc"

// add applies one event. A non-empty code (with a message) says the
// stream cannot go on.
func (v *chatView) add(ev *messages.RunEvent, out chatSink) (code, msg string) {
	if v.closing && !v.aboutHead(ev) {
		v.advance(out)
	}
	switch k := ev.Kind.(type) {
	case *messages.RunEvent_TokenDelta:
		d := k.TokenDelta
		id := chatStepID(d.Step, d.Stage)
		if id == v.final {
			if d.Text != "" {
				out.content(d.Text)
				v.sent = true
			}
			return "", ""
		}
		if it := v.steps[id]; it != nil {
			if v.live(it) {
				v.write(out, d.Text)
			} else {
				it.deltas = append(it.deltas, d)
			}
		}
	case *messages.RunEvent_StageStarted:
		m := k.StageStarted
		id := chatStepID(m.Step, m.Stage)
		if m.Final {
			if id != v.final {
				if v.sent {
					return "final_step_replaced", fmt.Sprintf("the answer's step %s was replaced by %s after streaming began; retry the request", v.final, id)
				}
				v.final = id
			}
			if v.thinking && m.Provider == synthProvider && m.Note != "" && m.Note != v.note {
				v.addLine(out, "", "— "+m.Note)
			}
			return "", ""
		}
		if !v.thinking {
			return "", ""
		}
		if it := v.steps[id]; it != nil {
			it.model = m.Model // a new attempt
			return "", ""
		}
		it := &viewItem{id: id, title: chatStepTitle(m.Stage, id), model: m.Model}
		v.steps[id] = it
		v.queue = append(v.queue, it)
		if len(v.queue) == 1 {
			v.promote(out)
		}
	case *messages.RunEvent_StageCompleted:
		c := k.StageCompleted
		id := chatStepID(c.Step, c.Stage)
		if it := v.steps[id]; it != nil && id != v.final {
			it.ended = true
			if v.live(it) {
				v.closing = true
			} else {
				it.output, it.done, it.deltas = c.Output, true, nil
			}
		}
	case *messages.RunEvent_StageRestarted:
		r := k.StageRestarted
		id := chatStepID(r.Step, r.Stage)
		if id == v.final {
			if v.sent {
				return "stage_restarted", "the final stage was restarted after streaming began (" + r.Reason + "); retry the request"
			}
			return "", ""
		}
		if it := v.steps[id]; it != nil {
			line := "— " + id + " restarted (" + r.Reason + "); redone below"
			if v.live(it) {
				v.line(out, line)
			} else {
				it.deltas = nil
				it.before = append(it.before, line)
			}
		}
	case *messages.RunEvent_StepSkipped:
		s := k.StepSkipped
		id := chatStepID(s.Step, s.Stage)
		line := "— " + id + " left out: " + s.Reason
		if id == v.final {
			if v.sent {
				return "final_step_failed", "the answer's step " + id + " failed after streaming began (" + s.Reason + "); retry the request"
			}
			if v.thinking {
				v.addLine(out, "", line)
			}
			return "", ""
		}
		it := v.steps[id]
		switch {
		case !v.thinking:
		case it == nil: // it never started
			v.addLine(out, "", line)
		case v.live(it):
			it.ended = true
			v.line(out, line)
			v.closing = true
		default:
			it.ended = true
			it.after = append(it.after, line)
		}
	case *messages.RunEvent_Ranking:
		if v.thinking {
			v.addLine(out, k.Ranking.Step, rankingLine(k.Ranking))
		}
	case *messages.RunEvent_StepNote:
		if v.thinking {
			v.addLine(out, k.StepNote.Step, "— "+k.StepNote.Message)
			v.note = k.StepNote.Message
		}
	case *messages.RunEvent_ModelChosen:
		if m := k.ModelChosen; v.thinking {
			verb := " runs on "
			if m.Downgraded {
				verb = " downgraded to "
			}
			v.addLine(out, "", "— "+m.Step+verb+m.Model+": "+m.Reason)
		}
	}
	return "", ""
}

// aboutHead reports whether ev is a ranking or a note of queue[0].
func (v *chatView) aboutHead(ev *messages.RunEvent) bool {
	step := ""
	switch k := ev.Kind.(type) {
	case *messages.RunEvent_Ranking:
		step = k.Ranking.Step
	case *messages.RunEvent_StepNote:
		step = k.StepNote.Step
	default:
		return false
	}
	return step != "" && len(v.queue) > 0 && v.queue[0].id == step
}

// live reports whether it is queue[0] and out so far.
func (v *chatView) live(it *viewItem) bool {
	return v.headOut && len(v.queue) > 0 && v.queue[0] == it
}

// addLine adds a line about step (none: about the run): after the step's
// text if it has not all gone out yet, else at the end of the queue.
func (v *chatView) addLine(out chatSink, step, line string) {
	if it := v.steps[step]; step != "" && it != nil {
		if v.live(it) {
			v.line(out, line)
		} else {
			it.after = append(it.after, line)
		}
		return
	}
	if len(v.queue) == 0 {
		v.line(out, line)
		return
	}
	v.queue = append(v.queue, &viewItem{line: line, ended: true})
}

// advance takes the ended live step out of the queue and puts out what
// follows it.
func (v *chatView) advance(out chatSink) {
	v.closing = false
	v.pop()
	v.promote(out)
}

// promote puts out queue[0] and, while it has ended, the items after it,
// until one is under way: that one is live.
func (v *chatView) promote(out chatSink) {
	v.headOut = false
	for len(v.queue) > 0 {
		it := v.queue[0]
		v.flush(out, it)
		if !it.ended {
			v.headOut = true
			return
		}
		v.pop()
	}
}

// drain puts out everything left, whole (at the end of the run).
func (v *chatView) drain(out chatSink) {
	v.closing = false
	if v.headOut {
		v.pop()
	}
	v.headOut = false
	for len(v.queue) > 0 {
		v.flush(out, v.queue[0])
		v.pop()
	}
}

func (v *chatView) pop() {
	if len(v.queue) == 0 {
		return
	}
	it := v.queue[0]
	v.queue[0] = nil
	v.queue = v.queue[1:]
	if it.id != "" && v.steps[it.id] == it {
		delete(v.steps, it.id)
	}
}

// flush puts out what of it waited: its header, lines and text so far.
func (v *chatView) flush(out chatSink, it *viewItem) {
	if it.line != "" {
		v.line(out, it.line)
		return
	}
	h := "### " + it.title
	if it.model != "" {
		h += " · " + cutLine(it.model, shortFieldMax)
	}
	v.write(out, v.brk()+h+"\n\n")
	for _, l := range it.before {
		v.line(out, l)
	}
	if it.done {
		v.write(out, it.output)
	}
	for _, d := range it.deltas {
		v.write(out, d.Text)
	}
	for _, l := range it.after {
		v.line(out, l)
	}
	it.before, it.after, it.deltas, it.output = nil, nil, nil, ""
}

// line puts out a line on its own.
func (v *chatView) line(out chatSink, s string) {
	v.write(out, v.brk()+cutLine(s, maxLine)+"\n\n")
}

// brk is what starts a new paragraph after the reasoning so far.
func (v *chatView) brk() string {
	if v.nl < 0 {
		return ""
	}
	return "\n\n"[v.nl:]
}

func (v *chatView) write(out chatSink, s string) {
	if s == "" {
		return
	}
	out.reasoning(s)
	n := 0
	for n < 2 && n < len(s) && s[len(s)-1-n] == '\n' {
		n++
	}
	if n == len(s) && v.nl > 0 {
		n = min(2, v.nl+n)
	}
	v.nl = n
}

// rankingLine is a ranking on one line: "Ranking by r1: B (m2), A (m1)",
// or the council's "Council ranking: B (m2, 1.33), A (m1, 2.00)".
func rankingLine(r *messages.Ranking) string {
	var b strings.Builder
	if r.Aggregate {
		b.WriteString("Council ranking: ")
	} else {
		b.WriteString("Ranking by " + r.Step + ": ")
	}
	for i, e := range r.Ranked {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(e.Label + " (" + e.Step)
		if r.Aggregate {
			b.WriteString(", " + strconv.FormatFloat(e.AverageRank, 'f', 2, 64))
		}
		b.WriteString(")")
	}
	return b.String()
}

// chatStepID is the step id an event names: its step, else (a chain's
// stage) its stage's name.
func chatStepID(step string, stage messages.Stage) string {
	if step != "" {
		return step
	}
	return stageString(stage)
}

// chatStepTitle names a step for people: a chain stage's title
// ("Refiner"), else its role's and its id ("Proposer p1.2").
func chatStepTitle(stage messages.Stage, id string) string {
	st := stagework.Stage(stage)
	if !st.Valid() {
		return id
	}
	if st.Chain() {
		return st.Title()
	}
	return st.Title() + " " + id
}

// cutLine cuts s to at most n bytes at a character boundary, marking the cut.
func cutLine(s string, n int) string {
	if len(s) <= n {
		return s
	}
	n -= len(ellipsis)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}
