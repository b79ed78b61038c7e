package main

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
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

// The actor transport's queue to a peer is allocated small: protoactor's
// default ring of 1 000 000 envelopes is a 16 MB slice per peer (61 of a
// soak node's 87 MB of live heap with a gateway and three peers). Read in
// the node's own heap profile after a run through the gateway.
func TestTransportQueuesStaySmall(t *testing.T) {
	pf := filepath.Join(t.TempDir(), "profiles.yaml")
	if err := os.WriteFile(pf, []byte(profiles), 0o644); err != nil {
		t.Fatal(err)
	}
	_, na := launchNode(t, testKey, "-profiles", pf, "-log-level", "warn")
	_, gw, _ := launchGateway(t, testKey, "-nodes", na.Actor, "-bind", "127.0.0.1:0", "-profiles", pf)
	code, v := postRun(t, gw, "quick")
	if code != 201 {
		t.Fatalf("POST /v1/runs: %d %v", code, v)
	}
	streamEvents(t, gw, v["id"].(string), nil) // the node has sent the gateway every event
	resp, err := http.Get("http://" + na.Ops + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	queues, total := endpointQueueBytes(string(b))
	if total == 0 {
		t.Fatalf("no live heap in the node's profile:\n%.2000s", b)
	}
	if queues > 1<<20 {
		t.Fatalf("the transport's queues hold %.1f MB of the node's %.1f MB live heap", float64(queues)/1e6, float64(total)/1e6)
	}
	t.Logf("transport queues %d bytes of %.1f MB live (sampled)", queues, float64(total)/1e6)
}

// endpointQueueBytes sums, in a heap profile's text form (debug=1), the
// live bytes allocated by protoactor's endpoint writer mailboxes, and all
// live bytes.
func endpointQueueBytes(profile string) (queues, total int64) {
	for _, rec := range strings.Split(profile, "\n\n") {
		head, _, _ := strings.Cut(rec, "\n")
		// "<objects>: <bytes> [<objects>: <bytes>] @ 0x..."
		var objs, bytes int64
		if _, err := fmt.Sscanf(head, "%d: %d", &objs, &bytes); err != nil {
			continue
		}
		if strings.HasPrefix(head, "heap profile:") {
			continue
		}
		total += bytes
		if strings.Contains(rec, "endpointWriterMailboxProducer") {
			queues += bytes
		}
	}
	return queues, total
}
