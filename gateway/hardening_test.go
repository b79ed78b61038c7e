package gateway

import (
	"context"
	"encoding/base32"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
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

// TestKeyPatterns: keys in clear with less than 128 bits of estimated
// entropy, or made of an obvious pattern (runs, repeated parts), are
// refused in a tenants file and as QLC_ADMIN_KEY; random keys and sha256:
// entries are accepted (TestKeyStrength covers the shapes of random keys).
func TestKeyPatterns(t *testing.T) {
	weak := []string{
		"qlc_0123456789abcdef0123",          // a sequence
		"qlc_testadminkey00000000000000000", // words and a run of zeros
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"abcdefghijklmnopqrstuvwxyzabcdefghijklmnop",
		"passwordpasswordpasswordpasswordpassword",
		"Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#Xy7#",
		"qlc_ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkjihgfedcba9876543210",
		"0f3a9c2b7e",         // random but short
		"qlc_k3v9m2x8p4q7w1", // 14 random characters
		"",
	}
	for _, k := range weak {
		if err := checkKeyStrength(k); err == nil {
			t.Errorf("weak key %q (%.0f bits) accepted", k, keyBits(k))
		} else if k != "" && strings.Contains(err.Error(), k) {
			t.Errorf("the error shows the key: %v", err)
		}
		if _, err := ParseTenantsFile([]byte("admin_keys: [\"" + k + "\"]")); err == nil {
			t.Errorf("tenants file: weak admin key %q accepted", k)
		}
		if _, err := ParseTenantsFile([]byte("tenants: [{name: a, keys: [\"" + k + "\"]}]")); err == nil {
			t.Errorf("tenants file: weak tenant key %q accepted", k)
		}
		if err := openTestTenancy(t).AddAdminKey(k); err == nil {
			t.Errorf("QLC_ADMIN_KEY: weak key %q accepted", k)
		}
	}
	strong := []string{
		"qlc_Rv7kQ2mXw9ZpL4tBn8YcJ3sHd6GfA1eU",
		"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", // openssl rand -hex 32
		"3q2+7wAAAAB/hX0R5kYxQm1pT8vZs4LcJgWnEoYbDu8=",                     // base64 of 32 bytes
		"sha256:" + strings.Repeat("ab", 32),                               // a hash: not checkable
	}
	for _, k := range strong {
		if _, err := parseFileKey(k); err != nil {
			t.Errorf("strong key %q (%.0f bits) refused: %v", k, keyBits(k), err)
		}
	}
	// Keys in NewKey's format and qlc_ + 40 hex digits pass: 20000 of each
	// from a seeded generator (so the test is repeatable).
	rng := rand.NewChaCha8([32]byte{'q', 'l', 'c'})
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	lowest, lowestHex := math.Inf(1), math.Inf(1)
	for range 20000 {
		var b [20]byte
		_, _ = rng.Read(b[:])
		lowest = min(lowest, keyBits(keyPrefix+strings.ToLower(enc.EncodeToString(b[:]))))
		lowestHex = min(lowestHex, keyBits(keyPrefix+hex.EncodeToString(b[:])))
	}
	if lowest < minKeyBits || lowestHex < minKeyBits {
		t.Fatalf("random keys scored %.0f bits (NewKey's format), %.0f (40 hex digits); want >= %d", lowest, lowestHex, minKeyBits)
	}
	t.Logf("lowest estimate over 20000 random keys: %.0f bits in NewKey's format, %.0f as 40 hex digits", lowest, lowestHex)
}

// get sends GET url with Host host (if not "") and the headers hdr (name,
// value, …) and returns the status and the body.
func get(t *testing.T, url, host string, hdr ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// short is s cut to 120 bytes, for messages.
func short(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// TestUISessionOnlyForLocalRequests: GET /ui/session hands the dev key only
// to a loopback peer that named the server localhost, 127.0.0.1 or [::1],
// with no forwarding header: a page whose name was rebound to 127.0.0.1
// (DNS rebinding) or a request through a proxy gets 404 and no key.
func TestUISessionOnlyForLocalRequests(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, port, _ := strings.Cut(strings.TrimPrefix(g.URL, "http://"), ":")
	for _, host := range []string{"", "localhost:" + port, "LOCALHOST", "127.0.0.1:" + port, "[::1]:" + port, "[::1]"} {
		if code, body := get(t, g.URL+"/ui/session", host); code != 200 || !strings.Contains(body, g.Dev.TenantKey) {
			t.Errorf("Host %q: HTTP %d; want 200 with the key", host, code)
		}
	}
	refused := []struct {
		host string
		hdr  []string
	}{
		{host: "rebind.evil.example:" + port},
		{host: "rebind.evil.example"},
		{host: "localhost.evil.example:" + port},
		{host: "127.0.0.1.nip.io:" + port},
		{host: "10.0.0.5:" + port},
		{hdr: []string{"X-Forwarded-For", "203.0.113.9"}},
		{hdr: []string{"X-Real-IP", "203.0.113.9"}},
		{hdr: []string{"Forwarded", "for=203.0.113.9"}},
		{hdr: []string{"X-Forwarded-Host", "evil.example"}},
		{hdr: []string{"X-Forwarded-Proto", "https"}},
		{hdr: []string{"Via", "1.1 proxy"}},
	}
	for _, c := range refused {
		code, body := get(t, g.URL+"/ui/session", c.host, c.hdr...)
		if code != http.StatusNotFound || strings.Contains(body, g.Dev.TenantKey) {
			t.Errorf("Host %q %v: HTTP %d (key handed out: %v); want 404 without the key",
				c.host, c.hdr, code, strings.Contains(body, g.Dev.TenantKey))
		}
	}
}

// TestLocalModeRefusesForeignHosts: in local mode every request whose Host
// is not a loopback name is refused with 421, an OpenAI-shaped error on
// /v1/ and plain text elsewhere, on the public and the ops handler.
func TestLocalModeRefusesForeignHosts(t *testing.T) {
	g := startTenantGateway(t, func(c *Config, _ *actors.Config) { c.LocalOnly = true })
	for _, base := range []string{g.URL, g.OpsURL} {
		for _, p := range []string{"/healthz", "/readyz", "/metrics", "/", "/ui/session", "/v1/models"} {
			code, body := get(t, base+p, "rebind.evil.example:8080", "Authorization", "Bearer "+g.Dev.AdminKey)
			if code != http.StatusMisdirectedRequest || strings.Contains(body, g.Dev.TenantKey) || strings.Contains(body, "qlc_") {
				t.Errorf("%s%s with a foreign Host: HTTP %d %q; want 421", base, p, code, short(body))
			}
			if !strings.Contains(body, "local mode") {
				t.Errorf("%s%s: the refusal does not say why: %q", base, p, short(body))
			}
		}
	}
	code, body := get(t, g.URL+"/v1/models", "rebind.evil.example", "Authorization", "Bearer "+g.Dev.TenantKey)
	var e errBody
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != 421 || e.Error.Code != "misdirected_request" || e.Error.Type == "" {
		t.Errorf("/v1/ refusal: HTTP %d %q; want the OpenAI error shape", code, short(body))
	}
	if code, body := get(t, g.URL+"/", "evil.example"); strings.HasPrefix(strings.TrimSpace(body), "{") || code != 421 {
		t.Errorf("UI refusal: HTTP %d %q; want plain text", code, short(body))
	}
	// Loopback names are served.
	for _, host := range []string{"", "localhost:8080", "127.0.0.1", "[::1]:8080"} {
		if code, _ := get(t, g.URL+"/v1/models", host, "Authorization", "Bearer "+g.Dev.TenantKey); code != 200 {
			t.Errorf("Host %q: HTTP %d; want 200", host, code)
		}
		if code, _ := get(t, g.OpsURL+"/metrics", host); code != 200 {
			t.Errorf("ops Host %q: HTTP %d; want 200", host, code)
		}
	}
}

// TestMetricsAreNotPublic: /metrics names tenants and what they use, so the
// public handler serves it only to an admin key (401 without a key, 403 to
// a tenant key); the ops handler serves it, with the per-tenant series,
// without a key. Health and readiness need no key on either.
func TestMetricsAreNotPublic(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, _, run, _ := postRun(t, g.URL, g.Dev.TenantKey, "instant")
	var done runView
	waitStatusKey(t, g.URL, g.Dev.TenantKey, run.ID, "completed", &done)
	waitUsage(t, g.URL, g.Dev.TenantKey, 1)
	const series = `qlc_tenant_runs_total{status="completed",tenant="dev"} 1`
	for _, c := range []struct {
		key  string
		want int
	}{{"", 401}, {g.Dev.TenantKey, 403}, {"qlc_" + strings.Repeat("x", 32), 401}} {
		hdr := []string{}
		if c.key != "" {
			hdr = []string{"Authorization", "Bearer " + c.key}
		}
		code, body := get(t, g.URL+"/metrics", "", hdr...)
		if code != c.want || strings.Contains(body, "qlc_tenant") {
			t.Errorf("public /metrics with key %q: HTTP %d; want %d and no series", c.key, code, c.want)
		}
		var e errBody
		if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Code == "" {
			t.Errorf("public /metrics refusal is not an OpenAI error: %q", short(body))
		}
	}
	if code, body := get(t, g.URL+"/metrics", "", "Authorization", "Bearer "+g.Dev.AdminKey); code != 200 || !strings.Contains(body, series) {
		t.Errorf("public /metrics with the admin key: HTTP %d, series present %v", code, strings.Contains(body, series))
	}
	if code, body := get(t, g.OpsURL+"/metrics", ""); code != 200 || !strings.Contains(body, series) {
		t.Errorf("ops /metrics: HTTP %d, series present %v", code, strings.Contains(body, series))
	}
	for _, base := range []string{g.URL, g.OpsURL} {
		for _, p := range []string{"/healthz", "/readyz"} {
			if code, _ := get(t, base+p, ""); code != 200 {
				t.Errorf("%s%s without a key: HTTP %d", base, p, code)
			}
		}
	}
	// The ops handler is only that: no API, no UI.
	for _, p := range []string{"/v1/models", "/", "/ui/session"} {
		if code, _ := get(t, g.OpsURL+p, ""); code != 404 {
			t.Errorf("ops %s: HTTP %d; want 404", p, code)
		}
	}
}

// TestDefaultConcurrentRuns: a tenant created without concurrent_runs (admin
// API or tenants file) gets the gateway's default, so a flood from it is
// refused past the default while another tenant's runs are still admitted;
// 0 given is no limit; a PATCH whose limits omit it gets the default too.
func TestDefaultConcurrentRuns(t *testing.T) {
	g := startTenantGateway(t, nil)
	if got := g.Tenancy.DefaultConcurrentRuns(); got != DefaultConcurrentRuns || DefaultConcurrentRuns <= 0 {
		t.Fatalf("default concurrent runs %d (const %d); want a positive default", got, DefaultConcurrentRuns)
	}
	if err := g.Tenancy.SetDefaultConcurrentRuns(-1); err == nil {
		t.Fatal("a negative default was accepted")
	}
	if err := g.Tenancy.SetDefaultConcurrentRuns(2); err != nil {
		t.Fatal(err)
	}
	limitsOf := func(id string) store.Limits {
		t.Helper()
		var v tenantView
		if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants/"+id, g.Dev.AdminKey, "", &v); code != 200 {
			t.Fatalf("GET tenant %s: %d", id, code)
		}
		return v.Limits
	}
	flood, floodKey := newTenant(t, g, "flood", `{"requests_per_minute":1000}`)
	open, _ := newTenant(t, g, "open", `{"concurrent_runs":0}`)
	five, _ := newTenant(t, g, "five", `{"concurrent_runs":5}`)
	_, otherKey := newTenant(t, g, "other", "")
	for id, want := range map[string]int64{flood: 2, open: 0, five: 5} {
		if got := limitsOf(id).ConcurrentRuns; got != want {
			t.Errorf("tenant %s: concurrent_runs %d; want %d", id, got, want)
		}
	}
	if l := limitsOf(flood); l.RequestsPerMinute != 1000 {
		t.Errorf("the other limits were lost: %+v", l)
	}
	// PATCH replaces limits whole: without concurrent_runs, the default.
	if code, _ := call(t, "PATCH", g.URL+"/v1/admin/tenants/"+five, g.Dev.AdminKey, `{"limits":{"requests_per_minute":50}}`, nil); code != 200 {
		t.Fatalf("PATCH: %d", code)
	}
	if got := limitsOf(five).ConcurrentRuns; got != 2 {
		t.Errorf("after a PATCH without concurrent_runs: %d; want the default 2", got)
	}
	// A flood from one tenant stops at the default; another is admitted.
	for i := range 2 {
		if code, _, _, e := postRun(t, g.URL, floodKey, "slow"); code != http.StatusCreated {
			t.Fatalf("flood run %d: HTTP %d %+v", i, code, e)
		}
	}
	code, _, _, e := postRun(t, g.URL, floodKey, "slow")
	if code != http.StatusTooManyRequests || e.Error.Code != "concurrent_runs" {
		t.Fatalf("third concurrent run of a tenant with the default: HTTP %d %+v; want 429 concurrent_runs", code, e)
	}
	if code, _, _, e := postRun(t, g.URL, otherKey, "slow"); code != http.StatusCreated {
		t.Fatalf("another tenant during the flood: HTTP %d %+v", code, e)
	}
	// The tenants file: absent is the default, 0 is no limit.
	file := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(file, []byte(`tenants:
  - {id: filed, name: Filed}
  - {id: filed-open, name: Filed open, limits: {concurrent_runs: 0}}
  - {id: filed-seven, name: Filed seven, limits: {concurrent_runs: 7, weight: 2}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Tenancy.LoadTenantsFile(file); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]int64{"filed": 2, "filed-open": 0, "filed-seven": 7} {
		if tn, ok := g.Tenancy.Tenant(id); !ok || tn.Limits.ConcurrentRuns != want {
			t.Errorf("file tenant %s: %+v; want concurrent_runs %d", id, tn.Limits, want)
		}
	}
}

// TestCloseWaitsForItsGoroutines: Server.Close stops the gateway's
// background goroutines (recoverOpen, here inside a readiness check of a
// cluster that is not ready; keepRuns) and returns only once they have
// ended; a second Close is harmless. (goleak in main_test.go checks every
// test of the package for leaks at its end.)
func TestCloseWaitsForItsGoroutines(t *testing.T) {
	entered, release := make(chan struct{}, 1), make(chan struct{})
	p := newTenancyServer(t, "", func(c *Config, _ *actors.Config) {
		c.Ready = func() error {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-release
			return errors.New("no node yet")
		}
	})
	select {
	case <-entered: // recoverOpen is waiting for the cluster
	case <-time.After(10 * time.Second):
		t.Fatal("recoverOpen never asked whether the cluster is ready")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p.engine.Shutdown(ctx)
	closed := make(chan error, 1)
	go func() { closed <- p.gw.Close(ctx) }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while recoverOpen was still running", err)
	case <-time.After(300 * time.Millisecond): // Close cannot return before release
	}
	close(release)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return once recoverOpen could end")
	}
	st := stacks()
	for _, f := range []string{"gateway.(*Server).recoverOpen", "gateway.(*Server).keepRuns"} {
		if strings.Contains(st, f) {
			t.Errorf("%s still runs after Close returned", f)
		}
	}
	if err := p.gw.Close(ctx); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
}

// stacks is every goroutine's stack.
func stacks() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return string(buf[:n])
		}
		buf = make([]byte, 2*len(buf))
	}
}
