package openai

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/qlc-project/qlc/stagework"
)

// connCounter counts the connections a test server accepts.
type connCounter struct{ n atomic.Int32 }

func (c *connCounter) hook(_ net.Conn, s http.ConnState) {
	if s == http.StateNew {
		c.n.Add(1)
	}
}

// runToEnd streams one request to io.EOF and closes it.
func runToEnd(t *testing.T, p *Provider) {
	t.Helper()
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if text, _, err := drain(s); text != "hi" || err != io.EOF {
		t.Fatalf("got %q, %v", text, err)
	}
}

// TestKeepAlive: sequential streams on one Provider share one HTTP/1.1
// connection, which needs the body read to its end after [DONE]. A stream
// cancelled mid-way loses its connection, and the next one dials anew.
func TestKeepAlive(t *testing.T) {
	var conns connCounter
	var cancelNext atomic.Bool
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !checkRequest(t, r, wantBody) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if r.ProtoMajor != 1 {
			t.Errorf("proto %s", r.Proto)
		}
		if cancelNext.Load() {
			phases[2].before(w) // three tokens, then wait for the client to go
			<-r.Context().Done()
			return
		}
		// Flush each event, as real servers do: the end of the chunked
		// body then arrives after [DONE], in its own write.
		sseHeaders(w)
		for ev := range strings.SplitAfterSeq(okStream, "\n\n") {
			io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	}))
	srv.Config.ConnState = conns.hook
	srv.Start()
	t.Cleanup(srv.Close)
	p := newProvider(t, srv.URL+"/v1")

	for range 5 {
		runToEnd(t, p)
	}
	if n := conns.n.Load(); n != 1 {
		t.Fatalf("%d connections for 5 sequential streams, want 1", n)
	}

	cancelNext.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := p.Stream(ctx, testRequest())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	s.Close()
	cancelNext.Store(false)
	runToEnd(t, p)
	if n := conns.n.Load(); n != 2 {
		t.Fatalf("%d connections after a cancelled stream, want 2", n)
	}
}

// TestHTTP2: against a TLS server that offers h2 through ALPN, streams use
// HTTP/2 and share one connection, sequentially and concurrently.
func TestHTTP2(t *testing.T) {
	var conns connCounter
	var protoErrs atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			protoErrs.Add(1)
		}
		if !checkRequest(t, r, wantBody) {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		serveOK(w)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = conns.hook
	srv.StartTLS()
	t.Cleanup(srv.Close)
	tlsCfg := trust(srv)
	p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.TLSConfig = tlsCfg })

	for range 3 {
		runToEnd(t, p)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { runToEnd(t, p) })
	}
	wg.Wait()
	if protoErrs.Load() != 0 {
		t.Fatalf("%d requests were not HTTP/2", protoErrs.Load())
	}
	if n := conns.n.Load(); n != 1 {
		t.Fatalf("%d connections, want 1 HTTP/2 connection", n)
	}
}

// TestTLSUntrusted: a server whose certificate is not trusted is a
// connection error, not a hang or a crash.
func TestTLSUntrusted(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { serveOK(w) }))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake error is expected
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, err := newProvider(t, srv.URL+"/v1").Stream(context.Background(), testRequest())
	mustKind(t, err, stagework.ErrConnection)
}
