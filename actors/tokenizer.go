package actors

import (
	"errors"
	"fmt"
	"sync"

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
