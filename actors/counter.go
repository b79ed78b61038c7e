package actors

import (
	"github.com/qlc-project/qlc/stagework"
	"github.com/qlc-project/qlc/tokenizer"
)

// modelCounter counts in a model's tokens (approximately, and labelled so,
// for models without a known encoding).
type modelCounter struct{ enc *tokenizer.Encoding }

func (m modelCounter) Count(s string) int { return m.enc.Count(s) }
func (m modelCounter) Truncate(s string, n int) (string, int) {
	return m.enc.Truncate(s, n)
}

// counterFor returns the token counter of a model.
func counterFor(model string) (stagework.TokenCounter, error) {
	r, err := tokenizer.ResolveModel(model, tokenizer.Approximate)
	if err != nil {
		return nil, err
	}
	return modelCounter{r.Encoding}, nil
}
