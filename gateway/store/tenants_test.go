package store

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTenantRoundTrip(t *testing.T) {
	s := openTemp(t)
	in := []Tenant{
		// Out of id order on purpose: Tenants sorts.
		{ID: "t-zeta", Name: "Zeta", CreatedAt: at(0), UpdatedAt: at(1),
			Limits: Limits{RequestsPerMinute: 60, TokensPerMinute: 100000, ConcurrentRuns: 3, TokenBudget: 5000000,
				BudgetPeriod: "week", Profiles: []string{"fast", "deep"}, Weight: 7, MaxStreams: 4}},
		{ID: "t-alpha", Name: "Alpha", CreatedAt: at(2), UpdatedAt: at(3)},                                  // nil profiles
		{ID: "t-empty", Name: "", CreatedAt: at(4), UpdatedAt: at(5), Limits: Limits{Profiles: []string{}}}, // empty, not nil
		{ID: "t-gone", Name: "Gone", UpdatedAt: at(6), Deleted: true},                                       // zero CreatedAt
		{ID: "t-far", Name: "Far", CreatedAt: time.Date(2261, 12, 31, 23, 59, 59, 999999999, time.UTC),
			UpdatedAt: time.Date(1678, 1, 1, 0, 0, 0, 1, time.UTC)},
	}
	for _, tn := range in {
		ok, err := s.PutTenant(tn)
		if err != nil || !ok {
			t.Fatalf("PutTenant(%s) = %v, %v; want true, nil", tn.ID, ok, err)
		}
	}
	for _, want := range in {
		got, err := s.Tenant(want.ID)
		if err != nil {
			t.Fatalf("Tenant(%s): %v", want.ID, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Tenant(%s) =\n %#v\nwant\n %#v", want.ID, got, want)
		}
	}
	all, err := s.Tenants()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tn := range all {
		ids = append(ids, tn.ID)
	}
	if want := []string{"t-alpha", "t-empty", "t-far", "t-gone", "t-zeta"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("Tenants() ids = %v, want %v", ids, want)
	}
	if all[4].Limits.Profiles == nil || all[1].Limits.Profiles == nil || all[0].Limits.Profiles != nil {
		t.Errorf("nil/empty profiles not preserved by Tenants(): %#v, %#v, %#v",
			all[0].Limits.Profiles, all[1].Limits.Profiles, all[4].Limits.Profiles)
	}

	// Times in another zone are stored as the same instant and come back UTC.
	zone := time.FixedZone("X", -7*3600)
	if _, err := s.PutTenant(Tenant{ID: "t-zone", UpdatedAt: at(9).In(zone)}); err != nil {
		t.Fatal(err)
	}
	got, err := s.Tenant("t-zone")
	if err != nil || !got.UpdatedAt.Equal(at(9)) || got.UpdatedAt.Location() != time.UTC {
		t.Errorf("zoned UpdatedAt came back as %v (%v)", got.UpdatedAt, err)
	}

	if _, err := s.Tenant("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Tenant(nope) = %v, want ErrNotFound", err)
	}
}

func TestTenantsEmpty(t *testing.T) {
	s := openTemp(t)
	if ts, err := s.Tenants(); err != nil || len(ts) != 0 {
		t.Errorf("Tenants() = %v, %v", ts, err)
	}
	if ks, err := s.Keys(); err != nil || len(ks) != 0 {
		t.Errorf("Keys() = %v, %v", ks, err)
	}
}

func TestTenantLastWriterWins(t *testing.T) {
	stored := Tenant{ID: "t1", Name: "v1", CreatedAt: at(0), UpdatedAt: at(10 * time.Second)}
	tests := []struct {
		name        string
		put         Tenant
		wantApplied bool
	}{
		{"older update ignored", Tenant{ID: "t1", Name: "old", UpdatedAt: at(10*time.Second - 1)}, false},
		{"equal timestamp keeps the stored row", Tenant{ID: "t1", Name: "tie", UpdatedAt: at(10 * time.Second)}, false},
		{"newer by a nanosecond applied", Tenant{ID: "t1", Name: "new", UpdatedAt: at(10*time.Second + 1),
			Limits: Limits{Weight: 3}}, true},
		{"newer tombstone applied", Tenant{ID: "t1", Name: "v1", UpdatedAt: at(time.Hour), Deleted: true}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := openTemp(t)
			if ok, err := s.PutTenant(stored); err != nil || !ok {
				t.Fatalf("first PutTenant = %v, %v", ok, err)
			}
			ok, err := s.PutTenant(tc.put)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.wantApplied {
				t.Errorf("PutTenant applied = %v, want %v", ok, tc.wantApplied)
			}
			want := stored
			if tc.wantApplied {
				want = tc.put
			}
			got, err := s.Tenant("t1")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("stored tenant = %+v, want %+v", got, want)
			}
		})
	}
}

func TestPutTenantRejects(t *testing.T) {
	s := openTemp(t)
	tests := []struct {
		name string
		t    Tenant
		want string
	}{
		{"empty id", Tenant{UpdatedAt: base}, "empty id"},
		{"no version", Tenant{ID: "t"}, "updated_at is not set"},
		{"bad limits", Tenant{ID: "t", UpdatedAt: base, Limits: Limits{Weight: 2000}}, "weight"},
		{"unstorable time", Tenant{ID: "t", UpdatedAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}, "outside the storable range"},
		{"unstorable created", Tenant{ID: "t", UpdatedAt: base, CreatedAt: time.Date(1, 1, 2, 0, 0, 0, 0, time.UTC)}, "created_at"},
	}
	for _, tc := range tests {
		ok, err := s.PutTenant(tc.t)
		if ok || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: PutTenant = %v, %v; want ErrInvalid mentioning %q", tc.name, ok, err, tc.want)
		}
	}
	if ts, _ := s.Tenants(); len(ts) != 0 {
		t.Errorf("rejected tenants were stored: %v", ts)
	}
}

func TestKeyRoundTripAndLWW(t *testing.T) {
	s := openTemp(t)
	admin := Key{ID: "kadmin", Admin: true, Hash: hashOf("qlc_admin_secret"), CreatedAt: at(1), UpdatedAt: at(1)}
	user := Key{ID: "kuser", TenantID: "t1", Hash: hashOf("qlc_user_secret"), CreatedAt: at(2), UpdatedAt: at(2)}
	for _, k := range []Key{user, admin} {
		if ok, err := s.PutKey(k); err != nil || !ok {
			t.Fatalf("PutKey(%s) = %v, %v", k.ID, ok, err)
		}
	}
	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	if want := []Key{admin, user}; !reflect.DeepEqual(keys, want) {
		t.Errorf("Keys() =\n %+v\nwant\n %+v", keys, want)
	}

	// Revocation is a newer version of the key.
	revoked := user
	revoked.RevokedAt, revoked.UpdatedAt = at(time.Minute+3), at(time.Minute+3)
	if ok, err := s.PutKey(revoked); err != nil || !ok {
		t.Fatalf("revoke = %v, %v", ok, err)
	}
	// A stale replica of the unrevoked key, even with an equal timestamp,
	// must not resurrect it.
	stale := user
	stale.UpdatedAt = revoked.UpdatedAt
	if ok, err := s.PutKey(stale); err != nil || ok {
		t.Errorf("equal-version PutKey applied = %v, %v", ok, err)
	}
	if ok, err := s.PutKey(user); err != nil || ok {
		t.Errorf("older PutKey applied = %v, %v", ok, err)
	}
	got, err := s.Key("kuser")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, revoked) {
		t.Errorf("Key(kuser) = %+v, want %+v", got, revoked)
	}
	if _, err := s.Key("missing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Key(missing) = %v, want ErrNotFound", err)
	}

	// JSON: the zero RevokedAt is omitted; the set one is present.
	b, _ := json.Marshal(admin)
	if strings.Contains(string(b), "revoked_at") {
		t.Errorf("unrevoked key json has revoked_at: %s", b)
	}
	b, _ = json.Marshal(got)
	if !strings.Contains(string(b), `"revoked_at":"`) || !strings.Contains(string(b), `"tenant_id":"t1"`) {
		t.Errorf("revoked key json = %s", b)
	}
}

// TestRevokedKeyIsATombstone: once a key id is revoked, no later "add" of
// it (a restart registering it again, a tenants file with a newer mtime, a
// peer's copy) makes it valid; a revoked row wins over any unrevoked one,
// and two revocations converge on the earlier.
func TestRevokedKeyIsATombstone(t *testing.T) {
	s := openTemp(t)
	k := Key{ID: "kt", TenantID: "t1", Hash: hashOf("qlc_tombstone_secret"), CreatedAt: at(1), UpdatedAt: at(1)}
	if ok, err := s.PutKey(k); err != nil || !ok {
		t.Fatalf("PutKey = %v, %v", ok, err)
	}
	revoked := k
	revoked.RevokedAt, revoked.UpdatedAt = at(time.Minute), at(time.Minute)
	if ok, err := s.PutKey(revoked); err != nil || !ok {
		t.Fatalf("revoke = %v, %v", ok, err)
	}
	for name, d := range map[string]time.Duration{"an hour later": time.Hour, "a year later": 365 * 24 * time.Hour} {
		again := k
		again.CreatedAt, again.UpdatedAt = at(d), at(d)
		if ok, err := s.PutKey(again); err != nil || ok {
			t.Errorf("an unrevoked row %s replaced the revoked one: %v, %v", name, ok, err)
		}
	}
	if got, err := s.Key("kt"); err != nil || !got.RevokedAt.Equal(revoked.RevokedAt) {
		t.Fatalf("after re-adds: %+v, %v; want revoked at %v", got, err, revoked.RevokedAt)
	}
	// A later revocation keeps the first; an earlier one (a peer that revoked
	// first) replaces it, so every replica ends with the same row.
	later := revoked
	later.RevokedAt, later.UpdatedAt = at(2*time.Minute), at(2*time.Minute)
	if ok, err := s.PutKey(later); err != nil || ok {
		t.Errorf("a later revocation replaced an earlier one: %v, %v", ok, err)
	}
	earlier := revoked
	earlier.RevokedAt, earlier.UpdatedAt = at(30*time.Second), at(30*time.Second)
	if ok, err := s.PutKey(earlier); err != nil || !ok {
		t.Errorf("an earlier revocation was not applied: %v, %v", ok, err)
	}
	// A revocation wins over an unrevoked row with a newer version (a gateway
	// that re-registered the key from a file after the revocation was made
	// elsewhere receives the revocation).
	k2 := Key{ID: "kt2", Admin: true, Hash: hashOf("qlc_tombstone_secret_2"), CreatedAt: at(1), UpdatedAt: at(time.Hour)}
	if ok, err := s.PutKey(k2); err != nil || !ok {
		t.Fatalf("PutKey = %v, %v", ok, err)
	}
	rev2 := k2
	rev2.UpdatedAt, rev2.RevokedAt = at(time.Minute), at(time.Minute)
	if ok, err := s.PutKey(rev2); err != nil || !ok {
		t.Errorf("an older revocation lost to a newer add: %v, %v", ok, err)
	}
}

func TestPutKeyRejects(t *testing.T) {
	s := openTemp(t)
	tests := []struct {
		name string
		k    Key
		want string
	}{
		{"empty id", Key{TenantID: "t", Hash: hashOf("x"), UpdatedAt: base}, "empty id"},
		{"admin with a tenant", Key{ID: "k", Admin: true, TenantID: "t", Hash: hashOf("x"), UpdatedAt: base}, "admin key has tenant"},
		{"tenant key without tenant", Key{ID: "k", Hash: hashOf("x"), UpdatedAt: base}, "no tenant"},
		{"short hash", Key{ID: "k", TenantID: "t", Hash: []byte("plaintext"), UpdatedAt: base}, "want a 32-byte SHA-256"},
		{"no hash", Key{ID: "k", TenantID: "t", UpdatedAt: base}, "hash is 0 bytes"},
		{"no version", Key{ID: "k", TenantID: "t", Hash: hashOf("x")}, "updated_at"},
	}
	for _, tc := range tests {
		ok, err := s.PutKey(tc.k)
		if ok || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: PutKey = %v, %v; want ErrInvalid mentioning %q", tc.name, ok, err, tc.want)
		}
	}
}
