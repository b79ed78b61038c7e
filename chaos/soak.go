package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The soak suite (-scenario soak, make soak): a local cluster under a steady
// mixed load for -duration, its processes' memory, goroutines and open files
// sampled every second, and a verdict on each series (soakstat.go).
//
//  1. Start -nodes nodes and a gateway (local processes, as the other
//     scenarios), with the gateway's finished-run retention scaled to the
//     warm-up (-retain-finished = warm-up / 2, at most the default 15 min):
//     a bounded cache that fills for longer than the warm-up would read as
//     a leak. Add a second tenant through the admin API.
//  2. Sample every process each second (its /metrics: the Go and process
//     collectors; /proc/<pid> where a figure is missing) from before the
//     load until the end.
//  3. -concurrency workers, each for one tenant (in turn), start runs until
//     -duration has passed: a chain profile (steady) and a parallel one
//     (moa), some cancelled mid-stream (-cancel-rate), some streams
//     dropped and resumed with Last-Event-ID. Every -fault-every, the
//     youngest node is replaced (a new node first, then SIGTERM: a drain):
//     the oldest nodes and the gateway live the whole run and are judged.
//  4. After the load, idle for a cool-down (a tenth of the duration, 10–60 s)
//     and read each process's goroutines one last time.
//  5. Judge each series of each process over the analysis window (after
//     the first quarter, until the load stops) with leakVerdict, and the
//     goroutines after the cool-down with settled; print a table, write
//     samples.csv, one SVG per series and report.md under -soak-dir.
//
// It exits 1 on a leak, an unsettled goroutine count or a lost run.

// soakSample is one process's figures at one second; NaN: not read.
type soakSample struct {
	at      float64 // seconds since the sampling began
	proc    string
	pid     int
	phase   string // warmup, load, cooldown
	figures [4]float64
}

// soakRun tallies the load.
type soakRun struct {
	mu                                          sync.Mutex
	started, completed, failed, cancelled, lost int
	refused                                     map[string]int
	resumes                                     int // streams dropped on purpose and resumed with Last-Event-ID
	reconnects                                  int // streams that broke and were resumed
	defects                                     int
	byProfile                                   map[string]int
	byTenant                                    map[string]int
	examples                                    []string
}

type soakTenant struct{ name, key string }

func runSoak(ctx context.Context, cfg Config, bin, command string, progress func(string, ...any)) int {
	warmup := cfg.Duration / 4
	cool := min(max(cfg.Duration/10, 10*time.Second), time.Minute)
	retain := min(warmup/2, 15*time.Minute)
	out := cfg.SoakDir
	if !filepath.IsAbs(out) {
		root, err := moduleDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		out = filepath.Join(root, out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "qlc-chaos-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	// Only steady and moa run: the faulty profile's rates play no part.
	c, err := newLocalCluster(bin, dir, profiles(0.1, 0), progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	c.gwArgs = []string{"-retain-finished", retain.String()}
	// Every goroutine in a SIGQUIT dump (goroutineProfile).
	os.Setenv("GOTRACEBACK", "all")
	keep := cfg.KeepLogs
	defer func() {
		c.shutdown()
		if keep {
			progress("soak: logs kept in %s", dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	progress("soak: starting %d nodes and a gateway (seed %d)", cfg.Nodes, cfg.Seed)
	if _, err := c.start(ctx, "soak", cfg.Nodes); err != nil {
		keep = true
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if err := c.waitMembers(cfg.Nodes+1, 20*time.Second); err != nil {
		keep = true
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	tenants := []soakTenant{{"dev", apiKey.Load().(string)}}
	if k, err := createTenant(c.gatewayURL(), "soak-b"); err != nil {
		progress("soak: a second tenant: %v (one tenant only)", err)
	} else {
		tenants = append(tenants, soakTenant{"soak-b", k})
	}

	// Sampling: from now until the cool-down ends.
	t0 := time.Now()
	var phase atomicString
	phase.set("warmup")
	var samples []soakSample
	var smu sync.Mutex
	sctx, scancel := context.WithCancel(context.Background())
	sdone := make(chan struct{})
	go func() { // owned by runSoak: stopped by scancel, waited on sdone
		defer close(sdone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			at, ph := time.Since(t0).Seconds(), phase.get()
			if ph == "warmup" && at >= warmup.Seconds() {
				ph = "load" // the fault loop may be busy replacing a node
			}
			s := sampleAll(c, at, ph)
			smu.Lock()
			samples = append(samples, s...)
			smu.Unlock()
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	lctx, lcancel := context.WithTimeout(ctx, cfg.Duration+2*time.Minute) // runs end within their timeout
	defer lcancel()
	loadEnd := t0.Add(cfg.Duration)
	warmEnd := t0.Add(warmup)
	tally := &soakRun{refused: map[string]int{}, byProfile: map[string]int{}, byTenant: map[string]int{}}
	var wg sync.WaitGroup
	for w := 0; w < cfg.Concurrency; w++ {
		wg.Add(1)
		go func() { // owned by runSoak: ends at loadEnd (its last run within the run timeout)
			defer wg.Done()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(w)))
			tn := tenants[w%len(tenants)]
			for n := 0; lctx.Err() == nil && time.Now().Before(loadEnd); n++ {
				soakOne(lctx, c.gatewayURL(), tn, w, n, rng, cfg.CancelRate, tally)
			}
		}()
	}
	progress("soak: %v of load, %d clients, %d tenants, warm-up %v, finished runs retained %v", cfg.Duration, cfg.Concurrency, len(tenants), warmup, retain)

	// Faults, and the phase, on this goroutine until the load ends.
	faults, nextFault := 0, t0.Add(cfg.FaultEvery)
	for lctx.Err() == nil && time.Now().Before(loadEnd) {
		if time.Now().After(warmEnd) {
			phase.set("load")
		}
		if cfg.FaultEvery > 0 && time.Now().After(nextFault) && time.Until(loadEnd) > 20*time.Second {
			if err := soakFault(c, progress); err != nil {
				progress("soak: fault: %v", err)
			} else {
				faults++
			}
			nextFault = time.Now().Add(cfg.FaultEvery)
		}
		sleep(lctx, 250*time.Millisecond)
	}
	phase.set("load")
	progress("soak: load stops; waiting for the runs in flight")
	wg.Wait()
	phase.set("cooldown")
	coolStart := time.Since(t0).Seconds()
	httpClient.CloseIdleConnections()
	streamClient.CloseIdleConnections()
	progress("soak: cool-down %v", cool)
	sleep(ctx, cool)
	scancel()
	<-sdone

	rep := judgeSoak(samples, warmup.Seconds(), cfg.Duration.Seconds(), coolStart)
	rep.command, rep.faults, rep.tally, rep.tenants = command, faults, tally, len(tenants)
	rep.duration, rep.concurrency, rep.retain = cfg.Duration, cfg.Concurrency, retain
	// A goroutine leak's where: the goroutine dump of each process whose
	// goroutines leaked or did not settle.
	rep.profiles = map[string][]string{}
	for _, p := range rep.suspects() {
		c.mu.Lock()
		var target *proc
		if i := slices.IndexFunc(c.all, func(x *proc) bool { return x.name == p }); i >= 0 {
			target = c.all[i]
		}
		c.mu.Unlock()
		if target == nil {
			continue
		}
		groups, err := goroutineProfile(target)
		if err != nil {
			progress("soak: goroutine dump of %s: %v", p, err)
			continue
		}
		rep.profiles[p] = groups
		_ = os.WriteFile(filepath.Join(out, "goroutines-"+p+".txt"), []byte(strings.Join(groups, "\n")+"\n"), 0o644)
	}
	rep.write(os.Stdout)
	if err := rep.save(out, samples); err != nil {
		progress("soak: %v", err)
	} else {
		progress("soak: samples, plots and report in %s", out)
	}
	if !rep.ok() {
		keep = true
		return 1
	}
	if ctx.Err() != nil {
		return 1
	}
	return 0
}

// atomicString is a string read and written from several goroutines.
type atomicString struct {
	mu sync.Mutex
	s  string
}

func (a *atomicString) set(s string) { a.mu.Lock(); a.s = s; a.mu.Unlock() }
func (a *atomicString) get() string  { a.mu.Lock(); defer a.mu.Unlock(); return a.s }

// createTenant makes a tenant through the admin API and returns its key.
func createTenant(base, id string) (string, error) {
	admin, _ := metricsKey.Load().(string)
	body := fmt.Sprintf(`{"id":%q,"name":%q}`, id, "soak tenant "+id)
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/admin/tenants", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "application/json")
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	var v struct{ Key string }
	if err := json.Unmarshal(b, &v); err != nil || v.Key == "" {
		return "", fmt.Errorf("bad answer %s", b)
	}
	return v.Key, nil
}

// soakFault replaces the youngest node: a new node joins, then the old one
// drains (SIGTERM) and exits (kill -9 after 90 s).
func soakFault(c *localCluster, progress func(string, ...any)) error {
	live := c.liveNodes()
	old := live[len(live)-1]
	nn, err := c.replace(old)
	if err != nil {
		return err
	}
	if err := c.waitMembers(len(c.liveNodes())+1, 20*time.Second); err != nil {
		progress("soak: %v", err)
	}
	if err := c.terminate(old); err != nil {
		return err
	}
	select {
	case <-old.done:
	case <-time.After(90 * time.Second):
		_ = old.cmd.Process.Kill()
		<-old.done
	}
	progress("soak: SIGTERM %s (drained, exit %v), %s replaces it", old.name, old.exitErr, nn.name)
	return c.waitMembers(len(c.liveNodes())+1, 20*time.Second)
}

// soakOne starts one run for tn and follows it to its end: a third of the
// runs on moa (parallel), the rest on steady (chain); cancelRate of them
// cancelled after 5–200 token events; a quarter of them dropped once after
// 10–300 events and resumed with Last-Event-ID.
func soakOne(ctx context.Context, base string, tn soakTenant, w, n int, rng *rand.Rand, cancelRate float64, t *soakRun) {
	profile := "steady"
	if rng.IntN(3) == 0 {
		profile = "moa"
	}
	cancelAt, dropAt := -1, -1
	if rng.Float64() < cancelRate {
		cancelAt = 5 + rng.IntN(196)
	}
	if rng.IntN(4) == 0 {
		dropAt = 10 + rng.IntN(291)
	}
	auth := "Bearer " + tn.key
	body := fmt.Sprintf(`{"query":"Soak question %d.%d: what keeps a long-running service's memory flat?","profile":%q}`, w, n, profile)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/runs", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", auth)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.add(func() { t.refused["post_error"]++ })
		sleep(ctx, 200*time.Millisecond)
		return
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var v struct{ ID string }
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &v) != nil || v.ID == "" {
		t.add(func() { t.refused[strconv.Itoa(resp.StatusCode)]++ })
		sleep(ctx, 200*time.Millisecond) // the cluster said no: do not spin
		return
	}
	t.add(func() { t.started++; t.byProfile[profile]++; t.byTenant[tn.name]++ })

	rctx, rcancel := context.WithTimeout(ctx, 60*time.Second)
	defer rcancel()
	var live []event
	lastID, tokens, events := "", 0, 0
	var term *event
	cancelled := false
	for term == nil && rctx.Err() == nil {
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, base+"/v1/runs/"+v.ID+"/events", nil)
		req.Header.Set("Accept", "text/event-stream")
		req.Header.Set("Authorization", auth)
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		dropped := false
		resp, err := streamClient.Do(req)
		if err == nil {
			if resp.StatusCode == http.StatusOK {
				err = readSSE(resp.Body, func(e event) bool {
					live = append(live, e)
					events++
					if e.last() {
						lastID = strconv.FormatUint(e.Seq, 10)
					} else {
						lastID = fmt.Sprintf("%d:%d", e.Seq, e.Part.End)
					}
					switch {
					case terminal(e.Type):
						term = &e
						return false
					case e.Type == evLagged:
						return false
					case e.Type == evTokenDelta:
						tokens++
						if tokens == cancelAt && !cancelled {
							cancelled = true
							go soakCancel(base, v.ID, auth) // ends on its own (10 s timeout)
						}
					}
					if events == dropAt {
						dropped = true
						return false
					}
					return true
				})
			} else {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			resp.Body.Close()
		}
		if term != nil {
			break
		}
		if dropped {
			t.add(func() { t.resumes++ })
		} else {
			t.add(func() { t.reconnects++ })
			if err != nil && !errors.Is(err, context.Canceled) {
				sleep(rctx, 100*time.Millisecond)
			}
		}
	}
	defects := len(analyze(live).defects)
	t.add(func() {
		t.defects += defects
		switch {
		case term == nil:
			t.lost++
			if len(t.examples) < 10 {
				t.examples = append(t.examples, v.ID+": LOST (no terminal event within 60 s)")
			}
		case term.Type == evRunCompleted:
			t.completed++
		case term.Type == evRunCancelled:
			t.cancelled++
		default:
			t.failed++
			if len(t.examples) < 10 {
				t.examples = append(t.examples, fmt.Sprintf("%s: failed: %s %s", v.ID, term.Code, term.Reason))
			}
		}
	})
}

func (t *soakRun) add(f func()) { t.mu.Lock(); f(); t.mu.Unlock() }

func soakCancel(base, id, auth string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodDelete, base+"/v1/runs/"+id, nil)
	req.Header.Set("Authorization", auth)
	if resp, err := httpClient.Do(req); err == nil {
		resp.Body.Close()
	}
}

// sampleAll reads every running process's figures.
func sampleAll(c *localCluster, at float64, phase string) []soakSample {
	c.mu.Lock()
	procs := append([]*proc(nil), c.all...)
	gw, gwURL := c.gw, c.gwURL
	c.mu.Unlock()
	var out []soakSample
	for _, p := range procs {
		if p.exited() || p.cmd == nil || p.cmd.Process == nil {
			continue
		}
		url := "http://" + p.ops + "/metrics"
		if p == gw {
			url = gwURL + "/metrics"
		} else if p.ops == "" {
			url = ""
		}
		out = append(out, sampleProc(p.name, p.cmd.Process.Pid, url, at, phase))
	}
	return out
}

// sampleProc reads one process's figures from its /metrics (url; "" none)
// and, for what is missing there, from /proc/<pid>.
func sampleProc(name string, pid int, url string, at float64, phase string) soakSample {
	s := soakSample{at: at, proc: name, pid: pid, phase: phase}
	for i := range s.figures {
		s.figures[i] = nan
	}
	if url != "" {
		m := metrics(url, "process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines", "process_open_fds")
		for i, name := range []string{"process_resident_memory_bytes", "go_memstats_heap_inuse_bytes", "go_goroutines", "process_open_fds"} {
			if v, ok := m[name]; ok {
				s.figures[i] = v
			}
		}
	}
	if s.figures[0] != s.figures[0] { // NaN
		s.figures[0] = procRSS(pid)
	}
	if s.figures[3] != s.figures[3] {
		if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
			s.figures[3] = float64(len(ents))
		}
	}
	return s
}

// procRSS is VmRSS of /proc/<pid>/status in bytes (NaN if unreadable).
func procRSS(pid int) float64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nan
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				if kb, err := strconv.ParseFloat(fs[0], 64); err == nil {
					return kb * 1024
				}
			}
		}
	}
	return nan
}

// goroutineProfile ends p with SIGQUIT (the Go runtime then writes every
// goroutine's stack to stderr: its log; GOTRACEBACK=all is in its
// environment) and returns the goroutines grouped by where they were
// created and where they wait, largest groups first, each as
// "count  created-by → top frame".
func goroutineProfile(p *proc) ([]string, error) {
	if p.exited() {
		return nil, errors.New("exited")
	}
	if err := p.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		return nil, err
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil, err
	}
	return groupGoroutines(string(b)), nil
}

// groupGoroutines groups a Go traceback's goroutines by (created by, first
// frame outside the runtime and the standard library's sync and time).
func groupGoroutines(dump string) []string {
	counts := map[string]int{}
	for _, block := range strings.Split(dump, "\n\n") {
		lines := strings.Split(strings.TrimSpace(block), "\n")
		if len(lines) < 2 || !strings.HasPrefix(lines[0], "goroutine ") {
			continue
		}
		state := lines[0][strings.IndexByte(lines[0], '[')+1:]
		state, _, _ = strings.Cut(state, ",")
		state = strings.TrimSuffix(state, "]:")
		top, created := "", ""
		for i := 1; i < len(lines); i++ {
			l := lines[i]
			if strings.HasPrefix(l, "\t") {
				continue
			}
			fn := l // "pkg.(*T).Method(args…)": the name is all before the last "("
			if i := strings.LastIndexByte(l, '('); i > 0 {
				fn = l[:i]
			}
			if rest, ok := strings.CutPrefix(l, "created by "); ok {
				created, _, _ = strings.Cut(rest, " in goroutine")
				break
			}
			if top == "" && !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "sync.") && !strings.HasPrefix(fn, "internal/") && !strings.HasPrefix(fn, "time.") {
				top = fn
			}
		}
		counts[fmt.Sprintf("[%s] %s ← created by %s", state, top, created)]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if counts[a] != counts[b] {
			return counts[b] - counts[a]
		}
		return strings.Compare(a, b)
	})
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%5d  %s", counts[k], k)
	}
	return out
}
