package gateway

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
)

// openTestTenancy is a Tenancy on a fresh store in a temp folder.
func openTestTenancy(t *testing.T) *Tenancy {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "r.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tn, err := NewTenancy(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tn
}

// keyWorks reports whether x accepts key.
func keyWorks(x *Tenancy, key string) bool {
	req, _ := http.NewRequest("GET", "http://x/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	_, e := x.authenticate(req)
	return e == nil
}

// TestRevocationReplicatesAsTombstone: gateway a revokes a key; gateway b,
// meanwhile, registered the same key again from a tenants file edited
// after the revocation (a newer row). Replication in either direction, by
// push (a change) or pull (the whole registry), ends with the key revoked
// on both: the tombstone wins over the later "add".
func TestRevocationReplicatesAsTombstone(t *testing.T) {
	a, b := openTestTenancy(t), openTestTenancy(t)
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(file, []byte("tenants:\n  - id: acme\n    name: Acme\n    keys: ["+key+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(file, old, old); err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Tenancy{a, b} {
		if err := x.LoadTenantsFile(file); err != nil {
			t.Fatal(err)
		}
		if !keyWorks(x, key) {
			t.Fatal("the file's key does not work")
		}
	}
	bBefore := encodeRegistry(b.snapshot()) // b's registry before the revocation reaches it
	if _, err := a.RevokeKey(KeyID(key)); err != nil {
		t.Fatal(err)
	}
	// b reloads the file, now newer than the revocation: its row is newer.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(file, later, later); err != nil {
		t.Fatal(err)
	}
	if err := b.LoadTenantsFile(file); err != nil {
		t.Fatal(err)
	}
	bNewer := encodeRegistry(b.snapshot())
	if !keyWorks(b, key) {
		t.Fatal("b never saw the revocation, yet refuses the key")
	}
	// Pull: a asks b for its whole registry (with b's newer "add") and
	// answers with its own.
	a.merge(b.receive(&messages.RegistryChange{WantAll: true}))
	a.merge(bBefore)
	if keyWorks(a, key) {
		t.Fatal("a: b's newer add undid the revocation")
	}
	// Push: a's change (the revoked row, older than b's add) reaches b.
	_, ks := a.snapshot()
	var revoked []store.Key
	for _, k := range ks {
		if k.ID == KeyID(key) {
			revoked = append(revoked, k)
		}
	}
	if len(revoked) != 1 || revoked[0].RevokedAt.IsZero() {
		t.Fatalf("a's row: %+v", revoked)
	}
	b.receive(encodeRegistry(nil, revoked))
	if keyWorks(b, key) {
		t.Fatal("b: the revocation did not win over the newer file row")
	}
	// And neither a later file load nor a late copy brings it back.
	if err := b.LoadTenantsFile(file); err != nil {
		t.Fatal(err)
	}
	b.merge(bNewer)
	if keyWorks(b, key) {
		t.Fatal("b: the key came back after the revocation")
	}
	// A new key for the tenant works: re-enabling takes a new key.
	nk, _, err := b.CreateKey("acme")
	if err != nil || !keyWorks(b, nk) {
		t.Fatalf("a new key for the tenant: %v", err)
	}
	if err := b.AddAdminKey(key); err == nil {
		t.Fatal("a revoked key was registered again as an admin key")
	}
}
