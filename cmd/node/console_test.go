package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath finds the browser (QLC_CHROMIUM wins), or fails the test
// saying how to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("QLC_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "/usr/lib/chromium/chromium", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("console test: no Chromium found; install it with `apt-get install -y chromium` or set QLC_CHROMIUM")
	return ""
}

// consoleSeen is one member state change as the page drew it
// (window.qlcConsole.seen): at is the page's Date.now().
type consoleSeen struct {
	Member string  `json:"member"`
	Remote string  `json:"remote"`
	State  string  `json:"state"`
	At     float64 `json:"at"`
}

// gatewayLogTime finds when the gateway's own membership declared member
// dead: its log line "cluster: member left or declared dead" (the
// gateway's log is the test's gateway.log, in one of its temp dirs).
func gatewayLogTime(t *testing.T, member string) (time.Time, bool) {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(filepath.Dir(t.TempDir()), "*", "gateway.log"))
	for _, p := range logs {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l struct {
				Time   time.Time `json:"time"`
				Msg    string    `json:"msg"`
				Member string    `json:"member"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.Msg == "cluster: member left or declared dead" && l.Member == member {
				f.Close()
				return l.Time, true
			}
		}
		f.Close()
	}
	return time.Time{}, false
}

// The cluster console in Chromium against three node processes and a
// gateway: it lists the three nodes alive with their kinds, a run in
// flight with its steps; a finished run's timeline and trace waterfall
// (spans from the gateway and a node, kept in their in-process span
// stores: no collector); and when a node is killed it shows the node
// suspect, then dead. The lag between the gateway's own declaration and
// the page drawing it is logged (BENCHMARKS.md); the bound asserted is
// loose.
func TestConsoleInChromium(t *testing.T) {
	t.Setenv("QLC_TRACE_STORE", "4096") // the processes keep their spans for the waterfall
	c := startMemberCluster(t, 3)
	for _, path := range []string{"/v1/admin/console", "/v1/admin/console/events"} {
		resp, err := http.Get(c.gw + path) // the tenant's key (withKey)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("%s with a tenant key: HTTP %d, want 403", path, resp.StatusCode)
		}
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	waitFor := func(what, predicate string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
			chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(60*time.Second))); err != nil {
			page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('main').innerText`))
			t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, page)
		}
	}

	do("open the console and give the admin key",
		chromedp.Navigate(c.gw+"/console"), chromedp.WaitVisible(chromedp.ID("key")),
		chromedp.SendKeys(chromedp.ID("key"), testAdminKey), chromedp.Click(chromedp.ID("connect")))
	waitFor("three nodes alive", `[...document.querySelectorAll('#members tbody tr[data-state="alive"]')].filter(r => r.textContent.includes('coordinator')).length === 3`)
	waitFor("each node asked", `document.querySelectorAll('#nodes tbody tr').length === 4`)

	code, v := postRun(t, c.gw, "slow")
	if code != 201 {
		t.Fatalf("POST slow: %d %v", code, v)
	}
	slow := v["id"].(string)
	waitFor("the slow run in flight with its steps", `(() => { const r = document.querySelector('#runs tbody tr[data-run="`+slow+`"]');
		return r && r.textContent.includes('running') && r.querySelectorAll('td')[5].querySelectorAll('.chip').length >= 1 })()`)
	waitFor("the slow run hosted on a node", `[...document.querySelectorAll('#nodes tbody tr')].some(r => r.textContent.includes('`+slow+`'))`)

	code, v = postRun(t, c.gw, "quick")
	if code != 201 {
		t.Fatalf("POST quick: %d %v", code, v)
	}
	quick := v["id"].(string)
	if last := streamEvents(t, c.gw, quick, nil); last["type"] != "run_completed" {
		t.Fatalf("the quick run ended with %v", last)
	}
	waitFor("the quick run listed as completed", `(() => { const r = document.querySelector('#runs tbody tr[data-run="`+quick+`"]'); return r && r.textContent.includes('completed') })()`)
	do("open the quick run", chromedp.Click(chromedp.CSS(`#runs tbody tr[data-run="`+quick+`"]`)))
	waitFor("its timeline", `document.querySelectorAll('#timeline tbody tr[data-type="run_completed"]').length === 1 &&
		document.querySelectorAll('#timeline tbody tr[data-type="stage_started"]').length === 4`)
	waitFor("its waterfall with spans from the gateway and a node", `(() => {
		const rows = [...document.querySelectorAll('#waterfall .wf-row')];
		return new Set(rows.map(r => r.dataset.instance)).size >= 2 && rows.some(r => r.dataset.service === 'qlc-gateway') &&
			rows.some(r => r.dataset.service === 'qlc-node') && rows.some(r => r.textContent.startsWith('qlc.run'))
	})()`)
	spans, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById('spancount').textContent`))
	t.Logf("waterfall: %s", spans)
	screenshot := func(name string) {
		if dir := os.Getenv("QLC_UI_SCREENSHOTS"); dir != "" {
			if buf, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
				_ = os.WriteFile(filepath.Join(dir, "console-"+name+".png"), buf, 0o644)
			}
		}
	}
	screenshot("run")

	// Kill a node that is not the gossip seed.
	victim := c.nodes[2]
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitFor("the killed node dead", `window.qlcConsole.seen.some(s => s.remote === '`+victim.act+`' && s.state === 'dead')`)
	screenshot("dead")
	waitFor("the dead node gone from the nodes and limiter owners", `![...document.querySelectorAll('#nodes tbody tr')].some(r => r.dataset.node === '`+victim.act+`') &&
		![...document.querySelectorAll('#limiters tbody td')].some(td => td.textContent === '`+victim.act+`')`)
	seen, err := chromedp.Run(ctx, chromedp.Evaluate[[]consoleSeen](`window.qlcConsole.seen.filter(s => s.remote === '`+victim.act+`')`))
	if err != nil {
		t.Fatal(err)
	}
	var states []string
	var suspectAt, deadAt time.Time
	for _, s := range seen {
		states = append(states, s.State)
		at := time.UnixMilli(int64(s.At))
		switch s.State {
		case "suspect":
			suspectAt = at
		case "dead":
			deadAt = at
		}
	}
	if got := strings.Join(states, " "); got != "alive suspect dead" {
		t.Errorf("the page showed the killed node %q, want alive suspect dead", got)
	}
	member := seen[0].Member
	declared, ok := gatewayLogTime(t, member)
	if !ok {
		t.Fatalf("the gateway's log does not say %s was declared dead", member)
	}
	lag := deadAt.Sub(declared)
	t.Logf("console lag: killed → suspect on the page %v, → dead on the page %v; the gateway declared it dead %v after the kill; page lag behind the gateway's declaration: %v",
		suspectAt.Sub(killed).Round(time.Millisecond), deadAt.Sub(killed).Round(time.Millisecond),
		declared.Sub(killed).Round(time.Millisecond), lag.Round(time.Millisecond))
	if lag > 5*time.Second {
		t.Errorf("the page showed the node dead %v after the gateway declared it (bound 5 s)", lag)
	}
}
