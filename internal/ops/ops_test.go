package ops

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestPprof(t *testing.T) {
	srv := httptest.NewServer(Pprof())
	defer srv.Close()
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/heap?debug=1":      "heap profile",
		"/debug/pprof/goroutine?debug=1": "goroutine profile",
		"/debug/pprof/cmdline":           "ops.test",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Contains(body, []byte(want)) {
			t.Errorf("GET %s: %d, body lacks %q: %.200s", path, resp.StatusCode, want, body)
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /metrics: %d, want 404", resp.StatusCode)
	}
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFlightRecorderWritesBoundedTraces(t *testing.T) {
	dir := t.TempDir()
	reg := prometheus.NewRegistry()
	cfg := DefaultFlightConfig()
	cfg.Dir, cfg.SlowTTFT, cfg.SlowStage = dir, time.Nanosecond, time.Hour
	cfg.Keep, cfg.MinInterval, cfg.Registerer = 3, time.Nanosecond, reg
	r, err := NewFlightRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	count := func(reason string) float64 { return testutil.ToFloat64(r.recordings.WithLabelValues(reason)) }

	r.StageDone(time.Minute) // below its threshold: nothing
	r.FirstToken(time.Millisecond)
	waitFor(t, "a recording", func() bool { return count(ReasonTTFT) == 1 })
	files, _ := Recordings(dir)
	if len(files) != 1 {
		t.Fatalf("recordings: %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 16 || !bytes.HasPrefix(b, []byte("go 1.")) {
		t.Fatalf("not a Go trace: %d bytes, starts %q", len(b), b[:min(len(b), 16)])
	}
	if count(ReasonStage) != 0 {
		t.Fatal("a stage under its threshold was recorded")
	}

	// More slow runs: files stay bounded by Keep, the counter counts them all.
	for i := 2; i <= 6; i++ {
		r.FirstToken(time.Second)
		waitFor(t, "recording", func() bool { return count(ReasonTTFT) == float64(i) })
	}
	if files, _ = Recordings(dir); len(files) != 3 {
		t.Fatalf("kept %d recordings, want 3: %v", len(files), files)
	}
	if n, _ := testutil.GatherAndCount(reg, "qlc_flight_recordings_total"); n != 2 {
		t.Fatalf("series: %d", n)
	}
	r.Close()
	r.Close() // idempotent
}

func TestFlightRecorderRateBound(t *testing.T) {
	cfg := DefaultFlightConfig()
	cfg.Dir, cfg.SlowStage, cfg.MinInterval = t.TempDir(), time.Millisecond, time.Hour
	r, err := NewFlightRecorder(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 50 {
		r.StageDone(time.Second)
	}
	waitFor(t, "a recording", func() bool { return testutil.ToFloat64(r.recordings.WithLabelValues(ReasonStage)) == 1 })
	time.Sleep(100 * time.Millisecond) // would a second one come?
	if files, _ := Recordings(cfg.Dir); len(files) != 1 {
		t.Fatalf("one recording per MinInterval, got %v", files)
	}
}

func TestFlightRecorderOff(t *testing.T) {
	r, err := NewFlightRecorder(DefaultFlightConfig())
	if err != nil || r != nil {
		t.Fatalf("no threshold: %v %v", r, err)
	}
	r.FirstToken(time.Hour) // nil-safe
	r.StageDone(time.Hour)
	r.Close()
	if _, err := NewFlightRecorder(FlightConfig{SlowTTFT: time.Second}); err == nil {
		t.Fatal("no directory accepted")
	}
}
