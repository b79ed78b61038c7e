//go:build amd64 && !purego

package tokenizer

import "github.com/klauspost/cpuid/v2"

// hasSIMD reports whether this CPU runs the AVX2 classifier (decided once, at start).
var hasSIMD = cpuid.CPU.Supports(cpuid.AVX2)

// simdName names the SIMD path of this build.
const simdName = "avx2"

// classifyAVX2 writes the masks of nblocks 64-byte blocks of src to dst.
// It needs AVX2; see classify_amd64.s.
//
//go:noescape
func classifyAVX2(dst *blockMasks, src *byte, nblocks int)

// classifySIMD is classifyGeneric with AVX2.
func classifySIMD(dst []blockMasks, src []byte) {
	n := len(src) >> 6
	if n == 0 {
		return
	}
	_ = dst[n-1]
	classifyAVX2(&dst[0], &src[0], n)
}
