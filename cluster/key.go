package cluster

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrBadKey is wrapped by every ParseKey error.
var ErrBadKey = errors.New("cluster: bad cluster key")

// ParseKey decodes a cluster key as given in an environment variable or flag: hex (32, 48 or 64 digits)
// or base64 (standard or URL alphabet, padded or not) of 16, 24 or 32 bytes. Surrounding white space is
// ignored. Errors say which encodings were tried and never echo the key. A hex-length string that is
// hex except for one or two characters is rejected as a typo rather than read as base64.
func ParseKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrBadKey)
	}
	if len(s) == 32 || len(s) == 48 || len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, nil
		}
		// A 32-character base64 string is also a valid 24-byte key, so a typo in a hex key would
		// silently give another key. Random base64 is almost never nearly all hex digits.
		if nonHex := strings.IndexFunc(s, notHex); nonHex >= 0 && countFunc(s, notHex) <= 2 {
			return nil, fmt.Errorf("%w: looks like hex of %d bytes with a bad digit at position %d", ErrBadKey, len(s)/2, nonHex+1)
		}
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		b, err := enc.DecodeString(s)
		if err != nil {
			continue
		}
		switch len(b) {
		case 16, 24, 32:
			return b, nil
		default:
			return nil, fmt.Errorf("%w: decodes (base64) to %d bytes, want 16, 24 or 32", ErrBadKey, len(b))
		}
	}
	return nil, fmt.Errorf("%w: %d characters that are neither hex of 16/24/32 bytes nor base64", ErrBadKey, len(s))
}

func notHex(r rune) bool {
	return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r >= 'A' && r <= 'F')
}

func countFunc(s string, f func(rune) bool) int {
	n := 0
	for _, r := range s {
		if f(r) {
			n++
		}
	}
	return n
}
