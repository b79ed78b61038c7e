package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qlc-project/qlc/internal/ops"
)

// TestOpsProfilingAndResources runs the gateway binary (-local) with the
// flight recorder at a 1 ns TTFT threshold: /debug/pprof/ is served on the
// ops listener and nowhere on the API address (not even to an admin key);
// /metrics there has the process's resource series; one run writes a valid
// Go trace into -trace-dir, counted in qlc_flight_recordings_total, and the
// traces kept stay within -trace-keep.
func TestOpsProfilingAndResources(t *testing.T) {
	bin := buildGateway(t)
	dir := t.TempDir()
	profiles := filepath.Join(dir, "profiles.yaml")
	if err := os.WriteFile(profiles, []byte(tlsProfiles), 0o600); err != nil {
		t.Fatal(err)
	}
	traces := filepath.Join(dir, "traces")
	p := startProc(t, bin, nil, "-local", "-ops-addr", "127.0.0.1:0", "-data-dir", dir, "-profiles", profiles,
		"-trace-slow-ttft", "1ns", "-trace-dir", traces, "-trace-interval", "1ns", "-trace-keep", "2")
	base, opsBase := "http://"+p.addrs.HTTP, "http://"+p.addrs.Ops
	waitHealthy(t, http.DefaultClient, base+"/readyz")
	dk := readDevKeys(t, dir)
	for _, c := range []struct {
		url, key string
		want     int
	}{
		{base + "/debug/pprof/", "", 404}, {base + "/debug/pprof/", dk.AdminKey, 404},
		{base + "/debug/pprof/heap", dk.AdminKey, 404}, {base + "/debug/pprof/cmdline", dk.AdminKey, 404},
		{opsBase + "/debug/pprof/", "", 200}, {opsBase + "/debug/pprof/heap", "", 200},
		{opsBase + "/debug/pprof/goroutine?debug=1", "", 200}, {opsBase + "/debug/pprof/profile?seconds=1", "", 200},
	} {
		if code := status(t, c.url, c.key); code != c.want {
			t.Errorf("GET %s (key given: %v): HTTP %d; want %d", c.url, c.key != "", code, c.want)
		}
	}
	req, _ := http.NewRequest("GET", opsBase+"/debug/pprof/", nil)
	req.Host = "rebind.evil.example"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("pprof with Host rebind.evil.example: %v %v; want 421", resp.StatusCode, err)
	} else {
		resp.Body.Close()
	}

	// Three runs: a recording each (threshold 1 ns, no interval), two kept.
	for range 3 {
		var run struct {
			ID string `json:"id"`
		}
		// Read before the run starts: its recording may be written before
		// POST returns.
		before := recordings(t, opsBase)
		if code := doJSON(t, http.DefaultClient, "POST", base+"/v1/runs", dk.TenantKey, `{"query":"why is the sky blue?"}`, &run); code != 200 && code != 201 && code != 202 {
			t.Fatalf("POST /v1/runs: HTTP %d", code)
		}
		deadline := time.Now().Add(20 * time.Second)
		for recordings(t, opsBase) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no flight recording counted after a run (%v so far)", before)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Here the hub and the coordinator both see each run's first token: a
	// second recording may still be under way. Never more than -trace-keep.
	var files []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		if files, err = ops.Recordings(traces); err != nil || len(files) > 2 {
			t.Fatalf("traces kept: %v %v; want at most 2", files, err)
		}
		if len(files) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("traces kept: %v; want 2", files)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, err := os.ReadFile(files[1]) // the newest: a recording under way deletes only the oldest
	if err != nil || !bytes.HasPrefix(b, []byte("go 1.")) || len(b) < 1000 {
		t.Fatalf("%s is no Go trace (%d bytes, %v)", files[1], len(b), err)
	}

	metrics := get(t, opsBase+"/metrics")
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines",
		"go_gc_duration_seconds", "qlc_subscribers", "qlc_mailbox_depth", "qlc_mailbox_queued", "qlc_flight_recordings_total"} {
		if !strings.Contains(metrics, "\n"+name) {
			t.Errorf("/metrics on the ops listener lacks %s", name)
		}
	}
}

// recordings is qlc_flight_recordings_total{reason="ttft"} on ops.
func recordings(t *testing.T, opsBase string) string {
	t.Helper()
	for _, l := range strings.Split(get(t, opsBase+"/metrics"), "\n") {
		if strings.HasPrefix(l, `qlc_flight_recordings_total{reason="ttft"} `) {
			return l
		}
	}
	t.Fatal("no qlc_flight_recordings_total{reason=\"ttft\"}")
	return ""
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
