package loadgen

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"

	"go.yaml.in/yaml/v3"
)

// MixItem is one kind of request in a load's mix: what to ask, of which
// profile (or model), and how often.
type MixItem struct {
	// Name labels the item in the report (default: profile or model, and
	// the question's length).
	Name string `yaml:"name" json:"name"`
	// Profile is the QLC profile of a run ("" for the tenant's default);
	// for the chat target the model is "qlc-<profile>" unless Model is set.
	Profile string `yaml:"profile" json:"profile,omitempty"`
	// Model is the chat target's model, for any OpenAI-compatible server.
	Model string `yaml:"model" json:"model,omitempty"`
	// Query is the question. When empty, one of QueryWords words is made
	// (from a fixed vocabulary, different for each request).
	Query      string `yaml:"query" json:"query,omitempty"`
	QueryWords int    `yaml:"query_words" json:"query_words,omitempty"`
	// MaxTokens caps each step's output (0: the profile's own).
	MaxTokens int `yaml:"max_tokens" json:"max_tokens,omitempty"`
	// Weight is the item's share of requests, relative to the others'
	// (default 1).
	Weight float64 `yaml:"weight" json:"weight"`
}

// ErrBadMix is returned for a mix file that cannot be used.
var ErrBadMix = errors.New("loadgen: bad mix")

// maxQueryWords bounds a made question (about 600 KB of text: well past
// any gateway's limit, so the refusal is measured, not a local crash).
const maxQueryWords = 100_000

// ParseMix reads a mix file: one item per line, each a JSON object or a
// YAML flow mapping ({profile: fast, query_words: 50, weight: 3}); blank
// lines and lines starting with # are skipped. Unknown fields are errors.
func ParseMix(data []byte) ([]MixItem, error) {
	var items []MixItem
	for n, line := range bytes.Split(data, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var it MixItem
		it.Weight = math.NaN() // absent: 1
		dec := yaml.NewDecoder(bytes.NewReader(line))
		dec.KnownFields(true)
		if err := dec.Decode(&it); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadMix, n+1, err)
		}
		if math.IsNaN(it.Weight) {
			it.Weight = 1
		}
		if err := it.check(); err != nil {
			return nil, fmt.Errorf("%w: line %d: %v", ErrBadMix, n+1, err)
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%w: no items", ErrBadMix)
	}
	if err := checkWeights(items); err != nil {
		return nil, err
	}
	return items, nil
}

func (it *MixItem) check() error {
	switch {
	case math.IsInf(it.Weight, 0) || math.IsNaN(it.Weight) || it.Weight < 0:
		return fmt.Errorf("weight %v is not a finite number ≥ 0", it.Weight)
	case it.QueryWords < 0 || it.QueryWords > maxQueryWords:
		return fmt.Errorf("query_words %d is not within 0..%d", it.QueryWords, maxQueryWords)
	case it.Query != "" && it.QueryWords != 0:
		return errors.New("give query or query_words, not both")
	case it.MaxTokens < 0:
		return fmt.Errorf("negative max_tokens %d", it.MaxTokens)
	}
	if it.Name == "" {
		it.Name = it.Profile
		if it.Model != "" {
			it.Name = it.Model
		}
		if it.Name == "" {
			it.Name = "default"
		}
		if it.QueryWords > 0 {
			it.Name += fmt.Sprintf("/%dw", it.QueryWords)
		}
	}
	return nil
}

func checkWeights(items []MixItem) error {
	var sum float64
	for _, it := range items {
		sum += it.Weight
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		return fmt.Errorf("%w: the weights add up to %v; some must be > 0", ErrBadMix, sum)
	}
	return nil
}

// vocabulary for made questions: plain words a tokenizer counts as about
// one token each.
var vocabulary = strings.Fields(`system node cluster leader vote log entry term commit replica quorum
network partition clock time order message queue stream token model answer question reason proof
state machine actor mailbox failure recovery latency throughput memory disk cache index tree hash
ring gossip member join leave death suspect timeout retry backoff limit budget tenant key secret`)

// makeQuery returns a question of about words words, different for each n.
func makeQuery(words int, n int) string {
	var b strings.Builder
	b.WriteString("Explain how these relate:")
	x := uint64(n)*0x9e3779b97f4a7c15 + 1
	for i := 0; i < words; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b.WriteByte(' ')
		b.WriteString(vocabulary[x%uint64(len(vocabulary))])
	}
	b.WriteByte('?')
	return b.String()
}
