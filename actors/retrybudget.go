package actors

import "sync"

// retryBudget bounds retries as the Google SRE book's overload chapter
// asks (and gRPC's retry throttling does): every success at the first try
// earns ratio of a token, every retry spends one, and the bucket holds at
// most burst tokens (it starts full). So retries stay below ratio of the
// successes over time, plus burst: when most first tries fail (the whole
// cluster is at capacity) the engine stops asking node after node and
// refuses at once. Safe for concurrent use; no clock.
type retryBudget struct {
	ratio, burst float64

	mu     sync.Mutex
	tokens float64
}

func newRetryBudget(burst int, ratio float64) *retryBudget {
	return &retryBudget{ratio: ratio, burst: float64(burst), tokens: float64(burst)}
}

// earn records a success at the first try.
func (b *retryBudget) earn() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.burst, b.tokens+b.ratio)
}

// spend takes a token for one retry; false: no retry now.
func (b *retryBudget) spend() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
