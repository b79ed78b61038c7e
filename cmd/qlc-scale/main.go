// Command qlc-scale is `make scale` (issue 15 item 2): throughput against
// node count on the compose cluster. For each node count it finds the
// highest Poisson arrival rate whose answers keep their TTFT p99 under an
// SLO (2× the unloaded p99), with every node container under the same CPU
// quota and the gateway under a whole CPU, and writes a table and a plot.
// Everything it decides lives in internal/scale; this is flags.
//
//	qlc-scale -sizes 1,2,3,4 -node-cpus 0.2 -out .qlc/scale/now
//	qlc-scale -burn 3s     # the quota check's CPU burner (run in a container)
//
// Run it under flock /tmp/qlc-chaos.lock (make scale does): it takes the
// compose project qlc-scale up and down.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/qlc-project/qlc/internal/scale"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "qlc-scale:", err)
		os.Exit(1)
	}
}

func run() error {
	burn := flag.Duration("burn", 0, "only burn every CPU for this long and print the cores got (the quota check)")
	sizes := flag.String("sizes", "1,2,3,4", "node counts, ascending, comma-separated (SCALE_NODES)")
	nodeCPUs := flag.Float64("node-cpus", 0.2, "each node container's CPU quota (cores)")
	gwCPUs := flag.Float64("gateway-cpus", 1, "the gateway container's CPU quota (cores)")
	step := flag.Duration("step", 15*time.Second, "how long each load step sends")
	warm := flag.Duration("warm", 5*time.Second, "each step's warm-up, left out of throughput")
	start := flag.Float64("start", 8, "first rate of the first size's search (runs/s)")
	bisect := flag.Int("bisections", 3, "bisections after the doubling")
	maxTokens := flag.Int("max-tokens", 64, "tokens a stage (the profile's stages cut to this)")
	profile := flag.String("profile", "fast", "the profile of every run")
	out := flag.String("out", "", "results directory (default .qlc/scale/<time>)")
	shares := flag.Int("docker-shares", 0, "set docker's parent cgroup cpu.shares to this for the run (cgroup v1; 0: leave it): on a busy machine all containers share ONE root-level weight")
	keep := flag.Bool("keep", false, "leave the compose project running at the end")
	timeout := flag.Duration("timeout", 20*time.Minute, "bound on the whole measurement")
	flag.Parse()
	if *burn > 0 {
		fmt.Printf("cores %.3f\n", scale.Burn(*burn))
		return nil
	}
	var ns []int
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("bad size %q", f)
		}
		ns = append(ns, n)
	}
	repo, err := os.Getwd()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(repo, ".qlc", "scale", time.Now().UTC().Format("20060102-150405"))
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := scale.Run(ctx, scale.Config{Repo: repo, Sizes: ns, NodeCPUs: *nodeCPUs, GatewayCPU: *gwCPUs, Step: *step, Warm: *warm,
		Start: *start, Bisections: *bisect, MaxTokens: *maxTokens, Profile: *profile, Burner: self, DockerShares: *shares, Keep: *keep, Out: *out, Log: os.Stderr})
	if res != nil && len(res.Rows) > 0 {
		fmt.Printf("\nSLO: answer TTFT p99 ≤ %s (2 × unloaded %s); nodes at %g CPU, gateway %g\n\n", res.SLO.Round(time.Millisecond),
			res.Unloaded.TTFTP99.Round(time.Millisecond), *nodeCPUs, *gwCPUs)
		res.WriteMarkdown(os.Stdout)
		fmt.Printf("\nresults: %s (scale.md, scale.json, scale.svg)\n", *out)
	}
	return err
}
