package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qlc-project/qlc/actors"
)

// The book follows a member alive → suspect → alive → dead, another
// draining → left, counts a load change as no change, and keeps its lists
// bounded.
func TestMemberBookStates(t *testing.T) {
	b := newMemberBook()
	t0 := time.Unix(1000, 0)
	a := ConsoleMember{Name: "node-a", RemoteAddr: "10.0.0.1:1", Kinds: []string{"coordinator"}}
	g := ConsoleMember{Name: "gw", RemoteAddr: "10.0.0.9:1", Kinds: []string{"gateway"}}
	state := func() map[string]string {
		m := map[string]string{}
		for _, v := range b.views() {
			m[v.Name] = v.State
		}
		return m
	}
	step := func(at time.Duration, ms []ConsoleMember, sus []string, wantChange bool, want map[string]string) {
		t.Helper()
		if got := b.update(ms, sus, t0.Add(at)); got != wantChange {
			t.Fatalf("at %v: changed %v, want %v", at, got, wantChange)
		}
		if got := state(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("at %v: states %v, want %v", at, got, want)
		}
	}
	step(0, []ConsoleMember{a, g}, nil, true, map[string]string{"node-a": "alive", "gw": "alive"})
	a2 := a
	a2.Load = 7
	step(time.Second, []ConsoleMember{a2, g}, nil, false, map[string]string{"node-a": "alive", "gw": "alive"})
	step(2*time.Second, []ConsoleMember{a, g}, []string{"node-a"}, true, map[string]string{"node-a": "suspect", "gw": "alive"})
	step(3*time.Second, []ConsoleMember{a, g}, nil, true, map[string]string{"node-a": "alive", "gw": "alive"})
	step(4*time.Second, []ConsoleMember{g}, nil, true, map[string]string{"node-a": "dead", "gw": "alive"})
	d := ConsoleMember{Name: "node-d", RemoteAddr: "10.0.0.4:1", Draining: true}
	step(5*time.Second, []ConsoleMember{g, d}, nil, true, map[string]string{"node-a": "dead", "node-d": "draining", "gw": "alive"})
	step(6*time.Second, []ConsoleMember{g}, nil, true, map[string]string{"node-a": "dead", "node-d": "left", "gw": "alive"})
	var trans []string
	for _, c := range b.changes {
		trans = append(trans, c.Member+":"+c.From+">"+c.To)
	}
	want := "node-a:>alive gw:>alive node-a:alive>suspect node-a:suspect>alive node-a:alive>dead node-d:>draining node-d:draining>left"
	if strings.Join(trans, " ") != want {
		t.Fatalf("changes\n %s\nwant\n %s", strings.Join(trans, " "), want)
	}
	// The gone are forgotten after consoleKeepGone, and bounded before.
	step(6*time.Second+consoleKeepGone+time.Second, []ConsoleMember{g}, nil, false, map[string]string{"gw": "alive"})
	for i := 0; i < 3*consoleMaxGone; i++ {
		m := ConsoleMember{Name: fmt.Sprintf("n%03d", i)}
		now := t0.Add(time.Hour + time.Duration(i)*time.Second)
		b.update([]ConsoleMember{g, m}, nil, now)
		b.update([]ConsoleMember{g}, nil, now)
	}
	if len(b.gone) != consoleMaxGone || len(b.changes) != consoleMaxChanges {
		t.Fatalf("gone %d (max %d), changes %d (max %d)", len(b.gone), consoleMaxGone, len(b.changes), consoleMaxChanges)
	}
	if v := b.views(); v[1].Name != fmt.Sprintf("n%03d", 3*consoleMaxGone-1) {
		t.Fatalf("the newest gone is not listed first after the current: %s", v[1].Name)
	}
}

// A snapshot too large for the bound loses its runs' steps first.
func TestEncodeSnapshotBound(t *testing.T) {
	snap := &consoleSnapshot{}
	for i := 0; i < consoleMaxRuns; i++ {
		r := consoleRunView{ID: fmt.Sprintf("run_%d", i)}
		for j := 0; j < 200; j++ {
			r.Steps = append(r.Steps, consoleStepView{ID: strings.Repeat("s", 40), Title: strings.Repeat("t", 40)})
		}
		snap.Runs = append(snap.Runs, r)
	}
	b := encodeSnapshot(snap)
	if len(b) > consoleMaxSnapshot {
		t.Fatalf("%d bytes, over %d", len(b), consoleMaxSnapshot)
	}
	var back consoleSnapshot
	if err := json.Unmarshal(b, &back); err != nil || len(back.Runs) != consoleMaxRuns || back.Runs[0].Steps != nil {
		t.Fatalf("runs %d, steps of the first %d, err %v", len(back.Runs), len(back.Runs[0].Steps), err)
	}
}

// fakeCluster is a ConsoleCluster the test changes.
type fakeCluster struct {
	mu       sync.Mutex
	members  []ConsoleMember
	suspects []string
	changed  chan struct{}
}

func (f *fakeCluster) Members() []ConsoleMember {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ConsoleMember(nil), f.members...)
}

func (f *fakeCluster) Suspects() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.suspects...)
}

func (f *fakeCluster) Changed() <-chan struct{} { return f.changed }

func (f *fakeCluster) LimiterHost(tenant string) (string, string, bool) {
	return "10.0.0.1:1", "v", true
}

func (f *fakeCluster) set(ms []ConsoleMember, sus []string) {
	f.mu.Lock()
	f.members, f.suspects = ms, sus
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// snapshots reads the console's SSE stream, sending each snapshot on.
func snapshots(t *testing.T, base string) (<-chan consoleSnapshot, func()) {
	t.Helper()
	resp, err := http.Get(base + "/v1/admin/console/events")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
		t.Fatalf("HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan consoleSnapshot, 100)
	go func() {
		defer close(out)
		r := bufio.NewReaderSize(resp.Body, 1<<16)
		event := ""
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				event = line[7:]
			case strings.HasPrefix(line, "data: ") && event == "snapshot":
				var s consoleSnapshot
				if json.Unmarshal([]byte(line[6:]), &s) == nil {
					out <- s
				}
			}
		}
	}()
	return out, func() { resp.Body.Close() }
}

// waitSnapshot reads snapshots until one satisfies ok.
func waitSnapshot(t *testing.T, ch <-chan consoleSnapshot, what string, ok func(consoleSnapshot) bool) consoleSnapshot {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case s, open := <-ch:
			if !open {
				t.Fatalf("stream ended waiting for %s", what)
			}
			if ok(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("no snapshot with %s", what)
		}
	}
}

func stateOf(s consoleSnapshot, name string) string {
	for _, m := range s.Members {
		if m.Name == name {
			return m.State
		}
	}
	return ""
}

// Over HTTP: the stream's snapshots follow the membership (pushed on the
// change signal), list this process as a node and the runs with their
// steps; a run's details have its timeline; the page is served with its
// content security policy.
func TestConsoleStream(t *testing.T) {
	fc := &fakeCluster{changed: make(chan struct{}, 1)}
	a := ConsoleMember{Name: "node-a", RemoteAddr: "10.0.0.1:1", Kinds: []string{actors.KindCoordinator, actors.KindTokenizer}, Features: []string{"avx2"}}
	fc.set([]ConsoleMember{a}, nil)
	gw := startGateway(t, "", func(c *Config, _ *actors.Config) { c.Console = fc })
	ch, stop := snapshots(t, gw.URL)
	defer stop()
	s := waitSnapshot(t, ch, "node-a alive and this process asked", func(s consoleSnapshot) bool {
		return stateOf(s, "node-a") == memberAlive && len(s.Nodes) == 1
	})
	if s.Nodes[0].Node != gw.Engine.Address() || len(s.TokenizerHosts) != 1 || s.TokenizerHosts[0] != "10.0.0.1:1" {
		t.Fatalf("nodes %+v, tokenizer hosts %v", s.Nodes, s.TokenizerHosts)
	}
	fc.set([]ConsoleMember{a}, []string{"node-a"})
	waitSnapshot(t, ch, "node-a suspect", func(s consoleSnapshot) bool { return stateOf(s, "node-a") == memberSuspect })
	fc.set(nil, nil)
	s = waitSnapshot(t, ch, "node-a dead", func(s consoleSnapshot) bool { return stateOf(s, "node-a") == memberDead })
	if n := len(s.Changes); n < 3 || s.Changes[n-1].To != memberDead || s.Changes[n-2].To != memberSuspect {
		t.Fatalf("changes %+v", s.Changes)
	}

	id := createRun(t, gw.URL, "slow", "why?")
	s = waitSnapshot(t, ch, "the run with its steps", func(s consoleSnapshot) bool {
		return len(s.Runs) == 1 && s.Runs[0].ID == id && len(s.Runs[0].Steps) > 0
	})
	if s.Runs[0].Status != "running" || s.Runs[0].Tenant == "" {
		t.Fatalf("run %+v", s.Runs[0])
	}
	var d struct {
		Run      runView                `json:"run"`
		Timeline []consoleTimelineEntry `json:"timeline"`
		Spans    []consoleSpan          `json:"spans"`
	}
	waitUntil(t, "a timeline with a stage started and token deltas folded", func() bool {
		if code := do(t, "GET", gw.URL+"/v1/admin/console/runs/"+id, "", &d); code != 200 {
			t.Fatalf("run details: HTTP %d", code)
		}
		return len(d.Timeline) >= 2 && d.Timeline[0].Type == evStageStarted && d.Timeline[1].Type == evTokenDelta && d.Timeline[1].Tokens > 1
	})
	if d.Run.ID != id || d.Spans == nil {
		t.Fatalf("details %+v", d.Run)
	}
	var one consoleSnapshot
	if code := do(t, "GET", gw.URL+"/v1/admin/console?fresh=1", "", &one); code != 200 || len(one.Nodes) != 1 || len(one.Runs) != 1 || len(one.Limiters) != 0 {
		t.Fatalf("one snapshot: HTTP %d, %d nodes, %d runs, %d limiters", code, len(one.Nodes), len(one.Runs), len(one.Limiters))
	}
	if code := do(t, "GET", gw.URL+"/v1/admin/console/runs/nope", "", nil); code != 404 {
		t.Fatalf("unknown run: HTTP %d", code)
	}
	for path, ctype := range map[string]string{"/console": "text/html", "/console/console.js": "text/javascript", "/console/console.css": "text/css"} {
		resp, err := http.Get(gw.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), ctype) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") || len(body) == 0 {
			t.Fatalf("%s: HTTP %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
	resp, err := http.Get(gw.URL + "/console/x.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("an unknown console file: HTTP %d", resp.StatusCode)
	}
}
