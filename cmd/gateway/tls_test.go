package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qlc-project/qlc/cmd/internal/cli"
)

// tlsProfiles: one simulated profile whose runs end at once.
const tlsProfiles = `
default_profile: instant
providers:
  sim: {kind: sim, sim: {output_tokens: 40}}
profiles:
  instant:
    description: zero latency
    provider: sim
    stages: {generator: {model: g}, refiner: {model: r}, validator: {model: v}, curator: {model: c}}
`

// TestTLSListener runs the real gateway binary with -tls-cert and -tls-key:
// HTTPS clients that trust the certificate are served (health, a run, its
// event stream), plain HTTP and untrusting or TLS 1.1 clients are not, and
// a half-given certificate pair stops the command with a clear message.
func TestTLSListener(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	certFile, keyFile, pool := selfSignedCert(t, dir)
	profiles := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(tlsProfiles), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("cert without key", func(t *testing.T) {
		for _, args := range [][]string{{"-tls-cert", certFile}, {"-tls-key", keyFile}} {
			out, code := runToExit(t, bin, append([]string{"-local", "-addr", "127.0.0.1:0", "-data-dir", t.TempDir()}, args...)...)
			if code == 0 || !strings.Contains(out, "-tls-cert and -tls-key go together") {
				t.Fatalf("%v: exit %d, output %q; want a non-zero exit naming both flags", args, code, out)
			}
		}
	})
	t.Run("unreadable key", func(t *testing.T) {
		missing := filepath.Join(dir, "missing-key.pem")
		out, code := runToExit(t, bin, "-local", "-addr", "127.0.0.1:0", "-data-dir", t.TempDir(), "-tls-cert", certFile, "-tls-key", missing)
		if code == 0 || !strings.Contains(out, "missing-key.pem") {
			t.Fatalf("exit %d, output %q; want a non-zero exit naming the key file", code, out)
		}
	})

	dataDir := t.TempDir()
	addr := startGateway(t, bin, "-local", "-data-dir", dataDir, "-profiles", profiles, "-tls-cert", certFile, "-tls-key", keyFile)
	base := "https://" + addr
	client := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	waitHealthy(t, client, base+"/healthz")

	t.Run("https", func(t *testing.T) {
		resp, err := client.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
			t.Fatalf("healthz over HTTPS: %d, TLS %+v", resp.StatusCode, resp.TLS)
		}
		keys := readDevKeys(t, dataDir)
		run := struct {
			ID, Status string
		}{}
		code := doJSON(t, client, "POST", base+"/v1/runs", keys.TenantKey, `{"query":"why is the sky blue?"}`, &run)
		if code != http.StatusCreated || run.ID == "" {
			t.Fatalf("create a run over HTTPS: %d %+v", code, run)
		}
		// Its event stream, over the same TLS listener, ends with the run.
		req, _ := http.NewRequest("GET", base+"/v1/runs/"+run.ID+"/events", nil)
		req.Header.Set("Authorization", "Bearer "+keys.TenantKey)
		resp, err = client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || !bytes.Contains(body, []byte("event: run_completed")) {
			t.Fatalf("event stream over HTTPS: %d %v, %d bytes, no run_completed", resp.StatusCode, err, len(body))
		}
		if code := doJSON(t, client, "GET", base+"/v1/runs/"+run.ID, keys.TenantKey, "", &run); code != 200 || run.Status != "completed" {
			t.Fatalf("the run over HTTPS: %d %+v", code, run)
		}
		// The admin key works over HTTPS too.
		var list struct{ Data []json.RawMessage }
		if code := doJSON(t, client, "GET", base+"/v1/admin/tenants", keys.AdminKey, "", &list); code != 200 || len(list.Data) == 0 {
			t.Fatalf("admin API over HTTPS: %d, %d tenants", code, len(list.Data))
		}
	})
	t.Run("plain http refused", func(t *testing.T) {
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
				t.Fatalf("plain HTTP on the TLS port: %d %q; want 400 from the TLS server", resp.StatusCode, body)
			}
		}
	})
	t.Run("untrusted certificate refused", func(t *testing.T) {
		_, err := (&http.Client{Timeout: 10 * time.Second}).Get(base + "/healthz")
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) {
			t.Fatalf("a client that does not trust the certificate: %v; want an unknown-authority error", err)
		}
	})
	t.Run("tls 1.1 refused", func(t *testing.T) {
		old := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}}
		if resp, err := old.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatalf("a TLS 1.1 client was served: %d", resp.StatusCode)
		}
	})
}

// buildGateway builds this command into a temporary folder.
func buildGateway(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gateway")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/qlc-project/qlc/cmd/gateway").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// gatewayEnv is the environment without QLC_ settings, so only the flags
// a test gives apply.
func gatewayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "QLC_") {
			env = append(env, kv)
		}
	}
	return env
}

// runToExit runs the binary until it exits (within 60 s) and returns its
// output and exit code.
func runToExit(t *testing.T, bin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = gatewayEnv()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%v did not exit: %s", args, out)
	}
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("run %v: %v", args, err)
	return "", 0
}

// startGateway runs the binary on port 0 until the test ends, and returns
// the address it listens on (from its -addr-file). Its output is shown if
// the test fails.
func startGateway(t *testing.T, bin string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "addrs.json")
	cmd := exec.Command(bin, append([]string{"-addr", "127.0.0.1:0", "-addr-file", path}, args...)...)
	cmd.Env = gatewayEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("gateway output:\n%s", out.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		a, err := cli.ReadAddrs(path)
		if err == nil {
			return a.HTTP
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway wrote no addresses: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitHealthy(t *testing.T, c *http.Client, url string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never answered 200: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// devKeys is <data-dir>/dev-keys.json, written by local mode.
type devKeys struct {
	TenantKey string `json:"tenant_key"`
	AdminKey  string `json:"admin_key"`
}

func readDevKeys(t testing.TB, dataDir string) devKeys {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "dev-keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var k devKeys
	if err := json.Unmarshal(b, &k); err != nil || k.TenantKey == "" || k.AdminKey == "" {
		t.Fatalf("dev-keys.json %q: %v", b, err)
	}
	return k
}

// doJSON sends a request with key and an optional JSON body and decodes
// the JSON answer into out.
func doJSON(t *testing.T, c *http.Client, method, url, key, body string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, data, err)
	}
	return resp.StatusCode
}

// selfSignedCert writes an ECDSA P-256 certificate for 127.0.0.1 and
// localhost, and its key, into dir, and returns their paths and a pool
// that trusts the certificate.
func selfSignedCert(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "qlc test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
