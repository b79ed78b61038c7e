package stagework

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrUnparsable is wrapped by the parsers of model output below when the
// text does not say what they look for.
var ErrUnparsable = errors.New("stagework: output cannot be parsed")

// maxLabels is how many anonymous labels there are: A to Z.
const maxLabels = 26

// Label is the anonymous label of the i-th answer (0-based) in a ranker's
// or judge's prompt: "A", "B", … "P" (MaxParallel answers at most). The
// labels run on to "Z"; outside [0, 26) Label returns "".
func Label(i int) string {
	if i < 0 || i >= maxLabels {
		return ""
	}
	return string(rune('A' + i))
}

// labelIndex is the index of label letter c (Label's inverse), or -1.
func labelIndex(c byte) int {
	if c >= 'A' && c <= 'Z' {
		return int(c - 'A')
	}
	return -1
}

// maskMarkdown returns text with Markdown emphasis and code marks ('*', '_',
// '`') replaced by spaces: offsets stay those of text, and "**Response
// C**" reads "  Response C  " to the patterns below.
func maskMarkdown(text string) string {
	if !strings.ContainsAny(text, "*_`") {
		return text
	}
	b := []byte(text)
	for i, c := range b {
		if c == '*' || c == '_' || c == '`' {
			b[i] = ' '
		}
	}
	return string(b)
}

var (
	// rankingHeaderRE is the "FINAL RANKING:" header, in any case, after
	// maskMarkdown: a colon ends it, or the line does ("## Final ranking").
	// A parenthesis may come between ("Final ranking (best first):").
	rankingHeaderRE = regexp.MustCompile(`(?im)\bfinal[ \t]+rankings?\b(?:[ \t]*\([^)\n]*\))?[ \t]*(?::|$)`)
	// responseRE is a mention of a labelled response: "Response C",
	// "response: C", "Response (C)". The label is one capital letter.
	responseRE = regexp.MustCompile(`(?i:\bresponse)(?:[ \t]+|[ \t]*[-:#][ \t]*)[\[(]?([A-Z])\b`)
	// choiceRE is a judge's "Most consistent:" line, after maskMarkdown.
	choiceRE = regexp.MustCompile(`(?i)\bmost[ \t]+consistent\b(?:[ \t]+(?:response|answer|sample))?(?:[ \t]+is\b)?[ \t]*(:?)`)
	// finalAnswerRE is a sample's "Final answer:" (or "The final answer is
	// …"), after maskMarkdown.
	finalAnswerRE = regexp.MustCompile(`(?i)\bfinal[ \t]+answer\b[ \t]*(?:[:=：]|is\b[ \t]*:?)`)
)

// ParseRanking reads a ranker's output: the "FINAL RANKING:" list of the n
// labelled responses ("1. Response C"), best first, with fallbacks for
// models that format it loosely. It returns the responses' indices (0-based)
// best first. An error wraps ErrUnparsable.
//
// The header may be in any case and in Markdown ("**Final Ranking:**",
// "## Final ranking"); the list's items may be numbered ("1." or "1)"),
// bulleted or plain lines, and name a response as "Response C" or just
// "C". When several headers occur, the last one with a usable list wins.
// Without a header, the responses are ranked in the order the text first
// mentions them ("Response X"). A label named twice counts where it first
// appears. A ranking must name at least n-1 distinct responses (the one
// left is appended last) and none beyond the n-th; else it is an error.
func ParseRanking(text string, n int) ([]int, error) {
	if n < 1 || n > maxLabels {
		return nil, fmt.Errorf("%w: cannot rank %d responses (1 to %d)", ErrUnparsable, n, maxLabels)
	}
	masked := maskMarkdown(text)
	headers := rankingHeaderRE.FindAllStringIndex(masked, -1)
	if len(headers) == 0 {
		r, err := acceptRanking(mentions(masked), n)
		if err != nil {
			return nil, fmt.Errorf("%w: no FINAL RANKING header, and the text %s", ErrUnparsable, err)
		}
		return r, nil
	}
	var firstErr error
	for k := len(headers) - 1; k >= 0; k-- {
		end := len(masked)
		if k+1 < len(headers) {
			end = headers[k+1][0]
		}
		section := masked[headers[k][1]:end]
		for _, labels := range [][]int{listItems(section), mentions(section), letterLists(section)} {
			if len(labels) == 0 {
				continue
			}
			r, err := acceptRanking(labels, n)
			if err == nil {
				return r, nil
			}
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	if firstErr == nil { // no section names any response
		if r, err := acceptRanking(nil, n); err == nil {
			return r, nil // one response: there is nothing to rank
		}
		firstErr = errors.New("names no response")
	}
	return nil, fmt.Errorf("%w: the FINAL RANKING %s", ErrUnparsable, firstErr)
}

// acceptRanking applies ParseRanking's rule to the labels found, in order:
// duplicates dropped, at least n-1 distinct ones and none beyond n.
func acceptRanking(labels []int, n int) ([]int, error) {
	seen := make([]bool, maxLabels)
	out := make([]int, 0, n)
	for _, l := range labels {
		if l >= n {
			return nil, fmt.Errorf("names Response %s, but there are only %d responses", Label(l), n)
		}
		if !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	if len(out) < n-1 {
		return nil, fmt.Errorf("names %d of the %d responses", len(out), n)
	}
	for i := 0; i < n && len(out) < n; i++ {
		if !seen[i] {
			out = append(out, i)
		}
	}
	return out, nil
}

// mentions lists the labels of every "Response X" in text, in order.
func mentions(text string) []int {
	var out []int
	for _, m := range responseRE.FindAllStringSubmatchIndex(text, -1) {
		out = append(out, labelIndex(text[m[2]]))
	}
	return out
}

// listItems reads a ranking's list: one label per item line. A numbered or
// bulleted line names the first response it mentions, or a bare label at
// its start ("1. C"); a plain line counts when it starts with one
// ("Response C", "C: the best").
func listItems(section string) []int {
	var out []int
	for line := range strings.Lines(section) {
		body, marked := itemBody(line)
		if body == "" {
			continue
		}
		if m := responseRE.FindStringSubmatchIndex(body); m != nil && (marked || m[0] == 0) {
			out = append(out, labelIndex(body[m[2]]))
			continue
		}
		if l, ok := bareLabel(body); ok {
			out = append(out, l)
		}
	}
	return out
}

// itemBody strips a list item's marker ("1.", "2)", "(3)", "-", "•") and
// Markdown quote or heading marks from line; marked says whether it had a
// number or bullet.
func itemBody(line string) (body string, marked bool) {
	s := strings.TrimSpace(line)
	s = strings.TrimLeft(s, "># \t")
	digits := 0
	for digits < len(s) && digits < 4 && s[digits] >= '0' && s[digits] <= '9' {
		digits++
	}
	switch {
	case digits > 0 && digits < 4:
		rest := strings.TrimLeft(s[digits:], " \t")
		if rest != "" && strings.IndexByte(".):]-", rest[0]) >= 0 {
			return strings.TrimSpace(rest[1:]), true
		}
	case strings.HasPrefix(s, "(") && len(s) > 2:
		if j := strings.IndexByte(s, ')'); j > 1 && j <= 4 && allDigits(s[1:j]) {
			return strings.TrimSpace(s[j+1:]), true
		}
	default:
		for _, b := range []string{"-", "+", "•", "·", "–", "—"} {
			if rest, ok := strings.CutPrefix(s, b); ok && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
				return strings.TrimSpace(rest), true
			}
		}
	}
	return s, false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// bareLabel reads a label standing alone at the start of an item: "C",
// "C.", "(C)", "C: clear", "C - best". A capital letter that starts a word
// or a sentence ("A strong answer") is not a label.
func bareLabel(body string) (int, bool) {
	s := strings.TrimLeft(body, "([ \t")
	if s == "" || labelIndex(s[0]) < 0 {
		return 0, false
	}
	rest := strings.TrimLeft(s[1:], " \t")
	if rest == "" {
		return labelIndex(s[0]), true
	}
	if strings.IndexByte(".:)]-,;|(", rest[0]) >= 0 || strings.HasPrefix(rest, "–") || strings.HasPrefix(rest, "—") {
		if len(s) > 1 && isWordByte(s[1]) {
			return 0, false // "Cats."
		}
		return labelIndex(s[0]), true
	}
	return 0, false
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= utf8.RuneSelf
}

// letterLists reads rankings written as letters on one line: "C > A > B",
// "C, A, B", "1. C 2. A 3. B". Only lines made of nothing but single
// capital letters, numbers and separators count.
func letterLists(section string) []int {
	var out []int
	for line := range strings.Lines(section) {
		fields := strings.FieldsFunc(line, func(r rune) bool {
			return unicode.IsSpace(r) || strings.ContainsRune(">,;/|→.)(-–—:", r)
		})
		var labels []int
		ok := len(fields) > 0
		for _, f := range fields {
			switch {
			case len(f) == 1 && labelIndex(f[0]) >= 0:
				labels = append(labels, labelIndex(f[0]))
			case allDigits(f), strings.EqualFold(f, "response"):
			default:
				ok = false
			}
		}
		if ok {
			out = append(out, labels...)
		}
	}
	return out
}

// AggregateRanking averages rankings (each as ParseRanking returns it) of
// the answers ids into one ranking, best first: lowest average rank, ties
// by more votes, then by order in ids. An answer no ranking placed comes
// last with AverageRank 0 and Votes 0. labels[i] is ids[i]'s label.
//
// An index outside ids, or repeated within one ranking, is skipped there.
// When labels is shorter than ids, the missing labels are Label(i).
func AggregateRanking(ids, labels []string, rankings [][]int) []RankEntry {
	sums := make([]int, len(ids))
	votes := make([]int, len(ids))
	for _, r := range rankings {
		placed := make(map[int]bool, len(r))
		for pos, i := range r {
			if i < 0 || i >= len(ids) || placed[i] {
				continue
			}
			placed[i] = true
			sums[i] += pos + 1
			votes[i]++
		}
	}
	order := make([]int, len(ids))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool {
		a, b := order[x], order[y]
		if (votes[a] > 0) != (votes[b] > 0) {
			return votes[a] > 0
		}
		if votes[a] == 0 {
			return false // both unplaced: keep ids' order
		}
		// sums[a]/votes[a] < sums[b]/votes[b], exactly.
		if l, r := sums[a]*votes[b], sums[b]*votes[a]; l != r {
			return l < r
		}
		return votes[a] > votes[b]
	})
	out := make([]RankEntry, len(ids))
	for k, i := range order {
		e := RankEntry{ID: ids[i], Label: Label(i), Votes: votes[i]}
		if i < len(labels) {
			e.Label = labels[i]
		}
		if votes[i] > 0 {
			e.AverageRank = float64(sums[i]) / float64(votes[i])
		}
		out[k] = e
	}
	return out
}

// FinalAnswer extracts a sample's short final answer for a majority vote:
// the text after the last "Final answer:" (any case, Markdown emphasis
// allowed), else the last non-empty line; normalised (lower case, spaces
// collapsed, surrounding punctuation and Markdown removed). ok is false
// for text with no answer in it.
//
// "The final answer is 42" counts as "Final answer: 42". The answer is the
// rest of the marker's line, or the next line with text when that is
// empty; \boxed{…} is unwrapped, and so are brackets or quotes around the
// whole answer ("(B)" → "b").
func FinalAnswer(text string) (answer string, ok bool) {
	masked := maskMarkdown(text)
	marks := finalAnswerRE.FindAllStringIndex(masked, -1)
	if len(marks) > 0 {
		for k := len(marks) - 1; k >= 0; k-- {
			end := len(text)
			if k+1 < len(marks) {
				end = marks[k+1][0]
			}
			rest := text[marks[k][1]:end]
			line, after, _ := strings.Cut(rest, "\n")
			if a := normalizeAnswer(line); a != "" {
				return a, true
			}
			for l := range strings.Lines(after) {
				if a := normalizeAnswer(l); a != "" {
					return a, true
				}
			}
		}
		return "", false
	}
	lines := strings.Split(text, "\n")
	for k := len(lines) - 1; k >= 0; k-- {
		if a := normalizeAnswer(lines[k]); a != "" {
			return a, true
		}
	}
	return "", false
}

// normalizeAnswer puts an answer in the form samples' answers are compared
// in: lower case, Markdown marks dropped, \boxed{} unwrapped, spaces
// collapsed, surrounding punctuation and brackets trimmed. Only the first
// maxAnswerBytes of s count (after lower-casing, which may lengthen it): a
// short answer is short, and the bound keeps the trimming cheap on any
// input. Every step after the bound only removes text, so a normalised
// answer normalises to itself.
func normalizeAnswer(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 4*maxAnswerBytes {
		s = s[:4*maxAnswerBytes]
	}
	s = strings.ToLower(strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) > maxAnswerBytes {
		cut := maxAnswerBytes
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	s = strings.NewReplacer("**", "", "__", "", "*", "", "`", "").Replace(s)
	if i := strings.LastIndex(s, `\boxed{`); i >= 0 {
		s = s[i+len(`\boxed{`):]
		depth := 1
		for j := 0; j < len(s); j++ {
			switch s[j] {
			case '{':
				depth++
			case '}':
				depth--
			}
			if depth == 0 {
				s = s[:j]
				break
			}
		}
	}
	s = strings.Join(strings.Fields(s), " ")
	for {
		t := trimAnswer(s)
		if t == s {
			return s
		}
		s = t
	}
}

// maxAnswerBytes bounds the part of a line normalizeAnswer reads.
const maxAnswerBytes = 1024

// closers maps an opening bracket or quote to its closing one.
var closers = map[rune]rune{'(': ')', '[': ']', '{': '}', '"': '"', '\'': '\'', '“': '”', '‘': '’', '«': '»'}

// trimAnswer removes one layer of surrounding punctuation from s: a pair of
// brackets or quotes around all of it, else any punctuation at either end
// that is not part of the answer ("-5", "f(x)", "50%").
func trimAnswer(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	first, fsize := utf8.DecodeRuneInString(s)
	last, lsize := utf8.DecodeLastRuneInString(s)
	if c, ok := closers[first]; ok && last == c && len(s) > fsize && encloses(s[fsize:len(s)-lsize], first, c) {
		return s[fsize : len(s)-lsize]
	}
	if trimmable(first) {
		keep := false
		switch {
		case strings.ContainsRune("-+.−", first):
			r, _ := utf8.DecodeRuneInString(s[fsize:])
			keep = unicode.IsDigit(r) // "-5", ".5"
		case closers[first] != 0 && closers[first] != first:
			keep = strings.ContainsRune(s[fsize:], closers[first]) // "(a) and (b)"
		case first == '\\':
			keep = true // "\pi"
		}
		if !keep {
			return s[fsize:]
		}
	}
	if trimmable(last) {
		keep := false
		for o, c := range closers {
			if c == last && o != c && strings.ContainsRune(s[:len(s)-lsize], o) {
				keep = true // "f(x)"
			}
		}
		if last == '%' {
			keep = true
		}
		if !keep {
			return s[:len(s)-lsize]
		}
	}
	return s
}

// encloses reports whether brackets o…c put around inner enclose all of it:
// inner's own brackets balance ("(a) and (b)" is not "(…)"), and a quote
// does not occur inside a pair of the same quotes.
func encloses(inner string, o, c rune) bool {
	if o == c {
		return !strings.ContainsRune(inner, o)
	}
	depth := 0
	for _, r := range inner {
		switch r {
		case o:
			depth++
		case c:
			if depth--; depth < 0 {
				return false
			}
		}
	}
	return depth == 0
}

// trimmable reports whether r is punctuation or a Markdown/LaTeX mark that
// may surround an answer.
func trimmable(r rune) bool {
	return unicode.IsPunct(r) || strings.ContainsRune("$`*~^|<>=#", r)
}

// Majority picks the majority answer among samples' outputs: the index of
// the first sample whose FinalAnswer is the most common one, and how many
// samples gave it. ok is false when no sample has an answer.
//
// Of answers given equally often, the one a sample gave first wins.
func Majority(outputs []string) (winner, votes int, ok bool) {
	counts := make(map[string]int, len(outputs))
	first := make(map[string]int, len(outputs))
	var order []string
	for i, o := range outputs {
		a, has := FinalAnswer(o)
		if !has {
			continue
		}
		if _, seen := first[a]; !seen {
			first[a] = i
			order = append(order, a)
		}
		counts[a]++
	}
	if len(order) == 0 {
		return 0, 0, false
	}
	best := order[0]
	for _, a := range order[1:] {
		if counts[a] > counts[best] {
			best = a
		}
	}
	return first[best], counts[best], true
}

// ParseChoice reads a judge's output: which of the n labelled responses it
// picked as the most consistent ("Most consistent: Response B", else the
// last "Response X" it names). It returns the 0-based index; an error wraps
// ErrUnparsable.
//
// The last "Most consistent" that names a response wins: on its line
// ("Most consistent: Response B", "The most consistent is C") or, after a
// colon that ends the line, on the next line with text. A label beyond the
// n-th is an error.
func ParseChoice(text string, n int) (int, error) {
	if n < 1 || n > maxLabels {
		return 0, fmt.Errorf("%w: cannot choose among %d responses (1 to %d)", ErrUnparsable, n, maxLabels)
	}
	masked := maskMarkdown(text)
	check := func(l int, where string) (int, error) {
		if l >= n {
			return 0, fmt.Errorf("%w: the judge picked Response %s %s, but there are only %d responses", ErrUnparsable, Label(l), where, n)
		}
		return l, nil
	}
	marks := choiceRE.FindAllStringSubmatchIndex(masked, -1)
	for k := len(marks) - 1; k >= 0; k-- {
		m := marks[k]
		line, after, _ := strings.Cut(masked[m[1]:], "\n")
		if l, ok := choiceIn(line); ok {
			return check(l, "in its Most consistent line")
		}
		if m[3] > m[2] && strings.TrimSpace(line) == "" { // "Most consistent:" ends the line
			for next := range strings.Lines(after) {
				if strings.TrimSpace(next) == "" {
					continue
				}
				if l, ok := choiceIn(next); ok {
					return check(l, "in its Most consistent line")
				}
				break
			}
		}
	}
	ms := mentions(masked)
	if len(ms) == 0 {
		return 0, fmt.Errorf("%w: the judge's output names no response", ErrUnparsable)
	}
	return check(ms[len(ms)-1], "last")
}

// choiceIn reads the label of a choice line: its first "Response X", else
// a bare label at its start.
func choiceIn(line string) (int, bool) {
	if m := responseRE.FindStringSubmatchIndex(line); m != nil {
		return labelIndex(line[m[2]]), true
	}
	s := strings.TrimLeft(line, " \t:=-–—")
	return bareLabel(s)
}
