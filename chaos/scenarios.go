package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sync/atomic"
	"time"
)

// profiles is the suite's profile file: ~3 s runs on the simulator (about
// 50 ms to the first token, then 150 tokens 5 ms apart, per stage), a
// faulty profile whose four stages each sit on an endpoint with one kind of
// fault, all with a reliable fallback, and moa: the built-in moa's shape
// (three proposers at once, min_proposers 2, an aggregator) in two layers
// of ~1.5 s each, so most of a ~4 s run has three steps streaming at once.
func profiles(faultRate, hangRate float64) string {
	hang := "" // the simulator refuses stall_after without a stall rate
	if hangRate > 0 {
		hang = fmt.Sprintf("hang_rate: %g, stall_rate: %g, stall_after: 30,", hangRate, hangRate)
	}
	const base = `ttft: 50ms, ttft_jitter: 20ms, itl: 5ms, itl_jitter: 2ms, output_tokens: 150`
	return fmt.Sprintf(`default_profile: steady
providers:
  steady:  {kind: sim, sim: {%[1]s}}
  backup:  {kind: sim, sim: {%[1]s}}
  limited: {kind: sim, sim: {%[1]s, error_rate: %[2]g, error_kind: rate_limited, retry_after: 200ms}}
  broken:  {kind: sim, sim: {%[1]s, error_rate: %[2]g, error_kind: server}}
  cutting: {kind: sim, sim: {%[1]s, cut_rate: %[2]g, cut_after: 40, error_rate: %[4]g, error_kind: connection}}
  hanging: {kind: sim, sim: {%[1]s, %[5]s error_rate: %[4]g, error_kind: timeout}}
  long:    {kind: sim, sim: {ttft: 50ms, ttft_jitter: 20ms, itl: 10ms, itl_jitter: 3ms, output_tokens: 150}}
  quick:   {kind: sim, sim: {ttft: 50ms, ttft_jitter: 20ms, itl: 50ms, itl_jitter: 10ms, output_tokens: 4}}
profiles:
  steady:
    description: Every stage on a healthy simulated model; about 3 s a run.
    provider: steady
    stages:
      generator: {model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      refiner:   {model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      validator: {model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      curator:   {model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
  faulty:
    description: Each stage on an endpoint with one kind of fault (429, 5xx, cuts, hangs and stalls), with a healthy fallback.
    stages:
      generator: {provider: limited, model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      refiner:   {provider: broken,  model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      validator: {provider: cutting, model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      curator:   {provider: hanging, model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
  moa:
    description: Mixture-of-Agents, two layers of three proposers streaming at once, then an aggregator; about 4 s a run.
    strategy: moa
    provider: steady
    layers: 2
    proposers:
      - {provider: long, model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      - {provider: long, model: sim-b, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
      - {provider: long, model: sim-c, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
    aggregator: {model: sim-a, max_tokens: 200, fallback: {provider: backup, model: sim-b}}
    min_proposers: 2
    step_deadline: 20s
`+budgetProfile, base, faultRate, hangRate, faultRate/2, hang)
}

// scenario is one scenario's parameters and fault injector.
type scenario struct {
	runs, faults int
	profile      string
	runTimeout   time.Duration
	cancelRate   float64
	// inject injects the faults while the load runs; it returns a
	// description of what it did.
	inject func(ctx context.Context, s *env) string
}

// env is what an injector works with.
type env struct {
	cfg      Config
	c        fleet
	w        faultWords
	d        *driver
	rng      *rand.Rand
	rep      *report
	progress func(string, ...any)
	faults   int
}

func scenarioFor(name string, cfg Config) scenario {
	def := func(v, d int) int {
		if v == 0 {
			return d
		}
		return v
	}
	rt := cfg.RunTimeout
	if rt == 0 {
		rt = 60 * time.Second
	}
	sc := scenarioOf(name, cfg, def, rt)
	sc.cancelRate = cfg.CancelRate
	if name == "parallel" && cfg.CancelRate > 0 {
		// At least a fifth: a few of its ~20 runs are cancelled while
		// parallel steps stream.
		sc.cancelRate = max(cfg.CancelRate, 0.2)
	}
	return sc
}

func scenarioOf(name string, cfg Config, def func(v, d int) int, rt time.Duration) scenario {
	switch name {
	case "parallel":
		// At least 20 runs (issue 12's figure), whatever -runs says.
		return scenario{runs: max(def(cfg.Runs, 30), 20), faults: def(cfg.Faults, 6), profile: "moa", runTimeout: rt, inject: injectParallel}
	case "kill":
		return scenario{runs: def(cfg.Runs, 40), faults: def(cfg.Faults, 10), profile: "steady", runTimeout: rt, inject: injectKills}
	case "pause":
		return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, 2), profile: "steady", runTimeout: rt, inject: injectPauses}
	case "provider":
		if cfg.RunTimeout == 0 {
			rt = 150 * time.Second
		}
		return scenario{runs: def(cfg.Runs, 40), profile: "faulty", runTimeout: rt, inject: func(context.Context, *env) string {
			return fmt.Sprintf("simulated provider: 429 / 5xx / cut+connection / hang+stall+timeout, each on one stage, at rate %g (cut), %g (hang, stall)", cfg.FaultRate, cfg.HangRate)
		}}
	case "partition":
		return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, 2), profile: "steady", runTimeout: rt, inject: injectPartitions}
	case "split", "asymmetric": // split.go
		return groupScenarioOf(name, cfg, def, rt)
	case "gateway":
		return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, 4), profile: "steady", runTimeout: rt, inject: injectGatewayRestarts}
	default: // rolling
		return scenario{runs: def(cfg.Runs, 30), faults: def(cfg.Faults, cfg.Nodes), profile: "steady", runTimeout: rt, inject: injectRolling}
	}
}

// runScenario starts a fresh cluster on cfg.Backend, runs the load and the
// faults, checks every run and stops the cluster. bin holds the local
// backend's binaries.
func runScenario(parent context.Context, name string, cfg Config, bin, command string, progress func(string, ...any)) (*report, error) {
	sc := scenarioFor(name, cfg)
	ctx, cancel := context.WithTimeout(parent, cfg.Timeout)
	defer cancel()
	t0 := time.Now()
	dir, err := os.MkdirTemp("", "qlc-chaos-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("chaos: %w", err)
	}
	var c fleet
	if cfg.Backend == "compose" {
		c, err = newComposeCluster(dir, profiles(cfg.FaultRate, cfg.HangRate), progress)
	} else {
		c, err = newLocalCluster(bin, dir, profiles(cfg.FaultRate, cfg.HangRate), progress)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	w := c.words()
	keep := cfg.KeepLogs
	defer func() {
		c.shutdown()
		if keep {
			progress("%s: logs kept in %s", name, dir)
		} else {
			os.RemoveAll(dir)
		}
	}()
	progress("%s: starting %d nodes and a gateway%s (seed %d)", name, cfg.Nodes, backendSuffix(w.backend), cfg.Seed)
	skip, err := c.start(ctx, name, cfg.Nodes)
	if skip != nil {
		rep := newReport(name, command+" -scenario "+name)
		rep.backend = w.backend
		rep.faults = "SKIPPED — " + skip.Error()
		progress("%s: skipped: %v", name, skip)
		return rep, nil
	}
	if err != nil {
		keep = true
		return nil, err
	}
	if err := c.waitMembers(cfg.Nodes+1, 20*time.Second); err != nil {
		keep = true
		return nil, err
	}

	rep := newReport(name, command+" -scenario "+name)
	rep.backend = w.backend
	if cfg.Scenario == name {
		rep.command = command
	}
	d := newDriver(c.gatewayURL(), sc.profile, sc.cancelRate, sc.runTimeout, cfg.Seed)
	e := &env{cfg: cfg, c: c, w: w, d: d, rng: rand.New(rand.NewPCG(cfg.Seed^0x5eed, cfg.Seed)), rep: rep, progress: progress, faults: sc.faults}
	var budget *budgetLoad
	if cfg.BudgetCheck {
		if budget, err = startBudgetLoad(ctx, c.gatewayURL(), cfg.Seed, progress); err != nil {
			progress("%s: %v", name, err)
			rep.budget = &budgetResult{note: err.Error()}
		} else {
			progress("%s: budget check: tenants of %d tokens each, %d clients", name, budget.budget, budgetWorkers)
		}
	}
	var injecting atomic.Bool
	injecting.Store(true)
	loadDone := make(chan struct{})
	go func() { // owned by runScenario: it waits on loadDone
		defer close(loadDone)
		d.load(ctx, cfg.Concurrency, func(started int) bool {
			return started < sc.runs || (injecting.Load() && started < 10*sc.runs)
		})
	}()
	progress("%s: load of %d concurrent runs (profile %s)", name, cfg.Concurrency, sc.profile)
	fctx, fcancel := context.WithCancel(ctx)
	go func() { // stops the injector once the load has ended
		select {
		case <-loadDone:
			fcancel()
		case <-fctx.Done():
		}
	}()
	rep.faults = sc.inject(fctx, e)
	fcancel()
	injecting.Store(false)
	<-loadDone
	progress("%s: load done", name)
	if budget != nil {
		// Before the quiescent-token check: it waits for the budget
		// tenants' runs to end.
		res := budget.finish(60 * time.Second)
		rep.budget = &res
		progress("%s: budget check: %d tenants, %d admissions, %d violations", name, res.tenants, res.attempts, len(res.violations))
	}

	rep.add(d.resultsCopy())
	if rep.lost == 0 {
		rep.quiescentTokens = quiescentTokens(c)
	}
	if v, ok := metric(c.gatewayURL()+"/metrics", "qlc_failovers_total"); ok {
		rep.extra = append(rep.extra, [2]string{"failovers (gateway qlc_failovers_total)", fmt.Sprint(v)})
	}
	rep.extra = append(rep.extra, c.extras()...)
	rep.wall = time.Since(t0)
	if !rep.ok() {
		keep = true
	}
	return rep, nil
}

// quiescentTokens is how many tokens the live nodes stream in 2 s while no
// run is active (a cancelled or moved run still streaming would show).
func quiescentTokens(c fleet) float64 {
	sum := func() float64 {
		var s float64
		for _, n := range c.liveNodes() {
			v, _ := metric("http://"+n.ops+"/metrics", "qlc_tokens_streamed_total")
			s += v
		}
		return s
	}
	a := sum()
	time.Sleep(2 * time.Second)
	return sum() - a
}

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// pickVictim waits for a run that is streaming on a live node and returns
// that node, after a random delay (a random point of a random stage).
func (e *env) pickVictim(ctx context.Context) *proc {
	for ctx.Err() == nil {
		runs := e.d.streaming()
		e.rng.Shuffle(len(runs), func(i, j int) { runs[i], runs[j] = runs[j], runs[i] })
		for _, r := range runs {
			if pl, ok := e.c.placements().of(r.id); ok {
				if n := e.c.node(pl.node); n != nil && !n.exited() {
					if !sleep(ctx, time.Duration(e.rng.IntN(200))*time.Millisecond) {
						return nil
					}
					return n
				}
			}
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return nil
}

// onNode returns the runs in flight whose coordinator is on node.
func (e *env) onNode(node string) []*runState {
	var out []*runState
	for _, r := range e.d.inflightRuns() {
		if pl, ok := e.c.placements().of(r.id); ok && pl.node == node {
			out = append(out, r)
		}
	}
	return out
}

// markAffected starts, at the fault's time at, the recovery clock of the
// runs in before (taken just before the fault: by the time a docker
// command returns, runs may have moved) and of those still placed on node;
// it returns how many.
func (e *env) markAffected(before []*runState, node string, at time.Time) int {
	n := 0
	seen := map[*runState]bool{}
	for _, r := range append(before, e.onNode(node)...) {
		if !seen[r] && r.fault(at) {
			n++
		}
		seen[r] = true
	}
	return n
}

func injectKills(ctx context.Context, e *env) string {
	done, affected := 0, 0
	var replace []time.Duration
	for done < e.faults && ctx.Err() == nil {
		v := e.pickVictim(ctx)
		if v == nil {
			break
		}
		before := e.onNode(v.name)
		at, err := e.c.kill(v)
		if err != nil {
			e.progress("kill: %s: %v", v.name, err)
			continue
		}
		n := e.markAffected(before, v.name, at)
		affected += n
		done++
		<-v.done
		e.progress("kill %d/%d: %s %s (%d runs in flight there)", done, e.faults, e.w.kill, v.name, n)
		t := time.Now()
		nn, err := e.c.replace(v)
		if err != nil {
			e.progress("kill: replacement node: %v", err)
			break
		}
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 20*time.Second); err != nil {
			e.progress("kill: %v", err)
		}
		replace = append(replace, time.Since(t))
		e.progress("kill: %s joined", nn.name)
		if !sleep(ctx, 500*time.Millisecond+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the killed nodes", fmt.Sprint(affected)},
		[2]string{"replacement node start → member of the cluster (p50 / max)", distShort(replace)})
	return fmt.Sprintf("%d × %s of a node hosting a streaming run's coordinator (%s)", done, e.w.kill, e.w.replaced)
}

// waitFenced waits until node v counts more fencings than before (it
// learnt it was declared dead and rejoined under a new name), at most 30 s
// after since, which names the moment it was let go ("SIGCONT", "the heal").
func (e *env) waitFenced(v *proc, before float64, since string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if f, _ := metric("http://"+v.ops+"/metrics", "qlc_cluster_fencings_total"); f > before {
			return
		}
		if time.Now().After(deadline) {
			e.progress("%s: %s never fenced itself after %s", e.rep.scenario, v.name, since)
			e.rep.examples = append(e.rep.examples, fmt.Sprintf("%s: never fenced itself within 30 s of %s", v.name, since))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func injectPauses(ctx context.Context, e *env) string {
	done, affected := 0, 0
	var rejoin []time.Duration
	for done < e.faults && ctx.Err() == nil {
		v := e.pickVictim(ctx)
		if v == nil {
			break
		}
		fencings, _ := metric("http://"+v.ops+"/metrics", "qlc_cluster_fencings_total")
		d := e.cfg.PauseMin + time.Duration(e.rng.Int64N(int64(e.cfg.PauseMax-e.cfg.PauseMin)+1))
		before := e.onNode(v.name)
		at, err := e.c.pause(v)
		if err != nil {
			e.progress("pause: %s: %v", v.name, err)
			continue
		}
		n := e.markAffected(before, v.name, at)
		affected += n
		done++
		e.progress("pause %d/%d: %s %s for %v (%d runs in flight there)", done, e.faults, e.w.pause, v.name, d.Round(time.Millisecond), n)
		sleep(context.Background(), d) // never leave a node stopped
		if err := e.c.resume(v); err != nil {
			e.progress("pause: %s: %v", v.name, err)
		}
		t := time.Now()
		e.waitFenced(v, fencings, e.w.resume)
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 30*time.Second); err != nil {
			e.progress("pause: %v", err)
		}
		rejoin = append(rejoin, time.Since(t))
		e.progress("pause: %s fenced and rejoined after %v", v.name, time.Since(t).Round(time.Millisecond))
		if !sleep(ctx, time.Second+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	var fenced float64
	for _, n := range e.c.liveNodes() {
		f, _ := metric("http://"+n.ops+"/metrics", "qlc_cluster_fencings_total")
		fenced += f
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the paused nodes", fmt.Sprint(affected)},
		[2]string{e.w.resume + " → fenced and member again (p50 / max)", distShort(rejoin)},
		[2]string{"fencings (nodes' qlc_cluster_fencings_total)", fmt.Sprint(fenced)})
	return fmt.Sprintf("%d × %s %v–%v of a node hosting a streaming run's coordinator, then %s", done, e.w.pause, e.cfg.PauseMin, e.cfg.PauseMax, e.w.resume)
}

// injectRolling drains the oldest node (SIGTERM) and replaces it, node by
// node: where the backend can add a node (local) the new one starts first;
// where it restarts the node's own slot (compose) it starts once the old
// one has exited.
func injectRolling(ctx context.Context, e *env) string {
	done, onDraining := 0, 0
	var drains []time.Duration
	badExit := 0
	for done < e.faults && ctx.Err() == nil {
		if !sleep(ctx, time.Second+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
		v := e.c.liveNodes()[0] // the oldest
		var nn *proc
		if !e.c.inPlace() {
			var err error
			if nn, err = e.c.replace(v); err != nil {
				e.progress("rolling: replacement node: %v", err)
				break
			}
			if err := e.c.waitMembers(len(e.c.liveNodes())+1, 20*time.Second); err != nil {
				e.progress("rolling: %v", err)
			}
		}
		n := len(e.onNode(v.name))
		onDraining += n
		t := time.Now()
		if err := e.c.terminate(v); err != nil {
			e.progress("rolling: %s: %v", v.name, err)
			continue
		}
		done++
		if nn != nil {
			e.progress("rolling %d/%d: %s %s (%d runs in flight there), %s replaces it", done, e.faults, e.w.term, v.name, n, nn.name)
		} else {
			e.progress("rolling %d/%d: %s %s (%d runs in flight there)", done, e.faults, e.w.term, v.name, n)
		}
		select {
		case <-v.done:
		case <-time.After(90 * time.Second):
			e.progress("rolling: %s did not exit within 90 s; killing it", v.name)
			_, _ = e.c.kill(v)
			<-v.done
		}
		drains = append(drains, time.Since(t))
		if v.exitErr != nil {
			badExit++
			e.rep.examples = append(e.rep.examples, fmt.Sprintf("%s: exited with %v after %s", v.name, v.exitErr, e.w.term))
		}
		e.progress("rolling: %s exited after %v (%v)", v.name, time.Since(t).Round(time.Millisecond), v.exitErr)
		if e.c.inPlace() {
			var err error
			if nn, err = e.c.replace(v); err != nil {
				e.progress("rolling: restart: %v", err)
				break
			}
			e.progress("rolling: %s replaces %s", nn.name, v.name)
		}
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 20*time.Second); err != nil {
			e.progress("rolling: %v", err)
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the draining nodes", fmt.Sprint(onDraining)},
		[2]string{e.w.term + " → process exit (p50 / max)", distShort(drains)},
		[2]string{"nodes that exited non-zero", fmt.Sprint(badExit)})
	return fmt.Sprintf("%d × %s (drain) of the oldest node, %s", done, e.w.term, e.w.rolled)
}

func distShort(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fmt.Sprintf("%s / %s", ms(pct(ds, 0.5)), ms(slices.Max(ds)))
}

// injectPartitions cuts a node hosting a streaming run's coordinator off the
// network (local: iptables, see partition.go; compose: docker network
// disconnect) for PauseMin–PauseMax, then heals. Only the failure detector
// can tell (no connection breaks at once); the runs move, and the node,
// back on the network, learns it was declared dead, fences itself and
// rejoins under a new name.
func injectPartitions(ctx context.Context, e *env) string {
	done, affected := 0, 0
	var rejoin []time.Duration
	for done < e.faults && ctx.Err() == nil {
		v := e.pickVictim(ctx)
		if v == nil {
			break
		}
		fencings, _ := metric("http://"+v.ops+"/metrics", "qlc_cluster_fencings_total")
		d := e.cfg.PauseMin + time.Duration(e.rng.Int64N(int64(e.cfg.PauseMax-e.cfg.PauseMin)+1))
		before := e.onNode(v.name)
		at, err := e.c.cut(v)
		if err != nil {
			e.progress("partition: %v", err)
			break
		}
		n := e.markAffected(before, v.name, at)
		affected += n
		done++
		e.progress("partition %d/%d: %s cut off for %v (%d runs in flight there)", done, e.faults, v.name, d.Round(time.Millisecond), n)
		sleep(context.Background(), d) // never leave a node cut off
		if err := e.c.heal(v); err != nil {
			e.progress("partition: heal: %v", err)
			break
		}
		t := time.Now()
		e.waitFenced(v, fencings, "the heal")
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 30*time.Second); err != nil {
			e.progress("partition: %v", err)
		}
		rejoin = append(rejoin, time.Since(t))
		e.progress("partition: %s fenced and rejoined %v after the heal", v.name, time.Since(t).Round(time.Millisecond))
		if !sleep(ctx, time.Second+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the cut-off nodes", fmt.Sprint(affected)},
		[2]string{"heal → fenced and member again (p50 / max)", distShort(rejoin)})
	return fmt.Sprintf("%d × a node hosting a streaming run's coordinator %s for %v–%v, then healed", done, e.w.cut, e.cfg.PauseMin, e.cfg.PauseMax)
}

// injectGatewayRestarts restarts the gateway (kill -9 and SIGTERM in turn)
// on the same address and store while clients stream: they reconnect with
// the last seq they saw (the driver's streams do), and the new gateway finds
// each run's coordinator in the cluster (or, for a run that ended, its store).
func injectGatewayRestarts(ctx context.Context, e *env) string {
	done, affected := 0, 0
	var down []time.Duration
	for done < e.faults && ctx.Err() == nil {
		if !sleep(ctx, 1500*time.Millisecond+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
		kill := done%2 == 0
		how := e.w.term
		if kill {
			how = e.w.kill
		}
		runs := e.d.inflightRuns()
		at, err := e.c.restartGateway(kill)
		if err != nil {
			e.progress("gateway: %v", err)
			break
		}
		n := 0
		for _, r := range runs {
			if r.faultReader(at) {
				n++
			}
		}
		down = append(down, time.Since(at))
		affected += n
		done++
		e.progress("gateway %d/%d: %s of the gateway (%d runs streaming), back after %v", done, e.faults, how, n, time.Since(at).Round(time.Millisecond))
	}
	e.rep.extra = append(e.rep.extra, [2]string{"runs in flight at the restarts", fmt.Sprint(affected)},
		[2]string{"gateway signalled → ready again (p50 / max)", distShort(down)})
	return fmt.Sprintf("%d × gateway restart (%s) while clients stream", done, e.w.gateway)
}

// pickParallelVictim is pickVictim for a run with at least two steps
// streaming at once; after 3 s without one it takes any streaming run (a
// gateway without step ids shows parallel steps as one). It also returns
// how many steps of the run streamed when it was picked.
func (e *env) pickParallelVictim(ctx context.Context) (*proc, int) {
	since := time.Now()
	for ctx.Err() == nil {
		runs := e.d.streamingSteps(2)
		if len(runs) == 0 && time.Since(since) > 3*time.Second {
			runs = e.d.streaming()
		}
		e.rng.Shuffle(len(runs), func(i, j int) { runs[i], runs[j] = runs[j], runs[i] })
		for _, r := range runs {
			if pl, ok := e.c.placements().of(r.id); ok {
				if n := e.c.node(pl.node); n != nil && !n.exited() {
					if !sleep(ctx, time.Duration(e.rng.IntN(200))*time.Millisecond) {
						return nil, 0
					}
					return n, r.liveSteps()
				}
			}
		}
		sleep(ctx, 50*time.Millisecond)
	}
	return nil, 0
}

// injectParallel hits the node hosting the coordinator of a run whose
// parallel steps stream (moa: three proposers at once): kill -9 twice, then
// a drain (SIGTERM), in turn; each node is replaced. A killed node's runs
// move: the steps that finished are kept, the ones streaming are redone.
func injectParallel(ctx context.Context, e *env) string {
	kills, terms, affected, parallel := 0, 0, 0, 0
	var replace []time.Duration
	for kills+terms < e.faults && ctx.Err() == nil {
		v, steps := e.pickParallelVictim(ctx)
		if v == nil {
			break
		}
		if steps >= 2 {
			parallel++
		}
		n := 0
		if (kills+terms)%3 == 2 { // a drain: the node finishes its runs, then leaves
			if !e.c.inPlace() {
				if _, err := e.c.replace(v); err != nil {
					e.progress("parallel: replacement node: %v", err)
					break
				}
				if err := e.c.waitMembers(len(e.c.liveNodes())+1, 20*time.Second); err != nil {
					e.progress("parallel: %v", err)
				}
			}
			n = len(e.onNode(v.name))
			if err := e.c.terminate(v); err != nil {
				e.progress("parallel: %s: %v", v.name, err)
				continue
			}
			terms++
			e.progress("parallel %d/%d: %s %s (%d runs in flight there, %d steps of one streaming)", kills+terms, e.faults, e.w.term, v.name, n, steps)
			select {
			case <-v.done:
			case <-time.After(90 * time.Second):
				e.progress("parallel: %s did not exit within 90 s; killing it", v.name)
				_, _ = e.c.kill(v)
				<-v.done
			}
			if v.exitErr != nil {
				e.rep.examples = append(e.rep.examples, fmt.Sprintf("%s: exited with %v after %s", v.name, v.exitErr, e.w.term))
			}
			if e.c.inPlace() {
				if _, err := e.c.replace(v); err != nil {
					e.progress("parallel: restart: %v", err)
					break
				}
			}
		} else {
			before := e.onNode(v.name)
			at, err := e.c.kill(v)
			if err != nil {
				e.progress("parallel: %s: %v", v.name, err)
				continue
			}
			n = e.markAffected(before, v.name, at)
			kills++
			<-v.done
			e.progress("parallel %d/%d: %s %s (%d runs in flight there, %d steps of one streaming)", kills+terms, e.faults, e.w.kill, v.name, n, steps)
			t := time.Now()
			if _, err := e.c.replace(v); err != nil {
				e.progress("parallel: replacement node: %v", err)
				break
			}
			replace = append(replace, time.Since(t))
		}
		affected += n
		if err := e.c.waitMembers(len(e.c.liveNodes())+1, 20*time.Second); err != nil {
			e.progress("parallel: %v", err)
		}
		if !sleep(ctx, 500*time.Millisecond+time.Duration(e.rng.IntN(1000))*time.Millisecond) {
			break
		}
	}
	e.rep.extra = append(e.rep.extra, [2]string{"in-flight runs on the hit nodes", fmt.Sprint(affected)},
		[2]string{"faults while ≥ 2 steps of the picked run streamed", fmt.Sprintf("%d of %d", parallel, kills+terms)},
		[2]string{"replacement node start → member of the cluster (p50 / max)", distShort(replace)})
	return fmt.Sprintf("%d × %s and %d × %s (drain) of a node hosting the coordinator of a run whose parallel steps stream (%s)",
		kills, e.w.kill, terms, e.w.term, e.w.replaced)
}
