package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Provider key rows: newest wins, a deletion is a tombstone without a box,
// bad rows are refused.
func TestProviderKeysRows(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "qlc.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t0 := time.Unix(1700000000, 123).UTC()
	k := ProviderKey{TenantID: "acme", Endpoint: "openai", KeyID: "k1", Box: []byte{1, 2, 3}, Hint: "…abcd", CreatedAt: t0, UpdatedAt: t0}
	if ok, err := s.PutProviderKey(k); !ok || err != nil {
		t.Fatalf("put: %v %v", ok, err)
	}
	older := k
	older.Box, older.UpdatedAt = []byte{9}, t0.Add(-time.Second)
	if ok, _ := s.PutProviderKey(older); ok {
		t.Fatal("an older row replaced a newer one")
	}
	del := ProviderKey{TenantID: "acme", Endpoint: "openai", KeyID: "k1", Box: []byte{1}, Hint: "x", CreatedAt: t0, UpdatedAt: t0.Add(time.Second), Deleted: true}
	if ok, err := s.PutProviderKey(del); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	rows, err := s.ProviderKeys()
	if err != nil || len(rows) != 1 {
		t.Fatalf("rows: %+v %v", rows, err)
	}
	if r := rows[0]; !r.Deleted || len(r.Box) != 0 || r.KeyID != "" || r.Hint != "" || !r.UpdatedAt.Equal(del.UpdatedAt) || !r.CreatedAt.Equal(t0) {
		t.Fatalf("tombstone: %+v", r)
	}
	for _, bad := range []ProviderKey{
		{Endpoint: "openai", KeyID: "k", Box: []byte{1}, UpdatedAt: t0},
		{TenantID: "acme", Endpoint: "openai", UpdatedAt: t0},
		{TenantID: "acme", Endpoint: "openai", KeyID: "k", Box: []byte{1}},
	} {
		if _, err := s.PutProviderKey(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("put %+v: %v", bad, err)
		}
	}
}
