package stagework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/sony/gobreaker/v2"
	"golang.org/x/time/rate"
)

// BreakerConfig configures an endpoint's circuit breaker. After Failures
// consecutive provider failures the breaker opens: requests fail at once
// (kind ErrServer, not retryable, so the stage moves to its fallback) for
// OpenFor, then one probe request decides whether it closes again.
type BreakerConfig struct {
	// Failures trips the breaker; 0 disables it. Default in profiles: 5.
	Failures int `yaml:"failures"`
	// OpenFor is how long it stays open before a probe. Default 30 s.
	OpenFor time.Duration `yaml:"open_for"`
}

// RateLimit bounds an endpoint's traffic with token buckets. Requests wait
// for their turn (bounded by the request's context); 0 disables a bound.
type RateLimit struct {
	// RequestsPerMinute bounds requests started per minute.
	RequestsPerMinute int `yaml:"requests_per_minute"`
	// TokensPerMinute bounds prompt plus max_tokens per minute (reserved
	// before the request; a request larger than a minute's worth waits for
	// a full bucket).
	TokensPerMinute int `yaml:"tokens_per_minute"`
}

// BreakerState is a circuit breaker's state, for metrics: 0 closed, 1 half
// open, 2 open (gobreaker's numbering).
type BreakerState = gobreaker.State

// Guarded wraps a provider with its endpoint's rate limits and circuit
// breaker. It is safe for concurrent use.
type Guarded struct {
	inner    Provider
	breaker  *gobreaker.TwoStepCircuitBreaker[struct{}]
	requests *rate.Limiter
	tokens   *rate.Limiter
	limit    RateLimit
}

// Guard wraps p. name labels the breaker; onState, if not nil, is called on
// every breaker state change (from gobreaker's goroutine: it must not block).
func Guard(p Provider, name string, b BreakerConfig, rl RateLimit, onState func(BreakerState)) *Guarded {
	g := &Guarded{inner: p, limit: rl}
	if b.Failures > 0 {
		openFor := b.OpenFor
		if openFor <= 0 {
			openFor = 30 * time.Second
		}
		failures := uint32(b.Failures)
		g.breaker = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name: name, MaxRequests: 1, Timeout: openFor,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			OnStateChange: func(_ string, _, to gobreaker.State) {
				if onState != nil {
					onState(to)
				}
			},
		})
	}
	if rl.RequestsPerMinute > 0 {
		g.requests = rate.NewLimiter(rate.Limit(float64(rl.RequestsPerMinute)/60), max(1, rl.RequestsPerMinute/10))
	}
	if rl.TokensPerMinute > 0 {
		g.tokens = rate.NewLimiter(rate.Limit(float64(rl.TokensPerMinute)/60), rl.TokensPerMinute)
	}
	return g
}

// Name is the wrapped provider's.
func (g *Guarded) Name() string { return g.inner.Name() }

// State is the breaker's state (closed when there is none).
func (g *Guarded) State() BreakerState {
	if g.breaker == nil {
		return gobreaker.StateClosed
	}
	return g.breaker.State()
}

// Stream waits for the rate limits, asks the breaker, and starts the
// request. A stream counts as a success for the breaker when it ends
// normally or the caller cancels it, a failure when the provider fails.
func (g *Guarded) Stream(ctx context.Context, req Request) (Stream, error) {
	if err := g.wait(ctx, req); err != nil {
		return nil, err
	}
	if g.breaker == nil {
		return g.inner.Stream(ctx, req)
	}
	done, err := g.breaker.Allow()
	if err != nil {
		return nil, &ProviderError{Kind: ErrServer, Provider: g.inner.Name(), Code: "circuit_open",
			Message: "circuit breaker open after repeated failures; not calling the endpoint for now", Err: errCircuitOpen}
	}
	s, err := g.inner.Stream(ctx, req)
	if err != nil {
		done(breakerOutcome(ctx, err))
		return nil, err
	}
	return &guardedStream{Stream: s, ctx: ctx, done: done}, nil
}

// errCircuitOpen marks the breaker's refusals (not retryable: see Retryable).
var errCircuitOpen = errors.New("stagework: circuit open")

// IsCircuitOpen reports whether err is a breaker refusal.
func IsCircuitOpen(err error) bool { return errors.Is(err, errCircuitOpen) }

func (g *Guarded) wait(ctx context.Context, req Request) error {
	if g.requests != nil {
		if err := g.requests.Wait(ctx); err != nil {
			return g.limited(ctx, "requests_per_minute", err)
		}
	}
	if g.tokens != nil {
		n := req.MaxTokens
		for _, m := range req.Messages {
			n += (len(m.Content) + 3) / 4
		}
		n = min(max(n, 1), g.limit.TokensPerMinute)
		if err := g.tokens.WaitN(ctx, n); err != nil {
			return g.limited(ctx, "tokens_per_minute", err)
		}
	}
	return nil
}

func (g *Guarded) limited(ctx context.Context, which string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return &ProviderError{Kind: ErrRateLimited, Provider: g.inner.Name(), Code: which,
		Message: fmt.Sprintf("QLC's own %s limit for this endpoint leaves no room before the deadline", which), Err: err}
}

// breakerOutcome is what the breaker is told about an attempt: nil for a
// success (or the caller's own cancellation), the error for a failure.
func breakerOutcome(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil
	}
	if pe, ok := AsProviderError(err); ok && (pe.Kind == ErrBadRequest || pe.Kind == ErrAuth) {
		return nil // the request or the key is wrong, not the endpoint's health
	}
	return err
}

// guardedStream reports the stream's outcome to the breaker once.
type guardedStream struct {
	Stream
	ctx  context.Context
	done func(error)
}

func (s *guardedStream) Recv() (Chunk, error) {
	c, err := s.Stream.Recv()
	if err != nil && s.done != nil {
		s.done(breakerOutcome(s.ctx, err))
		s.done = nil
	}
	return c, err
}

func (s *guardedStream) Close() error {
	if s.done != nil {
		s.done(nil) // closed by the caller before the end: not the endpoint's fault
		s.done = nil
	}
	return s.Stream.Close()
}

// Buffered passes the wrapped stream's Buffered through.
func (s *guardedStream) Buffered() bool {
	b, ok := s.Stream.(Buffered)
	return ok && b.Buffered()
}

// FinishReason passes the wrapped stream's FinishReason through (Finished).
func (s *guardedStream) FinishReason() string {
	if f, ok := s.Stream.(Finished); ok {
		return f.FinishReason()
	}
	return ""
}
