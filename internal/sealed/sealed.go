// Package sealed encrypts small secrets (tenants' provider API keys) under
// keys derived from the cluster keyring, so that what the gateway stores and
// what crosses to the nodes is the same AES-GCM box, and only a process
// holding the cluster key opens it.
//
// Life cycle:
//
//  1. Every process builds a Ring from its cluster keyring (primary first,
//     then the secondary keys of a rotation, docs/keys.md): each cluster
//     key yields, through HKDF-SHA256 with its own info label, a 256-bit
//     AES-GCM key and a public key id.
//  2. The gateway seals a secret with the primary (Seal): the box records
//     the key id, so after a rotation a secondary key still opens it.
//  3. Any process opens it (Open) with the key the box names, and with the
//     same associated data (tenant and endpoint): a box copied to another
//     tenant's row or run does not open.
//  4. At start, a gateway re-seals every box not under its primary
//     (Current tells), so the third phase of a rotation can drop the old key.
//
// A Ring is immutable and safe for concurrent use. Nothing here logs, and no
// error contains a secret or a key.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
)

// Info labels of the HKDF derivations: distinct from every other use of the
// cluster key (the actor transport's CA uses "qlc actor transport CA v1").
const (
	infoKey = "qlc provider keys AES-256-GCM v1"
	infoID  = "qlc provider keys key id v1"
)

var (
	// ErrNoRing: there is no ring (no cluster key and no local secret).
	ErrNoRing = errors.New("sealed: no key to open or seal secrets (no cluster key)")
	// ErrUnknownKey: the box was sealed under a key not in this ring.
	ErrUnknownKey = errors.New("sealed: the box was sealed under a cluster key this process does not hold")
	// ErrOpen: the box does not open (tampered, or another tenant's or endpoint's).
	ErrOpen = errors.New("sealed: the box does not open (wrong tenant or endpoint, or damaged)")
)

// Box is a sealed secret: KeyID names the derived key that sealed it, Data
// is the nonce followed by the AES-GCM ciphertext and tag.
type Box struct {
	KeyID string
	Data  []byte
}

type ringKey struct {
	id   string
	aead cipher.AEAD
}

// Ring holds the keys derived from a cluster keyring, the primary first.
type Ring struct {
	keys []ringKey
}

// NewRing derives a Ring from the cluster keyring: primary then secondary
// keys (each at least 16 bytes). Duplicate keys are dropped.
func NewRing(primary []byte, secondary ...[]byte) (*Ring, error) {
	r := &Ring{}
	for i, k := range append([][]byte{primary}, secondary...) {
		if len(k) < 16 {
			return nil, fmt.Errorf("sealed: cluster key %d is %d bytes, want at least 16", i+1, len(k))
		}
		aesKey, err := hkdf.Key(sha256.New, k, nil, infoKey, 32)
		if err != nil {
			return nil, fmt.Errorf("sealed: derive: %w", err)
		}
		idBytes, err := hkdf.Key(sha256.New, k, nil, infoID, 8)
		if err != nil {
			return nil, fmt.Errorf("sealed: derive: %w", err)
		}
		block, err := aes.NewCipher(aesKey)
		if err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("sealed: %w", err)
		}
		id := hex.EncodeToString(idBytes)
		dup := false
		for _, o := range r.keys {
			dup = dup || o.id == id
		}
		if !dup {
			r.keys = append(r.keys, ringKey{id: id, aead: aead})
		}
	}
	return r, nil
}

// PrimaryID is the id of the key Seal uses.
func (r *Ring) PrimaryID() string {
	if r == nil {
		return ""
	}
	return r.keys[0].id
}

// Seal encrypts secret under the primary key, bound to aad (which is not
// secret and not stored: Open needs the same).
func (r *Ring) Seal(secret []byte, aad string) (Box, error) {
	if r == nil {
		return Box{}, ErrNoRing
	}
	k := r.keys[0]
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(secret)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return Box{}, fmt.Errorf("sealed: nonce: %w", err)
	}
	return Box{KeyID: k.id, Data: k.aead.Seal(nonce, nonce, secret, []byte(aad))}, nil
}

// Open decrypts b with the key it names; aad must be what Seal was given.
func (r *Ring) Open(b Box, aad string) ([]byte, error) {
	if r == nil {
		return nil, ErrNoRing
	}
	for _, k := range r.keys {
		if k.id != b.KeyID {
			continue
		}
		n := k.aead.NonceSize()
		if len(b.Data) < n+k.aead.Overhead() {
			return nil, ErrOpen
		}
		out, err := k.aead.Open(nil, b.Data[:n], b.Data[n:], []byte(aad))
		if err != nil {
			return nil, ErrOpen
		}
		return out, nil
	}
	return nil, ErrUnknownKey
}

// Current reports whether b is sealed under the primary key.
func (r *Ring) Current(b Box) bool { return r != nil && b.KeyID == r.keys[0].id }

// Reseal opens b and seals it again under the primary (a no-op for a box
// already under it).
func (r *Ring) Reseal(b Box, aad string) (Box, error) {
	if r.Current(b) {
		return b, nil
	}
	plain, err := r.Open(b, aad)
	if err != nil {
		return Box{}, err
	}
	defer clear(plain)
	return r.Seal(plain, aad)
}

// AAD is the associated data of a tenant's key for an endpoint: a box opens
// only for the tenant and endpoint it was sealed for.
func AAD(tenant, endpoint string) string {
	return fmt.Sprintf("qlc-provider-key\x00%d:%s\x00%s", len(tenant), tenant, endpoint)
}

// String and LogValue keep a Ring out of logs.
func (r *Ring) String() string { return fmt.Sprintf("sealed.Ring(%d keys)", len(r.keys)) }

// LogValue implements slog.LogValuer.
func (r *Ring) LogValue() slog.Value { return slog.StringValue(r.String()) }
