package stagework

import (
	"fmt"
	"math/rand/v2"
	"time"
)

// RetryPolicy decides what a coordinator does after a stage attempt fails:
// retry the same model after a backoff, move to the stage's fallback model, or
// fail the run. It is pure: the caller supplies the attempt history and a
// random source, and performs the waiting itself.
type RetryPolicy struct {
	// AttemptsPerModel is how many times one model is tried (first try included)
	// before moving on. Default 3: two retries ride out a brief 5xx or 429 burst
	// without stretching a failing stage past a few seconds.
	AttemptsPerModel int
	// BaseBackoff is the wait before the first retry; each further retry doubles
	// it. Default 100ms.
	BaseBackoff time.Duration
	// MaxBackoff caps one wait, including a provider's Retry-After. Default 5s:
	// a run is interactive, and a longer wait is better spent on the fallback.
	MaxBackoff time.Duration
	// Jitter is the fraction (0..1) of each backoff that is randomised, so many
	// runs hit by one outage do not retry in lockstep. Default 0.2.
	Jitter float64
}

// DefaultRetryPolicy returns the policy described on each field.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{AttemptsPerModel: 3, BaseBackoff: 100 * time.Millisecond, MaxBackoff: 5 * time.Second, Jitter: 0.2}
}

// Validate rejects impossible values.
func (p RetryPolicy) Validate() error {
	switch {
	case p.AttemptsPerModel < 1:
		return fmt.Errorf("stagework: retry attempts per model must be >= 1, got %d", p.AttemptsPerModel)
	case p.BaseBackoff < 0 || p.MaxBackoff < 0:
		return fmt.Errorf("stagework: retry backoff must not be negative")
	case p.Jitter < 0 || p.Jitter > 1:
		return fmt.Errorf("stagework: retry jitter must be in [0,1], got %v", p.Jitter)
	}
	return nil
}

// Action is what to do after a failed attempt.
type Action int

// The actions a RetryPolicy can choose.
const (
	ActionFail     Action = iota // give up: the run fails with the last error
	ActionRetry                  // try the same model again after Decision.Wait
	ActionFallback               // switch to the stage's fallback model (no wait)
)

func (a Action) String() string {
	return [...]string{"fail", "retry", "fallback"}[a]
}

// Failure describes one failed attempt to the policy.
type Failure struct {
	// Retryable says whether the same request may succeed when sent again
	// (see ProviderError.Retryable).
	Retryable bool
	// RetryAfter is the provider's own hint (429/503), 0 if none.
	RetryAfter time.Duration
	// AttemptsOnModel counts attempts made on the current model, this one included.
	AttemptsOnModel int
	// OnFallback is true when the current model is already the fallback.
	OnFallback bool
	// HasFallback is true when the stage has a fallback model configured.
	HasFallback bool
}

// Decision is the policy's answer.
type Decision struct {
	Action Action
	Wait   time.Duration // for ActionRetry
}

// Decide chooses the next step. r supplies jitter; nil means no jitter.
func (p RetryPolicy) Decide(f Failure, r *rand.Rand) Decision {
	if f.Retryable && f.AttemptsOnModel < p.AttemptsPerModel {
		return Decision{Action: ActionRetry, Wait: p.backoff(f.AttemptsOnModel, f.RetryAfter, r)}
	}
	if f.HasFallback && !f.OnFallback {
		return Decision{Action: ActionFallback}
	}
	return Decision{Action: ActionFail}
}

// backoff is the wait before retry number n (n >= 1): BaseBackoff·2^(n-1) with
// jitter, at least the provider's Retry-After, at most MaxBackoff.
func (p RetryPolicy) backoff(n int, retryAfter time.Duration, r *rand.Rand) time.Duration {
	d := p.BaseBackoff
	for i := 1; i < n && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if r != nil && p.Jitter > 0 && d > 0 {
		// Spread over [d·(1-J), d·(1+J)).
		span := float64(d) * p.Jitter
		d = time.Duration(float64(d) - span + 2*span*r.Float64())
	}
	if retryAfter > d {
		d = retryAfter
	}
	if p.MaxBackoff > 0 && d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	return d
}
