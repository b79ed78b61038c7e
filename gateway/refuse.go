package gateway

import (
	"bytes"
	"net/http"
	"strconv"
	"time"

	"github.com/qlc-project/qlc/stagework/discover"
)

// The refusal at the door (issue 18: every refusal in ≤ 5 ms). While no
// node has room for a run (Engine.Saturated), a request that would start
// one — POST /v1/runs, POST /v1/chat/completions — is answered here, in
// the outermost handler: after the key is checked (a bad key still gets
// its 401 from the normal path) and before tracing, routing, the body or
// the JSON encoder. The answer is prepared bytes: 503 cluster_saturated
// with Retry-After, the same body writeError writes. What the request
// costs the gateway then is the HTTP parsing net/http did before the
// handler; qlc_refusal_seconds measures the rest (handler entry to the
// answer written) of every refusal of a run (429, 503), at the door or
// in the handler, so a slow refusal seen by a client can be told apart
// from a slow gateway.

// saturatedBody is writeError's body for cluster_saturated.
var saturatedBody = func() []byte {
	var b bytes.Buffer
	rec := &bodyRecorder{h: http.Header{}, b: &b}
	writeError(rec, errServer(http.StatusServiceUnavailable, "cluster_saturated", saturatedMessage))
	return b.Bytes()
}()

const saturatedMessage = "every node is at its run limit; retry after the Retry-After"

// Header values shared by every fast refusal (net/http only reads them).
var (
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
	hdrQLC     = []string{"qlc"}
	hdrQLCName = http.CanonicalHeaderKey(discover.QLCHeader)
	hdrLength  = []string{strconv.Itoa(len(saturatedBody))}
	hdrRetry   = func() (v [11][]string) {
		for i := range v {
			v[i] = []string{strconv.Itoa(i)}
		}
		return v
	}()
)

// startsRun reports whether r asks for a new run.
func startsRun(r *http.Request) bool {
	return r.Method == http.MethodPost && (r.URL.Path == "/v1/runs" || r.URL.Path == "/v1/chat/completions")
}

// refuseAtTheDoor wraps the gateway's handler with the fast refusal.
func (s *Server) refuseAtTheDoor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !startsRun(r) {
			next.ServeHTTP(w, r)
			return
		}
		t0 := time.Now()
		full, after := s.engine.Saturated()
		tenant := s.cfg.Tenant
		if full && s.tenancy != nil {
			p, e := s.tenancy.authenticate(r)
			if e != nil || p.admin {
				full = false // its 401 or 403, from the normal path
			}
			tenant = p.tenant.ID
		}
		if !full || (s.cfg.LocalOnly && !loopbackHost(r.Host)) {
			// The normal path; its refusals (a limit, a node that said no)
			// are timed too, from here.
			sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
			next.ServeHTTP(sw, r)
			if sw.status == http.StatusTooManyRequests || sw.status == http.StatusServiceUnavailable {
				s.metrics.refusalSeconds.WithLabelValues("handler", strconv.Itoa(sw.status)).Observe(time.Since(t0).Seconds())
			}
			return
		}
		s.metrics.refused.WithLabelValues(s.metrics.tenant(tenant), "cluster_saturated").Inc()
		h := w.Header()
		h["Content-Type"], h["Cache-Control"], h[hdrQLCName], h["Content-Length"] = hdrJSON, hdrNoStore, hdrQLC, hdrLength
		h["Retry-After"] = hdrRetry[min(max(1, int((after+time.Second-1)/time.Second)), len(hdrRetry)-1)]
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(saturatedBody)
		s.metrics.refusalSeconds.WithLabelValues("door", "503").Observe(time.Since(t0).Seconds())
	})
}

// bodyRecorder is the http.ResponseWriter saturatedBody is made with.
type bodyRecorder struct {
	h http.Header
	b *bytes.Buffer
}

func (r *bodyRecorder) Header() http.Header         { return r.h }
func (r *bodyRecorder) Write(p []byte) (int, error) { return r.b.Write(p) }
func (r *bodyRecorder) WriteHeader(int)             {}
