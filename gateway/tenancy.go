package gateway

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/messages"
)

// Tenancy is the registry of tenants and API keys: held in the gateway's
// store, cached in memory for authentication, and replicated between the
// cluster's gateways (every admin change is sent to the others; each
// gateway pulls the others' registries at start and every minute; the most
// recent change of a row wins). Keys are random, shown once, and kept only
// as SHA-256 hashes (a key has 160 random bits, so a fast hash is enough);
// they are compared in constant time and never logged.
type Tenancy struct {
	st     *store.Store
	logger *slog.Logger

	mu      sync.RWMutex
	tenants map[string]store.Tenant
	keys    map[string]store.Key // by key id
	// providerKeys are the tenants' own provider keys, sealed (tombstones
	// included), by providerKeyID; secrets seals and re-seals them (nil:
	// none can be stored). See providerkeys.go.
	providerKeys map[string]store.ProviderKey
	secrets      *sealed.Ring
	keyListeners []func(tenant, endpoint string, sk *messages.SealedSecret)
	// tenantProfiles are the tenants' own profiles (tombstones included),
	// by tenantProfileID. See tenantprofiles.go.
	tenantProfiles map[string]store.TenantProfile
	// defaultRuns is concurrent_runs for a tenant created (admin API, tenants
	// file) without one; 0: no limit.
	defaultRuns int64

	// Set by Replicate: the services that reach the other gateways.
	engine *actors.Services
	peers  func() []string
	stop   chan struct{}
	done   chan struct{}
}

// keyPrefix starts every key QLC makes (so a leaked one is recognisable).
const keyPrefix = "qlc_"

// NewTenancy loads the registry from st.
func NewTenancy(st *store.Store, logger *slog.Logger) (*Tenancy, error) {
	if logger == nil {
		logger = slog.Default()
	}
	t := &Tenancy{st: st, logger: logger, tenants: map[string]store.Tenant{}, keys: map[string]store.Key{}, providerKeys: map[string]store.ProviderKey{},
		tenantProfiles: map[string]store.TenantProfile{}, defaultRuns: DefaultConcurrentRuns}
	tenants, err := st.Tenants()
	if err != nil {
		return nil, fmt.Errorf("gateway: load tenants: %w", err)
	}
	keys, err := st.Keys()
	if err != nil {
		return nil, fmt.Errorf("gateway: load keys: %w", err)
	}
	for _, tn := range tenants {
		t.tenants[tn.ID] = tn
	}
	for _, k := range keys {
		t.keys[k.ID] = k
	}
	pks, err := st.ProviderKeys()
	if err != nil {
		return nil, fmt.Errorf("gateway: load provider keys: %w", err)
	}
	for _, k := range pks {
		t.providerKeys[providerKeyID(k.TenantID, k.Endpoint)] = k
	}
	tps, err := st.TenantProfiles()
	if err != nil {
		return nil, fmt.Errorf("gateway: load tenant profiles: %w", err)
	}
	for _, p := range tps {
		t.tenantProfiles[tenantProfileID(p.TenantID, p.Name)] = p
	}
	return t, nil
}

// DefaultConcurrentRuns is concurrent_runs for a tenant whose limits (admin
// API, tenants file) do not set it: enough for any interactive use, far
// below the engine's MaxActiveRuns (1000), so one tenant cannot hold every
// run slot. Change it with SetDefaultConcurrentRuns (cmd/gateway's
// -default-concurrent-runs).
const DefaultConcurrentRuns = 16

// SetDefaultConcurrentRuns sets concurrent_runs for tenants created or
// updated without one from now on; 0: no limit. Negative values are an
// error.
func (t *Tenancy) SetDefaultConcurrentRuns(n int64) error {
	if n < 0 {
		return fmt.Errorf("gateway: default concurrent runs %d is negative (0 is no limit)", n)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.defaultRuns = n
	return nil
}

// DefaultConcurrentRuns is concurrent_runs for a tenant whose limits do
// not set it.
func (t *Tenancy) DefaultConcurrentRuns() int64 {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.defaultRuns
}

// Store is the registry's (and the ledger's) store.
func (t *Tenancy) Store() *store.Store { return t.st }

// NewKey makes a random API key: "qlc_" and 32 base32 characters (160 bits).
func NewKey() (string, error) {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("gateway: new key: %w", err)
	}
	return keyPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:])), nil
}

// keyHash is what is stored of a key.
func keyHash(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// keyIDOf names a key by its hash: public, and enough to find the key.
func keyIDOf(hash []byte) string { return "key_" + hex.EncodeToString(hash[:8]) }

// KeyID is the public id of key (as listed by the admin API).
func KeyID(key string) string { return keyIDOf(keyHash(key)) }

// principal is who a request runs as.
type principal struct {
	tenant store.Tenant // empty for an admin key
	keyID  string
	admin  bool
}

// tenantID is the tenant runs are charged to.
func (p principal) tenantID() string { return p.tenant.ID }

// authenticate finds the key in r's Authorization header.
func (t *Tenancy) authenticate(r *http.Request) (principal, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return principal{}, errAuth("missing_api_key", "no API key: send it as \"Authorization: Bearer <key>\"")
	}
	scheme, key, ok := strings.Cut(h, " ")
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return principal{}, errAuth("invalid_api_key", "the Authorization header must be \"Bearer <key>\"")
	}
	hash := keyHash(key)
	id := keyIDOf(hash)
	t.mu.RLock()
	k, found := t.keys[id]
	var tn store.Tenant
	if found && !k.Admin {
		tn = t.tenants[k.TenantID]
	}
	t.mu.RUnlock()
	// Compare the whole hash in constant time (the map lookup used only its
	// first 8 bytes, derived from the hash, never from the key's text).
	if !found || subtle.ConstantTimeCompare(hash, k.Hash) != 1 || !k.RevokedAt.IsZero() || (!k.Admin && (tn.ID == "" || tn.Deleted)) {
		return principal{}, errAuth("invalid_api_key", "the API key is not valid (unknown or revoked)")
	}
	return principal{tenant: tn, keyID: k.ID, admin: k.Admin}, nil
}

func errAuth(code, msg string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: code, Message: msg}
}

// Tenant returns a tenant by id.
func (t *Tenancy) Tenant(id string) (store.Tenant, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	tn, ok := t.tenants[id]
	return tn, ok && !tn.Deleted
}

// snapshot returns the registry, sorted by id.
func (t *Tenancy) snapshot() ([]store.Tenant, []store.Key) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ts := make([]store.Tenant, 0, len(t.tenants))
	for _, tn := range t.tenants {
		ts = append(ts, tn)
	}
	ks := make([]store.Key, 0, len(t.keys))
	for _, k := range t.keys {
		ks = append(ks, k)
	}
	slices.SortFunc(ts, func(a, b store.Tenant) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(ks, func(a, b store.Key) int { return strings.Compare(a.ID, b.ID) })
	return ts, ks
}

// putTenant stores tn (newest wins) and caches it.
func (t *Tenancy) putTenant(tn store.Tenant) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok, err := t.st.PutTenant(tn)
	if err != nil || !ok {
		return ok, err
	}
	t.tenants[tn.ID] = tn
	return true, nil
}

func (t *Tenancy) putKey(k store.Key) (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ok, err := t.st.PutKey(k)
	if err != nil || !ok {
		return ok, err
	}
	t.keys[k.ID] = k
	return true, nil
}

// now is the version stamp of a change: the wall clock, but always after
// the row's previous version (a clock that stepped back must not lose it).
func versionAfter(prev time.Time) time.Time {
	now := time.Now().UTC()
	if !now.After(prev) {
		now = prev.Add(time.Nanosecond)
	}
	return now
}

// newTenantID makes a tenant id: "t_" and 12 hex digits.
func newTenantID() (string, error) {
	n, err := rand.Int(rand.Reader, big.NewInt(1<<48))
	if err != nil {
		return "", fmt.Errorf("gateway: tenant id: %w", err)
	}
	return fmt.Sprintf("t_%012x", n), nil
}

// Errors of registry changes (the admin API maps them to statuses).
var (
	errTenantExists  = errors.New("a tenant with that name or id exists")
	errTenantUnknown = errors.New("no such tenant")
	errKeyUnknown    = errors.New("no such key")
)

// ErrKeyRevoked: the key was revoked. A revoked key id is a tombstone: no
// restart, environment variable, tenants file or peer makes it valid again;
// re-enabling takes a new key.
var ErrKeyRevoked = errors.New("gateway: the key was revoked and stays revoked (make a new key)")

// revoked reports whether key id is known and revoked.
func (t *Tenancy) revoked(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	k, ok := t.keys[id]
	return ok && !k.RevokedAt.IsZero()
}

// CreateTenant adds a tenant with one key, returned in clear (the only time).
func (t *Tenancy) CreateTenant(id, name string, limits store.Limits) (store.Tenant, string, store.Key, error) {
	if err := limits.Validate(); err != nil {
		return store.Tenant{}, "", store.Key{}, err
	}
	name = strings.TrimSpace(name)
	t.mu.RLock()
	for _, tn := range t.tenants {
		if !tn.Deleted && (tn.Name == name || tn.ID == id) {
			t.mu.RUnlock()
			return store.Tenant{}, "", store.Key{}, fmt.Errorf("%w: %q (id %s)", errTenantExists, tn.Name, tn.ID)
		}
	}
	t.mu.RUnlock()
	if id == "" {
		var err error
		if id, err = newTenantID(); err != nil {
			return store.Tenant{}, "", store.Key{}, err
		}
	}
	now := time.Now().UTC()
	tn := store.Tenant{ID: id, Name: name, Limits: limits, CreatedAt: now, UpdatedAt: now}
	if _, err := t.putTenant(tn); err != nil {
		return store.Tenant{}, "", store.Key{}, err
	}
	key, k, err := t.CreateKey(id)
	if err != nil {
		return store.Tenant{}, "", store.Key{}, err
	}
	t.broadcast([]store.Tenant{tn}, nil)
	return tn, key, k, nil
}

// UpdateTenant changes a tenant's name and/or limits.
func (t *Tenancy) UpdateTenant(id string, name *string, limits *store.Limits) (store.Tenant, error) {
	tn, ok := t.Tenant(id)
	if !ok {
		return store.Tenant{}, fmt.Errorf("%w: %q", errTenantUnknown, id)
	}
	if limits != nil {
		if err := limits.Validate(); err != nil {
			return store.Tenant{}, err
		}
		tn.Limits = *limits
	}
	if name != nil {
		tn.Name = strings.TrimSpace(*name)
	}
	tn.UpdatedAt = versionAfter(tn.UpdatedAt)
	if _, err := t.putTenant(tn); err != nil {
		return store.Tenant{}, err
	}
	t.broadcast([]store.Tenant{tn}, nil)
	return tn, nil
}

// CreateKey makes and registers a new key for tenant tenantID; the key is
// returned in clear (the only time).
func (t *Tenancy) CreateKey(tenantID string) (string, store.Key, error) {
	if _, ok := t.Tenant(tenantID); !ok {
		return "", store.Key{}, fmt.Errorf("%w: %q", errTenantUnknown, tenantID)
	}
	key, err := NewKey()
	if err != nil {
		return "", store.Key{}, err
	}
	k, err := t.addKey(key, tenantID, false)
	return key, k, err
}

// addKey registers key (already made) for tenantID or as an admin key.
func (t *Tenancy) addKey(key, tenantID string, admin bool) (store.Key, error) {
	return t.addKeyHash(keyHash(key), tenantID, admin)
}

func (t *Tenancy) addKeyHash(hash []byte, tenantID string, admin bool) (store.Key, error) {
	now := time.Now().UTC()
	k := store.Key{ID: keyIDOf(hash), TenantID: tenantID, Admin: admin, Hash: hash, CreatedAt: now, UpdatedAt: now}
	t.mu.RLock()
	old, exists := t.keys[k.ID]
	t.mu.RUnlock()
	if exists {
		if !old.RevokedAt.IsZero() {
			return store.Key{}, fmt.Errorf("%w (key id %s)", ErrKeyRevoked, old.ID)
		}
		if old.TenantID == tenantID && old.Admin == admin {
			return old, nil
		}
		k.CreatedAt, k.UpdatedAt = old.CreatedAt, versionAfter(old.UpdatedAt)
	}
	if _, err := t.putKey(k); err != nil {
		return store.Key{}, err
	}
	t.broadcast(nil, []store.Key{k})
	return k, nil
}

// RevokeKey revokes a key by id; revoking twice is not an error.
func (t *Tenancy) RevokeKey(id string) (store.Key, error) {
	t.mu.RLock()
	k, ok := t.keys[id]
	t.mu.RUnlock()
	if !ok {
		return store.Key{}, fmt.Errorf("%w: %q", errKeyUnknown, id)
	}
	if !k.RevokedAt.IsZero() {
		return k, nil
	}
	k.UpdatedAt = versionAfter(k.UpdatedAt)
	k.RevokedAt = k.UpdatedAt
	if _, err := t.putKey(k); err != nil {
		return store.Key{}, err
	}
	t.broadcast(nil, []store.Key{k})
	return k, nil
}

// keysOf lists a tenant's keys (admin view: never hashes).
func (t *Tenancy) keysOf(tenantID string) []store.Key {
	_, ks := t.snapshot()
	var out []store.Key
	for _, k := range ks {
		if k.TenantID == tenantID && !k.Admin {
			out = append(out, k)
		}
	}
	return out
}

// ---- Replication between gateways ----

// Replicate sends every later registry change to the gateways peers()
// names (actor addresses; this process excluded by the caller), answers
// theirs, pulls their registries now and then every interval. Call once.
func (t *Tenancy) Replicate(engine *actors.Services, peers func() []string, interval time.Duration) error {
	t.mu.Lock()
	t.engine, t.peers = engine, peers
	t.stop, t.done = make(chan struct{}), make(chan struct{})
	t.mu.Unlock()
	if err := engine.ServeRegistry(t.receive); err != nil {
		return err
	}
	stop, done := t.stop, t.done
	go func() {
		defer close(done)
		t.pull()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				t.pull()
			}
		}
	}()
	return nil
}

// Close stops replication.
func (t *Tenancy) Close() {
	t.mu.Lock()
	stop, done := t.stop, t.done
	t.stop = nil
	t.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
}

// pull merges every peer's registry into this one.
func (t *Tenancy) pull() {
	t.mu.RLock()
	engine, peers := t.engine, t.peers
	t.mu.RUnlock()
	if engine == nil {
		return
	}
	for _, p := range peers() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rc, err := engine.SendRegistry(ctx, p, &messages.RegistryChange{WantAll: true})
		cancel()
		if err != nil {
			t.logger.Debug("registry pull failed", "peer", p, "error", err)
			continue
		}
		t.merge(rc)
	}
}

// receive applies a peer's change; a pull gets the whole registry back.
func (t *Tenancy) receive(rc *messages.RegistryChange) *messages.RegistryChange {
	t.merge(rc)
	if !rc.WantAll {
		return nil
	}
	ts, ks := t.snapshot()
	rc = encodeRegistry(ts, ks, t.providerKeySnapshot()...)
	addTenantProfiles(rc, t.tenantProfileSnapshot())
	return rc
}

func (t *Tenancy) merge(rc *messages.RegistryChange) {
	for _, b := range rc.GetTenants() {
		var tn store.Tenant
		if err := json.Unmarshal(b, &tn); err != nil || tn.ID == "" {
			t.logger.Warn("registry change: bad tenant row", "error", err)
			continue
		}
		if _, err := t.putTenant(tn); err != nil {
			t.logger.Error("registry change: store tenant", "tenant", tn.ID, "error", err)
		}
	}
	for _, b := range rc.GetKeys() {
		var k store.Key
		if err := json.Unmarshal(b, &k); err != nil || k.ID == "" || len(k.Hash) != sha256.Size || k.ID != keyIDOf(k.Hash) {
			t.logger.Warn("registry change: bad key row", "error", err)
			continue
		}
		if _, err := t.putKey(k); err != nil {
			t.logger.Error("registry change: store key", "key_id", k.ID, "error", err)
		}
	}
	for _, b := range rc.GetProviderKeys() {
		var k store.ProviderKey
		if err := json.Unmarshal(b, &k); err != nil || k.TenantID == "" || k.Endpoint == "" || (!k.Deleted && (k.KeyID == "" || len(k.Box) == 0)) {
			t.logger.Warn("registry change: bad provider key row", "error", err)
			continue
		}
		if _, err := t.putProviderKey(k); err != nil {
			t.logger.Error("registry change: store provider key", "tenant", k.TenantID, "endpoint", k.Endpoint, "error", err)
		}
	}
	for _, b := range rc.GetTenantProfiles() {
		// A peer's row is stored as it came: checked again, against this
		// gateway's profile file, by every run that uses it.
		var p store.TenantProfile
		if err := json.Unmarshal(b, &p); err != nil || p.TenantID == "" || p.Name == "" || (!p.Deleted && p.Definition == "") {
			t.logger.Warn("registry change: bad tenant profile row", "error", err)
			continue
		}
		if _, err := t.putTenantProfile(p); err != nil {
			t.logger.Error("registry change: store tenant profile", "tenant", p.TenantID, "profile", p.Name, "error", err)
		}
	}
}

// addTenantProfiles adds tenant profile rows to a registry change.
func addTenantProfiles(rc *messages.RegistryChange, ps []store.TenantProfile) {
	for _, p := range ps {
		b, _ := json.Marshal(p)
		rc.TenantProfiles = append(rc.TenantProfiles, b)
	}
}

// providerKeySnapshot returns every provider key row (sealed), tombstones
// included.
func (t *Tenancy) providerKeySnapshot() []store.ProviderKey {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return sortedRows(t.providerKeys, func(k store.ProviderKey) string { return providerKeyID(k.TenantID, k.Endpoint) })
}

// sortedRows is m's rows ordered by their ids (a snapshot to send or
// compare does not depend on map order).
func sortedRows[K comparable, V any](m map[K]V, id func(V) string) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b V) int { return strings.Compare(id(a), id(b)) })
	return out
}

func encodeRegistry(ts []store.Tenant, ks []store.Key, pks ...store.ProviderKey) *messages.RegistryChange {
	rc := &messages.RegistryChange{}
	for _, k := range pks {
		b, _ := json.Marshal(k) // sealed: the box, never the key
		rc.ProviderKeys = append(rc.ProviderKeys, b)
	}
	for _, tn := range ts {
		b, _ := json.Marshal(tn)
		rc.Tenants = append(rc.Tenants, b)
	}
	for _, k := range ks {
		b, _ := json.Marshal(k)
		rc.Keys = append(rc.Keys, b)
	}
	return rc
}

// broadcast sends changed rows to every peer (at most once each: a lost one
// is repaired by the next pull).
func (t *Tenancy) broadcast(ts []store.Tenant, ks []store.Key) {
	t.mu.RLock()
	engine, peers := t.engine, t.peers
	t.mu.RUnlock()
	if engine == nil {
		return
	}
	rc := encodeRegistry(ts, ks)
	for _, p := range peers() {
		_, _ = engine.SendRegistry(context.Background(), p, rc)
	}
}

// ---- Tenants file ----

// TenantsFile is the tenants configuration read at start (YAML or JSON):
//
//	admin_keys: ["qlc_…", "sha256:<64 hex digits>"]
//	tenants:
//	  - id: acme            # optional: a stable id (default: made from the name)
//	    name: Acme
//	    keys: ["sha256:<hex>"]   # a key in clear, or its SHA-256 in hex
//	    limits: {requests_per_minute: 600, tokens_per_minute: 200000,
//	             concurrent_runs: 20, token_budget: 5000000, budget_period: month,
//	             profiles: [fast, balanced], weight: 1, max_streams: 32}
//
// A tenant without concurrent_runs gets the Tenancy's default
// (DefaultConcurrentRuns); concurrent_runs: 0 is no limit. Keys in clear
// need minKeyBits (128) of entropy.
//
// Its rows are versioned by the file's modification time: a file edited
// after an admin API change wins, an older one does not undo it.
type TenantsFile struct {
	AdminKeys []string `yaml:"admin_keys" json:"admin_keys"`
	Tenants   []struct {
		ID     string       `yaml:"id" json:"id"`
		Name   string       `yaml:"name" json:"name"`
		Keys   []string     `yaml:"keys" json:"keys"`
		Limits store.Limits `yaml:"limits" json:"limits"`
		// runsSet: the file gives limits.concurrent_runs (else the
		// Tenancy's default applies).
		runsSet bool
	} `yaml:"tenants" json:"tenants"`
}

// LoadTenantsFile reads and applies the tenants file at path.
func (t *Tenancy) LoadTenantsFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("gateway: tenants file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("gateway: tenants file: %w", err)
	}
	f, err := ParseTenantsFile(data)
	if err != nil {
		return fmt.Errorf("gateway: tenants file %s: %w", path, err)
	}
	return t.applyFile(f, fi.ModTime().UTC())
}

// ParseTenantsFile decodes and checks a tenants file; unknown fields,
// duplicate names or ids, bad limits and malformed keys are errors.
func ParseTenantsFile(data []byte) (*TenantsFile, error) {
	var f TenantsFile
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// Which tenants set concurrent_runs (absent: the default applies).
	var given struct {
		Tenants []struct {
			Limits map[string]any `yaml:"limits"`
		} `yaml:"tenants"`
	}
	if err := yaml.Unmarshal(data, &given); err == nil && len(given.Tenants) == len(f.Tenants) {
		for i, tn := range given.Tenants {
			_, f.Tenants[i].runsSet = tn.Limits["concurrent_runs"]
		}
	}
	seen := map[string]bool{}
	for i, tn := range f.Tenants {
		if strings.TrimSpace(tn.Name) == "" {
			return nil, fmt.Errorf("tenant %d has no name", i+1)
		}
		id := tn.ID
		if id == "" {
			id = slug(tn.Name)
			f.Tenants[i].ID = id
		}
		if !validID(id) {
			return nil, fmt.Errorf("tenant %q: id %q must be 1-64 letters, digits, '-' or '_'", tn.Name, id)
		}
		if seen[id] || seen["name:"+tn.Name] {
			return nil, fmt.Errorf("tenant %q is listed twice", tn.Name)
		}
		seen[id], seen["name:"+tn.Name] = true, true
		if err := tn.Limits.Validate(); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tn.Name, err)
		}
		for _, k := range tn.Keys {
			if _, err := parseFileKey(k); err != nil {
				return nil, fmt.Errorf("tenant %q: %w", tn.Name, err)
			}
		}
	}
	for _, k := range f.AdminKeys {
		if _, err := parseFileKey(k); err != nil {
			return nil, fmt.Errorf("admin_keys: %w", err)
		}
	}
	return &f, nil
}

// parseFileKey turns a file's key (clear, or "sha256:<hex>") into its hash.
// A key in clear must have minKeyBits of entropy (checkKeyStrength); a hash
// cannot be checked and is taken as it is.
func parseFileKey(k string) ([]byte, error) {
	if h, ok := strings.CutPrefix(k, "sha256:"); ok {
		b, err := hex.DecodeString(h)
		if err != nil || len(b) != sha256.Size {
			return nil, errors.New(`a "sha256:" key must be followed by 64 hex digits`)
		}
		return b, nil
	}
	if err := checkKeyStrength(k); err != nil {
		return nil, err
	}
	return keyHash(k), nil
}

func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// slug makes an id from a name.
func slug(name string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			b.WriteRune(r)
		case b.Len() > 0 && !strings.HasSuffix(b.String(), "-"):
			b.WriteByte('-')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return strings.Trim(b.String(), "-")
}

func (t *Tenancy) applyFile(f *TenantsFile, version time.Time) error {
	for _, tf := range f.Tenants {
		old, exists := t.Tenant(tf.ID)
		if !tf.runsSet {
			tf.Limits.ConcurrentRuns = t.DefaultConcurrentRuns()
		}
		tn := store.Tenant{ID: tf.ID, Name: strings.TrimSpace(tf.Name), Limits: tf.Limits, CreatedAt: version, UpdatedAt: version}
		if exists {
			tn.CreatedAt = old.CreatedAt
		}
		if _, err := t.putTenant(tn); err != nil { // applied only if newer
			return err
		}
		for _, k := range tf.Keys {
			hash, _ := parseFileKey(k)
			if err := t.fileKey(hash, tf.ID, false, version); err != nil {
				return err
			}
		}
	}
	for _, k := range f.AdminKeys {
		hash, _ := parseFileKey(k)
		if err := t.fileKey(hash, "", true, version); err != nil {
			return err
		}
	}
	return nil
}

// fileKey registers a key from the file unless a newer change is stored; a
// revoked key stays revoked whatever the file's mtime (a warning says so).
func (t *Tenancy) fileKey(hash []byte, tenantID string, admin bool, version time.Time) error {
	k := store.Key{ID: keyIDOf(hash), TenantID: tenantID, Admin: admin, Hash: hash, CreatedAt: version, UpdatedAt: version}
	if t.revoked(k.ID) {
		t.logger.Warn("the tenants file lists a revoked key: it stays revoked (list a new key)", "key_id", k.ID, "tenant", tenantID)
		return nil
	}
	_, err := t.putKey(k)
	return err
}

// ---- Local mode: the dev tenant ----

// DevKeys is the content of .qlc/dev-keys.json.
type DevKeys struct {
	Tenant    string `json:"tenant"`
	TenantKey string `json:"tenant_key"`
	AdminKey  string `json:"admin_key"`
}

// DevTenantID is the tenant local mode creates.
const DevTenantID = "dev"

// EnsureDevKeys makes sure the dev tenant and its keys exist: read from
// path if it exists (re-registered if the store lost them), else made and
// written there (mode 0600, its folder 0700 with a .gitignore). A key of the
// file that was revoked stays revoked: a new one replaces it in the file.
// created says whether the file is new.
func (t *Tenancy) EnsureDevKeys(path string) (DevKeys, bool, error) {
	var dk DevKeys
	created, rewrite := false, false
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &dk); err != nil || dk.TenantKey == "" || dk.AdminKey == "" {
			return DevKeys{}, false, fmt.Errorf("gateway: %s is not a dev keys file (fields tenant_key, admin_key); delete it to make new keys", path)
		}
		if dk.Tenant == "" {
			dk.Tenant = DevTenantID
		}
	case errors.Is(err, os.ErrNotExist):
		if dk.TenantKey, err = NewKey(); err != nil {
			return DevKeys{}, false, err
		}
		if dk.AdminKey, err = NewKey(); err != nil {
			return DevKeys{}, false, err
		}
		dk.Tenant = DevTenantID
		created = true
	default:
		return DevKeys{}, false, fmt.Errorf("gateway: dev keys: %w", err)
	}
	// A revoked dev key stays revoked: make a new one in its place.
	for _, f := range []struct {
		key  *string
		what string
	}{{&dk.TenantKey, "tenant"}, {&dk.AdminKey, "admin"}} {
		if created || !t.revoked(KeyID(*f.key)) {
			continue
		}
		old := KeyID(*f.key)
		if *f.key, err = NewKey(); err != nil {
			return DevKeys{}, false, err
		}
		rewrite = true
		t.logger.Warn("the dev "+f.what+" key was revoked: made a new one", "revoked_key_id", old, "key_id", KeyID(*f.key), "file", path)
	}
	if _, ok := t.Tenant(dk.Tenant); !ok {
		now := time.Now().UTC()
		if _, err := t.putTenant(store.Tenant{ID: dk.Tenant, Name: "Local development", CreatedAt: now, UpdatedAt: now}); err != nil {
			return DevKeys{}, false, err
		}
	}
	if _, err := t.addKey(dk.TenantKey, dk.Tenant, false); err != nil {
		return DevKeys{}, false, err
	}
	if _, err := t.addKey(dk.AdminKey, "", true); err != nil {
		return DevKeys{}, false, err
	}
	if created || rewrite {
		dir := filepath.Dir(path)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return DevKeys{}, false, fmt.Errorf("gateway: dev keys: %w", err)
		}
		ignore := filepath.Join(dir, ".gitignore")
		if _, err := os.Stat(ignore); errors.Is(err, os.ErrNotExist) {
			_ = os.WriteFile(ignore, []byte("# QLC's local data and keys: never commit them.\n*\n"), 0o600)
		}
		b, _ := json.MarshalIndent(dk, "", "  ")
		if err := writeFileAtomic(path, append(b, '\n'), 0o600); err != nil {
			return DevKeys{}, false, fmt.Errorf("gateway: dev keys: %w", err)
		}
	}
	return dk, created, nil
}

// writeFileAtomic writes data to path through a temporary file and rename.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// AddAdminKey registers key (in clear, or "sha256:<hex>") as an admin key.
// A revoked key is not registered again: the error wraps ErrKeyRevoked.
func (t *Tenancy) AddAdminKey(key string) error {
	hash, err := parseFileKey(key)
	if err != nil {
		return err
	}
	_, err = t.addKeyHash(hash, "", true)
	return err
}
