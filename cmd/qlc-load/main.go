// Command qlc-load is QLC's streaming load generator: it drives a QLC
// gateway (runs over SSE or WebSocket, runs with "stream": true, or the
// OpenAI-compatible chat endpoint) or any OpenAI-compatible server, in an
// open or a closed loop, and reports TTFT, ITL, TPOT, end-to-end latency,
// throughput and errors by code, as a summary on stdout, a JSON file and a
// self-contained HTML report. Everything but the flags is package loadgen.
//
//	qlc-load -url http://localhost:8080 -key $KEY -rate 5 -n 200 -d 1m -mix mix.jsonl
//
// Ctrl-C stops the load; the results so far are still written.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/qlc-project/qlc/loadgen"
)

type nodeFlag map[string]string

func (n nodeFlag) String() string { return fmt.Sprint(map[string]string(n)) }

func (n nodeFlag) Set(v string) error {
	name, url, ok := strings.Cut(v, "=")
	if !ok || name == "" || url == "" {
		return errors.New("want NAME=URL (a node's /metrics)")
	}
	n[name] = url
	return nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("qlc-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	d := loadgen.DefaultConfig()
	cfg := d
	target := fs.String("target", string(d.Target), "runs (POST /v1/runs + SSE), runs-stream (POST with \"stream\": true), ws (WebSocket), chat (/v1/chat/completions, any OpenAI-compatible server)")
	arrival := fs.String("arrival", string(d.Arrival), "open loop's arrivals: constant or poisson")
	fs.StringVar(&cfg.URL, "url", envOr("QLC_URL", d.URL), "server address (QLC_URL)")
	fs.StringVar(&cfg.APIKey, "key", os.Getenv("QLC_API_KEY"), "API key (QLC_API_KEY)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: sends per second (latency counted from each scheduled send); 0: closed loop of -c workers")
	fs.IntVar(&cfg.Concurrency, "c", d.Concurrency, "closed loop: concurrent requests")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", d.MaxInFlight, "open loop: most requests in flight (a late send counts as latency)")
	fs.IntVar(&cfg.Requests, "n", d.Requests, "most requests to send")
	fs.DurationVar(&cfg.Duration, "d", d.Duration, "longest time to send")
	fs.DurationVar(&cfg.Drain, "drain", d.Drain, "after sending, how long requests in flight may take to end")
	mixFile := fs.String("mix", "", "mix file: one JSON or YAML-flow item per line: {profile, model, query | query_words, max_tokens, weight, name}")
	profile := fs.String("profile", "", "without -mix: the profile of every request (default: the tenant's)")
	model := fs.String("model", "", "without -mix, chat target: the model (default qlc-<profile>)")
	words := fs.Int("query-words", 20, "without -mix: words in each made question")
	fs.BoolVar(&cfg.ChatThinking, "thinking", false, "chat target: ask for qlc-<profile>-thinking (earlier steps stream as reasoning)")
	fs.StringVar(&cfg.Tokenizer, "tokenizer", d.Tokenizer, "chat target's token count: o200k_base, cl100k_base or chunks")
	fs.Float64Var(&cfg.CancelProbes, "cancel-probes", 0, "fraction of requests cancelled (DELETE) at a random time within -cancel-within of their first event")
	fs.DurationVar(&cfg.CancelWithin, "cancel-within", d.CancelWithin, "cancel probes' window")
	fs.Float64Var(&cfg.ReconnectProbes, "reconnect-probes", 0, "fraction of run streams dropped once and resumed with Last-Event-ID (checked gap-free)")
	fs.IntVar(&cfg.ReconnectWithin, "reconnect-within", d.ReconnectWithin, "reconnect probes drop after 1..N events")
	seed := fs.Uint64("seed", d.Seed, "seed of the mix, the Poisson arrivals and the probes")
	fs.StringVar(&cfg.ServerMetrics, "server-metrics", "", "the server's Prometheus /metrics (QLC: its ops address): compare its histograms and usage ledger with the load's figures")
	fs.StringVar(&cfg.MetricsKey, "metrics-key", os.Getenv("QLC_ADMIN_KEY"), "key for -server-metrics on the API address (QLC_ADMIN_KEY)")
	nodes := nodeFlag{}
	fs.Var(nodes, "node", "NAME=URL of a node's /metrics, sampled every second for per-node load (repeatable)")
	jsonOut := fs.String("json", "qlc-load.json", "JSON results file (\"\": none)")
	htmlOut := fs.String("html", "qlc-load.html", "HTML report (\"\": none)")
	agreeWithin := fs.Float64("agree-within", 0, "with -server-metrics: exit 3 when a latency differs from the server's by more than this many per cent (0: no check)")
	progress := fs.String("progress", "auto", "live progress line on stderr: auto (when a terminal), on, off")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "qlc-load: unexpected arguments %q\n", fs.Args())
		return 2
	}
	cfg.Target, cfg.Arrival, cfg.Seed, cfg.Nodes = loadgen.Target(*target), loadgen.Arrival(*arrival), *seed, nodes
	if *mixFile != "" {
		data, err := os.ReadFile(*mixFile)
		if err != nil {
			fmt.Fprintln(stderr, "qlc-load:", err)
			return 2
		}
		if cfg.Mix, err = loadgen.ParseMix(data); err != nil {
			fmt.Fprintln(stderr, "qlc-load:", err)
			return 2
		}
	} else {
		cfg.Mix = []loadgen.MixItem{{Profile: *profile, Model: *model, QueryWords: *words, Weight: 1}}
	}
	switch *progress {
	case "on":
		cfg.Progress = stderr
	case "auto":
		if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			cfg.Progress = stderr
		}
	case "off":
	default:
		fmt.Fprintln(stderr, "qlc-load: -progress is auto, on or off")
		return 2
	}

	// The first Ctrl-C (or SIGTERM) stops the load and writes what it has;
	// a second one kills the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	start := time.Now()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "qlc-load:", err)
		return 2
	}
	rep.WriteSummary(stdout)
	code := 0
	for _, out := range []string{*jsonOut, *htmlOut} {
		if out == "" {
			continue
		}
		if err := rep.WriteFile(out); err != nil {
			fmt.Fprintln(stderr, "qlc-load:", err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "wrote %s\n", out)
	}
	if *agreeWithin > 0 {
		switch ag := rep.Agreement; {
		case ag == nil || len(ag.Rows) == 0:
			fmt.Fprintln(stderr, "qlc-load: -agree-within: no comparison with the server was made (give -server-metrics)")
			code = 3
		case ag.MaxAbsDiffPct > *agreeWithin:
			fmt.Fprintf(stderr, "qlc-load: the load's latencies differ from the server's by up to %.2f %% (more than %g %%)\n", ag.MaxAbsDiffPct, *agreeWithin)
			code = 3
		default:
			fmt.Fprintf(stdout, "agreement: within %.2f %% of the server's figures (bound %g %%)\n", ag.MaxAbsDiffPct, *agreeWithin)
		}
	}
	if rep.Interrupted {
		fmt.Fprintf(stderr, "qlc-load: interrupted after %.1f s\n", time.Since(start).Seconds())
		if code == 0 {
			code = 130
		}
	}
	return code
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
