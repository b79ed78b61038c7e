package ops

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// PprofPrefix is where WithPprof serves the profiles.
const PprofPrefix = "/debug/pprof/"

// WithPprof serves net/http/pprof's profiles under /debug/pprof/ (index,
// cmdline, profile, symbol, trace, and every runtime profile by name: heap,
// goroutine, allocs, block, mutex, threadcreate) and everything else with
// h. Wrap only an ops listener's handler: profiles show code, arguments and
// memory, and a CPU profile or trace costs the process while it runs.
func WithPprof(h http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PprofPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(PprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(PprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(PprofPrefix+"trace", pprof.Trace)
	mux.HandleFunc(PprofPrefix, pprof.Index) // the index, and /debug/pprof/<name> by name
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, PprofPrefix) || r.URL.Path == strings.TrimSuffix(PprofPrefix, "/") {
			mux.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
