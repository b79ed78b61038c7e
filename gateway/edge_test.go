package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/gateway/store"
	"github.com/qlc-project/qlc/stagework"
)

// The gateway's hardened edge, tested on real servers: an http.Server from
// NewHTTPServerWith on 127.0.0.1, in front of a gateway with tenancy on.
// Slow clients are cut off, every limit answers a clear error, bad input of
// every kind gets a 4xx in OpenAI's error shape, and none of it disturbs
// another tenant's run.

// edgeProfiles are testProfiles' "instant" and "slow", and "steady": a run
// that streams for a few seconds, long enough to be running while a test
// sends its bad input, short enough to end within the test.
const edgeProfiles = `
default_profile: instant
providers:
  sim:    {kind: sim, sim: {output_tokens: 60}}
  slow:   {kind: sim, sim: {ttft: 10ms, itl: 15ms, output_tokens: 4000}}
  steady: {kind: sim, sim: {ttft: 5ms, itl: 3ms, output_tokens: 250}}
profiles:
  instant:
    description: zero latency
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  slow:
    description: slow enough to cancel
    provider: slow
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
  steady:
    description: a few seconds of streaming
    provider: steady
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// tenancyParts is a gateway with tenancy on, not yet serving.
type tenancyParts struct {
	gw      *Server
	tenancy *Tenancy
	dev     DevKeys
	engine  *actors.Engine
	reg     *prometheus.Registry
	dir     string
	logger  *slog.Logger
}

// newTenancyServer builds a gateway with tenancy on (its store, dev tenant
// and admin key in a temp folder) on an engine running the profile file
// profiles (edgeProfiles if ""); mutate may change either config. All of it
// is shut down when tb ends.
func newTenancyServer(tb testing.TB, profiles string, mutate func(*Config, *actors.Config)) *tenancyParts {
	tb.Helper()
	dir := tb.TempDir()
	st, err := store.Open(filepath.Join(dir, "qlc.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	tn, err := NewTenancy(st, nil)
	if err != nil {
		tb.Fatal(err)
	}
	dk, _, err := tn.EnsureDevKeys(filepath.Join(dir, "dev-keys.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if profiles == "" {
		profiles = edgeProfiles
	}
	stages, err := stagework.ParseConfig([]byte(profiles))
	if err != nil {
		tb.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if _, fuzzing := tb.(*testing.F); testing.Verbose() && !fuzzing {
		logger = slog.New(slog.NewTextHandler(testLogWriter{tb}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	providers, err := actors.BuildProviders(stages, logger)
	if err != nil {
		tb.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ecfg := actors.DefaultConfig()
	ecfg.Logger, ecfg.Stages, ecfg.Providers, ecfg.Registerer = logger, stages, providers, reg
	ecfg.Retry = stagework.RetryPolicy{AttemptsPerModel: 2, BaseBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	gcfg := DefaultConfig()
	gcfg.Logger, gcfg.Gatherer, gcfg.Registerer = logger, reg, reg
	gcfg.Tenancy, gcfg.DevKeys = tn, &dk
	if mutate != nil {
		mutate(&gcfg, &ecfg)
	}
	engine, err := actors.NewEngine(ecfg)
	if err != nil {
		tb.Fatal(err)
	}
	gcfg.Engine = engine
	gw, err := New(gcfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		engine.Shutdown(ctx)
		if err := gw.Close(ctx); err != nil {
			tb.Logf("gateway close: %v", err)
		}
	})
	return &tenancyParts{gw: gw, tenancy: tn, dev: dk, engine: engine, reg: reg, dir: dir, logger: logger}
}

// edgeGateway is a tenancy gateway served by NewHTTPServerWith on
// 127.0.0.1. It is a *tenantGateway too, for tenancy_test's helpers.
type edgeGateway struct {
	*tenantGateway
	Addr string
}

func startEdgeGateway(t *testing.T, lim EdgeLimits, mutate func(*Config, *actors.Config)) *edgeGateway {
	t.Helper()
	p := newTenancyServer(t, "", mutate)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServerWith(ln.Addr().String(), p.gw.Handler(), p.logger, lim)
	served := make(chan struct{})
	go func() {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	// Registered after newTenancyServer's: the server closes before the
	// engine shuts down.
	t.Cleanup(func() {
		_ = srv.Close()
		<-served
	})
	url := "http://" + ln.Addr().String()
	return &edgeGateway{
		tenantGateway: &tenantGateway{testGateway: &testGateway{URL: url, Engine: p.engine, Reg: p.reg}, Tenancy: p.tenancy, Dev: p.dev, Dir: p.dir},
		Addr:          ln.Addr().String(),
	}
}

// edgeClient bounds every request of these tests.
var edgeClient = &http.Client{Timeout: 30 * time.Second}

// edgeSend sends a request with key (none if ""), a Content-Type (none if "")
// and a raw body, and returns the answer with its body read.
func edgeSend(t *testing.T, method, url, key, ctype string, body []byte, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, url, err)
	}
	return resp, data
}

// apiErrorBody is OpenAI's error shape, decoded strictly.
type apiErrorBody struct {
	Error *struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    string  `json:"code"`
	} `json:"error"`
}

// checkAPIError reports (with t.Errorf) unless the answer is status with a
// JSON body {"error":{"message","type","param","code"}} whose code is code
// and whose message mentions mention (case-insensitive).
func checkAPIError(t *testing.T, what string, status int, h http.Header, body []byte, wantStatus int, code, mention string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: HTTP %d; want %d (%s)", what, status, wantStatus, body)
		return
	}
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q; want JSON (%q)", what, ct, body)
		return
	}
	var e apiErrorBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Error == nil {
		t.Errorf("%s: not an OpenAI-style error (%v): %s", what, err, body)
		return
	}
	if e.Error.Code != code || e.Error.Type == "" || e.Error.Message == "" {
		t.Errorf("%s: error %+v; want code %q with a type and a message", what, *e.Error, code)
	}
	if !strings.Contains(strings.ToLower(e.Error.Message), strings.ToLower(mention)) {
		t.Errorf("%s: message %q does not name %q", what, e.Error.Message, mention)
	}
}

// isClosedByPeer reports whether a read error means the other side closed
// the connection (not that our own read deadline passed).
func isClosedByPeer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// TestEdgeSlowlorisIsDisconnected: clients that send a request a byte at a
// time are disconnected once ReadHeaderTimeout passes (net/http answers 400
// first when the request line itself is unfinished, and nothing when the
// headers are); a normal client on the same server is served meanwhile.
func TestEdgeSlowlorisIsDisconnected(t *testing.T) {
	lim := DefaultEdgeLimits()
	lim.ReadHeaderTimeout = 300 * time.Millisecond
	g := startEdgeGateway(t, lim, nil)
	// A request that never ends: at one byte per 20 ms the client would
	// need 10 s to send it, far beyond the 300 ms it is given. Half the
	// clients send the request line at once and dribble the headers, half
	// dribble the request line too.
	line := "POST /v1/runs HTTP/1.1\r\nHost: qlc\r\n"
	rest := "Authorization: Bearer " + g.Dev.TenantKey + "\r\nX-Slow: " + strings.Repeat("a", 400)
	const clients = 8
	type outcome struct {
		partial string
		sent    int
		read    []byte
		err     error
	}
	outcomes := make(chan outcome, clients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range clients {
		c, err := net.Dial("tcp", g.Addr)
		if err != nil {
			t.Fatal(err)
		}
		partial, sent := line+rest, 0
		if i%2 == 1 {
			if _, err := io.WriteString(c, line); err != nil {
				t.Fatal(err)
			}
			partial, sent = rest, len(line)
		}
		var sentMu sync.Mutex
		wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for i := range len(partial) {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if _, err := c.Write([]byte{partial[i]}); err != nil {
					return
				}
				sentMu.Lock()
				sent++
				sentMu.Unlock()
			}
		})
		wg.Go(func() {
			defer c.Close()
			// A generous bound: the test fails on it only if the server
			// never cuts the client off.
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var read []byte
			buf := make([]byte, 512)
			var err error
			for err == nil {
				var n int
				n, err = c.Read(buf)
				read = append(read, buf[:n]...)
			}
			sentMu.Lock()
			o := outcome{partial: partial, sent: sent, read: read, err: err}
			sentMu.Unlock()
			outcomes <- o
		})
	}
	// Served while the slow clients hold their connections.
	if code, _ := call(t, "GET", g.URL+"/healthz", "", "", nil); code != 200 {
		t.Fatalf("healthz beside slow clients: %d", code)
	}
	code, _, run, e := postRun(t, g.URL, g.Dev.TenantKey, "instant")
	if code != 201 {
		t.Fatalf("a run beside slow clients: %d %+v", code, e)
	}
	var v runView
	waitStatusKey(t, g.URL, g.Dev.TenantKey, run.ID, "completed", &v)
	for range clients {
		o := <-outcomes
		if !isClosedByPeer(o.err) {
			t.Fatalf("slow client after %d header bytes: %v; want the server to close the connection", o.sent, o.err)
		}
		if len(o.read) > 0 && !bytes.HasPrefix(o.read, []byte("HTTP/1.1 400 ")) {
			t.Fatalf("slow client after %d header bytes was answered %q", o.sent, o.read)
		}
		if o.sent >= len(line)+len(rest) {
			t.Fatalf("the slow client sent all %d bytes before it was cut off", o.sent)
		}
	}
	// The server still serves after the cut-offs.
	if code, _ := call(t, "GET", g.URL+"/v1/runs/"+run.ID, g.Dev.TenantKey, "", nil); code != 200 {
		t.Fatalf("after the slow clients: %d", code)
	}
}

// TestEdgeIdleConnectionIsClosed: a keep-alive connection that sends no
// further request is closed after IdleTimeout.
func TestEdgeIdleConnectionIsClosed(t *testing.T) {
	lim := DefaultEdgeLimits()
	lim.IdleTimeout = 300 * time.Millisecond
	g := startEdgeGateway(t, lim, nil)
	c, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: qlc\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	if _, err := br.ReadByte(); !isClosedByPeer(err) {
		t.Fatalf("idle connection: %v; want it closed by the server", err)
	}
}

// TestEdgeSlowBodyIsCutOff: a client that sends its headers, then dribbles
// its body a byte at a time, gets a clear error (408) when the body read
// deadline (BodyReadTimeout, 2 s here) passes, and no run is created.
func TestEdgeSlowBodyIsCutOff(t *testing.T) {
	t.Parallel()
	g := startEdgeGateway(t, DefaultEdgeLimits(), func(c *Config, _ *actors.Config) { c.BodyReadTimeout = 2 * time.Second })
	_, key := newTenant(t, g.tenantGateway, "dribbler", "")
	c, err := net.Dial("tcp", g.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The whole body would take 4096 × 250 ms ≈ 17 min.
	head := "POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nAuthorization: Bearer " + key +
		"\r\nContent-Type: application/json\r\nContent-Length: 4096\r\n\r\n{\"query\":\""
	if _, err := io.WriteString(c, head); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for range 240 { // at most 60 s
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	})
	_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a dribbled body: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkAPIError(t, "dribbled body", resp.StatusCode, resp.Header, body, http.StatusRequestTimeout, "body_timeout", "did not arrive within 2s")
	if !resp.Close {
		t.Errorf("the answer to a half-read body keeps the connection open")
	}
	// Nothing was admitted for it, and the tenant is served as usual.
	if open, err := g.Tenancy.Store().OpenReservations(""); err != nil || len(open) != 0 {
		t.Errorf("open reservations after a cut-off body: %v %v", open, err)
	}
	if code, _, _, e := postRun(t, g.URL, key, "instant"); code != 201 {
		t.Fatalf("after the cut-off: %d %+v", code, e)
	}
}

// TestEdgeHeaderTooLarge: headers beyond MaxHeaderBytes (plus net/http's
// 4 KiB of slack) get 431; headers within it are served.
func TestEdgeHeaderTooLarge(t *testing.T) {
	lim := DefaultEdgeLimits()
	lim.MaxHeaderBytes = 2 << 10
	g := startEdgeGateway(t, lim, nil)
	url := g.URL + "/v1/models"
	if resp, body := edgeSend(t, "GET", url, g.Dev.TenantKey, "", nil, "X-Pad", strings.Repeat("p", 1<<10)); resp.StatusCode != 200 {
		t.Fatalf("1 KiB header: %d %s", resp.StatusCode, body)
	}
	resp, body := edgeSend(t, "GET", url, g.Dev.TenantKey, "", nil, "X-Pad", strings.Repeat("p", 16<<10))
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("16 KiB header: %d %s; want 431", resp.StatusCode, body)
	}
	// Many small headers count the same as one large one.
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+g.Dev.TenantKey)
	for i := range 400 {
		req.Header.Set(fmt.Sprintf("X-H%d", i), "0123456789012345678901234567890123456789")
	}
	r, err := edgeClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("400 headers: %d; want 431", r.StatusCode)
	}
	if resp, body := edgeSend(t, "GET", url, g.Dev.TenantKey, "", nil); resp.StatusCode != 200 {
		t.Fatalf("after the 431s: %d %s", resp.StatusCode, body)
	}
}

// TestEdgeBodyTooLarge: a body beyond MaxBodyBytes gets 413 body_too_large
// on every endpoint that reads one, with or without a Content-Length; one
// just within the limit is read.
func TestEdgeBodyTooLarge(t *testing.T) {
	const limit = 4096
	g := startEdgeGateway(t, DefaultEdgeLimits(), func(c *Config, _ *actors.Config) { c.MaxBodyBytes = limit })
	big := []byte(`{"query":"` + strings.Repeat("x", 64<<10) + `"}`)
	for _, ep := range []struct{ method, path, key string }{
		{"POST", "/v1/runs", g.Dev.TenantKey},
		{"POST", "/v1/chat/completions", g.Dev.TenantKey},
		{"POST", "/v1/tokenize", g.Dev.TenantKey},
		{"POST", "/v1/admin/tenants", g.Dev.AdminKey},
		{"PATCH", "/v1/admin/tenants/" + DevTenantID, g.Dev.AdminKey},
	} {
		resp, body := edgeSend(t, ep.method, g.URL+ep.path, ep.key, "application/json", big)
		checkAPIError(t, ep.method+" "+ep.path, resp.StatusCode, resp.Header, body, http.StatusRequestEntityTooLarge, "body_too_large", fmt.Sprint(limit))
	}
	// Chunked: no Content-Length to refuse up front.
	req, _ := http.NewRequest("POST", g.URL+"/v1/runs", io.MultiReader(bytes.NewReader(big)))
	req.Header.Set("Authorization", "Bearer "+g.Dev.TenantKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := edgeClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(req.TransferEncoding) == 0 && req.ContentLength > 0 {
		t.Fatalf("the request was not chunked")
	}
	checkAPIError(t, "chunked body", resp.StatusCode, resp.Header, body, http.StatusRequestEntityTooLarge, "body_too_large", "exceeds")
	// Just within the limit: read, and the run starts.
	q := strings.Repeat("y", limit-len(`{"query":""}`))
	if resp, body := edgeSend(t, "POST", g.URL+"/v1/runs", g.Dev.TenantKey, "application/json", []byte(`{"query":"`+q+`"}`)); resp.StatusCode != 201 {
		t.Fatalf("a body of exactly %d bytes: %d %s", limit, resp.StatusCode, body)
	}
}

// TestEdgeQueryTooLong: a question (or a chat conversation) beyond
// MaxQueryBytes gets 400 query_too_long naming the parameter; one at the
// limit runs.
func TestEdgeQueryTooLong(t *testing.T) {
	const limit = 1000
	g := startEdgeGateway(t, DefaultEdgeLimits(), func(c *Config, _ *actors.Config) { c.MaxQueryBytes = limit })
	key := g.Dev.TenantKey
	at := strings.Repeat("q", limit)
	if resp, body := edgeSend(t, "POST", g.URL+"/v1/runs", key, "application/json", []byte(`{"query":"`+at+`"}`)); resp.StatusCode != 201 {
		t.Fatalf("a query of %d bytes: %d %s", limit, resp.StatusCode, body)
	}
	resp, body := edgeSend(t, "POST", g.URL+"/v1/runs", key, "application/json", []byte(`{"query":"`+at+`q"}`))
	checkAPIError(t, "long query", resp.StatusCode, resp.Header, body, 400, "query_too_long", fmt.Sprint(limit))
	// Multi-byte text counts in bytes: 501 × "é" is 1002 bytes.
	resp, body = edgeSend(t, "POST", g.URL+"/v1/runs", key, "application/json", []byte(`{"query":"`+strings.Repeat("é", 501)+`"}`))
	checkAPIError(t, "long multi-byte query", resp.StatusCode, resp.Header, body, 400, "query_too_long", "1002 bytes")
	// A chat conversation counts whole: a short question after a long history.
	chat := fmt.Sprintf(`{"model":"qlc-instant","messages":[{"role":"system","content":%q},{"role":"user","content":"hi"}]}`, at)
	resp, body = edgeSend(t, "POST", g.URL+"/v1/chat/completions", key, "application/json", []byte(chat))
	checkAPIError(t, "long conversation", resp.StatusCode, resp.Header, body, 400, "query_too_long", "conversation")
	var e apiErrorBody
	_ = json.Unmarshal(body, &e)
	if e.Error == nil || e.Error.Param == nil || *e.Error.Param != "messages" {
		t.Errorf("long conversation: param %v; want messages", e.Error)
	}
}

// TestEdgeStreamsPerKeyMixWebSocketAndSSE: SSE streams, WebSockets and
// streamed chat completions share a key's max_streams; over it each gets
// 429 max_streams; the slot comes back when a stream closes; another key
// of the same tenant, and another tenant, are not affected.
func TestEdgeStreamsPerKeyMixWebSocketAndSSE(t *testing.T) {
	g := startEdgeGateway(t, DefaultEdgeLimits(), nil)
	tid, key := newTenant(t, g.tenantGateway, "streamer", `{"max_streams": 2}`)
	code, _, run, e := postRun(t, g.URL, key, "slow")
	if code != 201 {
		t.Fatalf("create: %d %+v", code, e)
	}
	defer call(t, "DELETE", g.URL+"/v1/runs/"+run.ID, key, "", nil)
	events := g.URL + "/v1/runs/" + run.ID + "/events"
	wsURL := "ws" + strings.TrimPrefix(g.URL, "http") + "/v1/runs/" + run.ID + "/ws"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	openSSE := func(k string) (*http.Response, context.CancelFunc) {
		t.Helper()
		sctx, scancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(sctx, "GET", events, nil)
		req.Header.Set("Authorization", "Bearer "+k)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			scancel()
			t.Fatal(err)
		}
		return resp, func() { scancel(); resp.Body.Close() }
	}
	dialWS := func(k string) (*websocket.Conn, *http.Response, error) {
		return websocket.Dial(ctx, wsURL, &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + k}}})
	}
	// refused checks the three kinds of stream are each refused with 429.
	refused := func(when string) {
		t.Helper()
		resp, body := edgeSend(t, "GET", events, key, "", nil)
		checkAPIError(t, when+": SSE", resp.StatusCode, resp.Header, body, 429, "max_streams", "limit is 2")
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: SSE 429 without Retry-After", when)
		}
		conn, wresp, err := dialWS(key)
		if err == nil {
			conn.CloseNow()
			t.Fatalf("%s: a WebSocket over the limit was accepted", when)
		}
		if wresp == nil {
			t.Fatalf("%s: WebSocket refused without an HTTP answer: %v", when, err)
		}
		wbody, _ := io.ReadAll(wresp.Body)
		checkAPIError(t, when+": WebSocket", wresp.StatusCode, wresp.Header, wbody, 429, "max_streams", "limit is 2")
		chat := `{"model":"qlc-instant","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		resp, body = edgeSend(t, "POST", g.URL+"/v1/chat/completions", key, "application/json", []byte(chat))
		checkAPIError(t, when+": streamed chat", resp.StatusCode, resp.Header, body, 429, "max_streams", "limit is 2")
	}

	sse, closeSSE := openSSE(key)
	defer closeSSE()
	if sse.StatusCode != 200 {
		t.Fatalf("first stream (SSE): %d", sse.StatusCode)
	}
	ws, _, err := dialWS(key)
	if err != nil {
		t.Fatalf("second stream (WebSocket): %v", err)
	}
	refused("SSE + WebSocket open")

	// A chat completion that does not stream takes no slot.
	resp, body := edgeSend(t, "POST", g.URL+"/v1/chat/completions", key, "application/json",
		[]byte(`{"model":"qlc-instant","messages":[{"role":"user","content":"hi"}]}`))
	if resp.StatusCode != 200 {
		t.Fatalf("a blocking chat completion at the stream limit: %d %s", resp.StatusCode, body)
	}
	// The limit is per key: the tenant's second key streams, and so does
	// another tenant.
	var nk struct{ Key string }
	if code, _ := call(t, "POST", g.URL+"/v1/admin/tenants/"+tid+"/keys", g.Dev.AdminKey, "", &nk); code != 201 {
		t.Fatalf("second key: %d", code)
	}
	other, closeOther := openSSE(nk.Key)
	if other.StatusCode != 200 {
		t.Fatalf("the tenant's second key at the first key's limit: %d", other.StatusCode)
	}
	closeOther()
	_, _, devRun, _ := postRun(t, g.URL, g.Dev.TenantKey, "instant")
	if evs := runEvents(t, g.URL, g.Dev.TenantKey, devRun.ID); len(evs) == 0 || evs[len(evs)-1].Event != "run_completed" {
		t.Fatalf("another tenant's stream beside the limit: %d events", len(evs))
	}

	// Closing the WebSocket gives its slot back: a new WebSocket fits, and
	// the key is full again.
	if err := ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Logf("websocket close: %v", err)
	}
	ws = waitStream(t, "a WebSocket after one closed", func() (*websocket.Conn, bool) {
		c, resp, err := dialWS(key)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return c, err == nil
	})
	defer ws.CloseNow()
	refused("SSE + new WebSocket open")
	// Closing the SSE stream gives its slot back too.
	closeSSE()
	waitStream(t, "an SSE stream after one closed", func() (struct{}, bool) {
		resp, done := openSSE(key)
		defer done()
		return struct{}{}, resp.StatusCode == 200
	})
}

// waitStream retries open until it succeeds (within 5 s).
func waitStream[T any](t *testing.T, what string, open func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, ok := open()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the stream slot did not come back", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// badInput is one malformed request and the error it must get.
type badInput struct {
	name         string
	method, path string
	key          string // "" the sending tenant's key, "admin", "none", or a literal key
	ctype        string // "" application/json when there is a body; "-" none
	hdr          []string
	body         string
	status       int
	code         string
	mention      string // what the message must name
}

// TestEdgeBadInputIsRefusedClearly sends bad input of every kind to every
// endpoint that reads input. Each gets a 4xx in OpenAI's error shape that
// names the problem; meanwhile another tenant's run, started before and
// followed over SSE, goes on and completes with every event in order, and
// the sending tenant still creates runs. Nothing is billed or changed by a
// refused request.
func TestEdgeBadInputIsRefusedClearly(t *testing.T) {
	g := startEdgeGateway(t, DefaultEdgeLimits(), nil)
	aID, aKey := newTenant(t, g.tenantGateway, "sender", "")
	bID, bKey := newTenant(t, g.tenantGateway, "bystander", "")
	// The sender's finished run, for the requests that need a run.
	code, _, aRun, e := postRun(t, g.URL, aKey, "instant")
	if code != 201 {
		t.Fatalf("sender's run: %d %+v", code, e)
	}
	var v runView
	waitStatusKey(t, g.URL, aKey, aRun.ID, "completed", &v)
	// The bystander's run, started before the bad input and followed live.
	code, _, bRun, e := postRun(t, g.URL, bKey, "steady")
	if code != 201 {
		t.Fatalf("bystander's run: %d %+v", code, e)
	}
	live := make(chan []sseEvent, 1)
	req, _ := http.NewRequest("GET", g.URL+"/v1/runs/"+bRun.ID+"/events", nil)
	req.Header.Set("Authorization", "Bearer "+bKey)
	stream, err := edgeClient.Do(req)
	if err != nil || stream.StatusCode != 200 {
		t.Fatalf("bystander's stream: %v %v", err, stream)
	}
	go func() {
		defer stream.Body.Close()
		var evs []sseEvent
		sc := bufio.NewScanner(stream.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<24)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "" && ev.Event != "":
				evs = append(evs, ev)
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.Event = line[7:]
			case strings.HasPrefix(line, "data: "):
				_ = json.Unmarshal([]byte(line[6:]), &ev.Data)
			}
		}
		live <- evs
	}()
	tenantsBefore := len(adminTenants(t, g))
	if code, _ := call(t, "GET", g.URL+"/v1/runs/"+bRun.ID, bKey, "", &v); code != 200 || v.Status != "running" {
		t.Fatalf("the bystander's run before the bad input: %d %s; want it running", code, v.Status)
	}

	long := strings.Repeat("n", 201)
	deep := `{"query":"q","profile":` + strings.Repeat("[", 300) + strings.Repeat("]", 300) + `}`
	tooDeep := `{"query":` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + `}`
	chat := func(rest string) string { return `{"model":"qlc-instant",` + rest + `}` }
	user := `"messages":[{"role":"user","content":"hi"}]`
	cases := []badInput{
		// POST /v1/runs: our own API, strict.
		{name: "truncated JSON", method: "POST", path: "/v1/runs", body: `{"query": "q"`, status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "not JSON", method: "POST", path: "/v1/runs", body: `query=q`, ctype: "application/x-www-form-urlencoded", status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "query a number", method: "POST", path: "/v1/runs", body: `{"query":5}`, status: 400, code: "invalid_type", mention: "query"},
		{name: "seed a string", method: "POST", path: "/v1/runs", body: `{"query":"q","seed":"x"}`, status: 400, code: "invalid_type", mention: "seed"},
		{name: "max_tokens a fraction", method: "POST", path: "/v1/runs", body: `{"query":"q","max_tokens":1.5}`, status: 400, code: "invalid_type", mention: "max_tokens"},
		{name: "unknown field", method: "POST", path: "/v1/runs", body: `{"query":"q","temperature":0.5}`, status: 400, code: "unknown_field", mention: "temperature"},
		{name: "huge seed", method: "POST", path: "/v1/runs", body: `{"query":"q","seed":1e400}`, status: 400, code: "invalid_type", mention: "seed"},
		{name: "huge max_tokens", method: "POST", path: "/v1/runs", body: `{"query":"q","max_tokens":99999999999999999999}`, status: 400, code: "invalid_type", mention: "max_tokens"},
		{name: "negative max_tokens", method: "POST", path: "/v1/runs", body: `{"query":"q","max_tokens":-1}`, status: 400, code: "invalid_max_tokens", mention: "max_tokens"},
		{name: "max_tokens over the cap", method: "POST", path: "/v1/runs", body: `{"query":"q","max_tokens":2000000}`, status: 400, code: "invalid_max_tokens", mention: "max_tokens"},
		{name: "empty query", method: "POST", path: "/v1/runs", body: `{"query":""}`, status: 400, code: "empty_query", mention: "query"},
		{name: "blank query", method: "POST", path: "/v1/runs", body: "{\"query\":\" \\n\\t \"}", status: 400, code: "empty_query", mention: "query"},
		{name: "no query", method: "POST", path: "/v1/runs", body: `{}`, status: 400, code: "empty_query", mention: "query"},
		{name: "null body", method: "POST", path: "/v1/runs", body: `null`, status: 400, code: "empty_query", mention: "query"},
		{name: "array body", method: "POST", path: "/v1/runs", body: `[{"query":"q"}]`, status: 400, code: "invalid_json", mention: "JSON object"},
		{name: "string body", method: "POST", path: "/v1/runs", body: `"q"`, status: 400, code: "invalid_json", mention: "JSON object"},
		{name: "empty body", method: "POST", path: "/v1/runs", body: ``, status: 400, code: "empty_body", mention: "empty"},
		{name: "NUL in a string", method: "POST", path: "/v1/runs", body: "{\"query\":\"a\x00b\"}", status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "NUL body", method: "POST", path: "/v1/runs", body: "\x00\x00\x00", status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "invalid UTF-8 field name", method: "POST", path: "/v1/runs", body: "{\"q\xffuery\":\"q\"}", status: 400, code: "unknown_field", mention: "unknown field"},
		{name: "invalid UTF-8 profile", method: "POST", path: "/v1/runs", body: "{\"query\":\"q\",\"profile\":\"\xfe\xff\"}", status: 404, code: "unknown_profile", mention: "known profiles"},
		{name: "byte order mark", method: "POST", path: "/v1/runs", body: "\xef\xbb\xbf{\"query\":\"q\"}", status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "text/plain", method: "POST", path: "/v1/runs", body: `{"query":"q"}`, ctype: "text/plain", status: 415, code: "unsupported_media_type", mention: "Content-Type"},
		{name: "multipart", method: "POST", path: "/v1/runs", body: `{"query":"q"}`, ctype: "multipart/form-data; boundary=x", status: 415, code: "unsupported_media_type", mention: "Content-Type"},
		{name: "duplicate key, last empty", method: "POST", path: "/v1/runs", body: `{"query":"q","query":""}`, status: 400, code: "empty_query", mention: "query"},
		{name: "duplicate key, last a number", method: "POST", path: "/v1/runs", body: `{"query":"q","query":7}`, status: 400, code: "invalid_type", mention: "query"},
		{name: "deeply nested value", method: "POST", path: "/v1/runs", body: deep, status: 400, code: "invalid_type", mention: "profile"},
		{name: "nesting beyond the decoder's depth", method: "POST", path: "/v1/runs", body: tooDeep, status: 400, code: "invalid_json", mention: "depth"},
		{name: "two objects", method: "POST", path: "/v1/runs", body: `{"query":"q"} {"query":"r"}`, status: 400, code: "invalid_json", mention: "extra data"},
		{name: "unknown profile", method: "POST", path: "/v1/runs", body: `{"query":"q","profile":"nope"}`, status: 404, code: "unknown_profile", mention: `"nope"`},
		{name: "no key", method: "POST", path: "/v1/runs", key: "none", body: `{"query":"q"}`, status: 401, code: "missing_api_key", mention: "API key"},
		{name: "bad key", method: "POST", path: "/v1/runs", key: "qlc_" + strings.Repeat("0", 29), body: `{"query":"q"}`, status: 401, code: "invalid_api_key", mention: "not valid"},
		{name: "admin key", method: "POST", path: "/v1/runs", key: "admin", body: `{"query":"q"}`, status: 403, code: "tenant_key_required", mention: "tenant's key"},
		{name: "basic auth", method: "POST", path: "/v1/runs", key: "none", hdr: []string{"Authorization", "Basic eDp5"}, body: `{"query":"q"}`, status: 401, code: "invalid_api_key", mention: "Bearer"},

		// POST /v1/chat/completions: OpenAI's API, lenient about unknown fields.
		{name: "chat: truncated JSON", method: "POST", path: "/v1/chat/completions", body: `{"model":`, status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "chat: no model", method: "POST", path: "/v1/chat/completions", body: `{` + user + `}`, status: 400, code: "missing_model", mention: "model"},
		{name: "chat: unknown model", method: "POST", path: "/v1/chat/completions", body: `{"model":"gpt-4",` + user + `}`, status: 404, code: "model_not_found", mention: `"gpt-4"`},
		{name: "chat: unknown model, unknown fields ignored", method: "POST", path: "/v1/chat/completions", body: `{"model":"qlc-nope","temperature":0.2,"tools":[],` + user + `}`, status: 404, code: "model_not_found", mention: "qlc-nope"},
		{name: "chat: no messages", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[]`), status: 400, code: "empty_messages", mention: "messages"},
		{name: "chat: messages a string", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":"hi"`), status: 400, code: "invalid_type", mention: "messages"},
		{name: "chat: unknown role", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[{"role":"wizard","content":"hi"}]`), status: 400, code: "invalid_role", mention: "wizard"},
		{name: "chat: image part", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[{"role":"user","content":[{"type":"image_url"}]}]`), status: 400, code: "invalid_content", mention: "image_url"},
		{name: "chat: content a number", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[{"role":"user","content":5}]`), status: 400, code: "invalid_content", mention: "string"},
		{name: "chat: last message not the user's", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]`), status: 400, code: "last_message_not_user", mention: "last message"},
		{name: "chat: empty question", method: "POST", path: "/v1/chat/completions", body: chat(`"messages":[{"role":"user","content":"  "}]`), status: 400, code: "empty_query", mention: "messages"},
		{name: "chat: n=2", method: "POST", path: "/v1/chat/completions", body: chat(`"n":2,` + user), status: 400, code: "unsupported_n", mention: "n=1"},
		{name: "chat: max_tokens 0", method: "POST", path: "/v1/chat/completions", body: chat(`"max_tokens":0,` + user), status: 400, code: "invalid_max_tokens", mention: "max_tokens"},
		{name: "chat: negative max_completion_tokens", method: "POST", path: "/v1/chat/completions", body: chat(`"max_completion_tokens":-5,` + user), status: 400, code: "invalid_max_tokens", mention: "max_tokens"},
		{name: "chat: huge max_tokens", method: "POST", path: "/v1/chat/completions", body: chat(`"max_tokens":1e30,` + user), status: 400, code: "invalid_type", mention: "max_tokens"},
		{name: "chat: stream a string", method: "POST", path: "/v1/chat/completions", body: chat(`"stream":"yes",` + user), status: 400, code: "invalid_type", mention: "stream"},
		{name: "chat: NUL in content", method: "POST", path: "/v1/chat/completions", body: chat("\"messages\":[{\"role\":\"user\",\"content\":\"a\x00\"}]"), status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "chat: text/plain", method: "POST", path: "/v1/chat/completions", ctype: "text/plain", body: chat(user), status: 415, code: "unsupported_media_type", mention: "Content-Type"},

		// The admin API: strict, admin key.
		{name: "admin: no name", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{}`, status: 400, code: "invalid_name", mention: "name"},
		{name: "admin: name a number", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":5}`, status: 400, code: "invalid_type", mention: "name"},
		{name: "admin: name too long", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"` + long + `"}`, status: 400, code: "invalid_name", mention: "200"},
		{name: "admin: bad id", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","id":"a b"}`, status: 400, code: "invalid_id", mention: "id"},
		{name: "admin: negative limit", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":{"concurrent_runs":-1}}`, status: 400, code: "invalid_limits", mention: "concurrent_runs"},
		{name: "admin: unknown period", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":{"budget_period":"year"}}`, status: 400, code: "invalid_limits", mention: "budget_period"},
		{name: "admin: unknown profile", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":{"profiles":["nope"]}}`, status: 400, code: "unknown_profile", mention: `"nope"`},
		{name: "admin: unknown limit", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":{"rpm":5}}`, status: 400, code: "unknown_field", mention: "rpm"},
		{name: "admin: limits an array", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":[]}`, status: 400, code: "invalid_type", mention: "limits"},
		{name: "admin: huge budget", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"x","limits":{"token_budget":1e30}}`, status: 400, code: "invalid_type", mention: "token_budget"},
		{name: "admin: existing name", method: "POST", path: "/v1/admin/tenants", key: "admin", body: `{"name":"bystander"}`, status: 409, code: "tenant_exists", mention: "exists"},
		{name: "admin: tenant key", method: "POST", path: "/v1/admin/tenants", body: `{"name":"x"}`, status: 403, code: "admin_key_required", mention: "admin key"},
		{name: "admin: text/plain", method: "POST", path: "/v1/admin/tenants", key: "admin", ctype: "text/plain", body: `{"name":"x"}`, status: 415, code: "unsupported_media_type", mention: "Content-Type"},
		{name: "patch: nothing", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{}`, status: 400, code: "empty_patch", mention: "name"},
		{name: "patch: empty name", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{"name":""}`, status: 400, code: "invalid_name", mention: "name"},
		{name: "patch: negative weight", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{"limits":{"weight":-2}}`, status: 400, code: "invalid_limits", mention: "weight"},
		{name: "patch: max_streams a string", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{"limits":{"max_streams":"many"}}`, status: 400, code: "invalid_type", mention: "max_streams"},
		{name: "patch: unknown field", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{"nme":"x"}`, status: 400, code: "unknown_field", mention: "nme"},
		{name: "patch: invalid JSON", method: "PATCH", path: "/v1/admin/tenants/" + aID, key: "admin", body: `{"name":"x",}`, status: 400, code: "invalid_json", mention: "malformed JSON"},
		{name: "patch: unknown tenant", method: "PATCH", path: "/v1/admin/tenants/nope", key: "admin", body: `{"name":"x"}`, status: 404, code: "tenant_not_found", mention: "no such tenant"},
		{name: "admin: unknown endpoint", method: "DELETE", path: "/v1/admin/tenants/" + aID, key: "admin", status: 404, code: "unknown_endpoint", mention: "DELETE"},

		// GET /v1/usage: query parameters.
		{name: "usage: from a word", method: "GET", path: "/v1/usage?from=yesterday", status: 400, code: "invalid_time", mention: "from"},
		{name: "usage: to a word", method: "GET", path: "/v1/usage?to=tomorrow", status: 400, code: "invalid_time", mention: "to"},
		{name: "usage: from too far", method: "GET", path: "/v1/usage?from=99999999999999", status: 400, code: "invalid_time", mention: "from"},
		{name: "usage: negative from", method: "GET", path: "/v1/usage?from=-5", status: 400, code: "invalid_time", mention: "from"},
		{name: "usage: NUL in from", method: "GET", path: "/v1/usage?from=%00", status: 400, code: "invalid_time", mention: "from"},
		{name: "usage: to before from", method: "GET", path: "/v1/usage?from=2030-01-01T00:00:00Z&to=2020-01-01T00:00:00Z", status: 400, code: "invalid_range", mention: "after"},
		{name: "usage: limit 0", method: "GET", path: "/v1/usage?limit=0", status: 400, code: "invalid_limit", mention: "limit"},
		{name: "usage: limit a word", method: "GET", path: "/v1/usage?limit=all", status: 400, code: "invalid_limit", mention: "limit"},
		{name: "usage: limit too large", method: "GET", path: "/v1/usage?limit=10001", status: 400, code: "invalid_limit", mention: "limit"},
		{name: "usage: another tenant's", method: "GET", path: "/v1/usage?tenant=" + bID, status: 403, code: "admin_key_required", mention: "own usage"},

		// POST /v1/tokenize: strict.
		{name: "tokenize: no model", method: "POST", path: "/v1/tokenize", body: `{"text":"hi"}`, status: 400, code: "missing_model", mention: "model"},
		{name: "tokenize: text a number", method: "POST", path: "/v1/tokenize", body: `{"model":"gpt-4o","text":5}`, status: 400, code: "invalid_type", mention: "text"},
		{name: "tokenize: unknown field", method: "POST", path: "/v1/tokenize", body: `{"model":"gpt-4o","txt":"hi"}`, status: 400, code: "unknown_field", mention: "txt"},
		{name: "tokenize: unknown encoding", method: "POST", path: "/v1/tokenize", body: `{"encoding":"nope","text":"hi"}`, status: 400, code: "tokenize_failed", mention: "nope"},
		{name: "tokenize: invalid JSON", method: "POST", path: "/v1/tokenize", body: `{"model":"gpt-4o","text":"hi}`, status: 400, code: "invalid_json", mention: "malformed JSON"},

		// Runs by id, and paths that are no endpoint.
		{name: "unknown run", method: "GET", path: "/v1/runs/run_nope", status: 404, code: "run_not_found", mention: "run_nope"},
		{name: "NUL run id", method: "GET", path: "/v1/runs/%00", status: 404, code: "run_not_found", mention: "no run"},
		{name: "another tenant's run", method: "GET", path: "/v1/runs/" + bRun.ID, status: 404, code: "run_not_found", mention: bRun.ID},
		{name: "cancel another tenant's run", method: "DELETE", path: "/v1/runs/" + bRun.ID, status: 404, code: "run_not_found", mention: bRun.ID},
		{name: "negative from_seq", method: "GET", path: "/v1/runs/" + aRun.ID + "/events?from_seq=-1", status: 400, code: "invalid_from_seq", mention: "from_seq"},
		{name: "bad Last-Event-ID", method: "GET", path: "/v1/runs/" + aRun.ID + "/events", hdr: []string{"Last-Event-ID", "x"}, status: 400, code: "invalid_last_event_id", mention: "Last-Event-ID"},
		{name: "cancel a finished run", method: "DELETE", path: "/v1/runs/" + aRun.ID, status: 409, code: "run_finished", mention: "already ended"},
		{name: "list runs: limit 0", method: "GET", path: "/v1/runs?limit=0", status: 400, code: "invalid_limit", mention: "limit"},
		{name: "list runs: limit too large", method: "GET", path: "/v1/runs?limit=101", status: 400, code: "invalid_limit", mention: "limit"},
		{name: "list runs: unknown scope", method: "GET", path: "/v1/runs?scope=everywhere", status: 400, code: "invalid_scope", mention: "scope"},
		{name: "PUT /v1/runs", method: "PUT", path: "/v1/runs", body: `{}`, status: 404, code: "unknown_endpoint", mention: "PUT"},
		{name: "PUT a run", method: "PUT", path: "/v1/runs/" + aRun.ID, body: `{}`, status: 404, code: "unknown_endpoint", mention: "PUT"},
		{name: "no such path", method: "GET", path: "/v1/nothing", status: 404, code: "unknown_endpoint", mention: "/v1/nothing"},
	}
	for _, c := range cases {
		key := aKey
		switch c.key {
		case "":
		case "admin":
			key = g.Dev.AdminKey
		case "none":
			key = ""
		default:
			key = c.key
		}
		ctype := c.ctype
		switch {
		case ctype == "-":
			ctype = ""
		case ctype == "" && c.body != "":
			ctype = "application/json"
		}
		var body []byte
		if c.body != "" || c.method == "POST" {
			body = []byte(c.body)
		}
		resp, data := edgeSend(t, c.method, g.URL+c.path, key, ctype, body, c.hdr...)
		if resp.StatusCode >= 500 {
			t.Errorf("%s: HTTP %d %s", c.name, resp.StatusCode, data)
			continue
		}
		checkAPIError(t, c.name, resp.StatusCode, resp.Header, data, c.status, c.code, c.mention)
	}

	// Requests net/http itself refuses, before any handler: 400, except the
	// two answers HTTP prescribes for what a server does not implement.
	for _, raw := range []struct {
		req    string
		status int
	}{
		{"GARBAGE\r\n\r\n", 400},
		{"POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nNo colon here\r\n\r\n", 400},
		{"POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nContent-Length: -1\r\n\r\n", 400},
		{"POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400},
		{"GET /v1/models HTTP/1.1\r\nHost: qlc\r\nX-Bad: a\x00b\r\n\r\n", 400},
		{"GET /v1/models HTTP/1.1\r\nHo st: qlc\r\n\r\n", 400},
		{"GET /v1/models HTTP/1.1\r\n\r\n", 400}, // no Host
		{"GET /v1/models HTTP/9.9\r\nHost: qlc\r\n\r\n", http.StatusHTTPVersionNotSupported},
		{"POST /v1/runs HTTP/1.1\r\nHost: qlc\r\nTransfer-Encoding: gzip\r\n\r\n", http.StatusNotImplemented},
	} {
		if status := rawStatus(t, g.Addr, raw.req); status != raw.status {
			t.Errorf("raw request %q: HTTP %d; want %d", raw.req, status, raw.status)
		}
	}

	// Nothing was disturbed. The bystander's run completes, its live stream
	// has every event in order, and a replay from the log matches it.
	var evs []sseEvent
	select {
	case evs = <-live:
	case <-time.After(60 * time.Second):
		t.Fatal("the bystander's run did not end")
	}
	checkIntact(t, "live stream", evs)
	replay := runEvents(t, g.URL, bKey, bRun.ID)
	checkIntact(t, "replay", replay)
	if a, b := streamedText(evs), streamedText(replay); a != b {
		t.Errorf("the live stream and the replay differ:\n%s\n%s", a, b)
	}
	if recs := waitUsage(t, g.URL, bKey, 1); len(recs) != 1 || recs[0].Status != "completed" || recs[0].TotalTokens == 0 {
		t.Errorf("the bystander's ledger: %+v", recs)
	}
	// The sender still creates runs, and only its two runs are billed.
	code, _, again, e := postRun(t, g.URL, aKey, "instant")
	if code != 201 {
		t.Fatalf("the sender after its bad input: %d %+v", code, e)
	}
	waitStatusKey(t, g.URL, aKey, again.ID, "completed", &v)
	recs := waitUsage(t, g.URL, aKey, 2)
	for _, u := range recs {
		if u.RunID != aRun.ID && u.RunID != again.ID {
			t.Errorf("a refused request was billed: %+v", u)
		}
	}
	waitNoReservations(t, g)
	// Refused admin requests changed nothing.
	if n := len(adminTenants(t, g)); n != tenantsBefore {
		t.Errorf("%d tenants after refused creates; %d before", n, tenantsBefore)
	}
	var tv tenantView
	if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants/"+aID, g.Dev.AdminKey, "", &tv); code != 200 || tv.Name != "sender" || tv.Limits.Weight != 0 || tv.Limits.MaxStreams != 0 {
		t.Errorf("the sender's tenant after refused patches: %d %+v", code, tv)
	}
}

// adminTenants lists the tenants.
func adminTenants(t *testing.T, g *edgeGateway) []tenantView {
	t.Helper()
	var list struct{ Data []tenantView }
	if code, _ := call(t, "GET", g.URL+"/v1/admin/tenants", g.Dev.AdminKey, "", &list); code != 200 {
		t.Fatalf("list tenants: %d", code)
	}
	return list.Data
}

// waitNoReservations waits until the ledger holds no open reservation:
// every admitted run was billed, and no refused request left one.
func waitNoReservations(t *testing.T, g *edgeGateway) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		open, err := g.Tenancy.Store().OpenReservations("")
		if err != nil {
			t.Fatal(err)
		}
		if len(open) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("open reservations left: %+v", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawStatus writes raw on a new connection and returns the answer's status.
func rawStatus(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("raw request %q: %v", raw, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// checkIntact checks a run's events: seqs follow each other from 1 with no
// gap, every stage started and completed once with the text it streamed as
// its output, and the run completed last.
func checkIntact(t *testing.T, what string, evs []sseEvent) {
	t.Helper()
	if len(evs) == 0 {
		t.Fatalf("%s: no events", what)
	}
	next := 1.0
	text := map[string]*strings.Builder{}
	completed := 0
	for i, ev := range evs {
		seq, _ := ev.Data["seq"].(float64)
		from := seq
		if f, ok := ev.Data["from_seq"].(float64); ok {
			from = f
		}
		if from != next || seq < from {
			t.Fatalf("%s: event %d (%s) covers seqs %v-%v; want it to start at %v", what, i, ev.Event, from, seq, next)
		}
		next = seq + 1
		stage, _ := ev.Data["stage"].(string)
		switch ev.Event {
		case "stage_started":
			text[stage] = &strings.Builder{}
		case "token_delta":
			s, _ := ev.Data["text"].(string)
			if text[stage] == nil {
				t.Fatalf("%s: tokens for %s before it started", what, stage)
			}
			text[stage].WriteString(s)
		case "stage_completed":
			completed++
			if n, _ := ev.Data["output_bytes"].(float64); text[stage] == nil || int(n) != text[stage].Len() || n == 0 {
				t.Fatalf("%s: %s's output_bytes differs from what it streamed", what, stage)
			}
		case "stage_restarted", "run_failed", "run_cancelled", "lagged":
			t.Fatalf("%s: event %s in an undisturbed run: %v", what, ev.Event, ev.Data)
		}
	}
	if last := evs[len(evs)-1]; last.Event != "run_completed" || completed != 4 {
		t.Fatalf("%s: ends with %s after %d completed stages; want run_completed after 4", what, last.Event, completed)
	}
}

// streamedText is every event's type, stage and text, in order, with token
// deltas joined per stage (readers may see them coalesced differently).
func streamedText(evs []sseEvent) string {
	var b strings.Builder
	for _, ev := range evs {
		if ev.Event == "token_delta" {
			s, _ := ev.Data["text"].(string)
			b.WriteString(s)
			continue
		}
		fmt.Fprintf(&b, "\n[%s %v]\n", ev.Event, ev.Data["stage"])
	}
	return b.String()
}

// TestEdgeInvalidUTF8QueryIsStoredValid: JSON decoding turns invalid UTF-8
// in a question into U+FFFD, so a run never holds bytes its events could
// not carry.
func TestEdgeInvalidUTF8QueryIsStoredValid(t *testing.T) {
	g := startEdgeGateway(t, DefaultEdgeLimits(), nil)
	resp, body := edgeSend(t, "POST", g.URL+"/v1/runs", g.Dev.TenantKey, "application/json", []byte("{\"query\":\"caf\xe9 \xff?\"}"))
	if resp.StatusCode != 201 {
		t.Fatalf("invalid UTF-8 query: %d %s", resp.StatusCode, body)
	}
	var v runView
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if v.Query != "caf\uFFFD \uFFFD?" {
		t.Fatalf("query stored as %q", v.Query)
	}
	waitStatusKey(t, g.URL, g.Dev.TenantKey, v.ID, "completed", &v)
}
