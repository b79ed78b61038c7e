package gateway

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework"
)

// Bring your own provider keys (docs/api.md, docs/design.md).
//
// A tenant (or an admin for it) stores its own API key for a provider
// endpoint of the profiles file. The Tenancy seals it at once
// (internal/sealed: AES-GCM under a key derived from the cluster key, bound
// to the tenant and endpoint), keeps and replicates only the sealed box, and
// gives a run of that tenant the boxes of the endpoints its profile uses
// (actors.RunRequest.ProviderKeys). The node running a step opens the box of
// its endpoint at the attempt. No endpoint returns a key, no log line, audit
// entry, event or error contains one.

// maxProviderKeyBytes bounds a provider key (real ones are under 200 bytes).
const maxProviderKeyBytes = 4096

var (
	errNoSecrets       = errors.New("gateway: provider keys need a cluster key (or, in local mode, the local secret) to seal them")
	errProviderKeyNone = errors.New("gateway: no provider key for this endpoint")
)

// SetSecrets gives the Tenancy the ring that seals provider keys, and
// re-seals under its primary every stored key sealed under an older cluster
// key (the second phase of a rotation, docs/keys.md), so that the old key
// can be dropped after. A key that does not open with the ring is left as
// it is and reported (count) in a warning.
func (t *Tenancy) SetSecrets(ring *sealed.Ring) error {
	t.mu.Lock()
	t.secrets = ring
	var stale []store.ProviderKey
	for _, k := range t.providerKeys {
		if !k.Deleted && !ring.Current(sealed.Box{KeyID: k.KeyID, Data: k.Box}) {
			stale = append(stale, k)
		}
	}
	t.mu.Unlock()
	unopened := 0
	for _, k := range stale {
		b, err := ring.Reseal(sealed.Box{KeyID: k.KeyID, Data: k.Box}, sealed.AAD(k.TenantID, k.Endpoint))
		if err != nil {
			unopened++
			continue
		}
		k.KeyID, k.Box, k.UpdatedAt = b.KeyID, b.Data, versionAfter(k.UpdatedAt)
		if _, err := t.putProviderKey(k); err != nil {
			return fmt.Errorf("gateway: re-seal provider key: %w", err)
		}
	}
	if len(stale) > 0 {
		t.logger.Info("provider keys re-sealed under the primary cluster key", "resealed", len(stale)-unopened, "unopened", unopened)
	}
	if unopened > 0 {
		t.logger.Warn("some provider keys were sealed under a cluster key this gateway does not hold: runs cannot use them until it is back in the keyring (or the tenants put them again)", "count", unopened)
	}
	return nil
}

func providerKeyID(tenant, endpoint string) string { return tenant + "\x00" + endpoint }

// putProviderKey stores k (newest wins) and caches it; if it was applied,
// the listeners (OnProviderKeyChange) are told, without the lock held.
func (t *Tenancy) putProviderKey(k store.ProviderKey) (bool, error) {
	t.mu.Lock()
	ok, err := t.st.PutProviderKey(k)
	if err != nil || !ok {
		t.mu.Unlock()
		return ok, err
	}
	if k.Deleted {
		k.KeyID, k.Box, k.Hint = "", nil, ""
	}
	t.providerKeys[providerKeyID(k.TenantID, k.Endpoint)] = k
	listeners := t.keyListeners
	t.mu.Unlock()
	var sk *messages.SealedSecret
	if !k.Deleted {
		sk = &messages.SealedSecret{Endpoint: k.Endpoint, KeyId: k.KeyID, Box: k.Box}
	}
	for _, f := range listeners {
		f(k.TenantID, k.Endpoint, sk)
	}
	return true, nil
}

// OnProviderKeyChange adds f to the functions told of every provider key
// put or deleted (here or, replicated, on another gateway): sk is the new
// sealed key, nil when deleted. f must not block. The gateway tells its
// engine (actors.Engine.ProviderKeyChanged), so that the runs in flight use
// the change from their next attempt.
func (t *Tenancy) OnProviderKeyChange(f func(tenant, endpoint string, sk *messages.SealedSecret)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.keyListeners = append(slices.Clip(t.keyListeners), f)
}

// keyHint is what the API shows of a key: its last 4 characters, for keys
// long enough that they give nothing useful away.
func keyHint(key string) string {
	if len(key) < 16 {
		return ""
	}
	return "…" + key[len(key)-4:]
}

// PutProviderKey seals key for tenant's use of endpoint and stores it,
// replacing any earlier one, and sends it (sealed) to the other gateways.
func (t *Tenancy) PutProviderKey(tenant, endpoint, key string) (store.ProviderKey, error) {
	t.mu.RLock()
	ring := t.secrets
	prev, had := t.providerKeys[providerKeyID(tenant, endpoint)]
	t.mu.RUnlock()
	if ring == nil {
		return store.ProviderKey{}, errNoSecrets
	}
	if _, ok := t.Tenant(tenant); !ok {
		return store.ProviderKey{}, fmt.Errorf("%w: %q", errTenantUnknown, tenant)
	}
	b, err := ring.Seal([]byte(key), sealed.AAD(tenant, endpoint))
	if err != nil {
		return store.ProviderKey{}, err
	}
	now := versionAfter(prev.UpdatedAt)
	k := store.ProviderKey{TenantID: tenant, Endpoint: endpoint, KeyID: b.KeyID, Box: b.Data, Hint: keyHint(key), CreatedAt: now, UpdatedAt: now}
	if had && !prev.Deleted {
		k.CreatedAt = prev.CreatedAt
	}
	if _, err := t.putProviderKey(k); err != nil {
		return store.ProviderKey{}, err
	}
	t.broadcastProviderKeys(k)
	return k, nil
}

// DeleteProviderKey removes tenant's key for endpoint: runs started from
// now on use the endpoint's own key. errProviderKeyNone if there is none.
func (t *Tenancy) DeleteProviderKey(tenant, endpoint string) (store.ProviderKey, error) {
	t.mu.RLock()
	prev, had := t.providerKeys[providerKeyID(tenant, endpoint)]
	t.mu.RUnlock()
	if !had || prev.Deleted {
		return store.ProviderKey{}, errProviderKeyNone
	}
	k := store.ProviderKey{TenantID: tenant, Endpoint: endpoint, CreatedAt: prev.CreatedAt, UpdatedAt: versionAfter(prev.UpdatedAt), Deleted: true}
	if _, err := t.putProviderKey(k); err != nil {
		return store.ProviderKey{}, err
	}
	t.broadcastProviderKeys(k)
	return k, nil
}

// ProviderKeysOf returns tenant's keys (sealed; tombstones left out),
// sorted by endpoint.
func (t *Tenancy) ProviderKeysOf(tenant string) []store.ProviderKey {
	t.mu.RLock()
	defer t.mu.RUnlock()
	var out []store.ProviderKey
	for _, k := range t.providerKeys {
		if k.TenantID == tenant && !k.Deleted {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b store.ProviderKey) int { return strings.Compare(a.Endpoint, b.Endpoint) })
	return out
}

// sealedKeys returns tenant's sealed keys for the endpoints of profile p,
// for its run to carry; nil if it has none.
func (t *Tenancy) sealedKeys(tenant string, p *stagework.Profile) []*messages.SealedSecret {
	if t == nil || p == nil {
		return nil
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if len(t.providerKeys) == 0 {
		return nil
	}
	var out []*messages.SealedSecret
	for _, ep := range p.Endpoints() {
		if k, ok := t.providerKeys[providerKeyID(tenant, ep)]; ok && !k.Deleted {
			out = append(out, &messages.SealedSecret{Endpoint: ep, KeyId: k.KeyID, Box: k.Box})
		}
	}
	return out
}

func (t *Tenancy) broadcastProviderKeys(ks ...store.ProviderKey) {
	t.mu.RLock()
	engine, peers := t.engine, t.peers
	t.mu.RUnlock()
	if engine == nil {
		return
	}
	rc := encodeRegistry(nil, nil, ks...)
	for _, p := range peers() {
		_, _ = engine.SendRegistry(context.Background(), p, rc)
	}
}

// ---- HTTP ----

type providerKeyView struct {
	Object    string    `json:"object"`
	Tenant    string    `json:"tenant"`
	Endpoint  string    `json:"endpoint"`
	Hint      string    `json:"hint,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

func viewProviderKey(k store.ProviderKey) providerKeyView {
	return providerKeyView{Object: "provider_key", Tenant: k.TenantID, Endpoint: k.Endpoint, Hint: k.Hint, CreatedAt: k.CreatedAt, UpdatedAt: k.UpdatedAt}
}

// providerKeyTenant is the tenant a provider-keys request is about: the
// tenant key's own, or for an admin key the ?tenant= parameter.
func (s *Server) providerKeyTenant(r *http.Request) (string, *apiError) {
	p := principalOf(r)
	q := r.URL.Query().Get("tenant")
	if !p.admin {
		if q != "" && q != p.tenantID() {
			return "", &apiError{Status: http.StatusForbidden, Type: "permission_error", Code: "tenant_mismatch",
				Message: "a tenant key manages its own tenant's provider keys only (leave out ?tenant=)"}
		}
		return p.tenantID(), nil
	}
	if q == "" {
		return "", errInvalidParam("tenant", "missing_tenant", "an admin key names the tenant: ?tenant=<id>")
	}
	if _, ok := s.tenancy.Tenant(q); !ok {
		return "", errNotFound("tenant_not_found", fmt.Sprintf("no tenant %q", q))
	}
	return q, nil
}

// providerEndpoint checks that name is an endpoint of the profiles file
// that takes an API key.
func (s *Server) providerEndpoint(name string) *apiError {
	pc, ok := s.engine.Stages().Providers[name]
	if !ok {
		known := []string{}
		for n, c := range s.engine.Stages().Providers {
			if c.Kind == stagework.KindOpenAI {
				known = append(known, n)
			}
		}
		slices.Sort(known)
		return errNotFound("unknown_endpoint", fmt.Sprintf("no provider endpoint %q (endpoints that take a key: %s)", name, strings.Join(known, ", ")))
	}
	if pc.Kind != stagework.KindOpenAI {
		return errInvalidParam("endpoint", "endpoint_takes_no_key", fmt.Sprintf("endpoint %q is of kind %s, which takes no API key", name, pc.Kind))
	}
	return nil
}

func (s *Server) putProviderKey(w http.ResponseWriter, r *http.Request) {
	tenant, e := s.providerKeyTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	endpoint := r.PathValue("endpoint")
	if e := s.providerEndpoint(endpoint); e != nil {
		writeError(w, e)
		return
	}
	var req struct {
		APIKey string `json:"api_key"`
	}
	if e := s.decodeJSON(w, r, &req, true); e != nil {
		writeError(w, e)
		return
	}
	key := strings.TrimSpace(req.APIKey)
	switch {
	case key == "":
		writeError(w, errInvalidParam("api_key", "missing_api_key", "api_key is required"))
		return
	case len(key) > maxProviderKeyBytes:
		writeError(w, errInvalidParam("api_key", "invalid_api_key", fmt.Sprintf("api_key is longer than %d bytes", maxProviderKeyBytes)))
		return
	case strings.ContainsFunc(key, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }):
		writeError(w, errInvalidParam("api_key", "invalid_api_key", "api_key contains white space or a control character"))
		return
	}
	k, err := s.tenancy.PutProviderKey(tenant, endpoint, key)
	if e := providerKeyError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "provider_key.put", tenant+"/"+endpoint, map[string]string{"tenant": tenant, "endpoint": endpoint})
	writeJSON(w, http.StatusOK, viewProviderKey(k))
}

func (s *Server) listProviderKeys(w http.ResponseWriter, r *http.Request) {
	tenant, e := s.providerKeyTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	data := []providerKeyView{}
	for _, k := range s.tenancy.ProviderKeysOf(tenant) {
		data = append(data, viewProviderKey(k))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": data})
}

func (s *Server) deleteProviderKey(w http.ResponseWriter, r *http.Request) {
	tenant, e := s.providerKeyTenant(r)
	if e != nil {
		writeError(w, e)
		return
	}
	endpoint := r.PathValue("endpoint")
	k, err := s.tenancy.DeleteProviderKey(tenant, endpoint)
	if e := providerKeyError(err); e != nil {
		writeError(w, e)
		return
	}
	s.audit(r, "provider_key.delete", tenant+"/"+endpoint, map[string]string{"tenant": tenant, "endpoint": endpoint})
	writeJSON(w, http.StatusOK, map[string]any{"object": "provider_key", "tenant": tenant, "endpoint": endpoint, "deleted": true, "updated_at": k.UpdatedAt})
}

func providerKeyError(err error) *apiError {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNoSecrets):
		return errServer(http.StatusServiceUnavailable, "provider_keys_unavailable",
			"this gateway has no cluster key to seal provider keys with (set QLC_CLUSTER_KEY, or run with -local)")
	case errors.Is(err, errProviderKeyNone):
		return errNotFound("provider_key_not_found", "the tenant has no key for this endpoint")
	case errors.Is(err, errTenantUnknown):
		return errNotFound("tenant_not_found", err.Error())
	}
	return errServer(http.StatusInternalServerError, "internal_error", "could not store the provider key")
}

// LocalSecret reads the local secret at path, or makes one (32 random
// bytes, base64; the file mode 0600, its folder 0700 with a .gitignore):
// the stand-in for a cluster key that seals provider keys when the gateway
// runs every run itself and has no cluster key (local mode). created says
// whether it was made now.
func LocalSecret(path string) (secret []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(s) < 32 {
			return nil, false, fmt.Errorf("gateway: local secret %s: not base64 of 32 bytes", path)
		}
		return s, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, false, fmt.Errorf("gateway: local secret: %w", err)
	}
	s := make([]byte, 32)
	if _, err := rand.Read(s); err != nil {
		return nil, false, fmt.Errorf("gateway: local secret: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("gateway: local secret: %w", err)
	}
	ignore := filepath.Join(dir, ".gitignore")
	if _, err := os.Stat(ignore); errors.Is(err, os.ErrNotExist) {
		_ = os.WriteFile(ignore, []byte("# QLC's local data and keys: never commit them.\n*\n"), 0o600)
	}
	if err := writeFileAtomic(path, []byte(base64.StdEncoding.EncodeToString(s)+"\n"), 0o600); err != nil {
		return nil, false, fmt.Errorf("gateway: local secret: %w", err)
	}
	return s, true, nil
}
