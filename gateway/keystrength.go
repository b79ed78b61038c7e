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
// case 26 and anything else 33, added up by the classes present), with every
// run of four or more equal characters counted as one (padding such as
// "0000…" adds nothing). It cannot tell a random key from a guessable word
// of the same shape; it refuses keys too short or too regular to have been
// drawn at random.
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
	n, run := 0, 0
	var prev rune = -1
	for _, r := range body {
		if r == prev {
			run++
		} else {
			prev, run = r, 1
		}
		if run < 4 {
			n++
		} else if run == 4 {
			n -= 2 // the run's first three characters were counted; it is worth one
		}
	}
	return float64(n) * math.Log2(alphabet)
}

// checkKeyStrength refuses a key given in clear whose estimated entropy is
// under minKeyBits. The error never echoes the key.
func checkKeyStrength(key string) error {
	if b := keyBits(key); b < minKeyBits {
		return fmt.Errorf("a key needs at least %d bits of entropy, this one has about %.0f (too short or too regular): make one with `openssl rand -hex 20` (prefix qlc_), or give its \"sha256:<hex>\"", minKeyBits, b)
	}
	return nil
}
