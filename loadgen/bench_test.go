package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// fastServer answers every POST /v1/runs (stream: true) and every chat
// completion at once with a whole precomputed stream of tokens events of
// one token each — as the gateway frames them — so that nearly all the
// CPU the benchmark spends is the load generator's reading and measuring.
func fastServer(b *testing.B, tokens int) *httptest.Server {
	var run, chat bytes.Buffer
	seq := 1
	ev := func(typ, data string) {
		fmt.Fprintf(&run, "id: %d\nevent: %s\ndata: {\"seq\":%d,\"type\":\"%s\",\"time\":\"2026-01-01T00:00:00.000000Z\"%s}\n\n", seq, typ, seq, typ, data)
		seq++
	}
	ev("stage_started", `,"step":"curator","stage":"curator","model":"sim","provider":"sim","attempt":1,"fallback":false,"final":true`)
	fmt.Fprint(&chat, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n")
	for i := 0; i < tokens; i++ {
		ev("token_delta", `,"step":"curator","stage":"curator","text":" word","tokens":1`)
		fmt.Fprint(&chat, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" word\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n")
	}
	ev("stage_completed", `,"step":"curator","stage":"curator","model":"sim","output_bytes":5000,"usage":{"prompt_tokens":10,"completion_tokens":1000,"total_tokens":1010},"ttft_ms":1,"duration_ms":2`)
	ev("run_completed", `,"answer_bytes":5000,"usage":{"prompt_tokens":10,"completion_tokens":1000,"total_tokens":1010}`)
	fmt.Fprint(&chat, "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("X-QLC-Run-Id", "run_bench")
		if r.URL.Path == "/v1/chat/completions" {
			w.Write(chat.Bytes())
			return
		}
		w.Write(run.Bytes())
	}))
	b.Cleanup(srv.Close)
	return srv
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDriveTokens is the load generator's own overhead: how many
// streamed tokens per second it reads and measures (arrival stamps, event
// parsing, per-step ITL, histograms) against a server that costs almost
// nothing. Run it on one core: go test -run '^$' -bench DriveTokens -cpu 1
// ./loadgen/ (the in-process server shares that core: the figure is a
// floor). tokens/cpu-s is per CPU-second of the whole process.
func BenchmarkDriveTokens(b *testing.B) {
	const tokens, runs = 1000, 40
	for _, target := range []Target{TargetRunsStream, TargetChat} {
		b.Run(string(target), func(b *testing.B) {
			srv := fastServer(b, tokens)
			keep := false
			var total int64
			var wall, cpu time.Duration
			b.ReportAllocs()
			for b.Loop() {
				cfg := DefaultConfig()
				cfg.URL, cfg.Target, cfg.Concurrency, cfg.Requests, cfg.KeepRequests = srv.URL, target, 4, runs, &keep
				cfg.Mix = []MixItem{{Profile: "p", Query: "q", Weight: 1}}
				c0, t0 := cpuTime(), time.Now()
				rep, err := Run(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				wall += time.Since(t0)
				cpu += cpuTime() - c0
				if rep.Outcomes[OutcomeOK] != runs {
					b.Fatalf("outcomes %v %v", rep.Outcomes, rep.ErrorSamples)
				}
				total += rep.Tokens
			}
			b.ReportMetric(float64(total)/wall.Seconds(), "tokens/s")
			b.ReportMetric(float64(total)/cpu.Seconds(), "tokens/cpu-s")
		})
	}
}
