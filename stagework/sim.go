package stagework

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// SimConfig configures the simulated model. The zero value is a valid,
// instant, fault-free model that writes DefaultSimOutputTokens tokens.
//
// Latency: the first token arrives TTFT after Stream returns, each further
// token ITL after the one before; each wait is varied uniformly by up to ±its
// jitter (clamped at zero). Waits are scheduled from the start of the stream,
// so a slow reader does not stretch the run: tokens already due arrive at once.
//
// Faults: each request draws at most one fault, with the probabilities
// ErrorRate, CutRate, HangRate and StallRate (their sum is at most 1). The
// draws come from a per-Sim sequence seeded by Seed, so a retried request
// draws afresh, while a given Sim driven in the same order repeats exactly.
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

// validate checks c and fills its defaults.
func (c *SimConfig) validate() error {
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
	if _, ok := parseErrorKind(c.ErrorKind); !ok {
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

func parseErrorKind(s string) (ErrorKind, bool) {
	for k, n := range kindNames {
		if n == s && ErrorKind(k) != ErrUnknown {
			return ErrorKind(k), true
		}
	}
	return ErrUnknown, false
}

// Sim is the built-in simulated model: a Provider that streams a plausible,
// stage-shaped answer about the question, deterministically for a seed, with
// configurable latency and injected faults. It needs no network. A Sim is safe
// for concurrent use.
type Sim struct {
	name      string
	cfg       SimConfig
	errKind   ErrorKind
	latency   bool          // any wait configured at all
	calls     atomic.Uint64 // requests so far, for the fault draws
	faultSeed uint64

	// sleep, when set (by tests), replaces real waiting: it is called with
	// each wait's duration and must return ctx.Err() if ctx has ended.
	sleep func(ctx context.Context, d time.Duration) error

	// topics caches analyzeQuery: the four stages of a run ask about the
	// same question. Emptied when it reaches maxCachedTopics.
	topicMu sync.Mutex
	topics  map[string]simTopic
}

const maxCachedTopics = 1024

func (s *Sim) topic(query string) simTopic {
	s.topicMu.Lock()
	t, ok := s.topics[query]
	s.topicMu.Unlock()
	if ok {
		return t
	}
	t = analyzeQuery(query)
	if len(query) <= 4096 {
		s.topicMu.Lock()
		if s.topics == nil || len(s.topics) >= maxCachedTopics {
			s.topics = make(map[string]simTopic)
		}
		s.topics[query] = t
		s.topicMu.Unlock()
	}
	return t
}

var _ Provider = (*Sim)(nil)

// NewSim returns a simulated model configured by cfg; name is the endpoint's
// name in the profile file, used in error messages.
func NewSim(name string, cfg SimConfig) (*Sim, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("stagework: sim %q: %w", name, err)
	}
	kind, _ := parseErrorKind(cfg.ErrorKind)
	return &Sim{
		name:      name,
		cfg:       cfg,
		errKind:   kind,
		latency:   cfg.TTFT > 0 || cfg.TTFTJitter > 0 || cfg.ITL > 0 || cfg.ITLJitter > 0,
		faultSeed: mix64(uint64(cfg.Seed) ^ 0x5851f42d4c957f2d),
	}, nil
}

// Name returns "sim".
func (s *Sim) Name() string { return KindSim }

// Config returns the Sim's configuration, defaults filled in.
func (s *Sim) Config() SimConfig { return s.cfg }

type simFault uint8

const (
	faultNone simFault = iota
	faultError
	faultCut
	faultHang
	faultStall
)

// drawFault picks this request's fault from the Sim's own sequence.
func (s *Sim) drawFault() simFault {
	c := &s.cfg
	if c.ErrorRate == 0 && c.CutRate == 0 && c.HangRate == 0 && c.StallRate == 0 {
		return faultNone
	}
	n := s.calls.Add(1)
	u := float64(mix64(s.faultSeed+n*0x9e3779b97f4a7c15)>>11) / (1 << 53)
	switch {
	case u < c.ErrorRate:
		return faultError
	case u < c.ErrorRate+c.CutRate:
		return faultCut
	case u < c.ErrorRate+c.CutRate+c.HangRate:
		return faultHang
	case u < c.ErrorRate+c.CutRate+c.HangRate+c.StallRate:
		return faultStall
	}
	return faultNone
}

// Stream starts a simulated completion. It returns at once: an injected
// error with ErrorAfter 0, ctx's error if ctx has already ended, or a stream
// whose text is already written (Recv only hands it out, with the configured
// waits).
func (s *Sim) Stream(ctx context.Context, req Request) (Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	fault := s.drawFault()
	if fault == faultError && s.cfg.ErrorAfter == 0 {
		return nil, s.injectedError(false, 0)
	}

	seed := req.Seed
	if seed == 0 {
		seed = s.cfg.Seed
	}
	planSeed := hashSeed(seed, "", 0, req.Query)
	textSeed := hashSeed(seed, req.Model, req.Stage, req.Query)
	rng := rand.New(rand.NewPCG(textSeed, 0xda942042e4dd58b5))

	target := s.cfg.OutputTokens
	if j := s.cfg.OutputTokensJitter; j > 0 {
		target += rng.IntN(2*j+1) - j
	}
	limit := 0
	if m := req.MaxTokens; m > 0 && target > m {
		if s.cfg.TruncateAtMax {
			limit = m
		} else {
			// A model asked to be brief ends a little under its limit.
			target = m - rng.IntN(m/10+1)
		}
	}
	target = max(target, 1)
	text, ends := newSimText(req.Stage, s.topic(req.Query), planSeed, textSeed, target, limit)

	st := &simStream{
		ctx:     ctx,
		done:    ctx.Done(),
		text:    text,
		ends:    ends,
		faultAt: -1,
		fault:   fault,
		sim:     s,
		usage:   Usage{PromptTokens: estimatePromptTokens(req.Messages), Estimated: true},
	}
	switch fault {
	case faultError:
		st.faultAt = s.cfg.ErrorAfter
	case faultCut:
		st.faultAt = s.cfg.CutAfter
	case faultHang:
		st.faultAt = 0
	case faultStall:
		st.faultAt = s.cfg.StallAfter
	}
	// A fault placed after the end of a short answer replaces its end.
	st.faultAt = min(st.faultAt, len(ends))
	if s.latency {
		st.timed = true
		st.rng = rng
		if s.sleep == nil {
			st.due = time.Now()
		}
	}
	return st, nil
}

// injectedError is the error of an ErrorKind fault; mid says whether it
// arrives mid-stream (after HTTP 200) rather than instead of the response.
func (s *Sim) injectedError(mid bool, tokens int) *ProviderError {
	e := &ProviderError{Kind: s.errKind, Provider: KindSim, Message: "simulated " + s.errKind.String() + " error"}
	if mid {
		e.Message += fmt.Sprintf(" after %d tokens", tokens)
	}
	e.Message += " (endpoint " + s.name + ")"
	switch s.errKind {
	case ErrRateLimited:
		e.Code, e.RetryAfter = "rate_limit_exceeded", s.cfg.RetryAfter
		if !mid {
			e.Status = 429
		}
	case ErrServer:
		e.Code = "server_error"
		if !mid {
			e.Status = 500
		}
	case ErrAuth:
		e.Code = "invalid_api_key"
		if !mid {
			e.Status = 401
		}
	case ErrBadRequest:
		e.Code = "invalid_request_error"
		if !mid {
			e.Status = 400
		}
	case ErrTimeout:
		e.Err = context.DeadlineExceeded
	case ErrConnection:
		e.Err = io.ErrUnexpectedEOF
	}
	return e
}

// errStreamClosed is what Recv returns after Close.
var errStreamClosed = errors.New("stagework: sim: stream closed")

// simStream hands out a pre-written text token by token. Each Chunk.Text is
// a substring of that text, so Recv allocates nothing.
type simStream struct {
	ctx  context.Context
	done <-chan struct{} // ctx.Done(); nil for a context that never ends

	text    string
	ends    []int32 // ends[i] is the end offset of token i
	i       int     // next token
	pos     int32   // its start offset
	faultAt int     // token index where the fault strikes; -1 none
	fault   simFault
	err     error // sticky end: io.EOF, an injected error, or errStreamClosed
	usage   Usage
	sim     *Sim

	timed bool
	rng   *rand.Rand // latency jitter
	due   time.Time  // when the next token is due (real clock only)
	timer *time.Timer
}

// Recv returns the next token, io.EOF after the last, an injected fault, or
// ctx's error once ctx has ended (at once, also while waiting).
func (st *simStream) Recv() (Chunk, error) {
	if st.done != nil {
		select {
		case <-st.done:
			return Chunk{}, st.ctx.Err()
		default:
		}
	}
	if st.err != nil {
		return Chunk{}, st.err
	}
	if st.i == st.faultAt {
		return Chunk{}, st.strike()
	}
	if st.i >= len(st.ends) {
		st.err = io.EOF
		st.usage.CompletionTokens = int64(st.i)
		st.usage.TotalTokens = st.usage.PromptTokens + st.usage.CompletionTokens
		return Chunk{}, io.EOF
	}
	if st.timed {
		if err := st.wait(st.nextDelay()); err != nil {
			return Chunk{}, err
		}
	}
	end := st.ends[st.i]
	text := st.text[st.pos:end]
	st.pos = end
	st.i++
	return Chunk{Text: text, Tokens: 1}, nil
}

// Buffered reports whether Recv will return a token at once: the simulator
// at zero latency, with tokens left and no fault due.
func (st *simStream) Buffered() bool {
	return !st.timed && st.err == nil && st.i < len(st.ends) && st.i != st.faultAt
}

// strike delivers the stream's fault at its position.
func (st *simStream) strike() error {
	switch st.fault {
	case faultHang, faultStall:
		<-st.done // blocks for good if the context can never end, as a hung server would
		return st.ctx.Err()
	case faultCut:
		if st.timed {
			if err := st.wait(st.nextDelay()); err != nil {
				return err
			}
		}
		st.err = &ProviderError{Kind: ErrProtocol, Provider: KindSim,
			Message: fmt.Sprintf("stream cut after %d tokens", st.i), Err: io.ErrUnexpectedEOF}
	default:
		if st.timed {
			if err := st.wait(st.nextDelay()); err != nil {
				return err
			}
		}
		st.err = st.sim.injectedError(true, st.i)
	}
	return st.err
}

func (st *simStream) nextDelay() time.Duration {
	c := &st.sim.cfg
	if st.i == 0 {
		return jitter(st.rng, c.TTFT, c.TTFTJitter)
	}
	return jitter(st.rng, c.ITL, c.ITLJitter)
}

func jitter(r *rand.Rand, base, j time.Duration) time.Duration {
	if j > 0 {
		base += time.Duration(r.Int64N(int64(j)*2+1)) - j
	}
	return max(base, 0)
}

// wait blocks for d (counted from when the previous token was due) or until
// ctx ends. One timer per stream, created on first use.
func (st *simStream) wait(d time.Duration) error {
	if sleep := st.sim.sleep; sleep != nil {
		return sleep(st.ctx, d)
	}
	st.due = st.due.Add(d)
	delay := time.Until(st.due)
	if delay <= 0 {
		return nil
	}
	if st.timer == nil {
		st.timer = time.NewTimer(delay)
	} else {
		st.timer.Reset(delay)
	}
	select {
	case <-st.timer.C:
		return nil
	case <-st.done:
		st.timer.Stop()
		return st.ctx.Err()
	}
}

// Usage reports the token counts once Recv has returned io.EOF: prompt tokens
// estimated from the prompt's length, completion tokens exactly.
func (st *simStream) Usage() (Usage, bool) {
	if st.err != io.EOF {
		return Usage{}, false
	}
	return st.usage, true
}

// Close ends the stream; later Recv calls return an error. Idempotent.
func (st *simStream) Close() error {
	if st.timer != nil {
		st.timer.Stop()
	}
	if st.err == nil || st.err == io.EOF {
		st.err = errStreamClosed
	}
	return nil
}

// estimatePromptTokens is the usual rule of thumb: ~4 characters per token,
// plus a few tokens of chat framing per message.
func estimatePromptTokens(msgs []Message) int64 {
	var chars int
	for _, m := range msgs {
		chars += len(m.Content)
	}
	return int64((chars+3)/4 + 4*len(msgs) + 3)
}

// hashSeed mixes a request's identity into one seed.
func hashSeed(seed int64, model string, stage Stage, query string) uint64 {
	h := fnv.New64a()
	var b [16]byte
	for i := range 8 {
		b[i] = byte(uint64(seed) >> (8 * i))
		b[8+i] = byte(uint64(stage) >> (8 * i))
	}
	h.Write(b[:])
	h.Write([]byte(model))
	h.Write([]byte{0})
	h.Write([]byte(query))
	return mix64(h.Sum64())
}

// mix64 is splitmix64's finaliser.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
