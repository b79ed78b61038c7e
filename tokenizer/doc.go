// Package tokenizer counts and encodes text exactly as OpenAI's tiktoken does
// for the cl100k_base (GPT-4, GPT-3.5) and o200k_base (GPT-4o, o-series,
// GPT-4.1, GPT-5) encodings. QLC uses it to fit prompts into a model's
// context window, to meter tenants' tokens, and to report usage when a
// provider does not.
//
// It is a pure package (standard library and klauspost/cpuid only): the actor
// pool, batching and HTTP endpoint that serve it live elsewhere.
//
// # Use
//
//	enc, err := tokenizer.ForModel("gpt-4o")         // or tokenizer.Get(tokenizer.O200kBase)
//	n := enc.Count(prompt)                           // no allocation in steady state
//	ids := enc.EncodeOrdinary(prompt)                // special-token text is plain text
//	ids, err = enc.Encode(text, tokenizer.EndOfText) // explicit allow-list; others are an error
//	fit, n := enc.Truncate(prompt, 4096)             // prefix at a token and character boundary
//	text, err := enc.DecodeString(ids)
//
// An *Encoding is immutable and safe for concurrent use; per-call working
// memory comes from a sync.Pool. Models without a known OpenAI encoding are
// an error (ErrUnknownModel) unless ResolveModel is asked for the
// Approximate mode, whose Resolution carries Approximate=true and a Label()
// such as "o200k_base (approximate for llama-3.1-70b)" to show wherever the
// count is used.
//
// # Exactness
//
// Pre-tokenization is a hand-written scanner that makes the same splits as
// tiktoken's regexes (see pretok.go), with the Unicode 16.0 character classes
// of tiktoken's regex engine (Rust regex-syntax), generated into
// unicode_tables.go by internal/ucdgen (go generate; Go's own unicode
// package is 15.0 and would split code points new in 16.0, such as U+1C89,
// differently). Merging follows tiktoken's byte-pair merge: lowest rank first,
// leftmost on ties. Every byte round-trips, NUL and DEL included; invalid
// UTF-8 is encoded as if each invalid byte were U+FFFD, which is what a Go
// client's JSON request would carry to the API. The vocabularies are the
// official rank files, embedded and checked against their SHA-256 when first
// loaded (ErrCorruptVocabulary otherwise).
//
// The tests compare the token ids with github.com/pkoukk/tiktoken-go (a
// test-only reference) on a committed 430 KB sample and, with
// QLC_TOKENIZER_CORPUS set, on the ~50 MB corpus that corpus/build.sh gathers
// from Debian packages and Go's sources; fuzzers compare the SIMD and generic
// paths, ours and the reference, and check Decode(Encode(x)) == x.
//
// # Speed
//
// Each 64-byte block of input is first classified into bit masks (letters,
// upper and lower case, digits, spaces, newlines, other ASCII, bytes >= 0x80:
// one cache line per block) so that runs are measured with one count of
// trailing zeros. On amd64 CPUs with AVX2 (detected at run time with cpuid)
// the masks come from hand-written assembly (classify_amd64.s); elsewhere, or
// with Config.Generic, from portable Go (classifyGeneric, the reference for
// the assembly). Build with the purego tag to leave the assembly out.
//
// Tokens are found in an open-addressing table whose slots hold the first 8
// bytes of each token, with one byte of each slot's hash kept in a separate
// small array so that misses rarely touch the large one. Each pooled scratch
// keeps a piece cache (piececache.go: recent pieces and their tokens, 16384
// pieces of up to 16 bytes in a 2-way set-associative table of 32-byte
// entries, and 2048 pieces of up to 32 bytes) and a pair cache (the rank of
// two adjacent tokens' bytes, 32768 pairs of 8 bytes), about 900 KB in all,
// so that the hot entries stay in L2. Pieces that are not a token merge as
// in tiktoken; from 12 bytes the scan for the lowest rank reads per-block
// minima, and from 128 bytes a radix-heap queue over a linked list takes
// over, so a megabyte of one letter merges in linear time, not quadratic.
package tokenizer
