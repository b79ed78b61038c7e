package main

// The overload scenario (issue 18): offered load at 3× the cluster's
// measured capacity, on CPU-limited nodes, must be refused early and
// cheaply while what is admitted runs at full speed, and the failure
// detector must not take the starved nodes for dead.
//
//  1. Start cfg.Nodes nodes and a gateway (local processes). The nodes are
//     CPU-limited: all of them pinned with taskset to the last CPU, with
//     GOMAXPROCS=1, sharing it with a CPU-burning co-runner (this program,
//     -burn), so each node gets about 1/(nodes+1) of one core. The gateway
//     runs on the other CPUs (it must not be the bottleneck).
//  2. Unloaded: one client per node in a closed loop for the calibration
//     time (max(5 s, min(15 s, duration/4))): the unloaded p50 and p99.
//  3. Capacity: closed loops of 4 clients per node, doubling, each for
//     max(3 s, calibration/2) (a refused client waits 200 ms and asks
//     again), until the throughput stops growing by 10 %: capacity = the
//     best runs completed per second with p99 within 2× the unloaded one
//     (what the cluster serves at full speed).
//  4. Overload: open-loop arrivals at 3× capacity for cfg.Duration (one
//     request per arrival, at most maxOverloadInflight in flight): goodput,
//     refusals by code, whether each refusal carried Retry-After and how
//     long it took, p99 of the admitted runs.
//  5. From every process's metrics, before and after: suspicions, suspect
//     timeouts (members declared dead) and fencings, stage restarts and
//     failovers; a run that got no answer, a 5xx that is not a refusal,
//     or a broken answer is lost.
//
// Every request is a non-streaming chat completion of the overload profile
// (four short simulated stages), as the operator did.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// overloadProfiles: one profile of four stages, each ~25 ms to the first
// token and 40 tokens 2 ms apart (a run is ~0.5 s unloaded), so CPU, not
// the simulated models' waits, is what a starved node runs out of.
const overloadProfiles = `default_profile: overload
providers:
  fast: {kind: sim, sim: {ttft: 25ms, ttft_jitter: 5ms, itl: 2ms, itl_jitter: 1ms, output_tokens: 40}}
profiles:
  overload:
    description: Four short simulated stages; about half a second a run.
    provider: fast
    stages:
      generator: {model: sim-a, max_tokens: 60}
      refiner:   {model: sim-a, max_tokens: 60}
      validator: {model: sim-a, max_tokens: 60}
      curator:   {model: sim-a, max_tokens: 60}
`

// maxOverloadInflight bounds the overload phase's requests in flight (an
// arrival beyond it is counted as not sent: the load generator's own
// limit, reported).
const maxOverloadInflight = 1000

// refusalBudget is issue 18's bound on a refusal's latency.
const refusalBudget = 5 * time.Millisecond

// overloadClient keeps a connection per request in flight alive (the
// shared clients keep 64): new connections for each request would measure
// the kernel's accept queue and exhaust loopback ports, not admission.
var overloadClient = &http.Client{Transport: withKey{&http.Transport{MaxIdleConns: maxOverloadInflight,
	MaxIdleConnsPerHost: maxOverloadInflight, IdleConnTimeout: time.Minute}}}

type outcome struct {
	status     int
	code       string // error.code of a refusal or error
	retryAfter bool
	dur        time.Duration
	err        error
}

func (o outcome) refused() bool {
	return o.status == http.StatusTooManyRequests || o.status == http.StatusServiceUnavailable
}

// chatOnce sends one non-streaming chat completion and classifies the answer.
func chatOnce(ctx context.Context, base string, n int) outcome {
	body, _ := json.Marshal(map[string]any{"model": "qlc-overload",
		"messages": []map[string]string{{"role": "user", "content": fmt.Sprintf("overload question %d", n)}}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/chat/completions", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	t0 := time.Now()
	resp, err := overloadClient.Do(req)
	if err != nil {
		return outcome{err: err, dur: time.Since(t0)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	o := outcome{status: resp.StatusCode, dur: time.Since(t0), retryAfter: resp.Header.Get("Retry-After") != "", err: err}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		o.code = e.Error.Code
		return o
	}
	var ok struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(b, &ok); err != nil || len(ok.Choices) == 0 || ok.Choices[0].Message.Content == "" {
		o.err = fmt.Errorf("broken answer: %.200s", b)
	}
	return o
}

// closedLoop runs clients that each send requests back to back until ctx
// ends (a refused one waits 20 ms first), and returns every outcome.
func closedLoop(ctx context.Context, base string, clients int) []outcome {
	var mu sync.Mutex
	var out []outcome
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() { // owned: ends with ctx
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				o := chatOnce(ctx, base, i*1_000_000+n)
				if ctx.Err() != nil && o.err != nil {
					return // cut by the phase's end: not an outcome
				}
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
				if o.refused() {
					sleep(ctx, 200*time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	return out
}

// openLoop sends requests at rate per second for d, each in its own
// goroutine (at most maxOverloadInflight at once), waits for the answers
// (each bounded by runTimeout) and returns them, and how many arrivals
// were not sent because the bound was reached.
func openLoop(ctx context.Context, base string, rate float64, d, runTimeout time.Duration) ([]outcome, int) {
	var mu sync.Mutex
	var out []outcome
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxOverloadInflight)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	skipped := 0
	for n := 0; ; n++ {
		at := start.Add(time.Duration(n) * interval)
		if at.Sub(start) >= d || ctx.Err() != nil {
			break
		}
		if wait := time.Until(at); wait > 0 && !sleep(ctx, wait) {
			break
		}
		select {
		case sem <- struct{}{}:
		default:
			skipped++
			continue
		}
		wg.Add(1)
		go func() { // owned: bounded by runTimeout
			defer wg.Done()
			defer func() { <-sem }()
			rctx, cancel := context.WithTimeout(context.Background(), runTimeout)
			defer cancel()
			o := chatOnce(rctx, base, 10_000_000+n)
			mu.Lock()
			out = append(out, o)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out, skipped
}

// burn is the CPU-burning co-runner (chaos -burn d): it spins until d has
// passed. Started pinned to the nodes' CPU; dies with its parent.
func burn(d time.Duration) int {
	runtime.GOMAXPROCS(1)
	end := time.Now().Add(d)
	x := uint64(1)
	for time.Now().Before(end) {
		for range 1 << 16 {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	if x == 42 {
		fmt.Println(x)
	}
	return 0
}

// clusterCounters are the failure-detector and restart counters summed
// over every process.
type clusterCounters struct {
	suspicions, suspectTimeouts, fencings, restarts, failovers float64
}

func readCounters(c *localCluster) clusterCounters {
	var cc clusterCounters
	names := []string{"qlc_cluster_suspicions_total", "qlc_cluster_suspect_timeouts_total", "qlc_cluster_fencings_total"}
	for _, n := range c.liveNodes() {
		m := metrics("http://"+n.ops+"/metrics", names...)
		cc.suspicions += m[names[0]]
		cc.suspectTimeouts += m[names[1]]
		cc.fencings += m[names[2]]
	}
	c.mu.Lock()
	gw := c.gwURL
	c.mu.Unlock()
	m := metrics(gw+"/metrics", append(names, "qlc_stage_restarts_total", "qlc_failovers_total")...)
	cc.suspicions += m[names[0]]
	cc.suspectTimeouts += m[names[1]]
	cc.fencings += m[names[2]]
	cc.restarts, cc.failovers = m["qlc_stage_restarts_total"], m["qlc_failovers_total"]
	return cc
}

type overloadFigures struct {
	command, machine, cpuLimit       string
	nodes                            int
	calib, dur                       time.Duration
	unloadedP50, unloadedP99         time.Duration
	capacity, offered                float64
	capRefused, capClients           int
	ramp                             []string
	ok, lost, sent, skipped          int
	goodput                          float64
	p50, p99, max                    time.Duration
	refusals                         map[string]int
	refusalNoRetryAfter, refusalSlow int
	refusalP99, refusalMax           time.Duration
	delta                            clusterCounters
	lostSamples                      []string
	// Where the refusals' time went (schedstat.go): the overload phase's
	// length, the gateway's and the load generator's CPU and wait for a
	// CPU, and the gateway's own timing of its refusals.
	window             time.Duration
	gwSched, selfSched schedStat
	serverRefusals     histogram
	doorRefusals       histogram // of serverRefusals, those at the door (the rest: the handler's)
}

func (f *overloadFigures) goals() [][3]string {
	mark := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	ratio := 0.0
	if f.capacity > 0 {
		ratio = f.goodput / f.capacity
	}
	nref := 0
	for _, n := range f.refusals {
		nref += n
	}
	return [][3]string{
		{"goodput ≥ 90 % of capacity", fmt.Sprintf("%.1f runs/s = %.0f %% of %.1f", f.goodput, 100*ratio, f.capacity), mark(ratio >= 0.9)},
		{"p99 of admitted ≤ 2× unloaded p99", fmt.Sprintf("%s vs %s (%.2f×)", ms(f.p99), ms(f.unloadedP99), float64(f.p99)/float64(max(f.unloadedP99, 1))), mark(f.p99 <= 2*f.unloadedP99)},
		{"0 false suspicions", fmt.Sprintf("%.0f suspicions, %.0f declared dead, %.0f fencings", f.delta.suspicions, f.delta.suspectTimeouts, f.delta.fencings), mark(f.delta.suspectTimeouts+f.delta.fencings == 0 && f.delta.suspicions == 0)},
		{"0 runs lost or restarted", fmt.Sprintf("%d lost, %.0f stages restarted, %.0f failovers", f.lost, f.delta.restarts, f.delta.failovers), mark(f.lost == 0 && f.delta.restarts == 0 && f.delta.failovers == 0)},
		{"every refusal has Retry-After", fmt.Sprintf("%d of %d without", f.refusalNoRetryAfter, nref), mark(f.refusalNoRetryAfter == 0)},
		{"every refusal in ≤ 5 ms", fmt.Sprintf("p99 %s, max %s, %d over 5 ms", ms(f.refusalP99), ms(f.refusalMax), f.refusalSlow), mark(f.refusalSlow == 0)},
	}
}

// correct: the goals that are correctness, not speed (the exit status).
func (f *overloadFigures) correct() bool {
	return f.lost == 0 && f.delta.restarts == 0 && f.delta.failovers == 0 && f.delta.suspectTimeouts == 0 && f.delta.fencings == 0 &&
		f.refusalNoRetryAfter == 0
}

func (f *overloadFigures) write(w io.Writer) {
	fmt.Fprintf(w, "\n## chaos: overload\n\n`%s`\n\n", f.command)
	fmt.Fprintf(w, "Machine: %s. %d nodes, %s; the gateway on the other CPUs. Calibration %v per phase, overload %v.\n\n", f.machine, f.nodes, f.cpuLimit, f.calib, f.dur)
	fmt.Fprintf(w, "| phase | figures |\n|---|---|\n")
	fmt.Fprintf(w, "| unloaded (%d clients, closed loop) | p50 %s, p99 %s |\n", f.nodes, ms(f.unloadedP50), ms(f.unloadedP99))
	fmt.Fprintf(w, "| capacity (closed loops, doubling) | %.1f runs/s at %d clients (%d refusals meanwhile); ramp: %s |\n", f.capacity, f.capClients, f.capRefused, strings.Join(f.ramp, "; "))
	fmt.Fprintf(w, "| overload (open loop) | offered %.1f runs/s (%.1f×), %d sent, %d not sent (generator bound %d) |\n", f.offered, f.offered/max(f.capacity, 0.001), f.sent, f.skipped, maxOverloadInflight)
	fmt.Fprintf(w, "| admitted | %d completed = %.1f runs/s; p50 %s, p99 %s, max %s |\n", f.ok, f.goodput, ms(f.p50), ms(f.p99), ms(f.max))
	fmt.Fprintf(w, "| refused | %s |\n", counts(f.refusals))
	if le, n := f.serverRefusals.quantile(0.99); n > 0 {
		p50, _ := f.serverRefusals.quantile(0.50)
		fmt.Fprintf(w, "| refusals inside the gateway (handler entry → answer written, qlc_refusal_seconds) | %.0f timed; p50 ≤ %s, p99 ≤ %s (bucket bounds)%s |\n", n, secs(p50), secs(le), f.refusalsWhere())
	}
	if f.window > 0 {
		fmt.Fprintf(w, "| the gateway's process in the overload phase | %s |\n", f.gwSched.describe(f.window))
		fmt.Fprintf(w, "| the load generator (this program) | %s |\n", f.selfSched.describe(f.window))
	}
	fmt.Fprintf(w, "| failure detector | %.0f suspicions, %.0f suspect timeouts (declared dead), %.0f fencings |\n", f.delta.suspicions, f.delta.suspectTimeouts, f.delta.fencings)
	fmt.Fprintf(w, "| lost / restarted | %d lost, %.0f stage restarts, %.0f failovers |\n\n", f.lost, f.delta.restarts, f.delta.failovers)
	fmt.Fprintf(w, "| goal | measured | met |\n|---|---|---|\n")
	for _, g := range f.goals() {
		fmt.Fprintf(w, "| %s | %s | %s |\n", g[0], g[1], g[2])
	}
	for _, s := range f.lostSamples {
		fmt.Fprintf(w, "\nlost: %s", s)
	}
	fmt.Fprintln(w)
}

// refusalsWhere splits the gateway's refusals into those at the door and
// those of the normal path (a node's refusal after a round trip, a run that
// left a node's queue at its deadline).
func (f *overloadFigures) refusalsWhere() string {
	door := f.doorRefusals
	handler := f.serverRefusals.sub(door)
	part := func(name string, h histogram) string {
		le, n := h.quantile(0.99)
		if n == 0 {
			return name + " 0"
		}
		over5 := n - h.atMost(refusalBudget.Seconds())
		return fmt.Sprintf("%s %.0f (p99 ≤ %s, %.0f over 5 ms)", name, n, secs(le), over5)
	}
	return "; " + part("at the door", door) + ", in the handler " + strings.TrimPrefix(part("", handler), " ")
}

func durations(os []outcome, keep func(outcome) bool) []time.Duration {
	var ds []time.Duration
	for _, o := range os {
		if keep(o) {
			ds = append(ds, o.dur)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

func answered(o outcome) bool { return o.status == http.StatusOK && o.err == nil }

// runOverload is the overload scenario (local backend only).
func runOverload(ctx context.Context, cfg Config, bin, command string, progress func(string, ...any)) int {
	dir, err := os.MkdirTemp("", "qlc-chaos-overload-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	c, err := newLocalCluster(bin, dir, overloadProfiles, progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	calib := min(max(cfg.Duration/4, 5*time.Second), 15*time.Second)
	f := &overloadFigures{command: command, machine: machine(), nodes: cfg.Nodes, calib: calib, dur: cfg.Duration, refusals: map[string]int{}}

	// CPU limits: the nodes share the last CPU with a burner.
	ncpu := runtime.NumCPU()
	c.nodeEnv = []string{"GOMAXPROCS=1"}
	c.gwArgs = []string{"-default-concurrent-runs", "0"}
	f.cpuLimit = "GOMAXPROCS=1 each (no CPU pinning: taskset not found)"
	var burner *exec.Cmd
	if ts, err := exec.LookPath("taskset"); err == nil && ncpu >= 2 {
		last := strconv.Itoa(ncpu - 1)
		others := "0"
		if ncpu > 2 {
			others = "0-" + strconv.Itoa(ncpu-2)
		}
		c.nodeWrap = []string{ts, "-c", last}
		c.gwWrap = []string{ts, "-c", others}
		f.cpuLimit = fmt.Sprintf("all pinned to CPU %s (taskset) with GOMAXPROCS=1, sharing it with a CPU-burning co-runner: ~1/%d of a core each", last, cfg.Nodes+1)
		self, err := os.Executable()
		if err == nil {
			burner = exec.Command(ts, "-c", last, self, "-burn", (calib*2 + cfg.Duration + 2*time.Minute).String())
			burner.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}
	}
	keep := cfg.KeepLogs
	defer func() {
		if burner != nil && burner.Process != nil {
			_ = burner.Process.Kill()
			_ = burner.Wait()
		}
		c.shutdown()
		if keep {
			progress("overload: logs kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	progress("overload: starting %d CPU-limited nodes and a gateway", cfg.Nodes)
	if _, err := c.start(ctx, "overload", cfg.Nodes); err != nil {
		fmt.Fprintln(os.Stderr, err)
		keep = true
		return 2
	}
	if burner != nil {
		if err := burner.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: burner:", err)
			return 2
		}
	}
	c.mu.Lock()
	base := c.gwURL
	c.mu.Unlock()
	// Let membership settle (every node announced) before measuring.
	sleep(ctx, 2*time.Second)
	before := readCounters(c)

	progress("overload: unloaded p99 (%d clients, %v)", cfg.Nodes, calib)
	pctx, cancel := context.WithTimeout(ctx, calib)
	un := closedLoop(pctx, base, cfg.Nodes)
	cancel()
	ds := durations(un, answered)
	if len(ds) == 0 {
		fmt.Fprintln(os.Stderr, "chaos: overload: no run completed unloaded")
		keep = true
		return 2
	}
	f.unloadedP50, f.unloadedP99 = pct(ds, 0.50), pct(ds, 0.99)

	// Capacity: closed loops of doubling size (4 clients per node first),
	// each for step, until the throughput stops growing by 10 % (or 512
	// clients): the best throughput seen at full speed (p99 within 2× the
	// unloaded one).
	step := max(3*time.Second, calib/2)
	for clients := 4 * cfg.Nodes; clients <= 512 && ctx.Err() == nil; clients *= 2 {
		progress("overload: capacity with %d clients (closed loop, %v)", clients, step)
		pctx, cancel := context.WithTimeout(ctx, step)
		t0 := time.Now()
		capOut := closedLoop(pctx, base, clients)
		el := time.Since(t0)
		cancel()
		refused := 0
		for _, o := range capOut {
			if o.refused() {
				refused++
			}
		}
		done := durations(capOut, answered)
		rate := float64(len(done)) / el.Seconds()
		p99 := time.Duration(0)
		if len(done) > 0 {
			p99 = pct(done, 0.99)
		}
		f.ramp = append(f.ramp, fmt.Sprintf("%d clients: %.1f runs/s, p99 %s, %d refused", clients, rate, ms(p99), refused))
		fast := p99 <= 2*f.unloadedP99
		grew := rate > f.capacity*1.1
		if (fast || f.capacity == 0) && rate > f.capacity {
			f.capacity, f.capClients, f.capRefused = rate, clients, refused
		}
		if !grew { // a slow step may be the limits still learning: go on while throughput grows
			break
		}
	}
	if f.capacity <= 0 {
		fmt.Fprintln(os.Stderr, "chaos: overload: no capacity measured")
		keep = true
		return 2
	}

	f.offered = 3 * f.capacity
	rt := cfg.RunTimeout
	if rt == 0 {
		rt = 60 * time.Second
	}
	progress("overload: %.1f runs/s (3× capacity %.1f) for %v", f.offered, f.capacity, cfg.Duration)
	c.mu.Lock()
	gwPid := strconv.Itoa(c.gw.cmd.Process.Pid)
	c.mu.Unlock()
	gwSched0, selfSched0 := readSchedStat(gwPid), readSchedStat("self")
	m0 := metricsText(base + "/metrics")
	refusals0 := readHistogram(m0, "qlc_refusal_seconds")
	door0 := readHistogram(m0, "qlc_refusal_seconds", `at="door"`)
	t0 := time.Now()
	out, skipped := openLoop(ctx, base, f.offered, cfg.Duration, rt)
	f.window = time.Since(t0)
	f.gwSched, f.selfSched = readSchedStat(gwPid).sub(gwSched0), readSchedStat("self").sub(selfSched0)
	m1 := metricsText(base + "/metrics")
	f.serverRefusals = readHistogram(m1, "qlc_refusal_seconds").sub(refusals0)
	f.doorRefusals = readHistogram(m1, "qlc_refusal_seconds", `at="door"`).sub(door0)
	f.skipped, f.sent = skipped, len(out)
	// Goodput over the offered window (runs still answering after it
	// count: they were admitted within it).
	var refusalDs []time.Duration
	for _, o := range out {
		switch {
		case answered(o):
			f.ok++
		case o.refused() && o.code != "" && o.code != "internal_error":
			f.refusals[fmt.Sprintf("%d %s", o.status, o.code)]++
			if !o.retryAfter {
				f.refusalNoRetryAfter++
			}
			if o.dur > refusalBudget {
				f.refusalSlow++
			}
			refusalDs = append(refusalDs, o.dur)
		default:
			f.lost++
			if len(f.lostSamples) < 5 {
				f.lostSamples = append(f.lostSamples, fmt.Sprintf("status %d code %q after %s: %v", o.status, o.code, ms(o.dur), o.err))
			}
		}
	}
	f.goodput = float64(f.ok) / max(time.Since(t0), cfg.Duration).Seconds()
	adm := durations(out, answered)
	if len(adm) > 0 {
		f.p50, f.p99, f.max = pct(adm, 0.5), pct(adm, 0.99), adm[len(adm)-1]
	}
	slices.Sort(refusalDs)
	if len(refusalDs) > 0 {
		f.refusalP99, f.refusalMax = pct(refusalDs, 0.99), refusalDs[len(refusalDs)-1]
	}
	sleep(ctx, time.Second) // let the last counters reach /metrics
	after := readCounters(c)
	f.delta = clusterCounters{suspicions: after.suspicions - before.suspicions, suspectTimeouts: after.suspectTimeouts - before.suspectTimeouts,
		fencings: after.fencings - before.fencings, restarts: after.restarts - before.restarts, failovers: after.failovers - before.failovers}
	f.write(os.Stdout)
	if ctx.Err() != nil {
		return 1
	}
	if !f.correct() {
		keep = true
		return 1
	}
	return 0
}

// overloadDuration is the overload phase's length when -duration is not given.
const overloadDuration = time.Minute

// secs prints a histogram bucket bound in ms or µs.
func secs(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case v < 1e-3:
		return fmt.Sprintf("%.0f µs", v*1e6)
	}
	return fmt.Sprintf("%g ms", v*1e3)
}
