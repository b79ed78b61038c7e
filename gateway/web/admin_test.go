package web

import (
	"io"
	"io/fs"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestAdminConsoleServed checks that /admin is the console page, with the
// same strict headers as "/", and that its files are served.
func TestAdminConsoleServed(t *testing.T) {
	h := Handler()
	for _, c := range []struct{ path, ctype, contains string }{
		{"/admin", "text/html", `<script src="admin.js" defer></script>`},
		{"/admin.js", "javascript", "'use strict';"},
		{"/admin.css", "text/css", "prefers-color-scheme: dark"},
	} {
		resp := get(t, h, http.MethodGet, c.path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), c.ctype) {
			t.Errorf("GET %s: HTTP %d %s", c.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if !strings.Contains(string(body), c.contains) {
			t.Errorf("GET %s lacks %q", c.path, c.contains)
		}
		if resp.Header.Get("Content-Security-Policy") != contentSecurityPolicy {
			t.Errorf("GET %s: CSP %q", c.path, resp.Header.Get("Content-Security-Policy"))
		}
	}
	if resp := get(t, h, http.MethodPost, "/admin"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /admin: HTTP %d, want 405", resp.StatusCode)
	}
}

// TestAdminConsoleRules guards, in the files, what the browser test cannot
// see every path of: nothing from another origin, no inline script, style
// or handlers, no markup built from strings, the admin key a password field
// kept in sessionStorage only (never localStorage, an address or a log).
func TestAdminConsoleRules(t *testing.T) {
	external := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//|url\(\s*["']?(https?:)?//|@import`)
	for _, name := range []string{"admin.html", "admin.css", "admin.js"} {
		b, err := fs.ReadFile(FS, name)
		if err != nil {
			t.Fatal(err)
		}
		// The SVG namespace is a name, not a fetch.
		b = []byte(strings.ReplaceAll(string(b), "'http://www.w3.org/2000/svg'", "''"))
		if m := external.Find(b); m != nil {
			t.Errorf("%s refers to another origin: %q", name, m)
		}
	}
	html, _ := fs.ReadFile(FS, "admin.html")
	if regexp.MustCompile(`<script(\s[^>]*)?>\s*[^<\s]`).Match(html) || regexp.MustCompile(`(?i)<style|\sstyle=|\son[a-z]+=`).Match(html) {
		t.Error("admin.html has inline script, style or event handlers; the Content-Security-Policy forbids them")
	}
	field := regexp.MustCompile(`<input[^>]*\sid="admin-key"[^>]*>`).Find(html)
	if field == nil || !strings.Contains(string(field), `type="password"`) || !strings.Contains(string(field), `autocomplete="off"`) {
		t.Errorf("the admin key field %q is not a password field with autocomplete off", field)
	}
	js, _ := fs.ReadFile(FS, "admin.js")
	if m := regexp.MustCompile(`\.(innerHTML|outerHTML)\s*[+]?=|insertAdjacentHTML|document\.write|\beval\(|new Function\(`).Find(js); m != nil {
		t.Errorf("admin.js builds markup from strings (%q)", m)
	}
	if regexp.MustCompile(`localStorage`).Match(js) {
		t.Error("admin.js uses localStorage; the admin key belongs in sessionStorage only")
	}
	if m := regexp.MustCompile(`console\.\w+\(`).Find(js); m != nil {
		t.Errorf("admin.js logs (%q); nothing it holds should reach the console", m)
	}
	if m := regexp.MustCompile(`[?&]\w*(key|token)\w*=`).Find(js); m != nil {
		t.Errorf("admin.js puts a key in an address: %q", m)
	}
}
