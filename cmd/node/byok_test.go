package main

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// A tenant's own provider key crosses, sealed, from the gateway process to
// the node process that runs the steps, which opens it at the attempt: the
// upstream sees the tenant's key for its runs (chain and parallel steps),
// the endpoint's own key for another tenant's and once the key is deleted;
// an upstream error that echoes a key is redacted; no log file and no
// database file of any process holds a key in clear.
func TestProviderKeyReachesTheNode(t *testing.T) {
	const (
		defaultKey = "sk-operator-default-proc-000000000000"
		keyA       = "sk-tenant-test-proc-11111111111111ABCD"
		badKey     = "sk-bad-tenant-test-proc-2222222222WXYZ"
	)
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		mu.Lock()
		seen = append(seen, auth)
		mu.Unlock()
		if key, _ := strings.CutPrefix(auth, "Bearer "); strings.HasPrefix(key, "sk-bad") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s.","type":"invalid_request_error","code":"invalid_api_key"}}`, key)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Clocks.\"},\"finish_reason\":null}]}\n\n")
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		out := seen
		seen = nil
		return out
	}
	t.Setenv("QLC_TEST_BYOK_DEFAULT", defaultKey) // the node's environment: the endpoint's own key
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(fmt.Sprintf(`
default_profile: byok
providers:
  up: {kind: openai, base_url: %s/v1, api_key_env: QLC_TEST_BYOK_DEFAULT}
profiles:
  byok:
    provider: up
    stages: {generator: {model: gpt-4o}, refiner: {model: gpt-4o}, validator: {model: gpt-4o}, curator: {model: gpt-4o}}
  byok-moa:
    strategy: moa
    provider: up
    proposers: [{model: gpt-4o}, {model: gpt-4o-mini}]
    aggregator: {model: gpt-4o}
`, up.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, na := launchNode(t, testKey, "-profiles", pf, "-log-level", "debug")
	_, gw, _ := launchGateway(t, testKey, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf, "-log-level", "debug")

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
	run := func(key, profile, query, want string) string {
		t.Helper()
		code, body := req("POST", "/v1/runs", key, fmt.Sprintf(`{"profile":%q,"query":%q}`, profile, query))
		var v struct{ ID, Status string }
		if err := json.Unmarshal([]byte(body), &v); code != http.StatusCreated || err != nil {
			t.Fatalf("POST /v1/runs: HTTP %d %s", code, body)
		}
		var last string
		waitUntil(t, 30*time.Second, "run "+v.ID+" to be "+want, func() bool {
			_, last = req("GET", "/v1/runs/"+v.ID, key, "")
			_ = json.Unmarshal([]byte(last), &v)
			return v.Status == want
		})
		return last
	}
	expect := func(what, want string) {
		t.Helper()
		got := take()
		if len(got) == 0 {
			t.Fatalf("%s: the upstream saw no request", what)
		}
		for _, h := range got {
			if h != "Bearer "+want {
				t.Fatalf("%s: the upstream saw %q, want the key %s…", what, h, want[:12])
			}
		}
	}

	// A second tenant, through the admin API.
	code, body := req("POST", "/v1/admin/tenants", testAdminKey, `{"name":"Other","limits":{"concurrent_runs":0}}`)
	var other struct{ ID, Key string }
	if err := json.Unmarshal([]byte(body), &other); code != http.StatusCreated || err != nil || other.Key == "" {
		t.Fatalf("create tenant: HTTP %d %s", code, body)
	}
	if code, body = req("PUT", "/v1/provider-keys/up", testTenantKey, fmt.Sprintf(`{"api_key":%q}`, keyA)); code != http.StatusOK {
		t.Fatalf("PUT provider key: HTTP %d %s", code, body)
	}

	run(testTenantKey, "byok", "How do vector clocks work? (A)", "completed")
	expect("tenant A's chain run on the node", keyA)
	run(testTenantKey, "byok-moa", "How do vector clocks work? (A, moa)", "completed")
	expect("tenant A's moa run on the node", keyA)
	run(other.Key, "byok", "How do vector clocks work? (B)", "completed")
	expect("the other tenant's run", defaultKey)

	if code, body = req("PUT", "/v1/provider-keys/up?tenant=test", testAdminKey, fmt.Sprintf(`{"api_key":%q}`, badKey)); code != http.StatusOK {
		t.Fatalf("PUT provider key (admin): HTTP %d %s", code, body)
	}
	failed := run(testTenantKey, "byok", "How do vector clocks work? (A, bad key)", "failed")
	expect("tenant A's run with a bad key", badKey)
	if !strings.Contains(failed, "[redacted]") || strings.Contains(failed, badKey) {
		t.Fatalf("the failed run does not redact the key: %s", failed)
	}
	if code, body = req("DELETE", "/v1/provider-keys/up", testTenantKey, ""); code != http.StatusOK {
		t.Fatalf("DELETE provider key: HTTP %d %s", code, body)
	}
	run(testTenantKey, "byok", "How do vector clocks work? (A, deleted)", "completed")
	expect("tenant A's run after DELETE", defaultKey)

	// Every file the processes wrote (logs, the gateway's database and
	// its WAL) lies under this test's temporary folders.
	root := filepath.Dir(t.TempDir())
	checked, names := 0, []string{}
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		checked++
		names = append(names, d.Name())
		for _, key := range []string{keyA, badKey, defaultKey} {
			if strings.Contains(string(b), key) {
				t.Errorf("%s holds a key in clear (%s…)", filepath.Base(path), key[:12])
			}
		}
		return nil
	})
	if !slices.Contains(names, "qlc.db") || !slices.Contains(names, "node.log") || !slices.Contains(names, "gateway.log") {
		t.Fatalf("the database or a log is not among the files checked: %v", names)
	}
}

// A tenant's key stored under the old cluster key keeps working through
// the three phases of a key rotation (docs/keys.md), gateway and node
// restarted at each: [OLD] → [NEW, +OLD] (the gateway re-seals the stored
// key under NEW) → [NEW] (OLD is gone, the key still opens).
func TestProviderKeySurvivesClusterKeyRotation(t *testing.T) {
	const (
		oldKey = testKey
		newKey = "bmV3LWNsdXN0ZXIta2V5LWZvci1yb3RhdGlvbi0wMDA=" // 32 bytes
		keyA   = "sk-tenant-rotation-proc-000000000000AB"
	)
	var mu sync.Mutex
	var seen []string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	}))
	defer up.Close()
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(fmt.Sprintf(`
default_profile: byok
providers:
  up: {kind: openai, base_url: %s/v1}
profiles:
  byok:
    provider: up
    stages: {generator: {model: gpt-4o}, refiner: {model: gpt-4o}, validator: {model: gpt-4o}, curator: {model: gpt-4o}}
`, up.URL)), 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir() // the gateway's store, kept across its restarts
	for i, phase := range []struct{ primary, secondary string }{{oldKey, ""}, {newKey, oldKey}, {newKey, ""}} {
		t.Setenv("QLC_CLUSTER_KEY_SECONDARY", phase.secondary)
		node, na := launchNode(t, phase.primary, "-profiles", pf)
		gwCmd, gw, _ := launchGateway(t, phase.primary, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf, "-data-dir", data)
		if i == 0 {
			r, _ := http.NewRequest("PUT", gw+"/v1/provider-keys/up", strings.NewReader(fmt.Sprintf(`{"api_key":%q}`, keyA)))
			resp, err := http.DefaultClient.Do(r)
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("PUT: %v %v", resp, err)
			}
			resp.Body.Close()
		}
		code, v := postRun(t, gw, "byok")
		if code != http.StatusCreated {
			t.Fatalf("phase %d: POST /v1/runs: %d %v", i+1, code, v)
		}
		if last := streamEvents(t, gw, v["id"].(string), nil); last["type"] != "run_completed" {
			t.Fatalf("phase %d: the run ended with %v", i+1, last)
		}
		mu.Lock()
		got := seen
		seen = nil
		mu.Unlock()
		if len(got) == 0 {
			t.Fatalf("phase %d: the upstream saw no request", i+1)
		}
		for _, h := range got {
			if h != "Bearer "+keyA {
				t.Fatalf("phase %d: the upstream saw %q, want the tenant's key", i+1, h)
			}
		}
		stopProcess(t, gwCmd)
		stopProcess(t, node)
	}
}
