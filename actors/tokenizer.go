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

// TokenizerKind names the actor kind of tokenizer actors.
const TokenizerKind = "qlc.tokenizer"

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
	var enc *tokenizer.Encoding
	var err error
	if m.Encoding != "" {
		enc, err = tokenizer.Get(m.Encoding)
		out.Label = m.Encoding
	} else {
		var r tokenizer.Resolution
		r, err = tokenizer.ResolveModel(m.Model, tokenizer.Approximate)
		enc, out.Approximate, out.Label = r.Encoding, r.Approximate, r.Label()
	}
	if err == nil && generic {
		enc, err = genericEncoding(enc.Name())
	}
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

// tokenizerActor answers CountTokens.
type tokenizerActor struct {
	metrics *Metrics
}

func (a *tokenizerActor) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*messages.CountTokens); ok {
		a.metrics.tokenizerRequests.WithLabelValues("served").Inc()
		ctx.Respond(countTokens(m, ctx.ActorSystem().Address(), false))
	}
}

// TokenizerPlacer chooses the hosts of tokenizer actors for a request.
// Candidates must not block.
type TokenizerPlacer interface {
	// TokenizerHosts returns the actor addresses of capable hosts, best first.
	TokenizerHosts(key string) []string
}

// CountTokens counts texts on a tokenizer actor: on a capable host chosen by
// Config.TokenizerPlacer, else on this process's own tokenizer actor; when
// no capable host answers within Config.TokenizerTimeout it counts here, on
// the generic path, and says so in ServedBy ("local-fallback").
func (e *Engine) CountTokens(ctx context.Context, m *messages.CountTokens) (*messages.TokenCounts, error) {
	var hosts []string
	if e.cfg.TokenizerPlacer != nil {
		key := m.Model + m.Encoding
		if len(m.Texts) > 0 {
			key += m.Texts[0]
		}
		hosts = e.cfg.TokenizerPlacer.TokenizerHosts(key)
	} else if e.cfg.Tokenizer {
		hosts = []string{e.system.Address()}
	}
	for _, h := range hosts[:min(len(hosts), 2)] {
		timeout := e.cfg.TokenizerTimeout
		if d, ok := ctx.Deadline(); ok && time.Until(d) < timeout {
			timeout = time.Until(d)
		}
		res, err := e.system.Root.RequestFuture(actor.NewPID(h, tokenizerName), m, timeout).Result()
		if tc, ok := res.(*messages.TokenCounts); ok && err == nil {
			if tc.Error != "" {
				return nil, fmt.Errorf("%w: %s", ErrTokenize, tc.Error)
			}
			e.metrics.tokenizerRequests.WithLabelValues("remote").Inc()
			return tc, nil
		}
		e.logger.Warn("tokenizer host did not answer; trying the next or counting here", "host", h, "error", err)
	}
	e.metrics.tokenizerRequests.WithLabelValues("local-fallback").Inc()
	tc := countTokens(m, "local-fallback", true)
	if tc.Error != "" {
		return nil, fmt.Errorf("%w: %s", ErrTokenize, tc.Error)
	}
	return tc, nil
}
