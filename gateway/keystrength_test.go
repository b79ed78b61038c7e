package gateway

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
)

// Keys given in clear in a tenants file or QLC_ADMIN_KEY need about 128
// bits: random keys pass (NewKey's, openssl's hex and base64), padded,
// short or repetitive ones do not — among them the keys the compose demo
// once shipped.
func TestKeyStrength(t *testing.T) {
	for i := 0; i < 200; i++ {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 20)
		_, _ = rand.Read(b)
		b16 := make([]byte, 16)
		_, _ = rand.Read(b16)
		for _, key := range []string{k, "qlc_" + hex.EncodeToString(b), hex.EncodeToString(b), base64.StdEncoding.EncodeToString(b16), strings.ToUpper(hex.EncodeToString(b))} {
			if err := checkKeyStrength(key); err != nil {
				t.Fatalf("random key of %d characters refused: %v", len(key), err)
			}
		}
	}
	for _, weak := range []string{
		"qlc_composeadmin0000000000000000dev",
		"qlc_composetenant000000000000000dev",
		"qlc_testtenantkey0000000000000000",
		"qlc_0123456789abcdef0123",
		"0123456789abcdef", // 16 characters: enough for the old rule
		"qlc_" + strings.Repeat("a", 60),
		"qlc_" + strings.Repeat("ab12", 4),
		"qlc_",
	} {
		err := checkKeyStrength(weak)
		if err == nil {
			t.Errorf("%q (%.0f bits) accepted", weak, keyBits(weak))
			continue
		}
		if len(weak) > 8 && strings.Contains(err.Error(), weak) {
			t.Errorf("the error echoes the key: %v", err)
		}
	}
	if _, err := ParseTenantsFile([]byte("tenants: [{name: a, keys: [qlc_composetenant000000000000000dev]}]")); err == nil {
		t.Error("a tenants file with a weak key was accepted")
	}
	if _, err := ParseTenantsFile([]byte("admin_keys: [qlc_composeadmin0000000000000000dev]")); err == nil {
		t.Error("a tenants file with a weak admin key was accepted")
	}
}
