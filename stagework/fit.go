package stagework

import (
	"errors"
	"fmt"
	"strings"
)

// ErrPromptTooLong is returned by FitPrompt when the question and history
// alone do not fit the model's context window.
var ErrPromptTooLong = errors.New("stagework: prompt does not fit the model's context window")

// TokenCounter counts and truncates text in a model's tokens. FitPrompt calls
// it from one goroutine.
type TokenCounter interface {
	// Count returns how many tokens text is.
	Count(text string) int
	// Truncate cuts text to at most maxTokens tokens at a token boundary and
	// returns the cut text and its token count.
	Truncate(text string, maxTokens int) (string, int)
}

// messageOverhead is the tokens a chat message costs beyond its content
// (OpenAI's chat format: role and separators), and replyPriming the tokens
// that prime the reply.
const (
	messageOverhead = 4
	replyPriming    = 3
)

// trimMarker replaces what was trimmed from an earlier stage's output.
const trimMarker = "\n\n[… trimmed to fit the context window …]"

// knownWindows are context windows of common models, used when a profile
// gives none (StageSpec.ContextWindow).
var knownWindows = []struct {
	prefix string
	window int
}{
	{"gpt-4o", 128000}, {"gpt-4.1", 1047576}, {"gpt-4-turbo", 128000}, {"gpt-4-32k", 32768}, {"gpt-4", 8192},
	{"gpt-3.5-turbo", 16385}, {"o1", 200000}, {"o3", 200000}, {"o4", 200000}, {"gpt-5", 400000},
}

// ContextWindowOf returns spec's context window: its own, else a known
// model's, else 0 (unknown: no fitting).
func ContextWindowOf(spec StageSpec) int {
	if spec.ContextWindow > 0 {
		return spec.ContextWindow
	}
	m := spec.Model
	if i := strings.LastIndexByte(m, '/'); i >= 0 { // "openai/gpt-4o" on OpenRouter
		m = m[i+1:]
	}
	for _, k := range knownWindows {
		if strings.HasPrefix(m, k.prefix) {
			return k.window
		}
	}
	return 0
}

// PromptTokens counts a prompt as a chat model does (contents plus
// per-message overhead).
func PromptTokens(msgs []Message, c TokenCounter) int {
	n := replyPriming
	for _, m := range msgs {
		n += c.Count(m.Content) + messageOverhead
	}
	return n
}

// FitPrompt builds spec's prompt for in and makes it fit window - MaxTokens
// tokens by trimming earlier stages' outputs, the longest first (never the
// question or the history). It returns the prompt, its token count, and one
// note per trimmed output for people ("trimmed the Generator's output from
// 5210 to 2048 tokens"). window 0 means no limit; the prompt is then not
// counted (the count returned is 0).
func FitPrompt(spec StageSpec, in PromptInput, window int, c TokenCounter) ([]Message, int, []string, error) {
	msgs, err := BuildPrompt(spec, in)
	if err != nil {
		return nil, 0, nil, err
	}
	if window <= 0 {
		return msgs, 0, nil, nil // no window: nothing to fit, and no count on the TTFT path
	}
	n := PromptTokens(msgs, c)
	budget := window - spec.MaxTokens
	if n <= budget {
		return msgs, n, nil, nil
	}
	outputs := make(map[Stage]string, len(in.Outputs))
	for s, o := range in.Outputs {
		outputs[s] = o
	}
	in.Outputs = outputs
	sizes := map[Stage]int{}
	for s, o := range outputs {
		sizes[s] = c.Count(o)
	}
	original := map[Stage]int{}
	for s, sz := range sizes {
		original[s] = sz
	}
	markerTokens := c.Count(trimMarker)
	trimmed := map[Stage]bool{}
	for n > budget {
		// The longest output still holding text gives first.
		var longest Stage
		for s, sz := range sizes {
			if sz > sizes[longest] || (sz == sizes[longest] && s < longest) {
				longest = s
			}
		}
		if sizes[longest] <= markerTokens {
			return nil, n, nil, fmt.Errorf("%w: the question and history need %d tokens; %s's window of %d leaves %d for the prompt",
				ErrPromptTooLong, n, spec.Model, window, budget)
		}
		keep := max(0, sizes[longest]-(n-budget)-markerTokens)
		text := strings.TrimSuffix(outputs[longest], trimMarker)
		cut, k := c.Truncate(text, keep)
		outputs[longest] = cut + trimMarker
		trimmed[longest] = true
		sizes[longest] = k + markerTokens
		if k == 0 {
			sizes[longest] = 0 // only the marker is left: nothing more to give
		}
		if msgs, err = BuildPrompt(spec, in); err != nil {
			return nil, 0, nil, err
		}
		n = PromptTokens(msgs, c)
	}
	var notes []string
	for _, s := range Stages {
		if trimmed[s] {
			notes = append(notes, fmt.Sprintf("trimmed the %s's output from %d to %d tokens to fit %s's context window of %d",
				s.Title(), original[s], c.Count(strings.TrimSuffix(outputs[s], trimMarker)), spec.Model, window))
		}
	}
	return msgs, n, notes, nil
}
