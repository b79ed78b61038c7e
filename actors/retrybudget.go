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
	ratio, burst int64 // in thousandths of a token (exact sums: ten successes at 0.1 earn one retry)

	mu     sync.Mutex
	tokens int64
}

func newRetryBudget(burst int, ratio float64) *retryBudget {
	b := int64(burst) * 1000
	return &retryBudget{ratio: int64(ratio*1000 + 0.5), burst: b, tokens: b}
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
	if b.tokens < 1000 {
		return false
	}
	b.tokens -= 1000
	return true
}
