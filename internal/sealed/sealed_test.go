package sealed

import (
	"bytes"
	"errors"
	"testing"
)

func ring(t *testing.T, keys ...[]byte) *Ring {
	t.Helper()
	r, err := NewRing(keys[0], keys[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestSealOpen(t *testing.T) {
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	r := ring(t, k1)
	secret := []byte("sk-live-0123456789")
	b, err := r.Seal(secret, AAD("acme", "openai"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b.Data, secret) || b.KeyID != r.PrimaryID() || !r.Current(b) {
		t.Fatalf("box %+v", b)
	}
	if got, err := r.Open(b, AAD("acme", "openai")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("open: %q, %v", got, err)
	}
	// Bound to tenant and endpoint; tampering is detected.
	for _, aad := range []string{AAD("other", "openai"), AAD("acme", "openrouter"), AAD("acm", "eopenai")} {
		if _, err := r.Open(b, aad); !errors.Is(err, ErrOpen) {
			t.Errorf("opened with %q: %v", aad, err)
		}
	}
	bad := Box{KeyID: b.KeyID, Data: bytes.Clone(b.Data)}
	bad.Data[len(bad.Data)-1] ^= 1
	if _, err := r.Open(bad, AAD("acme", "openai")); !errors.Is(err, ErrOpen) {
		t.Errorf("tampered box: %v", err)
	}
	// Another cluster key does not open it; a ring with it as secondary does.
	if _, err := ring(t, k2).Open(b, AAD("acme", "openai")); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("other key: %v", err)
	}
	both := ring(t, k2, k1)
	if got, err := both.Open(b, AAD("acme", "openai")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("secondary: %q, %v", got, err)
	}
	if both.Current(b) {
		t.Fatal("a box under the secondary key counts as current")
	}
	nb, err := both.Reseal(b, AAD("acme", "openai"))
	if err != nil || nb.KeyID != both.PrimaryID() {
		t.Fatalf("reseal: %+v, %v", nb, err)
	}
	if got, err := ring(t, k2).Open(nb, AAD("acme", "openai")); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("resealed box with the new key alone: %q, %v", got, err)
	}
	// The derived key id is not the cluster key, and differs per key.
	if r.PrimaryID() == ring(t, k2).PrimaryID() || bytes.Contains([]byte(r.PrimaryID()), k1) {
		t.Fatal("key ids")
	}
	var none *Ring
	if _, err := none.Seal(secret, ""); !errors.Is(err, ErrNoRing) {
		t.Fatalf("nil ring: %v", err)
	}
	if _, err := NewRing([]byte("short")); err == nil {
		t.Fatal("a short key was accepted")
	}
}
