package gateway

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/qlc-project/qlc/gateway/store"
)

// consoleProfiles is testProfiles with prices, so runs cost something and
// "top tenants by cost" has an order: "instant" is fast and cheap, "pricey"
// as fast and dearer.
const consoleProfiles = `
default_profile: instant
providers:
  sim:  {kind: sim, sim: {output_tokens: 60}}
profiles:
  instant:
    description: zero latency
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  pricey:
    description: zero latency, dear
    provider: sim
    stages: {generator: {model: big}, refiner: {model: big}, validator: {model: big}, curator: {model: big}}
prices:
  g:   {input: 1, output: 2}
  r:   {input: 1, output: 2}
  v:   {input: 1, output: 2}
  c:   {input: 1, output: 2}
  big: {input: 100, output: 200}
`

type seriesBody struct {
	Object    string            `json:"object"`
	Bucket    *string           `json:"bucket"`
	GroupBy   *string           `json:"group_by"`
	Data      []store.SeriesRow `json:"data"`
	Truncated bool              `json:"truncated"`
}

// consoleRuns starts n runs of profile with key and waits until the ledger has
// want records for that key.
func consoleRuns(t *testing.T, g *tenantGateway, key, profile string, n, want int) {
	t.Helper()
	for range n {
		if code, _, _, e := postRun(t, g.URL, key, profile); code != http.StatusCreated {
			t.Fatalf("POST /v1/runs (%s): HTTP %d %+v", profile, code, e)
		}
	}
	waitUsage(t, g.URL, key, want)
}

func TestAdminUsageSeries(t *testing.T) {
	g := startTenantGatewayProfiles(t, consoleProfiles, nil)
	acme, acmeKey := newTenant(t, g, "Acme", "")
	beta, betaKey := newTenant(t, g, "Beta", "")
	consoleRuns(t, g, acmeKey, "instant", 3, 3)
	consoleRuns(t, g, betaKey, "pricey", 1, 1)
	admin := g.Dev.AdminKey
	get := func(query string) seriesBody {
		t.Helper()
		var out seriesBody
		if code, _ := call(t, "GET", g.URL+"/v1/usage?"+query, admin, "", &out); code != http.StatusOK {
			t.Fatalf("GET /v1/usage?%s: HTTP %d", query, code)
		}
		if out.Object != "usage.series" {
			t.Fatalf("GET /v1/usage?%s: object %q", query, out.Object)
		}
		return out
	}
	// Every record, to compare the sums with.
	var all struct{ Data []store.Usage }
	call(t, "GET", g.URL+"/v1/usage", admin, "", &all)
	sums := map[string]store.SeriesRow{}
	models := map[string]int64{}
	for _, u := range all.Data {
		r := sums[u.TenantID]
		r.Runs++
		r.TotalTokens += u.TotalTokens
		r.CostUSD += u.CostUSD
		sums[u.TenantID] = r
		for _, st := range u.Stages {
			models[st.Model] += st.PromptTokens + st.CompletionTokens
		}
	}

	top := get("group_by=tenant")
	if top.Bucket != nil || top.GroupBy == nil || *top.GroupBy != "tenant" || len(top.Data) != 2 {
		t.Fatalf("top tenants: %+v", top)
	}
	if top.Data[0].Group != beta || top.Data[1].Group != acme {
		t.Errorf("top tenants by cost: %s then %s, want %s (pricey) then %s", top.Data[0].Group, top.Data[1].Group, beta, acme)
	}
	for _, r := range top.Data {
		want := sums[r.Group]
		if r.Runs != want.Runs || r.TotalTokens != want.TotalTokens || fmt.Sprintf("%.6f", r.CostUSD) != fmt.Sprintf("%.6f", want.CostUSD) {
			t.Errorf("tenant %s: %+v, want runs %d tokens %d cost %.6f", r.Group, r, want.Runs, want.TotalTokens, want.CostUSD)
		}
	}
	if one := get("group_by=tenant&limit=1"); len(one.Data) != 1 || !one.Truncated || one.Data[0].Group != beta {
		t.Errorf("top 1 tenant: %+v", one)
	}

	hour := get("bucket=hour&group_by=profile")
	now := time.Now().UTC().Truncate(time.Hour)
	var profiles []string
	for _, r := range hour.Data {
		if !r.Start.Equal(now) && !r.Start.Equal(now.Add(-time.Hour)) {
			t.Errorf("hour bucket starts %v; want this hour %v", r.Start, now)
		}
		profiles = append(profiles, r.Group)
	}
	slices.Sort(profiles)
	if profiles = slices.Compact(profiles); !slices.Equal(profiles, []string{"instant", "pricey"}) {
		t.Errorf("by profile per hour: %+v; want rows for instant and pricey", hour.Data)
	}

	day := get("bucket=day&group_by=model&from=" + url.QueryEscape(time.Now().Add(-72*time.Hour).Format(time.RFC3339)))
	got := map[string]int64{}
	for _, r := range day.Data {
		if r.Start.Hour() != 0 || r.Start.Minute() != 0 {
			t.Errorf("day bucket starts %v, not at midnight UTC", r.Start)
		}
		got[r.Group] += r.TotalTokens
	}
	if fmt.Sprint(got) != fmt.Sprint(models) {
		t.Errorf("tokens by model %v, want %v", got, models)
	}

	// One tenant's, with the admin key's tenant= filter; a tenant key sees only its own.
	if f := get("group_by=tenant&tenant=" + acme); len(f.Data) != 1 || f.Data[0].Group != acme {
		t.Errorf("tenant=%s: %+v", acme, f.Data)
	}
	var own seriesBody
	if code, _ := call(t, "GET", g.URL+"/v1/usage?group_by=tenant", acmeKey, "", &own); code != 200 || len(own.Data) != 1 || own.Data[0].Group != acme {
		t.Errorf("a tenant's own series: HTTP %d %+v", code, own.Data)
	}
	if code, _ := call(t, "GET", g.URL+"/v1/usage?group_by=tenant&tenant="+beta, acmeKey, "", nil); code != http.StatusForbidden {
		t.Errorf("a tenant asking for another's series: HTTP %d, want 403", code)
	}
}

func TestAdminUsageSeriesRejects(t *testing.T) {
	g := startTenantGateway(t, nil)
	now := time.Now().UTC()
	for _, c := range []struct{ query, param, code string }{
		{"bucket=minute", "bucket", "invalid_bucket"},
		{"bucket=", "bucket", "invalid_bucket"},
		{"group_by=run", "group_by", "invalid_group_by"},
		{"group_by=", "group_by", "invalid_group_by"},
		{"bucket=hour&from=" + url.QueryEscape(now.AddDate(0, 0, -60).Format(time.RFC3339)), "from", "too_many_buckets"},
		{"bucket=day&from=0", "from", "too_many_buckets"},
		{"bucket=day&limit=0", "limit", "invalid_limit"},
		{"bucket=day&from=yesterday", "from", "invalid_time"},
		{"group_by=tenant&from=" + fmt.Sprint(now.Unix()) + "&to=" + fmt.Sprint(now.Unix()-10), "to", "invalid_range"},
	} {
		var e struct {
			Error struct{ Param, Code string }
		}
		if code, _ := call(t, "GET", g.URL+"/v1/usage?"+c.query, g.Dev.AdminKey, "", &e); code != http.StatusBadRequest ||
			e.Error.Code != c.code || e.Error.Param != c.param {
			t.Errorf("?%s: HTTP %d %+v, want 400 %s on %s", c.query, code, e.Error, c.code, c.param)
		}
	}
	// 40 days of hours is too many; 40 days of days is fine.
	from := url.QueryEscape(now.AddDate(0, 0, -40).Format(time.RFC3339))
	if code, _ := call(t, "GET", g.URL+"/v1/usage?bucket=day&from="+from, g.Dev.AdminKey, "", nil); code != http.StatusOK {
		t.Errorf("40 day buckets: HTTP %d", code)
	}
}

func TestAdminAuditFilters(t *testing.T) {
	g := startTenantGateway(t, nil)
	admin := g.Dev.AdminKey
	acme, _ := newTenant(t, g, "Acme", "")
	beta, _ := newTenant(t, g, "Beta", "")
	var k struct {
		KeyID string `json:"key_id"`
	}
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants/"+acme+"/keys", admin, "", &k); code != http.StatusCreated {
		t.Fatalf("issue key: HTTP %d", code)
	}
	if code, _ := call(t, "DELETE", g.URL+"/v1/admin/keys/"+k.KeyID, admin, "", nil); code != http.StatusOK {
		t.Fatalf("revoke key: HTTP %d", code)
	}
	if code, _ := call(t, "PATCH", g.URL+"/v1/admin/tenants/"+beta, admin, `{"name":"Beta 2"}`, nil); code != http.StatusOK {
		t.Fatalf("patch: HTTP %d", code)
	}
	type entry struct {
		Seq                   int64
		Actor, Action, Target string
	}
	audit := func(query string) []entry {
		t.Helper()
		var out struct{ Data []entry }
		if code, _ := call(t, "GET", g.URL+"/v1/admin/audit?"+query, admin, "", &out); code != http.StatusOK {
			t.Fatalf("GET /v1/admin/audit?%s: HTTP %d", query, code)
		}
		return out.Data
	}
	actions := func(es []entry) string {
		s := ""
		for _, e := range es {
			s += e.Action + ":" + e.Target + " "
		}
		return s
	}
	all := audit("")
	if len(all) != 5 {
		t.Fatalf("audit: %v, want 5 entries", actions(all))
	}
	actor := all[0].Actor
	for _, c := range []struct{ query, want string }{
		{"action=key.revoke", "key.revoke:" + k.KeyID + " "},
		{"action=key.", "key.create:" + k.KeyID + " key.revoke:" + k.KeyID + " "},
		{"tenant=" + acme, "tenant.create:" + acme + " key.create:" + k.KeyID + " key.revoke:" + k.KeyID + " "},
		{"target=" + beta, "tenant.create:" + beta + " tenant.update:" + beta + " "},
		{"tenant=" + beta + "&order=desc&limit=1", "tenant.update:" + beta + " "},
		{"actor=" + actor + "&action=tenant.update", "tenant.update:" + beta + " "},
		{"actor=nobody", ""},
	} {
		if got := actions(audit(c.query)); got != c.want {
			t.Errorf("?%s: %q, want %q", c.query, got, c.want)
		}
	}
	for _, c := range []struct{ query, param string }{
		{"limit=0", "limit"}, {"limit=x", "limit"}, {"order=up", "order"}, {"from=soon", "from"},
	} {
		var e struct{ Error struct{ Param string } }
		if code, _ := call(t, "GET", g.URL+"/v1/admin/audit?"+c.query, admin, "", &e); code != http.StatusBadRequest || e.Error.Param != c.param {
			t.Errorf("?%s: HTTP %d param %q, want 400 on %s", c.query, code, e.Error.Param, c.param)
		}
	}
}
