package stagework

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/template"
)

// PromptInput is what a stage knows when its prompt is built.
type PromptInput struct {
	// Query is the user's question (for a chat, the last user message).
	Query string
	// History is the conversation before Query, oldest first. User and
	// assistant turns are sent as chat messages; system and developer turns are
	// appended to the stage's system prompt; turns with other roles or no
	// content are dropped.
	History []Message
	// Outputs holds the finished outputs of the earlier stages. Each stage
	// requires the outputs it reads (see BuildPrompt); others are ignored.
	// Chain stages only.
	Outputs map[Stage]string
	// Inputs are the outputs of the steps a strategy's step reads
	// (StageSpec.Inputs that finished), in the order of StageSpec.Inputs.
	Inputs []StepOutput
	// Left are the step's inputs that were left out (failed, too slow),
	// with their Reason; a synthesis prompt names them.
	Left []StepOutput
	// Ranking is a council's aggregate ranking of its members' answers,
	// best first (the chairman's prompt).
	Ranking []RankEntry
}

// ErrMissingOutput is returned by BuildPrompt when a stage's prompt needs an
// earlier stage's output that PromptInput.Outputs does not hold.
var ErrMissingOutput = errors.New("stagework: missing earlier stage output")

// ErrBadTemplate is returned (wrapped) when a prompt template does not parse
// or does not execute.
var ErrBadTemplate = errors.New("stagework: bad prompt template")

// PromptData is what the prompt templates see. Field names are the template's
// vocabulary: {{.Query}}, {{.Draft}}, {{.Refined}}, {{.Review}}, {{.History}},
// {{.Stage}}, {{index .Outputs "generator"}}. The function "trim" trims space.
type PromptData struct {
	// Stage is the stage being prompted ("refiner").
	Stage string
	// Query is the user's question, trimmed.
	Query string
	// History is the conversation before Query (all roles, as given).
	History []Message
	// Draft is the Generator's output ("" if not available yet).
	Draft string
	// Refined is the Refiner's output ("" if not available yet).
	Refined string
	// Review is the Validator's findings ("" if not available yet).
	Review string
	// Outputs holds every available earlier output by stage name.
	Outputs map[string]string
}

// The default system prompts. Each says where the stage sits in the pipeline,
// what it receives and what it must produce; the shape of the output is
// spelled out because the next stage reads it.
const (
	generatorSystem = `You are the Generator, the first of four stages in a consensus pipeline (Generator, Refiner, Validator, Curator) that answers one user question together.

Your job is breadth. Write a first draft that answers the question from several angles: the main idea, the approaches that exist, the key considerations and trade-offs, the usual pitfalls, and anything the user may not have thought to ask. Be concrete; prefer specific facts, numbers and examples over generalities. If the question is ambiguous, say which reading you chose.

Shape: a short introduction, three to five numbered points, and a one-paragraph summary. Later stages will deepen, check and polish your draft, so favour coverage over polish, but do not invent facts: say so when you are unsure.`

	refinerSystem = `You are the Refiner, the second of four stages in a consensus pipeline (Generator, Refiner, Validator, Curator) that answers one user question together.

You receive the question and the Generator's first draft. Improve it: correct anything wrong, imprecise or outdated; deepen the points that matter most; cut padding and repetition; fill gaps the draft left open; and add one concrete example (working code, if the question is about programming).

Write the complete improved answer, not a list of edits: the next stage reads your version as the answer. Briefly note the corrections you made at the top.`

	validatorSystem = `You are the Validator, the third of four stages in a consensus pipeline (Generator, Refiner, Validator, Curator) that answers one user question together.

You receive the question and the refined answer (and, for reference, the original draft). Check the refined answer critically; do not rewrite it.
- Facts: is every claim correct and current?
- Logic: does the reasoning hold? Anything contradictory, missing or overstated?
- Code (if any): would it compile and run? Edge cases, error handling, security?
- Completeness: does it answer the question that was asked?

Report in this shape: one line each for Facts, Logic, Code (if there is code) and Completeness, marked ✓ or ✗; then "Issues found:" as a numbered list of concrete problems, each saying where it is and how to fix it ("None" if there are none); then a one-line verdict.`

	curatorSystem = `You are the Curator, the last of four stages in a consensus pipeline (Generator, Refiner, Validator, Curator) that answers one user question together.

You receive the question, the refined answer and the Validator's findings. Write the final answer the user will read: start from the refined answer, fix every issue the Validator raised that is valid (ignore findings that are themselves wrong), and make the answer clear, well structured and no longer than it needs to be.

The user sees only your answer: do not mention the pipeline, the stages, the draft or the review. Use Markdown: a heading, a short summary, the key points, and a conclusion.`
)

// The default user-message templates. Earlier outputs are fenced in tags so a
// model can tell them from the instructions around them.
const (
	generatorUser = `Question:
{{.Query}}

Write the first draft of an answer.`

	refinerUser = `Question:
{{.Query}}

Draft answer (from the Generator):
<draft>
{{.Draft}}
</draft>

Write the refined answer.`

	validatorUser = `Question:
{{.Query}}

Refined answer to check:
<refined_answer>
{{.Refined}}
</refined_answer>
{{- if .Draft}}

Original draft, for reference only:
<draft>
{{.Draft}}
</draft>
{{- end}}

Check the refined answer and report what you find.`

	curatorUser = `Question:
{{.Query}}

Refined answer:
<refined_answer>
{{.Refined}}
</refined_answer>

Validator's findings:
<review>
{{.Review}}
</review>

Write the final answer.`
)

// stagePrompt is one stage's defaults and the earlier outputs it requires.
type stagePrompt struct {
	system, user string
	needs        []Stage
}

var defaultPrompts = map[Stage]stagePrompt{
	StageGenerator: {generatorSystem, generatorUser, nil},
	StageRefiner:   {refinerSystem, refinerUser, []Stage{StageGenerator}},
	StageValidator: {validatorSystem, validatorUser, []Stage{StageRefiner}},
	StageCurator:   {curatorSystem, curatorUser, []Stage{StageRefiner, StageValidator}},
}

// DefaultSystemPrompt is the built-in system prompt of stage s ("" for an unknown stage).
func DefaultSystemPrompt(s Stage) string { return defaultPrompts[s].system }

// BuildPrompt builds the messages one stage sends to its model: the system
// message first, then the conversation history, then the user message with the
// question and the earlier outputs the stage reads:
//
//	generator: the question
//	refiner:   the question and the Generator's draft (required)
//	validator: the question, the refined answer (required) and the draft (if given)
//	curator:   the question, the refined answer and the Validator's findings (both required)
//
// spec.SystemPrompt and spec.UserTemplate, when set, replace the defaults; both
// are text/template templates over PromptData. BuildPrompt does not block and
// is safe for concurrent use. Errors: an unknown stage, an empty query,
// ErrMissingOutput, or ErrBadTemplate (wrapped, naming the stage and template).
func BuildPrompt(spec StageSpec, in PromptInput) ([]Message, error) {
	def, ok := defaultPrompts[spec.Stage]
	if !ok {
		return nil, fmt.Errorf("stagework: build prompt: %w %d", ErrUnknownStage, int(spec.Stage))
	}
	query := strings.TrimSpace(in.Query)
	if query == "" {
		return nil, fmt.Errorf("stagework: build %s prompt: empty query", spec.Stage)
	}
	for _, need := range def.needs {
		if _, ok := in.Outputs[need]; !ok {
			return nil, fmt.Errorf("%w: the %s prompt needs the %s output", ErrMissingOutput, spec.Stage, need)
		}
	}
	data := PromptData{
		Stage:   spec.Stage.String(),
		Query:   query,
		History: in.History,
		Draft:   in.Outputs[StageGenerator],
		Refined: in.Outputs[StageRefiner],
		Review:  in.Outputs[StageValidator],
		Outputs: make(map[string]string, len(in.Outputs)),
	}
	for s, out := range in.Outputs {
		data.Outputs[s.String()] = out
	}

	systemText, userText := def.system, def.user
	if spec.SystemPrompt != "" {
		systemText = spec.SystemPrompt
	}
	if spec.UserTemplate != "" {
		userText = spec.UserTemplate
	}
	system, err := renderTemplate(spec.Stage, "system_prompt", systemText, &data)
	if err != nil {
		return nil, err
	}
	user, err := renderTemplate(spec.Stage, "user_template", userText, &data)
	if err != nil {
		return nil, err
	}

	msgs := make([]Message, 0, len(in.History)+2)
	msgs = append(msgs, Message{Role: "system"})
	var extra []string
	for _, m := range in.History {
		if strings.TrimSpace(m.Content) == "" {
			continue
		}
		switch m.Role {
		case "user", "assistant":
			msgs = append(msgs, m)
		case "system", "developer":
			extra = append(extra, strings.TrimSpace(m.Content))
		}
	}
	if len(extra) > 0 {
		system += "\n\nInstructions given in the conversation:\n" + strings.Join(extra, "\n\n")
	}
	msgs[0].Content = system
	msgs = append(msgs, Message{Role: "user", Content: user})
	return msgs, nil
}

// checkTemplate parses and executes text against sample data, so a profile's
// override fails when the config is loaded rather than mid-run.
func checkTemplate(stage Stage, text string) error {
	sample := PromptData{
		Stage:   stage.String(),
		Query:   "What is a sample question?",
		History: []Message{{Role: "user", Content: "Earlier question"}, {Role: "assistant", Content: "Earlier answer"}},
		Draft:   "Sample draft.",
		Refined: "Sample refined answer.",
		Review:  "Sample review.",
		Outputs: map[string]string{"generator": "Sample draft.", "refiner": "Sample refined answer.", "validator": "Sample review."},
	}
	_, err := execTemplate(text, &sample)
	return err
}

// maxCachedTemplates bounds the parsed-template cache. Templates come from
// configs, so there are few; past the bound, templates are parsed per call.
const maxCachedTemplates = 256

var (
	templateMu sync.Mutex
	// templateCache maps template text to its parsed form (nil if it failed to parse).
	templateCache = map[string]*template.Template{}
	templateErrs  = map[string]error{}
)

func parseTemplate(text string) (*template.Template, error) {
	templateMu.Lock()
	t, ok := templateCache[text]
	err := templateErrs[text]
	templateMu.Unlock()
	if ok || err != nil {
		return t, err
	}
	t, err = template.New("prompt").
		Option("missingkey=error").
		Funcs(template.FuncMap{"trim": strings.TrimSpace}).
		Parse(text)
	templateMu.Lock()
	if len(templateCache)+len(templateErrs) < maxCachedTemplates {
		if err != nil {
			templateErrs[text] = err
		} else {
			templateCache[text] = t
		}
	}
	templateMu.Unlock()
	return t, err
}

func renderTemplate(stage Stage, field, text string, data *PromptData) (string, error) {
	s, err := execTemplate(text, data)
	if err != nil {
		return "", fmt.Errorf("%w: %s %s: %w", ErrBadTemplate, stage, field, err)
	}
	return s, nil
}

func execTemplate(text string, data *PromptData) (string, error) {
	t, err := parseTemplate(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	b.Grow(len(text) + len(data.Query) + len(data.Draft) + len(data.Refined) + len(data.Review))
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}
