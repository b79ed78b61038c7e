package gateway

// The admin console (/admin, gateway/web/admin.*) in real headless Chromium
// against a real gateway with tenancy: every action is done through the
// page, and checked through the API. The browser helpers (newUIBrowser,
// waitFor, uiEval) are ui_test.go's.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/chromedp"

	"github.com/qlc-project/qlc/gateway/store"
)

// consoleXSSName is a tenant name that would run script if the page ever
// turned it into markup.
const consoleXSSName = `<img src=x onerror=alert(1)> Acme "&" Co`

// consoleTenant is a tenant as GET /v1/admin/tenants/{id} shows it.
type consoleTenant struct {
	ID     string       `json:"id"`
	Name   string       `json:"name"`
	Limits store.Limits `json:"limits"`
	Keys   []struct {
		ID        string  `json:"id"`
		RevokedAt *string `json:"revoked_at"`
	} `json:"keys"`
}

// consoleJS quotes s as a JavaScript string literal.
func consoleJS(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// consoleSelect picks value in the <select> id and tells the page (a change event).
func (b *uiBrowser) consoleSelect(t *testing.T, id, value string) {
	t.Helper()
	ok := uiEval[bool](t, b, fmt.Sprintf(`(() => { const s = document.getElementById(%s); s.value = %s;
		if (s.value !== %s) return false; s.dispatchEvent(new Event('change')); return true; })()`, consoleJS(id), consoleJS(value), consoleJS(value)))
	if !ok {
		t.Fatalf("select #%s has no option %q", id, value)
	}
}

// consoleClear empties the input id.
func (b *uiBrowser) consoleClear(t *testing.T, id string) {
	t.Helper()
	uiEval[chromedp.Void](t, b, fmt.Sprintf(`document.getElementById(%s).value = ''`, consoleJS(id)))
}

// consoleAuditSeqs lists the seqs the page's audit table shows, top to bottom.
func (b *uiBrowser) consoleAuditSeqs(t *testing.T) []int64 {
	t.Helper()
	return uiEval[[]int64](t, b, `[...document.querySelectorAll('#audit-table tbody tr')].map((r) => Number(r.dataset.seq))`)
}

func TestAdminConsoleUI(t *testing.T) {
	g := startTenantGatewayProfiles(t, consoleProfiles, nil)
	admin := g.Dev.AdminKey
	b := newUIBrowser(t)
	getTenant := func(id string) consoleTenant {
		t.Helper()
		var tn consoleTenant
		if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants/"+id, admin, "", &tn); code != http.StatusOK {
			t.Fatalf("GET /v1/admin/tenants/%s: HTTP %d", id, code)
		}
		return tn
	}
	keyWorks := func(key string) int {
		t.Helper()
		code, _ := call(t, "GET", g.URL+"/v1/usage", key, "", nil)
		return code
	}
	// The browser may copy through the async clipboard API; let it, and let
	// the test read back what was copied.
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		if _, err := chromedp.CallBrowser(b.ctx, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, Origin: g.URL,
		}); err != nil {
			t.Fatalf("grant %s: %v", name, err)
		}
	}

	// Sign in: a tenant key is refused with a clear message, the admin key
	// opens the console and stays in session storage only.
	b.do(t, "open the console", chromedp.Navigate(g.URL+"/admin"), chromedp.WaitVisible(chromedp.ID("admin-key")))
	b.do(t, "sign in with a tenant key", chromedp.SendKeys(chromedp.ID("admin-key"), g.Dev.TenantKey), chromedp.Click(chromedp.ID("login-btn")))
	b.waitFor(t, "the tenant key refused", `!document.getElementById('login-msg').hidden`)
	if msg := uiEval[string](t, b, `document.getElementById('login-msg').textContent`); !strings.Contains(msg, "admin key") {
		t.Errorf("signing in with a tenant key says %q", msg)
	}
	b.consoleClear(t, "admin-key")
	b.do(t, "sign in", chromedp.SendKeys(chromedp.ID("admin-key"), admin), chromedp.Click(chromedp.ID("login-btn")))
	b.waitFor(t, "the console", `!document.getElementById('console').hidden && document.querySelector('#tenant-table tbody tr') !== null`)
	if got := uiEval[string](t, b, `sessionStorage.getItem('qlc.admin.key') + '|' + localStorage.length + '|' + location.href`); got != admin+"|0|"+g.URL+"/admin" {
		t.Errorf("after sign in: session key, localStorage size, address = %q", strings.ReplaceAll(got, admin, "<admin key>"))
	}

	// No runs yet: 30 empty days.
	b.waitFor(t, "the empty usage chart", `document.getElementById('u-chart').dataset.state === 'empty' &&
		document.getElementById('u-chart').dataset.buckets === '30' && document.querySelector('#u-chart rect.bar') === null`)

	// Create a tenant whose name is markup, with two limits.
	b.do(t, "open the new tenant form", chromedp.Click(chromedp.ID("tenant-new")), chromedp.WaitVisible(chromedp.ID("tf-name")))
	b.do(t, "fill the form",
		chromedp.SendKeys(chromedp.ID("tf-name"), consoleXSSName),
		chromedp.SendKeys(chromedp.ID("tf-id"), "acme"),
		chromedp.SendKeys(chromedp.ID("tf-rpm"), "120"),
		chromedp.SendKeys(chromedp.ID("tf-concurrent"), "3"),
		chromedp.Click(chromedp.ID("tf-submit")))
	b.waitFor(t, "the new key", `!document.getElementById('secret').hidden && document.getElementById('secret-key').value !== ''`)
	firstKey := uiEval[string](t, b, `document.getElementById('secret-key').value`)
	tn := getTenant("acme")
	if tn.Name != consoleXSSName || tn.Limits.RequestsPerMinute != 120 || tn.Limits.ConcurrentRuns != 3 || len(tn.Keys) != 1 {
		t.Errorf("created through the page, the API shows %+v", tn)
	}
	if !strings.HasPrefix(firstKey, keyPrefix) || keyWorks(firstKey) != http.StatusOK {
		t.Errorf("the key the page showed (%d chars) does not work against the API", len(firstKey))
	}
	// The name is text, never markup.
	b.waitFor(t, "the tenant's row", `document.querySelector('#tenant-table tr[data-tenant="acme"]') !== null`)
	if got := uiEval[string](t, b, `document.querySelector('tr[data-tenant="acme"] .t-name').textContent`); got != consoleXSSName {
		t.Errorf("the tenant's name shows as %q", got)
	}
	if n := uiEval[int](t, b, `document.querySelectorAll('img').length`); n != 0 {
		t.Errorf("the page has %d <img> elements: a tenant name became markup", n)
	}

	// Copy, then close: the key is gone from the page.
	b.do(t, "copy the key", chromedp.Click(chromedp.ID("secret-copy")))
	b.waitFor(t, "copied", `document.getElementById('secret-copied').dataset.copied === 'yes'`)
	if got, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise)); err != nil || got != firstKey {
		t.Errorf("the clipboard holds %d chars, not the key (%v)", len(got), err)
	}
	b.do(t, "close the key", chromedp.Click(chromedp.ID("secret-done")))
	if got := uiEval[string](t, b, `document.getElementById('secret-key').value + document.body.innerText`); strings.Contains(got, firstKey) {
		t.Error("the key is still in the page after Done")
	}

	// Edit limits: the form starts with the tenant's, and the API shows the change.
	b.do(t, "edit limits", chromedp.Click(chromedp.CSS(`tr[data-tenant="acme"] .t-edit`)), chromedp.WaitVisible(chromedp.ID("tf-rpm")))
	if got := uiEval[string](t, b, `['tf-name','tf-rpm','tf-concurrent'].map((id) => document.getElementById(id).value).join('|')`); got != consoleXSSName+"|120|3" {
		t.Errorf("the edit form starts with %q", got)
	}
	b.do(t, "change limits",
		chromedp.Evaluate[chromedp.Void](`document.getElementById('tf-rpm').value = ''`), chromedp.SendKeys(chromedp.ID("tf-rpm"), "30"),
		chromedp.SendKeys(chromedp.ID("tf-budget"), "500000"))
	b.consoleSelect(t, "tf-period", "day")
	b.do(t, "save limits", chromedp.Click(chromedp.ID("tf-submit")))
	b.waitFor(t, "the new limits", `document.querySelector('tr[data-tenant="acme"] .t-limits').textContent.includes('30 req/min')`)
	if tn := getTenant("acme"); tn.Limits.RequestsPerMinute != 30 || tn.Limits.TokenBudget != 500000 || tn.Limits.BudgetPeriod != "day" ||
		tn.Limits.ConcurrentRuns != 3 || tn.Name != consoleXSSName {
		t.Errorf("edited through the page, the API shows %+v", tn)
	}

	// Issue a second key, then revoke it.
	b.do(t, "issue a key", chromedp.Click(chromedp.CSS(`tr[data-tenant="acme"] .t-issue`)))
	b.waitFor(t, "the issued key", `!document.getElementById('secret').hidden && document.getElementById('secret-key').value !== ''`)
	secondKey := uiEval[string](t, b, `document.getElementById('secret-key').value`)
	if secondKey == firstKey || keyWorks(secondKey) != http.StatusOK {
		t.Errorf("the issued key is the first one again or does not work")
	}
	tn = getTenant("acme")
	if len(tn.Keys) != 2 {
		t.Fatalf("after issuing a key the API shows %d keys", len(tn.Keys))
	}
	secondID := keyIDOf(keyHash(secondKey))
	b.do(t, "close the key", chromedp.Click(chromedp.ID("secret-done")))
	revoke := chromedp.CSS(`li[data-key="` + secondID + `"] .k-revoke`)
	b.waitFor(t, "the second key listed", `document.querySelector('li[data-key="`+secondID+`"] .k-revoke') !== null`)
	b.do(t, "revoke (arm)", chromedp.Click(revoke))
	if got := uiEval[string](t, b, `document.querySelector('li[data-key="`+secondID+`"] .k-revoke').textContent`); got != "Really revoke?" {
		t.Errorf("after one click the revoke button says %q", got)
	}
	if keyWorks(secondKey) != http.StatusOK {
		t.Error("one click revoked the key already")
	}
	b.do(t, "revoke (confirm)", chromedp.Click(revoke))
	b.waitFor(t, "the key shown revoked", `document.querySelector('li[data-key="`+secondID+`"]').hasAttribute('data-revoked')`)
	for _, k := range getTenant("acme").Keys {
		if revoked := k.RevokedAt != nil; revoked != (k.ID == secondID) {
			t.Errorf("key %s: revoked_at %v", k.ID, k.RevokedAt)
		}
	}
	if code := keyWorks(secondKey); code != http.StatusUnauthorized {
		t.Errorf("the revoked key: HTTP %d, want 401", code)
	}
	if keyWorks(firstKey) != http.StatusOK {
		t.Error("revoking the second key stopped the first")
	}

	// Usage: runs by acme (instant) and the dev tenant (pricey).
	consoleRuns(t, g, firstKey, "instant", 3, 3)
	consoleRuns(t, g, g.Dev.TenantKey, "pricey", 1, 1)
	var all struct{ Data []store.Usage }
	call(t, "GET", g.URL+"/v1/usage", admin, "", &all)
	var acmeCost float64
	for _, u := range all.Data {
		if u.TenantID == "acme" {
			acmeCost += u.CostUSD
		}
	}
	b.do(t, "refresh usage", chromedp.Click(chromedp.ID("u-refresh")))
	b.waitFor(t, "the usage chart", `document.getElementById('u-chart').dataset.state === 'data' &&
		document.querySelector('#u-chart rect.bar[data-group="acme"]') !== null`)
	got := uiEval[float64](t, b, `[...document.querySelectorAll('#u-chart rect.bar[data-group="acme"]')].reduce((s, r) => s + Number(r.dataset.value), 0)`)
	if fmt.Sprintf("%.6f", got) != fmt.Sprintf("%.6f", acmeCost) {
		t.Errorf("the chart's acme cost %.6f, the API's %.6f", got, acmeCost)
	}
	if got := uiEval[string](t, b, `document.querySelector('#u-legend li[data-group="acme"]').textContent`); !strings.Contains(got, consoleXSSName) {
		t.Errorf("the legend shows acme as %q", got)
	}
	// Top tenants by cost: the dev tenant (pricey) first, acme second.
	b.waitFor(t, "top tenants", `document.querySelectorAll('#top-chart .top-row').length >= 2`)
	top := uiEval[[]string](t, b, `[...document.querySelectorAll('#top-chart .top-row')].map((g) => g.dataset.tenant)`)
	if len(top) < 2 || top[0] != g.Dev.Tenant || top[1] != "acme" {
		t.Errorf("top tenants by cost %v, want %s then acme", top, g.Dev.Tenant)
	}
	// By profile, by the hour: this hour's bucket has instant and pricey.
	b.consoleSelect(t, "u-range", "24h")
	b.consoleSelect(t, "u-group", "profile")
	b.waitFor(t, "the chart by profile", `document.getElementById('u-chart').dataset.buckets === '24' &&
		document.querySelector('#u-chart rect.bar[data-group="instant"]') !== null &&
		document.querySelector('#u-chart rect.bar[data-group="pricey"]') !== null`)
	if got := uiEval[string](t, b, `[...document.querySelectorAll('#u-table thead th')].map((th) => th.textContent).join(',')`); got != "Hour (UTC),pricey,instant" {
		t.Errorf("the chart's table has columns %q", got)
	}
	b.consoleSelect(t, "u-metric", "runs")
	b.waitFor(t, "runs by profile", `[...document.querySelectorAll('#u-chart rect.bar[data-group="instant"]')].reduce((s, r) => s + Number(r.dataset.value), 0) === 3`)
	b.consoleSelect(t, "u-group", "model")
	b.waitFor(t, "the chart by model", `document.querySelector('#u-chart rect.bar[data-group="big"]') !== null &&
		document.querySelector('#u-chart rect.bar[data-group="g"]') !== null`)
	// One tenant: only its models.
	b.consoleSelect(t, "u-tenant", "acme")
	b.waitFor(t, "acme's models", `document.querySelector('#u-chart rect.bar[data-group="big"]') === null &&
		document.querySelector('#u-chart rect.bar[data-group="g"]') !== null`)

	// The audit log shows what the page did, newest first, and its filters
	// narrow it as the API's do.
	apiSeqs := func(query string) []int64 {
		t.Helper()
		var out struct{ Data []store.AuditEntry }
		if code, _ := call(t, "GET", g.URL+"/v1/admin/audit?order=desc&"+query, admin, "", &out); code != http.StatusOK {
			t.Fatalf("GET /v1/admin/audit?%s: HTTP %d", query, code)
		}
		seqs := []int64{}
		for _, e := range out.Data {
			seqs = append(seqs, e.Seq)
		}
		return seqs
	}
	b.waitFor(t, "the audit log", `document.querySelectorAll('#audit-table tbody tr').length >= 4`)
	actions := uiEval[[]string](t, b, `[...document.querySelectorAll('#audit-table tbody tr')].map((r) => r.dataset.action)`)
	if want := []string{"key.revoke", "key.create", "tenant.update", "tenant.create"}; !slices.Equal(actions, want) {
		t.Errorf("the audit log shows %v, want %v", actions, want)
	}
	if got, want := b.consoleAuditSeqs(t), apiSeqs(""); !slices.Equal(got, want) {
		t.Errorf("the page's audit seqs %v, the API's %v", got, want)
	}
	b.consoleSelect(t, "a-action", "key.revoke")
	b.waitFor(t, "the action filter", `document.querySelectorAll('#audit-table tbody tr').length === 1`)
	if got, want := b.consoleAuditSeqs(t), apiSeqs("action=key.revoke"); !slices.Equal(got, want) {
		t.Errorf("filtered by action: page %v, API %v", got, want)
	}
	if got := uiEval[string](t, b, `document.querySelector('#audit-table tbody tr td:nth-child(4)').textContent`); got != secondID {
		t.Errorf("the revoke's target is %q, want %s", got, secondID)
	}
	b.consoleSelect(t, "a-action", "key.")
	b.consoleSelect(t, "a-tenant", "acme")
	b.waitFor(t, "the tenant filter", `document.querySelectorAll('#audit-table tbody tr').length === 2`)
	if got, want := b.consoleAuditSeqs(t), apiSeqs("action=key.&tenant=acme"); !slices.Equal(got, want) {
		t.Errorf("filtered by tenant: page %v, API %v", got, want)
	}
	b.consoleSelect(t, "a-period", "all") // from the start of time: the same two
	b.consoleSelect(t, "a-period", "24")
	b.waitFor(t, "the period filter", `document.querySelectorAll('#audit-table tbody tr').length === 2`)
	if got, want := b.consoleAuditSeqs(t), apiSeqs("action=key.&tenant=acme&from=0"); !slices.Equal(got, want) {
		t.Errorf("over all time: page %v, API %v", got, want)
	}
	b.do(t, "filter by an unknown actor", chromedp.SendKeys(chromedp.ID("a-actor"), "key_nobody"), chromedp.Click(chromedp.ID("a-apply")))
	b.waitFor(t, "no entries", `document.querySelectorAll('#audit-table tbody tr').length === 0 &&
		document.getElementById('audit-note').textContent === 'No entries match.'`)
	b.screenshot(t, "console")

	// Sign out: the key leaves session storage, a reload asks again.
	b.do(t, "sign out", chromedp.Click(chromedp.ID("signout")))
	b.do(t, "reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.ID("admin-key")))
	if got := uiEval[bool](t, b, `sessionStorage.getItem('qlc.admin.key') === null && document.getElementById('console').hidden`); !got {
		t.Error("after sign out the key is still kept or the console still shown")
	}
	if n := uiEval[int](t, b, `document.querySelectorAll('img').length`); n != 0 {
		t.Errorf("the page has %d <img> elements", n)
	}
	b.noProblems(t, "status of 403") // the tenant key's sign-in attempt
}

// The tenant form covers every limit, among them max_profiles (the tenant's
// own profiles, off by default): the console shows it, a new tenant can be
// given it, and editing another limit keeps it (the form replaces the
// whole set, so a limit the form lacked was silently dropped).
func TestAdminConsoleOwnProfilesLimit(t *testing.T) {
	g := startTenantGatewayProfiles(t, consoleProfiles, nil)
	admin := g.Dev.AdminKey
	limitsOf := func(id string) store.Limits {
		t.Helper()
		var tn consoleTenant
		if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants/"+id, admin, "", &tn); code != http.StatusOK {
			t.Fatalf("GET /v1/admin/tenants/%s: HTTP %d", id, code)
		}
		return tn.Limits
	}
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants", admin, `{"id":"own","name":"Own","limits":{"max_profiles":3,"requests_per_minute":10}}`, nil); code != http.StatusCreated {
		t.Fatalf("create: HTTP %d", code)
	}
	b := newUIBrowser(t)
	b.do(t, "open the console", chromedp.Navigate(g.URL+"/admin"), chromedp.WaitVisible(chromedp.ID("admin-key")))
	b.do(t, "sign in", chromedp.SendKeys(chromedp.ID("admin-key"), admin), chromedp.Click(chromedp.ID("login-btn")))
	b.waitFor(t, "the tenant row", `document.querySelector('tr[data-tenant="own"]') !== null`)
	if row := uiEval[string](t, b, `document.querySelector('tr[data-tenant="own"]').textContent`); !strings.Contains(row, "3 own profiles") {
		t.Errorf("the tenant row does not show max_profiles: %q", row)
	}
	b.do(t, "edit limits", chromedp.Click(chromedp.CSS(`tr[data-tenant="own"] .t-edit`)), chromedp.WaitVisible(chromedp.ID("tf-rpm")))
	if got := uiEval[string](t, b, `document.getElementById('tf-max-profiles').value`); got != "3" {
		t.Errorf("the form starts with max_profiles %q, want 3", got)
	}
	b.consoleClear(t, "tf-rpm")
	b.do(t, "raise requests/min", chromedp.SendKeys(chromedp.ID("tf-rpm"), "20"), chromedp.Click(chromedp.ID("tf-submit")))
	b.waitFor(t, "the form to close", `document.getElementById('tenant-form').hidden`)
	if l := limitsOf("own"); l.RequestsPerMinute != 20 || l.MaxProfiles != 3 {
		t.Errorf("after editing requests/min: %+v, want requests_per_minute 20 and max_profiles 3 kept", l)
	}
	// A new tenant with own profiles allowed.
	b.do(t, "open the new tenant form", chromedp.Click(chromedp.ID("tenant-new")), chromedp.WaitVisible(chromedp.ID("tf-name")))
	b.do(t, "fill it", chromedp.SendKeys(chromedp.ID("tf-name"), "Second"), chromedp.SendKeys(chromedp.ID("tf-id"), "second"),
		chromedp.SendKeys(chromedp.ID("tf-max-profiles"), "5"), chromedp.Click(chromedp.ID("tf-submit")))
	b.waitFor(t, "the new key", `!document.getElementById('secret').hidden`)
	if l := limitsOf("second"); l.MaxProfiles != 5 {
		t.Errorf("a tenant created with 5 own profiles has %+v", l)
	}
	b.noProblems(t)
}
