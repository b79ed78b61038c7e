package stagework

import (
	"errors"
	"fmt"
	"strconv"
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
//
// A strategy's step has its inputs' texts (in.Inputs) trimmed the same way,
// longest first, each note naming the input's step and model ("trimmed the
// output of p1.2 (model gpt-4o) from …"). Neither in.Outputs nor in.Inputs
// of the caller is changed.
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
	// The texts that may give: the chain's outputs in stage order, then the
	// inputs in their order (ties go to the earlier).
	var units []fitUnit
	outputs := make(map[Stage]string, len(in.Outputs))
	for s, o := range in.Outputs {
		outputs[s] = o
	}
	in.Outputs = outputs
	for s := Stage(1); int(s) <= NumStages; s++ {
		if o, ok := outputs[s]; ok {
			units = append(units, fitUnit{stage: s, input: -1, text: o})
		}
	}
	in.Inputs = append([]StepOutput(nil), in.Inputs...)
	for i, o := range in.Inputs {
		units = append(units, fitUnit{input: i, text: o.Text})
	}
	for i := range units {
		units[i].size = c.Count(units[i].text)
		units[i].original = units[i].size
	}
	markerTokens := c.Count(trimMarker)
	for n > budget {
		// The longest text still holding more than the marker gives first.
		longest := -1
		for i, u := range units {
			if longest < 0 || u.size > units[longest].size {
				longest = i
			}
		}
		if longest < 0 || units[longest].size <= markerTokens {
			return nil, n, nil, fmt.Errorf("%w: the question and history need %d tokens; %s's window of %d leaves %d for the prompt",
				ErrPromptTooLong, n, spec.Model, window, budget)
		}
		u := &units[longest]
		keep := max(0, u.size-(n-budget)-markerTokens)
		cut, k := c.Truncate(strings.TrimSuffix(u.text, trimMarker), keep)
		u.text = cut + trimMarker
		u.trimmed = true
		u.size = k + markerTokens
		if k == 0 {
			u.size = 0 // only the marker is left: nothing more to give
		}
		if u.input >= 0 {
			in.Inputs[u.input].Text = u.text
		} else {
			outputs[u.stage] = u.text
		}
		if msgs, err = BuildPrompt(spec, in); err != nil {
			return nil, 0, nil, err
		}
		n = PromptTokens(msgs, c)
	}
	var notes []string
	for _, u := range units {
		if !u.trimmed {
			continue
		}
		now := c.Count(strings.TrimSuffix(u.text, trimMarker))
		if u.input < 0 {
			notes = append(notes, fmt.Sprintf("trimmed the %s's output from %d to %d tokens to fit %s's context window of %d",
				u.stage.Title(), u.original, now, spec.Model, window))
			continue
		}
		o := in.Inputs[u.input]
		who := o.ID
		if who == "" {
			who = "input " + strconv.Itoa(u.input+1)
		}
		if o.Model != "" {
			who += " (model " + o.Model + ")"
		}
		notes = append(notes, fmt.Sprintf("trimmed the output of %s from %d to %d tokens to fit %s's context window of %d",
			who, u.original, now, spec.Model, window))
	}
	return msgs, n, notes, nil
}

// fitUnit is one text FitPrompt may trim: a chain stage's output (input
// -1) or the input-th of PromptInput.Inputs.
type fitUnit struct {
	stage          Stage
	input          int
	text           string
	size, original int
	trimmed        bool
}
