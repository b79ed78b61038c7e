package actors

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// TestByteBoundCoversEveryCount: surelyFits's bound (a token per byte,
// three per invalid byte) is never below a real encoding's count.
func TestByteBoundCoversEveryCount(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pieces := []string{"a", " ", "\n", "é", "東京", "🌸", "👩‍👩‍👧", "\xff", "\xe6\x9d", "123", "  ", "\t", "<|endoftext|>", "ab\x00c"}
	for _, model := range []string{"gpt-4o", "gpt-4", "some-unknown-model"} {
		c, err := counterFor(model)
		if err != nil {
			t.Fatal(err)
		}
		for range 2000 {
			var b strings.Builder
			for range rng.IntN(40) {
				b.WriteString(pieces[rng.IntN(len(pieces))])
			}
			s := b.String()
			if bound, n := (byteCounter{}).Count(s), c.Count(s); bound < n {
				t.Fatalf("%s: %q is %d tokens, above the bound %d", model, s, n, bound)
			}
		}
	}
}

// TestPromptCountedAfterSpawnIsExact: a prompt that surely fits is sent
// before it is counted; StageStarted still carries its exact count.
func TestPromptCountedAfterSpawnIsExact(t *testing.T) {
	e, _, stages := newProfileEngine(t, `
providers:
  sim: {kind: sim, sim: {output_tokens: 50}}
profiles:
  wide:
    provider: sim
    stages: {generator: {model: gpt-4o}, refiner: {model: gpt-4o}, validator: {model: gpt-4o}, curator: {model: gpt-4o}}
`, nil)
	h, err := e.StartRun(RunRequest{Profile: "wide", Query: "Why do distributed systems need consensus? 東京 🌸", Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	evs := collect(t, h, 1)
	checkTranscript(t, evs, 1)
	prof, _ := stages.Profile("wide")
	counter, _ := counterFor("gpt-4o")
	outputs := map[stagework.Stage]string{}
	started := 0
	for _, ev := range evs {
		switch {
		case ev.GetStageStarted() != nil:
			s := ev.GetStageStarted()
			spec := prof.Stages[started]
			msgs, err := stagework.BuildPrompt(spec, stagework.PromptInput{Query: h.Query, Outputs: outputs})
			if err != nil {
				t.Fatal(err)
			}
			if want := int64(stagework.PromptTokens(msgs, counter)); s.PromptTokens != want || want == 0 {
				t.Errorf("%s: StageStarted.prompt_tokens %d, want %d", s.Stage, s.PromptTokens, want)
			}
			started++
		case ev.GetStageCompleted() != nil:
			c := ev.GetStageCompleted()
			outputs[toWorkStage(c.Stage)] = c.Output
		}
	}
	if started != 4 || terminal(evs).GetRunCompleted() == nil {
		t.Fatalf("%d stages started; end %v", started, terminal(evs))
	}
}
