package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// In local mode without a cluster key, the gateway makes a local secret
// (0600) to seal provider keys; a tenant's key stored through the API is
// used by its runs, and still after a restart on the same data folder.
func TestLocalProviderKeyWithoutAClusterKey(t *testing.T) {
	const keyA = "sk-local-tenant-key-000000000000ABCD"
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
	dir := t.TempDir()
	pf := filepath.Join(dir, "profiles.yaml")
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
	bin := buildGateway(t)
	data := filepath.Join(dir, "data")
	start := func() (*gatewayProc, string) {
		p := startProc(t, bin, nil, "-local", "-ops-addr", "none", "-discover-local=false", "-data-dir", data, "-profiles", pf)
		base := "http://" + p.addrs.HTTP
		waitHealthy(t, http.DefaultClient, base+"/readyz")
		return p, base
	}
	run := func(base, key, query string) {
		t.Helper()
		var v struct{ ID, Status string }
		if code := doJSON(t, http.DefaultClient, "POST", base+"/v1/runs", key, fmt.Sprintf(`{"query":%q}`, query), &v); code != http.StatusCreated {
			t.Fatalf("POST /v1/runs: %d", code)
		}
		deadline := time.Now().Add(30 * time.Second)
		for v.Status != "completed" {
			if v.Status == "failed" || time.Now().After(deadline) {
				t.Fatalf("run: %+v", v)
			}
			time.Sleep(20 * time.Millisecond)
			doJSON(t, http.DefaultClient, "GET", base+"/v1/runs/"+v.ID, key, "", &v)
		}
		mu.Lock()
		defer mu.Unlock()
		for _, h := range seen {
			if h != "Bearer "+keyA {
				t.Fatalf("the upstream saw %q, want the tenant's key", h)
			}
		}
		if len(seen) == 0 {
			t.Fatal("the upstream saw no request")
		}
		seen = nil
	}

	p, base := start()
	key := readDevKeys(t, data).TenantKey
	if code := doJSON(t, http.DefaultClient, "PUT", base+"/v1/provider-keys/up", key, fmt.Sprintf(`{"api_key":%q}`, keyA), &map[string]any{}); code != http.StatusOK {
		t.Fatalf("PUT: %d", code)
	}
	run(base, key, "first")
	fi, err := os.Stat(filepath.Join(data, "provider-keys.secret"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("local secret: %v %v", fi, err)
	}
	p.stop(t)

	_, base = start()
	run(base, key, "second, after a restart")
	for _, f := range []string{"qlc.db", "qlc.db-wal", "provider-keys.secret", "dev-keys.json"} {
		if b, err := os.ReadFile(filepath.Join(data, f)); err == nil && strings.Contains(string(b), keyA) {
			t.Errorf("%s holds the provider key in clear", f)
		}
	}
}
