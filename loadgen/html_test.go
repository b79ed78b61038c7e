package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/qlc-project/qlc/client/clienttest"
)

// chromiumPath finds the browser as gateway's UI tests do, or fails
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
	t.Fatal("loadgen html test: no Chromium found; install it with `apt-get install -y chromium` or set QLC_CHROMIUM")
	return ""
}

// The HTML report of a real load opens in headless Chromium: every chart
// is an SVG with its series drawn (paths with length, points), the
// script runs, and the page reports no error.
func TestHTMLReportInChromium(t *testing.T) {
	g := clienttest.Start(t, "")
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "# TYPE qlc_run_slots_in_use gauge\nqlc_run_slots_in_use 2")
	}))
	defer node.Close()
	cfg := testConfig(g)
	cfg.Concurrency, cfg.Requests = 2, 6 // a few seconds: several node samples
	cfg.Mix = []MixItem{{Profile: "slowmoa", QueryWords: 3, Weight: 3}, {Name: "<script>alert(1)</script>", Profile: "instant", Weight: 1}}
	cfg.CancelProbes, cfg.CancelWithin = 0.3, 50*time.Millisecond
	cfg.Nodes = map[string]string{"node-a": node.URL}
	rep := mustRun(t, context.Background(), cfg)
	if len(rep.Nodes) != 1 || len(rep.Nodes[0].Points) < 2 {
		t.Fatalf("node samples: %+v", rep.Nodes)
	}
	path := filepath.Join(t.TempDir(), "report.html")
	if err := rep.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	page, _ := os.ReadFile(path)
	if strings.Contains(string(page), "<script>alert") || strings.Contains(string(page), "src=") || strings.Contains(string(page), "<link") {
		t.Fatal("the report is not self-contained or not escaped")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromiumPath(t)), chromedp.Headless,
		chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1400, 1000))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	var mu sync.Mutex
	var problems []string
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithListener(func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventExceptionThrown:
			p = "exception: " + ev.ExceptionDetails.Text
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				p = "console.error"
			}
		case *log.EventEntryAdded:
			if ev.Entry.Level == log.EntryLevelError {
				p = "browser log: " + ev.Entry.Text
			}
		}
		if p != "" {
			mu.Lock()
			problems = append(problems, p)
			mu.Unlock()
		}
	}))
	defer cancelTab()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[chromedp.Void](`1`)); err != nil {
		t.Fatalf("start Chromium: %v", err)
	}
	if _, err := chromedp.Call(ctx, log.Enable, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(ctx, chromedp.Navigate("file://"+path), chromedp.WaitVisible(chromedp.ID("latency"))); err != nil {
		t.Fatal(err)
	}
	type chart struct {
		ID      string  `json:"id"`
		Paths   int     `json:"paths"`
		Points  int     `json:"points"`
		Length  float64 `json:"length"`
		BoxW    float64 `json:"w"`
		Empty   bool    `json:"empty"`
		DataNOk bool    `json:"dataNOk"`
	}
	charts, err := chromedp.Run(ctx, chromedp.Evaluate[[]chart](`Array.from(document.querySelectorAll("svg.plot")).map(s => {
		const paths = Array.from(s.querySelectorAll("path.series"));
		return {id: s.id, paths: paths.length, points: s.querySelectorAll("circle.pt").length,
			length: paths.reduce((a, p) => a + p.getTotalLength(), 0),
			w: paths.length ? paths[0].getBBox().width : 0, empty: !!s.querySelector("text.empty"),
			dataNOk: paths.every(p => +p.dataset.n > 0)};
	})`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"latency-cdf": true, "token-cdf": true, "tokens-time": true, "runs-time": true, "nodes-time": true}
	for _, c := range charts {
		if !want[c.ID] {
			continue
		}
		delete(want, c.ID)
		if c.Empty || c.Paths == 0 || c.Points == 0 || c.Length <= 0 || c.BoxW <= 0 || !c.DataNOk {
			t.Errorf("chart %s not drawn: %+v", c.ID, c)
		}
	}
	if len(want) > 0 {
		t.Errorf("charts missing: %v (have %+v)", want, charts)
	}
	n, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.points + "/" + document.querySelectorAll("circle.pt").length`))
	if err != nil {
		t.Fatal(err)
	}
	if a, b, _ := strings.Cut(n, "/"); a != b || a == "0" {
		t.Errorf("the report's script saw %s points", n)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("page reported: %s", p)
	}
}
