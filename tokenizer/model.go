package tokenizer

import (
	"fmt"
	"strings"
)

// Model to encoding, after tiktoken's model.py: exact names first, then the
// longest matching prefix. Only OpenAI models are listed: for them the count
// is exact.
var modelEncodings = map[string]string{
	"gpt-4o": O200kBase, "chatgpt-4o-latest": O200kBase, "gpt-4.1": O200kBase, "gpt-4.5": O200kBase,
	"gpt-5": O200kBase, "o1": O200kBase, "o3": O200kBase, "o4-mini": O200kBase,
	"gpt-4": Cl100kBase, "gpt-3.5-turbo": Cl100kBase, "gpt-3.5": Cl100kBase, "gpt-35-turbo": Cl100kBase,
	"text-embedding-ada-002": Cl100kBase, "text-embedding-3-small": Cl100kBase, "text-embedding-3-large": Cl100kBase,
}

var modelPrefixes = []struct{ prefix, encoding string }{
	// Longer prefixes first: "gpt-4o-" must win over "gpt-4-".
	{"chatgpt-4o-", O200kBase},
	{"gpt-4o-", O200kBase},
	{"gpt-4.1-", O200kBase},
	{"gpt-4.5-", O200kBase},
	{"gpt-5-", O200kBase},
	{"gpt-5.", O200kBase},
	{"o1-", O200kBase},
	{"o3-", O200kBase},
	{"o4-mini-", O200kBase},
	{"gpt-4-", Cl100kBase},
	{"gpt-3.5-turbo-", Cl100kBase},
	{"gpt-35-turbo-", Cl100kBase},
}

// EncodingNameForModel returns the encoding of an OpenAI model, or an error
// wrapping ErrUnknownModel. A provider prefix such as "openai/" is ignored.
func EncodingNameForModel(model string) (string, error) {
	if enc, ok := encodingName(model); ok {
		return enc, nil
	}
	return "", fmt.Errorf("%w: %q has no known OpenAI encoding (use ResolveModel with Approximate for an estimate)", ErrUnknownModel, model)
}

// encodingName is EncodingNameForModel without building an error: every
// run resolves its models, most of them not OpenAI's.
func encodingName(model string) (string, bool) {
	m := strings.TrimSpace(model)
	if hasUpper(m) {
		m = strings.ToLower(m)
	}
	m = strings.TrimPrefix(m, "openai/")
	if enc, ok := modelEncodings[m]; ok {
		return enc, true
	}
	for _, p := range modelPrefixes {
		if strings.HasPrefix(m, p.prefix) {
			return p.encoding, true
		}
	}
	return "", false
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' || c >= 0x80 {
			return true
		}
	}
	return false
}

// ForModel returns the shared Encoding of an OpenAI model; unknown models are
// an error wrapping ErrUnknownModel.
func ForModel(model string) (*Encoding, error) {
	name, err := EncodingNameForModel(model)
	if err != nil {
		return nil, err
	}
	return Get(name)
}

// Mode says whether ResolveModel may estimate.
type Mode int

const (
	// Exact resolves OpenAI models only; others are ErrUnknownModel.
	Exact Mode = iota
	// Approximate resolves any model; models without a known encoding get
	// o200k_base and Resolution.Approximate = true. Their counts are an
	// estimate (other vendors' tokenizers differ, typically by 5-20 %), so
	// every figure derived from them must carry Resolution.Label().
	Approximate
)

// ApproximateEncoding is the encoding used for models without a known one.
const ApproximateEncoding = O200kBase

// Resolution is the outcome of ResolveModel.
type Resolution struct {
	// Model is the model name asked for.
	Model string
	// Encoding counts tokens for the model.
	Encoding *Encoding
	// Approximate is true when Encoding is only an estimate for Model.
	Approximate bool
}

// Label names the encoding for display and for usage records, marking estimates:
// "o200k_base" or "o200k_base (approximate for llama-3.1-70b)".
func (r Resolution) Label() string {
	if r.Encoding == nil {
		return ""
	}
	if r.Approximate {
		return r.Encoding.Name() + " (approximate for " + r.Model + ")"
	}
	return r.Encoding.Name()
}

// ResolveModel returns the encoding for model. In Exact mode unknown models
// are an error wrapping ErrUnknownModel; in Approximate mode they get
// ApproximateEncoding, labelled as approximate.
func ResolveModel(model string, mode Mode) (Resolution, error) {
	name, known := encodingName(model)
	approx := false
	if !known {
		if mode != Approximate {
			_, err := EncodingNameForModel(model)
			return Resolution{Model: model}, err
		}
		name, approx = ApproximateEncoding, true
	}
	e, err := Get(name)
	if err != nil {
		return Resolution{Model: model}, err
	}
	return Resolution{Model: model, Encoding: e, Approximate: approx}, nil
}
