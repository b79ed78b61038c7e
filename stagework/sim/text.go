package sim

import (
	"math/rand/v2"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/qlc-project/qlc/stagework"
)

// This file writes the simulated model's text: a stage-shaped Markdown answer
// about the question's topic, of an exact number of tokens, chosen
// deterministically from phrase banks by a seeded generator.
//
// A document is head + body + extra + tail. Head and tail are the fixed frame
// (intro, summary, verdict...); the body is an endless series of blocks
// (numbered points, sections, issues) and fills the length asked for; extra
// (a code example) is kept only if it fits. Whatever slack remains is filled
// with short sentences of known length, so the count comes out exact.

// --- tokens ---

// nextToken returns the end of the token starting at s[i]. A token is a run of
// newlines; a word (letters, digits, '_') with the spaces or tabs before it; or
// a run of one repeated punctuation or symbol character ("**", "```", "✓")
// with the spaces before it. Roughly what BPE tokenizers produce, and always
// whole UTF-8.
func nextToken(s string, i int) int {
	if s[i] == '\n' {
		j := i + 1
		for j < len(s) && s[j] == '\n' {
			j++
		}
		return j
	}
	j := i
	for j < len(s) && (s[j] == ' ' || s[j] == '\t') {
		j++
	}
	if j == len(s) || s[j] == '\n' {
		return j // trailing blanks
	}
	if c := s[j]; c < utf8.RuneSelf && !isWordRune(rune(c)) { // ASCII punctuation
		k := j + 1
		for k < len(s) && s[k] == c {
			k++
		}
		return k
	}
	r, size := utf8.DecodeRuneInString(s[j:])
	j += size
	if isWordRune(r) {
		for j < len(s) {
			if c := s[j]; c < utf8.RuneSelf {
				if !isWordRune(rune(c)) {
					break
				}
				j++
				continue
			}
			r2, size2 := utf8.DecodeRuneInString(s[j:])
			if !isWordRune(r2) {
				break
			}
			j += size2
		}
		return j
	}
	for j < len(s) {
		r2, size2 := utf8.DecodeRuneInString(s[j:])
		if r2 != r {
			break
		}
		j += size2
	}
	return j
}

func isWordRune(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_'
	}
	return unicode.IsLetter(r) || unicode.IsDigit(r)
}

// countTokens counts the tokens of s as nextToken splits them.
func countTokens(s string) int {
	n := 0
	for i := 0; i < len(s); i = nextToken(s, i) {
		n++
	}
	return n
}

// tokWriter accumulates text and the end offset of each token, up to limit tokens.
type tokWriter struct {
	buf   []byte
	ends  []int32
	limit int
}

func (w *tokWriter) add(s string) {
	for i := 0; i < len(s) && len(w.ends) < w.limit; {
		j := nextToken(s, i)
		w.buf = append(w.buf, s[i:j]...)
		w.ends = append(w.ends, int32(len(w.buf)))
		i = j
	}
}

// addFit appends s if it has at most max tokens and returns its count;
// otherwise it appends nothing and returns -1. It tokenizes s once. At the
// writer's limit it keeps what it appended: the text is cut there.
func (w *tokWriter) addFit(s string, max int) int {
	b0, e0 := len(w.buf), len(w.ends)
	n := 0
	for i := 0; i < len(s); n++ {
		if len(w.ends) == w.limit {
			return n
		}
		if n == max {
			w.buf, w.ends = w.buf[:b0], w.ends[:e0]
			return -1
		}
		j := nextToken(s, i)
		w.buf = append(w.buf, s[i:j]...)
		w.ends = append(w.ends, int32(len(w.buf)))
		i = j
	}
	return n
}

// --- the question's topic ---

// simTopic is what the simulator knows about the question.
type simTopic struct {
	phrase string // "reversing a linked list in Go": fits "… on {T}."
	title  string // phrase with a capital first letter, for headings and sentence starts
	code   bool   // the question is about programming
	lang   string // "go", "python", "javascript", "rust", "sql", "bash"
	ident  string // a function name derived from the topic, in lang's style
}

var (
	politePrefixes = [][]string{{"please"}, {"can", "you"}, {"could", "you"}, {"would", "you"}, {"hey"}, {"so"}, {"ok"}, {"okay"}}
	nounPrefixes   = [][]string{
		{"what", "do", "you", "know", "about"}, {"tell", "me", "about"}, {"explain", "to", "me"}, {"give", "me"}, {"show", "me"}, {"teach", "me"},
		{"what", "is"}, {"what", "are"}, {"what's"}, {"what", "was"}, {"what", "were"}, {"who", "is"}, {"who", "was"},
		{"explain"}, {"describe"}, {"define"}, {"summarize"}, {"summarise"}, {"tell", "me"},
	}
	gerundPrefixes = [][]string{
		{"what", "is", "the", "best", "way", "to"}, {"what's", "the", "best", "way", "to"}, {"what", "is", "a", "good", "way", "to"},
		{"how", "do", "i"}, {"how", "do", "you"}, {"how", "do", "we"}, {"how", "can", "i"}, {"how", "can", "you"}, {"how", "can", "we"},
		{"how", "should", "i"}, {"how", "should", "we"}, {"how", "would", "i"}, {"how", "would", "you"}, {"how", "to"},
		{"best", "way", "to"}, {"i", "want", "to"}, {"i", "need", "to"}, {"help", "me"},
	}
	imperativeVerbs = setOf("write", "implement", "create", "build", "design", "compare", "make", "configure", "debug", "fix",
		"optimize", "optimise", "use", "deploy", "migrate", "refactor", "test", "choose", "learn", "find", "calculate", "convert",
		"parse", "sort", "reverse", "generate", "add", "remove", "install", "plan", "train", "analyze", "analyse", "improve",
		"set", "run", "structure", "organize", "organise", "scale", "secure", "monitor", "handle", "read", "store", "split", "merge")
	questionWords = setOf("why", "when", "where", "which", "who", "whom", "whose", "how", "is", "are", "was", "were", "does", "do", "did",
		"should", "can", "could", "would", "will", "shall", "has", "have", "had", "may", "might", "must")
	doubledVerbs = setOf("set", "run", "get", "put", "cut", "map", "log", "plan", "stop", "drop", "ship", "scan", "trim", "wrap", "skip", "swap", "grab", "sit", "begin")
	codeWords    = setOf("code", "coding", "program", "programming", "function", "functions", "method", "class", "script", "implement",
		"implementation", "algorithm", "compile", "compiler", "bug", "debug", "regex", "snippet", "refactor", "api", "struct", "goroutine", "goroutines")
	identSkip = setOf("a", "an", "the", "in", "on", "of", "to", "for", "with", "and", "or", "my", "your", "that", "which", "using", "is",
		"are", "how", "what", "write", "writing", "implement", "implementing", "create", "creating", "function", "program", "code", "script",
		"go", "golang", "python", "javascript", "typescript", "rust", "sql", "bash", "shell", "it", "this", "from", "into", "by", "as", "me", "you", "i")
)

func setOf(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// analyzeQuery extracts the topic of a question: "How do I reverse a linked
// list in Go?" → "reversing a linked list in Go", "What is Raft?" → "Raft".
func analyzeQuery(q string) simTopic {
	words := strings.Fields(topicSentence(q))
	if len(words) > 0 {
		last := strings.TrimRight(words[len(words)-1], "?!.:;,")
		if last == "" {
			words = words[:len(words)-1]
		} else {
			words[len(words)-1] = last
		}
	}
	lower := make([]string, len(words))
	for i, w := range words {
		lower[i] = strings.ToLower(strings.Trim(w, ",;:"))
	}
	for stripped := true; stripped; {
		stripped = false
		for _, p := range politePrefixes {
			if hasPrefixWords(lower, p) && len(lower) > len(p) {
				words, lower, stripped = words[len(p):], lower[len(p):], true
			}
		}
	}
	gerund := false
	for _, p := range gerundPrefixes {
		if hasPrefixWords(lower, p) && len(lower) > len(p) {
			words, lower, gerund = words[len(p):], lower[len(p):], true
			break
		}
	}
	if !gerund {
		for _, p := range nounPrefixes {
			if hasPrefixWords(lower, p) && len(lower) > len(p) {
				words, lower = words[len(p):], lower[len(p):]
				break
			}
		}
		if len(lower) > 1 && imperativeVerbs[lower[0]] {
			gerund = true
		}
	}
	base := words // the topic's words before the gerund, for identifiers
	out := make([]string, 0, len(words))
	for i, w := range words {
		switch lower[i] {
		case "my":
			w = "your"
		case "mine":
			w = "yours"
		case "i", "me":
			w = "you"
		case "myself":
			w = "yourself"
		}
		if i == 0 && gerund {
			w = toGerund(lower[0])
		} else if i == 0 && questionWords[lower[0]] {
			w = lower[0] // "Why is …" reads "… on why is …" mid-sentence
		}
		out = append(out, w)
	}
	const maxWords = 12
	if len(out) > maxWords {
		out = out[:maxWords]
		for len(out) > 1 && identSkip[strings.ToLower(out[len(out)-1])] {
			out = out[:len(out)-1]
		}
	}
	t := simTopic{phrase: strings.Join(out, " ")}
	if t.phrase == "" {
		t.phrase = "the question"
	}
	r, size := utf8.DecodeRuneInString(t.phrase)
	t.title = string(unicode.ToUpper(r)) + t.phrase[size:]

	t.lang, t.code = detectCode(q)
	t.ident = makeIdent(base, t.lang)
	return t
}

// topicSentence picks the sentence that carries the question: the first one
// ending in '?', else the first one.
func topicSentence(q string) string {
	q = strings.TrimSpace(q)
	first := ""
	start := 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c != '?' && c != '.' && c != '!' && c != '\n' {
			continue
		}
		// a '.' inside a word ("node.js", "3.5") does not end a sentence
		if c == '.' && i+1 < len(q) && q[i+1] != ' ' && q[i+1] != '\n' {
			continue
		}
		s := strings.TrimSpace(q[start : i+1])
		start = i + 1
		if s == "" || s == "?" || s == "." || s == "!" {
			continue
		}
		if c == '?' {
			return s
		}
		if first == "" {
			first = s
		}
	}
	if rest := strings.TrimSpace(q[start:]); first == "" {
		return rest
	}
	return first
}

func hasPrefixWords(words, prefix []string) bool {
	if len(words) < len(prefix) {
		return false
	}
	for i, p := range prefix {
		if words[i] != p {
			return false
		}
	}
	return true
}

// toGerund turns a verb into its -ing form ("write" → "writing", "set" → "setting").
func toGerund(v string) string {
	switch {
	case strings.HasSuffix(v, "ing"):
		return v
	case v == "be" || v == "see":
		return v + "ing"
	case strings.HasSuffix(v, "ie"):
		return v[:len(v)-2] + "ying"
	case doubledVerbs[v]:
		return v + v[len(v)-1:] + "ing"
	case strings.HasSuffix(v, "e") && !strings.HasSuffix(v, "ee") && !strings.HasSuffix(v, "ye") && !strings.HasSuffix(v, "oe"):
		return v[:len(v)-1] + "ing"
	}
	return v + "ing"
}

// detectCode says whether q is about programming, and in which language.
func detectCode(q string) (lang string, code bool) {
	fields := strings.FieldsFunc(q, func(r rune) bool {
		return !(isWordRune(r) || r == '+' || r == '#' || r == '.')
	})
	for i, f := range fields {
		w := strings.ToLower(strings.Trim(f, "."))
		switch {
		case w == "golang" || (f == "Go" && i > 0):
			lang = "go"
		case w == "python" || w == "py" || w == "django" || w == "pandas":
			lang = "python"
		case w == "javascript" || w == "js" || w == "typescript" || w == "ts" || w == "node" || w == "node.js" || w == "react":
			lang = "javascript"
		case w == "rust" || w == "cargo":
			lang = "rust"
		case w == "sql" || w == "postgres" || w == "postgresql" || w == "mysql" || w == "sqlite":
			lang = "sql"
		case w == "bash" || w == "shell" || w == "zsh":
			lang = "bash"
		case codeWords[w]:
			code = true
			continue
		default:
			continue
		}
		code = true
		break
	}
	if code && lang == "" {
		lang = "go"
	}
	return lang, code
}

// makeIdent builds a function name from the topic's content words.
func makeIdent(words []string, lang string) string {
	var parts []string
	for _, w := range words {
		lw := strings.ToLower(strings.TrimFunc(w, func(r rune) bool { return !isWordRune(r) }))
		if lw == "" || identSkip[lw] || !isIdentWord(lw) {
			continue
		}
		parts = append(parts, lw)
		if len(parts) == 3 {
			break
		}
	}
	if len(parts) == 0 {
		parts = []string{"solve"}
	}
	if lang == "python" || lang == "rust" {
		return strings.Join(parts, "_")
	}
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

func isIdentWord(w string) bool {
	for i := 0; i < len(w); i++ {
		c := w[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return w[0] < '0' || w[0] > '9'
}

var langNames = map[string]string{"go": "Go", "python": "Python", "javascript": "JavaScript", "rust": "Rust", "sql": "SQL", "bash": "Bash"}

// codeSnippets are short, plausible examples; {F} is the function name, {T} the topic.
var codeSnippets = map[string]string{
	"go":         "```go\n// {F} is a minimal sketch of {T}.\nfunc {F}(items []string) ([]string, error) {\n\tif len(items) == 0 {\n\t\treturn nil, errors.New(\"no input\")\n\t}\n\tout := make([]string, 0, len(items))\n\tfor _, it := range items {\n\t\tout = append(out, strings.TrimSpace(it))\n\t}\n\treturn out, nil\n}\n```",
	"python":     "```python\ndef {F}(items):\n    \"\"\"A minimal sketch of {T}.\"\"\"\n    if not items:\n        raise ValueError(\"no input\")\n    return [item.strip() for item in items]\n```",
	"javascript": "```javascript\n// A minimal sketch of {T}.\nfunction {F}(items) {\n  if (!items.length) throw new Error(\"no input\");\n  return items.map((item) => item.trim());\n}\n```",
	"rust":       "```rust\n/// A minimal sketch of {T}.\nfn {F}(items: &[&str]) -> Result<Vec<String>, String> {\n    if items.is_empty() {\n        return Err(\"no input\".into());\n    }\n    Ok(items.iter().map(|s| s.trim().to_string()).collect())\n}\n```",
	"sql":        "```sql\n-- A minimal sketch of {T}.\nSELECT id, name, created_at\nFROM items\nWHERE name IS NOT NULL\nORDER BY created_at DESC\nLIMIT 100;\n```",
	"bash":       "```bash\n#!/usr/bin/env bash\n# A minimal sketch of {T}.\nset -euo pipefail\nfor f in \"$@\"; do\n  [ -f \"$f\" ] || { echo \"missing: $f\" >&2; exit 1; }\n  wc -l \"$f\"\ndone\n```",
}

// --- phrase banks ---
//
// Placeholders: {T} topic phrase (mid-sentence), {Title} topic with a capital
// (sentence start), {A}/{a} an aspect's title/lower-case title, {B}/{b} another
// aspect, {L} language name, {F} function name, {N} a number.

type simAspect struct {
	title string
	lower string // title in lower case, filled in by init
	lines []string
}

func init() {
	for i := range simAspects {
		simAspects[i].lower = strings.ToLower(simAspects[i].title)
	}
}

var simAspects = []simAspect{
	{"The core idea", "", []string{
		"At its core, {T} is about matching the method to the problem instead of applying a recipe blindly.",
		"The central idea is simple to state, but its consequences only show up once real constraints apply.",
		"It helps to ask first what problem {T} actually solves, and for whom.",
		"Most confusion disappears once the underlying goal is stated plainly.",
	}},
	{"How it works in practice", "", []string{
		"In practice, {T} breaks down into a few distinct steps, each with its own failure modes.",
		"Walking through the steps in order makes the moving parts, and their dependencies, explicit.",
		"The mechanics are easiest to follow with one small, concrete case in mind.",
		"Each step has inputs, outputs and assumptions; writing them down avoids surprises later.",
	}},
	{"Trade-offs", "", []string{
		"Every choice around {T} trades simplicity against flexibility, and the right balance depends on scale.",
		"What you gain in one dimension you usually pay for in another: latency, cost or complexity.",
		"The cheapest option up front is rarely the cheapest over the lifetime of a system.",
		"Be explicit about which trade-off you are making, so it can be revisited when conditions change.",
	}},
	{"Common pitfalls", "", []string{
		"A frequent mistake with {T} is optimising too early, before measuring where the real costs are.",
		"Edge cases such as empty input, very large input and concurrent access are where things break first.",
		"Many problems come from assumptions that were true at the start and quietly stopped holding.",
		"Copying a solution without understanding its context tends to import its problems too.",
	}},
	{"When it is the right choice", "", []string{
		"{Title} pays off when the problem is large or recurring enough to justify the extra structure.",
		"For small, one-off cases a simpler approach is often the better choice.",
		"It fits best when the requirements are stable enough that the investment is not thrown away.",
		"If the team cannot maintain it, even a technically superior approach is the wrong choice.",
	}},
	{"Performance", "", []string{
		"Performance depends less on the idea than on constant factors such as memory layout, allocation and I/O.",
		"Measure before and after every change; intuition about the cost of {T} is often wrong.",
		"For most workloads the bottleneck is I/O or coordination rather than raw computation.",
		"Benchmarks should use realistic data sizes, or they will optimise for the wrong case.",
	}},
	{"Handling failure", "", []string{
		"Decide up front what should happen when a step fails halfway through.",
		"Errors should be explicit and carry enough context to diagnose them later.",
		"Retries help with transient failures, but they need limits and backoff to avoid making things worse.",
		"A clear failure is better than a silent wrong result.",
	}},
	{"Security", "", []string{
		"Treat every input as untrusted and validate it at the boundary.",
		"Much of the security of {T} comes from defaults: least privilege, no secrets in logs, safe failure modes.",
		"Review who can trigger each operation and what they could do with it.",
		"Keep dependencies few and up to date, since they are a common attack surface.",
	}},
	{"Testing", "", []string{
		"Test with small, deterministic cases first, then with randomised and adversarial input.",
		"A good test suite covers the normal path, the edge cases and the failure paths.",
		"Tests that run fast get run often, which is most of their value.",
		"When a bug is found, first add a test that reproduces it.",
	}},
	{"Alternatives", "", []string{
		"It is worth comparing {T} with at least one alternative before committing to it.",
		"Established alternatives exist, and each makes a different trade-off.",
		"Sometimes the best alternative is to avoid the problem altogether by changing the requirements.",
		"Knowing the alternatives also makes it easier to explain why this approach was chosen.",
	}},
	{"Scaling up", "", []string{
		"What works for one user or one machine may not survive a hundredfold increase in load.",
		"Identify which part of {T} grows fastest with scale, and design around that part.",
		"Horizontal growth brings coordination costs that are easy to underestimate.",
		"Plan for the next order of magnitude, not for every future one.",
	}},
	{"Maintainability", "", []string{
		"Code and systems are read far more often than they are written, so clarity matters.",
		"Small, well-named pieces are easier to change than one clever whole.",
		"Document the why, not just the what, so that later changes respect the original intent.",
		"Consistency across a codebase is worth more than local perfection.",
	}},
}

var (
	genIntros = []string{
		"Here is a first draft on {T}, looking at it from several angles before going into detail.",
		"{Title} can be approached from a few different directions; this draft maps out the main ones.",
		"A quick survey of {T}: what it is, how it works in practice, and where it tends to go wrong.",
		"There is no single answer to {T}, so this draft covers the main angles and the trade-offs between them.",
	}
	genIntros2 = []string{
		" Each point below is a starting point for deeper treatment, not a final word.",
		" The points are ordered roughly from fundamentals to practice.",
		" Some of these will matter more than others, depending on your context.",
		" The later points build on the earlier ones.",
	}
	genSummaries = []string{
		"{Title} comes down to understanding the core idea, choosing deliberately among the trade-offs, and testing the result against real conditions.",
		"The right approach to {T} depends on scale, constraints and how much complexity you can afford; start simple and measure.",
		"Get the fundamentals right first; most of the difficulty with {T} lies in the details covered above.",
		"Treat {T} as a set of decisions rather than a recipe, and revisit them as your situation changes.",
	}
	refOpeners = []string{
		"The draft covers the main ground on {T}, but a few points need correcting and several deserve more depth.",
		"This version keeps the structure of the draft on {T}, tightens the wording, and fixes what was imprecise.",
		"The draft is a reasonable start on {T}; below, its weaker claims are corrected and the key points are developed further.",
	}
	refCorrections = []string{
		"The point on {a} overstated its case: it holds in common setups, not universally.",
		"The draft treated {a} as an afterthought; it is central, so it now comes first.",
		"The discussion of {a} mixed up cause and effect; this is corrected below.",
		"Claims about {a} were too general; they are now tied to concrete conditions.",
		"A missing caveat on {a} has been added: results depend heavily on the workload.",
		"The draft's advice on {a} conflicted with its summary; the two now agree.",
	}
	refDepth = []string{
		"This matters because the effects of {a} compound as a system grows.",
		"A useful rule of thumb: make the simple case fast and the complex case possible.",
		"Concretely, write down the assumptions behind {a} and check them against real data.",
		"Where sources disagree here, it is usually because they assume different workloads.",
		"The cost of getting this wrong is usually discovered late, which is why it is worth settling early.",
		"In the draft this point was right in spirit but too general; the conditions above make it precise.",
	}
	refExamples = []string{
		"Consider a team that adopts {T} for one service first: they measure a baseline, change one thing at a time, and keep only what the numbers support.",
		"As a concrete case, picture {T} in a small system with a few thousand users: at that scale the basics matter far more than advanced techniques.",
		"A concrete example: start with a version that handles only the common case, and add measurements that show when the rarer cases start to matter.",
	}
	refCodeIntros = []string{
		"Here is a minimal sketch in {L}:",
		"A small {L} example makes this concrete:",
		"In {L}, a first version can be this small:",
	}
	refCodeOutros = []string{
		"It is deliberately small: handle errors explicitly, and add tests for the empty and the very large case before relying on it.",
		"Keep the first version this simple, and extend it only when a test or a measurement shows the need.",
	}
	validScopes = []string{
		"Checked: the refined answer on {T}, for facts, logic and completeness.",
		"Scope: the refined answer on {T}, read against the original question.",
		"Reviewed the refined answer on {T} claim by claim.",
	}
	validFacts = []string{
		"✓ The main claims about {T} agree with standard references.",
		"✓ No factual errors in the description of {a}; one claim needs a source (see issue 1).",
		"✓ The core statements are accurate; a few are more general than the evidence supports.",
	}
	validLogic = []string{
		"✓ The argument moves from fundamentals to practice without contradictions.",
		"⚠ Mostly sound, but the section on {b} draws a conclusion the text does not fully support.",
		"✓ The reasoning holds; the order of the points could be tighter.",
	}
	validCode = []string{
		"✓ The {L} example is syntactically valid and handles empty input; invalid input is not covered (see issue 2).",
		"⚠ The {L} example runs, but its name `{F}` promises more than the body does; say what the reader must supply.",
	}
	validCompleteness = []string{
		"✓ The answer addresses the question as asked.",
		"⚠ Partly: {c} is mentioned but not explained.",
		"✓ Covers the question; one practical caveat is missing (see the issues).",
	}
	validIssues = []string{
		"The section on {a} states a general rule without saying when it does not hold; add the conditions.",
		"The point on {a} gives no number or source; add one, or soften the claim.",
		"The points on {a} and {b} overlap; merge them to avoid repeating the same argument.",
		"Edge cases (empty input, very large input) are not covered in the discussion of {a}.",
		"The wording around {a} is vague (\"often\", \"usually\"); say how often, or under which conditions.",
		"The summary claims more about {a} than the body supports; align the two.",
		"The part on {a} does not say what to do when things go wrong; one sentence on the failure path is needed.",
	}
	validCodeIssue = "The {L} example handles empty input but not invalid input; add a check or a note on what callers must guarantee."
	validVerdicts  = []string{
		"Sound overall; fix the issues above and it is ready to become the final answer.",
		"Acceptable with minor revisions: the structure is good and the problems are local.",
		"Mostly correct; the issues above are worth fixing before the answer is published.",
	}
	curSummaries = []string{
		"{Title} is best understood through its core idea, the trade-offs it forces, and the conditions under which it works well.",
		"In short: understand what {T} is for, choose deliberately among its trade-offs, and verify the result against real conditions.",
		"The essentials of {T} fit in a few points; the rest is applying them with care to your situation.",
	}
	curConclusions = []string{
		"Start with the simplest approach to {T} that meets your needs, measure it against real conditions, and add complexity only where the numbers justify it.",
		"{Title} rewards a deliberate approach: settle the fundamentals, make the trade-offs explicit, and test the result where it will actually run.",
		"Used with care, {T} works well; most problems come from skipping the basics above, not from the hard cases.",
	}
	curCodeIntros = []string{
		"A minimal {L} starting point:",
		"For reference, a small {L} sketch:",
	}
)

// simPads fill the last few tokens of a body so a document comes out at an
// exact length. Index = token count; every count from 2 to len-1 has entries.
var simPads = func() [][]string {
	all := []string{
		" Verify.", " Measure.",
		" Measure first.", " Test early.",
		" Keep it simple.", " Details matter here.",
		" This is often overlooked.", " Start small and iterate.",
		" Write down the assumptions made.", " Check this against real data.",
		" The details depend on your context.", " It is worth testing this early.",
		" This deserves a closer look in practice.", " Real workloads will show what matters most.",
		" In practice, this matters more than expected.", " This is easy to get wrong at first.",
		" Verify it.", " Then iterate.", " Write it down.", " Keep notes.",
		" Simplicity wins here.", " Start with defaults.", " Measure, then decide.",
		" Small steps are safer here.", " Revisit this as needs change.",
		" Test this with realistic data.", " Keep the common case fast and simple.",
		" Each of these choices can be revisited later.", " Document the choice so that others can follow it.",
		" None of this needs to be perfect on the first attempt.", " The right answer depends on scale, budget and the team.",
		" Writing the reasoning down makes later changes much easier to review.",
		" It is worth checking each of these points against your own constraints.",
		" Most teams find that the simple version is good enough.", " Small, frequent checks catch most of these problems early.",
		" A short written rationale helps the next person who reads this.",
		" In the end, the numbers from your own system should decide this.",
		" Iterate.", " Measure it before you change it.",
	}
	var pads [][]string
	for _, p := range all {
		n := countTokens(p)
		for len(pads) <= n {
			pads = append(pads, nil)
		}
		pads[n] = append(pads[n], p)
	}
	// Keep the lengths from 2 up to the first gap: the filler relies on
	// every length below the longest being available.
	for n := 2; n < len(pads); n++ {
		if len(pads[n]) == 0 {
			pads = pads[:n]
			break
		}
	}
	if len(pads) < 9 {
		panic("sim: simPads must cover 2 to 8 tokens")
	}
	return pads
}()

// --- documents ---

// simDoc writes one stage's text.
type simDoc struct {
	rng      *rand.Rand
	topic    simTopic
	plan     []int // aspect order, shared by all stages of one question
	mentions int   // times the topic has been named in body lines
	usedPads map[string]bool
	w        tokWriter
}

func (d *simDoc) pick(list []string) string { return list[d.rng.IntN(len(list))] }

func (d *simDoc) aspect(i int) simAspect { return simAspects[d.plan[i%len(d.plan)]] }

// fill expands placeholders; a, b and c are aspect positions in the plan.
func (d *simDoc) fill(s string, a, b, c int) string { return d.expand(s, a, b, c, false) }

// expand replaces the placeholders in s in one pass (text put in is not
// scanned again); a '{' that starts no placeholder, as in code, is kept.
// With short, the topic is "it".
func (d *simDoc) expand(s string, a, b, c int, short bool) string {
	i := strings.IndexByte(s, '{')
	if i < 0 {
		return s
	}
	var out strings.Builder
	out.Grow(len(s) + 2*len(d.topic.phrase))
	for i >= 0 {
		out.WriteString(s[:i])
		s = s[i:]
		v, ok := "", false
		if end := strings.IndexByte(s, '}'); end > 0 && end <= len("{Title}") {
			if v, ok = d.placeholder(s[1:end], a, b, c, short); ok {
				s = s[end+1:]
			}
		}
		if ok {
			out.WriteString(v)
		} else {
			out.WriteByte('{')
			s = s[1:]
		}
		i = strings.IndexByte(s, '{')
	}
	out.WriteString(s)
	return out.String()
}

func (d *simDoc) placeholder(key string, a, b, c int, short bool) (string, bool) {
	switch key {
	case "T":
		if short {
			return "it", true
		}
		return d.topic.phrase, true
	case "Title":
		if short {
			return "It", true
		}
		return d.topic.title, true
	case "L":
		return langNames[d.topic.lang], true
	case "F":
		return d.topic.ident, true
	case "A":
		return d.aspect(a).title, true
	case "a":
		return d.aspect(a).lower, true
	case "B":
		return d.aspect(b).title, true
	case "b":
		return d.aspect(b).lower, true
	case "c":
		return d.aspect(c).lower, true
	}
	return "", false
}

// line is the j-th line about the i-th aspect of the plan.
// Body lines name the topic in full only this often; after that they say
// "it", as a person would.
const maxTopicMentions = 1

func (d *simDoc) line(i, j int) string {
	s := d.aspect(i).lines[j%len(d.aspect(i).lines)]
	short := false
	if strings.Contains(s, "{T") {
		short = d.mentions >= maxTopicMentions
		d.mentions++
	}
	return d.expand(s, i, i+1, i+2, short)
}

// pad returns an unused pad of n tokens (any of n tokens once all are used).
func (d *simDoc) pad(n int) string {
	list := simPads[n]
	start := d.rng.IntN(len(list))
	for k := range list {
		if p := list[(start+k)%len(list)]; !d.usedPads[p] {
			d.usedPads[p] = true
			return p
		}
	}
	return list[start]
}

// newSimText writes the text of one simulated completion: target tokens long,
// then cut to limit tokens (limit <= 0: no cut). planSeed orders the topics
// (the same for every stage of a question); textSeed picks the phrases. p is
// what a strategy's step found in its prompt (nil for the chain's stages).
func newSimText(stage stagework.Stage, topic simTopic, planSeed, textSeed uint64, target, limit int, p *simPrompt) (string, []int32) {
	d := &simDoc{
		rng:   rand.New(rand.NewPCG(textSeed, textSeed^0x9e3779b97f4a7c15)),
		topic: topic,
	}
	d.plan = rand.New(rand.NewPCG(planSeed, planSeed^0x6a09e667f3bcc909)).Perm(len(simAspects))
	d.usedPads = map[string]bool{}
	d.w.limit = target
	if limit > 0 && limit < target {
		d.w.limit = limit
	}
	// Size hint: English runs at about 5.5 bytes per token.
	hint := min(d.w.limit, 1<<20)
	d.w.buf = make([]byte, 0, hint*6)
	d.w.ends = make([]int32, 0, hint)

	var f simFrame
	switch stage {
	case stagework.StageRefiner:
		f = d.refiner()
	case stagework.StageValidator:
		f = d.validator()
	case stagework.StageCurator:
		f = d.curator()
	case stagework.StageProposer, stagework.StageAggregator, stagework.StageMember, stagework.StageChairman:
		f = d.answer(stage, p)
	case stagework.StageRanker:
		f = d.ranker(p)
	case stagework.StageSample:
		f = d.sample(p)
	case stagework.StageJudge:
		f = d.judge(p)
	default:
		f = d.generator()
	}
	d.assemble(f, target)
	return string(d.w.buf), d.w.ends
}

// simFrame is one stage's document plan.
type simFrame struct {
	// head opens the document. Parts with drop > 0 may be left out, highest
	// drop first, when the document is too short to hold them and minBody.
	head []simPart
	// body returns the next body block, endlessly; each starts with its own
	// separator (" " or "\n...").
	body func() string
	// minBody is the body length worth dropping optional head parts for.
	minBody int
	// extra (an example) is kept only if it fits whole.
	extra []string
	// tail closes the document.
	tail []string
	// keepTail: the tail carries what a program reads (a ranking, a final
	// answer, a choice), so when the frame is longer than the document, the
	// head is cut rather than the tail.
	keepTail bool
}

type simPart struct {
	text string
	drop int
}

// assemble writes head, as much body as fits, padding, extra (if it fits) and
// tail: target tokens in all, fewer only if even the smallest frame is
// longer (then the frame is cut at target). Parts are joined before they are
// tokenized so that no token straddles two parts.
func (d *simDoc) assemble(f simFrame, target int) {
	tail := strings.Join(f.tail, "")
	tc := countTokens(tail)
	head, hc := d.fitHead(f.head, target-tc-f.minBody)
	if hc+tc >= target {
		if f.keepTail {
			d.keepTail(head, tail, tc, target)
			return
		}
		d.w.add(head)
		d.w.add(tail)
		return
	}
	budget := target - hc - tc
	extra := strings.Join(f.extra, "")
	if ec := countTokens(extra); ec <= budget {
		budget -= ec
	} else {
		extra = ""
	}
	d.w.add(head)
	// Fill with body blocks; when one does not fit, try a few more (the next
	// sentence may be shorter) before leaving the rest to pads.
	const tries = 4
	for misses := 0; misses < tries && budget > 0 && len(d.w.ends) < d.w.limit; {
		n := d.w.addFit(f.body(), budget)
		if n == 0 {
			break
		}
		if n < 0 {
			misses++
			continue
		}
		budget -= n
	}
	if len(d.w.ends) >= d.w.limit {
		return // cut at the limit
	}
	newline := false
	for budget > 0 {
		if budget == 1 {
			newline = true // one token left: end with a newline
			break
		}
		k := min(budget, len(simPads)-1)
		if budget-k == 1 {
			k--
		}
		d.w.add(d.pad(k))
		budget -= k
	}
	d.w.add(extra)
	d.w.add(tail)
	if newline {
		d.w.add("\n")
	}
}

// keepTail writes a frame too long for target tokens with its tail whole:
// the head cut to the room left, or, if the tail alone is target tokens or
// more, the tail from its first line, cut at target. (At a writer's limit
// below target the text is cut there, as a model cut at max_tokens is.)
func (d *simDoc) keepTail(head, tail string, tc, target int) {
	if tc >= target {
		if t := strings.TrimLeft(tail, "\n"); countTokens(t) >= target {
			tail = t
		}
		lim := d.w.limit
		d.w.limit = min(lim, target)
		d.w.add(tail)
		d.w.limit = lim
		return
	}
	// A head cut after a line break would merge it with the tail's.
	room := target - tc
	hw := tokWriter{limit: room}
	hw.add(head)
	if n := len(hw.ends); n > 0 && hw.buf[len(hw.buf)-1] == '\n' {
		hw.buf, hw.ends = hw.buf[:0], hw.ends[:0]
		hw.limit = room + 1
		hw.add(head)
		tail = strings.TrimLeft(tail, "\n")
	}
	d.w.add(string(hw.buf))
	d.w.add(tail)
}

// fitHead joins the head's parts, leaving out droppable ones (highest drop
// first) while it is longer than room tokens.
func (d *simDoc) fitHead(parts []simPart, room int) (string, int) {
	maxDrop := 0
	for _, p := range parts {
		maxDrop = max(maxDrop, p.drop)
	}
	for level := maxDrop + 1; ; level-- {
		var b strings.Builder
		for _, p := range parts {
			if p.drop == 0 || p.drop < level {
				b.WriteString(p.text)
			}
		}
		s := b.String()
		n := countTokens(s)
		if n <= room || level <= 1 {
			return s, n
		}
	}
}

func (d *simDoc) codeBlock() string {
	return d.fill(codeSnippets[d.topic.lang], 0, 1, 2)
}

// generator: a draft with an intro, numbered points (two sentences each) and a summary.
func (d *simDoc) generator() simFrame {
	f := simFrame{
		head: []simPart{
			{"**Draft.** " + d.fill(d.pick(genIntros), 0, 1, 2), 0},
			{d.pick(genIntros2), 1},
		},
		tail:    []string{"\n\n**In short:** ", d.fill(d.pick(genSummaries), 0, 1, 2)},
		minBody: 60,
	}
	point, sentence := 0, 0
	off := d.rng.IntN(4)
	f.body = func() string {
		var s string
		if sentence == 0 {
			s = "\n\n" + itoa(point+1) + ". **" + d.aspect(point).title + ".** " + d.line(point, off+point/len(d.plan))
		} else {
			s = " " + d.line(point, off+point/len(d.plan)+sentence)
		}
		if sentence++; sentence == 2 {
			point, sentence = point+1, 0
		}
		return s
	}
	return f
}

// refiner: a refined answer with corrections, deeper sections, an example
// (code if the question is about code) and a bottom line.
func (d *simDoc) refiner() simFrame {
	c1 := d.rng.IntN(len(refCorrections))
	c2 := (c1 + 1 + d.rng.IntN(len(refCorrections)-1)) % len(refCorrections)
	f := simFrame{
		head: []simPart{
			{"## Refined answer: " + d.topic.title + "\n\n" + d.fill(d.pick(refOpeners), 0, 1, 2), 0},
			{"\n\n**Corrections to the draft:**\n- " + d.fill(refCorrections[c1], 0, 1, 2), 0},
			{"\n- " + d.fill(refCorrections[c2], 1, 2, 3), 1},
		},
		tail:    []string{"\n\n**Bottom line:** ", d.fill(d.pick(genSummaries), 0, 1, 2)},
		minBody: 40,
	}
	if d.topic.code {
		f.extra = []string{"\n\n**Example.** ", d.fill(d.pick(refCodeIntros), 0, 1, 2), "\n\n", d.codeBlock(), "\n\n", d.pick(refCodeOutros)}
	} else {
		f.extra = []string{"\n\n**Example.** ", d.fill(d.pick(refExamples), 0, 1, 2)}
	}
	section, sentence := 0, 0
	off := d.rng.IntN(4)
	f.body = func() string {
		var s string
		switch sentence {
		case 0:
			s = "\n\n### " + d.aspect(section).title + "\n\n" + d.line(section, off+section/len(d.plan))
		case 1:
			s = " " + d.fill(refDepth[(off+section)%len(refDepth)], section, section+1, section+2)
		default:
			s = " " + d.line(section, off+section/len(d.plan)+1)
		}
		if sentence++; sentence == 3 {
			section, sentence = section+1, 0
		}
		return s
	}
	return f
}

// validator: a checklist, numbered issues and a verdict.
func (d *simDoc) validator() simFrame {
	f := simFrame{
		head: []simPart{
			{"## Validation report", 0},
			{"\n\n" + d.fill(d.pick(validScopes), 0, 1, 2), 5},
			{"\n\n- **Facts:** " + d.fill(d.pick(validFacts), 0, 1, 2), 1},
			{"\n- **Logic:** " + d.fill(d.pick(validLogic), 0, 1, 2), 3},
		},
		tail:    []string{"\n\n**Verdict:** ", d.pick(validVerdicts)},
		minBody: 60,
	}
	if d.topic.code {
		f.head = append(f.head, simPart{"\n- **Code:** " + d.fill(d.pick(validCode), 0, 1, 2), 2})
	}
	f.head = append(f.head,
		simPart{"\n- **Completeness:** " + d.fill(d.pick(validCompleteness), 0, 1, 2), 4},
		simPart{"\n\n**Issues found:**", 0})
	issue := 0
	off := d.rng.IntN(len(validIssues))
	f.body = func() string {
		var s string
		if issue == 0 && d.topic.code {
			s = d.fill(validCodeIssue, 0, 1, 2)
		} else {
			s = d.fill(validIssues[(off+issue)%len(validIssues)], issue, issue+1, issue+2)
		}
		issue++
		return "\n" + itoa(issue) + ". " + s
	}
	return f
}

// curator: the final answer: heading, summary, key points, example, conclusion.
func (d *simDoc) curator() simFrame {
	f := simFrame{
		head: []simPart{
			{"# " + d.topic.title + "\n\n" + d.fill(d.pick(curSummaries), 0, 1, 2), 0},
			{"\n\n## Key points", 0},
		},
		tail:    []string{"\n\n## Conclusion\n\n", d.fill(d.pick(curConclusions), 0, 1, 2)},
		minBody: 40,
	}
	if d.topic.code {
		f.extra = []string{"\n\n## Example\n\n", d.fill(d.pick(curCodeIntros), 0, 1, 2), "\n\n", d.codeBlock()}
	}
	point, sentence := 0, 0
	off := d.rng.IntN(4)
	f.body = func() string {
		var s string
		if sentence == 0 {
			s = "\n\n- **" + d.aspect(point).title + ".** " + d.line(point, off+point/len(d.plan)+2)
		} else {
			s = " " + d.line(point, off+point/len(d.plan)+3)
		}
		if sentence++; sentence == 2 {
			point, sentence = point+1, 0
		}
		return s
	}
	return f
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	return string(b[i:])
}

// --- the strategies' roles ---
//
// Their texts are shaped like the chain's, from the same machinery; what a
// program reads from them (a ranker's FINAL RANKING, a sample's final
// answer, a judge's choice) is in the frame's tail, which keepTail keeps
// whole when the text is written to fit max_tokens.

var (
	propIntros = []string{
		"{Title} is easiest to get right by separating what it is, how it behaves in practice, and where it tends to fail.",
		"A direct answer on {T}: the essentials first, then the practical details and the caveats.",
		"{Title} comes down to a handful of decisions; the points below take them in order of importance.",
	}
	propSynths = []string{
		"This answer combines the {N} responses of the previous layer: it keeps what they agree on, settles where they differ, and corrects what did not hold up.",
		"Built from the previous layer's {N} responses: their common ground on {a} is kept, their disagreements are resolved on the merits, and a gap they all left is filled.",
		"The {N} earlier responses agree on the fundamentals; this version keeps those, drops a claim about {a} that did not survive checking, and adds what was missing.",
	}
	rankIntros = []string{
		"Each response is judged on accuracy, completeness and clarity.",
		"The responses, one by one, judged on correctness first and then on depth and clarity.",
		"Evaluation of each response against the question as asked.",
	}
	rankBest = []string{
		"The strongest answer: accurate throughout, and its treatment of {a} is precise and well supported.",
		"Complete and correct; it explains {a} better than the others and grounds it in a concrete example.",
		"Clear, correct and well organised; the only response that also covers {b} properly.",
	}
	rankMiddle = []string{
		"Solid on {a}, but thinner on {b} than the best answer.",
		"Mostly accurate; the part on {a} is useful, though it stays general where the question needs specifics.",
		"Correct as far as it goes, but it spends too long on {a} and too little on {b}.",
	}
	rankWorst = []string{
		"The weakest: vague on {a}, and one of its claims about {b} is not supported.",
		"It covers the basics, but misses {a} entirely and overstates what {b} can do.",
		"Readable, but shallow: it restates the question's terms without explaining {a}.",
	}
	rankCompares = []string{
		"Response {X} handles {a} more precisely than Response {Y}.",
		"Where Response {X} gives a concrete example, Response {Y} stays abstract.",
		"Response {Y} makes a fair point on {a}, but Response {X} makes it better and with fewer caveats missing.",
		"On {a}, Response {X} and Response {Y} agree; Response {X} explains why.",
	}
	rankSingle = []string{
		"With a single response there is nothing to compare it against; it is judged on its own merits.",
		"Its treatment of {a} is the part most worth keeping.",
	}
	sampleOpeners = []string{
		"Let me work through {T} step by step before committing to an answer.",
		"Step by step first, then one answer.",
		"Reasoning briefly through the question, then committing to one answer.",
	}
	sampleConcludes = []string{
		"Weighing these steps, the answer is: {X}.",
		"Putting the steps together points to one answer: {X}.",
		"Taken together, the steps settle on {X}.",
	}
	judgeRemarks = []string{
		"Response {X} states its answer plainly, and its steps on {a} support it.",
		"The agreeing responses reach their answer by similar steps, which makes the agreement more convincing.",
		"Where a response differs, its reasoning on {a} rests on an assumption the others do not make.",
		"Response {X}'s reasoning is the clearest of those that share the majority answer.",
	}
)

// answer: a complete answer to the question, in the curator's shape, by a
// moa proposer (one of the first layer, or one that combines the previous
// layer's responses), the aggregator, a council member or the chairman.
func (d *simDoc) answer(stage stagework.Stage, p *simPrompt) simFrame {
	intros, key, end := curSummaries, "Key points", "Conclusion"
	switch stage {
	case stagework.StageProposer:
		intros, key, end = propIntros, "Main points", "Summary"
	case stagework.StageMember:
		end = "Bottom line"
	case stagework.StageChairman:
		key = "What matters most"
	}
	f := simFrame{
		head: []simPart{{"# " + d.topic.title + "\n\n" + d.fill(d.pick(intros), 0, 1, 2), 0}},
		tail: []string{"\n\n## " + end + "\n\n", d.fill(d.pick(curConclusions), 0, 1, 2)},
	}
	if stage == stagework.StageProposer && p != nil && len(p.responses) > 0 {
		synth := strings.ReplaceAll(d.pick(propSynths), "{N}", itoa(len(p.responses)))
		f.head = append(f.head, simPart{"\n\n*" + d.fill(synth, 1, 2, 3) + "*", 1})
	}
	f.minBody = 40
	if d.topic.code {
		f.extra = []string{"\n\n## Example\n\n", d.fill(d.pick(curCodeIntros), 0, 1, 2), "\n\n", d.codeBlock()}
	}
	// A point is one block (the first opens the key points' section), so
	// a point that does not fit leaves no half; it is tried again with one
	// sentence, then the next point is.
	point, headed, short, last := 0, false, false, -1
	off := d.rng.IntN(4)
	f.body = func() string {
		switch {
		case last < 0:
		case len(d.w.ends) > last: // the last point was taken
			headed, short = true, false
			point++
		case !short:
			short = true
		default:
			short = false
			point++
		}
		last = len(d.w.ends)
		s := ""
		if !headed {
			s = "\n\n## " + key
		}
		j := off + point/len(d.plan)
		s += "\n\n- **" + d.aspect(point).title + ".** " + d.line(point, j+1)
		if !short {
			s += " " + d.line(point, j+2)
		}
		return s
	}
	return f
}

// paragraph returns a body function writing sentences as one paragraph: the
// first that the document takes opens it after a blank line, the others
// follow it. It tells from the writer whether its last sentence was taken.
func (d *simDoc) paragraph(next func() string) func() string {
	started, last := false, -1
	return func() string {
		if last >= 0 && len(d.w.ends) > last {
			started = true
		}
		last = len(d.w.ends)
		if started {
			return " " + next()
		}
		return "\n\n" + next()
	}
}

// ranker: an evaluation of each response its prompt shows, comparisons,
// and the "FINAL RANKING:" list of them all, in an order drawn from the seed.
func (d *simDoc) ranker(p *simPrompt) simFrame {
	var labels []string
	if p != nil {
		for _, r := range p.responses {
			labels = append(labels, r.label)
		}
	}
	order := d.rng.Perm(len(labels)) // order[k]: the index of the k-th best
	place := make([]int, len(labels))
	for k, i := range order {
		place[i] = k
	}
	f := simFrame{head: []simPart{{d.pick(rankIntros), 0}}, minBody: 20, keepTail: true}
	if len(labels) == 0 {
		f.head[0].text = "No labelled responses were found to evaluate."
	}
	for i, l := range labels {
		bank := rankMiddle
		switch {
		case place[i] == 0:
			bank = rankBest
		case place[i] == len(labels)-1:
			bank = rankWorst
		}
		f.head = append(f.head, simPart{"\n\n**Response " + l + ".** " + d.fill(d.pick(bank), i, i+1, i+2), 1})
	}
	var tail strings.Builder
	tail.WriteString("\n\nFINAL RANKING:")
	for k, i := range order {
		tail.WriteString("\n" + itoa(k+1) + ". Response " + labels[i])
	}
	f.tail = []string{tail.String()}
	pair, off := 0, d.rng.IntN(len(rankCompares))
	f.body = d.paragraph(func() string {
		pair++
		if len(labels) < 2 {
			return d.fill(rankSingle[pair%len(rankSingle)], pair, pair+1, pair+2)
		}
		k := (pair - 1) % (len(labels) - 1) // compare the k-th best with the next
		s := d.fill(rankCompares[(off+pair)%len(rankCompares)], pair, pair+1, pair+2)
		s = strings.ReplaceAll(s, "{X}", labels[order[k]])
		return strings.ReplaceAll(s, "{Y}", labels[order[k+1]])
	})
	return f
}

// sampleAnswers are the short answers a question's samples choose from:
// the same for every sample of a question (they depend on the question
// alone), the first the most likely. A question offering options ("Raft
// or Paxos?") gets those; one with a number in it, numbers; others, short
// pieces of advice. lower says the answers are common words, not names,
// so a sentence may start them in lower case.
func sampleAnswers(query string) (cands [3]string, lower bool) {
	h := hashSeed(0, "", 0, query)
	generic := func(skip int) []string {
		n := len(sampleGeneric)
		i := int(h % uint64(n))
		var out []string
		for k := 0; len(out) < 3; k++ {
			if c := sampleGeneric[(i+k*7)%n]; k >= skip {
				out = append(out, c)
			}
		}
		return out
	}
	if opts := queryOptions(query); len(opts) >= 2 {
		first := int(h % uint64(len(opts)))
		var out []string
		for k := range opts {
			out = append(out, opts[(first+k)%len(opts)])
		}
		out = append(out, generic(0)...)
		return [3]string{out[0], out[1], out[2]}, false
	}
	if strings.ContainsAny(query, "0123456789") {
		base := 2 + int(h%998)
		return [3]string{itoa(base), itoa(base + 1 + int((h>>16)%9)), itoa(2*base + 1 + int((h>>32)%9))}, false
	}
	g := generic(0)
	return [3]string{g[0], g[1], g[2]}, true
}

// sampleGeneric are short answers that fit most practical questions; the
// stride sampleAnswers walks them with (7) is prime to their number.
var sampleGeneric = []string{
	"start simple and measure", "it depends on scale", "keep the default", "favour correctness over speed",
	"use the standard approach", "test it on real data first", "avoid it unless you need it", "yes, with care",
	"no, not in most cases", "make the trade-off explicit",
}

// optionSkip are words next to "or" that are no option ("now or never" is).
var optionSkip = setOf("a", "an", "the", "it", "this", "that", "these", "those", "i", "you", "we", "me", "not", "to", "be",
	"do", "is", "are", "either", "both", "more", "less", "so", "and", "than")

// queryOptions finds the alternatives a question offers: "Should I use Raft
// or Paxos?" → Raft, Paxos; "Go, Rust or Python?" → Go, Rust, Python.
func queryOptions(query string) []string {
	words := strings.Fields(topicSentence(query))
	clean := func(w string) string {
		return strings.TrimFunc(w, func(r rune) bool { return !isWordRune(r) && r != '+' && r != '#' })
	}
	for i := 1; i+1 < len(words); i++ {
		if !strings.EqualFold(words[i], "or") {
			continue
		}
		opts := []string{clean(words[i-1]), clean(words[i+1])}
		for j := i - 2; j >= 0 && strings.HasSuffix(words[j], ","); j-- {
			opts = append([]string{clean(words[j])}, opts...)
		}
		var out []string
		seen := map[string]bool{}
		for _, o := range opts {
			if o != "" && !seen[strings.ToLower(o)] && !optionSkip[strings.ToLower(o)] {
				seen[strings.ToLower(o)] = true
				out = append(out, o)
			}
		}
		if len(out) >= 2 {
			return out
		}
	}
	return nil
}

// sample: brief step-by-step reasoning, then "Final answer: X", X the
// question's likeliest answer with probability 0.6, each other candidate
// with 0.2.
func (d *simDoc) sample(p *simPrompt) simFrame {
	query := ""
	if p != nil {
		query = p.query
	}
	cands, lower := sampleAnswers(query)
	answer := cands[0]
	switch u := d.rng.Float64(); {
	case u >= 0.8:
		answer = cands[2]
	case u >= 0.6:
		answer = cands[1]
	}
	said, line := answer, answer
	if lower {
		r, size := utf8.DecodeRuneInString(answer)
		line = string(unicode.ToUpper(r)) + answer[size:]
	}
	f := simFrame{
		head:     []simPart{{d.fill(d.pick(sampleOpeners), 0, 1, 2), 0}},
		extra:    []string{"\n\n", strings.ReplaceAll(d.pick(sampleConcludes), "{X}", said)},
		tail:     []string{"\n\nFinal answer: ", line},
		minBody:  20,
		keepTail: true,
	}
	step := 0
	off := d.rng.IntN(4)
	f.body = func() string {
		s := "\n\n**Step " + itoa(step+1) + ".** " + d.line(step, off+step/len(d.plan))
		step++
		return s
	}
	return f
}

// judge: the final answer of each response its prompt shows, which agree,
// and "Most consistent: Response X", X the first response giving the
// majority's answer (the first response when none gives one).
func (d *simDoc) judge(p *simPrompt) simFrame {
	var rs []simResponse
	if p != nil {
		rs = p.responses
	}
	texts := make([]string, len(rs))
	for i, r := range rs {
		texts[i] = r.text
	}
	pick, votes, ok := stagework.Majority(texts)
	choice := "A"
	if len(rs) > 0 {
		choice = rs[pick].label
	}
	f := simFrame{
		head:     []simPart{{"Comparing the final answers of the " + itoa(len(rs)) + " responses:", 0}},
		tail:     []string{"\n\nMost consistent: Response ", choice},
		minBody:  20,
		keepTail: true,
	}
	if len(rs) == 0 {
		f.head[0].text = "No labelled responses were found to compare."
	}
	var agree []string
	majority := ""
	if ok {
		majority, _ = stagework.FinalAnswer(texts[pick])
	}
	for _, r := range rs {
		a, has := stagework.FinalAnswer(r.text)
		line := "no clear final answer"
		if has {
			line = "“" + a + "”"
			if a == majority {
				agree = append(agree, r.label)
			}
		}
		f.head = append(f.head, simPart{"\n- Response " + r.label + ": " + line + ".", 1})
	}
	switch {
	case ok && votes >= 2:
		f.head = append(f.head, simPart{"\n\n" + joinLabels(agree) + " agree (" + itoa(votes) + " of " + itoa(len(rs)) + "); that is the consensus.", 2})
	case ok && len(rs) > 1:
		f.head = append(f.head, simPart{"\n\nNo two responses agree, so the first answer stands unless its reasoning fails.", 2})
	}
	k, off := 0, d.rng.IntN(len(judgeRemarks))
	f.body = d.paragraph(func() string {
		s := d.fill(judgeRemarks[(off+k)%len(judgeRemarks)], k, k+1, k+2)
		k++
		return strings.ReplaceAll(s, "{X}", choice)
	})
	return f
}

// joinLabels lists labels as "Responses A, C and D" ("Response A" for one).
func joinLabels(labels []string) string {
	switch len(labels) {
	case 0:
		return "No responses"
	case 1:
		return "Response " + labels[0]
	}
	return "Responses " + strings.Join(labels[:len(labels)-1], ", ") + " and " + labels[len(labels)-1]
}
