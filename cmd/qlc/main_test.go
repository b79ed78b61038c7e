package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/qlc-project/qlc/client"
	"github.com/qlc-project/qlc/client/clienttest"
)

// qlcBin is the qlc binary the tests run, built once (static, as `make
// build` builds it).
var qlcBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qlc-test")
	if err != nil {
		panic(err)
	}
	qlcBin = filepath.Join(dir, "qlc")
	build := exec.Command("go", "build", "-o", qlcBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build qlc: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// command returns the qlc command with a clean environment: the gateway's
// URL and a key, and a config file of the test's own.
func command(t *testing.T, url, key string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(qlcBin, args...)
	home := t.TempDir()
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "QLC_CONFIG=" + filepath.Join(home, "config.json"),
		"QLC_URL=" + url, "QLC_API_KEY=" + key, "TERM=xterm"}
	return cmd
}

// qlc runs qlc piped and returns its stdout, stderr and exit code.
func qlc(t *testing.T, url, key, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := command(t, url, key, args...)
	var out, errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = strings.NewReader(stdin), &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func newClient(t *testing.T, url, key string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{BaseURL: url, APIKey: key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// onlyRun waits for the ledger to have exactly one run and returns it.
func onlyRun(t *testing.T, c *client.Client) *client.Run {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := c.Usage(ctx, client.UsageQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(u.Data) == 1 {
			r, err := c.GetRun(ctx, u.Data[0].RunID)
			if err != nil {
				t.Fatal(err)
			}
			return r
		}
		if len(u.Data) > 1 || time.Now().After(deadline) {
			t.Fatalf("%d runs in the ledger, want 1", len(u.Data))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func withNL(s string) string {
	if s == "" || strings.HasSuffix(s, "\n") {
		return s
	}
	return s + "\n"
}

func TestAskPipedPrintsTheAnswer(t *testing.T) {
	for _, profile := range []string{"instant", "moa"} {
		t.Run(profile, func(t *testing.T) {
			g := clienttest.Start(t, "")
			out, errs, code := qlc(t, g.URL, g.TenantKey, "", "ask", "--profile", profile, "--seed", "3", "why", "is the sky blue?")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			run := onlyRun(t, newClient(t, g.URL, g.TenantKey))
			if run.Query != "why is the sky blue?" || run.Profile != profile || run.Answer == "" {
				t.Fatalf("run %+v", run)
			}
			if out != withNL(run.Answer) {
				t.Fatalf("stdout %q\nanswer %q", out, run.Answer)
			}
			if errs != "" {
				t.Fatalf("stderr %q", errs)
			}
		})
	}
}

// jsonEvents parses JSON lines and checks that every one is an event, that
// seqs only go forward (parts of one split delta share theirs), and folds
// them.
func jsonEvents(t *testing.T, out string) (*client.Fold, []client.Event) {
	t.Helper()
	f := client.NewFold()
	var evs []client.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	var last uint64
	for sc.Scan() {
		var ev client.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %d %q: %v", len(evs)+1, sc.Text(), err)
		}
		if ev.Seq < last || (ev.Seq == last && ev.Part == nil) {
			t.Fatalf("line %d: seq %d after %d: a duplicate or out of order", len(evs)+1, ev.Seq, last)
		}
		last = ev.Seq
		f.Add(ev)
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		t.Fatal("no events")
	}
	return f, evs
}

// sameSteps checks that the fold has every step's output as the run does.
func sameSteps(t *testing.T, f *client.Fold, run *client.Run) {
	t.Helper()
	if f.Answer() != run.Answer {
		t.Fatalf("answer from the events %q, run's %q", f.Answer(), run.Answer)
	}
	for _, s := range run.Steps {
		if st := f.Steps[s.ID]; st == nil || st.Text.String() != s.Output {
			t.Fatalf("step %s from the events differs from the run's output %q", s.ID, s.Output)
		}
	}
}

func TestAskJSONLines(t *testing.T) {
	g := clienttest.Start(t, "")
	out, errs, code := qlc(t, g.URL, g.TenantKey, "", "ask", "--json", "--profile", "moa", "what is TCP?")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	f, evs := jsonEvents(t, out)
	if evs[0].Seq != 1 || evs[0].Type != client.EventRunPlanned || evs[len(evs)-1].Type != client.EventRunCompleted {
		t.Fatalf("events %s … %s", evs[0].Type, evs[len(evs)-1].Type)
	}
	sameSteps(t, f, onlyRun(t, newClient(t, g.URL, g.TenantKey)))
}

var ansi = regexp.MustCompile(`\x1b\[[0-9;]*m`)

// runPTY runs qlc on a pseudo-terminal and returns a function that waits
// for its exit and returns what it wrote (styles removed, \r\n as \n) and
// its exit code; onOutput is called with the output so far as it grows.
func runPTY(t *testing.T, cmd *exec.Cmd, onOutput func(string) bool) (string, int) {
	t.Helper()
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 50, Cols: 120})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var mu sync.Mutex
	var buf bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		b := make([]byte, 4096)
		for {
			n, err := tty.Read(b)
			mu.Lock()
			buf.Write(b[:n])
			s := buf.String()
			mu.Unlock()
			if onOutput != nil && onOutput(clean(s)) {
				onOutput = nil
			}
			if err != nil {
				return // EIO once the process exits
			}
		}
	}()
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the pty's output did not end")
	}
	mu.Lock()
	defer mu.Unlock()
	return clean(buf.String()), code
}

func clean(s string) string {
	return strings.ReplaceAll(ansi.ReplaceAllString(s, ""), "\r\n", "\n")
}

func TestAskOnATerminal(t *testing.T) {
	g := clienttest.Start(t, "")
	cmd := command(t, g.URL, g.TenantKey, "ask", "--profile", "moa", "--thinking", "what is TCP?")
	out, code := runPTY(t, cmd, nil)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	run := onlyRun(t, newClient(t, g.URL, g.TenantKey))
	for _, want := range []string{
		"run " + run.ID,
		"moa · 4 steps: p1.1, p1.2, p1.3, aggregator",
		"▶ Proposer p1.1 · sim-medium (sim-quick)",
		"▶ Proposer p1.2 · sim-small (sim-quick)",
		"▶ Proposer p1.3 · sim-large (sim-instant)",
		"▶ Aggregator · sim-large (sim-quick) · answer\n" + withNL(run.Answer) + "  ✓ completed",
		"● completed in ",
		"4 steps",
		fmt.Sprintf("%d tokens", run.Usage.TotalTokens),
		"$0.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the terminal view lacks %q", want)
		}
	}
	// Every proposer's text is shown whole under its header.
	for _, s := range run.Steps {
		if !strings.Contains(out, withNL(s.Output)) {
			t.Errorf("step %s's output is not shown whole", s.ID)
		}
	}
	if strings.Count(out, "✓ completed") != 4 {
		t.Errorf("%d status lines, want 4", strings.Count(out, "✓ completed"))
	}
	if t.Failed() {
		t.Logf("output:\n%s", out)
	}
}

func TestTailSurvivesADroppedConnection(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	ctx := context.Background()
	for _, mode := range []string{"json", "piped"} {
		t.Run(mode, func(t *testing.T) {
			run, err := c.CreateRun(ctx, client.RunRequest{Query: "what is QUIC?", Profile: "slowmoa"})
			if err != nil {
				t.Fatal(err)
			}
			p := clienttest.NewCutProxy(t, g.URL, 1500, 2) // mid-event, mid-run, twice
			args := []string{"tail", run.ID}
			if mode == "json" {
				args = append(args, "--json")
			}
			out, errs, code := qlc(t, p.URL, g.TenantKey, "", args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			if p.Cuts.Load() != 2 {
				t.Fatalf("%d cuts, want 2", p.Cuts.Load())
			}
			full, err := c.GetRun(ctx, run.ID)
			if err != nil || full.Status != "completed" {
				t.Fatalf("run %v %v", full, err)
			}
			if mode == "piped" {
				if out != withNL(full.Answer) {
					t.Fatalf("tail printed %q\nthe answer is %q", out, full.Answer)
				}
				return
			}
			f, evs := jsonEvents(t, out)
			if evs[0].Seq != 1 || uint64(evs[len(evs)-1].Seq) != full.LastSeq || evs[len(evs)-1].Type != client.EventRunCompleted {
				t.Fatalf("events %d … %d, the run's last seq %d", evs[0].Seq, evs[len(evs)-1].Seq, full.LastSeq)
			}
			sameSteps(t, f, full)
		})
	}
	// --from starts later.
	run, _ := c.CreateRun(ctx, client.RunRequest{Query: "x", Profile: "instant"})
	out, errs, code := qlc(t, g.URL, g.TenantKey, "", "tail", run.ID, "--json", "--from", "5")
	_, evs := jsonEvents(t, out)
	first := evs[0].Seq
	if evs[0].FromSeq != 0 {
		first = evs[0].FromSeq // deltas of a finished run come coalesced
	}
	if code != 0 || first != 5 {
		t.Fatalf("tail --from 5: exit %d %s, first seq %d", code, errs, first)
	}
}

func TestCtrlCCancelsTheRun(t *testing.T) {
	g := clienttest.Start(t, "")
	cmd := command(t, g.URL, g.TenantKey, "ask", "--profile", "slow", "a long question")
	idRe := regexp.MustCompile(`run (run_\S+)`)
	var id string
	signalled := make(chan struct{})
	out, code := runPTY(t, cmd, func(s string) bool {
		// Once the run streams tokens, press Ctrl-C.
		if m := idRe.FindStringSubmatch(s); m != nil && strings.Contains(s, "▶ Generator") && len(s) > 200 {
			id = m[1]
			cmd.Process.Signal(os.Interrupt)
			close(signalled)
			return true
		}
		return false
	})
	select {
	case <-signalled:
	default:
		t.Fatalf("the run never streamed; exit %d:\n%s", code, out)
	}
	if code != 130 || !strings.Contains(out, "qlc: interrupted: run "+id+" cancelled") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	run, err := newClient(t, g.URL, g.TenantKey).GetRun(context.Background(), id)
	if err != nil || run.Status != "cancelled" {
		t.Fatalf("run %s after Ctrl-C: %v %v", id, run.Status, err)
	}
}

func TestAdminCommands(t *testing.T) {
	g := clienttest.Start(t, "")
	admin := func(args ...string) string {
		t.Helper()
		cmd := command(t, g.URL, "", append([]string{"admin"}, args...)...)
		cmd.Env = append(cmd.Env, "QLC_ADMIN_KEY="+g.AdminKey)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("qlc admin %v: %v: %s", args, err, errb.String())
		}
		return out.String()
	}
	out := admin("tenants", "create", "Acme", "--id", "acme", "--limits", `{"requests_per_minute":60}`)
	m := regexp.MustCompile(`key_id  (\S+)\nkey     (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create printed %q", out)
	}
	keyID, key := m[1], m[2]
	if out, errs, code := qlc(t, g.URL, key, "", "profiles"); code != 0 || !strings.Contains(out, "instant *") {
		t.Fatalf("the new key: exit %d %s %s", code, out, errs)
	}
	if out := admin("tenants"); !strings.Contains(out, "acme") || !strings.Contains(out, `"requests_per_minute":60`) {
		t.Fatalf("tenants:\n%s", out)
	}
	if out := admin("keys", "acme"); !strings.Contains(out, keyID) {
		t.Fatalf("keys:\n%s", out)
	}
	admin("keys", "create", "acme")
	if out := admin("keys", "revoke", keyID); !strings.Contains(out, "revoked") {
		t.Fatalf("revoke: %s", out)
	}
	if _, errs, code := qlc(t, g.URL, key, "", "profiles"); code != 1 || !strings.Contains(errs, "invalid_api_key") {
		t.Fatalf("a revoked key: exit %d %q", code, errs)
	}
	admin("tenants", "update", "acme", "--name", "Acme Corp")
	if out := admin("tenants", "show", "acme"); !strings.Contains(out, `"name": "Acme Corp"`) {
		t.Fatalf("show: %s", out)
	}
	out = admin("audit")
	for _, want := range []string{"tenant.create", "key.revoke", "acme"} {
		if !strings.Contains(out, want) {
			t.Errorf("audit lacks %q:\n%s", want, out)
		}
	}
	out = admin("audit", "--action", "key.", "--tenant", "acme", "--newest")
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 || !strings.Contains(lines[1], "key.revoke") ||
		!strings.Contains(lines[2], "key.create") || strings.Contains(out, "tenant.") {
		t.Errorf("audit of acme's keys, newest first:\n%s", out)
	}
	// A tenant made without --id (a random id, as the README's example
	// does) is found by its name in every command that takes a tenant.
	out = admin("tenants", "create", "Beta")
	m = regexp.MustCompile(`tenant  (\S+)\nkey_id  (\S+)`).FindStringSubmatch(out)
	if m == nil || m[1] == "Beta" {
		t.Fatalf("create Beta printed %q", out)
	}
	betaID, betaKey := m[1], m[2]
	if out := admin("keys", "beta"); !strings.Contains(out, betaKey) || !strings.Contains(out, betaID) || strings.Contains(out, keyID) {
		t.Errorf("keys beta:\n%s", out)
	}
	admin("keys", "create", "Beta")
	admin("tenants", "update", "Beta", "--limits", `{"requests_per_minute":7}`)
	if out := admin("tenants", "show", "Beta"); !strings.Contains(out, `"id": "`+betaID) || !strings.Contains(out, `"requests_per_minute": 7`) {
		t.Errorf("show Beta after update:\n%s", out)
	}
	if out := admin("audit", "--tenant", "Beta", "--action", "key."); !strings.Contains(out, "key.create") || !strings.Contains(out, betaID) {
		t.Errorf("audit --tenant Beta:\n%s", out)
	}
	// Every limit of the API goes through --limits (max_profiles: the
	// tenant's own profiles), and a misspelt one is a usage error, not a
	// limit silently left out of the set that replaces the old one.
	admin("tenants", "update", "Beta", "--limits", `{"requests_per_minute":7,"max_profiles":3}`)
	if out := admin("tenants", "show", "Beta"); !strings.Contains(out, `"max_profiles": 3`) {
		t.Errorf("show Beta after max_profiles 3:\n%s", out)
	}
	if out := admin("tenants"); !strings.Contains(out, `"max_profiles":3`) {
		t.Errorf("tenants lacks max_profiles:\n%s", out)
	}
	for _, args := range [][]string{{"tenants", "update", "Beta", "--limits", `{"max_profile":3}`}, {"tenants", "create", "Gamma", "--limits", `{"request_per_minute":3}`}} {
		cmd := command(t, g.URL, "", append([]string{"admin"}, args...)...)
		cmd.Env = append(cmd.Env, "QLC_ADMIN_KEY="+g.AdminKey)
		var se bytes.Buffer
		cmd.Stderr = &se
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(se.String(), "unknown field") {
			t.Errorf("qlc admin %v: %v %q, want exit 2 naming the unknown field", args, err, se.String())
		}
	}
	// A name that matches nothing, or two tenants but for case, is one
	// error line, not an empty list; an exact name still wins.
	admin("tenants", "create", "BETA")
	if out := admin("keys", "Beta"); !strings.Contains(out, betaID) {
		t.Errorf("keys Beta (exact) beside BETA:\n%s", out)
	}
	for _, args := range [][]string{{"keys", "nobody"}, {"keys", "beta"}, {"tenants", "show", "nobody"}} {
		cmd := command(t, g.URL, "", append([]string{"admin"}, args...)...)
		cmd.Env = append(cmd.Env, "QLC_ADMIN_KEY="+g.AdminKey)
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || so.Len() != 0 || strings.Count(se.String(), "\n") != 1 ||
			!(strings.Contains(se.String(), "no tenant has the id or name") || strings.Contains(se.String(), "2 tenants are named \"beta\" but for case")) {
			t.Errorf("qlc admin %v: %v, stdout %q, stderr %q", args, err, so.String(), se.String())
		}
	}
	// A tenant key is not an admin key.
	_, errs, code := qlc(t, g.URL, g.TenantKey, "", "admin", "tenants")
	if code != 1 || !strings.Contains(errs, "admin_key_required") || strings.Count(errs, "\n") != 1 {
		t.Fatalf("admin with a tenant key: exit %d %q", code, errs)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	g := clienttest.Start(t, "")
	for _, tc := range []struct {
		key  string
		args []string
		code int
		want string
	}{
		{"qlc_bad", []string{"ask", "hi"}, 1, "invalid_api_key"},
		{"", []string{"profiles"}, 1, "missing_api_key"},
		{g.TenantKey, []string{"show", "run_nope"}, 1, "run_not_found"},
		{g.TenantKey, []string{"tail", "run_nope"}, 1, "run_not_found"},
		{g.TenantKey, []string{"cancel", "run_nope"}, 1, "run_not_found"},
		{g.TenantKey, []string{"ask", "--profile", "nope", "hi"}, 1, "unknown_profile"},
		{g.TenantKey, []string{"ask"}, 2, "ask takes a question"},
		{g.TenantKey, []string{"show"}, 2, "takes a run id"},
		{g.TenantKey, []string{"frobnicate"}, 2, "unknown command"},
		{g.TenantKey, []string{"ask", "--nope", "x"}, 2, "unknown flag"},
	} {
		out, errs, code := qlc(t, g.URL, tc.key, "", tc.args...)
		if code != tc.code || !strings.HasPrefix(errs, "qlc: ") || !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 || out != "" {
			t.Errorf("qlc %v: exit %d, stdout %q, stderr %q; want exit %d and one line with %q", tc.args, code, out, errs, tc.code, tc.want)
		}
	}
	for _, args := range [][]string{{"profiles"}, {"tail", "run_x"}, {"ask", "hi"}} {
		_, errs, code := qlc(t, "http://127.0.0.1:1", "k", "", args...)
		if code != 1 || !strings.Contains(errs, "cannot reach the gateway at http://127.0.0.1:1") || strings.Count(errs, "\n") != 1 {
			t.Errorf("qlc %v without a gateway: exit %d %q", args, code, errs)
		}
	}
}

func TestOtherCommands(t *testing.T) {
	g := clienttest.Start(t, "")
	c := newClient(t, g.URL, g.TenantKey)
	if _, errs, code := qlc(t, g.URL, g.TenantKey, "", "ask", "--profile", "instant", "hello"); code != 0 {
		t.Fatal(errs)
	}
	run := onlyRun(t, c)
	expect := func(args []string, stdin string, wants ...string) {
		t.Helper()
		out, errs, code := qlc(t, g.URL, g.TenantKey, stdin, args...)
		if code != 0 {
			t.Fatalf("qlc %v: exit %d %s", args, code, errs)
		}
		for _, w := range wants {
			if !strings.Contains(out, w) {
				t.Errorf("qlc %v lacks %q:\n%s", args, w, out)
			}
		}
	}
	expect([]string{"show", run.ID}, "", "status    completed", "curator *", "generator", run.Answer)
	expect([]string{"show", run.ID, "--json"}, "", `"id":"`+run.ID)
	expect([]string{"runs"}, "", "RUN", run.ID, "instant", "completed")
	expect([]string{"usage"}, "", "instant", "total")
	expect([]string{"usage", "--from", "2020-01-01T00:00:00Z", "--json"}, "", `"run_id": "`+run.ID)
	expect([]string{"profiles"}, "", "instant *", "moa", "slowmoa")
	expect([]string{"tokens", "--encoding", "cl100k_base"}, "hello world", "2\n")
	expect([]string{"tokens"}, "hello world", "2\n")
	if _, errs, code := qlc(t, g.URL, g.TenantKey, "", "cancel", run.ID); code != 1 || !strings.Contains(errs, "run_finished") {
		t.Errorf("cancel a finished run: exit %d %q", code, errs)
	}
	// The config file: written 0600, read when flags and env say nothing.
	cmd := command(t, "", "")
	cfg := ""
	for _, e := range cmd.Env {
		if v, ok := strings.CutPrefix(e, "QLC_CONFIG="); ok {
			cfg = v
		}
	}
	for _, kv := range [][]string{{"url", g.URL}, {"api_key", g.TenantKey}} {
		set := command(t, "", "", "config", "set", kv[0], kv[1])
		set.Env = cmd.Env
		if out, err := set.CombinedOutput(); err != nil {
			t.Fatalf("config set: %v %s", err, out)
		}
	}
	if fi, err := os.Stat(cfg); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v %v", fi, err)
	}
	prof := exec.Command(qlcBin, "profiles")
	prof.Env = []string{"HOME=" + filepath.Dir(cfg), "QLC_CONFIG=" + cfg}
	if out, err := prof.CombinedOutput(); err != nil || !strings.Contains(string(out), "instant *") {
		t.Fatalf("profiles from the config file: %v %s", err, out)
	}
	// Without QLC_CONFIG the file is in the user's config directory:
	// $XDG_CONFIG_HOME/qlc/config.json, else ~/.config/qlc/config.json.
	for _, xdg := range []bool{false, true} {
		home := t.TempDir()
		env := []string{"HOME=" + home}
		dir := filepath.Join(home, ".config")
		if xdg {
			dir = filepath.Join(home, "xdg")
			env = append(env, "XDG_CONFIG_HOME="+dir)
		}
		set := exec.Command(qlcBin, "config", "set", "url", g.URL)
		set.Env = env
		if out, err := set.CombinedOutput(); err != nil {
			t.Fatalf("config set (xdg %v): %v %s", xdg, err, out)
		}
		setKey := exec.Command(qlcBin, "config", "set", "api_key", g.TenantKey)
		setKey.Env = env
		if out, err := setKey.CombinedOutput(); err != nil {
			t.Fatalf("config set api_key: %v %s", err, out)
		}
		if fi, err := os.Stat(filepath.Join(dir, "qlc", "config.json")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("config file in the user config dir (xdg %v): %v %v", xdg, fi, err)
		}
		prof := exec.Command(qlcBin, "profiles")
		prof.Env = env
		if out, err := prof.CombinedOutput(); err != nil || !strings.Contains(string(out), "instant *") {
			t.Fatalf("profiles from the user config dir (xdg %v): %v %s", xdg, err, out)
		}
	}
	// usage --to: a period that ends before the run has none of it.
	future := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	expect([]string{"usage", "--from", "2020-01-01T00:00:00Z", "--to", future, "--json"}, "", `"run_id": "`+run.ID)
	if out, errs, code := qlc(t, g.URL, g.TenantKey, "", "usage", "--from", "2020-01-01T00:00:00Z", "--to", "2021-01-01T00:00:00Z", "--json"); code != 0 || strings.Contains(out, run.ID) {
		t.Errorf("usage --to 2021: exit %d %s, out:\n%s", code, errs, out)
	}
	// runs lists a run in flight first, then the ended ones; cancel ends it.
	live, err := c.CreateRun(context.Background(), client.RunRequest{Query: "a long question", Profile: "slow"})
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := qlc(t, g.URL, g.TenantKey, "", "runs")
	if lines := strings.Split(out, "\n"); code != 0 || len(lines) < 3 || !strings.HasPrefix(lines[1], live.ID) || !strings.Contains(lines[1], "running") ||
		!strings.HasPrefix(lines[2], run.ID) || !strings.Contains(lines[2], "completed") {
		t.Errorf("qlc runs with one run in flight: exit %d %s\n%s", code, errs, out)
	}
	out, _, _ = qlc(t, g.URL, g.TenantKey, "", "runs", "--json")
	var rj struct {
		InFlight []client.Run         `json:"in_flight"`
		Ended    []client.UsageRecord `json:"ended"`
	}
	if err := json.Unmarshal([]byte(out), &rj); err != nil || len(rj.InFlight) != 1 || rj.InFlight[0].ID != live.ID || len(rj.Ended) != 1 || rj.Ended[0].RunID != run.ID {
		t.Errorf("qlc runs --json: %v\n%s", err, out)
	}
	expect([]string{"cancel", live.ID}, "", "run "+live.ID+" cancelled")
	if r, err := c.GetRun(context.Background(), live.ID); err != nil || r.Status != "cancelled" {
		t.Errorf("after qlc cancel: %v %v", r, err)
	}
	// Completions come with cobra.
	expect([]string{"completion", "bash"}, "", "bash completion")
	expect([]string{"completion", "zsh"}, "", "compdef _qlc qlc")
	expect([]string{"completion", "fish"}, "", "complete -c qlc")
	_ = io.Discard
}
