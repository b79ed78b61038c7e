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

// ErrNoPrompt is returned by BuildPrompt for a step that makes no model
// call (StageTally): it has no prompt to build.
var ErrNoPrompt = errors.New("stagework: the step makes no model call")

// PromptData is what the prompt templates see. Field names are the template's
// vocabulary: {{.Query}}, {{.Draft}}, {{.Refined}}, {{.Review}}, {{.History}},
// {{.Stage}}, {{index .Outputs "generator"}}; for a strategy's steps also
// {{.Step}}, {{.Layer}}, {{range .Inputs}}{{.Label}}: {{.Text}}{{end}},
// {{range .Left}}…{{end}} and {{range .Ranking}}…{{end}}. The function "trim"
// trims space, "add" adds integers ({{add $i 1}}) and "label" is Label.
type PromptData struct {
	// Stage is the role being prompted ("refiner", "aggregator").
	Stage string
	// Role is the role's display name ("Refiner", "Aggregator").
	Role string
	// Step is the step's id ("refiner", "p2.1", "r3").
	Step string
	// Layer is a moa proposer's layer (from 1); 0 for other steps.
	Layer int
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
	// Outputs holds every available earlier output by stage name (a
	// chain's) or step id (a strategy's inputs).
	Outputs map[string]string
	// Inputs are the outputs the step reads (PromptInput.Inputs), each with
	// its anonymous Label: the caller's, else Label(i) by position.
	Inputs []StepOutput
	// Left are the inputs left out (PromptInput.Left), with their Reason.
	Left []StepOutput
	// Ranking is a council's aggregate ranking, best first (PromptInput.Ranking).
	Ranking []RankEntry
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

// The strategies' default system prompts. Like the chain's, each says where
// the step sits, what it receives and what it must produce. The synthesis
// prompts (a later moa layer, the aggregator) follow the Mixture-of-Agents
// paper's Aggregate-and-Synthesize prompt (arXiv 2406.04692, Table 1); the
// council's follow karpathy/llm-council; the judge's, universal
// self-consistency (arXiv 2311.17311). The output formats that a program
// reads ("FINAL RANKING:", "Final answer:", "Most consistent:") are spelled
// out exactly: ParseRanking, FinalAnswer and ParseChoice read them.
const (
	proposerSystem = `You are a Proposer, one of several models that answer the same user question independently, side by side, in a Mixture-of-Agents pipeline. Later steps read all the proposers' answers and synthesize them into one final answer.

Answer the question on your own, as well as you can: accurate, complete and specific. Cover the main idea, the details that matter, the trade-offs and the usual pitfalls; prefer concrete facts, numbers and examples (working code, if the question is about programming) over generalities. If the question is ambiguous, say which reading you chose. Do not invent facts: say so when you are unsure, so that the synthesis can weigh your claim accordingly.

Write a complete answer in Markdown, not notes or an outline.`

	proposerLayerSystem = `You are a Proposer in a later layer of a Mixture-of-Agents pipeline: several models have answered the user's question in the layer before yours, and you, like the other proposers of your layer, write an improved answer from their responses. A later step synthesizes your layer's answers into the final one.

You have been provided with a set of responses from various models to the user's question. Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. Your response should not simply replicate the given answers but should offer a refined, accurate, and comprehensive reply to the question. Ensure your response is well-structured, coherent, and adheres to the highest standards of accuracy and reliability.

Where the responses agree, check the shared claim rather than trusting the agreement. Where they disagree, decide on the merits, not by majority. Keep a valuable point even if only one response makes it, and add what all of them missed. If some responses are listed as left out, do not guess what they said.

Write a complete answer in Markdown, not a review of the responses.`

	aggregatorSystem = `You are the Aggregator, the last step of a Mixture-of-Agents pipeline: several models (the proposers) have answered the user's question, and you write the final answer from their responses.

You have been provided with a set of responses from various models to the user's question. Your task is to synthesize these responses into a single, high-quality response. It is crucial to critically evaluate the information provided in these responses, recognizing that some of it may be biased or incorrect. Your response should not simply replicate the given answers but should offer a refined, accurate, and comprehensive reply to the question. Ensure your response is well-structured, coherent, and adheres to the highest standards of accuracy and reliability.

Where the responses agree, check the shared claim rather than trusting the agreement. Where they disagree, decide on the merits, not by majority. Keep a valuable point even if only one response makes it, drop what is wrong, and fill any gap they all left. If some responses are listed as left out, do not guess what they said.

The user sees only your answer: do not mention the responses, the models or the pipeline. Use Markdown: a heading, a short summary, the key points, and a conclusion.`

	memberSystem = `You are a Member of an LLM council: several models answer the same user question independently; then each answer is reviewed and ranked against the others without saying who wrote it, and the council's Chairman writes the final answer from the answers and their ranking.

Answer the question on your own, as well as you can. Answers are judged on accuracy, insight and usefulness: be correct before anything else, cover what matters and leave out padding, and prefer concrete facts, numbers and examples (working code, if the question is about programming) over generalities. If the question is ambiguous, say which reading you chose; if you are unsure of something, say so rather than guess.

Write a complete, self-contained answer in Markdown. Do not mention the council, the other members or the ranking.`

	rankerSystem = `You are a Ranker of an LLM council: several models have answered the same user question, and you evaluate and rank their answers. The answers are anonymized as Response A, Response B, and so on. Judge each on its content alone: not on its length or style, not on a guess at who wrote it, and not on the order in which they are shown.

First evaluate each response in turn: what it does well, what it does poorly, and whether it is correct (check facts, reasoning and any code). Then rank them all, best first.

A program reads your ranking, so its format is strict. End your reply with the line "FINAL RANKING:" and, below it, a numbered list of every response from best to worst, one per line, each line only the number, a period, a space and the response's label, like "1. Response C". List each response exactly once, and write nothing after the list.`

	chairmanSystem = `You are the Chairman of an LLM council: several models (the members) have answered the user's question on their own, then the council reviewed and ranked the answers without knowing who wrote which. You write the council's final answer.

You receive the question, the members' answers (labelled Response A, Response B, … with the model that wrote each) and the council's aggregate ranking of them (best first, with each answer's average rank: 1 is best). Use the ranking as evidence of quality, not as a verdict: the best-ranked answer is a good starting point, but check it, fix what is wrong, and bring in valuable points from the others, even low-ranked ones. Where the answers disagree, decide on the merits. If some answers are listed as left out, do not guess what they said.

The user sees only your answer: do not mention the council, the members, the responses or the ranking. Use Markdown: a heading, a short summary, the key points, and a conclusion.`

	sampleSystem = `You are a Sample, one of several independent attempts at the same user question in a self-consistency vote: the answer that most attempts agree on is chosen.

Think the question through step by step and show your reasoning briefly, then commit to one answer. Do not hedge between several answers: pick the one you find most likely.

A program compares the attempts' answers, so the format is strict: your last line must be "Final answer: " followed by the short answer alone (a number, a word, a name or a short phrase), in its plainest form, with no explanation, units or Markdown unless the answer needs them, for example "Final answer: 42". Write nothing after that line.`

	judgeSystem = `You are the Judge of a self-consistency vote: several independent samples have answered the same user question, and you pick the response that is most consistent with the others (universal self-consistency).

The samples are anonymized as Response A, Response B, and so on. Compare their final answers and key claims, find what the majority of them agree on, and pick the one response that best represents that consensus: one whose answer the most others share and, among those, the one whose reasoning is soundest. Do not pick on style, length or order.

A program reads your choice, so the format is strict: explain your comparison briefly, then end with the line "Most consistent: Response X", where X is the chosen response's letter, and write nothing after it.`
)

// The strategies' default user-message templates. Earlier outputs are
// fenced in <response label="A"> tags; inputs that were left out are named
// on "Left out:" lines so a synthesis knows what it has not seen.
const (
	// answerUser is the question alone: a moa proposer of the first layer,
	// a council member.
	answerUser = `Question:
{{.Query}}

Write your answer.`

	// leftLines names the left-out inputs, after a blank line; nothing when
	// none was left out.
	leftLines = `
{{- if .Left}}
{{range .Left}}
Left out: {{if .Label}}Response {{.Label}}{{else}}a response{{end}}{{if .Model}} (model {{.Model}}){{end}} — {{if .Reason}}{{.Reason}}{{else}}it did not finish{{end}}{{end}}
{{- end}}`

	proposerLayerUser = `Question:
{{.Query}}

Responses from models in the previous layer ({{len .Inputs}}):
{{- range .Inputs}}

<response label="{{.Label}}">
{{.Text}}
</response>
{{- end}}` + leftLines + `

Write your answer: synthesize these responses into a single refined, accurate and comprehensive answer to the question.`

	aggregatorUser = `Question:
{{.Query}}

Responses from models ({{len .Inputs}}):
{{- range .Inputs}}

<response label="{{.Label}}">
{{.Text}}
</response>
{{- end}}` + leftLines + `

Write the final answer: synthesize these responses into a single refined, accurate and comprehensive answer to the question.`

	rankerUser = `Question:
{{.Query}}

The responses to evaluate ({{len .Inputs}}, anonymized):
{{- range .Inputs}}

<response label="{{.Label}}">
{{.Text}}
</response>
{{- end}}

Evaluate each response, then rank all {{len .Inputs}} of them, best first. End with exactly this shape, each … being a response's letter, and nothing after the list:

FINAL RANKING:
{{- range $i, $r := .Inputs}}
{{add $i 1}}. Response …
{{- end}}`

	chairmanUser = `Question:
{{.Query}}

The members' answers ({{len .Inputs}}):
{{- range .Inputs}}

<response label="{{.Label}}"{{if .Model}} model="{{.Model}}"{{end}}>
{{.Text}}
</response>
{{- end}}` + leftLines + `

{{if .Ranking -}}
The council's aggregate ranking, best first (average rank over the rankings that placed the answer; 1 is best):
{{- range $i, $r := .Ranking}}
{{add $i 1}}. Response {{$r.Label}} — {{if $r.Votes}}average rank {{printf "%.2f" $r.AverageRank}} ({{$r.Votes}} ranking{{if ne $r.Votes 1}}s{{end}}){{else}}not ranked{{end}}
{{- end}}
{{- else -}}
No ranking of the answers is available: judge them on their merits.
{{- end}}

Write the council's final answer.`

	sampleUser = `Question:
{{.Query}}

Think it through step by step, then end with the line "Final answer: " followed by your short answer.`

	judgeUser = `Question:
{{.Query}}

The samples' responses ({{len .Inputs}}, anonymized):
{{- range .Inputs}}

<response label="{{.Label}}">
{{.Text}}
</response>
{{- end}}

Evaluate these responses and select the most consistent one, based on majority consensus. End with the line "Most consistent: Response X", X being its letter.`
)

// stagePrompt is one role's defaults and what it requires: the chain's
// earlier outputs (needs) or, for a strategy's step, at least one of
// PromptInput.Inputs (inputs).
type stagePrompt struct {
	system, user string
	needs        []Stage
	inputs       bool
}

var defaultPrompts = map[Stage]stagePrompt{
	StageGenerator:  {generatorSystem, generatorUser, nil, false},
	StageRefiner:    {refinerSystem, refinerUser, []Stage{StageGenerator}, false},
	StageValidator:  {validatorSystem, validatorUser, []Stage{StageRefiner}, false},
	StageCurator:    {curatorSystem, curatorUser, []Stage{StageRefiner, StageValidator}, false},
	StageProposer:   {proposerSystem, answerUser, nil, false},
	StageAggregator: {aggregatorSystem, aggregatorUser, nil, true},
	StageMember:     {memberSystem, answerUser, nil, false},
	StageRanker:     {rankerSystem, rankerUser, nil, true},
	StageChairman:   {chairmanSystem, chairmanUser, nil, true},
	StageSample:     {sampleSystem, sampleUser, nil, false},
	StageJudge:      {judgeSystem, judgeUser, nil, true},
}

// proposerLayerPrompt is a moa proposer's of layer 2 and later.
var proposerLayerPrompt = stagePrompt{proposerLayerSystem, proposerLayerUser, nil, true}

// defaultPrompt is spec's built-in prompt.
func defaultPrompt(spec StageSpec) (stagePrompt, bool) {
	if spec.Stage == StageProposer && spec.Layer >= 2 {
		return proposerLayerPrompt, true
	}
	p, ok := defaultPrompts[spec.Stage]
	return p, ok
}

// DefaultSystemPrompt is the built-in system prompt of stage s ("" for an
// unknown stage and for StageTally). For StageProposer it is the first
// layer's; DefaultStepSystemPrompt gives a later layer's.
func DefaultSystemPrompt(s Stage) string { return defaultPrompts[s].system }

// DefaultStepSystemPrompt is the built-in system prompt of the step spec:
// DefaultSystemPrompt of its role, except that a moa proposer of layer 2 or
// later synthesizes the previous layer's answers.
func DefaultStepSystemPrompt(spec StageSpec) string {
	p, _ := defaultPrompt(spec)
	return p.system
}

// BuildPrompt builds the messages one step sends to its model: the system
// message first, then the conversation history, then the user message with the
// question and the earlier outputs the step reads:
//
//	generator:  the question
//	refiner:    the question and the Generator's draft (required)
//	validator:  the question, the refined answer (required) and the draft (if given)
//	curator:    the question, the refined answer and the Validator's findings (both required)
//	proposer:   layer 1: the question; layer 2 and later: the question and the
//	            previous layer's answers (Inputs, at least one), with the Left ones named
//	aggregator: the question and the last layer's answers (Inputs, at least one),
//	            with the Left ones named
//	member:     the question
//	ranker:     the question and the members' answers, anonymized (Inputs, at least one)
//	chairman:   the question, the members' answers with their models (Inputs, at
//	            least one), the Left ones named, and the Ranking (if any)
//	sample:     the question
//	judge:      the question and the samples, anonymized (Inputs, at least one)
//
// Inputs are shown by label: StepOutput.Label, else Label(i) for the i-th
// (the labels ParseRanking and ParseChoice read back). A tally step makes no
// model call: its prompt is an error wrapping ErrNoPrompt.
//
// spec.SystemPrompt and spec.UserTemplate, when set, replace the defaults; both
// are text/template templates over PromptData. BuildPrompt does not block and
// is safe for concurrent use. Errors: an unknown stage, an empty query,
// ErrMissingOutput, ErrNoPrompt, or ErrBadTemplate (wrapped, naming the stage
// and template).
func BuildPrompt(spec StageSpec, in PromptInput) ([]Message, error) {
	if spec.Stage == StageTally {
		return nil, fmt.Errorf("%w: step %s is a tally", ErrNoPrompt, spec.StepID())
	}
	def, ok := defaultPrompt(spec)
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
	if def.inputs && len(in.Inputs) == 0 {
		return nil, fmt.Errorf("%w: the %s prompt (step %s) needs the output of at least one of its inputs%s; none is given%s",
			ErrMissingOutput, spec.Stage, spec.StepID(), listIDs(" (", spec.Inputs, ")"), leftSummary(in.Left))
	}
	data := PromptData{
		Stage:   spec.Stage.String(),
		Role:    spec.Stage.Title(),
		Step:    spec.StepID(),
		Layer:   spec.Layer,
		Query:   query,
		History: in.History,
		Draft:   in.Outputs[StageGenerator],
		Refined: in.Outputs[StageRefiner],
		Review:  in.Outputs[StageValidator],
		Outputs: make(map[string]string, len(in.Outputs)+len(in.Inputs)),
		Left:    in.Left,
		Ranking: in.Ranking,
	}
	for s, out := range in.Outputs {
		data.Outputs[s.String()] = out
	}
	if len(in.Inputs) > 0 {
		data.Inputs = make([]StepOutput, len(in.Inputs))
		for i, o := range in.Inputs {
			if o.Label == "" {
				o.Label = Label(i)
			}
			data.Inputs[i] = o
			if _, dup := data.Outputs[o.ID]; o.ID != "" && !dup {
				data.Outputs[o.ID] = o.Text
			}
		}
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

// listIDs joins ids between before and after; "" for none.
func listIDs(before string, ids []string, after string) string {
	if len(ids) == 0 {
		return ""
	}
	return before + strings.Join(ids, ", ") + after
}

// leftSummary says which inputs were left out, for an error message.
func leftSummary(left []StepOutput) string {
	if len(left) == 0 {
		return ""
	}
	parts := make([]string, len(left))
	for i, o := range left {
		parts[i] = o.ID
		if o.Reason != "" {
			parts[i] += ": " + o.Reason
		}
	}
	return " (left out: " + strings.Join(parts, "; ") + ")"
}

// checkTemplate parses and executes text against sample data, so a profile's
// override fails when the config is loaded rather than mid-run. The sample
// of a strategy's role that reads inputs has three, with that role's step
// ids, a fourth left out, and a ranking.
func checkTemplate(stage Stage, text string) error {
	sample := samplePromptData(stage)
	_, err := execTemplate(text, &sample)
	return err
}

// samplePromptData is checkTemplate's data for a step of role stage.
func samplePromptData(stage Stage) PromptData {
	d := PromptData{
		Stage:   stage.String(),
		Role:    stage.Title(),
		Step:    stage.String(),
		Query:   "What is a sample question?",
		History: []Message{{Role: "user", Content: "Earlier question"}, {Role: "assistant", Content: "Earlier answer"}},
		Draft:   "Sample draft.",
		Refined: "Sample refined answer.",
		Review:  "Sample review.",
		Outputs: map[string]string{"generator": "Sample draft.", "refiner": "Sample refined answer.", "validator": "Sample review."},
	}
	if stage.Chain() {
		return d
	}
	var ids []string
	role := StageProposer
	switch stage {
	case StageProposer:
		d.Step, d.Layer, ids = "p2.1", 2, []string{"p1.1", "p1.2", "p1.3", "p1.4"}
	case StageAggregator:
		ids = []string{"p2.1", "p2.2", "p2.3", "p2.4"}
	case StageMember:
		d.Step = "m1"
	case StageRanker:
		d.Step, ids, role = "r1", []string{"m1", "m2", "m3", "m4"}, StageMember
	case StageChairman:
		ids, role = []string{"m1", "m2", "m3", "m4"}, StageMember
	case StageSample:
		d.Step = "s1"
	default:
		ids, role = []string{"s1", "s2", "s3", "s4"}, StageSample
	}
	if ids == nil {
		return d
	}
	for i, id := range ids[:3] {
		out := StepOutput{ID: id, Role: role, Model: "sample-model-" + Label(i), Label: Label(i), Text: "Sample answer " + Label(i) + "."}
		d.Inputs = append(d.Inputs, out)
		d.Outputs[id] = out.Text
	}
	d.Left = []StepOutput{{ID: ids[3], Model: "sample-model-D", Label: "D", Reason: "timed out after 20s"}}
	d.Ranking = []RankEntry{{ID: ids[2], Label: "C", AverageRank: 1.5, Votes: 2}, {ID: ids[0], Label: "A", AverageRank: 2, Votes: 2}, {ID: ids[1], Label: "B", AverageRank: 2.5, Votes: 2}}
	return d
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
		Funcs(template.FuncMap{"trim": strings.TrimSpace, "add": func(a, b int) int { return a + b }, "label": Label}).
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
	if !strings.Contains(text, "{{") {
		return strings.TrimSpace(text), nil // no action: the text is its own output
	}
	t, err := parseTemplate(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	size := len(text) + len(data.Query) + len(data.Draft) + len(data.Refined) + len(data.Review)
	for _, o := range data.Inputs {
		size += len(o.Text) + 40
	}
	b.Grow(size)
	if err := t.Execute(&b, data); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}
