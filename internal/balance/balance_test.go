package balance

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gw is a stand-in gateway: it answers with its name and the body it read,
// and /readyz with 200 unless ready is false.
type gw struct {
	name  string
	srv   *httptest.Server
	ready atomic.Bool
	hits  atomic.Int64
}

func newGW(t *testing.T, name string) *gw {
	t.Helper()
	g := &gw{name: name}
	g.ready.Store(true)
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			if !g.ready.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
			return
		}
		g.hits.Add(1)
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", g.name)
		io.WriteString(w, g.name+":"+r.Header.Get("X-Forwarded-For")+":"+string(b))
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func newBalancer(t *testing.T, backends ...string) (*Balancer, *httptest.Server) {
	t.Helper()
	b, err := New(Config{Backends: backends, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	front := httptest.NewServer(b)
	t.Cleanup(front.Close)
	return b, front
}

func post(t *testing.T, url, body string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestRoundRobin(t *testing.T) {
	a, b := newGW(t, "a"), newGW(t, "b")
	_, front := newBalancer(t, a.srv.URL, strings.TrimPrefix(b.srv.URL, "http://"))
	seen := map[string]int{}
	for range 10 {
		code, body, _ := post(t, front.URL+"/v1/runs", "q")
		if code != 200 || !strings.HasSuffix(body, ":127.0.0.1:q") {
			t.Fatalf("HTTP %d %q", code, body)
		}
		seen[body[:1]]++
	}
	if seen["a"] != 5 || seen["b"] != 5 {
		t.Fatalf("spread %v, want 5 and 5", seen)
	}
}

// A gateway that is gone (its port refuses connections) costs a request
// nothing: the POST, body and all, goes to the next one, and the dead one
// is skipped until a check finds it again.
func TestRefusedConnectionGoesToTheNext(t *testing.T) {
	a := newGW(t, "a")
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	bal, front := newBalancer(t, deadURL, a.srv.URL)
	for range 4 {
		if code, body, _ := post(t, front.URL+"/v1/runs", "the body"); code != 200 || !strings.HasPrefix(body, "a:") || !strings.HasSuffix(body, ":the body") {
			t.Fatalf("HTTP %d %q", code, body)
		}
	}
	if h := bal.Healthy(); h[strings.TrimPrefix(deadURL, "http://")] {
		t.Fatalf("the dead backend is still marked up: %v", h)
	}
	if a.hits.Load() != 4 {
		t.Fatalf("a served %d, want 4", a.hits.Load())
	}
}

// A gateway whose /readyz says no (starting, draining) leaves the rotation
// at the next check and comes back at the one after it says yes.
func TestHealthChecks(t *testing.T) {
	a, b := newGW(t, "a"), newGW(t, "b")
	bal, front := newBalancer(t, a.srv.URL, b.srv.URL)
	b.ready.Store(false)
	bal.CheckNow(context.Background())
	for range 6 {
		if _, body, _ := post(t, front.URL+"/", ""); !strings.HasPrefix(body, "a:") {
			t.Fatalf("went to %q while b is not ready", body)
		}
	}
	b.ready.Store(true)
	bal.CheckNow(context.Background())
	seen := map[string]bool{}
	for range 4 {
		_, body, _ := post(t, front.URL+"/", "")
		seen[body[:1]] = true
	}
	if !seen["a"] || !seen["b"] {
		t.Fatalf("after b is ready again: %v", seen)
	}

	// Run checks on its own until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	bal.cfg.Interval = 10 * time.Millisecond
	done := make(chan struct{})
	go func() { bal.Run(ctx); close(done) }()
	a.ready.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for bal.Healthy()[strings.TrimPrefix(a.srv.URL, "http://")] {
		if time.Now().After(deadline) {
			t.Fatal("Run never marked a down")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestNoBackendAnswers(t *testing.T) {
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, front := newBalancer(t, dead.URL)
	code, body, h := post(t, front.URL+"/v1/runs", "{}")
	if code != 503 || h.Get("Retry-After") != "1" || !strings.Contains(body, `"code":"no_gateway"`) {
		t.Fatalf("HTTP %d Retry-After %q %s", code, h.Get("Retry-After"), body)
	}
}

// A backend that took the request and then failed is not asked again: the
// request may have had an effect (a run started). The client gets 502.
func TestNoRetryAfterTheRequestWasSent(t *testing.T) {
	var hits atomic.Int64
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.ReadAll(r.Body)
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	}))
	defer broken.Close()
	a := newGW(t, "a")
	_, front := newBalancer(t, broken.URL, a.srv.URL)
	code, _, _ := post(t, front.URL+"/v1/runs", "{}")
	if code != 502 || hits.Load() != 1 || a.hits.Load() != 0 {
		t.Fatalf("HTTP %d; broken hit %d times, a %d", code, hits.Load(), a.hits.Load())
	}
}

// Event streams pass through as they are written: the first event reaches
// the client while the backend still holds the stream open.
func TestStreamsFlushEachEvent(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	stream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "id: 1\ndata: {}\n\n")
		w.(http.Flusher).Flush()
		<-release
		io.WriteString(w, "id: 2\ndata: {}\n\n")
	}))
	defer stream.Close()
	defer once.Do(func() { close(release) })
	_, front := newBalancer(t, stream.URL)
	resp, err := http.Get(front.URL + "/v1/runs/x/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(resp.Body).ReadString('\n')
		got <- line
	}()
	select {
	case l := <-got:
		if l != "id: 1\n" {
			t.Fatalf("first line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first event did not come through before the stream ended")
	}
	once.Do(func() { close(release) })
}

// WebSocket (and any Upgrade) passes through: bytes flow both ways on the
// hijacked connection.
func TestUpgradePassesThrough(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "no upgrade", 400)
			return
		}
		c, rw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		line, _ := rw.ReadString('\n')
		rw.WriteString("echo " + line)
		rw.Flush()
	}))
	defer up.Close()
	_, front := newBalancer(t, up.URL)
	c, err := net.Dial("tcp", strings.TrimPrefix(front.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET /v1/runs/x/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", err, resp)
	}
	io.WriteString(c, "hello\n")
	if l, _ := br.ReadString('\n'); l != "echo hello\n" {
		t.Fatalf("through the upgraded connection: %q", l)
	}
}

func TestParseBackend(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"gateway:8080", "http://gateway:8080", ""},
		{"http://10.0.0.1:80/", "http://10.0.0.1:80", ""},
		{"https://gw:443", "https://gw:443", ""},
		{"gateway", "", "want host:port"},
		{"ftp://gw:21", "", "scheme"},
		{"http://gw:80/api", "", "only scheme, host and port"},
		{"http://u:p@gw:80", "", "only scheme, host and port"},
		{"http://gw:80?x=1", "", "only scheme, host and port"},
		{"http://[::1", "", "missing ']'"},
	} {
		u, err := ParseBackend(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || u.String() != tc.want {
			t.Errorf("%q: %v %v, want %s", tc.in, u, err, tc.want)
		}
	}
	for _, cfg := range []Config{{}, {Backends: []string{"a:1"}, HealthPath: "readyz"}, {Backends: []string{"a:1"}, Interval: -1}, {Backends: []string{"nope"}}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v): no error", cfg)
		}
	}
}

func FuzzParseBackend(f *testing.F) {
	for _, s := range []string{"gateway:8080", "http://a:1/", "https://[::1]:443", "a", "http://a:1/x?y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseBackend(s)
		if err != nil {
			return
		}
		if u.Port() == "" || (u.Scheme != "http" && u.Scheme != "https") || u.Path != "" || u.RawQuery != "" {
			t.Fatalf("%q parsed to %v", s, u)
		}
		again, err := ParseBackend(u.String())
		if err != nil || again.String() != u.String() {
			t.Fatalf("%q: %v does not parse back (%v, %v)", s, u, again, err)
		}
	})
}
