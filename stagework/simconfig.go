package stagework

import (
	"errors"
	"fmt"
	"time"
)

// SimConfig configures the simulated model (package stagework/sim), the
// "sim" block of a provider of kind sim. It lives here, beside the rest of the
// profile file's schema, so that ParseConfig checks it and names its fields;
// the simulator itself imports stagework, not the other way round.
//
// The zero value is a valid, instant, fault-free model that writes
// DefaultSimOutputTokens tokens.
//
// Latency: the first token arrives TTFT after Stream returns, each further
// token ITL after the one before; each wait is varied uniformly by up to ±its
// jitter (clamped at zero). Waits are scheduled from the start of the stream,
// so a slow reader does not stretch the run: tokens already due arrive at once.
//
// Faults: each request draws at most one fault, with the probabilities
// ErrorRate, CutRate, HangRate and StallRate (their sum is at most 1). The
// draws come from a per-simulator sequence seeded by Seed, so a retried request
// draws afresh, while a given simulator driven in the same order repeats exactly.
type SimConfig struct {
	// Seed is used when a Request's Seed is 0; it also seeds the fault draws.
	Seed int64 `yaml:"seed"`

	// TTFT is the time to the first token.
	TTFT time.Duration `yaml:"ttft"`
	// TTFTJitter varies TTFT by up to ± this much.
	TTFTJitter time.Duration `yaml:"ttft_jitter"`
	// ITL is the inter-token latency.
	ITL time.Duration `yaml:"itl"`
	// ITLJitter varies each ITL by up to ± this much.
	ITLJitter time.Duration `yaml:"itl_jitter"`

	// OutputTokens is the length of an answer in tokens; 0 means
	// DefaultSimOutputTokens. Any length works: long answers add sections.
	OutputTokens int `yaml:"output_tokens"`
	// OutputTokensJitter varies OutputTokens by up to ± this many tokens.
	OutputTokensJitter int `yaml:"output_tokens_jitter"`
	// TruncateAtMax chooses what a Request.MaxTokens smaller than the answer
	// does. False (the default, for readable demos): the answer is written to
	// fit, ending a little under MaxTokens as a model that was asked to be
	// brief would. True: the answer is cut at exactly MaxTokens, mid-sentence,
	// as a real model that hits its limit is.
	TruncateAtMax bool `yaml:"truncate_at_max_tokens"`

	// ErrorRate is the probability, in [0, 1], that a request fails with ErrorKind.
	ErrorRate float64 `yaml:"error_rate"`
	// ErrorKind is the kind of injected error: rate_limited, server, auth,
	// timeout, bad_request, protocol or connection. Default server.
	ErrorKind string `yaml:"error_kind"`
	// ErrorAfter is how many tokens a failing request streams before the
	// error; 0 means Stream itself fails (before any headers, so to speak).
	// Needs ErrorRate > 0.
	ErrorAfter int `yaml:"error_after"`
	// RetryAfter is the Retry-After an injected rate_limited error carries;
	// default DefaultSimRetryAfter.
	RetryAfter time.Duration `yaml:"retry_after"`
	// CutRate is the probability that a stream is cut: after CutAfter tokens
	// Recv returns an ErrProtocol error "stream cut after N tokens", as when a
	// connection drops without the final [DONE].
	CutRate float64 `yaml:"cut_rate"`
	// CutAfter is the number of tokens before the cut (0: before the first).
	// Needs CutRate > 0.
	CutAfter int `yaml:"cut_after"`
	// HangRate is the probability that a stream never sends a token: Recv
	// blocks until the request's context ends.
	HangRate float64 `yaml:"hang_rate"`
	// StallRate is the probability that a stream stops after StallAfter
	// tokens and then blocks until the request's context ends.
	StallRate float64 `yaml:"stall_rate"`
	// StallAfter is the number of tokens before a stall. Needs StallRate > 0.
	StallAfter int `yaml:"stall_after"`
}

// Defaults for SimConfig fields left at zero.
const (
	// DefaultSimOutputTokens is a typical short chat answer (~170 words).
	DefaultSimOutputTokens = 220
	// DefaultSimRetryAfter is a typical Retry-After of a rate-limited API.
	DefaultSimRetryAfter = time.Second
	// maxSimOutputTokens bounds output_tokens (≈ 60 MB of text per request).
	maxSimOutputTokens = 10_000_000
	// maxSimDuration bounds every latency knob; longer is a typo (use hang_rate).
	maxSimDuration = 24 * time.Hour
)

// Validate checks c and fills its defaults. Every error names the field.
func (c *SimConfig) Validate() error {
	var errs []error
	for _, p := range c.problems() {
		errs = append(errs, fmt.Errorf("stagework: sim config: %s", p))
	}
	return errors.Join(errs...)
}

// problems fills c's defaults and lists what is wrong, each as "field: why".
func (c *SimConfig) problems() []string {
	var errs []string
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Sprintf(format, args...))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"ttft", c.TTFT}, {"ttft_jitter", c.TTFTJitter}, {"itl", c.ITL}, {"itl_jitter", c.ITLJitter}, {"retry_after", c.RetryAfter}} {
		if d.v < 0 {
			bad("%s: %v is negative", d.name, d.v)
		} else if d.v > maxSimDuration {
			bad("%s: %v is more than %v", d.name, d.v, maxSimDuration)
		}
	}
	if c.OutputTokens == 0 {
		c.OutputTokens = DefaultSimOutputTokens
	}
	if c.OutputTokens < 0 || c.OutputTokens > maxSimOutputTokens {
		bad("output_tokens: %d is not in [1, %d]", c.OutputTokens, maxSimOutputTokens)
	}
	if c.OutputTokensJitter < 0 || (c.OutputTokensJitter >= c.OutputTokens && c.OutputTokens > 0) {
		bad("output_tokens_jitter: %d is not in [0, output_tokens)", c.OutputTokensJitter)
	}
	sum := 0.0
	for _, r := range []struct {
		name string
		v    float64
	}{{"error_rate", c.ErrorRate}, {"cut_rate", c.CutRate}, {"hang_rate", c.HangRate}, {"stall_rate", c.StallRate}} {
		if !(r.v >= 0 && r.v <= 1) {
			bad("%s: %v is not in [0, 1]", r.name, r.v)
			continue
		}
		sum += r.v
	}
	if sum > 1+1e-9 {
		bad("rates: error_rate + cut_rate + hang_rate + stall_rate = %v, more than 1", sum)
	}
	if c.ErrorKind == "" {
		c.ErrorKind = ErrServer.String()
	}
	if _, ok := ParseErrorKind(c.ErrorKind); !ok {
		bad("error_kind: unknown kind %q (rate_limited, server, auth, timeout, bad_request, protocol, connection)", c.ErrorKind)
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = DefaultSimRetryAfter
	}
	for _, a := range []struct {
		name, rate string
		after      int
		r          float64
	}{{"error_after", "error_rate", c.ErrorAfter, c.ErrorRate}, {"cut_after", "cut_rate", c.CutAfter, c.CutRate}, {"stall_after", "stall_rate", c.StallAfter, c.StallRate}} {
		switch {
		case a.after < 0:
			bad("%s: %d is negative", a.name, a.after)
		case a.after > 0 && a.r == 0:
			bad("%s: set but %s is 0 (set %s: 1 to affect every request)", a.name, a.rate, a.rate)
		}
	}
	return errs
}

// ParseErrorKind maps an error kind's name (as ErrorKind.String writes it)
// to its ErrorKind; "unknown" is not a kind one can ask for.
func ParseErrorKind(s string) (ErrorKind, bool) {
	for k, n := range kindNames {
		if n == s && ErrorKind(k) != ErrUnknown {
			return ErrorKind(k), true
		}
	}
	return ErrUnknown, false
}
