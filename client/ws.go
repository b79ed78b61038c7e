package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// EventsWS is Events over the run's WebSocket (GET /v1/runs/{id}/ws): one
// JSON event per message. It resumes as Events does, with ?from_seq= (the
// seq after the last event, or "seq:end" inside a split delta).
func (c *Client) EventsWS(ctx context.Context, runID, from string) *Stream {
	return &Stream{c: c, ctx: ctx, runID: runID, from: from, ws: true}
}

// wsLaggedCode is the close code the gateway sends a reader that fell
// behind (its reason names next_seq); the lagged message comes first.
const wsLaggedCode websocket.StatusCode = 4000

type wsSource struct {
	ctx  context.Context
	conn *websocket.Conn
}

func (s *wsSource) next() (Event, error) {
	typ, data, err := s.conn.Read(s.ctx)
	at := time.Now()
	if err != nil {
		if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
			return Event{}, io.EOF
		}
		return Event{}, err
	}
	if typ != websocket.MessageText {
		return Event{}, fmt.Errorf("%w: a binary message", ErrBadEvent)
	}
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return Event{}, fmt.Errorf("%w: %v", ErrBadEvent, err)
	}
	ev.JSON, ev.Received = data, at
	if ev.Type != EventLagged {
		// The id SSE would give it.
		ev.ID = strconv.FormatUint(ev.Seq, 10)
		if ev.Part != nil && ev.Part.End < ev.Part.Size {
			ev.ID += ":" + strconv.Itoa(ev.Part.End)
		}
	}
	return ev, nil
}

func (s *wsSource) close() { s.conn.CloseNow() }

// connectWS dials the run's WebSocket from where the stream is.
func (s *Stream) connectWS() error {
	from := s.from
	if from == "" && s.last != "" {
		// Last-Event-ID semantics as a from_seq: "N" → N+1; "N:E" stays.
		if n, err := strconv.ParseUint(string(s.last), 10, 64); err == nil {
			from = strconv.FormatUint(n+1, 10)
		} else {
			from = string(s.last)
		}
	}
	u := strings.Replace(s.c.cfg.BaseURL, "http", "ws", 1) + "/v1/runs/" + url.PathEscape(s.runID) + "/ws"
	if from != "" {
		u += "?from_seq=" + url.QueryEscape(from)
	}
	h := http.Header{}
	h.Set("User-Agent", s.c.cfg.UserAgent)
	if s.c.cfg.APIKey != "" {
		h.Set("Authorization", "Bearer "+s.c.cfg.APIKey)
	}
	conn, resp, err := websocket.Dial(s.ctx, u, &websocket.DialOptions{HTTPClient: s.c.cfg.HTTPClient, HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			if resp.Body == nil {
				return &APIError{Status: resp.StatusCode, Message: err.Error()}
			}
			return readAPIError(resp)
		}
		return err
	}
	conn.SetReadLimit(1 << 20)
	s.src = &wsSource{ctx: s.ctx, conn: conn}
	return nil
}
