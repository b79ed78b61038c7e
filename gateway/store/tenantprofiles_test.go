package store

import (
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// Tenant profile rows: newest wins, a deletion is a tombstone without a
// definition, bad rows are refused; rows and max_profiles survive a reopen.
func TestTenantProfilesRows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "qlc.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1700000000, 123).UTC()
	p := TenantProfile{TenantID: "acme", Name: "mine", Definition: `{"provider":"sim"}`, CreatedAt: t0, UpdatedAt: t0}
	if ok, err := s.PutTenantProfile(p); !ok || err != nil {
		t.Fatalf("put: %v %v", ok, err)
	}
	older := p
	older.Definition, older.UpdatedAt = `{"provider":"old"}`, t0.Add(-time.Second)
	if ok, _ := s.PutTenantProfile(older); ok {
		t.Fatal("an older row replaced a newer one")
	}
	other := TenantProfile{TenantID: "beta", Name: "mine", Definition: `{"provider":"sim-fast"}`, CreatedAt: t0, UpdatedAt: t0}
	if ok, err := s.PutTenantProfile(other); !ok || err != nil {
		t.Fatalf("put other tenant's: %v %v", ok, err)
	}
	del := TenantProfile{TenantID: "acme", Name: "mine", Definition: "x", CreatedAt: t0, UpdatedAt: t0.Add(time.Second), Deleted: true}
	if ok, err := s.PutTenantProfile(del); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	for _, bad := range []TenantProfile{
		{Name: "x", Definition: "{}", UpdatedAt: t0},
		{TenantID: "acme", Name: "x", UpdatedAt: t0},
		{TenantID: "acme", Name: "x", Definition: "{}"},
	} {
		if _, err := s.PutTenantProfile(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("put %+v: %v", bad, err)
		}
	}
	tn := Tenant{ID: "acme", Name: "Acme", Limits: Limits{MaxProfiles: 3}, CreatedAt: t0, UpdatedAt: t0}
	if _, err := s.PutTenant(tn); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rows, err := s.TenantProfiles()
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows: %+v %v", rows, err)
	}
	if r := rows[0]; r.TenantID != "acme" || !r.Deleted || r.Definition != "" || !r.UpdatedAt.Equal(del.UpdatedAt) || !r.CreatedAt.Equal(t0) {
		t.Fatalf("tombstone: %+v", r)
	}
	if r := rows[1]; r.TenantID != "beta" || r.Deleted || r.Definition != other.Definition {
		t.Fatalf("other tenant's row: %+v", r)
	}
	got, err := s.Tenant("acme")
	if err != nil || got.Limits.MaxProfiles != 3 {
		t.Fatalf("tenant: %+v %v", got, err)
	}
	if err := (Limits{MaxProfiles: MaxTenantProfiles + 1}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("max_profiles above the maximum: %v", err)
	}
}
