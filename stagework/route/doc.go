// Package route estimates how hard a question is, without calling a
// model, so that a run asked for with profile "auto" (model "qlc-auto")
// can be sent to a cheap profile when a small model will do and to a
// thorough one when it will not.
//
// It is pure: Classify reads the question and the conversation and
// returns a Decision (a tier, the features it saw, and short reasons a
// person can read); the profiles file maps tiers to profiles
// (stagework.Config.Routing) and the gateway applies the mapping at
// admission. Classify costs microseconds (a few passes over the text's
// first 32 KiB, no tokenizer: about 8 µs for a typical question).
//
// The rules, in order (the first that applies decides):
//
//  1. complex: a code block or pasted code (a fence, or three lines that
//     read as code), formal mathematics (LaTeX, "prove", "theorem"),
//     three or more parts, more than 350 tokens, or a score of 5 or more;
//  2. simple: a short greeting or thanks; or a question of at most 30
//     tokens with no code, no mathematics, no domain cue, no reasoning
//     cue, one part, no request for an explanation ("why", "how does",
//     "explain", "write a", ...; "how many/much/far/long" are lookups),
//     in a conversation of at most 6 earlier messages;
//  3. standard: everything else.
//
// Parts are the most of: question marks (a run counts once), numbered
// items, bullets, distinct task verbs ("explain …, derive …, discuss
// …"); plus joining phrases ("and also", ", and how", ", then").
//
// The score adds: reasoning cues ("design", "trade-offs", "step by
// step", "analyse", "compare", "optimise", ...) 2 each, up to 4; one
// expert domain (legal, medical, finance, security) 2, two or more 3;
// code words or inline code 2; mathematics 2, with two cues or more 3;
// two parts 1; more than 35 / 70 / 150 tokens 1 / 2 / 3; more than 6
// earlier messages 1, more than 14 (or more than 2,000 tokens of
// history) 3. Tokens are approximated: 4 bytes of Latin text, one CJK
// character, or two other non-Latin letters a token. A question mostly
// in a non-Latin script gets a reason, not a tier of its own: language
// alone is not difficulty.
//
// The labelled set in testdata/questions.jsonl (written for this, by
// what a person would judge: simple = a small model answers it well;
// standard = explanation, how-to, short writing, everyday code; complex
// = multi-step reasoning, proofs, debugging or designing, expert
// analysis, several parts) measures the rules: TestLabelledAccuracy
// prints the accuracy and confusion matrix and fails below its floor.
package route
