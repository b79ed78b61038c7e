package gateway

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// MinKeyBits is the entropy a key given in clear (tenants file,
// QLC_ADMIN_KEY) must have at least, as estimated by keyBits.
const MinKeyBits = 128

// errWeakKey: a key given in clear is too easy to guess.
var errWeakKey = errors.New("gateway: key too guessable")

// checkKeyStrength refuses a key given in clear whose estimated entropy is
// below MinKeyBits. The error never contains the key.
func checkKeyStrength(key string) error {
	if bits := keyBits(key); bits < MinKeyBits {
		return fmt.Errorf("%w: about %d bits of entropy, at least %d needed (random keys only: `openssl rand -hex 32`, "+
			"or a key the admin API made; a key you cannot show in clear may be listed as sha256:<64 hex digits>)",
			errWeakKey, int(bits), MinKeyBits)
	}
	return nil
}

// keyBits estimates the entropy of key, in bits: its length times log2 of
// the alphabet made by the character classes it uses (lower case 26, upper
// case 26, digits 10, anything else 33), where the known "qlc_" prefix
// counts for nothing and neither do characters that an obvious pattern
// predicts: 4 or more steps in a row that each repeat the character before
// or each go one up or each one down (aaaaa, 00000, abcde, 54321), and a
// character that ends a 4-character sequence seen earlier in the key
// (abcdXabcdX…, a pasted part repeated). A random key rarely loses a
// character to these rules; one made by NewKey (32 base-32 characters,
// ~165 bits by this estimate, 150 without a digit) stays above MinKeyBits.
func keyBits(key string) float64 {
	s := strings.TrimPrefix(key, keyPrefix)
	if s == "" {
		return 0
	}
	var lower, upper, digit, other bool
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z':
			lower = true
		case c >= 'A' && c <= 'Z':
			upper = true
		case c >= '0' && c <= '9':
			digit = true
		default:
			other = true
		}
	}
	alphabet := 0
	for _, c := range []struct {
		used bool
		n    int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.used {
			alphabet += c.n
		}
	}
	if alphabet < 2 {
		return 0
	}
	predicted := make([]bool, len(s))
	// Runs: positions i where s[i]-s[i-1] is 0, +1 or -1 and the same as
	// s[i-1]-s[i-2], counted when 4 or more such steps follow one another.
	for i := 1; i < len(s); {
		d := int(s[i]) - int(s[i-1])
		j := i
		if d >= -1 && d <= 1 {
			for j < len(s) && int(s[j])-int(s[j-1]) == d {
				j++
			}
		}
		if j-i >= 4 {
			for k := i; k < j; k++ {
				predicted[k] = true
			}
		}
		i = max(j, i+1)
	}
	// Repeats: the 4 characters ending at i were seen before.
	seen := map[string]bool{}
	for i := 3; i < len(s); i++ {
		g := s[i-3 : i+1]
		if seen[g] {
			predicted[i] = true
		}
		seen[g] = true
	}
	n := 0
	for _, p := range predicted {
		if !p {
			n++
		}
	}
	return float64(n) * math.Log2(float64(alphabet))
}
