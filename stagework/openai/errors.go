package openai

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// timeoutCause is the cancellation cause of a stream's context when one of
// the provider's own timers fires.
type timeoutCause struct {
	what string
	d    time.Duration
}

func (t *timeoutCause) Error() string { return "openai: " + t.msg() }

func (t *timeoutCause) msg() string { return fmt.Sprintf("no %s within %s", t.what, t.d) }

// errStreamClosed is returned by Recv after Close.
var errStreamClosed = errors.New("openai: stream closed")

// maxRetryAfter caps a Retry-After value: anything longer is nonsense or an
// outage, and the coordinator has its own limits.
const maxRetryAfter = 24 * time.Hour

// kindForStatus maps an HTTP status to an error kind.
func kindForStatus(status int) stagework.ErrorKind {
	switch {
	case status == http.StatusUnauthorized, status == http.StatusForbidden,
		status == http.StatusPaymentRequired: // OpenRouter: out of credits; retrying will not help
		return stagework.ErrAuth
	case status == http.StatusTooManyRequests:
		return stagework.ErrRateLimited
	case status == http.StatusRequestTimeout:
		return stagework.ErrTimeout
	case status == http.StatusConflict: // lock contention on the server; openai-python retries it
		return stagework.ErrServer
	case status >= 400 && status < 500:
		return stagework.ErrBadRequest
	case status >= 500 && status < 600:
		return stagework.ErrServer
	}
	return stagework.ErrProtocol
}

// kindForCode maps an error object's code/type to a kind, for errors that
// arrive inside a 200 stream. A numeric code is read as an HTTP status
// (OpenRouter, vLLM); otherwise well-known words decide; the rest is a
// server error.
func kindForCode(code, typ string) stagework.ErrorKind {
	if n, err := strconv.Atoi(code); err == nil && n >= 400 && n < 600 {
		return kindForStatus(n)
	}
	s := strings.ToLower(code + " " + typ)
	has := func(words ...string) bool {
		for _, w := range words {
			if strings.Contains(s, w) {
				return true
			}
		}
		return false
	}
	switch {
	case has("rate_limit", "ratelimit", "rate limit", "too_many_requests", "insufficient_quota"):
		return stagework.ErrRateLimited
	case has("invalid_api_key", "authentication", "unauthorized", "permission", "forbidden"):
		return stagework.ErrAuth
	case has("timeout", "timed_out"):
		return stagework.ErrTimeout
	case has("invalid_request", "context_length", "bad_request", "badrequest", "not_found", "notfound", "unprocessable"):
		return stagework.ErrBadRequest
	}
	return stagework.ErrServer
}

// apiError is what we read out of an error body or an error event.
type apiError struct {
	message string
	code    string // the "code" member as text ("" if absent or null)
	typ     string // the "type" member
}

// displayCode is the code for ProviderError.Code: the code, else the type.
func (e apiError) displayCode() string {
	if e.code != "" {
		return e.code
	}
	return e.typ
}

// parseAPIError reads the error shapes OpenAI-compatible servers send:
//
//	{"error":{"message":"...","type":"...","param":null,"code":"..."}}  OpenAI, vLLM, llama.cpp, Ollama /v1
//	{"error":{"code":429,"message":"...","metadata":{...}}}            OpenRouter
//	{"object":"error","message":"...","type":"...","code":400}          older vLLM
//	{"error":"model not found"}                                        Ollama native
//	{"detail":"..."}                                                   FastAPI
//
// ok is false when body is none of these.
func parseAPIError(body []byte) (apiError, bool) {
	var env struct {
		Error   json.RawMessage `json:"error"`
		Object  string          `json:"object"`
		Message json.RawMessage `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
		Detail  json.RawMessage `json:"detail"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return apiError{}, false
	}
	var inner struct {
		Message json.RawMessage `json:"message"`
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
	}
	switch {
	case len(env.Error) > 0 && env.Error[0] == '{':
		if err := json.Unmarshal(env.Error, &inner); err != nil {
			return apiError{}, false
		}
	case len(env.Error) > 0 && env.Error[0] == '"':
		var s string
		_ = json.Unmarshal(env.Error, &s)
		return apiError{message: s}, true
	case env.Object == "error" || len(env.Message) > 0:
		inner.Message, inner.Type, inner.Code = env.Message, env.Type, env.Code
	case len(env.Detail) > 0:
		return apiError{message: rawText(env.Detail)}, true
	default:
		return apiError{}, false
	}
	return apiError{message: rawText(inner.Message), code: rawText(inner.Code), typ: inner.Type}, true
}

// rawText turns a JSON string or number into text; null and other values
// become their JSON text, or "" for null.
func rawText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	return string(raw)
}

// parseRetryAfter reads how long to wait from the response headers, as
// openai-python does: "retry-after-ms" (milliseconds, float), then
// "Retry-After" as seconds (integer or float) or an HTTP-date. 0 if absent
// or unreadable.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return clampRetry(f * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return clampRetry(f * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil {
		return clampRetry(float64(t.Sub(now)))
	}
	return 0
}

func clampRetry(ns float64) time.Duration {
	switch {
	case math.IsNaN(ns) || ns <= 0:
		return 0
	case ns >= float64(maxRetryAfter):
		return maxRetryAfter
	}
	return time.Duration(ns)
}

// callerError is what a stream returns once the caller's context has ended:
// the context's own error when cancelled, a timeout ProviderError (that
// still matches context.DeadlineExceeded) when its deadline passed.
func (p *Provider) callerError(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return p.newError(stagework.ErrTimeout, 0, "", "request deadline exceeded", err)
	}
	return err
}

// transportError classifies a failure of the HTTP exchange itself (dial,
// TLS, writing the request, reading headers or body). ctx is the caller's,
// sctx the stream's own (its cause tells our timers apart).
func (p *Provider) transportError(ctx, sctx context.Context, err error, what string) error {
	if ctx.Err() != nil {
		return p.callerError(ctx)
	}
	var tc *timeoutCause
	if errors.As(context.Cause(sctx), &tc) {
		return p.newError(stagework.ErrTimeout, 0, "", tc.msg(), err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return p.newError(stagework.ErrTimeout, 0, "", what+": "+p.redact(err.Error()), err)
	}
	msg := what
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		msg += ": connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		msg += ": connection reset"
	}
	return p.newError(stagework.ErrConnection, 0, "", msg+": "+p.redact(err.Error()), err)
}

// newError builds a ProviderError for this provider.
func (p *Provider) newError(kind stagework.ErrorKind, status int, code, msg string, err error) *stagework.ProviderError {
	return &stagework.ProviderError{
		Kind:     kind,
		Provider: p.cfg.Name,
		Status:   status,
		Code:     code,
		Message:  msg,
		Err:      err,
	}
}

// redact removes the API key from text that might echo it.
func (p *Provider) redact(s string) string {
	if len(p.cfg.APIKey) >= 4 {
		s = strings.ReplaceAll(s, p.cfg.APIKey, "[redacted]")
	}
	return s
}

// redactKey removes key (a request's own key, Request.APIKey) from the
// message of err if it is a ProviderError; it returns err.
func redactKey(err error, key string) error {
	if pe, ok := stagework.AsProviderError(err); ok && len(key) >= 4 {
		pe.Message = strings.ReplaceAll(pe.Message, key, "[redacted]")
		pe.Code = strings.ReplaceAll(pe.Code, key, "[redacted]")
	}
	return err
}

// snippet quotes at most n bytes of b for an error message, cut on a rune
// boundary.
func snippet(b []byte, n int) string {
	if len(b) <= n {
		return strconv.Quote(string(b))
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return strconv.Quote(string(b[:n])) + "..."
}
