package tokenizer

// Byte classification: the first step of pre-tokenization turns each 64-byte
// block of the input into bit masks, one bit per byte, so that the scanner can
// find the end of a run of letters, digits or spaces with one count of
// trailing zeros instead of a loop. Only ASCII is classified here; bytes >= 0x80
// set the hi mask and the scanner decodes those code points itself.
//
// classifyGeneric is the reference; classify_amd64.s computes the same masks
// with AVX2 and is chosen at run time (see useAVX2).

// Indexes into blockMasks.
const (
	mLetter = iota // [A-Za-z]
	mUpper         // [A-Z]
	mDigit         // [0-9]
	mSpace         // [\t\n\v\f\r ]
	mNL            // [\r\n]
	mHi            // [\x80-\xff]
	mLower         // [a-z]
	mOther         // none of letter, digit, space, hi (ASCII punctuation and controls)
	nMasks
)

// blockMasks holds the masks of one 64-byte block (one cache line); bit i is
// byte i of the block.
type blockMasks [nMasks]uint64

// byteBits[b] has bit k set when byte b belongs to mask k.
var byteBits = func() (t [256]uint8) {
	for b := 0; b < 256; b++ {
		var v uint8
		switch {
		case b >= 'A' && b <= 'Z':
			v = 1<<mLetter | 1<<mUpper
		case b >= 'a' && b <= 'z':
			v = 1 << mLetter
		case b >= '0' && b <= '9':
			v = 1 << mDigit
		case b == '\r' || b == '\n':
			v = 1<<mSpace | 1<<mNL
		case b == ' ' || b == '\t' || b == '\v' || b == '\f':
			v = 1 << mSpace
		case b >= 0x80:
			v = 1 << mHi
		}
		t[b] = v
	}
	return t
}()

// classifyGeneric fills dst[k] for every full 64-byte block k of src.
// len(src) must be a multiple of 64 and len(dst) >= len(src)/64.
func classifyGeneric(dst []blockMasks, src []byte) {
	for k := 0; k+64 <= len(src); k += 64 {
		blk := src[k : k+64 : k+64]
		var l, u, d, s, nl, hi uint64
		for i := 0; i < 64; i += 8 {
			for j := 0; j < 8; j++ {
				v := uint64(byteBits[blk[i+j]])
				sh := uint(i + j)
				l |= (v >> mLetter & 1) << sh
				u |= (v >> mUpper & 1) << sh
				d |= (v >> mDigit & 1) << sh
				s |= (v >> mSpace & 1) << sh
				nl |= (v >> mNL & 1) << sh
				hi |= (v >> mHi & 1) << sh
			}
		}
		dst[k>>6] = blockMasks{l, u, d, s, nl, hi, l &^ u, ^(l | d | s | hi)}
	}
}

// classifyFunc is the signature shared by the generic and SIMD classifiers.
type classifyFunc func(dst []blockMasks, src []byte)

// classifyString classifies s into dst (len(dst) >= (len(s)+63)/64), using
// fn for the full blocks and the generic path for a zero-padded tail.
// Padding bytes are NUL, which is in mOther only, and that mask is cleared
// past the end: no bit of any mask is set past len(s).
func classifyString(fn classifyFunc, dst []blockMasks, s string, tail *[64]byte) {
	full := len(s) &^ 63
	if full > 0 {
		fn(dst, unsafeBytes(s[:full]))
	}
	if rest := len(s) - full; rest > 0 {
		*tail = [64]byte{}
		copy(tail[:], s[full:])
		classifyGeneric(dst[full>>6:], tail[:])
		dst[full>>6][mOther] &= 1<<uint(rest) - 1
	}
}
