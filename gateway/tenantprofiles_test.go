package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/messages"
)

const tenantProfilesFile = `
default_profile: balanced
providers:
  sim:  {kind: sim, sim: {output_tokens: 20}}
  sim2: {kind: sim, sim: {output_tokens: 10}}
profiles:
  balanced:
    provider: sim
    stages: {generator: {model: g, max_tokens: 50}, refiner: {model: r, max_tokens: 50}, validator: {model: v, max_tokens: 50}, curator: {model: c, max_tokens: 50}}
  fast:
    provider: sim2
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// ownChain is a tenant's chain profile on the file's endpoints.
const ownChain = `{"description": "Mine.", "provider": "sim2",
	"stages": {"generator": {"model": "own-g", "max_tokens": 40}, "refiner": {"model": "own-r"},
	           "validator": {"model": "own-v", "temperature": 0}, "curator": {"model": "own-c", "provider": "sim", "fallback": {"model": "own-c2"}}}}`

// ownMoA is a tenant's moa profile, in YAML.
const ownMoA = `strategy: moa
provider: sim
proposers: [{model: own-p1}, {model: own-p2, provider: sim2}]
aggregator: {model: own-agg}
`

// A tenant puts its own profiles (JSON or YAML), within max_profiles;
// they are checked (a 400 names the field; unknown endpoints and base URLs
// are refused; a file profile's name is 409); it runs them through
// POST /v1/runs and chat completions; another tenant never sees or runs
// them; a deleted one runs no more; every change is audited.
func TestTenantProfiles(t *testing.T) {
	g := startTenantGatewayProfiles(t, tenantProfilesFile, nil)
	a, admin := g.Dev.TenantKey, g.Dev.AdminKey
	put := func(key, name, body, ct string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("PUT", g.URL+"/v1/profiles/"+name, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	errOf := func(body string) errBody {
		var e errBody
		_ = json.Unmarshal([]byte(body), &e)
		return e
	}

	// Off until an admin allows them (max_profiles 0, the default).
	if code, body := put(a, "mine", ownChain, ""); code != http.StatusForbidden || errOf(body).Error.Code != "tenant_profiles_off" {
		t.Fatalf("PUT with max_profiles 0: HTTP %d %s", code, body)
	}
	if code, _ := call(t, "PATCH", g.URL+"/v1/admin/tenants/"+g.Dev.Tenant, admin, `{"limits":{"max_profiles":2,"profiles":["balanced"]}}`, nil); code != http.StatusOK {
		t.Fatalf("PATCH limits: HTTP %d", code)
	}

	code, body := put(a, "mine", ownChain, "application/json")
	if code != http.StatusOK || !strings.Contains(body, `"owner":"tenant"`) || !strings.Contains(body, `"own-g"`) {
		t.Fatalf("PUT mine: HTTP %d %s", code, body)
	}
	if code, body := put(a, "mine-moa", ownMoA, "application/yaml"); code != http.StatusOK || !strings.Contains(body, `"strategy":"moa"`) {
		t.Fatalf("PUT mine-moa (YAML): HTTP %d %s", code, body)
	}
	// The limit refuses a third name, not a replacement.
	if code, body := put(a, "third", ownChain, ""); code != http.StatusForbidden || errOf(body).Error.Code != "max_profiles" {
		t.Fatalf("PUT past max_profiles: HTTP %d %s", code, body)
	}
	if code, body := put(a, "mine", ownChain, ""); code != http.StatusOK {
		t.Fatalf("PUT mine again: HTTP %d %s", code, body)
	}
	for _, c := range []struct {
		name, body, want, code string
		status                 int
	}{
		{"bad", `{"provider": "sim", "stages": {"generator": {"model": "x"}, "refiner": {}, "validator": {"model": "x"}, "curator": {"model": "x"}}}`,
			"stages.refiner.model: missing", "invalid_profile", 400},
		{"bad", `{"provider": "nowhere", "stages": {"generator": {"model": "x"}, "refiner": {"model": "x"}, "validator": {"model": "x"}, "curator": {"model": "x"}}}`,
			`stages.generator.provider: "nowhere" is not a provider`, "invalid_profile", 400},
		{"bad", `{"provider": "sim", "base_url": "http://169.254.169.254/", "stages": {}}`, `unknown field "base_url"`, "invalid_profile", 400},
		{"bad", `{"strategy": "vote", "samples": [{"model": "x", "provider": "sim", "system_prompt": "{{.Query}}"}]}`, "system_prompt", "invalid_profile", 400},
		{"bad", `not json`, "not a JSON object", "invalid_json", 400},
		{"Bad_Name", ownChain, "bad name", "invalid_profile", 400},
		{"balanced", ownChain, "profile file", "profile_name_taken", 409},
		{"auto", ownChain, "profile file", "profile_name_taken", 409},
	} {
		code, body := put(a, c.name, c.body, "")
		if e := errOf(body); code != c.status || e.Error.Code != c.code || !strings.Contains(e.Error.Message, c.want) {
			t.Errorf("PUT %s %s: HTTP %d %s, want %d %s with %q", c.name, c.body, code, body, c.status, c.code, c.want)
		}
	}

	// Listed with the file's profiles the tenant may run, marked.
	var list struct {
		Data []profileView `json:"data"`
	}
	call(t, "GET", g.URL+"/v1/profiles", a, "", &list)
	owners := map[string]string{}
	for _, p := range list.Data {
		owners[p.Name] = p.Owner
	}
	if want := map[string]string{"balanced": "server", "mine": "tenant", "mine-moa": "tenant"}; fmt.Sprint(owners) != fmt.Sprint(want) {
		t.Fatalf("GET /v1/profiles: %v, want %v", owners, want)
	}
	var one tenantProfileView
	if code, _ := call(t, "GET", g.URL+"/v1/profiles/mine", a, "", &one); code != http.StatusOK || one.Owner != "tenant" || len(one.Steps) != 4 ||
		one.Steps[3].Provider != "sim" || !strings.Contains(string(one.Definition), "own-c2") {
		t.Fatalf("GET /v1/profiles/mine: HTTP %d %+v", code, one)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/profiles/mine?tenant="+g.Dev.Tenant, admin, "", nil); code != http.StatusOK {
		t.Fatalf("admin GET ?tenant=: HTTP %d", code)
	}

	// Runs: POST /v1/runs (chain and moa) and chat completions.
	v := runWith(t, g, a, "mine", "why is the sky blue?", "completed")
	if v.Profile != "mine" || len(v.Steps) != 4 || v.Steps[0].Model != "own-g" || v.Answer == "" {
		t.Fatalf("run of mine: %+v", v)
	}
	v = runWith(t, g, a, "mine-moa", "why is the sky blue?", "completed")
	if v.Strategy != "moa" || len(v.Steps) != 3 || v.Answer == "" {
		t.Fatalf("run of mine-moa: %+v", v)
	}
	for _, model := range []string{"qlc-mine", "qlc-mine-thinking"} {
		var chat struct {
			Model   string
			Choices []struct{ Message struct{ Content string } }
		}
		code, _ := call(t, "POST", g.URL+"/v1/chat/completions", a, fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hi"}]}`, model), &chat)
		if code != http.StatusOK || len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" {
			t.Fatalf("chat %s: HTTP %d %+v", model, code, chat)
		}
	}
	var models struct{ Data []struct{ ID, Owner string } }
	call(t, "GET", g.URL+"/v1/models", a, "", &models)
	if !slices.ContainsFunc(models.Data, func(m struct{ ID, Owner string }) bool { return m.ID == "qlc-mine" && m.Owner == "tenant" }) {
		t.Fatalf("/v1/models lacks qlc-mine: %+v", models.Data)
	}
	usage := waitUsage(t, g.URL, a, 4)
	if !slices.ContainsFunc(usage, func(u store.Usage) bool {
		return u.Profile == "mine" && len(u.Stages) == 4 && u.Stages[0].Model == "own-g"
	}) {
		t.Fatalf("usage bills the tenant profile's models: %+v", usage)
	}

	// Another tenant: 404 everywhere, and its own profile of the same name
	// is its own.
	_, b := newTenant(t, g, "bee", `{"max_profiles":1}`)
	if code, _ := call(t, "GET", g.URL+"/v1/profiles/mine", b, "", nil); code != http.StatusNotFound {
		t.Fatalf("B GET A's profile: HTTP %d", code)
	}
	if code, _, _, e := postRun(t, g.URL, b, "mine"); code != http.StatusNotFound || e.Error.Code != "unknown_profile" {
		t.Fatalf("B runs A's profile: HTTP %d %+v", code, e)
	}
	var e errBody
	if code, _ := call(t, "POST", g.URL+"/v1/chat/completions", b, `{"model":"qlc-mine","messages":[{"role":"user","content":"hi"}]}`, &e); code != http.StatusNotFound || e.Error.Code != "model_not_found" || strings.Contains(e.Error.Message, "qlc-mine,") || strings.Contains(e.Error.Message, "qlc-mine-thinking") {
		t.Fatalf("B chats with A's profile: HTTP %d %+v", code, e)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/profiles/mine", b, "", nil); code != http.StatusNotFound {
		t.Fatalf("B deletes A's profile: HTTP %d", code)
	}
	call(t, "GET", g.URL+"/v1/profiles", b, "", &list)
	for _, p := range list.Data {
		if p.Owner == "tenant" {
			t.Fatalf("B lists A's profile %s", p.Name)
		}
	}
	if code, body := put(b, "mine", ownMoA, "application/yaml"); code != http.StatusOK {
		t.Fatalf("B puts its own mine: HTTP %d %s", code, body)
	}
	if v := runWith(t, g, b, "mine", "hello", "completed"); v.Strategy != "moa" {
		t.Fatalf("B's mine ran %s, want its own (moa)", v.Strategy)
	}

	// Deleted: the next run is a 404.
	if code, _ := call(t, "DELETE", g.URL+"/v1/profiles/mine", a, "", nil); code != http.StatusOK {
		t.Fatalf("DELETE: HTTP %d", code)
	}
	if code, _, _, e := postRun(t, g.URL, a, "mine"); code != http.StatusNotFound || e.Error.Code != "unknown_profile" {
		t.Fatalf("run after delete: HTTP %d %+v", code, e)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/profiles/mine", a, "", &e); code != http.StatusNotFound || e.Error.Code != "profile_not_found" {
		t.Fatalf("DELETE twice: HTTP %d %+v", code, e)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/profiles/balanced", a, "", &e); code != http.StatusConflict || e.Error.Code != "profile_not_owned" {
		t.Fatalf("DELETE a file profile: HTTP %d %+v", code, e)
	}
	_, audit := textCall(t, "GET", g.URL+"/v1/admin/audit", admin, "")
	for _, want := range []string{`"profile.put"`, `"profile.delete"`, g.Dev.Tenant + "/mine"} {
		if !strings.Contains(audit, want) {
			t.Errorf("audit lacks %s: %s", want, audit)
		}
	}
}

// A tenant profile's run is admitted with its own reservation (every
// step's prompt and max_tokens), not a file profile's: a budget that a
// file profile fits refuses a tenant profile with large steps.
func TestTenantProfileReservationIsItsOwn(t *testing.T) {
	g := startTenantGatewayProfiles(t, tenantProfilesFile, nil)
	_, key := newTenant(t, g, "budgeted", `{"max_profiles":1,"token_budget":3000}`)
	big := `{"provider": "sim", "stages": {"generator": {"model": "g", "max_tokens": 1000}, "refiner": {"model": "r", "max_tokens": 1000},
		"validator": {"model": "v", "max_tokens": 1000}, "curator": {"model": "c", "max_tokens": 1000}}}`
	if code, body := textCall(t, "PUT", g.URL+"/v1/profiles/big", key, big); code != http.StatusOK {
		t.Fatalf("PUT big: HTTP %d %s", code, body)
	}
	if code, _, _, e := postRun(t, g.URL, key, "big"); code != http.StatusTooManyRequests || e.Error.Code != "token_budget" {
		t.Fatalf("run of big: HTTP %d %+v; want 429 token_budget", code, e)
	}
	if code, _, _, e := postRun(t, g.URL, key, "balanced"); code != http.StatusCreated {
		t.Fatalf("run of balanced: HTTP %d %+v", code, e)
	}
}

// Tenant profile rows replicate between gateways, newest wins, deletions
// included; bad rows are refused.
func TestTenantProfilesReplicate(t *testing.T) {
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
	tn, _, _, err := a.CreateTenant("", "acme", store.Limits{MaxProfiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutTenantProfile(tn.ID, "mine", []byte(ownChain)); err != nil {
		t.Fatal(err)
	}
	old := a.receive(&messages.RegistryChange{WantAll: true})
	b.merge(old)
	if p, ok := b.TenantProfile(tn.ID, "mine"); !ok || p.Definition != ownChain {
		t.Fatalf("replicated: %+v %v", p, ok)
	}
	if _, err := b.DeleteTenantProfile(tn.ID, "mine"); err != nil {
		t.Fatal(err)
	}
	a.merge(b.receive(&messages.RegistryChange{WantAll: true}))
	b.merge(old) // an old copy arriving late changes nothing
	for name, x := range map[string]*Tenancy{"a": a, "b": b} {
		if _, ok := x.TenantProfile(tn.ID, "mine"); ok {
			t.Fatalf("%s: a deleted profile is back", name)
		}
	}
	// A restarted gateway loads them from its store.
	st := a.Store()
	re, err := NewTenancy(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutTenantProfile(tn.ID, "again", []byte(ownChain)); err != nil {
		t.Fatal(err)
	}
	if re, err = NewTenancy(st, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := re.TenantProfile(tn.ID, "again"); !ok {
		t.Fatal("a reloaded registry lacks the tenant profile")
	}
	bad := &messages.RegistryChange{TenantProfiles: [][]byte{[]byte(`{"tenant_id":"x","name":"y","updated_at":"` + time.Now().Format(time.RFC3339Nano) + `"}`)}}
	a.merge(bad)
	if _, ok := a.TenantProfile("x", "y"); ok {
		t.Fatal("a row without a definition was accepted")
	}
}
