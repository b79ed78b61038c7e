package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qlc-project/qlc/client/clienttest"
)

func TestQLCLoad(t *testing.T) {
	g := clienttest.Start(t, "")
	dir := t.TempDir()
	mix := filepath.Join(dir, "mix.jsonl")
	os.WriteFile(mix, []byte("{profile: instant, query_words: 5, weight: 2}\n{\"profile\": \"moa\", \"query\": \"hi\"}\n"), 0o600)
	var out, errb bytes.Buffer
	args := []string{"-url", g.URL, "-key", g.TenantKey, "-n", "5", "-c", "2", "-mix", mix, "-progress", "on",
		"-json", filepath.Join(dir, "r.json"), "-html", filepath.Join(dir, "r.html"),
		"-server-metrics", g.URL + "/metrics", "-metrics-key", g.AdminKey, "-agree-within", "1000000"}
	if code := run(args, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "outcomes: ok 5") || !strings.Contains(out.String(), "agreement: within") || !strings.Contains(errb.String(), "sent 5") {
		t.Fatalf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	var rep struct {
		Sent    int `json:"sent"`
		Results []struct {
			RunID string `json:"run_id"`
		} `json:"results"`
	}
	data, _ := os.ReadFile(filepath.Join(dir, "r.json"))
	if err := json.Unmarshal(data, &rep); err != nil || rep.Sent != 5 || len(rep.Results) != 5 {
		t.Fatalf("json: %v %+v", err, rep)
	}
	if html, _ := os.ReadFile(filepath.Join(dir, "r.html")); !bytes.Contains(html, []byte("<svg class=\"plot\"")) {
		t.Fatal("no html report")
	}

	// Usage errors: 2; an agreement asked for without a server to ask: 3.
	for _, bad := range [][]string{{"-target", "nope"}, {"-mix", filepath.Join(dir, "missing")}, {"-progress", "x"}, {"extra"}, {"-node", "novalue"}} {
		if code := run(append(bad, "-json", "", "-html", ""), &out, &errb); code != 2 {
			t.Errorf("%v: exit %d", bad, code)
		}
	}
	if code := run([]string{"-url", g.URL, "-key", g.TenantKey, "-n", "1", "-json", "", "-html", "", "-agree-within", "5"}, &out, &errb); code != 3 {
		t.Errorf("-agree-within without -server-metrics: exit %d", code)
	}
}
