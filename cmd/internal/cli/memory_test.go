package cli

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMemoryBudget(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "memory.max")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tt := range []struct {
		flag, file string
		want       int64
		err        bool
	}{
		{"", "1073741824\n", 1073741824 / 10 * 9, false}, // 90 % of the container's limit
		{"", "max\n", 0, false},                          // no limit
		{"", "", 0, false},
		{"512MiB", "1073741824\n", 512 << 20, false}, // the flag wins
		{"none", "1073741824\n", 0, false},
		{"0", "1073741824\n", 0, false},
		{"12x", "", 0, true},
		{"-5", "", 0, true},
	} {
		got, err := MemoryBudget(tt.flag, write(tt.file))
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("MemoryBudget(%q, %q) = %d, %v; want %d (error %v)", tt.flag, tt.file, got, err, tt.want, tt.err)
		}
	}
	if got, err := MemoryBudget("", filepath.Join(dir, "absent")); got != 0 || err != nil {
		t.Errorf("no cgroup file: %d, %v", got, err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"1048576": 1 << 20, "512KiB": 512 << 10, "64MiB": 64 << 20, "2GiB": 2 << 30, " 3 MiB ": 3 << 20} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "1.5GiB", "-1", "99999999999GiB"} {
		if _, err := ParseBytes(in); err == nil {
			t.Errorf("ParseBytes(%q) accepted", in)
		}
	}
}
