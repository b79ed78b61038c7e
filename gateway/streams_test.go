package gateway

// Streams that scale (issue 11), end to end on real HTTP servers: no event
// on any transport passes the bound whatever a stage's length, readers with
// default line limits read everything, and a long run's log is read whole
// from any seq, finished or live.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"

	"github.com/qlc-project/qlc/actors"
)

// upstream is an OpenAI-compatible endpoint on loopback that answers every
// chat completion with the same deltas, after hold is closed (nil: at once).
type upstream struct {
	URL      string
	arrived  chan struct{} // a request arrived (buffered, never blocks the handler)
	requests atomic.Int64
}

func startUpstream(t testing.TB, hold <-chan struct{}, deltas []string) *upstream {
	t.Helper()
	u := &upstream{arrived: make(chan struct{}, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		u.requests.Add(1)
		select {
		case u.arrived <- struct{}{}:
		default:
		}
		if hold != nil {
			select {
			case <-hold:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "text/event-stream")
		bw := bufio.NewWriter(w)
		for _, d := range deltas {
			content, _ := json.Marshal(d)
			fmt.Fprintf(bw, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},\"finish_reason\":null}]}\n\n", content)
		}
		fmt.Fprintf(bw, "data: {\"id\":\"x\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":%d,\"total_tokens\":%d}}\n\ndata: [DONE]\n\n", len(deltas), len(deltas)+10)
		_ = bw.Flush()
	}))
	t.Cleanup(srv.Close)
	u.URL = srv.URL
	return u
}

// awkwardText is n "tokens" of text that is costly to escape: quotes,
// backslashes, control characters, line ends, U+2028, multi-byte
// characters; mostly short words.
func awkwardText(n int) string {
	pieces := []string{" the", " a", "\n", ` "q"`, `\`, "\x01", " é", " 日本", " 😀", "\u2028", "\t", " </script>"}
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i%7 == 0 {
			b.WriteString(pieces[(i/7)%len(pieces)])
		} else {
			b.WriteString(" w")
		}
	}
	return b.String()
}

// hugeProfiles: "huge" has a 200 000-token generator (zero latency, many
// small deltas that readers get coalesced) and a curator whose whole output,
// 200 000 awkward tokens, arrives from the upstream as one delta (split
// into parts on the wire).
func hugeProfiles(upstreamURL string) string {
	return fmt.Sprintf(`
default_profile: huge
providers:
  bulk: {kind: sim, sim: {output_tokens: 200000, truncate_at_max_tokens: true}}
  tiny: {kind: sim, sim: {output_tokens: 5}}
  up:   {kind: openai, base_url: %s/v1}
profiles:
  huge:
    provider: tiny
    stages:
      generator: {provider: bulk, model: g, max_tokens: 200000}
      refiner:   {model: r}
      validator: {model: v}
      curator:   {provider: up, model: c, max_tokens: 200000}
`, upstreamURL)
}

// runResource reads GET /v1/runs/{id}.
func runResource(t *testing.T, base, id string) runView {
	t.Helper()
	var v runView
	if code := do(t, "GET", base+"/v1/runs/"+id, "", &v); code != http.StatusOK {
		t.Fatalf("GET run %s: HTTP %d", id, code)
	}
	return v
}

// checkOutputs fails the test unless the transcript's text of every stage is
// the run's recorded output, byte for byte.
func checkOutputs(t *testing.T, what string, tr *transcript, v runView) {
	t.Helper()
	for _, s := range v.Stages {
		got := ""
		if b := tr.texts[s.Stage]; b != nil {
			got = b.String()
		}
		if got != s.Output {
			t.Errorf("%s: %s: read %d bytes, the run's output is %d bytes", what, s.Stage, len(got), len(s.Output))
		}
	}
}

// TestEventsStayWithinTheBound: a run with a 200 000-token stage of small
// deltas and a 200 000-token stage that arrives as one delta is read whole
// by readers with default line limits — Go's bufio.Scanner over SSE (live
// and after the end, from seq 1 and resumed inside the split delta), a
// WebSocket client with coder/websocket's default 32 KiB read limit, an
// OpenAI streaming client — and no event on any transport passes 16 KiB.
func TestEventsStayWithinTheBound(t *testing.T) {
	up := startUpstream(t, nil, []string{awkwardText(200000), " and", " done."})
	// No reader here may be dropped for lagging on a busy machine (the
	// OpenAI stream cannot resume): this test is about the bound.
	g := startGateway(t, hugeProfiles(up.URL), func(_ *Config, e *actors.Config) { e.Hub.MaxLag = 1 << 20 })

	// Live, from the start: POST with stream.
	resp, err := http.Post(g.URL+"/v1/runs", "application/json", strings.NewReader(`{"query":"Explain everything.","stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	id := resp.Header.Get("X-QLC-Run-Id")
	live := newTranscript(t, 1)
	maxSSE, parts := 0, 0
	var resumeAt []string // ids of parts that are not a delta's last
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		maxSSE = max(maxSSE, ev.Size)
		if _, ok := ev.Data["part"]; ok {
			parts++
			if strings.Contains(ev.ID, ":") {
				resumeAt = append(resumeAt, ev.ID)
			}
		}
		if _, ok := ev.Data["answer"]; ok {
			t.Fatalf("run_completed carries the answer")
		}
		live.add(ev.Data)
		return true
	})
	resp.Body.Close()
	if live.terminal == nil || live.terminal["type"] != "run_completed" {
		t.Fatalf("live stream ended without run_completed: %d events", len(live.types))
	}
	v := runResource(t, g.URL, id)
	checkOutputs(t, "live SSE", live, v)
	if float64(len(v.Answer)) != live.terminal["answer_bytes"] || v.Answer != live.texts["curator"].String() {
		t.Errorf("answer_bytes %v, the answer is %d bytes", live.terminal["answer_bytes"], len(v.Answer))
	}
	if parts < 20 || len(resumeAt) == 0 {
		t.Fatalf("the curator's one %d-byte delta came in %d parts", len(v.Stages[3].Output), parts)
	}

	// After the end, from seq 1: everything coalesced as far as the bound allows.
	resp, err = http.Get(g.URL + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	replay := newTranscript(t, 1)
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		maxSSE = max(maxSSE, ev.Size)
		replay.add(ev.Data)
		return true
	})
	resp.Body.Close()
	checkOutputs(t, "SSE replay", replay, v)
	if len(replay.types) >= len(live.types)/2 && len(live.types) > 1000 {
		t.Logf("replay: %d events, live %d (coalescing)", len(replay.types), len(live.types))
	}

	// Resumed inside the split delta with Last-Event-ID "seq:bytes": the
	// rest of that delta, then the rest of the run, nothing twice.
	mid := resumeAt[len(resumeAt)/2]
	seq, skip, ok := parseResume(mid)
	if !ok {
		t.Fatalf("part id %q", mid)
	}
	req, _ := http.NewRequest("GET", g.URL+"/v1/runs/"+id+"/events", nil)
	req.Header.Set("Last-Event-ID", mid)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resumed := newTranscript(t, seq)
	resumed.partEnd = float64(skip)
	readSSE(t, resp.Body, func(ev sseEvent) bool { resumed.add(ev.Data); return true })
	resp.Body.Close()
	// The curator's output is its one long delta and two short ones.
	if got, want := resumed.texts["curator"].String(), v.Stages[3].Output[skip:]; got != want {
		t.Errorf("resumed at %s: read %d bytes of the curator, want the %d after byte %d", mid, len(got), len(want), skip)
	}

	// WebSocket from seq 1, with the client's default read limit.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.URL, "http")+"/v1/runs/"+id+"/ws?from_seq=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ws := newTranscript(t, 1)
	maxWS := 0
	for ws.terminal == nil {
		_, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("WebSocket read after %d messages: %v", len(ws.types), err)
		}
		maxWS = max(maxWS, len(msg))
		var d map[string]any
		if err := json.Unmarshal(msg, &d); err != nil {
			t.Fatal(err)
		}
		ws.add(d)
	}
	checkOutputs(t, "WebSocket", ws, v)

	// An OpenAI streaming client: the final stage's text as chunks.
	resp, err = http.Post(g.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"qlc-huge","stream":true,"messages":[{"role":"user","content":"Explain everything."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var content strings.Builder
	maxChunk, done := 0, false
	sc := bufio.NewScanner(resp.Body) // default 64 KiB line limit
	for sc.Scan() {
		line := sc.Bytes()
		maxChunk = max(maxChunk, len(line)+2)
		data, ok := strings.CutPrefix(string(line), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			break
		}
		var ch struct {
			Choices []struct {
				Delta struct{ Content string }
			}
			Error *struct{ Message string }
		}
		if err := json.Unmarshal([]byte(data), &ch); err != nil || ch.Error != nil {
			t.Fatalf("chunk %.200q: %v %v", data, err, ch.Error)
		}
		for _, c := range ch.Choices {
			content.WriteString(c.Delta.Content)
		}
	}
	resp.Body.Close()
	if err := sc.Err(); err != nil || !done {
		t.Fatalf("OpenAI stream: %v, [DONE] seen: %v", err, done)
	}
	if content.String() != v.Stages[3].Output {
		t.Errorf("OpenAI stream: %d bytes of content, the curator's output is %d", content.Len(), len(v.Stages[3].Output))
	}

	for name, n := range map[string]int{"SSE": maxSSE, "WebSocket": maxWS, "OpenAI chunks": maxChunk} {
		if n > DefaultMaxEventBytes {
			t.Errorf("%s: an event of %d bytes, over %d", name, n, DefaultMaxEventBytes)
		}
		t.Logf("largest %s event: %d bytes (curator output %d bytes in one delta, generator %d bytes)", name, n, len(v.Stages[3].Output), len(v.Stages[0].Output))
	}
}

// readWhole reads a run's event stream from seq from to its end, as a
// client that follows the API does: after a lagged notice it reconnects
// with the notice's next_seq, which must be past where it last connected
// (every connection makes progress). It returns the transcript and how many
// times it was dropped. started, if not nil, is called once the first
// events arrived.
func readWhole(t *testing.T, base, id string, from uint64, started func()) (*transcript, int) {
	t.Helper()
	tr := newTranscript(t, from)
	drops := 0
	for tr.terminal == nil {
		at := tr.next
		resp, err := http.Get(base + "/v1/runs/" + id + "/events?from_seq=" + strconv.FormatUint(at, 10))
		if err != nil {
			t.Fatal(err)
		}
		var lagged uint64
		readSSE(t, resp.Body, func(ev sseEvent) bool {
			if ev.Event == evLagged {
				lagged = uint64(ev.Data["next_seq"].(float64))
				return false
			}
			tr.add(ev.Data)
			if started != nil {
				started()
				started = nil
			}
			return true
		})
		resp.Body.Close()
		switch {
		case lagged != 0:
			drops++
			if lagged <= at || lagged != tr.next {
				t.Fatalf("connected at seq %d, dropped with next_seq %d after reading to %d: no progress", at, lagged, tr.next-1)
			}
		case tr.terminal == nil:
			t.Fatalf("the stream from seq %d ended at %d without the run's end", at, tr.next-1)
		}
	}
	return tr, drops
}

// longProfiles: "long" logs 120 000 token deltas: three zero-latency stages
// of 30 000 tokens, then a curator from an upstream that holds its answer
// (30 000 deltas) until the test lets it go, so the run is live for as long
// as the test needs.
func longProfiles(upstreamURL string) string {
	return fmt.Sprintf(`
default_profile: long
providers:
  bulk: {kind: sim, sim: {output_tokens: 30000, truncate_at_max_tokens: true}}
  up:   {kind: openai, base_url: %s/v1}
profiles:
  long:
    provider: bulk
    stages:
      generator: {model: g, max_tokens: 30000}
      refiner:   {model: r, max_tokens: 30000}
      validator: {model: v, max_tokens: 30000}
      curator:   {provider: up, model: c, max_tokens: 30000}
`, upstreamURL)
}

// TestReplayIsNeverRefused: a 120 000-event run (more than MaxLag, 65 536)
// is read whole from seq 1 while it is live — the reader joins 90 000
// events behind, and the last stage streams at full speed as it catches
// up — and after it finished, from seq 1 and from the middle, over SSE and
// WebSocket. A reader is dropped as lagged only if it cannot keep up with
// the live run, and then resumes with progress.
func TestReplayIsNeverRefused(t *testing.T) {
	hold := make(chan struct{})
	deltas := make([]string, 30000)
	for i := range deltas {
		deltas[i] = " c" + strconv.Itoa(i)
	}
	up := startUpstream(t, hold, deltas)
	g := startGateway(t, longProfiles(up.URL), nil)
	if got := actors.DefaultHubConfig().MaxLag; got >= 90000 {
		t.Fatalf("MaxLag %d: the test needs a log longer than it", got)
	}
	id := createRun(t, g.URL, "long", "q")
	select {
	case <-up.arrived: // the curator started: three stages are in the log
	case <-time.After(2 * time.Minute):
		t.Fatal("the curator never asked the upstream")
	}
	h, err := g.Engine.Hub(id)
	if err != nil {
		t.Fatal(err)
	}
	// The hub may still be receiving the first stages' last events.
	waitUntil(t, "90 000 events in the hub", func() bool { return h.LastSeq() >= 90000 })
	if h.Done() {
		t.Fatal("the run ended: the test needs it live")
	}

	// Live, from seq 1, 90 000 events behind. Once it reads, the curator
	// streams its 30 000 deltas as fast as it can.
	liveTr, drops := readWhole(t, g.URL, id, 1, func() { close(hold) })
	v := runResource(t, g.URL, id)
	if v.Status != "completed" || v.LastSeq < 120000 {
		t.Fatalf("run %s, last seq %d", v.Status, v.LastSeq)
	}
	checkOutputs(t, "live reader", liveTr, v)
	t.Logf("live reader: %d events in %d wire events, dropped %d times (each resumed with progress)", v.LastSeq, len(liveTr.types), drops)

	// Finished: whole from seq 1 and from the middle, never dropped.
	for _, from := range []uint64{1, v.LastSeq / 2} {
		tr, drops := readWhole(t, g.URL, id, from, nil)
		if drops != 0 {
			t.Errorf("a reader of the finished run from seq %d was dropped %d times", from, drops)
		}
		if from == 1 {
			checkOutputs(t, "replay from seq 1", tr, v)
		} else if tr.next != v.LastSeq+1 {
			t.Errorf("replay from %d ended at %d", from, tr.next-1)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(g.URL, "http")+"/v1/runs/"+id+"/ws?from_seq=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	ws := newTranscript(t, 1)
	for ws.terminal == nil {
		_, msg, err := c.Read(ctx)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) && ce.Code == wsLaggedCode {
				t.Fatalf("the WebSocket reader of the finished run was dropped: %v", ce)
			}
			t.Fatalf("WebSocket read: %v", err)
		}
		var d map[string]any
		if err := json.Unmarshal(msg, &d); err != nil {
			t.Fatal(err)
		}
		ws.add(d)
	}
	checkOutputs(t, "WebSocket replay", ws, v)
}

// cuttingProxy stands between a browser and a gateway: it serves a blank
// page, passes other requests on, and copies event streams frame by frame,
// telling the browser to reconnect after 20 ms ("retry:") and cutting the
// first cuts streams that get three parts into a split delta (not counting
// its last part) in the middle of the next frame. It records each stream's
// Last-Event-ID and the largest frame it passed.
type cuttingProxy struct {
	URL     string
	cuts    int
	mu      sync.Mutex // guards the fields below
	cut     int        // streams cut so far
	resumes []string   // Last-Event-ID of each stream request
	maxSize int
}

func startCuttingProxy(t *testing.T, backend string, cuts int) *cuttingProxy {
	t.Helper()
	target, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &cuttingProxy{cuts: cuts}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(target) }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/blank":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = io.WriteString(w, "<!doctype html><title>blank</title>")
		case r.URL.Path == "/favicon.ico":
			w.WriteHeader(http.StatusNoContent)
		case strings.HasSuffix(r.URL.Path, "/events"):
			p.stream(w, r, backend)
		default:
			rp.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	p.URL = srv.URL
	return p
}

func (p *cuttingProxy) stream(w http.ResponseWriter, r *http.Request, backend string) {
	p.mu.Lock()
	p.resumes = append(p.resumes, r.Header.Get("Last-Event-ID"))
	p.mu.Unlock()
	req, _ := http.NewRequestWithContext(r.Context(), "GET", backend+r.URL.RequestURI(), nil)
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		req.Header.Set("Last-Event-ID", v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_, _ = io.WriteString(w, "retry: 20\n\n")
	_ = rc.Flush()
	br := bufio.NewReader(resp.Body)
	var frame []byte
	parts := 0
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			return
		}
		frame = append(frame, line...)
		if len(line) != 1 {
			continue
		}
		p.mu.Lock()
		p.maxSize = max(p.maxSize, len(frame))
		cut := parts == 3 && p.cut < p.cuts
		if cut {
			p.cut++
		}
		p.mu.Unlock()
		if cut {
			_, _ = w.Write(frame[:len(frame)/2]) // half a frame, then a clean end
			return
		}
		if _, err := w.Write(frame); err != nil || rc.Flush() != nil {
			return
		}
		if id, ok := bytes.CutPrefix(frame, []byte("id: ")); ok && bytes.Contains(id[:bytes.IndexByte(id, '\n')], []byte(":")) {
			parts++
		}
		frame = frame[:0]
	}
}

// esResult is what the page's EventSource read.
type esResult struct {
	Texts    map[string]string `json:"texts"`
	MaxBytes int               `json:"maxBytes"`
	Events   int               `json:"events"`
	End      string            `json:"end"`
	Errors   int               `json:"errors"`
	Lagged   int               `json:"lagged"`
}

// esReadJS reads a run's events with the browser's EventSource into
// window[name]; EventSource reconnects by itself with the last id it saw,
// after a cut stream as after a lagged notice (which has no id: the last
// id seen is where the reader was dropped).
const esReadJS = `((url, name) => {
  const texts = {};
  const enc = new TextEncoder();
  const res = { texts, maxBytes: 0, events: 0, end: '', errors: 0, lagged: 0 };
  const es = new EventSource(url);
  const on = (e) => {
    res.maxBytes = Math.max(res.maxBytes, enc.encode(e.data).length);
    res.events++;
    const d = JSON.parse(e.data);
    if (d.type === 'stage_started' || d.type === 'stage_restarted') texts[d.stage] = '';
    if (d.type === 'token_delta') texts[d.stage] = (texts[d.stage] || '') + d.text;
    if (d.type === 'lagged') res.lagged++;
    if (['run_completed', 'run_failed', 'run_cancelled'].includes(d.type)) {
      es.close();
      res.end = d.type;
      window[name] = res;
    }
  };
  for (const t of ['stage_started', 'token_delta', 'stage_completed', 'stage_restarted', 'run_completed', 'run_failed', 'run_cancelled', 'lagged']) {
    es.addEventListener(t, on);
  }
  es.onerror = () => { res.errors++; };
  return true;
})`

// TestEventSourceReadsHugeStages: Chromium's EventSource reads a run with a
// 200 000-token stage of small deltas and one that is a single long delta,
// live and after the end, through a proxy that cuts its streams in the
// middle of the split delta: EventSource resumes with the part's id
// ("seq:bytes"), and every stage's text is the run's output, byte for byte;
// no event's data passes the bound. (The live reader may be dropped as
// lagged on a busy machine; EventSource resumes by itself.)
func TestEventSourceReadsHugeStages(t *testing.T) {
	up := startUpstream(t, nil, []string{awkwardText(200000), " and", " done."})
	g := startGateway(t, hugeProfiles(up.URL), nil)
	px := startCuttingProxy(t, g.URL, 4)
	b := newUIBrowser(t)
	b.do(t, "open a page of the proxy's origin", chromedp.Navigate(px.URL+"/blank"))

	id := createRun(t, g.URL, "huge", "Explain everything.")
	uiEval[bool](t, b, esReadJS+`('/v1/runs/`+id+`/events', 'live')`)
	b.waitFor(t, "the live EventSource to read the run", `window.live !== undefined`)
	uiEval[bool](t, b, esReadJS+`('/v1/runs/`+id+`/events', 'replay')`)
	b.waitFor(t, "the EventSource to read the finished run", `window.replay !== undefined`)

	v := runResource(t, g.URL, id)
	for _, name := range []string{"live", "replay"} {
		r := uiEval[esResult](t, b, `window.`+name)
		if r.End != "run_completed" {
			t.Fatalf("%s: the EventSource ended with %q", name, r.End)
		}
		for _, s := range v.Stages {
			if got := r.Texts[s.Stage]; got != s.Output {
				t.Errorf("%s: %s: EventSource read %d bytes, the output is %d", name, s.Stage, len(got), len(s.Output))
			}
		}
		if r.MaxBytes > DefaultMaxEventBytes {
			t.Errorf("%s: an event's data was %d bytes", name, r.MaxBytes)
		}
		if name == "replay" && r.Lagged > 0 {
			t.Errorf("the reader of the finished run was dropped %d times", r.Lagged)
		}
		t.Logf("%s: %d events, largest data %d bytes, %d reconnects, %d lagged notices", name, r.Events, r.MaxBytes, r.Errors, r.Lagged)
	}
	px.mu.Lock()
	defer px.mu.Unlock()
	inside := 0
	for _, id := range px.resumes {
		if strings.Contains(id, ":") {
			inside++
		}
	}
	if inside < px.cuts {
		t.Errorf("EventSource resumed inside a split delta %d times, the proxy cut %d streams there: Last-Event-IDs %q", inside, px.cuts, px.resumes)
	}
	if px.maxSize > DefaultMaxEventBytes {
		t.Errorf("an SSE frame of %d bytes", px.maxSize)
	}
	t.Logf("largest SSE frame through the proxy: %d bytes; Last-Event-IDs: %q", px.maxSize, px.resumes)
	b.noProblems(t, "/events") // the browser logs the streams the proxy cut
}

// TestConfiguredEventBound: MaxEventBytes below the minimum is refused; a
// gateway configured with a small bound keeps every event within it.
func TestConfiguredEventBound(t *testing.T) {
	if _, err := New(Config{Engine: &actors.Engine{}, MaxEventBytes: MinMaxEventBytes - 1}); err == nil || !strings.Contains(err.Error(), "MaxEventBytes") {
		t.Fatalf("MaxEventBytes %d: %v, want it refused", MinMaxEventBytes-1, err)
	}
	up := startUpstream(t, nil, []string{awkwardText(20000)})
	g := startGateway(t, hugeProfiles(up.URL), func(c *Config, _ *actors.Config) { c.MaxEventBytes = MinMaxEventBytes })
	id := createRun(t, g.URL, "huge", "q")
	var v runView
	waitStatus(t, g.URL, id, "completed", &v)
	resp, err := http.Get(g.URL + "/v1/runs/" + id + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tr := newTranscript(t, 1)
	biggest := 0
	readSSE(t, resp.Body, func(ev sseEvent) bool {
		biggest = max(biggest, ev.Size)
		tr.add(ev.Data)
		return true
	})
	if biggest > MinMaxEventBytes {
		t.Errorf("an event of %d bytes under a bound of %d", biggest, MinMaxEventBytes)
	}
	checkOutputs(t, "SSE", tr, v)
}
