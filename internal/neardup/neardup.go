// Package neardup tells whether two questions are near-duplicates for the
// response cache: the same question in other words, never a different one.
//
// A question's signature is a MinHash (64 permutations) of its content
// words and their bigrams — words lower-cased, punctuation and possessives
// stripped, stop words left out — whose agreement estimates the Jaccard
// similarity of the two shingle sets; and a guard: its negations, numbers
// and named entities (capitalised words past the first), which must be the
// same sets for a match whatever the similarity. Embeddings are not used:
// opposite questions score high under them (GPTCache #694); here a
// changed negation, number or name is never a hit, and an antonym changes
// a content word and its two bigrams, which a short question's similarity
// does not survive.
package neardup

import (
	"hash/fnv"
	"slices"
	"strings"
	"unicode"
)

// Threshold is the estimated Jaccard similarity from which two questions
// with the same guard are near-duplicates.
const Threshold = 0.75

const permutations = 64

// Signature is a question's MinHash and guard.
type Signature struct {
	Min [permutations]uint64
	// Guard is the question's negations and numbers; Names its names
	// (capitalised words past the first), Content its content words, each
	// sorted and space-separated.
	Guard, Names, Content string
	empty                 bool
}

var stopWords = map[string]bool{}

func init() {
	for _, w := range strings.Fields(`a an the is are was were be been being am do does did doing have has had
		having of to in on at by for with about from into onto over under as than then so such
		that this these those it its it's i me my we our you your he him his she her they them their
		what which who whom whose how why when where please can could would should will shall may might
		must tell explain describe give show let us me some any much many there here just also very
		really quite and or but if exactly actually happen happens mean means meaning work works working
		use using while`) {
		stopWords[w] = true
	}
}

var negations = map[string]bool{"not": true, "no": true, "never": true, "none": true, "nor": true, "without": true,
	"cannot": true, "nobody": true, "nothing": true, "neither": true, "nowhere": true}

// words splits s into lower-cased words (letters, digits, apostrophes
// inside a word), with whether each was capitalised.
func words(s string) (ws []string, caps []bool) {
	var cur []rune
	capital := false
	flush := func() {
		w := strings.Trim(string(cur), "'’")
		if w != "" {
			ws = append(ws, strings.ToLower(w))
			caps = append(caps, capital)
		}
		cur, capital = cur[:0], false
	}
	for _, r := range s {
		if r == '’' {
			r = '\''
		}
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || ((r == '\'' || r == '.' || r == ',') && len(cur) > 0):
			if len(cur) == 0 {
				capital = unicode.IsUpper(r)
			}
			cur = append(cur, r)
		default:
			flush()
		}
	}
	flush()
	return ws, caps
}

// Sign computes q's signature.
func Sign(q string) Signature {
	ws, caps := words(q)
	var content, guard, names []string
	for i, w := range ws {
		w = strings.TrimRight(w, ".,")
		base, _, apostrophe := strings.Cut(w, "'")
		if apostrophe && strings.HasSuffix(w, "n't") {
			guard = append(guard, "neg")
			base = strings.TrimSuffix(w, "n't")
		}
		switch {
		case negations[base]:
			guard = append(guard, "neg")
			continue
		case isNumber(base):
			guard = append(guard, "num:"+base)
		case stopWords[base] || base == "":
			continue
		case i > 0 && caps[i]:
			names = append(names, stem(base))
		}
		content = append(content, stem(base))
	}
	slices.Sort(guard)
	guard = slices.Compact(guard)
	slices.Sort(names)
	names = slices.Compact(names)
	words := slices.Clone(content)
	slices.Sort(words)
	sig := Signature{Guard: strings.Join(guard, " "), Names: strings.Join(names, " "), Content: strings.Join(slices.Compact(words), " ")}
	shingles := slices.Clone(content)
	for i := 1; i < len(content); i++ {
		shingles = append(shingles, content[i-1]+" "+content[i])
	}
	if len(shingles) == 0 {
		sig.empty = true
		return sig
	}
	for p := range sig.Min {
		sig.Min[p] = ^uint64(0)
	}
	for _, sh := range shingles {
		h := fnv.New64a()
		h.Write([]byte(sh))
		x := h.Sum64()
		for p := range sig.Min {
			// A permutation per p: x mixed with p's odd multiplier.
			v := mix(x ^ (uint64(p+1) * 0x9e3779b97f4a7c15))
			if v < sig.Min[p] {
				sig.Min[p] = v
			}
		}
	}
	return sig
}

// mix is splitmix64's finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func isNumber(w string) bool {
	if w == "" {
		return false
	}
	for _, r := range w {
		if !unicode.IsDigit(r) && r != '.' && r != ',' {
			return false
		}
	}
	return true
}

// stem folds a plural or a simple verb ending, so "leaders" and "leader"
// are one word.
func stem(w string) string {
	for _, suf := range []string{"ing", "ies", "s"} {
		if len(w) > len(suf)+3 && strings.HasSuffix(w, suf) {
			if suf == "ies" {
				return strings.TrimSuffix(w, suf) + "y"
			}
			return strings.TrimSuffix(w, suf)
		}
	}
	return w
}

// Similarity is the estimated Jaccard similarity of a's and b's shingles.
func Similarity(a, b Signature) float64 {
	if a.empty || b.empty {
		return 0
	}
	same := 0
	for p := range a.Min {
		if a.Min[p] == b.Min[p] {
			same++
		}
	}
	return float64(same) / permutations
}

// Match reports whether a and b are near-duplicates: the same negations
// and numbers, every name of each among the other's words (a name written
// in lower case is still the name), and a similarity at or above
// Threshold.
func Match(a, b Signature) bool {
	return a.Guard == b.Guard && namesIn(a.Names, b.Content) && namesIn(b.Names, a.Content) && Similarity(a, b) >= Threshold
}

func namesIn(names, content string) bool {
	if names == "" {
		return true
	}
	have := strings.Fields(content)
	for _, n := range strings.Fields(names) {
		if _, ok := slices.BinarySearch(have, n); !ok {
			return false
		}
	}
	return true
}
