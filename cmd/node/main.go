// Command node hosts QLC's run actors for gateways: each run's coordinator
// and its stage workers, which call the model providers. Gateways started
// with -nodes place runs on nodes over the actor transport (protoactor
// remote) and receive every event from them. It also serves /healthz,
// /readyz, /metrics and /debug/pprof/ on -ops-addr.
//
// Every flag has an environment variable (shown in -help).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/qlc-project/qlc/actors"
	"github.com/qlc-project/qlc/cmd/internal/cli"
	"github.com/qlc-project/qlc/internal/ops"
	"github.com/qlc-project/qlc/internal/sealed"
	"github.com/qlc-project/qlc/quota"
	"github.com/qlc-project/qlc/topology"
)

func main() { cli.Main("node", run) }

func run(args []string) error {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	bind := fs.String("bind", cli.Env("QLC_BIND", "127.0.0.1:8090"), "actor transport listen address (QLC_BIND)")
	advertise := fs.String("advertise", cli.Env("QLC_ADVERTISE", ""), "host gateways use to reach this node; default -bind's host (QLC_ADVERTISE)")
	opsAddr := fs.String("ops-addr", cli.Env("QLC_OPS_ADDR", "127.0.0.1:9090"), "address of /healthz, /readyz, /metrics and /debug/pprof/ (keep it private); empty = none (QLC_OPS_ADDR)")
	profiles := fs.String("profiles", cli.Env("QLC_PROFILES", ""), "profile file, YAML or JSON; empty = the built-in profiles (QLC_PROFILES)")
	logFormat := fs.String("log-format", cli.Env("QLC_LOG_FORMAT", "json"), "log format: json or text (QLC_LOG_FORMAT)")
	logLevel := fs.String("log-level", cli.Env("QLC_LOG_LEVEL", "info"), "log level: debug, info, warn, error (QLC_LOG_LEVEL)")
	runSlots := fs.Int("run-slots", cli.EnvInt("QLC_RUN_SLOTS", 64), "runs executed here at once; beyond, runs wait in a weighted-fair queue per tenant; 0 = no limit (QLC_RUN_SLOTS)")
	stageSlots := fs.Int("stage-slots", cli.EnvInt("QLC_STAGE_SLOTS", 128), "stage attempts of parallel strategies (moa, council, vote) run here at once, for runs coordinated on any node; beyond, a step goes to another node or waits in a weighted-fair queue per tenant; 0 = no limit (QLC_STAGE_SLOTS)")
	stageCPU := fs.Float64("stage-cpu-target", cli.EnvFloat("QLC_STAGE_CPU_TARGET", 0.85), "share of GOMAXPROCS this process may use before it takes fewer stage attempts (its stage-slots adapt to its CPU use and how long its attempts wait to start; a node whose share is full refuses attempts, which go to nodes with room); 0 = fixed stage-slots (QLC_STAGE_CPU_TARGET)")
	memBudget := fs.String("memory-budget", cli.Env("QLC_MEMORY_BUDGET", ""), "heap budget (bytes or KiB/MiB/GiB): past 80 % finished runs leave memory, past 95 % new runs get 503 memory_budget; also the Go runtime's memory limit unless GOMEMLIMIT is set; empty: 90 % of the cgroup v2 memory limit, if any; none: off (QLC_MEMORY_BUDGET)")
	slotHeadroom := fs.Int("run-slot-headroom", cli.EnvInt("QLC_RUN_SLOT_HEADROOM", 0), "run slots no single tenant may take, kept for the others; 0 = run-slots/8, -1 = none (QLC_RUN_SLOT_HEADROOM)")
	queueDeadline := fs.Duration("queue-deadline", cli.EnvDuration("QLC_QUEUE_DEADLINE", 10*time.Second), "a new run waiting longer than this for a run slot leaves the queue, answered as 503 cluster_saturated; negative = never (QLC_QUEUE_DEADLINE)")
	drainTimeout := fs.Duration("drain-timeout", cli.EnvDuration("QLC_DRAIN_TIMEOUT", time.Minute), "on SIGTERM, how long to wait for hosted runs to finish (QLC_DRAIN_TIMEOUT)")
	seeds := fs.String("seeds", cli.Env("QLC_SEEDS", ""), "comma-separated gossip addresses (host:port, DNS names allowed) of members to join; empty = start a cluster (QLC_SEEDS)")
	gossipBind := fs.String("gossip-bind", cli.Env("QLC_GOSSIP_BIND", "127.0.0.1:7946"), "gossip (memberlist) listen address, TCP and UDP (QLC_GOSSIP_BIND)")
	gossipAdvertise := fs.String("gossip-advertise", cli.Env("QLC_GOSSIP_ADVERTISE", ""), "gossip address others use; default -gossip-bind (QLC_GOSSIP_ADVERTISE)")
	disable := fs.String("disable-features", cli.Env("QLC_DISABLE_FEATURES", ""), "CPU features to pretend absent, e.g. avx2 (QLC_DISABLE_FEATURES)")
	insecure := fs.Bool("insecure", cli.EnvBool("QLC_INSECURE"), "run gossip and the actor transport without a cluster key: loopback only, refused if an address bound or advertised is not (QLC_INSECURE)")
	limiterSetting := fs.String("limiter-id", cli.Env("QLC_LIMITER_ID", ""), "this node's id (1, 2 or 3) in the Raft group that allocates tenants' token budgets in slices, so no partition can overrun a budget; every id of 1-3 must be given to one node; ordinal = from the host name's -N, as a StatefulSet names its pods (-0, -1, -2 are 1, 2, 3; -3 and later are not in the group); empty or 0 = not in the group (and with no group, budgets are counted by each tenant's limiter alone) (QLC_LIMITER_ID)")
	limiterDir := fs.String("limiter-dir", cli.Env("QLC_LIMITER_DIR", ""), "directory of this node's Raft log of the budget group; required with -limiter-id; keep it across restarts (QLC_LIMITER_DIR)")
	addrFile := cli.AddrFileFlag(fs)
	traceStore := cli.TraceStoreFlag(fs)
	opsFlags := cli.AddOpsFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	logger, err := cli.NewLogger(*logFormat, *logLevel, false)
	if err != nil {
		return err
	}
	cfg, reg, err := cli.EngineBase(*profiles, logger)
	if err != nil {
		return err
	}
	stopRecorder, err := opsFlags.StartFlightRecorder(&cfg, reg, logger)
	if err != nil {
		return err
	}
	defer stopRecorder()
	stages := cfg.Stages
	ring, err := cli.LoadKeyring(os.Getenv, true)
	if err != nil {
		return err
	}
	if err := cli.CheckInsecure(*insecure, map[string]string{"bind": *bind, "advertise": *advertise, "gossip-bind": *gossipBind, "gossip-advertise": *gossipAdvertise}); err != nil {
		return err
	}
	key := ring.Primary
	cfg.RunSlots, cfg.RunSlotHeadroom = *runSlots, *slotHeadroom
	cfg.QueueDeadline = *queueDeadline
	cfg.StageSlots = *stageSlots
	if err := cli.StageCapacity(&cfg, *stageCPU); err != nil {
		return err
	}
	budget, err := cli.MemoryBudget(*memBudget, cli.CgroupMemoryMax())
	if err != nil {
		return err
	}
	cli.ApplyMemoryBudget(budget)
	cfg.MemoryBudget = budget
	cfg.Remote = &actors.RemoteConfig{Bind: *bind, Advertise: *advertise, ClusterKey: key, SecondaryKeys: ring.Secondary, Insecure: *insecure}
	if len(key) > 0 {
		// Opens the tenants' provider keys that runs carry sealed (the
		// gateway derives the same ring from the same keyring).
		if cfg.Secrets, err = sealed.NewRing(key, ring.Secondary...); err != nil {
			return err
		}
	}
	kinds := []string{actors.KindCoordinator}
	if cfg.Tokenizer = cli.TokenizerCapable(cli.SplitList(*disable)); cfg.Tokenizer {
		cfg.PreloadTokenizer = true
		kinds = append(kinds, actors.KindTokenizer)
	}
	hostname, _ := os.Hostname()
	limiterID, err := quota.MemberID(*limiterSetting, hostname, nil)
	if err != nil {
		return fmt.Errorf("node: -limiter-id: %w", err)
	}
	if *limiterSetting != "" {
		logger.Info("quota group", "limiter_id", limiterID, "setting", *limiterSetting, "hostname", hostname, "member", limiterID != 0)
	}
	if limiterID != 0 {
		if *limiterDir == "" {
			return errors.New("node: -limiter-id needs -limiter-dir (the Raft log must outlive the process)")
		}
		cfg.Quota = &actors.QuotaConfig{ID: limiterID, Dir: *limiterDir}
		kinds = append(kinds, actors.KindQuota, actors.KindQuotaPeer(limiterID))
	}
	tc := topology.DefaultConfig()
	tc.NameBase = cli.Hostname("node")
	tc.Cluster.BindAddr, tc.Cluster.AdvertiseAddr, tc.Cluster.Seeds = *gossipBind, *gossipAdvertise, cli.SplitList(*seeds)
	tc.Cluster.ClusterKey, tc.Cluster.SecondaryKeys, tc.Cluster.Insecure = key, ring.Secondary, *insecure
	tc.Cluster.Kinds, tc.Cluster.DisableFeatures = kinds, cli.SplitList(*disable)
	tc.Cluster.Logger, tc.Cluster.Registerer = logger, reg
	members, err := topology.New(tc)
	if err != nil {
		return err
	}
	defer members.Close() // after the engine's Shutdown (defers run last first)
	cfg.Topology = members
	spans := cli.NewTraceStore(*traceStore, &cfg)
	engine, err := actors.NewEngine(cfg) // joins the cluster
	if err != nil {
		return err
	}
	stopTracing, err := cli.StartTracing("qlc-node", engine.Address(), logger, spans)
	if err != nil {
		return err
	}
	defer stopTracing() // after the engine's Shutdown: its last spans go out
	logger.Info("QLC node ready", "actor_address", engine.Address(), "ops", *opsAddr, "profiles", stages.ProfileNames())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	errc := make(chan error, 1)
	var srv *http.Server
	bound := cli.Addrs{Actor: engine.Address(), Gossip: members.GossipAddr()}
	if *opsAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, `{"status":"ok"}`) })
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
			if engine.System().IsStopped() {
				http.Error(w, `{"status":"stopped"}`, http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, `{"status":"ready"}`)
		})
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle(ops.PprofPrefix, ops.Pprof())
		ln, err := net.Listen("tcp", *opsAddr)
		if err != nil {
			return err
		}
		srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- srv.Serve(ln) }()
		bound.Ops = ln.Addr().String()
	}
	if err := cli.WriteAddrs(*addrFile, bound); err != nil {
		return err
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Refuse new runs at once, leave the cluster (gateways stop offering
	// runs here), let hosted runs finish, then stop.
	engine.StopAccepting()
	if err := members.Leave(2 * time.Second); err != nil {
		logger.Warn("cluster leave", "error", err)
	}
	logger.Info("node draining: refusing new runs, finishing hosted ones", "hosted", engine.Hosted(), "timeout", *drainTimeout)
	dctx, dcancel := context.WithTimeout(context.Background(), *drainTimeout)
	left := engine.Drain(dctx)
	dcancel()
	if left > 0 {
		logger.Warn("drain timed out; stopping runs still hosted", "runs", left)
	}
	logger.Info("node shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	engine.Shutdown(sctx)
	if srv != nil {
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	return nil
}
