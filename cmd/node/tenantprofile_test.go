package main

import (
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A tenant's own profile, put at the gateway process, runs on a node
// process that knows only the profile file: the definition travels in
// StartRun, the node's coordinator parses it again and runs its steps
// (POST /v1/runs and chat completions); another tenant gets a 404; a
// deleted profile no longer runs.
func TestTenantProfileRunsOnTheNode(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	_, na := launchNode(t, testKey, "-profiles", pf)
	_, gw, _ := launchGateway(t, testKey, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf)

	req := func(method, path, key, body string) (int, string) {
		t.Helper()
		r, _ := http.NewRequest(method, gw+path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+key)
		r.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := req("PATCH", "/v1/admin/tenants/test", testAdminKey, `{"limits":{"concurrent_runs":0,"max_profiles":1}}`); code != http.StatusOK {
		t.Fatalf("PATCH limits: HTTP %d %s", code, body)
	}
	const own = `{"description": "The test tenant's own.", "provider": "medium",
		"stages": {"generator": {"model": "own-g", "max_tokens": 40}, "refiner": {"model": "own-r", "provider": "quick"},
		           "validator": {"model": "own-v"}, "curator": {"model": "own-c", "max_tokens": 30}}}`
	if code, body := req("PUT", "/v1/profiles/mine", testTenantKey, own); code != http.StatusOK {
		t.Fatalf("PUT /v1/profiles/mine: HTTP %d %s", code, body)
	}

	code, body := req("POST", "/v1/runs", testTenantKey, `{"profile":"mine","query":"How do vector clocks work?"}`)
	var v struct {
		ID, Status, Answer string
		Steps              []struct{ Model, Provider string }
	}
	if err := json.Unmarshal([]byte(body), &v); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /v1/runs: HTTP %d %s", code, body)
	}
	waitUntil(t, 30*time.Second, "run "+v.ID+" to complete", func() bool {
		_, body = req("GET", "/v1/runs/"+v.ID, testTenantKey, "")
		_ = json.Unmarshal([]byte(body), &v)
		if v.Status == "failed" {
			t.Fatalf("run failed: %s", body)
		}
		return v.Status == "completed"
	})
	if len(v.Steps) != 4 || v.Steps[0].Model != "own-g" || v.Steps[1].Provider != "quick" || v.Answer == "" {
		t.Fatalf("run of the tenant profile: %s", body)
	}

	code, body = req("POST", "/v1/chat/completions", testTenantKey, `{"model":"qlc-mine","messages":[{"role":"user","content":"And Lamport clocks?"}]}`)
	var chat struct {
		Choices []struct{ Message struct{ Content string } }
	}
	if err := json.Unmarshal([]byte(body), &chat); code != http.StatusOK || err != nil || len(chat.Choices) != 1 || chat.Choices[0].Message.Content == "" {
		t.Fatalf("chat qlc-mine: HTTP %d %s", code, body)
	}

	// Another tenant does not see it.
	code, body = req("POST", "/v1/admin/tenants", testAdminKey, `{"name":"Other","limits":{"concurrent_runs":0,"max_profiles":1}}`)
	var other struct{ Key string }
	if err := json.Unmarshal([]byte(body), &other); code != http.StatusCreated || err != nil {
		t.Fatalf("create tenant: HTTP %d %s", code, body)
	}
	if code, body = req("POST", "/v1/runs", other.Key, `{"profile":"mine","query":"q"}`); code != http.StatusNotFound {
		t.Fatalf("the other tenant runs it: HTTP %d %s", code, body)
	}

	// The coordinator ran on the node, which parsed the definition (it
	// knows only the profile file).
	var nodeLog string
	_ = filepath.WalkDir(filepath.Dir(t.TempDir()), func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "node.log" {
			b, _ := os.ReadFile(path)
			nodeLog += string(b)
		}
		return nil
	})
	started := false
	for _, line := range strings.Split(nodeLog, "\n") {
		if strings.Contains(line, "run started") && strings.Contains(line, v.ID) && strings.Contains(line, "mine") {
			started = true
		}
	}
	if !started {
		t.Fatalf("the node's log has no \"run started\" for %s:\n%s", v.ID, nodeLog)
	}

	if code, body = req("DELETE", "/v1/profiles/mine", testTenantKey, ""); code != http.StatusOK {
		t.Fatalf("DELETE: HTTP %d %s", code, body)
	}
	if code, body = req("POST", "/v1/runs", testTenantKey, `{"profile":"mine","query":"q"}`); code != http.StatusNotFound {
		t.Fatalf("run after DELETE: HTTP %d %s", code, body)
	}
}
