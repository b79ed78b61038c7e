package actors

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/qlc-project/qlc/messages"
)

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
