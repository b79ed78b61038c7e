package stagework

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestRetryPolicyDecide(t *testing.T) {
	p := RetryPolicy{AttemptsPerModel: 3, BaseBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}
	cases := []struct {
		name string
		f    Failure
		want Decision
	}{
		{"first retry", Failure{Retryable: true, AttemptsOnModel: 1, HasFallback: true}, Decision{ActionRetry, 100 * time.Millisecond}},
		{"second retry doubles", Failure{Retryable: true, AttemptsOnModel: 2, HasFallback: true}, Decision{ActionRetry, 200 * time.Millisecond}},
		{"attempts used: fallback", Failure{Retryable: true, AttemptsOnModel: 3, HasFallback: true}, Decision{ActionFallback, 0}},
		{"not retryable: straight to fallback", Failure{Retryable: false, AttemptsOnModel: 1, HasFallback: true}, Decision{ActionFallback, 0}},
		{"no fallback: fail", Failure{Retryable: true, AttemptsOnModel: 3}, Decision{ActionFail, 0}},
		{"fallback used up: fail", Failure{Retryable: true, AttemptsOnModel: 3, OnFallback: true, HasFallback: true}, Decision{ActionFail, 0}},
		{"retry-after honoured", Failure{Retryable: true, AttemptsOnModel: 1, RetryAfter: 700 * time.Millisecond}, Decision{ActionRetry, 700 * time.Millisecond}},
		{"retry-after capped", Failure{Retryable: true, AttemptsOnModel: 1, RetryAfter: time.Hour}, Decision{ActionRetry, time.Second}},
	}
	for _, c := range cases {
		if got := p.Decide(c.f, nil); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestRetryPolicyJitterBounds(t *testing.T) {
	p := RetryPolicy{AttemptsPerModel: 5, BaseBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, Jitter: 0.2}
	r := rand.New(rand.NewPCG(1, 2))
	seen := map[time.Duration]bool{}
	for i := 0; i < 1000; i++ {
		d := p.Decide(Failure{Retryable: true, AttemptsOnModel: 3}, r).Wait
		if d < 320*time.Millisecond || d >= 480*time.Millisecond {
			t.Fatalf("backoff %v outside 400ms ± 20%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Fatalf("jitter produced only %d distinct waits", len(seen))
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	if err := DefaultRetryPolicy().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, p := range []RetryPolicy{{AttemptsPerModel: 0}, {AttemptsPerModel: 1, BaseBackoff: -1}, {AttemptsPerModel: 1, Jitter: 2}} {
		if p.Validate() == nil {
			t.Errorf("%+v: want error", p)
		}
	}
}
