package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/gateway"
)

// gatewayProc is a running gateway binary that a test stops itself (to
// start it again on the same data folder), and the addresses it bound.
type gatewayProc struct {
	cmd   *exec.Cmd
	out   *bytes.Buffer
	done  chan struct{}
	addrs cli.Addrs
}

// startProc starts bin on port 0 with args and extra environment (on top of
// gatewayEnv), and waits for the addresses it bound (-addr-file); it is
// stopped at the end of the test if still running.
func startProc(t testing.TB, bin string, env []string, args ...string) *gatewayProc {
	t.Helper()
	path := filepath.Join(t.TempDir(), "addrs.json")
	p := &gatewayProc{cmd: exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-addr-file", path}, args...)...),
		out: &bytes.Buffer{}, done: make(chan struct{})}
	p.cmd.Env = append(gatewayEnv(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() {
			t.Logf("gateway output:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, err := cli.ReadAddrs(path)
		if err == nil {
			p.addrs = a
			return p
		}
		select {
		case <-p.done:
			t.Fatalf("the gateway exited: %s", p.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway wrote no addresses: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits for the process to end (killing it after
// 15 s). Stopping twice is a no-op.
func (p *gatewayProc) stop(t testing.TB) {
	t.Helper()
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// status sends GET url with key and returns the HTTP status.
func status(t *testing.T, url, key string) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRevocationSurvivesRestart: `make run` (-local) with an admin key in
// QLC_ADMIN_KEY and a tenants file. The dev tenant key, the env admin key
// and the file's key are revoked through the admin API; after a restart on
// the same data folder (the tenants file touched: its mtime is newer than
// the revocations) every one of them is still refused, the dev keys file
// holds a new tenant key that works, and the other keys still work.
func TestRevocationSurvivesRestart(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	profiles := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(tlsProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	const (
		envAdmin   = "qlc_Rv7kQ2mXw9ZpL4tBn8YcJ3sHd6GfA1eU"
		fileTenant = "qlc_h3Kp9WzQ7vLm2XcT8bNr5YfD4sGj6AeU"
		keptTenant = "qlc_Zt4Lw8Qm1XpK6vRn3YcH9bJd2GsF7AeT"
	)
	sum := sha256.Sum256([]byte(keptTenant))
	tenants := filepath.Join(dir, "tenants.yaml")
	if err := os.WriteFile(tenants, []byte(`tenants:
  - id: acme
    name: Acme
    keys: [`+fileTenant+`, "sha256:`+hex.EncodeToString(sum[:])+`"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(tenants, old, old); err != nil {
		t.Fatal(err)
	}
	env := []string{"QLC_ADMIN_KEY=" + envAdmin}
	args := []string{"-local", "-data-dir", data, "-profiles", profiles, "-tenants", tenants, "-ops-addr", "none"}

	p := startProc(t, bin, env, args...)
	base := "http://" + p.addrs.HTTP
	waitHealthy(t, http.DefaultClient, base+"/readyz")
	dk := readDevKeys(t, data)
	for name, k := range map[string]string{"dev tenant": dk.TenantKey, "file tenant": fileTenant, "kept file tenant": keptTenant} {
		if code := status(t, base+"/v1/models", k); code != 200 {
			t.Fatalf("%s key before revocation: HTTP %d", name, code)
		}
	}
	if code := status(t, base+"/v1/admin/tenants", envAdmin); code != 200 {
		t.Fatalf("QLC_ADMIN_KEY before revocation: HTTP %d", code)
	}
	for _, k := range []string{dk.TenantKey, fileTenant, envAdmin} {
		var v map[string]any
		if code := doJSON(t, http.DefaultClient, "DELETE", base+"/v1/admin/keys/"+gateway.KeyID(k), dk.AdminKey, "", &v); code != 200 {
			t.Fatalf("revoke %s: HTTP %d %v", gateway.KeyID(k), code, v)
		}
	}
	p.stop(t)

	// The tenants file is edited after the revocations: its rows are newer.
	now := time.Now()
	if err := os.Chtimes(tenants, now, now); err != nil {
		t.Fatal(err)
	}
	base = "http://" + startProc(t, bin, env, args...).addrs.HTTP
	waitHealthy(t, http.DefaultClient, base+"/readyz")
	for name, k := range map[string]string{"dev tenant": dk.TenantKey, "file tenant": fileTenant} {
		if code := status(t, base+"/v1/models", k); code != http.StatusUnauthorized {
			t.Errorf("revoked %s key after a restart: HTTP %d; want 401", name, code)
		}
	}
	if code := status(t, base+"/v1/admin/tenants", envAdmin); code != http.StatusUnauthorized {
		t.Errorf("revoked QLC_ADMIN_KEY after a restart: HTTP %d; want 401", code)
	}
	if code := status(t, base+"/v1/models", keptTenant); code != 200 {
		t.Errorf("the file's other key after a restart: HTTP %d; want 200", code)
	}
	dk2 := readDevKeys(t, data)
	if dk2.TenantKey == dk.TenantKey || dk2.AdminKey != dk.AdminKey {
		t.Fatalf("dev keys after the restart: tenant key renewed %v, admin key kept %v; want a new tenant key and the same admin key",
			dk2.TenantKey != dk.TenantKey, dk2.AdminKey == dk.AdminKey)
	}
	if code := status(t, base+"/v1/models", dk2.TenantKey); code != 200 {
		t.Errorf("the new dev tenant key: HTTP %d; want 200", code)
	}
	// The UI is handed the new key.
	var s map[string]string
	if code := doJSON(t, http.DefaultClient, "GET", base+"/ui/session", "", "", &s); code != 200 || s["tenant_key"] != dk2.TenantKey {
		t.Errorf("/ui/session after the restart: HTTP %d, new key handed out: %v", code, s["tenant_key"] == dk2.TenantKey)
	}
}

// TestOpsListener: the gateway serves /metrics without a key only on
// -ops-addr (with /healthz and /readyz); on -addr, /metrics needs an admin
// key, and health and readiness need none. In local mode, a request to
// either address that names another host is refused (DNS rebinding).
func TestOpsListener(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	profiles := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(tlsProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, bin, nil, "-local", "-ops-addr", "127.0.0.1:0", "-data-dir", dir, "-profiles", profiles)
	ops := p.addrs.Ops
	if ops == "" {
		t.Fatal("the address file names no ops address")
	}
	base, opsBase := "http://"+p.addrs.HTTP, "http://"+ops
	waitHealthy(t, http.DefaultClient, base+"/readyz")
	dk := readDevKeys(t, dir)
	for _, c := range []struct {
		url, key string
		want     int
	}{
		{base + "/healthz", "", 200}, {base + "/readyz", "", 200},
		{base + "/metrics", "", 401}, {base + "/metrics", dk.TenantKey, 403}, {base + "/metrics", dk.AdminKey, 200},
		{opsBase + "/healthz", "", 200}, {opsBase + "/readyz", "", 200}, {opsBase + "/metrics", "", 200},
		{opsBase + "/v1/models", dk.TenantKey, 404},
	} {
		if code := status(t, c.url, c.key); code != c.want {
			t.Errorf("GET %s (key given: %v): HTTP %d; want %d", c.url, c.key != "", code, c.want)
		}
	}
	for _, u := range []string{base + "/ui/session", base + "/v1/models", opsBase + "/metrics"} {
		req, _ := http.NewRequest("GET", u, nil)
		req.Host = "rebind.evil.example"
		req.Header.Set("Authorization", "Bearer "+dk.TenantKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with Host rebind.evil.example: HTTP %d; want 421", u, resp.StatusCode)
		}
	}
	p.stop(t)
	if !strings.Contains(p.out.String(), ops) {
		t.Errorf("the startup log does not name the ops address %s", ops)
	}
}
