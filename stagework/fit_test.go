package stagework

import (
	"errors"
	"strings"
	"testing"
)

// wordCounter counts whitespace-separated words: a stand-in tokenizer whose
// counts are easy to reason about (the real one is tested in package tokenizer).
type wordCounter struct{}

func (wordCounter) Count(s string) int { return len(strings.Fields(s)) }
func (wordCounter) Truncate(s string, n int) (string, int) {
	w := strings.Fields(s)
	if len(w) <= n {
		return s, len(w)
	}
	return strings.Join(w[:n], " "), n
}

func words(n int, w string) string { return strings.TrimSpace(strings.Repeat(w+" ", n)) }

func TestFitPromptTrimsEarlierOutputsNeverTheQuestion(t *testing.T) {
	spec := StageSpec{Stage: StageCurator, Model: "m", MaxTokens: 100}
	in := PromptInput{Query: "what is consensus", Outputs: map[Stage]string{
		StageGenerator: words(300, "draft"), StageRefiner: words(2000, "refined"), StageValidator: words(500, "review"),
	}}
	full, n, notes, err := FitPrompt(spec, in, 0, wordCounter{})
	if err != nil || notes != nil || n != 0 {
		t.Fatalf("no window: %d %v %v", n, notes, err)
	}
	n0 := PromptTokens(full, wordCounter{})
	window := n0 - 1500 + spec.MaxTokens // 1500 tokens too many
	msgs, n, notes, err := FitPrompt(spec, in, window, wordCounter{})
	if err != nil {
		t.Fatal(err)
	}
	if n > window-spec.MaxTokens || n != PromptTokens(msgs, wordCounter{}) {
		t.Fatalf("prompt of %d tokens for a budget of %d", n, window-spec.MaxTokens)
	}
	all := ""
	for _, m := range msgs {
		all += m.Content
	}
	if !strings.Contains(all, "what is consensus") || !strings.Contains(all, trimMarker) {
		t.Fatal("the question must stay and the cut must be marked")
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "Refiner's output from 2000 to") {
		t.Fatalf("the longest output gives first: %v", notes)
	}
	if in.Outputs[StageRefiner] != words(2000, "refined") {
		t.Fatal("FitPrompt changed the caller's outputs")
	}
	// A window that cannot hold even the question is a clear error.
	if _, _, _, err := FitPrompt(spec, in, spec.MaxTokens+5, wordCounter{}); !errors.Is(err, ErrPromptTooLong) {
		t.Fatalf("want ErrPromptTooLong, got %v", err)
	}
}

func TestContextWindowOf(t *testing.T) {
	for model, want := range map[string]int{"gpt-4o-mini": 128000, "openai/gpt-4o": 128000, "gpt-4": 8192, "sim-large": 0} {
		if got := ContextWindowOf(StageSpec{Model: model}); got != want {
			t.Errorf("%s: %d, want %d", model, got, want)
		}
	}
	if got := ContextWindowOf(StageSpec{Model: "gpt-4", ContextWindow: 500}); got != 500 {
		t.Errorf("a profile's window wins: %d", got)
	}
}
