package tokenizer

import (
	"slices"
	"testing"
	"unicode/utf8"
)

// FuzzClassify: the AVX2 classifier gives the generic masks for any bytes.
func FuzzClassify(f *testing.F) {
	for _, s := range edgeCases {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if !hasSIMD {
			t.Skip("no SIMD classifier")
		}
		buf := make([]byte, (len(data)+63)&^63)
		copy(buf, data)
		checkClassify(t, buf)
	})
}

// FuzzEncode: SIMD and generic paths agree, the reference agrees (unless the
// text holds a code point whose class changed in Unicode 16), Count agrees,
// and Decode(Encode(x)) == x for valid UTF-8.
func FuzzEncode(f *testing.F) {
	for _, s := range edgeCases {
		f.Add(s)
	}
	encs := map[string][2]*Encoding{}
	for _, name := range []string{Cl100kBase, O200kBase} {
		encs[name] = [2]*Encoding{mustLoad(f, name, false), mustLoad(f, name, true)}
	}
	f.Fuzz(func(t *testing.T, s string) {
		if len(s) > 1024 { // the reference merges quadratically
			s = s[:1024]
		}
		for name, e := range encs {
			got := e[0].EncodeOrdinary(s)
			if gen := e[1].EncodeOrdinary(s); !slices.Equal(got, gen) {
				t.Fatalf("%s %q: SIMD %v, generic %v", name, s, got, gen)
			}
			if n := e[0].Count(s); n != len(got) {
				t.Fatalf("%s %q: Count %d, len(Encode) %d", name, s, n, len(got))
			}
			if !changedInUnicode16(s) {
				if want := reference(t, name).EncodeOrdinary(s); !slices.Equal(got, want) {
					t.Fatalf("%s %q: %v, reference %v", name, s, got, want)
				}
			}
			if utf8.ValidString(s) {
				if back, err := e[0].DecodeString(got); err != nil || back != s {
					t.Fatalf("%s %q: decoded %q, %v", name, s, back, err)
				}
			}
		}
	})
}
