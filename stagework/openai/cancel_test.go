package openai

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/stagework"
)

// waitLimit bounds every wait in these tests. It is a deadline for a
// failing test, not a timing goal: BenchmarkCancel measures latency.
const waitLimit = 10 * time.Second

const contentEvent = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n"

// phases are the points at which a request is held while the client cancels.
var phases = []struct {
	name   string
	before func(w http.ResponseWriter) // what the server sends before holding
	tokens int                         // content chunks the client reads first
}{
	{"before headers", nil, 0},
	{"after headers, before first token", func(w http.ResponseWriter) {
		sseHeaders(w)
		io.WriteString(w, ": OPENROUTER PROCESSING\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n")
		w.(http.Flusher).Flush()
	}, 0},
	{"mid-stream", func(w http.ResponseWriter) {
		sseHeaders(w)
		io.WriteString(w, strings.Repeat(contentEvent, 3))
		w.(http.Flusher).Flush()
	}, 3},
}

// tlsServer starts an HTTPS test server that offers HTTP/2, and returns a
// TLS config trusting it.
func tlsServer(t testing.TB, h http.Handler) (*httptest.Server, *tls.Config) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, trust(srv)
}

// trust returns a TLS config that trusts a TLS test server's certificate.
func trust(srv *httptest.Server) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// TestCancelClosesUpstream cancels the caller's context at each phase, over
// HTTP/1.1 and HTTP/2, and checks that the call returns context.Canceled and
// the server sees its request context end.
func TestCancelClosesUpstream(t *testing.T) {
	for _, proto := range []string{"http1", "http2"} {
		for _, ph := range phases {
			t.Run(proto+"/"+ph.name, func(t *testing.T) {
				h := newHold(ph.before)
				var p *Provider
				if proto == "http1" {
					srv := startServer(t, h)
					p = newProvider(t, srv.URL+"/v1")
				} else {
					srv, tlsCfg := tlsServer(t, h)
					p = newProvider(t, srv.URL+"/v1", func(c *Config) { c.TLSConfig = tlsCfg })
				}
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() {
					s, err := p.Stream(ctx, testRequest())
					if err != nil {
						done <- err
						return
					}
					defer s.Close()
					for i := 0; i < ph.tokens; i++ {
						if _, err := s.Recv(); err != nil {
							done <- err
							return
						}
					}
					_, err = s.Recv()
					done <- err
				}()
				waitChan(t, "request at the server", waitLimit, h.arrived)
				cancel()
				err := waitChan(t, "the call to return", waitLimit, done)
				if e := isCanceled(err); e != nil {
					t.Fatalf("%v: %v", e, err)
				}
				waitChan(t, "the server to see the cancel", waitLimit, h.gone)
			})
		}
	}
}

// TestCloseClosesUpstream closes a stream mid-flight without cancelling.
func TestCloseClosesUpstream(t *testing.T) {
	for _, proto := range []string{"http1", "http2"} {
		t.Run(proto, func(t *testing.T) {
			h := newHold(phases[2].before)
			var p *Provider
			if proto == "http1" {
				p = newProvider(t, startServer(t, h).URL+"/v1")
			} else {
				srv, tlsCfg := tlsServer(t, h)
				p = newProvider(t, srv.URL+"/v1", func(c *Config) { c.TLSConfig = tlsCfg })
			}
			s, err := p.Stream(context.Background(), testRequest())
			if err != nil {
				t.Fatal(err)
			}
			if c, err := s.Recv(); err != nil || c.Text != "tok " {
				t.Fatalf("%q %v", c.Text, err)
			}
			s.Close()
			waitChan(t, "the server to see the close", waitLimit, h.gone)
		})
	}
}

// TestCancelDuringTLSHandshake holds a connection that never answers the
// TLS ClientHello; cancelling must close it.
func TestCancelDuringTLSHandshake(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted, closed := make(chan struct{}), make(chan struct{})
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		close(accepted)
		conn.SetReadDeadline(time.Now().Add(waitLimit))
		_, _ = io.Copy(io.Discard, conn) // returns when the client closes
		close(closed)
	}()
	p := newProvider(t, "https://"+ln.Addr().String()+"/v1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Stream(ctx, testRequest())
		done <- err
	}()
	waitChan(t, "the connection", waitLimit, accepted)
	cancel()
	if e := isCanceled(waitChan(t, "the call to return", waitLimit, done)); e != nil {
		t.Fatal(e)
	}
	waitChan(t, "the client to close the connection", waitLimit, closed)
}

// TestCancelWhileDialing cancels while the dialer is still connecting.
func TestCancelWhileDialing(t *testing.T) {
	dialing, sawDone := make(chan struct{}), make(chan struct{})
	p := newProvider(t, "http://upstream.invalid/v1", func(c *Config) {
		c.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			close(dialing)
			<-ctx.Done()
			close(sawDone)
			return nil, ctx.Err()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := p.Stream(ctx, testRequest())
		done <- err
	}()
	waitChan(t, "the dial", waitLimit, dialing)
	cancel()
	if e := isCanceled(waitChan(t, "the call to return", waitLimit, done)); e != nil {
		t.Fatal(e)
	}
	waitChan(t, "the dialer to see the cancel", waitLimit, sawDone)
}

// TestDeadline: a caller's deadline is a timeout that still matches
// context.DeadlineExceeded, and it closes the upstream request too.
func TestDeadline(t *testing.T) {
	for _, ph := range phases {
		t.Run(ph.name, func(t *testing.T) {
			h := newHold(ph.before)
			p := newProvider(t, startServer(t, h).URL+"/v1")
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			s, err := p.Stream(ctx, testRequest())
			if err == nil {
				defer s.Close()
				_, _, err = drain(s)
			}
			mustKind(t, err, stagework.ErrTimeout)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("%v does not match context.DeadlineExceeded", err)
			}
			waitChan(t, "the server to see the end", waitLimit, h.gone)
		})
	}
}

func TestResponseHeaderTimeout(t *testing.T) {
	h := newHold(nil)
	p := newProvider(t, startServer(t, h).URL+"/v1", func(c *Config) { c.ResponseHeaderTimeout = 200 * time.Millisecond })
	_, err := p.Stream(context.Background(), testRequest())
	mustKind(t, err, stagework.ErrTimeout)
	waitChan(t, "the server to see the end", waitLimit, h.gone)
}

func TestIdleTimeout(t *testing.T) {
	h := newHold(phases[2].before) // three tokens, then silence
	p := newProvider(t, startServer(t, h).URL+"/v1", func(c *Config) { c.IdleTimeout = 300 * time.Millisecond })
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	text, n, err := drain(s)
	pe := mustKind(t, err, stagework.ErrTimeout)
	if n != 3 || text != "tok tok tok " || !strings.Contains(pe.Message, "no data within 300ms") {
		t.Fatalf("n=%d text=%q message=%q", n, text, pe.Message)
	}
	waitChan(t, "the server to see the end", waitLimit, h.gone)
}

// keepAliveServer sends only keep-alive comments for a while, then a token
// and the end, pacing itself with a ticker.
func keepAliveServer(t *testing.T, every time.Duration, count int, content bool) *httptest.Server {
	return startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		f := w.(http.Flusher)
		f.Flush()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for i := 0; i < count; i++ {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
			io.WriteString(w, ": OPENROUTER PROCESSING\n\n")
			f.Flush()
		}
		if content {
			io.WriteString(w, okStream)
		}
	}))
}

// TestCommentsKeepStreamAlive: keep-alive comments reset the idle timer. The
// server is silent apart from comments for three idle periods; each gap is a
// tenth of the timeout.
func TestCommentsKeepStreamAlive(t *testing.T) {
	srv := keepAliveServer(t, 40*time.Millisecond, 30, true)
	p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.IdleTimeout = 400 * time.Millisecond })
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if text, _, err := drain(s); text != "hi" || err != io.EOF {
		t.Fatalf("got %q, %v", text, err)
	}
}

// TestFirstTokenTimeout: comments keep the connection alive but are not
// tokens; FirstTokenTimeout still fires.
func TestFirstTokenTimeout(t *testing.T) {
	srv := keepAliveServer(t, 20*time.Millisecond, 1000, false)
	p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.FirstTokenTimeout = 300 * time.Millisecond })
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, _, err = drain(s)
	pe := mustKind(t, err, stagework.ErrTimeout)
	if !strings.Contains(pe.Message, "no first token within 300ms") {
		t.Fatalf("message %q", pe.Message)
	}
}

// TestCancelDropsBufferedChunks: after a cancel, Recv returns the
// cancellation even though chunks are already buffered.
func TestCancelDropsBufferedChunks(t *testing.T) {
	h := newHold(func(w http.ResponseWriter) {
		sseHeaders(w)
		io.WriteString(w, strings.Repeat(contentEvent, 5))
		w.(http.Flusher).Flush()
	})
	p := newProvider(t, startServer(t, h).URL+"/v1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := p.Stream(ctx, testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitChan(t, "request at the server", waitLimit, h.arrived)
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := s.Recv(); isCanceled(err) != nil {
		t.Fatalf("Recv after cancel: %v", err)
	}
	waitChan(t, "the server to see the cancel", waitLimit, h.gone)
}

// TestSlowConsumerIsNotIdle: time the consumer spends away from Recv is not
// upstream silence. The consumer pauses for three idle timeouts between
// tokens while the server has already sent everything.
func TestSlowConsumerIsNotIdle(t *testing.T) {
	body := strings.Repeat(contentEvent, 2000) + okStream // more than the socket and decoder buffers hold
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sseHeaders(w)
		io.WriteString(w, body)
	}))
	p := newProvider(t, srv.URL+"/v1", func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	s, err := p.Stream(context.Background(), testRequest())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Recv(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // a busy consumer, not synchronisation
	_, n, err := drain(s)
	if err != io.EOF || n != 2000 {
		t.Fatalf("n=%d err=%v", n, err)
	}
}
