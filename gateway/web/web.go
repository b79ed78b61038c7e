package web

import (
	"bytes"
	"embed"
	"encoding/json"
	"html"
	"io/fs"
	"net/http"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// FS holds the UI's static files at its root: index.html, app.css and app.js
// (the asking UI), and admin.html, admin.css and admin.js (the admin
// console, served at /admin).
//
//go:embed index.html app.css app.js admin.html admin.css admin.js
var FS embed.FS

// contentSecurityPolicy allows only this origin's own script, style and
// connections, and data: images (the inline favicon). Model text is never
// turned into markup, and this policy makes sure nothing injected could run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// stagesAttr and rolesAttr are the placeholders in index.html that page
// fills with the stage table and the role table.
const (
	stagesAttr = `data-stages=""`
	rolesAttr  = `data-roles=""`
)

// page is index.html with the chain's stages' names, titles and roles
// (stagework's stage table, as JSON) in the data-stages attribute of
// #stages, and every role's (the strategies' too: stagework's role table)
// in data-roles, so app.js holds no list of its own and has them before any
// API call.
func page() []byte {
	b, err := fs.ReadFile(FS, "index.html")
	if err != nil {
		panic("web: index.html is missing") // ruled out by a test
	}
	for _, a := range []struct {
		attr  string
		table []stagework.StageInfo
	}{{stagesAttr, stagework.StageTable()}, {rolesAttr, stagework.RoleTable()}} {
		if bytes.Count(b, []byte(a.attr)) != 1 {
			panic("web: index.html lacks its one " + a.attr) // ruled out by a test
		}
		table, err := json.Marshal(a.table)
		if err != nil {
			panic("web: " + err.Error())
		}
		name, _, _ := bytes.Cut([]byte(a.attr), []byte("="))
		b = bytes.Replace(b, []byte(a.attr), []byte(string(name)+`="`+html.EscapeString(string(table))+`"`), 1)
	}
	return b
}

// Handler serves the UI: "/" is index.html (with the stage table filled in),
// "/admin" is the admin console (admin.html), other paths are files from FS, and anything else is 404. Only GET and HEAD are allowed. Responses carry a strict
// Content-Security-Policy and "Cache-Control: no-cache" (files are small and
// change with the binary, so the browser revalidates rather than guesses). It
// is safe for concurrent use.
func Handler() http.Handler {
	files := http.FileServerFS(FS)
	index := page()
	admin, err := fs.ReadFile(FS, "admin.html")
	if err != nil {
		panic("web: admin.html is missing") // ruled out by a test
	}
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
		if r.URL.Path == "/" {
			http.ServeContent(w, r, "index.html", time.Time{}, bytes.NewReader(index))
			return
		}
		if r.URL.Path == "/admin" {
			http.ServeContent(w, r, "admin.html", time.Time{}, bytes.NewReader(admin))
			return
		}
		files.ServeHTTP(w, r)
	})
}
