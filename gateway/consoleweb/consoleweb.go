// Package consoleweb holds the cluster console's page (console.html,
// console.css, console.js), embedded into the binary: no build step,
// nothing fetched from elsewhere. The page asks for an admin key (kept in
// sessionStorage), follows GET /v1/admin/console/events with fetch (the
// key travels in the Authorization header, which EventSource cannot
// send), draws the members, nodes, limiters, tokenizer hosts and runs in
// flight, and on a click shows a run's timeline and its trace as a
// waterfall from GET /v1/admin/console/runs/{id}. Data is only ever set
// as text, never as markup. Package gateway mounts Handler at /console.
package consoleweb

import (
	"embed"
	"net/http"
	"path"
	"strings"
)

// FS holds the page's files.
//
//go:embed console.html console.css console.js
var FS embed.FS

// contentSecurityPolicy allows only this origin's script, style and
// connections: nothing injected could run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
}

// Handler serves /console (the page) and /console/console.{css,js}.
func Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/console")
		name = strings.TrimPrefix(name, "/")
		if name == "" {
			name = "console.html"
		}
		b, err := FS.ReadFile(name)
		if err != nil || strings.Contains(name, "/") {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", types[path.Ext(name)])
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		_, _ = w.Write(b)
	})
}
