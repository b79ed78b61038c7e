package web

import (
	"encoding/json"
	"html"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

func get(t *testing.T, h http.Handler, method, path string) *http.Response {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Result()
}

func TestHandlerServesTheUI(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html", `<script src="app.js" defer></script>`},
		{"/app.js", "javascript", "'use strict';"},
		{"/app.css", "text/css", "prefers-color-scheme: dark"},
	} {
		resp := get(t, h, http.MethodGet, tc.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: HTTP %d", tc.path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.Contains(ct, tc.ctype) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, ct, tc.ctype)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: no X-Content-Type-Options: nosniff", tc.path)
		}
	}
}

func TestHandlerRejects(t *testing.T) {
	h := Handler()
	if resp := get(t, h, http.MethodGet, "/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.js: HTTP %d, want 404", resp.StatusCode)
	}
	resp := get(t, h, http.MethodPost, "/")
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /: HTTP %d Allow %q, want 405 and GET, HEAD", resp.StatusCode, resp.Header.Get("Allow"))
	}
	if resp := get(t, h, http.MethodHead, "/app.js"); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /app.js: HTTP %d", resp.StatusCode)
	}
}

// TestAssetsAreSelfContained guards the offline and no-markup rules: the page
// loads nothing from another origin, has no inline script or style (the CSP
// would block them), and app.js never assigns HTML from strings.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import`)
	for _, name := range []string{"index.html", "app.css", "app.js"} {
		b, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Fatal(err)
		}
		if m := external.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %q", name, m)
		}
	}
	html, _ := fs.ReadFile(FS, "index.html")
	if regexp.MustCompile(`<script(\s[^>]*)?>\s*[^<\s]`).Match(html) || regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`).Match(html) {
		t.Error("index.html has inline script, style or event handlers; the Content-Security-Policy forbids them")
	}
	js, _ := fs.ReadFile(FS, "app.js")
	if m := regexp.MustCompile(`\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\(|new Function\(`).Find(js); m != nil {
		t.Errorf("app.js builds markup from strings (%q); build DOM nodes and set textContent instead", m)
	}
}

// TestAPIKeyRules guards the API key rules that can be read from the files:
// the key field is a password field the browser does not fill or remember,
// the event stream is read with fetch (EventSource cannot send the key in a
// header), and no console call or address is built from the key.
func TestAPIKeyRules(t *testing.T) {
	html, _ := fs.ReadFile(FS, "index.html")
	field := regexp.MustCompile(`<input[^>]*\sid="api-key"[^>]*>`).Find(html)
	if field == nil {
		t.Fatal("index.html has no #api-key field")
	}
	for _, attr := range []string{`type="password"`, `autocomplete="off"`} {
		if !strings.Contains(string(field), attr) {
			t.Errorf("the API key field %s lacks %s", field, attr)
		}
	}
	if regexp.MustCompile(`<input[^>]*\sid="api-key"[^>]*\svalue=`).Match(html) {
		t.Error("the API key field has a value in the markup")
	}
	js, _ := fs.ReadFile(FS, "app.js")
	if regexp.MustCompile(`new\s+EventSource\b`).Match(js) {
		t.Error("app.js opens an EventSource, which cannot send the Authorization header")
	}
	if !strings.Contains(string(js), `'Last-Event-ID'`) {
		t.Error("app.js does not resume event streams with a Last-Event-ID header")
	}
	if m := regexp.MustCompile(`console\.\w+\([^;]*\b(auth\.key|apiKey|usedKey|key)\b`).Find(js); m != nil {
		t.Errorf("app.js logs something built from the API key: %q", m)
	}
	if m := regexp.MustCompile(`[?&]\w*(key|token)\w*=`).Find(js); m != nil {
		t.Errorf("app.js puts a key in an address: %q", m)
	}
}

// TestPageCarriesTheStageTable checks that "/" holds stagework's stage table
// in #stages' data-stages and its role table in data-roles, in order and
// with titles, and that app.js has no list of stage names of its own.
func TestPageCarriesTheStageTable(t *testing.T) {
	resp := get(t, Handler(), http.MethodGet, "/")
	body, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.Contains(ct, "text/html") {
		t.Fatalf("GET /: HTTP %d, Content-Type %q", resp.StatusCode, ct)
	}
	m := regexp.MustCompile(`<section id="stages"[^>]*\sdata-stages="([^"]*)"`).FindSubmatch(body)
	if m == nil {
		t.Fatal("GET /: #stages has no data-stages attribute")
	}
	var got []stagework.StageInfo
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &got); err != nil {
		t.Fatalf("data-stages is not JSON: %v (%s)", err, m[1])
	}
	want := stagework.StageTable()
	if len(got) != len(want) {
		t.Fatalf("data-stages has %d stages, want %d", len(got), len(want))
	}
	for i := range want {
		w := want[i]
		w.Stage = 0 // not on the wire
		if got[i] != w {
			t.Errorf("stage %d = %+v, want %+v", i, got[i], w)
		}
	}
	// data-roles holds every role's title (the strategies' too), for the
	// cards of a strategy run's steps.
	m = regexp.MustCompile(`<section id="stages"[^>]*\sdata-roles="([^"]*)"`).FindSubmatch(body)
	if m == nil {
		t.Fatal("GET /: #stages has no data-roles attribute")
	}
	var roles []stagework.StageInfo
	if err := json.Unmarshal([]byte(html.UnescapeString(string(m[1]))), &roles); err != nil {
		t.Fatalf("data-roles is not JSON: %v (%s)", err, m[1])
	}
	wantRoles := stagework.RoleTable()
	if len(roles) != len(wantRoles) {
		t.Fatalf("data-roles has %d roles, want %d", len(roles), len(wantRoles))
	}
	for i := range wantRoles {
		w := wantRoles[i]
		w.Stage = 0
		if roles[i] != w {
			t.Errorf("role %d = %+v, want %+v", i, roles[i], w)
		}
	}
	js, _ := fs.ReadFile(FS, "app.js")
	if regexp.MustCompile(`\[\s*'generator'`).Match(js) {
		t.Error("app.js lists the stage names itself")
	}
	// HEAD and the old address of the page still work.
	if resp := get(t, Handler(), http.MethodHead, "/"); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /: HTTP %d", resp.StatusCode)
	}
	if resp := get(t, Handler(), http.MethodGet, "/index.html"); resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "./" {
		t.Errorf("GET /index.html: HTTP %d Location %q, want a redirect to ./", resp.StatusCode, resp.Header.Get("Location"))
	}
}
