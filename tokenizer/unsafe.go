package tokenizer

import "unsafe"

// unsafeBytes returns the bytes of s without copying; callers must not write them.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
