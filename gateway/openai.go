package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

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
	query     string
	history   []stagework.Message
	maxTokens int
	seed      int64
	usage     bool
}

func (s *Server) parseChat(req *chatRequest) (*parsedChat, *apiError) {
	if req.Model == "" {
		return nil, errInvalidParam("model", "missing_model", "model is required, e.g. \"qlc-"+s.engine.Stages().DefaultProfile+"\"")
	}
	profile, ok := strings.CutPrefix(req.Model, modelPrefix)
	if _, err := s.engine.Stages().Profile(profile); !ok || profile == "" || err != nil {
		return nil, &apiError{Status: http.StatusNotFound, Type: "invalid_request_error", Code: "model_not_found", Param: ptr("model"),
			Message: fmt.Sprintf("The model %q does not exist; use one of: %s", req.Model, strings.Join(s.modelNames(), ", "))}
	}
	if req.N != nil && *req.N != 1 {
		return nil, errInvalidParam("n", "unsupported_n", "only n=1 is supported")
	}
	if len(req.Messages) == 0 {
		return nil, errInvalidParam("messages", "empty_messages", "messages must hold at least one user message")
	}
	p := &parsedChat{profile: profile, usage: req.StreamOptions != nil && req.StreamOptions.IncludeUsage}
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

func (s *Server) modelNames() []string {
	var out []string
	for _, n := range s.engine.Stages().ProfileNames() {
		out = append(out, modelPrefix+n)
	}
	return out
}

// listModels lists the profiles as models: those the tenant may use.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	who := principalOf(r)
	type model struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		OwnedBy string `json:"owned_by"`
	}
	out := struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: []model{}}
	for _, n := range s.modelNames() {
		if who.allows(strings.TrimPrefix(n, modelPrefix)) {
			out.Data = append(out.Data, model{ID: n, Object: "model", Created: 0, OwnedBy: "qlc"})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request) {
	var req chatRequest
	if e := s.decodeJSON(w, r, &req, false); e != nil {
		writeError(w, e)
		return
	}
	p, e := s.parseChat(&req)
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
	hub, e := s.start(who, actors.RunRequest{Profile: p.profile, Query: p.query, History: p.history, Seed: p.seed, MaxTokens: p.maxTokens})
	if e != nil {
		writeError(w, e)
		return
	}
	w.Header().Set("X-QLC-Run-Id", hub.RunID)
	prof, _ := s.engine.Stages().Profile(p.profile)
	final := messages.Stage(prof.Stages[len(prof.Stages)-1].Stage)
	c := &chunkWriter{id: "chatcmpl-" + strings.TrimPrefix(hub.RunID, "run_"), model: req.Model, created: time.Now().Unix(), final: final, usage: p.usage}
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
	if err := hub.WaitDone(r.Context()); err != nil {
		s.cancelIfRunning(hub, "client disconnected")
		return
	}
	evs := hub.Events(1)
	switch k := evs[len(evs)-1].Kind.(type) {
	case *messages.RunEvent_RunCompleted:
		u := k.RunCompleted.Usage
		writeJSON(w, http.StatusOK, map[string]any{
			"id": c.id, "object": "chat.completion", "created": c.created, "model": c.model, "system_fingerprint": nil,
			"choices": []map[string]any{{"index": 0, "message": map[string]any{"role": "assistant", "content": k.RunCompleted.Answer, "refusal": nil},
				"logprobs": nil, "finish_reason": "stop"}},
			"usage": map[string]int64{"prompt_tokens": u.GetPromptTokens(), "completion_tokens": u.GetCompletionTokens(), "total_tokens": u.GetTotalTokens()},
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
	return errServer(http.StatusBadGateway, "run_failed", "the consensus run failed: "+f.Reason)
}

// errChatEnded ends a chunk stream once the run's outcome was written.
var errChatEnded = errors.New("gateway: chat stream ended")

// chunkWriter is the transport of an OpenAI streamed chat completion: it
// writes the final stage's deltas as chat.completion.chunk events and ends
// with a finish chunk, the usage chunk when asked for, and [DONE]. Earlier
// stages produce nothing but keep-alive comments while they run. Deltas are
// coalesced and split as for the run's own stream, so no chunk is longer
// than the server's MaxEventBytes.
type chunkWriter struct {
	sse     *sseTransport
	id      string
	model   string
	created int64
	final   messages.Stage
	usage   bool
	sent    bool // content of the final stage was sent
}

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

func (c *chunkWriter) writeEvents(evs []*messages.RunEvent, off int) error {
	max := c.sse.max
	bp := getBuf(writeBufSize(max))
	defer putBuf(bp)
	b := *bp
	var end error
	sp := spanner{evs: evs, off: off, budget: textBudget(max)}
	for s, ok := sp.next(); ok && end == nil; s, ok = sp.next() {
		if len(b)+max > cap(b) {
			if err := c.sse.write(b); err != nil {
				return err
			}
			b = b[:0]
		}
		last := evs[s.hi-1]
		switch k := last.Kind.(type) {
		case *messages.RunEvent_TokenDelta:
			if k.TokenDelta.Stage != c.final {
				continue
			}
			b = c.head(b)
			b = append(b, `{"index":0,"delta":{"content":"`...)
			if s.isPart() {
				b = appendEscaped(b, k.TokenDelta.Text[s.from:s.to])
			} else {
				for _, ev := range evs[s.lo:s.hi] {
					b = appendEscaped(b, ev.GetTokenDelta().Text)
				}
			}
			b = append(b, `"},"logprobs":null,"finish_reason":null}`...)
			b = c.tail(b)
			c.sent = true
		case *messages.RunEvent_StageRestarted:
			if k.StageRestarted.Stage == c.final && c.sent {
				b = appendChunkError(b, "server_error", "stage_restarted", "the final stage was restarted after streaming began ("+k.StageRestarted.Reason+"); retry the request", textBudget(max))
				end = errChatEnded
			}
		case *messages.RunEvent_RunCompleted:
			b = c.head(b)
			b = append(b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}`...)
			b = c.tail(b)
			if c.usage {
				if err := c.sse.write(b); err != nil {
					return err
				}
				b = b[:0]
				u := k.RunCompleted.Usage
				b = append(b, `data: {"id":"`...)
				b = append(b, c.id...)
				b = append(b, `","object":"chat.completion.chunk","created":`...)
				b = strconv.AppendInt(b, c.created, 10)
				b = append(b, `,"model":"`...)
				b = appendEscapedMax(b, c.model, shortFieldMax)
				b = append(b, `","system_fingerprint":null,"choices":[]`...)
				b = appendUsage(b, u)
				b = append(b, "}\n\n"...)
			}
			b = append(b, "data: [DONE]\n\n"...)
			end = errChatEnded
		case *messages.RunEvent_RunFailed:
			b = appendChunkError(b, "server_error", "run_failed", "the consensus run failed: "+k.RunFailed.Reason, textBudget(max))
			end = errChatEnded
		case *messages.RunEvent_RunCancelled:
			b = appendChunkError(b, "server_error", "run_cancelled", "the run was cancelled: "+k.RunCancelled.Reason, textBudget(max))
			end = errChatEnded
		}
	}
	if err := c.sse.write(b); err != nil {
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
