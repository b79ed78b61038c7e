package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
)

// tenantGateway is a test gateway with tenancy on: its dev tenant's and
// admin keys, and its store.
type tenantGateway struct {
	*testGateway
	Tenancy *Tenancy
	Dev     DevKeys
	Dir     string
}

func startTenantGateway(t testing.TB, mutate func(*Config, *actors.Config)) *tenantGateway {
	t.Helper()
	return startTenantGatewayProfiles(t, "", mutate)
}

// startTenantGatewayProfiles is startTenantGateway with a profile file (as
// startGateway takes it).
func startTenantGatewayProfiles(t testing.TB, profiles string, mutate func(*Config, *actors.Config)) *tenantGateway {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "qlc.db"))
	if err != nil {
		t.Fatal(err)
	}
	tn, err := NewTenancy(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	dk, _, err := tn.EnsureDevKeys(filepath.Join(dir, "dev-keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, profiles, func(c *Config, e *actors.Config) {
		c.Tenancy, c.DevKeys = tn, &dk
		if mutate != nil {
			mutate(c, e)
		}
	})
	t.Cleanup(func() { st.Close() })
	return &tenantGateway{testGateway: tg, Tenancy: tn, Dev: dk, Dir: dir}
}

// call sends a request with key (none if "") and decodes a JSON answer.
func call(t *testing.T, method, url, key, body string, out any) (int, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, data, err)
		}
	}
	return resp.StatusCode, resp.Header
}

type errBody struct {
	Error struct {
		Message, Type, Code string
	}
}

// newTenant creates a tenant through the admin API and returns its id and key.
func newTenant(t *testing.T, g *tenantGateway, name, limits string) (string, string) {
	t.Helper()
	if limits == "" {
		limits = "{}"
	}
	var out struct{ ID, Key, KeyID string }
	code, _ := call(t, "POST", g.URL+"/v1/admin/tenants", g.Dev.AdminKey, fmt.Sprintf(`{"name":%q,"limits":%s}`, name, limits), &out)
	if code != http.StatusCreated || out.ID == "" || !strings.HasPrefix(out.Key, keyPrefix) {
		t.Fatalf("create tenant %s: HTTP %d %+v", name, code, out)
	}
	return out.ID, out.Key
}

func postRun(t *testing.T, base, key, profile string) (int, http.Header, runView, errBody) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+"/v1/runs", strings.NewReader(fmt.Sprintf(`{"query":"why is the sky blue?","profile":%q}`, profile)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var v runView
	var e errBody
	if resp.StatusCode == http.StatusCreated {
		_ = json.Unmarshal(data, &v)
	} else if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("error body %q: %v", data, err)
	}
	return resp.StatusCode, resp.Header, v, e
}

func TestKeysAreRequired(t *testing.T) {
	g := startTenantGateway(t, nil)
	var e errBody
	code, h := call(t, "POST", g.URL+"/v1/runs", "", `{"query":"q"}`, &e)
	if code != 401 || e.Error.Code != "missing_api_key" || e.Error.Type != "authentication_error" || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no key: %d %+v", code, e)
	}
	for _, bad := range []string{"qlc_notakey00000000000000000000000", g.Dev.TenantKey + "x", strings.ToUpper(g.Dev.TenantKey)} {
		if code, _ := call(t, "GET", g.URL+"/v1/models", bad, "", &e); code != 401 || e.Error.Code != "invalid_api_key" {
			t.Fatalf("key %q: %d %+v", bad, code, e)
		}
	}
	req, _ := http.NewRequest("GET", g.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Basic "+g.Dev.TenantKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("Basic scheme: %d", resp.StatusCode)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/models", g.Dev.TenantKey, "", nil); code != 200 {
		t.Fatalf("good key: %d", code)
	}
	// Health, readiness and the UI need no key (metrics do: see
	// TestMetricsAreNotPublic).
	for _, p := range []string{"/healthz", "/readyz", "/"} {
		if code, _ := call(t, "GET", g.URL+p, "", "", nil); code != 200 {
			t.Fatalf("%s without a key: %d", p, code)
		}
	}
	// Admin keys manage tenants; they do not run queries (and vice versa).
	if code, _ := call(t, "POST", g.URL+"/v1/runs", g.Dev.AdminKey, `{"query":"q"}`, &e); code != 403 || e.Error.Code != "tenant_key_required" {
		t.Fatalf("admin key on /v1/runs: %d %+v", code, e)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants", g.Dev.TenantKey, "", &e); code != 403 || e.Error.Code != "admin_key_required" {
		t.Fatalf("tenant key on the admin API: %d %+v", code, e)
	}
}

// TestOtherTenantsRunsAreNotFound: another tenant's key gets exactly what a
// run that does not exist gets, on every endpoint, and the run goes on.
func TestOtherTenantsRunsAreNotFound(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, other := newTenant(t, g, "other", "")
	code, _, run, _ := postRun(t, g.URL, g.Dev.TenantKey, "slow")
	if code != 201 {
		t.Fatalf("create: %d", code)
	}
	missing := "run_doesnotexist0000000000000000"
	for _, ep := range []struct{ method, path string }{
		{"GET", "/v1/runs/%s"}, {"GET", "/v1/runs/%s/events"}, {"DELETE", "/v1/runs/%s"},
	} {
		var theirs, none errBody
		c1, _ := call(t, ep.method, g.URL+fmt.Sprintf(ep.path, run.ID), other, "", &theirs)
		c2, _ := call(t, ep.method, g.URL+fmt.Sprintf(ep.path, missing), other, "", &none)
		if c1 != 404 || c2 != 404 || theirs.Error.Code != none.Error.Code ||
			strings.ReplaceAll(theirs.Error.Message, run.ID, "ID") != strings.ReplaceAll(none.Error.Message, missing, "ID") {
			t.Fatalf("%s %s: other tenant got %d %+v; a missing run %d %+v", ep.method, ep.path, c1, theirs, c2, none)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.URL, "http")+"/v1/runs/"+run.ID+"/ws",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + other}}})
	if err == nil || resp == nil || resp.StatusCode != 404 {
		t.Fatalf("websocket with the other tenant's key: err %v, resp %v", err, resp)
	}
	var v runView
	if code, _ := call(t, "GET", g.URL+"/v1/runs/"+run.ID, g.Dev.TenantKey, "", &v); code != 200 || v.Status != "running" {
		t.Fatalf("the owner's run after the other tenant's cancel: %d %s", code, v.Status)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+run.ID, g.Dev.TenantKey, "", &v); code != 200 || v.Status != "cancelled" {
		t.Fatalf("the owner's cancel: %d %s", code, v.Status)
	}
}

func TestAdminAPI(t *testing.T) {
	g := startTenantGateway(t, nil)
	id, key := newTenant(t, g, "acme", `{"requests_per_minute": 100, "profiles": ["instant"]}`)
	if code, _, _, _ := postRun(t, g.URL, key, "instant"); code != 201 {
		t.Fatalf("new tenant's key: %d", code)
	}
	var e errBody
	if code, _, _, e := postRun(t, g.URL, key, "slow"); code != 403 || e.Error.Code != "profile_not_allowed" {
		t.Fatalf("profile outside the tenant's list: %d %+v", code, e)
	}
	// The tenant sees only its profiles (and models), and its default is one of them.
	var profs struct {
		Default string
		Data    []struct{ Name string }
	}
	call(t, "GET", g.URL+"/v1/profiles", key, "", &profs)
	if len(profs.Data) != 1 || profs.Data[0].Name != "instant" || profs.Default != "instant" {
		t.Fatalf("profiles for a tenant limited to instant: %+v", profs)
	}
	var models struct{ Data []struct{ ID string } }
	call(t, "GET", g.URL+"/v1/models", key, "", &models)
	if len(models.Data) != 2 || models.Data[0].ID != "qlc-instant" || models.Data[1].ID != "qlc-instant-thinking" {
		t.Fatalf("models for a tenant limited to instant: %+v", models)
	}
	// Same name twice: conflict. Bad limits: 400.
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants", g.Dev.AdminKey, `{"name":"acme"}`, &e); code != 409 {
		t.Fatalf("duplicate tenant: %d", code)
	}
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants", g.Dev.AdminKey, `{"name":"neg","limits":{"tokens_per_minute":-1}}`, &e); code != 400 {
		t.Fatalf("negative limit: %d %+v", code, e)
	}
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants", g.Dev.AdminKey, `{"name":"p","limits":{"profiles":["nope"]}}`, &e); code != 400 {
		t.Fatalf("unknown profile in limits: %d %+v", code, e)
	}
	// PATCH takes effect at once: the slow profile is now allowed.
	var tv tenantView
	if code, _ := call(t, "PATCH", g.URL+"/v1/admin/tenants/"+id, g.Dev.AdminKey, `{"limits":{"profiles":["instant","slow"]}}`, &tv); code != 200 || len(tv.Limits.Profiles) != 2 {
		t.Fatalf("patch: %d %+v", code, tv)
	}
	if code, _, _, e := postRun(t, g.URL, key, "slow"); code != 201 {
		t.Fatalf("after the patch: %d %+v", code, e)
	}
	// A second key; revoking the first leaves the second working.
	var nk struct{ Key, KeyID string }
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants/"+id+"/keys", g.Dev.AdminKey, "", &nk); code != 201 || nk.Key == "" {
		t.Fatalf("new key: %d", code)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/admin/keys/"+KeyID(key), g.Dev.AdminKey, "", nil); code != 200 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/models", key, "", &e); code != 401 {
		t.Fatalf("revoked key: %d", code)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/models", nk.Key, "", nil); code != 200 {
		t.Fatalf("second key: %d", code)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/admin/keys/key_0000000000000000", g.Dev.AdminKey, "", &e); code != 404 {
		t.Fatalf("revoke unknown: %d", code)
	}
	// The list shows key ids, never keys or hashes.
	var list struct{ Data []tenantView }
	resp, err := http.NewRequest("GET", g.URL+"/v1/admin/tenants", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Header.Set("Authorization", "Bearer "+g.Dev.AdminKey)
	r, err := http.DefaultClient.Do(resp)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), nk.Key) || strings.Contains(string(raw), key) || strings.Contains(string(raw), `"hash"`) {
		t.Fatalf("the tenant list shows a key or a hash: %s", raw)
	}
	found := false
	for _, tv := range list.Data {
		if tv.ID == id {
			found = len(tv.Keys) == 2
		}
	}
	if !found {
		t.Fatalf("tenant %s with 2 keys not in the list: %s", id, raw)
	}
	// Every change is audited with the admin key's id, and no key.
	var audit struct{ Data []store.AuditEntry }
	if code, _ := call(t, "GET", g.URL+"/v1/admin/audit", g.Dev.AdminKey, "", &audit); code != 200 {
		t.Fatalf("audit: %d", code)
	}
	actions := map[string]bool{}
	for _, a := range audit.Data {
		actions[a.Action] = true
		if a.Actor != KeyID(g.Dev.AdminKey) || a.At.IsZero() {
			t.Fatalf("audit entry without actor or time: %+v", a)
		}
		if strings.Contains(a.Detail, nk.Key) || strings.Contains(a.Detail, key) {
			t.Fatalf("audit entry holds a key: %+v", a)
		}
	}
	for _, want := range []string{"tenant.create", "tenant.update", "key.create", "key.revoke"} {
		if !actions[want] {
			t.Fatalf("audit has no %s: %+v", want, audit.Data)
		}
	}
}

func TestLimitsAnswer429(t *testing.T) {
	g := startTenantGateway(t, nil)
	cases := []struct {
		limits, profile, code string
		grants                int
	}{
		{`{"requests_per_minute": 2}`, "instant", "requests_per_minute", 2},
		{`{"concurrent_runs": 1}`, "slow", "concurrent_runs", 1},
		{`{"token_budget": 1, "budget_period": "day"}`, "instant", "token_budget", 0},
		{`{"tokens_per_minute": 100}`, "instant", "tokens_per_minute", 0},
	}
	for _, c := range cases {
		t.Run(c.code, func(t *testing.T) {
			_, key := newTenant(t, g, "t-"+c.code, c.limits)
			for i := 0; i < c.grants; i++ {
				if code, _, _, e := postRun(t, g.URL, key, c.profile); code != 201 {
					t.Fatalf("run %d: %d %+v", i+1, code, e)
				}
			}
			code, h, _, e := postRun(t, g.URL, key, c.profile)
			if code != 429 || e.Error.Code != c.code || e.Error.Type != "rate_limit_error" || h.Get("Retry-After") == "" || !strings.Contains(e.Error.Message, c.code) {
				t.Fatalf("over the limit: %d Retry-After %q %+v", code, h.Get("Retry-After"), e)
			}
			// Another tenant is not affected.
			if code, _, _, e := postRun(t, g.URL, g.Dev.TenantKey, "instant"); code != 201 {
				t.Fatalf("the dev tenant after another's 429: %d %+v", code, e)
			}
		})
	}
}

// TestBudgetHoldsUnderARace: concurrent requests never reserve more than the
// budget, and the reservations settle to what the runs used.
func TestBudgetHoldsUnderARace(t *testing.T) {
	g := startTenantGateway(t, nil)
	per, err := g.Engine.Reservation(actors.RunRequest{Profile: "instant", Query: "why is the sky blue?"})
	if err != nil {
		t.Fatal(err)
	}
	budget := per*10 + per/2 // room for 10 reservations
	_, key := newTenant(t, g, "race", fmt.Sprintf(`{"token_budget": %d}`, budget))
	var mu sync.Mutex
	admitted, refused := 0, 0
	var wg sync.WaitGroup
	for range 60 {
		wg.Go(func() {
			code, _, _, e := postRun(t, g.URL, key, "instant")
			mu.Lock()
			defer mu.Unlock()
			switch {
			case code == 201:
				admitted++
			case code == 429 && e.Error.Code == "token_budget":
				refused++
			default:
				t.Errorf("unexpected answer %d %+v", code, e)
			}
		})
	}
	wg.Wait()
	// Runs that end settle at their real count (below the reservation), so
	// more than 10 fit; what they used never passes the budget.
	if admitted < 10 || refused == 0 || admitted+refused != 60 {
		t.Fatalf("admitted %d runs of %d reserved tokens each against a budget of %d (%d refused)", admitted, per, budget, refused)
	}
	var used int64
	for _, u := range waitUsage(t, g.URL, key, admitted) {
		used += u.TotalTokens
	}
	if used > budget {
		t.Fatalf("%d runs used %d tokens; the budget is %d", admitted, used, budget)
	}
}

func TestUsageLedger(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, other := newTenant(t, g, "other", "")
	code, _, run, _ := postRun(t, g.URL, g.Dev.TenantKey, "instant")
	if code != 201 {
		t.Fatal(code)
	}
	var v runView
	waitStatusKey(t, g.URL, g.Dev.TenantKey, run.ID, "completed", &v)
	// A cancelled run is billed for what it streamed.
	_, _, slow, _ := postRun(t, g.URL, g.Dev.TenantKey, "slow")
	waitTokens(t, g.URL, g.Dev.TenantKey, slow.ID)
	if code, _ := call(t, "DELETE", g.URL+"/v1/runs/"+slow.ID, g.Dev.TenantKey, "", &v); code != 200 {
		t.Fatal(code)
	}
	recs := waitUsage(t, g.URL, g.Dev.TenantKey, 2)
	byRun := map[string]store.Usage{}
	for _, u := range recs {
		byRun[u.RunID] = u
	}
	done, cut := byRun[run.ID], byRun[slow.ID]
	if done.Status != "completed" || done.TotalTokens == 0 || done.TotalTokens != done.PromptTokens+done.CompletionTokens || len(done.Stages) != 4 || done.TenantID != DevTenantID {
		t.Fatalf("completed run's record: %+v", done)
	}
	// The completed run's bill equals what its own events report.
	evs := runEvents(t, g.URL, g.Dev.TenantKey, run.ID)
	var usage map[string]any
	for _, ev := range evs {
		if ev.Event == "run_completed" {
			usage, _ = ev.Data["usage"].(map[string]any)
		}
	}
	if usage == nil || int64(usage["total_tokens"].(float64)) != done.TotalTokens {
		t.Fatalf("ledger total %d; the run reported %v", done.TotalTokens, usage)
	}
	if cut.Status != "cancelled" || cut.CompletionTokens == 0 || cut.PromptTokens == 0 {
		t.Fatalf("cancelled run's record: %+v", cut)
	}
	// Tenants see only their own records; the admin sees all.
	var mine struct{ Data []store.Usage }
	call(t, "GET", g.URL+"/v1/usage", other, "", &mine)
	if len(mine.Data) != 0 {
		t.Fatalf("another tenant sees %d records", len(mine.Data))
	}
	var all struct{ Data []store.Usage }
	if code, _ := call(t, "GET", g.URL+"/v1/usage", g.Dev.AdminKey, "", &all); code != 200 || len(all.Data) != 2 {
		t.Fatalf("admin usage: %d, %d records", code, len(all.Data))
	}
	var e errBody
	if code, _ := call(t, "GET", g.URL+"/v1/usage?from=yesterday", g.Dev.TenantKey, "", &e); code != 400 || e.Error.Code != "invalid_time" {
		t.Fatalf("bad from: %d %+v", code, e)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/usage?tenant=other", g.Dev.TenantKey, "", &e); code != 403 {
		t.Fatalf("a tenant asking for another's usage: %d", code)
	}
	// Per-tenant metrics (on the ops handler).
	resp, err := http.Get(g.OpsURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `qlc_tenant_runs_total{status="completed",tenant="dev"} 1`) {
		t.Fatalf("no per-tenant run metric in /metrics")
	}
}

func TestStreamsPerKey(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, key := newTenant(t, g, "s", `{"max_streams": 1}`)
	_, _, run, _ := postRun(t, g.URL, key, "slow")
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", g.URL+"/v1/runs/"+run.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	first, err := http.DefaultClient.Do(req)
	if err != nil || first.StatusCode != 200 {
		t.Fatalf("first stream: %v %v", err, first)
	}
	var e errBody
	code, h := call(t, "GET", g.URL+"/v1/runs/"+run.ID+"/events", key, "", &e)
	if code != 429 || e.Error.Code != "max_streams" || h.Get("Retry-After") == "" {
		t.Fatalf("second stream: %d %+v", code, e)
	}
	cancel()
	first.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest("GET", g.URL+"/v1/runs/"+run.ID+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		ctx2, cancel2 := context.WithTimeout(context.Background(), time.Second)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx2))
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			cancel2()
			break
		}
		if resp != nil {
			resp.Body.Close()
		}
		cancel2()
		if time.Now().After(deadline) {
			t.Fatal("the stream slot was not given back after the first stream closed")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDevKeysAndUISession(t *testing.T) {
	g := startTenantGateway(t, nil)
	path := filepath.Join(g.Dir, "dev-keys.json")
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("dev keys file: %v mode %v", err, fi)
	}
	raw, _ := os.ReadFile(path)
	var f map[string]string
	if err := json.Unmarshal(raw, &f); err != nil || f["tenant_key"] != g.Dev.TenantKey || f["admin_key"] != g.Dev.AdminKey {
		t.Fatalf("dev-keys.json = %s", raw)
	}
	if ig, err := os.ReadFile(filepath.Join(g.Dir, ".gitignore")); err != nil || !strings.Contains(string(ig), "*") {
		t.Fatalf("the data folder is not git-ignored: %v %q", err, ig)
	}
	// A second start reads the same keys; a fresh store gets them again.
	st, err := store.Open(filepath.Join(t.TempDir(), "other.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tn, _ := NewTenancy(st, nil)
	dk, created, err := tn.EnsureDevKeys(path)
	if err != nil || created || dk != g.Dev {
		t.Fatalf("second EnsureDevKeys: %+v created=%v err=%v", dk, created, err)
	}
	req, _ := http.NewRequest("GET", "http://x/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+g.Dev.TenantKey)
	if p, e := tn.authenticate(req); e != nil || p.tenantID() != DevTenantID {
		t.Fatalf("dev key on a fresh store: %+v %v", p, e)
	}
	var s map[string]string
	if code, _ := call(t, "GET", g.URL+"/ui/session", "", "", &s); code != 200 || s["tenant_key"] != g.Dev.TenantKey {
		t.Fatalf("/ui/session: %d %v", code, s)
	}
	req, _ = http.NewRequest("GET", g.URL+"/ui/session", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("/ui/session through a proxy: %d", resp.StatusCode)
	}
	// Without local mode there is no session.
	plain := startTenantGateway(t, func(c *Config, _ *actors.Config) { c.DevKeys = nil })
	if code, _ := call(t, "GET", plain.URL+"/ui/session", "", "", nil); code != 404 {
		t.Fatalf("/ui/session outside local mode: %d", code)
	}
}

func TestRegistryReplicationIsLastWriterWins(t *testing.T) {
	open := func() *Tenancy {
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
	a, b := open(), open()
	tn, key, _, err := a.CreateTenant("", "acme", store.Limits{RequestsPerMinute: 5})
	if err != nil {
		t.Fatal(err)
	}
	old := encodeRegistry(a.snapshot())
	b.merge(old)
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	if p, e := b.authenticate(req); e != nil || p.tenantID() != tn.ID || p.tenant.Limits.RequestsPerMinute != 5 {
		t.Fatalf("replicated key: %+v %v", p, e)
	}
	lim := store.Limits{RequestsPerMinute: 9}
	if _, err := b.UpdateTenant(tn.ID, nil, &lim); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RevokeKey(KeyID(key)); err != nil {
		t.Fatal(err)
	}
	a.merge(encodeRegistry(b.snapshot()))
	b.merge(old) // an old copy arriving late changes nothing
	for name, x := range map[string]*Tenancy{"a": a, "b": b} {
		got, _ := x.Tenant(tn.ID)
		if got.Limits.RequestsPerMinute != 9 {
			t.Fatalf("%s: limits %+v; want the newer 9/min", name, got.Limits)
		}
		if _, e := x.authenticate(req); e == nil {
			t.Fatalf("%s: a revoked key still works", name)
		}
	}
	// A key row whose id does not match its hash is refused.
	bad := encodeRegistry(nil, []store.Key{{ID: "key_0000000000000000", Hash: keyHash("x-something-long-enough"), UpdatedAt: time.Now()}})
	a.merge(bad)
	if _, ok := a.keys["key_0000000000000000"]; ok {
		t.Fatal("a forged key row was accepted")
	}
}

func TestTenantsFile(t *testing.T) {
	good := `
admin_keys: ["sha256:` + strings.Repeat("ab", 32) + `"]
tenants:
  - name: Acme Corp
    keys: ["qlc_9f3c1a7e5b2d8046c1e9a3f7b5d20864e1c3a5f7"]
    limits: {requests_per_minute: 60, token_budget: 1000, budget_period: month, profiles: [instant], weight: 2}
  - id: beta
    name: Beta
`
	f, err := ParseTenantsFile([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if f.Tenants[0].ID != "acme-corp" || f.Tenants[1].ID != "beta" || f.Tenants[0].Limits.Weight != 2 {
		t.Fatalf("parsed %+v", f.Tenants)
	}
	for name, bad := range map[string]string{
		"unknown field":  "tenants: [{name: a, limit: {}}]",
		"no name":        "tenants: [{id: a}]",
		"duplicate":      "tenants: [{name: a}, {name: a}]",
		"bad id":         "tenants: [{id: 'a b', name: a}]",
		"short key":      "tenants: [{name: a, keys: [short]}]",
		"bad hash":       "admin_keys: ['sha256:zz']",
		"negative limit": "tenants: [{name: a, limits: {concurrent_runs: -1}}]",
		"bad period":     "tenants: [{name: a, limits: {budget_period: year}}]",
		"not yaml":       "tenants: [",
	} {
		if _, err := ParseTenantsFile([]byte(bad)); err == nil {
			t.Errorf("%s: accepted %q", name, bad)
		}
	}
	// Applied to a store: keys work, and the file's version loses to a later admin change.
	st, err := store.Open(filepath.Join(t.TempDir(), "f.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tn, _ := NewTenancy(st, nil)
	path := filepath.Join(t.TempDir(), "tenants.yaml")
	if err := os.WriteFile(path, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	_ = os.Chtimes(path, old, old)
	if err := tn.LoadTenantsFile(path); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://x/", nil)
	req.Header.Set("Authorization", "Bearer qlc_9f3c1a7e5b2d8046c1e9a3f7b5d20864e1c3a5f7")
	if p, e := tn.authenticate(req); e != nil || p.tenantID() != "acme-corp" {
		t.Fatalf("file key: %+v %v", p, e)
	}
	lim := store.Limits{RequestsPerMinute: 1}
	if _, err := tn.UpdateTenant("acme-corp", nil, &lim); err != nil {
		t.Fatal(err)
	}
	if err := tn.LoadTenantsFile(path); err != nil { // a restart with the same (older) file
		t.Fatal(err)
	}
	if got, _ := tn.Tenant("acme-corp"); got.Limits.RequestsPerMinute != 1 {
		t.Fatalf("the older file undid an admin change: %+v", got.Limits)
	}
}

func FuzzParseTenantsFile(f *testing.F) {
	f.Add([]byte("tenants: [{name: a, keys: [qlc_9f3c1a7e5b2d8046c1e9a3f7b5d20864e1c3a5f7], limits: {token_budget: 5}}]"))
	f.Add([]byte("admin_keys: [x]"))
	f.Add([]byte("{}"))
	// Weak keys (refused), a strong one and a hash (accepted).
	f.Add([]byte("admin_keys: [qlc_testadminkey00000000000000000]"))
	f.Add([]byte("tenants: [{name: a, keys: [qlc_0123456789abcdef0123]}]"))
	f.Add([]byte("tenants: [{name: a, keys: [passwordpasswordpasswordpassword]}]"))
	f.Add([]byte("admin_keys: [9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, 'sha256:" + strings.Repeat("ab", 32) + "']"))
	f.Fuzz(func(t *testing.T, data []byte) {
		tf, err := ParseTenantsFile(data)
		if err != nil {
			return
		}
		// Every key accepted in clear has the entropy minKeyBits asks.
		for _, k := range tf.AdminKeys {
			if !strings.HasPrefix(k, "sha256:") && keyBits(k) < minKeyBits {
				t.Fatalf("accepted a weak admin key (%.0f bits)", keyBits(k))
			}
		}
		for _, tn := range tf.Tenants {
			if !validID(tn.ID) || strings.TrimSpace(tn.Name) == "" || tn.Limits.Validate() != nil {
				t.Fatalf("accepted a bad tenant %+v", tn)
			}
		}
	})
}

func waitStatusKey(t *testing.T, base, key, id, want string, v *runView) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		call(t, "GET", base+"/v1/runs/"+id, key, "", v)
		if v.Status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s is %q; want %q", id, v.Status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitTokens waits until a run has streamed some tokens.
func waitTokens(t *testing.T, base, key, id string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var v runView
		call(t, "GET", base+"/v1/runs/"+id, key, "", &v)
		if len(v.Stages) > 0 && v.Stages[0].Tokens > 5 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s streams nothing", id)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitUsage(t *testing.T, base, key string, n int) []store.Usage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var out struct{ Data []store.Usage }
		call(t, "GET", base+"/v1/usage", key, "", &out)
		if len(out.Data) >= n {
			return out.Data
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d usage records; want %d", len(out.Data), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func runEvents(t *testing.T, base, key, id string) []sseEvent {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var evs []sseEvent
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		if ev.Event != "" {
			evs = append(evs, ev)
		}
		return true
	})
	return evs
}

// TestFinishedRunsOutliveTheGateway: a gateway started again on the same
// store still serves a finished run (resource and events), to its tenant only.
func TestFinishedRunsOutliveTheGateway(t *testing.T) {
	g := startTenantGateway(t, nil)
	_, other := newTenant(t, g, "other", "")
	_, _, run, _ := postRun(t, g.URL, g.Dev.TenantKey, "instant")
	var before runView
	waitStatusKey(t, g.URL, g.Dev.TenantKey, run.ID, "completed", &before)
	evs := runEvents(t, g.URL, g.Dev.TenantKey, run.ID)
	waitUsage(t, g.URL, g.Dev.TenantKey, 1) // billed, so kept

	// A second gateway (a fresh engine: the run is not in memory) on the same store.
	g2 := startGateway(t, "", func(c *Config, _ *actors.Config) { c.Tenancy = g.Tenancy })
	var after runView
	if code, _ := call(t, "GET", g2.URL+"/v1/runs/"+run.ID, g.Dev.TenantKey, "", &after); code != 200 {
		t.Fatalf("finished run on the restarted gateway: %d", code)
	}
	if after.Status != "completed" || after.Answer != before.Answer || after.Answer == "" || after.LastSeq != before.LastSeq {
		t.Fatalf("restored run: %+v; before %+v", after, before)
	}
	evs2 := runEvents(t, g2.URL, g.Dev.TenantKey, run.ID)
	if len(evs2) != len(evs) {
		t.Fatalf("restored log has %d events; the run had %d", len(evs2), len(evs))
	}
	for i := range evs {
		if evs[i].ID != evs2[i].ID || evs[i].Event != evs2[i].Event {
			t.Fatalf("event %d: %s %s; was %s %s", i, evs2[i].ID, evs2[i].Event, evs[i].ID, evs[i].Event)
		}
	}
	if code, _ := call(t, "GET", g2.URL+"/v1/runs/"+run.ID, other, "", nil); code != 404 {
		t.Fatalf("another tenant reads the kept run: %d", code)
	}
}
