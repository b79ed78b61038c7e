package gateway

// Browser tests of the web UI (gateway/web), in real headless Chromium driven
// with chromedp against a real gateway (uiBackend) behind a uiFront, which
// plays the API key contract, records what the page sends, and can cut its
// event streams or answer with rate limit errors. They need Debian's
// chromium (apt-get install -y chromium; .ci/run installs it). A machine
// without it FAILS these tests on purpose: the UI is part of the product.
//
// Set QLC_CHROMIUM to use another browser binary, and QLC_UI_SCREENSHOTS to a
// directory to keep screenshots of the pages the tests see.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"
	"unicode/utf16"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/stagework"
)

// uiTestConfig gives the browser tests two simulated profiles: "quick" streams
// 300 tokens per stage 1 ms apart (about a second for the run, live, so the
// page really streams), "slow" streams 2000 tokens 50 ms apart, so a run is
// still going when the test cancels it.
const uiTestConfig = `
default_profile: quick
providers:
  simfast: {kind: sim, sim: {ttft: 1ms, itl: 1ms, output_tokens: 300}}
  simslow: {kind: sim, sim: {ttft: 1ms, itl: 50ms, output_tokens: 2000}}
profiles:
  quick:
    description: Simulated, 1 ms per token (UI test).
    provider: simfast
    stages:
      generator: {model: sim-small, max_tokens: 4000}
      refiner:   {model: sim-medium, max_tokens: 4000}
      validator: {model: sim-small, max_tokens: 4000}
      curator:   {model: sim-large, max_tokens: 4000}
  slow:
    description: Simulated, 50 ms per token (UI cancel test).
    provider: simslow
    stages:
      generator: {model: sim-small, max_tokens: 4000}
      refiner:   {model: sim-small, max_tokens: 4000}
      validator: {model: sim-small, max_tokens: 4000}
      curator:   {model: sim-small, max_tokens: 4000}
`

// uiStages are the stage names the UI marks with data-stage, in order: the
// stage table's, which the page carries.
var uiStages = func() []string {
	var names []string
	for _, in := range stagework.StageTable() {
		names = append(names, in.Name)
	}
	return names
}()

// uiWait bounds every wait for the page; the quick run needs well under a second.
const uiWait = 60 * time.Second

// uiBrowser is one headless Chromium with one tab, and what went wrong in it.
type uiBrowser struct {
	ctx context.Context

	mu       sync.Mutex // guards problems
	problems []string   // JS exceptions, console errors, browser log errors
}

// uiChromiumPath finds the browser, or fails the test saying how to install it.
func uiChromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("QLC_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "/usr/lib/chromium/chromium", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("gateway ui test: no Chromium found (looked for chromium, chromium-browser, google-chrome, headless-shell); " +
		"install it with `apt-get install -y chromium` or set QLC_CHROMIUM to a Chrome binary")
	return ""
}

// newUIBrowser starts headless Chromium; the test's cleanup stops it.
func newUIBrowser(t *testing.T) *uiBrowser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(uiChromiumPath(t)),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root (CI containers)
		chromedp.DisableGPU,
		chromedp.WindowSize(1400, 1000),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &uiBrowser{}
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	ctx, cancelTimeout := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() {
		cancelTimeout()
		cancelTab()
		cancelAlloc()
	})
	b.ctx = ctx
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`1`)); err != nil {
		t.Fatalf("gateway ui test: start Chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatalf("gateway ui test: enable browser log: %v", err)
	}
	return b
}

// listen records exceptions and errors the page reports. It runs on chromedp's
// reader goroutine and must return fast.
func (b *uiBrowser) listen(ev any) {
	var p string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		p = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			p += " " + ev.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		p = "console.error: " + strings.Join(args, " ")
	case *log.EventEntryAdded:
		if ev.Entry.Level != log.EntryLevelError {
			return
		}
		p = "browser log: " + ev.Entry.Text + " " + ev.Entry.URL
	default:
		return
	}
	b.mu.Lock()
	b.problems = append(b.problems, p)
	b.mu.Unlock()
}

// noProblems fails the test if the page threw or logged an error (a CSP
// violation, a failed request, a bug in app.js), except for problems that
// contain one of expected: the browser logs every HTTP error answer, also
// those a test provokes on purpose.
func (b *uiBrowser) noProblems(t *testing.T, expected ...string) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		if !slices.ContainsFunc(expected, func(e string) bool { return strings.Contains(p, e) }) {
			t.Errorf("page reported: %s", p)
		}
	}
}

func (b *uiBrowser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		b.screenshot(t, "failed")
		t.Fatalf("%s: %v", what, err)
	}
}

// waitFor polls a JavaScript predicate until it is truthy, or fails the test.
func (b *uiBrowser) waitFor(t *testing.T, what, predicate string) {
	t.Helper()
	_, err := chromedp.Run(b.ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(uiWait)))
	if err != nil {
		b.screenshot(t, "timeout")
		t.Fatalf("waiting for %s: %v\npage state: %s", what, err, b.stateJSON(t))
	}
}

// uiEval evaluates a JavaScript expression and decodes its value.
func uiEval[T any](t *testing.T, b *uiBrowser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// uiState is what the page shows, read from its DOM.
type uiState struct {
	RunID     string `json:"runId"`
	RunStatus string `json:"runStatus"`
	Answer    string `json:"answer"`
	AnswerSt  string `json:"answerStatus"`
	Stages    []struct {
		Stage    string `json:"stage"`
		Title    string `json:"title"`
		Role     string `json:"role"`
		Status   string `json:"status"`
		Text     string `json:"text"`
		Tokens   string `json:"tokens"`
		TTFT     string `json:"ttft"`
		TPS      string `json:"tps"`
		Model    string `json:"model"`
		Resynced string `json:"resynced"`
		Note     string `json:"note"`
		Badges   string `json:"badges"`
	} `json:"stages"`
}

const uiStateJS = `(() => {
  const q = (s, r = document) => r.querySelector(s);
  return {
    runId: q('#run-id').textContent,
    runStatus: q('#run-status').dataset.status,
    answer: q('#answer').textContent,
    answerStatus: q('#answer').dataset.status,
    stages: [...document.querySelectorAll('[data-stage]')].map((s) => ({
      stage: s.dataset.stage,
      title: q('.title', s).textContent,
      role: q('.title', s).title,
      status: s.dataset.status,
      text: q('.output', s).textContent,
      tokens: q('.tokens', s).dataset.value,
      ttft: q('.ttft', s).dataset.value,
      tps: q('.tps', s).dataset.value,
      model: q('.model', s).textContent,
      resynced: s.dataset.resynced || '',
      note: q('.note', s).hidden ? '' : q('.note', s).textContent,
      badges: q('.badges', s).textContent,
    })),
  };
})()`

func (b *uiBrowser) state(t *testing.T) uiState {
	t.Helper()
	return uiEval[uiState](t, b, uiStateJS)
}

func (b *uiBrowser) stateJSON(t *testing.T) string {
	v, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]byte](uiStateJS))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	if len(v) > 4000 {
		v = append(v[:4000], "…"...)
	}
	return string(v)
}

// screenshot keeps a PNG of the page when QLC_UI_SCREENSHOTS names a directory.
func (b *uiBrowser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("QLC_UI_SCREENSHOTS")
	if dir == "" {
		return
	}
	buf, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100)) // quality 100 gives a PNG
	if err != nil {
		t.Logf("screenshot: %v", err)
		return
	}
	p := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+"-"+name+".png")
	if err := os.WriteFile(p, buf, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
	}
}

// uiRun is the part of the run resource (GET /v1/runs/{id}) the tests compare.
type uiRun struct {
	ID       string        `json:"id"`
	Status   string        `json:"status"`
	Estimate *estimateView `json:"estimate"`
	Routing  *routingView  `json:"routing"`
	Profile  string        `json:"profile"`
	Cached   bool          `json:"cached"`
	CachedFr string        `json:"cached_from"`
	LastSeq  int64         `json:"last_seq"`
	Answer   string        `json:"answer"`
	Stages   []struct {
		Stage  string `json:"stage"`
		Status string `json:"status"`
		Model  string `json:"model"`
		Output string `json:"output"`
		Usage  struct {
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	} `json:"stages"`
	// Steps is the run's steps, when the run resource lists them (by id).
	Steps []struct {
		ID     string `json:"id"`
		Status string `json:"status"`
		Output string `json:"output"`
	} `json:"steps"`
}

// run reads a run from the gateway behind the front, with the tests' key.
func (f *uiFront) run(t *testing.T, id string) uiRun {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.backend+"/v1/runs/"+id, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET run: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/runs/%s: HTTP %d", id, resp.StatusCode)
	}
	var r uiRun
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("GET run: decode: %v", err)
	}
	return r
}

// uiBackend starts the gateway the browser tests reach through a uiFront: a
// real gateway with tenancy on (it checks keys itself), its address and the
// dev tenant's key.
func uiBackend(t *testing.T, profiles string, mutate func(*Config, *actors.Config)) (base, key string, checksKeys bool) {
	if profiles == "" {
		profiles = uiTestConfig
	}
	g := startTenantGatewayProfiles(t, profiles, mutate)
	return g.URL, g.Dev.TenantKey, true
}

// uiFrontOptions say how a uiFront treats the page. They are fixed when the
// front starts.
type uiFrontOptions struct {
	// local makes GET /ui/session answer with the tenant's key, as the gateway does in
	// local mode to a browser on loopback; otherwise it is a 404.
	local bool
	// cutAfter[i] cuts event stream i (counted over the front's life) after
	// that many whole frames, in the middle of the next one, with a clean
	// end of the response: the page must drop the half frame and resume.
	cutAfter []int
	// crlf ends the event streams' lines with CRLF instead of LF.
	crlf bool
	// cutInParts is how many event streams the front cuts in the middle of
	// a frame after the third part of a split delta that is not the delta's
	// last (the page must resume inside the delta): the first streams that
	// get that far.
	cutInParts int
	// profiles is the gateway's profile file; "" is uiTestConfig.
	profiles string
	// mutate, if set, changes the gateway's configs before it starts.
	mutate func(*Config, *actors.Config)
	// refuse, if set, may answer a /v1 request (after the key check) with an
	// error instead of passing it on. It is called with the front's lock held.
	refuse func(r *http.Request) *uiRefusal
}

// uiRefusal is an error the front answers with instead of the gateway.
type uiRefusal struct {
	err        *apiError
	retryAfter string // the Retry-After header, if any
}

// uiRequest is one /v1 request the page made, as the front saw it.
type uiRequest struct {
	Method, Path, Query string
	Auth                string // the Authorization header
	LastEventID         string // the Last-Event-ID header
	Status              int
	ErrMsg              string // for an error answer: its error.message
	Stream              int    // for event streams: its number (0, 1, …), else -1
	LastID              string // for event streams: the id of the last whole frame sent
}

// uiFront stands between the browser and the gateway: it serves
// GET /ui/session (local mode or not), checks the API key of every /v1
// request when the gateway does not yet, records what the page sent, and
// passes requests on. It copies event streams frame by frame itself, each
// frame in two writes (a frame split across reads), so that it can cut them.
type uiFront struct {
	URL        string
	backend    string
	key        string // the key the page must send
	checkKeys  bool   // the front refuses requests without key (the gateway does not)
	opts       uiFrontOptions
	proxy      *httputil.ReverseProxy
	streamPath *regexp.Regexp

	mu       sync.Mutex // guards the fields below and calls to opts.refuse
	partCuts int        // streams cut between two parts so far
	requests []uiRequest
	streams  int            // event streams opened so far
	open     map[string]int // run id -> its event streams being served now
}

// newUIFront starts a gateway (uiBackend) behind a front; the test's cleanup stops both.
func newUIFront(t *testing.T, opts uiFrontOptions) *uiFront {
	t.Helper()
	backend, key, checksKeys := uiBackend(t, opts.profiles, opts.mutate)
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	f := &uiFront{
		backend: backend, key: key, checkKeys: !checksKeys, opts: opts,
		proxy:      &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }},
		streamPath: regexp.MustCompile(`^/v1/runs/([^/]+)/events$`),
		open:       map[string]int{},
	}
	srv := httptest.NewServer(f)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	f.URL = srv.URL
	return f
}

func (f *uiFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ui/session" {
		if !f.opts.local {
			http.NotFound(w, r)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"tenant": "dev", "tenant_key": f.key})
		return
	}
	if !strings.HasPrefix(r.URL.Path, "/v1/") {
		f.proxy.ServeHTTP(w, r)
		return
	}
	rec := uiRequest{
		Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Stream: -1,
		Auth: r.Header.Get("Authorization"), LastEventID: r.Header.Get("Last-Event-ID"),
	}
	sw := &uiStatusWriter{ResponseWriter: w}
	defer func() {
		rec.Status = sw.status
		var e struct {
			Error struct{ Message string } `json:"error"`
		}
		if sw.status >= 400 && json.Unmarshal(sw.body.Bytes(), &e) == nil {
			rec.ErrMsg = e.Error.Message
		}
		f.mu.Lock()
		f.requests = append(f.requests, rec)
		f.mu.Unlock()
	}()
	if no := f.refusal(r); no != nil {
		if no.retryAfter != "" {
			sw.Header().Set("Retry-After", no.retryAfter)
		}
		writeError(sw, no.err)
		return
	}
	if m := f.streamPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet {
		f.stream(sw, r, m[1], &rec)
		return
	}
	f.proxy.ServeHTTP(sw, r)
}

// refusal is the error a request gets from the front, or nil to pass it on.
func (f *uiFront) refusal(r *http.Request) *uiRefusal {
	if f.checkKeys {
		switch auth := r.Header.Get("Authorization"); {
		case auth == "":
			return &uiRefusal{err: uiAuthError("missing API key: send Authorization: Bearer <key>")}
		case auth != "Bearer "+f.key:
			return &uiRefusal{err: uiAuthError("unknown API key")}
		}
	}
	if f.opts.refuse == nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opts.refuse(r)
}

func uiAuthError(msg string) *apiError {
	return &apiError{Status: http.StatusUnauthorized, Type: "authentication_error", Code: "invalid_api_key", Message: msg}
}

// stream copies a run's event stream from the gateway frame by frame, each
// frame in two flushed writes, cutting it as opts.cutAfter says.
func (f *uiFront) stream(w http.ResponseWriter, r *http.Request, runID string, rec *uiRequest) {
	f.mu.Lock()
	n := f.streams
	f.streams++
	f.open[runID]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open[runID]--
		f.mu.Unlock()
	}()
	rec.Stream = n
	cut := -1
	if n < len(f.opts.cutAfter) {
		cut = f.opts.cutAfter[n]
	}

	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, f.backend+r.URL.RequestURI(), nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	for _, h := range []string{"Authorization", "Last-Event-ID", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control", "Retry-After"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(w, resp.Body)
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	write := func(b []byte) bool {
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	br := bufio.NewReader(resp.Body)
	var frame []byte
	parts := 0 // frames of parts that are not their delta's last
	for frames := 0; ; {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return // the run ended, or the page went away
		}
		frame = append(frame, line...)
		if len(line) != 1 {
			continue // a frame ends with an empty line
		}
		if frames == cut || (parts == 3 && f.cutInParts()) {
			write(frame[:len(frame)/2])
			return // a clean end of the response, half way through a frame
		}
		out, split := frame, len(frame)/2
		if f.opts.crlf {
			out = bytes.ReplaceAll(frame, []byte("\n"), []byte("\r\n"))
			split = bytes.IndexByte(out, '\r') + 1 // between a CR and its LF
		}
		if !write(out[:split]) || !write(out[split:]) {
			return
		}
		if id, ok := bytes.CutPrefix(frame, []byte("id: ")); ok {
			rec.LastID = string(id[:bytes.IndexByte(id, '\n')])
			if strings.Contains(rec.LastID, ":") {
				parts++
			}
		}
		frames++
		frame = frame[:0]
	}
}

// cutInParts reports whether a stream that got three parts into a split
// delta is to be cut there (opts.cutInParts), and counts it.
func (f *uiFront) cutInParts() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.partCuts >= f.opts.cutInParts {
		return false
	}
	f.partCuts++
	return true
}

// uiStatusWriter records the status of a response, and the body of an error answer.
type uiStatusWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer // an error answer's first 4 KiB
}

func (w *uiStatusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *uiStatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status >= 400 && w.body.Len() < 4<<10 {
		w.body.Write(b[:min(len(b), 4<<10-w.body.Len())])
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController (the proxy's flushes) reach the real writer.
func (w *uiStatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// seen returns the /v1 requests the page has made so far.
func (f *uiFront) seen() []uiRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// openStreams is how many event streams of a run the front is serving now.
func (f *uiFront) openStreams(runID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.open[runID]
}

// checkKeySent fails the test for each request in reqs that did not carry
// the tenant's key as a Bearer token, or carried it in its address.
func (f *uiFront) checkKeySent(t *testing.T, reqs []uiRequest) {
	t.Helper()
	if len(reqs) == 0 {
		t.Error("the page made no /v1 request")
	}
	for _, r := range reqs {
		if r.Auth != "Bearer "+f.key {
			t.Errorf("%s %s: Authorization %q, want the tenant's key as a Bearer token", r.Method, r.Path, f.redact(r.Auth))
		}
		if strings.Contains(r.Query, f.key) || strings.Contains(r.Path, f.key) {
			t.Errorf("%s %s: the API key is in the address", r.Method, r.Path)
		}
	}
}

// redact shows whether an Authorization header held the tenant's key, without printing a key.
func (f *uiFront) redact(auth string) string {
	switch {
	case auth == "":
		return ""
	case auth == "Bearer "+f.key:
		return "Bearer <the tenant's key>"
	}
	return "Bearer <another key>"
}

// startRun loads the UI, picks a profile, asks a question and clicks Run.
func (b *uiBrowser) startRun(t *testing.T, base, profile, question string) {
	t.Helper()
	b.do(t, "load the UI",
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.ID("query")),
	)
	b.waitFor(t, "the profile list", fmt.Sprintf(`document.querySelector('#profile option[value=%q]') !== null`, profile))
	b.do(t, "ask a question",
		chromedp.SetValue(chromedp.ID("profile"), profile),
		chromedp.SendKeys(chromedp.ID("query"), question),
		chromedp.Click(chromedp.ID("run")),
	)
	b.waitFor(t, "the run to start", `document.querySelector('#run-id').textContent.startsWith('run_')`)
}

// TestUIRunStreamsAllStages asks a question in the browser and checks that the
// four stages stream to completion and that what the page shows is, character
// for character, what the run recorded: no token lost or shown twice.
func TestUIRunStreamsAllStages(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "quick", "Why is the sky blue? Explain <b>briefly</b> & clearly.")

	b.waitFor(t, "the run to end", `['completed','failed','cancelled'].includes(document.querySelector('#run-status').dataset.status)`)
	st := b.state(t)
	b.screenshot(t, "completed")
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run := f.run(t, st.RunID)
	if run.Status != "completed" {
		t.Fatalf("GET run: status %q, want completed", run.Status)
	}
	if len(st.Stages) != len(uiStages) || len(run.Stages) != len(uiStages) {
		t.Fatalf("stages: page has %d, run has %d, want %d", len(st.Stages), len(run.Stages), len(uiStages))
	}
	for i, name := range uiStages {
		ps, rs := st.Stages[i], run.Stages[i]
		if ps.Stage != name || rs.Stage != name {
			t.Fatalf("stage %d: page %q, run %q, want %q", i, ps.Stage, rs.Stage, name)
		}
		if in := stagework.StageTable()[i]; ps.Title != in.Title || ps.Role != in.Role {
			t.Errorf("%s: card titled %q with role %q, want the stage table's %q, %q", name, ps.Title, ps.Role, in.Title, in.Role)
		}
		if ps.Status != "completed" {
			t.Errorf("%s: page status %q, want completed", name, ps.Status)
		}
		if ps.Text == "" {
			t.Errorf("%s: no text on the page", name)
		}
		if ps.Text != rs.Output {
			t.Errorf("%s: page text differs from the run's output (%d vs %d chars)\npage: %q\nrun:  %q",
				name, len(ps.Text), len(rs.Output), ps.Text, rs.Output)
		}
		if ps.Resynced != "" {
			t.Errorf("%s: the streamed text differed from stage_completed.output and the page had to resync", name)
		}
		if want := strconv.FormatInt(rs.Usage.CompletionTokens, 10); ps.Tokens != want {
			t.Errorf("%s: page shows %s tokens, run says completion_tokens = %s", name, ps.Tokens, want)
		}
		if rs.Usage.CompletionTokens <= 0 {
			t.Errorf("%s: run reports %d completion tokens", name, rs.Usage.CompletionTokens)
		}
		if ps.Model != rs.Model || ps.Model == "" {
			t.Errorf("%s: page shows model %q, run says %q", name, ps.Model, rs.Model)
		}
		if v, err := strconv.ParseFloat(ps.TTFT, 64); err != nil || v < 0 {
			t.Errorf("%s: page shows TTFT %q, want a duration in ms", name, ps.TTFT)
		}
	}

	// The answer panel shows the whole answer, rendered from markdown: the
	// same letters and digits in the same order, and never raw markup.
	if st.AnswerSt != "done" || strings.TrimSpace(st.Answer) == "" {
		t.Fatalf("answer panel: status %q, text %q", st.AnswerSt, st.Answer)
	}
	if run.Answer == "" {
		t.Fatal("GET run: empty answer")
	}
	if got, want := uiLetters(st.Answer), uiLetters(uiStripMarkdown(run.Answer)); got != want {
		t.Errorf("answer panel text differs from the run's answer\npanel:  %q\nanswer: %q", st.Answer, run.Answer)
	}
	// The run's estimate (made at admission) stays beside it on the page.
	if run.Estimate == nil {
		t.Fatal("GET run: no estimate")
	}
	est := uiEval[string](t, b, `document.querySelector('#run-estimate').textContent`)
	basis := uiEval[string](t, b, `document.querySelector('#run-estimate').dataset.basis`)
	if basis != run.Estimate.Basis || !strings.Contains(est, "answer in ~") || !strings.Contains(est, "done in ~") {
		t.Errorf("estimate on the page: %q (basis %q); the run's: %+v", est, basis, run.Estimate)
	}
	scripts := uiEval[int](t, b, `document.querySelectorAll('#answer script, #answer img, #answer iframe, [data-stage] .output > :not(div.chunk), [data-stage] .output .chunk *').length`)
	if scripts != 0 {
		t.Errorf("model text produced %d elements where only text belongs", scripts)
	}
	t.Logf("run %s: %d events, the page opened %d event streams", run.ID, run.LastSeq, uiEval[int](t, b, `QLC.current().connects`))

	// The page's address names the run; reloading shows the finished run from
	// GET /v1/runs/{id}, the same text, and lists it under recent runs.
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil || !strings.HasSuffix(loc, "#"+run.ID) {
		t.Fatalf("page address %q (%v), want it to end in #%s", loc, err, run.ID)
	}
	b.do(t, "reload", chromedp.Reload())
	b.waitFor(t, "the finished run", fmt.Sprintf(`document.querySelector('#run-id').textContent === %q &&
		document.querySelector('#run-status').dataset.status === 'completed' &&
		document.querySelector('#recent li[data-run=%q] .badge').dataset.status === 'completed'`, run.ID, run.ID))
	again := b.state(t)
	for i, s := range again.Stages {
		if s.Text != run.Stages[i].Output || s.Status != "completed" {
			t.Errorf("%s after reload: status %q, text matches the run's output: %v", s.Stage, s.Status, s.Text == run.Stages[i].Output)
		}
	}
	if uiLetters(again.Answer) != uiLetters(st.Answer) {
		t.Error("the answer panel differs after reload")
	}
	f.checkKeySent(t, f.seen()) // local mode: the page used the session's key for every call
	b.noProblems(t)
}

// TestUICancelStopsStream starts a slow run, cancels it from the page once the
// generator is streaming, and checks that the page and the API agree that it
// was cancelled and that no more text arrives.
func TestUICancelStopsStream(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "slow", "Write a long essay about consensus algorithms.")

	b.waitFor(t, "generator text", `Number(document.querySelector('[data-stage="generator"]').dataset.streamedTokens) >= 5`)
	b.do(t, "cancel", chromedp.Click(chromedp.ID("cancel")))
	b.waitFor(t, "the run to end", `['completed','failed','cancelled'].includes(document.querySelector('#run-status').dataset.status)`)
	b.screenshot(t, "cancelled")

	st := b.state(t)
	if st.RunStatus != "cancelled" {
		t.Fatalf("run status on the page = %q, want cancelled", st.RunStatus)
	}
	if gen := st.Stages[0]; gen.Status != "cancelled" {
		t.Errorf("generator status on the page = %q, want cancelled", gen.Status)
	}
	for _, s := range st.Stages[1:] {
		if s.Text != "" || s.Status != "pending" {
			t.Errorf("%s: status %q with %d chars after a cancel during the generator", s.Stage, s.Status, len(s.Text))
		}
	}
	if st.AnswerSt != "empty" {
		t.Errorf("answer panel status %q after a cancel, want empty", st.AnswerSt)
	}
	if uiEval[bool](t, b, `document.querySelector('#cancel').disabled`) != true {
		t.Error("the cancel button is still enabled after the run ended")
	}

	run := f.run(t, st.RunID)
	if run.Status != "cancelled" {
		t.Fatalf("GET run: status %q, want cancelled", run.Status)
	}
	pageSeq := uiEval[int64](t, b, `QLC.current().lastSeq`)
	if run.LastSeq != pageSeq {
		t.Errorf("page applied events up to seq %d, the run's log ends at %d", pageSeq, run.LastSeq)
	}
	if st.Stages[0].Text != run.Stages[0].Output {
		t.Errorf("generator: page shows %d chars, the run recorded %d", len(st.Stages[0].Text), len(run.Stages[0].Output))
	}

	// Nothing grows after the cancel: watch both sides for 10 inter-token
	// intervals of the slow profile. This is an observation window, not a wait
	// for something to happen.
	deadline := time.Now().Add(500 * time.Millisecond)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		if now := f.run(t, st.RunID); now.LastSeq != run.LastSeq || now.Stages[0].Output != run.Stages[0].Output {
			t.Fatalf("the run kept going after the cancel: last_seq %d -> %d", run.LastSeq, now.LastSeq)
		}
	}
	if after := b.state(t); after.Stages[0].Text != st.Stages[0].Text {
		t.Errorf("generator text on the page grew after the cancel: %d -> %d chars", len(st.Stages[0].Text), len(after.Stages[0].Text))
	}
	f.checkKeySent(t, f.seen()) // local mode: the page used the session's key for every call
	b.noProblems(t)
}

// TestUIStreamLogic feeds the page's event handler hand-made event sequences
// (duplicates, coalesced deltas overlapping what was shown, restarts) and
// checks its markdown renderer against hostile input. These cases are hard to
// provoke from a real gateway on demand but happen after reconnects.
func TestUIStreamLogic(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.do(t, "load the UI", chromedp.Navigate(f.URL+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the page script", `window.QLC !== undefined && document.documentElement.dataset.ready === 'true'`)

	type feedResult struct {
		LastSeq     int64  `json:"lastSeq"`
		Resyncs     int    `json:"resyncs"`
		Status      string `json:"status"`
		Reconnects  int    `json:"reconnects"`
		ResumedWith string `json:"resumedWith"`
	}
	feedRun := func(events, run string) feedResult {
		t.Helper()
		return uiEval[feedResult](t, b, `QLC.feed(`+events+`, `+run+`)`)
	}
	feed := func(events string) feedResult {
		t.Helper()
		return feedRun(events, "null")
	}
	stage := func(name string) struct{ Text, Tokens, Status, Note, Badges string } {
		t.Helper()
		for _, s := range b.state(t).Stages {
			if s.Stage == name {
				return struct{ Text, Tokens, Status, Note, Badges string }{s.Text, s.Tokens, s.Status, s.Note, s.Badges}
			}
		}
		t.Fatalf("no stage %q on the page", name)
		panic("unreachable")
	}

	t.Run("duplicates and overlapping coalesced deltas", func(t *testing.T) {
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hel', tokens:1},
		  {seq:3, type:'token_delta', stage:'generator', text:'lo ', tokens:1},
		  {seq:3, type:'token_delta', stage:'generator', text:'lo ', tokens:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hel', tokens:1},
		  {seq:5, from_seq:2, type:'token_delta', stage:'generator', text:'Hello wörld', tokens:4},
		  {seq:7, from_seq:6, type:'token_delta', stage:'generator', text:'!😀', tokens:2},
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:7, from_seq:2, type:'token_delta', stage:'generator', text:'Hello wörld!😀', tokens:6},
		  {seq:8, type:'stage_completed', stage:'generator', model:'m1', output_bytes:17, usage:{completion_tokens:6}, ttft_ms:1, duration_ms:5}
		]`)
		if r.LastSeq != 8 || r.Resyncs != 0 {
			t.Errorf("lastSeq %d resyncs %d, want 8 and 0", r.LastSeq, r.Resyncs)
		}
		g := stage("generator")
		if g.Text != "Hello wörld!😀" || g.Tokens != "6" || g.Status != "completed" {
			t.Errorf("generator: %+v", g)
		}
		if rs := uiEval[string](t, b, `document.querySelector('[data-stage="generator"]').dataset.resynced || ''`); rs != "" {
			t.Error("the page resynced although the stream was consistent")
		}
	})

	t.Run("a delta split into parts", func(t *testing.T) {
		// "Héllo!! x": seq 2 is 8 bytes sent as 3 parts, one of them twice.
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hé', tokens:0, part:{offset:0, end:3, size:8}},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hé', tokens:0, part:{offset:0, end:3, size:8}},
		  {seq:2, type:'token_delta', stage:'generator', text:'llo', tokens:0, part:{offset:3, end:6, size:8}},
		  {seq:2, type:'token_delta', stage:'generator', text:'!!', tokens:5, part:{offset:6, end:8, size:8}},
		  {seq:3, type:'token_delta', stage:'generator', text:' x', tokens:1},
		  {seq:4, type:'stage_completed', stage:'generator', model:'m1', output_bytes:10, usage:{completion_tokens:6}, ttft_ms:1, duration_ms:5}
		]`)
		if r.LastSeq != 4 || r.Resyncs != 0 || r.Reconnects != 0 {
			t.Errorf("lastSeq %d resyncs %d reconnects %d, want 4, 0, 0", r.LastSeq, r.Resyncs, r.Reconnects)
		}
		if g := stage("generator"); g.Text != "Héllo!! x" || g.Tokens != "6" || g.Status != "completed" {
			t.Errorf("generator: %+v", g)
		}
		if rs := uiEval[string](t, b, `document.querySelector('[data-stage="generator"]').dataset.resynced || ''`); rs != "" {
			t.Error("the page resynced although output_bytes matched the streamed text")
		}
		// Dropped between two parts, the page resumes inside the delta.
		r = feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hé', tokens:0, part:{offset:0, end:3, size:8}},
		  {type:'lagged', next_seq:2}
		]`)
		if r.LastSeq != 1 || r.Reconnects != 1 || r.ResumedWith != "2:3" {
			t.Errorf("after a lagged notice inside a split delta: lastSeq %d, %d reconnects with Last-Event-ID %q; want 1, 1, \"2:3\"", r.LastSeq, r.Reconnects, r.ResumedWith)
		}
		// A part after a hole is not shown: the page fetches what is missing.
		r = feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'Hé', tokens:0, part:{offset:0, end:3, size:8}},
		  {seq:2, type:'token_delta', stage:'generator', text:'!!', tokens:5, part:{offset:6, end:8, size:8}}
		]`)
		if g := stage("generator"); r.LastSeq != 1 || r.Reconnects != 1 || r.ResumedWith != "2:3" || g.Text != "Hé" {
			t.Errorf("a hole between parts: lastSeq %d, %d reconnects with %q, text %q; want 1, 1, \"2:3\", \"Hé\"", r.LastSeq, r.Reconnects, r.ResumedWith, g.Text)
		}
	})

	t.Run("the answer is the final stage's streamed text", func(t *testing.T) {
		r := feedRun(`[
		  {seq:1, type:'stage_started', stage:'curator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'curator', text:'**Yes**, ', tokens:2},
		  {seq:3, type:'token_delta', stage:'curator', text:'naïvely.', tokens:2},
		  {seq:4, type:'stage_completed', stage:'curator', model:'m1', output_bytes:18, usage:{completion_tokens:4}, ttft_ms:1, duration_ms:5},
		  {seq:5, type:'run_completed', answer_bytes:18, usage:{total_tokens:9}}
		]`, `{stages:[{stage:'generator'},{stage:'refiner'},{stage:'validator'},{stage:'curator'}]}`)
		st := b.state(t)
		if r.Status != "completed" || st.AnswerSt != "done" || st.Answer != "Yes, naïvely." {
			t.Errorf("status %q, answer panel %q %q; want completed, done, \"Yes, naïvely.\"", r.Status, st.AnswerSt, st.Answer)
		}
	})

	t.Run("overlapping coalesced deltas twice in a row", func(t *testing.T) {
		// After a lagged reader resumes early, each coalesced delta starts at
		// the same old seq: each must be cut by all the text shown before it.
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'curator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'curator', text:'a', tokens:1},
		  {seq:3, type:'token_delta', stage:'curator', text:'b', tokens:1},
		  {seq:5, from_seq:2, type:'token_delta', stage:'curator', text:'abcd', tokens:4},
		  {seq:7, from_seq:2, type:'token_delta', stage:'curator', text:'abcdef', tokens:6},
		  {seq:8, from_seq:2, type:'token_delta', stage:'curator', text:'abcdefg', tokens:7}
		]`)
		if r.LastSeq != 8 || r.Resyncs != 0 {
			t.Errorf("lastSeq %d resyncs %d, want 8 and 0", r.LastSeq, r.Resyncs)
		}
		if c := stage("curator"); c.Text != "abcdefg" || c.Tokens != "7" {
			t.Errorf("curator: text %q tokens %s, want \"abcdefg\" and 7", c.Text, c.Tokens)
		}
	})

	t.Run("unprovable overlap replays the log", func(t *testing.T) {
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:3, from_seq:2, type:'token_delta', stage:'generator', text:'ab', tokens:2},
		  {seq:4, from_seq:3, type:'token_delta', stage:'generator', text:'bc', tokens:2}
		]`)
		if r.Resyncs != 1 || r.LastSeq != 0 {
			t.Errorf("resyncs %d lastSeq %d, want a replay from seq 1 (1, 0)", r.Resyncs, r.LastSeq)
		}
		if g := stage("generator"); g.Text != "" {
			t.Errorf("generator text %q after a replay was requested, want it cleared", g.Text)
		}
	})

	t.Run("a gap is not papered over", func(t *testing.T) {
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'generator', text:'a', tokens:1},
		  {seq:4, type:'token_delta', stage:'generator', text:'c', tokens:1}
		]`)
		if r.LastSeq != 2 {
			t.Errorf("lastSeq %d, want 2 (seq 4 must wait for seq 3)", r.LastSeq)
		}
		if g := stage("generator"); g.Text != "a" {
			t.Errorf("generator text %q, want %q", g.Text, "a")
		}
	})

	t.Run("restart and fallback", func(t *testing.T) {
		feed(`[
		  {seq:1, type:'stage_started', stage:'refiner', model:'big', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', stage:'refiner', text:'discarded ', tokens:1},
		  {seq:3, type:'stage_restarted', stage:'refiner', reason:'node lost'},
		  {seq:4, type:'stage_started', stage:'refiner', model:'small', provider:'sim', attempt:2, fallback:true},
		  {seq:5, type:'token_delta', stage:'refiner', text:'kept', tokens:1}
		]`)
		g := stage("refiner")
		if g.Text != "kept" || g.Status != "running" || g.Tokens != "1" {
			t.Errorf("refiner after restart: %+v", g)
		}
		if !strings.Contains(g.Note, "restarted: node lost") {
			t.Errorf("refiner note %q, want it to say restarted: node lost", g.Note)
		}
		for _, want := range []string{"attempt 2", "fallback", "restarted"} {
			if !strings.Contains(g.Badges, want) {
				t.Errorf("refiner badges %q lack %q", g.Badges, want)
			}
		}
	})

	t.Run("run failed", func(t *testing.T) {
		r := feed(`[
		  {seq:1, type:'stage_started', stage:'validator', model:'m', provider:'sim', attempt:1},
		  {seq:2, type:'run_failed', stage:'validator', reason:'sim: server (HTTP 500)', code:'provider_error'}
		]`)
		if r.Status != "failed" {
			t.Errorf("status %q, want failed", r.Status)
		}
		if v := stage("validator"); v.Status != "failed" || !strings.Contains(v.Note, "HTTP 500") {
			t.Errorf("validator: %+v", v)
		}
		if got := uiEval[string](t, b, `document.querySelector('#run-status').dataset.status`); got != "failed" {
			t.Errorf("run status %q, want failed", got)
		}
	})

	t.Run("markdown is safe", func(t *testing.T) {
		type md struct {
			HTML    string `json:"html"`
			Pwned   bool   `json:"pwned"`
			Strong  []string
			H1      []string
			Items   int
			Code    []string
			Links   []string
			Bad     int
			Ordered int
		}
		got := uiEval[md](t, b, `(() => {
		  const src = '<img src=x onerror="window.pwned=true"> **bold <i>x</i>** <script>window.pwned=true</script>\n' +
		    '# Title <b>t</b>\n\n- one\n- two *it*\n\n1. first\n2. second\n\n' +
		    '`+"```"+`html\n<b onclick="window.pwned=true">x</b>\n`+"```"+`\n\n' +
		    '[bad](javascript:window.pwned=true) [good](https://example.com/a?b=1&c=2) `+"`<code>`"+`';
		  const div = document.createElement('div');
		  div.appendChild(QLC.renderMarkdown(src));
		  document.body.appendChild(div);
		  const all = (s) => [...div.querySelectorAll(s)];
		  const res = {
		    html: div.innerHTML,
		    pwned: window.pwned === true,
		    strong: all('strong').map((e) => e.textContent),
		    h1: all('h1').map((e) => e.textContent),
		    items: all('ul > li').length,
		    ordered: all('ol > li').length,
		    code: all('code').map((e) => e.textContent),
		    links: all('a').map((e) => e.getAttribute('href')),
		    bad: all('img, script, i, b, [onclick], [onerror]').length,
		  };
		  div.remove();
		  return res;
		})()`)
		if got.Pwned || got.Bad != 0 {
			t.Errorf("markup from model text became elements (pwned=%v, %d bad elements): %s", got.Pwned, got.Bad, got.HTML)
		}
		if len(got.Strong) != 1 || got.Strong[0] != "bold <i>x</i>" {
			t.Errorf("bold: %q", got.Strong)
		}
		if len(got.H1) != 1 || got.H1[0] != "Title <b>t</b>" {
			t.Errorf("heading: %q", got.H1)
		}
		if got.Items != 2 || got.Ordered != 2 {
			t.Errorf("lists: %d bullet items, %d numbered, want 2 and 2", got.Items, got.Ordered)
		}
		if len(got.Code) != 2 || got.Code[0] != `<b onclick="window.pwned=true">x</b>` || got.Code[1] != "<code>" {
			t.Errorf("code: %q", got.Code)
		}
		if len(got.Links) != 1 || got.Links[0] != "https://example.com/a?b=1&c=2" {
			t.Errorf("links: %q (only http(s) links may become anchors)", got.Links)
		}
	})
	b.noProblems(t)
}

// uiRunEnded is true once the page shows the run as over.
const uiRunEnded = `['completed','failed','cancelled'].includes(document.querySelector('#run-status').dataset.status)`

// uiWaitUntil polls cond until it is true, or fails the test after uiWait.
func uiWaitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(uiWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still not so after %v", what, uiWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// uiAuthView is what the page shows about its API key.
type uiAuthView struct {
	FormHidden   bool    `json:"formHidden"`
	SavedHidden  bool    `json:"savedHidden"`
	Tenant       string  `json:"tenant"`
	TenantHidden bool    `json:"tenantHidden"`
	Msg          string  `json:"msg"`
	Input        string  `json:"input"`
	Stored       *string `json:"stored"`
	KeyInPage    bool    `json:"keyInPage"`
}

// authView reads the key's part of the page, and whether key shows anywhere in it.
func (b *uiBrowser) authView(t *testing.T, key string) uiAuthView {
	t.Helper()
	return uiEval[uiAuthView](t, b, `(() => {
	  const q = (s) => document.querySelector(s);
	  const key = `+strconv.Quote(key)+`;
	  return {
	    formHidden: q('#key-form').hidden,
	    savedHidden: q('#key-saved').hidden,
	    tenant: q('#tenant').textContent,
	    tenantHidden: q('#tenant').hidden,
	    msg: q('#key-msg').hidden ? '' : q('#key-msg').textContent,
	    input: q('#api-key').value,
	    stored: localStorage.getItem('qlc.apiKey'),
	    keyInPage: document.documentElement.outerHTML.includes(key) || document.body.innerText.includes(key),
	  };
	})()`)
}

// checkTranscript fails the test unless the page shows, character for
// character, each stage's output as the run recorded it, streamed cleanly.
func checkTranscript(t *testing.T, st uiState, run uiRun) {
	t.Helper()
	if len(st.Stages) != len(run.Stages) {
		t.Fatalf("page has %d stages, the run %d", len(st.Stages), len(run.Stages))
	}
	for i, ps := range st.Stages {
		rs := run.Stages[i]
		if ps.Text == "" || ps.Text != rs.Output {
			t.Errorf("%s: page text differs from the run's output (%d vs %d chars)", ps.Stage, len(ps.Text), len(rs.Output))
		}
		if ps.Resynced != "" {
			t.Errorf("%s: the streamed text differed from stage_completed.output and the page had to resync", ps.Stage)
		}
		if want := strconv.FormatInt(rs.Usage.CompletionTokens, 10); ps.Tokens != want {
			t.Errorf("%s: page shows %s tokens, the run says %s", ps.Stage, ps.Tokens, want)
		}
	}
}

// TestUILocalModeUsesSessionKey: in local mode GET /ui/session gives the page
// its key, so the user is never asked for one; the page sends it with every
// call (the event stream too), keeps it out of localStorage and out of the
// page, and aborts a run's stream when another run is put on screen.
func TestUILocalModeUsesSessionKey(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "quick", "What is a quorum?")
	b.waitFor(t, "the run to end", uiRunEnded)
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed", st.RunStatus)
	}
	checkTranscript(t, st, f.run(t, st.RunID))

	av := b.authView(t, f.key)
	if !av.FormHidden || !av.SavedHidden || av.Msg != "" {
		t.Errorf("local mode: key field hidden %v, \"saved\" hidden %v, message %q; want no key asked for", av.FormHidden, av.SavedHidden, av.Msg)
	}
	if av.TenantHidden || !strings.Contains(av.Tenant, "dev") {
		t.Errorf("local mode: tenant label %q (hidden %v), want it to name tenant dev", av.Tenant, av.TenantHidden)
	}
	if av.Stored != nil {
		t.Error("local mode: the session's key was saved in localStorage")
	}
	if av.KeyInPage {
		t.Error("the API key is in the page's HTML or text")
	}
	reqs := f.seen()
	f.checkKeySent(t, reqs)
	for _, want := range []string{"GET /v1/profiles", "POST /v1/runs", "GET /v1/runs/" + st.RunID + "/events"} {
		if !slices.ContainsFunc(reqs, func(r uiRequest) bool { return r.Method+" "+r.Path == want }) {
			t.Errorf("the page never sent %s", want)
		}
	}

	// A slow run streams; putting the first run back on screen aborts its
	// stream (the run itself goes on).
	quickID := st.RunID
	b.do(t, "ask a slow question",
		chromedp.SetValue(chromedp.ID("profile"), "slow"),
		chromedp.SetValue(chromedp.ID("query"), "Tell me everything about Paxos."),
		chromedp.Click(chromedp.ID("run")),
	)
	b.waitFor(t, "the slow run to stream", fmt.Sprintf(`document.querySelector('#run-id').textContent !== %q &&
		Number(document.querySelector('[data-stage="generator"]').dataset.streamedTokens) >= 3`, quickID))
	slowID := b.state(t).RunID
	if n := f.openStreams(slowID); n != 1 {
		t.Fatalf("%d event streams of the slow run are open, want 1", n)
	}
	b.do(t, "open the first run again", chromedp.Click(chromedp.CSS(`#recent li[data-run="`+quickID+`"]`)))
	b.waitFor(t, "the first run on screen", fmt.Sprintf(`document.querySelector('#run-id').textContent === %q &&
		document.querySelector('#run-status').dataset.status === 'completed'`, quickID))
	uiWaitUntil(t, "the slow run's stream to be aborted", func() bool { return f.openStreams(slowID) == 0 })
	if r := f.run(t, slowID); r.Status != "running" {
		t.Errorf("the slow run is %s: the page, not the run's end, should have closed its stream", r.Status)
	}
	f.checkKeySent(t, f.seen())
	b.noProblems(t)
}

// TestUIAPIKeyEntry: without a local session the page shows a key field. It
// still tries the API without a key (a gateway may not need one); the 401
// makes it ask. A wrong key is refused, forgotten and asked for again; the
// right one is saved, sent with every call, survives a reload and can be
// forgotten.
func TestUIAPIKeyEntry(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: false})
	if !f.checkKeys {
		t.Log("the gateway checks API keys itself")
	}
	b := newUIBrowser(t)
	b.do(t, "load the UI", chromedp.Navigate(f.URL+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the key field to ask", `!document.querySelector('#key-form').hidden &&
		/needs an API key/.test(document.querySelector('#key-msg').textContent)`)
	av := b.authView(t, f.key)
	if !av.TenantHidden || !av.SavedHidden {
		t.Errorf("no session: tenant hidden %v, \"saved\" hidden %v, want both hidden", av.TenantHidden, av.SavedHidden)
	}
	typ := uiEval[string](t, b, `document.querySelector('#api-key').type + ' ' + document.querySelector('#api-key').autocomplete`)
	if typ != "password off" {
		t.Errorf("key field: type and autocomplete %q, want \"password off\"", typ)
	}
	for _, r := range f.seen() {
		if r.Auth != "" || r.Status != http.StatusUnauthorized {
			t.Errorf("before a key was given: %s %s sent %q and got HTTP %d, want no key and 401", r.Method, r.Path, f.redact(r.Auth), r.Status)
		} else if r.ErrMsg == "" || !strings.Contains(av.Msg, r.ErrMsg) {
			t.Errorf("key message %q, want it to give the server's reason %q", av.Msg, r.ErrMsg)
		}
	}

	// A wrong key: refused, not kept, asked for again.
	b.do(t, "save a wrong key", chromedp.SendKeys(chromedp.ID("api-key"), "qlc_not_a_key"), chromedp.Click(chromedp.ID("key-save")))
	b.waitFor(t, "the wrong key to be refused", `!document.querySelector('#key-form').hidden &&
		/not accepted/.test(document.querySelector('#key-msg').textContent)`)
	b.screenshot(t, "key-refused")
	av = b.authView(t, f.key)
	if av.Stored != nil || av.Input != "" {
		t.Errorf("after a refused key: localStorage %v, field %q; want both empty", av.Stored != nil, av.Input)
	}
	wrong := 0
	for _, r := range f.seen() {
		if r.Auth == "Bearer qlc_not_a_key" {
			wrong++
			if r.Status != http.StatusUnauthorized {
				t.Errorf("%s %s with the wrong key: HTTP %d", r.Method, r.Path, r.Status)
			} else if r.ErrMsg == "" || !strings.Contains(av.Msg, r.ErrMsg) {
				t.Errorf("key message %q, want it to give the server's reason %q", av.Msg, r.ErrMsg)
			}
		}
	}
	if wrong == 0 {
		t.Error("the page never tried the key it was given")
	}

	// The right key: saved, and from now on sent with every call.
	before := len(f.seen())
	b.do(t, "save the right key", chromedp.SendKeys(chromedp.ID("api-key"), f.key), chromedp.Click(chromedp.ID("key-save")))
	b.startRunLoaded(t, "quick", "Is a key a secret?")
	b.waitFor(t, "the run to end", uiRunEnded)
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed", st.RunStatus)
	}
	checkTranscript(t, st, f.run(t, st.RunID))
	b.screenshot(t, "key-saved")
	av = b.authView(t, f.key)
	if av.Stored == nil || *av.Stored != f.key {
		t.Error("the accepted key is not in localStorage qlc.apiKey")
	}
	if !av.FormHidden || av.SavedHidden || av.Input != "" || av.Msg != "" {
		t.Errorf("after saving: field hidden %v, \"saved\" hidden %v, field value kept %v, message %q", av.FormHidden, av.SavedHidden, av.Input != "", av.Msg)
	}
	if av.KeyInPage {
		t.Error("the API key is in the page's HTML or text")
	}
	f.checkKeySent(t, f.seen()[before:])

	// A reload uses the saved key without asking.
	before = len(f.seen())
	b.do(t, "reload", chromedp.Reload())
	b.waitFor(t, "the run again", fmt.Sprintf(`document.querySelector('#run-status').dataset.status === 'completed' &&
		document.querySelector('#run-id').textContent === %q`, st.RunID))
	if av = b.authView(t, f.key); !av.FormHidden || av.SavedHidden {
		t.Errorf("after a reload: field hidden %v, \"saved\" hidden %v; want the saved key used", av.FormHidden, av.SavedHidden)
	}
	f.checkKeySent(t, f.seen()[before:])

	// Forget key: gone from storage, and the field asks again.
	b.do(t, "forget the key", chromedp.Click(chromedp.ID("key-forget")))
	b.waitFor(t, "the key field", `!document.querySelector('#key-form').hidden`)
	if av = b.authView(t, f.key); av.Stored != nil || !av.SavedHidden {
		t.Errorf("after Forget key: stored %v, \"saved\" hidden %v", av.Stored != nil, av.SavedHidden)
	}
	b.noProblems(t, "status of 401", "/ui/session")
}

// startRunLoaded asks a question on the page already loaded, once profile is
// offered, and waits for the run to start.
func (b *uiBrowser) startRunLoaded(t *testing.T, profile, question string) {
	t.Helper()
	b.startRunLoadedNoWait(t, profile, question)
	b.waitFor(t, "the run to start", `document.querySelector('#run-id').textContent.startsWith('run_')`)
}

// TestUIStreamResumes cuts the page's event stream twice in the middle of a
// frame (after whole frames sent each in two pieces, with CRLF line ends).
// The page must drop each half frame, resume with Last-Event-ID at the last
// event it applied, and end with every stage's text exactly once.
func TestUIStreamResumes(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, cutAfter: []int{20, 3}, crlf: true})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "quick", "Resume me, please.")
	b.waitFor(t, "the run to end", uiRunEnded)
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run := f.run(t, st.RunID)
	checkTranscript(t, st, run)
	if got, want := uiEval[int64](t, b, `QLC.current().lastSeq`), run.LastSeq; got != want {
		t.Errorf("page applied events up to seq %d, the run's log ends at %d", got, want)
	}

	var streams []uiRequest
	for _, r := range f.seen() {
		if r.Stream >= 0 {
			streams = append(streams, r)
		}
	}
	if len(streams) < 3 {
		t.Fatalf("%d event streams, want at least 3 (two cut, one to the end)", len(streams))
	}
	slices.SortFunc(streams, func(a, b uiRequest) int { return a.Stream - b.Stream })
	if streams[0].LastEventID != "" {
		t.Errorf("first stream sent Last-Event-ID %q, want none", streams[0].LastEventID)
	}
	for i := 1; i < 3; i++ {
		prev := streams[i-1]
		if prev.LastID == "" {
			t.Fatalf("stream %d was cut before any whole frame", i-1)
		}
		if streams[i].LastEventID != prev.LastID {
			t.Errorf("stream %d resumed with Last-Event-ID %q, want %q (the last whole event of stream %d)",
				i, streams[i].LastEventID, prev.LastID, i-1)
		}
	}
	if n := uiEval[int](t, b, `QLC.current().connects`); n != len(streams) {
		t.Errorf("the page counts %d connections, the front saw %d streams", n, len(streams))
	}
	f.checkKeySent(t, f.seen())
	b.noProblems(t)
}

// TestUILimitsAreShown: a 429 (with Retry-After) and a 403 from the API reach
// the user with the server's message, and a 429 on the event stream is waited
// out before the stream resumes.
func TestUILimitsAreShown(t *testing.T) {
	var posts, streams int
	refuse := func(r *http.Request) *uiRefusal {
		switch {
		case r.Method == http.MethodPost && r.URL.Path == "/v1/runs":
			posts++
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			if posts == 1 {
				return &uiRefusal{retryAfter: "7", err: &apiError{Status: http.StatusTooManyRequests,
					Type: "rate_limit_error", Code: "runs_per_minute", Message: "tenant dev: over 2 runs per minute"}}
			}
			if bytes.Contains(body, []byte(`"profile":"slow"`)) {
				return &uiRefusal{err: &apiError{Status: http.StatusForbidden,
					Type: "invalid_request_error", Code: "profile_not_allowed", Message: "profile slow is not allowed for tenant dev"}}
			}
		case strings.HasSuffix(r.URL.Path, "/events"):
			streams++
			if streams == 1 {
				return &uiRefusal{retryAfter: "1", err: &apiError{Status: http.StatusTooManyRequests,
					Type: "rate_limit_error", Code: "concurrent_streams", Message: "tenant dev: too many open event streams"}}
			}
		}
		return nil
	}
	f := newUIFront(t, uiFrontOptions{local: true, refuse: refuse})
	b := newUIBrowser(t)
	errText := `document.querySelector('#error').hidden ? '' : document.querySelector('#error').textContent`

	b.do(t, "load the UI", chromedp.Navigate(f.URL+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.startRunLoadedNoWait(t, "quick", "One too many?")
	b.waitFor(t, "the rate limit message", `/over 2 runs per minute/.test(`+errText+`)`)
	b.screenshot(t, "rate-limited")
	if msg := uiEval[string](t, b, errText); !strings.Contains(msg, "retry in 7 s") {
		t.Errorf("429 message %q, want it to say retry in 7 s", msg)
	}
	if id := uiEval[string](t, b, `document.querySelector('#run-id').textContent`); id != "" {
		t.Errorf("a refused run is on screen: %q", id)
	}

	b.startRunLoadedNoWait(t, "slow", "Am I allowed?")
	b.waitFor(t, "the profile message", `/profile slow is not allowed for tenant dev/.test(`+errText+`)`)

	b.startRunLoadedNoWait(t, "quick", "And now?")
	b.waitFor(t, "the stream's rate limit message", `/too many open event streams.*retry in 1 s/.test(`+errText+`)`)
	b.waitFor(t, "the run to end", uiRunEnded)
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed", st.RunStatus)
	}
	checkTranscript(t, st, f.run(t, st.RunID))
	if msg := uiEval[string](t, b, errText); msg != "" {
		t.Errorf("error still shown after the stream recovered: %q", msg)
	}
	f.checkKeySent(t, f.seen())
	b.noProblems(t, "status of 429", "status of 403")
}

// startRunLoadedNoWait asks a question on the loaded page without waiting
// for a run to start (it may be refused).
func (b *uiBrowser) startRunLoadedNoWait(t *testing.T, profile, question string) {
	t.Helper()
	b.waitFor(t, "the profile list", fmt.Sprintf(`document.querySelector('#profile option[value=%q]') !== null`, profile))
	b.do(t, "ask a question",
		chromedp.SetValue(chromedp.ID("profile"), profile),
		chromedp.SetValue(chromedp.ID("query"), question),
		chromedp.Click(chromedp.ID("run")),
	)
}

// TestUISSEParser checks the page's SSE parser (the one the event stream
// uses) in Chromium against a hand-made stream: comments, CRLF, CR and LF
// line ends, multi-line data, fields without a space or a value, an id with
// NUL (ignored), unknown fields, retry, and a last event the stream's end
// interrupts. Like nats' FuzzParser, it feeds the stream cut at every pair of
// places (and, as bytes through TextDecoder, at every byte, inside UTF-8
// sequences too) and wants the same events each time.
func TestUISSEParser(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.do(t, "load the UI", chromedp.Navigate(f.URL+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the page script", `window.QLC !== undefined && document.documentElement.dataset.ready === 'true'`)

	const stream = ": ping\r\n\r\n" +
		"id: 1\nevent: token_delta\ndata: {\"text\":\"Grüße 😀\"}\n\n" +
		"id: 2\r\nevent:x\r\ndata: l1\r\ndata:l2\r\ndata\r\n\r\n" +
		"data: cr\r\r" +
		"id: 3\x00\ndata: nul id\n\n" +
		"retry: 77\nfoo: bar\nnocolon\ndata:  two spaces\n\n" +
		"event: run_completed\n\n" +
		"id\ndata: no id\n\n" +
		"data: cut off"
	type result struct {
		Whole      [][]string `json:"whole"`
		Retry      int        `json:"retry"`
		Cuts       int        `json:"cuts"`
		Mismatches int        `json:"mismatches"`
		First      string     `json:"first"`
	}
	got := uiEval[result](t, b, `(() => {
	  const stream = `+strconv.Quote(stream)+`;
	  let retry = 0;
	  const parse = (chunks) => {
	    const out = [];
	    const p = new QLC.SSEParser((type, data, id) => out.push([type, data, id]), (c) => out.push(['#', c]));
	    for (const c of chunks) p.push(c);
	    p.end();
	    retry = p.retry;
	    return out;
	  };
	  const whole = parse([stream]);
	  const want = JSON.stringify(whole);
	  let cuts = 0, mismatches = 0, first = '';
	  const check = (how, out) => {
	    cuts++;
	    if (JSON.stringify(out) !== want) { mismatches++; if (!first) first = how + ': ' + JSON.stringify(out); }
	  };
	  for (let i = 0; i <= stream.length; i++) {
	    for (let j = i; j <= stream.length; j++) {
	      check('cut at ' + i + ',' + j, parse([stream.slice(0, i), stream.slice(i, j), stream.slice(j)]));
	    }
	  }
	  const bytes = new TextEncoder().encode(stream);
	  for (let i = 0; i <= bytes.length; i++) {
	    const dec = new TextDecoder();
	    check('byte cut at ' + i, parse([dec.decode(bytes.slice(0, i), { stream: true }), dec.decode(bytes.slice(i), { stream: true })]));
	  }
	  return { whole, retry, cuts, mismatches, first };
	})()`)
	want := [][]string{
		{"#", "ping"},
		{"token_delta", `{"text":"Grüße 😀"}`, "1"},
		{"x", "l1\nl2\n", "2"},
		{"message", "cr", "2"},
		{"message", "nul id", "2"},
		{"message", " two spaces", "2"},
		{"message", "no id", ""},
	}
	if !slices.EqualFunc(got.Whole, want, slices.Equal) {
		t.Errorf("parsed\n%q\nwant\n%q", got.Whole, want)
	}
	if got.Retry != 77 {
		t.Errorf("retry %d, want 77", got.Retry)
	}
	n16 := len(utf16.Encode([]rune(stream))) // JavaScript strings count UTF-16 units
	if wantCuts := (n16+1)*(n16+2)/2 + len(stream) + 1; got.Cuts != wantCuts || got.Mismatches != 0 {
		t.Errorf("%d of %d cut streams (want %d) parsed differently; first: %s", got.Mismatches, got.Cuts, wantCuts, got.First)
	}
	b.noProblems(t)
}

var (
	uiFenceLine = regexp.MustCompile("(?m)^[ \t]*(```|~~~).*$")
	uiListMark  = regexp.MustCompile(`(?m)^[ \t]*\d{1,9}[.)][ \t]+`)
	uiLinkURL   = regexp.MustCompile(`\]\([^)\s]*\)`)
)

// uiStripMarkdown removes the parts of markdown source that do not appear as
// text once rendered: fence lines, list numbers, link targets.
func uiStripMarkdown(s string) string {
	s = uiFenceLine.ReplaceAllString(s, "")
	s = uiListMark.ReplaceAllString(s, "")
	return uiLinkURL.ReplaceAllString(s, "]")
}

// uiLetters keeps only letters and digits, so rendered and source text compare
// without markup and spacing.
func uiLetters(s string) string {
	var b strings.Builder
	for _, r := range s {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestUIShowsHugeStages: the page follows a run with a 200 000-token stage
// and a stage whose whole output is one 443 KB delta (split into parts on
// the wire), through a front that cuts its streams between two parts: the
// page resumes inside the delta (Last-Event-ID "seq:end"), shows every
// stage's output character for character without a resync, and the answer
// — which no event carries — from the final stage's streamed text.
func TestUIShowsHugeStages(t *testing.T) {
	up := startUpstream(t, nil, []string{awkwardText(200000), " and", " done."})
	f := newUIFront(t, uiFrontOptions{local: true, cutInParts: 2, profiles: hugeProfiles(up.URL)})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "huge", "Explain everything.")
	b.waitFor(t, "the run to end", uiRunEnded)
	st := b.state(t)
	run := f.run(t, st.RunID)
	if st.RunStatus != "completed" || run.Status != "completed" {
		t.Fatalf("page says %q, the run %q", st.RunStatus, run.Status)
	}
	for i, ps := range st.Stages {
		if ps.Text != run.Stages[i].Output || ps.Resynced != "" {
			t.Errorf("%s: page text %d chars, the run's output %d; resynced %q", ps.Stage, len(ps.Text), len(run.Stages[i].Output), ps.Resynced)
		}
	}
	if st.AnswerSt != "done" || uiLetters(st.Answer) != uiLetters(uiStripMarkdown(run.Answer)) {
		t.Errorf("answer panel %q: %d chars, the run's answer %d", st.AnswerSt, len(st.Answer), len(run.Answer))
	}
	inside := 0
	var resumes []string
	for _, r := range f.seen() {
		if r.Stream >= 0 {
			resumes = append(resumes, fmt.Sprintf("#%d %q→%q", r.Stream, r.LastEventID, r.LastID))
			if strings.Contains(r.LastEventID, ":") {
				inside++
			}
		}
	}
	if inside < 2 {
		t.Errorf("the page resumed inside a split delta %d times, the front cut 2 streams there; streams (Last-Event-ID → last id sent): %s", inside, strings.Join(resumes, ", "))
	}
	b.noProblems(t)
}

// uiStrategyProfiles gives the strategy tests their profiles: a chain
// ("quick"); a moa of three simulated proposers streaming 150 tokens 4 ms
// apart (long enough for the test to see all three stream at once, and
// their deltas interleave in the log); a council whose members (and so its
// rankers) are uiModel's models at upURL, which write rankings a parser can
// read; a vote of three samples; and "moadead", a moa whose third
// proposer's provider refuses every request (an auth error, not retried),
// so that proposer is skipped and the run goes on with two.
func uiStrategyProfiles(upURL string) string {
	return fmt.Sprintf(`
default_profile: quick
providers:
  simfast: {kind: sim, sim: {ttft: 1ms, itl: 1ms, output_tokens: 120}}
  simpaced: {kind: sim, sim: {ttft: 1ms, itl: 4ms, output_tokens: 150}}
  simdead: {kind: sim, sim: {ttft: 1ms, error_rate: 1, error_kind: auth}}
  up: {kind: openai, base_url: %s/v1}
profiles:
  quick:
    description: Simulated chain, 1 ms per token (UI test).
    provider: simfast
    stages:
      generator: {model: sim-small, max_tokens: 400}
      refiner:   {model: sim-medium, max_tokens: 400}
      validator: {model: sim-small, max_tokens: 400}
      curator:   {model: sim-large, max_tokens: 400}
  moa:
    description: Mixture-of-Agents of three simulated models (UI test).
    strategy: moa
    provider: simpaced
    proposers:
      - {model: sim-small, max_tokens: 400}
      - {model: sim-medium, max_tokens: 400}
      - {model: sim-large, max_tokens: 400}
    aggregator: {provider: simfast, model: sim-large, max_tokens: 400}
  council:
    description: Council of three models that rank each other (UI test).
    strategy: council
    provider: up
    members:
      - {model: council-1, max_tokens: 400}
      - {model: council-2, max_tokens: 400}
      - {model: council-3, max_tokens: 400}
    chairman: {provider: simfast, model: sim-large, max_tokens: 400}
  vote:
    description: Vote of three simulated samples (UI test).
    strategy: vote
    provider: simfast
    samples:
      - {model: sim-small, max_tokens: 400}
      - {model: sim-medium, max_tokens: 400}
    count: 3
    method: majority
  moadead:
    description: Mixture-of-Agents with a proposer that always fails (UI test).
    strategy: moa
    provider: simfast
    proposers:
      - {model: sim-small, max_tokens: 400}
      - {model: sim-medium, max_tokens: 400}
      - {provider: simdead, model: sim-large, max_tokens: 400}
    aggregator: {model: sim-large, max_tokens: 400}
    min_proposers: 2
`, upURL)
}

// uiRankings are the orders in which uiModel's models rank the council's
// answers, best first, by model.
var uiRankings = map[string][]string{
	"council-1": {"B", "A", "C"},
	"council-2": {"B", "C", "A"},
	"council-3": {"A", "B", "C"},
}

// startUIModel serves an OpenAI-compatible chat endpoint for a council: it
// streams a member's answer in 60 small deltas 2 ms apart (so the members'
// deltas interleave in the run's log), and answers a ranker (its prompt is
// stagework's ranker prompt) with an evaluation and a FINAL RANKING in the
// model's order of uiRankings. The test's cleanup stops it.
func startUIModel(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		var deltas []string
		if bytes.Contains(body, []byte("You are a Ranker")) {
			deltas = append(deltas, "Each response ", "was read ", "with care.\n\n", "FINAL RANKING:\n")
			for i, l := range uiRankings[req.Model] {
				deltas = append(deltas, fmt.Sprintf("%d. Response %s\n", i+1, l))
			}
		} else {
			for i := range 60 {
				deltas = append(deltas, fmt.Sprintf("%s says %d. ", req.Model, i))
			}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for _, d := range deltas {
			content, _ := json.Marshal(d)
			fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n", content)
			if rc.Flush() != nil {
				return
			}
			select { // pace the stream like a model; stop when the gateway hangs up
			case <-time.After(2 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
		fmt.Fprintf(w, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", len(deltas), len(deltas)+10)
		_ = rc.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// uiEvent is one event of a run's log as the event stream sends it (the
// fields the strategy tests look at).
type uiEvent struct {
	Seq       int64  `json:"seq"`
	FromSeq   int64  `json:"from_seq"`
	Type      string `json:"type"`
	Step      string `json:"step"`
	Stage     string `json:"stage"`
	Text      string `json:"text"`
	Final     bool   `json:"final"`
	Model     string `json:"model"`
	Reason    string `json:"reason"`
	Code      string `json:"code"`
	Aggregate bool   `json:"aggregate"`
	Ranked    []struct {
		Step        string  `json:"step"`
		Label       string  `json:"label"`
		AverageRank float64 `json:"average_rank"`
		Votes       int     `json:"votes"`
	} `json:"ranked"`
	Kind    string `json:"kind"`
	Message string `json:"message"`
	Usage   struct {
		CompletionTokens int64 `json:"completion_tokens"`
	} `json:"usage"`
	Steps []struct {
		Step  string `json:"step"`
		Stage string `json:"stage"`
		Final bool   `json:"final"`
	} `json:"steps"`
}

// step is the event's step id: its step, else (a chain's stage) its stage.
func (e uiEvent) step() string {
	if e.Step != "" {
		return e.Step
	}
	return e.Stage
}

// uiRunLog is a finished run's log, read from the gateway's event stream
// (every event, from seq 1), and each step's text rebuilt from its own deltas.
type uiRunLog struct {
	events []uiEvent
	texts  map[string]string // step id -> its last attempt's streamed text
	tokens map[string]int64  // step id -> completion tokens (stage_completed's usage)
}

// events reads a finished run's whole event stream from the gateway.
func (f *uiFront) events(t *testing.T, id string) uiRunLog {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.backend+"/v1/runs/"+id+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET events: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/runs/%s/events: HTTP %d", id, resp.StatusCode)
	}
	log := uiRunLog{texts: map[string]string{}, tokens: map[string]int64{}}
	text := map[string]*strings.Builder{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev uiEvent
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		log.events = append(log.events, ev)
		switch id := ev.step(); ev.Type {
		case "stage_started", "stage_restarted":
			text[id] = &strings.Builder{}
		case "token_delta": // a part of a long delta is the next piece of its text too
			if text[id] == nil {
				text[id] = &strings.Builder{}
			}
			text[id].WriteString(ev.Text)
		case "stage_completed":
			log.tokens[id] = ev.Usage.CompletionTokens
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read events: %v", err)
	}
	for id, b := range text {
		log.texts[id] = b.String()
	}
	return log
}

// of returns the log's events of one type.
func (l uiRunLog) of(typ string) []uiEvent {
	var out []uiEvent
	for _, ev := range l.events {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

// uiStepCard is one step's card as the page shows it, and where.
type uiStepCard struct {
	Step     string   `json:"step"`
	Stage    string   `json:"stage"`
	Title    string   `json:"title"`
	Status   string   `json:"status"`
	Final    bool     `json:"final"`
	Text     string   `json:"text"`
	Tokens   string   `json:"tokens"`
	Streamed int      `json:"streamed"`
	Model    string   `json:"model"`
	Note     string   `json:"note"`
	Ranking  string   `json:"ranking"`
	Notes    []string `json:"notes"`
	Resynced string   `json:"resynced"`
	Row      string   `json:"row"`
	Opacity  float64  `json:"opacity"`
	Filter   string   `json:"filter"`
	Left     float64  `json:"left"`
	Right    float64  `json:"right"`
	Top      float64  `json:"top"`
	Bottom   float64  `json:"bottom"`
}

// uiStepsView is the page's steps: how they are laid out, each card, and
// the aggregate ranking's rows and place.
type uiStepsView struct {
	Layout string       `json:"layout"`
	Cards  []uiStepCard `json:"cards"`
	Agg    [][]string   `json:"agg"`
	AggTop float64      `json:"aggTop"`
	AggBot float64      `json:"aggBottom"`
}

const uiStepsJS = `(() => {
  const q = (s, r) => r.querySelector(s);
  const host = document.querySelector('#stages');
  const agg = host.querySelector('.ranking-agg');
  const ar = agg ? agg.getBoundingClientRect() : null;
  return {
    layout: host.dataset.layout || '',
    agg: agg ? [...agg.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((c) => c.textContent)) : null,
    aggTop: ar ? ar.top : 0,
    aggBottom: ar ? ar.bottom : 0,
    cards: [...host.querySelectorAll('.stage[data-step]')].map((s) => {
      const r = s.getBoundingClientRect();
      const cs = getComputedStyle(s);
      const row = s.closest('.step-row');
      return {
        step: s.dataset.step, stage: s.dataset.stage, title: q('.title', s).textContent,
        status: s.dataset.status, final: !!s.dataset.final,
        text: q('.output', s).textContent, tokens: q('.tokens', s).dataset.value,
        streamed: Number(s.dataset.streamedTokens), model: q('.model', s).textContent,
        note: q('.note', s).hidden ? '' : q('.note', s).textContent,
        ranking: q('.ranking', s).hidden ? '' : q('.rk-order', s).textContent,
        notes: [...s.querySelectorAll('.step-note > p')].map((p) => p.textContent),
        resynced: s.dataset.resynced || '', row: row ? row.dataset.row : '',
        opacity: Number(cs.opacity), filter: cs.filter,
        left: r.left, right: r.right, top: r.top, bottom: r.bottom,
      };
    }),
  };
})()`

func (b *uiBrowser) steps(t *testing.T) uiStepsView {
	t.Helper()
	return uiEval[uiStepsView](t, b, uiStepsJS)
}

// card is the card of step id, or fails the test.
func (v uiStepsView) card(t *testing.T, id string) uiStepCard {
	t.Helper()
	for _, c := range v.Cards {
		if c.Step == id {
			return c
		}
	}
	t.Fatalf("no card for step %q on the page; cards: %v", id, v.steps())
	panic("unreachable")
}

func (v uiStepsView) steps() []string {
	var ids []string
	for _, c := range v.Cards {
		ids = append(ids, c.Step)
	}
	return ids
}

// checkSideBySide fails the test unless the cards of ids are one row of
// columns in that order: the same top, each to the right of the one before
// with at most a gap between them, and none overlapping.
func checkSideBySide(t *testing.T, v uiStepsView, ids ...string) {
	t.Helper()
	for i, id := range ids {
		c := v.card(t, id)
		if c.Row != "parallel" {
			t.Errorf("%s: in a %q row, want a row of parallel steps", id, c.Row)
		}
		if c.Right-c.Left < 150 {
			t.Errorf("%s: %.0f px wide, too narrow for a column", id, c.Right-c.Left)
		}
		if i == 0 {
			continue
		}
		prev := v.card(t, ids[i-1])
		if d := c.Top - prev.Top; d < -1 || d > 1 {
			t.Errorf("%s is %.1f px lower than %s: not side by side", id, d, ids[i-1])
		}
		if gap := c.Left - prev.Right; gap < 0 || gap > 40 {
			t.Errorf("%s starts %.1f px after %s ends, want it right beside it (0..40 px)", id, gap, ids[i-1])
		}
	}
}

// checkFinalBelow fails the test unless the final step's card spans the
// columns of ids and lies below them.
func checkFinalBelow(t *testing.T, v uiStepsView, final string, ids ...string) {
	t.Helper()
	f := v.card(t, final)
	if !f.Final || f.Row != "final" {
		t.Errorf("%s: final %v, row %q; want the final step's full-width row", final, f.Final, f.Row)
	}
	first, last := v.card(t, ids[0]), v.card(t, ids[len(ids)-1])
	if f.Left > first.Left+1 || f.Right < last.Right-1 {
		t.Errorf("%s spans %.0f..%.0f px, the columns above %.0f..%.0f: not full width", final, f.Left, f.Right, first.Left, last.Right)
	}
	for _, id := range ids {
		if c := v.card(t, id); f.Top < c.Bottom {
			t.Errorf("%s (top %.0f) is not below %s (bottom %.0f)", final, f.Top, id, c.Bottom)
		}
	}
}

// checkStepTexts fails the test unless every step's card shows, character
// for character, the text the run's log streamed for it (rebuilt per step
// from its interleaved deltas) and its completion tokens, and, when the run
// resource lists steps, the output it records.
func checkStepTexts(t *testing.T, v uiStepsView, log uiRunLog, res uiRun) {
	t.Helper()
	for _, c := range v.Cards {
		want, ok := log.texts[c.Step]
		if !ok {
			continue // never started (a plan's step the run did not need)
		}
		if c.Text != want {
			t.Errorf("%s: page text differs from the step's streamed text (%d vs %d chars)\npage: %q\nlog:  %q", c.Step, len(c.Text), len(want), c.Text, want)
		}
		if c.Resynced != "" {
			t.Errorf("%s: the page had to resync the step's text", c.Step)
		}
		if n, ok := log.tokens[c.Step]; ok && c.Tokens != strconv.FormatInt(n, 10) {
			t.Errorf("%s: page shows %s tokens, stage_completed says %d", c.Step, c.Tokens, n)
		}
	}
	for _, s := range res.Steps {
		if s.Status != "completed" {
			continue
		}
		if c := v.card(t, s.ID); c.Text != s.Output {
			t.Errorf("%s: page text differs from the run resource's output (%d vs %d chars)", s.ID, len(c.Text), len(s.Output))
		}
	}
}

// checkInterleaved fails the test unless the deltas of steps ids interleave
// in the log: the point of keying text by step.
func checkInterleaved(t *testing.T, log uiRunLog, ids ...string) {
	t.Helper()
	switches, last := 0, ""
	for _, ev := range log.of("token_delta") {
		if !slices.Contains(ids, ev.step()) {
			continue
		}
		if last != "" && ev.step() != last {
			switches++
		}
		last = ev.step()
	}
	if switches < len(ids) {
		t.Errorf("the deltas of %v switch steps %d times in the log: they did not stream at once, so this test proves less than it should", ids, switches)
	}
}

// checkAnswer fails the test unless the answer panel shows the run's answer.
func checkAnswer(t *testing.T, b *uiBrowser, run uiRun) {
	t.Helper()
	st := b.state(t)
	if st.AnswerSt != "done" || run.Answer == "" || uiLetters(st.Answer) != uiLetters(uiStripMarkdown(run.Answer)) {
		t.Errorf("answer panel %q: %q; the run's answer: %q", st.AnswerSt, st.Answer, run.Answer)
	}
}

// TestUIMoaShowsStepsSideBySide runs a moa profile in the browser: while the
// three proposers stream, their cards are columns side by side, all running
// at once; at the end each shows exactly the text the log streamed for it
// (their deltas interleave), the aggregator is below them full width and
// its text is the answer. Reloaded, the page shows the same from the log.
// Then a chain run on the same page still shows its four stages in a row.
func TestUIMoaShowsStepsSideBySide(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, profiles: uiStrategyProfiles(startUIModel(t))})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "moa", "Which consensus method suits a small team?")
	proposers := []string{"p1.1", "p1.2", "p1.3"}

	// The profile picker groups the profiles by strategy.
	for prof, group := range map[string]string{"quick": "Chain", "moa": "Mixture-of-Agents", "council": "Council", "vote": "Vote"} {
		got := uiEval[string](t, b, fmt.Sprintf(`document.querySelector('#profile option[value=%q]').parentElement.label || ''`, prof))
		if got != group {
			t.Errorf("profile %s is listed under %q, want %q", prof, got, group)
		}
	}

	// The page is read in the same poll that sees them streaming (a later
	// read could find them done).
	b.waitFor(t, "three proposers streaming at once", `(() => {
	  const c = [...document.querySelectorAll('#stages [data-stage="proposer"]')];
	  const ok = c.length === 3 && c.every((s) => s.dataset.status === 'running' && Number(s.dataset.streamedTokens) >= 3);
	  if (ok) window.uiLive = `+uiStepsJS+`;
	  return ok || `+uiRunEnded+`;
	})()`)
	if !uiEval[bool](t, b, `window.uiLive !== undefined`) {
		t.Fatalf("the run ended and the page never showed three proposers streaming at once; page: %s", b.stateJSON(t))
	}
	live := uiEval[uiStepsView](t, b, `window.uiLive`)
	b.screenshot(t, "streaming")
	if live.Layout != "strategy" {
		t.Errorf("layout %q while streaming, want strategy", live.Layout)
	}
	checkSideBySide(t, live, proposers...)
	if agg := live.card(t, "aggregator"); agg.Status != "pending" || agg.Title != "Aggregator" {
		t.Errorf("aggregator while the proposers stream: status %q, title %q; want pending, Aggregator", agg.Status, agg.Title)
	}

	b.waitFor(t, "the run to end", uiRunEnded)
	b.screenshot(t, "completed")
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run, log := f.run(t, st.RunID), f.events(t, st.RunID)
	checkInterleaved(t, log, proposers...)
	v := b.steps(t)
	if got, want := v.steps(), append(slices.Clone(proposers), "aggregator"); !slices.Equal(got, want) {
		t.Fatalf("cards %v, want %v", got, want)
	}
	for _, c := range v.Cards {
		if c.Status != "completed" || c.Text == "" || c.Model == "" {
			t.Errorf("%s: status %q, %d chars, model %q", c.Step, c.Status, len(c.Text), c.Model)
		}
		if c.Step != "aggregator" && c.Title != "Proposer" {
			t.Errorf("%s: titled %q, want Proposer", c.Step, c.Title)
		}
	}
	checkSideBySide(t, v, proposers...)
	checkFinalBelow(t, v, "aggregator", proposers...)
	checkStepTexts(t, v, log, run)
	if agg := v.card(t, "aggregator"); uiLetters(agg.Text) != uiLetters(run.Answer) {
		t.Error("the aggregator's text is not the run's answer")
	}
	checkAnswer(t, b, run)

	// Reloaded, the finished run is replayed from its log: the same steps, the same texts.
	b.do(t, "reload", chromedp.Reload())
	b.waitFor(t, "the finished run", fmt.Sprintf(`document.querySelector('#run-id').textContent === %q &&
		document.querySelector('#run-status').dataset.status === 'completed' && document.querySelectorAll('#stages .stage[data-step]').length === 4 &&
		document.querySelector('#answer').dataset.status === 'done'`, run.ID))
	again := b.steps(t)
	checkSideBySide(t, again, proposers...)
	checkFinalBelow(t, again, "aggregator", proposers...)
	checkStepTexts(t, again, log, run)
	checkAnswer(t, b, run)

	// A chain run on the same page: its four stages in one row, as before.
	b.startRunLoaded(t, "quick", "And as a chain?")
	b.waitFor(t, "the chain run to end", uiRunEnded+` && document.querySelector('#run-id').textContent !== `+strconv.Quote(run.ID))
	chain := b.state(t)
	if chain.RunStatus != "completed" {
		t.Fatalf("chain run status on the page = %q, want completed", chain.RunStatus)
	}
	cv := b.steps(t)
	if cv.Layout != "chain" || !slices.Equal(cv.steps(), uiStages) {
		t.Fatalf("chain run: layout %q, cards %v; want chain, %v", cv.Layout, cv.steps(), uiStages)
	}
	for i := 1; i < len(cv.Cards); i++ {
		if a, c := cv.Cards[i-1], cv.Cards[i]; c.Top != a.Top || c.Left < a.Right {
			t.Errorf("chain: %s is not beside %s", c.Step, a.Step)
		}
	}
	checkTranscript(t, chain, f.run(t, chain.RunID))
	b.noProblems(t)
}

// TestUICouncilShowsRankings runs a council whose members rank each other:
// the members stream side by side, each ranker's card shows its ranking
// ("B > A > C", from its ranking event), the aggregate ranking is a table
// above the chairman, and the chairman's text is the answer.
func TestUICouncilShowsRankings(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, profiles: uiStrategyProfiles(startUIModel(t))})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "council", "Is a council wiser than one model?")
	b.waitFor(t, "the run to end", uiRunEnded)
	b.screenshot(t, "completed")
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run, log := f.run(t, st.RunID), f.events(t, st.RunID)
	members, rankers := []string{"m1", "m2", "m3"}, []string{"r1", "r2", "r3"}
	checkInterleaved(t, log, members...)
	v := b.steps(t)
	checkSideBySide(t, v, members...)
	checkSideBySide(t, v, rankers...)
	checkFinalBelow(t, v, "chairman", rankers...)
	checkStepTexts(t, v, log, run)
	checkAnswer(t, b, run)

	var aggregate *uiEvent
	ranked := 0
	for _, ev := range log.of("ranking") {
		if ev.Aggregate {
			aggregate = &ev
			continue
		}
		ranked++
		var labels []string
		for _, r := range ev.Ranked {
			labels = append(labels, r.Label)
		}
		if got, want := v.card(t, ev.Step).Ranking, strings.Join(labels, " > "); got != want {
			t.Errorf("%s: page shows ranking %q, its ranking event says %q", ev.Step, got, want)
		}
	}
	if ranked != len(rankers) || aggregate == nil {
		t.Fatalf("the log has %d rankers' rankings and aggregate %v; want 3 and one (the test's models rank)", ranked, aggregate != nil)
	}
	var want [][]string
	for _, r := range aggregate.Ranked {
		want = append(want, []string{r.Label, r.Step, strconv.FormatFloat(r.AverageRank, 'f', 2, 64), strconv.Itoa(r.Votes)})
	}
	if !slices.EqualFunc(v.Agg, want, slices.Equal) {
		t.Errorf("aggregate ranking table %q, want %q", v.Agg, want)
	}
	if chair := v.card(t, "chairman"); v.AggBot > chair.Top || v.AggTop < v.card(t, "r1").Bottom {
		t.Errorf("the aggregate ranking (%.0f..%.0f px) is not between the rankers and the chairman (top %.0f)", v.AggTop, v.AggBot, chair.Top)
	}
	b.noProblems(t)
}

// TestUIVoteShowsAnswer runs a vote: three samples side by side, and the
// tally's answer step below them with the chosen sample's text, which is
// the answer.
func TestUIVoteShowsAnswer(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, profiles: uiStrategyProfiles(startUIModel(t))})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "vote", "Pick one answer, please.")
	b.waitFor(t, "the run to end", uiRunEnded)
	b.screenshot(t, "completed")
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run, log := f.run(t, st.RunID), f.events(t, st.RunID)
	samples := []string{"s1", "s2", "s3"}
	v := b.steps(t)
	checkSideBySide(t, v, samples...)
	checkFinalBelow(t, v, "answer", samples...)
	checkStepTexts(t, v, log, run)
	answer := v.card(t, "answer")
	if answer.Status != "completed" || answer.Text != run.Answer || answer.Title != "Answer" {
		t.Errorf("answer step: status %q, titled %q, shows the run's answer: %v", answer.Status, answer.Title, answer.Text == run.Answer)
	}
	for _, ev := range log.of("stage_started") {
		if ev.step() == "answer" && answer.Model != ev.Model {
			t.Errorf("answer step shows model %q, its stage_started says %q", answer.Model, ev.Model)
		}
	}
	checkAnswer(t, b, run)
	b.noProblems(t)
}

// TestUISkippedStepIsGreyed runs a moa whose third proposer always fails:
// its column stays beside the others, greyed, with the reason its
// step_skipped event gives; the run completes with the other two.
func TestUISkippedStepIsGreyed(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true, profiles: uiStrategyProfiles(startUIModel(t))})
	b := newUIBrowser(t)
	b.startRun(t, f.URL, "moadead", "Go on without the broken one.")
	b.waitFor(t, "the run to end", uiRunEnded)
	b.screenshot(t, "completed")
	st := b.state(t)
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run, log := f.run(t, st.RunID), f.events(t, st.RunID)
	skips := log.of("step_skipped")
	if len(skips) != 1 || skips[0].Step != "p1.3" || skips[0].Reason == "" {
		t.Fatalf("step_skipped events %+v, want one for p1.3 with a reason", skips)
	}
	v := b.steps(t)
	checkSideBySide(t, v, "p1.1", "p1.2", "p1.3")
	checkFinalBelow(t, v, "aggregator", "p1.1", "p1.2", "p1.3")
	checkStepTexts(t, v, log, run)
	dead := v.card(t, "p1.3")
	if dead.Status != "skipped" || !strings.Contains(dead.Note, skips[0].Reason) || !strings.Contains(dead.Note, skips[0].Code) {
		t.Errorf("p1.3: status %q, note %q; want skipped, with the reason %q (%s)", dead.Status, dead.Note, skips[0].Reason, skips[0].Code)
	}
	if dead.Opacity >= 0.9 || !strings.Contains(dead.Filter, "grayscale") {
		t.Errorf("p1.3 is not greyed out: opacity %v, filter %q", dead.Opacity, dead.Filter)
	}
	for _, id := range []string{"p1.1", "p1.2", "aggregator"} {
		if c := v.card(t, id); c.Status != "completed" || c.Opacity != 1 {
			t.Errorf("%s: status %q, opacity %v; want completed and not greyed", id, c.Status, c.Opacity)
		}
	}
	checkAnswer(t, b, run)
	b.noProblems(t)
}

// TestUIStrategyStreamLogic feeds the page hand-made strategy runs: the
// deltas of parallel steps interleave, repeat, come coalesced over what was
// shown and split in parts, and each step's card must show exactly its own
// text; skipped steps, rankings, notes (with raw model text, which must stay
// text), a final step the plan did not name, and a resume inside one step's
// split delta. These are hard to provoke from a real gateway on demand.
func TestUIStrategyStreamLogic(t *testing.T) {
	f := newUIFront(t, uiFrontOptions{local: true})
	b := newUIBrowser(t)
	b.do(t, "load the UI", chromedp.Navigate(f.URL+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the page script", `window.QLC !== undefined && document.documentElement.dataset.ready === 'true'`)
	type feedResult struct {
		LastSeq     int64  `json:"lastSeq"`
		Resyncs     int    `json:"resyncs"`
		Status      string `json:"status"`
		Reconnects  int    `json:"reconnects"`
		ResumedWith string `json:"resumedWith"`
	}
	feed := func(events string) feedResult {
		t.Helper()
		return uiEval[feedResult](t, b, `QLC.feed(`+events+`, null)`)
	}
	const moaPlan = `{seq:1, type:'run_planned', strategy:'moa', steps:[
	    {step:'p1.1', stage:'proposer', model:'ma', provider:'sim', layer:1},
	    {step:'p1.2', stage:'proposer', model:'mb', provider:'sim', layer:1},
	    {step:'p1.3', stage:'proposer', model:'mc', provider:'sim', layer:1},
	    {step:'aggregator', stage:'aggregator', model:'md', provider:'sim', final:true, inputs:['p1.1','p1.2','p1.3'], min_inputs:2}]},
	  {seq:2, type:'stage_started', step:'p1.1', stage:'proposer', model:'ma', provider:'sim', attempt:1},
	  {seq:3, type:'stage_started', step:'p1.2', stage:'proposer', model:'mb', provider:'sim', attempt:1},
	  {seq:4, type:'stage_started', step:'p1.3', stage:'proposer', model:'mc', provider:'sim', attempt:1}`

	t.Run("interleaved steps, coalesced overlap, parts, a skip", func(t *testing.T) {
		r := feed(`[` + moaPlan + `,
		  {seq:5, type:'token_delta', step:'p1.1', stage:'proposer', text:'One ', tokens:1},
		  {seq:6, type:'token_delta', step:'p1.2', stage:'proposer', text:'Zwei ', tokens:1},
		  {seq:7, type:'token_delta', step:'p1.1', stage:'proposer', text:'two ', tokens:1},
		  {seq:8, type:'token_delta', step:'p1.3', stage:'proposer', text:'trois', tokens:1},
		  {seq:8, type:'token_delta', step:'p1.3', stage:'proposer', text:'trois', tokens:1},
		  {seq:6, type:'token_delta', step:'p1.2', stage:'proposer', text:'Zwei ', tokens:1},
		  {seq:9, type:'token_delta', step:'p1.2', stage:'proposer', text:'drei ', tokens:1},
		  {seq:10, from_seq:9, type:'token_delta', step:'p1.2', stage:'proposer', text:'drei vier', tokens:2},
		  {seq:11, type:'token_delta', step:'p1.1', stage:'proposer', text:'thr', tokens:0, part:{offset:0, end:3, size:6}},
		  {seq:11, type:'token_delta', step:'p1.1', stage:'proposer', text:'thr', tokens:0, part:{offset:0, end:3, size:6}},
		  {seq:11, type:'token_delta', step:'p1.1', stage:'proposer', text:'ee!', tokens:1, part:{offset:3, end:6, size:6}},
		  {seq:12, type:'step_skipped', step:'p1.3', stage:'proposer', reason:'ran past its 20s deadline', code:'deadline'},
		  {seq:13, type:'stage_completed', step:'p1.1', stage:'proposer', model:'ma', output_bytes:14, usage:{completion_tokens:3}, ttft_ms:1, duration_ms:5},
		  {seq:14, type:'stage_completed', step:'p1.2', stage:'proposer', model:'mb', output_bytes:14, usage:{completion_tokens:3}, ttft_ms:1, duration_ms:5},
		  {seq:15, type:'stage_started', step:'aggregator', stage:'aggregator', final:true, model:'md', provider:'sim', attempt:1},
		  {seq:16, type:'token_delta', step:'aggregator', stage:'aggregator', text:'**Both** agree.', tokens:3},
		  {seq:17, type:'stage_completed', step:'aggregator', stage:'aggregator', model:'md', output_bytes:15, usage:{completion_tokens:3}, ttft_ms:1, duration_ms:5},
		  {seq:18, type:'run_completed', answer_bytes:15, usage:{total_tokens:12}}
		]`)
		if r.LastSeq != 18 || r.Resyncs != 0 || r.Reconnects != 0 || r.Status != "completed" {
			t.Errorf("lastSeq %d, resyncs %d, reconnects %d, status %q; want 18, 0, 0, completed", r.LastSeq, r.Resyncs, r.Reconnects, r.Status)
		}
		v := b.steps(t)
		want := map[string][3]string{ // text, status, tokens
			"p1.1": {"One two three!", "completed", "3"}, "p1.2": {"Zwei drei vier", "completed", "3"},
			"p1.3": {"trois", "skipped", "1"}, "aggregator": {"**Both** agree.", "completed", "3"},
		}
		if !slices.Equal(v.steps(), []string{"p1.1", "p1.2", "p1.3", "aggregator"}) || v.Layout != "strategy" {
			t.Fatalf("layout %q, cards %v", v.Layout, v.steps())
		}
		for id, w := range want {
			c := v.card(t, id)
			if c.Text != w[0] || c.Status != w[1] || c.Tokens != w[2] || c.Resynced != "" {
				t.Errorf("%s: text %q, status %q, tokens %s, resynced %q; want %q, %s, %s", id, c.Text, c.Status, c.Tokens, c.Resynced, w[0], w[1], w[2])
			}
		}
		if c := v.card(t, "p1.3"); !strings.Contains(c.Note, "ran past its 20s deadline") || !strings.Contains(c.Note, "deadline") {
			t.Errorf("p1.3's note %q, want the skip's reason", c.Note)
		}
		checkSideBySide(t, v, "p1.1", "p1.2", "p1.3")
		checkFinalBelow(t, v, "aggregator", "p1.1", "p1.2", "p1.3")
		if st := b.state(t); st.AnswerSt != "done" || st.Answer != "Both agree." {
			t.Errorf("answer panel %q %q, want the aggregator's text", st.AnswerSt, st.Answer)
		}
	})

	t.Run("a resume inside one step's split delta", func(t *testing.T) {
		r := feed(`[` + moaPlan + `,
		  {seq:5, type:'token_delta', step:'p1.2', stage:'proposer', text:'x', tokens:1},
		  {seq:6, type:'token_delta', step:'p1.1', stage:'proposer', text:'Hé', tokens:0, part:{offset:0, end:3, size:8}},
		  {type:'lagged', next_seq:6}
		]`)
		if r.LastSeq != 5 || r.Reconnects != 1 || r.ResumedWith != "6:3" {
			t.Errorf("lastSeq %d, %d reconnects with Last-Event-ID %q; want 5, 1, \"6:3\"", r.LastSeq, r.Reconnects, r.ResumedWith)
		}
		v := b.steps(t)
		if a, c := v.card(t, "p1.1").Text, v.card(t, "p1.2").Text; a != "Hé" || c != "x" {
			t.Errorf("p1.1 %q, p1.2 %q; want \"Hé\" and \"x\"", a, c)
		}
	})

	t.Run("a restart voids one step only", func(t *testing.T) {
		feed(`[` + moaPlan + `,
		  {seq:5, type:'token_delta', step:'p1.1', stage:'proposer', text:'lost ', tokens:1},
		  {seq:6, type:'token_delta', step:'p1.2', stage:'proposer', text:'kept ', tokens:1},
		  {seq:7, type:'stage_restarted', step:'p1.1', stage:'proposer', reason:'node lost'},
		  {seq:8, type:'stage_started', step:'p1.1', stage:'proposer', model:'ma', provider:'sim', attempt:2},
		  {seq:9, type:'token_delta', step:'p1.1', stage:'proposer', text:'again', tokens:1},
		  {seq:10, type:'token_delta', step:'p1.2', stage:'proposer', text:'too', tokens:1}
		]`)
		v := b.steps(t)
		if c := v.card(t, "p1.1"); c.Text != "again" || !strings.Contains(c.Note, "restarted: node lost") {
			t.Errorf("p1.1: text %q, note %q; want \"again\" and the restart", c.Text, c.Note)
		}
		if c := v.card(t, "p1.2"); c.Text != "kept too" || c.Note != "" {
			t.Errorf("p1.2: text %q, note %q; want \"kept too\" and no note", c.Text, c.Note)
		}
	})

	t.Run("council: rankings, notes, a fallback answer", func(t *testing.T) {
		r := feed(`[
		  {seq:1, type:'run_planned', strategy:'council', steps:[
		    {step:'m1', stage:'member', model:'ma'}, {step:'m2', stage:'member', model:'mb'},
		    {step:'r1', stage:'ranker', model:'ma', inputs:['m1','m2']}, {step:'r2', stage:'ranker', model:'mb', inputs:['m1','m2']},
		    {step:'chairman', stage:'chairman', model:'mc', final:true, inputs:['m1','m2','r1','r2']}]},
		  {seq:2, type:'stage_started', step:'m1', stage:'member', model:'ma', attempt:1},
		  {seq:3, type:'stage_started', step:'m2', stage:'member', model:'mb', attempt:1},
		  {seq:4, type:'token_delta', step:'m2', stage:'member', text:'Second.', tokens:1},
		  {seq:5, type:'token_delta', step:'m1', stage:'member', text:'First.', tokens:1},
		  {seq:6, type:'stage_completed', step:'m1', stage:'member', output_bytes:6, usage:{completion_tokens:1}},
		  {seq:7, type:'stage_completed', step:'m2', stage:'member', output_bytes:7, usage:{completion_tokens:1}},
		  {seq:8, type:'stage_started', step:'r1', stage:'ranker', model:'ma', attempt:1},
		  {seq:9, type:'stage_started', step:'r2', stage:'ranker', model:'mb', attempt:1},
		  {seq:10, type:'stage_completed', step:'r1', stage:'ranker', output_bytes:0, usage:{completion_tokens:0}},
		  {seq:11, type:'ranking', step:'r1', aggregate:false, ranked:[{step:'m2', label:'B', average_rank:1, votes:1}, {step:'m1', label:'A', average_rank:2, votes:1}]},
		  {seq:12, type:'stage_completed', step:'r2', stage:'ranker', output_bytes:0, usage:{completion_tokens:0}},
		  {seq:13, type:'step_note', step:'r2', kind:'ranking_unparsed', message:"r2's ranking could not be read", raw:'<img src=x onerror="window.pwned=true"> no list'},
		  {seq:14, type:'ranking', aggregate:true, ranked:[{step:'m2', label:'B', average_rank:1, votes:1}, {step:'m1', label:'A', average_rank:2, votes:1}]},
		  {seq:15, type:'stage_started', step:'chairman', stage:'chairman', final:true, model:'mc', attempt:1},
		  {seq:16, type:'token_delta', step:'chairman', stage:'chairman', text:'half', tokens:1},
		  {seq:17, type:'step_skipped', step:'chairman', stage:'chairman', reason:'Chairman failed: HTTP 500', code:'failed'},
		  {seq:18, type:'stage_started', step:'answer', stage:'tally', final:true, model:'best-ranked', provider:'qlc', attempt:1},
		  {seq:19, type:'step_note', step:'answer', kind:'answer_fallback', message:'the best-ranked answer, m2, is given'},
		  {seq:20, type:'step_note', step:'gone', kind:'majority', message:'a note about no card'},
		  {seq:21, type:'token_delta', step:'answer', stage:'tally', text:'Second.', tokens:0},
		  {seq:22, type:'stage_completed', step:'answer', stage:'tally', output_bytes:7, usage:{completion_tokens:0}},
		  {seq:23, type:'run_completed', answer_bytes:7}
		]`)
		if r.LastSeq != 23 || r.Resyncs != 0 || r.Status != "completed" {
			t.Errorf("lastSeq %d, resyncs %d, status %q; want 23, 0, completed", r.LastSeq, r.Resyncs, r.Status)
		}
		v := b.steps(t)
		if !slices.Equal(v.steps(), []string{"m1", "m2", "r1", "r2", "chairman", "answer"}) {
			t.Fatalf("cards %v", v.steps())
		}
		if c := v.card(t, "m1"); c.Text != "First." {
			t.Errorf("m1 text %q", c.Text)
		}
		if c := v.card(t, "r1"); c.Ranking != "B > A" {
			t.Errorf("r1 ranking %q, want \"B > A\"", c.Ranking)
		}
		if c := v.card(t, "r2"); c.Ranking != "" || len(c.Notes) != 1 || c.Notes[0] != "r2's ranking could not be read" {
			t.Errorf("r2: ranking %q, notes %q; want none and the note", c.Ranking, c.Notes)
		}
		raw := uiEval[struct {
			Text  string `json:"text"`
			Bad   int    `json:"bad"`
			Pwned bool   `json:"pwned"`
		}](t, b, `({text: document.querySelector('[data-step="r2"] .step-note pre.raw').textContent,
		  bad: document.querySelectorAll('#stages img').length, pwned: window.pwned === true})`)
		if raw.Text != `<img src=x onerror="window.pwned=true"> no list` || raw.Bad != 0 || raw.Pwned {
			t.Errorf("the note's raw text: %q, %d img elements, pwned %v; want it as text", raw.Text, raw.Bad, raw.Pwned)
		}
		if want := [][]string{{"B", "m2", "1.00", "1"}, {"A", "m1", "2.00", "1"}}; !slices.EqualFunc(v.Agg, want, slices.Equal) {
			t.Errorf("aggregate table %q, want %q", v.Agg, want)
		}
		chair, ans := v.card(t, "chairman"), v.card(t, "answer")
		if chair.Status != "skipped" || chair.Text != "half" || !strings.Contains(chair.Note, "HTTP 500") {
			t.Errorf("chairman: status %q, text %q, note %q", chair.Status, chair.Text, chair.Note)
		}
		if ans.Row != "final" || !ans.Final || ans.Status != "completed" || ans.Title != "Answer" || ans.Top < chair.Bottom {
			t.Errorf("answer step: row %q, final %v, status %q, title %q, below the chairman %v", ans.Row, ans.Final, ans.Status, ans.Title, ans.Top >= chair.Bottom)
		}
		if len(ans.Notes) != 1 || !strings.Contains(ans.Notes[0], "best-ranked") {
			t.Errorf("answer step notes %q", ans.Notes)
		}
		if v.AggBot > chair.Top {
			t.Error("the aggregate ranking is not above the chairman")
		}
		if n := uiEval[string](t, b, `document.querySelector('#stages .run-notes').textContent`); n != "gone: a note about no card" {
			t.Errorf("run notices %q", n)
		}
		if st := b.state(t); st.AnswerSt != "done" || st.Answer != "Second." {
			t.Errorf("answer panel %q %q, want the fallback answer step's text", st.AnswerSt, st.Answer)
		}
	})

	t.Run("a chain's events with step still fill the four stages", func(t *testing.T) {
		feed(`[
		  {seq:1, type:'stage_started', step:'generator', stage:'generator', model:'m1', provider:'sim', attempt:1},
		  {seq:2, type:'token_delta', step:'generator', stage:'generator', text:'draft', tokens:1},
		  {seq:3, type:'token_delta', stage:'generator', text:' (old log)', tokens:1}
		]`)
		v := b.steps(t)
		if v.Layout != "chain" || !slices.Equal(v.steps(), uiStages) || v.card(t, "generator").Text != "draft (old log)" {
			t.Errorf("layout %q, cards %v, generator %q", v.Layout, v.steps(), v.card(t, "generator").Text)
		}
	})
	b.noProblems(t)
}

// TestUIStrategyRunFromResource opens a finished moa run (one proposer
// skipped) whose event stream the gateway keeps refusing: the page gives
// up on the stream and shows the run resource's steps instead, laid out as
// the stream would have: the proposers side by side with their outputs, the
// skipped one greyed with its reason, the aggregator below, the answer.
func TestUIStrategyRunFromResource(t *testing.T) {
	refuse := func(r *http.Request) *uiRefusal {
		if strings.HasSuffix(r.URL.Path, "/events") {
			return &uiRefusal{err: &apiError{Status: http.StatusServiceUnavailable, Type: "api_error", Code: "unavailable", Message: "no streams today"}}
		}
		return nil
	}
	f := newUIFront(t, uiFrontOptions{local: true, refuse: refuse, profiles: uiStrategyProfiles(startUIModel(t))})
	var started uiRun
	if code, _ := call(t, http.MethodPost, f.backend+"/v1/runs", f.key, `{"query":"From the record, please.","profile":"moadead"}`, &started); code != http.StatusCreated && code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("POST /v1/runs: HTTP %d", code)
	}
	var run uiRun
	uiWaitUntil(t, "the run to end", func() bool {
		run = f.run(t, started.ID)
		return run.Status == "completed"
	})
	log := f.events(t, run.ID)

	b := newUIBrowser(t)
	b.do(t, "open the run", chromedp.Navigate(f.URL+"/#"+run.ID), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the run from its resource", `document.querySelector('#answer').dataset.status === 'done'`)
	b.screenshot(t, "from-resource")
	if st := b.state(t); st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed", st.RunStatus)
	}
	streams := 0
	for _, r := range f.seen() {
		if strings.HasSuffix(r.Path, "/events") {
			streams++
		}
	}
	if streams == 0 {
		t.Error("the page never tried the event stream")
	}
	v := b.steps(t)
	checkSideBySide(t, v, "p1.1", "p1.2", "p1.3")
	checkFinalBelow(t, v, "aggregator", "p1.1", "p1.2", "p1.3")
	checkStepTexts(t, v, log, run)
	skip := log.of("step_skipped")
	if dead := v.card(t, "p1.3"); len(skip) != 1 || dead.Status != "skipped" || !strings.Contains(dead.Note, skip[0].Reason) {
		t.Errorf("p1.3: status %q, note %q; want skipped with the reason of %+v", dead.Status, dead.Note, skip)
	}
	checkAnswer(t, b, run)
	b.noProblems(t, "status of 503")
}
