package gateway

// Browser tests of the web UI (gateway/web), in real headless Chromium driven
// with chromedp against a real gateway (newTestGateway). They need Debian's
// chromium (apt-get install -y chromium; .ci/run installs it). A machine
// without it FAILS these tests on purpose: the UI is part of the product.
//
// Set QLC_CHROMIUM to use another browser binary, and QLC_UI_SCREENSHOTS to a
// directory to keep screenshots of the pages the tests see.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
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

// uiStages are the stage names the UI marks with data-stage, in order.
var uiStages = []string{"generator", "refiner", "validator", "curator"}

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
// violation, a failed request, a bug in app.js).
func (b *uiBrowser) noProblems(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, p := range b.problems {
		t.Errorf("page reported: %s", p)
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
	ID      string `json:"id"`
	Status  string `json:"status"`
	LastSeq int64  `json:"last_seq"`
	Answer  string `json:"answer"`
	Stages  []struct {
		Stage  string `json:"stage"`
		Status string `json:"status"`
		Model  string `json:"model"`
		Output string `json:"output"`
		Usage  struct {
			CompletionTokens int64 `json:"completion_tokens"`
		} `json:"usage"`
	} `json:"stages"`
}

func getUIRun(t *testing.T, base, id string) uiRun {
	t.Helper()
	resp, err := http.Get(base + "/v1/runs/" + id)
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
	base := newTestGateway(t, uiTestConfig)
	b := newUIBrowser(t)
	b.startRun(t, base, "quick", "Why is the sky blue? Explain <b>briefly</b> & clearly.")

	b.waitFor(t, "the run to end", `['completed','failed','cancelled'].includes(document.querySelector('#run-status').dataset.status)`)
	st := b.state(t)
	b.screenshot(t, "completed")
	if st.RunStatus != "completed" {
		t.Fatalf("run status on the page = %q, want completed; page: %s", st.RunStatus, b.stateJSON(t))
	}
	run := getUIRun(t, base, st.RunID)
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
	b.noProblems(t)
}

// TestUICancelStopsStream starts a slow run, cancels it from the page once the
// generator is streaming, and checks that the page and the API agree that it
// was cancelled and that no more text arrives.
func TestUICancelStopsStream(t *testing.T) {
	base := newTestGateway(t, uiTestConfig)
	b := newUIBrowser(t)
	b.startRun(t, base, "slow", "Write a long essay about consensus algorithms.")

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

	run := getUIRun(t, base, st.RunID)
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
		if now := getUIRun(t, base, st.RunID); now.LastSeq != run.LastSeq || now.Stages[0].Output != run.Stages[0].Output {
			t.Fatalf("the run kept going after the cancel: last_seq %d -> %d", run.LastSeq, now.LastSeq)
		}
	}
	if after := b.state(t); after.Stages[0].Text != st.Stages[0].Text {
		t.Errorf("generator text on the page grew after the cancel: %d -> %d chars", len(st.Stages[0].Text), len(after.Stages[0].Text))
	}
	b.noProblems(t)
}

// TestUIStreamLogic feeds the page's event handler hand-made event sequences
// (duplicates, coalesced deltas overlapping what was shown, restarts) and
// checks its markdown renderer against hostile input. These cases are hard to
// provoke from a real gateway on demand but happen after reconnects.
func TestUIStreamLogic(t *testing.T) {
	base := newTestGateway(t, uiTestConfig)
	b := newUIBrowser(t)
	b.do(t, "load the UI", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.ID("query")))
	b.waitFor(t, "the page script", `window.QLC !== undefined && document.documentElement.dataset.ready === 'true'`)

	type feedResult struct {
		LastSeq int64 `json:"lastSeq"`
		Resyncs int   `json:"resyncs"`
		Status  string
	}
	feed := func(events string) feedResult {
		t.Helper()
		return uiEval[feedResult](t, b, `QLC.feed(`+events+`)`)
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
		  {seq:8, type:'stage_completed', stage:'generator', model:'m1', output:'Hello wörld!😀', usage:{completion_tokens:6}, ttft_ms:1, duration_ms:5}
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
