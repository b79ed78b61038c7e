package route

import (
	"fmt"
	"unicode"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// The tiers Classify returns, cheapest first (stagework.Tiers).
const (
	Simple   = stagework.TierSimple
	Standard = stagework.TierStandard
	Complex  = stagework.TierComplex
)

// Thresholds of the rules (doc.go lists them in order).
const (
	// simpleMaxTokens is the longest question that may be simple.
	simpleMaxTokens = 30
	// complexMinTokens is the length past which a question is complex
	// whatever it asks: it carries its own material to work through.
	complexMinTokens = 350
	// complexScore is the score at which a question is complex.
	complexScore = 5
	// longConversation and veryLongConversation count earlier messages.
	longConversation     = 6
	veryLongConversation = 14
	// longHistoryTokens is a history long enough to score 2 by itself.
	longHistoryTokens = 2000
	// scanLimit bounds the bytes read for cues (lengths count all of
	// it): a question's first 32 KiB say what kind of question it is.
	scanLimit = 32 << 10
)

// Features are what Classify measured of a question.
type Features struct {
	// Tokens approximates the question's length in tokens: 4 bytes of
	// Latin text a token, one CJK character a token, two other
	// non-Latin letters a token.
	Tokens int `json:"tokens"`
	// CodeBlock: a ``` fence, or several lines that read as code.
	CodeBlock bool `json:"code_block,omitempty"`
	// Code counts code words and inline `code`.
	Code int `json:"code,omitempty"`
	// Math counts mathematics beyond arithmetic (LaTeX, "integral",
	// "prove", operators between symbols); Formal marks a proof or
	// LaTeX.
	Math   int  `json:"math,omitempty"`
	Formal bool `json:"formal,omitempty"`
	// Parts is how many questions or tasks the message holds (numbered
	// items, question marks, "and also"); at least 1.
	Parts int `json:"parts"`
	// NonLatin is the share of letters outside the Latin script.
	NonLatin float64 `json:"non_latin,omitempty"`
	// Domains are the expert domains named (legal, medical, finance,
	// security).
	Domains []string `json:"domains,omitempty"`
	// Reasoning counts reasoning cues ("design", "trade-offs", "step by
	// step", "compare", ...).
	Reasoning int `json:"reasoning,omitempty"`
	// Greeting: the message is a greeting, thanks or small talk.
	Greeting bool `json:"greeting,omitempty"`
	// Explain: the message asks for an explanation ("why", "how does",
	// "explain"), which is standard however short: it needs a paragraph,
	// not a fact.
	Explain bool `json:"explain,omitempty"`
	// History is the number of earlier messages, HistoryTokens their
	// length.
	History       int `json:"history,omitempty"`
	HistoryTokens int `json:"history_tokens,omitempty"`
	// Score is the weighted sum the rules compare with complexScore.
	Score int `json:"score"`
}

// Decision is Classify's answer: the tier, why, and what it measured.
type Decision struct {
	Tier     string   `json:"tier"`
	Reasons  []string `json:"reasons"`
	Features Features `json:"features"`
}

// Classify puts a question (the last user message) and the conversation
// before it into a tier. It is deterministic, calls no model and is safe
// for concurrent use.
func Classify(query string, history []stagework.Message) Decision {
	f := measure(query)
	for _, m := range history {
		f.History++
		f.HistoryTokens += approxTokens(m.Content)
	}
	var reasons []string
	add := func(format string, args ...any) { reasons = append(reasons, fmt.Sprintf(format, args...)) }

	add("%d tokens", f.Tokens)
	if f.CodeBlock {
		add("code block")
	} else if f.Code > 0 {
		add("code (%d cues)", f.Code)
	}
	if f.Formal {
		add("formal mathematics")
	} else if f.Math > 0 {
		add("mathematics (%d cues)", f.Math)
	}
	if f.Parts > 1 {
		add("%d parts", f.Parts)
	}
	for _, d := range f.Domains {
		add("%s domain", d)
	}
	if f.Reasoning > 0 {
		add("%d reasoning cues", f.Reasoning)
	}
	if f.NonLatin >= 0.5 {
		add("non-Latin script")
	}
	if f.History > 0 {
		add("%d earlier messages", f.History)
	}
	if f.Greeting {
		add("greeting")
	}
	if f.Explain {
		add("asks for an explanation")
	}

	s := 0
	s += 2 * min(f.Reasoning, 2)
	switch {
	case len(f.Domains) >= 2:
		s += 3
	case len(f.Domains) == 1:
		s += 2
	}
	if f.Code > 0 {
		s += 2
	}
	switch {
	case f.Math >= 2:
		s += 3
	case f.Math == 1:
		s += 2
	}
	if f.Parts == 2 {
		s++
	}
	switch {
	case f.Tokens > 150:
		s += 3
	case f.Tokens > 70:
		s += 2
	case f.Tokens > 35:
		s++
	}
	switch {
	case f.History > veryLongConversation || f.HistoryTokens > longHistoryTokens:
		s += 3
	case f.History > longConversation:
		s++
	}
	f.Score = s

	tier := Standard
	switch {
	case f.CodeBlock, f.Formal, f.Parts >= 3, f.Tokens > complexMinTokens, s >= complexScore:
		tier = Complex
	case f.Greeting && f.Tokens <= simpleMaxTokens && f.Code == 0 && f.Math == 0 && len(f.Domains) == 0:
		tier = Simple
	case f.Tokens <= simpleMaxTokens && f.Code == 0 && f.Math == 0 && len(f.Domains) == 0 && f.Reasoning == 0 &&
		f.Parts == 1 && f.History <= longConversation && !f.Explain:
		tier = Simple
	}
	return Decision{Tier: tier, Reasons: reasons, Features: f}
}

// approxTokens estimates a text's tokens the way Features.Tokens does.
func approxTokens(s string) int {
	latin, cjk, other := 0, 0, 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			latin++
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		i += n
		switch {
		case isCJK(r):
			cjk++
		case unicode.IsLetter(r) && r < 0x250:
			latin += n // accented Latin: counted as its bytes
		default:
			other++
		}
	}
	return (latin+3)/4 + cjk + (other+1)/2
}

func isCJK(r rune) bool {
	return unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana, unicode.Hangul)
}
