//go:build ignore

// gather writes the tokenizer comparison corpus; run it through build.sh.
//
// Parts (documents separated by 0x1E, none containing 0x1E or special-token text):
//
//	en     CPython 3.11 reST doc sources + the FOLDOC dictionary in ~16 KB chunks
//	code   every 3rd hand-written Go file of $GOROOT/src (no testdata, vendor or generated code)
//	multi  Japanese and German man pages (roff source), ~4 MB each
//	intl   translated messages of gettext catalogs in 20 languages (Arabic, Hebrew, Persian, CJK, Cyrillic, Indic, Thai, ...)
//	emoji  Unicode emoji test data: ZWJ sequences, flags, skin tones, keycaps
//	edge   whitespace runs, control characters (NUL, DEL), CRLF, and copies of
//	       other documents with invalid UTF-8 bytes spliced in (fixed seed)
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
)

const sep = 0x1E

func main() {
	out := flag.String("out", "data", "output directory")
	sample := flag.String("sample", "", "also write a small sample (~450 KB) of every part to this file")
	flag.Parse()
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	parts := map[string][][]byte{}
	parts["en"] = en()
	parts["code"] = code()
	parts["multi"] = append(manpages("/usr/share/man/ja", 4<<20), manpages("/usr/share/man/de", 4<<20)...)
	parts["intl"] = intl()
	parts["emoji"] = emoji()
	parts["edge"] = edge(parts)
	var manifest strings.Builder
	names := []string{"en", "code", "multi", "intl", "emoji", "edge"}
	total := 0
	for _, name := range names {
		var buf bytes.Buffer
		n := 0
		for _, d := range parts[name] {
			if len(d) == 0 || bytes.IndexByte(d, sep) >= 0 || bytes.Contains(d, []byte("<|")) {
				continue
			}
			if n > 0 {
				buf.WriteByte(sep)
			}
			buf.Write(d)
			n++
		}
		if err := os.WriteFile(filepath.Join(*out, name+".txt"), buf.Bytes(), 0o644); err != nil {
			log.Fatal(err)
		}
		sum := sha256.Sum256(buf.Bytes())
		fmt.Fprintf(&manifest, "%-6s %5d docs %10d bytes sha256 %x\n", name, n, buf.Len(), sum)
		total += buf.Len()
	}
	fmt.Fprintf(&manifest, "total  %d bytes (%s)\n", total, runtime.Version())
	if *sample != "" {
		writeSample(*sample, names, parts)
	}
	os.WriteFile(filepath.Join(*out, "MANIFEST"), []byte(manifest.String()), 0o644)
	fmt.Print(manifest.String())
}

func chunk(b []byte, size int) [][]byte {
	var docs [][]byte
	for len(b) > 0 {
		n := min(size, len(b))
		if n < len(b) {
			if k := bytes.LastIndexByte(b[:n], '\n'); k > 0 {
				n = k + 1
			}
		}
		docs = append(docs, b[:n])
		b = b[n:]
	}
	return docs
}

func files(root string, keep func(path string) bool) []string {
	var out []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && keep(p) {
			out = append(out, p)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

func read(p string) []byte {
	f, err := os.Open(p)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(p, ".gz") || strings.HasSuffix(p, ".dz") {
		z, err := gzip.NewReader(f)
		if err != nil {
			log.Fatalf("%s: %v", p, err)
		}
		r = z
	}
	b, err := io.ReadAll(r)
	if err != nil {
		log.Fatalf("%s: %v", p, err)
	}
	return b
}

func en() [][]byte {
	var docs [][]byte
	for _, p := range files("/usr/share/doc/python3.11/html/_sources", func(p string) bool { return strings.HasSuffix(p, ".rst.txt") }) {
		docs = append(docs, chunk(read(p), 16<<10)...)
	}
	return append(docs, chunk(read("/usr/share/dictd/foldoc.dict.dz"), 16<<10)...)
}

func code() [][]byte {
	root := filepath.Join(runtime.GOROOT(), "src")
	var docs [][]byte
	i := 0
	for _, p := range files(root, func(p string) bool {
		return strings.HasSuffix(p, ".go") && !strings.Contains(p, "/testdata/") && !strings.Contains(p, "/vendor/")
	}) {
		b := read(p)
		if len(b) > 256<<10 || bytes.Contains(b[:min(len(b), 2048)], []byte("Code generated")) {
			continue
		}
		if i++; i%3 == 0 {
			docs = append(docs, b)
		}
	}
	return docs
}

func manpages(root string, budget int) [][]byte {
	var docs [][]byte
	for _, p := range files(root, func(p string) bool { return strings.HasSuffix(p, ".gz") }) {
		if budget <= 0 {
			break
		}
		b := read(p)
		docs = append(docs, b)
		budget -= len(b)
	}
	return docs
}

// intl reads the translations (msgstr) of .mo catalogs.
func intl() [][]byte {
	var docs [][]byte
	for _, lang := range []string{"ar", "he", "fa", "ur", "zh_CN", "zh_TW", "ja", "ko", "ru", "uk", "bg", "el", "hi", "bn", "ta", "th", "ka", "am", "vi", "tr"} {
		budget := 300 << 10 // per language
		for _, p := range files("/usr/share/locale/"+lang+"/LC_MESSAGES", func(p string) bool { return strings.HasSuffix(p, ".mo") }) {
			if d := moStrings(read(p)); len(d) > 0 && budget > 0 {
				docs = append(docs, chunk(d, 16<<10)...)
				budget -= len(d)
			}
		}
	}
	return docs
}

func moStrings(b []byte) []byte {
	if len(b) < 28 {
		return nil
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if bo.Uint32(b) != 0x950412de {
		bo = binary.BigEndian
	}
	n, toff := int(bo.Uint32(b[8:])), int(bo.Uint32(b[16:]))
	var out bytes.Buffer
	for i := 0; i < n; i++ {
		o := toff + 8*i
		if o+8 > len(b) {
			break
		}
		l, off := int(bo.Uint32(b[o:])), int(bo.Uint32(b[o+4:]))
		if off+l > len(b) || l == 0 {
			continue
		}
		s := bytes.ReplaceAll(b[off:off+l], []byte{0}, []byte("\n"))
		if bytes.HasPrefix(s, []byte("Project-Id-Version")) {
			continue
		}
		out.Write(s)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

func emoji() [][]byte {
	var docs [][]byte
	for _, f := range []string{"emoji-test.txt", "emoji-zwj-sequences.txt", "emoji-sequences.txt"} {
		p := "/usr/share/unicode/emoji/" + f
		if _, err := os.Stat(p); err == nil {
			docs = append(docs, chunk(read(p), 16<<10)...)
		}
	}
	return docs
}

func edge(parts map[string][][]byte) [][]byte {
	rng := rand.New(rand.NewPCG(4, 20261125))
	var docs [][]byte
	ws := []string{" ", "  ", "\t", "\n", "\r\n", "\n\n", " \n", "\n ", "\u00a0", "\u3000", "\v", "\f", "\u2028", "\u0085"}
	words := []string{"word", "Word", "WORD", "don't", "I'LL", "x", "42", "12345", "!", "?!", "//", "<tag>", "\x00", "\x7f", "\x1b[0m", "é", "ﬁ", "日本", "مرحبا", "👍🏽", "👨‍👩‍👧‍👦", "🇩🇪", "ǅ", "ʰ", "\u0301"}
	for d := 0; d < 400; d++ {
		var b bytes.Buffer
		for b.Len() < 4096 {
			if rng.IntN(3) == 0 {
				for k := rng.IntN(40); k >= 0; k-- {
					b.WriteString(ws[rng.IntN(len(ws))])
				}
			} else {
				b.WriteString(words[rng.IntN(len(words))])
			}
		}
		docs = append(docs, b.Bytes())
	}
	// Invalid UTF-8: copies of other documents with bytes spliced in.
	bad := [][]byte{{0xff}, {0xfe, 0xfe}, {0xc3}, {0xe2, 0x82}, {0xf0, 0x9f, 0x98}, {0xed, 0xa0, 0x80}, {0x80}, {0xc0, 0xaf}}
	for _, name := range []string{"en", "code", "multi", "intl"} {
		src := parts[name]
		for k := 0; k < 60 && len(src) > 0; k++ {
			d := append([]byte(nil), src[rng.IntN(len(src))]...)
			for j := 0; j < 1+len(d)/2000; j++ {
				at := rng.IntN(len(d) + 1)
				d = append(d[:at], append(append([]byte(nil), bad[rng.IntN(len(bad))]...), d[at:]...)...)
			}
			docs = append(docs, d)
		}
	}
	return docs
}

// writeSample keeps evenly spaced documents of each part, cut to 3 KB, up to
// a budget per part: the committed corpus of tokenizer/testdata.
func writeSample(path string, names []string, parts map[string][][]byte) {
	budget := map[string]int{"en": 100 << 10, "code": 100 << 10, "multi": 90 << 10, "intl": 80 << 10, "emoji": 30 << 10, "edge": 60 << 10}
	var buf bytes.Buffer
	n := 0
	for _, name := range names {
		docs := parts[name]
		left := budget[name]
		step := max(1, len(docs)/(budget[name]/3000+1))
		for i := 0; i < len(docs) && left > 0; i += step {
			d := docs[i]
			if len(d) > 3000 {
				d = d[:3000]
			}
			if bytes.IndexByte(d, sep) >= 0 || bytes.Contains(d, []byte("<|")) {
				continue
			}
			if n > 0 {
				buf.WriteByte(sep)
			}
			buf.Write(d)
			n++
			left -= len(d)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("sample %d docs %d bytes -> %s\n", n, buf.Len(), path)
}
