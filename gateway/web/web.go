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

// FS holds the UI's static files at its root: index.html, app.css and app.js.
//
//go:embed index.html app.css app.js
var FS embed.FS

// contentSecurityPolicy allows only this origin's own script, style and
// connections, and data: images (the inline favicon). Model text is never
// turned into markup, and this policy makes sure nothing injected could run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// stagesAttr is the placeholder in index.html that page fills with the stage
// table.
const stagesAttr = `data-stages=""`

// page is index.html with the stages' names, titles and roles (stagework's
// stage table, as JSON) in the data-stages attribute of #stages, so app.js
// holds no list of its own and has them before any API call.
func page() []byte {
	b, err := fs.ReadFile(FS, "index.html")
	if err != nil || bytes.Count(b, []byte(stagesAttr)) != 1 {
		panic("web: index.html is missing or lacks its one " + stagesAttr) // ruled out by a test
	}
	table, err := json.Marshal(stagework.StageTable())
	if err != nil {
		panic("web: " + err.Error())
	}
	return bytes.Replace(b, []byte(stagesAttr), []byte(`data-stages="`+html.EscapeString(string(table))+`"`), 1)
}

// Handler serves the UI: "/" is index.html (with the stage table filled in),
// other paths are files from FS, and anything else is 404. Only GET and HEAD are allowed. Responses carry a strict
// Content-Security-Policy and "Cache-Control: no-cache" (files are small and
// change with the binary, so the browser revalidates rather than guesses). It
// is safe for concurrent use.
func Handler() http.Handler {
	files := http.FileServerFS(FS)
	index := page()
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
		files.ServeHTTP(w, r)
	})
}
