package scalesim

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as a worker process of
// SimulateMembershipProcs (QLC_SCALESIM_WORKER set).
func TestMain(m *testing.M) {
	if os.Getenv("QLC_SCALESIM_WORKER") != "" {
		if err := RunWorker(context.Background(), os.Stdin, os.Stdout, WorkerConfig{Scale: 2, Key: []byte(Key)}); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Members spread over two worker processes on real loopback sockets see
// each other, a join, a death and a load change; the gossip they send is
// counted.
func TestSimulateMembershipProcs(t *testing.T) {
	if testing.Short() {
		t.Skip("two worker processes, 6 memberlist instances (about 20 s)")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("QLC_SCALESIM_WORKER", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := SimulateMembershipProcs(ctx, ProcsConfig{Config: Config{N: 6, Reps: 1, Scale: 2, Steady: 3 * time.Second}, Procs: 2, Exe: exe,
		Args: []string{"-test.run=^$"}, Stderr: io.Discard})
	if err != nil {
		t.Fatalf("%v (%+v)", err, res)
	}
	t.Logf("%+v", res)
	if res.Missed != 0 || len(res.Join) != 1 || len(res.Death) != 1 || len(res.Meta) != 1 {
		t.Fatalf("timings %+v", res)
	}
	if d := res.Death[0]; d < 100*time.Millisecond || d > 10*time.Second {
		t.Errorf("death took %v", d)
	}
	for _, d := range []time.Duration{res.Join[0], res.Meta[0]} {
		if d <= 0 || d > 5*time.Second {
			t.Errorf("join or change took %v", d)
		}
	}
	if res.BytesPerMember < 200 || res.PacketsPerMember < 5 || res.MinView != 6 || res.MaxBytesPerMember < res.BytesPerMember {
		t.Errorf("steady window: %+v", res)
	}
}

// A worker answers each command by id, says what it could not do, and
// refuses a line that is not a command.
func TestWorkerProtocol(t *testing.T) {
	in := strings.NewReader(`{"id":1,"op":"nonsense"}
not json
{"id":2,"op":"kill","name":"nobody"}
{"id":3,"op":"views"}
{"id":4,"op":"stats"}
`)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- RunWorker(context.Background(), in, pw, WorkerConfig{Scale: 1, Key: []byte(Key)})
		pw.Close()
	}()
	got := map[int]reply{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("reply %q: %v", sc.Text(), err)
		}
		got[r.ID] = r
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got[1].Err, "unknown op") || !strings.Contains(got[-1].Err, "bad command") || !strings.Contains(got[2].Err, "no member nobody") {
		t.Errorf("errors: %+v", got)
	}
	if got[3].Err != "" || len(got[3].Views) != 0 || got[4].Err != "" || got[4].CPU <= 0 {
		t.Errorf("views/stats of an empty worker: %+v %+v", got[3], got[4])
	}
	if err := RunWorker(context.Background(), strings.NewReader(""), io.Discard, WorkerConfig{}); err == nil {
		t.Error("a worker without a key started")
	}
}
