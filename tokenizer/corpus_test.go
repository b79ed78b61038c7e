package tokenizer

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"unicode"
	"unicode/utf8"
)

// changedInUnicode16 reports whether s holds a code point whose class (L, N,
// M, White_Space) differs between our Unicode 16 tables and Go's unicode
// package (Unicode 15), which the reference uses. Such texts cannot be
// compared with the reference; TestUnicode16Pieces covers them.
func changedInUnicode16(s string) bool {
	for _, r := range s {
		if r < 0x80 || r == utf8.RuneError {
			continue
		}
		c := runeClass(r)
		if unicode.IsLetter(r) != (c&cL != 0) || unicode.IsNumber(r) != (c&cN != 0) ||
			unicode.IsMark(r) != (c&cM != 0) || unicode.Is(unicode.White_Space, r) != (c&cWS != 0) {
			return true
		}
	}
	return false
}

func splitDocs(b []byte) []string {
	var docs []string
	for _, d := range bytes.Split(b, []byte{0x1E}) {
		if len(d) > 0 {
			docs = append(docs, string(d))
		}
	}
	return docs
}

type compareStats struct {
	docs, bytes, tokens, skipped int
	mismatches                   []string
}

// compareWithReference encodes every doc with the SIMD and the generic path
// and with the reference, on workers goroutines.
func compareWithReference(t *testing.T, name string, docs []string, workers int) compareStats {
	ref := reference(t, name)
	fast := mustLoad(t, name, false)
	generic := mustLoad(t, name, true)
	var mu sync.Mutex
	var st compareStats
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				doc := docs[i]
				got := fast.EncodeOrdinary(doc)
				gen := generic.EncodeOrdinary(doc)
				var msg string
				skipped := false
				if !slices.Equal(got, gen) {
					msg = fmt.Sprintf("doc %d: SIMD and generic paths differ at token %d", i, firstDiff(got, gen))
				} else if changedInUnicode16(doc) {
					skipped = true
				} else if want := ref.EncodeOrdinary(doc); !slices.Equal(got, want) {
					k := firstDiff(got, want)
					msg = fmt.Sprintf("doc %d: differs from reference at token %d: got %v want %v near %q",
						i, k, window(got, k), window(want, k), context(fast, got, k))
				}
				mu.Lock()
				st.docs++
				st.bytes += len(doc)
				st.tokens += len(got)
				if skipped {
					st.skipped++
				}
				if msg != "" {
					st.mismatches = append(st.mismatches, msg)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range docs {
		next <- i
	}
	close(next)
	wg.Wait()
	sort.Strings(st.mismatches)
	return st
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func window(t []int, k int) []int { return t[max(0, k-2):min(len(t), k+3)] }

func context(e *Encoding, toks []int, k int) string {
	s, _ := e.DecodeString(toks[max(0, k-3):min(len(toks), k+3)])
	return s
}

func report(t *testing.T, name string, st compareStats) {
	t.Logf("%s: %d docs, %d bytes, %d tokens, %d identical to the reference, %d skipped (Unicode 16 changes), %d mismatches",
		name, st.docs, st.bytes, st.tokens, st.docs-st.skipped-len(st.mismatches), st.skipped, len(st.mismatches))
	for i, m := range st.mismatches {
		if i == 10 {
			t.Errorf("... and %d more", len(st.mismatches)-10)
			break
		}
		t.Error(m)
	}
}

// TestSampleCorpus compares with the reference on the committed sample
// (testdata/corpus_sample.txt, ~430 KB cut from the corpus build.sh makes:
// English prose, Go code, Japanese and German man pages, 20 languages of
// gettext messages, emoji data, whitespace/control-character and invalid
// UTF-8 documents), plus the hand-written edge cases.
func TestSampleCorpus(t *testing.T) {
	b, err := os.ReadFile("testdata/corpus_sample.txt")
	if err != nil {
		t.Fatal(err)
	}
	docs := append(splitDocs(b), edgeCases...)
	for _, name := range []string{Cl100kBase, O200kBase} {
		t.Run(name, func(t *testing.T) {
			st := compareWithReference(t, name, docs, 2)
			report(t, name, st)
			if st.skipped > 0 {
				t.Errorf("%d sample docs hold Unicode-16 changes; keep those in TestUnicode16Pieces", st.skipped)
			}
		})
	}
}

// TestCorpus compares with the reference on the full corpus made by
// corpus/build.sh; set QLC_TOKENIZER_CORPUS to its data directory.
func TestCorpus(t *testing.T) {
	dir := os.Getenv("QLC_TOKENIZER_CORPUS")
	if dir == "" {
		t.Skip("set QLC_TOKENIZER_CORPUS to the directory made by tokenizer/corpus/build.sh")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.txt"))
	if len(files) == 0 {
		t.Fatalf("no *.txt in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := splitDocs(b)
		part := strings.TrimSuffix(filepath.Base(f), ".txt")
		for _, name := range []string{Cl100kBase, O200kBase} {
			t.Run(part+"/"+name, func(t *testing.T) {
				report(t, name, compareWithReference(t, name, docs, 2))
			})
		}
	}
}
