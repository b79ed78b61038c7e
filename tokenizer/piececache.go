package tokenizer

import "encoding/binary"

// The piece cache remembers the tokens of recent pieces, so that hot pieces
// are found in a table that stays in the L2 cache instead of the
// multi-megabyte rank table, and BPE merging runs once per distinct piece
// (per pooled scratch) instead of once per occurrence.
//
// Of the pieces longer than one byte (one byte is one token), 98 % in the
// corpus are at most 16 bytes long, nearly all of one to three tokens: those
// live in 32-byte entries, two to a 64-byte line, as a 2-way set-associative
// table with least-recently-used replacement (a line is one memory access,
// and two ways miss a fifth less often than one). Pieces of 17 to 32 bytes,
// and short pieces of 4 to 6 tokens, go to a smaller direct-mapped table of
// 64-byte entries. Longer pieces are mostly distinct and are not cached.
const (
	shortSetBits = 13 // 8192 sets × 2 ways × 32 bytes = 512 KB
	shortPiece   = 16 // longest piece of a short entry, bytes
	shortToks    = 3  // most tokens of a short entry

	longBits  = 11 // 2048 entries × 64 bytes = 128 KB
	longPiece = 32 // longest cached piece, bytes
	longToks  = 6  // most tokens of a long entry
)

// pieceCache is the per-scratch piece cache.
type pieceCache struct {
	short [1 << shortSetBits]shortSet
	long  [1 << longBits]longEntry
}

// shortSet is one 64-byte line of the short table: two ways, the most
// recently used first.
type shortSet [2]shortEntry

// shortEntry caches a piece of 2..shortPiece bytes; n == 0 marks it empty.
type shortEntry struct {
	lo, hi uint64 // bytes 0..7 and 8..15 of the piece, little endian, zero padded
	toks   [shortToks]uint32
	n, nt  uint8
}

// longEntry caches a piece of 2..longPiece bytes; n == 0 marks it empty.
type longEntry struct {
	n, nt uint8
	toks  [longToks]uint32
	key   uint64              // first 8 bytes of the piece (load8)
	rest  [longPiece - 8]byte // the bytes after those
}

// pieceKey returns the first 8 bytes of text[i:i+n] and the next 8 (both
// zero padded), with whole-word loads where text has the bytes.
func pieceKey(text string, i, n int) (lo, hi uint64) {
	lo = keyAt(text, i, min(n, 8))
	if n > 8 {
		hi = keyAt(text, i+8, n-8)
	}
	return lo, hi
}

// set returns the set of the short piece with key lo, hi and length n.
func (c *pieceCache) set(lo, hi uint64, n int) *shortSet {
	h := (lo^uint64(n)<<59)*0x9E3779B97F4A7C15 ^ hi*0xC2B2AE3D27D4EB4F
	return &c.short[h>>(64-shortSetBits)]
}

// find returns the entry of the piece in set s, moving it to way 0, or nil.
func (s *shortSet) find(lo, hi uint64, n int) *shortEntry {
	if e := &s[0]; e.lo == lo && e.hi == hi && int(e.n) == n {
		return e
	}
	if e := &s[1]; e.lo == lo && e.hi == hi && int(e.n) == n {
		s[0], s[1] = s[1], s[0]
		return &s[0]
	}
	return nil
}

// put remembers toks as the tokens of the piece in way 0 of s; the old way 0
// becomes way 1 and the old way 1 is dropped.
func (s *shortSet) put(lo, hi uint64, n int, toks []int) {
	s[1] = s[0]
	e := &s[0]
	e.lo, e.hi, e.n, e.nt = lo, hi, uint8(n), uint8(len(toks))
	for i, t := range toks {
		e.toks[i] = uint32(t)
	}
}

// longSlot returns the entry where the piece p with hash h (hashKey) lives.
func (c *pieceCache) longSlot(h uint64) *longEntry {
	return &c.long[h>>(64-longBits)]
}

// holds reports whether e caches the piece p with first 8 bytes k.
func (e *longEntry) holds(p string, k uint64) bool {
	return e.key == k && int(e.n) == len(p) && (len(p) <= 8 || string(e.rest[:len(p)-8]) == p[8:])
}

// put remembers toks (at most longToks) as the tokens of p.
func (e *longEntry) put(p string, k uint64, toks []int) {
	e.key, e.n, e.nt = k, uint8(len(p)), uint8(len(toks))
	copy(e.rest[:], p[min(8, len(p)):])
	for i, t := range toks {
		e.toks[i] = uint32(t)
	}
}

// keyAt is load8(text[i:i+n]) for n <= 8, with one unaligned load when text
// has 8 bytes from i.
func keyAt(text string, i, n int) uint64 {
	if i+8 <= len(text) {
		k := binary.LittleEndian.Uint64(unsafeBytes(text[i : i+8]))
		if n < 8 {
			k &= 1<<(8*uint(n)) - 1
		}
		return k
	}
	return load8(text[i : i+n])
}
