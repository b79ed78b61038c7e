package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/tokenizer"
)

// tokenizerName is the well-known name of a process's tokenizer actor
// (present only where Config.Tokenizer is set: hosts whose CPU runs the
// tokenizer's SIMD path).
const tokenizerName = "qlc-tokenizer"

// maxTokenizeBytes bounds the text of one CountTokens.
const maxTokenizeBytes = 8 << 20

// ErrTokenize wraps a tokenizer refusal (unknown encoding, too much text).
var ErrTokenize = errors.New("actors: tokenize")

// genericEncodings caches the generic-path encodings of the local fallback.
var genericEncodings sync.Map // name → *tokenizer.Encoding

// genericEncoding loads (once) name's encoding on the generic (scalar) path.
func genericEncoding(name string) (*tokenizer.Encoding, error) {
	if e, ok := genericEncodings.Load(name); ok {
		return e.(*tokenizer.Encoding), nil
	}
	e, err := tokenizer.Load(tokenizer.Config{Encoding: name, Generic: true})
	if err != nil {
		return nil, err
	}
	actual, _ := genericEncodings.LoadOrStore(name, e)
	return actual.(*tokenizer.Encoding), nil
}

// countTokens does the work of a tokenizer actor and, with generic, of the
// local fallback (the scalar path, which every CPU runs).
func countTokens(m *messages.CountTokens, servedBy string, generic bool) *messages.TokenCounts {
	out := &messages.TokenCounts{ServedBy: servedBy}
	total := 0
	for _, t := range m.Texts {
		total += len(t)
	}
	if total > maxTokenizeBytes {
		out.Error = fmt.Sprintf("texts hold %d bytes; the limit is %d", total, maxTokenizeBytes)
		return out
	}
	enc, label, approx, err := resolveEncoding(m.Model, m.Encoding, generic)
	out.Label, out.Approximate = label, approx
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Encoding = enc.Name()
	out.Counts = make([]int64, len(m.Texts))
	for i, t := range m.Texts {
		if m.WithTokens {
			ids := enc.EncodeOrdinary(t)
			out.Counts[i] = int64(len(ids))
			tid := &messages.TokenIDs{Ids: make([]int32, len(ids))}
			for j, id := range ids {
				tid.Ids[j] = int32(id)
			}
			out.Tokens = append(out.Tokens, tid)
		} else {
			out.Counts[i] = int64(enc.Count(t))
		}
	}
	return out
}

// resolveEncoding finds the encoding of a request (encoding wins over
// model; an unknown model gets the approximate encoding, labelled).
func resolveEncoding(model, encoding string, generic bool) (enc *tokenizer.Encoding, label string, approximate bool, err error) {
	if encoding != "" {
		enc, err = tokenizer.Get(encoding)
		label = encoding
	} else {
		var r tokenizer.Resolution
		r, err = tokenizer.ResolveModel(model, tokenizer.Approximate)
		enc, approximate, label = r.Encoding, r.Approximate, r.Label()
	}
	if err == nil && generic {
		enc, err = genericEncoding(enc.Name())
	}
	return enc, label, approximate, err
}

// fitToBudget does the work of FitToBudget (see countTokens for generic).
func fitToBudget(m *messages.FitToBudget, servedBy string, generic bool) *messages.FittedText {
	out := &messages.FittedText{ServedBy: servedBy}
	switch {
	case len(m.Text) > maxTokenizeBytes:
		out.Error = fmt.Sprintf("text holds %d bytes; the limit is %d", len(m.Text), maxTokenizeBytes)
		return out
	case m.MaxTokens < 0:
		out.Error = "max_tokens must not be negative"
		return out
	}
	enc, label, approx, err := resolveEncoding(m.Model, m.Encoding, generic)
	if err != nil {
		out.Error = err.Error()
		return out
	}
	out.Encoding, out.Label, out.Approximate = enc.Name(), label, approx
	out.OriginalTokens = int64(enc.Count(m.Text))
	if out.OriginalTokens <= m.MaxTokens {
		out.Text, out.Tokens = m.Text, out.OriginalTokens
		return out
	}
	cut, n := enc.Truncate(m.Text, int(m.MaxTokens))
	out.Text, out.Tokens, out.Truncated = cut, int64(n), true
	return out
}

// tokenizerActor answers CountTokens, CountTokensBatch and FitToBudget.
type tokenizerActor struct {
	metrics *Metrics
}

func (a *tokenizerActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *messages.CountTokens:
		a.metrics.tokenizerRequests.WithLabelValues("served").Inc()
		ctx.Respond(countTokens(m, ctx.ActorSystem().Address(), false))
	case *messages.CountTokensBatch:
		out := &messages.TokenCountsBatch{Results: make([]*messages.TokenCounts, len(m.Requests))}
		for i, r := range m.Requests {
			out.Results[i] = countTokens(r, ctx.ActorSystem().Address(), false)
		}
		a.metrics.tokenizerRequests.WithLabelValues("served").Add(float64(len(m.Requests)))
		a.metrics.tokenizerBatches.Observe(float64(len(m.Requests)))
		ctx.Respond(out)
	case *messages.FitToBudget:
		a.metrics.tokenizerRequests.WithLabelValues("served").Inc()
		ctx.Respond(fitToBudget(m, ctx.ActorSystem().Address(), false))
	}
}

// FitToBudget cuts m.Text to at most m.MaxTokens tokens at a token boundary
// on a tokenizer actor (a capable host from Config.Topology, else
// this process's own), or here on the generic path when none answers in
// time (ServedBy "local-fallback"). Not batched: a fit carries one large
// text.
func (e *Engine) FitToBudget(ctx context.Context, m *messages.FitToBudget) (*messages.FittedText, error) {
	var hosts []string
	ask := e.cfg.Tokenizer
	if e.topo != nil {
		hosts, ask = e.topo.TokenizerHosts(m.Model+m.Encoding), true
	} else {
		hosts = []string{e.system.Address()}
	}
	var out *messages.FittedText
	for _, h := range hosts[:min(len(hosts), 2)] {
		if !ask {
			break
		}
		timeout := e.cfg.TokenizerTimeout
		if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
			timeout = time.Until(d)
		}
		res, err := e.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), m, timeout).Result()
		if ft, ok := res.(*messages.FittedText); ok && err == nil {
			out = ft
			break
		}
		e.logger.Warn("tokenizer host did not answer a fit; trying the next or fitting here", "host", h, "error", err)
	}
	if out == nil {
		e.metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
		out = fitToBudget(m, "local-fallback", true)
	}
	if out.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrTokenize, out.Error)
	}
	return out, nil
}

// CountTokens counts texts on a tokenizer actor: on a capable host chosen by
// Config.Topology, else on this process's own tokenizer actors; when
// no capable host answers within Config.TokenizerTimeout it counts here, on
// the generic path, and says so in ServedBy ("local-fallback").
//
// Requests to other hosts are batched adaptively: while a batch is in
// flight, new requests wait and leave together when it returns (at most
// maxTokenBatch); a node with nothing in flight sends at once.
func (e *Engine) CountTokens(ctx context.Context, m *messages.CountTokens) (*messages.TokenCounts, error) {
	var tc *messages.TokenCounts
	if e.topo != nil {
		p := &pendingCount{req: m, done: make(chan *messages.TokenCounts, 1)}
		e.tokenBatch.enqueue(e, p)
		select {
		case tc = <-p.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		tc = e.countOn(ctx, []string{e.system.Address()}, m, e.cfg.Tokenizer)
	}
	if tc.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrTokenize, tc.Error)
	}
	return tc, nil
}

// countOn asks hosts' tokenizer actors in turn (if ask), then counts here.
func (e *Engine) countOn(ctx context.Context, hosts []string, m *messages.CountTokens, ask bool) *messages.TokenCounts {
	for _, h := range hosts[:min(len(hosts), 2)] {
		if !ask {
			break
		}
		timeout := e.cfg.TokenizerTimeout
		if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
			timeout = time.Until(d)
		}
		res, err := e.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), m, timeout).Result()
		if tc, ok := res.(*messages.TokenCounts); ok && err == nil {
			if h != e.system.Address() {
				e.metrics.tokenizerRequests.WithLabelValues("remote").Inc()
			}
			return tc
		}
		e.logger.Warn("tokenizer host did not answer; trying the next or counting here", "host", h, "error", err)
	}
	e.metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
	return countTokens(m, "local-fallback", true)
}

// maxTokenBatch bounds one CountTokensBatch.
const maxTokenBatch = 64

type pendingCount struct {
	req  *messages.CountTokens
	done chan *messages.TokenCounts // cap 1
}

// tokenBatcher gathers a node's requests for remote tokenizer actors.
type tokenBatcher struct {
	mu       sync.Mutex
	queue    []*pendingCount
	inFlight bool
	hold     chan struct{} // tests: batches wait for it to close before leaving
	enqueued int           // requests ever queued (tests)
}

// enqueue adds p; if no batch is in flight it starts one (on a goroutine
// that keeps sending batches until the queue is empty).
func (b *tokenBatcher) enqueue(e *Engine, p *pendingCount) {
	b.mu.Lock()
	b.queue = append(b.queue, p)
	b.enqueued++
	if b.inFlight {
		b.mu.Unlock()
		return
	}
	b.inFlight = true
	b.mu.Unlock()
	go b.drain(e)
}

func (b *tokenBatcher) drain(e *Engine) {
	for {
		b.mu.Lock()
		n := min(len(b.queue), maxTokenBatch)
		if n == 0 {
			b.inFlight = false
			b.mu.Unlock()
			return
		}
		batch := b.queue[:n:n]
		b.queue = b.queue[n:]
		hold := b.hold
		b.mu.Unlock()
		if hold != nil {
			<-hold
		}
		e.sendBatch(batch)
	}
}

// sendBatch sends one batch to a capable host (the rendezvous owner of its
// first request, then another), falling back to local counting.
func (e *Engine) sendBatch(batch []*pendingCount) {
	first := batch[0].req
	key := first.Model + first.Encoding
	if len(first.Texts) > 0 {
		key += first.Texts[0]
	}
	msg := &messages.CountTokensBatch{Requests: make([]*messages.CountTokens, len(batch))}
	for i, p := range batch {
		msg.Requests[i] = p.req
	}
	hosts := e.topo.TokenizerHosts(key)
	for _, h := range hosts[:min(2, len(hosts))] {
		res, err := e.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), msg, e.cfg.TokenizerTimeout).Result()
		if out, ok := res.(*messages.TokenCountsBatch); ok && err == nil && len(out.Results) == len(batch) {
			e.metrics.tokenizerRequests.WithLabelValues("remote").Add(float64(len(batch)))
			for i, p := range batch {
				p.done <- out.Results[i]
			}
			return
		}
		e.logger.Warn("tokenizer host did not answer a batch; trying the next or counting here", "host", h, "error", err)
	}
	for _, p := range batch {
		e.metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
		p.done <- countTokens(p.req, "local-fallback", true)
	}
}
