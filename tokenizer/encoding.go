package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"
)

// Errors returned by this package; match them with errors.Is.
var (
	// ErrUnknownEncoding: the encoding name is not cl100k_base or o200k_base.
	ErrUnknownEncoding = errors.New("tokenizer: unknown encoding")
	// ErrUnknownModel: the model has no known OpenAI encoding (see ResolveModel for the approximate mode).
	ErrUnknownModel = errors.New("tokenizer: unknown model")
	// ErrCorruptVocabulary: an embedded rank file failed its SHA-256 check or did not parse.
	ErrCorruptVocabulary = errors.New("tokenizer: corrupt vocabulary")
	// ErrDisallowedSpecial: the text holds a special token that the caller did not allow.
	ErrDisallowedSpecial = errors.New("tokenizer: disallowed special token in text")
	// ErrUnknownSpecial: an allow-list names a special token the encoding does not have.
	ErrUnknownSpecial = errors.New("tokenizer: unknown special token")
	// ErrInvalidToken: Decode met a token id that the encoding does not have.
	ErrInvalidToken = errors.New("tokenizer: invalid token id")
)

// Encoding names.
const (
	Cl100kBase = "cl100k_base"
	O200kBase  = "o200k_base"
)

// Special tokens of the two encodings (the same text in both, different ids).
const (
	EndOfText   = "<|endoftext|>"
	FIMPrefix   = "<|fim_prefix|>"
	FIMMiddle   = "<|fim_middle|>"
	FIMSuffix   = "<|fim_suffix|>"
	EndOfPrompt = "<|endofprompt|>"
)

type spec struct {
	file, sha256 string
	o200k        bool
	specials     map[string]int
}

var specs = map[string]spec{
	Cl100kBase: {
		file:   "cl100k_base.tiktoken",
		sha256: "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
		specials: map[string]int{
			EndOfText: 100257, FIMPrefix: 100258, FIMMiddle: 100259, FIMSuffix: 100260, EndOfPrompt: 100276,
		},
	},
	O200kBase: {
		file:     "o200k_base.tiktoken",
		sha256:   "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
		o200k:    true,
		specials: map[string]int{EndOfText: 199999, EndOfPrompt: 200018},
	},
}

// Config selects an encoding and its code path.
type Config struct {
	// Encoding is cl100k_base or o200k_base. Required.
	Encoding string
	// Generic forces the portable Go byte classifier even where SIMD is
	// available. The two paths give the same tokens; Generic exists for tests,
	// benchmarks and to rule SIMD out when chasing a problem.
	Generic bool
}

// DefaultConfig returns the configuration for cl100k_base on the fastest
// path this CPU supports.
func DefaultConfig() Config { return Config{Encoding: Cl100kBase} }

func (c *Config) validate() error {
	if _, ok := specs[c.Encoding]; !ok {
		return fmt.Errorf("%w: %q (want %s or %s)", ErrUnknownEncoding, c.Encoding, Cl100kBase, O200kBase)
	}
	return nil
}

// Encoding is a loaded BPE encoding. It is immutable and safe for concurrent use.
type Encoding struct {
	name     string
	v        *vocab
	o200k    bool
	simd     bool
	classify classifyFunc
	specials map[string]int
	special  map[int]string
	pool     sync.Pool // *scratch
}

var (
	vocabMu sync.Mutex
	vocabs  = map[string]*vocab{}
	shared  sync.Map // Config -> *Encoding, for Get
)

// Load returns a new Encoding for cfg. The vocabulary is parsed and verified
// once per process and shared by all Encodings of the same name.
func Load(cfg Config) (*Encoding, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sp := specs[cfg.Encoding]
	vocabMu.Lock()
	v, ok := vocabs[cfg.Encoding]
	if !ok {
		var err error
		if v, err = loadVocab(sp.file, sp.sha256); err != nil {
			vocabMu.Unlock()
			return nil, err
		}
		vocabs[cfg.Encoding] = v
	}
	vocabMu.Unlock()
	e := &Encoding{name: cfg.Encoding, v: v, o200k: sp.o200k, specials: sp.specials, special: map[int]string{}}
	for s, id := range sp.specials {
		e.special[id] = s
	}
	e.classify = classifyGeneric
	if hasSIMD && !cfg.Generic {
		e.classify, e.simd = classifySIMD, true
	}
	return e, nil
}

// Get returns the shared Encoding of that name on the fastest path.
func Get(name string) (*Encoding, error) {
	if e, ok := shared.Load(name); ok {
		return e.(*Encoding), nil
	}
	e, err := Load(Config{Encoding: name})
	if err != nil {
		return nil, err
	}
	got, _ := shared.LoadOrStore(name, e)
	return got.(*Encoding), nil
}

// Name returns the encoding name, such as "cl100k_base".
func (e *Encoding) Name() string { return e.name }

// Path names the byte-classification path in use: "avx2" or "generic".
func (e *Encoding) Path() string {
	if e.simd {
		return simdName
	}
	return "generic"
}

// VocabSize is the number of token ids, special tokens included.
func (e *Encoding) VocabSize() int {
	n := e.v.size()
	for id := range e.special {
		n = max(n, id+1)
	}
	return n
}

// SpecialTokens returns the special tokens of the encoding and their ids.
func (e *Encoding) SpecialTokens() map[string]int {
	m := make(map[string]int, len(e.specials))
	for k, v := range e.specials {
		m[k] = v
	}
	return m
}

// scratch is the per-call working memory, pooled so that steady-state calls
// do not allocate.
type scratch struct {
	cache *pieceCache
	pairs *pairCache
	masks []blockMasks
	tail  [64]byte
	small smallScratch
	ms    mergeScratch
	toks  []int
	buf   []byte // replacement text for invalid UTF-8
}

// maxPooled bounds the memory a pooled scratch keeps (inputs above ~4 MB
// get fresh buffers that are dropped after the call).
const maxPooled = 4 << 20

func (e *Encoding) getScratch() *scratch {
	if s, ok := e.pool.Get().(*scratch); ok {
		return s
	}
	return &scratch{}
}

func (e *Encoding) putScratch(s *scratch) {
	if cap(s.masks)*64 > maxPooled || cap(s.toks)*8 > maxPooled || s.ms.q.n*8 > maxPooled || cap(s.ms.next)*4 > maxPooled || cap(s.buf) > maxPooled {
		return
	}
	e.pool.Put(s)
}

// sanitize replaces every byte of invalid UTF-8 with U+FFFD, as Go's
// []rune(s) conversion and encoding/json do (and as tiktoken sees text that a
// Go client sends to the API). Valid text is returned as is.
func (sc *scratch) sanitize(text string) string {
	if utf8.ValidString(text) {
		return text
	}
	b := sc.buf[:0]
	for i := 0; i < len(text); {
		r, n := utf8.DecodeRuneInString(text[i:])
		b = utf8.AppendRune(b, r) // RuneError for an invalid byte, n == 1
		i += n
	}
	sc.buf = b
	return string(b)
}

// encodeOrdinary appends the tokens of text (no special tokens) to dst.
// If limit >= 0 it stops once dst has grown by limit tokens or more.
func (e *Encoding) encodeOrdinary(dst []int, text string, sc *scratch, limit int) []int {
	n := len(text)
	if n == 0 {
		return dst
	}
	nb := (n + 63) >> 6
	sc.masks = grow(sc.masks, nb)
	classifyString(e.classify, sc.masks, text, &sc.tail)
	scan := scanner{s: text, n: n, m: sc.masks, o200k: e.o200k}
	v := e.v
	if sc.cache == nil {
		sc.cache, sc.pairs = new(pieceCache), new(pairCache)
	}
	cache := sc.cache
	base := len(dst)
	for i := 0; i < n; {
		j := scan.next(i)
		p := text[i:j]
		start := i
		i = j
		switch {
		case len(p) == 1:
			dst = append(dst, int(v.byte1[p[0]]))
		case len(p) <= shortPiece:
			lo, hi := pieceKey(text, start, len(p))
			set := cache.set(lo, hi, len(p))
			if ce := set.find(lo, hi, len(p)); ce == nil {
				dst = e.encodeShortMiss(dst, p, lo, hi, set, sc)
			} else if ce.nt == 1 {
				dst = append(dst, int(ce.toks[0]))
			} else {
				dst = appendToks(dst, ce.toks[:ce.nt])
			}
		case len(p) <= longPiece:
			k := keyAt(text, start, 8)
			h := hashKey(k, p)
			if ce := cache.longSlot(h); ce.holds(p, k) {
				dst = appendToks(dst, ce.toks[:ce.nt])
			} else {
				dst = e.encodeLongMiss(dst, p, k, h, sc)
			}
		default:
			if r, ok := v.lookup(p); ok {
				dst = append(dst, int(r))
			} else if len(p) < largePiece {
				dst = v.mergeSmall(dst, p, &sc.small, sc.pairs)
			} else {
				dst = v.mergeLarge(dst, p, &sc.ms, sc.pairs)
			}
		}
		if limit >= 0 && len(dst)-base >= limit {
			break
		}
	}
	return dst
}

// appendToks appends cached tokens to dst.
func appendToks(dst []int, toks []uint32) []int {
	for _, t := range toks {
		dst = append(dst, int(t))
	}
	return dst
}

// encodeShortMiss appends the tokens of a piece of 2..shortPiece bytes that
// missed its short-cache set, and remembers them there (or, when they are
// more than shortToks, in the long cache, which it checks first).
func (e *Encoding) encodeShortMiss(dst []int, p string, lo, hi uint64, set *shortSet, sc *scratch) []int {
	h := hashKey(lo, p)
	start := len(dst)
	if r, ok := e.v.lookupKey(p, lo, h); ok {
		dst = append(dst, int(r))
		set.put(lo, hi, len(p), dst[start:])
		return dst
	}
	le := sc.cache.longSlot(h)
	if le.holds(p, lo) {
		return appendToks(dst, le.toks[:le.nt])
	}
	dst = e.v.mergeSmall(dst, p, &sc.small, sc.pairs)
	toks := dst[start:]
	switch {
	case len(toks) <= shortToks:
		set.put(lo, hi, len(p), toks)
	case len(toks) <= longToks:
		le.put(p, lo, toks)
	}
	return dst
}

// encodeLongMiss appends the tokens of a piece of shortPiece+1..longPiece
// bytes that missed the long cache, and remembers them there.
func (e *Encoding) encodeLongMiss(dst []int, p string, k, h uint64, sc *scratch) []int {
	start := len(dst)
	if r, ok := e.v.lookupKey(p, k, h); ok {
		dst = append(dst, int(r))
	} else {
		dst = e.v.mergeSmall(dst, p, &sc.small, sc.pairs)
	}
	if toks := dst[start:]; len(toks) <= longToks {
		sc.cache.longSlot(h).put(p, k, toks)
	}
	return dst
}

// EncodeOrdinary returns the tokens of text, treating special-token text as
// ordinary text (tiktoken's encode_ordinary). Invalid UTF-8 is encoded as if
// each invalid byte were U+FFFD.
func (e *Encoding) EncodeOrdinary(text string) []int {
	return e.AppendEncodeOrdinary(nil, text)
}

// AppendEncodeOrdinary appends the tokens of text to dst (see EncodeOrdinary).
func (e *Encoding) AppendEncodeOrdinary(dst []int, text string) []int {
	sc := e.getScratch()
	dst = e.encodeOrdinary(dst, sc.sanitize(text), sc, -1)
	e.putScratch(sc)
	return dst
}

// Encode returns the tokens of text, where the special tokens named in
// allowed become their ids (tiktoken's encode(text, allowed_special=...)).
// Any other special token found in the text is an error wrapping
// ErrDisallowedSpecial, as in tiktoken's default disallowed_special="all".
// Use EncodeOrdinary to treat all special-token text as plain text.
func (e *Encoding) Encode(text string, allowed ...string) ([]int, error) {
	return e.AppendEncode(nil, text, allowed...)
}

// AppendEncode appends the tokens of text to dst (see Encode).
func (e *Encoding) AppendEncode(dst []int, text string, allowed ...string) ([]int, error) {
	for _, a := range allowed {
		if _, ok := e.specials[a]; !ok {
			return dst, fmt.Errorf("%w: %q in %s", ErrUnknownSpecial, a, e.name)
		}
	}
	sc := e.getScratch()
	defer e.putScratch(sc)
	text = sc.sanitize(text)
	start := 0
	for from := 0; ; {
		k := strings.Index(text[from:], "<|")
		if k < 0 {
			break
		}
		at := from + k
		name := ""
		for s := range e.specials {
			if strings.HasPrefix(text[at:], s) && len(s) > len(name) {
				name = s
			}
		}
		if name == "" {
			from = at + 2
			continue
		}
		if !slices.Contains(allowed, name) {
			return dst, fmt.Errorf("%w: %q at byte %d (allow it, or use EncodeOrdinary)", ErrDisallowedSpecial, name, at)
		}
		dst = e.encodeOrdinary(dst, text[start:at], sc, -1)
		dst = append(dst, e.specials[name])
		start = at + len(name)
		from = start
	}
	return e.encodeOrdinary(dst, text[start:], sc, -1), nil
}

// Count returns the number of tokens of text, as len(EncodeOrdinary(text)),
// without allocating in steady state.
func (e *Encoding) Count(text string) int {
	sc := e.getScratch()
	sc.toks = e.encodeOrdinary(sc.toks[:0], sc.sanitize(text), sc, -1)
	n := len(sc.toks)
	e.putScratch(sc)
	return n
}

// CountBatch stores Count(texts[i]) in dst[i], reusing dst when it is long
// enough, and returns it with the total. One call amortises the scratch
// memory over the batch; call it from several goroutines to use more cores.
func (e *Encoding) CountBatch(texts []string, dst []int) ([]int, int) {
	dst = grow(dst, len(texts))
	sc := e.getScratch()
	total := 0
	for i, t := range texts {
		sc.toks = e.encodeOrdinary(sc.toks[:0], sc.sanitize(t), sc, -1)
		dst[i] = len(sc.toks)
		total += dst[i]
	}
	e.putScratch(sc)
	return dst, total
}

// Truncate returns the longest prefix of text that ends at a token boundary
// and a UTF-8 character boundary and encodes to at most maxTokens tokens,
// together with its token count. Text that already fits is returned whole.
func (e *Encoding) Truncate(text string, maxTokens int) (string, int) {
	if maxTokens <= 0 {
		return "", 0
	}
	sc := e.getScratch()
	defer e.putScratch(sc)
	clean := sc.sanitize(text)
	sc.toks = e.encodeOrdinary(sc.toks[:0], clean, sc, maxTokens+1)
	if len(sc.toks) <= maxTokens {
		return text, len(sc.toks)
	}
	// End offsets of the first maxTokens tokens in clean.
	k := maxTokens
	end := 0
	for _, t := range sc.toks[:k] {
		end += len(e.v.token(t))
	}
	for {
		for k > 0 && !utf8.RuneStart(byteAt(clean, end)) {
			k--
			end -= len(e.v.token(sc.toks[k]))
		}
		if k == 0 {
			return "", 0
		}
		prefix := clean[:end]
		sc.toks = e.encodeOrdinary(sc.toks[:0], prefix, sc, -1)
		if n := len(sc.toks); n <= maxTokens {
			if clean != text { // map back: the prefix of the original with the same runes
				prefix = origPrefix(text, prefix)
			}
			return prefix, n
		}
		// Rare: the prefix re-encodes into more tokens; back off one token.
		sc.toks = e.encodeOrdinary(sc.toks[:0], clean, sc, k+1)
		k--
		end = 0
		for _, t := range sc.toks[:k] {
			end += len(e.v.token(t))
		}
	}
}

func byteAt(s string, i int) byte {
	if i >= len(s) {
		return 0
	}
	return s[i]
}

// origPrefix returns the prefix of text whose sanitized form is clean.
func origPrefix(text, clean string) string {
	i, j := 0, 0
	for j < len(clean) && i < len(text) {
		_, n := utf8.DecodeRuneInString(text[i:])
		_, m := utf8.DecodeRuneInString(clean[j:])
		i += n
		j += m
	}
	return text[:i]
}

// Decode returns the bytes of tokens. The result may be invalid UTF-8 when
// tokens is cut inside a character.
func (e *Encoding) Decode(tokens []int) ([]byte, error) {
	return e.AppendDecode(nil, tokens)
}

// DecodeString is Decode returning a string.
func (e *Encoding) DecodeString(tokens []int) (string, error) {
	b, err := e.AppendDecode(nil, tokens)
	return string(b), err
}

// AppendDecode appends the bytes of tokens to dst.
func (e *Encoding) AppendDecode(dst []byte, tokens []int) ([]byte, error) {
	for i, t := range tokens {
		if s := e.v.token(t); s != "" {
			dst = append(dst, s...)
			continue
		}
		if s, ok := e.special[t]; ok {
			dst = append(dst, s...)
			continue
		}
		return dst, fmt.Errorf("%w: %d at index %d in %s", ErrInvalidToken, t, i, e.name)
	}
	return dst, nil
}

// TokenBytes returns the bytes of one token id, special tokens included.
func (e *Encoding) TokenBytes(id int) ([]byte, error) {
	return e.AppendDecode(nil, []int{id})
}
