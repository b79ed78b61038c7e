package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/qlc-project/qlc/internal/ops"
)

// A node's ops listener serves pprof and the process's resource series;
// with -trace-slow-stage 1ns the node that ran a run's stages writes the
// flight recorder's trace and counts it.
func TestNodeOpsProfilingAndFlightRecorder(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	traces := filepath.Join(t.TempDir(), "traces")
	_, na := launchNode(t, testKey, "-profiles", pf, "-log-level", "warn",
		"-trace-slow-stage", "1ns", "-trace-dir", traces, "-trace-interval", "1ns")
	opsURL := "http://" + na.Ops
	_, gw, _ := launchGateway(t, testKey, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf)
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/goroutine?debug=2"} {
		resp, err := http.Get(opsURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s on the node's ops listener: HTTP %d", path, resp.StatusCode)
		}
	}
	for _, s := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "go_goroutines",
		`go_gc_duration_seconds{quantile="1"}`, `qlc_flight_recordings_total{reason="stage"}`} {
		if metric(t, opsURL+"/metrics", s) == "" {
			t.Errorf("the node's /metrics lacks %s", s)
		}
	}

	code, v := postRun(t, gw, "quick")
	if code != 201 {
		t.Fatalf("POST /v1/runs: %d %v", code, v)
	}
	streamEvents(t, gw, v["id"].(string), nil)
	waitUntil(t, 20*time.Second, "a flight recording on the node", func() bool {
		got := metric(t, opsURL+"/metrics", `qlc_flight_recordings_total{reason="stage"}`)
		return got != "" && got != "0"
	})
	files, err := ops.Recordings(traces)
	if err != nil || len(files) == 0 {
		t.Fatalf("no trace in %s: %v", traces, err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("%s is no Go trace: %v", files[0], err)
	}
	if metric(t, opsURL+"/metrics", `qlc_mailbox_queued{kind="coordinator"}`) == "" {
		t.Error("the node's /metrics lacks qlc_mailbox_queued for its coordinators")
	}
}
