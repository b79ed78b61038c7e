package stagework

import "errors"

// ErrUnparsable is wrapped by the parsers of model output below when the
// text does not say what they look for.
var ErrUnparsable = errors.New("stagework: output cannot be parsed")

// Label is the anonymous label of the i-th answer (0-based) in a ranker's
// or judge's prompt: "A", "B", … "P" (MaxParallel answers at most).
func Label(i int) string { return string(rune('A' + i)) }

// ParseRanking reads a ranker's output: the "FINAL RANKING:" list of the n
// labelled responses ("1. Response C"), best first, with fallbacks for
// models that format it loosely. It returns the responses' indices (0-based)
// best first. An error wraps ErrUnparsable.
func ParseRanking(text string, n int) ([]int, error) { panic("TODO") }

// AggregateRanking averages rankings (each as ParseRanking returns it) of
// the answers ids into one ranking, best first: lowest average rank, ties
// by more votes, then by order in ids. An answer no ranking placed comes
// last with AverageRank 0 and Votes 0. labels[i] is ids[i]'s label.
func AggregateRanking(ids, labels []string, rankings [][]int) []RankEntry { panic("TODO") }

// FinalAnswer extracts a sample's short final answer for a majority vote:
// the text after the last "Final answer:" (any case, Markdown emphasis
// allowed), else the last non-empty line; normalised (lower case, spaces
// collapsed, surrounding punctuation and Markdown removed). ok is false
// for text with no answer in it.
func FinalAnswer(text string) (answer string, ok bool) { panic("TODO") }

// Majority picks the majority answer among samples' outputs: the index of
// the first sample whose FinalAnswer is the most common one, and how many
// samples gave it. ok is false when no sample has an answer.
func Majority(outputs []string) (winner, votes int, ok bool) { panic("TODO") }

// ParseChoice reads a judge's output: which of the n labelled responses it
// picked as the most consistent ("Most consistent: Response B", else the
// last "Response X" it names). It returns the 0-based index; an error wraps
// ErrUnparsable.
func ParseChoice(text string, n int) (int, error) { panic("TODO") }
