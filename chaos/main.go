package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// Config is one invocation's settings; every field is a flag.
type Config struct {
	// Scenario is kill, pause, partition, gateway, provider, rolling,
	// parallel, or all (each in turn, each on a fresh cluster); or soak
	// (soak.go: not part of all), which takes Duration, FaultEvery and
	// SoakDir.
	Scenario string
	// Runs is how many runs a scenario starts at least; the load goes on
	// until every fault was injected (at most 10× Runs). 0: the scenario's
	// default (kill 40, pause 30, provider 40, rolling 30, parallel 30;
	// parallel starts 20 at least).
	Runs int
	// Concurrency is how many runs are in flight at once.
	Concurrency int
	// Faults is how many faults a scenario injects: kills, pauses, nodes
	// rolled, or (parallel) kills and drains. 0: the scenario's default
	// (kill 10, pause 2, rolling 3, parallel 6). The provider scenario
	// injects faults through the simulator's rates instead.
	Faults int
	// Timeout bounds a whole scenario, cluster start-up included.
	Timeout time.Duration
	// RunTimeout is how long a run may take from its POST; a run without a
	// terminal event by then is LOST. 0: 60 s, or 150 s for provider (a
	// hung provider is only cut off after the 60 s first-token timeout).
	RunTimeout time.Duration
	// CancelRate is the share of runs cancelled (DELETE) mid-stream (the
	// parallel scenario: at least 0.2 unless 0).
	CancelRate float64
	// PauseMin and PauseMax bound a SIGSTOP (pause), drawn uniformly.
	PauseMin, PauseMax time.Duration
	// FaultRate is the provider scenario's error/429/cut rate per request
	// (each faulty endpoint draws its own kind); HangRate its hang and stall
	// rates.
	FaultRate, HangRate float64
	// Nodes is the cluster's size (compose: it must be the number of node
	// services in docker-compose.yml).
	Nodes int
	// Seed drives every random choice of the suite (which runs are
	// cancelled, which run's node is hit, when). 0: from the clock.
	Seed uint64
	// KeepLogs keeps the processes' logs (they are kept anyway when a
	// scenario fails).
	KeepLogs bool
	// Backend is what runs the cluster: "local" (processes of this program
	// on loopback, built from the working tree) or "compose" (the
	// repository's docker-compose.yml, with images built from the working
	// tree; needs a Docker engine).
	Backend string
	// Duration is how long the soak suite loads the cluster, or the
	// overload scenario offers 3× capacity (default overloadDuration).
	Duration time.Duration
	// FaultEvery is how often the soak suite replaces a node (a new node,
	// then SIGTERM of the youngest); 0: never.
	FaultEvery time.Duration
	// SoakDir is where the soak suite writes samples.csv, its plots and
	// report.md (relative: to the module's folder).
	SoakDir string
	// Burn, when > 0, makes this program the overload scenario's
	// CPU-burning co-runner for that long (internal).
	Burn time.Duration
	// LimitsConsensus: the limits scenario's nodes form the quota group
	// (-limiter-id); false runs the same faults with limiters counting
	// alone, as before the group (limits.go).
	LimitsConsensus bool
	// BudgetCheck runs the budget check beside a scenario's load (budget.go):
	// tenants with small token budgets, every admission recorded and the
	// history checked. Default: on with the compose backend (whose nodes are
	// the quota group), off on local processes (which start no group; the
	// limits scenario checks it there).
	BudgetCheck bool
}

// DefaultConfig returns the defaults described on each field.
func DefaultConfig() Config {
	return Config{Scenario: "all", Concurrency: 6, Timeout: 5 * time.Minute, CancelRate: 0.1,
		PauseMin: 5 * time.Second, PauseMax: 15 * time.Second, FaultRate: 0.1, HangRate: 0.02, Nodes: 3, Backend: "local",
		Duration: 3 * time.Minute, FaultEvery: time.Minute, SoakDir: ".qlc/soak", LimitsConsensus: true}
}

var scenarios = []string{"kill", "pause", "partition", "gateway", "provider", "rolling", "parallel"}

func (c *Config) validate() error {
	switch {
	case c.Scenario != "all" && c.Scenario != "soak" && c.Scenario != "overload" && c.Scenario != "limits" && !contains(scenarios, c.Scenario) && !contains(groupScenarios, c.Scenario):
		return fmt.Errorf("chaos: unknown scenario %q (want %s, all, %s, soak, overload or limits)", c.Scenario, strings.Join(scenarios, ", "), strings.Join(groupScenarios, ", "))
	case c.Scenario == "limits" && c.Backend != "local":
		return errors.New("chaos: -scenario limits runs on the local backend only (it gives each node a Raft id and a log folder)")
	case c.Scenario == "overload" && c.Backend != "local":
		return errors.New("chaos: -scenario overload runs on the local backend only (it pins the processes it starts to CPUs)")
	case c.Scenario == "overload" && (c.Duration < 5*time.Second || c.Duration > time.Hour):
		return errors.New("chaos: -scenario overload wants 5s <= -duration <= 1h")
	case c.Runs < 0 || c.Faults < 0:
		return errors.New("chaos: -runs and -faults must be >= 0")
	case c.Concurrency < 1 || c.Concurrency > 200:
		return errors.New("chaos: -concurrency must be 1..200")
	case c.Timeout <= 0 || c.RunTimeout < 0:
		return errors.New("chaos: -timeout must be > 0 and -run-timeout >= 0")
	case c.CancelRate < 0 || c.CancelRate > 1:
		return errors.New("chaos: -cancel-rate must be 0..1")
	case c.PauseMin <= 0 || c.PauseMax < c.PauseMin:
		return errors.New("chaos: want 0 < -pause-min <= -pause-max")
	case c.FaultRate < 0 || c.HangRate < 0 || c.FaultRate+2*c.HangRate > 1:
		return errors.New("chaos: want -fault-rate, -hang-rate >= 0 and fault-rate + 2×hang-rate <= 1")
	case c.Nodes < 2 || c.Nodes > 9:
		return errors.New("chaos: -nodes must be 2..9 (a run needs a live node to move to)")
	case c.Backend != "local" && c.Backend != "compose":
		return fmt.Errorf("chaos: unknown backend %q (want local or compose)", c.Backend)
	case c.Scenario == "soak" && c.Backend != "local":
		return errors.New("chaos: -scenario soak runs on the local backend only (it samples the processes it started)")
	case c.Scenario != "overload" && (c.Duration < 20*time.Second || c.Duration > 24*time.Hour || c.FaultEvery < 0):
		return errors.New("chaos: want 20s <= -duration <= 24h and -fault-every >= 0")
	}
	if contains(groupScenarios, c.Scenario) && c.Backend == "local" {
		c.Nodes = max(c.Nodes, groupMinNodes) // split.go
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.StringVar(&cfg.Scenario, "scenario", cfg.Scenario, "kill, pause, partition, gateway, provider, rolling, parallel, or all; or split, asymmetric (group partitions); or soak; or overload; or limits (tenant budgets under faults, history-checked)")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "runs per scenario, at least (0: the scenario's default)")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "runs in flight at once")
	fs.IntVar(&cfg.Faults, "faults", cfg.Faults, "faults per scenario (0: the scenario's default)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound on each scenario")
	fs.DurationVar(&cfg.RunTimeout, "run-timeout", cfg.RunTimeout, "a run not ended this long after its POST is LOST (0: 60s, provider 150s)")
	fs.Float64Var(&cfg.CancelRate, "cancel-rate", cfg.CancelRate, "share of runs cancelled mid-stream")
	fs.DurationVar(&cfg.PauseMin, "pause-min", cfg.PauseMin, "shortest SIGSTOP (pause)")
	fs.DurationVar(&cfg.PauseMax, "pause-max", cfg.PauseMax, "longest SIGSTOP (pause)")
	fs.Float64Var(&cfg.FaultRate, "fault-rate", cfg.FaultRate, "provider: error / 429 / cut rate per request")
	fs.Float64Var(&cfg.HangRate, "hang-rate", cfg.HangRate, "provider: hang and stall rate per request")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "cluster size")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the suite's random choices (0: from the clock)")
	fs.BoolVar(&cfg.KeepLogs, "keep-logs", cfg.KeepLogs, "keep the processes' logs")
	fs.StringVar(&cfg.Backend, "backend", cfg.Backend, "what runs the cluster: local (processes) or compose (docker compose)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "soak: how long the load runs")
	fs.DurationVar(&cfg.FaultEvery, "fault-every", cfg.FaultEvery, "soak: replace a node (SIGTERM) this often; 0: never")
	fs.StringVar(&cfg.SoakDir, "soak-dir", cfg.SoakDir, "soak: where samples.csv, the plots and report.md go")
	fs.BoolVar(&cfg.BudgetCheck, "budget-check", cfg.BudgetCheck, "record and check admissions of tenants with small token budgets beside the load (default: on with -backend compose)")
	fs.BoolVar(&cfg.LimitsConsensus, "limits-consensus", cfg.LimitsConsensus, "limits: nodes form the quota group (false: limiters count alone, as before it)")
	fs.DurationVar(&cfg.Burn, "burn", 0, "internal: spin one CPU for this long (the overload scenario's co-runner)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if cfg.Burn > 0 {
		return burn(cfg.Burn)
	}
	durationSet, budgetSet := false, false
	fs.Visit(func(f *flag.Flag) {
		durationSet = durationSet || f.Name == "duration"
		budgetSet = budgetSet || f.Name == "budget-check"
	})
	if !budgetSet {
		cfg.BudgetCheck = cfg.Backend == "compose"
	}
	if cfg.Scenario == "overload" && !durationSet {
		cfg.Duration = overloadDuration
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	command := "go run ./chaos " + strings.Join(args, " ")
	if !strings.Contains(command, "-seed") {
		command += fmt.Sprintf(" -seed %d", cfg.Seed)
	}
	command = strings.Join(strings.Fields(command), " ")

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	progress := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "%s chaos: %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	bin, err := os.MkdirTemp("", "qlc-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	defer os.RemoveAll(bin)
	if cfg.Backend == "compose" {
		if _, err := docker(20*time.Second, "info", "--format", "{{.ServerVersion}}"); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: -backend compose needs a Docker engine: %v\n", err)
			return 2
		}
		progress("building the images (static cmd/node and cmd/gateway in bin/linux/, then %s build)", strings.Join(composeCommand(), " "))
		err = buildImages()
	} else {
		progress("building cmd/node and cmd/gateway")
		err = buildBinaries(bin)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if cfg.Scenario == "soak" {
		return runSoak(ctx, cfg, bin, command, progress)
	}
	if cfg.Scenario == "overload" {
		return runOverload(ctx, cfg, bin, command, progress)
	}
	if cfg.Scenario == "limits" {
		return runLimits(ctx, cfg, bin, command, progress)
	}
	list := scenarios
	if cfg.Scenario != "all" {
		list = []string{cfg.Scenario}
	}
	var reps []*report
	code := 0
	for i, name := range list {
		if ctx.Err() != nil {
			break
		}
		c := cfg
		c.Seed = cfg.Seed + uint64(i)
		rep, err := runScenario(ctx, name, c, bin, command, progress)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 2
			continue
		}
		rep.write(os.Stdout)
		reps = append(reps, rep)
		if !rep.ok() && code == 0 {
			code = 1
		}
	}
	if len(reps) > 1 {
		summary(os.Stdout, reps)
	}
	if ctx.Err() != nil && code == 0 {
		code = 1 // interrupted: the figures are incomplete
	}
	return code
}
