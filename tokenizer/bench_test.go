package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	tkgo "github.com/tiktoken-go/tokenizer"
)

// benchDocs is the whole corpus of QLC_TOKENIZER_CORPUS (its en, code and
// multi parts: the 39 MB mix of the research notes) or else the committed sample.
func benchDocs(b *testing.B) ([]string, string) {
	b.Helper()
	if dir := os.Getenv("QLC_TOKENIZER_CORPUS"); dir != "" {
		var docs []string
		for _, part := range []string{"en", "code", "multi"} {
			data, err := os.ReadFile(filepath.Join(dir, part+".txt"))
			if err != nil {
				b.Fatal(err)
			}
			docs = append(docs, splitDocs(data)...)
		}
		return docs, "corpus"
	}
	data, err := os.ReadFile("testdata/corpus_sample.txt")
	if err != nil {
		b.Fatal(err)
	}
	return splitDocs(data), "sample"
}

func totalBytes(docs []string) int64 {
	n := 0
	for _, d := range docs {
		n += len(d)
	}
	return int64(n)
}

// BenchmarkEncode encodes every document of the corpus once per op, one
// goroutine; MB/s is over the corpus bytes. Compare with
// GOMAXPROCS=1 taskset -c 0 (see BENCHMARKS-tokenizer.md).
func BenchmarkEncode(b *testing.B) {
	docs, _ := benchDocs(b)
	size := totalBytes(docs)
	for _, name := range []string{Cl100kBase, O200kBase} {
		fast := mustLoad(b, name, false)
		generic := mustLoad(b, name, true)
		tokens := 0
		for _, d := range docs {
			tokens += fast.Count(d)
		}
		run := func(b *testing.B, encode func(string) int) {
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				for _, d := range docs {
					encode(d)
				}
			}
			b.ReportMetric(float64(tokens)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
		}
		var dst []int
		if hasSIMD {
			b.Run(name+"/qlc-"+simdName, func(b *testing.B) {
				run(b, func(s string) int { dst = fast.AppendEncodeOrdinary(dst[:0], s); return len(dst) })
			})
		}
		b.Run(name+"/qlc-generic", func(b *testing.B) {
			run(b, func(s string) int { dst = generic.AppendEncodeOrdinary(dst[:0], s); return len(dst) })
		})
		b.Run(name+"/qlc-count", func(b *testing.B) {
			run(b, fast.Count)
		})
		b.Run(name+"/pkoukk-tiktoken-go", func(b *testing.B) {
			ref := reference(b, name)
			run(b, func(s string) int { return len(ref.EncodeOrdinary(s)) })
		})
		b.Run(name+"/tiktoken-go-tokenizer", func(b *testing.B) {
			enc := tkgo.Cl100kBase
			if name == O200kBase {
				enc = tkgo.O200kBase
			}
			codec, err := tkgo.Get(enc)
			if err != nil {
				b.Fatal(err)
			}
			run(b, func(s string) int { ids, _, _ := codec.Encode(s); return len(ids) })
		})
	}
}

// BenchmarkWorstCase encodes one long piece: n bytes of one letter (one
// \p{L}+ piece, merged by the heap), of digits (pieces of 3) and of spaces.
// Time per byte should stay flat as n doubles.
func BenchmarkWorstCase(b *testing.B) {
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(b, name, false)
		b.Run(name+"/a-x-200000", func(b *testing.B) { benchOne(b, e, strings.Repeat("a", 200000)) })
		for _, mb := range []int{1, 2, 4, 8} {
			for _, c := range []struct{ label, unit string }{{"letter", "a"}, {"digits", "7"}, {"spaces", " "}} {
				text := strings.Repeat(c.unit, mb<<20)
				b.Run(fmt.Sprintf("%s/%s-%dMB", name, c.label, mb), func(b *testing.B) { benchOne(b, e, text) })
			}
		}
	}
}

func benchOne(b *testing.B, e *Encoding, text string) {
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		n = e.Count(text)
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tokens/s")
}

// BenchmarkCount shows the allocations of Count in steady state (0).
func BenchmarkCount(b *testing.B) {
	docs, _ := benchDocs(b)
	doc := docs[len(docs)/2]
	for _, name := range []string{Cl100kBase, O200kBase} {
		e := mustLoad(b, name, false)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(doc)))
			b.ReportAllocs()
			for b.Loop() {
				e.Count(doc)
			}
		})
	}
}

// BenchmarkClassify measures the byte classifier alone on 256 KiB.
func BenchmarkClassify(b *testing.B) {
	docs, _ := benchDocs(b)
	var sb strings.Builder
	for _, d := range docs {
		if sb.Len() >= 256<<10 {
			break
		}
		sb.WriteString(d)
	}
	src := []byte(sb.String())[:256<<10]
	dst := make([]blockMasks, len(src)/64)
	for _, c := range []struct {
		name string
		fn   classifyFunc
	}{{"generic", classifyGeneric}, {simdName, classifySIMD}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				c.fn(dst, src)
			}
		})
	}
}
