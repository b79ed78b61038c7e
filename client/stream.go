package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Stream reads one run's events over SSE and resumes by itself: after a
// dropped connection, a stream that ended before the run did, a `lagged`
// event or a retryable answer (429, 5xx), it reconnects with the id of the
// last event it returned as Last-Event-ID — "seq:end" inside a split
// delta — so its reader gets every event once, in order. It waits between
// attempts (doubling, or the server's Retry-After) and gives up after
// Config.MaxReconnects attempts in a row without an event. A stream that
// never reached the gateway (a wrong address, nothing listening) returns
// that error at once.
//
// A Stream is used by one goroutine. Next blocks until an event arrives,
// the run's log ends (io.EOF after its run_completed, run_failed or
// run_cancelled), the context is done, or it gives up.
type Stream struct {
	c     *Client
	ctx   context.Context
	runID string

	last Cursor // id of the last event returned: Last-Event-ID
	from string // ?from_seq= for the next connection (initial or after lagged); wins over last

	ws         bool // WebSocket instead of SSE
	src        source
	failures   int // reconnects in a row without an event
	reconnects int // every reconnect, for the curious
	done       bool
	connected  bool // a connection was made once
}

// Events opens runID's event stream. from is where to start: "" for the
// first event, "N" for seq N, "N:B" inside split delta N after byte B
// (?from_seq=). Nothing is sent until the first Next.
func (c *Client) Events(ctx context.Context, runID, from string) *Stream {
	return &Stream{c: c, ctx: ctx, runID: runID, from: from}
}

// EventsAfter opens runID's event stream after the cursor's event (as a
// reader that has it would resume).
func (c *Client) EventsAfter(ctx context.Context, runID string, after Cursor) *Stream {
	return &Stream{c: c, ctx: ctx, runID: runID, last: after}
}

// Cursor is the id of the last event Next returned.
func (s *Stream) Cursor() Cursor { return s.last }

// Reconnects is how many times the stream reconnected.
func (s *Stream) Reconnects() int { return s.reconnects }

// Close releases the connection. Next then returns io.EOF.
func (s *Stream) Close() error {
	s.done = true
	s.drop()
	return nil
}

func (s *Stream) drop() {
	if s.src != nil {
		s.src.close()
	}
	s.src = nil
}

// source is one connection's events: an SSE body or a WebSocket.
type source interface {
	next() (Event, error)
	close()
}

type sseSource struct {
	body io.ReadCloser
	rd   *sseReader
}

func (s *sseSource) next() (Event, error) { return s.rd.next() }
func (s *sseSource) close()               { s.body.Close() }

// Next returns the next event of the run's log (never a `lagged`: the
// stream reconnects from its next_seq by itself).
func (s *Stream) Next() (Event, error) {
	for {
		if s.done {
			return Event{}, io.EOF
		}
		if err := s.ctx.Err(); err != nil {
			s.drop()
			return Event{}, err
		}
		if s.src == nil {
			connect := s.connect
			if s.ws {
				connect = s.connectWS
			}
			if err := connect(); err != nil {
				var ae *APIError
				if !s.connected && !errors.As(err, &ae) && s.ctx.Err() == nil {
					// Never reached the gateway: a wrong address, not a
					// dropped connection; say so at once.
					return Event{}, err
				}
				if err := s.wait(err); err != nil {
					return Event{}, err
				}
				continue
			}
		}
		s.connected = true
		ev, err := s.src.next()
		if err != nil {
			s.drop()
			if errors.Is(err, ErrBadEvent) {
				return Event{}, err
			}
			if err == io.EOF {
				err = errors.New("the stream ended before the run did")
			}
			if err := s.wait(err); err != nil {
				return Event{}, err
			}
			continue
		}
		if ev.Type == EventLagged {
			// Not a log entry: the reader fell behind a live run; go on
			// from next_seq (always progress).
			s.drop()
			s.from, s.failures = strconv.FormatUint(ev.NextSeq, 10), 0
			continue
		}
		s.failures = 0
		if ev.ID != "" {
			s.last, s.from = Cursor(ev.ID), ""
		}
		if ev.Terminal() {
			s.done = true
			s.drop()
		}
		return ev, nil
	}
}

func (s *Stream) connect() error {
	path := "/v1/runs/" + url.PathEscape(s.runID) + "/events"
	if s.from != "" {
		path += "?from_seq=" + url.QueryEscape(s.from)
	}
	req, err := s.c.newRequest(s.ctx, "GET", path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	if s.from == "" && s.last != "" {
		req.Header.Set("Last-Event-ID", string(s.last))
	}
	resp, err := s.c.cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return readAPIError(resp)
	}
	s.src = &sseSource{body: resp.Body, rd: newSSEReader(resp.Body)}
	return nil
}

// retryable reports whether a stream should try again after err.
func retryable(err error) bool {
	var e *APIError
	if errors.As(err, &e) {
		return e.Status == http.StatusTooManyRequests || e.Status >= 500
	}
	return true // a network error or a dropped stream
}

// wait sleeps before the next attempt, or returns why there is none.
func (s *Stream) wait(cause error) error {
	if err := s.ctx.Err(); err != nil {
		return err
	}
	if !retryable(cause) {
		return cause
	}
	s.failures++
	if s.failures > s.c.cfg.MaxReconnects {
		return fmt.Errorf("client: run %s: stream lost after %d reconnects: %w", s.runID, s.c.cfg.MaxReconnects, cause)
	}
	s.reconnects++
	d := s.c.cfg.MinBackoff << min(s.failures-1, 20)
	if d > s.c.cfg.MaxBackoff || d <= 0 {
		d = s.c.cfg.MaxBackoff
	}
	var e *APIError
	if errors.As(cause, &e) && e.RetryAfter > 0 {
		d = e.RetryAfter
	}
	if s.failures == 1 && !errors.As(cause, &e) {
		d = 0 // a dropped connection: reconnect at once the first time
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

// RunID is the id of the run whose events the stream reads.
func (s *Stream) RunID() string { return s.runID }

// Drop closes the current connection as if the network had cut it; the
// next Next reconnects at once from the stream's cursor (Last-Event-ID, or
// ?from_seq= over WebSocket), exactly as after a real drop. It counts as a
// reconnect. A load generator uses it to probe resumption.
func (s *Stream) Drop() {
	if s.src != nil && !s.done {
		s.drop()
		s.reconnects++
	}
}

// postStream POSTs body to path asking for an event stream, and returns
// the response of a 2xx answer (its body is the stream, the caller's to
// close); any other answer is an *APIError.
func (c *Client) postStream(ctx context.Context, path string, body any) (*http.Response, error) {
	hr, err := c.newRequest(ctx, "POST", path, body)
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Accept", "text/event-stream")
	resp, err := c.cfg.HTTPClient.Do(hr)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readAPIError(resp)
	}
	return resp, nil
}

// CreateRunStream starts a run with "stream": true (POST /v1/runs answers
// with the run's event stream from seq 1, on the same connection) and
// returns that stream; the run's id is Stream.RunID (the X-QLC-Run-Id
// header). Should the connection drop, the stream resumes as Events does,
// from GET /v1/runs/{id}/events with Last-Event-ID: the run does not
// depend on the connection. A refusal is an *APIError.
func (c *Client) CreateRunStream(ctx context.Context, req RunRequest) (*Stream, error) {
	body := struct {
		RunRequest
		Stream bool `json:"stream"`
	}{req, true}
	resp, err := c.postStream(ctx, "/v1/runs", body)
	if err != nil {
		return nil, err
	}
	id := resp.Header.Get("X-QLC-Run-Id")
	if id == "" || resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("client: POST /v1/runs with stream: HTTP %d without X-QLC-Run-Id (a gateway too old for \"stream\": true?)", resp.StatusCode)
	}
	return &Stream{c: c, ctx: ctx, runID: id, connected: true,
		src: &sseSource{body: resp.Body, rd: newSSEReader(resp.Body)}}, nil
}
