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
	if _, err := BuildPrompt(StageSpec{Stage: Stage(NumStages + 1)}, PromptInput{Query: "q"}); !errors.Is(err, ErrUnknownStage) {
		t.Errorf("stage %d: err = %v, want ErrUnknownStage", NumStages+1, err)
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

// stepInputs are three finished inputs whose texts and models are markers.
func stepInputs() []StepOutput {
	return []StepOutput{
		{ID: "x1", Role: StageMember, Model: "MODEL-ONE", Text: "INPUT-ONE-3a1f"},
		{ID: "x2", Role: StageMember, Model: "MODEL-TWO", Text: "INPUT-TWO-8c2e"},
		{ID: "x3", Role: StageMember, Model: "MODEL-THREE", Text: "INPUT-THREE-d47b"},
	}
}

func TestBuildPromptStrategyRolesSeeTheRightInputs(t *testing.T) {
	const q = "Which consensus algorithm should I use?"
	ins := stepInputs()
	left := []StepOutput{{ID: "x4", Model: "MODEL-SLOW", Label: "D", Reason: "timed out after 20s"}}
	ranking := AggregateRanking([]string{"x1", "x2", "x3"}, []string{"A", "B", "C"}, [][]int{{2, 0, 1}, {2, 1, 0}})
	texts := []string{ins[0].Text, ins[1].Text, ins[2].Text}
	models := []string{"MODEL-ONE", "MODEL-TWO", "MODEL-THREE"}
	leftLine := "Left out: Response D (model MODEL-SLOW) — timed out after 20s"
	tests := []struct {
		spec    StageSpec
		system  []string // in the system message
		want    []string // in the user message, in this order
		notWant []string
	}{
		{StageSpec{Stage: StageProposer, ID: "p1.1", Layer: 1}, []string{"You are a Proposer", "independently"},
			[]string{"Question:\n" + q + "\n"}, append(append([]string{"<response", "Left out"}, texts...), models...)},
		{StageSpec{Stage: StageProposer, ID: "p2.1", Layer: 2}, []string{"You are a Proposer in a later layer", "critically evaluate", "biased or incorrect", "not simply replicate"},
			append(append([]string{"Question:\n" + q + "\n"}, taggedTexts(ins)...), leftLine, "synthesize"), models},
		{StageSpec{Stage: StageAggregator, ID: "aggregator"}, []string{"You are the Aggregator", "critically evaluate", "recognizing that some of it may be biased or incorrect", "should not simply replicate the given answers", "single, high-quality response", "refined, accurate, and comprehensive", "do not guess"},
			append(append([]string{"Question:\n" + q + "\n"}, taggedTexts(ins)...), leftLine, "Write the final answer"), models},
		{StageSpec{Stage: StageMember, ID: "m1"}, []string{"You are a Member", "council"},
			[]string{"Question:\n" + q + "\n", "Write your answer."}, append(append([]string{"<response", "Left out"}, texts...), models...)},
		{StageSpec{Stage: StageRanker, ID: "r1"}, []string{"You are a Ranker", "Response A", `"FINAL RANKING:"`, `"1. Response C"`, "nothing after the list"},
			append(append([]string{"Question:\n" + q + "\n"}, taggedTexts(ins)...), "rank all 3", "FINAL RANKING:\n1. Response …\n2. Response …\n3. Response …"),
			append([]string{"Left out", "model="}, models...)},
		{StageSpec{Stage: StageChairman, ID: "chairman"}, []string{"You are the Chairman", "ranking as evidence", "do not guess"},
			[]string{"Question:\n" + q + "\n",
				"<response label=\"A\" model=\"MODEL-ONE\">\nINPUT-ONE-3a1f\n</response>",
				"<response label=\"B\" model=\"MODEL-TWO\">\nINPUT-TWO-8c2e\n</response>",
				"<response label=\"C\" model=\"MODEL-THREE\">\nINPUT-THREE-d47b\n</response>",
				leftLine,
				"1. Response C — average rank 1.00 (2 rankings)\n2. Response A — average rank 2.50 (2 rankings)\n3. Response B — average rank 2.50 (2 rankings)",
				"Write the council's final answer."}, nil},
		{StageSpec{Stage: StageSample, ID: "s1"}, []string{"You are a Sample", `"Final answer: "`, "last line"},
			[]string{"Question:\n" + q + "\n", `"Final answer: "`}, append(append([]string{"<response"}, texts...), models...)},
		{StageSpec{Stage: StageJudge, ID: "judge"}, []string{"You are the Judge", "most consistent", `"Most consistent: Response X"`},
			append(append([]string{"Question:\n" + q + "\n"}, taggedTexts(ins)...), "Most consistent: Response X"),
			append([]string{"Left out", "model="}, models...)},
	}
	for _, tt := range tests {
		t.Run(tt.spec.StepID(), func(t *testing.T) {
			msgs, err := BuildPrompt(tt.spec, PromptInput{Query: "\t" + q + " ", Inputs: ins, Left: left, Ranking: ranking})
			if err != nil {
				t.Fatal(err)
			}
			if len(msgs) != 2 || msgs[0].Role != "system" || msgs[1].Role != "user" {
				t.Fatalf("messages = %+v", msgs)
			}
			if msgs[0].Content != DefaultStepSystemPrompt(tt.spec) {
				t.Errorf("system prompt is not the step's default:\n%s", msgs[0].Content)
			}
			for _, w := range tt.system {
				if !strings.Contains(msgs[0].Content, w) {
					t.Errorf("system prompt lacks %q:\n%s", w, msgs[0].Content)
				}
			}
			user := msgs[1].Content
			at := 0
			for _, w := range tt.want {
				i := strings.Index(user[at:], w)
				if i < 0 {
					t.Fatalf("user message lacks %q after offset %d:\n%s", w, at, user)
				}
				at += i + len(w)
			}
			for _, w := range tt.notWant {
				if strings.Contains(user, w) {
					t.Errorf("user message contains %q, which the %s should not see:\n%s", w, tt.spec.Stage, user)
				}
			}
		})
	}
}

// taggedTexts are inputs as the default prompts fence them, labelled by position.
func taggedTexts(ins []StepOutput) []string {
	out := make([]string, len(ins))
	for i, o := range ins {
		out[i] = "<response label=\"" + Label(i) + "\">\n" + o.Text + "\n</response>"
	}
	return out
}

func TestBuildPromptLabelsAndLeftOut(t *testing.T) {
	// The caller's labels win; a missing one is the position's.
	ins := stepInputs()
	ins[0].Label, ins[2].Label = "C", "A"
	msgs, err := BuildPrompt(StageSpec{Stage: StageRanker}, PromptInput{Query: "q", Inputs: ins})
	if err != nil {
		t.Fatal(err)
	}
	user := msgs[1].Content
	for _, w := range []string{"<response label=\"C\">\nINPUT-ONE", "<response label=\"B\">\nINPUT-TWO", "<response label=\"A\">\nINPUT-THREE"} {
		if !strings.Contains(user, w) {
			t.Errorf("lacks %q:\n%s", w, user)
		}
	}
	if ins[1].Label != "" {
		t.Error("BuildPrompt changed the caller's inputs")
	}

	// Left-out inputs without a label, a model or a reason still read well.
	left := []StepOutput{{ID: "p1.3", Model: "m-x"}, {ID: "p1.4", Reason: "failed: server error"}}
	msgs, err = BuildPrompt(StageSpec{Stage: StageAggregator}, PromptInput{Query: "q", Inputs: stepInputs()[:1], Left: left})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"\n\nLeft out: a response (model m-x) — it did not finish\nLeft out: a response — failed: server error\n\nWrite the final answer"} {
		if !strings.Contains(msgs[1].Content, w) {
			t.Errorf("lacks %q:\n%s", w, msgs[1].Content)
		}
	}
	// Nothing left out: no such line.
	msgs, _ = BuildPrompt(StageSpec{Stage: StageAggregator}, PromptInput{Query: "q", Inputs: stepInputs()})
	if strings.Contains(msgs[1].Content, "Left out") || !strings.Contains(msgs[1].Content, "</response>\n\nWrite the final answer") {
		t.Errorf("no left-out inputs:\n%s", msgs[1].Content)
	}
	// A chairman without a ranking is told so.
	msgs, _ = BuildPrompt(StageSpec{Stage: StageChairman}, PromptInput{Query: "q", Inputs: stepInputs()})
	if !strings.Contains(msgs[1].Content, "</response>\n\nNo ranking of the answers is available") {
		t.Errorf("chairman without a ranking:\n%s", msgs[1].Content)
	}
	// An unranked entry says so, and one vote is singular.
	rk := AggregateRanking([]string{"x1", "x2"}, []string{"A", "B"}, [][]int{{1}})
	msgs, _ = BuildPrompt(StageSpec{Stage: StageChairman}, PromptInput{Query: "q", Inputs: stepInputs()[:2], Ranking: rk})
	if !strings.Contains(msgs[1].Content, "1. Response B — average rank 1.00 (1 ranking)\n2. Response A — not ranked\n") {
		t.Errorf("ranking lines:\n%s", msgs[1].Content)
	}
}

func TestBuildPromptStrategyMissingInputs(t *testing.T) {
	for _, spec := range []StageSpec{
		{Stage: StageProposer, ID: "p2.1", Layer: 2, Inputs: []string{"p1.1", "p1.2"}},
		{Stage: StageAggregator, ID: "aggregator", Inputs: []string{"p2.1", "p2.2"}},
		{Stage: StageRanker, ID: "r1", Inputs: []string{"m1", "m2"}},
		{Stage: StageChairman, ID: "chairman", Inputs: []string{"m1", "m2"}},
		{Stage: StageJudge, ID: "judge", Inputs: []string{"s1", "s2"}},
	} {
		_, err := BuildPrompt(spec, PromptInput{Query: "q", Left: []StepOutput{{ID: spec.Inputs[1], Reason: "timed out after 20s"}}})
		if !errors.Is(err, ErrMissingOutput) {
			t.Errorf("%s without inputs: err = %v, want ErrMissingOutput", spec.StepID(), err)
			continue
		}
		for _, w := range []string{spec.StepID(), spec.Inputs[0], spec.Inputs[1] + ": timed out after 20s"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not name %q", spec.StepID(), err, w)
			}
		}
		// One input, even with an empty text, is enough.
		if _, err := BuildPrompt(spec, PromptInput{Query: "q", Inputs: []StepOutput{{ID: spec.Inputs[0]}}}); err != nil {
			t.Errorf("%s with one empty input: %v", spec.StepID(), err)
		}
	}
	// The steps that read only the question need no inputs.
	for _, spec := range []StageSpec{{Stage: StageProposer, Layer: 1}, {Stage: StageProposer}, {Stage: StageMember}, {Stage: StageSample}} {
		msgs, err := BuildPrompt(spec, PromptInput{Query: "q", Inputs: stepInputs()})
		if err != nil {
			t.Errorf("%s: %v", spec.Stage, err)
		} else if strings.Contains(msgs[1].Content, "INPUT-ONE") {
			t.Errorf("%s (layer %d) sees inputs it should not read", spec.Stage, spec.Layer)
		}
	}
	// A tally makes no model call.
	if _, err := BuildPrompt(StageSpec{Stage: StageTally, ID: "answer"}, PromptInput{Query: "q", Inputs: stepInputs()}); !errors.Is(err, ErrNoPrompt) || !strings.Contains(err.Error(), "answer") {
		t.Errorf("tally: err = %v, want ErrNoPrompt naming the step", err)
	}
}

func TestBuildPromptStrategyHistory(t *testing.T) {
	history := []Message{{Role: "system", Content: "Answer in French."}, {Role: "user", Content: "hi"}, {Role: "assistant", Content: "salut"}}
	msgs, err := BuildPrompt(StageSpec{Stage: StageJudge}, PromptInput{Query: "q", History: history, Inputs: stepInputs()})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 4 || msgs[1].Content != "hi" || msgs[2].Content != "salut" || !strings.Contains(msgs[0].Content, "Answer in French.") || !strings.Contains(msgs[3].Content, "INPUT-ONE") {
		t.Errorf("history around a judge's prompt: %+v", msgs)
	}
}

func TestBuildPromptStrategyOverrides(t *testing.T) {
	spec := StageSpec{
		Stage:        StageAggregator,
		ID:           "aggregator",
		SystemPrompt: "You are the {{.Role}} ({{.Stage}}, step {{.Step}}, layer {{.Layer}}).",
		UserTemplate: `{{.Query}}|{{range $i, $r := .Inputs}}[{{add $i 1}} {{$r.Label}} {{$r.ID}} {{$r.Model}}: {{$r.Text}}]{{end}}|{{index .Outputs "x2"}}|` +
			`{{range .Left}}{{.ID}}={{.Reason}}{{end}}|{{range .Ranking}}{{.Label}}{{.Votes}}{{end}}|{{label 3}}`,
	}
	ins := stepInputs()
	rk := AggregateRanking([]string{"x1", "x2"}, nil, [][]int{{1, 0}})
	msgs, err := BuildPrompt(spec, PromptInput{Query: "q", Inputs: ins[:2], Left: []StepOutput{{ID: "x3", Reason: "failed"}}, Ranking: rk})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := msgs[0].Content, "You are the Aggregator (aggregator, step aggregator, layer 0)."; got != want {
		t.Errorf("system = %q, want %q", got, want)
	}
	if got, want := msgs[1].Content, "q|[1 A x1 MODEL-ONE: INPUT-ONE-3a1f][2 B x2 MODEL-TWO: INPUT-TWO-8c2e]|INPUT-TWO-8c2e|x3=failed|B1A1|D"; got != want {
		t.Errorf("user = %q\nwant   %q", got, want)
	}
}

func TestCheckTemplateStrategyData(t *testing.T) {
	good := `{{.Role}} {{.Step}} {{.Layer}} {{range .Inputs}}{{.Label}}{{.Model}}{{.Text}}{{.ID}}{{end}}{{range .Left}}{{.Reason}}{{end}}{{range .Ranking}}{{printf "%.1f" .AverageRank}}{{end}}`
	for _, s := range RoleTable() {
		if s.Stage == StageTally {
			continue
		}
		if err := checkTemplate(s.Stage, good); err != nil {
			t.Errorf("%s: %v", s.Name, err)
		}
		if err := checkTemplate(s.Stage, "{{.Inputs.Text}}"); err == nil {
			t.Errorf("%s: a template misusing .Inputs passed the check", s.Name)
		}
	}
	// A role that reads inputs gets sample inputs with its own step ids,
	// one left out and a ranking, so templates indexing them pass.
	for stage, id := range map[Stage]string{StageAggregator: "p2.1", StageRanker: "m1", StageChairman: "m3", StageJudge: "s2", StageProposer: "p1.1"} {
		tmpl := `{{index .Outputs "` + id + `"}} {{(index .Inputs 2).Text}} {{(index .Left 0).Reason}} {{(index .Ranking 2).Label}}`
		if err := checkTemplate(stage, tmpl); err != nil {
			t.Errorf("%s: %v", stage, err)
		}
		if _, ok := samplePromptData(stage).Outputs[id]; !ok {
			t.Errorf("%s: the sample has no output of %s", stage, id)
		}
	}
	d := samplePromptData(StageProposer)
	if d.Layer != 2 || d.Step != "p2.1" {
		t.Errorf("a proposer's sample is of layer %d, step %s: want a later layer, which reads inputs", d.Layer, d.Step)
	}
}
