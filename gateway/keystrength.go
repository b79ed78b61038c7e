package gateway

import (
	"fmt"
	"math"
	"strings"
)

// minKeyBits is the least estimated entropy of a key given in clear in a
// tenants file or QLC_ADMIN_KEY: 128 bits (NewKey's keys have 160; so has
// `openssl rand -hex 20`).
const minKeyBits = 128

// keyBits estimates the entropy of a key given in clear, in bits: the
// characters after the "qlc_" prefix, each worth log2 of the smallest
// alphabet that holds them all (hex 16; then digits 10, lower case 26, upper
// case 26 and anything else 33, added up by the classes present), except
// the characters an obvious pattern predicts, which add nothing:
//
//   - a run of 4 or more characters that each repeat the one before or each
//     go one up or each one down ("0000…" padding, "abcd", "4321") counts
//     as its first character;
//   - a character that ends a 4-character sequence seen earlier in the key
//     (a pasted part repeated: "ab12ab12…", "passwordpassword").
//
// It cannot tell a random key from a guessable word of the same shape; it
// refuses keys too short or too regular to have been drawn at random. A
// random key rarely loses a character to these rules: keys in NewKey's
// format score 150 bits or more (TestKeyPatterns).
func keyBits(key string) float64 {
	body := strings.TrimPrefix(key, keyPrefix)
	if body == "" {
		return 0
	}
	hexLower, hexUpper := true, true
	var digit, lower, upper, other bool
	for _, r := range body {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z':
			lower = true
			hexUpper = false
			hexLower = hexLower && r <= 'f'
		case r >= 'A' && r <= 'Z':
			upper = true
			hexLower = false
			hexUpper = hexUpper && r <= 'F'
		default:
			other, hexLower, hexUpper = true, false, false
		}
	}
	alphabet := 16.0
	if !hexLower && !hexUpper {
		alphabet = 0
		for _, c := range []struct {
			present bool
			size    float64
		}{{digit, 10}, {lower, 26}, {upper, 26}, {other, 33}} {
			if c.present {
				alphabet += c.size
			}
		}
	}
	return float64(len(body)-predicted(body)) * math.Log2(alphabet)
}

// predicted counts the characters of s that keyBits' patterns predict.
func predicted(s string) int {
	pred := make([]bool, len(s))
	// Runs: 3 or more steps in a row of the same 0, +1 or -1.
	for i := 1; i < len(s); {
		d := int(s[i]) - int(s[i-1])
		j := i
		if d >= -1 && d <= 1 {
			for j < len(s) && int(s[j])-int(s[j-1]) == d {
				j++
			}
		}
		if j-i >= 3 {
			for k := i; k < j; k++ {
				pred[k] = true
			}
		}
		i = max(j, i+1)
	}
	// Repeats: the 4 characters ending at i were seen before.
	seen := map[string]bool{}
	for i := 3; i < len(s); i++ {
		g := s[i-3 : i+1]
		if seen[g] {
			pred[i] = true
		}
		seen[g] = true
	}
	n := 0
	for _, p := range pred {
		if p {
			n++
		}
	}
	return n
}

// checkKeyStrength refuses a key given in clear whose estimated entropy is
// under minKeyBits. The error never echoes the key.
func checkKeyStrength(key string) error {
	if b := keyBits(key); b < minKeyBits {
		return fmt.Errorf("a key needs at least %d bits of entropy, this one has about %.0f (too short or too regular): make one with `openssl rand -hex 20` (prefix qlc_), or give its \"sha256:<hex>\"", minKeyBits, b)
	}
	return nil
}
