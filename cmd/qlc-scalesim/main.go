// Command qlc-scalesim prints the tables of docs/scale.md: membership
// convergence and gossip bytes with hundreds of in-process members of the
// shipped configuration, and the balance of run placement at 10–500 nodes.
// Everything it decides lives in internal/scalesim; this is flags and
// printing.
//
//	qlc-scalesim                          # both tables (several minutes, two busy cores)
//	qlc-scalesim -what placement          # the placement table only (about a minute)
//	qlc-scalesim -members 100 -scale 4    # membership at 100 with every interval × 4
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/qlc-project/qlc/internal/scalesim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "qlc-scalesim:", err)
		os.Exit(1)
	}
}

func run() error {
	what := flag.String("what", "all", "all, membership or placement")
	members := flag.String("members", "50,100,250,500", "membership sizes, comma-separated")
	reps := flag.Int("reps", 3, "join/death/metadata repetitions per size (at most 2 from 250 members)")
	steady := flag.Duration("steady", 10*time.Second, "steady window for byte counts (× scale)")
	scale := flag.Int("scale", 1, "multiply every protocol interval by this (starvation check)")
	seeds := flag.Int("seeds", 3, "seed members every member lists and re-joins")
	nodes := flag.String("nodes", "10,25,50,100,250,500", "placement sizes, comma-separated")
	perNode := flag.Float64("per-node", 32, "mean runs per node in the placement steady state")
	seed := flag.Uint64("seed", 1, "random seed")
	timeout := flag.Duration("timeout", 30*time.Minute, "bound on the whole run")
	verbose := flag.Bool("v", false, "progress on stderr")
	procs := flag.Int("procs", 0, "spread the members over this many processes on real loopback UDP/TCP (0: one process, in-memory network)")
	workerMode := flag.Bool("worker", false, "internal: serve as one of -procs' worker processes (commands on stdin)")
	memberLog := flag.String("member-log", "", "write the members' own logs (debug level) to this file")
	compress := flag.Bool("compress", false, "turn on memberlist's per-packet compression (off as shipped; in-process simulation only)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	flag.Parse()

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	if *workerMode {
		return scalesim.RunWorker(ctx, os.Stdin, os.Stdout, scalesim.WorkerConfig{Scale: *scale, Key: []byte(scalesim.Key)})
	}
	ctx, cancel = context.WithTimeout(ctx, *timeout)
	defer cancel()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var memberLogger *slog.Logger
	if *memberLog != "" {
		f, err := os.Create(*memberLog)
		if err != nil {
			return err
		}
		defer f.Close()
		memberLogger = slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	host, _ := os.Hostname()
	fmt.Printf("machine: %s, %d CPUs (GOMAXPROCS %d), %s %s/%s\n\n", host, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version(), runtime.GOOS, runtime.GOARCH)

	if *what == "all" || *what == "placement" {
		ns, err := ints(*nodes)
		if err != nil {
			return err
		}
		fmt.Printf("## Placement: max/mean runs per node (runs arrive Poisson, exponential durations of mean 20 s, %.0f runs per node on average; loads gossiped every 250 ms + 100 ms)\n\n", *perNode)
		rows, err := scalesim.PlacementSweep(ns, *perNode, *seed, func(r scalesim.PlacementRow) {
			logger.Info("placement", "nodes", r.Two.Nodes, "two", r.Two.MaxOverMean, "one", r.One.MaxOverMean)
		})
		if err != nil {
			return err
		}
		scalesim.WritePlacementTable(os.Stdout, rows)
		fmt.Println()
	}
	if *what == "all" || *what == "membership" {
		ns, err := ints(*members)
		if err != nil {
			return err
		}
		var rs []scalesim.Result
		for _, n := range ns {
			start := time.Now()
			mc := scalesim.Config{
				N: n, Seeds: *seeds, Reps: scalesim.RepsFor(n, *reps), Steady: *steady * time.Duration(*scale),
				Scale: *scale, Seed: *seed, Logger: logger, MemberLogger: memberLogger, Compress: *compress,
			}
			var r scalesim.Result
			if *procs > 0 {
				self, err := os.Executable()
				if err != nil {
					return err
				}
				r, err = scalesim.SimulateMembershipProcs(ctx, scalesim.ProcsConfig{Config: mc, Procs: *procs, Exe: self,
					Args: []string{"-worker", "-scale", strconv.Itoa(*scale)}})
				if err != nil && r.Failed == "" {
					return fmt.Errorf("%d members: %w", n, err)
				}
				logger.Info("membership", "n", n, "procs", *procs, "took", time.Since(start).Round(time.Second))
				rs = append(rs, r)
				continue
			}
			r, err := scalesim.SimulateMembership(ctx, mc)
			if err != nil && r.Failed == "" {
				return fmt.Errorf("%d members: %w", n, err)
			}
			logger.Info("membership", "n", n, "took", time.Since(start).Round(time.Second))
			rs = append(rs, r)
		}
		where := "in-memory network, one process"
		if *procs > 0 {
			where = fmt.Sprintf("%d processes on loopback UDP/TCP", *procs)
		}
		fmt.Printf("## Membership: the shipped configuration (topology.DefaultConfig), %d seeds, %s, times ÷ scale %d\n\n", *seeds, where, *scale)
		scalesim.WriteMembershipTable(os.Stdout, rs)
	}
	return nil
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}
