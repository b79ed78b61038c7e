package web

import (
	"embed"
	"net/http"
)

// FS holds the UI's static files at its root: index.html, app.css and app.js.
//
//go:embed index.html app.css app.js
var FS embed.FS

// contentSecurityPolicy allows only this origin's own script, style and
// connections, and data: images (the inline favicon). Model text is never
// turned into markup, and this policy makes sure nothing injected could run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the UI: "/" is index.html, other paths are files from FS, and
// anything else is 404. Only GET and HEAD are allowed. Responses carry a strict
// Content-Security-Policy and "Cache-Control: no-cache" (files are small and
// change with the binary, so the browser revalidates rather than guesses). It
// is safe for concurrent use.
func Handler() http.Handler {
	files := http.FileServerFS(FS)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "web: method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}
