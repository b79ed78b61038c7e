package gateway

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// Local mode hands the dev tenant's key to a web page on this machine
// (GET /ui/session). A page on any other site can reach a loopback server
// too, through DNS rebinding (its name resolves to 127.0.0.1 after the page
// has loaded, so the browser deems it same-origin) or through a proxy on
// this machine. Both show in the request: the Host header is the attacker's
// name, or a forwarding header is present. So a session is given only when
// the peer is loopback, the Host is a loopback name, and nothing forwarded
// the request; and in local mode (Config.LocalOnly) every request whose
// Host is not a loopback name is refused.

// loopbackHost reports whether host (a Host header, with or without a port)
// names this machine: localhost, 127.0.0.1 or [::1].
func loopbackHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "::1":
		return true
	}
	return false
}

// forwardingHeaders are the headers a proxy adds; any of them means the
// request did not come from a browser on this machine directly.
var forwardingHeaders = []string{
	"Forwarded", "X-Real-Ip", "Via", "X-Client-Ip", "True-Client-Ip", "Cf-Connecting-Ip", "X-Original-Forwarded-For",
	"X-Cluster-Client-Ip", "Fastly-Client-Ip",
}

// forwarded reports whether r carries a proxy's forwarding header
// (X-Forwarded-*, Forwarded, X-Real-IP, Via, …).
func forwarded(r *http.Request) bool {
	for name := range r.Header {
		if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Forwarded-") {
			return true
		}
	}
	for _, h := range forwardingHeaders {
		if _, ok := r.Header[h]; ok {
			return true
		}
	}
	return false
}

// localRequest reports whether r comes straight from a client on this
// machine that addressed it by a loopback name.
func localRequest(r *http.Request) bool {
	return isLoopback(r) && loopbackHost(r.Host) && !forwarded(r)
}

// localSession serves next (GET /ui/session) only to local requests;
// others get 404, as when there is no session.
func (s *Server) localSession(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !localRequest(r) {
			writeError(w, errNotFound("no_session", "no local session: paste an API key"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackOnly, with Config.LocalOnly, refuses every request whose Host is
// not a loopback name with 421 Misdirected Request: an OpenAI-shaped error
// on /v1/, plain text elsewhere.
func (s *Server) loopbackOnly(next http.Handler) http.Handler {
	if !s.cfg.LocalOnly {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if loopbackHost(r.Host) {
			next.ServeHTTP(w, r)
			return
		}
		msg := fmt.Sprintf("this gateway runs in local mode and answers only requests addressed to localhost, 127.0.0.1 or [::1], not %q", r.Host)
		if strings.HasPrefix(r.URL.Path, "/v1/") {
			writeError(w, &apiError{Status: http.StatusMisdirectedRequest, Type: "invalid_request_error", Code: "misdirected_request", Message: msg})
			return
		}
		http.Error(w, msg, http.StatusMisdirectedRequest)
	})
}
