package clienttest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// CutProxy forwards every request to a gateway and cuts the first Times
// event streams (…/events) after CutAfter bytes of their body — usually in
// the middle of an event — by dropping the connection, as a flaky network
// or a restarted load balancer would.
type CutProxy struct {
	URL string
	// Cuts counts the streams cut so far.
	Cuts atomic.Int32

	upstream string
	cutAfter int
	left     atomic.Int32
}

// NewCutProxy starts a CutProxy in front of upstream; it stops when the test
// ends.
func NewCutProxy(t testing.TB, upstream string, cutAfter, times int) *CutProxy {
	t.Helper()
	p := &CutProxy{upstream: upstream, cutAfter: cutAfter}
	p.left.Store(int32(times))
	srv := httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	p.URL = srv.URL
	return p
}

func (p *CutProxy) serve(w http.ResponseWriter, r *http.Request) {
	req, err := http.NewRequestWithContext(r.Context(), r.Method, p.upstream+r.URL.RequestURI(), r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	req.Header = r.Header.Clone()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	limit := -1
	if strings.HasSuffix(r.URL.Path, "/events") && resp.StatusCode == http.StatusOK && p.left.Add(-1) >= 0 {
		limit = p.cutAfter
	}
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 4096)
	sent := 0
	for {
		b := buf
		if limit >= 0 {
			if sent >= limit {
				p.Cuts.Add(1)
				panic(http.ErrAbortHandler) // drop the connection mid-stream
			}
			b = buf[:min(len(buf), limit-sent)]
		}
		n, err := resp.Body.Read(b)
		if n > 0 {
			if _, werr := w.Write(b[:n]); werr != nil {
				return
			}
			sent += n
			if fl != nil {
				fl.Flush()
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			return
		}
	}
}
