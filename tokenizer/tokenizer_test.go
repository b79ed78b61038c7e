package tokenizer

import (
	"errors"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// piecesOf returns the pre-tokenizer pieces of text.
func piecesOf(e *Encoding, text string) []string {
	sc := &scratch{}
	sc.masks = grow(sc.masks, (len(text)+63)/64)
	classifyString(e.classify, sc.masks, text, &sc.tail)
	scan := scanner{s: text, n: len(text), m: sc.masks, o200k: e.o200k}
	var out []string
	for i := 0; i < len(text); {
		j := scan.next(i)
		out = append(out, text[i:j])
		i = j
	}
	return out
}

// TestUnicode16Pieces checks characters whose class is new in Unicode 16
// (the reference, on Go's Unicode 15 tables, splits them differently), with
// the pieces worked out by hand from the regexes.
func TestUnicode16Pieces(t *testing.T) {
	cases := []struct {
		text          string
		cl100k, o200k []string
	}{
		// U+1C89 CYRILLIC CAPITAL LETTER TJE (Lu), U+1C8A small (Ll): tiktoken-go/tokenizer issue #23.
		{"\u1C89\\u", []string{"\u1C89", "\\u"}, []string{"\u1C89", "\\u"}},
		{" \u1C8A\u1C89x", []string{" \u1C8A\u1C89x"}, []string{" \u1C8A", "\u1C89x"}},
		// U+0897 ARABIC PEPET (Mn): a mark joins the o200k lower-case run, not cl100k's \p{L}+.
		{"a\u0897", []string{"a", "\u0897"}, []string{"a\u0897"}},
		// U+1CCF0.. OUTLINED DIGIT ZERO.. (Nd): \p{N}{1,3}.
		{"\U0001CCF0\U0001CCF1\U0001CCF2\U0001CCF3", []string{"\U0001CCF0\U0001CCF1\U0001CCF2", "\U0001CCF3"}, []string{"\U0001CCF0\U0001CCF1\U0001CCF2", "\U0001CCF3"}},
		// U+10D40.. GARAY DIGITS after a space: the space stands alone.
		{"x \U00010D40\U00010D41", []string{"x", " ", "\U00010D40\U00010D41"}, []string{"x", " ", "\U00010D40\U00010D41"}},
	}
	for _, c := range cases {
		if !changedInUnicode16(c.text) {
			t.Errorf("%q: expected a code point changed in Unicode 16", c.text)
		}
		for _, enc := range []struct {
			name string
			want []string
		}{{Cl100kBase, c.cl100k}, {O200kBase, c.o200k}} {
			for _, generic := range []bool{false, true} {
				e := mustLoad(t, enc.name, generic)
				if got := piecesOf(e, c.text); !slices.Equal(got, enc.want) {
					t.Errorf("%s generic=%v %q: pieces %q, want %q", enc.name, generic, c.text, got, enc.want)
				}
				toks := e.EncodeOrdinary(c.text)
				var perPiece []int
				for _, p := range enc.want {
					perPiece = append(perPiece, e.EncodeOrdinary(p)...)
				}
				if !slices.Equal(toks, perPiece) {
					t.Errorf("%s %q: tokens %v, want the pieces' tokens %v", enc.name, c.text, toks, perPiece)
				}
				if s, err := e.DecodeString(toks); err != nil || s != c.text {
					t.Errorf("%s %q: decode %q, %v", enc.name, c.text, s, err)
				}
			}
		}
	}
	if UnicodeVersion != "16.0.0" {
		t.Errorf("UnicodeVersion = %s, want 16.0.0 (tiktoken's regex-syntax tables)", UnicodeVersion)
	}
}

func TestClassifySIMDMatchesGeneric(t *testing.T) {
	if !hasSIMD {
		t.Skip("no SIMD classifier on this CPU/build")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		src := make([]byte, 64*(1+rng.IntN(8)))
		for i := range src {
			src[i] = byte(rng.UintN(256))
		}
		if n == 0 {
			for i := range src {
				src[i] = byte(i)
			}
		}
		checkClassify(t, src)
	}
}

func checkClassify(t testing.TB, src []byte) {
	src = src[:len(src)&^63]
	a := make([]blockMasks, len(src)/64)
	b := make([]blockMasks, len(src)/64)
	classifyGeneric(a, src)
	classifySIMD(b, src)
	for k := range a {
		if a[k] != b[k] {
			t.Fatalf("block %d of %q: generic %x, simd %x", k, src[k*64:k*64+64], a[k], b[k])
		}
	}
}

func TestVocabularyChecksum(t *testing.T) {
	for name, sp := range specs {
		if _, err := loadVocab(sp.file, strings.Repeat("0", 64)); !errors.Is(err, ErrCorruptVocabulary) {
			t.Errorf("%s: wrong checksum gave %v, want ErrCorruptVocabulary", name, err)
		}
	}
	if _, err := parseVocab([]byte("YQ== 0\n!!! 1\n")); !errors.Is(err, ErrCorruptVocabulary) {
		t.Errorf("bad base64 gave %v", err)
	}
	if _, err := parseVocab([]byte("YQ== 0\nYQ== 1\n")); !errors.Is(err, ErrCorruptVocabulary) {
		t.Errorf("duplicate token gave %v", err)
	}
	e := mustLoad(t, Cl100kBase, false)
	if e.VocabSize() != 100277 {
		t.Errorf("cl100k VocabSize = %d, want 100277", e.VocabSize())
	}
	if e = mustLoad(t, O200kBase, false); e.VocabSize() != 200019 {
		t.Errorf("o200k VocabSize = %d, want 200019", e.VocabSize())
	}
	if _, err := Load(Config{Encoding: "p50k_base"}); !errors.Is(err, ErrUnknownEncoding) {
		t.Errorf("unknown encoding gave %v", err)
	}
}

func TestSpecialTokens(t *testing.T) {
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		ref := reference(t, name)
		text := "a<|endoftext|>b <|endofprompt|> <|not_special|>"
		if _, err := e.Encode(text); !errors.Is(err, ErrDisallowedSpecial) {
			t.Errorf("%s: no allow-list gave %v, want ErrDisallowedSpecial", name, err)
		}
		if _, err := e.Encode(text, EndOfText); !errors.Is(err, ErrDisallowedSpecial) {
			t.Errorf("%s: partial allow-list gave %v, want ErrDisallowedSpecial", name, err)
		}
		got, err := e.Encode(text, EndOfText, EndOfPrompt)
		if err != nil {
			t.Fatal(err)
		}
		want := ref.Encode(text, []string{EndOfText, EndOfPrompt}, nil)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %v, reference %v", name, got, want)
		}
		if !slices.Contains(got, e.SpecialTokens()[EndOfText]) {
			t.Errorf("%s: %v lacks the <|endoftext|> id", name, got)
		}
		if s, _ := e.DecodeString(got); s != text {
			t.Errorf("%s: decode %q", name, s)
		}
		if _, err := e.Encode("x", "<|fim_nope|>"); !errors.Is(err, ErrUnknownSpecial) {
			t.Errorf("%s: unknown special gave %v", name, err)
		}
		if ord := e.EncodeOrdinary(text); !slices.Equal(ord, ref.EncodeOrdinary(text)) || slices.Contains(ord, e.SpecialTokens()[EndOfText]) {
			t.Errorf("%s: EncodeOrdinary %v", name, ord)
		}
	}
}

func TestDecode(t *testing.T) {
	e := mustLoad(t, Cl100kBase, false)
	if _, err := e.Decode([]int{9906, -1}); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("negative id gave %v", err)
	}
	if _, err := e.Decode([]int{100261}); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("unused id gave %v", err)
	}
	if b, err := e.TokenBytes(9906); err != nil || string(b) != "Hello" {
		t.Errorf("TokenBytes(9906) = %q, %v", b, err)
	}
	// Invalid UTF-8 is encoded as U+FFFD per invalid byte (as the reference and encoding/json do).
	if s, _ := e.DecodeString(e.EncodeOrdinary("a\xffb\xe2\x82")); s != "a\uFFFDb\uFFFD\uFFFD" {
		t.Errorf("invalid UTF-8 decoded to %q", s)
	}
}

func TestTruncate(t *testing.T) {
	b, _ := readSample(t)
	docs := append(splitDocs(b)[:40], edgeCases...)
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		for _, doc := range docs {
			total := e.Count(doc)
			for _, max := range []int{0, 1, 2, 7, total / 2, total - 1, total, total + 5} {
				p, n := e.Truncate(doc, max)
				if !strings.HasPrefix(doc, p) {
					t.Fatalf("%s: Truncate(%q, %d) = %q is no prefix", name, doc, max, p)
				}
				if c := e.Count(p); c != n || n > max && max >= 0 {
					t.Fatalf("%s: Truncate(%q, %d) = %q with n=%d, Count %d", name, doc, max, p, n, c)
				}
				if utf8.ValidString(doc) && !utf8.ValidString(p) {
					t.Fatalf("%s: Truncate cut a character: %q", name, p)
				}
				if max >= total && p != doc {
					t.Fatalf("%s: Truncate(%d >= %d) cut the text", name, max, total)
				}
				// Nearly full: it only backs off to a character boundary (a
				// character spans at most 4 byte-level tokens).
				if max < total && utf8.ValidString(doc) && n < max-4 {
					t.Fatalf("%s: Truncate(%q, %d) kept only %d tokens", name, doc, max, n)
				}
			}
		}
	}
}

func readSample(t testing.TB) ([]byte, error) {
	t.Helper()
	b, err := os.ReadFile("testdata/corpus_sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	return b, nil
}

func TestCountDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	b, _ := readSample(t)
	doc := string(b[:20000])
	long := strings.Repeat("a", 5000) // the heap merge path
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		e.Count(doc)
		e.Count(long)
		if a := testing.AllocsPerRun(20, func() { e.Count(doc); e.Count(long) }); a != 0 {
			t.Errorf("%s: Count allocates %.1f times per call", name, a)
		}
		dst := make([]int, 0, 20000)
		if a := testing.AllocsPerRun(20, func() { dst = e.AppendEncodeOrdinary(dst[:0], doc) }); a != 0 {
			t.Errorf("%s: AppendEncodeOrdinary allocates %.1f times per call", name, a)
		}
		counts := make([]int, 3)
		if a := testing.AllocsPerRun(20, func() { counts, _ = e.CountBatch([]string{doc, long, "x"}, counts) }); a != 0 {
			t.Errorf("%s: CountBatch allocates %.1f times per call", name, a)
		}
	}
}

func TestCountBatch(t *testing.T) {
	e := mustLoad(t, O200kBase, false)
	texts := []string{"hello world", "", "日本語", strings.Repeat("ab ", 100)}
	counts, total := e.CountBatch(texts, nil)
	sum := 0
	for i, s := range texts {
		if counts[i] != e.Count(s) || counts[i] != len(e.EncodeOrdinary(s)) {
			t.Errorf("CountBatch[%d] = %d, Count %d", i, counts[i], e.Count(s))
		}
		sum += counts[i]
	}
	if total != sum {
		t.Errorf("total %d, want %d", total, sum)
	}
}

func TestConcurrentUse(t *testing.T) {
	b, _ := readSample(t)
	docs := splitDocs(b)[:60]
	e, err := Get(Cl100kBase)
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]int, len(docs))
	for i, d := range docs {
		want[i] = e.EncodeOrdinary(d)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range docs {
				i := (k + g*7) % len(docs)
				if got := e.EncodeOrdinary(docs[i]); !slices.Equal(got, want[i]) {
					errs <- "EncodeOrdinary differs under concurrency"
					return
				}
				if e.Count(docs[i]) != len(want[i]) {
					errs <- "Count differs under concurrency"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for m := range errs {
		t.Error(m)
	}
}

// naiveMerge is tiktoken's _byte_pair_merge written plainly: merge the
// lowest-ranked adjacent pair (leftmost on ties) until none is a token.
func naiveMerge(v *vocab, p string) []int {
	parts := make([]string, len(p))
	for i := 0; i < len(p); i++ {
		parts[i] = p[i : i+1]
	}
	for {
		best, at := noRank, -1
		for i := 0; i+1 < len(parts); i++ {
			if r := v.rank(parts[i] + parts[i+1]); r < best {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		parts[at] += parts[at+1]
		parts = append(parts[:at+1], parts[at+2:]...)
	}
	out := make([]int, len(parts))
	for i, s := range parts {
		out[i] = int(v.rank(s))
	}
	return out
}

// TestLongPieces checks both merge paths against naiveMerge on pieces
// around and above largePiece, and the whole encoder against the reference.
func TestLongPieces(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(t, name, false)
		ref := reference(t, name)
		var small smallScratch
		pc := new(pairCache) // shared across pieces, as in use
		var ms mergeScratch
		for k := 0; k < 200; k++ {
			n := 2 + rng.IntN(400)
			alpha := []string{"a", "ab", "abc", "etaoin", "xyzzy", "01", "é"}[rng.IntN(7)]
			var sb strings.Builder
			for sb.Len() < n {
				sb.WriteByte(alpha[rng.IntN(len(alpha))])
			}
			p := sb.String()
			want := naiveMerge(e.v, p)
			if len(p) < largePiece {
				if got := e.v.mergeSmall(nil, p, &small, pc); !slices.Equal(got, want) {
					t.Fatalf("%s %q: mergeSmall %v, naive %v", name, p, got, want)
				}
			}
			if got := e.v.mergeLarge(nil, p, &ms, pc); !slices.Equal(got, want) {
				t.Fatalf("%s %q: mergeLarge %v, naive %v", name, p, got, want)
			}
			if len(p) < 300 && utf8.ValidString(p) {
				if want := ref.EncodeOrdinary(p); !slices.Equal(e.EncodeOrdinary(p), want) {
					t.Fatalf("%s %q: %v, reference %v", name, p, e.EncodeOrdinary(p), want)
				}
			}
		}
	}
}

func TestModels(t *testing.T) {
	for model, want := range map[string]string{
		"gpt-4o": O200kBase, "gpt-4o-mini-2024-07-18": O200kBase, "o1-preview": O200kBase, "o3-mini": O200kBase,
		"gpt-4.1-nano": O200kBase, "gpt-5": O200kBase, "openai/gpt-4o": O200kBase, "GPT-4o": O200kBase,
		"gpt-4": Cl100kBase, "gpt-4-turbo": Cl100kBase, "gpt-4-0613": Cl100kBase, "gpt-3.5-turbo-0125": Cl100kBase,
		"text-embedding-3-small": Cl100kBase,
	} {
		e, err := ForModel(model)
		if err != nil || e.Name() != want {
			t.Errorf("ForModel(%q) = %v, %v; want %s", model, e, err, want)
		}
		r, err := ResolveModel(model, Approximate)
		if err != nil || r.Approximate || r.Label() != want {
			t.Errorf("ResolveModel(%q) = %+v, %v", model, r, err)
		}
	}
	for _, model := range []string{"llama-3.1-70b", "claude-3-5-sonnet", "", "gpt-4x"} {
		if _, err := ForModel(model); !errors.Is(err, ErrUnknownModel) {
			t.Errorf("ForModel(%q) gave %v, want ErrUnknownModel", model, err)
		}
		if _, err := ResolveModel(model, Exact); !errors.Is(err, ErrUnknownModel) {
			t.Errorf("ResolveModel(%q, Exact) gave %v", model, err)
		}
		r, err := ResolveModel(model, Approximate)
		if err != nil || !r.Approximate || r.Encoding.Name() != ApproximateEncoding ||
			r.Label() != ApproximateEncoding+" (approximate for "+model+")" {
			t.Errorf("ResolveModel(%q, Approximate) = %+v (%q), %v", model, r, r.Label(), err)
		}
	}
}

// TestRadixQueue checks the merge queue against sorting: keys pop in
// increasing order, including keys pushed below the current rank (the side
// heap), which real vocabularies almost never produce.
func TestRadixQueue(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var q radixQueue
	for round := 0; round < 300; round++ {
		q.reset()
		var live []uint64
		lastPopped := uint64(0)
		for op := 0; op < 400; op++ {
			if len(live) == 0 || rng.IntN(3) > 0 {
				r := uint64(rng.IntN(50))
				if round%2 == 0 {
					r = max(lastPopped>>32+uint64(rng.IntN(20)), 2) - 2 // mostly monotone, like BPE
				}
				x := r<<32 | uint64(rng.IntN(1000))
				q.push(x)
				live = append(live, x)
				continue
			}
			slices.Sort(live)
			got, ok := q.pop()
			if !ok || got != live[0] {
				t.Fatalf("round %d: pop = %x, %v; want %x", round, got, ok, live[0])
			}
			lastPopped = got
			live = live[1:]
		}
		slices.Sort(live)
		for _, want := range live {
			if got, ok := q.pop(); !ok || got != want {
				t.Fatalf("round %d drain: pop = %x, %v; want %x", round, got, ok, want)
			}
		}
		if _, ok := q.pop(); ok {
			t.Fatalf("round %d: queue not empty", round)
		}
	}
}
