package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Names of the TTFT arms.
const (
	armDirect1 = "direct to the mock"
	armProxy1  = "httputil.ReverseProxy (floor)"
	armQLC1    = "QLC /v1/chat/completions, profile peers-one"
	armProxy4  = "4 requests in a row through the proxy (floor)"
	armQLC4    = "QLC /v1/chat/completions, profile peers-four"
)

// options are the command's flags.
type options struct {
	gatewayBin, centrifugoBin, centrifugoVersion string
	targets, modes                               []string
	readers                                      []int
	rounds                                       int
	fan                                          fanConfig
	fullTokens                                   int
	ttft                                         ttftConfig
	skipFan, skipTTFT                            bool
	budget                                       time.Duration
	seed                                         uint64
	out, jsonOut, command                        string
	keep                                         bool
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-peers:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("benchpeers", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.gatewayBin, "gateway", ".qlc/bin/qlc-gateway", "the built cmd/gateway")
	fs.StringVar(&o.centrifugoBin, "centrifugo", ".qlc/bin/centrifugo", "the centrifugo binary")
	fs.StringVar(&o.centrifugoVersion, "centrifugo-version", "v6.9.1", "the version the centrifugo binary was installed at (for the table: a module build reports 0.0.0)")
	targets := fs.String("targets", "QLC,Centrifugo", "fan-out targets, comma-separated")
	modes := fs.String("modes", "paced,full", "fan-out sources: paced (at -rate) and/or full (as fast as the server accepts)")
	readers := fs.String("readers", "100,1000", "SSE readers per round, comma-separated")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds of every configuration (interleaved in random order), and of the TTFT arms")
	fs.IntVar(&o.fan.Tokens, "tokens", 600, "paced: tokens a round (QLC: four stages of tokens/4)")
	fs.Float64Var(&o.fan.Rate, "rate", 100, "paced: tokens per second")
	fs.IntVar(&o.fan.Warm, "warm", 100, "tokens of warm-up at the start of a round (left out of deliveries/s and latency)")
	fs.IntVar(&o.fullTokens, "full-tokens", 20000, "full speed: QLC's tokens a round (four stages)")
	fs.IntVar(&o.fan.FullMax, "full-max", 20000, "full speed: most tokens Centrifugo's publisher sends a round")
	fs.DurationVar(&o.fan.FullFor, "full-for", 5*time.Second, "full speed: longest Centrifugo's publisher publishes a round")
	fs.IntVar(&o.fan.Batch, "batch", 50, "full speed: publications per Centrifugo /api/batch request")
	fs.IntVar(&o.fan.Dials, "dials", 50, "readers connecting at once")
	fs.DurationVar(&o.fan.Settle, "settle", 1500*time.Millisecond, "wait after a server starts (idle RSS) and after its readers leave (RSS after)")
	fs.DurationVar(&o.fan.Deadline, "deadline", 60*time.Second, "longest a round may take once readers connect")
	ttftTokens := fs.String("ttft-tokens", "50,1000", "TTFT: answer lengths (tokens a stage from the mock), comma-separated; two or more give the added cost per token")
	fs.IntVar(&o.ttft.Requests, "ttft-requests", 100, "TTFT: measured answers per arm and round")
	fs.IntVar(&o.ttft.Warm, "ttft-warm", 10, "TTFT: warm-up answers per arm and round")
	fs.BoolVar(&o.skipFan, "skip-fanout", false, "skip the fan-out part")
	fs.BoolVar(&o.skipTTFT, "skip-ttft", false, "skip the TTFT part")
	fs.DurationVar(&o.budget, "budget", 9*time.Minute, "time budget: no round starts after it (what was measured is reported)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of the round order; 0: from the clock")
	fs.StringVar(&o.out, "out", ".qlc/bench-peers.md", "write the markdown report here too (empty: stdout only)")
	fs.StringVar(&o.jsonOut, "json", ".qlc/bench-peers.json", "write every round's raw figures here (empty: none)")
	fs.StringVar(&o.command, "command", "", "the command to name in the report (default: this program's arguments)")
	fs.BoolVar(&o.keep, "keep", false, "keep the work folder (server logs, configs with their generated keys) after the run")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	o.targets, o.modes = splitList(*targets), splitList(*modes)
	for _, s := range splitList(*ttftTokens) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 || n > 100_000 {
			return nil, fmt.Errorf("-ttft-tokens: %q is not a count in [2, 100000]", s)
		}
		o.ttft.Tokens = append(o.ttft.Tokens, n)
	}
	for _, s := range splitList(*readers) {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return nil, fmt.Errorf("-readers: %q is not a count in [1, 10000]", s)
		}
		o.readers = append(o.readers, n)
	}
	for _, t := range o.targets {
		if t != "QLC" && t != "Centrifugo" {
			return nil, fmt.Errorf("-targets: unknown target %q (QLC, Centrifugo)", t)
		}
	}
	for _, m := range o.modes {
		if m != modePaced && m != modeFull {
			return nil, fmt.Errorf("-modes: unknown mode %q (paced, full)", m)
		}
	}
	switch {
	case o.rounds < 1 || o.rounds > 20:
		return nil, errors.New("-rounds: 1 to 20")
	case o.fan.Rate <= 0 || o.fan.Rate > 10000:
		return nil, errors.New("-rate: (0, 10000] tokens/s")
	case o.fan.Tokens < 8 || o.fan.Tokens > 1_000_000 || o.fullTokens < 8 || o.fullTokens > 10_000_000 || o.fan.FullMax < 1 || o.fan.FullMax > 10_000_000:
		return nil, errors.New("-tokens, -full-tokens, -full-max: out of range")
	case o.fan.Warm < 0 || o.fan.Warm >= o.fan.Tokens || o.fan.Warm >= o.fullTokens || o.fan.Warm >= o.fan.FullMax:
		return nil, errors.New("-warm: must be below -tokens, -full-tokens and -full-max")
	case len(o.ttft.Tokens) == 0 || o.ttft.Requests < 1 || o.ttft.Requests > 10_000 || o.ttft.Warm < 0 || o.ttft.Warm > 10_000:
		return nil, errors.New("-ttft-tokens, -ttft-requests, -ttft-warm: out of range")
	case o.fan.Batch < 1 || o.fan.Batch > 10_000 || o.fan.Dials < 1:
		return nil, errors.New("-batch, -dials: out of range")
	}
	if o.seed == 0 {
		o.seed = uint64(time.Now().UnixNano())
	}
	if o.command == "" {
		o.command = "go run ./bench/peers " + strings.Join(args, " ")
	}
	return o, nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// report is everything the run measured, for the JSON file.
type report struct {
	Date     string        `json:"date"`
	Machine  string        `json:"machine"`
	Command  string        `json:"command"`
	Seed     uint64        `json:"seed"`
	Rounds   []roundResult `json:"fanout_rounds"`
	TTFT     []ttftRound   `json:"ttft_rounds"`
	Problems []string      `json:"problems,omitempty"`
}

func run(args []string, stdout io.Writer) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	deadline := time.Now().Add(o.budget)
	// Every server's folder (config or data, generated keys, log) is in
	// here: 0700, removed at the end (unless -keep).
	work, err := os.MkdirTemp("", "bench-peers-*")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "bench-peers: work folder (kept):", work)
	} else {
		defer os.RemoveAll(work)
	}
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	rep := report{Date: time.Now().UTC().Format(time.RFC3339), Machine: machine(), Command: o.command, Seed: o.seed}
	logf := func(format string, a ...any) { fmt.Fprintf(os.Stderr, "bench-peers: "+format+"\n", a...) }

	if !o.skipFan {
		rep.Rounds, rep.Problems = runFanOut(ctx, o, work, rng, deadline, logf)
	}
	var ttftRows []ttftRow
	if !o.skipTTFT && ctx.Err() == nil {
		rows, rounds, err := runTTFTPart(ctx, o, work, rng, deadline, logf)
		ttftRows, rep.TTFT = rows, rounds
		if err != nil {
			rep.Problems = append(rep.Problems, "TTFT: "+err.Error())
		}
	}

	var md bytes.Buffer
	writeReport(&md, o, &rep, ttftRows)
	if _, err := stdout.Write(md.Bytes()); err != nil {
		return err
	}
	if o.out != "" {
		if err := os.WriteFile(o.out, md.Bytes(), 0o644); err != nil {
			return err
		}
		logf("report written to %s", o.out)
	}
	if o.jsonOut != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// runFanOut runs every fan-out configuration o.rounds times: in each round
// the configurations and targets go in a random order. A round that fails
// is reported and left out; no round starts after the deadline.
func runFanOut(ctx context.Context, o *options, work string, rng *rand.Rand, deadline time.Time, logf func(string, ...any)) ([]roundResult, []string) {
	targets := map[string]fanTarget{
		"QLC":        &qlcTarget{bin: o.gatewayBin, work: work},
		"Centrifugo": &centrifugoTarget{bin: o.centrifugoBin, work: work},
	}
	type job struct {
		target string
		cfg    fanConfig
	}
	var jobs []job
	for _, n := range o.readers {
		for _, m := range o.modes {
			for _, t := range o.targets {
				c := o.fan
				c.Mode, c.Readers = m, n
				if m == modeFull && t == "QLC" {
					c.Tokens = o.fullTokens
				}
				jobs = append(jobs, job{t, c})
			}
		}
	}
	maxReaders := 0
	for _, n := range o.readers {
		maxReaders = max(maxReaders, n)
	}
	client := readerClient(maxReaders)
	var results []roundResult
	var problems []string
	for r := 1; r <= o.rounds; r++ {
		rng.Shuffle(len(jobs), func(i, j int) { jobs[i], jobs[j] = jobs[j], jobs[i] })
		for _, j := range jobs {
			if ctx.Err() != nil {
				return results, append(problems, "interrupted")
			}
			if time.Now().After(deadline) {
				return results, append(problems, fmt.Sprintf("time budget spent: round %d of %d stopped", r, o.rounds))
			}
			logf("round %d: %s, %d readers, %s", r, j.target, j.cfg.Readers, j.cfg.Mode)
			res, err := runFanRound(ctx, targets[j.target], j.cfg, r, client)
			client.CloseIdleConnections()
			if err != nil {
				p := fmt.Sprintf("round %d, %s, %d readers, %s: %v", r, j.target, j.cfg.Readers, j.cfg.Mode, err)
				logf("%s", p)
				problems = append(problems, p)
				continue
			}
			logf("  %.0f deliveries/s, p50 %.2f ms, p99 %.2f ms, %.2f µs CPU/delivery, %d lost%s",
				res.DeliveriesPerS, res.P50ms, res.P99ms, res.CPUPerDelivery, res.Lost, problemSuffix(res.FirstProblem))
			if res.FirstProblem != "" {
				problems = append(problems, fmt.Sprintf("round %d, %s, %d readers, %s: %s", r, j.target, j.cfg.Readers, j.cfg.Mode, res.FirstProblem))
			}
			results = append(results, res)
		}
	}
	return results, problems
}

func problemSuffix(p string) string {
	if p == "" {
		return ""
	}
	return " (" + p + ")"
}

// runTTFTPart starts the mock upstream, the floor proxy and a QLC gateway
// whose TTFT profiles use the mock, and measures every arm.
func runTTFTPart(ctx context.Context, o *options, work string, rng *rand.Rand, deadline time.Time, logf func(string, ...any)) ([]ttftRow, []ttftRound, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	longest := slices.Max(o.ttft.Tokens)
	mockBase, err := serveLoopback(sctx, &mockUpstream{tokens: longest})
	if err != nil {
		return nil, nil, err
	}
	mu, _ := url.Parse(mockBase)
	proxyBase, err := serveLoopback(sctx, newFloorProxy(mu))
	if err != nil {
		return nil, nil, err
	}
	// The profiles' stages allow the longest answer; each request's
	// max_tokens (which QLC applies to every stage) asks for its length.
	g, err := startQLC(ctx, o.gatewayBin, work, "qlc-ttft", qlcProfileFile(o.fan, leadIn(1), mockBase+"/v1", longest))
	if err != nil {
		return nil, nil, err
	}
	defer g.close()
	const path = "/v1/chat/completions"
	var arms []ttftArm
	for _, k := range o.ttft.Tokens {
		arms = append(arms,
			ttftArm{Name: armDirect1, Stages: 1, Calls: 1, Tokens: k, URL: mockBase + path, Model: "bench-model"},
			ttftArm{Name: armProxy1, Stages: 1, Calls: 1, Tokens: k, URL: proxyBase + path, Model: "bench-model"},
			ttftArm{Name: armQLC1, Stages: 1, Calls: 1, Tokens: k, URL: g.base + path, Key: g.key, Model: "qlc-" + profOne},
			ttftArm{Name: armProxy4, Stages: 4, Calls: 4, Tokens: k, URL: proxyBase + path, Model: "bench-model"},
			ttftArm{Name: armQLC4, Stages: 4, Calls: 1, Tokens: k, URL: g.base + path, Key: g.key, Model: "qlc-" + profFour},
		)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	client := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	cfg := o.ttft
	cfg.Rounds = o.rounds
	logf("TTFT: %d arms × %d rounds × (%d + %d) answers of %v tokens a stage", len(arms), cfg.Rounds, cfg.Warm, cfg.Requests, cfg.Tokens)
	rounds, err := runTTFT(ctx, client, arms, cfg, rng, deadline)
	var rows []ttftRow
	for _, a := range arms {
		row := ttftRow{Arm: a}
		for _, r := range rounds {
			if r.Arm == a.Name && r.Tokens == a.Tokens {
				row.Rounds = append(row.Rounds, r)
			}
		}
		rows = append(rows, row)
	}
	return rows, rounds, err
}

// machine describes this machine: cores, CPU model, memory, Go.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					mem = fmt.Sprintf(", %.0f GiB", kb/(1<<20))
				}
			}
		}
	}
	return fmt.Sprintf("%d cores (nproc), %s%s, %s %s/%s", runtime.NumCPU(), model, mem, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// writeReport writes the markdown report.
func writeReport(w io.Writer, o *options, rep *report, ttft []ttftRow) {
	fmt.Fprintf(w, "### bench-peers, %s\n\n", rep.Date)
	fmt.Fprintf(w, "Machine: %s; load average (1 min) at the rounds: %s. Command: `%s` (seed %d). Centrifugo %s (memory engine, uni_sse, default 1 MiB client queue).\n\n",
		rep.Machine, loadRange(rep), mdEscape(rep.Command), rep.Seed, o.centrifugoVersion)
	if len(rep.Rounds) > 0 {
		fmt.Fprintf(w, "Fan-out: one stream to N SSE readers, a fresh server per round, %d round(s) per row in random order; median (range). Paced: %d tokens at %g tokens/s; full speed: QLC %d tokens (zero-latency simulator), Centrifugo /api/batch of %d for up to %d tokens or %s. The first %d tokens are a warm-up.\n\n",
			o.rounds, o.fan.Tokens, o.fan.Rate, o.fullTokens, o.fan.Batch, o.fan.FullMax, o.fan.FullFor, o.fan.Warm)
		rows := groupRounds(rep.Rounds, o.readers, o.modes, o.targets)
		writeFanTable(w, rows, o.fan.Rate)
		fmt.Fprintln(w)
		writeComparisons(w, rows)
		fmt.Fprintln(w)
	}
	if len(ttft) > 0 {
		fmt.Fprintf(w, "TTFT and per-token cost over the floor: a zero-latency OpenAI-compatible mock (in the benchmark process) streaming %v tokens a stage (each chunk written and flushed on its own), one request at a time, %d answers per arm, length and round after %d of warm-up, %d round(s) in random order; median (range) of the rounds' figures. TTFT: request sent → first chunk with content; E2E: → `[DONE]`.\n\n",
			o.ttft.Tokens, o.ttft.Requests, o.ttft.Warm, o.rounds)
		writeTTFTTable(w, ttft)
		fmt.Fprintln(w)
	}
	if len(rep.Problems) > 0 {
		fmt.Fprintln(w, "Problems:")
		for _, p := range rep.Problems {
			fmt.Fprintf(w, "- %s\n", mdEscape(p))
		}
		fmt.Fprintln(w)
	}
}

// loadRange is the range of the 1-minute load average over the rounds.
func loadRange(rep *report) string {
	var vs []float64
	for _, r := range rep.Rounds {
		vs = append(vs, r.Load1)
	}
	for _, r := range rep.TTFT {
		vs = append(vs, r.Load1)
	}
	s := summary(vs)
	if s.N == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f–%.1f", s.Min, s.Max)
}
