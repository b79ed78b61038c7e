// Package route estimates how hard a question is, without calling a
// model, so that a run asked for with profile "auto" (model "qlc-auto")
// can be sent to a cheap profile when a small model will do and to a
// thorough one when it will not.
//
// It is pure: Classify reads the question and the conversation and
// returns a Decision (a tier, the features it saw, and short reasons a
// person can read); the profiles file maps tiers to profiles
// (stagework.Config.Routing) and the gateway applies the mapping at
// admission. Classify costs microseconds (a single pass over the text,
// no tokenizer, no allocation beyond the reasons).
//
// The rules, in order (the first that applies decides):
//
//  1. complex: a code block or pasted code (several code lines), a
//     proof or formal mathematics (LaTeX, "prove", integrals, series),
//     three or more parts (numbered items, question marks, "and also"),
//     more than 350 tokens, or a weighted score of 5 or more;
//  2. simple: a greeting or thanks, or a short question (at most 30
//     tokens) with no code, no mathematics beyond arithmetic, no domain
//     cue, no reasoning cue and a single part, in a conversation of at
//     most 6 earlier messages;
//  3. standard: everything else.
//
// The score adds: reasoning cues ("design", "trade-offs", "step by
// step", "analyse", "compare", "optimise", ...) 2 each, up to 4; a
// domain cue (legal, medical, finance, security) 2, 3 with two domains;
// code words or inline code 2; mathematics beyond arithmetic 2; two
// parts 1; more than 120 tokens 2, more than 60 tokens 1; a
// conversation of more than 6 earlier messages 1, more than 14 (or more
// than 2,000 tokens of history) 2. A question mostly in a non-Latin
// script counts its tokens by script (about one token per CJK character)
// and gets a reason, not a tier of its own: language alone is not
// difficulty.
//
// The labelled set in testdata/questions.jsonl (written for this, by
// what a person would judge: simple = a small model answers it well;
// standard = explanation, how-to, short writing, everyday code; complex
// = multi-step reasoning, proofs, debugging or designing, expert
// analysis, several parts) measures the rules: TestLabelledAccuracy
// prints the accuracy and confusion matrix and fails below its floor.
package route
