package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// utime and stime are found after the command name, whatever it holds.
func TestParseStatCPU(t *testing.T) {
	line := "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 1234 0 0 0 150 75 0 0 20 0 12 0 100 0 0\n"
	d, err := parseStatCPU([]byte(line))
	if err != nil || d != 2250*time.Millisecond {
		t.Fatalf("%v %v, want 2.25 s", d, err)
	}
	for _, bad := range []string{"4242 no parens S 1", "4242 (x) S 1 2 3"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	// This process, for real: it has used some CPU by now.
	if d, err := cpuTime(os.Getpid()); err != nil || d < 0 {
		t.Fatalf("self: %v %v", d, err)
	}
}

func TestParseMemStatus(t *testing.T) {
	in := "Name:\tx\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t3\n"
	rss, hwm, err := parseMemStatus(strings.NewReader(in))
	if err != nil || rss != 10<<20 || hwm != 20<<20 {
		t.Fatalf("%d %d %v", rss, hwm, err)
	}
	if _, _, err := parseMemStatus(strings.NewReader("Name:\tx\n")); err == nil {
		t.Fatal("no VmRSS: no error")
	}
	if _, _, err := parseMemStatus(strings.NewReader("VmRSS:\t1 MB\nVmHWM:\t1 kB\n")); err == nil {
		t.Fatal("bad unit: no error")
	}
	rss, hwm, err = memStatus(os.Getpid())
	if err != nil || rss == 0 || hwm < rss {
		t.Fatalf("self: %d %d %v", rss, hwm, err)
	}
}

// A child is started, seen running, stopped with SIGTERM, and a second
// stop is a no-op; one that ignores SIGTERM is killed after the grace.
func TestChild(t *testing.T) {
	log := t.TempDir() + "/log"
	c, err := startChild("sleep", "/bin/sh", []string{"-c", "echo hello; exec sleep 30"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if c.exited() || c.pid() <= 0 {
		t.Fatal("not running")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(log); strings.Contains(string(b), "hello") {
			break // its output went to the log
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing in the log")
		}
	}
	start := time.Now()
	c.stop(5 * time.Second)
	c.stop(5 * time.Second)
	if !c.exited() || time.Since(start) > 4*time.Second {
		t.Fatalf("stop took %v", time.Since(start))
	}
	stubborn, err := startChild("stubborn", "/bin/sh", []string{"-c", "trap '' TERM; sleep 30"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // let the shell set its trap
	stubborn.stop(200 * time.Millisecond)
	if !stubborn.exited() {
		t.Fatal("not killed")
	}
	t.Setenv("QLC_ADMIN_KEY", "x")
	for _, kv := range cleanEnv() {
		if strings.HasPrefix(kv, "QLC_") {
			t.Fatalf("%s left in the environment", kv)
		}
	}
}
