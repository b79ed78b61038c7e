package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// Provider is the built-in simulated model: a stagework.Provider that streams
// a plausible, stage-shaped answer about the question, deterministically for a
// seed, with configurable latency and injected faults. It needs no network. A
// Provider is safe for concurrent use.
//
// The strategies' roles get texts shaped by their role too, and those that a
// program reads parse: a ranker evaluates the responses its prompt shows and
// ends with a FINAL RANKING of them all (stagework.ParseRanking), in an order
// drawn from the seed; a sample ends with "Final answer: X" (FinalAnswer), X
// one of a few answers derived from the question; a judge ends with "Most
// consistent: Response X" (ParseChoice), X the first response giving the
// majority's answer. Written to fit max_tokens, these end lines are kept
// whole; cut at max_tokens (truncate_at_max_tokens), they may be lost, as a
// real model's would. Steps that should differ (a vote's samples) need
// different Request.Seeds.
type Provider struct {
	name      string
	cfg       stagework.SimConfig
	errKind   stagework.ErrorKind
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

func (s *Provider) topic(query string) simTopic {
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

var _ stagework.Provider = (*Provider)(nil)

// New returns a simulated model configured by cfg; name is the endpoint's
// name in the profile file, used in error messages.
func New(name string, cfg stagework.SimConfig) (*Provider, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sim: endpoint %q: %w", name, err)
	}
	kind, _ := stagework.ParseErrorKind(cfg.ErrorKind)
	return &Provider{
		name:      name,
		cfg:       cfg,
		errKind:   kind,
		latency:   cfg.TTFT > 0 || cfg.TTFTJitter > 0 || cfg.ITL > 0 || cfg.ITLJitter > 0,
		faultSeed: mix64(uint64(cfg.Seed) ^ 0x5851f42d4c957f2d),
	}, nil
}

// Name returns "sim".
func (s *Provider) Name() string { return stagework.KindSim }

// Config returns the simulator's configuration, defaults filled in.
func (s *Provider) Config() stagework.SimConfig { return s.cfg }

type simFault uint8

const (
	faultNone simFault = iota
	faultError
	faultCut
	faultHang
	faultStall
)

// drawFault picks this request's fault from the simulator's own sequence.
func (s *Provider) drawFault() simFault {
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
func (s *Provider) Stream(ctx context.Context, req stagework.Request) (stagework.Stream, error) {
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
	var prompt *simPrompt
	if req.Stage.Valid() && !req.Stage.Chain() {
		prompt = readPrompt(req)
	}
	text, ends := newSimText(req.Stage, s.topic(req.Query), planSeed, textSeed, target, limit, prompt)

	st := &simStream{
		ctx:       ctx,
		done:      ctx.Done(),
		text:      text,
		ends:      ends,
		faultAt:   -1,
		fault:     fault,
		sim:       s,
		truncated: limit > 0,
		usage:     stagework.Usage{PromptTokens: estimatePromptTokens(req.Messages), Estimated: true},
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
func (s *Provider) injectedError(mid bool, tokens int) *stagework.ProviderError {
	e := &stagework.ProviderError{Kind: s.errKind, Provider: stagework.KindSim, Message: "simulated " + s.errKind.String() + " error"}
	if mid {
		e.Message += fmt.Sprintf(" after %d tokens", tokens)
	}
	e.Message += " (endpoint " + s.name + ")"
	switch s.errKind {
	case stagework.ErrRateLimited:
		e.Code, e.RetryAfter = "rate_limit_exceeded", s.cfg.RetryAfter
		if !mid {
			e.Status = 429
		}
	case stagework.ErrServer:
		e.Code = "server_error"
		if !mid {
			e.Status = 500
		}
	case stagework.ErrAuth:
		e.Code = "invalid_api_key"
		if !mid {
			e.Status = 401
		}
	case stagework.ErrBadRequest:
		e.Code = "invalid_request_error"
		if !mid {
			e.Status = 400
		}
	case stagework.ErrTimeout:
		e.Err = context.DeadlineExceeded
	case stagework.ErrConnection:
		e.Err = io.ErrUnexpectedEOF
	}
	return e
}

// errStreamClosed is what Recv returns after Close.
var errStreamClosed = errors.New("sim: stream closed")

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
	usage   stagework.Usage
	sim     *Provider
	// truncated: the text was cut at the request's max_tokens.
	truncated bool

	timed bool
	rng   *rand.Rand // latency jitter
	due   time.Time  // when the next token is due (real clock only)
	timer *time.Timer
}

// Recv returns the next token, io.EOF after the last, an injected fault, or
// ctx's error once ctx has ended (at once, also while waiting).
func (st *simStream) Recv() (stagework.Chunk, error) {
	if st.done != nil {
		select {
		case <-st.done:
			return stagework.Chunk{}, st.ctx.Err()
		default:
		}
	}
	if st.err != nil {
		return stagework.Chunk{}, st.err
	}
	if st.i == st.faultAt {
		return stagework.Chunk{}, st.strike()
	}
	if st.i >= len(st.ends) {
		st.err = io.EOF
		st.usage.CompletionTokens = int64(st.i)
		st.usage.TotalTokens = st.usage.PromptTokens + st.usage.CompletionTokens
		return stagework.Chunk{}, io.EOF
	}
	if st.timed {
		if err := st.wait(st.nextDelay()); err != nil {
			return stagework.Chunk{}, err
		}
	}
	end := st.ends[st.i]
	text := st.text[st.pos:end]
	st.pos = end
	st.i++
	return stagework.Chunk{Text: text, Tokens: 1}, nil
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
		st.err = &stagework.ProviderError{Kind: stagework.ErrProtocol, Provider: stagework.KindSim,
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
func (st *simStream) Usage() (stagework.Usage, bool) {
	if st.err != io.EOF {
		return stagework.Usage{}, false
	}
	return st.usage, true
}

// FinishReason (stagework.Finished) is "stop" once the text has ended, as
// a model's would: "length" when it was cut at the request's max_tokens
// (TruncateAtMax); "" before the end.
func (st *simStream) FinishReason() string {
	switch {
	case st.err != io.EOF:
		return ""
	case st.truncated:
		return "length"
	}
	return "stop"
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
func estimatePromptTokens(msgs []stagework.Message) int64 {
	var chars int
	for _, m := range msgs {
		chars += len(m.Content)
	}
	return int64((chars+3)/4 + 4*len(msgs) + 3)
}

// hashSeed mixes a request's identity into one seed.
func hashSeed(seed int64, model string, stage stagework.Stage, query string) uint64 {
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

// simPrompt is what a strategy's step finds in its prompt: the labelled
// responses it is shown (a later moa layer, the aggregator, the council's
// rankers and chairman, the judge), and the question.
type simPrompt struct {
	query     string
	responses []simResponse
}

// simResponse is one labelled response in a prompt.
type simResponse struct {
	label string // "A"
	text  string
}

var (
	// responseTagRE is a response as the default prompts fence it.
	responseTagRE = regexp.MustCompile(`(?s)<response label="([A-Z])"[^>]*>\n?(.*?)\n?</response>`)
	// responseHeaderRE is a "Response A" heading line, as a custom template
	// might show responses instead.
	responseHeaderRE = regexp.MustCompile(`(?m)^[ \t#*>_-]*Response ([A-Z])\b[ \t*_:.)-]*$`)
)

// readPrompt finds the labelled responses in req's last user message: in
// <response label="X"> tags, else under "Response X" heading lines. A label
// shown twice counts once (the first).
func readPrompt(req stagework.Request) *simPrompt {
	p := &simPrompt{query: req.Query}
	user := ""
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			user = req.Messages[i].Content
			break
		}
	}
	seen := map[string]bool{}
	add := func(label, text string) {
		if !seen[label] {
			seen[label] = true
			p.responses = append(p.responses, simResponse{label: label, text: text})
		}
	}
	if ms := responseTagRE.FindAllStringSubmatch(user, -1); len(ms) > 0 {
		for _, m := range ms {
			add(m[1], m[2])
		}
		return p
	}
	hs := responseHeaderRE.FindAllStringSubmatchIndex(user, -1)
	for k, h := range hs {
		end := len(user)
		if k+1 < len(hs) {
			end = hs[k+1][0]
		}
		add(user[h[2]:h[3]], strings.TrimSpace(user[h[1]:end]))
	}
	return p
}
