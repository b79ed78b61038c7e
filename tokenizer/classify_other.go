//go:build !amd64 || purego

package tokenizer

// hasSIMD is false: this build has no SIMD classifier.
var hasSIMD = false

// simdName names the SIMD path of this build.
const simdName = "none"

// classifySIMD falls back to the generic classifier.
func classifySIMD(dst []blockMasks, src []byte) { classifyGeneric(dst, src) }
