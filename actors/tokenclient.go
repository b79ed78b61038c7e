package actors

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.41.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/qlc-project/qlc/messages"
)

// TokenizerClientConfig configures a TokenizerClient.
type TokenizerClientConfig struct {
	// Hosts chooses capable hosts for each request (the cluster's
	// Topology). Nil: this process's own tokenizer actors if Local, else the
	// local fallback; requests are then not batched.
	Hosts TokenizerPlacer
	// Local: this process hosts tokenizer actors (Config.Tokenizer).
	Local bool
	// Timeout bounds a host's answer before the request goes to the next
	// host or is counted here. Default 250 ms.
	Timeout time.Duration
	// MaxQueue bounds the requests waiting for a batch. When it is full a
	// request is counted here at once on the generic path (ServedBy
	// "local-fallback"), as when no host answers: a caller never waits for
	// room. Default 1024 (16 full batches).
	MaxQueue int
	// Metrics receives the tokenizer request counts. Required.
	Metrics *Metrics
	// Logger: default slog.Default().
	Logger *slog.Logger
}

// TokenizerClient counts tokens for this process on tokenizer actors (on
// capable hosts, batched), falling back to the generic path here. Its
// methods are safe for concurrent use; they block until an answer or the
// fallback (about 2×Timeout at worst), or until the caller's ctx ends.
//
// Goroutines: at most one, the batcher's drain, started when a request
// finds no batch in flight and ending when the queue is empty; Close
// waits for it.
type TokenizerClient struct {
	system *actor.ActorSystem
	cfg    TokenizerClientConfig
	batch  tokenBatcher // requests for remote tokenizer actors
}

// NewTokenizerClient returns a client sending from system.
func NewTokenizerClient(system *actor.ActorSystem, cfg TokenizerClientConfig) *TokenizerClient {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 250 * time.Millisecond
	}
	if cfg.MaxQueue <= 0 {
		cfg.MaxQueue = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &TokenizerClient{system: system, cfg: cfg}
}

// Close makes later requests that would wait for a batch count here
// instead, and waits for the batch in flight. Idempotent.
func (c *TokenizerClient) Close() {
	c.batch.mu.Lock()
	c.batch.closed = true
	c.batch.mu.Unlock()
	c.batch.wg.Wait()
}

// FitToBudget cuts m.Text to at most m.MaxTokens tokens at a token boundary
// on a tokenizer actor (a capable host from Config.Topology, else
// this process's own), or here on the generic path when none answers in
// time (ServedBy "local-fallback"). Not batched: a fit carries one large
// text.
func (c *TokenizerClient) FitToBudget(ctx context.Context, m *messages.FitToBudget) (ft *messages.FittedText, err error) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		var span trace.Span
		ctx, span = startSpan(ctx, "qlc.tokenizer.fit", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(semconv.GenAIRequestModel(m.Model), attribute.Int64("qlc.tokenizer.max_tokens", m.MaxTokens)))
		defer func() { endTokenizerSpan(&span, ft.GetServedBy(), err) }()
	}
	var hosts []string
	ask := c.cfg.Local
	if c.cfg.Hosts != nil {
		hosts, ask = c.cfg.Hosts.TokenizerHosts(m.Model+m.Encoding), true
	} else {
		hosts = []string{c.system.Address()}
	}
	var out *messages.FittedText
	if ask {
		out, _ = askTokenizer[*messages.FittedText](ctx, c, hosts, m, "fit")
	}
	if out == nil {
		c.cfg.Metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
		out = fitToBudget(m, "local-fallback", true)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrTokenize, out.Error)
	}
	return out, nil
}

// CountTokens counts texts on a tokenizer actor: on a capable host chosen by
// Config.Hosts, else on this process's own tokenizer actors; when
// no capable host answers within Config.Timeout it counts here, on
// the generic path, and says so in ServedBy ("local-fallback").
//
// Requests to other hosts are batched adaptively: while a batch is in
// flight, new requests wait and leave together when it returns (at most
// maxTokenBatch); a node with nothing in flight sends at once. A request
// whose ctx ends while it waits is dropped from the queue, not sent; when
// MaxQueue requests already wait, it is counted here at once.
func (c *TokenizerClient) CountTokens(ctx context.Context, m *messages.CountTokens) (counts *messages.TokenCounts, err error) {
	if trace.SpanContextFromContext(ctx).IsValid() {
		var span trace.Span
		ctx, span = startSpan(ctx, "qlc.tokenizer.count", trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(semconv.GenAIRequestModel(m.Model), attribute.Int("qlc.tokenizer.texts", len(m.Texts))))
		defer func() { endTokenizerSpan(&span, counts.GetServedBy(), err) }()
	}
	var tc *messages.TokenCounts
	if c.cfg.Hosts != nil {
		p := &pendingCount{ctx: ctx, req: m, done: make(chan *messages.TokenCounts, 1)}
		if c.batch.enqueue(c, p) {
			select {
			case tc = <-p.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		} else {
			c.cfg.Metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
			tc = countTokens(m, "local-fallback", true)
		}
	} else {
		tc = c.countOn(ctx, []string{c.system.Address()}, m, c.cfg.Local)
	}
	if tc.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrTokenize, tc.Error)
	}
	return tc, nil
}

// countOn asks hosts' tokenizer actors in turn (if ask), then counts here.
func (c *TokenizerClient) countOn(ctx context.Context, hosts []string, m *messages.CountTokens, ask bool) *messages.TokenCounts {
	if ask {
		if tc, h := askTokenizer[*messages.TokenCounts](ctx, c, hosts, m, "count"); tc != nil {
			if h != c.system.Address() {
				c.cfg.Metrics.tokenizerRequests.WithLabelValues("remote").Inc()
			}
			return tc
		}
	}
	c.cfg.Metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
	return countTokens(m, "local-fallback", true)
}

// askTokenizer asks the tokenizer actors of the first two hosts in turn, each
// within Config.Timeout (cut to ctx's deadline), and returns the first answer
// of type T and the host that gave it; the zero T when none answered (the
// caller then works here).
func askTokenizer[T any](ctx context.Context, c *TokenizerClient, hosts []string, m any, what string) (T, string) {
	var zero T
	for _, h := range hosts[:min(len(hosts), 2)] {
		timeout := c.cfg.Timeout
		if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
			timeout = time.Until(d)
		}
		res, err := c.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), m, timeout).Result()
		if v, ok := res.(T); ok && err == nil {
			return v, h
		}
		c.cfg.Logger.Warn("tokenizer host did not answer; trying the next or working here", "host", h, "request", what, "error", err)
	}
	return zero, ""
}

// maxTokenBatch bounds one CountTokensBatch.
const maxTokenBatch = 64

type pendingCount struct {
	ctx  context.Context // the caller's: once done, the request is not sent
	req  *messages.CountTokens
	done chan *messages.TokenCounts // cap 1
}

// tokenBatcher gathers a process's requests for remote tokenizer actors.
// Its queue is bounded (TokenizerClientConfig.MaxQueue): enqueue refuses a
// request beyond, and the caller counts it locally.
type tokenBatcher struct {
	// mu guards the fields below it.
	mu       sync.Mutex
	queue    []*pendingCount
	inFlight bool          // the drain goroutine runs
	closed   bool          // Close: no new drain goroutine, no new request
	hold     chan struct{} // tests: batches wait for it to close before leaving
	enqueued int           // requests ever queued (tests)
	dropped  int           // requests dropped because their caller gave up (tests)

	wg sync.WaitGroup // the drain goroutine
}

// enqueue adds p; if no batch is in flight it starts one (on a goroutine
// that keeps sending batches until the queue is empty). It returns false,
// without queueing p, when the queue is full or the client closed.
func (b *tokenBatcher) enqueue(c *TokenizerClient, p *pendingCount) bool {
	b.mu.Lock()
	if b.closed || len(b.queue) >= c.cfg.MaxQueue {
		b.mu.Unlock()
		return false
	}
	b.queue = append(b.queue, p)
	b.enqueued++
	if b.inFlight {
		b.mu.Unlock()
		return true
	}
	b.inFlight = true
	b.wg.Add(1)
	b.mu.Unlock()
	go b.drain(c)
	return true
}

// next takes the next batch: up to maxTokenBatch requests whose callers
// still wait (the others are dropped). Empty: the queue is empty, and
// inFlight is cleared.
func (b *tokenBatcher) next() ([]*pendingCount, chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var batch []*pendingCount
	i := 0
	for ; i < len(b.queue) && len(batch) < maxTokenBatch; i++ {
		if p := b.queue[i]; p.ctx.Err() == nil {
			batch = append(batch, p)
		} else {
			b.dropped++
		}
	}
	clear(b.queue[:i])
	b.queue = b.queue[i:]
	if len(batch) == 0 {
		b.inFlight = false
	}
	return batch, b.hold
}

func (b *tokenBatcher) drain(c *TokenizerClient) {
	defer b.wg.Done()
	for {
		batch, hold := b.next()
		if len(batch) == 0 {
			return
		}
		if hold != nil {
			<-hold
		}
		c.sendBatch(batch)
	}
}

// sendBatch sends one batch to a capable host (the rendezvous owner of its
// first request, then another), falling back to local counting.
func (c *TokenizerClient) sendBatch(batch []*pendingCount) {
	first := batch[0].req
	key := first.Model + first.Encoding
	if len(first.Texts) > 0 {
		key += first.Texts[0]
	}
	msg := &messages.CountTokensBatch{Requests: make([]*messages.CountTokens, len(batch))}
	for i, p := range batch {
		msg.Requests[i] = p.req
	}
	hosts := c.cfg.Hosts.TokenizerHosts(key)
	for _, h := range hosts[:min(2, len(hosts))] {
		res, err := c.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), msg, c.cfg.Timeout).Result()
		if out, ok := res.(*messages.TokenCountsBatch); ok && err == nil && len(out.Results) == len(batch) {
			c.cfg.Metrics.tokenizerRequests.WithLabelValues("remote").Add(float64(len(batch)))
			for i, p := range batch {
				p.done <- out.Results[i]
			}
			return
		}
		c.cfg.Logger.Warn("tokenizer host did not answer a batch; trying the next or counting here", "host", h, "error", err)
	}
	for _, p := range batch {
		if p.ctx.Err() != nil {
			continue // its caller gave up while the hosts did not answer
		}
		c.cfg.Metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
		p.done <- countTokens(p.req, "local-fallback", true)
	}
}

// endTokenizerSpan ends a tokenizer request's span with who served it.
func endTokenizerSpan(span *trace.Span, servedBy string, err error) {
	if err != nil {
		endSpan(span, "tokenize", err.Error())
		return
	}
	(*span).SetAttributes(attribute.String("qlc.tokenizer.served_by", servedBy))
	endSpan(span, "", "")
}
