package cli

import (
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddrFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "addrs.json")
	if _, err := ReadAddrs(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("before the write: %v, want not exist", err)
	}
	want := Addrs{HTTP: "127.0.0.1:41000", Actor: "127.0.0.1:41001", Gossip: "127.0.0.1:41002"}
	if err := WriteAddrs(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAddrs(path)
	if err != nil || got != want {
		t.Fatalf("read %+v, %v; want %+v", got, err, want)
	}
	b, _ := os.ReadFile(path)
	if string(b) != `{"http":"127.0.0.1:41000","actor":"127.0.0.1:41001","gossip":"127.0.0.1:41002"}`+"\n" {
		t.Errorf("file: %s", b)
	}
	// A second write replaces the file; no temporary file is left behind.
	if err := WriteAddrs(path, Addrs{Ops: "127.0.0.1:9"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := ReadAddrs(path); got != (Addrs{Ops: "127.0.0.1:9"}) {
		t.Errorf("after the second write: %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".addrs-*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestAddrFileEdges(t *testing.T) {
	if err := WriteAddrs("", Addrs{HTTP: "x"}); err != nil {
		t.Errorf("no path: %v", err)
	}
	if err := WriteAddrs(filepath.Join(t.TempDir(), "missing", "addrs.json"), Addrs{HTTP: "x"}); err == nil || !strings.HasPrefix(err.Error(), "addr file: ") {
		t.Errorf("into a missing folder: %v", err)
	}
	dir := t.TempDir()
	for name, text := range map[string]string{"garbage": "{", "empty": "{}"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAddrs(p); err == nil {
			t.Errorf("%s file read without error", name)
		}
	}
}

func TestAddrFileFlag(t *testing.T) {
	t.Setenv("QLC_ADDR_FILE", "/from/env")
	fl := flag.NewFlagSet("x", flag.ContinueOnError)
	p := AddrFileFlag(fl)
	if *p != "/from/env" {
		t.Errorf("default %q, want the environment's", *p)
	}
	if err := fl.Parse([]string{"-addr-file", "/from/flag"}); err != nil || *p != "/from/flag" {
		t.Errorf("flag: %q, %v", *p, err)
	}
}
