package openai

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/stagework/sse"
)

// maxDrain bounds what is read after [DONE] to reuse the connection.
const maxDrain = 64 << 10

var doneMarker = []byte("[DONE]")

// errReleased is the cause set on a stream's context when it is finished
// with; it aborts nothing that is still wanted.
var errReleased = errors.New("openai: stream released")

// stream is one in-flight completion. It is used by one goroutine at a time
// (stagework.Stream); only its timers run elsewhere, and they touch nothing
// but the context's cancel function and idleWatch's atomics.
type stream struct {
	p      *Provider
	ctx    context.Context         // the caller's
	sctx   context.Context         // ours: the request runs under it
	cancel context.CancelCauseFunc // aborts the request, with a cause
	model  string
	start  time.Time
	apiKey string // the request's own key (Request.APIKey), redacted from its errors; "" if none

	body io.ReadCloser
	dec  *sse.Decoder

	firstTimer *time.Timer // FirstTokenTimeout; stopped at the first token
	idle       *idleWatch  // IdleTimeout; nil if disabled

	chunks   int    // text chunks returned
	events   int    // JSON chunks read
	comments int    // comment lines (keep-alives) read
	finish   string // last finish_reason seen
	usage    stagework.Usage
	hasUsage bool

	err      error // sticky: io.EOF once finished, or the failure
	released bool

	// What Buffered decoded ahead for Recv: a text chunk, or [DONE] seen.
	peek   stagework.Chunk
	peeked bool
	done   bool
}

// Recv returns the next text chunk, io.EOF at the end of the stream, a
// *stagework.ProviderError, or the caller's context error.
func (s *stream) Recv() (stagework.Chunk, error) {
	if s.err != nil {
		return stagework.Chunk{}, s.err
	}
	select {
	case <-s.sctx.Done():
		// Cancelled or timed out while the caller was away: do not hand out
		// chunks that were already buffered (nor one Buffered decoded).
		return stagework.Chunk{}, s.endOfInput(context.Cause(s.sctx))
	default:
	}
	if s.peeked {
		s.peeked = false
		return s.peek, nil
	}
	for {
		if s.done {
			return stagework.Chunk{}, s.finishOK(true)
		}
		if ch, ok, err := s.step(); ok {
			return ch, err
		}
	}
}

// Buffered reports whether the next Recv returns at once (stagework.Buffered):
// a text chunk, or the stream's end or failure, is in what was read already.
// To know, it decodes buffered events that carry no text, and a text chunk,
// which Recv then returns; it never reads from the connection. It answers
// false for [DONE] (Recv then drains the body, which may wait on the
// network) so a caller sends what it holds first.
func (s *stream) Buffered() bool {
	for {
		switch {
		case s.peeked || s.err != nil:
			return true
		case s.done || s.dec == nil || !s.dec.Ready():
			return false
		}
		if ch, ok, err := s.step(); ok {
			if err == nil {
				s.peek, s.peeked = ch, true
			}
			return true
		}
	}
}

// step decodes one event: ok with what Recv returns (a text chunk, or the
// stream's end or failure as err), not ok for an event that carries no text.
// [DONE] is only noted (done): Recv acts on it.
func (s *stream) step() (ch stagework.Chunk, ok bool, err error) {
	ev, err := s.dec.Next()
	if err != nil {
		return stagework.Chunk{}, true, s.endOfInput(err)
	}
	if len(bytes.TrimSpace(ev.Data)) == 0 {
		return stagework.Chunk{}, false, nil // an empty event carries nothing
	}
	if string(ev.Type) == "error" {
		return stagework.Chunk{}, true, s.fail(s.errorEvent(ev.Data))
	}
	if bytes.HasPrefix(ev.Data, doneMarker) {
		s.done = true
		return stagework.Chunk{}, false, nil
	}
	var ci chunkInfo
	if err := parseChunk(ev.Data, &ci); err != nil {
		return stagework.Chunk{}, true, s.fail(s.p.newError(stagework.ErrProtocol, 0, "",
			fmt.Sprintf("malformed chunk #%d (%v): %s", s.events+1, err, snippet(ev.Data, 120)), err))
	}
	s.events++
	if ci.hasError() {
		return stagework.Chunk{}, true, s.fail(s.errorEvent(ev.Data))
	}
	if ci.hasUsage {
		// Some servers repeat a running total on every chunk (vLLM's
		// continuous_usage_stats): the last one is the total.
		s.usage, s.hasUsage = ci.usage, true
		if s.usage.TotalTokens == 0 {
			s.usage.TotalTokens = s.usage.PromptTokens + s.usage.CompletionTokens
		}
	}
	if ci.finishReason != "" {
		s.finish = ci.finishReason
		if ci.finishReason == "error" { // OpenRouter marks a failed generation so
			return stagework.Chunk{}, true, s.fail(s.p.newError(stagework.ErrServer, 0, "finish_reason_error",
				"generation ended with finish_reason \"error\"", nil))
		}
	}
	if ci.content == "" {
		return stagework.Chunk{}, false, nil
	}
	if s.chunks == 0 && s.firstTimer != nil {
		s.firstTimer.Stop()
	}
	s.chunks++
	return stagework.Chunk{Text: ci.content, Tokens: 1}, true, nil
}

// Usage is the provider's last usage report; valid after Recv returned io.EOF.
func (s *stream) Usage() (stagework.Usage, bool) { return s.usage, s.hasUsage }

// FinishReason is the last finish_reason the stream carried (stagework.Finished).
func (s *stream) FinishReason() string { return s.finish }

// Close aborts the stream if it is still running (closing an HTTP/1.1
// connection, resetting an HTTP/2 stream) and releases it. It may be called
// more than once.
func (s *stream) Close() error {
	if s.err == nil {
		s.err = errStreamClosed
	}
	s.release()
	return nil
}

// onComment is the decoder's comment callback. Keep-alives already count as
// activity for the idle watch (they are bytes read); here they are counted
// for the log.
func (s *stream) onComment([]byte) { s.comments++ }

// endOfInput handles the decoder's error: the body ended or broke.
func (s *stream) endOfInput(err error) error {
	if s.ctx.Err() != nil {
		return s.fail(s.p.callerError(s.ctx))
	}
	var tc *timeoutCause
	if errors.As(context.Cause(s.sctx), &tc) {
		return s.fail(s.p.transportError(s.ctx, s.sctx, err, "stream"))
	}
	if errors.Is(err, sse.ErrLineTooLong) || errors.Is(err, sse.ErrEventTooLarge) {
		return s.fail(s.p.newError(stagework.ErrProtocol, 0, "", err.Error(), err))
	}
	if s.finish != "" {
		// Some servers (older llama.cpp, some proxies) end the body after the
		// finish_reason chunk without "data: [DONE]"; the text is complete.
		return s.finishOK(false)
	}
	if err == io.EOF || errors.Is(err, sse.ErrIncomplete) {
		return s.fail(s.p.newError(stagework.ErrProtocol, 0, "",
			fmt.Sprintf("stream cut: body ended without [DONE] or finish_reason after %d chunks", s.chunks), err))
	}
	return s.fail(s.p.transportError(s.ctx, s.sctx, err, fmt.Sprintf("stream broke after %d chunks", s.chunks)))
}

// errorEvent turns an error sent inside the stream into a ProviderError.
func (s *stream) errorEvent(data []byte) error {
	ae, ok := parseAPIError(data)
	if !ok {
		ae = apiError{message: string(bytes.TrimSpace(data))}
	}
	if ae.message == "" {
		ae.message = "error event in stream"
	}
	kind := kindForCode(ae.code, ae.typ)
	return s.p.newError(kind, 0, ae.displayCode(), s.p.redact(truncate(ae.message, 1000)), nil)
}

// finishOK ends the stream successfully. After [DONE] it reads the rest of
// the body (normally just the end of the chunked encoding) so an HTTP/1.1
// connection can go back to the pool; bounded in bytes and time.
func (s *stream) finishOK(drain bool) error {
	if drain {
		t := time.AfterFunc(s.p.cfg.DrainTimeout, func() { s.cancel(errReleased) })
		_, _ = io.CopyN(io.Discard, s.body, maxDrain)
		t.Stop()
	}
	s.err = io.EOF
	s.release()
	s.p.log.Debug("openai: stream done", "model", s.model, "chunks", s.chunks, "keepalives", s.comments,
		"finish", s.finish, "usage", s.hasUsage, "took", time.Since(s.start))
	return io.EOF
}

// fail records err as the stream's end and releases the connection.
func (s *stream) fail(err error) error {
	err = redactKey(err, s.apiKey)
	s.err = err
	s.release()
	if pe, ok := stagework.AsProviderError(err); ok {
		s.p.log.Debug("openai: stream failed", "model", s.model, "chunks", s.chunks,
			"kind", pe.Kind.String(), "error", pe.Error())
	}
	return err
}

// release stops the timers, closes the body and cancels the request
// context. Closing an unfinished body closes its HTTP/1.1 connection (or
// resets its HTTP/2 stream); a finished one has gone back to the pool.
func (s *stream) release() {
	if s.released {
		return
	}
	s.released = true
	if s.firstTimer != nil {
		s.firstTimer.Stop()
	}
	if s.idle != nil {
		s.idle.stop()
	}
	if s.body != nil {
		s.body.Close()
	}
	s.cancel(errReleased)
}

// idleWatch cancels a stream whose upstream has been silent for too long:
// no bytes while we wait in a read of the body. Time the consumer spends
// away from Recv does not count, so a slow consumer is not mistaken for a
// dead server. Resetting a timer on every read would cost more than the
// read; instead reads record the time (atomic stores) and the timer, when it
// fires, re-arms itself for the time left.
type idleWatch struct {
	timeout time.Duration
	base    time.Time
	last    atomic.Int64 // nanoseconds since base: start of the current wait, or its last bytes
	reading atomic.Bool  // a read of the body is in progress
	stopped atomic.Bool
	timer   *time.Timer
	cancel  context.CancelCauseFunc
}

func newIdleWatch(d time.Duration, cancel context.CancelCauseFunc) *idleWatch {
	w := &idleWatch{timeout: d, base: time.Now(), cancel: cancel}
	w.timer = time.AfterFunc(d, w.fire)
	return w
}

func (w *idleWatch) now() int64 { return int64(time.Since(w.base)) }

func (w *idleWatch) fire() {
	if w.stopped.Load() {
		return
	}
	if !w.reading.Load() {
		w.timer.Reset(w.timeout) // the consumer is busy, not the server silent
		return
	}
	quiet := time.Duration(w.now() - w.last.Load())
	if quiet >= w.timeout {
		w.cancel(&timeoutCause{what: "data", d: w.timeout})
		return
	}
	w.timer.Reset(w.timeout - quiet)
}

func (w *idleWatch) stop() {
	w.stopped.Store(true)
	w.timer.Stop()
}

// watchedBody is the response body as the decoder reads it, feeding the
// idle watch.
type watchedBody struct {
	r io.Reader
	w *idleWatch
}

func (b watchedBody) Read(p []byte) (int, error) {
	b.w.last.Store(b.w.now())
	b.w.reading.Store(true)
	n, err := b.r.Read(p)
	b.w.reading.Store(false)
	return n, err
}
