package tokenizer

import "unicode/utf8"

// To regenerate unicode_tables.go, point QLC_REGEX_SYNTAX_TABLES at the
// src/unicode_tables directory of a regex-syntax 0.8.5+ source tree (Unicode
// 16.0; e.g. a checkout of github.com/rust-lang/regex) and run go generate.
//
//go:generate go run ./internal/ucdgen -regex-syntax ${QLC_REGEX_SYNTAX_TABLES} -o unicode_tables.go

// Character-class bits of one code point, as tiktoken's regexes see them with
// the Unicode 16.0 tables of Rust's regex-syntax crate (see unicode_tables.go).
const (
	cL  = 1 << iota // \p{L}
	cN              // \p{N}
	cWS             // \s (White_Space)
	cU              // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
	cW              // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
	cM              // \p{M}
)

// cHi marks, in byteClass, a byte that starts (or continues) a multi-byte
// code point, whose class classAtHi decodes.
const cHi = 1 << 7

// byteClass holds the class bits of the 128 ASCII code points, and cHi for
// the bytes >= 0x80.
var byteClass = func() (t [256]uint8) {
	for c := 0; c < 128; c++ {
		t[c] = uniStage2[int(uniStage1[0])<<8|c]
	}
	for c := 128; c < 256; c++ {
		t[c] = cHi
	}
	return t
}()

// runeClass returns the class bits of r (0 for invalid or unassigned code points).
func runeClass(r rune) uint8 {
	if uint32(r) > utf8.MaxRune {
		return 0
	}
	return uniStage2[int(uniStage1[r>>8])<<8|int(r&0xFF)]
}

// classAt decodes the code point at s[i] and returns its class bits and width.
// Invalid UTF-8 never reaches here: the encoder replaces it first.
func classAt(s string, i int) (uint8, int) {
	if c := byteClass[s[i]]; c&cHi == 0 {
		return c, 1
	}
	return classAtHi(s, i)
}

// classAtHi is classAt for a code point that starts with a byte >= 0x80.
// The scanner's hot paths test byteClass themselves and call it only then.
func classAtHi(s string, i int) (uint8, int) {
	r, sz := utf8.DecodeRuneInString(s[i:])
	return runeClass(r), sz
}
