package actors

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/qlc-project/qlc/messages"
	"github.com/qlc-project/qlc/stagework/openai"
)

// boundaryProfiles: four stages of k tokens each at zero latency, on the
// simulator ("sim") or on a real OpenAI-compatible HTTP upstream on
// loopback ("http", the openai provider against openai.Mock). The models
// have a known context window, so every stage's prompt is fitted (counted
// with the tokenizer) as in production.
func boundaryProfiles(k int, upstream string) string {
	return fmt.Sprintf(`
default_profile: sim
providers:
  sim:  {kind: sim, sim: {output_tokens: %[1]d, truncate_at_max_tokens: true}}
  http: {kind: openai, base_url: %[2]s/v1}
profiles:
  sim:
    provider: sim
    stages:
      generator: {model: gpt-4o-mini, max_tokens: %[1]d}
      refiner: {model: gpt-4o-mini, max_tokens: %[1]d}
      validator: {model: gpt-4o-mini, max_tokens: %[1]d}
      curator: {model: gpt-4o-mini, max_tokens: %[1]d}
  http:
    provider: http
    stages:
      generator: {model: gpt-4o-mini, max_tokens: %[1]d}
      refiner: {model: gpt-4o-mini, max_tokens: %[1]d}
      validator: {model: gpt-4o-mini, max_tokens: %[1]d}
      curator: {model: gpt-4o-mini, max_tokens: %[1]d}
`, k, upstream)
}

// BenchmarkStageBoundary: what QLC spends between two stages of a run, in
// one process, with a zero-latency provider: from the event that ends a
// stage to the next stage's first TokenDelta, timed by the coordinator's
// own timestamps on the events (RunEvent.time, set as each event enters the
// log the hub receives). Two figures per boundary (3 per run):
//
//   - boundary: StageCompleted of stage i → first TokenDelta of stage i+1
//     (stop the worker, fit the next prompt, spawn its worker, the
//     provider's request and its first chunk, the hops back);
//   - gap: last TokenDelta of stage i → first TokenDelta of stage i+1 (the
//     above, plus the end of stage i's stream: its usage, StageAttemptDone).
//
// Sub-benchmarks: provider sim (the simulator, no I/O) or http (the openai
// provider against openai.Mock on loopback: a real request per stage), and
// k tokens per stage. Reported: p50/p99 of each in µs, and with http the
// upstream connections opened per run (0 once they are kept alive).
func BenchmarkStageBoundary(b *testing.B) {
	for _, prov := range []string{"sim", "http"} {
		for _, k := range []int{5, 200} {
			b.Run(fmt.Sprintf("provider=%s/k=%d", prov, k), func(b *testing.B) {
				mock := &openai.Mock{Tokens: k}
				srv := httptest.NewUnstartedServer(mock)
				srv.Config.ConnState = mock.ConnState
				srv.Start()
				defer srv.Close()
				e := newSlotEngine(b, boundaryProfiles(k, srv.URL), nil)
				for range 20 { // warm up: vocabularies, pools, connections
					boundaryRun(b, e, prov)
				}
				conns0 := mock.Conns()
				var bounds, gaps []time.Duration
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					bd, gp := boundaryRun(b, e, prov)
					bounds = append(bounds, bd...)
					gaps = append(gaps, gp...)
				}
				b.StopTimer()
				us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
				b.ReportMetric(us(fairPercentile(bounds, 50)), "boundary-p50-µs")
				b.ReportMetric(us(fairPercentile(bounds, 99)), "boundary-p99-µs")
				b.ReportMetric(us(fairPercentile(gaps, 50)), "gap-p50-µs")
				b.ReportMetric(us(fairPercentile(gaps, 99)), "gap-p99-µs")
				if prov == "http" {
					b.ReportMetric(float64(mock.Conns()-conns0)/float64(b.N), "conns/run")
				}
			})
		}
	}
}

// boundaryRun runs one run to its end and returns its stage boundaries and
// gaps (see BenchmarkStageBoundary).
func boundaryRun(b *testing.B, e *Engine, profile string) (bounds, gaps []time.Duration) {
	b.Helper()
	h, err := e.StartRun(RunRequest{Profile: profile, Query: "How do B-trees stay balanced?", Seed: 1, NoCache: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sub := h.Subscribe(1)
	defer sub.Close()
	var log []*messages.RunEvent
	for {
		evs, err := sub.Next(ctx, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		log = append(log, evs...)
	}
	if log[len(log)-1].GetRunCompleted() == nil {
		b.Fatalf("run did not complete: %v", log[len(log)-1])
	}
	var completed, lastDelta time.Time
	first := false // waiting for a stage's first delta
	for _, ev := range log {
		t := ev.GetTime().AsTime()
		switch {
		case ev.GetTokenDelta() != nil:
			if first {
				bounds = append(bounds, t.Sub(completed))
				gaps = append(gaps, t.Sub(lastDelta))
				first = false
			}
			lastDelta = t
		case ev.GetStageCompleted() != nil:
			completed, first = t, true
		}
	}
	if len(bounds) != 3 {
		b.Fatalf("%d stage boundaries, want 3", len(bounds))
	}
	return bounds, gaps
}
