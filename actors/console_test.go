package actors

import (
	"context"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
)

// One process: the console's reply names it, lists its breakers (every
// endpoint closed), lists a run in flight until it ends, and TraceSpans
// answers from Config.TraceSpans.
func TestConsoleNodesOneProcess(t *testing.T) {
	asked := ""
	e, _ := newTestEngine(t, func(c *Config) {
		c.TraceSpans = func(id string) []*messages.TraceSpan {
			asked = id
			return []*messages.TraceSpan{{TraceId: id, Name: "qlc.run"}}
		}
	})
	h, err := e.StartRun(RunRequest{Profile: "hang", Query: "q", Tenant: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if got := e.InFlight(10); len(got) != 1 || got[0] != h {
		t.Fatalf("InFlight = %v", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	var r *messages.ConsoleReply
	for time.Now().Before(deadline) {
		nodes := e.ConsoleNodes()
		if len(nodes) != 1 {
			t.Fatalf("%d replies, want 1", len(nodes))
		}
		if r = nodes[0]; len(r.Runs) == 1 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r.Node != e.Address() || len(r.Runs) != 1 || r.Runs[0].RunId != h.RunID || r.Hosted != 1 {
		t.Fatalf("reply %v", r)
	}
	if len(r.Breakers) == 0 || r.Breakers[0].State != "closed" {
		t.Fatalf("breakers %v", r.Breakers)
	}
	spans, complete := e.TraceSpans("abc")
	if !complete || len(spans) != 1 || asked != "abc" {
		t.Fatalf("TraceSpans: %v %v (asked %q)", spans, complete, asked)
	}
	if err := e.Cancel(h.RunID, "test"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.WaitDone(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.InFlight(10); len(got) != 0 {
		t.Fatalf("InFlight after the end = %d", len(got))
	}
}
