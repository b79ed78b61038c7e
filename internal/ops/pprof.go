package ops

import (
	"net/http"
	"net/http/pprof"
)

// PprofPrefix is where Pprof serves the profiles.
const PprofPrefix = "/debug/pprof/"

// Pprof serves net/http/pprof's profiles under /debug/pprof/ (the index,
// cmdline, profile, symbol, trace, and every runtime profile by name:
// heap, goroutine, allocs, block, mutex, threadcreate), and 404 elsewhere.
// Serve it on an ops listener only, never on a public address: profiles
// show code, arguments and memory, and a CPU profile or a trace costs the
// process while it runs.
func Pprof() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(PprofPrefix+"cmdline", pprof.Cmdline)
	mux.HandleFunc(PprofPrefix+"profile", pprof.Profile)
	mux.HandleFunc(PprofPrefix+"symbol", pprof.Symbol)
	mux.HandleFunc(PprofPrefix+"trace", pprof.Trace)
	mux.HandleFunc(PprofPrefix, pprof.Index) // the index, and /debug/pprof/<name> by name
	return mux
}
