package stagework

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// scripted is a provider whose requests fail while failing is set; it
// exercises the Guard decorator around any provider.
type scripted struct {
	failing atomic.Bool
	calls   atomic.Int32
}

func (s *scripted) Name() string { return "scripted" }
func (s *scripted) Stream(ctx context.Context, req Request) (Stream, error) {
	s.calls.Add(1)
	if s.failing.Load() {
		return nil, &ProviderError{Kind: ErrServer, Provider: "scripted", Status: 503}
	}
	return tokens{Tokens: 3}.Stream(ctx, req)
}

func TestBreakerOpensAndRecovers(t *testing.T) {
	p := &scripted{}
	var states []BreakerState
	g := Guard(p, "ep", BreakerConfig{Failures: 3, OpenFor: 50 * time.Millisecond}, RateLimit{}, func(s BreakerState) { states = append(states, s) })
	req := Request{Model: "m", Stage: StageGenerator, Query: "q"}
	p.failing.Store(true)
	for i := 0; i < 3; i++ {
		if _, err := g.Stream(context.Background(), req); err == nil {
			t.Fatal("want the provider's error")
		}
	}
	_, err := g.Stream(context.Background(), req)
	pe, _ := AsProviderError(err)
	if !IsCircuitOpen(err) || pe == nil || pe.Retryable() || g.State() != gobreaker.StateOpen || p.calls.Load() != 3 {
		t.Fatalf("after 3 failures: %v (state %v, calls %d)", err, g.State(), p.calls.Load())
	}
	p.failing.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for g.State() == gobreaker.StateOpen && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, err := drain(g, context.Background(), req); err != io.EOF { // the half-open probe
		t.Fatal(err)
	}
	if g.State() != gobreaker.StateClosed {
		t.Fatalf("a successful probe should close the breaker: %v (transitions %v)", g.State(), states)
	}
}

func TestBadRequestsDoNotTripTheBreaker(t *testing.T) {
	bad := tokens{Err: &ProviderError{Kind: ErrBadRequest, Provider: "tokens", Status: 400}}
	g := Guard(bad, "ep", BreakerConfig{Failures: 2}, RateLimit{}, nil)
	for i := 0; i < 5; i++ {
		_, _ = g.Stream(context.Background(), Request{Model: "m", Stage: StageGenerator, Query: "q"})
	}
	if g.State() != gobreaker.StateClosed {
		t.Fatal("the caller's bad requests opened the endpoint's breaker")
	}
}

func TestRateLimitWaitsThenRefusesPastTheDeadline(t *testing.T) {
	one := tokens{Tokens: 1}
	g := Guard(one, "ep", BreakerConfig{}, RateLimit{RequestsPerMinute: 60}, nil) // 1/s, burst 6
	req := Request{Model: "m", Stage: StageGenerator, Query: "q"}
	for i := 0; i < 6; i++ {
		if _, _, err := drain(g, context.Background(), req); err != io.EOF {
			t.Fatalf("request %d within the burst: %v", i, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := g.Stream(ctx, req)
	pe, ok := AsProviderError(err)
	if !ok || pe.Kind != ErrRateLimited || pe.Code != "requests_per_minute" {
		t.Fatalf("the 7th request: %v", err)
	}
	// Token bucket: a request larger than what is left waits; past the deadline it is refused.
	gt := Guard(one, "ep", BreakerConfig{}, RateLimit{TokensPerMinute: 1000}, nil)
	if _, _, err := drain(gt, context.Background(), Request{Model: "m", Stage: StageGenerator, Query: "q", MaxTokens: 900}); err != io.EOF {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	if _, err := gt.Stream(ctx2, Request{Model: "m", Stage: StageGenerator, Query: "q", MaxTokens: 900}); !errors.As(err, &pe) || pe.Code != "tokens_per_minute" {
		t.Fatalf("over the token budget: %v", err)
	}
}
