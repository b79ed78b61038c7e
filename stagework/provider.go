package stagework

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Message is one chat turn sent to a model (OpenAI roles: "system", "user", "assistant").
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// Request is one streamed completion asked of a provider.
type Request struct {
	// Model is the provider's model name (e.g. "gpt-4o-mini", "sim-large").
	Model string
	// Messages is the whole prompt, system message first.
	Messages []Message
	// Temperature is passed through; 0 is a valid value.
	Temperature float64
	// MaxTokens caps the completion; 0 leaves it to the provider.
	MaxTokens int
	// Seed makes the simulated provider deterministic; others may ignore it.
	Seed int64
	// Stage is the pipeline stage asking (the simulator shapes its text by it).
	Stage Stage
	// Query is the user's question (the simulator writes about it).
	Query string
	// APIKey, when set, replaces the endpoint's configured key for this
	// request: the tenant's own key for the endpoint (bring your own key).
	// It never prints (Secret) and a provider redacts it from its errors.
	APIKey Secret
}

// Secret is a credential that does not print: fmt, slog and encoding/json
// show "[redacted]". Reveal gives the text, to put on the wire only.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's text.
func (s Secret) Reveal() string { return string(s) }

// String implements fmt.Stringer.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `stagework.Secret("` + s.String() + `")` }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.String() + `"`), nil }

// Format implements fmt.Formatter, so that %s, %v, %q and %x alike print
// "[redacted]" (a string kind would otherwise leak through %x).
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		fmt.Fprint(f, s.GoString())
		return
	}
	fmt.Fprint(f, s.String())
}

// Chunk is one piece of streamed output.
type Chunk struct {
	// Text is the new text; it is always whole UTF-8 (never a split character).
	Text string
	// Tokens is how many tokens Text holds (1 for most providers' deltas).
	Tokens int
}

// Usage counts tokens. Estimated is true when the count is ours, not the provider's.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
	Estimated        bool  `json:"estimated,omitempty"`
}

// Stream is one in-flight completion. It is used by one goroutine at a time.
type Stream interface {
	// Recv blocks until the next chunk, the end of the stream (io.EOF), an error
	// (*ProviderError), or the request's context ending (the context's error).
	Recv() (Chunk, error)
	// Usage is the provider's usage report, if it sent one; valid after Recv returned io.EOF.
	Usage() (Usage, bool)
	// Close releases the stream and closes the upstream connection if still open.
	// It may be called more than once and concurrently with nothing else.
	Close() error
}

// Buffered is an optional interface of a Stream: Buffered reports whether
// the next Recv will return at once, without waiting on the network or a
// timer. A caller uses it to batch chunks that have already arrived, so
// batching never delays a chunk.
type Buffered interface {
	Buffered() bool
}

// Finished is an optional interface of a Stream: after Recv returned
// io.EOF, FinishReason is why the model stopped as the provider said it
// ("stop", "length", ...; "" when it said nothing). Tracing reads it for
// gen_ai.response.finish_reasons.
type Finished interface {
	FinishReason() string
}

// Provider starts streamed completions. Implementations are safe for concurrent use.
type Provider interface {
	// Name is the provider's kind as written in profiles ("sim", "openai").
	Name() string
	// Stream starts a completion. It returns when the response headers arrive
	// (or the provider's equivalent), an error, or ctx ends. Cancelling ctx at any
	// point (also later, during Recv) aborts the upstream request at once.
	Stream(ctx context.Context, req Request) (Stream, error)
}

// ErrorKind classifies provider failures so the coordinator can decide what to do.
type ErrorKind int

// Error kinds, from the caller's point of view.
const (
	ErrUnknown     ErrorKind = iota
	ErrAuth                  // 401/403: wrong or missing key; retrying will not help
	ErrRateLimited           // 429: retry after RetryAfter
	ErrServer                // 5xx or an error object mid-stream: retryable
	ErrTimeout               // no headers / first token / next token in time: retryable
	ErrBadRequest            // 400/404/422: the request itself is wrong (model unknown, context too long)
	ErrProtocol              // the stream was not valid (garbage, bad JSON, cut without [DONE])
	ErrConnection            // could not connect, or the connection broke: retryable
)

var kindNames = [...]string{"unknown", "auth", "rate_limited", "server", "timeout", "bad_request", "protocol", "connection"}

func (k ErrorKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("ErrorKind(%d)", int(k))
}

// ProviderError is the error type every Provider returns for upstream failures.
type ProviderError struct {
	Kind       ErrorKind
	Provider   string        // provider name ("openai", "sim")
	Status     int           // HTTP status, 0 if none
	Code       string        // provider's error code or type, if any
	Message    string        // provider's message, or ours
	RetryAfter time.Duration // from Retry-After, 0 if none
	Err        error         // underlying cause, if any
}

func (e *ProviderError) Error() string {
	s := fmt.Sprintf("%s: %s", e.Provider, e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d)", e.Status)
	}
	if e.Message != "" {
		s += ": " + e.Message
	} else if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *ProviderError) Unwrap() error { return e.Err }

// Retryable says whether the same request may succeed if sent again.
func (e *ProviderError) Retryable() bool {
	if errors.Is(e.Err, errCircuitOpen) {
		return false // the breaker says the endpoint is down: go to the fallback
	}
	switch e.Kind {
	case ErrRateLimited, ErrServer, ErrTimeout, ErrConnection, ErrProtocol:
		return true
	}
	return false
}

// AsProviderError returns err as a *ProviderError if it is one.
func AsProviderError(err error) (*ProviderError, bool) {
	var pe *ProviderError
	if errors.As(err, &pe) {
		return pe, true
	}
	return nil, false
}
