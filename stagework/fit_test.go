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

func TestFitPromptTrimsStrategyInputs(t *testing.T) {
	spec := StageSpec{Stage: StageAggregator, ID: "aggregator", Model: "agg", MaxTokens: 100}
	in := PromptInput{Query: "what is consensus", Inputs: []StepOutput{
		{ID: "p1.1", Model: "m-a", Text: words(300, "alpha")},
		{ID: "p1.2", Model: "m-b", Text: words(2000, "beta")},
		{ID: "p1.3", Model: "m-c", Text: words(500, "gamma")},
	}, Left: []StepOutput{{ID: "p1.4", Model: "m-d", Reason: "timed out after 20s"}}}
	full, _, _, err := FitPrompt(spec, in, 0, wordCounter{})
	if err != nil {
		t.Fatal(err)
	}
	n0 := PromptTokens(full, wordCounter{})

	// 1500 tokens too many: the longest input gives them all.
	window := n0 - 1500 + spec.MaxTokens
	msgs, n, notes, err := FitPrompt(spec, in, window, wordCounter{})
	if err != nil {
		t.Fatal(err)
	}
	if n > window-spec.MaxTokens || n != PromptTokens(msgs, wordCounter{}) {
		t.Fatalf("prompt of %d tokens for a budget of %d", n, window-spec.MaxTokens)
	}
	user := msgs[len(msgs)-1].Content
	if !strings.Contains(user, "what is consensus") || !strings.Contains(user, words(300, "alpha")) || !strings.Contains(user, words(500, "gamma")) {
		t.Fatal("the question and the shorter inputs must stay whole")
	}
	if !strings.Contains(user, "beta"+trimMarker+"\n</response>") || !strings.Contains(user, "Left out: a response (model m-d) — timed out after 20s") {
		t.Fatalf("the cut must be marked inside the input's tags, and the left-out line kept:\n%.300s", user)
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "trimmed the output of p1.2 (model m-b) from 2000 to") || !strings.Contains(notes[0], "agg's context window of") {
		t.Fatalf("notes = %q", notes)
	}
	if in.Inputs[1].Text != words(2000, "beta") || len(in.Inputs[1].Text) == 0 {
		t.Fatal("FitPrompt changed the caller's inputs")
	}

	// 2400 too many: the longest gives until it is shorter than the next,
	// then they take turns; each trimmed input gets one note, in input order.
	window = n0 - 2400 + spec.MaxTokens
	msgs, n, notes, err = FitPrompt(spec, in, window, wordCounter{})
	if err != nil {
		t.Fatal(err)
	}
	if n > window-spec.MaxTokens {
		t.Fatalf("prompt of %d tokens for a budget of %d", n, window-spec.MaxTokens)
	}
	if len(notes) < 2 || !strings.Contains(notes[0], "p1.") || !strings.Contains(notes[len(notes)-1], "p1.") {
		t.Fatalf("notes = %q", notes)
	}
	for i := 1; i < len(notes); i++ {
		if notes[i-1] > notes[i] {
			t.Errorf("notes out of input order: %q", notes)
		}
	}

	// An input without id or model is named by its position.
	in2 := PromptInput{Query: "q", Inputs: []StepOutput{{Text: words(50, "x")}, {Text: words(900, "y")}}}
	spec2 := StageSpec{Stage: StageJudge, Model: "j", MaxTokens: 10}
	full, _, _, _ = FitPrompt(spec2, in2, 0, wordCounter{})
	_, _, notes, err = FitPrompt(spec2, in2, PromptTokens(full, wordCounter{})-400+10, wordCounter{})
	if err != nil || len(notes) != 1 || !strings.HasPrefix(notes[0], "trimmed the output of input 2 from 900 to") {
		t.Fatalf("anonymous input: %q, %v", notes, err)
	}

	// A window that cannot hold even the instructions and the question.
	if _, _, _, err := FitPrompt(spec, in, spec.MaxTokens+5, wordCounter{}); !errors.Is(err, ErrPromptTooLong) {
		t.Fatalf("want ErrPromptTooLong, got %v", err)
	}
	// A step without inputs to give cannot be fitted either, and says so.
	if _, _, _, err := FitPrompt(StageSpec{Stage: StageMember, Model: "m", MaxTokens: 10}, PromptInput{Query: words(500, "q")}, 100, wordCounter{}); !errors.Is(err, ErrPromptTooLong) {
		t.Fatalf("member: want ErrPromptTooLong, got %v", err)
	}
}
