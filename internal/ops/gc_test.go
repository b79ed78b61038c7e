package ops

import (
	"runtime/debug"
	"testing"
)

func TestParseGCPercent(t *testing.T) {
	for in, want := range map[string]int{"": DefaultGCPercent, "default": DefaultGCPercent, " 100 ": 100, "25": 25, "10000": 10000} {
		if got, err := ParseGCPercent(in); err != nil || got != want {
			t.Errorf("ParseGCPercent(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"24", "10001", "-1", "off", "4x", "1e3"} {
		if _, err := ParseGCPercent(in); err == nil {
			t.Errorf("ParseGCPercent(%q) accepted", in)
		}
	}
}

func TestApplyGCPercent(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)

	t.Setenv("GOGC", "")
	if got, env := ApplyGCPercent(250); got != 250 || env {
		t.Fatalf("without GOGC: %d, %v; want 250 from the flag", got, env)
	}
	if cur := debug.SetGCPercent(250); cur != 250 {
		t.Fatalf("the runtime's target is %d, want 250", cur)
	}

	t.Setenv("GOGC", "150")
	debug.SetGCPercent(150) // what the runtime read from GOGC at start
	if got, env := ApplyGCPercent(400); got != 150 || !env {
		t.Fatalf("with GOGC=150: %d, %v; want 150 from the environment", got, env)
	}
	if cur := debug.SetGCPercent(150); cur != 150 {
		t.Fatalf("GOGC was overridden: the runtime's target is %d", cur)
	}
}
