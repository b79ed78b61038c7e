package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// uncached encodes text piece by piece without any cache: a whole-piece
// lookup, else naiveMerge.
func uncached(e *Encoding, text string) []int {
	var out []int
	for _, p := range piecesOf(e, text) {
		if r, ok := e.v.lookup(p); ok {
			out = append(out, int(r))
		} else {
			out = append(out, naiveMerge(e.v, p)...)
		}
	}
	return out
}

// TestPieceCache encodes texts made to stress the piece cache — pieces of
// every length around its limits (8, 16, 32 bytes), pieces that differ only
// in trailing NUL bytes (the keys are zero padded) or past their 8th byte,
// short pieces of more tokens than a short entry holds, and far more
// distinct pieces than the cache has entries, so that sets evict — and
// checks every encoding, first with a cold cache and then with a warm one,
// against an encoder without caches.
func TestPieceCache(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	words := []string{"a", "ab", "the", "token", "\x00", "a\x00", "a\x00\x00", "é", "日本", "zq", "xj", "Qv"}
	var texts []string
	for k := 0; k < 400; k++ {
		var sb strings.Builder
		for sb.Len() < 2000 {
			// A piece of 1..40 bytes: letters glued together (one \p{L}+ piece,
			// or punctuation-led) separated by a space or punctuation.
			n := 1 + rng.IntN(40)
			start := sb.Len()
			for sb.Len()-start < n {
				w := words[rng.IntN(len(words))]
				if rng.IntN(3) == 0 {
					w = string(rune('a' + rng.IntN(26)))
				}
				sb.WriteString(w)
			}
			sb.WriteString([]string{" ", "  ", "!!", ".", "\n", "?!?!?!?!"}[rng.IntN(6)])
		}
		texts = append(texts, sb.String())
	}
	// Runs of punctuation: short pieces of many tokens (the long-entry path).
	texts = append(texts, strings.Repeat("!?#", 40), "x"+strings.Repeat(" ~@", 30))
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		for pass := range 2 {
			for i, text := range texts {
				if got, want := e.EncodeOrdinary(text), uncached(e, text); !slices.Equal(got, want) {
					k := firstDiff(got, want)
					t.Fatalf("%s pass %d text %d: token %d: got %v, want %v", name, pass, i, k, window(got, k), window(want, k))
				}
			}
		}
	}
}

// TestShortSet checks one set of the short table: an entry is found only by
// its exact key (both halves and the length), a hit moves it to way 0, and a
// new entry evicts the least recently used one.
func TestShortSet(t *testing.T) {
	var s shortSet
	type piece struct {
		lo, hi uint64
		n      int
		toks   []int
	}
	a := piece{0x6867666564636261, 0x69, 9, []int{1, 2}}
	b := piece{0x6867666564636261, 0x6a, 9, []int{3}}        // differs past byte 8
	c := piece{0x6867666564636261, 0x69, 10, []int{4, 5, 6}} // a with a trailing NUL
	d := piece{0x61, 0, 1, []int{7}}
	found := func(p piece) []int {
		e := s.find(p.lo, p.hi, p.n)
		if e == nil {
			return nil
		}
		var out []int
		for _, x := range e.toks[:e.nt] {
			out = append(out, int(x))
		}
		return out
	}
	s.put(a.lo, a.hi, a.n, a.toks)
	if got := found(a); !slices.Equal(got, a.toks) {
		t.Fatalf("a: %v, want %v", got, a.toks)
	}
	for _, p := range []piece{b, c, d} {
		if got := found(p); got != nil {
			t.Fatalf("%+v found as %v in a set holding only a", p, got)
		}
	}
	s.put(b.lo, b.hi, b.n, b.toks) // ways: b, a
	if got := found(a); !slices.Equal(got, a.toks) || s[0].hi != a.hi {
		t.Fatalf("a after b: %v (way 0 hi %#x), want %v in way 0", got, s[0].hi, a.toks)
	}
	s.put(c.lo, c.hi, c.n, c.toks) // ways: c, a; b evicted
	if found(b) != nil {
		t.Fatal("b survived although it was the least recently used")
	}
	for _, p := range []piece{a, c} {
		if got := found(p); !slices.Equal(got, p.toks) {
			t.Fatalf("%+v: %v, want %v", p, got, p.toks)
		}
	}
}
