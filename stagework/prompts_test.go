package stagework

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
)

const (
	markDraft   = "DRAFT-MARKER-7f3a"
	markRefined = "REFINED-MARKER-91bc"
	markReview  = "REVIEW-MARKER-c04d"
	markCurated = "CURATED-MARKER-55e0"
)

func allOutputs() map[Stage]string {
	return map[Stage]string{
		StageGenerator: markDraft,
		StageRefiner:   markRefined,
		StageValidator: markReview,
		StageCurator:   markCurated,
	}
}

func TestBuildPromptStagesSeeTheRightOutputs(t *testing.T) {
	const q = "What is the CAP theorem?"
	tests := []struct {
		stage   Stage
		want    []string // in the user message
		notWant []string
	}{
		{StageGenerator, nil, []string{markDraft, markRefined, markReview, markCurated}},
		{StageRefiner, []string{markDraft}, []string{markRefined, markReview, markCurated}},
		{StageValidator, []string{markRefined, markDraft}, []string{markReview, markCurated}},
		{StageCurator, []string{markRefined, markReview}, []string{markDraft, markCurated}},
	}
	for _, tt := range tests {
		t.Run(tt.stage.String(), func(t *testing.T) {
			msgs, err := BuildPrompt(StageSpec{Stage: tt.stage}, PromptInput{Query: "  " + q + "\n", Outputs: allOutputs()})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 2 || msgs[0].Role != "system" || msgs[1].Role != "user" {
				t.Fatalf("messages = %+v, want [system, user]", msgs)
			}
			if msgs[0].Content != strings.TrimSpace(DefaultSystemPrompt(tt.stage)) {
				t.Errorf("system prompt is not the %s default:\n%s", tt.stage, msgs[0].Content)
			}
			if !strings.Contains(msgs[0].Content, "You are the "+tt.stage.Title()) {
				t.Errorf("system prompt does not name the stage %s", tt.stage.Title())
			}
			user := msgs[1].Content
			if !strings.Contains(user, "Question:\n"+q+"\n") {
				t.Errorf("user message lacks the trimmed question:\n%s", user)
			}
			for _, w := range tt.want {
				if !strings.Contains(user, w) {
					t.Errorf("user message lacks %s:\n%s", w, user)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(user, w) {
					t.Errorf("user message contains %s, which the %s should not see:\n%s", w, tt.stage, user)
				}
			}
		})
	}
}

func TestBuildPromptValidatorWithoutDraft(t *testing.T) {
	msgs, err := BuildPrompt(StageSpec{Stage: StageValidator}, PromptInput{
		Query:   "q",
		Outputs: map[Stage]string{StageRefiner: markRefined},
	})
	if err != nil {
		t.Fatal(err)
	}
	user := msgs[len(msgs)-1].Content
	if strings.Contains(user, "<draft>") {
		t.Errorf("validator prompt has a draft section without a draft:\n%s", user)
	}
	if !strings.Contains(user, markRefined) {
		t.Errorf("validator prompt lacks the refined answer:\n%s", user)
	}
}

func TestBuildPromptMissingOutputs(t *testing.T) {
	tests := []struct {
		stage   Stage
		outputs map[Stage]string
		missing Stage
	}{
		{StageRefiner, nil, StageGenerator},
		{StageValidator, map[Stage]string{StageGenerator: "d"}, StageRefiner},
		{StageCurator, map[Stage]string{StageRefiner: "r"}, StageValidator},
		{StageCurator, map[Stage]string{StageValidator: "v"}, StageRefiner},
	}
	for _, tt := range tests {
		_, err := BuildPrompt(StageSpec{Stage: tt.stage}, PromptInput{Query: "q", Outputs: tt.outputs})
		if !errors.Is(err, ErrMissingOutput) {
			t.Errorf("%s with %v: err = %v, want ErrMissingOutput", tt.stage, tt.outputs, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.missing.String()) {
			t.Errorf("%s: error %q does not name the missing %s output", tt.stage, err, tt.missing)
		}
	}
	// An empty output is present, not missing: the model may have said nothing.
	if _, err := BuildPrompt(StageSpec{Stage: StageRefiner}, PromptInput{Query: "q", Outputs: map[Stage]string{StageGenerator: ""}}); err != nil {
		t.Errorf("empty generator output: %v", err)
	}
}

func TestBuildPromptBadInput(t *testing.T) {
	if _, err := BuildPrompt(StageSpec{Stage: StageGenerator}, PromptInput{Query: " \n\t"}); err == nil || !strings.Contains(err.Error(), "empty query") {
		t.Errorf("blank query: err = %v", err)
	}
	if _, err := BuildPrompt(StageSpec{Stage: Stage(9)}, PromptInput{Query: "q"}); !errors.Is(err, ErrUnknownStage) {
		t.Errorf("stage 9: err = %v, want ErrUnknownStage", err)
	}
}

func TestBuildPromptHistory(t *testing.T) {
	history := []Message{
		{Role: "system", Content: "Answer in French."},
		{Role: "user", Content: "first question"},
		{Role: "assistant", Content: "first answer"},
		{Role: "tool", Content: "dropped tool output"},
		{Role: "user", Content: "   "},
		{Role: "developer", Content: "Be brief."},
	}
	msgs, err := BuildPrompt(StageSpec{Stage: StageGenerator}, PromptInput{Query: "second question", History: history})
	if err != nil {
		t.Fatal(err)
	}
	var roles []string
	for _, m := range msgs {
		roles = append(roles, m.Role)
	}
	if got := strings.Join(roles, ","); got != "system,user,assistant,user" {
		t.Fatalf("roles = %s, want system,user,assistant,user", got)
	}
	if msgs[1].Content != "first question" || msgs[2].Content != "first answer" {
		t.Errorf("history turns changed: %+v", msgs[1:3])
	}
	sys := msgs[0].Content
	if !strings.Contains(sys, "Answer in French.") || !strings.Contains(sys, "Be brief.") {
		t.Errorf("system prompt lacks the conversation's instructions:\n%s", sys)
	}
	if strings.Contains(sys+msgs[3].Content, "dropped tool output") {
		t.Error("a tool message leaked into the prompt")
	}
	if !strings.Contains(msgs[3].Content, "second question") {
		t.Errorf("last message is not the question: %q", msgs[3].Content)
	}
}

func TestBuildPromptOverrides(t *testing.T) {
	spec := StageSpec{
		Stage:        StageRefiner,
		SystemPrompt: "You polish answers ({{.Stage}}).",
		UserTemplate: `Q={{.Query}} D={{.Draft}} G={{index .Outputs "generator"}} H={{len .History}} T=[{{trim "  x  "}}]`,
	}
	msgs, err := BuildPrompt(spec, PromptInput{
		Query:   "why?",
		History: []Message{{Role: "user", Content: "hi"}},
		Outputs: map[Stage]string{StageGenerator: "draft text"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := msgs[0].Content; got != "You polish answers (refiner)." {
		t.Errorf("system = %q", got)
	}
	if got, want := msgs[len(msgs)-1].Content, "Q=why? D=draft text G=draft text H=1 T=[x]"; got != want {
		t.Errorf("user = %q, want %q", got, want)
	}
	// Overriding one template keeps the other's default.
	msgs, err = BuildPrompt(StageSpec{Stage: StageGenerator, UserTemplate: "just {{.Query}}"}, PromptInput{Query: "q"})
	if err != nil {
		t.Fatal(err)
	}
	if msgs[0].Content != DefaultSystemPrompt(StageGenerator) || msgs[1].Content != "just q" {
		t.Errorf("partial override: %+v", msgs)
	}
}

func TestBuildPromptBadTemplates(t *testing.T) {
	tests := []struct {
		name  string
		spec  StageSpec
		field string
	}{
		{"parse error", StageSpec{Stage: StageGenerator, UserTemplate: "{{.Query"}, "user_template"},
		{"unknown field", StageSpec{Stage: StageGenerator, UserTemplate: "{{.Nope}}"}, "user_template"},
		{"missing map key", StageSpec{Stage: StageGenerator, SystemPrompt: "{{.Outputs.nosuch}}"}, "system_prompt"},
		{"unknown function", StageSpec{Stage: StageCurator, SystemPrompt: "{{shout .Query}}"}, "system_prompt"},
	}
	in := PromptInput{Query: "q", Outputs: allOutputs()}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for range 2 { // the second call is served from the template cache
				_, err := BuildPrompt(tt.spec, in)
				if !errors.Is(err, ErrBadTemplate) {
					t.Fatalf("err = %v, want ErrBadTemplate", err)
				}
				msg := err.Error()
				if !strings.HasPrefix(msg, "stagework: ") || !strings.Contains(msg, tt.spec.Stage.String()) || !strings.Contains(msg, tt.field) {
					t.Errorf("error %q should name the package, stage %s and field %s", msg, tt.spec.Stage, tt.field)
				}
			}
		})
	}
}

func TestBuildPromptConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				spec := StageSpec{Stage: StageCurator, UserTemplate: fmt.Sprintf("{{.Query}} %d", i%5)}
				msgs, err := BuildPrompt(spec, PromptInput{Query: "q", Outputs: allOutputs()})
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("q %d", i%5); msgs[1].Content != want {
					errs <- fmt.Errorf("goroutine %d: got %q, want %q", g, msgs[1].Content, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func BenchmarkBuildPrompt(b *testing.B) {
	in := PromptInput{Query: "What is the CAP theorem?", Outputs: map[Stage]string{
		StageGenerator: strings.Repeat("draft ", 300),
		StageRefiner:   strings.Repeat("refined ", 300),
		StageValidator: strings.Repeat("review ", 100),
	}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildPrompt(StageSpec{Stage: StageCurator}, in); err != nil {
			b.Fatal(err)
		}
	}
}
