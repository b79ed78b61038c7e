package cli

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

var (
	keyA = bytes.Repeat([]byte{0xa1}, 32)
	keyB = bytes.Repeat([]byte{0xb2}, 32)
	keyC = bytes.Repeat([]byte{0xc3}, 32)
)

func TestLoadKeyringFromEnvironment(t *testing.T) {
	ring, err := LoadKeyring(envOf(map[string]string{
		"QLC_CLUSTER_KEY":           b64(keyA),
		"QLC_CLUSTER_KEY_SECONDARY": hex.EncodeToString(keyB) + ", " + b64(keyC) + "," + b64(keyB) + "," + b64(keyA),
	}), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ring.Primary, keyA) || len(ring.Secondary) != 2 || !bytes.Equal(ring.Secondary[0], keyB) || !bytes.Equal(ring.Secondary[1], keyC) {
		t.Fatalf("ring %x / %x, want primary A, secondary B C (duplicates dropped)", ring.Primary, ring.Secondary)
	}
	ring, err = LoadKeyring(envOf(nil), true)
	if err != nil || ring.Primary != nil {
		t.Fatalf("no key: %x, %v", ring.Primary, err)
	}
}

func TestLoadKeyringFromFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(f, []byte("# new primary\n"+b64(keyB)+"\n\n  "+b64(keyA)+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ring, err := LoadKeyring(envOf(map[string]string{"QLC_CLUSTER_KEY_FILE": f}), true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ring.Primary, keyB) || len(ring.Secondary) != 1 || !bytes.Equal(ring.Secondary[0], keyA) {
		t.Fatalf("ring %x / %x, want B then A", ring.Primary, ring.Secondary)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	_ = os.WriteFile(empty, []byte("# nothing\n"), 0o600)
	for name, env := range map[string]map[string]string{
		"both":           {"QLC_CLUSTER_KEY_FILE": f, "QLC_CLUSTER_KEY": b64(keyA)},
		"missing file":   {"QLC_CLUSTER_KEY_FILE": filepath.Join(t.TempDir(), "none")},
		"empty file":     {"QLC_CLUSTER_KEY_FILE": empty},
		"no primary":     {"QLC_CLUSTER_KEY_SECONDARY": b64(keyA)},
		"bad secondary":  {"QLC_CLUSTER_KEY": b64(keyA), "QLC_CLUSTER_KEY_SECONDARY": "not-a-key"},
		"short, strict":  {"QLC_CLUSTER_KEY": b64(keyA[:16])},
		"short 2ndary":   {"QLC_CLUSTER_KEY": b64(keyA), "QLC_CLUSTER_KEY_SECONDARY": b64(keyB[:24])},
		"published":      {"QLC_CLUSTER_KEY": b64([]byte("qlc-dev-cluster-key-" + strings.Repeat("0", 12)))},
		"published, hex": {"QLC_CLUSTER_KEY": b64(keyA), "QLC_CLUSTER_KEY_SECONDARY": hex.EncodeToString([]byte("qlc-dev-cluster-key-" + strings.Repeat("0", 12)))},
	} {
		_, err := LoadKeyring(envOf(env), true)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), "\n") || strings.Contains(err.Error(), b64(keyA)) {
			t.Errorf("%s: want a one-line error that does not echo a key: %q", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
}

// Outside a cluster (-local) short and published keys are accepted; in a
// cluster neither is.
func TestLoadKeyringStrictness(t *testing.T) {
	published := b64([]byte("qlc-dev-cluster-key-" + strings.Repeat("0", 12)))
	for _, k := range []string{b64(keyA[:16]), b64(keyA[:24]), published} {
		if _, err := LoadKeyring(envOf(map[string]string{"QLC_CLUSTER_KEY": k}), false); err != nil {
			t.Errorf("-local: %v", err)
		}
		if _, err := LoadKeyring(envOf(map[string]string{"QLC_CLUSTER_KEY": k}), true); err == nil {
			t.Errorf("a cluster accepted a short or published key")
		}
	}
	_, err := LoadKeyring(envOf(map[string]string{"QLC_CLUSTER_KEY": published}), true)
	if err == nil || !strings.Contains(err.Error(), "published") {
		t.Fatalf("the published key: %v, want an error naming it published", err)
	}
}

func TestCheckInsecure(t *testing.T) {
	loop := map[string]string{"bind": "127.0.0.1:8090", "gossip-bind": "localhost:7946", "advertise": "", "gossip-advertise": "[::1]:7946"}
	if err := CheckInsecure(true, loop); err != nil {
		t.Fatalf("loopback only: %v", err)
	}
	if err := CheckInsecure(true, map[string]string{"advertise": "127.0.0.2"}); err != nil {
		t.Fatalf("a bare loopback host: %v", err)
	}
	for _, c := range []struct{ flag, addr string }{
		{"bind", "0.0.0.0:8090"},
		{"bind", ":8090"},
		{"gossip-bind", "10.1.2.3:7946"},
		{"gossip-bind", "[::]:7946"},
		{"advertise", "node1"},
		{"gossip-advertise", "example.com:7946"},
	} {
		addrs := map[string]string{"bind": "127.0.0.1:0", "gossip-bind": "127.0.0.1:0"}
		addrs[c.flag] = c.addr
		err := CheckInsecure(true, addrs)
		if err == nil || !strings.Contains(err.Error(), "-"+c.flag) {
			t.Errorf("-%s %s: %v, want a refusal naming the flag", c.flag, c.addr, err)
		}
		if err := CheckInsecure(false, addrs); err != nil {
			t.Errorf("without -insecure: %v", err)
		}
	}
}
