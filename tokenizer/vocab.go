package tokenizer

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/bits"
	"strconv"
)

// The official rank files published with OpenAI's tiktoken, byte for byte
// (see vocab/LICENSE). They are checked against the SHA-256 below when loaded.
//
//go:embed vocab/cl100k_base.tiktoken vocab/o200k_base.tiktoken
var vocabFS embed.FS

const noRank = ^uint32(0)

// maxVocabRank bounds the ranks a rank file may hold (cl100k's and o200k's
// are below 1<<18): rank-table slots and the pair cache keep ranks in 20 bits
// (the pair cache's pairNoRank is maxVocabRank itself, so ranks stay below it).
const maxVocabRank = 1<<20 - 1

// maxTokenLen bounds the length of a token (cl100k's and o200k's longest are
// 128 bytes); a slot keeps it in 8 bits.
const maxTokenLen = 255

// slot is one entry of the open-addressing rank table. Tokens of up to 8
// bytes are compared in the slot alone; longer ones also against their bytes
// in the arena, whose offset the slot holds so that a lookup waits for at
// most three cache misses (tag, slot, arena), not four (and off[rank]).
type slot struct {
	key  uint64 // first 8 bytes of the token, little endian, zero padded
	info uint64 // arena offset<<28 | length<<20 | rank (see slotInfo)
}

// slotInfo packs a token's rank (< maxVocabRank), length (<= maxTokenLen)
// and arena offset into slot.info; rank, len and off unpack them.
func slotInfo(rank, n, off uint32) uint64 {
	return uint64(off)<<28 | uint64(n)<<20 | uint64(rank)
}

func (sl *slot) rank() uint32 { return uint32(sl.info) & maxVocabRank }
func (sl *slot) len() uint32  { return uint32(sl.info>>20) & maxTokenLen }
func (sl *slot) off() uint64  { return sl.info >> 28 }

// vocab maps token bytes to ranks (= token ids) and back. Immutable once built.
type vocab struct {
	slots []slot
	tags  []uint8 // one byte of each slot's hash (never 0), 0 if empty: misses stay in this small array
	mask  uint64
	arena string   // all token bytes, in rank order
	off   []uint32 // token r is arena[off[r]:off[r+1]]; empty for unused ranks

	byte1  [256]uint32 // rank of each single byte (all are tokens)
	pair2  []uint32    // rank of the 2-byte token b0<<8|b1, or noRank
	maxLen int         // longest token
}

// loadVocab parses an embedded .tiktoken file after checking its SHA-256.
func loadVocab(file, wantSHA string) (*vocab, error) {
	data, err := vocabFS.ReadFile("vocab/" + file)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: vocabulary %s: %w", file, err)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != wantSHA {
		return nil, fmt.Errorf("tokenizer: vocabulary %s: %w: sha256 %s, want %s", file, ErrCorruptVocabulary, got, wantSHA)
	}
	return parseVocab(data)
}

func parseVocab(data []byte) (*vocab, error) {
	type entry struct{ start, end, rank uint32 }
	var entries []entry
	buf := make([]byte, 0, len(data)/2)
	maxRank := uint32(0)
	for line := 1; len(data) > 0; line++ {
		nl := bytes.IndexByte(data, '\n')
		var ln []byte
		if nl < 0 {
			ln, data = data, nil
		} else {
			ln, data = data[:nl], data[nl+1:]
		}
		if len(ln) == 0 {
			continue
		}
		sp := bytes.IndexByte(ln, ' ')
		if sp < 0 {
			return nil, fmt.Errorf("tokenizer: vocabulary line %d: %w: no space", line, ErrCorruptVocabulary)
		}
		r, err := strconv.ParseUint(string(ln[sp+1:]), 10, 32)
		if err != nil || r >= maxVocabRank {
			return nil, fmt.Errorf("tokenizer: vocabulary line %d: %w: bad rank", line, ErrCorruptVocabulary)
		}
		start := len(buf)
		var err2 error
		if buf, err2 = base64.StdEncoding.AppendDecode(buf, ln[:sp]); err2 != nil || len(buf) == start {
			return nil, fmt.Errorf("tokenizer: vocabulary line %d: %w: bad base64", line, ErrCorruptVocabulary)
		}
		entries = append(entries, entry{uint32(start), uint32(len(buf)), uint32(r)})
		maxRank = max(maxRank, uint32(r))
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("tokenizer: %w: empty vocabulary", ErrCorruptVocabulary)
	}
	// Re-lay the arena in rank order so that off[] is monotonic.
	v := &vocab{off: make([]uint32, maxRank+2)}
	byRank := make([]int32, maxRank+1)
	for i := range byRank {
		byRank[i] = -1
	}
	for i, e := range entries {
		if byRank[e.rank] >= 0 {
			return nil, fmt.Errorf("tokenizer: %w: rank %d twice", ErrCorruptVocabulary, e.rank)
		}
		byRank[e.rank] = int32(i)
	}
	arena := make([]byte, 0, len(buf))
	for r := range byRank {
		v.off[r] = uint32(len(arena))
		if i := byRank[r]; i >= 0 {
			arena = append(arena, buf[entries[i].start:entries[i].end]...)
		}
	}
	v.off[maxRank+1] = uint32(len(arena))
	v.arena = string(arena)
	size := 1 << bits.Len(uint(len(entries))*2) // load factor <= 0.5
	v.slots = make([]slot, size)
	v.tags = make([]uint8, size)
	v.mask = uint64(size - 1)
	for r := range byRank {
		if byRank[r] < 0 {
			continue
		}
		tok := v.arena[v.off[r]:v.off[r+1]]
		if _, ok := v.lookup(tok); ok {
			return nil, fmt.Errorf("tokenizer: %w: token of rank %d twice", ErrCorruptVocabulary, r)
		}
		if len(tok) > maxTokenLen {
			return nil, fmt.Errorf("tokenizer: %w: token of rank %d is %d bytes long (at most %d)", ErrCorruptVocabulary, r, len(tok), maxTokenLen)
		}
		v.maxLen = max(v.maxLen, len(tok))
		k := load8(tok)
		h := hashKey(k, tok)
		for i := h & v.mask; ; i = (i + 1) & v.mask {
			if v.tags[i] == 0 {
				v.slots[i] = slot{key: k, info: slotInfo(uint32(r), uint32(len(tok)), v.off[r])}
				v.tags[i] = tagOf(h)
				break
			}
		}
	}
	v.pair2 = make([]uint32, 1<<16)
	for i := range v.pair2 {
		v.pair2[i] = v.rank(string([]byte{byte(i >> 8), byte(i)}))
	}
	for b := range v.byte1 {
		r, ok := v.lookup(string([]byte{byte(b)}))
		if !ok {
			return nil, fmt.Errorf("tokenizer: %w: byte %#x is no token", ErrCorruptVocabulary, b)
		}
		v.byte1[b] = r
	}
	return v, nil
}

// rankOf is rank with fast paths for 2-byte and over-long strings.
func (v *vocab) rankOf(s string) uint32 {
	switch {
	case len(s) == 2:
		return v.pair2[uint16(s[0])<<8|uint16(s[1])]
	case len(s) > v.maxLen:
		return noRank
	}
	r, _ := v.lookup(s)
	return r
}

// load8 returns the first (up to) 8 bytes of s, little endian, zero padded.
func load8(s string) uint64 {
	if len(s) >= 8 {
		return binary.LittleEndian.Uint64(unsafeBytes(s[:8]))
	}
	var k uint64
	switch len(s) {
	case 7:
		k = uint64(s[6])<<48 | uint64(s[5])<<40 | uint64(s[4])<<32 | uint64(binary.LittleEndian.Uint32(unsafeBytes(s[:4])))
	case 6:
		k = uint64(s[5])<<40 | uint64(s[4])<<32 | uint64(binary.LittleEndian.Uint32(unsafeBytes(s[:4])))
	case 5:
		k = uint64(s[4])<<32 | uint64(binary.LittleEndian.Uint32(unsafeBytes(s[:4])))
	case 4:
		k = uint64(binary.LittleEndian.Uint32(unsafeBytes(s[:4])))
	case 3:
		k = uint64(s[2])<<16 | uint64(s[1])<<8 | uint64(s[0])
	case 2:
		k = uint64(s[1])<<8 | uint64(s[0])
	case 1:
		k = uint64(s[0])
	}
	return k
}

// hashKey hashes a token given its first 8 bytes k.
func hashKey(k uint64, s string) uint64 {
	h := (k ^ uint64(len(s))<<58) * 0x9E3779B97F4A7C15
	for i := 8; i < len(s); i += 8 {
		h = (h ^ load8(s[i:])) * 0xC2B2AE3D27D4EB4F
		h ^= h >> 29
	}
	return h ^ h>>32
}

// tagOf is the tag byte of hash h: its top byte, never 0.
func tagOf(h uint64) uint8 {
	return uint8(h>>56) | 1
}

// lookup returns the rank of the token s.
func (v *vocab) lookup(s string) (uint32, bool) {
	k := load8(s)
	return v.lookupKey(s, k, hashKey(k, s))
}

// lookupKey is lookup given k = load8(s) and h = hashKey(k, s).
func (v *vocab) lookupKey(s string, k, h uint64) (uint32, bool) {
	n := uint32(len(s))
	tag := tagOf(h)
	for i := h & v.mask; ; i = (i + 1) & v.mask {
		t := v.tags[i]
		if t == tag {
			sl := &v.slots[i]
			if sl.key == k && sl.len() == n {
				if off := sl.off(); n <= 8 || v.arena[off+8:off+uint64(n)] == s[8:] {
					return sl.rank(), true
				}
			}
		} else if t == 0 {
			return noRank, false
		}
	}
}

// rank is lookup returning noRank on a miss.
func (v *vocab) rank(s string) uint32 {
	r, _ := v.lookup(s)
	return r
}

// token returns the bytes of rank r, or "" when r is not a token.
func (v *vocab) token(r int) string {
	if r < 0 || r+1 >= len(v.off) {
		return ""
	}
	return v.arena[v.off[r]:v.off[r+1]]
}

// size is the number of ranks (one more than the largest).
func (v *vocab) size() int { return len(v.off) - 1 }
